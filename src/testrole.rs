//! `testrole` (feature `test-roles`, never in a release build): a tiny role
//! that can be told to fail or panic at start, and that holds requests open
//! across a shutdown, so the supervisor and the drain path are tested
//! against the real binary.
//!
//! Routes: `GET /hello` (the live `greeting`), `GET /hold?ms=N` (waits for
//! the node's shutdown, then N ms more, then answers), `GET /held` (how many
//! holds are open), `GET /crash` (the role returns an error right after
//! answering).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use ron_kernel::http::{json, serve, Handler, Routed};
use ron_kernel::{Live, Problem, RoleContext, RoleResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestMode {
    Serve,
    Fail,
    Panic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRoleConfig {
    pub addr: SocketAddr,
    /// Read at every (re)start. Hot.
    pub mode: TestMode,
    /// Served by `GET /hello`. Hot.
    pub greeting: String,
}

impl Default for TestRoleConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9450)),
            mode: TestMode::Serve,
            greeting: "hello".into(),
        }
    }
}

ron_kernel::restart_keys!(TestRoleConfig { addr });

impl ron_kernel::section::RoleSection for TestRoleConfig {
    const ROLE: ron_kernel::RoleName = ron_kernel::RoleName::TestRole;

    fn listen_addr(&self, _fronted: bool) -> Option<SocketAddr> {
        Some(self.addr)
    }
}

/// The role's series (it has none of its own).
pub fn init_series() {}

#[derive(Debug, thiserror::Error)]
enum TestRoleError {
    #[error("testrole was told to fail")]
    ToldToFail,
    #[error("testrole was told to crash by GET /crash")]
    Crashed,
}

pub async fn run(ctx: RoleContext, cfg: Live<TestRoleConfig>) -> RoleResult {
    match cfg.load().mode {
        TestMode::Fail => return Err(TestRoleError::ToldToFail.into()),
        TestMode::Panic => panic!("testrole was told to panic"),
        TestMode::Serve => {}
    }
    let held = Arc::new(AtomicU64::new(0));
    let crash = Arc::new(tokio::sync::Notify::new());
    let crash_rx = crash.clone();
    let listener = ctx.listeners.http("testrole")?;
    let shutdown = ctx.shutdown.clone();
    let board = ctx.ready.board().clone();
    let handler: Arc<dyn Handler> = Arc::new(
        move |req: http::Request<ron_kernel::http::ReqBody>, _peer| {
            let cfg = cfg.clone();
            let held = held.clone();
            let crash = crash.clone();
            let shutdown = shutdown.clone();
            let board = board.clone();
            async move {
                if req.method() != Method::GET {
                    return Routed::new(
                        "/{test}",
                        Problem::method_not_allowed("GET").into_response(),
                    );
                }
                match req.uri().path() {
                    "/hello" => Routed::new(
                        "/hello",
                        json(
                            StatusCode::OK,
                            &serde_json::json!({"greeting": cfg.load().greeting}),
                        ),
                    ),
                    "/crash" => {
                        crash.notify_one();
                        Routed::new(
                            "/crash",
                            json(StatusCode::ACCEPTED, &serde_json::json!({"crashing": true})),
                        )
                    }
                    "/held" => Routed::new(
                        "/held",
                        json(
                            StatusCode::OK,
                            &serde_json::json!({"held": held.load(Ordering::SeqCst)}),
                        ),
                    ),
                    "/hold" => {
                        let ms: u64 = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("ms="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        held.fetch_add(1, Ordering::SeqCst);
                        shutdown.cancelled().await;
                        // What an observer saw when this request learned of the
                        // shutdown: the node must already be unready.
                        let ready_at_release = board.is_ready();
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        Routed::new(
                            "/hold",
                            json(
                                StatusCode::OK,
                                &serde_json::json!({"completed": true, "ready_at_release": ready_at_release}),
                            ),
                        )
                    }
                    other => Routed::new(
                        "/{unknown}",
                        Problem::not_found(format!("testrole has no route {other}"))
                            .into_response(),
                    ),
                }
            }
        },
    );
    let server = tokio::spawn(serve(
        listener,
        handler,
        ctx.shutdown.clone(),
        ctx.serve_options("testrole"),
    ));
    ctx.ready.set_ready();
    tokio::select! {
        joined = server => {
            joined?;
            Ok(())
        }
        _ = crash_rx.notified() => Err(TestRoleError::Crashed.into()),
    }
}
