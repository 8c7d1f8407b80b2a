//! What every role's HTTP handlers need from a request: the write
//! capability check, body limits (declared and actual), the body deadline,
//! and a lingering close after refusing a body.
//!
//! Invariant: a refused body is never buffered beyond the cap; a write is
//! never accepted from a peer without the write capability.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::ReqBody;
use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::context::NodeSettings;
use crate::problem::Problem;

/// A path parameter as the client meant it: percent-escapes decoded (RFC
/// 3986 §2.1; clients generated from the OpenAPI documents escape `:` and
/// `/` in parameters, so `b3%3A…` is the address `b3:…`); `None` when the
/// decoded bytes are not UTF-8. Borrowed when there is nothing to decode.
pub fn path_param(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}

/// A JSON request body that must be an object: serde's derive would also
/// take a struct written as an array (`[1, null]` for `{max, visibility}`).
/// Parsed straight from the bytes (a payload that keeps its submitted text
/// keeps it). `400 bad_json` otherwise.
pub fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Problem::bad_request(
            "bad_json",
            "request body: a JSON object is expected",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("bad_json", format!("request body: {e}")))
}

/// A yes/no query parameter: absent is `false`; `true`/`1` and
/// `false`/`0` are themselves; anything else (or the key twice) is `400
/// bad_query`, so a misspelt value is an error, not a silent `false`.
pub fn query_flag(query: Option<&str>, key: &str) -> Result<bool, Problem> {
    let mut values = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix(key)?.strip_prefix('='));
    let flag = match values.next() {
        None => return Ok(false),
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => {
            return Err(Problem::bad_request(
                "bad_query",
                format!("{key} is true or false"),
            ))
        }
    };
    if values.next().is_some() {
        return Err(Problem::bad_request(
            "bad_query",
            format!("{key} is given once"),
        ));
    }
    Ok(flag)
}

/// Refuses a write unless the peer holds the write capability and the node
/// takes writes.
pub fn write_refusal(
    settings: &NodeSettings,
    req: &Request<ReqBody>,
    peer: SocketAddr,
) -> Option<Problem> {
    if settings.read_only {
        return Some(Problem::unavailable(
            "read_only",
            "this node is read-only; writes are refused",
            30,
        ));
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if settings.may_write(peer, auth) {
        return None;
    }
    Some(
        if auth.is_none()
            && settings
                .write_cap
                .requires_token(std::time::SystemTime::now())
        {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "writes need `Authorization: Bearer <write token>`",
            )
        } else {
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this request does not hold the write capability",
            )
        },
    )
}

/// The error a body layer in front of a handler (omnigate's inflater)
/// ends a body with when it refuses it: the handler answers with this
/// problem instead of a generic read error.
#[derive(Debug, Clone)]
pub struct BodyRefused(pub Problem);

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.reason, self.0.detail)
    }
}

impl std::error::Error for BodyRefused {}

pub fn body_cap_problem(cap: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_cap",
        format!("bodies are limited to {cap} bytes; use resumable uploads for larger objects"),
    )
}

/// Forwards a request body frame by frame to `tx`, enforcing the body cap
/// (declared or actual) and the body deadline. The sender is dropped on
/// return.
pub async fn stream_body(
    mut body: ReqBody,
    settings: &NodeSettings,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), Problem> {
    let cap = settings.max_body_bytes;
    let deadline = tokio::time::Instant::now() + settings.body_read_timeout;
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {:?}",
                        settings.body_read_timeout
                    ),
                ))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                if let Some(refused) = e.downcast_ref::<BodyRefused>() {
                    return Err(refused.0.clone());
                }
                return Err(Problem::bad_request(
                    "body_read",
                    format!("reading the body: {e}"),
                ));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > cap {
                linger(&mut body).await;
                return Err(body_cap_problem(cap));
            }
            if tx.send(data).await.is_err() {
                return Ok(()); // the consumer failed; it reports why
            }
        }
    }
}

/// Refuses a body whose declared length is over the cap, or whose encoding
/// storage does not take.
pub fn body_refusal(req: &Request<ReqBody>, cap: u64) -> Option<Problem> {
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Some(Problem::unsupported_encoding(
                "this route takes bodies as they are (no Content-Encoding)",
                "identity",
            ));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    declared.filter(|n| *n > cap).map(|_| body_cap_problem(cap))
}

/// After refusing a body mid-stream, reads (and drops) a bounded amount
/// more of it, so that a client which already sent it gets our answer
/// instead of a connection reset (the lingering close of nginx).
pub async fn linger(body: &mut ReqBody) {
    const LINGER_BYTES: u64 = 1 << 20;
    const LINGER_TIME: Duration = Duration::from_secs(1);
    let end = tokio::time::Instant::now() + LINGER_TIME;
    let mut drained = 0u64;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(end, body.frame()).await {
            Ok(Some(Ok(f))) => drained += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// Reads a whole (small) body within the cap and the deadline: for JSON
/// requests. Bodies that may be large are streamed with `stream_body`.
pub async fn collect_body(body: ReqBody, settings: &NodeSettings) -> Result<Bytes, Problem> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let gather = async move {
        let mut out = BytesMut::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        out.freeze()
    };
    let (streamed, data) = tokio::join!(stream_body(body, settings, tx), gather);
    streamed.map(|()| data)
}

/// The whole small body of a write request: refused unless the peer holds
/// the write capability, the declared size and encoding are acceptable,
/// and the body arrives within the cap and the deadline.
pub async fn write_body(
    settings: &NodeSettings,
    req: Request<ReqBody>,
    peer: SocketAddr,
) -> Result<(http::HeaderMap, Bytes), Problem> {
    if let Some(p) = write_refusal(settings, &req, peer) {
        return Err(p);
    }
    if let Some(p) = body_refusal(&req, settings.max_body_bytes) {
        return Err(p);
    }
    let (parts, body) = req.into_parts();
    let data = collect_body(body, settings).await?;
    Ok((parts.headers, data))
}

/// A role's error as the problem+json its API answers with.
pub trait AsProblem {
    fn as_problem(&self) -> Problem;
}

/// Runs a store call on the blocking pool (redb is synchronous) and turns
/// its error into the role's problem; a task that panicked is a 500.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Problem>
where
    T: Send + 'static,
    E: AsProblem + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.as_problem()),
        Err(e) => Err(Problem::internal(format!("store task: {e}"))),
    }
}

impl AsProblem for crate::HandleError {
    fn as_problem(&self) -> Problem {
        use crate::HandleError as E;
        match self {
            E::Down(_) => Problem::unavailable("downstream_down", self.to_string(), 1),
            E::Refused(why) => Problem::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                why.clone(),
            ),
            E::Failed(why) => Problem::internal(why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_decoded_and_borrowed_when_plain() {
        let plain = path_param("b3:00ff").unwrap();
        assert!(matches!(plain, std::borrow::Cow::Borrowed("b3:00ff")));
        assert_eq!(path_param("b3%3A00ff").unwrap(), "b3:00ff");
        assert_eq!(path_param("site%2Fhome").unwrap(), "site/home");
        assert!(path_param("%FF").is_none(), "not UTF-8");
    }

    #[test]
    fn a_flag_is_yes_or_no_once() {
        assert!(!query_flag(None, "history").unwrap());
        assert!(!query_flag(Some("a=1"), "history").unwrap());
        for yes in ["history=true", "x=2&history=1"] {
            assert!(query_flag(Some(yes), "history").unwrap(), "{yes}");
        }
        for no in ["history=false", "history=0"] {
            assert!(!query_flag(Some(no), "history").unwrap(), "{no}");
        }
        for bad in ["history=yes", "history=", "history=true&history=true"] {
            let p = query_flag(Some(bad), "history").unwrap_err();
            assert_eq!((p.status, p.reason), (400, "bad_query"), "{bad}");
        }
    }

    #[test]
    fn a_json_body_is_an_object() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)] // read through Debug
        struct Two {
            a: Option<u8>,
            b: Option<u8>,
        }
        assert!(json_object::<Two>(b" {\"a\": 1}").is_ok());
        for bad in [&b"[1, 2]"[..], b"[null, null]", b"null", b"", b"{"] {
            let p = json_object::<Two>(bad).unwrap_err();
            assert_eq!((p.status, p.reason), (400, "bad_json"));
        }
    }
}
