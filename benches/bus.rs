//! Bus publish → receive latency and throughput with 1, 8 and 64
//! subscribers, next to a bare `tokio::sync::broadcast` channel doing the
//! same work in the same run (the peer: what the bus adds over its channel).
//!
//! Run: `cargo bench --bench bus` (or `make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

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
    done: Arc<Notify>,
}

/// A subscription of either kind: `None` when closed, `Some(true)` for an
/// event, `Some(false)` for anything else (a lag notice).
trait Subscription: Send + 'static {
    fn next(&mut self) -> impl std::future::Future<Output = Option<bool>> + Send;
}

impl Subscription for ron_kernel::BusReceiver {
    async fn next(&mut self) -> Option<bool> {
        self.recv().await.map(|m| matches!(m, BusMessage::Event(_)))
    }
}

impl Subscription for broadcast::Receiver<KernelEvent> {
    async fn next(&mut self) -> Option<bool> {
        match self.recv().await {
            Ok(ev) => {
                black_box(&ev);
                Some(true)
            }
            Err(broadcast::error::RecvError::Lagged(_)) => Some(false),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

fn spawn_subscribers<S: Subscription>(
    rt: &tokio::runtime::Runtime,
    n: usize,
    per_round: usize,
    mut subscribe: impl FnMut() -> S,
) -> Fanout {
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    for _ in 0..n {
        let mut rx = subscribe();
        let seen = seen.clone();
        let done = done.clone();
        rt.spawn(async move {
            while let Some(event) = rx.next().await {
                if event && seen.fetch_add(1, Ordering::AcqRel) + 1 == n * per_round {
                    seen.store(0, Ordering::Release);
                    done.notify_one();
                }
            }
        });
    }
    Fanout { done }
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
            let f = spawn_subscribers(&rt, n, 1, || bus.subscribe());
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
        });
        lat.bench_with_input(BenchmarkId::new("raw_broadcast", n), &n, |b, &n| {
            let (tx, _) = broadcast::channel(1024);
            let f = spawn_subscribers(&rt, n, 1, || tx.subscribe());
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
            let f = spawn_subscribers(&rt, n, BATCH as usize, || bus.subscribe());
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
            let f = spawn_subscribers(&rt, n, BATCH as usize, || tx.subscribe());
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
