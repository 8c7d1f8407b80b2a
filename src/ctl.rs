//! `macronode ctl`: the operator's client (the runbooks' `ronctl`).
//!
//! - `ctl put FILE`: objects up to the body cap in one `PUT /v1/o`, larger
//!   ones as a resumable upload with a progress bar; a failed part is
//!   retried from where the server says it stands, and `--resume ID`
//!   continues an upload an earlier run started. The address the server
//!   returns is checked against the file's own BLAKE3.
//! - `ctl get ADDR [-o FILE]`: streams the object, hashing as it writes;
//!   the file appears (renamed from `FILE.part`) only if it matches ADDR.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use ron_kernel::ContentAddress;

#[derive(FromArgs, Debug)]
/// Operator client (the runbooks' ronctl; also installed as `ronctl`): node
/// status, bus tail, config check and print, token rotation, schema
/// migration, chaos drills, verified object put and get, names, and the
/// registry's propose, approve, commit and watch. Exit codes: 0 ok, 1
/// failed, 2 usage.
#[argh(subcommand, name = "ctl")]
pub struct CtlCmd {
    /// base URL of the node's object API (default http://127.0.0.1:9444)
    #[argh(option, default = "String::from(\"http://127.0.0.1:9444\")")]
    pub url: String,
    /// base URL of the admin plane (default http://127.0.0.1:9910)
    #[argh(option, default = "String::from(\"http://127.0.0.1:9910\")")]
    pub admin: String,
    /// bearer token for writes (default: env RONCTL_TOKEN)
    #[argh(option)]
    pub token: Option<String>,
    /// bearer token for the admin plane from another host (default: env
    /// RONCTL_ADMIN_TOKEN)
    #[argh(option)]
    pub admin_token: Option<String>,
    /// print JSON instead of text (may also be written after the verb)
    #[argh(switch)]
    pub json: bool,
    #[argh(subcommand)]
    pub action: CtlAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CtlAction {
    Status(crate::ctl_ops::StatusCmd),
    Tail(crate::ctl_ops::TailCmd),
    Bus(crate::ctl_ops::BusCmd),
    Config(crate::ctl_ops::ConfigCmd),
    Cap(crate::ctl_ops::CapCmd),
    Migrate(crate::ctl_migrate::MigrateCmd),
    Chaos(crate::ctl_ops::ChaosCmd),
    Put(PutCmd),
    Get(GetCmd),
    Names(NamesCmd),
    #[cfg(feature = "registry")]
    Registry(crate::ctl_registry::RegistryCmd),
    #[cfg(feature = "storage")]
    Storage(crate::ctl_storage::StorageCmd),
}

#[derive(FromArgs, Debug)]
/// Set or read a name.
#[argh(subcommand, name = "names")]
pub struct NamesCmd {
    #[argh(subcommand)]
    pub action: NamesAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum NamesAction {
    Set(NamesSet),
    Get(NamesGet),
}

#[derive(FromArgs, Debug)]
/// Point NAME at ADDR (a new version); prints the record.
#[argh(subcommand, name = "set")]
pub struct NamesSet {
    /// the name
    #[argh(positional)]
    pub name: String,
    /// the content address (b3:<hex>)
    #[argh(positional)]
    pub address: String,
    /// content type to record
    #[argh(option)]
    pub content_type: Option<String>,
    /// mailbox topic whose messages are the name's feed
    #[argh(option)]
    pub feed: Option<String>,
    /// only if the current version is this one
    #[argh(option)]
    pub if_match: Option<u64>,
}

#[derive(FromArgs, Debug)]
/// Print a name's record (or every version with --history).
#[argh(subcommand, name = "get")]
pub struct NamesGet {
    /// the name
    #[argh(positional)]
    pub name: String,
    /// every version
    #[argh(switch)]
    pub history: bool,
}

#[derive(FromArgs, Debug)]
/// Store a file; prints its address.
#[argh(subcommand, name = "put")]
pub struct PutCmd {
    /// the file to store
    #[argh(positional)]
    pub file: PathBuf,
    /// part size for uploads above the body cap (default 1048576)
    #[argh(option, default = "1 << 20")]
    pub part_size: usize,
    /// continue the upload with this id (printed by an earlier run)
    #[argh(option)]
    pub resume: Option<String>,
    /// no progress bar
    #[argh(switch)]
    pub quiet: bool,
}

#[derive(FromArgs, Debug)]
/// Fetch an object and verify it against its address.
#[argh(subcommand, name = "get")]
pub struct GetCmd {
    /// the object's address (b3:<hex>)
    #[argh(positional)]
    pub address: String,
    /// write to this file (default: stdout)
    #[argh(option, short = 'o')]
    pub output: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    /// The operation ran and did not succeed (exit 1).
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("request to {url} failed: {msg}")]
    Http { url: String, msg: String },
    #[error("{status} from {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("verification failed: expected {expected}, got {actual}")]
    Mismatch { expected: String, actual: String },
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) struct Api {
    client: HttpClient,
    base: String,
    token: Option<String>,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Api {
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Self, CtlError> {
        if !url.starts_with("http://") {
            return Err(CtlError::Usage(format!(
                "--url must be an http:// URL, got {url:?}"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The same client and token against another base URL.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) fn with_base(&self, url: &str) -> Result<Self, CtlError> {
        let mut api = Self::new(url, self.token.clone())?;
        api.client = self.client.clone();
        Ok(api)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, CtlError> {
        self.call_with(method, path, body, &[]).await
    }

    /// Sends a bodiless request and returns the response with its body
    /// unread (for streams); a non-2xx answer is an error.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) async fn open(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(header::HeaderName, String)>,
    ) -> Result<http::Response<hyper::body::Incoming>, CtlError> {
        let (url, resp) = self.send(method, path, Bytes::new(), &headers).await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(CtlError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(resp)
    }

    /// Builds and sends one request (token and extra headers added) and
    /// waits for the response head; returns the URL with it.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(header::HeaderName, String)],
    ) -> Result<(String, http::Response<hyper::body::Incoming>), CtlError> {
        let url = format!("{}{path}", self.base);
        let http_err = |msg: String| CtlError::Http {
            url: url.clone(),
            msg,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| http_err(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| http_err("timed out".into()))?
            .map_err(|e| http_err(e.to_string()))?;
        Ok((url, resp))
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Reply, CtlError> {
        let (url, resp) = self.send(method, path, body, headers).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CtlError::Http {
                url,
                msg: e.to_string(),
            })?
            .to_bytes();
        Ok(Reply { status, body })
    }

    pub(crate) fn expect(
        &self,
        path: &str,
        r: Reply,
        ok: &[StatusCode],
    ) -> Result<serde_json::Value, CtlError> {
        if !ok.contains(&r.status) {
            return Err(CtlError::Status {
                url: format!("{}{path}", self.base),
                status: r.status.as_u16(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        Ok(serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
    }
}

pub(crate) fn file_err(path: &Path) -> impl Fn(std::io::Error) -> CtlError + '_ {
    move |source| CtlError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Whether to print text or JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub json: bool,
}

impl Out {
    /// Prints `value` as one JSON document, or the text `human` makes.
    pub fn emit(&self, value: &serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            let text = human();
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }
}

fn env_token(flag: Option<String>, var: &str) -> Option<String> {
    flag.or_else(|| std::env::var(var).ok().filter(|t| !t.is_empty()))
}

pub fn run(cmd: CtlCmd) -> Result<(), CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Failed(format!("cannot start the runtime: {e}")))?;
    let api = Api::new(&cmd.url, env_token(cmd.token, "RONCTL_TOKEN"))?;
    let cmd_url = cmd.url.clone();
    let admin =
        Api::new(&cmd.admin, env_token(cmd.admin_token, "RONCTL_ADMIN_TOKEN")).map_err(|_| {
            CtlError::Usage(format!(
                "--admin must be an http:// URL, got {:?}",
                cmd.admin
            ))
        })?;
    let out = Out { json: cmd.json };
    rt.block_on(async move {
        use crate::ctl_ops as ops;
        match cmd.action {
            CtlAction::Status(_) => ops::status(&admin, out).await,
            CtlAction::Tail(t) => ops::tail(&admin, out, t).await,
            CtlAction::Bus(b) => match b.action {
                ops::BusAction::Tail(t) => ops::tail(&admin, out, t).await,
            },
            CtlAction::Config(c) => ops::config(&admin, out, c).await,
            CtlAction::Cap(c) => ops::cap(&admin, out, c).await,
            CtlAction::Migrate(m) => crate::ctl_migrate::run(out, m),
            CtlAction::Chaos(c) => ops::chaos(&admin, &cmd_url, out, c).await,
            CtlAction::Put(p) => put(&api, out, p).await,
            CtlAction::Get(g) => get(&api, out, g).await,
            CtlAction::Names(n) => names(&api, out, n).await,
            #[cfg(feature = "registry")]
            CtlAction::Registry(r) => crate::ctl_registry::run(&api, out, r).await,
            #[cfg(feature = "storage")]
            CtlAction::Storage(s) => {
                tokio::task::spawn_blocking(move || crate::ctl_storage::run(out, s))
                    .await
                    .map_err(|e| CtlError::Failed(e.to_string()))?
            }
        }
    })
}

fn file_b3(path: &Path) -> Result<(ContentAddress, u64), CtlError> {
    let mut f = std::fs::File::open(path).map_err(file_err(path))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(file_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((ContentAddress::from_bytes(*h.finalize().as_bytes()), size))
}

async fn put(api: &Api, out: Out, p: PutCmd) -> Result<(), CtlError> {
    if p.part_size == 0 {
        return Err(CtlError::Usage("--part-size must be above zero".into()));
    }
    let (want, size) = file_b3(&p.file)?;
    let got = if size as usize <= p.part_size && p.resume.is_none() {
        let data = std::fs::read(&p.file).map_err(file_err(&p.file))?;
        let r = api.call(Method::PUT, "/v1/o", Bytes::from(data)).await?;
        if r.status == StatusCode::PAYLOAD_TOO_LARGE {
            upload(api, &p, size).await?
        } else {
            let v = api.expect("/v1/o", r, &[StatusCode::CREATED, StatusCode::OK])?;
            v["address"].as_str().unwrap_or_default().to_owned()
        }
    } else {
        upload(api, &p, size).await?
    };
    if got != want.to_string() {
        return Err(CtlError::Mismatch {
            expected: want.to_string(),
            actual: got,
        });
    }
    let v = serde_json::json!({"address": want.to_string(), "size": size, "verified": true});
    // Text: the address alone, for scripts (`ADDR=$(ronctl put f)`).
    out.emit(&v, || want.to_string());
    Ok(())
}

async fn upload(api: &Api, p: &PutCmd, size: u64) -> Result<String, CtlError> {
    let id = match &p.resume {
        Some(id) => id.clone(),
        None => {
            let r = api.call(Method::POST, "/v1/uploads", Bytes::new()).await?;
            let v = api.expect("/v1/uploads", r, &[StatusCode::CREATED])?;
            v["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    eprintln!("upload {id} (resume with --resume {id})");
    let bar = if p.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(size)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut f = std::fs::File::open(&p.file).map_err(file_err(&p.file))?;
    let mut attempts = 0;
    loop {
        // Ask where the server stands (also after any failure).
        let state_path = format!("/v1/uploads/{id}");
        let r = api.call(Method::GET, &state_path, Bytes::new()).await?;
        let st = api.expect(&state_path, r, &[StatusCode::OK])?;
        let next = st["next_part"].as_u64().unwrap_or(0);
        let offset = next * p.part_size as u64;
        bar.set_position(offset.min(size));
        if offset >= size {
            break;
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(offset))
            .map_err(file_err(&p.file))?;
        let mut n = next;
        let mut failed = false;
        loop {
            let mut buf = vec![0u8; p.part_size];
            let mut filled = 0;
            while filled < buf.len() {
                let k = f.read(&mut buf[filled..]).map_err(file_err(&p.file))?;
                if k == 0 {
                    break;
                }
                filled += k;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            let path = format!("/v1/uploads/{id}/{n}");
            match api.call(Method::PUT, &path, Bytes::from(buf)).await {
                Ok(r) if r.status == StatusCode::OK => {
                    bar.inc(filled as u64);
                    n += 1;
                }
                Ok(r) if r.status.is_client_error() && r.status != StatusCode::CONFLICT => {
                    return Err(api
                        .expect(&path, r, &[])
                        .err()
                        .unwrap_or(CtlError::Usage("upload refused".into())));
                }
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            break;
        }
        attempts += 1;
        if attempts > 5 {
            return Err(CtlError::Usage(format!(
                "upload {id} keeps failing; continue later with --resume {id}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
    }
    bar.finish_and_clear();
    let path = format!("/v1/uploads/{id}/complete");
    let r = api.call(Method::POST, &path, Bytes::new()).await?;
    let v = api.expect(&path, r, &[StatusCode::CREATED, StatusCode::OK])?;
    Ok(v["address"].as_str().unwrap_or_default().to_owned())
}

async fn get(api: &Api, report: Out, g: GetCmd) -> Result<(), CtlError> {
    let want = ContentAddress::parse(&g.address)
        .map_err(|e| CtlError::Usage(format!("{:?}: {e}", g.address)))?;
    if report.json && g.output.is_none() {
        return Err(CtlError::Usage(
            "--json needs -o FILE: without it the object itself goes to stdout".into(),
        ));
    }
    let path = format!("/v1/o/{want}");
    let url = format!("{}{path}", api.base);
    let req = Request::builder()
        .method(Method::GET)
        .uri(&url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| CtlError::Http {
            url: url.clone(),
            msg: e.to_string(),
        })?;
    let resp = api.client.request(req).await.map_err(|e| CtlError::Http {
        url: url.clone(),
        msg: e.to_string(),
    })?;
    if resp.status() != StatusCode::OK {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(CtlError::Status {
            url,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let tmp = g.output.as_ref().map(|o| {
        let mut t = o.clone().into_os_string();
        t.push(".part");
        PathBuf::from(t)
    });
    let mut out: Box<dyn Write> = match &tmp {
        Some(t) => Box::new(std::fs::File::create(t).map_err(file_err(t))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut body = resp.into_body();
    let result: Result<(), CtlError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CtlError::Http {
                url: url.clone(),
                msg: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                size += data.len() as u64;
                out.write_all(&data).map_err(|source| CtlError::File {
                    path: "output".into(),
                    source,
                })?;
            }
        }
        out.flush().map_err(|source| CtlError::File {
            path: "output".into(),
            source,
        })?;
        Ok(())
    }
    .await;
    drop(out);
    let got = ContentAddress::from_bytes(*hasher.finalize().as_bytes());
    let verdict = result.and_then(|()| {
        if got == want {
            Ok(())
        } else {
            Err(CtlError::Mismatch {
                expected: want.to_string(),
                actual: got.to_string(),
            })
        }
    });
    match (&tmp, &g.output) {
        (Some(t), Some(o)) => match verdict {
            Ok(()) => {
                std::fs::rename(t, o).map_err(file_err(o))?;
                let v = serde_json::json!({
                    "address": want.to_string(), "size": size,
                    "path": o.display().to_string(), "verified": true,
                });
                report.emit(&v, || {
                    format!("{}: {want} ({size} bytes, verified)", o.display())
                });
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(t);
                Err(e)
            }
        },
        _ => verdict,
    }
}

async fn names(api: &Api, out: Out, n: NamesCmd) -> Result<(), CtlError> {
    let (_path, reply) = match n.action {
        NamesAction::Set(s) => {
            ContentAddress::parse(&s.address)
                .map_err(|e| CtlError::Usage(format!("{:?}: {e}", s.address)))?;
            let mut body = serde_json::json!({"address": s.address});
            if let Some(ct) = s.content_type {
                body["content_type"] = ct.into();
            }
            if let Some(f) = s.feed {
                body["feed"] = f.into();
            }
            let headers: Vec<(header::HeaderName, String)> = s
                .if_match
                .map(|v| (header::IF_MATCH, v.to_string()))
                .into_iter()
                .collect();
            let path = format!("/v1/names/{}", s.name);
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let r = api.call_with(Method::PUT, &path, body, &headers).await?;
            let reply = api.expect(&path, r, &[StatusCode::CREATED, StatusCode::OK])?;
            (path, reply)
        }
        NamesAction::Get(g) => {
            let path = if g.history {
                format!("/v1/names/{}?history=true", g.name)
            } else {
                format!("/v1/names/{}", g.name)
            };
            let r = api.call(Method::GET, &path, Bytes::new()).await?;
            (path.clone(), api.expect(&path, r, &[StatusCode::OK])?)
        }
    };
    out.emit(&reply, || name_text(&reply));
    Ok(())
}

/// `name  version N  address  content_type  [feed]`, one line per version.
fn name_text(v: &serde_json::Value) -> String {
    let one = |r: &serde_json::Value| {
        let mut line = format!(
            "{}  version {}  {}",
            r["name"].as_str().unwrap_or("?"),
            r["version"],
            r["address"].as_str().unwrap_or("?")
        );
        if let Some(ct) = r["content_type"].as_str() {
            line.push_str(&format!("  {ct}"));
        }
        if let Some(f) = r["feed"].as_str() {
            line.push_str(&format!("  feed {f}"));
        }
        line
    };
    match v.get("versions").and_then(|h| h.as_array()) {
        Some(all) => all.iter().map(one).collect::<Vec<_>>().join("\n"),
        None => one(v),
    }
}
