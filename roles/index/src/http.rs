//! The index role's HTTP API (DESIGN §6):
//!
//! - `PUT /v1/names/{name}` `{address, content_type?, feed?, meta?}` → the
//!   new version (`201` for a new name, `200` otherwise); `If-Match:
//!   <version>` makes it a compare-and-set (`412` on mismatch);
//! - `GET /v1/names/{name}` → the record (`ETag: "<version>"`);
//!   `?history=true` → every version;
//! - `DELETE /v1/names/{name}` → `204` (`If-Match` honoured).
//!
//! Names may contain `/`; everything after `/v1/names/` is the name.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use ron_kernel::http::ReqBody;
use ron_kernel::http::{empty, json, Routed};
use ron_kernel::request::{blocking, AsProblem};
use ron_kernel::request::{write_body, write_refusal};
use ron_kernel::{Live, NodeSettings, Problem};

use crate::store::{IndexError, NameIndex, NameUpdate};

const ROUTE: &str = "/v1/names/{name}";

pub struct IndexApi {
    pub(crate) index: NameIndex,
    pub(crate) settings: Live<NodeSettings>,
}

impl IndexApi {
    pub fn new(index: NameIndex, settings: Live<NodeSettings>) -> Self {
        Self { index, settings }
    }
}

impl AsProblem for IndexError {
    fn as_problem(&self) -> Problem {
        match self {
            IndexError::BadName(why) => Problem::bad_request("bad_name", *why),
            IndexError::BadRecord(why) => Problem::bad_request("bad_record", why.clone()),
            IndexError::NotFound => Problem::not_found("no such name"),
            IndexError::VersionMismatch { expected, current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                match current {
                    Some(c) => format!("If-Match was {expected} but the current version is {c}"),
                    None => format!("If-Match was {expected} but the name does not exist"),
                },
            ),
            IndexError::DiskFull(_) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                "the index is out of space; nothing was written",
            ),
            IndexError::Db(_) | IndexError::Schema(_) => Problem::internal("index storage failure"),
        }
    }
}

fn fail(p: Problem) -> Routed {
    Routed::new(ROUTE, p.into_response())
}

/// `If-Match: 3` or `If-Match: "3"`.
fn if_match(req: &Request<ReqBody>) -> Result<Option<u64>, Problem> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(s)
        })
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Problem::bad_request("bad_if_match", "If-Match must be a version number"))
}

pub async fn handle(api: Arc<IndexApi>, req: Request<ReqBody>, peer: SocketAddr) -> Routed {
    let path = req.uri().path().to_owned();
    let Some(raw) = path.strip_prefix("/v1/names/") else {
        return Routed::new(
            "/{unknown}",
            Problem::not_found(format!("no route {path}")).into_response(),
        );
    };
    let Some(name) = ron_kernel::request::path_param(raw).map(|n| n.into_owned()) else {
        return fail(Problem::bad_request(
            "bad_name",
            "the name is not UTF-8 once decoded",
        ));
    };
    let history = match ron_kernel::request::query_flag(req.uri().query(), "history") {
        Ok(h) => h,
        Err(p) => return fail(p),
    };
    let index = api.index.clone();
    match req.method().clone() {
        Method::GET if history => {
            match blocking(move || index.history(&name).map(|v| (name, v))).await {
                Ok((name, versions)) => Routed::new(
                    ROUTE,
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"name": name, "versions": versions}),
                    ),
                ),
                Err(p) => fail(p),
            }
        }
        Method::GET | Method::HEAD => match blocking(move || index.get(&name)).await {
            Ok(rec) => {
                let mut resp = json(StatusCode::OK, &rec);
                if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", rec.version)) {
                    resp.headers_mut().insert(header::ETAG, v);
                }
                Routed::new(ROUTE, resp)
            }
            Err(p) => fail(p),
        },
        Method::PUT => {
            let expected = match if_match(&req) {
                Ok(v) => v,
                Err(p) => return fail(p),
            };
            let body = match write_body(&api.settings.load(), req, peer).await {
                Ok((_, b)) => b,
                Err(p) => return fail(p),
            };
            let update: NameUpdate = match ron_kernel::request::json_object(&body) {
                Ok(u) => u,
                Err(p) => return fail(p),
            };
            match blocking(move || index.set(&name, update, expected)).await {
                Ok((rec, created)) => {
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    let mut resp = json(status, &rec);
                    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", rec.version)) {
                        resp.headers_mut().insert(header::ETAG, v);
                    }
                    Routed::new(ROUTE, resp)
                }
                Err(p) => fail(p),
            }
        }
        Method::DELETE => {
            if let Some(p) = write_refusal(&api.settings.load(), &req, peer) {
                return fail(p);
            }
            let expected = match if_match(&req) {
                Ok(v) => v,
                Err(p) => return fail(p),
            };
            match blocking(move || index.delete(&name, expected)).await {
                Ok(()) => {
                    let mut resp = Response::new(empty());
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    Routed::new(ROUTE, resp)
                }
                Err(p) => fail(p),
            }
        }
        _ => fail(Problem::method_not_allowed("GET, HEAD, PUT, DELETE")),
    }
}
