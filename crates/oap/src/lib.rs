//! OAP/1: the frame codec and session state machine of the overlay.
//!
//! A pure library: no sockets, no tokio, no filesystem. The codec itself is
//! built under its own issue; this crate reserves its place in the workspace
//! and its protocol constants, which the rest of the node already relies on.

/// Size of the fixed OAP/1 header in bytes.
pub const HEADER_LEN: usize = 38;
/// Largest frame (header included) a conforming peer may send.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// ALPN protocol id negotiated by the overlay's TLS and QUIC endpoints.
pub const ALPN: &[u8] = b"oap/1";
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
