//! Omnigate: the node's public HTTP face (objects, names, topics, hydrated
//! views) on SERVICE_ADDR.
//!
//! Every request passes the admission stack, outermost first: the in-flight
//! cap (503 `busy`; writes are shed first, above 90 % of the cap), the
//! token-bucket quotas (429 `quota`), the route, the downstream's limiter
//! (503 `downstream_busy` when no permit comes within the budget), the
//! declared body cap (413 `body_cap`) and the decompression guard (413
//! `decompress`, 415 for stacked or unknown encodings). Then it goes to the
//! downstream: the in-process role's handle when it runs beside omnigate,
//! else its URL (`downstream.<name>`). The write capability and the body
//! deadline are enforced by the downstream handlers, the header deadline
//! by the server (slow-loris clients never take an in-flight slot).
//!
//! Invariant: omnigate reaches storage, index and mailbox only through their
//! handles or their HTTP API, never through their stores; the in-flight and
//! downstream permits of a request are held until its response body ends.

pub mod admission;
pub mod config;
pub mod inflate;
pub mod remote;
mod tls;
mod view;

pub use config::OmnigateConfig;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use ron_kernel::chaos::{self, Injected, CHAOS};
use ron_kernel::handles::{Feeds, HttpApi, Names, Objects, PeerFetch};
use ron_kernel::http::{Body, BoxError, ReqBody, Routed};
use ron_kernel::metrics::names;
use ron_kernel::request::blocking;
use ron_kernel::request::body_cap_problem;
use ron_kernel::{Live, Problem, RoleContext, RoleName, RoleResult};

use crate::admission::{Limiter, Permit, Quotas};
use crate::remote::Remote;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Storage,
    Index,
    Mailbox,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Storage, Service::Index, Service::Mailbox];

    pub fn name(self) -> &'static str {
        self.role().as_str()
    }

    /// The edge a drill's faults name.
    pub fn edge(self) -> chaos::Target {
        match self {
            Service::Storage => chaos::Target::Storage,
            Service::Index => chaos::Target::Index,
            Service::Mailbox => chaos::Target::Mailbox,
        }
    }

    /// The role that serves it.
    pub fn role(self) -> RoleName {
        match self {
            Service::Storage => RoleName::Storage,
            Service::Index => RoleName::Index,
            Service::Mailbox => RoleName::Mailbox,
        }
    }

    fn idx(self) -> usize {
        self as usize
    }

    fn cap(self, cfg: &OmnigateConfig) -> usize {
        (match self {
            Service::Storage => cfg.storage_semaphore,
            Service::Index => cfg.index_semaphore,
            Service::Mailbox => cfg.mailbox_semaphore,
        }) as usize
    }
}

/// What a request path asks for, and its route template (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Service(Service, &'static str),
    View,
    /// `GET /openapi.json`.
    Document,
    Unknown,
}

/// The gateway's OpenAPI 3.1 description (`GET /openapi.json`), written by
/// hand; `tests/openapi.rs` holds it to the routers behind the gateway.
pub const OPENAPI: &str = include_str!("../../../docs/openapi/omnigate.json");

fn classify(path: &str) -> Target {
    let svc = |s, t| Target::Service(s, t);
    match path {
        "/v1/o" => svc(Service::Storage, "/v1/o"),
        "/v1/uploads" => svc(Service::Storage, "/v1/uploads"),
        p if p.starts_with("/v1/o/") => svc(Service::Storage, "/v1/o/{address}"),
        p if p.starts_with("/v1/uploads/") => svc(Service::Storage, "/v1/uploads/{id}"),
        p if p.starts_with("/v1/names/") => svc(Service::Index, "/v1/names/{name}"),
        p if p.starts_with("/v1/topics/") => svc(Service::Mailbox, "/v1/topics/{topic}"),
        p if p.starts_with("/v1/view/") && p.len() > "/v1/view/".len() => Target::View,
        "/openapi.json" => Target::Document,
        _ => Target::Unknown,
    }
}

fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The gateway: admission state and the way to every downstream.
pub struct Gate {
    ctx: RoleContext,
    cfg: Live<OmnigateConfig>,
    inflight: Arc<Limiter>,
    quotas: Quotas,
    limiters: [Arc<Limiter>; 3],
    remotes: [Option<Arc<Remote>>; 3],
}

fn reject(reason: &'static str, p: Problem) -> http::Response<Body> {
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
    p.into_response()
}

impl Gate {
    pub fn new(ctx: RoleContext, cfg: Live<OmnigateConfig>) -> Result<Self, String> {
        let c = cfg.load();
        let d = &c.downstream;
        let mk = |svc: Service, url: &Option<String>| -> Result<Option<Arc<Remote>>, String> {
            url.as_deref()
                .map(|u| {
                    Remote::new(svc.edge(), u, d.connect_timeout, d.request_timeout).map(Arc::new)
                })
                .transpose()
        };
        let remotes = [
            mk(Service::Storage, &d.storage)?,
            mk(Service::Index, &d.index)?,
            mk(Service::Mailbox, &d.mailbox)?,
        ];
        Ok(Self {
            ctx,
            cfg,
            inflight: Limiter::new(),
            quotas: Quotas::default(),
            limiters: [Limiter::new(), Limiter::new(), Limiter::new()],
            remotes,
        })
    }

    fn limiter(&self, svc: Service) -> &Arc<Limiter> {
        &self.limiters[svc.idx()]
    }

    fn remote(&self, svc: Service) -> Option<&Arc<Remote>> {
        self.remotes[svc.idx()].as_ref()
    }

    fn reject_downstream_busy(&self, svc: Service) -> http::Response<Body> {
        reject(
            "downstream_busy",
            Problem::unavailable(
                "downstream_busy",
                format!("{} is at its concurrency limit; retry shortly", svc.name()),
                1,
            ),
        )
    }

    /// The in-process API of `svc`, when its role runs here and is up.
    fn local(&self, svc: Service) -> Option<Arc<dyn HttpApi>> {
        let h = &self.ctx.handles;
        match svc {
            Service::Storage => h.get::<dyn Objects>().ok().map(|a| a as Arc<dyn HttpApi>),
            Service::Index => h.get::<dyn Names>().ok().map(|a| a as Arc<dyn HttpApi>),
            Service::Mailbox => h.get::<dyn Feeds>().ok().map(|a| a as Arc<dyn HttpApi>),
        }
    }

    /// Whether `svc` runs in this process (up or not).
    fn runs_here(&self, svc: Service) -> bool {
        self.ctx.node_roles.contains(&svc.role())
    }

    fn not_reachable(&self, svc: Service) -> Problem {
        if self.runs_here(svc) {
            Problem::unavailable(
                "downstream_down",
                format!("{} is not up in this node right now", svc.name()),
                1,
            )
        } else {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "downstream_unavailable",
                format!(
                    "{0} does not run in this process and omnigate.downstream.{0} is not set",
                    svc.name()
                ),
            )
        }
    }

    /// The whole admission stack and the dispatch of one request.
    pub async fn handle(self: Arc<Self>, mut req: Request<ReqBody>, peer: SocketAddr) -> Routed {
        let start = Instant::now();
        let cfg = self.cfg.load();
        let target = classify(req.uri().path());
        let route = match target {
            Target::Service(_, t) => t,
            Target::View => view::ROUTE,
            Target::Document => "/openapi.json",
            Target::Unknown => "/{unknown}",
        };
        let write = is_write(req.method());

        // 1. In-flight cap; writes are shed first: a write takes a slot only
        // while no more than 90 % of the cap is in use (checked and taken in
        // one step, so concurrent writes near the line are all shed alike and
        // a shed write never holds a slot, not even for a moment).
        let cap = cfg.inflight_max as usize;
        let busy = || {
            Routed::new(
                route,
                reject(
                    "busy",
                    Problem::unavailable("busy", format!("{cap} requests already in flight"), 1),
                ),
            )
        };
        let inflight = if write {
            match self.inflight.try_acquire(cap * 9 / 10) {
                Some(p) => p,
                None if self.inflight.in_use() >= cap => return busy(),
                None => {
                    return Routed::new(
                        route,
                        reject(
                            "shed_write",
                            Problem::unavailable(
                                "shed_write",
                                "the gateway is near its in-flight cap and sheds writes first",
                                1,
                            ),
                        ),
                    )
                }
            }
        } else {
            match self.inflight.try_acquire(cap) {
                Some(p) => p,
                None => return busy(),
            }
        };

        // 2. Quotas.
        if let Err(over) = self.quotas.check(&cfg.quota, peer.ip()) {
            let secs = over.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let who = if over.global {
                "the gateway"
            } else {
                "this client"
            };
            return Routed::new(
                route,
                reject(
                    "quota",
                    Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "quota",
                        format!("{who} is over its request quota"),
                    )
                    .retry_after(secs),
                ),
            );
        }

        let svc = match target {
            Target::Unknown => {
                return Routed::new(
                    route,
                    Problem::not_found(format!("no route {}", req.uri().path())).into_response(),
                )
            }
            Target::Document => {
                let resp = if matches!(*req.method(), Method::GET | Method::HEAD) {
                    ron_kernel::http::openapi(OPENAPI)
                } else {
                    Problem::method_not_allowed("GET, HEAD").into_response()
                };
                return Routed::new(route, resp);
            }
            Target::View => {
                if !matches!(*req.method(), Method::GET | Method::HEAD) {
                    return Routed::new(
                        route,
                        Problem::method_not_allowed("GET, HEAD").into_response(),
                    );
                }
                let raw = &req.uri().path()["/v1/view/".len()..];
                let Some(name) = ron_kernel::request::path_param(raw) else {
                    return Routed::new(
                        route,
                        Problem::bad_request("bad_name", "the name is not UTF-8 once decoded")
                            .into_response(),
                    );
                };
                let name = name.into_owned();
                let Routed { route, response } = view::view(self.clone(), name).await;
                let chunk = cfg.stream_chunk_bytes as usize;
                return Routed::new(route, guarded(response, chunk, inflight, None, None));
            }
            Target::Service(svc, _) => svc,
        };

        // 3. The downstream's limiter.
        let Some(permit) = self
            .limiter(svc)
            .acquire_within(svc.cap(&cfg), cfg.permit_budget)
            .await
        else {
            return Routed::new(route, self.reject_downstream_busy(svc));
        };

        // 4. Declared body cap.
        let settings = self.ctx.settings.load();
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > settings.max_body_bytes) {
            return Routed::new(
                route,
                reject("body_cap", body_cap_problem(settings.max_body_bytes)),
            );
        }

        // 5. Decompression guard.
        match inflate::requested(req.headers()) {
            Err(p) => return Routed::new(route, reject("content_encoding", p)),
            Ok(None) => {}
            Ok(Some(enc)) => {
                let (mut parts, body) = req.into_parts();
                let body = match inflate::Inflate::new(body, enc, settings.max_body_bytes) {
                    Ok(b) => b.boxed(),
                    Err(p) => return Routed::new(route, p.into_response()),
                };
                parts.headers.remove(header::CONTENT_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
                req = Request::from_parts(parts, body);
            }
        }

        // 6. Dispatch.
        let ranged = req.method() == Method::GET
            && svc == Service::Storage
            && req.headers().contains_key(header::RANGE);
        // A GET of an object this node lacks may be fetched from peers
        // (verified and stored locally) and then served as if it had been
        // here all along.
        let refetch = (cfg.fetch_from_peers
            && svc == Service::Storage
            && matches!(*req.method(), Method::GET | Method::HEAD))
        .then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
        let Routed { route, response } = if let Some(api) = self.local(svc) {
            if let Err(e) = CHAOS.at(svc.edge()).await {
                return Routed::new(route, injected(svc, e).into_response());
            }
            let first = api.serve(req, peer).await;
            match refetch {
                Some((method, uri, headers))
                    if first.response.status() == StatusCode::NOT_FOUND =>
                {
                    self.fetch_from_peers(first, method, uri, headers, peer)
                        .await
                }
                _ => first,
            }
        } else if let Some(remote) = self.remote(svc) {
            let hedge = cfg.hedge_read && svc == Service::Storage;
            match remote.forward(req, peer, hedge).await {
                Ok(resp) => Routed::new(route, resp),
                Err(p) => Routed::new(route, p.into_response()),
            }
        } else {
            Routed::new(route, self.not_reachable(svc).into_response())
        };
        count_downstream_refusal(&response);
        // A Range the object's handler ignored (If-Range mismatch) is a
        // full read, not a range start.
        let first_byte =
            (ranged && response.status() == StatusCode::PARTIAL_CONTENT).then_some(start);
        let chunk = cfg.stream_chunk_bytes as usize;
        Routed::new(
            route,
            guarded(response, chunk, inflight, Some(permit), first_byte),
        )
    }

    /// After a local 404: fetch the object from peers through the overlay
    /// and, once it is stored here, answer from the local store.
    async fn fetch_from_peers(
        &self,
        miss: Routed,
        method: Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        peer: SocketAddr,
    ) -> Routed {
        let Ok(peers) = self.ctx.handles.get::<dyn PeerFetch>() else {
            return miss;
        };
        let Some(address) = uri
            .path()
            .strip_prefix("/v1/o/")
            .and_then(ron_kernel::request::path_param)
            .and_then(|a| ron_kernel::ContentAddress::parse(&a).ok())
        else {
            return miss;
        };
        // A range of it is fetched alone, verified group by group against
        // the address as it arrives, and streamed; nothing is stored.
        let tag = format!("\"{address}\"");
        let range =
            ron_kernel::range::effective_range(&method, &headers, &tag).and_then(open_range);
        if let Some(want) = range {
            let range = match want {
                Wanted::Bytes(range) => range,
                // The last `n` bytes: a first ask past any end proves the
                // size (the answer is the last chunk and its proof), the
                // second fetches just those bytes.
                Wanted::Last(n) => match peers.fetch_range(address, u64::MAX - 1..u64::MAX).await {
                    Ok((size, _)) => size.saturating_sub(n)..size,
                    Err(e) => {
                        tracing::debug!(%address, error = %e, "not found at peers either");
                        return miss;
                    }
                },
            };
            return match peers.fetch_range(address, range.clone()).await {
                Ok((size, bytes)) => {
                    Routed::new(ROUTE_PEER_RANGE, peer_range(&tag, size, range, bytes))
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "not found at peers either");
                    miss
                }
            };
        }
        if let Err(e) = peers.fetch(address).await {
            tracing::debug!(%address, error = %e, "not found at peers either");
            return miss;
        }
        let Some(api) = self.local(Service::Storage) else {
            return miss;
        };
        let mut req = Request::new(ron_kernel::http::req_body(http_body_util::Empty::<
            bytes::Bytes,
        >::new()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        api.serve(req, peer).await
    }

    async fn index_get(&self, name: &str) -> Result<Option<view::Record>, String> {
        if let Ok(names) = self.ctx.handles.get::<dyn Names>() {
            CHAOS
                .at(chaos::Target::Index)
                .await
                .map_err(|e| injected(Service::Index, e).detail)?;
            let name = name.to_owned();
            let got = blocking(move || names.lookup(&name))
                .await
                .map_err(|p| p.detail)?;
            return Ok(got.map(|r| view::Record {
                address: r.address.to_string(),
                version: r.version,
                content_type: r.content_type,
                feed: r.feed,
            }));
        }
        let Some(remote) = self.remote(Service::Index) else {
            return Err(self.not_reachable(Service::Index).detail);
        };
        let (status, v) = remote
            .get_json(&format!("/v1/names/{name}"), 64 * 1024)
            .await
            .map_err(|p| p.detail)?;
        match status {
            StatusCode::OK => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| e.to_string()),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            s => Err(format!("index answered {s}")),
        }
    }

    async fn storage_size(&self, address: &str) -> Result<u64, view::PartError> {
        use view::PartError;
        if let Ok(objects) = self.ctx.handles.get::<dyn Objects>() {
            CHAOS
                .at(chaos::Target::Storage)
                .await
                .map_err(|e| PartError::Failed(injected(Service::Storage, e).detail))?;
            let addr = ron_kernel::ContentAddress::parse(address)
                .map_err(|e| PartError::Failed(e.to_string()))?;
            return match blocking(move || objects.size(&addr)).await {
                Ok(Some(size)) => Ok(size),
                Ok(None) => Err(PartError::NotFound),
                Err(p) => Err(PartError::Failed(p.detail)),
            };
        }
        let Some(remote) = self.remote(Service::Storage) else {
            return Err(PartError::Failed(
                self.not_reachable(Service::Storage).detail,
            ));
        };
        let resp = remote
            .head(&format!("/v1/o/{address}"))
            .await
            .map_err(|p| PartError::Failed(p.detail))?;
        match resp.status() {
            StatusCode::OK => resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| PartError::Failed("no Content-Length".into())),
            StatusCode::NOT_FOUND => Err(PartError::NotFound),
            s => Err(PartError::Failed(format!("storage answered {s}"))),
        }
    }

    async fn mailbox_latest(
        &self,
        topic: &str,
        n: usize,
    ) -> Result<Vec<serde_json::Value>, view::PartError> {
        use view::PartError;
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Ok(feeds) = self.ctx.handles.get::<dyn Feeds>() {
            CHAOS
                .at(chaos::Target::Mailbox)
                .await
                .map_err(|e| PartError::Failed(injected(Service::Mailbox, e).detail))?;
            let t = topic.to_owned();
            return blocking(move || feeds.latest(&t, n))
                .await
                .map_err(|p| PartError::Failed(p.detail));
        }
        let Some(remote) = self.remote(Service::Mailbox) else {
            return Err(PartError::Failed(
                self.not_reachable(Service::Mailbox).detail,
            ));
        };
        let (status, v) = remote
            .get_json(
                &format!("/v1/topics/{topic}/messages?latest=true&limit={n}"),
                4 << 20,
            )
            .await
            .map_err(|p| PartError::Failed(p.detail))?;
        if status != StatusCode::OK {
            return Err(PartError::Failed(format!("mailbox answered {status}")));
        }
        Ok(v["messages"].as_array().cloned().unwrap_or_default())
    }

    /// Why the gateway is not ready, or `None` when it is.
    fn unready_reason(&self, overloaded: bool, bus_overflow: bool) -> Option<String> {
        let cfg = self.cfg.load();
        let mut why = Vec::new();
        if overloaded {
            why.push(format!(
                "overloaded: {} of {} requests in flight",
                self.inflight.in_use(),
                cfg.inflight_max
            ));
        }
        for svc in REQUIRED {
            if let Some(r) = self.remote(svc) {
                match r.reachable() {
                    Some(true) => {}
                    Some(false) => why.push(format!(
                        "downstream {} is unreachable at {}",
                        svc.name(),
                        r.base()
                    )),
                    None => why.push(format!("downstream {} not probed yet", svc.name())),
                }
            } else if self.runs_here(svc) && self.local(svc).is_none() {
                why.push(format!("downstream {} is not up", svc.name()));
            }
        }
        if bus_overflow {
            why.push("the bus overflowed".into());
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A drill's injected error on an in-process downstream, answered as a
/// failed remote one would be.
fn injected(svc: Service, e: Injected) -> Problem {
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "downstream_error",
        format!("{} failed: {e}", svc.name()),
    )
}

/// Downstreams without which the gateway is not ready. The mailbox only
/// feeds views and topics; a view without it is a 200 with a warning.
const REQUIRED: [Service; 2] = [Service::Storage, Service::Index];

/// Counts refusals a downstream made (capability, body cap, read-only) in
/// the gateway's `rejected_total`.
fn count_downstream_refusal(resp: &http::Response<Body>) {
    let reason = match resp.extensions().get::<Problem>() {
        Some(p) => match p.reason {
            // `decompress` is counted where the inflater refuses, once.
            r @ ("body_cap" | "unauthorized" | "forbidden" | "read_only" | "body_timeout"
            | "content_encoding") => r,
            _ => return,
        },
        None => match resp.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "body_cap",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            _ => return,
        },
    };
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// A response body that holds the request's permits until it ends, notes
/// the time to the first byte of a ranged read, and hands the connection
/// data frames of at most `omnigate.stream_chunk_bytes` (a larger frame
/// from a downstream is split: `Bytes` slices, nothing is copied), so one
/// large piece never monopolises an h2 connection's window.
struct Guarded {
    inner: Body,
    chunk: usize,
    /// The rest of a frame that was split.
    rest: Bytes,
    _inflight: Permit,
    _permit: Option<Permit>,
    first_byte: Option<Instant>,
}

fn guarded(
    resp: http::Response<Body>,
    chunk: usize,
    inflight: Permit,
    permit: Option<Permit>,
    first_byte: Option<Instant>,
) -> http::Response<Body> {
    resp.map(|inner| {
        Guarded {
            inner,
            chunk: chunk.max(1),
            rest: Bytes::new(),
            _inflight: inflight,
            _permit: permit,
            first_byte,
        }
        .boxed()
    })
}

impl Guarded {
    /// The next at most `chunk` bytes of `data`; the remainder is kept.
    fn cut(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > self.chunk {
            self.rest = data.split_off(self.chunk);
        }
        Frame::data(data)
    }
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.rest.is_empty() {
            let rest = std::mem::take(&mut self.rest);
            return Poll::Ready(Some(Ok(self.cut(rest))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if !f.is_data() {
                    return Poll::Ready(Some(Ok(f)));
                }
                if let Some(t) = self.first_byte.take() {
                    metrics::histogram!(names::OMNIGATE_RANGE_START_LATENCY_SECONDS)
                        .record(t.elapsed().as_secs_f64());
                }
                match f.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(self.cut(data)))),
                    Err(f) => Poll::Ready(Some(Ok(f))),
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The route label of a range answered from peers (the object is not
/// stored here).
const ROUTE_PEER_RANGE: &str = "/v1/o/{address}";

/// The one range a GET of an object wants.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// `bytes=a-b` or `bytes=a-`: `a..b+1` / `a..u64::MAX`.
    Bytes(std::ops::Range<u64>),
    /// `bytes=-n`: the last `n` bytes (`0`: none, a 416).
    Last(u64),
}

/// The range a `Range` header asks for; anything else (several ranges,
/// junk) is `None`, and the whole object is fetched and stored instead.
fn open_range(v: &str) -> Option<Wanted> {
    let (a, b) = v.strip_prefix("bytes=")?.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return b.parse::<u64>().ok().map(Wanted::Last);
    }
    let start = a.parse::<u64>().ok()?;
    match b {
        "" => Some(Wanted::Bytes(start..u64::MAX)),
        b => {
            let last = b.parse::<u64>().ok()?;
            (last >= start).then(|| Wanted::Bytes(start..last.saturating_add(1)))
        }
    }
}

/// A 206 (or 416) for bytes `range` of an object of `size` bytes whose
/// verified bytes arrive from peers on `bytes`.
fn peer_range(
    tag: &str,
    size: u64,
    range: std::ops::Range<u64>,
    bytes: ron_kernel::handles::PeerBytes,
) -> http::Response<Body> {
    let satisfiable = range.start < size;
    let end = range.end.min(size);
    let mut resp = if satisfiable {
        let mut r = http::Response::new(ron_kernel::http::ChannelBody::from_receiver(bytes));
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r
    } else {
        let mut r = http::Response::new(ron_kernel::http::empty());
        *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    let content_range = if satisfiable {
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(end - range.start),
        );
        format!("bytes {}-{}/{size}", range.start, end - 1)
    } else {
        format!("bytes */{size}")
    };
    if let Ok(v) = header::HeaderValue::from_str(&content_range) {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod guarded_tests {
    use super::*;

    #[test]
    fn a_range_header_is_one_range_or_none() {
        assert_eq!(open_range("bytes=5-9"), Some(Wanted::Bytes(5..10)));
        assert_eq!(open_range("bytes=5-"), Some(Wanted::Bytes(5..u64::MAX)));
        assert_eq!(open_range("bytes=-5"), Some(Wanted::Last(5)));
        assert_eq!(open_range("bytes=-0"), Some(Wanted::Last(0)));
        for v in [
            "bytes=9-5",
            "bytes=-",
            "bytes=1-2,5-6",
            "bytes=x-",
            "items=1-2",
            "bytes=--5",
        ] {
            assert_eq!(open_range(v), None, "{v}");
        }
    }

    #[tokio::test]
    async fn large_frames_are_cut_to_the_chunk_size_without_losing_a_byte() {
        use hyper::body::Body as _;
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let resp = http::Response::new(ron_kernel::http::full(data.clone()));
        let limiter = Limiter::new();
        let permit = limiter.try_acquire(1).unwrap();
        let mut frames = Vec::new();
        {
            let body = guarded(resp, 65536, permit, None, None).into_body();
            let mut body = std::pin::pin!(body);
            while let Some(f) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                frames.push(f.unwrap().into_data().unwrap());
            }
            assert_eq!(limiter.in_use(), 1, "held while the body lives");
        }
        let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![65536, 65536, 65536, 200_000 - 3 * 65536]);
        assert_eq!(frames.concat(), data);
        assert_eq!(limiter.in_use(), 0, "the permit is released with the body");
    }
}

/// How often readiness is re-evaluated; overload must persist for two
/// evaluations to flip it, and a bus overflow holds it down this long.
const READY_TICK: Duration = Duration::from_millis(250);
const PROBE_EVERY: u32 = 4;
const OVERFLOW_HOLD: Duration = Duration::from_secs(5);

/// Every reason the gateway counts in `rejected_total`.
pub const REJECT_REASONS: &[&str] = &[
    "busy",
    "shed_write",
    "quota",
    "downstream_busy",
    "body_cap",
    "content_encoding",
    "decompress",
    "unauthorized",
    "forbidden",
    "read_only",
    "body_timeout",
];

/// The gateway's series at zero (see `ron_kernel::metrics::zero_counters`).
pub fn init_series() {
    use ron_kernel::metrics::{zero_counters, zero_histograms};
    let services = ["storage", "index", "mailbox"];
    zero_counters(names::REJECTED_TOTAL, "reason", REJECT_REASONS);
    zero_counters(names::DOWNSTREAM_CONNECT_ERRORS_TOTAL, "service", &services);
    zero_histograms(names::DOWNSTREAM_LATENCY_SECONDS, "service", &services);
    zero_counters(
        names::OMNIGATE_HEDGED_READS_TOTAL,
        "outcome",
        &["hedge_won", "primary_won", "budget_exhausted"],
    );
    let _ = metrics::histogram!(names::OMNIGATE_HYDRATION_LATENCY_SECONDS);
    let _ = metrics::histogram!(names::OMNIGATE_RANGE_START_LATENCY_SECONDS);
    zero_histograms(
        names::REQUEST_LATENCY_SECONDS,
        "route",
        &["/v1/o/{address}", "/v1/o", "/v1/names/{name}", view::ROUTE],
    );
}

pub async fn run(ctx: RoleContext, cfg: Live<OmnigateConfig>) -> RoleResult {
    let gate = Arc::new(Gate::new(ctx.clone(), cfg.clone())?);
    let tls = match &cfg.load().tls {
        Some(t) => Some(tls::acceptor(t)?),
        None => None,
    };
    let handler_gate = gate.clone();
    let handler: Arc<dyn ron_kernel::http::Handler> =
        Arc::new(move |req: Request<ReqBody>, peer| handler_gate.clone().handle(req, peer));
    let listener = ctx.listeners.http("omnigate")?;
    let server = tokio::spawn(ron_kernel::http::serve_with(
        listener,
        handler,
        ctx.shutdown.clone(),
        ctx.serve_options("omnigate"),
        tls,
    ));

    let mut tick = ron_kernel::ReadyTick::new(READY_TICK);
    let mut over_ticks = 0u32;
    let mut n = 0u32;
    let mut overflow_watch = ctx.bus.overflow_watch(OVERFLOW_HOLD);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if n % PROBE_EVERY == 0 {
            for r in gate.remotes.iter().flatten() {
                let r = r.clone();
                tokio::spawn(async move { r.probe().await });
            }
        }
        n = n.wrapping_add(1);
        let cap = gate.cfg.load().inflight_max as usize;
        if gate.inflight.in_use() * 10 > cap * 9 {
            over_ticks += 1;
        } else {
            over_ticks = 0;
        }
        let overflow = overflow_watch.check();
        match gate.unready_reason(over_ticks >= 2, overflow) {
            None => {
                ctx.ready.set_ready();
                tick.settled();
            }
            Some(why) => ctx.ready.set_unready(why),
        }
    }
    server.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_classify_to_templates() {
        assert_eq!(
            classify("/v1/o"),
            Target::Service(Service::Storage, "/v1/o")
        );
        assert_eq!(
            classify("/v1/o/b3:00"),
            Target::Service(Service::Storage, "/v1/o/{address}")
        );
        assert_eq!(
            classify("/v1/names/a/b"),
            Target::Service(Service::Index, "/v1/names/{name}")
        );
        assert_eq!(
            classify("/v1/topics/t/messages"),
            Target::Service(Service::Mailbox, "/v1/topics/{topic}")
        );
        assert_eq!(classify("/v1/view/x"), Target::View);
        assert_eq!(classify("/v1/view/"), Target::Unknown);
        assert_eq!(classify("/etc/passwd"), Target::Unknown);
    }
}
