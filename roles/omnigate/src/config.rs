//! `[omnigate]`: the public HTTP gateway's section of the node config.

use std::net::SocketAddr;

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
    /// Size of the chunks object bodies are streamed in, 32–128 KiB (env
    /// `OMNIGATE_STREAM_CHUNK_BYTES`). Hot.
    pub stream_chunk_bytes: u32,
    /// Hedge slow object reads (`--hedge-read`). Hot.
    pub hedge_read: bool,
    /// On a local miss, fetch objects from peers through the overlay. Hot.
    pub fetch_from_peers: bool,
    /// Where each downstream lives when it is not in this process.
    pub downstream: Downstreams,
}

/// A downstream is either in-process (`None`, the default when its role is
/// compiled in and running) or a base URL such as `http://10.0.0.5:9447`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downstreams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
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
            downstream: Downstreams::default(),
        }
    }
}

impl OmnigateConfig {
    /// Edge defaults for micronode: small limits.
    pub fn micro() -> Self {
        Self {
            inflight_max: 128,
            index_semaphore: 32,
            storage_semaphore: 32,
            mailbox_semaphore: 16,
            ..Self::default()
        }
    }

    pub fn validate(&self, errs: &mut Vec<String>) {
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
        for (k, v) in [
            ("storage", &self.downstream.storage),
            ("index", &self.downstream.index),
            ("mailbox", &self.downstream.mailbox),
        ] {
            if let Some(url) = v {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errs.push(format!(
                        "omnigate.downstream.{k} must be an http:// or https:// URL, got {url:?}"
                    ));
                }
            }
        }
    }
}
