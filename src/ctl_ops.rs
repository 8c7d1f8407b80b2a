//! `macronode ctl` verbs that operate the node rather than its data:
//! `status`, `tail`/`bus tail`, `config check|print`, `cap rotate`,
//! `chaos inject|clear`.
//! Each talks to the admin plane (`--admin`), except `config check`, which
//! reads the config the way the node would, without a node.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::config::{ConfigSource, Profile};
use crate::ctl::{Api, CtlError, Out};

#[derive(FromArgs, Debug)]
/// Roles, readiness and its reasons, restarts, addresses, versions.
#[argh(subcommand, name = "status")]
pub struct StatusCmd {}

#[derive(FromArgs, Debug)]
/// Follow the node's bus (admin /api/v1/bus), reconnecting with backoff.
/// Topics: kernel (health, config, crash, shutdown), health, config, crash,
/// shutdown, omnigate, overlay, registry, storage, index, mailbox.
#[argh(subcommand, name = "tail")]
pub struct TailCmd {
    /// only these topics (repeat, or comma-separate; default all)
    #[argh(option)]
    pub topic: Vec<String>,
    /// stop after this many events
    #[argh(option)]
    pub count: Option<u64>,
}

#[derive(FromArgs, Debug)]
/// The node's bus.
#[argh(subcommand, name = "bus")]
pub struct BusCmd {
    #[argh(subcommand)]
    pub action: BusAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum BusAction {
    Tail(TailCmd),
}

#[derive(FromArgs, Debug)]
/// Check a config before it is used, or print the one in force.
#[argh(subcommand, name = "config")]
pub struct ConfigCmd {
    #[argh(subcommand)]
    pub action: ConfigAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ConfigAction {
    Check(ConfigCheck),
    Print(ConfigPrint),
}

#[derive(FromArgs, Debug)]
/// Validate the config the node would load (file, environment, defaults)
/// without a node; exit 2 naming each bad key. ROLE (e.g. registry or
/// svc-registry) must be compiled in.
#[argh(subcommand, name = "check")]
pub struct ConfigCheck {
    /// only this role's section
    #[argh(positional)]
    pub role: Option<String>,
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// the profile whose defaults apply (macronode or micronode)
    #[argh(option, default = "String::from(\"macronode\")")]
    pub profile: String,
}

#[derive(FromArgs, Debug)]
/// Print the config the running node has in force (admin /api/v1/config),
/// or with --config the one a node would load from that file; secrets
/// redacted. ROLE prints only its section.
#[argh(subcommand, name = "print")]
pub struct ConfigPrint {
    /// only this role's section
    #[argh(positional)]
    pub role: Option<String>,
    /// evaluate this file instead of asking the running node
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// with --config: the profile whose defaults apply
    #[argh(option, default = "String::from(\"macronode\")")]
    pub profile: String,
}

#[derive(FromArgs, Debug)]
/// Capability tokens (admin /api/v1/cap).
#[argh(subcommand, name = "cap")]
pub struct CapCmd {
    #[argh(subcommand)]
    pub action: CapAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CapAction {
    Rotate(CapRotate),
}

#[derive(FromArgs, Debug)]
/// Issue a new token for SERVICE without a restart: it works at once,
/// older tokens keep working for the grace, then are refused. The token is
/// printed once, here; the node keeps only its digest (auth.token_file or
/// admin.token_file).
#[argh(subcommand, name = "rotate")]
pub struct CapRotate {
    /// write (the service planes' shared write capability; omnigate,
    /// storage, index, mailbox, registry name it too) or admin
    #[argh(option)]
    pub service: String,
    /// how long older tokens stay valid (default 10m; 0s ends them now)
    #[argh(option, default = "String::from(\"10m\")")]
    pub grace: String,
}

#[derive(FromArgs, Debug)]
/// Fault drills (admin /api/v1/chaos; the node must run with
/// chaos.enabled = true).
#[argh(subcommand, name = "chaos")]
pub struct ChaosCmd {
    #[argh(subcommand)]
    pub action: ChaosAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ChaosAction {
    Inject(ChaosInject),
    Clear(ChaosClear),
    List(ChaosList),
    Slowloris(ChaosSlowloris),
}

#[derive(FromArgs, Debug)]
/// Inject a fault; prints its id.
#[argh(subcommand, name = "inject")]
pub struct ChaosInject {
    /// the edge to disturb: storage, index, mailbox (the gateway's calls),
    /// registry (its log store), s3, peer (overlay fetches; also
    /// `overlay`), bus; svc-NAME is read as NAME
    #[argh(option)]
    pub target: String,
    /// latency or error (the bus: latency or drop); NAME-latency is read
    /// as latency
    #[argh(option)]
    pub fault: String,
    /// added latency in milliseconds
    #[argh(option)]
    pub ms: Option<u64>,
    /// latency varies uniformly within ms ± this many milliseconds
    #[argh(option)]
    pub jitter_ms: Option<u64>,
    /// share of calls hit, exactly (0.01: every 100th), within (0, 1];
    /// default 1
    #[argh(option)]
    pub rate: Option<f64>,
    /// how long the fault lasts (e.g. 30s; default until cleared)
    #[argh(option)]
    pub duration: Option<String>,
}

#[derive(FromArgs, Debug)]
/// Clear one fault (--id) or all of them.
#[argh(subcommand, name = "clear")]
pub struct ChaosClear {
    /// the fault's id (default: every fault)
    #[argh(option)]
    pub id: Option<String>,
}

#[derive(FromArgs, Debug)]
/// Print the faults in force.
#[argh(subcommand, name = "list")]
pub struct ChaosList {}

#[derive(FromArgs, Debug)]
/// Hold slow connections open against the object API (--url): each sends
/// a request head one header line per --interval and never ends it. While
/// they run, a probe request every second must still be answered. Exits 1
/// if a probe failed or a slow connection outlived the drill. Bounded: at
/// most 4096 connections and 10 minutes.
#[argh(subcommand, name = "slowloris")]
pub struct ChaosSlowloris {
    /// slow connections to hold (default 64)
    #[argh(option, default = "64")]
    pub conns: usize,
    /// how long the drill lasts (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub duration: String,
    /// time between one connection's header lines (default 1s)
    #[argh(option, default = "String::from(\"1s\")")]
    pub interval: String,
    /// allow a target that is not a loopback address (a slow-loris drill
    /// is a denial of service: only against hosts you run the drill on)
    #[argh(switch)]
    pub allow_remote: bool,
}

/// Most slow connections a drill holds.
pub const SLOWLORIS_MAX_CONNS: usize = 4096;
/// Longest slow-loris drill.
pub const SLOWLORIS_MAX: Duration = Duration::from_secs(600);

/// `svc-registry`, `ron-registry` and `registry` all name the registry.
pub(crate) fn role_name(s: &str) -> &str {
    s.strip_prefix("svc-")
        .or_else(|| s.strip_prefix("ron-"))
        .unwrap_or(s)
}

/// The config `src` assembles, or a usage error naming where it came
/// from and every problem in it (for the offline commands).
pub(crate) fn load_config(src: &ConfigSource) -> Result<crate::config::NodeConfig, CtlError> {
    src.load().map_err(|e| {
        CtlError::Usage(format!(
            "config invalid ({}):\n  {}",
            crate::config::describe_source(src),
            e.to_string().replace('\n', "\n  ")
        ))
    })
}

pub(crate) fn profile(s: &str) -> Result<Profile, CtlError> {
    match s {
        "macronode" => Ok(Profile::Macronode),
        "micronode" => Ok(Profile::Micronode),
        other => Err(CtlError::Usage(format!(
            "--profile {other:?}: macronode or micronode"
        ))),
    }
}

pub(crate) fn compiled_role(s: &str) -> Result<&str, CtlError> {
    let name = role_name(s);
    if crate::roles::compiled_names().contains(&name) {
        Ok(name)
    } else {
        Err(CtlError::Usage(format!(
            "{s:?} is not a role of this build; roles: {}",
            crate::roles::compiled_names().join(", ")
        )))
    }
}

// ---------------------------------------------------------------- status

pub(crate) async fn status(admin: &Api, out: Out) -> Result<(), CtlError> {
    let r = admin
        .call(Method::GET, "/api/v1/status", Bytes::new())
        .await?;
    let v = admin.expect("/api/v1/status", r, &[StatusCode::OK])?;
    out.emit(&v, || status_text(&v));
    Ok(())
}

fn status_text(v: &Value) -> String {
    let mut s = String::new();
    let build = &v["build"];
    s.push_str(&format!(
        "{} {} (git {}, built {}), up {:.0}s\n",
        v["profile"].as_str().unwrap_or("node"),
        v["version"].as_str().unwrap_or("?"),
        build["git_sha"].as_str().unwrap_or("?"),
        build["build_time"].as_str().unwrap_or("?"),
        v["uptime_seconds"].as_f64().unwrap_or(0.0),
    ));
    s.push_str(&format!(
        "config version {} from {}\n",
        v["config_version"],
        v["config_file"]
            .as_str()
            .unwrap_or("defaults and environment"),
    ));
    let missing: Vec<&str> = v["missing"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if v["ready"] == true {
        s.push_str("ready: yes\n");
    } else {
        s.push_str(&format!("ready: no (missing: {})\n", missing.join(", ")));
    }
    for (flag, label) in [
        ("draining", "draining"),
        ("shutting_down", "shutting down"),
        ("amnesia", "amnesia"),
        ("read_only", "read-only"),
    ] {
        if v[flag] == true {
            s.push_str(&format!("{label}: yes\n"));
        }
    }
    s.push_str(&format!(
        "\n{:<10} {:<12} {:<6} {:>8}  {}\n",
        "ROLE", "STATE", "READY", "RESTARTS", "REASON"
    ));
    if let Some(roles) = v["roles"].as_object() {
        for (name, r) in roles {
            let mut reason = r["reason"].as_str().unwrap_or("").to_owned();
            if let Some(inputs) = r["inputs"].as_object() {
                let off: Vec<&str> = inputs
                    .iter()
                    .filter(|(_, ok)| **ok == false)
                    .map(|(k, _)| k.as_str())
                    .collect();
                if !off.is_empty() {
                    reason = format!("{reason} (false: {})", off.join(", "));
                }
            }
            s.push_str(&format!(
                "{:<10} {:<12} {:<6} {:>8}  {}\n",
                name,
                r["state"].as_str().unwrap_or("?"),
                if r["ready"] == true { "yes" } else { "no" },
                r["restarts"],
                reason.trim()
            ));
        }
    }
    if let Some(planes) = v["planes"].as_object() {
        for (name, p) in planes {
            s.push_str(&format!(
                "{:<10} {:<12} {:<6} {:>8}  {}\n",
                name,
                "plane",
                if p["ready"] == true { "yes" } else { "no" },
                "-",
                p["reason"].as_str().unwrap_or("")
            ));
        }
    }
    s.push_str(&format!("\n{:<18} ADDRESS\n", "LISTENER"));
    if let Some(addrs) = v["addrs"].as_object() {
        for (name, a) in addrs {
            s.push_str(&format!("{:<18} {}\n", name, a.as_str().unwrap_or("?")));
        }
    }
    s
}

// ---------------------------------------------------------------- tail

pub(crate) async fn tail(admin: &Api, out: Out, t: TailCmd) -> Result<(), CtlError> {
    let topics: Vec<String> = t
        .topic
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| role_name(t.trim()).to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let path = if topics.is_empty() {
        "/api/v1/bus".to_owned()
    } else {
        format!("/api/v1/bus?topic={}", topics.join(","))
    };
    let mut seen = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        let resp = match admin.open(Method::GET, &path, Vec::new()).await {
            Ok(r) => r,
            // The node said no (a bad topic): retrying cannot help.
            Err(CtlError::Status {
                status: 400, body, ..
            }) => {
                return Err(CtlError::Usage(problem_detail(&body)));
            }
            Err(e @ CtlError::Status { .. }) => return Err(e),
            Err(e) => {
                eprintln!("{e}; retrying in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // The node subscribed before answering: nothing later is missed.
        eprintln!(
            "following the bus (topics: {})",
            if topics.is_empty() {
                "all".to_owned()
            } else {
                topics.join(", ")
            }
        );
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.windows(2).position(|x| x == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let mut name = "message";
                let mut data = None;
                for line in text.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n;
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(d);
                    }
                }
                let Some(data) = data else { continue };
                if name == "lagged" {
                    eprintln!("the bus dropped events for this tail: {data}");
                    continue;
                }
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if out.json {
                    let line = serde_json::json!({"topic": name, "event": v});
                    println!("{line}");
                } else {
                    println!("{}", event_text(name, &v));
                }
                seen += 1;
                if t.count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
        }
        eprintln!("bus stream ended; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}

/// `registry  registry_committed  version=3 payload_b3=b3:…`.
fn event_text(topic: &str, v: &Value) -> String {
    let kind = v["event"].as_str().unwrap_or("?");
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "event")
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{topic:<9} {kind:<20} {}", fields.join(" "))
}

/// The `detail` of a problem+json body, or the body.
fn problem_detail(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

// ---------------------------------------------------------------- config

pub(crate) async fn config(admin: &Api, out: Out, c: ConfigCmd) -> Result<(), CtlError> {
    match c.action {
        ConfigAction::Check(c) => config_check(out, c),
        ConfigAction::Print(p) => config_print(admin, out, p).await,
    }
}

fn config_check(out: Out, c: ConfigCheck) -> Result<(), CtlError> {
    let role = c.role.as_deref().map(compiled_role).transpose()?;
    let src = ConfigSource::new(profile(&c.profile)?, c.config, Default::default());
    let notes = crate::config::env_notes();
    for n in &notes {
        eprintln!("warning: {n}");
    }
    let source = crate::config::describe_source(&src);
    match src.load() {
        Ok(cfg) => {
            let roles: Vec<&str> = crate::roles::select(&cfg.roles)
                .unwrap_or_default()
                .iter()
                .map(|r| r.as_str())
                .collect();
            let v = serde_json::json!({
                "ok": true, "source": source, "role": role, "roles": roles, "notes": notes,
            });
            out.emit(&v, || match role {
                Some(r) if !roles.contains(&r) => format!(
                    "config ok ({source}); [{r}] is valid, but `roles` does not run {r} \
                     (runs: {})",
                    roles.join(", ")
                ),
                Some(r) => format!("config ok ({source}); [{r}] is valid"),
                None => format!("config ok ({source}); roles: {}", roles.join(", ")),
            });
            Ok(())
        }
        Err(e) => {
            let errors: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
            if out.json {
                let v = serde_json::json!({"ok": false, "source": source, "errors": errors});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            Err(CtlError::Usage(format!(
                "config invalid ({source}):\n  {}",
                errors.join("\n  ")
            )))
        }
    }
}

async fn config_print(admin: &Api, out: Out, p: ConfigPrint) -> Result<(), CtlError> {
    let role = p.role.as_deref().map(compiled_role).transpose()?;
    let (v, from) = match p.config {
        Some(file) => {
            let src = ConfigSource::new(profile(&p.profile)?, Some(file), Default::default());
            let cfg = load_config(&src)?;
            let v = serde_json::to_value(&cfg).map_err(|e| CtlError::Failed(e.to_string()))?;
            (v, crate::config::describe_source(&src))
        }
        None => {
            let r = admin
                .call(Method::GET, "/api/v1/config", Bytes::new())
                .await?;
            let v = admin.expect("/api/v1/config", r, &[StatusCode::OK])?;
            (v, "the running node".to_owned())
        }
    };
    let v = match role {
        Some(r) => {
            let section = v.get(r).cloned().ok_or_else(|| {
                CtlError::Failed(format!(
                    "{from} has no [{r}] section (role not compiled in)"
                ))
            })?;
            serde_json::json!({ r: section })
        }
        None => v,
    };
    out.emit(&v, || {
        let toml = toml::to_string_pretty(&without_nulls(v.clone()))
            .unwrap_or_else(|e| format!("# cannot render as TOML: {e}\n"));
        format!("# effective config of {from}; secrets redacted\n{toml}")
    });
    Ok(())
}

/// TOML has no null: drop the keys that hold one.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------- chaos

pub(crate) async fn chaos(admin: &Api, url: &str, out: Out, c: ChaosCmd) -> Result<(), CtlError> {
    let (method, path, body) = match c.action {
        ChaosAction::Slowloris(l) => return slowloris(url, out, l).await,
        ChaosAction::List(_) => (Method::GET, "/api/v1/chaos".to_owned(), Bytes::new()),
        ChaosAction::Inject(i) => {
            if i.rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(CtlError::Usage("--rate must be within 0..1".into()));
            }
            let mut body = serde_json::json!({
                "target": role_name(&i.target), "fault": i.fault,
            });
            for (k, v) in [("ms", i.ms), ("jitter_ms", i.jitter_ms)] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            if let Some(r) = i.rate {
                body["rate"] = r.into();
            }
            if let Some(d) = i.duration {
                humantime::parse_duration(&d)
                    .map_err(|e| CtlError::Usage(format!("--duration {d:?}: {e}")))?;
                body["duration"] = d.into();
            }
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            (Method::POST, "/api/v1/chaos".to_owned(), bytes)
        }
        ChaosAction::Clear(c) => {
            let path = match c.id {
                Some(id) => format!("/api/v1/chaos/{id}"),
                None => "/api/v1/chaos".to_owned(),
            };
            (Method::DELETE, path, Bytes::new())
        }
    };
    let r = admin.call(method, &path, body).await?;
    match r.status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if !path.contains("/chaos/") => {
            return Err(CtlError::Failed(
                "fault injection is not supported by this node (its admin plane has no \
                 /api/v1/chaos)"
                    .into(),
            ))
        }
        StatusCode::FORBIDDEN => {
            return Err(CtlError::Failed(format!(
                "this node refuses fault injection: {} (set chaos.enabled = true to drill)",
                problem_detail(&String::from_utf8_lossy(&r.body))
            )))
        }
        _ => {}
    }
    let v = admin.expect(&path, r, &[StatusCode::CREATED, StatusCode::OK])?;
    out.emit(&v, || {
        if let Some(faults) = v["faults"].as_array() {
            if faults.is_empty() {
                return "no fault in force".into();
            }
            return faults
                .iter()
                .map(|f| {
                    format!(
                        "{} {} {} ms={} jitter_ms={} rate={} hits={}{}",
                        f["id"].as_str().unwrap_or(""),
                        f["target"].as_str().unwrap_or(""),
                        f["fault"].as_str().unwrap_or(""),
                        f["ms"],
                        f["jitter_ms"],
                        f["rate"],
                        f["hits"],
                        f["remaining_seconds"]
                            .as_f64()
                            .map(|s| format!(" ends in {s:.0}s"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        match v["id"].as_str() {
            Some(id) => format!("fault {id} injected"),
            None => format!("cleared {}", v["cleared"]),
        }
    });
    Ok(())
}

/// How one slow connection ended.
enum Slow {
    /// The server closed it after this long.
    Cut(Duration),
    /// Still open when the drill ended.
    Held,
    /// It could not connect.
    Refused,
}

/// `chaos slowloris`: see `ChaosSlowloris`.
async fn slowloris(url: &str, out: Out, l: ChaosSlowloris) -> Result<(), CtlError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parse = |what: &str, v: &str| {
        humantime::parse_duration(v).map_err(|e| CtlError::Usage(format!("--{what} {v:?}: {e}")))
    };
    let duration = parse("duration", &l.duration)?;
    let interval = parse("interval", &l.interval)?;
    if l.conns == 0 || l.conns > SLOWLORIS_MAX_CONNS {
        return Err(CtlError::Usage(format!(
            "--conns must be within 1..={SLOWLORIS_MAX_CONNS}"
        )));
    }
    if duration.is_zero() || duration > SLOWLORIS_MAX || interval.is_zero() {
        return Err(CtlError::Usage(format!(
            "--duration must be within (0, {}] and --interval above 0",
            humantime::format_duration(SLOWLORIS_MAX)
        )));
    }
    let authority = url
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(r))
        .ok_or_else(|| CtlError::Usage(format!("--url must be an http:// URL, got {url:?}")))?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| CtlError::Failed(format!("{authority}: {e}")))?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(CtlError::Failed(format!("{authority} has no address")));
    };
    if !l.allow_remote && !addr.ip().to_canonical().is_loopback() {
        return Err(CtlError::Usage(format!(
            "{addr} is not a loopback address; a slow-loris drill is a denial of service: \
             pass --allow-remote only against a host you run the drill on"
        )));
    }
    let started = std::time::Instant::now();
    let end = tokio::time::Instant::now() + duration;
    let mut conns = tokio::task::JoinSet::new();
    for _ in 0..l.conns {
        conns.spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return Slow::Refused;
            };
            let opened = std::time::Instant::now();
            let mut buf = [0u8; 512];
            let mut line = 0u64;
            let mut head = format!("GET /v1/o HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
            loop {
                if s.write_all(&head).await.is_err() {
                    return Slow::Cut(opened.elapsed());
                }
                line += 1;
                head = format!("X-Slow-{line}: 1\r\n").into_bytes();
                let next = (tokio::time::Instant::now() + interval).min(end);
                // Until the next line is due: anything the server sends
                // (a 408) or its close ends this connection's part.
                match tokio::time::timeout_at(next, s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return Slow::Cut(opened.elapsed()),
                    Ok(Ok(_)) => {
                        // An answer (e.g. 408): wait for the close.
                        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
                            Ok(_) => return Slow::Cut(opened.elapsed()),
                            Err(_) => return Slow::Held,
                        }
                    }
                    Err(_) if next >= end => return Slow::Held,
                    Err(_) => {}
                }
            }
        });
    }
    // The probe: an ordinary request every second must be answered.
    let api = Api::new(url, None)?;
    let (mut probes, mut answered, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let absent = format!("/v1/o/b3:{}", "0".repeat(64));
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        probes += 1;
        let t = std::time::Instant::now();
        let probe = api.call(Method::GET, &absent, Bytes::new());
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            if r.status.as_u16() < 500 {
                answered += 1;
                slowest = slowest.max(t.elapsed());
            }
        }
    }
    let (mut cut, mut held, mut refused, mut cut_after) = (0u64, 0u64, 0u64, Vec::new());
    while let Some(r) = conns.join_next().await {
        match r {
            Ok(Slow::Cut(d)) => {
                cut += 1;
                cut_after.push(d);
            }
            Ok(Slow::Held) => held += 1,
            Ok(Slow::Refused) | Err(_) => refused += 1,
        }
    }
    cut_after.sort();
    let pct = |p: f64| {
        cut_after
            .get(((cut_after.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let v = serde_json::json!({
        "target": addr.to_string(),
        "conns": l.conns,
        "seconds": started.elapsed().as_secs_f64(),
        "cut": cut,
        "held": held,
        "refused": refused,
        "cut_after_p50_seconds": pct(0.5),
        "cut_after_max_seconds": pct(1.0),
        "probes": probes,
        "probes_answered": answered,
        "probe_slowest_seconds": slowest.as_secs_f64(),
    });
    out.emit(&v, || {
        format!(
            "slowloris against {addr}: {} connections for {:.0}s; the server cut {cut} \
             (after p50 {:.1}s, max {:.1}s), {held} still open at the end, {refused} refused; \
             probes answered {answered}/{probes} (slowest {:.0} ms)",
            l.conns,
            started.elapsed().as_secs_f64(),
            pct(0.5),
            pct(1.0),
            slowest.as_secs_f64() * 1000.0
        )
    });
    if answered < probes {
        return Err(CtlError::Failed(format!(
            "the node stopped serving during the drill: {answered} of {probes} probes answered"
        )));
    }
    if held > 0 {
        return Err(CtlError::Failed(format!(
            "{held} slow connections were still open when the drill ended (is \
             limits.header_read_timeout longer than --duration?)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- cap

pub(crate) async fn cap(admin: &Api, out: Out, c: CapCmd) -> Result<(), CtlError> {
    let CapAction::Rotate(r) = c.action;
    crate::caps::Service::parse(&r.service)
        .map_err(|e| CtlError::Usage(format!("--service: {e}")))?;
    humantime::parse_duration(&r.grace)
        .map_err(|e| CtlError::Usage(format!("--grace {:?}: {e}", r.grace)))?;
    let body = serde_json::json!({"service": r.service, "grace": r.grace});
    let path = "/api/v1/cap/rotate";
    let resp = admin
        .call(Method::POST, path, Bytes::from(body.to_string()))
        .await?;
    if resp.status == StatusCode::NOT_FOUND {
        return Err(CtlError::Failed(
            "token rotation is not supported by this node (its admin plane has no /api/v1/cap/rotate)"
                .into(),
        ));
    }
    let v = admin.expect(path, resp, &[StatusCode::CREATED])?;
    out.emit(&v, || {
        let service = v["service"].as_str().unwrap_or("?");
        let mut s = format!(
            "new {service} token (shown only now; store it): {}\n\
             older {service} tokens are refused from {} (grace {}s)\n",
            v["token"].as_str().unwrap_or("?"),
            v["old_valid_until"].as_str().unwrap_or("?"),
            v["grace_seconds"],
        );
        match v["file"].as_str() {
            Some(f) => s.push_str(&format!("digests kept in {f}")),
            None => {
                s.push_str("amnesia: kept in RAM only; a restart returns to the config's tokens")
            }
        }
        s
    });
    Ok(())
}
