//! The byte budget (`storage.max_bytes`): an amnesia store evicts the least
//! recently used unnamed objects to make room and refuses only when nothing
//! more can go; a store on disk never evicts. Also: chunks live as `Bytes`
//! in RAM under amnesia, a read in progress is not cut by an eviction, and
//! an unfinished write's chunks survive a delete of an object sharing them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::pattern;
use ron_kernel::ContentAddress;
use ron_storage::store::{KeepFn, CHUNK_BYTES};
use ron_storage::{ObjectStore, StoreError};

const C: u64 = CHUNK_BYTES as u64;

/// A keep set the test changes as it goes (what the index would name).
fn keep_set() -> (Arc<Mutex<HashSet<ContentAddress>>>, KeepFn) {
    let set = Arc::new(Mutex::new(HashSet::new()));
    let s = set.clone();
    (set, Box::new(move || Some(s.lock().unwrap().clone())))
}

fn assert_consistent(store: &ObjectStore) {
    assert_eq!(store.stats().unwrap(), store.scan_stats().unwrap());
}

#[test]
fn a_full_cache_evicts_the_least_recently_used_unnamed_objects() {
    let (named, keep) = keep_set();
    // 8 chunks; the low-water mark leaves room for one more object.
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_budget(8 * C, Some(keep));
    let objs: Vec<_> = (0..4u8)
        .map(|i| {
            let data = pattern(2 * CHUNK_BYTES, i);
            (store.put(&data).unwrap().0.address, data)
        })
        .collect();
    assert_eq!(store.stats().unwrap().stored_bytes, 8 * C);
    // 0 is named, 1 was just read: 2 is the least recently used unnamed one.
    named.lock().unwrap().insert(objs[0].0);
    store.get(&objs[1].0).unwrap();
    let (e, _) = store.put(&pattern(2 * CHUNK_BYTES, 9)).unwrap();
    assert!(
        store.head(&objs[2].0).unwrap().is_none(),
        "LRU unnamed evicted"
    );
    for i in [0, 1, 3] {
        assert_eq!(&store.get(&objs[i].0).unwrap()[..], &objs[i].1[..]);
    }
    assert!(store.head(&e.address).unwrap().is_some());
    assert!(store.stats().unwrap().stored_bytes <= 8 * C);
    assert_consistent(&store);
}

#[test]
fn when_everything_left_is_named_a_write_is_refused_and_nothing_is_kept() {
    let (named, keep) = keep_set();
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_budget(4 * C, Some(keep));
    let a = store.put(&pattern(3 * CHUNK_BYTES, 1)).unwrap().0.address;
    named.lock().unwrap().insert(a);
    let before = store.stats().unwrap();
    let err = store.put(&pattern(2 * CHUNK_BYTES + 5, 2)).unwrap_err();
    assert!(
        matches!(err, StoreError::Full { max, evicts: true, .. } if max == 4 * C),
        "{err}"
    );
    // The first new chunk fitted; the write failed at the second. Nothing
    // of it is an object, and its chunk went with the writer.
    assert_eq!(store.stats().unwrap(), before);
    assert_consistent(&store);
    assert!(store.head(&a).unwrap().is_some());
    // Once the name goes, the same write evicts the object and fits.
    named.lock().unwrap().clear();
    let data = pattern(2 * CHUNK_BYTES + 5, 2);
    let (b, _) = store.put(&data).unwrap();
    assert_eq!(&store.get(&b.address).unwrap()[..], &data[..]);
    assert!(store.head(&a).unwrap().is_none());
    assert_consistent(&store);
}

#[test]
fn an_object_larger_than_the_budget_is_refused() {
    let (_, keep) = keep_set();
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_budget(2 * C, Some(keep));
    let err = store.put(&pattern(3 * CHUNK_BYTES, 1)).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert_eq!(store.stats().unwrap().stored_bytes, 0);
}

#[test]
fn when_the_names_cannot_be_read_nothing_is_evicted() {
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_budget(2 * C, Some(Box::new(|| None)));
    let a = store.put(&pattern(2 * CHUNK_BYTES, 1)).unwrap().0.address;
    assert!(matches!(
        store.put(&pattern(CHUNK_BYTES, 2)),
        Err(StoreError::Full { .. })
    ));
    assert!(store.head(&a).unwrap().is_some());
}

#[test]
fn a_store_on_disk_never_evicts_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&dir.path().join("s.redb"), None)
        .unwrap()
        .with_budget(3 * C, None);
    let a = store.put(&pattern(2 * CHUNK_BYTES, 1)).unwrap().0.address;
    let err = store.put(&pattern(2 * CHUNK_BYTES, 2)).unwrap_err();
    assert!(
        matches!(err, StoreError::Full { evicts: false, .. }),
        "{err}"
    );
    assert!(store.head(&a).unwrap().is_some());
    // Content already stored costs nothing more: still accepted.
    assert!(!store.put(&pattern(2 * CHUNK_BYTES, 1)).unwrap().1);
    store.gc().unwrap();
    assert_eq!(store.stats().unwrap().stored_bytes, 2 * C);
    assert_consistent(&store);
}

#[test]
fn resumable_uploads_keep_to_the_budget() {
    let (_, keep) = keep_set();
    let store = ObjectStore::in_memory(None)
        .unwrap()
        .with_budget(4 * C, Some(keep));
    let old = store.put(&pattern(3 * CHUNK_BYTES, 7)).unwrap().0.address;
    let data = pattern(3 * CHUNK_BYTES + 100, 8);
    let id = store.upload_create().unwrap();
    for (n, part) in data.chunks(CHUNK_BYTES + 1000).enumerate() {
        store
            .upload_part(id, n as u64, bytes::Bytes::copy_from_slice(part))
            .unwrap();
    }
    let (meta, created) = store.upload_complete(id).unwrap();
    assert!(created);
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
    assert!(
        store.head(&old).unwrap().is_none(),
        "evicted for the upload"
    );
    assert!(store.stats().unwrap().stored_bytes <= 4 * C);
    assert_consistent(&store);
}

#[test]
fn a_read_in_progress_survives_the_objects_eviction() {
    let store = ObjectStore::in_memory(None).unwrap();
    let data = pattern(4 * CHUNK_BYTES + 3, 3);
    let (meta, _) = store.put(&data).unwrap();
    let (_, mut reader) = store
        .read(&meta.address, Some(10..data.len() as u64))
        .unwrap();
    let first = reader.next().unwrap().unwrap();
    assert!(store.delete(&meta.address).unwrap());
    assert_eq!(store.stats().unwrap().stored_bytes, 0);
    let mut got = first.to_vec();
    for piece in reader {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(&got[..], &data[10..]);
}

#[test]
fn an_unfinished_writes_chunks_survive_a_delete_of_an_object_sharing_them() {
    for store in [
        ObjectStore::in_memory(None).unwrap(),
        ObjectStore::open(&tempfile::tempdir().unwrap().keep().join("s.redb"), None).unwrap(),
    ] {
        let shared = pattern(2 * CHUNK_BYTES, 4);
        let (old, _) = store.put(&shared).unwrap();
        let mut w = store.writer();
        w.write(&shared).unwrap(); // finds both chunks stored: pins them
        assert!(store.delete(&old.address).unwrap());
        // Meanwhile other objects come and go; collection runs.
        let (other, _) = store.put(&pattern(CHUNK_BYTES, 5)).unwrap();
        store.delete(&other.address).unwrap();
        store.gc().unwrap();
        w.write(b"tail").unwrap();
        let (meta, created) = w.finish().unwrap();
        assert!(created);
        let mut want = shared.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(&store.get(&meta.address).unwrap()[..], &want[..]);
        assert_consistent(&store);
    }
}

#[test]
fn ram_chunks_weigh_what_they_hold() {
    // Small objects are not kept in 64 KiB buffers: stored bytes are the
    // objects' bytes, and the RAM backend below the records stays small.
    let store = ObjectStore::in_memory(None).unwrap();
    for i in 0..200u8 {
        store.put(&pattern(4096, i)).unwrap();
    }
    let st = store.stats().unwrap();
    assert_eq!(st.stored_bytes, 200 * 4096);
    assert_consistent(&store);
}
