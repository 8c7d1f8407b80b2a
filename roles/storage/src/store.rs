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
//! - **A chunk is removed only when no object references it and no write
//!   is in progress** (a write may be about to reference it).
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

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use ron_kernel::metrics::names;
use ron_kernel::{Bus, ContentAddress, KernelEvent};

/// Objects are cut into chunks of this size (the last may be shorter).
pub const CHUNK_BYTES: usize = 64 * 1024;

const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
const REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("chunk_refs");
const OBJECTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("objects");
/// Resumable uploads: id → `UploadState`.
const UPLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("uploads");
/// (upload id, chunk index) → chunk hash. The upload holds a reference on
/// each chunk, so collection never takes an acknowledged part away.
const UPLOAD_CHUNKS: TableDefinition<(u64, u64), &[u8; 32]> = TableDefinition::new("upload_chunks");
/// The store's running totals, one row, changed in the same transaction as
/// every chunk or object it counts: `(sequence, objects, chunks,
/// logical_bytes, stored_bytes)`. The sequence orders exports of it.
const TOTALS: TableDefinition<&str, (u64, u64, u64, u64, u64)> = TableDefinition::new("totals");
const TOTALS_KEY: &str = "totals";

/// This file's layout versions (`ron_kernel::schema`): 1 is the first
/// versioned layout, the same tables as the unversioned files before it.
/// A layout change adds a step here and its test.
pub static SCHEMA: ron_kernel::schema::Schema = ron_kernel::schema::Schema {
    role: "storage",
    file: "storage.redb",
    steps: &[ron_kernel::schema::unversioned_to_1],
};

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
    #[error("storage error: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    let s = e.to_string();
    if s.contains("No space left") || s.contains("ENOSPC") || s.contains("StorageFull") {
        StoreError::DiskFull(s)
    } else {
        StoreError::Db(s)
    }
}

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub address: ContentAddress,
    pub size: u64,
    pub chunks: Vec<[u8; 32]>,
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

    fn decode(address: ContentAddress, raw: &[u8]) -> Result<Self, StoreError> {
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
        })
    }
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
    writers: Arc<AtomicUsize>,
    bus: Option<Bus>,
    cache: Option<Arc<ReadCache>>,
    /// Sequence of the totals last exported as gauges: two writers that
    /// commit in one order and export in the other leave the newer totals.
    exported: Arc<std::sync::Mutex<u64>>,
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
        let db = Database::create(path).map_err(db_err)?;
        Self::init(db, bus)
    }

    /// A store that lives in RAM only (amnesia).
    pub fn in_memory(bus: Option<Bus>) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        Self::init(db, bus)
    }

    /// A store on any redb storage backend (tests use one that runs out of
    /// space on purpose).
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        bus: Option<Bus>,
    ) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(db_err)?;
        Self::init(db, bus)
    }

    fn init(db: Database, bus: Option<Bus>) -> Result<Self, StoreError> {
        ron_kernel::schema::check_or_stamp(&db, &SCHEMA)?;
        let store = Self {
            db: Arc::new(db),
            writers: Arc::new(AtomicUsize::new(0)),
            bus,
            cache: None,
            exported: Arc::new(std::sync::Mutex::new(0)),
        };
        let txn = store.db.begin_write().map_err(db_err)?;
        let totals = {
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            txn.open_table(REFS).map_err(db_err)?;
            txn.open_table(UPLOADS).map_err(db_err)?;
            txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            let mut totals = txn.open_table(TOTALS).map_err(db_err)?;
            match read_totals(&totals)? {
                Some(t) => t,
                None => {
                    // A new store, or one written before the totals row
                    // existed: count once, then keep counting per commit.
                    let st = scan(&objects, &chunks)?;
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
        // A panic while holding this lock cannot leave the sequence
        // half-written (it is one u64), so a poisoned lock is still sound.
        let mut last = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seq >= *last {
            *last = seq;
            st.export();
        }
    }

    /// Keeps up to `bytes` of verified chunks (and their objects' records)
    /// in RAM; 0 turns the cache off.
    pub fn with_read_cache(mut self, bytes: u64) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(ReadCache::new(bytes)));
        self
    }

    /// The record of `address` if the cache holds it (never touches redb).
    pub fn cached_meta(&self, address: &ContentAddress) -> Option<Arc<ObjectMeta>> {
        self.cache.as_ref()?.meta.get(address.as_bytes())
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
        self.writers.fetch_add(1, Ordering::SeqCst);
        ObjectWriter {
            store: self.clone(),
            buf: BytesMut::with_capacity(CHUNK_BYTES),
            hasher: blake3::Hasher::new(),
            chunks: Vec::new(),
            size: 0,
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
        let txn = self.db.begin_read().map_err(db_err)?;
        let objects = txn.open_table(OBJECTS).map_err(db_err)?;
        let meta = match objects.get(address.as_bytes()).map_err(db_err)? {
            Some(raw) => Arc::new(
                ObjectMeta::decode(*address, raw.value())
                    .inspect_err(|e| self.integrity_failure(address, e))?,
            ),
            None => return Ok(None),
        };
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            cache.meta.insert(*address.as_bytes(), meta.clone());
            if cache.epoch.load(Ordering::SeqCst) != epoch {
                cache.meta.remove(address.as_bytes());
            }
        }
        Ok(Some(meta))
    }

    /// Reads one chunk from `chunks` and verifies it against its hash.
    fn read_chunk(
        &self,
        chunks: &redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
        address: &ContentAddress,
        hash: &[u8; 32],
    ) -> Result<Bytes, StoreError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.chunks.get(hash)) {
            return Ok(hit);
        }
        let data = match chunks.get(hash).map_err(db_err)? {
            Some(g) => Bytes::copy_from_slice(g.value()),
            None => {
                let e = StoreError::Integrity {
                    address: address.to_string(),
                    what: "a chunk of the object is missing",
                };
                self.integrity_failure(address, &e);
                return Err(e);
            }
        };
        if blake3::hash(&data).as_bytes() != hash {
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
        // consistent state, and no transaction is opened per chunk.
        let chunks = self
            .db
            .begin_read()
            .map_err(db_err)?
            .open_table(CHUNKS)
            .map_err(db_err)?;
        let reader = ObjectReader {
            store: self.clone(),
            table: chunks,
            address: *address,
            meta: meta.clone(),
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

    /// Deletes an object; chunks it shared with other objects survive.
    /// Returns whether it existed.
    pub fn delete(&self, address: &ContentAddress) -> Result<bool, StoreError> {
        let mut freed = Vec::new();
        let mut delta = Delta::default();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let meta = match objects.remove(address.as_bytes()).map_err(db_err)? {
                Some(raw) => ObjectMeta::decode(*address, raw.value())?,
                None => return Ok(false),
            };
            delta.object(-1, meta.size);
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let quiet = self.writers.load(Ordering::SeqCst) == 0;
            for c in &meta.chunks {
                if release_ref(&mut refs, c)? && quiet {
                    if let Some(old) = chunks.remove(c).map_err(db_err)? {
                        delta.chunk(-1, old.value().len());
                    }
                    freed.push(*c);
                }
            }
        }
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.export(totals);
        if let Some(cache) = &self.cache {
            cache.epoch.fetch_add(1, Ordering::SeqCst);
            cache.meta.remove(address.as_bytes());
            for c in &freed {
                cache.chunks.remove(c);
            }
        }
        Ok(true)
    }

    /// Removes chunks no object references, unless a write is in progress.
    /// Returns how many were removed.
    pub fn gc(&self) -> Result<usize, StoreError> {
        if self.writers.load(Ordering::SeqCst) != 0 {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut delta = Delta::default();
        {
            let refs = txn.open_table(REFS).map_err(db_err)?;
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let mut orphans = Vec::new();
            for entry in chunks.iter().map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let key = *k.value();
                if refs.get(&key).map_err(db_err)?.is_none() {
                    orphans.push(key);
                }
            }
            for k in &orphans {
                if let Some(old) = chunks.remove(k).map_err(db_err)? {
                    delta.chunk(-1, old.value().len());
                }
            }
        }
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.export(totals);
        Ok((-delta.chunks) as usize)
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
        scan(&objects, &chunks)
    }

    /// Whether a write transaction can be opened and committed (readiness).
    pub fn writable(&self) -> bool {
        match self.db.begin_write() {
            Ok(t) => t.commit().is_ok(),
            Err(_) => false,
        }
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
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
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
        txn.commit().map_err(db_err)?;
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
    pub fn upload_part(&self, id: u64, n: u64, data: &[u8]) -> Result<PartOutcome, StoreError> {
        let part_hash = *blake3::hash(data).as_bytes();
        let mut delta = Delta::default();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let outcome = {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            let mut st = match uploads.get(id).map_err(db_err)? {
                Some(raw) => UploadState::decode(raw.value())?,
                None => return Err(StoreError::UploadNotFound),
            };
            if n + 1 == st.next_part && part_hash == st.last_part {
                return Ok(PartOutcome::Duplicate(st));
            }
            if n != st.next_part {
                return Err(StoreError::PartOutOfOrder {
                    expected: st.next_part,
                    got: n,
                });
            }
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            let mut list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            let mut pending = std::mem::take(&mut st.tail);
            pending.extend_from_slice(data);
            let mut full = pending.chunks_exact(CHUNK_BYTES);
            for chunk in &mut full {
                let hash = *blake3::hash(chunk).as_bytes();
                if chunks.get(&hash).map_err(db_err)?.is_none() {
                    chunks.insert(&hash, chunk).map_err(db_err)?;
                    delta.chunk(1, chunk.len());
                }
                add_ref(&mut refs, &hash)?;
                list.insert((id, st.chunks), &hash).map_err(db_err)?;
                st.chunks += 1;
            }
            st.tail = full.remainder().to_vec();
            st.size += data.len() as u64;
            st.next_part += 1;
            st.last_part = part_hash;
            uploads.insert(id, &st.encode()[..]).map_err(db_err)?;
            PartOutcome::Stored(st)
        };
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.export(totals);
        Ok(outcome)
    }

    /// Turns a finished upload into an object (verifying every chunk on the
    /// way) and forgets the upload. Returns the object and whether it is new.
    pub fn upload_complete(&self, id: u64) -> Result<(ObjectMeta, bool), StoreError> {
        // Hash the content from what is stored, verified chunk by chunk.
        let st = self.upload_state(id)?;
        let mut hasher = blake3::Hasher::new();
        let mut hashes = Vec::with_capacity(st.chunks as usize + 1);
        {
            let txn = self.db.begin_read().map_err(db_err)?;
            let list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            let chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            for i in 0..st.chunks {
                let hash = *list
                    .get((id, i))
                    .map_err(db_err)?
                    .ok_or_else(|| StoreError::Db("upload chunk list has a gap".into()))?
                    .value();
                let data = chunks
                    .get(&hash)
                    .map_err(db_err)?
                    .ok_or_else(|| StoreError::Db("an uploaded chunk is missing".into()))?;
                if blake3::hash(data.value()).as_bytes() != &hash {
                    return Err(StoreError::Integrity {
                        address: format!("upload {id:x}"),
                        what: "an uploaded chunk does not match its hash",
                    });
                }
                hasher.update(data.value());
                hashes.push(hash);
            }
        }
        hasher.update(&st.tail);
        let address = ContentAddress::from_bytes(*hasher.finalize().as_bytes());
        let tail_hash = (!st.tail.is_empty()).then(|| *blake3::hash(&st.tail).as_bytes());
        if let Some(h) = tail_hash {
            hashes.push(h);
        }
        let meta = ObjectMeta {
            address,
            size: st.size,
            chunks: hashes,
        };

        let mut delta = Delta::default();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let created = {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            match uploads.remove(id).map_err(db_err)? {
                Some(raw) if UploadState::decode(raw.value())? == st => {}
                // Completed or changed meanwhile by another request.
                _ => return Err(StoreError::UploadNotFound),
            }
            let mut list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            for i in 0..st.chunks {
                list.remove((id, i)).map_err(db_err)?;
            }
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
            if objects.get(address.as_bytes()).map_err(db_err)?.is_some() {
                // Same content already stored: give back the upload's refs.
                for h in meta.chunks.iter().take(st.chunks as usize) {
                    release_ref(&mut refs, h)?;
                }
                false
            } else {
                // The upload's refs become the object's; the tail is new.
                if let Some(h) = &tail_hash {
                    if chunks.get(h).map_err(db_err)?.is_none() {
                        chunks.insert(h, &st.tail[..]).map_err(db_err)?;
                        delta.chunk(1, st.tail.len());
                    }
                    add_ref(&mut refs, h)?;
                }
                objects
                    .insert(address.as_bytes(), &meta.encode()[..])
                    .map_err(db_err)?;
                delta.object(1, meta.size);
                true
            }
        };
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.export(totals);
        Ok((meta, created))
    }

    /// Abandons an upload, releasing its chunks. Returns whether it existed.
    pub fn upload_abort(&self, id: u64) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut uploads = txn.open_table(UPLOADS).map_err(db_err)?;
            let st = match uploads.remove(id).map_err(db_err)? {
                Some(raw) => UploadState::decode(raw.value())?,
                None => return Ok(false),
            };
            let mut list = txn.open_table(UPLOAD_CHUNKS).map_err(db_err)?;
            let mut refs = txn.open_table(REFS).map_err(db_err)?;
            for i in 0..st.chunks {
                if let Some(h) = list.remove((id, i)).map_err(db_err)? {
                    let h = *h.value();
                    release_ref(&mut refs, &h)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        self.gc()?;
        Ok(true)
    }
}

/// Streams an object in: `write` any number of times, then `finish`.
/// Dropping it unfinished stores nothing (its chunks are collected later).
pub struct ObjectWriter {
    store: ObjectStore,
    buf: BytesMut,
    hasher: blake3::Hasher,
    chunks: Vec<[u8; 32]>,
    size: u64,
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        self.store.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ObjectWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK_BYTES - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_BYTES {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered chunk unless a chunk with its hash exists. The
    /// transaction is not fsynced: the object's final commit is, and redb
    /// makes every earlier commit durable with it.
    fn flush_chunk(&mut self) -> Result<(), StoreError> {
        let chunk = self.buf.split();
        let hash = *blake3::hash(&chunk).as_bytes();
        let mut txn = self.store.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        let mut delta = Delta::default();
        {
            let mut chunks = txn.open_table(CHUNKS).map_err(db_err)?;
            if chunks.get(&hash).map_err(db_err)?.is_none() {
                chunks.insert(&hash, &chunk[..]).map_err(db_err)?;
                delta.chunk(1, chunk.len());
            }
        }
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.store.export(totals);
        self.chunks.push(hash);
        self.buf.clear();
        Ok(())
    }

    /// The address of the bytes written so far: the object's address once
    /// every byte is in. Nothing is committed; a caller that expected
    /// another address drops the writer instead of finishing it.
    pub fn address(&self) -> ContentAddress {
        ContentAddress::from_bytes(*self.hasher.clone().finalize().as_bytes())
    }

    /// Commits the object durably. Returns its metadata and whether it is
    /// new (`false`: the same content was already stored).
    pub fn finish(mut self) -> Result<(ObjectMeta, bool), StoreError> {
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        let address = ContentAddress::from_bytes(*self.hasher.finalize().as_bytes());
        let meta = ObjectMeta {
            address,
            size: self.size,
            chunks: std::mem::take(&mut self.chunks),
        };
        let mut txn = self.store.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let mut delta = Delta::default();
        let created = {
            let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
            if objects.get(address.as_bytes()).map_err(db_err)?.is_some() {
                false
            } else {
                let mut refs = txn.open_table(REFS).map_err(db_err)?;
                for c in &meta.chunks {
                    add_ref(&mut refs, c)?;
                }
                objects
                    .insert(address.as_bytes(), &meta.encode()[..])
                    .map_err(db_err)?;
                delta.object(1, meta.size);
                true
            }
        };
        let totals = apply_delta(&txn, &delta)?;
        txn.commit().map_err(db_err)?;
        self.store.export(totals);
        Ok((meta, created))
    }
}

/// Yields the verified bytes of a range of an object, one chunk (or part of
/// one) at a time.
pub struct ObjectReader {
    store: ObjectStore,
    table: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    address: ContentAddress,
    meta: Arc<ObjectMeta>,
    pos: u64,
    end: u64,
}

impl ObjectReader {
    /// Bytes of the range not yet yielded.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
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
        let hash = self.meta.chunks.get(idx)?;
        let data = match self.store.read_chunk(&self.table, &self.address, hash) {
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

/// Counts objects and chunks by reading every record (`init`, `scan_stats`).
fn scan(
    objects: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    chunks: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
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
    for entry in chunks.iter().map_err(db_err)? {
        let (_, v) = entry.map_err(db_err)?;
        s.stored_bytes += v.value().len() as u64;
        s.chunks += 1;
    }
    Ok(s)
}

type RefTable<'t> = redb::Table<'t, &'static [u8; 32], u64>;

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
