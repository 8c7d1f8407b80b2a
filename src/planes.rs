//! The host's own HTTP surfaces: the health plane (`/metrics`, `/healthz`,
//! `/readyz`, `/version`) and the admin plane (`/api/v1/...`).
//!
//! Invariants: `/readyz` says exactly what the readiness board says; admin
//! requests are authorised from the peer socket address or a bearer token
//! compared in constant time, never from the Host header or any other
//! client-chosen field.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use ron_kernel::http::ReqBody;
use ron_kernel::http::{full, json, openapi, Body, ChannelBody, Routed};
use ron_kernel::metrics::names;
use ron_kernel::{Bus, BusMessage, KernelEvent, Live, Problem, Readiness};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{NodeConfig, Profile};

/// What the admin plane asks of the node's main loop.
#[derive(Debug)]
pub enum AdminCommand {
    Reload(oneshot::Sender<Result<ReloadOutcome, String>>),
    RotateCap {
        service: crate::caps::Service,
        grace: std::time::Duration,
        reply: oneshot::Sender<Result<crate::caps::Rotated, crate::caps::CapError>>,
    },
    Shutdown,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub version: u64,
    /// Start-only keys that changed and were not applied.
    pub needs_restart: Vec<String>,
    /// Roles let out of quarantine.
    pub released: Vec<String>,
}

/// State the planes read. Cheap to clone.
#[derive(Clone)]
pub struct PlaneState {
    /// What the roles publish (the overlay's session table, for
    /// `/api/v1/peers`).
    pub handles: ron_kernel::Handles,
    pub started: Instant,
    pub profile: Profile,
    pub readiness: Readiness,
    pub bus: Bus,
    pub prometheus: PrometheusHandle,
    /// process_* metrics, read at each scrape.
    pub process: Arc<metrics_process::Collector>,
    pub config: Live<NodeConfig>,
    /// Who may use the admin plane besides trusted loopback peers.
    pub admin_cap: Live<ron_kernel::cap::Capability>,
    pub config_version: Arc<std::sync::atomic::AtomicU64>,
    pub config_file: Option<String>,
    pub commands: mpsc::Sender<AdminCommand>,
    pub shutdown: CancellationToken,
}

impl PlaneState {
    fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// `GET /api/v1/peers`: the overlay's live sessions.
fn peers(st: &PlaneState) -> Response<Body> {
    if let Ok(peers) = st.handles.get::<dyn ron_kernel::handles::Peers>() {
        return json(StatusCode::OK, &peers.status());
    }
    Problem::unavailable("overlay_not_running", "the overlay role is not running", 5)
        .into_response()
}

// ---------------------------------------------------------------- health

/// The health plane's OpenAPI 3.1 description (`GET /openapi.json`),
/// written by hand; `tests/openapi.rs` holds it to this router.
pub const HEALTH_OPENAPI: &str = include_str!("../docs/openapi/health.json");

/// The admin plane's, as `HEALTH_OPENAPI`.
pub const ADMIN_OPENAPI: &str = include_str!("../docs/openapi/admin.json");

pub async fn health(st: PlaneState, req: Request<ReqBody>) -> Routed {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/metrics" | "/healthz" | "/readyz" | "/version" | "/openapi.json" if !get => Routed::new(
            "/{health}",
            Problem::method_not_allowed("GET, HEAD").into_response(),
        ),
        "/metrics" => {
            metrics::gauge!(names::NODE_UPTIME_SECONDS).set(st.uptime_secs());
            metrics::gauge!(names::NODE_READY).set(if st.readiness.is_ready() { 1.0 } else { 0.0 });
            metrics::gauge!(names::BUS_SUBSCRIBERS).set(st.bus.subscriber_count() as f64);
            // Rendered here, on the worker: ~0.3 ms warm. Measured with
            // benches/scrape.sh, handing it to spawn_blocking or
            // block_in_place added a thread wake-up that took the idle p99
            // from 1.4 ms to 4.7 ms, and bought nothing under load.
            st.process.collect();
            let text = st.prometheus.render();
            let mut resp = Response::new(full(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Routed::new("/metrics", resp)
        }
        "/healthz" => Routed::new(
            "/healthz",
            json(StatusCode::OK, &serde_json::json!({"alive": true})),
        ),
        "/readyz" => {
            let report = st.readiness.report();
            let code = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut resp = json(code, &report);
            if !report.ready {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Routed::new("/readyz", resp)
        }
        "/version" => Routed::new("/version", json(StatusCode::OK, &crate::version::info())),
        "/openapi.json" => Routed::new("/openapi.json", openapi(HEALTH_OPENAPI)),
        _ => Routed::new(
            "/{unknown}",
            Problem::not_found(format!("no route {path} on the health plane")).into_response(),
        ),
    }
}

// ---------------------------------------------------------------- admin

/// Whether `peer` may use the admin plane: a loopback peer (when trusted),
/// or a request carrying a valid admin token (`admin.token`, or one that
/// `cap rotate --service admin` issued).
pub fn admin_authorized(
    peer: SocketAddr,
    auth_header: Option<&[u8]>,
    cfg: &crate::config::AdminConfig,
    cap: &ron_kernel::cap::Capability,
) -> bool {
    (cfg.trust_loopback && peer.ip().to_canonical().is_loopback())
        || cap.bearer_allowed(std::time::SystemTime::now(), auth_header)
}

pub async fn admin(st: PlaneState, req: Request<ReqBody>, peer: SocketAddr) -> Routed {
    let cfg = st.config.load();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !admin_authorized(peer, auth, &cfg.admin, &st.admin_cap.load()) {
        metrics::counter!(names::ADMIN_AUTH_FAILURES_TOTAL).increment(1);
        let mut resp = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin requests from this address need `Authorization: Bearer <admin token>`",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Routed::new("/api/v1/{auth}", resp);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::GET, "/api/v1/status") => Routed::new("/api/v1/status", status(&st)),
        (Method::GET, "/api/v1/peers") => Routed::new("/api/v1/peers", peers(&st)),
        (Method::GET, "/api/v1/config") => {
            let value = serde_json::to_value(&*cfg).unwrap_or_default();
            Routed::new("/api/v1/config", json(StatusCode::OK, &value))
        }
        (Method::POST, "/api/v1/reload") => {
            let (tx, rx) = oneshot::channel();
            if st.commands.send(AdminCommand::Reload(tx)).await.is_err() {
                return Routed::new("/api/v1/reload", stopping());
            }
            let resp = match rx.await {
                Ok(Ok(outcome)) => json(StatusCode::OK, &outcome),
                Ok(Err(msg)) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "config_invalid",
                    format!("reload rejected, previous config kept: {msg}"),
                )
                .into_response(),
                Err(_) => stopping(),
            };
            Routed::new("/api/v1/reload", resp)
        }
        (Method::POST, "/api/v1/cap/rotate") => {
            let timeout = cfg.limits.body_read_timeout;
            Routed::new("/api/v1/cap/rotate", rotate_cap(&st, req, timeout).await)
        }
        (Method::POST, "/api/v1/drain") => {
            st.readiness.set_draining(true);
            tracing::warn!("draining: /readyz now 503; traffic keeps being served");
            Routed::new(
                "/api/v1/drain",
                json(StatusCode::ACCEPTED, &serde_json::json!({"draining": true})),
            )
        }
        (Method::DELETE, "/api/v1/drain") => {
            st.readiness.set_draining(false);
            tracing::info!("drain cancelled");
            Routed::new(
                "/api/v1/drain",
                json(StatusCode::OK, &serde_json::json!({"draining": false})),
            )
        }
        (Method::POST, "/api/v1/shutdown") => {
            let _ = st.commands.send(AdminCommand::Shutdown).await;
            Routed::new(
                "/api/v1/shutdown",
                json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"shutting_down": true}),
                ),
            )
        }
        (Method::GET, "/api/v1/bus") => {
            Routed::new("/api/v1/bus", bus_stream(&st, req.uri().query()))
        }
        (_, p) if is_chaos(p) => {
            let route = if path == "/api/v1/chaos" {
                "/api/v1/chaos"
            } else {
                "/api/v1/chaos/{id}"
            };
            Routed::new(route, chaos(&st, req, &path).await)
        }
        (Method::GET, "/openapi.json") => Routed::new("/openapi.json", openapi(ADMIN_OPENAPI)),
        (
            _,
            "/api/v1/status" | "/api/v1/config" | "/api/v1/bus" | "/api/v1/peers" | "/openapi.json",
        ) => Routed::new(
            "/api/v1/{known}",
            Problem::method_not_allowed("GET").into_response(),
        ),
        (_, "/api/v1/reload" | "/api/v1/shutdown" | "/api/v1/cap/rotate") => Routed::new(
            "/api/v1/{known}",
            Problem::method_not_allowed("POST").into_response(),
        ),
        (_, "/api/v1/drain") => Routed::new(
            "/api/v1/drain",
            Problem::method_not_allowed("POST, DELETE").into_response(),
        ),
        _ => Routed::new(
            "/{unknown}",
            Problem::not_found(format!("no route {path} on the admin plane")).into_response(),
        ),
    }
}

// ---------------------------------------------------------------- chaos

/// `/api/v1/chaos` or `/api/v1/chaos/{id}`.
fn is_chaos(path: &str) -> bool {
    path == "/api/v1/chaos"
        || path
            .strip_prefix("/api/v1/chaos/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The drills' fault injection: `POST /api/v1/chaos` (a `chaos::Spec`,
/// 201 with the fault), `GET` (the faults in force), `DELETE` (all) and
/// `DELETE /api/v1/chaos/{id}` (one). Every call is 403 `chaos_disabled`
/// unless the node started with `chaos.enabled = true`.
async fn chaos(st: &PlaneState, req: Request<ReqBody>, path: &str) -> Response<Body> {
    use ron_kernel::chaos::CHAOS;
    let id = path.strip_prefix("/api/v1/chaos/");
    // A method the route does not have is 405 on any node; every call it
    // does have is 403 on a node that takes no faults.
    match (req.method(), id) {
        (&Method::GET | &Method::POST | &Method::DELETE, None) | (&Method::DELETE, Some(_)) => {}
        (_, None) => return Problem::method_not_allowed("GET, POST, DELETE").into_response(),
        (_, Some(_)) => return Problem::method_not_allowed("DELETE").into_response(),
    }
    if !CHAOS.enabled() {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "chaos_disabled",
            "this node takes no injected faults; start it with chaos.enabled = true to drill",
        )
        .into_response();
    }
    match (req.method().clone(), id) {
        (Method::GET, None) => json(
            StatusCode::OK,
            &serde_json::json!({ "faults": CHAOS.list() }),
        ),
        (Method::DELETE, id) => {
            let gone = CHAOS.clear(id);
            if let Some(id) = id.filter(|_| gone.is_empty()) {
                return Problem::new(
                    StatusCode::NOT_FOUND,
                    "fault_not_found",
                    format!("no fault {id:?} is in force"),
                )
                .into_response();
            }
            if !gone.is_empty() {
                tracing::warn!(faults = ?gone, "chaos: faults cleared");
                st.bus
                    .publish(KernelEvent::ChaosCleared { ids: gone.clone() });
            }
            json(
                StatusCode::OK,
                &serde_json::json!({ "cleared": gone.len(), "ids": gone }),
            )
        }
        (Method::POST, None) => {
            let timeout = st.config.load().limits.body_read_timeout;
            let bytes = match read_small(req, timeout).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let spec: ron_kernel::chaos::Spec = match ron_kernel::request::json_object(&bytes) {
                Ok(s) => s,
                Err(p) => {
                    return Problem::bad_request(
                        "bad_json",
                        format!(
                            "expected {{\"target\", \"fault\", \"ms\", \"jitter_ms\", \"rate\", \"duration\"}}: {}",
                            p.detail
                        ),
                    )
                    .into_response()
                }
            };
            let fault = match CHAOS.inject(&spec) {
                Ok(f) => f,
                Err(e) => return Problem::bad_request("bad_fault", e.to_string()).into_response(),
            };
            tracing::warn!(
                id = %fault.settings.id,
                target = fault.settings.target.name(),
                fault = fault.settings.fault.name(),
                ms = fault.settings.ms,
                jitter_ms = fault.settings.jitter_ms,
                rate = fault.settings.rate,
                duration = ?fault.duration,
                "chaos: fault injected"
            );
            st.bus.publish(KernelEvent::ChaosInjected {
                id: fault.settings.id.clone(),
                target: fault.settings.target.name().into(),
                fault: fault.settings.fault.name().into(),
            });
            if let Some(d) = fault.duration {
                // Ends it on time, and says so on the bus.
                let (bus, stop) = (st.bus.clone(), st.shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(d) => {
                            let ids = CHAOS.expire();
                            if !ids.is_empty() {
                                tracing::warn!(faults = ?ids, "chaos: faults ended (duration over)");
                                bus.publish(KernelEvent::ChaosCleared { ids });
                            }
                        }
                    }
                });
            }
            json(StatusCode::CREATED, &fault.view(std::time::Instant::now()))
        }
        // Refused above.
        _ => Problem::method_not_allowed("GET, POST, DELETE").into_response(),
    }
}

/// A small JSON body within the body deadline, or the response refusing it.
async fn read_small(
    req: Request<ReqBody>,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, Response<Body>> {
    match tokio::time::timeout(timeout, small_body(req.into_body())).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(p)) => Err(p.into_response()),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )
        .into_response()),
    }
}

/// `POST /api/v1/cap/rotate` `{"service": "write"|"admin"|ROLE, "grace": "10m"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    service: String,
    #[serde(default = "default_grace", with = "humantime_serde")]
    grace: std::time::Duration,
}

fn default_grace() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}

/// Largest admin request body (a rotation, a fault).
const ADMIN_BODY_MAX: usize = 4096;

/// A JSON request body of at most `ADMIN_BODY_MAX` bytes.
async fn small_body(mut body: ReqBody) -> Result<Vec<u8>, Problem> {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Problem::bad_request("bad_body", e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            if out.len() + d.len() > ADMIN_BODY_MAX {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("an admin request body is at most {ADMIN_BODY_MAX} bytes"),
                ));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out)
}

async fn rotate_cap(
    st: &PlaneState,
    req: Request<ReqBody>,
    timeout: std::time::Duration,
) -> Response<Body> {
    let bytes = match read_small(req, timeout).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let r: RotateRequest = match ron_kernel::request::json_object(&bytes) {
        Ok(r) => r,
        Err(p) => {
            return Problem::bad_request(
                "bad_json",
                format!(
                    "expected {{\"service\": \"write\"|\"admin\", \"grace\": \"10m\"}}: {}",
                    p.detail
                ),
            )
            .into_response()
        }
    };
    let service = match crate::caps::Service::parse(&r.service) {
        Ok(s) => s,
        Err(e) => return Problem::bad_request("bad_service", e.to_string()).into_response(),
    };
    let (tx, rx) = oneshot::channel();
    let cmd = AdminCommand::RotateCap {
        service,
        grace: r.grace,
        reply: tx,
    };
    if st.commands.send(cmd).await.is_err() {
        return stopping();
    }
    let mut resp = match rx.await {
        Ok(Ok(outcome)) => json(StatusCode::CREATED, &outcome),
        Ok(Err(crate::caps::CapError::Usage(m))) => {
            Problem::bad_request("bad_grace", m).into_response()
        }
        Ok(Err(e)) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cap_store_failed",
            e.to_string(),
        )
        .into_response(),
        Err(_) => stopping(),
    };
    // The body holds the new token: no cache may keep it.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn stopping() -> Response<Body> {
    Problem::unavailable("shutting_down", "the node is shutting down", 1).into_response()
}

fn status(st: &PlaneState) -> Response<Body> {
    let cfg = st.config.load();
    let report = st.readiness.report();
    let body = serde_json::json!({
        "uptime_seconds": st.uptime_secs(),
        "profile": st.profile,
        "version": env!("CARGO_PKG_VERSION"),
        "build": crate::version::info(),
        "config_version": st.config_version.load(std::sync::atomic::Ordering::Relaxed),
        "config_file": st.config_file,
        "ready": report.ready,
        "missing": report.missing,
        "draining": st.readiness.is_draining(),
        "shutting_down": st.readiness.is_shutting_down(),
        "amnesia": cfg.amnesia,
        "read_only": cfg.read_only,
        "roles": st.readiness.roles(),
        "planes": report.planes,
        "addrs": st.readiness.bound_addrs(),
        "bus": {
            "capacity": st.bus.capacity(),
            "subscribers": st.bus.subscriber_count(),
            "overflow_dropped": st.bus.overflow_dropped(),
        },
    });
    json(StatusCode::OK, &body)
}

/// `GET /api/v1/bus[?topic=a,b]`: server-sent events of bus traffic. The
/// first bytes are a `: subscribed` comment, sent once the subscription
/// exists, so a client knows no later event can be missed.
fn bus_stream(st: &PlaneState, query: Option<&str>) -> Response<Body> {
    let mut topics: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "topic" {
            for t in v.split(',').filter(|t| !t.is_empty()) {
                if !KernelEvent::TOPICS.contains(&t) {
                    return Problem::bad_request(
                        "bad_topic",
                        format!(
                            "unknown topic {t:?}; topics: {}",
                            KernelEvent::TOPICS.join(", ")
                        ),
                    )
                    .into_response();
                }
                topics.push(t.to_owned());
            }
        }
    }
    let mut rx = st.bus.subscribe();
    let shutdown = st.shutdown.clone();
    let (tx, body) = ChannelBody::channel(64);
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b": subscribed\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(15));
        heartbeat.tick().await;
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
                msg = rx.recv() => match msg {
                    None => break,
                    Some(BusMessage::Lagged(n)) => {
                        Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n"))
                    }
                    Some(BusMessage::Event(ev)) => {
                        if !topics.is_empty() && !topics.iter().any(|t| ev.matches(t)) {
                            continue;
                        }
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        Bytes::from(format!("event: {}\ndata: {data}\n\n", ev.topic()))
                    }
                },
            };
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of this file from `from` to `to`.
    fn source(from: &str, to: &str) -> &'static str {
        let all = include_str!("planes.rs");
        let start = all.find(from).unwrap();
        let len = all[start..].find(to).unwrap();
        &all[start..start + len]
    }

    /// Each quoted string that follows `marker` (after blanks) in `src`.
    fn quoted_after<'a>(src: &'a str, marker: &str) -> Vec<&'a str> {
        src.match_indices(marker)
            .filter_map(|(i, _)| {
                let rest = src[i + marker.len()..].trim_start().strip_prefix('"')?;
                rest.split('"').next()
            })
            .collect()
    }

    /// A document's operations: (METHOD, path), sorted.
    fn documented(doc: &str) -> Vec<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            // Path items also hold `parameters` (and may hold `summary`).
            let methods = ["get", "head", "post", "put", "delete", "patch", "options"];
            for method in item.as_object().unwrap().keys() {
                if methods.contains(&method.as_str()) {
                    ops.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops.sort();
        ops
    }

    /// Every route the health plane's router answers is in its document,
    /// for GET and HEAD, and nothing else is (the router's own arms, read
    /// from this file: each names its route as its path; the `{…}` ones
    /// are its refusals).
    #[test]
    fn the_health_document_is_the_health_router() {
        let router = source("pub async fn health(", "// ------");
        let mut routed: Vec<(String, String)> = quoted_after(router, "Routed::new(")
            .into_iter()
            .filter(|r| !r.contains('{'))
            .flat_map(|r| [("GET".into(), r.into()), ("HEAD".into(), r.into())])
            .collect();
        routed.sort();
        assert!(routed.len() >= 10, "{routed:?}");
        assert_eq!(routed, documented(HEALTH_OPENAPI));
    }

    /// docs/API.md's route table for each plane names every operation of
    /// its document but the HEADs (one sentence covers those), as
    /// `` `METHOD path``, and no other route.
    #[test]
    fn the_guide_names_every_documented_route() {
        let guide = include_str!("../docs/API.md");
        let section = |from: &str, to: &str| {
            let start = guide.find(from).unwrap();
            &guide[start..start + guide[start..].find(to).unwrap()]
        };
        #[allow(unused_mut)] // without the registry role
        let mut planes = vec![
            (HEALTH_OPENAPI, section("## Health plane", "\n## ")),
            (ADMIN_OPENAPI, section("## Admin plane", "\n## ")),
        ];
        #[cfg(feature = "registry")]
        planes.push((ron_registry::http::OPENAPI, section("## Registry", "\n## ")));
        for (doc, table) in planes {
            let mut want: Vec<String> = documented(doc)
                .into_iter()
                .filter(|(m, _)| m != "HEAD")
                .map(|(m, p)| format!("{m} {p}"))
                .collect();
            want.sort();
            let mut rows: Vec<String> = table
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .map(|l| {
                    let route = l.split('`').next().unwrap();
                    route.split('[').next().unwrap().to_owned()
                })
                .filter(|r| r.contains(' '))
                .collect();
            rows.sort();
            assert_eq!(rows, want);
        }
    }

    /// The same for the admin plane: its router's (method, path) arms.
    #[test]
    fn the_admin_document_is_the_admin_router() {
        let router = source("pub async fn admin(", "// ------");
        let mut routed: Vec<(String, String)> = router
            .match_indices("(Method::")
            .map(|(i, m)| {
                let rest = &router[i + m.len()..];
                let (method, rest) = rest.split_once(',').unwrap();
                let path = rest.trim_start().strip_prefix('"').unwrap();
                (
                    method.to_owned(),
                    path.split('"').next().unwrap().to_owned(),
                )
            })
            .collect();
        // The chaos routes' methods, from `chaos`'s own arms: `None` is
        // the collection, an `id` either path.
        let chaos = source("async fn chaos(", "/// A small JSON body");
        for (i, m) in chaos.match_indices("(Method::") {
            let rest = &chaos[i + m.len()..];
            let (method, rest) = rest.split_once(',').unwrap();
            let paths: &[&str] = match rest.trim_start().split(')').next().unwrap() {
                "None" => &["/api/v1/chaos"],
                "id" => &["/api/v1/chaos", "/api/v1/chaos/{id}"],
                other => panic!("unexpected chaos arm {other}"),
            };
            for p in paths {
                routed.push((method.to_owned(), (*p).to_owned()));
            }
        }
        routed.sort();
        assert!(routed.len() >= 14, "{routed:?}");
        assert_eq!(routed, documented(ADMIN_OPENAPI));
    }
    use crate::config::AdminConfig;
    use ron_kernel::Secret;

    /// The admin rule for `peer` presenting `header`, with `token` as
    /// `admin.token`.
    fn ok(peer: &str, header: Option<&[u8]>, token: Option<&str>, trust_loopback: bool) -> bool {
        let c = AdminConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.map(Secret::new),
            trust_loopback,
            token_file: Default::default(),
        };
        let cap = ron_kernel::cap::Capability::merged(Default::default(), c.token.as_slice());
        admin_authorized(peer.parse().unwrap(), header, &c, &cap)
    }

    #[test]
    fn loopback_peers_are_trusted_by_default() {
        assert!(ok("127.0.0.1:5000", None, None, true));
        assert!(ok("[::1]:5000", None, None, true));
        assert!(ok("[::ffff:127.0.0.1]:5000", None, None, true));
    }

    #[test]
    fn remote_peers_need_the_token() {
        let remote = "203.0.113.7:5000";
        assert!(!ok(remote, None, Some("s3cret"), true));
        assert!(!ok(remote, Some(b"Bearer wrong"), Some("s3cret"), true));
        assert!(ok(remote, Some(b"Bearer s3cret"), Some("s3cret"), true));
        // No token configured: remote admin is simply off.
        assert!(!ok(remote, Some(b"Bearer "), None, true));
    }

    #[test]
    fn untrusted_loopback_needs_the_token_too() {
        assert!(!ok("127.0.0.1:5000", None, Some("s3cret"), false));
        assert!(ok(
            "127.0.0.1:5000",
            Some(b"Bearer s3cret"),
            Some("s3cret"),
            false
        ));
    }
}
