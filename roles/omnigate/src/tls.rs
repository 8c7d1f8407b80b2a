//! TLS on the public listener: TLS 1.3 only, the aws-lc-rs provider (which
//! also offers the X25519MLKEM768 hybrid key exchange to clients that ask),
//! ALPN `h2` and `http/1.1`, certificate chain and key from PEM files.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("omnigate.tls.cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("omnigate.tls.key {path}: {why}")]
    Key { path: String, why: String },
    #[error("omnigate.tls: {0}")]
    Config(#[from] rustls::Error),
}

pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: cfg.cert.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Key {
        path: cfg.key.display().to_string(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(sc)))
}
