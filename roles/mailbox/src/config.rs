//! `[mailbox]`: this role's section of the node config.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    /// Listener for the role's own HTTP API (env `MAILBOX_ADDR`). Bound only when
    /// omnigate is not in this process or `serve_remote = true`.
    pub addr: SocketAddr,
    /// Serve the HTTP API on `addr` even when omnigate runs in-process.
    pub serve_remote: bool,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9449)),
            serve_remote: false,
        }
    }
}

impl MailboxConfig {
    pub fn validate(&self, _errs: &mut Vec<String>) {}
}
