//! Follower mode (`registry.upstream = URL`): replay the primary's
//! `/registry/stream` from our head, and apply each artifact only after
//! checking it completely (chain position, payload hash, quorum of the
//! signer set in force — `Registry::apply`). A forged or broken artifact
//! is refused and counted; the follower keeps its head and retries the
//! connection with backoff, so a primary (or a path to it) that serves bad
//! data can stall a follower but never corrupt it.
//!
//! A follower is not ready until it has caught up once: at each connection
//! it reads the primary's head, and it reports ready only when its own
//! head has reached the first head it read. A follower that starts with
//! nothing (amnesia, or a new disk) therefore never serves an empty or
//! partial registry as if it were current. Once caught up it stays ready
//! while the primary is away, serving what it verified.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ron_kernel::metrics::names;
use tokio_util::sync::CancellationToken;

use crate::log::{Registry, RegistryError};
use crate::model::Artifact;

/// The largest single event the follower accepts.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// How far a follower has come; what its readiness is judged on.
#[derive(Debug, Default)]
pub struct SyncState {
    caught_up: AtomicBool,
    /// The primary's head version, once read.
    primary_head: AtomicU64,
    primary_known: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl SyncState {
    /// Why the follower is not ready yet, given its own head version, or
    /// `None` once it has caught up (which then holds for good).
    pub fn unready(&self, ours: u64, upstream: &str) -> Option<String> {
        if self.caught_up.load(Ordering::Acquire) {
            return None;
        }
        if self.primary_known.load(Ordering::Acquire) {
            let theirs = self.primary_head.load(Ordering::Acquire);
            if ours >= theirs {
                self.caught_up.store(true, Ordering::Release);
                tracing::info!(version = ours, upstream, "registry follower caught up");
                return None;
            }
            return Some(format!(
                "follower: catching up with {upstream} (version {ours} of {theirs})"
            ));
        }
        let err = self
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "not reached yet".into());
        Some(format!(
            "follower: the primary's head is unknown ({upstream}: {err})"
        ))
    }

    fn note_error(&self, e: &str) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_owned());
        }
    }
}

/// Reads the primary's head version.
async fn primary_head(client: &HttpClient, base: &str) -> Result<u64, String> {
    let resp = get(client, &format!("{base}/registry/head")).await?;
    if !resp.status().is_success() {
        return Err(format!("upstream head answered {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_EVENT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("upstream head: {e}"))?
        .to_bytes();
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("upstream head: {e}"))?;
    v["version"]
        .as_u64()
        .ok_or_else(|| "upstream head has no version".to_owned())
}

pub async fn follow(
    reg: Arc<Registry>,
    upstream: String,
    sync: Arc<SyncState>,
    shutdown: CancellationToken,
) {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(3)));
    conn.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(conn);
    let base = upstream.trim_end_matches('/').to_owned();
    let mut backoff = Duration::from_millis(200);
    loop {
        let before = reg.snapshot().head.version;
        let result = match primary_head(&client, &base).await {
            Ok(v) => {
                if !sync.primary_known.load(Ordering::Acquire) {
                    sync.primary_head.store(v, Ordering::Release);
                    sync.primary_known.store(true, Ordering::Release);
                }
                follow_once(&reg, &client, &base, &shutdown).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                sync.note_error(&e);
                tracing::warn!(upstream = %base, error = %e, "registry follower: reconnecting")
            }
        }
        if reg.snapshot().head.version > before {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn get(
    client: &HttpClient,
    uri: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let uri: http::Uri = uri.parse().map_err(|e| format!("bad upstream URL: {e}"))?;
    client
        .get(uri)
        .await
        .map_err(|e| format!("upstream unreachable: {e}"))
}

/// Follows one stream connection until it ends (Err) or shutdown (Ok).
async fn follow_once(
    reg: &Arc<Registry>,
    client: &HttpClient,
    base: &str,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let since = reg.snapshot().head.version;
    let resp = get(client, &format!("{base}/registry/stream?since={since}")).await?;
    if !resp.status().is_success() {
        return Err(format!("upstream stream answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            f = body.frame() => f,
        };
        let frame = match frame {
            None => return Err("upstream stream ended".into()),
            Some(Err(e)) => return Err(format!("upstream stream: {e}")),
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event = buf.split_to(end + 2).freeze();
            on_event(reg, client, base, &event).await?;
        }
        if buf.len() > MAX_EVENT_BYTES {
            return Err("upstream sent an event over 16 MiB".into());
        }
    }
}

async fn on_event(
    reg: &Arc<Registry>,
    client: &HttpClient,
    base: &str,
    raw: &[u8],
) -> Result<(), String> {
    let text = std::str::from_utf8(raw).map_err(|_| "upstream sent non-UTF-8".to_owned())?;
    let mut event = "message";
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    match event {
        "commit" => {
            let a: Artifact = serde_json::from_str(&data).map_err(|e| {
                reject("malformed");
                format!("upstream sent a malformed artifact: {e}")
            })?;
            apply(reg, a).await
        }
        "compacted" => {
            // Too far behind for the stream: fetch version by version.
            let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            let target = v["head"].as_u64().unwrap_or(0);
            while reg.snapshot().head.version < target {
                let next = reg.snapshot().head.version + 1;
                let resp = get(client, &format!("{base}/registry/{next}")).await?;
                if !resp.status().is_success() {
                    return Err(format!("upstream version {next}: {}", resp.status()));
                }
                let body = http_body_util::Limited::new(resp.into_body(), MAX_EVENT_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("upstream version {next}: {e}"))?
                    .to_bytes();
                let a: Artifact = serde_json::from_slice(&body).map_err(|e| {
                    reject("malformed");
                    format!("upstream sent a malformed artifact: {e}")
                })?;
                apply(reg, a).await?;
            }
            Ok(())
        }
        _ => Ok(()), // comments, heartbeats, unknown events
    }
}

fn reject(reason: &'static str) {
    metrics::counter!(names::REGISTRY_FOLLOWER_REJECTED_TOTAL, "reason" => reason).increment(1);
}

async fn apply(reg: &Arc<Registry>, a: Artifact) -> Result<(), String> {
    let version = a.version;
    if version <= reg.snapshot().head.version {
        return Ok(()); // already have it (a replay overlap)
    }
    let r = reg.clone();
    match tokio::task::spawn_blocking(move || r.apply(&a)).await {
        Ok(Ok(_)) => {
            metrics::counter!(names::REGISTRY_FOLLOWER_APPLIED_TOTAL).increment(1);
            Ok(())
        }
        Ok(Err(e)) => {
            let reason = match &e {
                RegistryError::ChainMismatch { .. } => "chain_mismatch",
                RegistryError::QuorumNotMet { .. } => "quorum_not_met",
                RegistryError::Invalid(_) => "invalid",
                _ => "store",
            };
            reject(reason);
            tracing::error!(version, error = %e, "registry follower refused an upstream artifact");
            Err(format!("refused version {version}: {e}"))
        }
        Err(e) => Err(format!("apply task: {e}")),
    }
}
