//! `[overlay]`: OAP/1 sessions between nodes.

use std::net::SocketAddr;
use std::time::Duration;

use ron_kernel::section::RoleSection;
use ron_kernel::RoleName;
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
    /// Also listen for OAP/1 over QUIC on the UDP port of `addr` (`--quic`,
    /// `--no-quic`). Off: peers reach this node over TLS/TCP only.
    pub quic: bool,
    pub max_conns: u32,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A frame that has begun arriving must be complete within this.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Each frame must be written within this (a peer that stops reading
    /// is cut off).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A session that receives nothing for this long is closed. Live
    /// sessions ping every quarter of it, so only dead peers hit it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Unacknowledged frames sent, summed over all sessions, above which
    /// the role reports unready.
    pub inflight_critical: u64,
    /// Limits each session applies to its peer.
    pub peer: PeerLimits,
    /// Static peers: every listed key may connect; those with an `addr`
    /// are dialed and kept connected.
    pub peers: Vec<PeerConfig>,
}

// The role reads its section once, at start.
ron_kernel::restart_keys!(OverlayConfig: all);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerLimits {
    /// Frames this node has sent to one peer and not had acknowledged
    /// (a one-frame request counts until its answer), over all streams.
    pub inflight_frames: u32,
    /// The window this node grants the peer per stream (HELLO
    /// `ack_window`); it sends within the window the peer granted.
    pub send_window_frames: u32,
    /// Requests (blob fetch, registry sync, ping) a peer may start per
    /// second, bursting to the same number; more get a stream ERROR 429.
    pub max_rps: u32,
    /// Streams one peer may have open at once (`--oap-concurrency`); a
    /// START beyond it is refused with a stream ERROR.
    pub max_streams: u32,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            inflight_frames: 32,
            send_window_frames: 16,
            max_rps: 200,
            max_streams: 1024,
        }
    }
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

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9445)),
            pq_mode: PqMode::Classical,
            quic: true,
            max_conns: 1024,
            handshake_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            inflight_critical: 8192,
            peer: PeerLimits::default(),
            peers: Vec::new(),
        }
    }
}

impl RoleSection for OverlayConfig {
    const ROLE: RoleName = RoleName::Overlay;

    fn listen_addr(&self, _fronted: bool) -> Option<SocketAddr> {
        Some(self.addr)
    }

    /// Edge defaults: fewer sessions, fewer streams per peer, and an
    /// unready threshold the node can reach (128 sessions × 32 frames
    /// each is 4096 frames in flight at most; 8192 would never trip).
    fn micro() -> Self {
        Self {
            max_conns: 128,
            inflight_critical: 2048,
            peer: PeerLimits {
                max_streams: 256,
                ..PeerLimits::default()
            },
            ..Self::default()
        }
    }

    fn validate(&self, errs: &mut Vec<String>) {
        if self.max_conns == 0 {
            errs.push("overlay.max_conns must be at least 1".into());
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                errs.push(format!("overlay.{name} must be above zero"));
            }
        }
        if self.inflight_critical == 0 {
            errs.push("overlay.inflight_critical must be at least 1".into());
        }
        if self.peer.max_streams == 0 {
            errs.push("overlay.peer.max_streams must be at least 1".into());
        }
        if self.peer.inflight_frames == 0 {
            errs.push("overlay.peer.inflight_frames must be at least 1".into());
        }
        if !(1..=1024).contains(&self.peer.send_window_frames) {
            errs.push("overlay.peer.send_window_frames must be between 1 and 1024".into());
        }
        if self.peer.max_rps == 0 {
            errs.push("overlay.peer.max_rps must be at least 1".into());
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
