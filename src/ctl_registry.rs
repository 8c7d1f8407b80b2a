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

use crate::ctl::{file_err, Api, CtlError};

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
/// Create a signing key: writes the secret to FILE (mode 0600), prints the
/// public key for `[[registry.signers]]`.
#[argh(subcommand, name = "keygen")]
pub struct Keygen {
    /// where to write the secret key (64 hex characters)
    #[argh(option, short = 'o')]
    pub out: PathBuf,
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
    /// JSON file
    #[argh(positional)]
    pub file: PathBuf,
}

#[derive(FromArgs, Debug)]
/// Sign proposal ID with a key from `keygen` and submit the approval.
#[argh(subcommand, name = "approve")]
pub struct Approve {
    /// the proposal id
    #[argh(positional)]
    pub id: String,
    /// the secret key file
    #[argh(option)]
    pub key: PathBuf,
    /// this signer's id in the signer set
    #[argh(option)]
    pub signer: String,
}

#[derive(FromArgs, Debug)]
/// Commit proposal ID (once it has M approvals); prints the new head.
#[argh(subcommand, name = "commit")]
pub struct CommitCmd {
    /// the proposal id
    #[argh(positional)]
    pub id: String,
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

fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(crate) async fn run(api: &Api, cmd: RegistryCmd) -> Result<(), CtlError> {
    let reg = api.with_base(&cmd.registry)?;
    match cmd.action {
        RegistryAction::Keygen(k) => keygen(k),
        RegistryAction::Head(_) => {
            let r = reg
                .call(Method::GET, "/registry/head", Bytes::new())
                .await?;
            print(&reg.expect("/registry/head", r, &[StatusCode::OK])?);
            Ok(())
        }
        RegistryAction::Propose(p) => propose(&reg, p).await,
        RegistryAction::Approve(a) => approve(&reg, a).await,
        RegistryAction::Commit(c) => {
            let path = format!("/registry/proposals/{}/commit", c.id);
            let r = reg.call(Method::POST, &path, Bytes::new()).await?;
            print(&reg.expect(&path, r, &[StatusCode::CREATED])?);
            Ok(())
        }
        RegistryAction::Watch(w) => watch(&reg, w).await,
        RegistryAction::Backup(b) => backup(&reg, b).await,
        RegistryAction::Restore(r) => restore(r),
    }
}

fn keygen(k: Keygen) -> Result<(), CtlError> {
    let (public, secret) =
        ron_registry::log::keygen().map_err(|e| CtlError::Usage(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&k.out).map_err(file_err(&k.out))?;
    writeln!(f, "{secret}").map_err(file_err(&k.out))?;
    print(&serde_json::json!({"public_key": public, "secret_key_file": k.out}));
    Ok(())
}

async fn propose(reg: &Api, p: Propose) -> Result<(), CtlError> {
    let text = std::fs::read_to_string(&p.file).map_err(file_err(&p.file))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", p.file.display())))?;
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
    print(&reg.expect("/registry/proposals", r, &[StatusCode::ACCEPTED])?);
    Ok(())
}

async fn approve(reg: &Api, a: Approve) -> Result<(), CtlError> {
    let secret = std::fs::read_to_string(&a.key).map_err(file_err(&a.key))?;
    let seed = decode_hex::<32>(secret.trim()).ok_or_else(|| {
        CtlError::Usage(format!(
            "{}: not a key from `ctl registry keygen`",
            a.key.display()
        ))
    })?;
    let path = format!("/registry/proposals/{}", a.id);
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
    let path = format!("/registry/proposals/{}/approvals", a.id);
    let body = serde_json::json!({"signer_id": a.signer, "sig": sig});
    let r = reg.call(Method::POST, &path, json_body(&body)).await?;
    print(&reg.expect(&path, r, &[StatusCode::OK])?);
    Ok(())
}

async fn watch(reg: &Api, w: Watch) -> Result<(), CtlError> {
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
                println!("{line}");
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

async fn backup(reg: &Api, b: Backup) -> Result<(), CtlError> {
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
    print(&serde_json::json!({"file": b.file, "versions": versions}));
    Ok(())
}

fn restore(r: Restore) -> Result<(), CtlError> {
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
        .map_err(|e| CtlError::Usage(format!("{} (is the node stopped?): {e}", path.display())))?;
    let f = std::fs::File::open(&r.file).map_err(file_err(&r.file))?;
    let head = reg
        .restore(&mut std::io::BufReader::new(f))
        .map_err(|e| CtlError::Usage(format!("restore refused: {e}")))?;
    print(&serde_json::to_value(&head).unwrap_or_default());
    Ok(())
}
