//! The runbooks' flags and environment: each does what the runbook says,
//! is accepted with a warning naming what replaces it, or is refused with
//! the reason — never silently ignored, never a bare "Unrecognized".

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::time::Duration;

use common::{request, NodeBuilder};
use serde_json::Value;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn admin_json(node: &common::Node, path: &str) -> Value {
    let r = request(node.addr("admin"), "GET", path, &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn tor_and_pilot_zk_are_refused_with_the_reason() {
    for (flag, why) in [
        ("--tor", "no Tor transport"),
        ("--pilot-zk", "not part of this node"),
    ] {
        let out = NodeBuilder::new().arg(flag).output();
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{flag}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Unrecognized"), "{}", stderr(&out));
    }
    let out = NodeBuilder::new().arg("--amnesia=sometimes").output();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("takes on or off"), "{}", stderr(&out));
}

/// `--amnesia=on` is `--amnesia`; `--amnesia=off` turns micronode's
/// default amnesia off (its state is then on disk).
#[test]
fn amnesia_on_and_off() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("storage")
        .arg("--amnesia=on")
        .start();
    node.wait_ready();
    assert_eq!(admin_json(&node, "/api/v1/status")["amnesia"], true);
    drop(node);

    let node = NodeBuilder::new()
        .bin(common::MICRONODE)
        .arg("--roles")
        .arg("storage")
        .arg("--amnesia=off")
        .start();
    node.wait_ready();
    assert_eq!(admin_json(&node, "/api/v1/status")["amnesia"], false);
    let data = admin_json(&node, "/api/v1/config")["data_dir"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(std::path::Path::new(&data).is_dir(), "{data}");
}

/// `--quic` is the default: the overlay's UDP port is taken. `--quic=off`
/// leaves it free. `--oap-concurrency` sets the per-peer stream bound.
#[test]
fn quic_on_off_and_oap_concurrency() {
    let udp_free = |node: &common::Node| std::net::UdpSocket::bind(node.addr("overlay")).is_ok();
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("overlay")
        .arg("--quic")
        .start();
    node.wait_ready();
    assert!(!udp_free(&node), "QUIC should hold the overlay's UDP port");
    assert_eq!(admin_json(&node, "/api/v1/config")["overlay"]["quic"], true);
    drop(node);

    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("overlay")
        .arg("--quic=off")
        .arg("--oap-concurrency")
        .arg("7")
        .start();
    node.wait_ready();
    assert!(udp_free(&node), "no QUIC listener with --quic=off");
    let cfg = admin_json(&node, "/api/v1/config");
    assert_eq!(cfg["overlay"]["quic"], false);
    assert_eq!(cfg["overlay"]["peer"]["max_streams"], 7);
    drop(node);

    let out = NodeBuilder::new().arg("--oap-concurrency=0").output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("overlay.peer.max_streams"),
        "{}",
        stderr(&out)
    );
}

/// The registry runbook's `RON_BUS_SOCK` and the template's
/// `RON_INDEX_SOCK` warn and are otherwise ignored; `OVERLAY_ADMIN_ADDR`
/// is the health plane's address.
#[test]
fn seed_environment_warns_or_maps() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("index")
        .env("RON_BUS_SOCK", "/run/ron/bus.sock")
        .env("RON_INDEX_SOCK", "/run/ron/index.sock")
        .env("OVERLAY_ADMIN_ADDR", "127.0.0.3:0")
        .start();
    node.wait_ready();
    assert_eq!(node.addr("metrics").ip().to_string(), "127.0.0.3");
    for name in ["RON_BUS_SOCK", "RON_INDEX_SOCK", "OVERLAY_ADMIN_ADDR"] {
        let line = node.wait_for_log(Duration::from_secs(10), |v| {
            v["level"] == "WARN" && v["message"].as_str().is_some_and(|m| m.starts_with(name))
        });
        assert!(
            line.is_some(),
            "no warning for {name}:\n{}",
            node.log_dump()
        );
    }
    // `config check` says the same.
    let out = std::process::Command::new(common::MACRONODE)
        .env_remove("RON_CONFIG")
        .env("RON_BUS_SOCK", "/run/ron/bus.sock")
        .args(["ctl", "config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RON_BUS_SOCK is ignored"),
        "{}",
        stderr(&out)
    );
}

/// The registry's write plane reports itself in `/readyz` without taking
/// the node out of service: reads stay served.
#[test]
fn registry_write_plane_readiness() {
    let write_plane = |node: &common::Node| {
        common::poll(Duration::from_secs(30), || {
            let r = node.get("metrics", "/readyz");
            let p = r.json()["planes"]["registry.write"].clone();
            (r.status == 200 && !p.is_null()).then_some(p)
        })
        .unwrap_or_else(|| panic!("no registry.write in /readyz:\n{}", node.log_dump()))
    };
    let node = NodeBuilder::new().arg("--roles").arg("registry").start();
    node.wait_ready();
    let p = write_plane(&node);
    assert_eq!(p["ready"], false);
    assert!(
        p["reason"].as_str().unwrap().contains("no signer set"),
        "{p}"
    );
    assert_eq!(node.get("registry", "/registry/head").status, 200);
    drop(node);

    let signer =
        "[[registry.signers]]\nid = \"a\"\npublic_key = \"".to_owned() + &"ab".repeat(32) + "\"\n";
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .config_extra(&signer)
        .start();
    node.wait_ready();
    assert_eq!(write_plane(&node)["ready"], true);
    drop(node);

    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .arg("--read-only")
        .config_extra(&signer)
        .start();
    node.wait_ready();
    let p = write_plane(&node);
    assert_eq!(p["ready"], false);
    assert!(p["reason"].as_str().unwrap().contains("read_only"), "{p}");
}

/// One HTTP/1.1 exchange over a Unix socket (what `curl --unix-socket`
/// does): (status, body).
fn unix_request(path: &std::path::Path, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `--uds-only`: every HTTP plane on a Unix socket under `uds.dir`, no TCP
/// port; the sockets go away with the node. The overlay cannot run so.
#[test]
fn uds_only_serves_the_http_planes_on_unix_sockets() {
    let b = NodeBuilder::new()
        .arg("--roles")
        .arg("registry,storage")
        .arg("--uds-only");
    let (dir, cfg) = (b.dir().to_path_buf(), b.config_path());
    let mut node = b.start();
    assert!(
        node.addrs.is_empty(),
        "TCP listeners under --uds-only: {:?}",
        node.addrs
    );
    let sock = |name: &str| {
        node.unix
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} socket: {:?}", node.unix))
    };
    let ready = common::poll(Duration::from_secs(60), || {
        (unix_request(&sock("metrics"), "GET", "/readyz", b"").0 == 200).then_some(())
    });
    assert!(ready.is_some(), "never ready:\n{}", node.log_dump());
    // The healthcheck finds the socket from the same config.
    let probe = std::process::Command::new(common::MACRONODE)
        .current_dir(&dir)
        .env_remove("RON_CONFIG")
        .env("RON_UDS__ONLY", "true")
        .env("RON_ROLES", "[\"registry\", \"storage\"]")
        .args(["probe", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", stderr(&probe));
    assert!(String::from_utf8_lossy(&probe.stdout).contains("metrics.sock"));
    let (st, body) = unix_request(&sock("admin"), "GET", "/api/v1/status", b"");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("unix:"), "{body}");
    let (st, body) = unix_request(&sock("registry"), "GET", "/registry/head", b"");
    assert_eq!(st, 200, "{body}");
    let (st, body) = unix_request(&sock("storage"), "PUT", "/v1/o", b"over a unix socket");
    assert_eq!(st, 201, "{body}");
    let addr: Value = serde_json::from_str(&body).unwrap();
    let (st, got) = unix_request(
        &sock("storage"),
        "GET",
        &format!("/v1/o/{}", addr["address"].as_str().unwrap()),
        b"",
    );
    assert_eq!((st, got.as_str()), (200, "over a unix socket"));

    let paths: Vec<_> = node.unix.values().cloned().collect();
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(30)).success());
    for p in paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }

    let out = NodeBuilder::new().arg("--uds-only").output();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("overlay"), "{}", stderr(&out));
}
