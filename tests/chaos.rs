//! The runbook's chaos drills, CI-sized (RUNBOOK, "Chaos drills"): each
//! starts real nodes with `chaos.enabled = true`, injects a fault through
//! `ronctl chaos` or the admin API, and checks what an operator would:
//! what clients got, what `/readyz` said, what `/metrics` counted. The
//! full-length drills (p95 against the unloaded baseline, the soak) are
//! `benches/chaos.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{request, NodeBuilder};

const RONCTL: &str = env!("CARGO_BIN_EXE_ronctl");

/// A node taking injected faults, running `roles`, with `extra` config.
fn drill_node(roles: &str, extra: &str) -> common::Node {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg(roles)
        .config_extra(&format!("[chaos]\nenabled = true\n{extra}"))
        .start();
    node.wait_ready();
    node
}

fn ronctl(node: &common::Node, args: &[&str]) -> std::process::Output {
    Command::new(RONCTL)
        .env_remove("RON_CONFIG")
        .arg("--admin")
        .arg(format!("http://{}", node.addr("admin")))
        .arg("--url")
        .arg(format!("http://{}", node.addr("omnigate")))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ronctl chaos inject ARGS…`: the new fault's id.
fn inject(node: &common::Node, args: &[&str]) -> String {
    let mut all = vec!["chaos", "inject"];
    all.extend_from_slice(args);
    let out = ronctl(node, &all);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    t.split_whitespace()
        .nth(1)
        .filter(|id| id.starts_with("f-"))
        .unwrap_or_else(|| panic!("no fault id in {t:?}"))
        .to_owned()
}

fn injected(node: &common::Node, target: &str, fault: &str) -> f64 {
    node.series(
        "chaos_faults_injected_total",
        &[("target", target), ("fault", fault)],
    )
}

fn put(node: &common::Node, data: &[u8]) -> String {
    let r = request(node.addr("omnigate"), "PUT", "/v1/o", &[], data);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["address"].as_str().unwrap().to_owned()
}

fn get_object(node: &common::Node, address: &str) -> common::Resp {
    request(
        node.addr("omnigate"),
        "GET",
        &format!("/v1/o/{address}"),
        &[],
        b"",
    )
}

fn readyz(node: &common::Node) -> common::Resp {
    request(node.addr("metrics"), "GET", "/readyz", &[], b"")
}

/// Off by default: every chaos call is refused, and says how to drill.
#[test]
fn a_node_without_chaos_enabled_refuses_every_chaos_call() {
    let node = NodeBuilder::new().arg("--roles").arg("storage").start();
    node.wait_ready();
    let admin = node.addr("admin");
    let body = br#"{"target":"storage","fault":"latency","ms":50}"#;
    for (method, path) in [
        ("POST", "/api/v1/chaos"),
        ("GET", "/api/v1/chaos"),
        ("DELETE", "/api/v1/chaos"),
        ("DELETE", "/api/v1/chaos/f-1"),
    ] {
        let r = request(admin, method, path, &[], body);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(r.json()["reason"], "chaos_disabled", "{}", r.body);
    }
    // A method the route lacks is 405 on any node.
    for (method, path) in [("PUT", "/api/v1/chaos"), ("GET", "/api/v1/chaos/f-1")] {
        let r = request(admin, method, path, &[], b"");
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
    }
    assert_eq!(node.metric("chaos_faults_active"), Some(0.0));
    assert_eq!(injected(&node, "storage", "latency"), 0.0);
}

/// Storage latency 150 ms ± 20 ms through `ronctl`: every read still
/// answers with the right bytes (and takes at least the injected floor),
/// `/readyz` stays 200 — storage is slow, not down —, the bus says when
/// the drill starts and ends, `/metrics` counts every hit; a fault with a
/// duration ends by itself.
#[test]
fn storage_latency_is_injected_counted_announced_and_cleared() {
    let node = drill_node("omnigate,storage,index", "");
    let data = common::body_of(10_000, 7);
    let addr = put(&node, &data);
    let mut bus = common::Sse::open(node.addr("admin"), "/api/v1/bus?topic=chaos");

    let id = inject(
        &node,
        &[
            "--target=svc-storage",
            "--fault=storage-latency",
            "--ms=150",
            "--jitter-ms=20",
        ],
    );
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l.contains("chaos_injected")
            && l.contains(&id)),
        "{:?}",
        bus.seen()
    );
    let listed = text(&ronctl(&node, &["chaos", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("storage latency ms=150 jitter_ms=20"),
        "{listed}"
    );
    assert_eq!(node.metric("chaos_faults_active"), Some(1.0));
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _, body) = common::request_bytes(
            node.addr("omnigate"),
            "GET",
            &format!("/v1/o/{addr}"),
            &[],
            b"",
        );
        assert!(
            t.elapsed() >= Duration::from_millis(130),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(status, 200);
        assert_eq!(body, data, "the bytes are right, only late");
        assert_eq!(readyz(&node).status, 200, "slow is not down");
    }
    assert_eq!(injected(&node, "storage", "latency"), 5.0);

    let out = ronctl(&node, &["chaos", "clear", "--id", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l.contains("chaos_cleared")),
        "{:?}",
        bus.seen()
    );
    let r = get_object(&node, &addr);
    assert_eq!(r.status, 200);
    assert_eq!(
        injected(&node, "storage", "latency"),
        5.0,
        "cleared: no more hits"
    );
    assert_eq!(node.metric("chaos_faults_active"), Some(0.0));

    // A fault with a duration ends by itself, and says so.
    let brief = inject(&node, &["--target=index", "--fault=error", "--duration=1s"]);
    let gone = common::poll(Duration::from_secs(20), || {
        let r = request(node.addr("admin"), "GET", "/api/v1/chaos", &[], b"");
        r.json()["faults"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    assert!(gone.is_some(), "fault {brief} outlived its duration");
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l.contains("chaos_cleared")
            && l.contains(&brief)),
        "{:?}",
        bus.seen()
    );

    // Bad faults are refused with what is wrong; an unknown id is a 404.
    let admin = node.addr("admin");
    for (body, says) in [
        (
            r#"{"target":"disk","fault":"latency","ms":5}"#,
            "unknown target",
        ),
        (r#"{"target":"bus","fault":"error"}"#, "latency, drop"),
        (r#"{"target":"storage","fault":"error","rate":2}"#, "rate"),
        (r#"{"target":"storage","fault":"latency"}"#, "needs ms"),
    ] {
        let r = request(admin, "POST", "/api/v1/chaos", &[], body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["reason"], "bad_fault");
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    let r = request(admin, "DELETE", "/api/v1/chaos/f-999", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
}

/// 1 % downstream errors for the drill window: exactly one read in a
/// hundred fails (502 `downstream_error`), no other does — the failures
/// are not amplified into sheds or retries — and `/readyz` stays 200.
#[test]
fn one_percent_downstream_errors_fail_one_percent_and_nothing_more() {
    let node = drill_node("omnigate,storage,index", "");
    let addr = put(&node, b"one percent");
    node.inject(r#"{"target":"storage","fault":"error","rate":0.01,"duration":"10m"}"#);
    let (mut ok, mut failed) = (0, 0);
    for i in 0..400 {
        let r = get_object(&node, &addr);
        match r.status {
            200 => ok += 1,
            502 => {
                assert_eq!(r.json()["reason"], "downstream_error", "{}", r.body);
                assert!(r.body.contains("chaos drill"), "{}", r.body);
                failed += 1;
            }
            s => panic!("read {i}: {s} {}", r.body),
        }
        if i % 50 == 0 {
            assert_eq!(
                readyz(&node).status,
                200,
                "1 % errors must not flip readiness"
            );
        }
    }
    assert_eq!((ok, failed), (396, 4));
    assert_eq!(injected(&node, "storage", "error"), 4.0);
    assert_eq!(node.clear_faults(), 1);
}

/// Twice the in-flight cap of offered load while storage is slow: the
/// excess is shed at once (503 `busy`, Retry-After) while admitted reads
/// are still waiting on storage, admitted reads all succeed, `/readyz`
/// turns 503 "overloaded" while the load lasts and 200 once it stops.
#[test]
fn twice_the_inflight_cap_is_shed_fast_and_readiness_recovers() {
    const CAP: usize = 8;
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,storage,index")
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"\n",
            &format!("[omnigate]\naddr = \"127.0.0.1:0\"\ninflight_max = {CAP}\n"),
        )
        .config_extra("[chaos]\nenabled = true\n")
        .start();
    node.wait_ready();
    let addr = put(&node, b"overload");
    node.inject(r#"{"target":"storage","fault":"latency","ms":500,"duration":"5m"}"#);

    let gate = node.addr("omnigate");
    let stop = Arc::new(AtomicBool::new(false));
    // (status, reason, elapsed) of every request the load made.
    let seen = Arc::new(Mutex::new(Vec::<(u16, String, Duration)>::new()));
    let path = format!("/v1/o/{addr}");
    let clients: Vec<_> = (0..2 * CAP)
        .map(|_| {
            let (stop, seen, path) = (stop.clone(), seen.clone(), path.clone());
            std::thread::spawn(move || {
                // Bounded: at most 5,000 requests or 60 s per client; a
                // shed client asks again at once (the worst case for the
                // gateway: Retry-After ignored).
                let end = Instant::now() + Duration::from_secs(60);
                for _ in 0..5000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > end {
                        break;
                    }
                    let t = Instant::now();
                    let r = request(gate, "GET", &path, &[], b"");
                    let reason = if r.status == 503 {
                        assert_eq!(r.header("retry-after"), Some("1"), "{}", r.body);
                        r.json()["reason"].as_str().unwrap_or("").to_owned()
                    } else {
                        String::new()
                    };
                    seen.lock().unwrap().push((r.status, reason, t.elapsed()));
                }
            })
        })
        .collect();
    let flipped = common::poll(Duration::from_secs(30), || {
        let r = readyz(&node);
        (r.status == 503).then_some(r.body)
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let flipped = flipped.expect("/readyz never reported the overload");
    assert!(flipped.contains("overloaded"), "{flipped}");
    let recovered = common::poll(Duration::from_secs(30), || {
        (readyz(&node).status == 200).then_some(())
    });
    assert!(
        recovered.is_some(),
        "readiness did not recover: {}",
        readyz(&node).body
    );

    let seen = seen.lock().unwrap();
    let admitted: Vec<_> = seen.iter().filter(|(s, _, _)| *s == 200).collect();
    let shed: Vec<_> = seen.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!(
        admitted.len() + shed.len(),
        seen.len(),
        "only answers and sheds: {seen:?}"
    );
    assert!(!admitted.is_empty() && !shed.is_empty(), "{seen:?}");
    assert!(
        shed.iter().all(|(_, reason, _)| reason == "busy"),
        "{shed:?}"
    );
    // Shed at once: before storage's injected 500 ms could have passed.
    let slowest_shed = shed.iter().map(|(_, _, d)| *d).max().unwrap();
    let fastest_admitted = admitted.iter().map(|(_, _, d)| *d).min().unwrap();
    assert!(
        slowest_shed < fastest_admitted,
        "shed {slowest_shed:?}, admitted {fastest_admitted:?}"
    );
    assert!(node.series("rejected_total", &[("reason", "busy")]) >= shed.len() as f64);
}

/// A lossy bus (every delivery dropped): a bus stream client is told it
/// lagged, and the overlay, which lost the commit's event, reconciles
/// from the registry head — the peer still learns of the commit.
#[test]
fn a_lossy_bus_is_reconciled_from_the_head() {
    let signer = [41u8; 32];
    let registry_node = |seed: u8, peers: String| {
        registry::node(signer, seed, &format!("[chaos]\nenabled = true\n{peers}"))
    };
    let a = registry_node(42, pinning(43));
    let b = registry_node(43, dialing(42, &a));
    wait_session(&a);

    let mut bus = common::Sse::open(a.addr("admin"), "/api/v1/bus");
    a.inject(r#"{"target":"bus","fault":"drop","duration":"5m"}"#);
    let head = registry::commit_region(a.addr("registry"), signer, "lossy", &[]);
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l == "event: lagged"),
        "{:?}",
        bus.seen()
    );
    let head_of =
        |n: &common::Node| request(n.addr("registry"), "GET", "/registry/head", &[], b"").json();
    let synced = common::poll(Duration::from_secs(60), || {
        (head_of(&b) == head).then_some(())
    });
    assert!(
        synced.is_some(),
        "A {head}, B {}\n{}",
        head_of(&b),
        b.log_dump()
    );
    assert!(injected(&a, "bus", "drop") >= 1.0);
}

/// `ronctl chaos slowloris`: slow request heads are cut at the header
/// deadline, the gateway keeps answering ordinary requests meanwhile, and
/// the drill refuses a target that is not on this host.
#[test]
fn slow_loris_connections_are_cut_and_the_gateway_keeps_serving() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,storage,index")
        .config_replace(
            "[metrics]\n",
            "[limits]\nheader_read_timeout = \"1s\"\n\n[metrics]\n",
        )
        .start();
    node.wait_ready();
    let out = ronctl(
        &node,
        &[
            "--json",
            "chaos",
            "slowloris",
            "--conns=32",
            "--duration=4s",
            "--interval=300ms",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cut"], 32, "{v}");
    assert_eq!(v["held"], 0, "{v}");
    assert_eq!(v["probes"], v["probes_answered"], "{v}");
    assert!(v["probes"].as_u64().unwrap() >= 3, "{v}");
    assert!(
        node.series("rejected_total", &[("reason", "header_timeout")]) >= 32.0,
        "every cut counted"
    );
    assert_eq!(readyz(&node).status, 200);

    let out = Command::new(RONCTL)
        .args([
            "--url",
            "http://192.0.2.1:9444",
            "chaos",
            "slowloris",
            "--conns=1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-remote"), "{}", text(&out));
}

/// The registry's store under a drill: latency slows commits (and shows
/// in `commit_latency_seconds`), errors fail writes as a failing disk
/// would — 500, nothing half-written, the registry unready ("registry
/// store is failing") — and the first write after `chaos clear` succeeds and
/// makes it ready again.
#[test]
fn a_failing_registry_store_fails_writes_cleanly_and_recovers() {
    let signer = [51u8; 32];
    let node = registry::node(signer, 52, "[chaos]\nenabled = true\n");
    let reg = node.addr("registry");
    let admin = node.addr("admin");
    let write_plane = || {
        let s = request(admin, "GET", "/api/v1/status", &[], b"").json();
        s["planes"]["registry.write"]["ready"].as_bool()
    };
    assert_eq!(write_plane(), Some(true));

    node.inject(r#"{"target":"registry","fault":"latency","ms":300}"#);
    let t = Instant::now();
    registry::commit_region(reg, signer, "slow", &[]);
    // Three durable writes (proposal, approval, version), 300 ms each.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(node.series("commit_latency_seconds_bucket", &[("le", "0.25")]) == 0.0);
    node.clear_faults();

    let before = registry::head(reg);
    node.inject(r#"{"target":"registry","fault":"error"}"#);
    let payload = serde_json::json!({"payload": {
        "version": before["version"].as_u64().unwrap() + 1,
        "prev_b3": before["payload_b3"],
        "items": [{"region": {"id": "lost", "name": "lost", "parent": null}}],
        "created_at": "2026-12-07T10:00:00Z",
    }});
    let r = request(
        reg,
        "POST",
        "/registry/proposals",
        &[],
        payload.to_string().as_bytes(),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["reason"], "internal");
    let shows = common::poll(Duration::from_secs(10), || {
        (write_plane() == Some(false)).then_some(())
    });
    assert!(shows.is_some(), "a failed write shows on registry.write");
    let r = readyz(&node);
    assert_eq!(r.status, 503, "a store that fails writes is not ready");
    assert!(r.body.contains("registry store is failing"), "{}", r.body);
    assert_eq!(registry::head(reg), before, "nothing was written");

    node.clear_faults();
    registry::commit_region(reg, signer, "after", &[]);
    let back = common::poll(Duration::from_secs(10), || {
        (write_plane() == Some(true)).then_some(())
    });
    assert!(
        back.is_some(),
        "the next write succeeded: registry.write is ready"
    );
    node.wait_ready();
    assert!(injected(&node, "registry", "error") >= 1.0);
}

/// The peer edge: with peer fetches failing, a read of an object only a
/// peer holds is a clean 404 (nothing unverified served, nothing kept);
/// after `chaos clear` the same read fetches it.
#[test]
fn failing_peer_fetches_miss_cleanly_and_recover() {
    let overlay_node = |seed: u8, omnigate: &str, extra: &str| {
        let n = NodeBuilder::new()
            .arg("--roles")
            .arg("overlay,storage,omnigate")
            .node_key(seed)
            .config_replace(
                "[omnigate]\naddr = \"127.0.0.1:0\"",
                &format!("[omnigate]\naddr = \"127.0.0.1:0\"\n{omnigate}"),
            )
            .config_extra(&format!("[chaos]\nenabled = true\n{extra}"))
            .start();
        n.wait_ready();
        n
    };
    let a = overlay_node(53, "", &pinning(54));
    let b = overlay_node(54, "fetch_from_peers = true", &dialing(53, &a));
    wait_session(&b);
    let data = common::body_of(200_000, 5);
    let address = put(&a, &data);
    let path = format!("/v1/o/{address}");

    inject(&b, &["--target=overlay", "--fault=error"]);
    let r = request(b.addr("omnigate"), "GET", &path, &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(injected(&b, "peer", "error"), 1.0);

    let out = ronctl(&b, &["chaos", "clear"]);
    assert!(out.status.success(), "{}", text(&out));
    let (status, _, body) = common::request_bytes(b.addr("omnigate"), "GET", &path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(body, data);
}

/// A remote storage with a slow tail (150 ms ± 20 ms on 4 % of the
/// gateway's calls) and `hedge_read`: every slow first copy of a read is
/// overtaken by its hedge (`hedge_won` counts them), every read returns
/// the right bytes, and `/readyz` stays 200 — a slow tail is not an
/// outage. (The p95 figures are benches/chaos.sh's, drill `hedge`.)
#[test]
fn hedged_reads_overtake_a_slow_storage_tail() {
    let store = NodeBuilder::new().arg("--roles").arg("storage").start();
    store.wait_ready();
    let gate = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,index")
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"\n",
            "[omnigate]\naddr = \"127.0.0.1:0\"\nhedge_read = true\n",
        )
        .config_extra(&format!(
            "[chaos]\nenabled = true\n[omnigate.downstream]\nstorage = \"http://{}\"\n",
            store.addr("storage")
        ))
        .start();
    gate.wait_ready();
    let data = common::body_of(4096, 11);
    let addr = put(&gate, &data);
    let path = format!("/v1/o/{addr}");
    // Samples for the hedge delay (the p95 of recent reads).
    for _ in 0..20 {
        assert_eq!(
            request(gate.addr("omnigate"), "GET", &path, &[], b"").status,
            200
        );
    }
    inject(
        &gate,
        &[
            "--target=storage",
            "--fault=latency",
            "--ms=150",
            "--jitter-ms=20",
            "--rate=0.04",
        ],
    );
    for i in 0..100 {
        let (status, _, body) =
            common::request_bytes(gate.addr("omnigate"), "GET", &path, &[], b"");
        assert_eq!(status, 200, "read {i}");
        assert_eq!(body, data, "read {i}");
        if i % 25 == 0 {
            assert_eq!(readyz(&gate).status, 200);
        }
    }
    let slow = injected(&gate, "storage", "latency");
    let won = gate.series("omnigate_hedged_reads_total", &[("outcome", "hedge_won")]);
    eprintln!("{slow} slow storage calls, {won} hedges won");
    assert!(slow >= 4.0, "{slow} slow calls");
    assert!(
        won >= 1.0,
        "no hedge overtook a slow read ({slow} slow calls)"
    );
}

/// Bus latency: every delivery to a subscriber waits the injected time
/// (the events arrive, in order, late), and ends with the fault.
#[test]
fn bus_latency_delays_every_delivery() {
    let node = drill_node("omnigate,storage,index", "");
    let mut bus = common::Sse::open(node.addr("admin"), "/api/v1/bus");
    let id = node.inject(r#"{"target":"bus","fault":"latency","ms":400}"#);
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l.contains(&id)),
        "{:?}",
        bus.seen()
    );
    let t = Instant::now();
    let addr = put(&node, b"a late event");
    assert!(
        bus.wait_line(Duration::from_secs(10), |l| l.contains("object_stored")
            && l.contains(&addr)),
        "{:?}",
        bus.seen()
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(injected(&node, "bus", "latency") >= 2.0);
    node.clear_faults();
}

/// The node id of node key `seed` (`NodeBuilder::node_key`).
fn id_of(seed: u8) -> String {
    ron_overlay::identity::Identity::from_seed([seed; 32])
        .unwrap()
        .node_id()
}

/// An `[[overlay.peers]]` table that lets node `seed` connect.
fn pinning(seed: u8) -> String {
    format!("[[overlay.peers]]\npublic_key = \"{}\"\n", id_of(seed))
}

/// An `[[overlay.peers]]` table that dials `node` (node key `seed`).
fn dialing(seed: u8, node: &common::Node) -> String {
    format!("{}addr = \"{}\"\n", pinning(seed), node.addr("overlay"))
}

/// Waits until `node` has an overlay session.
fn wait_session(node: &common::Node) {
    let up = common::poll(Duration::from_secs(30), || {
        (node.series("overlay_sessions_active", &[]) >= 1.0).then_some(())
    });
    assert!(up.is_some(), "{}", node.log_dump());
}
