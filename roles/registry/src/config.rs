//! `[registry]`: the quorum-signed descriptor log.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Listener (env `REGISTRY_ADDR`).
    pub addr: SocketAddr,
    /// Approvals needed to commit (M of the signer set).
    pub quorum_m: u32,
    /// The genesis signer set.
    pub signers: Vec<Signer>,
    /// When set, this node follows the registry at that URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    pub id: String,
    /// 64 lowercase hex characters (ed25519 public key).
    pub public_key: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9446)),
            quorum_m: 1,
            signers: Vec::new(),
            upstream: None,
        }
    }
}

impl RegistryConfig {
    pub fn validate(&self, errs: &mut Vec<String>) {
        if self.quorum_m == 0 {
            errs.push("registry.quorum_m must be at least 1".into());
        }
        if !self.signers.is_empty() && self.quorum_m as usize > self.signers.len() {
            errs.push(format!(
                "registry.quorum_m = {} but only {} signers are configured",
                self.quorum_m,
                self.signers.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.signers {
            if !seen.insert(&s.id) {
                errs.push(format!("registry.signers: duplicate id {:?}", s.id));
            }
            let hex_ok = s.public_key.len() == 64
                && s.public_key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                errs.push(format!(
                    "registry.signers[{}].public_key must be 64 lowercase hex characters",
                    s.id
                ));
            }
        }
        if let Some(u) = &self.upstream {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                errs.push(format!(
                    "registry.upstream must be an http(s) URL, got {u:?}"
                ));
            }
        }
    }
}
