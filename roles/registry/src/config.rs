//! `[registry]`: the quorum-signed descriptor log.

use std::net::SocketAddr;
use std::time::Duration;

use ron_kernel::section::RoleSection;
use ron_kernel::RoleName;
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
    /// How long a proposal collects approvals before it expires.
    #[serde(with = "humantime_serde")]
    pub proposal_ttl: Duration,
    /// Interval of `: heartbeat` comments on idle stream connections.
    #[serde(with = "humantime_serde")]
    pub stream_heartbeat: Duration,
    /// A stream client further behind than this many versions gets a
    /// `compacted` event instead of a replay.
    pub stream_replay_max: u64,
    /// How often a consistent checkpoint file is written to the data dir
    /// (`0s` = never; never under amnesia).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

// The role reads its section once, at start.
ron_kernel::restart_keys!(RegistryConfig: all);

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
            proposal_ttl: Duration::from_secs(72 * 3600),
            stream_heartbeat: Duration::from_secs(15),
            stream_replay_max: 100_000,
            checkpoint_interval: Duration::from_secs(300),
        }
    }
}

impl RoleSection for RegistryConfig {
    const ROLE: RoleName = RoleName::Registry;
    const SCHEMA: Option<&'static ron_kernel::schema::Schema> = Some(&crate::log::SCHEMA);

    fn listen_addr(&self, _fronted: bool) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn validate(&self, errs: &mut Vec<String>) {
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
            if !u.starts_with("http://") || u.parse::<http::Uri>().is_err() {
                errs.push(format!(
                    "registry.upstream must be an http:// URL, got {u:?}"
                ));
            }
        }
        if self.proposal_ttl.is_zero() {
            errs.push("registry.proposal_ttl must be above zero".into());
        }
        if self.stream_heartbeat.is_zero() {
            errs.push("registry.stream_heartbeat must be above zero".into());
        }
    }
}
