//! `[storage]`: this role's section of the node config.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Listener for the role's own HTTP API (env `STORAGE_ADDR`). Bound only when
    /// omnigate is not in this process or `serve_remote = true`.
    pub addr: SocketAddr,
    /// Serve the HTTP API on `addr` even when omnigate runs in-process.
    pub serve_remote: bool,
    /// RAM for verified chunks and object records of hot objects (bytes; 0
    /// turns the cache off). Hits skip redb and re-hashing.
    pub read_cache_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9447)),
            serve_remote: false,
            read_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StorageConfig {
    /// Edge defaults for micronode: a small read cache.
    pub fn micro() -> Self {
        Self {
            read_cache_bytes: 8 * 1024 * 1024,
            ..Self::default()
        }
    }
}

impl StorageConfig {
    pub fn validate(&self, _errs: &mut Vec<String>) {}
}
