//! Registry: the append-only, quorum-signed descriptor log.

pub mod config;
pub mod log;
pub mod model;

pub use config::{RegistryConfig, Signer};

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<RegistryConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
