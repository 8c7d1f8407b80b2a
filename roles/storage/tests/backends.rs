//! One set of behaviour tests, run against every place the store keeps
//! bytes: redb on disk, RAM (amnesia), and a bucket (`storage.backend =
//! "s3"`: an in-memory `object_store`, and real S3 servers on loopback —
//! `s3s-fs`, which checks SigV4 signatures, and moto — when their
//! binaries are installed; `packaging/tools.sh` installs both, and under
//! CI a missing one fails the test instead of skipping it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pattern;
use object_store::memory::InMemory;
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use ron_storage::remote::Remote;
use ron_storage::store::CHUNK_BYTES;
use ron_storage::{ObjectStore, StoreError};

#[path = "../../../tests/common/s3.rs"]
mod s3;

/// A client of a test server's bucket.
fn bucket_of(server: &s3::Server) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_allow_http(true)
            .with_bucket_name(s3::BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(s3::ACCESS_KEY)
            .with_secret_access_key(s3::SECRET_KEY)
            .build()
            .unwrap(),
    )
}

/// A store under test and what it needs kept alive.
struct Fixture {
    store: ObjectStore,
    /// The bucket behind a remote store, to tamper with it.
    bucket: Option<Arc<dyn object_store::ObjectStore>>,
    /// Its key prefix: each fixture on a shared server has its own.
    prefix: String,
    rt: Arc<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    fn redb() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(&dir.path().join("s.redb"), None).unwrap();
        Self {
            store,
            bucket: None,
            prefix: String::new(),
            rt: runtime(),
            _dir: Some(dir),
        }
    }

    fn ram() -> Self {
        Self {
            store: ObjectStore::in_memory(None).unwrap(),
            bucket: None,
            prefix: String::new(),
            rt: runtime(),
            _dir: None,
        }
    }

    /// A store on `bucket` under a prefix of its own, with its own local
    /// redb.
    fn on(bucket: Arc<dyn object_store::ObjectStore>, rt: Arc<tokio::runtime::Runtime>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("ron/test-{}-{n}", std::process::id());
        Self::at(bucket, rt, prefix)
    }

    /// A node on `bucket` under `prefix`, with its own local redb.
    fn at(
        bucket: Arc<dyn object_store::ObjectStore>,
        rt: Arc<tokio::runtime::Runtime>,
        prefix: String,
    ) -> Self {
        let remote = Remote::new(
            bucket.clone(),
            &prefix,
            rt.handle().clone(),
            Duration::from_secs(10),
            "test bucket".into(),
        );
        Self {
            store: ObjectStore::with_remote(None, remote, None)
                .unwrap()
                .with_read_cache(1 << 20),
            bucket: Some(bucket),
            prefix,
            rt,
            _dir: None,
        }
    }

    fn memory_bucket() -> Self {
        Self::on(Arc::new(InMemory::new()), runtime())
    }

    /// Another node on the same bucket and prefix.
    fn replica(&self) -> Self {
        Self::at(
            self.bucket.clone().unwrap(),
            self.rt.clone(),
            self.prefix.clone(),
        )
    }

    fn bucket_put(&self, key: &str, data: Vec<u8>) {
        let bucket = self.bucket.clone().unwrap();
        let key = Key::from(format!("{}/{key}", self.prefix));
        self.rt
            .block_on(bucket.put(&key, PutPayload::from(data)))
            .unwrap();
    }

    fn bucket_get(&self, key: &str) -> Vec<u8> {
        let bucket = self.bucket.clone().unwrap();
        let key = Key::from(format!("{}/{key}", self.prefix));
        self.rt
            .block_on(async { bucket.get(&key).await.unwrap().bytes().await })
            .unwrap()
            .to_vec()
    }

    fn bucket_keys(&self, dir: &str) -> Vec<String> {
        use futures::TryStreamExt as _;
        let bucket = self.bucket.clone().unwrap();
        let prefix = Key::from(format!("{}/{dir}", self.prefix));
        let metas: Vec<_> = self
            .rt
            .block_on(bucket.list(Some(&prefix)).try_collect::<Vec<_>>())
            .unwrap();
        metas
            .into_iter()
            .map(|m| m.location.filename().unwrap().to_owned())
            .collect()
    }
}

fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    )
}

/// The bytes a bucket pack holds at most (16 chunks); a write's last
/// chunks, up to this much, travel inline in its manifest.
const PACK: usize = 16 * CHUNK_BYTES;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A behaviour: its name and its check.
type Behaviour = (&'static str, fn(&Fixture));

/// The behaviours every backend shares, each run on a fresh store.
fn behaviours() -> Vec<Behaviour> {
    vec![
        ("round trip and dedup", round_trip_and_dedup),
        ("streamed writes", streamed_writes),
        ("ranges", ranges),
        ("delete", delete),
        ("unfinished write", unfinished_write),
        ("resumable upload", resumable_upload),
    ]
}

fn run_all(make: impl Fn() -> Fixture) {
    for (name, test) in behaviours() {
        let f = make();
        eprintln!("behaviour: {name}");
        test(&f);
    }
}

fn round_trip_and_dedup(f: &Fixture) {
    // Up to a pack (inline in a bucket's manifest), one chunk past it, two
    // packs and a chunk.
    for len in [
        0,
        1,
        CHUNK_BYTES,
        3 * CHUNK_BYTES + 17,
        PACK,
        PACK + 1,
        2 * PACK + 5,
    ] {
        let data = pattern(len, 1);
        let (meta, created) = f.store.put(&data).unwrap();
        assert!(created, "len {len}");
        assert_eq!(meta.address.as_bytes(), blake3::hash(&data).as_bytes());
        assert_eq!(meta.size, len as u64);
        assert_eq!(&f.store.get(&meta.address).unwrap()[..], &data[..]);
        assert_eq!(
            f.store.head(&meta.address).unwrap().unwrap().size,
            len as u64
        );
        let (again, created) = f.store.put(&data).unwrap();
        assert!(!created, "the same bytes twice are one object");
        assert_eq!(again, meta);
    }
}

fn streamed_writes(f: &Fixture) {
    let data = pattern(5 * CHUNK_BYTES / 2, 9);
    let mut w = f.store.writer();
    for piece in data.chunks(7919) {
        w.write(piece).unwrap();
    }
    let before = w.address();
    assert!(f.store.head(&before).unwrap().is_none());
    let (meta, _) = w.finish().unwrap();
    assert_eq!(meta.address, before);
    assert_eq!(&f.store.get(&meta.address).unwrap()[..], &data[..]);
}

fn ranges(f: &Fixture) {
    let data = pattern(PACK + 3 * CHUNK_BYTES + 100, 3);
    let (meta, _) = f.store.put(&data).unwrap();
    let (c, p, n) = (CHUNK_BYTES as u64, PACK as u64, data.len() as u64);
    for (a, b) in [
        (0, 1),
        (c - 1, c + 1),
        (10, n),
        (2 * c, 2 * c + 5),
        // Across a bucket's pack and the manifest's inline chunks.
        (p - 1, p + 1),
        (p + 2 * c + 1, n),
    ] {
        let (_, reader) = f.store.read(&meta.address, Some(a..b)).unwrap();
        let got: Vec<u8> = reader.flat_map(|p| p.unwrap().to_vec()).collect();
        assert_eq!(&got[..], &data[a as usize..b as usize], "{a}..{b}");
    }
    let past = meta.size + 1;
    assert!(matches!(
        f.store.read(&meta.address, Some(past..past + 1)),
        Err(StoreError::RangeNotSatisfiable { .. })
    ));
}

fn delete(f: &Fixture) {
    let shared = pattern(2 * CHUNK_BYTES, 4);
    let mut longer = shared.clone();
    longer.extend_from_slice(b"tail");
    let (a, _) = f.store.put(&shared).unwrap();
    let (b, _) = f.store.put(&longer).unwrap();
    assert!(f.store.delete(&a.address).unwrap());
    assert!(f.store.head(&a.address).unwrap().is_none());
    assert!(matches!(f.store.get(&a.address), Err(StoreError::NotFound)));
    assert!(!f.store.delete(&a.address).unwrap(), "gone already");
    // The chunks it shared still serve the other object.
    assert_eq!(&f.store.get(&b.address).unwrap()[..], &longer[..]);
}

fn unfinished_write(f: &Fixture) {
    let data = pattern(3 * CHUNK_BYTES, 5);
    let mut w = f.store.writer();
    w.write(&data).unwrap();
    let address = w.address();
    drop(w);
    assert!(f.store.head(&address).unwrap().is_none());
    assert!(matches!(f.store.get(&address), Err(StoreError::NotFound)));
}

fn resumable_upload(f: &Fixture) {
    // Parts that split chunks and parts that hold several; uploads of
    // nothing, of less than a chunk and of exactly one.
    for (len, part) in [
        (2 * CHUNK_BYTES + 999, 50_000),
        (5 * PACK / 2 + 999, 300_001),
        (2 * PACK, PACK),
        (0, 1),
        (10, 10),
        (CHUNK_BYTES, 1000),
    ] {
        let data = pattern(len, 6);
        let id = f.store.upload_create().unwrap();
        for (n, part) in data.chunks(part).enumerate() {
            f.store
                .upload_part(id, n as u64, bytes::Bytes::copy_from_slice(part))
                .unwrap();
        }
        let (meta, _) = f.store.upload_complete(id).unwrap();
        assert_eq!(
            meta.address.as_bytes(),
            blake3::hash(&data).as_bytes(),
            "{len} bytes in parts of {part}"
        );
        assert_eq!(&f.store.get(&meta.address).unwrap()[..], &data[..]);
        assert!(matches!(
            f.store.upload_state(id),
            Err(StoreError::UploadNotFound)
        ));
    }
}

#[test]
fn on_redb() {
    run_all(Fixture::redb);
}

#[test]
fn in_ram() {
    run_all(Fixture::ram);
}

#[test]
fn on_a_bucket() {
    run_all(Fixture::memory_bucket);
}

#[test]
fn on_s3s_fs() {
    let Some(server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    run_all(|| Fixture::on(bucket_of(&server), runtime()));
    // A replica shares what the first node wrote.
    bucket_behaviours(|| Fixture::on(bucket_of(&server), runtime()));
}

#[test]
fn on_moto() {
    let Some(server) = s3::Server::start(s3::Kind::Moto) else {
        return;
    };
    run_all(|| Fixture::on(bucket_of(&server), runtime()));
    bucket_behaviours(|| Fixture::on(bucket_of(&server), runtime()));
}

#[test]
fn bucket_only_behaviours_on_memory() {
    bucket_behaviours(Fixture::memory_bucket);
}

/// What only a bucket does: replicas, tampering, the sweep.
fn bucket_behaviours(make: impl Fn() -> Fixture) {
    replicas_share_objects(&make());
    tampered_bytes_are_never_served(&make());
    the_sweep_takes_only_old_unnamed_packs(&make());
    a_cached_record_finds_its_packs_again(&make());
    an_upload_whose_part_was_swept_does_not_complete(&make());
}

fn replicas_share_objects(a: &Fixture) {
    let b = a.replica();
    let data = pattern(2 * PACK + 5, 7);
    let (meta, _) = a.store.put(&data).unwrap();
    // Written through A, read through B at once.
    assert_eq!(&b.store.get(&meta.address).unwrap()[..], &data[..]);
    // The same bytes through B: the same object and packs, nothing new.
    let before = a.bucket_keys("packs");
    assert_eq!(before.len(), 2);
    b.store.put(&data).unwrap();
    assert_eq!(a.bucket_keys("packs"), before);
    // A writer on A that never finishes leaves no manifest B could see.
    let mut w = a.store.writer();
    w.write(&pattern(PACK + CHUNK_BYTES * 2, 8)).unwrap();
    let unfinished = w.address();
    drop(w);
    assert!(b.store.head(&unfinished).unwrap().is_none());
    // Deleted through B: gone for A too (its cache did not hold it).
    let other = pattern(100, 9);
    let (m2, _) = a.store.put(&other).unwrap();
    assert!(b.store.delete(&m2.address).unwrap());
    let fresh = a.replica();
    assert!(fresh.store.head(&m2.address).unwrap().is_none());
}

fn tampered_bytes_are_never_served(f: &Fixture) {
    let data = pattern(PACK + 2 * CHUNK_BYTES, 10);
    let (meta, _) = f.store.put(&data).unwrap();
    // The pack's second chunk replaced in the bucket: a fresh node
    // (nothing cached) must refuse it, and serve the chunk before it.
    let packs = f.bucket_keys("packs");
    assert_eq!(packs.len(), 1);
    let mut forged = data[..CHUNK_BYTES].to_vec();
    forged.resize(PACK, 0);
    f.bucket_put(&format!("packs/{}", packs[0]), forged);
    let fresh = f.replica();
    let (_, reader) = fresh.store.read(&meta.address, None).unwrap();
    let pieces: Vec<_> = reader.collect();
    assert!(pieces[0].is_ok());
    assert!(matches!(pieces[1], Err(StoreError::Integrity { .. })));
    // A byte of the manifest's inline chunks changed: that chunk is
    // refused, the ones before it served.
    let key = format!("objects/{}", hex(meta.address.as_bytes()));
    let mut manifest = f.bucket_get(&key);
    *manifest.last_mut().unwrap() ^= 1;
    f.bucket_put(&key, manifest);
    let last = meta.chunks.len() as u64 - 1;
    let fresh = f.replica();
    let at = last * CHUNK_BYTES as u64;
    let (_, reader) = fresh
        .store
        .read(&meta.address, Some(at - 1..at + 1))
        .unwrap();
    let pieces: Vec<_> = reader.collect();
    assert!(pieces[0].is_ok());
    assert!(matches!(pieces[1], Err(StoreError::Integrity { .. })));
    // A manifest replaced: refused before any byte.
    let small = pattern(10, 11);
    let (m2, _) = f.store.put(&small).unwrap();
    let mut forged = vec![0u8; 8 + 32 + 32];
    forged[7] = 10;
    f.bucket_put(&format!("objects/{}", hex(m2.address.as_bytes())), forged);
    let fresh = f.replica();
    assert!(matches!(
        fresh.store.get(&m2.address),
        Err(StoreError::Integrity { .. })
    ));
    // And the sweep deletes nothing on the word of a manifest it cannot
    // verify: it stops and names it.
    let e = f.store.sweep(Duration::ZERO).unwrap_err().to_string();
    assert!(e.contains(&hex(m2.address.as_bytes())), "{e}");
}

fn the_sweep_takes_only_old_unnamed_packs(f: &Fixture) {
    let kept = pattern(PACK + 2 * CHUNK_BYTES, 12);
    let (meta, _) = f.store.put(&kept).unwrap();
    let mut w = f.store.writer();
    // A pack goes up once a chunk follows it (and a full chunk once a
    // byte follows it): one byte past 17 chunks ships the first 16.
    w.write(&pattern(PACK + CHUNK_BYTES + 1, 13)).unwrap();
    let orphan = w.address();
    drop(w);
    // A deleted object's packs are garbage too.
    let (gone, _) = f.store.put(&pattern(2 * PACK + 1, 14)).unwrap();
    assert!(f.store.delete(&gone.address).unwrap());
    assert_eq!(f.bucket_keys("packs").len(), 4);
    // Within the grace period nothing goes.
    assert_eq!(f.store.sweep(Duration::from_secs(3600)).unwrap(), 0);
    // Past it, the orphan's and the deleted object's go; the named stays.
    assert_eq!(f.store.sweep(Duration::ZERO).unwrap(), 3);
    assert_eq!(f.bucket_keys("packs").len(), 1);
    assert_eq!(
        &f.replica().store.get(&meta.address).unwrap()[..],
        &kept[..]
    );
    assert!(f.store.head(&orphan).unwrap().is_none());
}

/// The read cache keeps records without where their chunks are: a read
/// that needs an uncached chunk asks the bucket for the manifest again.
fn a_cached_record_finds_its_packs_again(f: &Fixture) {
    let data = pattern(2 * PACK + 5, 15);
    let (meta, _) = f.store.put(&data).unwrap();
    let read = |a: usize, b: usize| -> Vec<u8> {
        let (_, reader) = f
            .store
            .read(&meta.address, Some(a as u64..b as u64))
            .unwrap();
        reader.flat_map(|p| p.unwrap().to_vec()).collect()
    };
    // The record is cached by the first read; chunk 0 never was.
    assert_eq!(read(PACK + 1, 2 * PACK), &data[PACK + 1..2 * PACK]);
    assert_eq!(read(0, 10), &data[..10]);
    assert_eq!(read(0, data.len()), data);
}

/// An upload whose pack the sweep took (it outlived the grace) fails its
/// completion as an integrity error and commits no object missing bytes.
fn an_upload_whose_part_was_swept_does_not_complete(f: &Fixture) {
    let data = pattern(PACK + 7, 16);
    let id = f.store.upload_create().unwrap();
    f.store
        .upload_part(id, 0, bytes::Bytes::copy_from_slice(&data))
        .unwrap();
    assert_eq!(f.store.sweep(Duration::ZERO).unwrap(), 1);
    let e = f.store.upload_complete(id).unwrap_err();
    assert!(
        matches!(e, StoreError::Integrity { .. }) && e.to_string().contains("gc_grace"),
        "{e}"
    );
    let address = ron_kernel::ContentAddress::from_bytes(*blake3::hash(&data).as_bytes());
    assert!(f.store.head(&address).unwrap().is_none());
}

#[test]
fn an_unreachable_bucket_is_a_clear_error_not_a_hang() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rt = runtime();
    let cfg = ron_storage::S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "nowhere".into(),
        allow_http: true,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retries: 0,
        access_key_id: Some(ron_kernel::Secret::new("k")),
        secret_access_key: Some(ron_kernel::Secret::new("s")),
        ..Default::default()
    };
    let remote = Remote::s3(&cfg, rt.handle().clone()).unwrap();
    let e = remote.reachable().unwrap_err().to_string();
    assert!(e.contains("S3") && !e.contains("builder error"), "{e}");
    let store = ObjectStore::with_remote(None, remote, None).unwrap();
    let e = store.put(b"x").unwrap_err();
    assert!(matches!(e, StoreError::Backend(_)), "{e}");
}

/// The node's own way to the bucket (`storage.s3.*` through
/// `Remote::s3`, an `http://` endpoint allowed) reaches a real server and
/// round-trips an object; the wrong secret is refused by the server's
/// signature check, naming the bucket and endpoint.
#[test]
fn the_configured_client_reaches_s3s_fs_and_is_refused_with_a_wrong_secret() {
    let Some(server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let rt = runtime();
    let mut cfg = ron_storage::S3Config {
        endpoint: server.endpoint.clone(),
        bucket: s3::BUCKET.into(),
        allow_http: true,
        prefix: "configured".into(),
        access_key_id: Some(ron_kernel::Secret::new(s3::ACCESS_KEY)),
        secret_access_key: Some(ron_kernel::Secret::new(s3::SECRET_KEY)),
        ..Default::default()
    };
    // Payloads signed (the default over http://) and not.
    for sign in [
        ron_storage::SignPayload::Auto,
        ron_storage::SignPayload::Never,
    ] {
        cfg.sign_payload = sign;
        let remote = Remote::s3(&cfg, rt.handle().clone()).unwrap();
        remote.reachable().unwrap();
        let store = ObjectStore::with_remote(None, remote, None).unwrap();
        let data = pattern(PACK + CHUNK_BYTES + 3, 20);
        let (meta, _) = store.put(&data).unwrap();
        assert_eq!(
            &store.get(&meta.address).unwrap()[..],
            &data[..],
            "{sign:?}"
        );
    }

    cfg.secret_access_key = Some(ron_kernel::Secret::new("wrong"));
    let remote = Remote::s3(&cfg, rt.handle().clone()).unwrap();
    assert!(remote.label.contains(s3::BUCKET) && remote.label.contains(&server.endpoint));
    let e = remote.reachable().unwrap_err().to_string();
    assert!(!e.contains("builder error"), "{e}");
    assert!(!e.contains("wrong"), "a credential in an error: {e}");
}

/// A bucket that goes away fails reads and writes with a backend error
/// (never an integrity error: nothing was found wrong with the bytes)
/// within the budget, and the same store works again once it is back.
#[test]
fn a_bucket_that_goes_away_and_comes_back() {
    let Some(mut server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let rt = runtime();
    let cfg = ron_storage::S3Config {
        endpoint: server.endpoint.clone(),
        bucket: s3::BUCKET.into(),
        allow_http: true,
        prefix: "away".into(),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retries: 1,
        access_key_id: Some(ron_kernel::Secret::new(s3::ACCESS_KEY)),
        secret_access_key: Some(ron_kernel::Secret::new(s3::SECRET_KEY)),
        ..Default::default()
    };
    let store =
        ObjectStore::with_remote(None, Remote::s3(&cfg, rt.handle().clone()).unwrap(), None)
            .unwrap();
    let data = pattern(3 * CHUNK_BYTES, 30);
    let (meta, _) = store.put(&data).unwrap();
    server.stop();
    let started = std::time::Instant::now();
    assert!(matches!(
        store.get(&meta.address),
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(store.put(b"more"), Err(StoreError::Backend(_))));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    assert_eq!(&store.get(&meta.address).unwrap()[..], &data[..]);
    store.put(b"more").unwrap();
}
