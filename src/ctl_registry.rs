//! `macronode ctl registry …`: the full propose → approve → commit flow
//! from a shell, plus watching, backups and an offline restore.
//!
//! `approve` never signs what the server says blindly: it fetches the
//! proposal, recomputes `payload_b3` from the payload itself, and signs
//! only when the two agree.

use std::io::Write;
use std::path::PathBuf;

use argh::FromArgs;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use ron_registry::model::{decode_hex, hash_bytes, sign_approval, Payload};

use crate::ctl::{file_err, Api, CtlError, Out};

#[derive(FromArgs, Debug)]
/// Registry operations: keygen, head, propose, approve, commit, watch,
/// backup, restore.
#[argh(subcommand, name = "registry")]
pub struct RegistryCmd {
    /// base URL of the registry (default http://127.0.0.1:9446)
    #[argh(option, default = "String::from(\"http://127.0.0.1:9446\")")]
    pub registry: String,
    #[argh(subcommand)]
    pub action: RegistryAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum RegistryAction {
    Keygen(Keygen),
    Head(HeadCmd),
    Propose(Propose),
    Approve(Approve),
    Commit(CommitCmd),
    Watch(Watch),
    Backup(Backup),
    Restore(Restore),
}

#[derive(FromArgs, Debug)]
/// Create a signing key: writes the secret (mode 0600) to FILE, or to
/// KEYS/SIGNER.key with --signer, and prints the public key for
/// `[[registry.signers]]`.
#[argh(subcommand, name = "keygen")]
pub struct Keygen {
    /// where to write the secret key (64 hex characters)
    #[argh(option, short = 'o')]
    pub out: Option<PathBuf>,
    /// the signer id: the key goes to KEYS/SIGNER.key
    #[argh(option)]
    pub signer: Option<String>,
    /// directory of signer keys (default ./keys)
    #[argh(option, default = "PathBuf::from(\"keys\")")]
    pub keys: PathBuf,
}

#[derive(FromArgs, Debug)]
/// Print the head.
#[argh(subcommand, name = "head")]
pub struct HeadCmd {}

#[derive(FromArgs, Debug)]
/// Propose the payload in FILE for the next version. FILE holds a payload,
/// or just `{"items": [...]}`: version, prev_b3 and created_at are then
/// filled in from the head and the clock.
#[argh(subcommand, name = "propose")]
pub struct Propose {
    /// JSON file (or --file)
    #[argh(positional)]
    pub path: Option<PathBuf>,
    /// JSON file
    #[argh(option)]
    pub file: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Sign proposal ID with a key from `keygen` and submit the approval.
#[argh(subcommand, name = "approve")]
pub struct Approve {
    /// the proposal id (or --id)
    #[argh(positional)]
    pub proposal: Option<String>,
    /// the proposal id
    #[argh(option)]
    pub id: Option<String>,
    /// this signer's id in the signer set
    #[argh(option)]
    pub signer: String,
    /// the secret key file (default KEYS/SIGNER.key)
    #[argh(option)]
    pub key: Option<PathBuf>,
    /// directory of signer keys (default ./keys)
    #[argh(option, default = "PathBuf::from(\"keys\")")]
    pub keys: PathBuf,
}

#[derive(FromArgs, Debug)]
/// Commit proposal ID (once it has M approvals); prints the new head.
#[argh(subcommand, name = "commit")]
pub struct CommitCmd {
    /// the proposal id (or --id)
    #[argh(positional)]
    pub proposal: Option<String>,
    /// the proposal id
    #[argh(option)]
    pub id: Option<String>,
}

/// The value given positionally or by its flag, exactly once.
fn one_of<T>(positional: Option<T>, flag: Option<T>, what: &str) -> Result<T, CtlError> {
    match (positional, flag) {
        (Some(v), None) | (None, Some(v)) => Ok(v),
        (Some(_), Some(_)) => Err(CtlError::Usage(format!(
            "give the {what} once (positionally or with --{what})"
        ))),
        (None, None) => Err(CtlError::Usage(format!("missing the {what} (--{what})"))),
    }
}

#[derive(FromArgs, Debug)]
/// Print each commit as it happens, one JSON line per version; resumes
/// after a disconnect from the last version seen.
#[argh(subcommand, name = "watch")]
pub struct Watch {
    /// start after this version (default: only new commits)
    #[argh(option)]
    pub since: Option<u64>,
    /// stop after this many commits
    #[argh(option)]
    pub count: Option<u64>,
}

#[derive(FromArgs, Debug)]
/// Save every artifact to FILE (one JSON per line), from one snapshot.
#[argh(subcommand, name = "backup")]
pub struct Backup {
    /// the backup file
    #[argh(positional)]
    pub file: PathBuf,
}

#[derive(FromArgs, Debug)]
/// Restore FILE into the (stopped) node's empty registry, checking chain,
/// hashes and quorum of every version against the configured genesis set.
#[argh(subcommand, name = "restore")]
pub struct Restore {
    /// the backup file
    #[argh(positional)]
    pub file: PathBuf,
    /// the node's config file
    #[argh(option)]
    pub config: Option<PathBuf>,
}

fn json_body(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// `version N  payload_b3  committed_at  (K items)`.
fn head_text(v: &serde_json::Value) -> String {
    let items = v["payload"]["items"].as_array().map_or(0, Vec::len);
    format!(
        "version {}  {}  committed {}  ({items} items)",
        v["version"],
        v["payload_b3"].as_str().unwrap_or("-"),
        v["committed_at"].as_str().unwrap_or("-"),
    )
}

pub(crate) async fn run(api: &Api, out: Out, cmd: RegistryCmd) -> Result<(), CtlError> {
    let reg = api.with_base(&cmd.registry)?;
    match cmd.action {
        RegistryAction::Keygen(k) => keygen(out, k),
        RegistryAction::Head(_) => {
            let r = reg
                .call(Method::GET, "/registry/head", Bytes::new())
                .await?;
            let v = reg.expect("/registry/head", r, &[StatusCode::OK])?;
            out.emit(&v, || head_text(&v));
            Ok(())
        }
        RegistryAction::Propose(p) => propose(&reg, out, p).await,
        RegistryAction::Approve(a) => approve(&reg, out, a).await,
        RegistryAction::Commit(c) => {
            let id = one_of(c.proposal, c.id, "id")?;
            let path = format!("/registry/proposals/{id}/commit");
            let r = reg.call(Method::POST, &path, Bytes::new()).await?;
            let v = reg.expect(&path, r, &[StatusCode::CREATED])?;
            out.emit(&v, || format!("committed {}", head_text(&v)));
            Ok(())
        }
        RegistryAction::Watch(w) => watch(&reg, out, w).await,
        RegistryAction::Backup(b) => backup(&reg, out, b).await,
        RegistryAction::Restore(r) => restore(out, r),
    }
}

fn keygen(out: Out, k: Keygen) -> Result<(), CtlError> {
    let path = match (k.out, k.signer) {
        (Some(p), None) => p,
        (None, Some(signer)) => {
            std::fs::create_dir_all(&k.keys).map_err(file_err(&k.keys))?;
            k.keys.join(format!("{signer}.key"))
        }
        _ => {
            return Err(CtlError::Usage(
                "give -o FILE or --signer ID (the key goes to KEYS/ID.key)".into(),
            ))
        }
    };
    let k = KeyFile { out: path };
    let (public, secret) =
        ron_registry::log::keygen().map_err(|e| CtlError::Failed(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&k.out).map_err(file_err(&k.out))?;
    writeln!(f, "{secret}").map_err(file_err(&k.out))?;
    let v = serde_json::json!({"public_key": public, "secret_key_file": k.out});
    out.emit(&v, || {
        format!(
            "public key {public}\nsecret key written to {} (mode 0600)",
            k.out.display()
        )
    });
    Ok(())
}

struct KeyFile {
    out: PathBuf,
}

async fn propose(reg: &Api, out: Out, p: Propose) -> Result<(), CtlError> {
    let file = one_of(p.path, p.file, "file")?;
    let text = std::fs::read_to_string(&file).map_err(file_err(&file))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", file.display())))?;
    if v.get("version").is_none() || v.get("prev_b3").is_none() {
        let r = reg
            .call(Method::GET, "/registry/head", Bytes::new())
            .await?;
        let head = reg.expect("/registry/head", r, &[StatusCode::OK])?;
        v["version"] = (head["version"].as_u64().unwrap_or(0) + 1).into();
        v["prev_b3"] = head["payload_b3"].clone();
    }
    if v.get("created_at").is_none() {
        v["created_at"] = ron_registry::model::now_rfc3339().into();
    }
    let r = reg
        .call(
            Method::POST,
            "/registry/proposals",
            json_body(&serde_json::json!({ "payload": v })),
        )
        .await?;
    let v = reg.expect("/registry/proposals", r, &[StatusCode::ACCEPTED])?;
    out.emit(&v, || {
        format!(
            "proposal {}  version {}  {}  expires {}",
            v["proposal_id"].as_str().unwrap_or("?"),
            v["version"],
            v["payload_b3"].as_str().unwrap_or("?"),
            v["expires_at"].as_str().unwrap_or("-")
        )
    });
    Ok(())
}

async fn approve(reg: &Api, out: Out, a: Approve) -> Result<(), CtlError> {
    let id = one_of(a.proposal, a.id, "id")?;
    let key = a
        .key
        .unwrap_or_else(|| a.keys.join(format!("{}.key", a.signer)));
    let secret = std::fs::read_to_string(&key).map_err(file_err(&key))?;
    let seed = decode_hex::<32>(secret.trim()).ok_or_else(|| {
        CtlError::Usage(format!(
            "{}: not a key from `ctl registry keygen`",
            key.display()
        ))
    })?;
    let path = format!("/registry/proposals/{id}");
    let r = reg.call(Method::GET, &path, Bytes::new()).await?;
    let p = reg.expect(&path, r, &[StatusCode::OK])?;
    // Hash the payload as the node serves it (the proposer's own text),
    // never a re-serialisation of what it parses to.
    let payload = Payload::from_json(&p["payload"].to_string())
        .map_err(|e| CtlError::Usage(format!("the proposal's payload: {e}")))?;
    let ours = payload.b3().map_err(|e| CtlError::Usage(e.to_string()))?;
    if p["payload_b3"] != ours.as_str() {
        return Err(CtlError::Mismatch {
            expected: ours,
            actual: p["payload_b3"].to_string(),
        });
    }
    let h = hash_bytes(&ours).map_err(|e| CtlError::Usage(e.to_string()))?;
    let sig = sign_approval(&seed, payload.version, &h);
    let path = format!("/registry/proposals/{id}/approvals");
    let body = serde_json::json!({"signer_id": a.signer, "sig": sig});
    let r = reg.call(Method::POST, &path, json_body(&body)).await?;
    let v = reg.expect(&path, r, &[StatusCode::OK])?;
    out.emit(&v, || {
        format!(
            "approved proposal {id} as {}: {} of {} approvals needed",
            a.signer, v["approvals"], v["quorum"]["m"]
        )
    });
    Ok(())
}

async fn watch(reg: &Api, out: Out, w: Watch) -> Result<(), CtlError> {
    let mut last = w.since;
    let mut seen = 0u64;
    loop {
        let header = last.map(|v| {
            (
                http::HeaderName::from_static("last-event-id"),
                v.to_string(),
            )
        });
        let resp = reg
            .open(
                Method::GET,
                "/registry/stream",
                header.into_iter().collect(),
            )
            .await?;
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.windows(2).position(|x| x == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let data = text.lines().find_map(|l| l.strip_prefix("data: "));
                if text.lines().any(|l| l == "event: compacted") {
                    eprintln!(
                        "the registry compacted past our position: {}",
                        data.unwrap_or("")
                    );
                    last = None;
                    continue;
                }
                let Some(data) = data else { continue };
                let a: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                let line = serde_json::json!({
                    "version": a["version"], "payload_b3": a["payload_b3"],
                    "committed_at": a["committed_at"], "items": a["payload"]["items"],
                });
                if out.json {
                    println!("{line}");
                } else {
                    println!("{}", head_text(&a));
                }
                last = a["version"].as_u64();
                seen += 1;
                if w.count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
        }
        eprintln!("registry stream ended; reconnecting");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn backup(reg: &Api, out: Out, b: Backup) -> Result<(), CtlError> {
    let r = reg
        .call(Method::GET, "/registry/backup", Bytes::new())
        .await?;
    if r.status != StatusCode::OK {
        reg.expect("/registry/backup", r, &[StatusCode::OK])?;
        return Ok(());
    }
    let part = b.file.with_extension("part");
    std::fs::write(&part, &r.body).map_err(file_err(&part))?;
    std::fs::rename(&part, &b.file).map_err(file_err(&b.file))?;
    let versions = r
        .body
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let v = serde_json::json!({"file": b.file, "versions": versions});
    out.emit(&v, || {
        format!("{versions} versions saved to {}", b.file.display())
    });
    Ok(())
}

fn restore(out: Out, r: Restore) -> Result<(), CtlError> {
    let source = crate::config::ConfigSource::new(
        crate::config::Profile::Macronode,
        r.config,
        Default::default(),
    );
    let cfg = source
        .load()
        .map_err(|e| CtlError::Usage(format!("config: {e}")))?;
    let opts = ron_registry::Options {
        genesis: ron_registry::genesis(&cfg.registry),
        proposal_ttl: cfg.registry.proposal_ttl,
        upstream: None,
        bus: None,
        stream_buffer: ron_registry::log::STREAM_BUFFER,
    };
    let path = ron_registry::db_path(&cfg.data_dir);
    let reg = ron_registry::Registry::open(&path, opts)
        .map_err(|e| CtlError::Failed(format!("{} (is the node stopped?): {e}", path.display())))?;
    let f = std::fs::File::open(&r.file).map_err(file_err(&r.file))?;
    let head = reg
        .restore(&mut std::io::BufReader::new(f))
        .map_err(|e| CtlError::Failed(format!("restore refused: {e}")))?;
    let v = serde_json::to_value(&head).unwrap_or_default();
    out.emit(&v, || format!("restored to {}", head_text(&v)));
    Ok(())
}
