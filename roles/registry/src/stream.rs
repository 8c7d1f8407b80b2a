//! `GET /registry/stream`: Server-Sent Events, one `commit` event per
//! version (`id` = version, `data` = the artifact), resumable.
//!
//! A client names where it stands with `Last-Event-ID` (what EventSource
//! sends on reconnect) or `?since=`; without either it gets only new
//! commits. Missed versions are replayed from redb in order, then live ones
//! follow from the commit broadcast — subscribed before the replay starts,
//! so nothing falls between the two. A client further behind than
//! `registry.stream_replay_max`, or ahead of the head, gets a `compacted`
//! event and should reconcile from `GET /registry/head`.
//!
//! A slow client never slows commits: the broadcast does not wait, and a
//! client that falls `STREAM_BUFFER` commits behind is dropped and counted
//! (it reconnects with its `Last-Event-ID`). Heartbeat comments keep idle
//! connections alive.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use ron_kernel::http::{BodySender, ChannelBody, ReqBody};
use ron_kernel::metrics::names;
use ron_kernel::Problem;
use tokio::sync::broadcast::error::RecvError;

use crate::http::RegistryApi;
use crate::log::Registry;

/// Versions replayed per trip to the blocking pool.
const REPLAY_BATCH: u64 = 256;

fn since(req: &Request<ReqBody>) -> Result<Option<u64>, Problem> {
    let bad = || {
        Problem::bad_request(
            "bad_since",
            "Last-Event-ID and since must be a version number",
        )
    };
    if let Some(v) = req.headers().get("last-event-id") {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(bad);
    }
    for pair in req.uri().query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("since=") {
            return v.parse().map(Some).map_err(|_| bad());
        }
    }
    Ok(None)
}

pub async fn open(
    api: &Arc<RegistryApi>,
    req: &Request<ReqBody>,
) -> Response<ron_kernel::http::Body> {
    let since = match since(req) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    // Subscribe before reading the head: every commit after this point is
    // in `rx`, every one before it is in redb.
    let rx = api.reg.subscribe();
    let head = api.reg.snapshot().head.version;
    let (tx, body) = ChannelBody::channel(16);
    tokio::spawn(feed(api.clone(), tx, rx, since.unwrap_or(head), head));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

struct ClientGauge;

impl ClientGauge {
    fn new() -> Self {
        metrics::gauge!(names::REGISTRY_STREAM_CLIENTS).increment(1.0);
        ClientGauge
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!(names::REGISTRY_STREAM_CLIENTS).decrement(1.0);
    }
}

/// Sends versions `last+1..=to` from redb; returns the last one sent, or
/// `None` when the client is gone or the store failed.
async fn replay(reg: &Arc<Registry>, tx: &BodySender, mut last: u64, to: u64) -> Option<u64> {
    while last < to {
        let (from, upto) = (last + 1, to.min(last + REPLAY_BATCH));
        let r = reg.clone();
        let events = match tokio::task::spawn_blocking(move || r.events(from, upto)).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "registry stream replay failed");
                return None;
            }
            Err(_) => return None,
        };
        for ev in events {
            tx.send(ev).await.ok()?;
        }
        last = upto;
    }
    Some(last)
}

fn compacted(head: u64) -> Bytes {
    Bytes::from(format!("event: compacted\ndata: {{\"head\":{head}}}\n\n"))
}

async fn feed(
    api: Arc<RegistryApi>,
    tx: BodySender,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::log::Committed>>,
    since: u64,
    head: u64,
) {
    let _gauge = ClientGauge::new();
    // A comment first, so the client sees the stream is open at once.
    if tx
        .send(Bytes::from_static(b": registry stream\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut last = if since > head || head - since > api.replay_max {
        if tx.send(compacted(head)).await.is_err() {
            return;
        }
        head
    } else {
        match replay(&api.reg, &tx, since, head).await {
            Some(l) => l,
            None => return,
        }
    };
    let mut beat = tokio::time::interval(api.heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = api.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = beat.tick() => {
                if tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                    return;
                }
            }
            got = rx.recv() => match got {
                Ok(c) if c.version <= last => {}
                Ok(c) => {
                    if c.version > last + 1 {
                        // Cannot happen with subscribe-before-snapshot, but
                        // a gap is filled from redb rather than skipped.
                        if replay(&api.reg, &tx, last, c.version - 1).await.is_none() {
                            return;
                        }
                    }
                    if tx.send(c.event.clone()).await.is_err() {
                        return;
                    }
                    last = c.version;
                }
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!(names::REGISTRY_STREAM_DROPPED_TOTAL).increment(1);
                    tracing::info!(last, "registry stream client fell behind; dropped");
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
