//! Serving HTTP the same way on every listener of the node: HTTP/1.1 and
//! HTTP/2 (h2c), a header-read timeout against slow-loris clients, a
//! correlation id on every request, one metrics/log line per request, and a
//! graceful drain bounded by a deadline.
//!
//! Invariant: a listener stops accepting the moment its shutdown token fires;
//! requests already accepted get up to the drain deadline to finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::listener::HttpListener;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::names;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of every handler in the node.
pub type Body = BoxBody<Bytes, BoxError>;
/// The request body every handler takes: the connection's body as it
/// arrives, or a body a layer in front rewrote (omnigate inflates encoded
/// bodies before passing them on).
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// Boxes a body of any kind into a `ReqBody`.
pub fn req_body<B>(body: B) -> ReqBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub const CORR_ID_HEADER: header::HeaderName = header::HeaderName::from_static("x-request-id");

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plane's OpenAPI document (compiled in) as the answer to
/// `GET /openapi.json`.
pub fn openapi(doc: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(doc.as_bytes())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response. Serializing the node's own response types cannot fail;
/// if one ever did, the client gets a problem+json 500 rather than a panic.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => {
            crate::problem::Problem::internal(format!("response encoding: {e}")).into_response()
        }
    }
}

/// A streaming body fed by a channel: each `Bytes` sent becomes one data
/// frame; the body ends when the sender is dropped, or fails (the client
/// sees the connection cut, never a silently short body) when the sender
/// reports an error. Used for SSE and for streaming objects.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

/// The feeding end of a `ChannelBody`.
#[derive(Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
}

impl BodySender {
    /// Sends one frame; `Err` when the client has gone.
    pub async fn send(&self, data: Bytes) -> Result<(), Bytes> {
        self.tx.send(Ok(data)).await.map_err(|e| match e.0 {
            Ok(b) => b,
            Err(_) => Bytes::new(),
        })
    }

    /// From a blocking thread.
    pub fn blocking_send(&self, data: Bytes) -> Result<(), Bytes> {
        self.tx.blocking_send(Ok(data)).map_err(|e| match e.0 {
            Ok(b) => b,
            Err(_) => Bytes::new(),
        })
    }

    /// Ends the body with an error: the response is cut, not completed.
    pub fn blocking_fail(&self, err: BoxError) {
        let _ = self.tx.blocking_send(Err(err));
    }

    pub async fn fail(&self, err: BoxError) {
        let _ = self.tx.send(Err(err)).await;
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl ChannelBody {
    pub fn channel(capacity: usize) -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (BodySender { tx }, ChannelBody { rx }.boxed())
    }

    /// A body fed by an existing channel (a peer fetch's verified bytes).
    pub fn from_receiver(rx: mpsc::Receiver<Result<Bytes, BoxError>>) -> Body {
        ChannelBody { rx }.boxed()
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A body of pieces already in memory (verified chunks from a cache), sent
/// in order without copying them.
pub fn pieces(pieces: Vec<Bytes>) -> Body {
    if pieces.len() == 1 {
        if let Some(one) = pieces.into_iter().next() {
            return full(one);
        }
        return empty();
    }
    PiecesBody {
        remaining: pieces.iter().map(|b| b.len() as u64).sum(),
        pieces: pieces.into(),
    }
    .boxed()
}

struct PiecesBody {
    pieces: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl hyper::body::Body for PiecesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = self.pieces.pop_front();
        if let Some(b) = &next {
            self.remaining -= b.len() as u64;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// The correlation id of a request: the client's `x-request-id` when it sent
/// a sane one, else generated. The serving layer puts it in the request's
/// `x-request-id` header before the handler runs (replacing one that was
/// not sane), so handlers and forwarded requests see the same id, and on
/// the response.
///
/// Invariant: a `CorrId` is visible ASCII (checked or generated), so
/// `as_str` never fails; it clones without allocating (the client's value
/// shares hyper's read buffer, a generated one its own small block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrId(HeaderValue);

impl CorrId {
    /// The id of `req` and whether it was generated here (then it is not
    /// yet in the request's headers).
    fn from_request<B>(req: &Request<B>) -> (Self, bool) {
        let given = req.headers().get(CORR_ID_HEADER).filter(|v| {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        });
        if let Some(v) = given {
            return (CorrId(v.clone()), false);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 16];
        let mut n = fastrand::u64(..);
        for slot in id.iter_mut().rev() {
            *slot = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        // One allocation (the owner's block); clones share it.
        let v = HeaderValue::from_maybe_shared(Bytes::from_owner(id))
            .unwrap_or_else(|_| HeaderValue::from_static("0000000000000000"));
        (CorrId(v), true)
    }

    pub fn as_str(&self) -> &str {
        // Checked or generated as visible ASCII (see the invariant).
        self.0.to_str().unwrap_or_default()
    }

    /// The id of a request that passed through the serving layer.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        req.headers().get(CORR_ID_HEADER).cloned().map(CorrId)
    }
}

impl std::fmt::Display for CorrId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler returns: the response and the route template it matched
/// (`/v1/o/{address}`, never the raw path) for metrics labels.
pub struct Routed {
    pub route: &'static str,
    pub response: Response<Body>,
}

impl Routed {
    pub fn new(route: &'static str, response: Response<Body>) -> Self {
        Self { route, response }
    }
}

/// How one listener serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listener name, used as the `listener` label and in logs.
    pub name: &'static str,
    pub header_read_timeout: Duration,
    pub drain_deadline: Duration,
    /// Log every request at info (service planes) or debug (health plane,
    /// which Prometheus scrapes every few seconds).
    pub log_requests_at_info: bool,
}

impl ServeOptions {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            header_read_timeout: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(5),
            log_requests_at_info: true,
        }
    }
}

/// A request handler: gets the request and the peer's socket address (the
/// only trustworthy statement of where a request came from).
pub trait Handler: Send + Sync + 'static {
    fn call(
        &self,
        req: Request<ReqBody>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Routed> + Send + 'static>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<ReqBody>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Routed> + Send + 'static,
{
    fn call(
        &self,
        req: Request<ReqBody>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Routed> + Send + 'static>> {
        Box::pin(self(req, peer))
    }
}

/// Serves `listener` until `shutdown` fires, then drains open connections
/// for at most `opts.drain_deadline`. Returns when every connection is done
/// or the deadline passed.
pub async fn serve(
    listener: impl Into<HttpListener>,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    serve_with(listener, handler, shutdown, opts, None).await
}

/// `serve`, with TLS when an acceptor is given: the handshake must finish
/// within the header-read timeout (a client that connects and never speaks
/// is cut off like a slow-loris one).
pub async fn serve_with(
    listener: impl Into<HttpListener>,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    opts: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener: HttpListener = listener.into();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let opts = Arc::new(opts);
    // Looked up once per listener, not once per request.
    let inflight = metrics::gauge!(names::INFLIGHT_REQUESTS, "listener" => opts.name);
    let series = Arc::new(RequestSeries::default());

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let opts2 = opts.clone();
        let inflight = inflight.clone();
        let series = series.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let opts = opts2.clone();
            let inflight = inflight.clone();
            let series = series.clone();
            async move {
                Ok::<_, Infallible>(
                    handle_one(handler, req.map(req_body), peer, &opts, &inflight, &series).await,
                )
            }
        });
        let watcher = graceful.watcher();
        let name = opts.name;
        let builder = builder.clone();
        let handshake_timeout = opts.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                                .into_owned();
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!(names::REJECTED_TOTAL, "reason" => "tls_handshake")
                                .increment(1);
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics::counter!(names::REJECTED_TOTAL, "reason" => "header_timeout")
                                .increment(1);
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                if is_header_timeout(&*e) {
                    // A client that did not finish its request head in time
                    // (slow-loris): cut off and counted.
                    metrics::counter!(names::REJECTED_TOTAL, "reason" => "header_timeout")
                        .increment(1);
                }
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = opts.name, open, "draining connections");
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.drain_deadline) => {
            tracing::warn!(listener = opts.name, "drain deadline passed with connections still open");
        }
    }
}

/// The `method` label: the standard methods by name, any other as
/// `other` (a client must not be able to mint series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `code` label without an allocation for the codes the node sends.
fn status_label(s: StatusCode) -> std::borrow::Cow<'static, str> {
    const CODES: [&str; 24] = [
        "200", "201", "202", "204", "206", "304", "400", "401", "403", "404", "405", "409", "410",
        "412", "413", "415", "416", "422", "429", "500", "501", "502", "503", "504",
    ];
    match CODES.iter().find(|c| **c == s.as_str()) {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => std::borrow::Cow::Owned(s.as_str().to_owned()),
    }
}

/// The per-request series of one listener, each looked up in the recorder
/// once and then kept: the recorder's own lookup copies the labels and
/// wraps a new handle on every call (six allocations a request). The keys
/// are bounded: route templates, `method_label`'s eight values, and the
/// status codes handlers send.
#[derive(Default)]
struct RequestSeries {
    requests: std::sync::RwLock<HashMap<(&'static str, &'static str, u16), metrics::Counter>>,
    latency: std::sync::RwLock<HashMap<&'static str, metrics::Histogram>>,
}

impl RequestSeries {
    fn requests(&self, route: &'static str, method: &Method, code: StatusCode) -> metrics::Counter {
        let key = (route, method_label(method), code.as_u16());
        if let Some(c) = read(&self.requests).get(&key) {
            return c.clone();
        }
        let c = metrics::counter!(names::HTTP_REQUESTS_TOTAL,
            "route" => route, "method" => key.1, "code" => status_label(code));
        write(&self.requests).insert(key, c.clone());
        c
    }

    fn latency(&self, route: &'static str) -> metrics::Histogram {
        if let Some(h) = read(&self.latency).get(route) {
            return h.clone();
        }
        let h = metrics::histogram!(names::REQUEST_LATENCY_SECONDS, "route" => route);
        write(&self.latency).insert(route, h.clone());
        h
    }
}

/// A lock whose holder panicked still holds good handles (a map insert
/// cannot leave it half-done in a way a reader could see).
fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

async fn handle_one(
    handler: Arc<dyn Handler>,
    mut req: Request<ReqBody>,
    peer: SocketAddr,
    opts: &ServeOptions,
    inflight: &metrics::Gauge,
    series: &RequestSeries,
) -> Response<Body> {
    let start = Instant::now();
    let (corr, generated) = CorrId::from_request(&req);
    if generated {
        req.headers_mut().insert(CORR_ID_HEADER, corr.0.clone());
    }
    let method = req.method().clone();
    // The path is kept only when the request line will be logged.
    let log = (opts.log_requests_at_info && tracing::enabled!(tracing::Level::INFO))
        || tracing::enabled!(tracing::Level::DEBUG);
    let path = if log {
        req.uri().path().to_owned()
    } else {
        String::new()
    };
    inflight.increment(1.0);
    let Routed {
        route,
        mut response,
    } = handler.call(req, peer).await;
    inflight.decrement(1.0);
    if let Some(p) = response
        .extensions()
        .get::<crate::problem::Problem>()
        .filter(|p| p.corr_id.is_none())
        .cloned()
    {
        {
            // Re-render so the body names the request, as the header does.
            // Headers the handler added after rendering (WWW-Authenticate,
            // Content-Range, …) are kept.
            let extra = std::mem::take(response.headers_mut());
            response = p.with_corr_id(corr.as_str().to_owned()).into_response();
            for name in extra.keys() {
                if name != header::CONTENT_LENGTH && !response.headers().contains_key(name) {
                    for value in extra.get_all(name) {
                        response.headers_mut().append(name, value.clone());
                    }
                }
            }
        }
    }
    response
        .headers_mut()
        .insert(CORR_ID_HEADER, corr.0.clone());
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    series
        .requests(route, &method, response.status())
        .increment(1);
    series.latency(route).record(elapsed.as_secs_f64());
    let ms = elapsed.as_secs_f64() * 1e3;
    if !log {
        return response;
    }
    // JSON lines carry `"corr_id":"…"` as a field; the message repeats it
    // as `corr_id=…` so `grep corr_id=` finds request lines in either
    // format (text already prints the field that way).
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        if opts.log_requests_at_info {
            tracing::info!(listener = opts.name, corr_id = %corr, %peer, %method, %path, route, status, ms, "request corr_id={}", corr);
        } else {
            tracing::debug!(listener = opts.name, corr_id = %corr, %peer, %method, %path, route, status, ms, "request corr_id={}", corr);
        }
    } else if opts.log_requests_at_info {
        tracing::info!(listener = opts.name, corr_id = %corr, %peer, %method, %path, route, status, ms, "request");
    } else {
        tracing::debug!(listener = opts.name, corr_id = %corr, %peer, %method, %path, route, status, ms, "request");
    }
    response
}

/// Whether log lines are JSON (the host sets it once, at start).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Tells the serving layer which log format is in force.
pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One request on a fresh connection; the response head and body.
    fn ask(addr: SocketAddr, head: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "{head}\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
        resp.lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim())
    }

    #[test]
    fn the_handler_sees_the_id_the_response_carries() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        // The handler answers with the id it was given.
        let handler = |req: Request<ReqBody>, _peer: SocketAddr| async move {
            let id = CorrId::of(&req).map(|c| c.to_string()).unwrap_or_default();
            Routed::new("/t", Response::new(full(id)))
        };
        let shutdown = CancellationToken::new();
        let served = rt.spawn(serve(
            l,
            Arc::new(handler),
            shutdown.clone(),
            ServeOptions::new("test"),
        ));
        let body = |r: &str| r.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();

        let r = ask(addr, "GET / HTTP/1.1\r\nx-request-id: t-123");
        assert_eq!(header(&r, "x-request-id"), Some("t-123"), "{r}");
        assert_eq!(body(&r), "t-123");
        // None, or one that is not sane: generated, and the same on both
        // sides.
        for head in ["GET / HTTP/1.1", "GET / HTTP/1.1\r\nx-request-id: a b"] {
            let r = ask(addr, head);
            let id = header(&r, "x-request-id").unwrap();
            assert_eq!(id.len(), 16, "{r}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{r}");
            assert_eq!(body(&r), id);
        }
        // A method of the client's own making is one `other` series.
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        shutdown.cancel();
        rt.block_on(served).unwrap();
    }
}
