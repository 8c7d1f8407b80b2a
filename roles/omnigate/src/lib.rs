//! Omnigate: the node's public HTTP face (objects, names, topics, hydrated
//! views) on SERVICE_ADDR.
//!
//! Invariant: omnigate reaches storage, index and mailbox only through their
//! handles (in-process, when compiled in beside it) or their HTTP API (when
//! `downstream.<name>` is a URL); never through their stores.

pub mod config;

pub use config::OmnigateConfig;

use ron_kernel::{Live, RoleContext, RoleResult};

/// Which downstreams this build can call in-process.
pub fn in_process_downstreams() -> &'static [&'static str] {
    &[
        #[cfg(feature = "storage")]
        "storage",
        #[cfg(feature = "index")]
        "index",
        #[cfg(feature = "mailbox")]
        "mailbox",
    ]
}

pub async fn run(ctx: RoleContext, _cfg: Live<OmnigateConfig>) -> RoleResult {
    ron_kernel::pending::serve_not_implemented(ctx).await
}
