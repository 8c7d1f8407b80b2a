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
mod pack;
pub mod remote;
pub mod store;

pub use config::{Backend, S3Config, SignPayload, StorageConfig};
pub use store::{ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, StoreError, StoreStats};

use std::sync::Arc;

use ron_kernel::handles::{HandleResult, Names, ObjectSink, Objects, OpenObject, Pieces};
use ron_kernel::metrics::names;
use ron_kernel::{outboard, ContentAddress, HandleError, Live, RoleContext, RoleName, RoleResult};

/// Opens the role's store as the node settings say (file or RAM), with
/// its read cache and byte budget.
pub fn open_store(ctx: &RoleContext, cfg: &StorageConfig) -> Result<ObjectStore, StoreError> {
    let s = ctx.settings.load();
    if cfg.backend == Backend::S3 {
        // Called on the blocking pool: the bucket's calls wait on this
        // runtime. The byte budget does not apply (the bucket holds the
        // bytes).
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| remote::RemoteError::Config(format!("no runtime: {e}")))?;
        let bucket = remote::Remote::s3(&cfg.s3, runtime)?;
        let path = (!s.amnesia).then(|| s.data_dir.join(store::SCHEMA.file));
        metrics::gauge!(names::STORAGE_MAX_BYTES).set(0.0);
        let store = ObjectStore::with_remote(path.as_deref(), bucket, Some(ctx.bus.clone()))?;
        return Ok(store.with_read_cache(cfg.read_cache_bytes));
    }
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

    fn open(&self, address: &ContentAddress) -> HandleResult<Option<Box<dyn OpenObject>>> {
        Ok(self
            .store
            .head_shared(address)
            .map_err(HandleError::failed)?
            .map(|meta| -> Box<dyn OpenObject> {
                Box::new(Opened {
                    store: self.store.clone(),
                    address: *address,
                    meta,
                })
            }))
    }

    fn writer(&self) -> Box<dyn ObjectSink> {
        Box::new(self.store.writer())
    }

    fn tree(&self, address: &ContentAddress) -> HandleResult<Option<Arc<outboard::Tree>>> {
        self.store.tree(address).map_err(HandleError::failed)
    }
}

/// An object whose record was looked up once ([`Objects::open`]).
struct Opened {
    store: ObjectStore,
    address: ContentAddress,
    meta: Arc<ObjectMeta>,
}

impl OpenObject for Opened {
    fn size(&self) -> u64 {
        self.meta.size
    }

    fn read(&self, range: std::ops::Range<u64>) -> HandleResult<Pieces> {
        let (_, reader) = self
            .store
            .read_meta(&self.address, self.meta.clone(), Some(range))
            .map_err(HandleError::failed)?;
        Ok(Box::new(reader.map(|p| p.map_err(HandleError::failed))))
    }
}

impl ObjectSink for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> HandleResult<()> {
        ObjectWriter::write(self, data).map_err(HandleError::failed)
    }

    fn write_verified(&mut self, data: bytes::Bytes, hash: [u8; 32]) -> HandleResult<()> {
        ObjectWriter::write_verified(self, data, hash).map_err(HandleError::failed)
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

/// Sweeps the bucket every `every` until shutdown (`storage.s3.gc_interval`).
async fn sweep_every(
    store: ObjectStore,
    every: std::time::Duration,
    grace: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.sweep(grace)).await {
            Ok(Ok(n)) => tracing::info!(removed = n, "storage: swept the bucket"),
            Ok(Err(e)) => tracing::warn!(error = %e, "storage: sweeping the bucket failed"),
            Err(e) => tracing::warn!(error = %e, "storage: the sweep task failed"),
        }
    }
}

/// Why the role is not ready, or `None`: its redb must take a write, and
/// a bucket must answer (the reason names it, never a credential).
fn unready_reason(store: &ObjectStore) -> Option<String> {
    if !store.writable() {
        return Some("object store is not writable".into());
    }
    let remote = store.remote()?;
    remote
        .reachable()
        .err()
        .map(|e| format!("S3 {} is not usable: {e}", remote.label))
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
    let section = cfg.clone();
    let store = tokio::task::spawn_blocking(move || {
        let store = open_store(&opener, &section)?;
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
    if cfg.backend == Backend::S3 && !cfg.s3.gc_interval.is_zero() {
        tokio::spawn(sweep_every(
            store.clone(),
            cfg.s3.gc_interval,
            cfg.s3.gc_grace,
            ctx.shutdown.clone(),
        ));
    }
    ctx.ready_unless(http::PROBE_INTERVAL, move || unready_reason(&store))
        .await;
    if let Some(server) = server {
        server.await?;
    }
    Ok(())
}
