//! OAP/1 over TLS 1.3/TCP: the listener, the dialer, and one task per
//! session.
//!
//! A connection is a session once (1) the TLS handshake finished within
//! `handshake_timeout` with a pinned peer key, and (2) HELLO went both ways
//! and the peer's `node_id` is the key it authenticated with. A reject by
//! the OAP/1 session (a bad HELLO, a version we do not speak, a frame
//! before HELLO…) is answered with an ERROR frame naming the reason before
//! the connection closes — never a silent close.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use ron_kernel::metrics::names;
use ron_oap::{
    Decoded, Decoder, DecoderConfig, Encoder, Event, Flags, FrameSpec, OutFrame, Reject, Session,
    SessionConfig,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    pub frames_in: u64,
    pub bytes_in: u64,
}

/// What every connection task shares.
pub struct Overlay {
    pub identity: Identity,
    pub pins: Arc<Pins>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
    pub handshake_timeout: Duration,
    pub conns: Arc<Semaphore>,
    /// Live sessions by a per-connection id.
    pub sessions: Mutex<BTreeMap<u64, PeerSession>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Command channels of live sessions, by connection id.
    links: Mutex<BTreeMap<u64, (String, tokio::sync::mpsc::Sender<Command>)>>,
    /// Where fetched objects go and served ones come from.
    pub handles: ron_kernel::Handles,
    /// Largest object a fetch accepts.
    pub fetch_max_bytes: usize,
    /// Gossip ids already handled.
    pub seen: crate::apps::Seen,
    pub shutdown: CancellationToken,
    /// The key exchange this node offers first (QUIC sessions are labelled
    /// with it; quinn does not report the negotiated group).
    pub kex_preference: &'static str,
}

impl Overlay {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: Identity,
        pins: Arc<Pins>,
        acceptor: tokio_rustls::TlsAcceptor,
        connector: tokio_rustls::TlsConnector,
        handshake_timeout: Duration,
        max_conns: usize,
        shutdown: CancellationToken,
        kex_preference: &'static str,
        handles: ron_kernel::Handles,
        fetch_max_bytes: usize,
    ) -> Self {
        Overlay {
            identity,
            pins,
            acceptor,
            connector,
            handshake_timeout,
            conns: Arc::new(Semaphore::new(max_conns)),
            sessions: Mutex::new(BTreeMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            links: Mutex::new(BTreeMap::new()),
            handles,
            fetch_max_bytes,
            seen: crate::apps::Seen::default(),
            shutdown,
            kex_preference,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, PeerSession>> {
        // Only plain map updates happen under this lock; a panic cannot
        // leave it half-done.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn peers(&self) -> Vec<PeerSession> {
        self.sessions().values().cloned().collect()
    }

    /// Whether a session with this peer is up.
    pub fn connected(&self, peer_id: &str) -> bool {
        self.sessions().values().any(|s| s.peer_id == peer_id)
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
            run_session(ov, tls, peer, key, kex, "in", "tcp").await;
        });
    }
}

/// Keeps a session to a peer up until shutdown: whenever none is up,
/// `connect` runs one (returning when it ends), with backoff between
/// failed attempts. Shared by the TCP and QUIC dialers.
pub(crate) async fn keep_dialing<F, Fut>(
    overlay: Arc<Overlay>,
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
        if overlay.shutdown.is_cancelled() {
            return;
        }
        if !overlay.connected(&peer_id) {
            match connect().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::info!(%addr, peer = %peer_id, error = %e, "overlay dial failed"),
            }
        }
        tokio::select! {
            _ = overlay.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Keeps a TLS/TCP session to `addr` (whose key must be `key`) up.
pub async fn dial(overlay: Arc<Overlay>, addr: SocketAddr, key: [u8; 32]) {
    let ov = overlay.clone();
    keep_dialing(overlay, addr, key, || connect(&ov, addr, key)).await
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
    run_session(overlay.clone(), tls, addr, key, kex, "out", "tcp").await;
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &OutFrame) -> std::io::Result<()> {
    w.write_all(f.header_bytes()).await?;
    if !f.cap().is_empty() {
        w.write_all(f.cap()).await?;
    }
    if !f.payload().is_empty() {
        w.write_all(f.payload()).await?;
    }
    w.flush().await
}

/// Sends an ERROR frame for a reject, then the connection is closed by
/// the caller.
async fn send_reject<W: AsyncWrite + Unpin>(w: &mut W, enc: &mut Encoder, r: &Reject) {
    let body = serde_json::json!({"reason": r.reason.label(), "message": r.detail}).to_string();
    let spec = FrameSpec::error(
        0,
        r.corr_id.unwrap_or(0),
        r.reason.error_code(),
        Flags::RESP,
    );
    if let Ok(f) = enc.encode(&spec, &[], Bytes::from(body)) {
        let _ = write_frame(w, &f).await;
    }
    metrics::counter!(names::REJECTED_TOTAL, "reason" => r.reason.label()).increment(1);
}

struct SessionGauge;

impl SessionGauge {
    fn up() -> Self {
        metrics::gauge!(names::OVERLAY_SESSIONS_ACTIVE).increment(1.0);
        SessionGauge
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        metrics::gauge!(names::OVERLAY_SESSIONS_ACTIVE).decrement(1.0);
    }
}

/// App protocol 2: blob fetch.
pub const PROTO_BLOB: u16 = 2;

/// Work other tasks hand a session.
#[derive(Debug)]
pub enum Command {
    /// Fetch an object by address; the reply carries its verified bytes.
    Fetch {
        address: ron_kernel::ContentAddress,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Bytes>, String>>,
    },
    /// Send a gossip message (an encoded `apps::Gossip`).
    Gossip { payload: Bytes },
    /// Ask the peer for registry versions after `since`.
    Sync { since: u64 },
}

/// A fetch this side asked for.
struct Pending {
    address: ron_kernel::ContentAddress,
    hasher: blake3::Hasher,
    parts: Vec<Bytes>,
    size: usize,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Bytes>, String>>,
}

/// An object this side is sending, a frame per credit.
/// A response this side is sending: its frames' payloads, one frame per
/// credit of the peer's window.
struct Outgoing {
    proto: u16,
    frames: std::collections::VecDeque<Bytes>,
    started: bool,
}

impl Outgoing {
    /// An object cut into 64 KiB frames (slices, not copies).
    fn blob(data: Bytes) -> Self {
        let mut frames = std::collections::VecDeque::new();
        let mut off = 0;
        while off < data.len() {
            let end = (off + BLOB_FRAME).min(data.len());
            frames.push_back(data.slice(off..end));
            off = end;
        }
        if frames.is_empty() {
            frames.push_back(Bytes::new());
        }
        Outgoing {
            proto: PROTO_BLOB,
            frames,
            started: false,
        }
    }
}

const BLOB_FRAME: usize = 64 * 1024;

fn local_get(
    overlay: &Overlay,
    address: &ron_kernel::ContentAddress,
) -> Result<Option<Bytes>, String> {
    #[cfg(feature = "storage")]
    {
        let Some(api) = overlay.handles.get::<ron_storage::http::StorageApi>() else {
            return Ok(None);
        };
        match api.store.get(address) {
            Ok(b) => Ok(Some(b)),
            Err(ron_storage::StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    #[cfg(not(feature = "storage"))]
    {
        let _ = (overlay, address);
        Ok(None)
    }
}

/// Stores fetched, verified bytes (the frames' payloads, in order) locally.
pub fn local_put(overlay: &Overlay, parts: &[Bytes]) -> Result<(), String> {
    #[cfg(feature = "storage")]
    {
        let api = overlay
            .handles
            .get::<ron_storage::http::StorageApi>()
            .ok_or("storage is not running in this node")?;
        let mut w = api.store.writer();
        for part in parts {
            w.write(part).map_err(|e| e.to_string())?;
        }
        w.finish().map(|_| ()).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "storage"))]
    {
        let _ = (overlay, parts);
        Err("storage is not compiled into this node".into())
    }
}

impl Overlay {
    /// Fetches `address` from connected peers, one after the other, until
    /// one delivers bytes that hash to it.
    /// The verified object comes back as the payloads of the frames that
    /// carried it, in order.
    pub async fn fetch(&self, address: ron_kernel::ContentAddress) -> Result<Vec<Bytes>, String> {
        let links: Vec<(String, tokio::sync::mpsc::Sender<Command>)> =
            self.links().values().cloned().collect();
        if links.is_empty() {
            return Err("no peer is connected".into());
        }
        let mut last = String::new();
        for (peer, tx) in links {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if tx.send(Command::Fetch { address, reply }).await.is_err() {
                continue;
            }
            match rx.await {
                Ok(Ok(b)) => return Ok(b),
                Ok(Err(e)) => last = format!("{peer}: {e}"),
                Err(_) => last = format!("{peer}: session ended"),
            }
        }
        Err(last)
    }

    /// Each live session's connection id and command channel.
    pub fn link_senders(&self) -> Vec<(u64, tokio::sync::mpsc::Sender<Command>)> {
        self.links()
            .iter()
            .map(|(id, (_, tx))| (*id, tx.clone()))
            .collect()
    }

    fn links(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, (String, tokio::sync::mpsc::Sender<Command>)>>
    {
        // Plain map updates only; a panic cannot leave it half-done.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Conn<W> {
    wr: W,
    enc: Encoder,
    session: Session,
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    /// Sends a stream frame the session agrees to (credit, state).
    async fn send(&mut self, spec: FrameSpec, payload: Bytes) -> Result<(), String> {
        self.session.on_send(&spec).map_err(|e| e.to_string())?;
        let f = self
            .enc
            .encode(&spec, &[], payload)
            .map_err(|e| e.to_string())?;
        write_frame(&mut self.wr, &f)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends every ACK the session has ready.
    async fn acks(&mut self) -> Result<(), String> {
        while let Some(a) = self.session.poll_ack() {
            let f = self.enc.encode_ack(a.corr_id, a.ack_up_to, a.window);
            write_frame(&mut self.wr, &f)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Sends as many frames of each outgoing object as credit allows.
    async fn pump(&mut self, out: &mut BTreeMap<u64, Outgoing>) -> Result<(), String> {
        let mut done = Vec::new();
        for (&corr, o) in out.iter_mut() {
            while self.session.credit(corr) > 0 {
                let Some(piece) = o.frames.pop_front() else {
                    done.push(corr);
                    break;
                };
                let last = o.frames.is_empty();
                let p = o.proto;
                let spec = match (o.started, last) {
                    (false, false) => FrameSpec::start(p, corr, Flags::RESP),
                    (false, true) => FrameSpec::start(p, corr, Flags::RESP).with_flags(Flags::END),
                    (true, false) => FrameSpec::data(p, corr, Flags::RESP),
                    (true, true) => FrameSpec::end(p, corr, Flags::RESP),
                };
                self.send(spec, piece).await?;
                o.started = true;
                if last {
                    done.push(corr);
                    break;
                }
            }
        }
        for c in done {
            out.remove(&c);
        }
        Ok(())
    }
}

pub(crate) async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    overlay: Arc<Overlay>,
    stream: S,
    addr: SocketAddr,
    key: [u8; 32],
    kex: String,
    direction: &'static str,
    transport: &'static str,
) {
    let peer_id = hex(&key);
    let (mut rd, wr) = tokio::io::split(stream);
    let mut conn = Conn {
        wr,
        enc: Encoder::default(),
        session: Session::new(SessionConfig::default()),
    };
    let dec = Decoder::new(DecoderConfig::default());
    let hello = conn.session.local_hello(&overlay.identity.node_id());
    let Ok(f) = conn.enc.encode(
        &FrameSpec::hello(Flags::REQ),
        &[],
        Bytes::from(hello.to_json()),
    ) else {
        return;
    };
    if write_frame(&mut conn.wr, &f).await.is_err() {
        return;
    }
    let conn_id = overlay
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<Command>(64);
    let (served_tx, mut served_rx) =
        tokio::sync::mpsc::channel::<(u64, u16, Result<Option<Outgoing>, String>)>(64);
    let mut syncs: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
    let mut budget = crate::apps::Budget::new();
    // Streams this side opens: odd ids from the dialer, even from the
    // acceptor, so the two never collide.
    let mut next_corr: u64 = if direction == "out" { 1 } else { 2 };
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut outgoing: BTreeMap<u64, Outgoing> = BTreeMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut up: Option<SessionGauge> = None;
    let result: Result<(), String> = 'session: loop {
        // Decode everything buffered before waiting again.
        loop {
            let frame = match dec.decode(&mut buf) {
                Err(r) => {
                    send_reject(&mut conn.wr, &mut conn.enc, &r).await;
                    break 'session Err(format!("rejected: {}", r.reason.label()));
                }
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Frame(f)) => f,
            };
            let n = frame.payload.len() as u64;
            if let Some(s) = overlay.sessions().get_mut(&conn_id) {
                s.frames_in += 1;
                s.bytes_in += n;
            }
            let event = match conn.session.on_frame(frame) {
                Err(r) => {
                    send_reject(&mut conn.wr, &mut conn.enc, &r).await;
                    break 'session Err(format!("rejected: {}", r.reason.label()));
                }
                Ok(e) => e,
            };
            match event {
                Event::Hello(h) => {
                    if h.node_id != peer_id {
                        let r = Reject::new(
                            ron_oap::reject::RejectReason::BadHello,
                            "HELLO node_id is not the key the peer authenticated with",
                        );
                        send_reject(&mut conn.wr, &mut conn.enc, &r).await;
                        break 'session Err("HELLO node_id mismatch".into());
                    }
                    if direction == "out" {
                        handshake("ok", &kex);
                    }
                    up = Some(SessionGauge::up());
                    overlay.sessions().insert(
                        conn_id,
                        PeerSession {
                            peer_id: peer_id.clone(),
                            addr: addr.to_string(),
                            transport,
                            direction,
                            kex: kex.clone(),
                            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                            frames_in: 1,
                            bytes_in: n,
                        },
                    );
                    overlay
                        .links()
                        .insert(conn_id, (peer_id.clone(), cmd_tx.clone()));
                    // Tell the new peer our registry head: whoever is
                    // behind asks for the rest.
                    if let Some(payload) = crate::apps::head_announcement(&overlay) {
                        let _ = cmd_tx.try_send(Command::Gossip { payload });
                    }
                    tracing::info!(peer = %peer_id, %addr, transport, direction, kex = %kex, "overlay session up");
                }
                Event::Start {
                    corr_id,
                    app_proto_id: PROTO_BLOB,
                    flags,
                    payload,
                    end,
                    ..
                } if flags.contains(Flags::REQ) => {
                    // A peer asks for an object: look it up off the task.
                    let address = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|s| ron_kernel::ContentAddress::parse(s).ok());
                    let (ov, tx) = (overlay.clone(), served_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let r = match address {
                            Some(a) => local_get(&ov, &a).map(|o| o.map(Outgoing::blob)),
                            None => Err("not a content address".into()),
                        };
                        let _ = tx.blocking_send((corr_id, PROTO_BLOB, r));
                    });
                    let _ = end;
                }
                Event::Start {
                    corr_id,
                    app_proto_id: crate::apps::PROTO_SYNC,
                    flags,
                    payload,
                    ..
                } if flags.contains(Flags::REQ) => {
                    let since = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v["since"].as_u64())
                        .unwrap_or(0);
                    let (ov, tx) = (overlay.clone(), served_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let r = crate::apps::sync_frames(&ov, since).map(|o| {
                            o.map(|frames| Outgoing {
                                proto: crate::apps::PROTO_SYNC,
                                frames,
                                started: false,
                            })
                        });
                        let _ = tx.blocking_send((corr_id, crate::apps::PROTO_SYNC, r));
                    });
                }
                Event::Start {
                    app_proto_id: crate::apps::PROTO_GOSSIP,
                    payload,
                    ..
                } => {
                    if !budget.take() {
                        metrics::counter!(names::REJECTED_TOTAL, "reason" => "gossip_burst")
                            .increment(1);
                        continue;
                    }
                    if let Some(since) = crate::apps::on_gossip(&overlay, conn_id, &payload) {
                        let _ = cmd_tx.try_send(Command::Sync { since });
                    }
                }
                Event::Start {
                    corr_id,
                    payload,
                    end,
                    ..
                }
                | Event::Data {
                    corr_id,
                    payload,
                    end,
                } => {
                    if let Some(parts) = syncs.get_mut(&corr_id) {
                        parts.push(payload);
                        if end {
                            let parts = syncs.remove(&corr_id).unwrap_or_default();
                            let ov = overlay.clone();
                            let from = peer_id.clone();
                            tokio::task::spawn_blocking(move || {
                                match crate::apps::apply_sync(&ov, &parts) {
                                    Ok(n) => {
                                        tracing::info!(peer = %from, applied = n, "registry synced from peer")
                                    }
                                    Err(e) => {
                                        tracing::warn!(peer = %from, error = %e, "registry sync refused")
                                    }
                                }
                            });
                        }
                        continue;
                    }
                    let Some(p) = pending.get_mut(&corr_id) else {
                        continue;
                    };
                    p.hasher.update(&payload);
                    p.size += payload.len();
                    p.parts.push(payload);
                    if p.size > overlay.fetch_max_bytes {
                        if let Some(p) = pending.remove(&corr_id) {
                            let _ = p
                                .reply
                                .send(Err("object larger than overlay.fetch_max_bytes".into()));
                        }
                        continue;
                    }
                    if end {
                        let Some(p) = pending.remove(&corr_id) else {
                            continue;
                        };
                        if p.hasher.finalize().as_bytes() != p.address.as_bytes() {
                            // Wrong bytes: never stored, never served; the
                            // peer is disconnected and counted.
                            metrics::counter!(names::REJECTED_TOTAL, "reason" => "blob_mismatch")
                                .increment(1);
                            let _ = p.reply.send(Err(
                                "the peer sent bytes that do not match the address".into(),
                            ));
                            break 'session Err(format!(
                                "{} sent corrupt bytes for {}",
                                peer_id, p.address
                            ));
                        }
                        // The frames' payloads as they arrived: no copy.
                        let _ = p.reply.send(Ok(p.parts));
                    }
                }
                Event::StreamError {
                    corr_id, payload, ..
                } => {
                    if let Some(p) = pending.remove(&corr_id) {
                        let _ = p
                            .reply
                            .send(Err(String::from_utf8_lossy(&payload).into_owned()));
                    }
                    outgoing.remove(&corr_id);
                }
                Event::ConnectionError { code, payload } => {
                    break 'session Err(format!(
                        "peer closed with error {code}: {}",
                        String::from_utf8_lossy(&payload)
                    ));
                }
                Event::Credit { .. } | Event::Stale { .. } => {}
            }
        }
        if let Err(e) = conn.acks().await {
            break Err(e);
        }
        if let Err(e) = conn.pump(&mut outgoing).await {
            break Err(e);
        }
        tokio::select! {
            _ = overlay.shutdown.cancelled() => break Ok(()),
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => {
                    if !buf.is_empty() {
                        metrics::counter!(names::REJECTED_TOTAL, "reason" => "truncated").increment(1);
                    }
                    break Ok(());
                }
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            },
            Some(cmd) = cmd_rx.recv(), if up.is_some() => match cmd {
                Command::Fetch { address, reply } => {
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(PROTO_BLOB, corr, Flags::REQ).with_flags(Flags::END);
                    match conn.send(spec, Bytes::from(address.to_string())).await {
                        Ok(()) => {
                            pending.insert(corr, Pending {
                                address,
                                hasher: blake3::Hasher::new(),
                                parts: Vec::new(),
                                size: 0,
                                reply,
                            });
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.clone()));
                            break Err(e);
                        }
                    }
                }
                Command::Gossip { payload } => {
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(crate::apps::PROTO_GOSSIP, corr, Flags::EVENT)
                        .with_flags(Flags::END);
                    if let Err(e) = conn.send(spec, payload).await {
                        break Err(e);
                    }
                }
                Command::Sync { since } => {
                    if !syncs.is_empty() {
                        continue; // one sync at a time per peer
                    }
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(crate::apps::PROTO_SYNC, corr, Flags::REQ)
                        .with_flags(Flags::END);
                    let body = Bytes::from(serde_json::json!({"since": since}).to_string());
                    if let Err(e) = conn.send(spec, body).await {
                        break Err(e);
                    }
                    syncs.insert(corr, Vec::new());
                }
            },
            Some((corr, proto, found)) = served_rx.recv() => match found {
                Ok(Some(o)) => {
                    outgoing.insert(corr, o);
                }
                Ok(None) | Err(_) => {
                    let why = match found {
                        Err(e) => e,
                        _ => "not found".into(),
                    };
                    let body = serde_json::json!({"reason": "not_found", "message": why}).to_string();
                    let spec = FrameSpec::error(proto, corr, 404, Flags::RESP);
                    if let Err(e) = conn.send(spec, Bytes::from(body)).await {
                        break Err(e);
                    }
                }
            },
        }
    };
    overlay.sessions().remove(&conn_id);
    overlay.links().remove(&conn_id);
    for (_, p) in pending {
        let _ = p.reply.send(Err("session ended".into()));
    }
    if up.is_none() && direction == "out" {
        handshake("refused", &kex);
    }
    drop(up);
    let _ = conn.wr.shutdown().await;
    match result {
        Ok(()) => tracing::info!(peer = %peer_id, %addr, "overlay session closed"),
        Err(e) => tracing::info!(peer = %peer_id, %addr, error = %e, "overlay session ended"),
    }
}
