//! OAP/1 over QUIC (quinn): the same pinned-key TLS 1.3 configs and ALPN
//! as TCP, 0-RTT off, on the UDP port with the TCP listener's number. A
//! session is one bidirectional stream opened by the dialer, carrying the
//! same OAP/1 frames as a TCP session (`net::run_session`). quinn uses GSO
//! where the kernel has it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ron_kernel::metrics::names;
use rustls::pki_types::CertificateDer;

use crate::error::OverlayError;
use crate::identity::cert_public_key;
use crate::net::keep_dialing;
use crate::session::run_session;
use crate::state::{handshake, Direction, Overlay, Transport};

#[derive(Debug, thiserror::Error)]
#[error("QUIC setup: {0}")]
pub struct QuicSetupError(String);

/// A QUIC endpoint that accepts (with `server`) and dials from `udp`.
pub fn endpoint(
    udp: std::net::UdpSocket,
    server: rustls::ServerConfig,
) -> Result<quinn::Endpoint, QuicSetupError> {
    let crypto = QuicServerConfig::try_from(server).map_err(|e| QuicSetupError(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(60)
            .try_into()
            .map_err(|e: quinn::VarIntBoundsExceeded| QuicSetupError(e.to_string()))?,
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    cfg.transport_config(Arc::new(transport));
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        udp,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| QuicSetupError(e.to_string()))
}

pub fn client_config(client: rustls::ClientConfig) -> Result<quinn::ClientConfig, QuicSetupError> {
    let crypto = QuicClientConfig::try_from(client).map_err(|e| QuicSetupError(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

fn peer_key(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().and_then(cert_public_key)
}

/// quinn does not expose the negotiated group; the offered preference is
/// what the label can honestly say.
fn kex_label(overlay: &Overlay) -> String {
    format!("quic:{}", overlay.kex_preference)
}

/// Accepts QUIC connections until shutdown.
pub async fn listen(overlay: Arc<Overlay>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            _ = overlay.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = overlay.conns.clone().try_acquire_owned() else {
            metrics::counter!(names::REJECTED_TOTAL, "reason" => "max_conns").increment(1);
            incoming.refuse();
            continue;
        };
        let ov = overlay.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            let kex = kex_label(&ov);
            let conn = match tokio::time::timeout(ov.handshake_timeout, incoming).await {
                Err(_) => {
                    handshake("timeout", "none");
                    return;
                }
                Ok(Err(e)) => {
                    handshake("refused", "none");
                    tracing::info!(%remote, error = %e, "overlay QUIC handshake refused");
                    return;
                }
                Ok(Ok(c)) => c,
            };
            let Some(key) = peer_key(&conn) else {
                handshake("refused", &kex);
                conn.close(1u32.into(), b"no pinned key");
                return;
            };
            handshake("ok", &kex);
            let stream = tokio::time::timeout(ov.handshake_timeout, conn.accept_bi()).await;
            let Ok(Ok((send, recv))) = stream else {
                conn.close(2u32.into(), b"no session stream");
                return;
            };
            run_session(
                ov,
                tokio::io::join(recv, send),
                remote,
                key,
                kex,
                Direction::In,
                Transport::Quic,
            )
            .await;
            conn.close(0u32.into(), b"done");
        });
    }
    endpoint.close(0u32.into(), b"shutdown");
}

/// Keeps a QUIC session to `addr` (whose key must be `key`) up until
/// `stop`.
pub async fn dial(
    overlay: Arc<Overlay>,
    stop: tokio_util::sync::CancellationToken,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    key: [u8; 32],
) {
    let ov = overlay.clone();
    keep_dialing(overlay, stop, addr, key, || {
        connect(&ov, &endpoint, client.clone(), addr, key)
    })
    .await
}

async fn connect(
    overlay: &Arc<Overlay>,
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    key: [u8; 32],
) -> Result<(), OverlayError> {
    let kex = kex_label(overlay);
    let connecting = endpoint
        .connect_with(client, addr, "ron-node")
        .map_err(|e| OverlayError::Handshake(e.to_string()))?;
    let conn = match tokio::time::timeout(overlay.handshake_timeout, connecting).await {
        Err(_) => {
            handshake("timeout", "none");
            return Err(OverlayError::Timeout {
                what: "QUIC handshake",
            });
        }
        Ok(Err(e)) => {
            handshake("refused", "none");
            return Err(OverlayError::Handshake(format!(
                "QUIC handshake refused: {e}"
            )));
        }
        Ok(Ok(c)) => c,
    };
    if peer_key(&conn) != Some(key) {
        handshake("refused", &kex);
        conn.close(1u32.into(), b"unexpected key");
        return Err(OverlayError::WrongKey);
    }
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| OverlayError::Handshake(e.to_string()))?;
    run_session(
        overlay.clone(),
        tokio::io::join(recv, send),
        addr,
        key,
        kex,
        Direction::Out,
        Transport::Quic,
    )
    .await;
    conn.close(0u32.into(), b"done");
    Ok(())
}
