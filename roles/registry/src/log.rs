//! The registry log: proposals, approvals and commits on redb, with a
//! single logical writer.
//!
//! Invariants:
//! - **No version without quorum.** A commit (or a follower's apply)
//!   counts valid, distinct `verify_strict` signatures by members of the
//!   signer set in force, over that version and payload hash; fewer than M
//!   and nothing is written.
//! - **No fork.** A version is written only as `head + 1` with `prev_b3 =
//!   head.payload_b3`, under the writer lock, in the same transaction that
//!   moves the head.
//! - **No lost commit.** The artifact, the head and (for a `signer_set`
//!   item) the next signer set commit in one `Durability::Immediate`
//!   transaction before the caller hears of it.
//! - **Readers never wait for the writer**: the head is an `ArcSwap`ped
//!   snapshot, artifacts are read from redb's MVCC snapshots.
//!
//! Every call here is blocking (redb); async callers use the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use ron_kernel::metrics::names as m;
use ron_kernel::{Bus, KernelEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::{
    self, encode_hex, hash_bytes, parse_signature, signing_message, Approval, Artifact,
    DescriptorSet, Head, ModelError, Payload, SignerSet,
};

const ARTIFACTS: TableDefinition<u64, &[u8]> = TableDefinition::new("artifacts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const PROPOSALS: TableDefinition<&str, &[u8]> = TableDefinition::new("proposals");

/// Commits a slow stream subscriber may fall behind by before it is
/// dropped (the default of `Options::stream_buffer`).
pub const STREAM_BUFFER: usize = 1024;

/// This file's layout versions (`ron_kernel::schema`): 1 is the first
/// versioned layout, the same tables as the unversioned files before it.
/// A layout change adds a step here and its test.
pub static SCHEMA: ron_kernel::schema::Schema = ron_kernel::schema::Schema {
    role: "registry",
    file: "registry.redb",
    steps: &[ron_kernel::schema::unversioned_to_1],
};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Schema(#[from] ron_kernel::schema::SchemaError),
    #[error("{0}")]
    Invalid(String),
    #[error("the head is at version {head} ({head_b3}); this proposal needs version {want_version} on {want_prev}")]
    ChainMismatch {
        head: u64,
        head_b3: String,
        want_version: u64,
        want_prev: String,
    },
    #[error("no such proposal")]
    NoProposal,
    #[error("no such version")]
    NoVersion,
    #[error("the proposal expired at {0}")]
    Expired(String),
    #[error("signer {0:?} is not in the signer set in force")]
    UnknownSigner(String),
    #[error("the signature of {0:?} does not verify for this version and payload")]
    BadSignature(String),
    #[error("signer {0:?} already approved this proposal")]
    DuplicateApproval(String),
    #[error("{have} valid approvals of the {need} needed")]
    QuorumNotMet { have: usize, need: u32 },
    #[error("this node is a follower; write to the primary at {0}")]
    Follower(String),
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("registry storage: {0}")]
    Db(String),
}

impl From<ModelError> for RegistryError {
    fn from(e: ModelError) -> Self {
        RegistryError::Invalid(e.to_string())
    }
}

ron_kernel::db_error_type!(RegistryError);

/// A drill's fault on the log's store (`chaos` target `registry`): its
/// latency is the store's, its error a failed store call (`Db`: a failed
/// write turns `registry.write` unready until one succeeds).
fn drill() -> Result<(), RegistryError> {
    use ron_kernel::chaos::{Target, CHAOS};
    CHAOS
        .at_blocking(Target::Registry)
        .map_err(|e| RegistryError::Db(e.to_string()))
}

/// A proposal waiting for approvals (or committed, kept until it expires
/// so a retried commit gets the same answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub payload: Payload,
    pub payload_b3: String,
    pub approvals: Vec<Approval>,
    pub created_at: String,
    pub expires_at: String,
    /// The version it became, once committed.
    pub committed: Option<u64>,
}

impl Proposal {
    fn expired(&self, now: SystemTime) -> bool {
        humantime::parse_rfc3339(&self.expires_at).is_ok_and(|t| t <= now)
    }
}

/// What readers see without touching redb.
#[derive(Debug)]
pub struct Snapshot {
    pub head: Head,
    /// `head` as JSON, ready to send.
    pub head_json: Bytes,
    /// The signer set that approves the next version.
    pub signers: SignerSet,
}

impl Snapshot {
    fn new(head: Head, signers: SignerSet) -> Self {
        let head_json = Bytes::from(serde_json::to_vec(&head).unwrap_or_default());
        Snapshot {
            head,
            head_json,
            signers,
        }
    }
}

/// A committed version as the stream sends it.
#[derive(Debug)]
pub struct Committed {
    pub version: u64,
    /// The whole SSE event (`id`, `event: commit`, `data`).
    pub event: Bytes,
}

/// Renders one SSE `commit` event for an artifact's JSON.
pub fn sse_commit(version: u64, artifact_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(artifact_json.len() + 40);
    out.extend_from_slice(format!("id: {version}\nevent: commit\ndata: ").as_bytes());
    out.extend_from_slice(artifact_json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub struct Registry {
    db: Database,
    state: ArcSwap<Snapshot>,
    /// The single logical writer: every change to proposals or the head
    /// holds it, never across an await (all callers are blocking code).
    writer: Mutex<()>,
    /// Why the last write failed in storage, until one succeeds.
    write_failure: arc_swap::ArcSwapOption<String>,
    commits: broadcast::Sender<Arc<Committed>>,
    stream_buffer: usize,
    bus: Option<Bus>,
    pub proposal_ttl: Duration,
    /// When set, writes are refused with a pointer to the primary.
    pub upstream: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("head", &self.state.load().head.version)
            .finish_non_exhaustive()
    }
}

/// How a registry is opened.
#[derive(Debug, Clone)]
pub struct Options {
    pub genesis: SignerSet,
    pub proposal_ttl: Duration,
    pub upstream: Option<String>,
    pub bus: Option<Bus>,
    /// Commits a stream subscriber may lag by before it is dropped.
    pub stream_buffer: usize,
}

impl Registry {
    pub fn open(path: &Path, opts: Options) -> Result<Self, RegistryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        let db = ron_kernel::db::builder().create(path).map_err(db_err)?;
        Self::init(db, opts)
    }

    pub fn in_memory(opts: Options) -> Result<Self, RegistryError> {
        let db = ron_kernel::db::builder()
            .create_with_backend(ron_kernel::memstore::PagedMemory::new())
            .map_err(db_err)?;
        Self::init(db, opts)
    }

    fn init(db: Database, opts: Options) -> Result<Self, RegistryError> {
        ron_kernel::schema::check_or_stamp(&db, &SCHEMA)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(ARTIFACTS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.open_table(PROPOSALS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let (head, signers) = {
            let r = db.begin_read().map_err(db_err)?;
            let meta = r.open_table(META).map_err(db_err)?;
            let head = match meta.get("head").map_err(db_err)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| RegistryError::Db(format!("stored head: {e}")))?,
                None => Head::empty(),
            };
            let signers = match meta.get("signers").map_err(db_err)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| RegistryError::Db(format!("stored signer set: {e}")))?,
                None => opts.genesis.clone(),
            };
            (head, signers)
        };
        metrics::gauge!(m::REGISTRY_HEAD_VERSION).set(head.version as f64);
        let (commits, _) = broadcast::channel(opts.stream_buffer.max(1));
        Ok(Registry {
            db,
            state: ArcSwap::from_pointee(Snapshot::new(head, signers)),
            writer: Mutex::new(()),
            write_failure: arc_swap::ArcSwapOption::empty(),
            commits,
            stream_buffer: opts.stream_buffer.max(1),
            bus: opts.bus,
            proposal_ttl: opts.proposal_ttl,
            upstream: opts.upstream,
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Commits a stream client may lag by before it is dropped.
    pub fn stream_buffer(&self) -> usize {
        self.stream_buffer
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.commits.subscribe()
    }

    /// Readiness: the log can be read, and the last write (if any) did not
    /// fail in storage. A durable probe write every few seconds would churn
    /// the disk; real writes report their own failures here instead.
    pub fn healthy(&self) -> Result<(), String> {
        if let Some(e) = self.write_failure.load_full() {
            return Err(format!("the last write failed: {e}"));
        }
        let r = self.db.begin_read().map_err(|e| e.to_string())?;
        r.open_table(META).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Records how a write ended, for `healthy`.
    fn note_write<T>(&self, r: Result<T, RegistryError>) -> Result<T, RegistryError> {
        match &r {
            Ok(_) => self.write_failure.store(None),
            Err(e @ (RegistryError::DiskFull(_) | RegistryError::Db(_))) => {
                self.write_failure.store(Some(Arc::new(e.to_string())))
            }
            Err(_) => {}
        }
        r
    }

    /// The stored JSON of one version.
    pub fn artifact_json(&self, version: u64) -> Result<Bytes, RegistryError> {
        drill()?;
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(ARTIFACTS).map_err(db_err)?;
        match t.get(version).map_err(db_err)? {
            Some(v) => Ok(Bytes::copy_from_slice(v.value())),
            None => Err(RegistryError::NoVersion),
        }
    }

    pub fn artifact(&self, version: u64) -> Result<Artifact, RegistryError> {
        let raw = self.artifact_json(version)?;
        serde_json::from_slice(&raw).map_err(|e| RegistryError::Db(format!("stored artifact: {e}")))
    }

    /// Versions `from..=to` as SSE events, read from one snapshot.
    pub fn events(&self, from: u64, to: u64) -> Result<Vec<Bytes>, RegistryError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(ARTIFACTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.range(from..=to).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push(sse_commit(k.value(), v.value()));
        }
        Ok(out)
    }

    fn refuse_if_follower(&self) -> Result<(), RegistryError> {
        match &self.upstream {
            Some(u) => Err(RegistryError::Follower(u.clone())),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave redb half-written
        // (transactions are atomic), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load_proposal(&self, id: &str) -> Result<Proposal, RegistryError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(PROPOSALS).map_err(db_err)?;
        let raw = t
            .get(id)
            .map_err(db_err)?
            .ok_or(RegistryError::NoProposal)?;
        serde_json::from_slice(raw.value())
            .map_err(|e| RegistryError::Db(format!("stored proposal: {e}")))
    }

    pub fn proposal(&self, id: &str) -> Result<Proposal, RegistryError> {
        self.load_proposal(id)
    }

    fn store_proposal(&self, p: &Proposal) -> Result<(), RegistryError> {
        let r = self.store_proposal_inner(p);
        self.note_write(r)
    }

    fn store_proposal_inner(&self, p: &Proposal) -> Result<(), RegistryError> {
        let raw = serde_json::to_vec(p).map_err(|e| RegistryError::Db(e.to_string()))?;
        drill()?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut t = txn.open_table(PROPOSALS).map_err(db_err)?;
            t.insert(p.id.as_str(), raw.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn check_chain(head: &Head, payload: &DescriptorSet) -> Result<(), RegistryError> {
        if payload.version != head.version + 1 || payload.prev_b3 != head.payload_b3 {
            return Err(RegistryError::ChainMismatch {
                head: head.version,
                head_b3: head.payload_b3.clone(),
                want_version: payload.version,
                want_prev: payload.prev_b3.clone(),
            });
        }
        Ok(())
    }

    /// Records a proposal for the next version.
    pub fn propose(&self, payload: Payload) -> Result<Proposal, RegistryError> {
        self.refuse_if_follower()?;
        payload.validate()?;
        Self::check_chain(&self.snapshot().head, &payload)?;
        let payload_b3 = payload.b3()?;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| RegistryError::Db(format!("random id: {e}")))?;
        let now = SystemTime::now();
        let p = Proposal {
            id: encode_hex(&raw),
            payload,
            payload_b3,
            approvals: Vec::new(),
            created_at: humantime::format_rfc3339_seconds(now).to_string(),
            expires_at: humantime::format_rfc3339_seconds(now + self.proposal_ttl).to_string(),
            committed: None,
        };
        let _w = self.lock();
        self.store_proposal(&p)?;
        Ok(p)
    }

    /// Adds one signer's approval; returns the proposal with it.
    pub fn approve(&self, id: &str, approval: Approval) -> Result<Proposal, RegistryError> {
        self.refuse_if_follower()?;
        let _w = self.lock();
        let mut p = self.load_proposal(id)?;
        if p.expired(SystemTime::now()) {
            return Err(RegistryError::Expired(p.expires_at));
        }
        let signers = &self.snapshot().signers;
        let Some(key) = signers.key_of(&approval.signer_id) else {
            metrics::counter!(m::APPROVAL_VERIFY_TOTAL, "result" => "unknown_signer").increment(1);
            return Err(RegistryError::UnknownSigner(approval.signer_id));
        };
        if p.approvals
            .iter()
            .any(|a| a.signer_id == approval.signer_id)
        {
            return Err(RegistryError::DuplicateApproval(approval.signer_id));
        }
        let msg = signing_message(p.payload.version, &hash_bytes(&p.payload_b3)?);
        let ok =
            parse_signature(&approval.sig).is_some_and(|s| key.verify_strict(&msg, &s).is_ok());
        if !ok {
            metrics::counter!(m::APPROVAL_VERIFY_TOTAL, "result" => "invalid").increment(1);
            return Err(RegistryError::BadSignature(approval.signer_id));
        }
        metrics::counter!(m::APPROVAL_VERIFY_TOTAL, "result" => "valid").increment(1);
        p.approvals.push(approval);
        self.store_proposal(&p)?;
        Ok(p)
    }

    /// Commits a proposal as the next version. A retry of a commit that
    /// already happened returns the head it made (`false`: not new).
    pub fn commit(&self, id: &str) -> Result<(Head, bool), RegistryError> {
        self.refuse_if_follower()?;
        let started = std::time::Instant::now();
        let _w = self.lock();
        let mut p = self.load_proposal(id)?;
        if let Some(v) = p.committed {
            return Ok((Head::of(&self.artifact(v)?), false));
        }
        if p.expired(SystemTime::now()) {
            return Err(RegistryError::Expired(p.expires_at));
        }
        let snap = self.snapshot();
        if let Err(e) = Self::check_chain(&snap.head, &p.payload) {
            metrics::counter!(m::COMMIT_CAS_FAIL_TOTAL).increment(1);
            return Err(e);
        }
        // Only approvals that verify against the set in force now count (a
        // signer removed since it approved does not).
        let kept = Self::quorum(
            &snap,
            p.payload.version,
            &hash_bytes(&p.payload_b3)?,
            &p.approvals,
        )?;
        let artifact = Artifact {
            version: p.payload.version,
            prev_b3: p.payload.prev_b3.clone(),
            payload: p.payload.clone(),
            payload_b3: p.payload_b3.clone(),
            approvals: kept,
            committed_at: model::now_rfc3339(),
        };
        p.committed = Some(artifact.version);
        let head = self.write_version(&artifact, Some(&p))?;
        metrics::histogram!(m::COMMIT_LATENCY_SECONDS).record(started.elapsed().as_secs_f64());
        Ok((head, true))
    }

    /// Checks an artifact from elsewhere (a primary, a backup) completely —
    /// chain position, payload hash, quorum of the set in force — and
    /// appends it.
    pub fn apply(&self, artifact: &Artifact) -> Result<Head, RegistryError> {
        let _w = self.lock();
        let snap = self.snapshot();
        Self::check_chain(&snap.head, &artifact.payload)?;
        if artifact.version != artifact.payload.version
            || artifact.prev_b3 != artifact.payload.prev_b3
        {
            return Err(RegistryError::Invalid(
                "the artifact's version or prev_b3 differs from its payload's".into(),
            ));
        }
        artifact.payload.validate()?;
        let computed = artifact.payload.b3()?;
        if computed != artifact.payload_b3 {
            return Err(RegistryError::Invalid(format!(
                "payload_b3 {} does not match the payload ({computed})",
                artifact.payload_b3
            )));
        }
        Self::quorum(
            &snap,
            artifact.version,
            &hash_bytes(&computed)?,
            &artifact.approvals,
        )?;
        self.write_version(artifact, None)
    }

    /// The approvals that count for (`version`, `payload_b3`) under the
    /// signer set in force, or `QuorumNotMet` when fewer than its `m`.
    fn quorum(
        snap: &Snapshot,
        version: u64,
        payload_b3: &[u8; 32],
        approvals: &[Approval],
    ) -> Result<Vec<Approval>, RegistryError> {
        let kept = model::valid_approvals(&snap.signers, version, payload_b3, approvals);
        if kept.len() < snap.signers.m as usize {
            return Err(RegistryError::QuorumNotMet {
                have: kept.len(),
                need: snap.signers.m,
            });
        }
        Ok(kept)
    }

    /// Writes a checked artifact as the new head, durably, then tells
    /// readers, the stream and the bus. Holds the writer lock (caller).
    fn write_version(
        &self,
        artifact: &Artifact,
        proposal: Option<&Proposal>,
    ) -> Result<Head, RegistryError> {
        let r = self.write_version_inner(artifact, proposal);
        self.note_write(r)
    }

    fn write_version_inner(
        &self,
        artifact: &Artifact,
        proposal: Option<&Proposal>,
    ) -> Result<Head, RegistryError> {
        let json = serde_json::to_vec(artifact).map_err(|e| RegistryError::Db(e.to_string()))?;
        let head = Head::of(artifact);
        let head_json = serde_json::to_vec(&head).map_err(|e| RegistryError::Db(e.to_string()))?;
        let next_signers = artifact.payload.signer_set().cloned();
        drill()?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut t = txn.open_table(ARTIFACTS).map_err(db_err)?;
            t.insert(artifact.version, json.as_slice())
                .map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert("head", head_json.as_slice()).map_err(db_err)?;
            if let Some(s) = &next_signers {
                let raw = serde_json::to_vec(s).map_err(|e| RegistryError::Db(e.to_string()))?;
                meta.insert("signers", raw.as_slice()).map_err(db_err)?;
            }
            if let Some(p) = proposal {
                let raw = serde_json::to_vec(p).map_err(|e| RegistryError::Db(e.to_string()))?;
                let mut props = txn.open_table(PROPOSALS).map_err(db_err)?;
                props
                    .insert(p.id.as_str(), raw.as_slice())
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;

        let signers = next_signers.unwrap_or_else(|| self.snapshot().signers.clone());
        self.state
            .store(Arc::new(Snapshot::new(head.clone(), signers)));
        metrics::gauge!(m::REGISTRY_HEAD_VERSION).set(head.version as f64);
        let _ = self.commits.send(Arc::new(Committed {
            version: head.version,
            event: sse_commit(head.version, &json),
        }));
        if let Some(bus) = &self.bus {
            bus.publish(KernelEvent::RegistryCommitted {
                version: head.version,
                payload_b3: head.payload_b3.clone(),
            });
        }
        Ok(head)
    }

    /// Drops proposals past their expiry. Returns how many.
    pub fn sweep_expired(&self) -> Result<usize, RegistryError> {
        let now = SystemTime::now();
        let _w = self.lock();
        let expired: Vec<String> = {
            let r = self.db.begin_read().map_err(db_err)?;
            let t = r.open_table(PROPOSALS).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let gone = serde_json::from_slice::<Proposal>(v.value())
                    .map(|p| p.expired(now))
                    .unwrap_or(true);
                if gone {
                    out.push(k.value().to_owned());
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(PROPOSALS).map_err(db_err)?;
            for id in &expired {
                t.remove(id.as_str()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(expired.len())
    }

    /// Writes every artifact, oldest first, one JSON per line, from one
    /// consistent snapshot. Returns the head version written.
    pub fn backup(&self, out: &mut dyn std::io::Write) -> Result<u64, RegistryError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(ARTIFACTS).map_err(db_err)?;
        let mut last = 0;
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.write_all(v.value()).map_err(db_err)?;
            out.write_all(b"\n").map_err(db_err)?;
            last = k.value();
        }
        out.flush().map_err(db_err)?;
        Ok(last)
    }

    /// Replays a backup into this (empty) registry, checking every artifact
    /// like a follower does. Returns the head.
    pub fn restore(&self, input: &mut dyn std::io::BufRead) -> Result<Head, RegistryError> {
        if self.snapshot().head.version != 0 {
            return Err(RegistryError::Invalid(
                "restore needs an empty registry".into(),
            ));
        }
        let mut head = Head::empty();
        let mut line = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line).map_err(db_err)? == 0 {
                return Ok(head);
            }
            if line.trim().is_empty() {
                continue;
            }
            let a: Artifact = serde_json::from_str(&line)
                .map_err(|e| RegistryError::Invalid(format!("backup line: {e}")))?;
            head = self.apply(&a)?;
        }
    }
}

/// A public key / signing key pair for `ctl registry keygen`.
pub fn keygen() -> Result<(String, String), RegistryError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| RegistryError::Db(format!("random key: {e}")))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok((
        encode_hex(key.verifying_key().as_bytes()),
        encode_hex(&key.to_bytes()),
    ))
}
