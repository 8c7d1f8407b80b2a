//! The storage role: content-addressed blobs on redb (`store.rs`) and their
//! HTTP API (`http.rs`).
//!
//! The store's gauges (`storage_bytes_stored`, `storage_chunks`,
//! `storage_dedup_ratio`) are set by the store after each commit that
//! changes them, from a totals row kept in that same transaction.
//!
//! The store opens under `data_dir/storage.redb` (in RAM under amnesia) and
//! the role is ready once it is open and writable. The HTTP API is served
//! on the role's own listener when that is bound (omnigate not in this
//! process, or `serve_remote = true`).

pub mod config;
pub mod http;
pub mod store;

pub use config::StorageConfig;
pub use store::{ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, StoreError, StoreStats};

use std::sync::Arc;

use ron_kernel::handles::{HandleResult, Names, ObjectSink, Objects, Pieces};
use ron_kernel::metrics::names;
use ron_kernel::{ContentAddress, HandleError, Live, RoleContext, RoleName, RoleResult};

/// Opens the role's store as the node settings say (file or RAM), with
/// its read cache and byte budget.
pub fn open_store(ctx: &RoleContext, cfg: &StorageConfig) -> Result<ObjectStore, StoreError> {
    let s = ctx.settings.load();
    let store = if s.amnesia {
        ObjectStore::in_memory(Some(ctx.bus.clone()))
    } else {
        ObjectStore::open(&s.data_dir.join(store::SCHEMA.file), Some(ctx.bus.clone()))
    }?;
    // Only an amnesia store evicts: on disk it holds acknowledged writes.
    let keep = s.amnesia.then(|| named_objects(ctx));
    metrics::gauge!(names::STORAGE_MAX_BYTES).set(cfg.max_bytes as f64);
    Ok(store
        .with_read_cache(cfg.read_cache_bytes)
        .with_budget(cfg.max_bytes, keep))
}

/// The objects eviction must keep: those the index in this process names.
/// While that index is down (restarting) nothing can be told, so nothing
/// is evicted; with no index in the process no object is named.
fn named_objects(ctx: &RoleContext) -> store::KeepFn {
    let handles = ctx.handles.clone();
    let index_here = ctx.node_roles.contains(&RoleName::Index);
    Box::new(move || match handles.get::<dyn Names>() {
        Ok(names) => match names.named_addresses() {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the index's names; evicting nothing");
                None
            }
        },
        Err(_) if index_here => None,
        Err(_) => Some(Default::default()),
    })
}

ron_kernel::serve_http_with!(http::StorageApi, http::handle);

/// What storage promises other roles: its HTTP API, sizes, verified
/// ranged reads and writers. Nothing else of the store is reachable
/// through it.
impl Objects for http::StorageApi {
    fn size(&self, address: &ContentAddress) -> HandleResult<Option<u64>> {
        self.store
            .head(address)
            .map(|m| m.map(|m| m.size))
            .map_err(HandleError::failed)
    }

    fn read(
        &self,
        address: &ContentAddress,
        range: Option<std::ops::Range<u64>>,
    ) -> HandleResult<Option<(u64, Pieces)>> {
        match self.store.read(address, range) {
            Ok((meta, reader)) => Ok(Some((
                meta.size,
                Box::new(reader.map(|p| p.map_err(HandleError::failed))),
            ))),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(HandleError::failed(e)),
        }
    }

    fn writer(&self) -> Box<dyn ObjectSink> {
        Box::new(self.store.writer())
    }
}

impl ObjectSink for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> HandleResult<()> {
        ObjectWriter::write(self, data).map_err(HandleError::failed)
    }

    fn address(&self) -> ContentAddress {
        ObjectWriter::address(self)
    }

    fn finish(self: Box<Self>) -> HandleResult<ContentAddress> {
        ObjectWriter::finish(*self)
            .map(|(meta, _)| meta.address)
            .map_err(HandleError::failed)
    }
}

/// The role's series at zero, before its first write.
pub fn init_series() {
    metrics::counter!(names::STORAGE_INTEGRITY_ERRORS_TOTAL).increment(0);
    metrics::gauge!(names::STORAGE_BYTES_STORED).set(0.0);
    metrics::gauge!(names::STORAGE_CHUNKS).set(0.0);
    metrics::gauge!(names::STORAGE_DEDUP_RATIO).set(1.0);
    metrics::gauge!(names::STORAGE_MAX_BYTES).set(0.0);
    metrics::counter!(names::STORAGE_EVICTIONS_TOTAL).increment(0);
}

pub async fn run(ctx: RoleContext, cfg: Live<StorageConfig>) -> RoleResult {
    let opener = ctx.clone();
    let cfg = (*cfg.load()).clone();
    let store = tokio::task::spawn_blocking(move || {
        let store = open_store(&opener, &cfg)?;
        if !store.writable() {
            return Err(StoreError::Db(
                "store opened but a write transaction failed".into(),
            ));
        }
        Ok::<_, StoreError>(store)
    })
    .await??;
    tracing::info!(role = ctx.name.as_str(), "object store open");

    let api = Arc::new(http::StorageApi::new(
        store.clone(),
        ctx.settings.clone(),
        ctx.bus.clone(),
    ));
    ctx.handles.publish::<dyn Objects>(api.clone());
    let handler: Arc<dyn ron_kernel::http::Handler> =
        Arc::new(move |req, peer| http::handle(api.clone(), req, peer));
    let server = ctx.serve_own_listener("storage", handler)?;
    ctx.ready_while(
        http::PROBE_INTERVAL,
        "object store is not writable",
        move || store.writable(),
    )
    .await;
    if let Some(server) = server {
        server.await?;
    }
    Ok(())
}
