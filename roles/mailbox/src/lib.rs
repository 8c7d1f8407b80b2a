//! The mailbox role: topics with at-least-once delivery (`store.rs`) and
//! their HTTP API (`http.rs`).
//!
//! The mailbox opens under `data_dir/mailbox.redb` (RAM under amnesia) and
//! the role is ready once it is open and writable.

pub mod config;
pub mod http;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

pub use config::MailboxConfig;
pub use store::{Mailbox, MailboxError, Message};

use ron_kernel::handles::{Feeds, HandleResult};
use ron_kernel::metrics::names;
use ron_kernel::{HandleError, Live, RoleContext, RoleResult};

/// Opens the mailbox as the node settings say (file or RAM), on the system
/// clock.
pub fn open_mailbox(ctx: &RoleContext) -> Result<Mailbox, MailboxError> {
    let s = ctx.settings.load();
    let clock = Arc::new(store::SystemClock);
    if s.amnesia {
        Mailbox::in_memory(clock)
    } else {
        Mailbox::open(&s.data_dir.join(store::SCHEMA.file), clock)
    }
}

/// The role's series at zero.
pub fn init_series() {
    metrics::counter!(names::MAILBOX_REDELIVERIES_TOTAL).increment(0);
    metrics::counter!(names::MAILBOX_DEAD_LETTERS_TOTAL).increment(0);
}

pub async fn run(ctx: RoleContext, _cfg: Live<MailboxConfig>) -> RoleResult {
    let opener = ctx.clone();
    let mailbox = tokio::task::spawn_blocking(move || open_mailbox(&opener)).await??;
    http::record_depths(&mailbox).await;
    let api = Arc::new(http::MailboxApi::new(mailbox.clone(), ctx.settings.clone()));
    ctx.handles.publish::<dyn Feeds>(api.clone());
    let handler: Arc<dyn ron_kernel::http::Handler> =
        Arc::new(move |req, peer| http::handle(api.clone(), req, peer));
    let server = ctx.serve_own_listener("mailbox", handler)?;
    ctx.ready_while(
        Duration::from_secs(10),
        "mailbox store is not writable",
        move || {
            let _ = mailbox.prune_idempotency();
            mailbox.writable()
        },
    )
    .await;
    if let Some(server) = server {
        server.await?;
    }
    Ok(())
}

ron_kernel::serve_http_with!(http::MailboxApi, http::handle);

/// What the mailbox promises other roles: its HTTP API and a topic's
/// newest messages.
impl Feeds for http::MailboxApi {
    fn latest(&self, topic: &str, n: usize) -> HandleResult<Vec<serde_json::Value>> {
        let msgs = self.mailbox.latest(topic, n).map_err(HandleError::failed)?;
        Ok(msgs
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect())
    }
}
