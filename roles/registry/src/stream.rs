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
    let _gauge = ron_kernel::metrics::GaugeGuard::up(names::REGISTRY_STREAM_CLIENTS);
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
    // Live: commits are taken off the broadcast as they come and queued
    // here while the client is slow to read; a client that lets the queue
    // pass the stream buffer is dropped. The send is cancel-safe, so
    // waiting on it never stops us from seeing new commits.
    let limit = api.reg.stream_buffer();
    let mut queue: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let mut beat = tokio::time::interval(api.heartbeat);
    beat.tick().await;
    let dropped = || {
        metrics::counter!(names::REGISTRY_STREAM_DROPPED_TOTAL).increment(1);
        tracing::info!("registry stream client fell behind; dropped");
    };
    loop {
        tokio::select! {
            _ = api.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = beat.tick() => {
                if queue.is_empty() {
                    queue.push_back(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
            sent = tx.send(queue.front().cloned().unwrap_or_default()), if !queue.is_empty() => {
                if sent.is_err() {
                    return;
                }
                queue.pop_front();
            }
            got = rx.recv() => match got {
                Ok(c) if c.version <= last => {}
                Ok(c) => {
                    if c.version > last + 1 {
                        // Cannot happen with subscribe-before-snapshot, but
                        // a gap is filled from redb rather than skipped.
                        let (r, from, to) = (api.reg.clone(), last + 1, c.version - 1);
                        match tokio::task::spawn_blocking(move || r.events(from, to)).await {
                            Ok(Ok(events)) => queue.extend(events),
                            _ => return,
                        }
                    }
                    queue.push_back(c.event.clone());
                    last = c.version;
                    if queue.len() > limit {
                        dropped();
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    dropped();
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Options;
    use crate::model::{
        encode_hex, hash_bytes, sign_approval, Approval, DescriptorSet, Item, Payload, Region,
        SignerEntry, SignerSet,
    };
    use std::time::Duration;

    /// A client that never reads stops receiving, but commits go on at
    /// full speed; once it lags past the buffer its feed ends (dropped).
    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_and_commits_never_wait() {
        let seed = [3u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let reg = Arc::new(
            Registry::in_memory(Options {
                genesis: SignerSet {
                    m: 1,
                    signers: vec![SignerEntry {
                        id: "s".into(),
                        public_key: encode_hex(public.as_bytes()),
                    }],
                },
                proposal_ttl: Duration::from_secs(60),
                upstream: None,
                bus: None,
                stream_buffer: 4,
            })
            .unwrap(),
        );
        let api = crate::http::api_for_tests(reg.clone());
        // A body nobody polls: one frame of room.
        let (tx, _unread_body) = ChannelBody::channel(1);
        let feeder = tokio::spawn(feed(api, tx, reg.subscribe(), 0, 0));
        let r = reg.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..40u64 {
                let head = r.snapshot().head.clone();
                let p = r
                    .propose(
                        Payload::from_set(DescriptorSet {
                            version: head.version + 1,
                            prev_b3: head.payload_b3,
                            items: vec![Item::Region(Region {
                                id: format!("r{i}"),
                                name: "r".into(),
                                parent: None,
                            })],
                            created_at: "2026-11-25T10:00:00Z".into(),
                        })
                        .unwrap(),
                    )
                    .unwrap();
                let h = hash_bytes(&p.payload_b3).unwrap();
                r.approve(
                    &p.id,
                    Approval {
                        signer_id: "s".into(),
                        sig: sign_approval(&seed, p.payload.version, &h),
                    },
                )
                .unwrap();
                r.commit(&p.id).unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(reg.snapshot().head.version, 40);
        // The feed ends on its own: it lagged and was dropped.
        feeder.await.unwrap();
    }
}
