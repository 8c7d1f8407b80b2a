//! `[overlay]`: OAP/1 sessions between nodes.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PqMode {
    Classical,
    Hybrid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayConfig {
    /// TCP and UDP port for OAP/1 over TLS and QUIC (env `OVERLAY_OAP_ADDR`).
    pub addr: SocketAddr,
    /// Key exchange (env `OVERLAY_PQ_MODE`, `--pilot-pq` sets `hybrid`).
    pub pq_mode: PqMode,
    pub max_conns: u32,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Static peers: every listed key may connect; those with an `addr`
    /// are dialed and kept connected.
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node key: 64 lowercase hex (its node id).
    pub public_key: String,
    /// Where to dial it; without one, the peer is only accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// How to dial it.
    #[serde(default)]
    pub transport: Transport,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TLS 1.3 over TCP.
    #[default]
    Tcp,
    /// QUIC over UDP.
    Quic,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9445)),
            pq_mode: PqMode::Classical,
            max_conns: 1024,
            handshake_timeout: Duration::from_secs(3),
            peers: Vec::new(),
        }
    }
}

impl OverlayConfig {
    pub fn micro() -> Self {
        Self {
            max_conns: 128,
            ..Self::default()
        }
    }

    pub fn validate(&self, errs: &mut Vec<String>) {
        if self.max_conns == 0 {
            errs.push("overlay.max_conns must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            errs.push("overlay.handshake_timeout must be above zero".into());
        }
        for (i, p) in self.peers.iter().enumerate() {
            if crate::identity::parse_key_hex(&p.public_key).is_none() {
                errs.push(format!(
                    "overlay.peers[{i}].public_key must be 64 lowercase hex characters"
                ));
            }
        }
    }
}
