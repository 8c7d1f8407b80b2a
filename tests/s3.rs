//! Scale-out on an S3-compatible bucket (`storage.backend = "s3"`), with
//! the real binaries and `s3s-fs` on loopback: two stateless gateway
//! replicas (omnigate + storage, RAM only) share the bucket while the
//! index and mailbox run on a third node they reach over HTTP. A PUT
//! through one replica reads back through the other at once; a replica
//! killed mid-upload leaves no object and the other keeps serving; wrong
//! credentials keep a node unready with a reason naming the bucket, never
//! crash it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::net::SocketAddr;
use std::time::Duration;

use common::{body_of, request, request_bytes, Node, NodeBuilder};

fn b3(data: &[u8]) -> String {
    format!("b3:{}", blake3::hash(data).to_hex())
}

/// A gateway replica on the bucket: omnigate and storage in one process,
/// nothing on disk, the index and mailbox at `names`.
fn replica_builder(server: &s3::Server, names: &Node, secret: &str) -> NodeBuilder {
    NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,storage")
        .arg("--amnesia")
        .config_extra(&format!(
            "[omnigate.downstream]\nindex = \"http://{}\"\nmailbox = \"http://{}\"\n",
            names.addr("index"),
            names.addr("mailbox")
        ))
        .envs(bucket_env(server, secret))
}

fn replica(server: &s3::Server, names: &Node, secret: &str) -> Node {
    replica_builder(server, names, secret).start()
}

/// The environment that puts a node's objects in the test bucket.
fn bucket_env(server: &s3::Server, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RON_STORAGE__BACKEND", "s3".into()),
        ("RON_STORAGE__S3__ENDPOINT", server.endpoint.clone()),
        ("RON_STORAGE__S3__BUCKET", s3::BUCKET.into()),
        ("RON_STORAGE__S3__ALLOW_HTTP", "true".into()),
        ("RON_STORAGE__S3__PREFIX", "scale-out".into()),
        ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
    ]
}

/// A resumable upload of `data` through gateway `g`, in parts of the
/// body cap (1 MiB); returns its address.
fn upload(g: SocketAddr, data: &[u8]) -> String {
    let r = request(g, "POST", "/v1/uploads", &[], b"");
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for (n, part) in data.chunks(1 << 20).enumerate() {
        let r = request(g, "PUT", &format!("/v1/uploads/{id}/{n}"), &[], part);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = request(g, "POST", &format!("/v1/uploads/{id}/complete"), &[], b"");
    assert_eq!(r.status, 201, "{}", r.body);
    let address = r.json()["address"].as_str().unwrap().to_owned();
    assert_eq!(address, b3(data));
    address
}

/// A replica that never cached anything serves `data` whole: every pack
/// and manifest it needs is in the bucket.
fn a_fresh_replica_serves(server: &s3::Server, names: &Node, data: &[u8]) {
    let r = replica(server, names, s3::SECRET_KEY);
    r.wait_ready();
    let (status, _, body) = request_bytes(
        r.addr("omnigate"),
        "GET",
        &format!("/v1/o/{}", b3(data)),
        &[],
        b"",
    );
    assert_eq!((status, body == data), (200, true));
}

/// The node the replicas share for names and topics.
fn names_node() -> Node {
    let names = NodeBuilder::new()
        .arg("--roles")
        .arg("index,mailbox")
        .start();
    names.wait_ready();
    names
}

#[test]
fn replicas_share_an_s3s_fs_bucket_and_survive_each_other() {
    replicas_share_the_bucket(s3::Kind::S3sFs);
}

#[test]
fn replicas_share_a_moto_bucket_and_survive_each_other() {
    replicas_share_the_bucket(s3::Kind::Moto);
}

fn replicas_share_the_bucket(kind: s3::Kind) {
    let Some(server) = s3::Server::start(kind) else {
        return;
    };
    let names = names_node();
    let mut a = replica(&server, &names, s3::SECRET_KEY);
    let b = replica(&server, &names, s3::SECRET_KEY);
    a.wait_ready();
    b.wait_ready();
    let (ga, gb) = (a.addr("omnigate"), b.addr("omnigate"));

    // Written through A (several chunks), read through B at once: whole,
    // ranged, and its name set through B resolves through A.
    let data = body_of(300_000, 1);
    let r = request(ga, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}\n{}", r.body, a.log_dump());
    let address = b3(&data);
    let (status, _, body) = request_bytes(gb, "GET", &format!("/v1/o/{address}"), &[], b"");
    assert_eq!(status, 200, "{}", b.log_dump());
    assert_eq!(body, data);
    let (status, _, body) = request_bytes(
        gb,
        "GET",
        &format!("/v1/o/{address}"),
        &[("range", "bytes=65530-65545")],
        b"",
    );
    assert_eq!(status, 206);
    assert_eq!(body, &data[65530..=65545]);
    let r = request(
        gb,
        "PUT",
        "/v1/names/site/index",
        &[("content-type", "application/json")],
        format!(r#"{{"address":"{address}"}}"#).as_bytes(),
    );
    assert!(matches!(r.status, 200 | 201), "{} {}", r.status, r.body);
    let r = request(ga, "GET", "/v1/view/site/index", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["size"], 300_000);

    // A resumable upload on A, killed before it completes: no object
    // appears anywhere, and B keeps serving what was acknowledged.
    let big = body_of(3 * 65536 + 10, 2);
    let r = request(ga, "POST", "/v1/uploads", &[], b"");
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = request(
        ga,
        "PUT",
        &format!("/v1/uploads/{id}/0"),
        &[],
        &big[..150_000],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(30));
    let r = request(gb, "HEAD", &format!("/v1/o/{}", b3(&big)), &[], b"");
    assert_eq!(r.status, 404, "an unfinished upload left an object");
    let (status, _, body) = request_bytes(gb, "GET", &format!("/v1/o/{address}"), &[], b"");
    assert_eq!((status, body == data), (200, true));
    let health = b.addr("metrics");
    assert_eq!(request(health, "GET", "/readyz", &[], b"").status, 200);

    // Deleted through B: gone for every replica (a new one reads the
    // bucket, not a record of its own).
    let r = request(gb, "DELETE", &format!("/v1/o/{address}"), &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    let c = replica(&server, &names, s3::SECRET_KEY);
    c.wait_ready();
    let gc = c.addr("omnigate");
    let r = request(gc, "GET", &format!("/v1/o/{address}"), &[], b"");
    assert_eq!(r.status, 404);

    // An object larger than a pack, uploaded through B: read whole and
    // across its packs and inline tail through C, then deleted.
    let large = body_of(2 * (1 << 20) + 10, 8);
    let large_address = upload(gb, &large);
    let (status, _, body) = request_bytes(gc, "GET", &format!("/v1/o/{large_address}"), &[], b"");
    assert_eq!((status, body == large), (200, true));
    let (status, _, body) = request_bytes(
        gc,
        "GET",
        &format!("/v1/o/{large_address}"),
        &[("range", "bytes=1048570-2097160")],
        b"",
    );
    assert_eq!(status, 206);
    assert_eq!(body, &large[1_048_570..=2_097_160]);
    let r = request(gb, "DELETE", &format!("/v1/o/{large_address}"), &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);

    // `ronctl storage gc` from the outside: the deleted object's packs
    // and the killed upload's go; a live object's stay (read through a
    // replica that never cached it).
    let keep = body_of((1 << 20) + 1, 3);
    upload(gb, &keep);
    let out = std::process::Command::new(common::MACRONODE)
        .args(["ctl", "--json", "storage", "gc", "--grace", "0s"])
        .envs(bucket_env(&server, s3::SECRET_KEY))
        .env_remove("RON_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The deleted object's 2 packs and the killed upload's part.
    assert!(v["removed"].as_u64().unwrap() >= 3, "{v}");
    a_fresh_replica_serves(&server, &names, &keep);
}

#[test]
fn wrong_credentials_keep_the_node_unready_naming_the_bucket() {
    let Some(server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let names = names_node();
    let node = replica(&server, &names, "not-the-secret");
    let health = node.addr("metrics");
    let why = common::poll(Duration::from_secs(60), || {
        let r = request(health, "GET", "/readyz", &[], b"");
        let v = r.json();
        let why = v["roles"]["storage"]["reason"].as_str()?.to_owned();
        (r.status == 503 && why.contains(s3::BUCKET)).then_some(why)
    })
    .unwrap_or_else(|| panic!("never unready naming the bucket:\n{}", node.log_dump()));
    assert!(why.contains(&server.endpoint), "{why}");
    assert!(
        !why.contains("not-the-secret"),
        "a credential in a reason: {why}"
    );
    // A write is refused with a clear problem, and the node is still up.
    let r = request(node.addr("omnigate"), "PUT", "/v1/o", &[], b"hello");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("S3"), "{}", r.body);
    let r = request(health, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn a_bucket_that_goes_away_is_named_in_readyz_and_the_node_recovers() {
    let Some(mut server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let names = names_node();
    let node = replica(&server, &names, s3::SECRET_KEY);
    node.wait_ready();
    let (g, health) = (node.addr("omnigate"), node.addr("metrics"));
    let data = body_of(70_000, 4);
    assert_eq!(request(g, "PUT", "/v1/o", &[], &data).status, 201);

    server.stop();
    let why = common::poll(Duration::from_secs(60), || {
        let r = request(health, "GET", "/readyz", &[], b"");
        let why = r.json()["roles"]["storage"]["reason"].as_str()?.to_owned();
        (r.status == 503 && why.contains(s3::BUCKET)).then_some(why)
    })
    .unwrap_or_else(|| panic!("never unready:\n{}", node.log_dump()));
    assert!(why.contains(&server.endpoint), "{why}");
    // Writes fail fast and clearly while it is gone; nothing is half kept.
    let r = request(g, "PUT", "/v1/o", &[], &body_of(1000, 5));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("downstream_down"), "{}", r.body);
    assert!(
        node.metric("downstream_connect_errors_total{service=\"s3\"}")
            .unwrap_or(0.0)
            > 0.0
    );

    server.restart();
    node.wait_ready();
    let (status, _, body) = request_bytes(g, "GET", &format!("/v1/o/{}", b3(&data)), &[], b"");
    assert_eq!((status, body == data), (200, true));
}

/// `storage.s3.gc_interval`: the node sweeps the bucket itself. A deleted
/// object's packs go (grace 0 here); a live object stays whole.
#[test]
fn the_periodic_sweep_collects_a_deleted_objects_packs() {
    let Some(server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let names = names_node();
    // Uploaded through a replica that does not sweep, before the one that
    // does starts: with no grace, a sweep would take the packs of an
    // upload still under way (which is what the grace is for).
    let writer = replica(&server, &names, s3::SECRET_KEY);
    writer.wait_ready();
    let (gone, kept) = (body_of(2 << 20, 6), body_of((1 << 20) + 9, 7));
    let gone = upload(writer.addr("omnigate"), &gone);
    upload(writer.addr("omnigate"), &kept);
    let node = replica_builder(&server, &names, s3::SECRET_KEY)
        .env("RON_STORAGE__S3__GC_INTERVAL", "1s")
        .env("RON_STORAGE__S3__GC_GRACE", "0s")
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let r = request(g, "DELETE", &format!("/v1/o/{gone}"), &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    let swept = node.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "storage: swept the bucket" && v["removed"].as_u64() >= Some(2)
    });
    assert!(
        swept.is_some(),
        "no sweep took the packs:\n{}",
        node.log_dump()
    );
    a_fresh_replica_serves(&server, &names, &kept);
}

/// A drill on the bucket edge (`chaos` target `s3`): its latency is timed
/// as the bucket's (`downstream_latency_seconds{service="s3"}`), its
/// errors fail a write with 503 `downstream_down` and count as the
/// bucket's failures; after `chaos clear` the same write succeeds and
/// reads back whole.
#[test]
fn an_s3_drill_is_timed_and_counted_as_the_buckets_own() {
    let Some(server) = s3::Server::start(s3::Kind::S3sFs) else {
        return;
    };
    let names = names_node();
    let node = replica_builder(&server, &names, s3::SECRET_KEY)
        .env("RON_CHAOS__ENABLED", "true")
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let s3 = ("service", "s3");
    // Bucket calls answered within 0.2 s, and all bucket calls.
    let fast_calls = || node.series("downstream_latency_seconds_bucket", &[s3, ("le", "0.2")]);
    let count_of = || node.series("downstream_latency_seconds_count", &[s3]);

    node.inject(r#"{"target":"s3","fault":"latency","ms":250}"#);
    let (fast_before, all_before) = (fast_calls(), count_of());
    let data = body_of(5000, 8);
    assert_eq!(request(g, "PUT", "/v1/o", &[], &data).status, 201);
    let calls = count_of() - all_before;
    assert!(calls >= 1.0);
    assert_eq!(
        fast_calls() - fast_before,
        0.0,
        "every bucket call of the write took the injected 250 ms"
    );
    node.clear_faults();

    node.inject(r#"{"target":"s3","fault":"error"}"#);
    let failed = || node.series("downstream_connect_errors_total", &[s3]);
    let failed_before = failed();
    let other = body_of(3000, 9);
    let r = request(g, "PUT", "/v1/o", &[], &other);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("downstream_down"), "{}", r.body);
    assert!(failed() > failed_before);
    node.clear_faults();
    assert_eq!(request(g, "PUT", "/v1/o", &[], &other).status, 201);
    let (status, _, body) = request_bytes(g, "GET", &format!("/v1/o/{}", b3(&other)), &[], b"");
    assert_eq!((status, body == other), (200, true));
}
