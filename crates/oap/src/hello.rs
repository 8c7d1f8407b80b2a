//! HELLO: the first frame each side sends on a connection. Its payload is a
//! JSON object; unknown fields are ignored (adding a field is not a
//! breaking change).

use serde::{Deserialize, Serialize};

use crate::header::{HEADER_LEN, MAX_FRAME_BYTES, VERSION};
use crate::reject::{Reject, RejectReason};

/// Bounds of an advertised ACK window.
pub const MIN_WINDOW: u32 = 1;
pub const MAX_WINDOW: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the sender speaks.
    pub versions: Vec<u16>,
    /// Largest frame the sender accepts.
    pub max_frame: u32,
    /// Initial per-stream window the sender grants.
    pub ack_window: u32,
    /// Opaque feature names (e.g. PQ key-exchange bits).
    #[serde(default)]
    pub features: Vec<String>,
    pub node_id: String,
}

/// The prefix a `node_id` may carry to say which kind of key it names.
pub const ED25519_PREFIX: &str = "ed25519:";

impl Hello {
    /// The ed25519 public key this HELLO's `node_id` names, if it names one:
    /// 64 lowercase hex digits, bare or after `ed25519:` — two spellings of
    /// the same key (OAP-1 §4). `None` for any other `node_id`, which OAP/1
    /// itself leaves opaque and a host that authenticates peers by key
    /// refuses.
    pub fn node_key(&self) -> Option<[u8; 32]> {
        let hex = self
            .node_id
            .strip_prefix(ED25519_PREFIX)
            .unwrap_or(&self.node_id);
        if hex.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut key = [0u8; 32];
        for (k, pair) in key.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *k = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(key)
    }

    pub fn new(node_id: impl Into<String>, max_frame: u32, ack_window: u32) -> Self {
        Self {
            versions: vec![VERSION],
            max_frame,
            ack_window,
            features: Vec::new(),
            node_id: node_id.into(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of numbers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a peer's HELLO.
    pub fn parse(payload: &[u8]) -> Result<Hello, Reject> {
        let h: Hello = serde_json::from_slice(payload).map_err(|_| {
            Reject::new(
                RejectReason::BadHello,
                "HELLO payload is not the HELLO JSON object",
            )
        })?;
        if !h.versions.contains(&VERSION) {
            return Err(Reject::new(
                RejectReason::BadVersion,
                "peer does not speak OAP/1",
            ));
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&h.ack_window) {
            return Err(Reject::new(
                RejectReason::BadHello,
                "HELLO ack_window outside [1, 1024]",
            ));
        }
        if (h.max_frame as usize) < HEADER_LEN || h.max_frame as usize > MAX_FRAME_BYTES {
            return Err(Reject::new(
                RejectReason::BadHello,
                "HELLO max_frame outside [38, 1 MiB]",
            ));
        }
        if h.node_id.is_empty() || h.node_id.len() > 256 {
            return Err(Reject::new(
                RejectReason::BadHello,
                "HELLO node_id empty or longer than 256",
            ));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_reads_bare_and_prefixed_hex_as_one_key() {
        let hex = "11".repeat(32);
        let bare = Hello::new(hex.clone(), 1 << 20, 16);
        let prefixed = Hello::new(format!("ed25519:{hex}"), 1 << 20, 16);
        assert_eq!(bare.node_key(), Some([0x11; 32]));
        assert_eq!(prefixed.node_key(), bare.node_key());
        for other in [
            "node-a".to_owned(),
            "11".repeat(31),
            "AA".repeat(32),
            format!("x25519:{hex}"),
            format!("ed25519:ed25519:{hex}"),
        ] {
            assert_eq!(
                Hello::new(other.clone(), 1 << 20, 16).node_key(),
                None,
                "{other}"
            );
        }
    }
}
