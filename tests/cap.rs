//! `ronctl cap rotate`: write and admin tokens rotated on a running node,
//! the old ones kept through the grace and refused after it, the new one
//! shown once and kept only as a digest, all of it surviving a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::process::Command;
use std::time::Duration;

use common::{request, NodeBuilder};

const RONCTL: &str = env!("CARGO_BIN_EXE_ronctl");

fn ronctl(admin: std::net::SocketAddr, admin_token: &str, args: &[&str]) -> std::process::Output {
    Command::new(RONCTL)
        .env_remove("RON_CONFIG")
        .env("RONCTL_ADMIN_TOKEN", admin_token)
        .args(["--admin", &format!("http://{admin}")])
        .args(args)
        .output()
        .expect("ronctl")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The PUT status a write with `token` gets from `node`'s storage plane
/// (a new object each time: 201 when allowed).
fn put_with(node: &common::Node, token: &str) -> u16 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!("rotated {n} {}", std::process::id());
    let auth = format!("Bearer {token}");
    request(
        node.addr("storage"),
        "PUT",
        "/v1/o",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .status
}

fn admin_status(node: &common::Node, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    request(
        node.addr("admin"),
        "GET",
        "/api/v1/status",
        &[("Authorization", &auth)],
        b"",
    )
    .status
}

fn rotate(node: &common::Node, admin_token: &str, service: &str, grace: &str) -> String {
    let out = ronctl(
        node.addr("admin"),
        admin_token,
        &[
            "cap",
            "rotate",
            "--service",
            service,
            "--grace",
            grace,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

#[test]
fn rotation_without_restart_grace_then_refusal_and_restart() {
    let b = NodeBuilder::new()
        .arg("--roles")
        .arg("storage")
        .config_replace(
            "[admin]\naddr = \"127.0.0.1:0\"\n",
            "[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"a-old\"\ntrust_loopback = false\n",
        )
        .config_extra("[auth]\nwrite_tokens = [\"w-old\"]\n");
    let cfg_path = b.config_path();
    let dir = b.dir().to_path_buf();
    let mut node = b.keep_dir().start();
    node.wait_ready();
    let admin = node.addr("admin");
    assert_eq!(put_with(&node, "w-old"), 201);
    assert_eq!(admin_status(&node, "a-old"), 200);

    // A role name is the write capability; text output shows the token once.
    let out = ronctl(
        admin,
        "a-old",
        &["cap", "rotate", "--service", "svc-storage"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        s.contains("shown only now") && s.contains("grace 600s"),
        "{s}"
    );
    let t1 = s
        .split_whitespace()
        .find(|w| w.starts_with("ronw_"))
        .expect("token in output")
        .to_owned();
    // In force at once; the old one through the grace.
    assert_eq!(put_with(&node, &t1), 201);
    assert_eq!(put_with(&node, "w-old"), 201);
    assert_eq!(put_with(&node, "ronw_guess"), 403);

    // A rotation with no grace ends every older token now.
    let t2 = rotate(&node, "a-old", "write", "0s");
    assert_eq!(put_with(&node, &t2), 201);
    assert_eq!(put_with(&node, &t1), 403);
    assert_eq!(put_with(&node, "w-old"), 403);

    // The token is printed once and kept nowhere: not in the file, not in
    // the config the admin plane shows, not in the log.
    let file = dir.join("data/auth/write.tokens");
    let stored = std::fs::read_to_string(&file).expect("token file");
    assert!(stored.contains("b3:") && !stored.contains(&t2), "{stored}");
    let cfg = request(
        admin,
        "GET",
        "/api/v1/config",
        &[("Authorization", "Bearer a-old")],
        b"",
    );
    assert!(!cfg.body.contains(&t2) && !cfg.body.contains("w-old"));

    // The admin token, likewise, and the bus tells.
    let a1 = rotate(&node, "a-old", "admin", "0s");
    assert!(a1.starts_with("rona_"));
    assert_eq!(admin_status(&node, "a-old"), 401);
    assert_eq!(admin_status(&node, &a1), 200);
    assert!(!node.log_dump().contains(&t2) && !node.log_dump().contains(&a1));

    // Usage errors exit 2 and name why.
    for (service, why) in [("overlay", "node key"), ("frob", "unknown service")] {
        let out = ronctl(admin, &a1, &["cap", "rotate", "--service", service]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
    }
    let out = ronctl(
        admin,
        &a1,
        &["cap", "rotate", "--service=write", "--grace=soon"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = ronctl(admin, "a-old", &["cap", "rotate", "--service=write"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A restart on the same data: the rotated tokens hold, the retired
    // config tokens stay refused (with a warning to remove them).
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(30)).success());
    drop(node);
    let node = NodeBuilder::in_dir(dir, cfg_path)
        .arg("--roles")
        .arg("storage")
        .start();
    node.wait_ready();
    assert_eq!(put_with(&node, &t2), 201);
    assert_eq!(put_with(&node, "w-old"), 403);
    assert_eq!(admin_status(&node, &a1), 200);
    assert_eq!(admin_status(&node, "a-old"), 401);
    assert!(
        node.log_dump().contains("rotation retired"),
        "{}",
        node.log_dump()
    );
}

/// A node that let loopback write without a token keeps doing so through
/// the grace of its first rotation; under amnesia nothing reaches a disk.
#[test]
fn first_rotation_of_an_open_amnesia_node() {
    let b = NodeBuilder::new()
        .bin(common::MICRONODE)
        .arg("--roles")
        .arg("storage");
    let dir = b.dir().to_path_buf();
    let node = b.start();
    node.wait_ready();
    let s = node.addr("storage");
    assert_eq!(request(s, "PUT", "/v1/o", &[], b"open").status, 201);
    let out = ronctl(
        node.addr("admin"),
        "",
        &["cap", "rotate", "--service", "write"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("RAM only"), "{}", text(&out));
    assert_eq!(request(s, "PUT", "/v1/o", &[], b"still open").status, 201);
    let t = rotate(&node, "", "write", "0s");
    assert_eq!(request(s, "PUT", "/v1/o", &[], b"closed").status, 401);
    assert_eq!(put_with(&node, &t), 201);
    assert!(!dir.join("data").exists());
}

/// The admin API's own answers to bad requests.
#[test]
fn rotate_endpoint_refuses_bad_bodies() {
    let node = NodeBuilder::new().arg("--roles").arg("storage").start();
    node.wait_ready();
    let admin = node.addr("admin");
    for (body, status, reason) in [
        (&b"{"[..], 400, "bad_json"),
        (br#"{"service":"write","extra":1}"#, 400, "bad_json"),
        (br#"{"service":"overlay"}"#, 400, "bad_service"),
        (br#"{"service":"write","grace":"400d"}"#, 400, "bad_grace"),
        (&[b' '; 5000][..], 413, "too_large"),
    ] {
        let r = request(admin, "POST", "/api/v1/cap/rotate", &[], body);
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.body.contains(reason), "{}", r.body);
    }
    let r = request(admin, "GET", "/api/v1/cap/rotate", &[], b"");
    assert_eq!(r.status, 405);
    let r = request(
        admin,
        "POST",
        "/api/v1/cap/rotate",
        &[],
        br#"{"service":"write"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}
