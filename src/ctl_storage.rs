//! `ctl storage gc`: sweeps the bucket of `storage.backend = "s3"` — the
//! chunks no object manifest names and older than the grace period
//! (`storage.s3.gc_grace`, or `--grace`) are deleted, so a write another
//! replica has in flight is never broken. Runs from any host with the
//! node's config and the bucket's credentials; the node need not stop.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use ron_storage::Backend;

use crate::config::ConfigSource;
use crate::ctl::{CtlError, Out};
use crate::ctl_ops::{load_config, profile};

#[derive(FromArgs, Debug)]
/// The storage role's bucket (storage.backend = "s3").
#[argh(subcommand, name = "storage")]
pub struct StorageCmd {
    #[argh(subcommand)]
    pub action: StorageAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum StorageAction {
    Gc(GcCmd),
}

#[derive(FromArgs, Debug)]
/// Delete the bucket's packs that no object names and that are older
/// than the grace period.
#[argh(subcommand, name = "gc")]
pub struct GcCmd {
    /// config file naming the bucket (RON_CONFIG wins)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// the profile whose defaults apply (macronode or micronode)
    #[argh(option, default = "String::from(\"macronode\")")]
    pub profile: String,
    /// keep chunks younger than this (default: storage.s3.gc_grace), e.g. 2h
    #[argh(option)]
    pub grace: Option<String>,
}

/// Runs on the blocking pool (the bucket's calls wait on the runtime).
pub(crate) fn run(out: Out, c: StorageCmd) -> Result<(), CtlError> {
    let StorageAction::Gc(g) = c.action;
    let src = ConfigSource::new(profile(&g.profile)?, g.config, Default::default());
    let cfg = load_config(&src)?;
    let s = &cfg.storage;
    if s.backend != Backend::S3 {
        out.emit(
            &serde_json::json!({"backend": "redb", "removed": 0}),
            || {
                "storage.backend is redb: the node collects unreferenced chunks itself (at \
                 start and after a failed write); there is no bucket to sweep"
                    .into()
            },
        );
        return Ok(());
    }
    let grace = match &g.grace {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| CtlError::Usage(format!("--grace {text:?}: {e}")))?,
        None => s.s3.gc_grace,
    };
    let removed = sweep(s, grace)?;
    out.emit(
        &serde_json::json!({
            "backend": "s3",
            "bucket": s.s3.bucket,
            "grace": humantime::format_duration(grace).to_string(),
            "removed": removed,
        }),
        || {
            format!(
                "removed {removed} unnamed pack(s) older than {} from bucket {:?}",
                humantime::format_duration(grace),
                s.s3.bucket
            )
        },
    );
    Ok(())
}

fn sweep(s: &ron_storage::StorageConfig, grace: Duration) -> Result<usize, CtlError> {
    let failed = |e: ron_storage::StoreError| CtlError::Failed(e.to_string());
    let runtime = tokio::runtime::Handle::current();
    let remote = ron_storage::remote::Remote::s3(&s.s3, runtime)
        .map_err(|e| CtlError::Failed(e.to_string()))?;
    let store = ron_storage::ObjectStore::with_remote(None, remote, None).map_err(failed)?;
    store.sweep(grace).map_err(failed)
}
