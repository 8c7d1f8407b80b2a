//! `[storage]`: this role's section of the node config.

use std::net::SocketAddr;

use ron_kernel::section::RoleSection;
use ron_kernel::RoleName;
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
    /// Budget for stored chunk bytes (0: none). Under amnesia the store is
    /// a cache: when full it evicts the least recently used objects no
    /// index name points to. On disk nothing is evicted: a write that does
    /// not fit gets 507 `storage_full`.
    pub max_bytes: u64,
}

// The role reads its section once, at start.
ron_kernel::restart_keys!(StorageConfig: all);

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9447)),
            serve_remote: false,
            read_cache_bytes: 64 * 1024 * 1024,
            max_bytes: 0,
        }
    }
}

impl RoleSection for StorageConfig {
    const ROLE: RoleName = RoleName::Storage;
    const SCHEMA: Option<&'static ron_kernel::schema::Schema> = Some(&crate::store::SCHEMA);

    fn listen_addr(&self, fronted: bool) -> Option<SocketAddr> {
        ron_kernel::section::own_api(self.addr, self.serve_remote, fronted)
    }

    /// Edge defaults for micronode, sized for a 128 MiB box: a small read
    /// cache (under amnesia it shares the stored bytes) and 64 MiB of
    /// objects.
    fn micro() -> Self {
        Self {
            read_cache_bytes: 8 * 1024 * 1024,
            max_bytes: 64 * 1024 * 1024,
            ..Self::default()
        }
    }

    fn validate(&self, errs: &mut Vec<String>) {
        if self.max_bytes != 0 && self.max_bytes < crate::store::CHUNK_BYTES as u64 {
            errs.push(format!(
                "storage.max_bytes: {} is smaller than one chunk ({} bytes); use 0 for no budget",
                self.max_bytes,
                crate::store::CHUNK_BYTES
            ));
        }
    }
}
