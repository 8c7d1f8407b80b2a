//! `ObjectStore`: content-addressed objects on redb, split into 64 KiB
//! chunks stored once per distinct BLAKE3 hash.
//!
//! Invariants:
//! - **No unverified byte leaves the store.** Every chunk is hashed when
//!   read and compared with its key before it is returned; an object record
//!   carries a checksum binding its address, size and chunk list.
//! - **An object exists only once its record commits durably**; chunks are
//!   written first (each in a short transaction), the record and the chunk
//!   reference counts last, in one `Durability::Immediate` transaction.
//! - **A chunk is removed only when no object references it and no
//!   unfinished write holds it** (the write is about to reference it): a
//!   writer pins every chunk it stores or finds until it ends.
//! - **Under a byte budget (`storage.max_bytes`) stored chunk bytes never
//!   exceed it**: the check is inside the write transaction that adds them.
//!   An amnesia store is a cache and makes room by evicting the least
//!   recently used objects no index name points to; a store on disk never
//!   evicts (it holds acknowledged writes) and refuses the write instead.
//! - **Under amnesia chunk bytes live as `Bytes` in RAM** (`Bodies::Ram`),
//!   not in redb pages: the `chunks` table keeps an empty row per chunk, so
//!   existence, counts and transactions are the same as on disk, while the
//!   bytes cost what they weigh and reads hand out the same allocation.
//!
//! - **The read cache holds only verified bytes**: a chunk enters it after
//!   its hash matched, an object record after its checksum did. Records
//!   leave it when the object is deleted (an epoch counter keeps a reader
//!   that raced the delete from putting the record back); chunks are
//!   immutable by their hash, so a cached one is never wrong, only evicted.
//!
//! All calls that touch redb are blocking (redb is synchronous): async
//! callers run them on the blocking pool. The `cached_*` calls never touch
//! redb and may run anywhere.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use ron_kernel::metrics::names;
use ron_kernel::{outboard, Bus, ContentAddress, KernelEvent};

use crate::pack::{self, Loc, Placement, Run, PACK_CHUNKS};
use crate::remote::Remote;

/// Objects are cut into chunks of this size (the last may be shorter):
/// the groups of the object's BLAKE3 tree (`kernel::outboard`), 64 KiB.
pub const CHUNK_BYTES: usize = outboard::GROUP_BYTES as usize;

/// At most this many spare chunk buffers (4 MiB) wait for reuse.
const SPARE_BUFFERS: usize = 64;

const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
/// The bytes of a chunk past [`ROW_BYTES`] (on disk: `Bodies::Table`).
const CHUNK_TAILS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunk_tails");
/// The most of a chunk its `chunks` row holds on disk. redb gives a leaf
/// that outgrows a page the next power of two: a whole 64 KiB chunk with
/// its key and the leaf's header took a 128 KiB page (measured: 64 MiB of
/// objects PUT, a 150 MiB file). A row of 63 KiB fits a 64 KiB page; the
/// last 1 KiB goes to `chunk_tails`, several to a page (the same PUTs: a
/// 90 MiB file; the rest is redb copying leaves on write). Rows written
/// whole before this stay readable: a row shorter than this, or without a
/// tail, is the chunk.
const ROW_BYTES: usize = CHUNK_BYTES - 1024;
const REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("chunk_refs");
const OBJECTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("objects");
/// Each object's BLAKE3 tree (`outboard::Tree::to_bytes`): written with a
/// streamed object's record, or made on an object's first ranged serve;
/// removed with the record.
const OUTBOARDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("outboards");
/// Resumable uploads: id → `UploadState`.
const UPLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("uploads");
/// (upload id, chunk index) → chunk hash. The upload holds a reference on
/// each chunk, so collection never takes an acknowledged part away.
const UPLOAD_CHUNKS: TableDefinition<(u64, u64), &[u8; 32]> = TableDefinition::new("upload_chunks");
/// With a bucket: (upload id, chunk index) → the chunk's BLAKE3 chaining
/// value, so completion hashes the object without reading it back.
const UPLOAD_CVS: TableDefinition<(u64, u64), &[u8; 32]> = TableDefinition::new("upload_cvs");
/// With a bucket: (upload id, index of the pack's first chunk) → the pack
/// holding the chunks a part completed (key ‖ chunk count, big endian).
const UPLOAD_PACKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("upload_packs");
/// The store's running totals, one row, changed in the same transaction as
/// every chunk or object it counts: `(sequence, objects, chunks,
/// logical_bytes, stored_bytes)`. The sequence orders exports of it.
const TOTALS: TableDefinition<&str, (u64, u64, u64, u64, u64)> = TableDefinition::new("totals");
const TOTALS_KEY: &str = "totals";

/// This file's layout versions (`ron_kernel::schema`): 1 is the first
/// versioned layout, the same tables as the unversioned files before it;
/// 2 keeps a chunk's last bytes in `chunk_tails` ([`ROW_BYTES`]; a build
/// that knows only 1 would read those chunks short). A layout change adds
/// a step here and its test.
pub static SCHEMA: ron_kernel::schema::Schema = ron_kernel::schema::Schema {
    role: "storage",
    file: "storage.redb",
    steps: &[ron_kernel::schema::unversioned_to_1, chunk_tails_2],
};

/// Version 1 to 2: the `chunk_tails` table. Rows written whole stay as
/// they are (a row without a tail is its chunk), so nothing is rewritten.
fn chunk_tails_2(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(CHUNK_TAILS)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Schema(#[from] ron_kernel::schema::SchemaError),
    #[error("object not found")]
    NotFound,
    #[error("integrity error in {address}: {what}")]
    Integrity { address: String, what: &'static str },
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("no upload with that id")]
    UploadNotFound,
    #[error("part {got} is out of order; the next part is {expected}")]
    PartOutOfOrder { expected: u64, got: u64 },
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The byte budget has no room for `need` more bytes and nothing could
    /// be evicted (or this store never evicts).
    #[error("the store's byte budget of {max} bytes has no room for {need} more bytes")]
    Full { need: u64, max: u64, evicts: bool },
    #[error("storage error: {0}")]
    Db(String),
    /// The S3 backend failed or did not answer in time.
    #[error(transparent)]
    Backend(#[from] crate::remote::RemoteError),
}

ron_kernel::db_error_type!(StoreError);

/// Chunks a reader fetches from a bucket at once (one ranged GET per
/// pack, in parallel; 2 MiB held per reader at most).
const READ_AHEAD: usize = 2 * PACK_CHUNKS;

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub address: ContentAddress,
    pub size: u64,
    /// The chunks' ids: their BLAKE3 chaining values at their offsets in
    /// the object (the leaves of its tree, `tree_ids`), or — for objects
    /// completed from resumable uploads and objects written before tree
    /// ids — each chunk's own BLAKE3 hash. An object of one chunk has one
    /// id either way: its address.
    pub chunks: Vec<[u8; 32]>,
    /// With a bucket, where the chunks are, as the manifest this record
    /// came from says (`None`: not known here; a reader asks the bucket).
    pub(crate) placement: Option<Arc<Placement>>,
    /// The object's response headers, rendered on first use and kept with
    /// the record (in the read cache, for as long as it is cached).
    pub(crate) rendered: crate::http::RenderedSlot,
}

impl ObjectMeta {
    fn checksum(address: &ContentAddress, size: u64, chunks: &[[u8; 32]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"ron:storage:record:v1\n");
        h.update(address.as_bytes());
        h.update(&size.to_be_bytes());
        for c in chunks {
            h.update(c);
        }
        *h.finalize().as_bytes()
    }

    /// `size u64 ‖ checksum [32] ‖ chunk hashes [32]…`
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + 32 * self.chunks.len());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&Self::checksum(&self.address, self.size, &self.chunks));
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }

    pub(crate) fn decode(address: ContentAddress, raw: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |what| StoreError::Integrity {
            address: address.to_string(),
            what,
        };
        if raw.len() < 40 || (raw.len() - 40) % 32 != 0 {
            return Err(corrupt("object record has a bad length"));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&raw[..8]);
        let size = u64::from_be_bytes(size);
        let chunks: Vec<[u8; 32]> = raw[40..]
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                a
            })
            .collect();
        if raw[8..40] != Self::checksum(&address, size, &chunks) {
            return Err(corrupt("object record checksum mismatch"));
        }
        if chunks.len() as u64 != size.div_ceil(CHUNK_BYTES as u64) {
            return Err(corrupt("object record chunk count does not match its size"));
        }
        Ok(Self {
            address,
            size,
            chunks,
            placement: None,
            rendered: Default::default(),
        })
    }

    /// Whether `data` is chunk `idx` of this object: one BLAKE3 pass, as
    /// its tree's leaf or (ids of an upload) as a hash of its own. `ids`
    /// carries what the reader's earlier chunks showed: only a reader's
    /// first chunk of an upload-made object is hashed both ways. (A chunk
    /// whose other hash equals its id would be a BLAKE3 preimage.)
    pub(crate) fn chunk_matches(&self, idx: usize, data: &[u8], ids: &mut Option<Ids>) -> bool {
        let Some(id) = self.chunks.get(idx) else {
            return false;
        };
        let tree = || self.chunks.len() > 1 && outboard::group_cv(idx as u64, data) == *id;
        let own = || blake3::hash(data).as_bytes() == id;
        match *ids {
            Some(Ids::Tree) => tree(),
            Some(Ids::Own) => own(),
            None if tree() => {
                *ids = Some(Ids::Tree);
                true
            }
            None if own() => {
                *ids = Some(Ids::Own);
                true
            }
            None => false,
        }
    }

    /// An object's record and placement from its whole manifest, verified.
    fn from_manifest(address: ContentAddress, raw: Bytes) -> Result<Self, StoreError> {
        let corrupt = |what| StoreError::Integrity {
            address: address.to_string(),
            what,
        };
        let (record, runs, at) = pack::decode_header(address.as_bytes(), &raw).map_err(corrupt)?;
        let mut meta = Self::decode(address, record)?;
        let placement = pack::placement(runs, raw.slice(at..), meta.size, meta.chunks.len())
            .map_err(corrupt)?;
        meta.placement = Some(Arc::new(placement));
        Ok(meta)
    }

    /// This record without its placement (what the read cache keeps: an
    /// object's inline bytes are weighed as chunks there, not here).
    fn record_only(&self) -> Self {
        Self {
            placement: None,
            ..self.clone()
        }
    }
}

/// How an object's chunk ids were made: as the leaves of its BLAKE3 tree
/// (a streamed write), or each chunk's own hash (a resumable upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ids {
    Tree,
    Own,
}

/// Totals for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub objects: u64,
    pub chunks: u64,
    /// Bytes of all objects as stored by callers (before dedup).
    pub logical_bytes: u64,
    /// Bytes of distinct chunks actually kept.
    pub stored_bytes: u64,
}

impl StoreStats {
    /// Sets the storage gauges to these totals.
    fn export(&self) {
        metrics::gauge!(names::STORAGE_BYTES_STORED).set(self.stored_bytes as f64);
        metrics::gauge!(names::STORAGE_CHUNKS).set(self.chunks as f64);
        let ratio = if self.stored_bytes == 0 {
            1.0
        } else {
            self.logical_bytes as f64 / self.stored_bytes as f64
        };
        metrics::gauge!(names::STORAGE_DEDUP_RATIO).set(ratio);
    }
}

/// What one write transaction changes in the totals.
#[derive(Debug, Default)]
struct Delta {
    objects: i64,
    chunks: i64,
    logical: i64,
    stored: i64,
}

impl Delta {
    fn chunk(&mut self, sign: i64, len: usize) {
        self.chunks += sign;
        self.stored += sign * len as i64;
    }

    fn object(&mut self, sign: i64, size: u64) {
        self.objects += sign;
        self.logical += sign * size as i64;
    }

    fn is_zero(&self) -> bool {
        self.objects == 0 && self.chunks == 0 && self.logical == 0 && self.stored == 0
    }
}

/// Totals after a commit, with their sequence number.
type Totals = (u64, StoreStats);

fn read_totals(
    t: &impl ReadableTable<&'static str, (u64, u64, u64, u64, u64)>,
) -> Result<Option<Totals>, StoreError> {
    Ok(t.get(TOTALS_KEY).map_err(db_err)?.map(|g| {
        let (seq, objects, chunks, logical_bytes, stored_bytes) = g.value();
        (
            seq,
            StoreStats {
                objects,
                chunks,
                logical_bytes,
                stored_bytes,
            },
        )
    }))
}

/// Adds `d` to the totals row inside `txn`; `None` when nothing changed.
fn apply_delta(txn: &redb::WriteTransaction, d: &Delta) -> Result<Option<Totals>, StoreError> {
    if d.is_zero() {
        return Ok(None);
    }
    let mut t = txn.open_table(TOTALS).map_err(db_err)?;
    // `init` writes the row before any other transaction can run.
    let (seq, mut st) =
        read_totals(&t)?.ok_or_else(|| StoreError::Db("the totals row is missing".into()))?;
    st.objects = st.objects.saturating_add_signed(d.objects);
    st.chunks = st.chunks.saturating_add_signed(d.chunks);
    st.logical_bytes = st.logical_bytes.saturating_add_signed(d.logical);
    st.stored_bytes = st.stored_bytes.saturating_add_signed(d.stored);
    let seq = seq + 1;
    t.insert(
        TOTALS_KEY,
        (
            seq,
            st.objects,
            st.chunks,
            st.logical_bytes,
            st.stored_bytes,
        ),
    )
    .map_err(db_err)?;
    Ok(Some((seq, st)))
}

#[derive(Clone)]
pub struct ObjectStore {
    db: Arc<Database>,
    /// Chunks unfinished writes stored or found, with how many writes hold
    /// each: deletes and collection leave them alone.
    pinned: Arc<Mutex<HashMap<[u8; 32], u32>>>,
    bodies: Arc<Bodies>,
    /// Under amnesia, the buffers of removed full chunks, handed to the
    /// next writes: a cache that evicts as fast as it fills then reuses
    /// its own memory instead of leaving it with the allocator (which
    /// kept up to 30% more resident in a fill-and-evict cycle).
    spare: Arc<Mutex<Vec<BytesMut>>>,
    budget: Option<Arc<Budget>>,
    bus: Option<Bus>,
    cache: Option<Arc<ReadCache>>,
    /// Sequence of the totals last exported as gauges: two writers that
    /// commit in one order and export in the other leave the newer totals.
    exported: Arc<Mutex<u64>>,
    /// Bytes run through BLAKE3 by writes and verified reads (benches
    /// report passes per byte from it).
    hashed: Arc<AtomicU64>,
    /// Trees of objects served by range lately (a seek through a large
    /// object loads its tree once); emptied by deletes.
    trees: Arc<Mutex<HashMap<[u8; 32], Arc<outboard::Tree>>>>,
    /// Durable commits of writers at about the same time share one fsync
    /// (every acknowledged write still waits for its own durability).
    group: Arc<ron_kernel::db::GroupCommit>,
}

/// Trees kept in memory at most.
const TREES: usize = 64;

/// Where chunk bytes live.
enum Bodies {
    /// In the `chunks` table (a store on disk, or a test backend).
    Table,
    /// As `Bytes` in RAM (amnesia), beside an empty `chunks` row each.
    Ram(RwLock<HashMap<[u8; 32], Bytes>>),
    /// In an S3 bucket (`storage.backend = "s3"`), with object manifests
    /// beside them; a `chunks` row holds the chunk's length (8 bytes, big
    /// endian) for the chunks this node wrote, and records are in redb
    /// too. A manifest another replica wrote is read from the bucket.
    Remote(Arc<Remote>),
}

/// The row a remote chunk keeps locally: its length.
fn remote_row(len: usize) -> [u8; 8] {
    (len as u64).to_be_bytes()
}

fn remote_row_len(row: &[u8]) -> usize {
    row.try_into().map_or(0, |b| u64::from_be_bytes(b) as usize)
}

/// Which addresses must not be evicted (those an index name points to);
/// `None` when that cannot be told now (evict nothing then).
pub type KeepFn = Box<dyn Fn() -> Option<HashSet<ContentAddress>> + Send + Sync>;

/// `storage.max_bytes`: a ceiling on stored chunk bytes.
struct Budget {
    max_bytes: u64,
    evict: Option<Eviction>,
}

/// How an amnesia store makes room: least recently used objects first,
/// never one that `keep` names.
struct Eviction {
    keep: KeepFn,
    clock: AtomicU64,
    /// Last use of each object (reads and writes); objects not in it (none,
    /// under amnesia) count as oldest.
    used: RwLock<HashMap<[u8; 32], AtomicU64>>,
    /// One eviction at a time; the others wait and find the room made.
    running: Mutex<()>,
}

impl Budget {
    /// Below this after an eviction, so that the next writes do not each
    /// start one: 1/64 of the budget under the ceiling (one chunk to 4
    /// MiB). Small, because memory the allocator got back from evicted
    /// objects stays resident for the next writes: a deep eviction would
    /// only widen the gap between resident and stored bytes.
    fn low_water(&self, need: u64) -> u64 {
        let slack = (self.max_bytes / 64).clamp(CHUNK_BYTES as u64, 4 << 20);
        self.max_bytes.saturating_sub(need).saturating_sub(slack)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its map whole (single inserts and
    // removes), so a lock poisoned by a panic elsewhere is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // As `lock`: maps changed by single inserts and removes only.
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    // As `lock`.
    m.write().unwrap_or_else(PoisonError::into_inner)
}

type ReadOnlyChunks = redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>;

/// A write transaction's chunk rows and their tails (see [`ROW_BYTES`]).
struct ChunkTable<'t> {
    rows: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    tails: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
}

impl<'t> ChunkTable<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(ChunkTable {
            rows: txn.open_table(CHUNKS).map_err(db_err)?,
            tails: txn.open_table(CHUNK_TAILS).map_err(db_err)?,
        })
    }
}

/// A chunk's bytes on disk: its row, and its tail when the row is full.
fn table_chunk(
    rows: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    tails: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &[u8; 32],
) -> Result<Option<Bytes>, StoreError> {
    let Some(row) = rows.get(hash).map_err(db_err)? else {
        return Ok(None);
    };
    let row = row.value();
    let tail = match row.len() {
        ROW_BYTES => tails.get(hash).map_err(db_err)?,
        _ => None,
    };
    Ok(Some(match tail {
        None => Bytes::copy_from_slice(row),
        Some(t) => {
            let mut whole = BytesMut::with_capacity(row.len() + t.value().len());
            whole.extend_from_slice(row);
            whole.extend_from_slice(t.value());
            whole.freeze()
        }
    }))
}

/// Verified object records and chunks kept in RAM, so a hot object is
/// served without a redb transaction, a copy out of the page cache or a
/// second BLAKE3 pass.
struct ReadCache {
    meta: quick_cache::sync::Cache<[u8; 32], Arc<ObjectMeta>>,
    chunks: quick_cache::sync::Cache<[u8; 32], Bytes, ChunkWeight>,
    /// Bumped after every delete commits (see `head_shared`).
    epoch: AtomicU64,
}

#[derive(Clone)]
struct ChunkWeight;

impl quick_cache::Weighter<[u8; 32], Bytes> for ChunkWeight {
    fn weight(&self, _key: &[u8; 32], val: &Bytes) -> u64 {
        val.len().max(1) as u64
    }
}

impl ReadCache {
    fn new(bytes: u64) -> Self {
        let chunk_items = (bytes / CHUNK_BYTES as u64).max(16) as usize;
        // Records are small (≈ 40 B + 32 B per chunk); allow many more of
        // them than of chunks, weighed by count.
        let meta_items = (chunk_items * 8).clamp(1024, 1 << 20);
        Self {
            meta: quick_cache::sync::Cache::new(meta_items),
            chunks: quick_cache::sync::Cache::with_weighter(chunk_items, bytes, ChunkWeight),
            epoch: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Opens (or creates) the store file, then removes chunks left
    /// unreferenced by writes a crash interrupted.
    pub fn open(path: &Path, bus: Option<Bus>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        let db = ron_kernel::db::builder().create(path).map_err(db_err)?;
        Self::init(db, Bodies::Table, bus, false)
    }

    /// A store that lives in RAM only (amnesia): records in redb on
    /// `PagedMemory`, chunk bytes as `Bytes`.
    pub fn in_memory(bus: Option<Bus>) -> Result<Self, StoreError> {
        let db = ron_kernel::db::builder()
            .create_with_backend(ron_kernel::memstore::PagedMemory::new())
            .map_err(db_err)?;
        Self::init(db, Bodies::Ram(RwLock::default()), bus, true)
    }

    /// A store on any redb storage backend, chunk bytes in redb (tests use
    /// one that runs out of space on purpose).
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        bus: Option<Bus>,
    ) -> Result<Self, StoreError> {
        let db = ron_kernel::db::builder()
            .create_with_backend(backend)
            .map_err(db_err)?;
        Self::init(db, Bodies::Table, bus, false)
    }

    /// A store whose chunk bytes and object manifests live in `remote`;
    /// its records of what this node wrote, its upload state and its
    /// totals in redb at `path` (in RAM for `None`: amnesia).
    pub fn with_remote(
        path: Option<&Path>,
        remote: Remote,
        bus: Option<Bus>,
    ) -> Result<Self, StoreError> {
        let db = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(db_err)?;
                }
                ron_kernel::db::builder().create(path).map_err(db_err)?
            }
            None => ron_kernel::db::builder()
                .create_with_backend(ron_kernel::memstore::PagedMemory::new())
                .map_err(db_err)?,
        };
        let in_ram = path.is_none();
        Self::init(db, Bodies::Remote(Arc::new(remote)), bus, in_ram)
    }

    /// The bucket, when the bodies live in one.
    pub fn remote(&self) -> Option<&Remote> {
        match &*self.bodies {
            Bodies::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// `in_ram`: the database is on a RAM backend (nothing to sync).
    fn init(
        db: Database,
        bodies: Bodies,
        bus: Option<Bus>,
        in_ram: bool,
    ) -> Result<Self, StoreError> {
        ron_kernel::schema::check_or_stamp(&db, &SCHEMA)?;
        let store = Self {
            db: Arc::new(db),
            pinned: Arc::default(),
            bodies: Arc::new(bodies),
            spare: Arc::default(),
            budget: None,
            bus,
            cache: None,
            exported: Arc::new(Mutex::new(0)),
            hashed: Arc::default(),
            trees: Arc::default(),
            group: Arc::new(if in_ram {
                ron_kernel::db::GroupCommit::in_ram()
            } else {
                ron_kernel::db::GroupCommit::default()
            }),
        };
        let txn = store.db.begin_write().map_err(db_err)?;
        let totals = {
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let tails = txn.open_table(CHUNK_TAILS).map_err(db_err)?;
            txn.open_table(REFS).map_err(db_err)?;
            txn.open_table(UPLOADS).map_err(db_err)?;
            txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            txn.open_table(UPLOAD_CVS).map_err(db_err)?;
            txn.open_table(UPLOAD_PACKS).map_err(db_err)?;
            txn.open_table(OUTBOARDS).map_err(db_err)?;
            let mut totals = txn.open_table(TOTALS).map_err(db_err)?;
            match read_totals(&totals)? {
                Some(t) => t,
                None => {
                    // A new store, or one written before the totals row
                    // existed: count once, then keep counting per commit.
                    let st = store.scan(&objects, &chunks, &tails)?;
                    totals
                        .insert(
                            TOTALS_KEY,
                            (0, st.objects, st.chunks, st.logical_bytes, st.stored_bytes),
                        )
                        .map_err(db_err)?;
                    (0, st)
                }
            }
        };
        txn.commit().map_err(db_err)?;
        store.export(Some(totals));
        store.gc()?;
        Ok(store)
    }

    /// Exports committed totals as gauges unless newer ones already are.
    fn export(&self, totals: Option<Totals>) {
        let Some((seq, st)) = totals else { return };
        let mut last = lock(&self.exported);
        if seq >= *last {
            *last = seq;
            st.export();
        }
    }

    /// Keeps up to `bytes` of verified chunks (and their objects' records)
    /// in RAM; 0 turns the cache off. Under amnesia a cached chunk is the
    /// stored allocation itself, so the cache costs no more bytes.
    pub fn with_read_cache(mut self, bytes: u64) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(ReadCache::new(bytes)));
        self
    }

    /// Caps stored chunk bytes at `max_bytes` (0: no cap). With `keep`
    /// (amnesia) room is made by evicting the least recently used objects
    /// whose addresses `keep` does not return; without it a write that
    /// does not fit fails with `Full`.
    pub fn with_budget(mut self, max_bytes: u64, keep: Option<KeepFn>) -> Self {
        self.budget = (max_bytes > 0).then(|| {
            Arc::new(Budget {
                max_bytes,
                evict: keep.map(|keep| Eviction {
                    keep,
                    clock: AtomicU64::new(1),
                    used: RwLock::default(),
                    running: Mutex::new(()),
                }),
            })
        });
        self
    }

    fn max_bytes(&self) -> Option<u64> {
        self.budget.as_ref().map(|b| b.max_bytes)
    }

    /// Marks `address` as just used (for eviction order).
    fn touch(&self, address: &[u8; 32]) {
        let Some(ev) = self.budget.as_ref().and_then(|b| b.evict.as_ref()) else {
            return;
        };
        let now = ev.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = read(&ev.used).get(address) {
            t.store(now, Ordering::Relaxed);
            return;
        }
        write(&ev.used).insert(*address, AtomicU64::new(now));
    }

    /// Runs `f` (a write transaction that may add chunk bytes); when the
    /// budget has no room, makes room and runs it again.
    fn with_room<T>(&self, mut f: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A few rounds: concurrent writers may take the room one made.
        for _ in 0..8 {
            match f() {
                Err(StoreError::Full {
                    need, evicts: true, ..
                }) if self.make_room(need)? => continue,
                r => return r,
            }
        }
        f()
    }

    /// Evicts until `need` more bytes fit (down to the low-water mark).
    /// Returns whether they fit now.
    fn make_room(&self, need: u64) -> Result<bool, StoreError> {
        let Some(budget) = &self.budget else {
            return Ok(true);
        };
        let Some(ev) = &budget.evict else {
            return Ok(false);
        };
        let fits = |stored: u64| stored.saturating_add(need) <= budget.max_bytes;
        let _one = lock(&ev.running);
        if fits(self.stats()?.stored_bytes) {
            return Ok(true); // another writer's eviction made it
        }
        self.gc()?;
        let low = budget.low_water(need);
        let mut stored = self.stats()?.stored_bytes;
        if stored <= low {
            return Ok(fits(stored));
        }
        let Some(keep) = (ev.keep)() else {
            tracing::warn!("storage full: cannot tell which objects are named; evicting nothing");
            return Ok(false);
        };
        let mut candidates = Vec::new();
        {
            let txn = self.db.begin_read().map_err(db_err)?;
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let used = read(&ev.used);
            for entry in objects.iter().map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let address = *k.value();
                if keep.contains(&ContentAddress::from_bytes(address)) {
                    continue;
                }
                let last = used.get(&address).map_or(0, |t| t.load(Ordering::Relaxed));
                candidates.push((last, address));
            }
        }
        candidates.sort_unstable();
        let mut evicted = 0u64;
        for (_, address) in candidates {
            if stored <= low {
                break;
            }
            let address = ContentAddress::from_bytes(address);
            if self.delete(&address)? {
                evicted += 1;
                metrics::counter!(names::STORAGE_EVICTIONS_TOTAL).increment(1);
                tracing::debug!(%address, "evicted to make room");
            }
            stored = self.stats()?.stored_bytes;
        }
        if evicted > 0 {
            tracing::info!(
                evicted,
                stored_bytes = stored,
                max_bytes = budget.max_bytes,
                "storage budget full: evicted least recently used unnamed objects"
            );
        }
        Ok(fits(stored))
    }

    fn pin(&self, hash: &[u8; 32]) {
        *lock(&self.pinned).entry(*hash).or_insert(0) += 1;
    }

    fn unpin(&self, hashes: &[[u8; 32]]) {
        let mut p = lock(&self.pinned);
        for h in hashes {
            if let Some(n) = p.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    p.remove(h);
                }
            }
        }
    }

    /// Whether chunk `hash` has a row.
    fn has_chunk(chunks: &ChunkTable<'_>, hash: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(chunks.rows.get(hash).map_err(db_err)?.is_some())
    }

    /// Inserts chunk `hash` (which has no row: `has_chunk`). Callers check
    /// the budget first (`check_room`), so a write the budget refuses
    /// leaves no bytes behind. `owned` is `data` when the caller holds it
    /// as `Bytes`: a full chunk is then kept in RAM without a copy.
    fn insert_chunk(
        &self,
        chunks: &mut ChunkTable<'_>,
        hash: &[u8; 32],
        data: &[u8],
        owned: Option<&Bytes>,
    ) -> Result<(), StoreError> {
        match &*self.bodies {
            Bodies::Table => {
                let (row, tail) = data.split_at(data.len().min(ROW_BYTES));
                chunks.rows.insert(hash, row).map_err(db_err)?;
                if !tail.is_empty() {
                    chunks.tails.insert(hash, tail).map_err(db_err)?;
                }
            }
            Bodies::Ram(map) => {
                // A chunk that fills less than its allocation is copied into
                // one of its own size, so RAM holds what is stored.
                let body = match owned {
                    Some(b) if b.len() == CHUNK_BYTES => b.clone(),
                    _ => Bytes::copy_from_slice(data),
                };
                write(map).insert(*hash, body);
                chunks.rows.insert(hash, &[][..]).map_err(db_err)?;
            }
            Bodies::Remote(_) => {
                // The bytes go to the bucket in a pack or the manifest:
                // only the row is kept here.
                chunks
                    .rows
                    .insert(hash, &remote_row(data.len())[..])
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }

    /// Removes chunk `hash`'s row; returns its length if it was there. The
    /// bytes go when the caller's transaction has committed (`forget`).
    fn remove_chunk(
        &self,
        chunks: &mut ChunkTable<'_>,
        hash: &[u8; 32],
    ) -> Result<Option<usize>, StoreError> {
        let Some(old) = chunks.rows.remove(hash).map_err(db_err)? else {
            return Ok(None);
        };
        Ok(Some(match &*self.bodies {
            Bodies::Table => {
                let tail = chunks.tails.remove(hash).map_err(db_err)?;
                old.value().len() + tail.map_or(0, |t| t.value().len())
            }
            Bodies::Ram(map) => read(map).get(hash).map_or(0, Bytes::len),
            // The bucket's copy stays: other replicas' objects may name it
            // (only the bucket's sweep deletes chunks there).
            Bodies::Remote(_) => remote_row_len(old.value()),
        }))
    }

    /// Drops the RAM bytes of chunks whose rows a commit removed; the
    /// buffers of full chunks nobody else holds go to `spare`.
    fn forget(&self, hashes: &[[u8; 32]]) {
        if let Bodies::Ram(map) = &*self.bodies {
            let removed: Vec<Bytes> = {
                let mut m = write(map);
                hashes.iter().filter_map(|h| m.remove(h)).collect()
            };
            let mut spare = lock(&self.spare);
            for body in removed {
                if body.len() == CHUNK_BYTES && spare.len() < SPARE_BUFFERS {
                    if let Ok(mut buf) = body.try_into_mut() {
                        buf.clear();
                        spare.push(buf);
                    }
                }
            }
        }
    }

    /// An empty buffer for the next chunk: a spare one, or a new one.
    fn chunk_buffer(&self) -> BytesMut {
        lock(&self.spare)
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(CHUNK_BYTES))
    }

    /// Counts objects and chunks by reading every record (`init`, `scan_stats`).
    fn scan(
        &self,
        objects: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        chunks: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        tails: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    ) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        for entry in objects.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            let raw = v.value();
            if raw.len() >= 8 {
                let mut size = [0u8; 8];
                size.copy_from_slice(&raw[..8]);
                s.logical_bytes += u64::from_be_bytes(size);
            }
            s.objects += 1;
        }
        let ram = match &*self.bodies {
            Bodies::Ram(map) => Some(read(map)),
            Bodies::Table | Bodies::Remote(_) => None,
        };
        for entry in chunks.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            s.stored_bytes += match (&ram, &*self.bodies) {
                (Some(m), _) => m.get(k.value()).map_or(0, Bytes::len),
                (None, Bodies::Remote(_)) => remote_row_len(v.value()),
                (None, _) => {
                    v.value().len()
                        + tails
                            .get(k.value())
                            .map_err(db_err)?
                            .map_or(0, |t| t.value().len())
                }
            } as u64;
            s.chunks += 1;
        }
        Ok(s)
    }

    /// The record of `address` if the cache holds it (never touches redb).
    pub fn cached_meta(&self, address: &ContentAddress) -> Option<Arc<ObjectMeta>> {
        let m = self.cache.as_ref()?.meta.get(address.as_bytes())?;
        self.touch(address.as_bytes());
        Some(m)
    }

    /// The verified pieces of `range` of `meta`'s object if every chunk the
    /// range touches is cached (never touches redb); `range` must lie within
    /// the object.
    pub fn cached_pieces(&self, meta: &ObjectMeta, range: Range<u64>) -> Option<Vec<Bytes>> {
        let cache = self.cache.as_ref()?;
        if range.is_empty() || range.end > meta.size {
            return None;
        }
        let chunk = CHUNK_BYTES as u64;
        let first = (range.start / chunk) as usize;
        let last = ((range.end - 1) / chunk) as usize;
        let mut out = Vec::with_capacity(last - first + 1);
        for idx in first..=last {
            let data = cache.chunks.get(meta.chunks.get(idx)?)?;
            let start = idx as u64 * chunk;
            let from = range.start.saturating_sub(start) as usize;
            let to = ((range.end - start) as usize).min(data.len());
            if from >= to {
                return None; // shorter than the record says: let the slow path report it
            }
            out.push(data.slice(from..to));
        }
        Some(out)
    }

    /// Starts writing a new object.
    pub fn writer(&self) -> ObjectWriter {
        ObjectWriter {
            store: self.clone(),
            buf: self.chunk_buffer(),
            chunks: Vec::new(),
            pins: Vec::new(),
            fresh: Vec::new(),
            kept: false,
            size: 0,
            unsent: Vec::new(),
            staged: Vec::with_capacity(STAGED_CHUNKS),
            runs: Vec::new(),
        }
    }

    /// Stores `data` whole (for small objects and tests).
    pub fn put(&self, data: &[u8]) -> Result<(ObjectMeta, bool), StoreError> {
        let mut w = self.writer();
        w.write(data)?;
        w.finish()
    }

    pub fn head(&self, address: &ContentAddress) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.head_shared(address)?.map(|m| (*m).clone()))
    }

    /// The object's BLAKE3 tree: as stored (`outboards`), else made once
    /// — from its record when the chunk ids are the tree's leaves, from one
    /// verified read of its chunks when they are not — and stored.
    pub fn tree(
        &self,
        address: &ContentAddress,
    ) -> Result<Option<Arc<outboard::Tree>>, StoreError> {
        if let Some(t) = lock(&self.trees).get(address.as_bytes()) {
            return Ok(Some(t.clone()));
        }
        let tree = self.tree_uncached(address)?.map(Arc::new);
        if let Some(t) = &tree {
            let mut trees = lock(&self.trees);
            if trees.len() >= TREES {
                // The cache is small: start it over rather than track use.
                trees.clear();
            }
            trees.insert(*address.as_bytes(), t.clone());
        }
        Ok(tree)
    }

    fn tree_uncached(
        &self,
        address: &ContentAddress,
    ) -> Result<Option<outboard::Tree>, StoreError> {
        let stored = {
            let txn = self.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(OUTBOARDS).map_err(db_err)?;
            let row = table.get(address.as_bytes()).map_err(db_err)?;
            row.map(|raw| outboard::Tree::from_bytes(address.as_bytes(), raw.value()))
        };
        match stored {
            Some(Ok(t)) => return Ok(Some(t)),
            Some(Err(e)) => {
                tracing::warn!(%address, error = %e, "a stored object tree is damaged; making it again");
            }
            None => {}
        }
        let Some(meta) = self.head_shared(address)? else {
            return Ok(None);
        };
        let tree = if outboard::root(&meta.chunks, meta.size) == *address.as_bytes() {
            outboard::Tree::new(meta.size, meta.chunks.clone()).ok()
        } else {
            let (meta, reader) = self.read(address, None)?;
            let n = meta.chunks.len();
            // The reader yields whole chunks, in order.
            let leaves = reader
                .enumerate()
                .map(|(i, piece)| piece.map(|p| outboard::leaf_hash(i as u64, &p, n == 1)))
                .collect::<Result<Vec<_>, _>>()?;
            outboard::Tree::new(meta.size, leaves).ok()
        };
        let tree = tree.ok_or_else(|| StoreError::Integrity {
            address: address.to_string(),
            what: "the object's chunks do not make its tree",
        })?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        {
            // Only for an object still here (a delete may have come since).
            let here = txn
                .open_table(OBJECTS)
                .map_err(db_err)?
                .get(address.as_bytes())
                .map_err(db_err)?
                .is_some();
            if here {
                txn.open_table(OUTBOARDS)
                    .map_err(db_err)?
                    .insert(address.as_bytes(), &tree.to_bytes()[..])
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(Some(tree))
    }

    /// Bytes this store has run through BLAKE3 since it opened: chunks
    /// written (not those stored under a hash a caller verified) and
    /// chunks verified on read.
    pub fn hashed_bytes(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// The object's record, from the cache or from redb (then cached).
    pub fn head_shared(
        &self,
        address: &ContentAddress,
    ) -> Result<Option<Arc<ObjectMeta>>, StoreError> {
        if let Some(m) = self.cached_meta(address) {
            return Ok(Some(m));
        }
        // Read the epoch before the snapshot: a delete that commits after
        // our snapshot began bumps it, and we take back what we cached.
        let epoch = self.cache.as_ref().map(|c| c.epoch.load(Ordering::SeqCst));
        let meta = match &*self.bodies {
            // With a bucket the manifest is the object, whichever replica
            // wrote it (or deleted it since): this node's record is only
            // the bookkeeping of its own writes.
            Bodies::Remote(r) => match r.get_manifest(address.as_bytes())? {
                Some(raw) => ObjectMeta::from_manifest(*address, raw),
                None => return Ok(None),
            },
            _ => {
                let txn = self.db.begin_read().map_err(db_err)?;
                let objects = txn.open_table(OBJECTS).map_err(db_err)?;
                match objects.get(address.as_bytes()).map_err(db_err)? {
                    Some(raw) => ObjectMeta::decode(*address, raw.value()),
                    None => return Ok(None),
                }
            }
        };
        self.admit(address, meta, epoch).map(Some)
    }

    /// `head_shared` for a store on a bucket, from async code: the
    /// manifest is asked for in the caller's task, no blocking thread
    /// waits on it. `None` also when the store has no bucket.
    pub async fn head_remote(
        &self,
        address: &ContentAddress,
    ) -> Result<Option<Arc<ObjectMeta>>, StoreError> {
        let Bodies::Remote(r) = &*self.bodies else {
            return Ok(None);
        };
        if let Some(m) = self.cached_meta(address) {
            return Ok(Some(m));
        }
        let epoch = self.cache.as_ref().map(|c| c.epoch.load(Ordering::SeqCst));
        let meta = match r.get_manifest_async(address.as_bytes()).await? {
            Some(raw) => ObjectMeta::from_manifest(*address, raw),
            None => return Ok(None),
        };
        self.admit(address, meta, epoch).map(Some)
    }

    /// A record just read (`epoch`: the cache's delete epoch before the
    /// read began): a bad one is an integrity failure; a good one is
    /// touched and cached unless a delete committed meanwhile.
    fn admit(
        &self,
        address: &ContentAddress,
        meta: Result<ObjectMeta, StoreError>,
        epoch: Option<u64>,
    ) -> Result<Arc<ObjectMeta>, StoreError> {
        let meta = Arc::new(meta.inspect_err(|e| self.integrity_failure(address, e))?);
        self.touch(address.as_bytes());
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            let record = match meta.placement {
                Some(_) => Arc::new(meta.record_only()),
                None => meta.clone(),
            };
            cache.meta.insert(*address.as_bytes(), record);
            if cache.epoch.load(Ordering::SeqCst) != epoch {
                cache.meta.remove(address.as_bytes());
            }
        }
        Ok(meta)
    }

    /// Chunk `idx` of the object, verified against its id (a cache hit
    /// was verified when it entered the cache).
    fn read_chunk(
        &self,
        source: &mut Source,
        idx: usize,
        meta: &ObjectMeta,
        ids: &mut Option<Ids>,
    ) -> Result<Bytes, StoreError> {
        let address = &meta.address;
        let Some(hash) = meta.chunks.get(idx) else {
            return Err(StoreError::Integrity {
                address: address.to_string(),
                what: "a chunk is past the object's record",
            });
        };
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.chunks.get(hash)) {
            return Ok(hit);
        }
        let data = match source {
            Source::Table(t) => table_chunk(&t.0, &t.1, hash)?,
            Source::Ram { first, bodies } => idx
                .checked_sub(*first)
                .and_then(|i| bodies.get(i))
                .cloned()
                .flatten(),
            // `fetch_ahead` put it there (or found it missing).
            Source::Remote { ahead, .. } => ahead.remove(&idx),
        };
        let Some(data) = data else {
            let e = StoreError::Integrity {
                address: address.to_string(),
                what: "a chunk of the object is missing",
            };
            self.integrity_failure(address, &e);
            return Err(e);
        };
        let known = ids.is_some();
        let matched = meta.chunk_matches(idx, &data, ids);
        // A reader's first chunk of an upload-made object was hashed twice.
        let passes = if !known && *ids == Some(Ids::Own) && meta.chunks.len() > 1 {
            2
        } else {
            1
        };
        self.hashed
            .fetch_add(passes * data.len() as u64, Ordering::Relaxed);
        if !matched {
            let e = StoreError::Integrity {
                address: address.to_string(),
                what: "a chunk does not match its hash",
            };
            self.integrity_failure(address, &e);
            return Err(e);
        }
        if let Some(c) = &self.cache {
            c.chunks.insert(*hash, data.clone());
        }
        Ok(data)
    }

    fn integrity_failure(&self, address: &ContentAddress, e: &StoreError) {
        metrics::counter!(names::STORAGE_INTEGRITY_ERRORS_TOTAL).increment(1);
        tracing::error!(%address, error = %e, "storage integrity error: nothing served");
        if let Some(bus) = &self.bus {
            bus.publish(KernelEvent::IntegrityFailed {
                service: "storage".into(),
                address: address.to_string(),
                what: e.to_string(),
            });
        }
    }

    /// A reader over `range` of the object (the whole object for `None`),
    /// yielding verified pieces in order.
    pub fn read(
        &self,
        address: &ContentAddress,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let meta = self.head_shared(address)?.ok_or(StoreError::NotFound)?;
        self.read_meta(address, meta, range)
    }

    /// `read`, for a caller that already looked the record up
    /// (`head_shared`): no second lookup (with a bucket, no second
    /// manifest request).
    pub fn read_meta(
        &self,
        address: &ContentAddress,
        meta: Arc<ObjectMeta>,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let range = match range {
            None => 0..meta.size,
            Some(r)
                if r.start <= r.end
                    && r.end <= meta.size
                    && (r.start < meta.size || meta.size == 0 && r.start == 0) =>
            {
                r
            }
            Some(_) => return Err(StoreError::RangeNotSatisfiable { size: meta.size }),
        };
        // One snapshot for the whole read: every piece comes from the same
        // consistent state, and no transaction is opened per chunk. In RAM
        // the snapshot is the chunks' `Bytes` themselves, taken now, so an
        // eviction or delete meanwhile does not cut the read short.
        let source = match &*self.bodies {
            Bodies::Remote(r) => Source::Remote {
                remote: r.clone(),
                placement: meta.placement.clone(),
                ahead: HashMap::new(),
            },
            Bodies::Table => {
                let txn = self.db.begin_read().map_err(db_err)?;
                Source::Table(Box::new((
                    txn.open_table(CHUNKS).map_err(db_err)?,
                    txn.open_table(CHUNK_TAILS).map_err(db_err)?,
                )))
            }
            Bodies::Ram(map) => {
                let chunk = CHUNK_BYTES as u64;
                let first = (range.start / chunk) as usize;
                let last = (range.end.div_ceil(chunk) as usize).max(first);
                let m = read(map);
                Source::Ram {
                    first,
                    bodies: meta.chunks[first.min(meta.chunks.len())..last.min(meta.chunks.len())]
                        .iter()
                        .map(|h| m.get(h).cloned())
                        .collect(),
                }
            }
        };
        let reader = ObjectReader {
            store: self.clone(),
            source,
            address: *address,
            meta: meta.clone(),
            ids: None,
            pos: range.start,
            end: range.end,
        };
        Ok(((*meta).clone(), reader))
    }

    /// Reads and verifies a whole object into memory (tests, small objects).
    pub fn get(&self, address: &ContentAddress) -> Result<Bytes, StoreError> {
        let (meta, reader) = self.read(address, None)?;
        let mut out = BytesMut::with_capacity(meta.size as usize);
        for piece in reader {
            out.extend_from_slice(&piece?);
        }
        Ok(out.freeze())
    }

    /// Deletes an object; chunks it shared with other objects, or that an
    /// unfinished write holds, survive. Returns whether it existed.
    pub fn delete(&self, address: &ContentAddress) -> Result<bool, StoreError> {
        // The bucket's manifest first: once it is gone no replica serves
        // the object, whatever this node's record says.
        let in_bucket = match &*self.bodies {
            Bodies::Remote(r) => r.delete_manifest(address.as_bytes())?,
            _ => false,
        };
        let here = self.delete_record(address)?;
        if in_bucket && !here {
            if let Some(cache) = &self.cache {
                cache.epoch.fetch_add(1, Ordering::SeqCst);
                cache.meta.remove(address.as_bytes());
            }
        }
        Ok(in_bucket || here)
    }

    /// Deletes this node's record of an object and releases its chunks.
    fn delete_record(&self, address: &ContentAddress) -> Result<bool, StoreError> {
        let mut freed = Vec::new();
        let mut delta = Delta::default();
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let meta = match objects.remove(address.as_bytes()).map_err(db_err)? {
                Some(raw) => ObjectMeta::decode(*address, raw.value())?,
                None => return Ok(false),
            };
            txn.open_table(OUTBOARDS)
                .map_err(db_err)?
                .remove(address.as_bytes())
                .map_err(db_err)?;
            lock(&self.trees).remove(address.as_bytes());
            delta.object(-1, meta.size);
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            let mut chunks = ChunkTable::open(&txn)?;
            let pinned = lock(&self.pinned);
            for c in &meta.chunks {
                if release_ref(&mut refs, c)? && !pinned.contains_key(c) {
                    if let Some(len) = self.remove_chunk(&mut chunks, c)? {
                        delta.chunk(-1, len);
                        freed.push(*c);
                    }
                }
            }
        }
        let totals = apply_delta(&txn, &delta)?;
        self.group.commit(&self.db, txn).map_err(db_err)?;
        if let Some(cache) = &self.cache {
            cache.epoch.fetch_add(1, Ordering::SeqCst);
            cache.meta.remove(address.as_bytes());
            for c in &freed {
                cache.chunks.remove(c);
            }
        }
        // After the cache let go of them, so their buffers can be reused.
        self.forget(&freed);
        self.export(totals);
        if let Some(ev) = self.budget.as_ref().and_then(|b| b.evict.as_ref()) {
            write(&ev.used).remove(address.as_bytes());
        }
        Ok(true)
    }

    /// Removes chunks no object or upload references and no unfinished
    /// write holds. Returns how many were removed.
    pub fn gc(&self) -> Result<usize, StoreError> {
        self.collect(None)
    }

    /// Removes those of `only` (every chunk for `None`) that nothing
    /// references or holds; returns how many.
    fn collect(&self, only: Option<&[[u8; 32]]>) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut delta = Delta::default();
        let mut freed = Vec::new();
        {
            let refs = txn.open_table(REFS).map_err(db_err)?;
            let mut chunks = ChunkTable::open(&txn)?;
            let pinned = lock(&self.pinned);
            let candidates: Vec<[u8; 32]> = match only {
                Some(hashes) => hashes.to_vec(),
                None => {
                    let mut all = Vec::new();
                    for entry in chunks.rows.iter().map_err(db_err)? {
                        all.push(*entry.map_err(db_err)?.0.value());
                    }
                    all
                }
            };
            for k in &candidates {
                if pinned.contains_key(k) || refs.get(k).map_err(db_err)?.is_some() {
                    continue;
                }
                if let Some(len) = self.remove_chunk(&mut chunks, k)? {
                    delta.chunk(-1, len);
                    freed.push(*k);
                }
            }
            // RAM bytes whose row never committed (a failed transaction).
            if let (None, Bodies::Ram(map)) = (only, &*self.bodies) {
                for k in read(map).keys() {
                    if !pinned.contains_key(k) && !Self::has_chunk(&chunks, k)? {
                        freed.push(*k);
                    }
                }
            }
        }
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.forget(&freed);
        self.export(totals);
        Ok((-delta.chunks) as usize)
    }

    /// With a bucket: deletes the chunks there that no manifest names and
    /// that are older than `grace` (`ronctl storage gc`); returns how many.
    /// A store without a bucket has nothing to sweep (its `gc` runs at
    /// every open and after every failed write).
    pub fn sweep(&self, grace: std::time::Duration) -> Result<usize, StoreError> {
        let Bodies::Remote(r) = &*self.bodies else {
            return Ok(0);
        };
        Ok(r.sweep(grace, |address, raw| {
            let (record, runs, _) = pack::decode_header(address, raw).ok()?;
            ObjectMeta::decode(ContentAddress::from_bytes(*address), record).ok()?;
            Some(runs.into_iter().map(|r| r.pack).collect())
        })?)
    }

    /// The store's totals, as its last commit left them (one row read).
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let totals = txn.open_table(TOTALS).map_err(db_err)?;
        read_totals(&totals)?
            .map(|(_, st)| st)
            .ok_or_else(|| StoreError::Db("the totals row is missing".into()))
    }

    /// The totals counted by reading every object record and chunk: what
    /// `stats` must always equal (an audit; costs a pass over the store).
    pub fn scan_stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let objects = txn.open_table(OBJECTS).map_err(db_err)?;
        let chunks = txn.open_table(CHUNKS).map_err(db_err)?;
        let tails = txn.open_table(CHUNK_TAILS).map_err(db_err)?;
        self.scan(&objects, &chunks, &tails)
    }

    /// Whether a write transaction can be opened and committed (readiness).
    pub fn writable(&self) -> bool {
        ron_kernel::db::writable(&self.db)
    }
}

/// Where a resumable upload stands. Parts are cut into chunks as they
/// arrive; what does not fill a chunk yet is kept as the `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub next_part: u64,
    pub size: u64,
    pub chunks: u64,
    /// BLAKE3 of the last acknowledged part, to recognise its retry.
    pub last_part: [u8; 32],
    pub tail: Vec<u8>,
}

impl UploadState {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(56 + self.tail.len());
        v.extend_from_slice(&self.next_part.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.chunks.to_be_bytes());
        v.extend_from_slice(&self.last_part);
        v.extend_from_slice(&self.tail);
        v
    }

    fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        if raw.len() < 56 {
            return Err(StoreError::Db("upload record too short".into()));
        }
        let u = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let mut last_part = [0u8; 32];
        last_part.copy_from_slice(&raw[24..56]);
        Ok(Self {
            next_part: u(0),
            size: u(8),
            chunks: u(16),
            last_part,
            tail: raw[56..].to_vec(),
        })
    }
}

/// A part's full chunks as `ship_part` hashed them (and, with a bucket,
/// put them as one pack), and the upload state they follow.
struct Shipped {
    from: UploadState,
    /// The upload's tail, then the part.
    pending: Bytes,
    hashes: Vec<[u8; 32]>,
    cvs: Vec<[u8; 32]>,
    pack: Option<[u8; 32]>,
}

/// What happened to an uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    Stored(UploadState),
    /// The part just before `next_part`, sent again with the same bytes
    /// (its acknowledgement was lost): nothing changes.
    Duplicate(UploadState),
}

impl ObjectStore {
    /// Starts a resumable upload; returns its id.
    pub fn upload_create(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let id = {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            let mut id = fastrand::u64(1..);
            while uploads.get(id).map_err(db_err)?.is_some() {
                id = fastrand::u64(1..);
            }
            let st = UploadState {
                next_part: 0,
                size: 0,
                chunks: 0,
                last_part: [0; 32],
                tail: Vec::new(),
            };
            uploads.insert(id, &st.encode()[..]).map_err(db_err)?;
            id
        };
        self.group.commit(&self.db, txn).map_err(db_err)?;
        Ok(id)
    }

    pub fn upload_state(&self, id: u64) -> Result<UploadState, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let uploads = txn.open_table(UPLOADS).map_err(db_err)?;
        let raw = uploads
            .get(id)
            .map_err(db_err)?
            .ok_or(StoreError::UploadNotFound)?;
        UploadState::decode(raw.value())
    }

    /// Appends part `n` (parts go in order from 0). Durable when this
    /// returns: a crash afterwards loses nothing of it.
    pub fn upload_part(&self, id: u64, n: u64, data: Bytes) -> Result<PartOutcome, StoreError> {
        self.with_room(|| self.upload_part_once(id, n, &data))
    }

    fn upload_part_once(&self, id: u64, n: u64, data: &Bytes) -> Result<PartOutcome, StoreError> {
        let shipped = match &*self.bodies {
            Bodies::Remote(r) => self.ship_part(r, id, n, data)?,
            _ => None,
        };
        let part_hash = *blake3::hash(data).as_bytes();
        let mut delta = Delta::default();
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = 'outcome: {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            let mut st = match uploads.get(id).map_err(db_err)? {
                Some(raw) => UploadState::decode(raw.value())?,
                None => return Err(StoreError::UploadNotFound),
            };
            // Checked: a client may send any part number, u64::MAX too.
            if n.checked_add(1) == Some(st.next_part) && part_hash == st.last_part {
                break 'outcome PartOutcome::Duplicate(st);
            }
            if n != st.next_part {
                return Err(StoreError::PartOutOfOrder {
                    expected: st.next_part,
                    got: n,
                });
            }
            if matches!(*self.bodies, Bodies::Remote(_))
                && shipped.as_ref().is_none_or(|sh| sh.from != st)
            {
                // Another request moved the upload on between our pack
                // and this transaction.
                return Err(StoreError::PartOutOfOrder {
                    expected: st.next_part,
                    got: n,
                });
            }
            let mut chunks = ChunkTable::open(&txn)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            let mut list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            let first = st.chunks;
            let pending = match &shipped {
                Some(sh) => sh.pending.clone(),
                None => joined(&std::mem::take(&mut st.tail), data),
            };
            let full = pending.chunks_exact(CHUNK_BYTES);
            st.tail = full.remainder().to_vec();
            // First what is new (and so what the budget must hold), then
            // the bytes: a part the budget refuses leaves nothing behind.
            let hashed: Vec<([u8; 32], &[u8])> = match &shipped {
                Some(sh) => sh.hashes.iter().copied().zip(full).collect(),
                None => full
                    .map(|chunk| (*blake3::hash(chunk).as_bytes(), chunk))
                    .collect(),
            };
            let mut new = Vec::new();
            let mut seen = HashSet::new();
            for (hash, chunk) in &hashed {
                if seen.insert(*hash) && !Self::has_chunk(&chunks, hash)? {
                    delta.chunk(1, chunk.len());
                    new.push((*hash, *chunk));
                }
            }
            self.check_room(&txn, delta.stored.max(0) as u64)?;
            for (hash, chunk) in &new {
                self.insert_chunk(&mut chunks, hash, chunk, None)?;
            }
            for (hash, _) in &hashed {
                add_ref(&mut refs, hash)?;
                list.insert((id, st.chunks), hash).map_err(db_err)?;
                st.chunks += 1;
            }
            if let Some(Shipped {
                cvs,
                pack: Some(pack),
                ..
            }) = &shipped
            {
                let mut cv_rows = txn.open_table(UPLOAD_CVS).map_err(db_err)?;
                for (i, cv) in (first..).zip(cvs) {
                    cv_rows.insert((id, i), cv).map_err(db_err)?;
                }
                let mut row = pack.to_vec();
                row.extend_from_slice(&(cvs.len() as u32).to_be_bytes());
                txn.open_table(UPLOAD_PACKS)
                    .map_err(db_err)?
                    .insert((id, first), &row[..])
                    .map_err(db_err)?;
            }
            st.size += data.len() as u64;
            st.next_part += 1;
            st.last_part = part_hash;
            uploads.insert(id, &st.encode()[..]).map_err(db_err)?;
            PartOutcome::Stored(st)
        };
        if let PartOutcome::Duplicate(_) = outcome {
            // The first of the two may still be on its way to the disk:
            // answered once it is there, like the first.
            drop(txn);
            self.group.settle(&self.db).map_err(db_err)?;
            return Ok(outcome);
        }
        let totals = apply_delta(&txn, &delta)?;
        self.group.commit(&self.db, txn).map_err(db_err)?;
        self.export(totals);
        Ok(outcome)
    }

    /// With a bucket: hashes the full chunks part `n` of upload `id`
    /// completes and puts them in the bucket as one pack, before the
    /// transaction that records them; `None` when `n` is not the part the
    /// upload expects (that transaction tells the client which it is).
    fn ship_part(
        &self,
        r: &Remote,
        id: u64,
        n: u64,
        data: &Bytes,
    ) -> Result<Option<Shipped>, StoreError> {
        let st = self.upload_state(id)?;
        if n != st.next_part {
            return Ok(None);
        }
        let pending = joined(&st.tail, data);
        let full = pending.len() / CHUNK_BYTES * CHUNK_BYTES;
        let (hashes, cvs): (Vec<[u8; 32]>, Vec<[u8; 32]>) = pending[..full]
            .chunks_exact(CHUNK_BYTES)
            .zip(st.chunks..)
            .map(|(c, i)| (*blake3::hash(c).as_bytes(), outboard::group_cv(i, c)))
            .unzip();
        let pack = match hashes.is_empty() {
            true => None,
            false => {
                let key = pack::pack_key(&hashes);
                r.put_pack(&key, vec![pending.slice(..full)])?;
                Some(key)
            }
        };
        Ok(Some(Shipped {
            from: st,
            pending,
            hashes,
            cvs,
            pack,
        }))
    }

    /// Fails with `Full` when the budget has no room for `need` more bytes
    /// as `txn` sees the totals: called before a transaction keeps any
    /// chunk bytes, so a write the budget refuses leaves nothing behind.
    fn check_room(&self, txn: &redb::WriteTransaction, need: u64) -> Result<(), StoreError> {
        let Some(max) = self.max_bytes() else {
            return Ok(());
        };
        if need == 0 {
            return Ok(());
        }
        let t = txn.open_table(TOTALS).map_err(db_err)?;
        let stored = read_totals(&t)?.map_or(0, |(_, st)| st.stored_bytes);
        if stored.saturating_add(need) > max {
            let evicts = self.budget.as_ref().is_some_and(|b| b.evict.is_some());
            return Err(StoreError::Full { need, max, evicts });
        }
        Ok(())
    }

    /// Runs `f` on chunk `hash`'s bytes, wherever they live; `None` when
    /// the chunk is not there.
    fn with_chunk<R>(
        &self,
        txn: &redb::ReadTransaction,
        hash: &[u8; 32],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        match &*self.bodies {
            Bodies::Table => {
                let rows = txn.open_table(CHUNKS).map_err(db_err)?;
                let tails = txn.open_table(CHUNK_TAILS).map_err(db_err)?;
                Ok(table_chunk(&rows, &tails, hash)?.map(|b| f(&b)))
            }
            Bodies::Ram(map) => {
                let body = read(map).get(hash).cloned();
                Ok(body.map(|b| f(&b)))
            }
            // Never read back: an upload to a bucket keeps its chunks'
            // chaining values instead (`bucket_upload`).
            Bodies::Remote(_) => Ok(None),
        }
    }

    /// Turns a finished upload into an object and forgets the upload.
    /// Returns the object and whether it is new.
    pub fn upload_complete(&self, id: u64) -> Result<(ObjectMeta, bool), StoreError> {
        let st = self.upload_state(id)?;
        let (meta, manifest) = match &*self.bodies {
            Bodies::Remote(r) => self.bucket_upload(r, id, &st)?,
            _ => (self.hash_upload(id, &st)?, None),
        };
        let tail_hash = (!st.tail.is_empty())
            .then(|| meta.chunks.last().copied())
            .flatten();
        let (meta, created) =
            self.with_room(|| self.complete_once(id, &st, &meta, manifest.clone(), tail_hash))?;
        self.touch(meta.address.as_bytes());
        Ok((meta, created))
    }

    /// The chunk hashes an upload's parts made, in order.
    fn upload_chunks(
        txn: &redb::ReadTransaction,
        id: u64,
        st: &UploadState,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
        (0..st.chunks)
            .map(|i| {
                Ok(*list
                    .get((id, i))
                    .map_err(db_err)?
                    .ok_or_else(|| StoreError::Db("upload chunk list has a gap".into()))?
                    .value())
            })
            .collect()
    }

    /// Removes an upload's chunk list, chaining values and packs.
    fn forget_upload_rows(
        txn: &redb::WriteTransaction,
        id: u64,
        st: &UploadState,
    ) -> Result<(), StoreError> {
        let mut list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
        let mut cvs = txn.open_table(UPLOAD_CVS).map_err(db_err)?;
        for i in 0..st.chunks {
            list.remove((id, i)).map_err(db_err)?;
            cvs.remove((id, i)).map_err(db_err)?;
        }
        txn.open_table(UPLOAD_PACKS)
            .map_err(db_err)?
            .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
            .map_err(db_err)?;
        Ok(())
    }

    /// A local upload's object: its content hashed from what is stored,
    /// verified chunk by chunk.
    fn hash_upload(&self, id: u64, st: &UploadState) -> Result<ObjectMeta, StoreError> {
        let mut hasher = blake3::Hasher::new();
        let txn = self.db.begin_read().map_err(db_err)?;
        let mut hashes = Self::upload_chunks(&txn, id, st)?;
        let mut take = |hash: &[u8; 32], data: Option<&[u8]>| {
            let data = data.ok_or_else(|| StoreError::Db("an uploaded chunk is missing".into()))?;
            if blake3::hash(data).as_bytes() != hash {
                return Err(StoreError::Integrity {
                    address: format!("upload {id:x}"),
                    what: "an uploaded chunk does not match its hash",
                });
            }
            hasher.update(data);
            Ok(())
        };
        for hash in &hashes {
            self.with_chunk(&txn, hash, |data| take(hash, Some(data)))?
                .unwrap_or_else(|| take(hash, None))?;
        }
        hasher.update(&st.tail);
        if !st.tail.is_empty() {
            hashes.push(*blake3::hash(&st.tail).as_bytes());
        }
        Ok(ObjectMeta {
            address: ContentAddress::from_bytes(*hasher.finalize().as_bytes()),
            size: st.size,
            chunks: hashes,
            placement: None,
            rendered: Default::default(),
        })
    }

    /// An upload to a bucket as an object and its manifest, without
    /// reading a part back: the address is merged from the chunks'
    /// chaining values, the parts' packs are the runs and the tail goes
    /// inline. A pack the bucket no longer has (an upload that outlived
    /// the sweep's grace) fails the completion instead of committing a
    /// manifest naming it.
    fn bucket_upload(
        &self,
        r: &Remote,
        id: u64,
        st: &UploadState,
    ) -> Result<(ObjectMeta, Option<Vec<Bytes>>), StoreError> {
        let (mut hashes, mut cvs, runs) = {
            let txn = self.db.begin_read().map_err(db_err)?;
            let hashes = Self::upload_chunks(&txn, id, st)?;
            let table = txn.open_table(UPLOAD_CVS).map_err(db_err)?;
            let cvs = (0..st.chunks)
                .map(|i| match table.get((id, i)).map_err(db_err)? {
                    Some(cv) => Ok(*cv.value()),
                    None => Err(StoreError::Db("upload chaining values have a gap".into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let table = txn.open_table(UPLOAD_PACKS).map_err(db_err)?;
            let mut runs = Vec::new();
            for row in table.range((id, 0)..=(id, u64::MAX)).map_err(db_err)? {
                let (_, v) = row.map_err(db_err)?;
                let malformed = || StoreError::Db("an upload pack row is malformed".into());
                let (pack, n) = v.value().split_at_checked(32).ok_or_else(malformed)?;
                runs.push(Run {
                    pack: pack.try_into().map_err(|_| malformed())?,
                    chunks: u32::from_be_bytes(n.try_into().map_err(|_| malformed())?),
                });
            }
            (hashes, cvs, runs)
        };
        let packs: Vec<[u8; 32]> = runs.iter().map(|r| r.pack).collect();
        if r.missing_pack(&packs)?.is_some() {
            return Err(StoreError::Integrity {
                address: format!("upload {id:016x}"),
                what: "a part of the upload is gone from the bucket (swept: \
                       storage.s3.gc_grace must outlast an upload)",
            });
        }
        let tail = Bytes::copy_from_slice(&st.tail);
        if !tail.is_empty() {
            hashes.push(*blake3::hash(&tail).as_bytes());
            cvs.push(outboard::group_cv(st.chunks, &tail));
        }
        let address = match hashes.as_slice() {
            [one] => *one,
            _ => outboard::root(&cvs, st.size),
        };
        let meta = ObjectMeta {
            address: ContentAddress::from_bytes(address),
            size: st.size,
            chunks: hashes,
            placement: None,
            rendered: Default::default(),
        };
        let manifest = pack::encode(&address, &meta.encode(), &runs, [tail]);
        Ok((meta, Some(manifest)))
    }

    /// `upload_complete`'s transaction: the upload becomes the object.
    fn complete_once(
        &self,
        id: u64,
        st: &UploadState,
        meta: &ObjectMeta,
        manifest: Option<Vec<Bytes>>,
        tail_hash: Option<[u8; 32]>,
    ) -> Result<(ObjectMeta, bool), StoreError> {
        let created = self.commit_object(meta, manifest, |txn, exists, delta| {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            match uploads.remove(id).map_err(db_err)? {
                Some(raw) if UploadState::decode(raw.value())? == *st => {}
                // Completed or changed meanwhile by another request.
                _ => return Err(StoreError::UploadNotFound),
            }
            Self::forget_upload_rows(txn, id, st)?;
            let mut chunks = ChunkTable::open(txn)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            if exists {
                // Same content already stored: give back the upload's refs.
                for h in meta.chunks.iter().take(st.chunks as usize) {
                    release_ref(&mut refs, h)?;
                }
            } else if let Some(h) = &tail_hash {
                // The upload's refs become the object's; the tail is new.
                if !Self::has_chunk(&chunks, h)? {
                    delta.chunk(1, st.tail.len());
                    self.check_room(txn, st.tail.len() as u64)?;
                    self.insert_chunk(&mut chunks, h, &st.tail, None)?;
                }
                add_ref(&mut refs, h)?;
            }
            Ok(())
        })?;
        Ok((meta.clone(), created))
    }

    /// The object-record commit every write ends with, in one durable
    /// transaction: `prepare` does the write's own part (told whether the
    /// object is already stored), then a new object's record is inserted
    /// and the totals move. Returns whether the object is new. An error
    /// from `prepare` rolls everything back.
    fn commit_object(
        &self,
        meta: &ObjectMeta,
        manifest: Option<Vec<Bytes>>,
        prepare: impl FnOnce(&redb::WriteTransaction, bool, &mut Delta) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let address = meta.address.as_bytes();
        let txn = self.db.begin_write().map_err(db_err)?;
        let exists = txn
            .open_table(OBJECTS)
            .map_err(db_err)?
            .get(address)
            .map_err(db_err)?
            .is_some();
        let mut delta = Delta::default();
        prepare(&txn, exists, &mut delta)?;
        if let Bodies::Remote(r) = &*self.bodies {
            // Last, after every pack it names: from here other replicas
            // see the object. Written even when this node has a record of
            // it (a delete elsewhere may have removed the manifest since).
            let parts = manifest.ok_or_else(|| {
                StoreError::Db("a write to a bucket came without its manifest".into())
            })?;
            r.put_manifest(address, parts)?;
        }
        if !exists {
            txn.open_table(OBJECTS)
                .map_err(db_err)?
                .insert(address, &meta.encode()[..])
                .map_err(db_err)?;
            delta.object(1, meta.size);
        }
        let totals = apply_delta(&txn, &delta)?;
        self.group.commit(&self.db, txn).map_err(db_err)?;
        self.export(totals);
        Ok(!exists)
    }

    /// Abandons an upload, releasing its chunks. Returns whether it existed.
    pub fn upload_abort(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            let st = match uploads.remove(id).map_err(db_err)? {
                Some(raw) => UploadState::decode(raw.value())?,
                None => return Ok(false),
            };
            let hashes = {
                let list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
                let mut hashes = Vec::with_capacity(st.chunks as usize);
                for i in 0..st.chunks {
                    if let Some(h) = list.get((id, i)).map_err(db_err)? {
                        hashes.push(*h.value());
                    }
                }
                hashes
            };
            Self::forget_upload_rows(&txn, id, &st)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            for h in &hashes {
                release_ref(&mut refs, h)?;
            }
        }
        self.group.commit(&self.db, txn).map_err(db_err)?;
        self.gc()?;
        Ok(true)
    }
}

/// Streams an object in: `write` any number of times, then `finish`.
/// Dropping it unfinished stores nothing (its chunks are collected later).
pub struct ObjectWriter {
    store: ObjectStore,
    /// The chunk being filled; a full one is stored when more bytes come
    /// (or at `finish`), since an object's only chunk is hashed as the
    /// root and any other as a subtree.
    buf: BytesMut,
    /// The stored chunks' ids: their chaining values (the tree's leaves),
    /// or for an object of one chunk its hash.
    chunks: Vec<[u8; 32]>,
    /// Chunks this write pinned (released when it ends, finished or not).
    pins: Vec<[u8; 32]>,
    /// Chunks this write stored new: removed again if it ends without an
    /// object that references them, so a failed write leaves nothing.
    fresh: Vec<[u8; 32]>,
    /// Whether `finish` committed an object referencing every chunk.
    kept: bool,
    size: u64,
    /// With a bucket: the chunks not yet in a pack (for the next pack, or
    /// inline in the manifest), and the packs put so far.
    unsent: Vec<([u8; 32], Bytes)>,
    runs: Vec<Run>,
    /// Chunks hashed and pinned, to be stored in the next transaction
    /// (one per `STAGED_CHUNKS`, not one per chunk).
    staged: Vec<([u8; 32], Bytes)>,
}

/// Chunks a writer stores per transaction (1 MiB).
const STAGED_CHUNKS: usize = 16;

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        self.store.unpin(&self.pins);
        if !self.kept && !self.fresh.is_empty() {
            if let Err(e) = self.store.collect(Some(&self.fresh)) {
                // Collected by the next `gc` (a full budget runs one).
                tracing::warn!(error = %e, "could not remove the chunks of an unfinished write");
            }
        }
    }
}

impl ObjectWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the next bytes of the object. Each chunk is hashed once, as
    /// its subtree of the object's BLAKE3 tree: that one pass gives the
    /// chunk's id, the tree's leaves and (merged at `finish`) the address.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.buf.len() == CHUNK_BYTES {
                // More bytes follow: the full chunk is not the only one.
                let chunk = std::mem::take(&mut self.buf).freeze();
                let id = outboard::group_cv(self.chunks.len() as u64, &chunk);
                self.store
                    .hashed
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                self.store_chunk(chunk, id)?;
            }
            let take = (CHUNK_BYTES - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Takes the next chunk of the object whose tree hash the caller has
    /// already checked against the address's tree (`kernel::outboard`:
    /// the group's chaining value, or for a one-group object its address):
    /// it is stored under that id without hashing it again. Anything but a
    /// whole chunk at a chunk boundary is hashed as `write` does.
    pub fn write_verified(&mut self, data: Bytes, id: [u8; 32]) -> Result<(), StoreError> {
        if !self.buf.is_empty() || data.len() > CHUNK_BYTES || self.size % CHUNK_BYTES as u64 != 0 {
            return self.write(&data);
        }
        self.size += data.len() as u64;
        // A store that keeps chunks as `Bytes` in RAM keeps its own copy:
        // the caller's bytes are a slice of a larger buffer (a network
        // read), which would stay allocated whole. (On disk redb copies.)
        let data = match &*self.store.bodies {
            Bodies::Ram(_) => {
                let mut own = self.store.chunk_buffer();
                // The pages it is about to fill faulted in with one call,
                // not a trap each (1 GiB fetched into a RAM store, 3 runs
                // each, same binary: TLS 826 -> 891 MiB/s, QUIC 361-386 ->
                // 412-432). A spare's are in already: no fault, a no-op.
                let room = own.spare_capacity_mut();
                let fill = data.len().min(room.len());
                ron_kernel::alloc::prefault(&mut room[..fill]);
                own.extend_from_slice(&data);
                own.freeze()
            }
            _ => data,
        };
        self.store_chunk(data, id)
    }

    /// Stores a chunk under `id` unless a chunk with that id exists. The
    /// transaction is not fsynced: the object's final commit is, and redb
    /// makes every earlier commit durable with it.
    fn store_chunk(&mut self, chunk: Bytes, hash: [u8; 32]) -> Result<(), StoreError> {
        // Pinned before the transaction: from here no delete or collection
        // takes this chunk away until the write ends.
        self.store.pin(&hash);
        self.pins.push(hash);
        if let Bodies::Remote(r) = &*self.store.bodies {
            // A full pack goes when a chunk follows it: the last (up to)
            // `PACK_CHUNKS` travel inline in the manifest. Dropped
            // unfinished, a write leaves its packs to the bucket's sweep.
            if self.unsent.len() == PACK_CHUNKS {
                let (hashes, bytes): (Vec<[u8; 32]>, Vec<Bytes>) = self.unsent.drain(..).unzip();
                let key = pack::pack_key(&hashes);
                r.put_pack(&key, bytes)?;
                self.runs.push(Run {
                    pack: key,
                    chunks: PACK_CHUNKS as u32,
                });
            }
            self.unsent.push((hash, chunk.clone()));
        }
        self.chunks.push(hash);
        self.staged.push((hash, chunk));
        if self.staged.len() == STAGED_CHUNKS {
            self.commit_staged()?;
        }
        // The next chunk's buffer: a spare or a new one (the staged
        // chunks' buffers become spares once committed).
        if self.buf.capacity() == 0 {
            self.buf = self.store.chunk_buffer();
        }
        Ok(())
    }

    /// Stores the staged chunks not stored yet, in one transaction. It is
    /// not fsynced: the object's final commit is, and redb makes every
    /// earlier commit durable with it.
    fn commit_staged(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let store = &self.store;
        let staged = &self.staged;
        let fresh = store.with_room(|| {
            let mut txn = store.db.begin_write().map_err(db_err)?;
            txn.set_durability(Durability::None).map_err(db_err)?;
            let mut delta = Delta::default();
            let mut fresh = Vec::new();
            {
                let mut chunks = ChunkTable::open(&txn)?;
                // The batch's new bytes so far: the totals row counts
                // them only when the transaction ends.
                let mut added = 0u64;
                for (hash, chunk) in staged {
                    if !ObjectStore::has_chunk(&chunks, hash)? && !fresh.contains(hash) {
                        added += chunk.len() as u64;
                        store.check_room(&txn, added)?;
                        store.insert_chunk(&mut chunks, hash, chunk, Some(chunk))?;
                        delta.chunk(1, chunk.len());
                        fresh.push(*hash);
                    }
                }
            }
            let totals = apply_delta(&txn, &delta)?;
            txn.commit().map_err(db_err)?;
            store.export(totals);
            Ok(fresh)
        })?;
        self.fresh.extend(fresh);
        // Buffers nothing kept (on disk, where redb copied the bytes) are
        // spares for the next chunks.
        let mut spare = lock(&self.store.spare);
        for (_, chunk) in self.staged.drain(..) {
            if chunk.len() == CHUNK_BYTES && spare.len() < SPARE_BUFFERS {
                if let Ok(mut b) = chunk.try_into_mut() {
                    b.clear();
                    spare.push(b);
                }
            }
        }
        Ok(())
    }

    /// The id of the buffered (last) chunk.
    fn last_id(&self) -> [u8; 32] {
        self.store
            .hashed
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        outboard::leaf_hash(self.chunks.len() as u64, &self.buf, self.chunks.is_empty())
    }

    /// The address of the bytes written so far: the object's address once
    /// every byte is in. Nothing is committed; a caller that expected
    /// another address drops the writer instead of finishing it.
    pub fn address(&self) -> ContentAddress {
        let mut ids = self.chunks.clone();
        if !self.buf.is_empty() {
            ids.push(self.last_id());
        }
        ContentAddress::from_bytes(outboard::root(&ids, self.size))
    }

    /// Commits the object durably. Returns its metadata and whether it is
    /// new (`false`: the same content was already stored).
    pub fn finish(mut self) -> Result<(ObjectMeta, bool), StoreError> {
        if !self.buf.is_empty() {
            let id = self.last_id();
            let chunk = std::mem::take(&mut self.buf).freeze();
            self.store_chunk(chunk, id)?;
        }
        if matches!(*self.store.bodies, Bodies::Table) && self.staged.len() == self.chunks.len() {
            return self.finish_whole();
        }
        self.commit_staged()?;
        let address = ContentAddress::from_bytes(outboard::root(&self.chunks, self.size));
        let meta = ObjectMeta {
            address,
            size: self.size,
            chunks: std::mem::take(&mut self.chunks),
            placement: None,
            rendered: Default::default(),
        };
        let manifest = matches!(*self.store.bodies, Bodies::Remote(_)).then(|| {
            let inline = self.unsent.drain(..).map(|(_, b)| b);
            pack::encode(address.as_bytes(), &meta.encode(), &self.runs, inline)
        });
        let created = self
            .store
            .commit_object(&meta, manifest, |txn, exists, _| {
                if !exists {
                    reference_object(txn, &meta)?;
                }
                Ok(())
            })?;
        self.kept = created;
        self.store.touch(address.as_bytes());
        Ok((meta, created))
    }
}

impl ObjectWriter {
    /// `finish` for an object on disk whose chunks are all still staged
    /// (up to `STAGED_CHUNKS`: a small write): its chunks, references,
    /// tree and record go in one write, which shares its transaction and
    /// fsync with the other small writes of the moment
    /// (`GroupCommit::apply`). Nothing is stored before it, so nothing is
    /// left behind if it fails.
    fn finish_whole(mut self) -> Result<(ObjectMeta, bool), StoreError> {
        let address = ContentAddress::from_bytes(outboard::root(&self.chunks, self.size));
        let meta = Arc::new(ObjectMeta {
            address,
            size: self.size,
            chunks: std::mem::take(&mut self.chunks),
            placement: None,
            rendered: Default::default(),
        });
        let staged = Arc::new(std::mem::take(&mut self.staged));
        let store = &self.store;
        let (created, totals) = store.with_room(|| {
            let (s, meta, staged) = (store.clone(), meta.clone(), staged.clone());
            store
                .group
                .apply(&store.db, move |txn| s.insert_whole(txn, &meta, &staged))
        })?;
        store.export(totals);
        self.kept = created;
        store.touch(address.as_bytes());
        Ok((Arc::unwrap_or_clone(meta), created))
    }
}

impl ObjectStore {
    /// `ObjectWriter::finish_whole`'s write: whether the object is new,
    /// and the totals after it.
    fn insert_whole(
        &self,
        txn: &redb::WriteTransaction,
        meta: &ObjectMeta,
        staged: &[([u8; 32], Bytes)],
    ) -> Result<(bool, Option<Totals>), StoreError> {
        let address = meta.address.as_bytes();
        let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
        if objects.get(address).map_err(db_err)?.is_some() {
            return Ok((false, None));
        }
        let mut delta = Delta::default();
        {
            let mut chunks = ChunkTable::open(txn)?;
            let mut added = 0u64;
            for (hash, chunk) in staged {
                if !Self::has_chunk(&chunks, hash)? {
                    added += chunk.len() as u64;
                    self.check_room(txn, added)?;
                    self.insert_chunk(&mut chunks, hash, chunk, Some(chunk))?;
                    delta.chunk(1, chunk.len());
                }
            }
        }
        reference_object(txn, meta)?;
        objects
            .insert(address, &meta.encode()[..])
            .map_err(db_err)?;
        drop(objects);
        delta.object(1, meta.size);
        Ok((true, apply_delta(txn, &delta)?))
    }
}

/// Where a reader's bytes come from: one redb snapshot of the chunks, or
/// (RAM) the chunks' `Bytes` taken when the read began, from chunk `first`.
enum Source {
    /// The chunk rows and their tails.
    Table(Box<(ReadOnlyChunks, ReadOnlyChunks)>),
    /// Chunks fetched from the bucket as the reader reaches them, up to
    /// `READ_AHEAD` at a time: one ranged GET per pack, in parallel, and
    /// the inline ones sliced from the manifest. `placement` is the
    /// manifest's (asked for when the reader first needs a chunk, if the
    /// record came from the cache); `ahead` holds the fetched chunks not
    /// yet verified and yielded, by index.
    Remote {
        remote: Arc<Remote>,
        placement: Option<Arc<Placement>>,
        ahead: HashMap<usize, Bytes>,
    },
    Ram {
        first: usize,
        bodies: Vec<Option<Bytes>>,
    },
}

/// Yields the verified bytes of a range of an object, one chunk (or part of
/// one) at a time.
pub struct ObjectReader {
    store: ObjectStore,
    source: Source,
    address: ContentAddress,
    meta: Arc<ObjectMeta>,
    /// How the chunk ids were made, once the first chunk showed it.
    ids: Option<Ids>,
    pos: u64,
    end: u64,
}

impl ObjectReader {
    /// Bytes of the range not yet yielded.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// Whether `next` has to wait on I/O: for a bucket, when the next
    /// chunk is in a pack (or where it is is not known yet) and not
    /// fetched or cached; for redb, unless cached. Inline chunks are in
    /// the manifest, already here.
    pub fn needs_io(&self) -> bool {
        if self.pos >= self.end || self.in_hand() {
            return false;
        }
        let idx = self.pos / CHUNK_BYTES as u64;
        match &self.source {
            Source::Remote {
                placement: Some(p), ..
            } => !matches!(p.locate(idx), Loc::Inline(_)),
            Source::Ram { .. } => false,
            _ => true,
        }
    }

    /// Whether the next piece is already in memory (fetched from the
    /// bucket with an earlier one, in RAM, or cached): `next` then waits
    /// on no I/O.
    pub fn in_hand(&self) -> bool {
        if self.pos >= self.end {
            return false;
        }
        let idx = (self.pos / CHUNK_BYTES as u64) as usize;
        let cached = || {
            let cache = self.store.cache.as_ref();
            let hash = self.meta.chunks.get(idx);
            cache
                .zip(hash)
                .is_some_and(|(c, h)| c.chunks.get(h).is_some())
        };
        match &self.source {
            Source::Ram { .. } => true,
            Source::Remote { ahead, .. } => ahead.contains_key(&idx) || cached(),
            Source::Table(..) => cached(),
        }
    }
}

impl ObjectReader {
    /// From a bucket: fetches chunk `idx` and the next ones the range
    /// needs (up to `READ_AHEAD`), unless `idx` is already here or cached.
    fn fetch_ahead(&mut self, idx: usize) -> Result<(), StoreError> {
        let Source::Remote {
            remote,
            placement,
            ahead,
        } = &mut self.source
        else {
            return Ok(());
        };
        let cache = self.store.cache.as_ref();
        if ahead.contains_key(&idx)
            || cache.is_some_and(|c| c.chunks.get(&self.meta.chunks[idx]).is_some())
        {
            return Ok(());
        }
        let place = match placement {
            Some(p) => p.clone(),
            None => {
                let raw = remote
                    .get_manifest(self.address.as_bytes())?
                    .ok_or(StoreError::NotFound)?;
                let meta = ObjectMeta::from_manifest(self.address, raw)?;
                placement
                    .insert(meta.placement.ok_or(StoreError::NotFound)?)
                    .clone()
            }
        };
        let last = (self.end.saturating_sub(1) / CHUNK_BYTES as u64) as usize;
        let upto = (idx + READ_AHEAD).min(last + 1).min(self.meta.chunks.len());
        // One span per pack, each a ranged GET of whole chunks; the inline
        // chunks (always the last ones) are slices of the manifest.
        let mut spans = Vec::new();
        let mut i = idx;
        while i < upto {
            match place.locate(i as u64) {
                Loc::Pack { pack, first, end } => {
                    let stop = (end as usize).min(upto);
                    let chunk = CHUNK_BYTES as u64;
                    spans.push((
                        i,
                        (
                            pack,
                            (i as u64 - first) * chunk..(stop as u64 - first) * chunk,
                        ),
                    ));
                    i = stop;
                }
                Loc::Inline(at) => {
                    let inline = &place.inline;
                    if at < inline.len() {
                        ahead.insert(i, inline.slice(at..(at + CHUNK_BYTES).min(inline.len())));
                    }
                    i += 1;
                }
            }
        }
        if spans.is_empty() {
            return Ok(());
        }
        let ranges: Vec<([u8; 32], Range<u64>)> = spans.iter().map(|(_, r)| r.clone()).collect();
        for ((start, _), body) in spans.iter().zip(remote.get_ranges(&ranges)?) {
            let Some(body) = body else { continue };
            for (k, from) in (0..body.len()).step_by(CHUNK_BYTES).enumerate() {
                ahead.insert(
                    start + k,
                    body.slice(from..(from + CHUNK_BYTES).min(body.len())),
                );
            }
        }
        Ok(())
    }
}

impl Iterator for ObjectReader {
    type Item = Result<Bytes, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let idx = (self.pos / CHUNK_BYTES as u64) as usize;
        let chunk_start = idx as u64 * CHUNK_BYTES as u64;
        self.meta.chunks.get(idx)?;
        if let Err(e) = self.fetch_ahead(idx) {
            if matches!(e, StoreError::Integrity { .. }) {
                self.store.integrity_failure(&self.address, &e);
            }
            self.pos = self.end;
            return Some(Err(e));
        }
        let data = match self
            .store
            .read_chunk(&mut self.source, idx, &self.meta, &mut self.ids)
        {
            Ok(d) => d,
            Err(e) => {
                self.pos = self.end;
                return Some(Err(e));
            }
        };
        let from = (self.pos - chunk_start) as usize;
        let to = ((self.end - chunk_start) as usize).min(data.len());
        if from >= to {
            self.pos = self.end;
            return Some(Err(StoreError::Integrity {
                address: self.address.to_string(),
                what: "a chunk is shorter than the object record says",
            }));
        }
        self.pos = chunk_start + to as u64;
        Some(Ok(data.slice(from..to)))
    }
}

/// `tail` then `data` as one buffer: `data` itself (no copy) when there
/// is no tail.
fn joined(tail: &[u8], data: &Bytes) -> Bytes {
    if tail.is_empty() {
        return data.clone();
    }
    let mut v = Vec::with_capacity(tail.len() + data.len());
    v.extend_from_slice(tail);
    v.extend_from_slice(data);
    Bytes::from(v)
}

type RefTable<'t> = redb::Table<'t, &'static [u8; 32], u64>;

/// A new object's part besides its record: one more reference to each of
/// its chunks, and its tree. The chunk ids are the tree's leaves: its
/// levels above are merged from them (one compression per chunk, no pass
/// over the data) and kept for ranged serves.
fn reference_object(txn: &redb::WriteTransaction, meta: &ObjectMeta) -> Result<(), StoreError> {
    let mut refs = txn.open_table(REFS).map_err(db_err)?;
    for c in &meta.chunks {
        add_ref(&mut refs, c)?;
    }
    if let Ok(tree) = outboard::Tree::new(meta.size, meta.chunks.clone()) {
        txn.open_table(OUTBOARDS)
            .map_err(db_err)?
            .insert(meta.address.as_bytes(), &tree.to_bytes()[..])
            .map_err(db_err)?;
    }
    Ok(())
}

/// Counts one more reference to chunk `h`.
fn add_ref(refs: &mut RefTable<'_>, h: &[u8; 32]) -> Result<(), StoreError> {
    let n = refs.get(h).map_err(db_err)?.map(|g| g.value()).unwrap_or(0);
    refs.insert(h, n + 1).map_err(db_err)?;
    Ok(())
}

/// Drops one reference to chunk `h`; returns whether none is left.
fn release_ref(refs: &mut RefTable<'_>, h: &[u8; 32]) -> Result<bool, StoreError> {
    let n = refs.get(h).map_err(db_err)?.map(|g| g.value()).unwrap_or(0);
    if n <= 1 {
        refs.remove(h).map_err(db_err)?;
        Ok(true)
    } else {
        refs.insert(h, n - 1).map_err(db_err)?;
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a test may panic
mod tests {
    use super::*;

    /// A chunk written as one whole row (before rows held at most
    /// `ROW_BYTES`) reads back whole, and a delete counts all of it.
    #[test]
    fn a_chunk_stored_in_one_whole_row_still_reads_and_deletes() {
        let dir = std::env::temp_dir().join(format!("ron-rows-{}", std::process::id()));
        let path = dir.join("storage.redb");
        let store = ObjectStore::open(&path, None).expect("open");
        let data: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| (i % 251) as u8).collect();
        let (meta, _) = store.put(&data).expect("put");
        // Rewrite its first chunk the old way: one row, no tail.
        let first = meta.chunks[0];
        let txn = store.db.begin_write().expect("txn");
        {
            let mut chunks = ChunkTable::open(&txn).expect("tables");
            assert!(chunks.tails.remove(&first).expect("tail").is_some());
            chunks
                .rows
                .insert(&first, &data[..CHUNK_BYTES])
                .expect("row");
        }
        txn.commit().expect("commit");
        assert!(store.get(&meta.address).expect("get") == data[..]);
        assert_eq!(
            store.scan_stats().expect("stats").stored_bytes,
            data.len() as u64
        );
        assert!(store.delete(&meta.address).expect("delete"));
        assert_eq!(store.scan_stats().expect("stats").stored_bytes, 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
