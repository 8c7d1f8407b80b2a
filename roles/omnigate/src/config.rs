//! `[omnigate]`: the public HTTP gateway's section of the node config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ron_kernel::section::RoleSection;
use ron_kernel::RoleName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OmnigateConfig {
    /// Public listener (env `SERVICE_ADDR`). Needs a restart to change.
    pub addr: SocketAddr,
    /// Global in-flight request cap (env `OMNIGATE_INFLIGHT_MAX`). Hot.
    pub inflight_max: u32,
    /// Concurrent calls into each downstream (env
    /// `OMNIGATE_{INDEX,STORAGE,MAILBOX}_SEMAPHORE`). Hot.
    pub index_semaphore: u32,
    pub storage_semaphore: u32,
    pub mailbox_semaphore: u32,
    /// Largest data frame a response body is handed to the connection in,
    /// 32–128 KiB (env `OMNIGATE_STREAM_CHUNK_BYTES`); a larger piece from a
    /// downstream is split, never copied. Hot.
    pub stream_chunk_bytes: u32,
    /// Hedge slow object reads (`--hedge-read`). Hot.
    pub hedge_read: bool,
    /// On a local miss, fetch objects from peers through the overlay. Hot.
    pub fetch_from_peers: bool,
    /// How long a request may wait for a downstream permit before it is
    /// refused with 503 `downstream_busy`. Hot.
    #[serde(with = "humantime_serde")]
    pub permit_budget: Duration,
    /// Time budget of each optional part of a hydrated view (storage HEAD,
    /// mailbox feed); a part over budget becomes a warning. Hot.
    #[serde(with = "humantime_serde")]
    pub hydration_budget: Duration,
    /// How many of the newest feed messages a view carries. Hot.
    pub view_feed_len: u32,
    /// Token-bucket quotas (0 = off). Hot.
    pub quota: QuotaConfig,
    /// TLS on the public listener (TLS 1.3 only); plain HTTP when absent.
    /// Needs a restart to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Where each downstream lives when it is not in this process.
    pub downstream: Downstreams,
}

ron_kernel::restart_keys!(OmnigateConfig {
    addr,
    tls,
    downstream
});

/// Requests per second a single client IP, and the whole gateway, may
/// make; `burst` is the bucket size. A rate of 0 turns that bucket off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub per_client_rps: u32,
    pub per_client_burst: u32,
    pub global_rps: u32,
    pub global_burst: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            per_client_rps: 0,
            per_client_burst: 200,
            global_rps: 0,
            global_burst: 2000,
        }
    }
}

/// PEM files of the public listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A downstream is either in-process (`None`, the default when its role is
/// compiled in and running) or a base URL such as `http://10.0.0.5:9447`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downstreams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Connecting to a remote downstream gives up after this.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A remote downstream must answer (response head) within this.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for Downstreams {
    fn default() -> Self {
        Self {
            storage: None,
            index: None,
            mailbox: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for OmnigateConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9444)),
            inflight_max: 512,
            index_semaphore: 128,
            storage_semaphore: 128,
            mailbox_semaphore: 64,
            stream_chunk_bytes: 64 * 1024,
            hedge_read: false,
            fetch_from_peers: false,
            permit_budget: Duration::from_millis(500),
            hydration_budget: Duration::from_millis(250),
            view_feed_len: 10,
            quota: QuotaConfig::default(),
            tls: None,
            downstream: Downstreams::default(),
        }
    }
}

impl RoleSection for OmnigateConfig {
    const ROLE: RoleName = RoleName::Omnigate;

    fn listen_addr(&self, _fronted: bool) -> Option<SocketAddr> {
        Some(self.addr)
    }

    /// Edge defaults for micronode: small limits.
    fn micro() -> Self {
        Self {
            inflight_max: 128,
            index_semaphore: 32,
            storage_semaphore: 32,
            mailbox_semaphore: 16,
            ..Self::default()
        }
    }

    fn validate(&self, errs: &mut Vec<String>) {
        if self.inflight_max == 0 {
            errs.push("omnigate.inflight_max must be at least 1".into());
        }
        for (k, v) in [
            ("index_semaphore", self.index_semaphore),
            ("storage_semaphore", self.storage_semaphore),
            ("mailbox_semaphore", self.mailbox_semaphore),
        ] {
            if v == 0 {
                errs.push(format!("omnigate.{k} must be at least 1"));
            }
        }
        if !(32 * 1024..=128 * 1024).contains(&self.stream_chunk_bytes) {
            errs.push(format!(
                "omnigate.stream_chunk_bytes must be between 32768 and 131072, got {}",
                self.stream_chunk_bytes
            ));
        }
        if self.view_feed_len > 1000 {
            errs.push("omnigate.view_feed_len must be at most 1000".into());
        }
        for (k, rps, burst) in [
            (
                "per_client",
                self.quota.per_client_rps,
                self.quota.per_client_burst,
            ),
            ("global", self.quota.global_rps, self.quota.global_burst),
        ] {
            if rps > 0 && burst == 0 {
                errs.push(format!(
                    "omnigate.quota.{k}_burst must be at least 1 when omnigate.quota.{k}_rps is set"
                ));
            }
        }
        if self.downstream.connect_timeout.is_zero() || self.downstream.request_timeout.is_zero() {
            errs.push("omnigate.downstream timeouts must be above zero".into());
        }
        for (k, v) in [
            ("storage", &self.downstream.storage),
            ("index", &self.downstream.index),
            ("mailbox", &self.downstream.mailbox),
        ] {
            if let Some(url) = v {
                if let Err(e) = crate::remote::Remote::parse_base(url) {
                    errs.push(format!("omnigate.downstream.{k}: {e}"));
                }
            }
        }
    }
}
