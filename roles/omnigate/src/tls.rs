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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn files() -> (TlsConfig, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "omnigate-tls-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (TlsConfig { cert, key }, ck.cert.der().clone())
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn client(
        root: CertificateDer<'static>,
        v: &'static rustls::SupportedProtocolVersion,
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cc = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[v])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cc.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(cc))
    }

    #[tokio::test]
    async fn tls13_with_alpn_is_accepted_and_tls12_is_refused() {
        let (cfg, root) = files();
        let acceptor = acceptor(&cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"hi").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = client(root.clone(), &rustls::version::TLS13)
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let refused = client(root, &rustls::version::TLS12)
            .connect(name, tcp)
            .await;
        assert!(refused.is_err(), "a TLS 1.2 client was accepted");
    }

    #[test]
    fn a_missing_key_file_is_a_clear_error() {
        let (mut cfg, _) = files();
        cfg.key = cfg.key.with_file_name("absent.pem");
        let e = acceptor(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("omnigate.tls.key") && e.contains("absent.pem"),
            "{e}"
        );
    }
}
