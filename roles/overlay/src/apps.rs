//! App protocols 1 (gossip) and 3 (registry sync) — what a session hands
//! to the node and back. Blob fetch (2) is in `blob.rs`.
//!
//! Gossip: a message is `{topic, hops, body}`; its id is BLAKE3 over the
//! topic and the body, so the same news arriving by two paths is handled
//! once. A node forwards news it has not seen to at most `FANOUT` other
//! peers while `hops` lasts; each peer has a burst budget, and messages
//! past it are dropped and counted. The bus is bridged: a local
//! `RegistryCommitted` becomes a `registry.head` message, and a local
//! `ObjectStored` an `object.stored` message naming this node: peers keep
//! those as hints and ask the announcing node first when they fetch that
//! address.
//!
//! Registry sync: a node that hears of a head newer than its own asks that
//! peer for the versions after its head; each arriving artifact goes
//! through `Registry::apply` (chain, hash, quorum) before it counts — a
//! follower without HTTP access to the primary.

use std::collections::VecDeque;

use bytes::Bytes;
use ron_kernel::handles::DescriptorLog;
use ron_kernel::HandleError;
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::proto::{PROTO_GOSSIP, PROTO_SYNC};
use crate::state::{Command, Overlay};
pub use crate::state::{Hints, Seen};
/// Peers a message is forwarded to.
pub const FANOUT: usize = 8;
/// Hops a new message may travel.
pub const HOPS: u8 = 4;
/// Versions one sync answer carries at most.
pub const SYNC_BATCH: u64 = 1000;

pub const TOPIC_REGISTRY_HEAD: &str = "registry.head";
pub const TOPIC_OBJECT_STORED: &str = "object.stored";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gossip {
    pub topic: String,
    pub hops: u8,
    pub body: serde_json::Value,
}

impl Gossip {
    pub fn id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(self.topic.as_bytes());
        h.update(&[0]);
        h.update(self.body.to_string().as_bytes());
        *h.finalize().as_bytes()
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A per-peer token bucket (incoming gossip; requests under
/// `peer.max_rps`).
#[derive(Debug)]
pub struct Budget {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: std::time::Instant,
}

impl Budget {
    /// Gossip: 100 messages per second, bursting to 200.
    pub fn gossip(now: std::time::Instant) -> Self {
        Self::with(100.0, 200.0, now)
    }

    /// `rate` per second, starting full at `burst` at `now`.
    pub fn with(rate: f64, burst: f64, now: std::time::Instant) -> Self {
        Budget {
            tokens: burst,
            rate,
            burst,
            at: now,
        }
    }

    /// Takes a token at `now` if one is left.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sends a message to at most `FANOUT` peers other than `except`.
pub fn spread(overlay: &Overlay, msg: &Gossip, except: Option<u64>) {
    let payload = msg.to_bytes();
    let mut sent = 0;
    for (conn, tx) in overlay.link_senders() {
        if Some(conn) == except || sent >= FANOUT {
            continue;
        }
        // A full session queue drops the message for that peer: gossip is
        // best effort, a slow peer never blocks the others.
        if tx
            .try_send(Command::Gossip {
                payload: payload.clone(),
            })
            .is_ok()
        {
            sent += 1;
        }
    }
}

/// Announces news that started here.
pub fn publish(overlay: &Overlay, topic: &str, body: serde_json::Value) {
    let msg = Gossip {
        topic: topic.into(),
        hops: HOPS,
        body,
    };
    overlay.seen.insert(msg.id());
    spread(overlay, &msg, None);
}

/// The local registry head, if the registry runs here.
pub fn local_head(overlay: &Overlay) -> Option<u64> {
    let r = overlay.handles.get::<dyn DescriptorLog>().ok()?;
    Some(r.head().version)
}

/// The local registry head as a `registry.head` body, if the registry
/// runs here.
fn head_body(overlay: &Overlay) -> Option<serde_json::Value> {
    let head = overlay.handles.get::<dyn DescriptorLog>().ok()?.head();
    Some(serde_json::json!({"version": head.version, "payload_b3": head.payload_b3}))
}

/// Our head as a one-hop `registry.head` message (sent to a new peer).
pub fn head_announcement(overlay: &Overlay) -> Option<Bytes> {
    Some(
        Gossip {
            topic: TOPIC_REGISTRY_HEAD.into(),
            hops: 1,
            body: head_body(overlay)?,
        }
        .to_bytes(),
    )
}

/// Announces our head to the peers again: after the bus lost events
/// (commits among them), the head is what reconciles them.
pub fn publish_head(overlay: &Overlay) {
    if let Some(body) = head_body(overlay) {
        publish(overlay, TOPIC_REGISTRY_HEAD, body);
    }
}

/// What to do with a gossip frame from connection `from`: returns the
/// `since` of a registry sync to ask that peer for, if its news is newer
/// than our head.
pub fn on_gossip(overlay: &Overlay, from: u64, payload: &[u8]) -> Option<u64> {
    let msg: Gossip = serde_json::from_slice(payload).ok()?;
    let mut sync = None;
    if msg.topic == TOPIC_OBJECT_STORED {
        if let (Some(address), Some(node)) =
            (msg.body["address"].as_str(), msg.body["node"].as_str())
        {
            if node != overlay.identity.node_id() {
                overlay.hints.insert(address, node);
            }
        }
    }
    if msg.topic == TOPIC_REGISTRY_HEAD {
        // Checked before de-duplication: a head we heard of but could not
        // fetch yet is still worth asking for.
        let theirs = msg.body["version"].as_u64().unwrap_or(0);
        if let Some(ours) = local_head(overlay) {
            if theirs > ours {
                sync = Some(ours);
            }
        }
    }
    if overlay.seen.insert(msg.id()) && msg.hops > 1 {
        let fwd = Gossip {
            hops: msg.hops - 1,
            ..msg
        };
        spread(overlay, &fwd, Some(from));
    }
    sync
}

/// The answer to a sync request: artifacts after `since`, one per frame.
pub fn sync_frames(overlay: &Overlay, since: u64) -> Result<Option<VecDeque<Bytes>>> {
    let Ok(r) = overlay.handles.get::<dyn DescriptorLog>() else {
        return Ok(None);
    };
    let head = r.head().version;
    let mut out = VecDeque::new();
    for v in since + 1..=head.min(since + SYNC_BATCH) {
        match r.artifact_json(v)? {
            Some(raw) => out.push_back(raw),
            // A follower that started from a checkpoint lacks early
            // versions: the asker needs an unbroken chain, so stop here.
            None => break,
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Applies synced artifacts in order, each fully checked. Returns how
/// many were applied; stops at the first that does not verify.
pub fn apply_sync(overlay: &Overlay, parts: &[Bytes]) -> Result<usize> {
    use ron_kernel::metrics::names;
    let r = overlay.handles.get::<dyn DescriptorLog>()?;
    let mut applied = 0;
    for raw in parts {
        match r.apply_json(raw) {
            Ok(false) => {}
            Ok(true) => {
                metrics::counter!(names::REGISTRY_FOLLOWER_APPLIED_TOTAL).increment(1);
                applied += 1;
            }
            Err(e) => {
                if matches!(e, HandleError::Refused(_)) {
                    metrics::counter!(names::REGISTRY_FOLLOWER_REJECTED_TOTAL, "reason" => "sync")
                        .increment(1);
                }
                return Err(e.into());
            }
        }
    }
    Ok(applied)
}
