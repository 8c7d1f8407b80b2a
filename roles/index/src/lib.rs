//! The index role.

pub mod config;

pub use config::IndexConfig;

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<IndexConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
