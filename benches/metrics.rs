//! What a request's latency sample costs, recorded as the node records it
//! (`request_latency_seconds{route}` through the `metrics` macro into the
//! installed exporter): into a Prometheus histogram with the node's buckets
//! next to the same call into the summary the exporter makes without
//! buckets (what every latency metric was before histograms), in one run.
//! Also the CPU cost of a scrape: rendering every series of an all-roles
//! node, and reading the process_* gauges from /proc (the end-to-end
//! scrape under load is `benches/scrape.sh`).
//!
//! Run: `cargo bench --bench metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ron_kernel::metrics::names;

fn histogram_recorder() -> PrometheusRecorder {
    match macronode::node::prometheus_builder() {
        Ok(b) => b.build_recorder(),
        Err(e) => panic!("the node's buckets are valid: {e}"),
    }
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_request_latency");
    for (kind, rec) in [
        ("histogram", histogram_recorder()),
        ("summary", PrometheusBuilder::new().build_recorder()),
    ] {
        g.bench_function(kind, |b| {
            metrics::with_local_recorder(&rec, || {
                let mut x = 0.0001f64;
                b.iter(|| {
                    // Walk the buckets so no single branch is always taken.
                    x = if x > 2.0 { 0.0001 } else { x * 1.37 };
                    metrics::histogram!(names::REQUEST_LATENCY_SECONDS, "route" => "/v1/o/{address}")
                        .record(black_box(x));
                })
            })
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    let rec = histogram_recorder();
    let handle = rec.handle();
    metrics::with_local_recorder(&rec, || {
        let role_names = match macronode::roles::select(&[]) {
            Ok(r) => r,
            Err(e) => panic!("the default roles are compiled in: {e}"),
        };
        let cfg = macronode::config::NodeConfig::defaults(macronode::config::Profile::Macronode);
        let (specs, _) = macronode::roles::build(&role_names, &cfg);
        macronode::node::init_series(&specs);
        // Traffic on a few routes, so their buckets are not all zero.
        for (i, route) in ["/v1/o/{address}", "/v1/names/{name}", "/registry/head"]
            .iter()
            .enumerate()
        {
            for k in 0..10_000u32 {
                metrics::histogram!(names::REQUEST_LATENCY_SECONDS, "route" => *route)
                    .record(f64::from(k % 997) * 1e-5 * (i + 1) as f64);
            }
        }
    });
    let bytes = handle.render().len();
    let mut g = c.benchmark_group("render_scrape");
    g.bench_function(format!("all_roles_{bytes}_bytes"), |b| {
        b.iter(|| black_box(handle.render()))
    });
    // The other half of a scrape: the process_* gauges read from /proc.
    let process = metrics_process::Collector::default();
    metrics::with_local_recorder(&rec, || process.describe());
    g.bench_function("process_collect", |b| {
        metrics::with_local_recorder(&rec, || b.iter(|| process.collect()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = record, render
}
criterion_main!(benches);
