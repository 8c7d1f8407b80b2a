//! Registry: the append-only, quorum-signed descriptor log (DESIGN §8).
//!
//! `model.rs` — types, canonical hash, approval message; `log.rs` — the
//! log on redb with its single writer; `http.rs` — the API; `stream.rs` —
//! the resumable SSE stream; `follower.rs` — replaying a primary.
//!
//! The log opens under `data_dir/registry.redb` (RAM under amnesia). The
//! role is ready while the log reads and its last write did not fail in
//! storage; it writes a checkpoint file
//! (`registry.checkpoint.jsonl`, every `checkpoint_interval`) and exports
//! its age as `registry_checkpoint_age_seconds`.

pub mod config;
pub mod follower;
pub mod http;
pub mod log;
pub mod model;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use config::{RegistryConfig, Signer};
pub use log::{Options, Registry, RegistryError};

use ron_kernel::handles::{self, HandleResult};
use ron_kernel::metrics::names;
use ron_kernel::{HandleError, Live, RoleContext, RoleResult};

/// The genesis signer set a config describes.
pub fn genesis(cfg: &RegistryConfig) -> model::SignerSet {
    model::SignerSet {
        m: cfg.quorum_m,
        signers: cfg
            .signers
            .iter()
            .map(|s| model::SignerEntry {
                id: s.id.clone(),
                public_key: s.public_key.clone(),
            })
            .collect(),
    }
}

/// Where the log lives under a data dir.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(log::SCHEMA.file)
}

pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("registry.checkpoint.jsonl")
}

/// Writes a consistent checkpoint next to the log: to a temporary file,
/// synced, then renamed over the previous one.
pub fn write_checkpoint(reg: &Registry, data_dir: &Path) -> Result<u64, RegistryError> {
    let io = |e: std::io::Error| RegistryError::Db(format!("checkpoint: {e}"));
    let path = checkpoint_path(data_dir);
    let tmp = path.with_extension("jsonl.tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    let head = reg.backup(&mut out)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(head)
}

/// The role's series at zero, so `rate()` and "should be 0" work on a
/// fresh node.
pub fn init_series() {
    use ron_kernel::metrics::{zero_counters, zero_histograms};
    let _ = metrics::histogram!(names::COMMIT_LATENCY_SECONDS);
    metrics::counter!(names::COMMIT_CAS_FAIL_TOTAL).increment(0);
    zero_counters(
        names::APPROVAL_VERIFY_TOTAL,
        "result",
        &["valid", "invalid", "unknown_signer"],
    );
    metrics::counter!(names::REGISTRY_STREAM_DROPPED_TOTAL).increment(0);
    metrics::gauge!(names::REGISTRY_STREAM_CLIENTS).set(0.0);
    metrics::counter!(names::REGISTRY_FOLLOWER_APPLIED_TOTAL).increment(0);
    zero_counters(
        names::REGISTRY_FOLLOWER_REJECTED_TOTAL,
        "reason",
        &[
            "malformed",
            "chain_mismatch",
            "quorum_not_met",
            "invalid",
            "store",
            "sync",
        ],
    );
    metrics::gauge!(names::REGISTRY_CHECKPOINT_AGE_SECONDS).set(0.0);
    zero_histograms(
        names::REQUEST_LATENCY_SECONDS,
        "route",
        &[
            "/registry/head",
            "/registry/{version}",
            "/registry/proposals/{id}/commit",
        ],
    );
}

pub async fn run(ctx: RoleContext, cfg: Live<RegistryConfig>) -> RoleResult {
    let c = cfg.load();
    let settings = ctx.settings.load();
    let opts = Options {
        genesis: genesis(&c),
        proposal_ttl: c.proposal_ttl,
        upstream: c.upstream.clone(),
        bus: Some(ctx.bus.clone()),
        stream_buffer: log::STREAM_BUFFER,
    };
    let (amnesia, data_dir) = (settings.amnesia, settings.data_dir.clone());
    let dir = data_dir.clone();
    let reg = Arc::new(
        tokio::task::spawn_blocking(move || {
            if amnesia {
                Registry::in_memory(opts)
            } else {
                Registry::open(&db_path(&dir), opts)
            }
        })
        .await??,
    );
    tracing::info!(
        role = ctx.name.as_str(),
        head = reg.snapshot().head.version,
        follower = c.upstream.is_some(),
        "registry open"
    );
    ctx.handles
        .publish::<dyn ron_kernel::handles::DescriptorLog>(reg.clone());

    let api = Arc::new(http::RegistryApi {
        reg: reg.clone(),
        settings: ctx.settings.clone(),
        shutdown: ctx.shutdown.clone(),
        heartbeat: c.stream_heartbeat,
        replay_max: c.stream_replay_max,
    });
    let handler: Arc<dyn ron_kernel::http::Handler> =
        Arc::new(move |req, peer| http::handle(api.clone(), req, peer));
    let mut tasks = tokio::task::JoinSet::new();
    for name in ctx.listeners.names().map(str::to_owned).collect::<Vec<_>>() {
        let listener = ctx.listeners.http(&name)?;
        tasks.spawn(ron_kernel::http::serve(
            listener,
            handler.clone(),
            ctx.shutdown.clone(),
            ctx.serve_options("registry"),
        ));
    }
    let sync = Arc::new(follower::SyncState::default());
    if let Some(up) = c.upstream.clone() {
        tasks.spawn(follower::follow(
            reg.clone(),
            up,
            sync.clone(),
            ctx.shutdown.clone(),
        ));
    }
    tasks.spawn(housekeeping(
        reg.clone(),
        (!amnesia && !c.checkpoint_interval.is_zero()).then_some((data_dir, c.checkpoint_interval)),
        ctx.shutdown.clone(),
    ));

    let probe = reg.clone();
    let (board, live, upstream) = (ctx.ready.clone(), ctx.settings.clone(), c.upstream.clone());
    // Every second: cheap (a read transaction), and a follower turns ready
    // soon after it has caught up.
    ctx.ready_unless(Duration::from_secs(1), move || {
        let healthy = probe.healthy();
        let write = write_unready(
            healthy.is_ok(),
            probe.snapshot().signers.signers.is_empty(),
            live.load().read_only,
            upstream.is_some(),
        );
        board.set_plane("write", write.map(str::to_owned));
        if let Err(e) = healthy {
            tracing::warn!(error = %e, "registry unready");
            return Some("registry store is failing (see the log)".into());
        }
        let up = upstream.as_deref()?;
        sync.unready(probe.snapshot().head.version, up)
    })
    .await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Why the write plane (propose, approve, commit) cannot take writes, if
/// it cannot; reads are served either way.
fn write_unready(
    healthy: bool,
    no_signers: bool,
    read_only: bool,
    follower: bool,
) -> Option<&'static str> {
    if follower {
        Some("follower: writes go to the primary (registry.upstream)")
    } else if read_only {
        Some("read_only: the node refuses writes")
    } else if no_signers {
        Some("no signer set: add [[registry.signers]] to approve and commit")
    } else if !healthy {
        Some("registry store is failing (see the log)")
    } else {
        None
    }
}

/// Sweeps expired proposals and writes checkpoints until shutdown.
async fn housekeeping(
    reg: Arc<Registry>,
    checkpoints: Option<(PathBuf, Duration)>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last_checkpoint: Option<SystemTime> = checkpoints
        .as_ref()
        .and_then(|(dir, _)| std::fs::metadata(checkpoint_path(dir)).ok())
        .and_then(|m| m.modified().ok());
    let mut last_sweep = SystemTime::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now();
        if now.duration_since(last_sweep).unwrap_or_default() >= Duration::from_secs(600) {
            last_sweep = now;
            let r = reg.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || r.sweep_expired()).await {
                tracing::warn!(error = %e, "registry: sweeping expired proposals failed");
            }
        }
        let Some((dir, every)) = &checkpoints else {
            continue;
        };
        let due =
            last_checkpoint.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= *every);
        if due {
            let (r, d) = (reg.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || write_checkpoint(&r, &d)).await {
                Ok(Ok(_)) => last_checkpoint = Some(SystemTime::now()),
                Ok(Err(e)) => tracing::warn!(error = %e, "registry checkpoint failed"),
                Err(e) => tracing::warn!(error = %e, "registry checkpoint task failed"),
            }
        }
        if let Some(t) = last_checkpoint {
            metrics::gauge!(names::REGISTRY_CHECKPOINT_AGE_SECONDS).set(
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }
}

/// What the registry promises other roles: its head, artifacts as served,
/// fully checked application of artifacts from peers, and the node
/// descriptors a version carries.
impl ron_kernel::handles::DescriptorLog for Registry {
    fn head(&self) -> handles::RegistryHead {
        let snap = self.snapshot();
        handles::RegistryHead {
            version: snap.head.version,
            payload_b3: snap.head.payload_b3.clone(),
        }
    }

    fn artifact_json(&self, version: u64) -> HandleResult<Option<bytes::Bytes>> {
        match Registry::artifact_json(self, version) {
            Ok(raw) => Ok(Some(raw)),
            Err(RegistryError::NoVersion) => Ok(None),
            Err(e) => Err(HandleError::failed(e)),
        }
    }

    fn apply_json(&self, raw: &[u8]) -> HandleResult<bool> {
        let a: model::Artifact = serde_json::from_slice(raw)
            .map_err(|e| HandleError::Refused(format!("malformed artifact: {e}")))?;
        if a.version <= self.snapshot().head.version {
            return Ok(false);
        }
        match self.apply(&a) {
            Ok(_) => Ok(true),
            // Two syncs (from two peers) raced past the check above and
            // the other applied this version first: not news, as above.
            Err(RegistryError::ChainMismatch { head, .. }) if a.version <= head => Ok(false),
            Err(
                e @ (RegistryError::DiskFull(_) | RegistryError::Db(_) | RegistryError::Schema(_)),
            ) => Err(HandleError::failed(e)),
            Err(e) => Err(HandleError::Refused(format!(
                "version {} refused: {e}",
                a.version
            ))),
        }
    }

    fn nodes_at(&self, version: u64) -> HandleResult<Option<Vec<handles::NodeDescriptor>>> {
        let artifact = match self.artifact(version) {
            Ok(a) => a,
            Err(RegistryError::NoVersion) => return Ok(None),
            Err(e) => return Err(HandleError::failed(e)),
        };
        Ok(Some(
            artifact
                .payload
                .items
                .iter()
                .filter_map(|i| match i {
                    model::Item::Node(n) => Some(handles::NodeDescriptor {
                        id: n.id.clone(),
                        public_key: n.public_key.clone(),
                        addrs: n.addrs.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        ))
    }
}
