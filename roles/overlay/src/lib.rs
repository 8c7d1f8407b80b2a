//! Overlay: OAP/1 over TLS 1.3/TCP and QUIC between nodes.

pub mod config;
pub mod identity;
pub mod tls;

pub use config::{OverlayConfig, PqMode};

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, _cfg: Live<OverlayConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
