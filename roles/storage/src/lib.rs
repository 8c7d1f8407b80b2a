//! The storage role.

pub mod config;

pub use config::StorageConfig;

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<StorageConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
