//! The object store against a real redb file: chunking, dedup, refcounted
//! delete, ranges, restart, and corruption on disk never served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use common::pattern;
use ron_storage::store::CHUNK_BYTES;
use ron_storage::{ObjectStore, StoreError};

#[test]
fn objects_round_trip_and_are_addressed_by_their_blake3() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&dir.path().join("s.redb"), None).unwrap();
    for len in [
        0,
        1,
        CHUNK_BYTES - 1,
        CHUNK_BYTES,
        CHUNK_BYTES + 1,
        3 * CHUNK_BYTES + 17,
    ] {
        let data = pattern(len, 1);
        let (meta, created) = store.put(&data).unwrap();
        assert!(created);
        assert_eq!(meta.address.as_bytes(), blake3::hash(&data).as_bytes());
        assert_eq!(meta.size, len as u64);
        assert_eq!(meta.chunks.len(), len.div_ceil(CHUNK_BYTES));
        assert_eq!(
            &store.get(&meta.address).unwrap()[..],
            &data[..],
            "len {len}"
        );
        // The same content again: nothing new.
        let (again, created) = store.put(&data).unwrap();
        assert!(!created);
        assert_eq!(again, meta);
    }
}

#[test]
fn streamed_writes_in_odd_pieces_give_the_same_object() {
    let store = ObjectStore::in_memory(None).unwrap();
    let data = pattern(5 * CHUNK_BYTES / 2, 9);
    let mut w = store.writer();
    for piece in data.chunks(7919) {
        w.write(piece).unwrap();
    }
    // The address is known before anything is committed.
    let before = w.address();
    assert!(store.head(&before).unwrap().is_none());
    let (meta, _) = w.finish().unwrap();
    assert_eq!(meta.address, before);
    assert_eq!(meta.address.as_bytes(), blake3::hash(&data).as_bytes());
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
}

#[test]
fn ranges_cross_chunk_boundaries() {
    let store = ObjectStore::in_memory(None).unwrap();
    let data = pattern(3 * CHUNK_BYTES + 100, 3);
    let (meta, _) = store.put(&data).unwrap();
    let size = data.len() as u64;
    for (a, b) in [
        (0, 1),
        (10, 20),
        (CHUNK_BYTES as u64 - 5, CHUNK_BYTES as u64 + 5),
        (0, size),
        (size - 1, size),
        (CHUNK_BYTES as u64, 3 * CHUNK_BYTES as u64),
    ] {
        let (_, reader) = store.read(&meta.address, Some(a..b)).unwrap();
        let got: Vec<u8> = reader.flat_map(|p| p.unwrap().to_vec()).collect();
        assert_eq!(&got[..], &data[a as usize..b as usize], "{a}..{b}");
    }
    assert!(matches!(
        store.read(&meta.address, Some(size..size + 1)),
        Err(StoreError::RangeNotSatisfiable { .. })
    ));
}

#[test]
fn shared_chunks_are_stored_once_and_survive_a_delete() {
    let store = ObjectStore::in_memory(None).unwrap();
    let common = pattern(2 * CHUNK_BYTES, 5);
    let mut a = common.clone();
    a.extend(pattern(CHUNK_BYTES, 6));
    let mut b = common.clone();
    b.extend(pattern(CHUNK_BYTES, 7));
    let (ma, _) = store.put(&a).unwrap();
    let (mb, _) = store.put(&b).unwrap();
    let st = store.stats().unwrap();
    assert_eq!(st.objects, 2);
    assert_eq!(st.chunks, 4, "2 shared + 1 + 1");
    assert_eq!(st.logical_bytes, 6 * CHUNK_BYTES as u64);
    assert_eq!(st.stored_bytes, 4 * CHUNK_BYTES as u64);

    assert!(store.delete(&ma.address).unwrap());
    assert!(!store.delete(&ma.address).unwrap());
    assert!(store.head(&ma.address).unwrap().is_none());
    assert_eq!(&store.get(&mb.address).unwrap()[..], &b[..]);
    assert_eq!(store.stats().unwrap().chunks, 3);
    assert!(store.delete(&mb.address).unwrap());
    assert_eq!(store.stats().unwrap().chunks, 0);
}

#[test]
fn an_unfinished_write_leaves_nothing() {
    let store = ObjectStore::in_memory(None).unwrap();
    let mut w = store.writer();
    w.write(&pattern(18 * CHUNK_BYTES, 2)).unwrap();
    assert_eq!(
        store.gc().unwrap(),
        0,
        "no collection of what an open write holds"
    );
    // Chunks are stored 16 per transaction; the 17th waits for the next
    // batch, and the last full chunk waits in the writer until a byte
    // follows it (or `finish`): until then it cannot know whether it is
    // the only one.
    assert_eq!(store.stats().unwrap().chunks, 16);
    drop(w);
    assert_eq!(
        store.stats().unwrap().chunks,
        0,
        "the write took its chunks back"
    );
    assert_eq!(store.gc().unwrap(), 0);
    assert_eq!(store.stats().unwrap(), store.scan_stats().unwrap());
}

#[test]
fn committed_objects_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let data = pattern(2 * CHUNK_BYTES + 3, 4);
    let addr = {
        let store = ObjectStore::open(&path, None).unwrap();
        store.put(&data).unwrap().0.address
    };
    let store = ObjectStore::open(&path, None).unwrap();
    assert_eq!(&store.get(&addr).unwrap()[..], &data[..]);
}

#[test]
fn a_chunk_corrupted_on_disk_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    // A chunk whose bytes are easy to find in the file.
    let marker = b"RON-CORRUPTION-MARKER-";
    let good: Vec<u8> = marker.iter().copied().cycle().take(CHUNK_BYTES).collect();
    let mut data = pattern(CHUNK_BYTES, 8);
    data.extend_from_slice(&good);
    let addr = {
        let store = ObjectStore::open(&path, None).unwrap();
        store.put(&data).unwrap().0.address
    };
    let mut file = std::fs::read(&path).unwrap();
    let at = file
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("chunk bytes are in the file");
    file[at + 3] ^= 0x20;
    std::fs::write(&path, &file).unwrap();

    let bus = ron_kernel::Bus::new(16);
    let mut events = bus.subscribe();
    let store = match ObjectStore::open(&path, Some(bus.clone())) {
        Ok(s) => s,
        // redb itself may refuse a damaged file: also nothing served.
        Err(e) => {
            eprintln!("redb refused the damaged file: {e}");
            return;
        }
    };
    let (_, reader) = store.read(&addr, None).unwrap();
    let mut served = Vec::new();
    let mut failed = false;
    for piece in reader {
        match piece {
            Ok(b) => served.extend_from_slice(&b),
            Err(StoreError::Integrity { .. }) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failed, "the corrupted chunk was served");
    match events.try_recv() {
        Some(ron_kernel::BusMessage::Event(ron_kernel::KernelEvent::IntegrityFailed {
            address,
            ..
        })) => {
            assert_eq!(address, addr.to_string());
        }
        other => panic!("no integrity event on the bus: {other:?}"),
    }
    // Only the intact first chunk came out, and it is exactly right.
    assert_eq!(&served[..], &data[..CHUNK_BYTES]);
}

#[test]
fn resumable_uploads_survive_reopening_and_make_the_same_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let data = pattern(3 * CHUNK_BYTES + 12_345, 11);
    let parts: Vec<&[u8]> = data.chunks(60_000).collect();
    let id = {
        let store = ObjectStore::open(&path, None).unwrap();
        let id = store.upload_create().unwrap();
        store
            .upload_part(id, 0, bytes::Bytes::copy_from_slice(parts[0]))
            .unwrap();
        store
            .upload_part(id, 1, bytes::Bytes::copy_from_slice(parts[1]))
            .unwrap();
        // Out of order is refused with where to resume.
        assert!(matches!(
            store.upload_part(id, 3, bytes::Bytes::copy_from_slice(parts[3])),
            Err(StoreError::PartOutOfOrder {
                expected: 2,
                got: 3
            })
        ));
        // A retry of the last part (lost acknowledgement) changes nothing.
        let st = store.upload_state(id).unwrap();
        assert!(matches!(
            store.upload_part(id, 1, bytes::Bytes::copy_from_slice(parts[1])).unwrap(),
            ron_storage::store::PartOutcome::Duplicate(ref s) if *s == st
        ));
        id
    };
    // Reopen (a crash between parts): acknowledged parts are all there,
    // and collection at open did not take their chunks.
    let store = ObjectStore::open(&path, None).unwrap();
    let st = store.upload_state(id).unwrap();
    assert_eq!(st.next_part, 2);
    assert_eq!(st.size, 120_000);
    for (n, p) in parts.iter().enumerate().skip(2) {
        store
            .upload_part(id, n as u64, bytes::Bytes::copy_from_slice(p))
            .unwrap();
    }
    let (meta, created) = store.upload_complete(id).unwrap();
    assert!(created);
    assert_eq!(meta.address.as_bytes(), blake3::hash(&data).as_bytes());
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
    assert!(matches!(
        store.upload_state(id),
        Err(StoreError::UploadNotFound)
    ));
    // A plain put of the same bytes finds the object: nothing extra stored
    // (the writer's chunks, ids of the tree rather than the upload's
    // plain hashes, are taken back).
    let (again, created) = store.put(&data).unwrap();
    assert!(!created);
    assert_eq!(again.address, meta.address);
    assert_eq!(store.stats().unwrap().chunks, meta.chunks.len() as u64);
}

#[test]
fn aborted_uploads_release_their_chunks() {
    let store = ObjectStore::in_memory(None).unwrap();
    let id = store.upload_create().unwrap();
    store
        .upload_part(
            id,
            0,
            bytes::Bytes::copy_from_slice(&pattern(3 * CHUNK_BYTES, 12)),
        )
        .unwrap();
    assert_eq!(store.stats().unwrap().chunks, 3);
    assert!(store.upload_abort(id).unwrap());
    assert!(!store.upload_abort(id).unwrap());
    assert_eq!(store.stats().unwrap().chunks, 0);
}

/// An in-memory backend with a size limit: growing past it fails like a
/// full disk.
#[derive(Debug)]
struct SmallDisk {
    inner: redb::backends::InMemoryBackend,
    limit: u64,
}

impl redb::StorageBackend for SmallDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if len > self.limit {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}

#[test]
fn a_full_disk_is_reported_and_leaves_nothing_half_written() {
    let store = ObjectStore::with_backend(
        SmallDisk {
            inner: redb::backends::InMemoryBackend::new(),
            limit: 4 << 20,
        },
        None,
    )
    .unwrap();
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..100u8 {
        let data = pattern(256 * 1024, i);
        match store.put(&data) {
            Ok((meta, _)) => stored.push((meta.address, data)),
            Err(e) => {
                full = Some((e, data));
                break;
            }
        }
    }
    let (err, data) = full.expect("a 4 MiB disk fills up");
    assert!(matches!(err, StoreError::DiskFull(_)), "{err}");
    // The object that did not fit does not exist, not even in part.
    let addr = ron_kernel::ContentAddress::from_bytes(*blake3::hash(&data).as_bytes());
    assert!(matches!(store.head(&addr), Ok(None)));
    // Everything acknowledged before is intact.
    for (a, d) in &stored {
        assert_eq!(&store.get(a).unwrap()[..], &d[..]);
    }
    // The totals rolled back with the write that failed.
    assert_eq!(store.stats().unwrap(), store.scan_stats().unwrap());
}

#[test]
fn the_totals_row_follows_every_commit_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let check = |store: &ObjectStore, what: &str| {
        assert_eq!(
            store.stats().unwrap(),
            store.scan_stats().unwrap(),
            "after {what}"
        );
    };
    let store = ObjectStore::open(&path, None).unwrap();
    check(&store, "open");
    let shared = pattern(2 * CHUNK_BYTES, 1);
    let mut second = shared.clone();
    second.extend_from_slice(&pattern(CHUNK_BYTES + 5, 2));
    let (a, _) = store.put(&shared).unwrap();
    check(&store, "put");
    let (b, _) = store.put(&second).unwrap();
    check(&store, "a put sharing chunks");
    let (_, created) = store.put(&shared).unwrap();
    assert!(!created);
    check(&store, "a put of stored content");
    let st = store.stats().unwrap();
    assert_eq!(st.objects, 2);
    assert_eq!(st.chunks, 4);
    assert_eq!(st.logical_bytes, (shared.len() + second.len()) as u64);

    // A delete while a write is in progress keeps the freed chunks until
    // collection; the totals count what is stored at each step.
    let mut w = store.writer();
    w.write(&pattern(CHUNK_BYTES, 3)).unwrap();
    check(&store, "an unfinished write's chunk");
    assert!(store.delete(&b.address).unwrap());
    check(&store, "a delete during a write");
    drop(w);
    store.gc().unwrap();
    check(&store, "collection");

    let id = store.upload_create().unwrap();
    store
        .upload_part(
            id,
            0,
            bytes::Bytes::copy_from_slice(&pattern(CHUNK_BYTES + 9, 4)),
        )
        .unwrap();
    check(&store, "an upload part");
    store.upload_complete(id).unwrap();
    check(&store, "an upload's completion");
    let id = store.upload_create().unwrap();
    store
        .upload_part(
            id,
            0,
            bytes::Bytes::copy_from_slice(&pattern(3 * CHUNK_BYTES, 5)),
        )
        .unwrap();
    store.upload_abort(id).unwrap();
    check(&store, "an upload's abort");
    assert!(store.delete(&a.address).unwrap());
    check(&store, "a delete");
    let before = store.stats().unwrap();
    drop(store);

    let store = ObjectStore::open(&path, None).unwrap();
    assert_eq!(store.stats().unwrap(), before);
    check(&store, "reopening");
}

#[test]
fn a_store_written_before_the_totals_row_is_counted_once_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = ObjectStore::open(&path, None).unwrap();
    store.put(&pattern(3 * CHUNK_BYTES + 1, 7)).unwrap();
    let expected = store.scan_stats().unwrap();
    drop(store);
    // What a store of an earlier release looks like: no totals table and
    // no schema version.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let totals: redb::TableDefinition<&str, (u64, u64, u64, u64, u64)> =
            redb::TableDefinition::new("totals");
        assert!(txn.delete_table(totals).unwrap());
        let schema: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("ron_schema");
        assert!(txn.delete_table(schema).unwrap());
        txn.commit().unwrap();
    }
    // Refused until migrated (`ronctl migrate storage`), then counted.
    let e = ObjectStore::open(&path, None).unwrap_err();
    assert!(e.to_string().contains("ronctl migrate storage"), "{e}");
    {
        let db = ron_kernel::schema::open_offline(&path, &ron_storage::store::SCHEMA).unwrap();
        let m = ron_kernel::schema::migrate(&db, &ron_storage::store::SCHEMA, true).unwrap();
        assert_eq!((m.from, m.to, m.upgraded), (Some(0), 2, true));
    }
    let store = ObjectStore::open(&path, None).unwrap();
    assert_eq!(store.stats().unwrap(), expected);
}

#[test]
fn the_read_cache_serves_exact_ranges_and_forgets_deleted_objects() {
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_read_cache(8 * CHUNK_BYTES as u64);
    let data = pattern(3 * CHUNK_BYTES + 100, 4);
    let (meta, _) = store.put(&data).unwrap();
    // Nothing is cached before the first read.
    assert!(store.cached_meta(&meta.address).is_none());
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
    let cached = store
        .cached_meta(&meta.address)
        .expect("record cached by the read");
    for (start, end) in [
        (0, data.len()),
        (0, 1),
        (CHUNK_BYTES - 1, CHUNK_BYTES + 1),
        (2 * CHUNK_BYTES + 5, 3 * CHUNK_BYTES + 100),
    ] {
        let pieces = store
            .cached_pieces(&cached, start as u64..end as u64)
            .expect("every chunk cached");
        let joined: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(joined, &data[start..end], "range {start}..{end}");
    }
    // A range past the end is not the cache's to answer.
    assert!(store
        .cached_pieces(&cached, 0..data.len() as u64 + 1)
        .is_none());

    assert!(store.delete(&meta.address).unwrap());
    assert!(store.cached_meta(&meta.address).is_none());
    assert!(matches!(
        store.get(&meta.address),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn with_the_cache_off_nothing_is_kept() {
    let store = ObjectStore::in_memory(None).unwrap().with_read_cache(0);
    let (meta, _) = store.put(&pattern(1000, 5)).unwrap();
    store.get(&meta.address).unwrap();
    assert!(store.cached_meta(&meta.address).is_none());
}

#[test]
fn a_written_object_records_its_tree_and_a_verified_write_stores_it_again_unhashed() {
    use ron_kernel::outboard::Tree;
    let store = ObjectStore::in_memory(None).unwrap();
    for len in [1000, CHUNK_BYTES, 3 * CHUNK_BYTES + 5] {
        let data = pattern(len, 3);
        let (meta, _) = store.put(&data).unwrap();
        let tree = store.tree(&meta.address).unwrap().expect("here");
        assert_eq!(*tree, Tree::of(&data), "len {len}");
        assert_eq!(
            tree.leaves(),
            &meta.chunks[..],
            "the record is the tree's leaves"
        );
        // Groups checked elsewhere (a peer's fetch) go in under those ids.
        let other = ObjectStore::in_memory(None).unwrap();
        let mut w = other.writer();
        for (i, g) in data.chunks(CHUNK_BYTES).enumerate() {
            w.write_verified(bytes::Bytes::copy_from_slice(g), tree.leaves()[i])
                .unwrap();
        }
        assert_eq!(w.address(), meta.address);
        let (again, _) = w.finish().unwrap();
        assert_eq!(again, meta);
        assert_eq!(&other.get(&again.address).unwrap()[..], &data[..]);
    }
    // An object completed from an upload keeps its chunks' own hashes as
    // ids; its tree comes from one verified read, and it reads as before.
    let data = pattern(2 * CHUNK_BYTES + 9, 4);
    let id = store.upload_create().unwrap();
    store
        .upload_part(id, 0, bytes::Bytes::from(data.clone()))
        .unwrap();
    let (meta, _) = store.upload_complete(id).unwrap();
    assert_eq!(
        meta.chunks[0],
        *blake3::hash(&data[..CHUNK_BYTES]).as_bytes()
    );
    assert_eq!(
        store.tree(&meta.address).unwrap().as_deref(),
        Some(&Tree::of(&data))
    );
    assert_eq!(
        store.tree(&meta.address).unwrap().as_deref(),
        Some(&Tree::of(&data)),
        "kept"
    );
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
    // The tree goes with its object.
    assert!(store.delete(&meta.address).unwrap());
    assert_eq!(store.tree(&meta.address).unwrap(), None);
}

#[test]
fn a_chunk_written_under_a_wrong_id_is_never_served() {
    let store = ObjectStore::in_memory(None).unwrap();
    let data = pattern(2 * CHUNK_BYTES, 5);
    let tree = ron_kernel::outboard::Tree::of(&data);
    let mut w = store.writer();
    // The second group under the first one's id: the object's address is
    // right (the ids merge to it), its bytes are not.
    w.write_verified(
        bytes::Bytes::copy_from_slice(&data[..CHUNK_BYTES]),
        tree.leaves()[0],
    )
    .unwrap();
    w.write_verified(
        bytes::Bytes::copy_from_slice(&data[..CHUNK_BYTES]),
        tree.leaves()[1],
    )
    .unwrap();
    let (meta, _) = w.finish().unwrap();
    assert_eq!(meta.address.as_bytes(), blake3::hash(&data).as_bytes());
    assert!(matches!(
        store.get(&meta.address),
        Err(StoreError::Integrity { .. })
    ));
}

/// `Objects::open`: the record looked up once, any ranges read from it,
/// verified; an object not here is `None`.
#[test]
fn an_opened_object_reads_any_ranges_and_a_missing_one_is_none() {
    use ron_kernel::handles::Objects;
    let store = ObjectStore::in_memory(None).unwrap();
    let data = pattern(3 * CHUNK_BYTES + 100, 5);
    let (meta, _) = store.put(&data).unwrap();
    let settings = ron_kernel::Live::new(ron_kernel::NodeSettings {
        data_dir: std::env::temp_dir(),
        amnesia: true,
        read_only: false,
        drain_deadline: std::time::Duration::from_secs(1),
        header_read_timeout: std::time::Duration::from_secs(5),
        body_read_timeout: std::time::Duration::from_secs(5),
        max_body_bytes: 1 << 20,
        write_cap: Default::default(),
    });
    let api = ron_storage::http::StorageApi::new(store.clone(), settings, ron_kernel::Bus::new(8));
    let object = api.open(&meta.address).unwrap().expect("here");
    assert_eq!(object.size(), data.len() as u64);
    let c = CHUNK_BYTES as u64;
    for r in [0..1, c - 3..2 * c + 3, 3 * c..3 * c + 100, 5..5] {
        let got: Vec<u8> = object
            .read(r.clone())
            .unwrap()
            .flat_map(|p| p.unwrap().to_vec())
            .collect();
        assert_eq!(&got[..], &data[r.start as usize..r.end as usize], "{r:?}");
    }
    let other = ron_kernel::ContentAddress::from_bytes(*blake3::hash(b"not here").as_bytes());
    assert!(api.open(&other).unwrap().is_none());
}

/// On disk, a store's file does not grow by twice what it stores: a whole
/// 64 KiB chunk in one redb row took a 128 KiB page (the file grew by 2.3×
/// the objects' bytes; 1.3–1.5× with rows of 63 KiB, the rest is redb
/// copying leaves on write). Every byte still reads back after a reopen.
#[test]
fn a_disk_store_grows_by_what_it_stores_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storage.redb");
    let objects: Vec<Vec<u8>> = (0..8u8)
        .map(|seed| {
            let mut data = vec![0u8; 4 << 20];
            blake3::Hasher::new()
                .update(&[seed])
                .finalize_xof()
                .fill(&mut data);
            data
        })
        .collect();
    let mut addresses = Vec::new();
    {
        let store = ObjectStore::open(&path, None).unwrap();
        for data in &objects {
            addresses.push(store.put(data).unwrap().0.address);
        }
    }
    let stored = (objects.len() * (4 << 20)) as f64;
    let file = std::fs::metadata(&path).unwrap().len() as f64;
    assert!(
        file < 1.75 * stored,
        "a {file} byte file for {stored} bytes of objects"
    );
    let store = ObjectStore::open(&path, None).unwrap();
    for (data, address) in objects.iter().zip(&addresses) {
        assert!(store.get(address).unwrap() == data[..]);
    }
    let stats = store.scan_stats().unwrap();
    assert_eq!(stats.stored_bytes, stored as u64);
}
