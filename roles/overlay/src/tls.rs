//! TLS for OAP/1 over TCP (and the same configs for QUIC): TLS 1.3 only,
//! ALPN `oap/1`, aws-lc-rs, both sides present their self-signed node
//! certificate, and both sides authenticate the other by pinning its
//! ed25519 key (`Pins`) — no CA, no names.
//!
//! The handshake signature is still checked by rustls with the provider's
//! algorithms; the verifiers only decide *whose* key is acceptable.
//! `PqMode::Hybrid` offers X25519MLKEM768 first (X25519 as fallback);
//! `Classical` offers X25519 and P-256 only.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::config::PqMode;
use crate::identity::{cert_public_key, Identity};

/// The peer keys this node accepts, swappable while sessions run (the
/// registry's node descriptors and the static list feed it).
#[derive(Debug, Default)]
pub struct Pins {
    keys: ArcSwap<BTreeSet<[u8; 32]>>,
}

impl Pins {
    pub fn new(keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Pins {
            keys: ArcSwap::from_pointee(keys.into_iter().collect()),
        }
    }

    pub fn set(&self, keys: impl IntoIterator<Item = [u8; 32]>) {
        self.keys.store(Arc::new(keys.into_iter().collect()));
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.keys.load().contains(key)
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<[u8; 32], Error> {
        let key = cert_public_key(cert).ok_or(Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if self.contains(&key) {
            Ok(key)
        } else {
            Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

pub fn provider(mode: PqMode) -> CryptoProvider {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = match mode {
        PqMode::Hybrid => vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
        PqMode::Classical => vec![aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1],
    };
    p
}

/// The verifier both sides use: a pinned key, and a valid TLS 1.3
/// handshake signature by it.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Arc<Pins>,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    /// TLS 1.2 is never negotiated (both configs are TLS 1.3 only).
    fn tls12_refused() -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.pins.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Self::tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.pins.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Self::tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsSetupError(String);

fn setup(e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError(e.to_string())
}

/// The acceptor's config: a client certificate with a pinned key is
/// mandatory.
pub fn server_config(
    id: &Identity,
    pins: Arc<Pins>,
    mode: PqMode,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(provider(mode));
    let verifier = Arc::new(PinnedVerifier {
        pins,
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert()], id.private_key())
        .map_err(setup)?;
    cfg.alpn_protocols = vec![ron_oap::ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The dialer's config: the server must present a pinned key.
pub fn client_config(
    id: &Identity,
    pins: Arc<Pins>,
    mode: PqMode,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(provider(mode));
    let verifier = Arc::new(PinnedVerifier {
        pins,
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert()], id.private_key())
        .map_err(setup)?;
    cfg.alpn_protocols = vec![ron_oap::ALPN.to_vec()];
    cfg.enable_early_data = false;
    Ok(cfg)
}

/// The name a dialer puts in its ClientHello (certificates are pinned by
/// key, so the name carries no trust).
pub fn peer_name() -> ServerName<'static> {
    ServerName::try_from("ron-node")
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn handshake(
        server: &Identity,
        server_pins: Vec<[u8; 32]>,
        client: &Identity,
        client_pins: Vec<[u8; 32]>,
        server_mode: PqMode,
        client_mode: PqMode,
    ) -> Result<Option<String>, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            server_config(server, Arc::new(Pins::new(server_pins)), server_mode).unwrap(),
        ));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            client_config(client, Arc::new(Pins::new(client_pins)), client_mode).unwrap(),
        ));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(&b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(peer_name(), s)
            .await
            .map_err(|e| e.to_string())?;
        let kx = tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ron_oap::ALPN));
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        srv.await.unwrap()?;
        Ok(kx)
    }

    #[tokio::test]
    async fn pinned_keys_connect_and_hybrid_negotiates_mlkem() {
        let a = Identity::from_seed([1; 32]).unwrap();
        let b = Identity::from_seed([2; 32]).unwrap();
        let kx = handshake(
            &a,
            vec![b.public_key()],
            &b,
            vec![a.public_key()],
            PqMode::Classical,
            PqMode::Classical,
        )
        .await
        .unwrap();
        assert_eq!(kx.as_deref(), Some("X25519"));
        let kx = handshake(
            &a,
            vec![b.public_key()],
            &b,
            vec![a.public_key()],
            PqMode::Hybrid,
            PqMode::Hybrid,
        )
        .await
        .unwrap();
        assert_eq!(kx.as_deref(), Some("X25519MLKEM768"));
    }

    #[tokio::test]
    async fn an_unpinned_key_is_refused_on_either_side() {
        let a = Identity::from_seed([1; 32]).unwrap();
        let b = Identity::from_seed([2; 32]).unwrap();
        let c = Identity::from_seed([3; 32]).unwrap();
        // The server does not know the client.
        assert!(handshake(
            &a,
            vec![b.public_key()],
            &c,
            vec![a.public_key()],
            PqMode::Classical,
            PqMode::Classical
        )
        .await
        .is_err());
        // The client expected someone else.
        assert!(handshake(
            &a,
            vec![b.public_key()],
            &b,
            vec![c.public_key()],
            PqMode::Classical,
            PqMode::Classical
        )
        .await
        .is_err());
    }
}
