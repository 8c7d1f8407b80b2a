//! The registry's HTTP API (DESIGN §8):
//!
//! - `GET /registry/head` → `{version, payload_b3, prev_b3, committed_at}`
//!   (from memory; never waits for a writer);
//! - `GET /registry/{version}` → the artifact (immutable);
//! - `GET /registry/signers` → the signer set that approves the next version;
//! - `GET /registry/stream` → SSE (`stream.rs`);
//! - `GET /registry/backup` → every artifact, one JSON per line, from one
//!   consistent snapshot (what `ctl registry backup` saves);
//! - `POST /registry/proposals` `{payload}` → `202 {proposal_id, payload_b3,
//!   expires_at}`; `GET /registry/proposals/{id}` → the proposal;
//! - `POST /registry/proposals/{id}/approvals` `{signer_id, sig}` → `200
//!   {approvals, quorum: {m, n}}`;
//! - `POST /registry/proposals/{id}/commit` → `201` head.
//!
//! Writes need the write capability and are refused under `--read-only`
//! (503) and on a follower (421 with the primary's URL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use ron_kernel::http::{full, json, Body, ChannelBody, ReqBody, Routed};
use ron_kernel::request::write_body;
use ron_kernel::request::{blocking, AsProblem};
use ron_kernel::{Live, NodeSettings, Problem};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::log::{Registry, RegistryError};
use crate::model::{Approval, Payload};

pub struct RegistryApi {
    pub reg: Arc<Registry>,
    pub settings: Live<NodeSettings>,
    pub shutdown: CancellationToken,
    pub heartbeat: Duration,
    pub replay_max: u64,
}

const R_HEAD: &str = "/registry/head";
const R_VERSION: &str = "/registry/{version}";
const R_SIGNERS: &str = "/registry/signers";
const R_STREAM: &str = "/registry/stream";
const R_BACKUP: &str = "/registry/backup";
const R_PROPOSALS: &str = "/registry/proposals";
const R_PROPOSAL: &str = "/registry/proposals/{id}";
const R_APPROVALS: &str = "/registry/proposals/{id}/approvals";
const R_COMMIT: &str = "/registry/proposals/{id}/commit";

pub fn problem(e: &RegistryError) -> Problem {
    use RegistryError as E;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        E::Invalid(why) => Problem::bad_request("bad_payload", why.clone()),
        E::ChainMismatch { .. } => {
            Problem::new(StatusCode::CONFLICT, "chain_mismatch", e.to_string())
        }
        E::NoProposal => Problem::not_found("no such proposal"),
        E::NoVersion => Problem::not_found("no such version"),
        E::Expired(_) => Problem::new(StatusCode::GONE, "proposal_expired", e.to_string()),
        E::UnknownSigner(_) => Problem::new(unprocessable, "unknown_signer", e.to_string()),
        E::BadSignature(_) => Problem::new(unprocessable, "bad_signature", e.to_string()),
        E::DuplicateApproval(_) => {
            Problem::new(StatusCode::CONFLICT, "duplicate_approval", e.to_string())
        }
        E::QuorumNotMet { .. } => Problem::new(unprocessable, "quorum_not_met", e.to_string()),
        E::Follower(_) => Problem::new(StatusCode::MISDIRECTED_REQUEST, "follower", e.to_string()),
        E::DiskFull(_) => Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "the registry is out of space; nothing was written",
        ),
        E::Db(_) | E::Schema(_) => Problem::internal("registry storage failure"),
    }
}

fn fail(route: &'static str, p: Problem) -> Routed {
    Routed::new(route, p.into_response())
}

/// On the blocking pool (`ron_kernel::request::blocking`): a storage
/// failure is logged where it happens, then answered.
impl AsProblem for RegistryError {
    fn as_problem(&self) -> Problem {
        if let RegistryError::Db(detail) = self {
            tracing::error!(error = %detail, "registry storage failure");
        }
        problem(self)
    }
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeBody {
    payload: Payload,
}

/// Reads a JSON write body (capability, read-only and size checked).
async fn write_json<T: serde::de::DeserializeOwned>(
    api: &RegistryApi,
    req: Request<ReqBody>,
    peer: SocketAddr,
) -> Result<T, Problem> {
    let (_, body) = write_body(&api.settings.load(), req, peer).await?;
    ron_kernel::request::json_object(&body)
}

/// This listener's OpenAPI 3.1 description (`GET /openapi.json`), written
/// by hand; a test below holds it to `handle`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi/registry.json");

pub async fn handle(api: Arc<RegistryApi>, req: Request<ReqBody>, peer: SocketAddr) -> Routed {
    let path = req.uri().path().to_owned();
    if path == "/openapi.json" {
        return match *req.method() {
            Method::GET => Routed::new("/openapi.json", ron_kernel::http::openapi(OPENAPI)),
            _ => fail("/openapi.json", Problem::method_not_allowed("GET")),
        };
    }
    let Some(rest) = path.strip_prefix("/registry/") else {
        return fail("/{unknown}", Problem::not_found(format!("no route {path}")));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    let reg = api.reg.clone();
    match (&method, parts.as_slice()) {
        (&Method::GET | &Method::HEAD, ["head"]) => {
            let snap = reg.snapshot();
            let mut resp = json_bytes(StatusCode::OK, snap.head_json.clone());
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", snap.head.version)) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            Routed::new(R_HEAD, resp)
        }
        (&Method::GET, ["signers"]) => {
            let snap = reg.snapshot();
            Routed::new(
                R_SIGNERS,
                json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "for_version": snap.head.version + 1,
                        "m": snap.signers.m,
                        "signers": snap.signers.signers,
                    }),
                ),
            )
        }
        (&Method::GET, ["stream"]) => Routed::new(R_STREAM, crate::stream::open(&api, &req).await),
        (&Method::GET, ["backup"]) => backup(reg).await,
        (&Method::GET | &Method::HEAD, [v]) if v.bytes().all(|b| b.is_ascii_digit()) => {
            let Ok(version) = v.parse::<u64>() else {
                return fail(
                    R_VERSION,
                    Problem::bad_request("bad_version", "version out of range"),
                );
            };
            match blocking(move || reg.artifact_json(version)).await {
                Ok(raw) => {
                    let mut resp = json_bytes(StatusCode::OK, raw);
                    resp.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    );
                    Routed::new(R_VERSION, resp)
                }
                Err(p) => fail(R_VERSION, p),
            }
        }
        (&Method::POST, ["proposals"]) => {
            let body: ProposeBody = match write_json(&api, req, peer).await {
                Ok(b) => b,
                Err(p) => return fail(R_PROPOSALS, p),
            };
            match blocking(move || reg.propose(body.payload)).await {
                Ok(p) => Routed::new(
                    R_PROPOSALS,
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({
                            "proposal_id": p.id,
                            "payload_b3": p.payload_b3,
                            "version": p.payload.version,
                            "expires_at": p.expires_at,
                        }),
                    ),
                ),
                Err(p) => fail(R_PROPOSALS, p),
            }
        }
        (&Method::GET, ["proposals", id]) => {
            let id = (*id).to_owned();
            match blocking(move || reg.proposal(&id)).await {
                Ok(p) => Routed::new(R_PROPOSAL, json(StatusCode::OK, &p)),
                Err(p) => fail(R_PROPOSAL, p),
            }
        }
        (&Method::POST, ["proposals", id, "approvals"]) => {
            let id = (*id).to_owned();
            let approval: Approval = match write_json(&api, req, peer).await {
                Ok(b) => b,
                Err(p) => return fail(R_APPROVALS, p),
            };
            match blocking(move || reg.approve(&id, approval)).await {
                Ok(p) => {
                    let snap = api.reg.snapshot();
                    Routed::new(
                        R_APPROVALS,
                        json(
                            StatusCode::OK,
                            &serde_json::json!({
                                "approvals": p.approvals.len(),
                                "quorum": {"m": snap.signers.m, "n": snap.signers.signers.len()},
                            }),
                        ),
                    )
                }
                Err(p) => fail(R_APPROVALS, p),
            }
        }
        (&Method::POST, ["proposals", id, "commit"]) => {
            let id = (*id).to_owned();
            // The commit carries no body; the capability is still checked.
            if let Err(p) = write_body(&api.settings.load(), req, peer).await {
                return fail(R_COMMIT, p);
            }
            match blocking(move || reg.commit(&id)).await {
                Ok((head, _)) => Routed::new(R_COMMIT, json(StatusCode::CREATED, &head)),
                Err(p) => fail(R_COMMIT, p),
            }
        }
        (_, ["head"]) => fail(R_HEAD, Problem::method_not_allowed("GET, HEAD")),
        (_, [v]) if v.bytes().all(|b| b.is_ascii_digit()) => {
            fail(R_VERSION, Problem::method_not_allowed("GET, HEAD"))
        }
        (_, ["signers" | "stream" | "backup"]) | (_, ["proposals", _]) => {
            fail("/registry/{read}", Problem::method_not_allowed("GET"))
        }
        (_, ["proposals"]) | (_, ["proposals", _, "approvals" | "commit"]) => fail(
            "/registry/proposals/{write}",
            Problem::method_not_allowed("POST"),
        ),
        _ => fail("/{unknown}", Problem::not_found(format!("no route {path}"))),
    }
}

/// Streams the backup from a blocking reader thread.
async fn backup(reg: Arc<Registry>) -> Routed {
    let (tx, body) = ChannelBody::channel(8);
    tokio::task::spawn_blocking(move || {
        struct Out {
            tx: ron_kernel::http::BodySender,
            buf: Vec<u8>,
        }
        impl std::io::Write for Out {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.buf.extend_from_slice(b);
                if self.buf.len() >= 64 * 1024 {
                    self.flush()?;
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                if self.buf.is_empty() {
                    return Ok(());
                }
                let chunk = Bytes::from(std::mem::take(&mut self.buf));
                self.tx
                    .blocking_send(chunk)
                    .map_err(|_| std::io::Error::other("client gone"))
            }
        }
        let mut out = Out {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = reg.backup(&mut out) {
            tx.blocking_fail(Box::new(e));
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Routed::new(R_BACKUP, resp)
}

/// A registry API over `reg` with a node's default settings (amnesia, no
/// write token, 1 MiB bodies), for tests.
#[cfg(test)]
pub(crate) fn api_for_tests(reg: Arc<Registry>) -> Arc<RegistryApi> {
    Arc::new(RegistryApi {
        reg,
        settings: Live::new(NodeSettings {
            data_dir: std::path::PathBuf::from("."),
            amnesia: true,
            read_only: false,
            drain_deadline: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            write_cap: Default::default(),
        }),
        shutdown: CancellationToken::new(),
        heartbeat: Duration::from_secs(3600),
        replay_max: 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Options;
    use crate::model::{SignerEntry, SignerSet};

    /// The routes this file names (its `R_*` constants, read from its own
    /// source) and `/openapi.json` are exactly the document's paths; on
    /// each, every method the document lists is answered by that route,
    /// and every other method is 405.
    #[tokio::test]
    async fn the_document_is_the_router() {
        let source = include_str!("http.rs");
        let mut named: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("const R_"))
            .filter_map(|l| l.split('"').nth(1))
            .chain(["/openapi.json"])
            .collect();
        named.sort_unstable();
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(named, documented);

        let reg = Registry::in_memory(Options {
            genesis: SignerSet {
                m: 1,
                signers: vec![SignerEntry {
                    id: "s".into(),
                    public_key: "11".repeat(32),
                }],
            },
            proposal_ttl: Duration::from_secs(60),
            upstream: None,
            bus: None,
            stream_buffer: 4,
        })
        .unwrap();
        let api = api_for_tests(Arc::new(reg));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for (path, item) in paths {
            let concrete = path.replace("{version}", "1").replace("{id}", "p1");
            for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
                let req = Request::builder()
                    .method(method)
                    .uri(&concrete)
                    .body(ron_kernel::http::req_body(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                    .unwrap();
                let routed = handle(api.clone(), req, peer).await;
                let status = routed.response.status();
                if item.get(method.to_lowercase()).is_some() {
                    assert_eq!(routed.route, path, "{method} {concrete}");
                    assert_ne!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {concrete}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {concrete}"
                    );
                }
            }
        }
    }
}
