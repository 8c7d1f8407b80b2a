//! Node identity: an ed25519 key, created on first start in the data dir
//! (`node.key`, 64 hex characters, mode 0600) or kept in RAM only under
//! amnesia; the node id is the public key in lowercase hex. The TLS
//! certificate both transports present is self-signed from this key
//! (rcgen); peers trust it by pinning the public key, not by a CA.

use std::path::Path;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a node key (64 lowercase hex characters)")]
    BadKey(String),
    #[error("creating the node certificate: {0}")]
    Cert(String),
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// What a node is to its peers.
pub struct Identity {
    key: SigningKey,
    cert: CertificateDer<'static>,
    /// The private key as PKCS#8, for TLS; wiped when the identity drops
    /// (the signing key wipes itself).
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_key_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Identity {
    /// The key at `data_dir/node.key`, created if missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join("node.key");
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                let seed = parse_key_hex(&text)
                    .ok_or_else(|| IdentityError::BadKey(path.display().to_string()))?;
                Self::from_seed(seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let seed = Self::random_seed()?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(&path).map_err(io)?;
                std::io::Write::write_all(&mut f, format!("{}\n", hex(&seed)).as_bytes())
                    .map_err(io)?;
                f.sync_all().map_err(io)?;
                Self::from_seed(seed)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key that lives in RAM only (amnesia).
    pub fn ephemeral() -> Result<Self, IdentityError> {
        Self::from_seed(Self::random_seed()?)
    }

    fn random_seed() -> Result<[u8; 32], IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Result<Self, IdentityError> {
        let mut seed = zeroize::Zeroizing::new(seed);
        let key = SigningKey::from_bytes(&seed);
        zeroize::Zeroize::zeroize(&mut *seed);
        let pkcs8 = zeroize::Zeroizing::new(
            key.to_pkcs8_der()
                .map_err(|e| IdentityError::Cert(e.to_string()))?
                .as_bytes()
                .to_vec(),
        );
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
        let node_id = hex(key.verifying_key().as_bytes());
        let params = rcgen::CertificateParams::new(vec![format!("{}.ron-node", &node_id[..16])])
            .map_err(|e| IdentityError::Cert(e.to_string()))?;
        let cert = params
            .self_signed(&kp)
            .map_err(|e| IdentityError::Cert(e.to_string()))?;
        Ok(Identity {
            key,
            cert: cert.der().clone(),
            pkcs8,
        })
    }

    /// The public key, as peers pin it.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn node_id(&self) -> String {
        hex(&self.public_key())
    }

    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }
}

/// The ed25519 public key a certificate carries, if it carries one.
pub fn cert_public_key(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.public_key();
    // id-Ed25519 (RFC 8410)
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return None;
    }
    spki.subject_public_key.data.as_ref().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_and_the_cert_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(cert_public_key(&a.cert()), Some(a.public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("node.key"), "nonsense").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::BadKey(_))
        ));
    }
}
