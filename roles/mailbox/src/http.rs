//! The mailbox role's HTTP API (DESIGN §6):
//!
//! - `POST /v1/topics/{topic}/messages` (body = the message, UTF-8;
//!   optional `Idempotency-Key`) → `201 {msg_id, seq, duplicate: false}`,
//!   or `200 {…, duplicate: true}` for a repeated key within 5 minutes;
//! - `POST /v1/topics/{topic}/receive` `{max?, visibility_ms?}` → leased
//!   messages, oldest first;
//! - `POST /v1/topics/{topic}/ack/{msg_id}`, `…/nack/{msg_id}` → `204`;
//! - `GET /v1/topics/{topic}/messages?after=&limit=` → a feed (no lease);
//!   `?latest=true&limit=N` → the newest N, oldest first;
//! - `GET /v1/topics/{topic}/dead?after=&limit=` → the dead-letter list.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use ron_kernel::http::ReqBody;
use ron_kernel::http::{empty, json, Routed};
use ron_kernel::metrics::names;
use ron_kernel::request::{blocking, AsProblem};
use ron_kernel::request::{write_body, write_refusal};
use ron_kernel::{Live, NodeSettings, Problem};
use serde::Deserialize;

use crate::store::{Mailbox, MailboxError};

pub const MAX_RECEIVE: usize = 100;
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;
pub const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
pub const MAX_FEED: usize = 1000;

pub struct MailboxApi {
    pub(crate) mailbox: Mailbox,
    pub(crate) settings: Live<NodeSettings>,
}

impl MailboxApi {
    pub fn new(mailbox: Mailbox, settings: Live<NodeSettings>) -> Self {
        Self { mailbox, settings }
    }
}

impl AsProblem for MailboxError {
    fn as_problem(&self) -> Problem {
        match self {
            MailboxError::BadTopic => Problem::bad_request("bad_topic", self.to_string()),
            MailboxError::BadRequest(why) => Problem::bad_request("bad_request", why.clone()),
            MailboxError::NotFound => Problem::not_found("no such message in this topic"),
            MailboxError::NotLeased => {
                Problem::new(StatusCode::CONFLICT, "not_leased", self.to_string())
            }
            MailboxError::DiskFull(_) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                "the mailbox is out of space; nothing was written",
            ),
            MailboxError::Db(_) | MailboxError::Schema(_) => {
                Problem::internal("mailbox storage failure")
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveRequest {
    max: Option<usize>,
    visibility_ms: Option<u64>,
}

fn query_param<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q.unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn query_u64(q: Option<&str>, key: &str) -> Result<Option<u64>, Problem> {
    query_param(q, key)
        .map(|v| {
            v.parse()
                .map_err(|_| Problem::bad_request("bad_query", format!("{key} must be a number")))
        })
        .transpose()
}

fn no_content() -> Response<ron_kernel::http::Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub async fn handle(api: Arc<MailboxApi>, req: Request<ReqBody>, peer: SocketAddr) -> Routed {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/v1/topics/") else {
        return Routed::new(
            "/{unknown}",
            Problem::not_found(format!("no route {path}")).into_response(),
        );
    };
    let decoded: Vec<_> = rest
        .split('/')
        .map(|p| ron_kernel::request::path_param(p).unwrap_or_default())
        .collect();
    let parts: Vec<&str> = decoded.iter().map(|p| p.as_ref()).collect();
    let method = req.method().clone();
    let (route, outcome): (
        &'static str,
        Result<Response<ron_kernel::http::Body>, Problem>,
    ) = match (method, parts.as_slice()) {
        (Method::POST, [topic, "messages"]) => (
            "/v1/topics/{topic}/messages",
            send(&api, req, peer, topic).await,
        ),
        (Method::GET, [topic, "messages"]) => (
            "/v1/topics/{topic}/messages",
            list(&api, &req, topic, false).await,
        ),
        (Method::GET, [topic, "dead"]) => (
            "/v1/topics/{topic}/dead",
            list(&api, &req, topic, true).await,
        ),
        (Method::POST, [topic, "receive"]) => (
            "/v1/topics/{topic}/receive",
            receive(&api, req, peer, topic).await,
        ),
        (Method::POST, [topic, verb @ ("ack" | "nack"), msg_id]) => {
            let route = if *verb == "ack" {
                "/v1/topics/{topic}/ack/{msg_id}"
            } else {
                "/v1/topics/{topic}/nack/{msg_id}"
            };
            (
                route,
                settle(&api, &req, peer, topic, msg_id, *verb == "ack").await,
            )
        }
        (_, [_, "messages"]) => (
            "/v1/topics/{topic}/messages",
            Err(Problem::method_not_allowed("GET, POST")),
        ),
        (_, [_, "dead"]) => (
            "/v1/topics/{topic}/dead",
            Err(Problem::method_not_allowed("GET")),
        ),
        (_, [_, "receive" | "ack" | "nack", ..]) => (
            "/v1/topics/{topic}/{verb}",
            Err(Problem::method_not_allowed("POST")),
        ),
        _ => (
            "/{unknown}",
            Err(Problem::not_found(format!("no route {path}"))),
        ),
    };
    Routed::new(route, outcome.unwrap_or_else(Problem::into_response))
}

async fn send(
    api: &MailboxApi,
    req: Request<ReqBody>,
    peer: SocketAddr,
    topic: &str,
) -> Result<Response<ron_kernel::http::Body>, Problem> {
    let (headers, body) = write_body(&api.settings.load(), req, peer).await?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Problem::bad_request("bad_request", "Idempotency-Key must be ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        Problem::bad_request("bad_body", "message bodies are UTF-8 text (JSON is fine)")
    })?;
    let mb = api.mailbox.clone();
    let t = topic.to_owned();
    let sent = blocking(move || mb.send(&t, &text, key.as_deref())).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    record_depths(&api.mailbox).await;
    Ok(json(status, &sent))
}

async fn receive(
    api: &MailboxApi,
    req: Request<ReqBody>,
    peer: SocketAddr,
    topic: &str,
) -> Result<Response<ron_kernel::http::Body>, Problem> {
    let (_, body) = write_body(&api.settings.load(), req, peer).await?;
    let r: ReceiveRequest = if body.is_empty() {
        ReceiveRequest::default()
    } else {
        ron_kernel::request::json_object(&body)?
    };
    let max = r.max.unwrap_or(10);
    if max == 0 || max > MAX_RECEIVE {
        return Err(Problem::bad_request(
            "bad_request",
            format!("max must be 1 to {MAX_RECEIVE}"),
        ));
    }
    let vis = r.visibility_ms.unwrap_or(DEFAULT_VISIBILITY_MS);
    if vis == 0 || vis > MAX_VISIBILITY_MS {
        return Err(Problem::bad_request(
            "bad_request",
            format!("visibility_ms must be 1 to {MAX_VISIBILITY_MS}"),
        ));
    }
    let mb = api.mailbox.clone();
    let t = topic.to_owned();
    let (messages, stats) = blocking(move || mb.receive(&t, max, vis)).await?;
    metrics::counter!(names::MAILBOX_REDELIVERIES_TOTAL).increment(stats.redelivered);
    metrics::counter!(names::MAILBOX_DEAD_LETTERS_TOTAL).increment(stats.dead_lettered);
    if stats.dead_lettered > 0 {
        record_depths(&api.mailbox).await;
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"messages": messages}),
    ))
}

async fn settle(
    api: &MailboxApi,
    req: &Request<ReqBody>,
    peer: SocketAddr,
    topic: &str,
    msg_id: &str,
    ack: bool,
) -> Result<Response<ron_kernel::http::Body>, Problem> {
    if let Some(p) = write_refusal(&api.settings.load(), req, peer) {
        return Err(p);
    }
    let mb = api.mailbox.clone();
    let (t, id) = (topic.to_owned(), msg_id.to_owned());
    if ack {
        blocking(move || mb.ack(&t, &id)).await?;
    } else if blocking(move || mb.nack(&t, &id)).await? {
        metrics::counter!(names::MAILBOX_DEAD_LETTERS_TOTAL).increment(1);
    }
    record_depths(&api.mailbox).await;
    Ok(no_content())
}

async fn list(
    api: &MailboxApi,
    req: &Request<ReqBody>,
    topic: &str,
    dead: bool,
) -> Result<Response<ron_kernel::http::Body>, Problem> {
    let q = req.uri().query();
    let after = query_u64(q, "after")?.unwrap_or(0);
    let limit = query_u64(q, "limit")?.unwrap_or(100) as usize;
    if limit == 0 || limit > MAX_FEED {
        return Err(Problem::bad_request(
            "bad_query",
            format!("limit must be 1 to {MAX_FEED}"),
        ));
    }
    // `?latest=true`: the newest `limit` messages (what a view shows).
    let latest = ron_kernel::request::query_flag(q, "latest")?;
    let mb = api.mailbox.clone();
    let t = topic.to_owned();
    let messages = blocking(move || {
        if dead {
            mb.dead_letters(&t, after, limit)
        } else if latest {
            mb.latest(&t, limit)
        } else {
            mb.feed(&t, after, limit)
        }
    })
    .await?;
    let next_after = messages.last().map_or(after, |m| m.seq);
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({"messages": messages, "next_after": next_after}),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

/// Exports `mailbox_depth{topic}`.
pub async fn record_depths(mb: &Mailbox) {
    let mb = mb.clone();
    if let Ok(Ok(depths)) = tokio::task::spawn_blocking(move || mb.depths()).await {
        for (topic, d) in depths {
            metrics::gauge!(names::MAILBOX_DEPTH, "topic" => topic).set(d as f64);
        }
    }
}
