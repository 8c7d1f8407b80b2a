//! The mailbox role.

pub mod config;

pub use config::MailboxConfig;

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<MailboxConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
