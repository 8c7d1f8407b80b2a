//! The common body of a role whose API has not been built yet: it serves its
//! pre-bound listeners (so ports, readiness and shutdown behave exactly as
//! they will), answers every request with a problem+json 501 that says so,
//! and stops cleanly on shutdown.
//!
//! Each role crate replaces its use of this module when its own issue lands.

use std::sync::Arc;

use http::StatusCode;

use crate::context::{RoleContext, RoleResult};
use crate::http::{serve, Handler, Routed};
use crate::problem::Problem;

pub async fn serve_not_implemented(ctx: RoleContext) -> RoleResult {
    let role = ctx.name;
    let handler: Arc<dyn Handler> = Arc::new(move |_req, _peer| async move {
        Routed::new(
            "/{*}",
            Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                format!("the {role} role is running but its API is not built in this version"),
            )
            .into_response(),
        )
    });
    let mut servers = tokio::task::JoinSet::new();
    let names: Vec<String> = ctx.listeners.names().map(str::to_owned).collect();
    for name in names {
        let listener = ctx.listeners.tcp(&name)?;
        servers.spawn(serve(
            listener,
            handler.clone(),
            ctx.shutdown.clone(),
            ctx.serve_options(role),
        ));
    }
    ctx.ready.set_ready();
    ctx.shutdown.cancelled().await;
    while servers.join_next().await.is_some() {}
    Ok(())
}
