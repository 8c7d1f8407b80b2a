//! Remote downstreams: a storage, index or mailbox that runs in another
//! process, reached over its HTTP API with a pooled hyper client.
//!
//! - connect and response-head timeouts; a refused or timed-out connect is
//!   `downstream_connect_errors_total{service}` and a fast 502;
//! - a reachability probe (TCP connect) drives readiness: a downstream that
//!   cannot be reached is hard-down and the gateway is not ready;
//! - hedged reads (`--hedge-read`): a GET of an object that has not
//!   answered after the observed p95 gets a second request; the first
//!   answer wins and the other is dropped (cancelled), within a budget of
//!   at most 10 % extra reads.
//!
//! Invariant: bodies are streamed both ways, never buffered here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ron_kernel::chaos::{Target, CHAOS};
use ron_kernel::http::{req_body, Body, BoxError, ReqBody};
use ron_kernel::metrics::names;
use ron_kernel::Problem;

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Recent response-head latencies, for the hedge delay.
const LATENCY_WINDOW: usize = 128;
/// Hedging starts once this many reads have been observed.
const MIN_SAMPLES: usize = 20;

pub struct Remote {
    pub service: &'static str,
    edge: Target,
    base: String,
    authority: String,
    client: Client<HttpConnector, ReqBody>,
    connect_timeout: Duration,
    request_timeout: Duration,
    reachable: AtomicBool,
    probed: AtomicBool,
    latencies: Mutex<VecDeque<Duration>>,
    reads: AtomicU64,
    hedges: AtomicU64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("service", &self.service)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How a hedged read ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    /// The hedge answered first; the first request was dropped.
    HedgeWon,
    /// The first request answered first after all; the hedge was dropped.
    PrimaryWon,
    /// A hedge was due but the budget (10 % extra reads) was spent.
    Budget,
}

impl HedgeOutcome {
    fn label(self) -> &'static str {
        match self {
            HedgeOutcome::HedgeWon => "hedge_won",
            HedgeOutcome::PrimaryWon => "primary_won",
            HedgeOutcome::Budget => "budget_exhausted",
        }
    }
}

impl Remote {
    /// Checks a downstream base URL: `http://host:port` with an optional
    /// path prefix and nothing else.
    pub fn parse_base(url: &str) -> Result<(String, String), String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https downstreams are not supported; reach storage, index and mailbox over a private network with http://"
                ))
            }
            _ => return Err(format!("{url:?} must start with http://")),
        }
        let Some(auth) = uri.authority() else {
            return Err(format!("{url:?} has no host"));
        };
        if uri.query().is_some() {
            return Err(format!("{url:?} must not carry a query"));
        }
        let authority = if auth.port().is_some() {
            auth.as_str().to_owned()
        } else {
            format!("{}:80", auth.host())
        };
        let base = url.trim_end_matches('/').to_owned();
        Ok((base, authority))
    }

    /// `edge` names the service (storage, index or mailbox) and the drill
    /// faults its calls take.
    pub fn new(
        edge: Target,
        url: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let (base, authority) = Self::parse_base(url)?;
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(conn);
        Ok(Self {
            service: edge.name(),
            edge,
            base,
            authority,
            client,
            connect_timeout,
            request_timeout,
            reachable: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
            reads: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the last probe reached the downstream; `None` before the
    /// first probe finished.
    pub fn reachable(&self) -> Option<bool> {
        self.probed
            .load(Ordering::Acquire)
            .then(|| self.reachable.load(Ordering::Acquire))
    }

    /// Opens (and closes) a TCP connection to the downstream.
    pub async fn probe(&self) -> bool {
        let ok = matches!(
            tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect(&self.authority)
            )
            .await,
            Ok(Ok(_))
        );
        if !ok {
            // A failed reachability probe is a failed connect too: the
            // counter moves while the downstream is down even when no
            // request is sent to it.
            metrics::counter!(names::DOWNSTREAM_CONNECT_ERRORS_TOTAL, "service" => self.service)
                .increment(1);
        }
        self.reachable.store(ok, Ordering::Release);
        self.probed.store(true, Ordering::Release);
        ok
    }

    fn note_unreachable(&self) {
        self.reachable.store(false, Ordering::Release);
        self.probed.store(true, Ordering::Release);
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, Problem> {
        format!("{}{}", self.base, path_and_query)
            .parse()
            .map_err(|e| Problem::bad_request("bad_path", format!("not a forwardable path: {e}")))
    }

    /// Sends one request and waits for the response head, within the
    /// request timeout.
    async fn send(&self, req: Request<ReqBody>) -> Result<Response<Body>, Problem> {
        let start = Instant::now();
        // A drill's fault on this edge is part of the call: each copy of a
        // hedged read draws its own, and the latency is timed.
        if let Err(e) = CHAOS.at(self.edge).await {
            metrics::histogram!(names::DOWNSTREAM_LATENCY_SECONDS, "service" => self.service)
                .record(start.elapsed().as_secs_f64());
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "downstream_error",
                format!("{} failed: {e}", self.service),
            ));
        }
        let outcome = tokio::time::timeout(self.request_timeout, self.client.request(req)).await;
        metrics::histogram!(names::DOWNSTREAM_LATENCY_SECONDS, "service" => self.service)
            .record(start.elapsed().as_secs_f64());
        match outcome {
            Err(_) => Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "downstream_timeout",
                format!(
                    "{} did not answer within {:?}",
                    self.service, self.request_timeout
                ),
            )),
            Ok(Err(e)) if e.is_connect() => {
                metrics::counter!(names::DOWNSTREAM_CONNECT_ERRORS_TOTAL, "service" => self.service)
                    .increment(1);
                self.note_unreachable();
                Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "downstream_unreachable",
                    format!("{} at {} cannot be reached", self.service, self.base),
                )
                .retry_after(1))
            }
            Ok(Err(e)) => Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "downstream_error",
                format!("{} failed: {e}", self.service),
            )),
            Ok(Ok(resp)) => {
                self.record_latency(start.elapsed());
                Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed()))
            }
        }
    }

    /// Forwards a client request as it is (streamed body, end-to-end
    /// headers) and returns the downstream's response.
    pub async fn forward(
        &self,
        req: Request<ReqBody>,
        peer: SocketAddr,
        hedge: bool,
    ) -> Result<Response<Body>, Problem> {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        parts.uri = self.uri(&pq)?;
        for h in HOP_BY_HOP {
            parts.headers.remove(*h);
        }
        parts.headers.remove(header::HOST);
        if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
            parts
                .headers
                .append(HeaderName::from_static("x-forwarded-for"), v);
        }
        if hedge && parts.method == Method::GET {
            // A GET carries no body: the request can be sent twice.
            return self.hedged(parts).await;
        }
        self.send(Request::from_parts(parts, body)).await
    }

    /// Sends a read and waits for its first body byte (or its end), within
    /// the request timeout.
    async fn to_first_byte(&self, req: Request<ReqBody>) -> Result<Response<Body>, Problem> {
        let resp = self.send(req).await?;
        let (parts, mut body) = resp.into_parts();
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Response::from_parts(parts, body));
        }
        let first = tokio::time::timeout(self.request_timeout, body.frame()).await;
        let first = match first {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "downstream_timeout",
                    format!(
                        "{} sent no body byte within {:?}",
                        self.service, self.request_timeout
                    ),
                ))
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                return Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "downstream_error",
                    format!("{} failed: {e}", self.service),
                ))
            }
            Ok(Some(Ok(frame))) => Some(frame),
        };
        Ok(Response::from_parts(
            parts,
            Prefixed { first, rest: body }.boxed(),
        ))
    }

    /// A read sent again after the observed p95 delay when the first copy
    /// has not produced its first body byte; the first to do so wins and
    /// the other is dropped (cancelled).
    async fn hedged(&self, parts: http::request::Parts) -> Result<Response<Body>, Problem> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let build = || {
            let mut r = Request::new(req_body(Empty::<Bytes>::new()));
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.headers_mut() = parts.headers.clone();
            r
        };
        let first = self.to_first_byte(build());
        tokio::pin!(first);
        let Some(delay) = self.hedge_delay() else {
            return first.await;
        };
        tokio::select! {
            r = &mut first => return r,
            _ = tokio::time::sleep(delay) => {}
        }
        if !self.take_hedge_budget() {
            count_hedge(HedgeOutcome::Budget);
            return first.await;
        }
        let second = self.to_first_byte(build());
        tokio::pin!(second);
        // The loser is dropped when this returns, which cancels it.
        tokio::select! {
            r = &mut first => { count_hedge(HedgeOutcome::PrimaryWon); r }
            r = &mut second => { count_hedge(HedgeOutcome::HedgeWon); r }
        }
    }

    fn record_latency(&self, d: Duration) {
        let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == LATENCY_WINDOW {
            l.pop_front();
        }
        l.push_back(d);
    }

    /// The observed p95 of response heads, once there are enough samples.
    pub fn hedge_delay(&self) -> Option<Duration> {
        let mut v: Vec<Duration> = {
            let l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
            if l.len() < MIN_SAMPLES {
                return None;
            }
            l.iter().copied().collect()
        };
        v.sort_unstable();
        let idx = (v.len() * 95 / 100).min(v.len() - 1);
        Some(v[idx].max(Duration::from_millis(1)))
    }

    /// At most one hedge per ten reads.
    fn take_hedge_budget(&self) -> bool {
        let reads = self.reads.load(Ordering::Relaxed);
        let mut hedges = self.hedges.load(Ordering::Relaxed);
        loop {
            if (hedges + 1) * 10 > reads {
                return false;
            }
            match self.hedges.compare_exchange_weak(
                hedges,
                hedges + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(h) => hedges = h,
            }
        }
    }

    /// A small GET whose JSON answer the gateway reads itself (hydration).
    pub async fn get_json(
        &self,
        path_and_query: &str,
        cap: usize,
    ) -> Result<(StatusCode, serde_json::Value), Problem> {
        let mut req = Request::new(req_body(Empty::<Bytes>::new()));
        *req.uri_mut() = self.uri(path_and_query)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "downstream_error",
                    format!("{}: {e}", self.service),
                )
            })?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > cap {
                    return Err(Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "downstream_error",
                        format!("{} answered more than {cap} bytes", self.service),
                    ));
                }
                buf.extend_from_slice(data);
            }
        }
        let body = buf;
        let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, v))
    }

    /// A HEAD whose status and headers the gateway reads itself.
    pub async fn head(&self, path: &str) -> Result<Response<Body>, Problem> {
        let mut req = Request::new(req_body(Empty::<Bytes>::new()));
        *req.method_mut() = Method::HEAD;
        *req.uri_mut() = self.uri(path)?;
        self.send(req).await
    }
}

/// A downstream body whose first frame was already read (to see that the
/// downstream is producing bytes), given back in front of the rest.
struct Prefixed {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(f)));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let rest = self.rest.size_hint();
        let extra = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        // Lower first on a fresh hint (no upper yet), so neither setter can
        // see lower > upper.
        let mut h = hyper::body::SizeHint::new();
        h.set_lower(rest.lower() + extra);
        if let Some(u) = rest.upper() {
            h.set_upper(u + extra);
        }
        h
    }
}

fn count_hedge(o: HedgeOutcome) {
    metrics::counter!(names::OMNIGATE_HEDGED_READS_TOTAL, "outcome" => o.label()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote {
        Remote::new(
            Target::Storage,
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(Remote::parse_base("http://10.0.0.5:9447").is_ok());
        assert_eq!(
            Remote::parse_base("http://store.internal/").unwrap().1,
            "store.internal:80"
        );
        assert!(Remote::parse_base("https://x:1")
            .unwrap_err()
            .contains("https"));
        assert!(Remote::parse_base("ftp://x").is_err());
        assert!(Remote::parse_base("http://x:1/?a=b").is_err());
    }

    #[test]
    fn hedge_delay_is_the_p95_once_there_are_samples() {
        let r = remote();
        for ms in 1..MIN_SAMPLES as u64 {
            r.record_latency(Duration::from_millis(ms));
        }
        assert!(r.hedge_delay().is_none());
        for ms in 0..100u64 {
            r.record_latency(Duration::from_millis(ms + 1));
        }
        let d = r.hedge_delay().unwrap();
        assert!(
            d >= Duration::from_millis(90) && d <= Duration::from_millis(100),
            "{d:?}"
        );
    }

    #[test]
    fn hedges_are_at_most_a_tenth_of_reads() {
        let r = remote();
        let mut granted = 0;
        for _ in 0..1000 {
            r.reads.fetch_add(1, Ordering::Relaxed);
            if r.take_hedge_budget() {
                granted += 1;
            }
        }
        assert_eq!(granted, 100);
    }

    #[tokio::test]
    async fn a_down_downstream_fails_fast_and_is_marked_unreachable() {
        let r = remote();
        assert_eq!(r.reachable(), None);
        let req = Request::new(req_body(Empty::<Bytes>::new()));
        let p = r
            .forward(req, "127.0.0.1:5".parse().unwrap(), false)
            .await
            .unwrap_err();
        assert_eq!(p.status, 502);
        assert_eq!(r.reachable(), Some(false));
        assert!(!r.probe().await);
    }
}
