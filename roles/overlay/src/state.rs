//! What every session and both transports share: the `Overlay` (identity,
//! pins, TLS configs, limits, the live sessions and their command links,
//! the inflight sum), each session's `SessionInfo`, and the `Command`s
//! other tasks hand a session.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use ron_kernel::metrics::names;

pub use crate::config::Transport;
use crate::identity::Identity;
use crate::tls::Pins;

/// Which side dialed: `out` for the dialer, `in` for the acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One live session, as `GET /api/v1/peers` and the logs describe it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerSession {
    pub peer_id: String,
    pub addr: String,
    pub transport: Transport,
    pub direction: Direction,
    pub kex: String,
    pub since: String,
    /// Round trip of the last ping, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub inflight_frames: u64,
    /// The per-stream window the peer granted in its HELLO.
    pub ack_window: u64,
}

/// A live session's fixed facts and running counters (updated by its task
/// without a lock; read by `peers()`).
#[derive(Debug)]
pub struct SessionInfo {
    pub(crate) peer_id: String,
    pub(crate) addr: String,
    pub(crate) transport: Transport,
    pub(crate) direction: Direction,
    pub(crate) kex: String,
    pub(crate) since: String,
    pub(crate) rtt_us: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) inflight: AtomicU64,
    /// The window the peer's HELLO granted (0 until it arrives).
    pub(crate) ack_window: AtomicU64,
}

impl SessionInfo {
    pub(crate) fn new(
        peer_id: String,
        addr: String,
        transport: Transport,
        direction: Direction,
        kex: String,
        since: String,
    ) -> Self {
        SessionInfo {
            peer_id,
            addr,
            transport,
            direction,
            kex,
            since,
            rtt_us: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            ack_window: AtomicU64::new(0),
        }
    }

    fn view(&self) -> PeerSession {
        let rtt = self.rtt_us.load(Relaxed);
        PeerSession {
            peer_id: self.peer_id.clone(),
            addr: self.addr.clone(),
            transport: self.transport,
            direction: self.direction,
            kex: self.kex.clone(),
            since: self.since.clone(),
            rtt_ms: (rtt > 0).then(|| rtt as f64 / 1000.0),
            frames_in: self.frames_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            inflight_frames: self.inflight.load(Relaxed),
            ack_window: self.ack_window.load(Relaxed),
        }
    }
}

/// The timeouts and limits every session applies (from `[overlay]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_conns: usize,
    /// Most object bytes one fetch asks for (a whole object, or a range).
    pub fetch_max_bytes: usize,
    pub peer: crate::config::PeerLimits,
}

impl Limits {
    /// Most bytes one blob answer may carry: the object bytes and their
    /// size and proof (64 bytes per 64 KiB group at most, and a path).
    pub fn fetch_max_answer(&self) -> usize {
        self.fetch_max_bytes + self.fetch_max_bytes / 1024 + 64 * 64 + 8
    }

    pub fn from_config(c: &crate::config::OverlayConfig) -> Self {
        Limits {
            handshake_timeout: c.handshake_timeout,
            read_timeout: c.read_timeout,
            write_timeout: c.write_timeout,
            idle_timeout: c.idle_timeout,
            max_conns: c.max_conns as usize,
            fetch_max_bytes: 64 << 20,
            peer: c.peer,
        }
    }
}

/// What every connection task shares.
pub struct Overlay {
    pub identity: Identity,
    pub pins: Arc<Pins>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
    pub limits: Limits,
    pub handshake_timeout: Duration,
    pub conns: Arc<Semaphore>,
    /// Live sessions by a per-connection id.
    sessions: Mutex<BTreeMap<u64, Arc<SessionInfo>>>,
    next_id: AtomicU64,
    /// Command channels of live sessions, by connection id.
    links: Mutex<BTreeMap<u64, Link>>,
    /// Where fetched objects go and served ones come from.
    pub handles: ron_kernel::Handles,
    /// Gossip ids already handled.
    pub seen: Seen,
    /// Which peer announced which object (`object.stored` gossip).
    pub hints: Hints,
    /// Fetches into the store that every peer left short, for the next
    /// fetch of the same object to resume.
    pub(crate) partials: Partials,
    /// Bytes of fetched groups run through BLAKE3 (benches report passes
    /// per byte from it).
    pub verified_bytes: AtomicU64,
    /// Frames sent and not yet acknowledged, over all sessions.
    inflight: AtomicU64,
    pub shutdown: CancellationToken,
    /// The key exchange this node offers first (QUIC sessions are labelled
    /// with it; quinn does not report the negotiated group).
    pub kex_preference: &'static str,
    /// The OAP/1 health hook every session records through.
    pub oap: crate::oap_health::OapHook,
}

impl Overlay {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: Identity,
        pins: Arc<Pins>,
        acceptor: tokio_rustls::TlsAcceptor,
        connector: tokio_rustls::TlsConnector,
        limits: Limits,
        shutdown: CancellationToken,
        kex_preference: &'static str,
        handles: ron_kernel::Handles,
    ) -> Self {
        Overlay {
            identity,
            pins,
            acceptor,
            connector,
            handshake_timeout: limits.handshake_timeout,
            conns: Arc::new(Semaphore::new(limits.max_conns)),
            limits,
            sessions: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            links: Mutex::new(BTreeMap::new()),
            handles,
            seen: Seen::default(),
            hints: Hints::default(),
            partials: Partials::default(),
            verified_bytes: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            shutdown,
            kex_preference,
            oap: crate::oap_health::OapHook::new(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<SessionInfo>>> {
        // Only plain map updates happen under this lock; a panic cannot
        // leave it half-done.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn peers(&self) -> Vec<PeerSession> {
        self.sessions().values().map(|s| s.view()).collect()
    }

    /// Whether a session with this peer is up.
    pub fn connected(&self, peer_id: &str) -> bool {
        self.sessions().values().any(|s| s.peer_id == peer_id)
    }

    /// Frames sent and not yet acknowledged, over all sessions.
    pub fn inflight_frames(&self) -> u64 {
        self.inflight.load(Relaxed)
    }

    /// Whether every live session's peer granted a window in its HELLO.
    pub fn windows_granted(&self) -> bool {
        self.sessions()
            .values()
            .all(|s| s.ack_window.load(Relaxed) >= 1)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// A session finished HELLO: listed, and reachable for commands.
    /// `unpinned` is cancelled when the peer's key stops being pinned — at
    /// once if that happened since its handshake (the pins are set before
    /// `drop_unpinned` looks at the links, and read here after the link is
    /// in: one of the two sees the other).
    pub(crate) fn session_up(
        &self,
        conn_id: u64,
        info: Arc<SessionInfo>,
        commands: tokio::sync::mpsc::Sender<Command>,
        unpinned: CancellationToken,
    ) {
        let peer_id = info.peer_id.clone();
        self.sessions().insert(conn_id, info);
        self.links().insert(
            conn_id,
            Link {
                peer_id: peer_id.clone(),
                commands,
                unpinned: unpinned.clone(),
            },
        );
        if !self.pinned(&peer_id) {
            unpinned.cancel();
        }
    }

    fn pinned(&self, peer_id: &str) -> bool {
        crate::identity::parse_key_hex(peer_id).is_some_and(|k| self.pins.contains(&k))
    }

    /// Ends every session whose peer's key is no longer pinned (a registry
    /// change replaced or removed its descriptor); returns how many.
    pub fn drop_unpinned(&self) -> usize {
        let links = self.links();
        let mut n = 0;
        for l in links.values() {
            if !self.pinned(&l.peer_id) {
                l.unpinned.cancel();
                n += 1;
            }
        }
        n
    }

    pub(crate) fn session_down(&self, conn_id: u64) {
        self.sessions().remove(&conn_id);
        self.links().remove(&conn_id);
    }

    /// A session's unacknowledged frames went from `was` to `now`.
    pub(crate) fn add_inflight(&self, was: u64, now: u64) {
        if now >= was {
            self.inflight.fetch_add(now - was, Relaxed);
        } else {
            self.inflight.fetch_sub(was - now, Relaxed);
        }
    }
}

/// A live session as the overlay reaches it.
struct Link {
    peer_id: String,
    commands: tokio::sync::mpsc::Sender<Command>,
    /// Cancelled to end the session: the peer's key is no longer pinned.
    unpinned: CancellationToken,
}

/// Work other tasks hand a session.
#[derive(Debug)]
pub enum Command {
    /// Send a blob request (`blob::BlobRequest`, encoded). The answer's
    /// payloads go to `sink` as they arrive; `reply` says whether the peer
    /// sent the whole answer (the sink closes either way). The bytes are
    /// verified by whoever consumes them (see `Overlay::fetch_groups`).
    Fetch {
        request: Bytes,
        sink: tokio::sync::mpsc::UnboundedSender<Bytes>,
        reply: tokio::sync::oneshot::Sender<crate::error::Result<()>>,
    },
    /// The peer's answer to a fetch did not hash to the address: end the
    /// session, counted as `blob_mismatch`.
    Corrupt { detail: String },
    /// Send a gossip message (an encoded `apps::Gossip`).
    Gossip { payload: Bytes },
    /// Ask the peer for registry versions after `since`.
    Sync { since: u64 },
}

impl Overlay {
    /// Each live session's peer id and command channel.
    pub(crate) fn peer_links(&self) -> Vec<(String, tokio::sync::mpsc::Sender<Command>)> {
        self.links()
            .values()
            .map(|l| (l.peer_id.clone(), l.commands.clone()))
            .collect()
    }

    /// Each live session's connection id and command channel.
    pub fn link_senders(&self) -> Vec<(u64, tokio::sync::mpsc::Sender<Command>)> {
        self.links()
            .iter()
            .map(|(id, l)| (*id, l.commands.clone()))
            .collect()
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Link>> {
        // Plain map updates only; a panic cannot leave it half-done.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Gossip message ids remembered (so each is relayed once).
const SEEN: usize = 4096;
/// Addresses remembered with the node that announced them.
const HINTS: usize = 4096;

/// The ids in a set for lookup, and in arrival order for eviction.
type SeenIds = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// Ids of recent messages.
#[derive(Debug, Default)]
pub struct Seen {
    inner: Mutex<SeenIds>,
}

impl Seen {
    /// Records `id`; true when it was new.
    pub fn insert(&self, id: [u8; 32]) -> bool {
        // Plain set updates only; a panic cannot leave them half-done.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > SEEN {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// Which node announced which address (`object.stored`), the most recent
/// `HINTS` of them.
#[derive(Debug, Default)]
pub struct Hints {
    inner: Mutex<(std::collections::HashMap<String, String>, VecDeque<String>)>,
}

impl Hints {
    pub fn insert(&self, address: &str, node_id: &str) {
        // Plain map updates only; a panic cannot leave them half-done.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(address.to_owned(), node_id.to_owned()).is_none() {
            order.push_back(address.to_owned());
            if order.len() > HINTS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// The node that last announced `address`.
    pub fn get(&self, address: &str) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(address).cloned()
    }
}

/// Partial objects kept: at most this many (the oldest is dropped, and
/// with it the chunks its writer stored).
const PARTIALS: usize = 16;

/// An object fetched in part: a store writer holding its first `groups`
/// verified groups (stored, nothing committed) and its proved size.
pub(crate) struct Partial {
    pub writer: Box<dyn ron_kernel::handles::ObjectSink>,
    pub groups: u64,
    pub size: u64,
}

/// The partial objects kept, oldest first.
#[derive(Default)]
pub(crate) struct Partials {
    inner: Mutex<VecDeque<(ron_kernel::ContentAddress, Partial)>>,
}

impl Partials {
    /// Keeps `p` for the next fetch of `address`; returns the partial
    /// objects that make room for it (their writers remove their chunks
    /// when dropped: blocking, so not on the runtime).
    pub(crate) fn park(&self, address: ron_kernel::ContentAddress, p: Partial) -> Vec<Partial> {
        // Plain queue updates only; a panic cannot leave them half-done.
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while let Some(i) = q.iter().position(|(a, _)| *a == address) {
            out.extend(q.remove(i).map(|(_, p)| p));
        }
        q.push_back((address, p));
        while q.len() > PARTIALS {
            out.extend(q.pop_front().map(|(_, p)| p));
        }
        out
    }

    /// The partial object of `address`, taken.
    pub(crate) fn take(&self, address: &ron_kernel::ContentAddress) -> Option<Partial> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let i = q.iter().position(|(a, _)| a == address)?;
        q.remove(i).map(|(_, p)| p)
    }
}

/// Counts a handshake outcome (`handshake_total{result,kex}`), for both
/// transports and the session that finishes it.
pub(crate) fn handshake(result: &'static str, kex: &str) {
    metrics::counter!(names::HANDSHAKE_TOTAL, "result" => result, "kex" => kex.to_owned())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_the_latest_announcer_and_forget_the_oldest() {
        let h = Hints::default();
        h.insert("b3:a", "n1");
        h.insert("b3:a", "n2");
        assert_eq!(h.get("b3:a").as_deref(), Some("n2"));
        for i in 0..HINTS {
            h.insert(&format!("b3:{i}"), "n3");
        }
        assert_eq!(h.get("b3:a"), None);
        assert_eq!(h.get(&format!("b3:{}", HINTS - 1)).as_deref(), Some("n3"));
    }
}
