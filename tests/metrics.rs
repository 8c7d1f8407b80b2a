//! The telemetry an SRE alerts on, against the real binary with every
//! role: on the very first scrape every metric the shipped alert rules and
//! dashboards name is there, every latency metric is a histogram, and the
//! counters the runbooks read as "should be 0" read 0; the store gauges
//! are current as soon as a write is acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::NodeBuilder;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Metric names in a PromQL expression: identifiers followed by a label
/// selector or a range (the rules and dashboards always write one).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
            i += 1;
        }
        if i > start {
            let word = &expr[start..i];
            let quoted = start > 0 && b[start - 1] == b'"';
            if !quoted
                && !word.as_bytes()[0].is_ascii_digit()
                && matches!(b.get(i), Some(b'{') | Some(b'['))
            {
                out.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
}

/// Every expression of the shipped rule files and dashboards.
fn shipped_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    let rules = root().join("packaging/prometheus");
    for e in std::fs::read_dir(&rules).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rules.yml") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                if let Some(e) = line.trim().strip_prefix("expr: ") {
                    exprs.push(e.to_owned());
                }
            }
        }
    }
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    for e in std::fs::read_dir(root().join("packaging/grafana")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            walk(&v, &mut exprs);
        }
    }
    exprs
}

#[test]
fn every_metric_the_rules_and_dashboards_name_is_there_on_the_first_scrape() {
    let exprs = shipped_exprs();
    assert!(exprs.len() > 40, "found only {} expressions", exprs.len());
    let mut wanted = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut wanted);
    }
    assert!(
        wanted.contains("request_latency_seconds_bucket"),
        "{wanted:?}"
    );

    let node = NodeBuilder::new().start();
    node.wait_ready();
    let scrape = node.get("metrics", "/metrics").body;
    let present: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // One series per entity the node holds: a fresh node has none yet.
    const PER_ENTITY: &[&str] = &["mailbox_depth"];
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !present.contains(w.as_str()) && !PER_ENTITY.contains(&w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing on the first scrape: {missing:?}"
    );

    // Histograms, never summaries.
    assert!(!scrape.contains("quantile="), "a summary is exported");
    for h in [
        "request_latency_seconds",
        "omnigate_hydration_latency_seconds",
        "omnigate_range_start_latency_seconds",
        "downstream_latency_seconds",
        "commit_latency_seconds",
        "oap_read_frame_seconds",
    ] {
        assert!(
            scrape.contains(&format!("# TYPE {h} histogram")),
            "{h} is not a histogram"
        );
    }
    // The runbooks' thresholds are bucket boundaries.
    for le in ["0.05", "0.1", "0.15", "0.25", "0.75"] {
        assert!(
            scrape.contains(&format!(
                "request_latency_seconds_bucket{{route=\"/registry/head\",le=\"{le}\"}}"
            )),
            "no le={le} bucket"
        );
    }
    // "should be 0", checkable on a fresh node.
    for zero in [
        "bus_overflow_dropped_total 0",
        "bus_lagged_total 0",
        "rejected_total{reason=\"quota\"} 0",
        "rejected_total{reason=\"shed_write\"} 0",
        "downstream_connect_errors_total{service=\"storage\"} 0",
        "approval_verify_total{result=\"invalid\"} 0",
        "service_restarts_total{service=\"omnigate\"} 0",
        "oap_rejects_total{reason=\"frame_oversize\"} 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == zero),
            "no `{zero}` on the first scrape"
        );
    }
    for p in [
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(present.contains(p), "no {p}");
    }

    // The storage gauges are current the moment a write is acknowledged.
    let gauge = |name: &str| -> f64 {
        let scrape = node.get("metrics", "/metrics").body;
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {scrape}"))
    };
    assert_eq!(gauge("storage_bytes_stored"), 0.0);
    let g = node.addr("omnigate");
    let data = common::body_of(2 * 65536 + 100, 9);
    let r = common::request(g, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(gauge("storage_bytes_stored"), data.len() as f64);
    assert_eq!(gauge("storage_chunks"), 3.0);
    let mut twice = data.clone();
    twice.extend_from_slice(&data);
    assert_eq!(common::request(g, "PUT", "/v1/o", &[], &twice).status, 201);
    // The second object's first two chunks are the first one's; its other
    // three straddle the join and are new.
    assert_eq!(gauge("storage_chunks"), 6.0);
    let address = r.json()["address"].as_str().unwrap_or_default().to_owned();
    // So is the index's count of names.
    assert_eq!(gauge("index_names"), 0.0);
    let rec = format!(r#"{{"address":"{address}"}}"#);
    let named = common::request(g, "PUT", "/v1/names/a/b", &[], rec.as_bytes());
    assert_eq!(named.status, 201, "{}", named.body);
    assert_eq!(gauge("index_names"), 1.0);
    assert_eq!(
        common::request(g, "DELETE", "/v1/names/a/b", &[], b"").status,
        204
    );
    assert_eq!(gauge("index_names"), 0.0);

    let path = format!("/v1/o/{address}");
    assert_eq!(common::request(g, "DELETE", &path, &[], b"").status, 204);
    let left = gauge("storage_bytes_stored");
    assert!(left > 0.0 && left < (3 * data.len()) as f64, "{left}");
    assert!(gauge("storage_dedup_ratio") >= 1.0);
}
