//! `macronode probe`: the health check a container or an orchestrator runs
//! inside the node's own image, which has no shell and no curl. GETs
//! `/readyz` (or `--path`) on the health plane the config names — TCP, or
//! the Unix socket under `--uds-only` — and exits 0 on 200, 1 otherwise.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::config::{CliOverrides, ConfigSource, Profile};

#[derive(FromArgs, Debug)]
/// Probe the node's health plane: GET /readyz (or --path) and exit 0 on
/// 200, 1 otherwise (2: usage or config). For container healthchecks; it
/// needs no shell or curl.
#[argh(subcommand, name = "probe")]
pub struct ProbeCmd {
    /// config file whose metrics.addr (or Unix socket) to probe;
    /// RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// probe this host:port instead of the config's metrics.addr
    #[argh(option)]
    pub addr: Option<String>,
    /// the path to GET (default /readyz; /healthz for liveness)
    #[argh(option, default = "String::from(\"/readyz\")")]
    pub path: String,
    /// give up after this long (default 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    pub timeout: String,
}

/// Where the probe connects.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn target(profile: Profile, cmd: &ProbeCmd) -> Result<Target, ProbeError> {
    if let Some(a) = &cmd.addr {
        return Ok(Target::Tcp(a.clone()));
    }
    let src = ConfigSource::new(profile, cmd.config.clone(), CliOverrides::default());
    let cfg = src
        .load()
        .map_err(|e| ProbeError::Usage(format!("config: {e}")))?;
    if cfg.uds.only {
        return Ok(Target::Unix(cfg.uds.dir.join("metrics.sock")));
    }
    let mut addr = cfg.metrics.addr;
    // A wildcard listener is reached on loopback from inside the host.
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(Target::Tcp(addr.to_string()))
}

async fn get(target: &Target, path: &str) -> Result<(StatusCode, Bytes), String> {
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    macro_rules! exchange {
        ($stream:expr) => {{
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        }};
    }
    match target {
        Target::Tcp(a) => exchange!(tokio::net::TcpStream::connect(a)
            .await
            .map_err(|e| format!("connect {a}: {e}"))?),
        Target::Unix(p) => exchange!(tokio::net::UnixStream::connect(p)
            .await
            .map_err(|e| format!("connect {}: {e}", p.display()))?),
    }
}

pub fn run(profile: Profile, cmd: ProbeCmd) -> Result<(), ProbeError> {
    if !cmd.path.starts_with('/') {
        return Err(ProbeError::Usage(format!(
            "--path {:?} must start with /",
            cmd.path
        )));
    }
    let timeout = humantime::parse_duration(&cmd.timeout)
        .map_err(|e| ProbeError::Usage(format!("--timeout {:?}: {e}", cmd.timeout)))?;
    let target = target(profile, &cmd)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProbeError::Failed(format!("cannot start the runtime: {e}")))?;
    let shown = match &target {
        Target::Tcp(a) => format!("http://{a}{}", cmd.path),
        Target::Unix(p) => format!("unix:{}:{}", p.display(), cmd.path),
    };
    let result = rt.block_on(async {
        tokio::time::timeout(
            timeout.max(Duration::from_millis(1)),
            get(&target, &cmd.path),
        )
        .await
    });
    match result {
        Err(_) => Err(ProbeError::Failed(format!(
            "{shown}: no answer within {}",
            cmd.timeout
        ))),
        Ok(Err(e)) => Err(ProbeError::Failed(format!("{shown}: {e}"))),
        Ok(Ok((status, body))) => {
            let body = String::from_utf8_lossy(&body);
            let body = body.trim();
            if status == StatusCode::OK {
                println!("{shown}: {status}");
                Ok(())
            } else {
                Err(ProbeError::Failed(format!("{shown}: {status} {body}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(addr: Option<&str>) -> ProbeCmd {
        ProbeCmd {
            config: None,
            addr: addr.map(str::to_owned),
            path: "/readyz".into(),
            timeout: "2s".into(),
        }
    }

    #[test]
    fn a_wildcard_metrics_addr_is_probed_on_loopback() {
        // The defaults bind 0.0.0.0:9909 (unless this shell says otherwise).
        if !std::env::vars().any(|(k, _)| k.starts_with("RON_") || k == "METRICS_ADDR") {
            assert_eq!(
                target(Profile::Macronode, &cmd(None)).unwrap(),
                Target::Tcp("127.0.0.1:9909".into())
            );
        }
        assert_eq!(
            target(Profile::Macronode, &cmd(Some("10.0.0.1:1"))).unwrap(),
            Target::Tcp("10.0.0.1:1".into())
        );
    }

    #[test]
    fn nothing_listening_fails_with_the_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = run(Profile::Macronode, cmd(Some(&addr))).unwrap_err();
        assert!(matches!(e, ProbeError::Failed(_)), "{e}");
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
