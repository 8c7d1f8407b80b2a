//! Every OAP/1 app protocol id the overlay speaks, in one place
//! (docs/OAP-1.md describes each).

/// Registry gossip: announcements of new heads and held objects.
pub const PROTO_GOSSIP: u16 = 1;
/// Blob fetch: a one-frame request naming an address, answered with the
/// object's bytes.
pub const PROTO_BLOB: u16 = 2;
/// Registry sync: the versions after `since`.
pub const PROTO_SYNC: u16 = 3;
/// Ping: a one-frame REQ answered by a one-frame RESP (the session's rtt).
pub const PROTO_PING: u16 = 4;

/// The largest payload the overlay puts in one frame: a blob's 64 KiB
/// group (the store's chunk), so each group is one frame.
pub const BLOB_FRAME: usize = 64 * 1024;
