//! `[mailbox]`: this role's section of the node config.

use std::net::SocketAddr;

use ron_kernel::section::RoleSection;
use ron_kernel::RoleName;
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

// The role reads its section once, at start.
ron_kernel::restart_keys!(MailboxConfig: all);

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9449)),
            serve_remote: false,
        }
    }
}

impl RoleSection for MailboxConfig {
    const ROLE: RoleName = RoleName::Mailbox;
    const SCHEMA: Option<&'static ron_kernel::schema::Schema> = Some(&crate::store::SCHEMA);

    fn listen_addr(&self, fronted: bool) -> Option<SocketAddr> {
        ron_kernel::section::own_api(self.addr, self.serve_remote, fronted)
    }
}
