//! `[index]`: this role's section of the node config.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Listener for the role's own HTTP API (env `INDEX_ADDR`). Bound only when
    /// omnigate is not in this process or `serve_remote = true`.
    pub addr: SocketAddr,
    /// Serve the HTTP API on `addr` even when omnigate runs in-process.
    pub serve_remote: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9448)),
            serve_remote: false,
        }
    }
}

impl IndexConfig {
    pub fn validate(&self, _errs: &mut Vec<String>) {}
}
