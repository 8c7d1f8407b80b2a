//! Bus publish → receive latency and throughput with 1, 8 and 64
//! subscribers, next to a bare `tokio::sync::broadcast` channel doing the
//! same work in the same run (the peer: what the bus adds over its channel).
//!
//! Run: `cargo bench --bench bus` (or `make bench`).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ron_kernel::{Bus, BusMessage, KernelEvent};
use tokio::sync::{broadcast, Notify};

const BATCH: u64 = 512;

/// Subscribers that count every event; the one that completes a round
/// wakes the publisher.
struct Fanout {
    seen: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

fn spawn_bus_subscribers(
    rt: &tokio::runtime::Runtime,
    bus: &Bus,
    n: usize,
    per_round: usize,
) -> Fanout {
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    for _ in 0..n {
        let mut rx = bus.subscribe();
        let seen = seen.clone();
        let done = done.clone();
        rt.spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let BusMessage::Event(ev) = msg {
                    black_box(&ev);
                    if seen.fetch_add(1, Ordering::AcqRel) + 1 == n * per_round {
                        seen.store(0, Ordering::Release);
                        done.notify_one();
                    }
                }
            }
        });
    }
    Fanout { seen, done }
}

fn spawn_raw_subscribers(
    rt: &tokio::runtime::Runtime,
    tx: &broadcast::Sender<KernelEvent>,
    n: usize,
    per_round: usize,
) -> Fanout {
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    for _ in 0..n {
        let mut rx = tx.subscribe();
        let seen = seen.clone();
        let done = done.clone();
        rt.spawn(async move {
            while let Ok(ev) = rx.recv().await {
                black_box(&ev);
                if seen.fetch_add(1, Ordering::AcqRel) + 1 == n * per_round {
                    seen.store(0, Ordering::Release);
                    done.notify_one();
                }
            }
        });
    }
    Fanout { seen, done }
}

fn event(i: u64) -> KernelEvent {
    KernelEvent::ConfigUpdated { version: i }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut lat = c.benchmark_group("bus_latency_publish_to_all_received");
    for n in [1usize, 8, 64] {
        lat.bench_with_input(BenchmarkId::new("bus", n), &n, |b, &n| {
            let bus = Bus::new(1024);
            let f = spawn_bus_subscribers(&rt, &bus, n, 1);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let start = Instant::now();
                    bus.publish(event(i));
                    rt.block_on(f.done.notified());
                    total += start.elapsed();
                }
                total
            });
            drop(f.seen);
        });
        lat.bench_with_input(BenchmarkId::new("raw_broadcast", n), &n, |b, &n| {
            let (tx, _) = broadcast::channel(1024);
            let f = spawn_raw_subscribers(&rt, &tx, n, 1);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let start = Instant::now();
                    let _ = tx.send(event(i));
                    rt.block_on(f.done.notified());
                    total += start.elapsed();
                }
                total
            });
        });
    }
    lat.finish();

    let mut thr = c.benchmark_group("bus_throughput");
    thr.throughput(Throughput::Elements(BATCH));
    for n in [1usize, 8, 64] {
        thr.bench_with_input(BenchmarkId::new("bus", n), &n, |b, &n| {
            let bus = Bus::new(1024);
            let f = spawn_bus_subscribers(&rt, &bus, n, BATCH as usize);
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..BATCH {
                        bus.publish(event(i));
                    }
                    rt.block_on(f.done.notified());
                }
                start.elapsed()
            });
        });
        thr.bench_with_input(BenchmarkId::new("raw_broadcast", n), &n, |b, &n| {
            let (tx, _) = broadcast::channel(1024);
            let f = spawn_raw_subscribers(&rt, &tx, n, BATCH as usize);
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..BATCH {
                        let _ = tx.send(event(i));
                    }
                    rt.block_on(f.done.notified());
                }
                start.elapsed()
            });
        });
    }
    thr.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
