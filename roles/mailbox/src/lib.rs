//! The mailbox role.

pub mod config;
pub mod store;

pub use config::MailboxConfig;
pub use store::{Mailbox, MailboxError, Message};

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<MailboxConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
