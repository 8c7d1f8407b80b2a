//! OAP/1 over TLS 1.3/TCP: the listener and the dialer (`session.rs` runs
//! each session; what sessions share is in `state.rs`).
//!
//! A connection is a session once (1) the TLS handshake finished within
//! `handshake_timeout` with a pinned peer key, and (2) HELLO went both ways
//! and the peer's `node_id` is the key it authenticated with. A reject by
//! the OAP/1 session (a bad HELLO, a version we do not speak, a frame
//! before HELLO…) is answered with an ERROR frame naming the reason before
//! the connection closes — never a silent close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ron_kernel::metrics::names;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::OverlayError;
use crate::identity::{cert_public_key, hex};
use crate::state::{handshake, Direction, Overlay, Transport};

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
            crate::session::run_session(ov, tls, peer, key, kex, Direction::In, Transport::Tcp)
                .await;
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
    Fut: std::future::Future<Output = Result<(), OverlayError>>,
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

async fn connect(
    overlay: &Arc<Overlay>,
    addr: SocketAddr,
    key: [u8; 32],
) -> Result<(), OverlayError> {
    let tcp = tokio::time::timeout(overlay.handshake_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| OverlayError::Timeout { what: "connect" })??;
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(
        overlay.handshake_timeout,
        overlay.connector.connect(crate::tls::peer_name(), tcp),
    )
    .await
    {
        Err(_) => {
            handshake("timeout", "none");
            return Err(OverlayError::Timeout {
                what: "TLS handshake",
            });
        }
        Ok(Err(e)) => {
            handshake("refused", "none");
            return Err(OverlayError::Handshake(format!(
                "TLS handshake refused: {e}"
            )));
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
        return Err(OverlayError::WrongKey);
    }
    // In TLS 1.3 the server judges our certificate after our side is done:
    // the outcome is known when its HELLO (or its alert) arrives, and
    // run_session counts it then.
    crate::session::run_session(
        overlay.clone(),
        tls,
        addr,
        key,
        kex,
        Direction::Out,
        Transport::Tcp,
    )
    .await;
    Ok(())
}
