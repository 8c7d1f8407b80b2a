//! The registry log in-process, each figure next to its peer from the
//! same run:
//! - commit latency (3-of-5 approvals re-verified, durable write of
//!   artifact + head + proposal) p50/p99 over 300 commits, next to a bare
//!   redb `Durability::Immediate` insert of the same artifact bytes;
//! - restart to read-ready of a registry holding 50,000 descriptors (500
//!   versions × 100 node items), next to opening the same redb file bare;
//!   and a fully verified restore of it from a backup file;
//! - approval verification per signature: `verify_strict` one by one, next
//!   to `ed25519_dalek::verify_batch` over the same 5 and 64 signatures.
//!
//! Run: `cargo bench --bench registry`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

// The allocator both binaries run on (src/main.rs): the figures are the
// node's, not glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use redb::{Database, Durability, TableDefinition};
use ron_registry::log::{Options, Registry};
use ron_registry::model::{
    encode_hex, hash_bytes, signing_message, Approval, DescriptorSet, Item, Node, Payload,
    SignerEntry, SignerSet,
};

fn keys(n: usize) -> Vec<SigningKey> {
    (0..n)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
        .collect()
}

fn set(keys: &[SigningKey], m: u32) -> SignerSet {
    SignerSet {
        m,
        signers: keys
            .iter()
            .enumerate()
            .map(|(i, k)| SignerEntry {
                id: format!("s{i}"),
                public_key: encode_hex(k.verifying_key().as_bytes()),
            })
            .collect(),
    }
}

fn opts(genesis: SignerSet) -> Options {
    Options {
        genesis,
        proposal_ttl: Duration::from_secs(3600),
        upstream: None,
        bus: None,
        stream_buffer: ron_registry::log::STREAM_BUFFER,
    }
}

fn nodes(version: u64, n: usize, key: &SigningKey) -> Vec<Item> {
    (0..n)
        .map(|i| {
            Item::Node(Node {
                id: format!("n{version}-{i}"),
                public_key: encode_hex(key.verifying_key().as_bytes()),
                addrs: vec![format!("10.0.{}.{}:9445", i / 250, i % 250)],
                roles: vec!["storage".into(), "overlay".into()],
                region: Some("eu".into()),
            })
        })
        .collect()
}

/// Proposes `items` on the head, approves with signers `0..m`, commits.
/// Returns the commit call's own latency.
fn commit_one(reg: &Registry, keys: &[SigningKey], m: usize, items: Vec<Item>) -> Duration {
    let head = reg.snapshot().head.clone();
    let p = reg
        .propose(
            Payload::from_set(DescriptorSet {
                version: head.version + 1,
                prev_b3: head.payload_b3,
                items,
                created_at: "2026-11-25T10:00:00Z".into(),
            })
            .expect("payload"),
        )
        .expect("propose");
    let h = hash_bytes(&p.payload_b3).expect("hash");
    for (i, k) in keys.iter().enumerate().take(m) {
        let sig = k.sign(&signing_message(p.payload.version, &h));
        reg.approve(
            &p.id,
            Approval {
                signer_id: format!("s{i}"),
                sig: encode_hex(&sig.to_bytes()),
            },
        )
        .expect("approve");
    }
    let t = Instant::now();
    reg.commit(&p.id).expect("commit");
    t.elapsed()
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn commit_latency() {
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(5);
    let reg = Registry::open(&dir.path().join("r.redb"), opts(set(&k, 3))).expect("open");
    let mut ours: Vec<Duration> = (0..N)
        .map(|i| commit_one(&reg, &k, 3, nodes(i as u64, 1, &k[0])))
        .collect();

    // Peer: the same artifact bytes, one durable redb insert each.
    let raw = reg.artifact_json(1).expect("artifact");
    let db = Database::create(dir.path().join("bare.redb")).expect("bare");
    let t: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
    let mut bare: Vec<Duration> = (0..N as u64)
        .map(|i| {
            let s = Instant::now();
            let mut txn = db.begin_write().expect("txn");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            txn.open_table(t)
                .expect("table")
                .insert(i, &raw[..])
                .expect("insert");
            txn.commit().expect("commit");
            s.elapsed()
        })
        .collect();
    let (p50, p99) = (pct(&mut ours, 50), pct(&mut ours, 99));
    let (b50, b99) = (pct(&mut bare, 50), pct(&mut bare, 99));
    println!(
        "registry/commit 3-of-5 durable: p50 {p50:?} p99 {p99:?} | bare redb durable insert: p50 {b50:?} p99 {b99:?} | ratio p50 {:.2}x p99 {:.2}x",
        p50.as_secs_f64() / b50.as_secs_f64(),
        p99.as_secs_f64() / b99.as_secs_f64()
    );
}

fn restore_50k() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(3);
    let path = dir.path().join("big.redb");
    let backup = dir.path().join("big.jsonl");
    {
        let reg = Registry::open(&path, opts(set(&k, 2))).expect("open");
        for v in 0..500u64 {
            commit_one(&reg, &k, 2, nodes(v, 100, &k[0]));
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&backup).expect("backup"));
        reg.backup(&mut f).expect("backup");
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let s = Instant::now();
    let reg = Registry::open(&path, opts(set(&k, 2))).expect("reopen");
    black_box(reg.snapshot().head.version);
    black_box(reg.artifact_json(250).expect("read"));
    let reopen = s.elapsed();
    drop(reg);
    let s = Instant::now();
    let db = Database::create(&path).expect("bare open");
    let bare = s.elapsed();
    drop(db);

    let s = Instant::now();
    let fresh = Registry::open(&dir.path().join("restored.redb"), opts(set(&k, 2))).expect("fresh");
    let mut input = std::io::BufReader::new(std::fs::File::open(&backup).expect("backup"));
    let head = fresh.restore(&mut input).expect("restore");
    let restore = s.elapsed();
    println!(
        "registry/50k descriptors ({} versions, {} MiB): restart to read-ready {reopen:?} | bare redb open {bare:?} | ratio {:.2}x | verified restore from backup {restore:?}",
        head.version,
        bytes >> 20,
        reopen.as_secs_f64() / bare.as_secs_f64()
    );
}

fn verify(c: &mut Criterion) {
    let k = keys(64);
    let msg = signing_message(7, &[9u8; 32]);
    let sigs: Vec<Signature> = k.iter().map(|key| key.sign(&msg)).collect();
    let pubs: Vec<VerifyingKey> = k.iter().map(|key| key.verifying_key()).collect();
    let mut g = c.benchmark_group("registry/verify");
    for n in [5usize, 64] {
        g.bench_function(BenchmarkId::new("verify_strict_each", n), |b| {
            b.iter(|| {
                for i in 0..n {
                    black_box(pubs[i].verify_strict(&msg, &sigs[i]).is_ok());
                }
            })
        });
        let msgs: Vec<&[u8]> = vec![&msg[..]; n];
        g.bench_function(BenchmarkId::new("verify_batch", n), |b| {
            b.iter(|| black_box(ed25519_dalek::verify_batch(&msgs, &sigs[..n], &pubs[..n]).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(benches, verify);

fn main() {
    commit_latency();
    restore_50k();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
