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

impl Hello {
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
