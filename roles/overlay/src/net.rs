//! OAP/1 over TLS 1.3/TCP: the listener, the dialer, and what sessions
//! share (`session.rs` runs each one).
//!
//! A connection is a session once (1) the TLS handshake finished within
//! `handshake_timeout` with a pinned peer key, and (2) HELLO went both ways
//! and the peer's `node_id` is the key it authenticated with. A reject by
//! the OAP/1 session (a bad HELLO, a version we do not speak, a frame
//! before HELLO…) is answered with an ERROR frame naming the reason before
//! the connection closes — never a silent close.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ron_kernel::handles::{ObjectSink, Objects};
use ron_kernel::metrics::names;
use ron_kernel::HandleError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::identity::{cert_public_key, hex, Identity};
use crate::tls::Pins;

/// One live session, as `GET /api/v1/peers` and the logs describe it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerSession {
    pub peer_id: String,
    pub addr: String,
    pub transport: &'static str,
    pub direction: &'static str,
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
    pub(crate) transport: &'static str,
    pub(crate) direction: &'static str,
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
        transport: &'static str,
        direction: &'static str,
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
    /// Largest object a fetch accepts.
    pub fetch_max_bytes: usize,
    pub peer: crate::config::PeerLimits,
}

impl Limits {
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
    pub seen: crate::apps::Seen,
    /// Which peer announced which object (`object.stored` gossip).
    pub hints: crate::apps::Hints,
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
            seen: crate::apps::Seen::default(),
            hints: crate::apps::Hints::default(),
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

pub(crate) fn handshake(result: &'static str, kex: &str) {
    metrics::counter!(names::HANDSHAKE_TOTAL, "result" => result, "kex" => kex.to_owned())
        .increment(1);
}

fn kex_name(conn: &rustls::CommonState) -> String {
    conn.negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "none".into())
}

/// Accepts until shutdown.
pub async fn listen(overlay: Arc<Overlay>, listener: TcpListener) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = overlay.shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "overlay accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = overlay.conns.clone().try_acquire_owned() else {
            metrics::counter!(names::REJECTED_TOTAL, "reason" => "max_conns").increment(1);
            continue; // dropped: the peer sees the connection close
        };
        let _ = tcp.set_nodelay(true);
        let ov = overlay.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(ov.handshake_timeout, ov.acceptor.accept(tcp)).await {
                    Err(_) => {
                        handshake("timeout", "none");
                        tracing::info!(%peer, "overlay handshake timed out");
                        return;
                    }
                    Ok(Err(e)) => {
                        handshake("refused", "none");
                        tracing::info!(%peer, error = %e, "overlay handshake refused");
                        return;
                    }
                    Ok(Ok(t)) => t,
                };
            let mut tls = tls;
            tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
            let (_, conn) = tls.get_ref();
            let kex = kex_name(conn);
            let Some(key) = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(cert_public_key)
            else {
                handshake("refused", &kex);
                return;
            };
            handshake("ok", &kex);
            crate::session::run_session(ov, tls, peer, key, kex, "in", "tcp").await;
        });
    }
}

/// Keeps a session to a peer up until `stop` (a child of the node's
/// shutdown, or the registry withdrawing the address): whenever none is
/// up, `connect` runs one (returning when it ends), with backoff between
/// failed attempts. A session already up runs to its end. Shared by the
/// TCP and QUIC dialers.
pub(crate) async fn keep_dialing<F, Fut>(
    overlay: Arc<Overlay>,
    stop: CancellationToken,
    addr: SocketAddr,
    key: [u8; 32],
    connect: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let peer_id = hex(&key);
    let mut backoff = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !overlay.connected(&peer_id) {
            match connect().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::info!(%addr, peer = %peer_id, error = %e, "overlay dial failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// rustls's limit on the plaintext it takes ahead of the socket (64 KiB by
/// default): a session's vectored write of up to four frames fits, so it
/// is sealed in full records instead of being cut after 64 KiB, which left
/// a frame's last 38 bytes as a record and a write of their own.
pub const TLS_BUFFER_LIMIT: usize = 512 * 1024;

/// Keeps a TLS/TCP session to `addr` (whose key must be `key`) up until
/// `stop`.
pub async fn dial(overlay: Arc<Overlay>, stop: CancellationToken, addr: SocketAddr, key: [u8; 32]) {
    let ov = overlay.clone();
    keep_dialing(overlay, stop, addr, key, || connect(&ov, addr, key)).await
}

async fn connect(overlay: &Arc<Overlay>, addr: SocketAddr, key: [u8; 32]) -> Result<(), String> {
    let tcp = tokio::time::timeout(overlay.handshake_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(
        overlay.handshake_timeout,
        overlay.connector.connect(crate::tls::peer_name(), tcp),
    )
    .await
    {
        Err(_) => {
            handshake("timeout", "none");
            return Err("TLS handshake timed out".into());
        }
        Ok(Err(e)) => {
            handshake("refused", "none");
            return Err(format!("TLS handshake refused: {e}"));
        }
        Ok(Ok(t)) => t,
    };
    let mut tls = tls;
    tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    let (_, conn) = tls.get_ref();
    let kex = kex_name(conn);
    let got = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(cert_public_key);
    if got != Some(key) {
        // Pinned, but not the key this address should have.
        handshake("refused", &kex);
        return Err("the peer presented another node's key".into());
    }
    // In TLS 1.3 the server judges our certificate after our side is done:
    // the outcome is known when its HELLO (or its alert) arrives, and
    // run_session counts it then.
    crate::session::run_session(overlay.clone(), tls, addr, key, kex, "out", "tcp").await;
    Ok(())
}

/// App protocol 2: blob fetch.
pub const PROTO_BLOB: u16 = 2;

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
    /// Fetch an object by address. The frames' payloads go to `sink` as
    /// they arrive; `reply` says whether the peer sent the whole answer
    /// (the sink closes either way). The bytes are verified by whoever
    /// consumes them (see `Overlay::fetch_with`).
    Fetch {
        address: ron_kernel::ContentAddress,
        sink: tokio::sync::mpsc::UnboundedSender<Bytes>,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// The peer's answer to a fetch did not hash to the address: end the
    /// session, counted as `blob_mismatch`.
    Corrupt { detail: String },
    /// Send a gossip message (an encoded `apps::Gossip`).
    Gossip { payload: Bytes },
    /// Ask the peer for registry versions after `since`.
    Sync { since: u64 },
}

/// Why this node does not serve a request; sent as the stream's ERROR.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            detail: detail.into(),
        }
    }
}

/// An object in the local store, read lazily: its verified pieces, in
/// order, as the stream's window asks for them.
pub(crate) type Pieces = Box<dyn Iterator<Item = Result<Bytes, Refusal>> + Send>;

/// An object from the local store: its size and a reader of its verified
/// 64 KiB chunks (the store's chunk size is the blob frame size: each piece
/// is one frame, and nothing is concatenated). Nothing is read yet: the
/// session reads ahead of the peer's window, a few pieces at a time, so a
/// served object never sits in memory whole. `None` when it is not here;
/// refused when it is larger than `max` (the asker would drop it anyway).
pub(crate) fn local_get(
    overlay: &Overlay,
    address: &ron_kernel::ContentAddress,
    max: usize,
) -> Result<Option<(u64, Pieces)>, Refusal> {
    // Without storage in this node there is nothing to serve.
    let Ok(objects) = overlay.handles.get::<dyn Objects>() else {
        return Ok(None);
    };
    let store_error = |e: HandleError| Refusal::new(500, "store", e.to_string());
    let Some((size, reader)) = objects.read(address, None).map_err(store_error)? else {
        return Ok(None);
    };
    if size > max as u64 {
        return Err(Refusal::new(
            413,
            "too_large",
            format!("{size} bytes, above the overlay fetch limit {max}"),
        ));
    }
    Ok(Some((
        size,
        Box::new(reader.map(move |r| r.map_err(store_error))),
    )))
}

/// A fetch attempt's consumer: what it made of the bytes, and their
/// address (see [`Overlay::fetch_with`]).
pub type Consumer<T> = tokio::task::JoinHandle<Result<(T, ron_kernel::ContentAddress), String>>;

/// Stores the bytes of one fetch attempt as they arrive, in a blocking
/// task; when the sink closes, the writer (nothing committed yet) and the
/// address of what was written. The writer hashes what it stores anyway,
/// so this is the fetch's verification too, at no extra cost.
fn store_as_it_arrives(
    objects: Arc<dyn Objects>,
    mut pieces: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> Consumer<Box<dyn ObjectSink>> {
    tokio::task::spawn_blocking(move || {
        let mut w = objects.writer();
        while let Some(piece) = pieces.blocking_recv() {
            if let Err(e) = w.write(&piece) {
                // This node's own failure (a full disk): no other peer is
                // asked, and the gateway answers 404, so say it here.
                tracing::warn!(error = %e, "storing an object fetched from a peer failed");
                return Err(e.to_string());
            }
        }
        let got = w.address();
        Ok((w, got))
    })
}

impl Overlay {
    /// Fetches `address` from connected peers, one after the other (the one
    /// that announced it first), until one delivers bytes that hash to it.
    ///
    /// For each attempt `attempt` starts a consumer of the frames' payloads
    /// (in order, as they arrive, not yet verified) and returns the channel
    /// that feeds it. When the channel closes the consumer returns what it
    /// made and the BLAKE3 address of the bytes it consumed (consumers hash
    /// as they go, off the session's task, and a store writer hashes
    /// anyway). Its result is returned only when that address is the one
    /// asked for; a peer whose bytes hash to anything else is disconnected
    /// (`rejected_total{reason="blob_mismatch"}`) and the consumer's result
    /// is dropped, so it must not have made anything visible.
    pub async fn fetch_with<T, F>(
        &self,
        address: ron_kernel::ContentAddress,
        mut attempt: F,
    ) -> Result<T, String>
    where
        F: FnMut() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, Consumer<T>),
    {
        let mut links: Vec<(String, tokio::sync::mpsc::Sender<Command>)> = self
            .links()
            .values()
            .map(|l| (l.peer_id.clone(), l.commands.clone()))
            .collect();
        // The peer that announced this object (if any) is asked first.
        if let Some(holder) = self.hints.get(&address.to_string()) {
            links.sort_by_key(|(peer, _)| *peer != holder);
        }
        if links.is_empty() {
            return Err("no peer is connected".into());
        }
        let mut last = String::new();
        for (peer, tx) in links {
            let (reply, complete) = tokio::sync::oneshot::channel();
            let (sink, consumer) = attempt();
            let fetch = Command::Fetch {
                address,
                sink,
                reply,
            };
            if tx.send(fetch).await.is_err() {
                // The command (and the sink in it) is dropped: the
                // consumer ends.
                let _ = consumer.await;
                continue;
            }
            let complete = complete.await;
            // The session has dropped the sink: the consumer ends.
            let consumed = consumer.await.map_err(|e| e.to_string())?;
            match complete {
                Ok(Ok(())) => {
                    // A consumer that failed (a full disk) is this node's
                    // problem, not the peer's: no other peer is asked.
                    let (out, got) = consumed?;
                    if got == address {
                        tracing::info!(%address, %peer, "overlay fetched an object");
                        return Ok(out);
                    }
                    let detail =
                        format!("{peer} sent corrupt bytes for {address} (they hash to {got})");
                    let _ = tx.send(Command::Corrupt { detail }).await;
                    last = format!("{peer}: the peer sent bytes that do not match the address");
                }
                Ok(Err(e)) => last = format!("{peer}: {e}"),
                Err(_) => last = format!("{peer}: session ended"),
            }
        }
        Err(last)
    }

    /// Fetches `address` from peers straight into the local store: pieces
    /// are written as they arrive (nothing holds the whole object), and
    /// the object is committed only once the bytes are verified.
    pub async fn fetch_into_store(
        &self,
        address: ron_kernel::ContentAddress,
    ) -> Result<(), HandleError> {
        let objects = self.handles.get::<dyn Objects>()?;
        let writer = self
            .fetch_with(address, || {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, store_as_it_arrives(objects.clone(), rx))
            })
            .await
            .map_err(HandleError::Failed)?;
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(HandleError::failed)?
            .map(|_| ())
            .inspect_err(|e| {
                tracing::warn!(%address, error = %e, "storing an object fetched from a peer failed");
            })
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
