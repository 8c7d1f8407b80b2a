//! Chunk bodies and object manifests on an S3-compatible object store
//! (`storage.backend = "s3"`), through the `object_store` crate.
//!
//! Layout, under `storage.s3.prefix` (see `pack.rs`): `packs/<hex>` holds
//! up to 16 consecutive chunks of one write, keyed by a hash of their
//! hashes (two writers of the same chunks write the same key and bytes);
//! `objects/<hex>` holds an object's manifest — its record (size, chunk
//! hashes, a checksum binding them to the address), the packs holding its
//! first chunks and the bytes of its last ones inline — written only after
//! every pack it names. An object exists once its manifest does, so
//! replicas sharing a bucket need no coordination: everything is
//! immutable and content-addressed, and a writer killed mid-upload leaves
//! packs but no manifest (collected by `sweep` after a grace period).
//!
//! Every call runs on the blocking pool (the store's callers put it there)
//! and waits on the node's runtime; each is bounded by
//! `storage.s3.request_timeout` and timed in
//! `downstream_latency_seconds{service="s3"}`; transport failures count in
//! `downstream_connect_errors_total{service="s3"}`. Nothing read back is
//! trusted: the store verifies every chunk against its hash and every
//! manifest against its checksums before serving a byte.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore as Bucket, ObjectStoreExt as _};
use ron_kernel::chaos::{Target, CHAOS};
use ron_kernel::metrics::names;

use crate::config::S3Config;

/// The `service` label of the S3 backend's downstream metrics.
pub const SERVICE: &str = "s3";

/// Requests in flight at once for one read or check.
const PARALLEL: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("S3 {1} did not answer within {0:?}")]
    Timeout(Duration, &'static str),
    #[error("S3 {what}: {detail}")]
    Failed { what: &'static str, detail: String },
    #[error("S3 backend settings: {0}")]
    Config(String),
}

/// The bucket a store keeps its bodies and manifests in.
pub struct Remote {
    bucket: Arc<dyn Bucket>,
    prefix: String,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// What the readiness reason and errors name: the endpoint and bucket.
    pub label: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("at", &self.label).finish()
    }
}

impl Remote {
    /// The S3 bucket `cfg` names, with credentials from `cfg` (secrets)
    /// or the standard `AWS_*` environment.
    pub fn s3(cfg: &S3Config, runtime: tokio::runtime::Handle) -> Result<Self, RemoteError> {
        use object_store::aws::AmazonS3Builder;
        if cfg.bucket.is_empty() {
            return Err(RemoteError::Config("storage.s3.bucket is empty".into()));
        }
        // Only the credential variables are read from the environment:
        // `from_env` would also take every other `AWS_*` setting of the
        // host (a CA bundle, an endpoint) over this section.
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut b = AmazonS3Builder::new();
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = env("AWS_SESSION_TOKEN") {
                b = b.with_token(token);
            }
        }
        // The client options first: they carry `allow_http` too, and set
        // later they would put its default back.
        let mut b = b
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(cfg.request_timeout)
                    .with_connect_timeout(cfg.connect_timeout)
                    .with_allow_http(cfg.allow_http),
            )
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            .with_unsigned_payload(!cfg.signs_payload())
            .with_retry(object_store::RetryConfig {
                // Every call here is idempotent (content-addressed puts,
                // gets, deletes); the budget bounds the whole call.
                max_retries: cfg.retries as usize,
                retry_timeout: cfg.request_timeout,
                ..Default::default()
            });
        if !cfg.endpoint.is_empty() {
            b = b.with_endpoint(&cfg.endpoint);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k.expose());
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s.expose());
        }
        let bucket = b.build().map_err(|e| RemoteError::Config(e.to_string()))?;
        let at = if cfg.endpoint.is_empty() {
            "AWS".to_owned()
        } else {
            cfg.endpoint.clone()
        };
        Ok(Self::new(
            Arc::new(bucket),
            &cfg.prefix,
            runtime,
            cfg.request_timeout.saturating_mul(cfg.retries + 1),
            format!("bucket {:?} at {at}", cfg.bucket),
        ))
    }

    /// Any `object_store` store (tests use `InMemory`).
    pub fn new(
        bucket: Arc<dyn Bucket>,
        prefix: &str,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
        label: String,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            bucket,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            runtime,
            timeout,
            label,
        }
    }

    fn pack_key(&self, key: &[u8; 32]) -> Key {
        Key::from(format!("{}packs/{}", self.prefix, hex(key)))
    }

    fn manifest_key(&self, address: &[u8; 32]) -> Key {
        Key::from(format!("{}objects/{}", self.prefix, hex(address)))
    }

    /// Runs one S3 call, `f` given the bucket, to its end on the node's
    /// runtime, within the budget, timed and counted. The call runs as a
    /// task of the runtime, where its socket's events arrive, and the
    /// caller waits once for its end (driven from the caller's thread, a
    /// response body would wake it for every frame). Blocking: call from
    /// the blocking pool.
    fn call<T, F>(
        &self,
        what: &'static str,
        f: impl FnOnce(Arc<dyn Bucket>) -> F,
    ) -> Result<Option<T>, RemoteError>
    where
        F: Future<Output = object_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let start = Instant::now();
        if let Err(e) = CHAOS.at_blocking(Target::S3) {
            return self.settle(what, start, Some(Err(injected(e))));
        }
        let (fut, budget) = (f(self.bucket.clone()), self.timeout);
        // The timer is made inside the task: the caller's thread may not
        // be one of the runtime's.
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(budget, fut).await });
        let out = match self.runtime.block_on(task) {
            Ok(out) => out.ok(),
            // The task panicked or the runtime is shutting down.
            Err(e) => Some(Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })),
        };
        self.settle(what, start, out)
    }

    /// `call` from async code: the call runs in the caller's task.
    async fn call_async<T, F>(
        &self,
        what: &'static str,
        f: impl FnOnce(Arc<dyn Bucket>) -> F,
    ) -> Result<Option<T>, RemoteError>
    where
        F: Future<Output = object_store::Result<T>>,
    {
        let start = Instant::now();
        if let Err(e) = CHAOS.at(Target::S3).await {
            return self.settle(what, start, Some(Err(injected(e))));
        }
        let out = tokio::time::timeout(self.timeout, f(self.bucket.clone()))
            .await
            .ok();
        self.settle(what, start, out)
    }

    /// A call's end (`None`: out of time), timed and counted (a drill's
    /// injected latency and errors too: they stand for the bucket's).
    fn settle<T>(
        &self,
        what: &'static str,
        start: Instant,
        out: Option<object_store::Result<T>>,
    ) -> Result<Option<T>, RemoteError> {
        metrics::histogram!(names::DOWNSTREAM_LATENCY_SECONDS, "service" => SERVICE)
            .record(start.elapsed().as_secs_f64());
        match out {
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Some(Err(e)) => {
                metrics::counter!(names::DOWNSTREAM_CONNECT_ERRORS_TOTAL, "service" => SERVICE)
                    .increment(1);
                Err(RemoteError::Failed {
                    what,
                    detail: e.to_string(),
                })
            }
            None => {
                metrics::counter!(names::DOWNSTREAM_CONNECT_ERRORS_TOTAL, "service" => SERVICE)
                    .increment(1);
                Err(RemoteError::Timeout(self.timeout, what))
            }
        }
    }

    /// Stores a pack (idempotent: its key is a hash of what it holds).
    pub fn put_pack(&self, key: &[u8; 32], bytes: Vec<Bytes>) -> Result<(), RemoteError> {
        let key = self.pack_key(key);
        let payload = bytes.into_iter().collect();
        self.call("pack put", |b| async move { b.put(&key, payload).await })?;
        Ok(())
    }

    /// Byte ranges of packs as stored (unverified), in order, several
    /// requests at a time; `None` for a missing pack.
    pub fn get_ranges(
        &self,
        wanted: &[([u8; 32], Range<u64>)],
    ) -> Result<Vec<Option<Bytes>>, RemoteError> {
        use futures::StreamExt as _;
        let gets: Vec<_> = wanted
            .iter()
            .map(|(pack, range)| (self.pack_key(pack), range.clone()))
            .collect();
        let got = self.call("pack get", move |bucket| async move {
            let gets = gets.into_iter().map(|(key, range)| {
                let bucket = bucket.clone();
                async move {
                    match bucket.get_range(&key, range).await {
                        Ok(got) => Ok(Some(got)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            });
            let mut out = Vec::new();
            let mut running = futures::stream::iter(gets).buffered(PARALLEL);
            while let Some(body) = running.next().await {
                out.push(body?);
            }
            Ok(out)
        })?;
        Ok(got.unwrap_or_default())
    }

    /// The first of `packs` the bucket does not have (HEADs, several at a
    /// time), if any.
    pub fn missing_pack(&self, packs: &[[u8; 32]]) -> Result<Option<[u8; 32]>, RemoteError> {
        use futures::StreamExt as _;
        let heads: Vec<_> = packs.iter().map(|p| (self.pack_key(p), *p)).collect();
        let got = self.call("pack head", move |bucket| async move {
            let heads = heads.into_iter().map(|(key, pack)| {
                let bucket = bucket.clone();
                async move {
                    match bucket.head(&key).await {
                        Ok(_) => Ok(None),
                        Err(object_store::Error::NotFound { .. }) => Ok(Some(pack)),
                        Err(e) => Err(e),
                    }
                }
            });
            let mut running = futures::stream::iter(heads).buffer_unordered(PARALLEL);
            while let Some(missing) = running.next().await {
                if let Some(pack) = missing? {
                    return Ok(Some(pack));
                }
            }
            Ok(None)
        })?;
        Ok(got.flatten())
    }

    /// Writes an object's manifest (after every pack it names).
    pub fn put_manifest(&self, address: &[u8; 32], parts: Vec<Bytes>) -> Result<(), RemoteError> {
        let key = self.manifest_key(address);
        let payload = parts.into_iter().collect();
        self.call(
            "manifest put",
            |b| async move { b.put(&key, payload).await },
        )?;
        Ok(())
    }

    /// An object's manifest as stored (unverified), `None` when missing.
    pub fn get_manifest(&self, address: &[u8; 32]) -> Result<Option<Bytes>, RemoteError> {
        let key = self.manifest_key(address);
        self.call("manifest get", |b| manifest_get(b, key))
    }

    /// `get_manifest` from async code.
    pub async fn get_manifest_async(
        &self,
        address: &[u8; 32],
    ) -> Result<Option<Bytes>, RemoteError> {
        let key = self.manifest_key(address);
        self.call_async("manifest get", |b| manifest_get(b, key))
            .await
    }

    /// The header of an object's manifest (unverified; without the inline
    /// bytes, or with some of them), `None` when missing: a ranged GET of
    /// its first bytes, and a second one when the header is longer.
    pub fn get_manifest_header(&self, address: &[u8; 32]) -> Result<Option<Bytes>, RemoteError> {
        const PROBE: u64 = 16 * 1024;
        let key = self.manifest_key(address);
        let probe = key.clone();
        let Some(first) = self.call("manifest get", |b| async move {
            b.get_range(&probe, 0..PROBE).await
        })?
        else {
            return Ok(None);
        };
        match crate::pack::header_len(&first) {
            Some(len) if len as u64 > PROBE && first.len() as u64 == PROBE => self
                .call("manifest get", |b| async move {
                    b.get_range(&key, 0..len as u64).await
                }),
            _ => Ok(Some(first)),
        }
    }

    /// Removes an object's manifest; whether it was there.
    pub fn delete_manifest(&self, address: &[u8; 32]) -> Result<bool, RemoteError> {
        let key = self.manifest_key(address);
        if self
            .call("manifest head", |b| {
                let key = key.clone();
                async move { b.head(&key).await }
            })?
            .is_none()
        {
            return Ok(false);
        }
        self.call("manifest delete", |b| async move { b.delete(&key).await })?;
        Ok(true)
    }

    /// Whether the bucket answers (a list of at most one key).
    pub fn reachable(&self) -> Result<(), RemoteError> {
        use futures::StreamExt as _;
        let prefix = Key::from(format!("{}objects", self.prefix));
        self.call("probe", |b| async move {
            match b.list(Some(&prefix)).next().await {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            }
        })?;
        Ok(())
    }

    /// Every key under `dir` (`packs` or `objects`) with its age.
    fn list(&self, dir: &str) -> Result<Vec<(String, Duration)>, RemoteError> {
        use futures::TryStreamExt as _;
        let prefix = Key::from(format!("{}{dir}", self.prefix));
        let now = SystemTime::now();
        let metas = self
            .call("list", |b| async move {
                b.list(Some(&prefix)).try_collect::<Vec<_>>().await
            })?
            .unwrap_or_default();
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_owned();
                let modified: SystemTime = m.last_modified.into();
                Some((name, now.duration_since(modified).unwrap_or_default()))
            })
            .collect())
    }

    /// Deletes packs no manifest names that are older than `grace` (a
    /// writer on another replica may be about to name a newer one), and
    /// returns how many went. `decode` gives the packs a manifest's header
    /// names; one that does not decode keeps every pack (nothing is
    /// deleted on a guess).
    pub fn sweep(
        &self,
        grace: Duration,
        decode: impl Fn(&[u8; 32], &[u8]) -> Option<Vec<[u8; 32]>>,
    ) -> Result<usize, RemoteError> {
        // Packs first: one written after this list is not a candidate,
        // and a manifest written after the manifest list names only
        // packs younger than the grace or already listed as named.
        let packs = self.list("packs")?;
        let mut named = HashSet::new();
        for (name, _) in self.list("objects")? {
            let Some(address) = parse_hex(&name) else {
                continue;
            };
            // The header only: an object's inline bytes are not needed.
            let Some(raw) = self.get_manifest_header(&address)? else {
                continue;
            };
            match decode(&address, &raw) {
                Some(keys) => named.extend(keys),
                None => {
                    return Err(RemoteError::Failed {
                        what: "sweep",
                        detail: format!("manifest {name} does not verify; nothing deleted"),
                    })
                }
            }
        }
        let mut removed = 0;
        for (name, age) in packs {
            let Some(pack) = parse_hex(&name) else {
                continue;
            };
            if age < grace || named.contains(&pack) {
                continue;
            }
            // Looked at again just before it goes: a writer that stored
            // the same pack since the list made it young again.
            let key = self.pack_key(&pack);
            let Some(meta) = self.call("pack head", |b| {
                let key = key.clone();
                async move { b.head(&key).await }
            })?
            else {
                continue;
            };
            let modified: SystemTime = meta.last_modified.into();
            if SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default()
                < grace
            {
                continue;
            }
            self.call("pack delete", |b| async move { b.delete(&key).await })?;
            removed += 1;
        }
        Ok(removed)
    }
}

async fn manifest_get(bucket: Arc<dyn Bucket>, key: Key) -> object_store::Result<Bytes> {
    bucket.get(&key).await?.bytes().await
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A drill's injected error as the bucket's own failure.
fn injected(e: ron_kernel::chaos::Injected) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: Box::new(e),
    }
}
