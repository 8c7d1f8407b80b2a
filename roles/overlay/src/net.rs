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

/// Keeps a session to `addr` (whose key must be `key`) up until shutdown,
/// reconnecting with backoff.
pub async fn dial(overlay: Arc<Overlay>, addr: SocketAddr, key: [u8; 32]) {
    let peer_id = hex(&key);
    let mut backoff = Duration::from_millis(100);
    loop {
        if overlay.shutdown.is_cancelled() {
            return;
        }
        if !overlay.connected(&peer_id) {
            match connect(&overlay, addr, key).await {
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
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut enc = Encoder::default();
    let dec = Decoder::new(DecoderConfig::default());
    let mut session = Session::new(SessionConfig::default());
    let hello = session.local_hello(&overlay.identity.node_id());
    let Ok(f) = enc.encode(
        &FrameSpec::hello(Flags::REQ),
        &[],
        Bytes::from(hello.to_json()),
    ) else {
        return;
    };
    if write_frame(&mut wr, &f).await.is_err() {
        return;
    }
    let conn_id = overlay
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut up: Option<SessionGauge> = None;
    let result: Result<(), String> = loop {
        // Decode what is buffered before reading more.
        match dec.decode(&mut buf) {
            Err(r) => {
                send_reject(&mut wr, &mut enc, &r).await;
                break Err(format!("rejected: {}", r.reason.label()));
            }
            Ok(Decoded::Frame(frame)) => {
                let n = frame.payload.len() as u64;
                match session.on_frame(frame) {
                    Err(r) => {
                        send_reject(&mut wr, &mut enc, &r).await;
                        break Err(format!("rejected: {}", r.reason.label()));
                    }
                    Ok(Event::Hello(h)) => {
                        if h.node_id != peer_id {
                            let r = Reject::new(
                                ron_oap::reject::RejectReason::BadHello,
                                "HELLO node_id is not the key the peer authenticated with",
                            );
                            send_reject(&mut wr, &mut enc, &r).await;
                            break Err("HELLO node_id mismatch".into());
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
                                since: humantime::format_rfc3339_seconds(SystemTime::now())
                                    .to_string(),
                                frames_in: 1,
                                bytes_in: n,
                            },
                        );
                        tracing::info!(peer = %peer_id, %addr, transport, direction, kex = %kex, "overlay session up");
                    }
                    Ok(Event::ConnectionError { code, payload }) => {
                        break Err(format!(
                            "peer closed with error {code}: {}",
                            String::from_utf8_lossy(&payload)
                        ));
                    }
                    Ok(_) => {
                        if let Some(s) = overlay.sessions().get_mut(&conn_id) {
                            s.frames_in += 1;
                            s.bytes_in += n;
                        }
                    }
                }
                continue;
            }
            Ok(Decoded::NeedMore(_)) => {}
        }
        let read = tokio::select! {
            _ = overlay.shutdown.cancelled() => break Ok(()),
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    let r = Reject::new(
                        ron_oap::reject::RejectReason::Truncated,
                        "input ended inside a frame",
                    );
                    metrics::counter!(names::REJECTED_TOTAL, "reason" => r.reason.label())
                        .increment(1);
                }
                break Ok(());
            }
            Ok(_) => {}
            Err(e) => break Err(e.to_string()),
        }
    };
    overlay.sessions().remove(&conn_id);
    if up.is_none() && direction == "out" {
        handshake("refused", &kex);
    }
    drop(up);
    let _ = wr.shutdown().await;
    match result {
        Ok(()) => tracing::info!(peer = %peer_id, %addr, "overlay session closed"),
        Err(e) => tracing::info!(peer = %peer_id, %addr, error = %e, "overlay session ended"),
    }
}
