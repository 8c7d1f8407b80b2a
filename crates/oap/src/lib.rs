//! OAP/1: the frame codec and session state machine of the overlay.
//!
//! A pure library, the `quinn-proto` of OAP/1: no sockets, no tokio, no
//! filesystem, no clock. The overlay role drives it.
//!
//! - [`header`]: the 38-byte header, [`Flags`], [`FrameKind`].
//! - [`decode`]: bytes → [`Frame`]s, zero-copy, length checked first.
//! - [`encode`]: [`FrameSpec`] + payload → [`OutFrame`] (the header
//!   inline, the capability cut from a [`FramePool`] arena, the payload a
//!   `Buf` chained behind them, never copied).
//! - [`session`]: per-`corr_id` half states, credit checks and ACK
//!   scheduling.
//! - [`comp`]: zstd with a bounded inflate.
//! - [`hello`], [`reject`] (the reason labels), [`health`] (metrics hook
//!   and readiness inputs).
//!
//! The normative spec is `docs/OAP-1.md`.

pub mod comp;
pub mod decode;
pub mod encode;
pub mod header;
pub mod health;
pub mod hello;
pub mod reject;
pub mod session;

pub use decode::{Decoded, Decoder, DecoderConfig, Frame, ACK_PAYLOAD_LEN};
pub use encode::{EncodeError, Encoder, FramePool, FrameSpec, OutFrame};
pub use header::{Flags, FrameKind, Header, HEADER_LEN, MAX_FRAME_BYTES, VERSION};
pub use health::{NoMetrics, OapMetrics, ReadinessSummary, RejectRate};
pub use hello::Hello;
pub use reject::{Reject, RejectReason};
pub use session::{AckOut, Event, SendError, Session, SessionConfig};

/// ALPN protocol id negotiated by the overlay's TLS and QUIC endpoints.
pub const ALPN: &[u8] = b"oap/1";
