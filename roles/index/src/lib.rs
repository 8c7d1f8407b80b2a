//! The index role: names → content addresses with versions (`store.rs`)
//! and their HTTP API (`http.rs`).
//!
//! The index opens under `data_dir/index.redb` (RAM under amnesia) and the
//! role is ready once it is open and writable.

pub mod config;
pub mod http;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

pub use config::IndexConfig;
pub use store::{IndexError, NameIndex, NameRecord, NameUpdate};

use std::collections::HashSet;

use ron_kernel::handles::{self, HandleResult, Names};
use ron_kernel::metrics::names;
use ron_kernel::{ContentAddress, HandleError, Live, RoleContext, RoleResult};

/// Opens the index as the node settings say (file or RAM).
pub fn open_index(ctx: &RoleContext) -> Result<NameIndex, IndexError> {
    let s = ctx.settings.load();
    if s.amnesia {
        NameIndex::in_memory()
    } else {
        NameIndex::open(&s.data_dir.join(store::SCHEMA.file))
    }
}

/// The role's series at zero.
pub fn init_series() {
    metrics::gauge!(names::INDEX_NAMES).set(0.0);
}

pub async fn run(ctx: RoleContext, _cfg: Live<IndexConfig>) -> RoleResult {
    let opener = ctx.clone();
    let index = tokio::task::spawn_blocking(move || open_index(&opener)).await??;
    let api = Arc::new(http::IndexApi::new(index.clone(), ctx.settings.clone()));
    ctx.handles.publish::<dyn Names>(api.clone());
    let handler: Arc<dyn ron_kernel::http::Handler> =
        Arc::new(move |req, peer| http::handle(api.clone(), req, peer));
    let server = ctx.serve_own_listener("index", handler)?;
    ctx.ready_while(
        Duration::from_secs(10),
        "index store is not writable",
        move || index.writable(),
    )
    .await;
    if let Some(server) = server {
        server.await?;
    }
    Ok(())
}

ron_kernel::serve_http_with!(http::IndexApi, http::handle);

/// What the index promises other roles: its HTTP API, name lookups and
/// the set of named addresses.
impl Names for http::IndexApi {
    fn lookup(&self, name: &str) -> HandleResult<Option<handles::NameRecord>> {
        match self.index.get(name) {
            Ok(r) => Ok(Some(handles::NameRecord {
                address: r.address,
                version: r.version,
                content_type: r.content_type,
                feed: r.feed,
            })),
            Err(IndexError::NotFound | IndexError::BadName(_)) => Ok(None),
            Err(e) => Err(HandleError::failed(e)),
        }
    }

    fn named_addresses(&self) -> HandleResult<HashSet<ContentAddress>> {
        self.index.named_addresses().map_err(HandleError::failed)
    }
}
