//! The host, tested against the real binary: start-up, refusal of bad
//! config, graceful shutdown, reload, supervision and admin auth.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::process::Command;
use std::time::Duration;

use common::{poll, request, try_request, NodeBuilder, Sse};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn all_roles_reach_ready_and_answer_on_every_plane() {
    let node = NodeBuilder::new().start();
    node.wait_ready();
    let ready = node.get("metrics", "/readyz");
    assert_eq!(ready.status, 200);
    let body = ready.json();
    for role in [
        "omnigate", "overlay", "registry", "storage", "index", "mailbox",
    ] {
        assert_eq!(body["roles"][role]["ready"], true, "{role}: {body}");
    }
    assert!(
        body["roles"].get("testrole").is_none(),
        "test role runs only when asked"
    );

    // The ready=1 line lists every bound address.
    let line = node
        .wait_for_log(LONG, |v| v["ready"] == 1)
        .expect("ready=1 line");
    let addrs: serde_json::Value = serde_json::from_str(line["addrs"].as_str().unwrap()).unwrap();
    for name in ["metrics", "admin", "omnigate", "overlay", "registry"] {
        assert_eq!(addrs[name], node.addr(name).to_string());
    }

    assert_eq!(node.get("metrics", "/healthz").status, 200);
    let version = node.get("metrics", "/version").json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["features"].as_array().unwrap().len() >= 6);
    let metrics = node.get("metrics", "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("config_version 1"),
        "{}",
        metrics.body
    );

    let status = node.get("admin", "/api/v1/status").json();
    assert_eq!(status["profile"], "macronode");
    assert_eq!(status["ready"], true);
    assert_eq!(status["roles"]["omnigate"]["state"], "running");

    // Unknown routes are problem+json, with the request id echoed.
    let r = request(
        node.addr("metrics"),
        "GET",
        "/nope",
        &[("x-request-id", "t-123")],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("x-request-id"), Some("t-123"));
    assert_eq!(r.json()["reason"], "not_found");
}

#[test]
fn an_unknown_role_exits_2_naming_the_choices() {
    let out = NodeBuilder::new().arg("--roles").arg("nosuch").output();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown role `nosuch`"), "{err}");
    assert!(
        err.contains("known roles: storage, index, mailbox, registry, overlay, omnigate"),
        "{err}"
    );
}

#[test]
fn an_unknown_config_key_exits_2_naming_key_and_source() {
    let out = NodeBuilder::new()
        .env("RON_OMNIGATE__INFLIGT_MAX", "3")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`omnigate.infligt_max`"), "{err}");
    assert!(err.contains("RON_OMNIGATE__INFLIGT_MAX"), "{err}");

    let out = NodeBuilder::new()
        .config_extra("[shutdown]\ndrain_deadlin = \"3s\"\n")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`shutdown.drain_deadlin`"), "{err}");
    assert!(err.contains("node.toml"), "{err}");

    // A bad value for a seed name is named by that seed name.
    let out = NodeBuilder::new()
        .env("OMNIGATE_INFLIGHT_MAX", "lots")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OMNIGATE_INFLIGHT_MAX"), "{err}");
}

#[test]
fn sigterm_drains_fifty_inflight_requests_then_exits_0() {
    let mut node = NodeBuilder::new().arg("--roles").arg("testrole").start();
    node.wait_ready();
    let role = node.addr("testrole");
    let holds: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || request(role, "GET", "/hold?ms=1500", &[], b"")))
        .collect();
    let all_held = poll(LONG, || {
        let r = try_request(role, "GET", "/held", &[], b"").ok()?;
        (r.json()["held"] == 50).then_some(())
    });
    assert!(
        all_held.is_some(),
        "50 holds never in flight:\n{}",
        node.log_dump()
    );

    node.signal("TERM");
    let went_unready = poll(LONG, || {
        let r = try_request(node.addr("metrics"), "GET", "/readyz", &[], b"").ok()?;
        (r.status == 503).then_some(r)
    })
    .expect("/readyz never answered 503 during the drain");
    assert_eq!(went_unready.header("retry-after"), Some("1"));
    assert!(went_unready.json()["missing"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("shutting_down")));

    for h in holds {
        let r = h.join().expect("hold thread");
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        assert_eq!(body["completed"], true);
        // Readiness had flipped before the role was told to stop.
        assert_eq!(body["ready_at_release"], false);
    }
    let status = node.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_dump());
    assert!(node
        .wait_for_log(Duration::from_secs(1), |v| v["message"]
            == "shutdown_complete=1")
        .is_some());
    // It is the last line of a clean stop.
    let dump = node.log_dump();
    let last = dump
        .lines()
        .rev()
        .find(|l| !l.starts_with("stderr:"))
        .unwrap_or("");
    assert!(last.contains("shutdown_complete=1"), "last line: {last}");
}

/// The logs as an operator greps them: `RUST_LOG` wins over `log.filter`,
/// text lines carry no ANSI colour when stdout is not a terminal, and
/// `grep corr_id=` finds request lines in text and in JSON.
#[test]
fn rust_log_wins_text_has_no_colour_and_grep_corr_id_finds_requests() {
    use std::io::{BufRead, BufReader};
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            format!(
                "{}\n[log]\nformat = \"{format}\"\nfilter = \"error\"\n",
                common::base_config(dir.path())
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(common::MACRONODE)
            .args(["run", "--roles", "storage", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("RON_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // `log.filter = "error"` would hide the ready line; RUST_LOG=info shows it.
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("ready=1"))
            .expect("a ready=1 line under RUST_LOG=info");
        let storage: std::net::SocketAddr = ready
            .split(|c: char| c.is_whitespace() || c == '"')
            .find_map(|w| w.strip_prefix("storage="))
            .expect("storage address in the ready line")
            .parse()
            .unwrap();
        let r = request(
            storage,
            "GET",
            "/v1/o/b3:x",
            &[("x-request-id", "probe-42")],
            b"",
        );
        assert_eq!(r.status, 400);
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("corr_id=probe-42"))
            .unwrap_or_else(|| panic!("{format}: no line with corr_id=probe-42"));
        assert!(
            !line.contains('\u{1b}'),
            "{format}: ANSI escape in {line:?}"
        );
        assert!(
            !ready.contains('\u{1b}'),
            "{format}: ANSI escape in {ready:?}"
        );
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["corr_id"], "probe-42");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn sighup_applies_hot_knobs_and_keeps_the_old_config_when_the_new_one_is_broken() {
    let builder = NodeBuilder::new()
        .arg("--roles")
        .arg("testrole")
        .config_extra("greeting = \"hello\"\n");
    let path = builder.config_path();
    let base = common::base_config(builder.dir());
    let node = builder.start();
    node.wait_ready();
    assert_eq!(node.get("testrole", "/hello").json()["greeting"], "hello");

    let mut bus = Sse::open(node.addr("admin"), "/api/v1/bus?topic=config");
    std::fs::write(&path, format!("{base}greeting = \"bonjour\"\n")).unwrap();
    node.signal("HUP");
    assert!(
        bus.wait_line(LONG, |l| l
            .contains(r#""event":"config_updated","version":2"#)),
        "no ConfigUpdated on the bus: {:?}\n{}",
        bus.seen(),
        node.log_dump()
    );
    assert_eq!(node.get("testrole", "/hello").json()["greeting"], "bonjour");
    let cfg = node.get("admin", "/api/v1/config").json();
    assert_eq!(cfg["testrole"]["greeting"], "bonjour");
    assert_eq!(
        node.get("admin", "/api/v1/status").json()["config_version"],
        2
    );

    // A broken file: rejected, logged, old config in force, still ready.
    std::fs::write(
        &path,
        format!("{base}greeting = \"hola\"\nno_such_key = 1\n"),
    )
    .unwrap();
    node.signal("HUP");
    let rejected = node
        .wait_for_log(LONG, |v| {
            v["message"] == "config reload rejected; previous config kept"
        })
        .unwrap_or_else(|| panic!("no rejection logged:\n{}", node.log_dump()));
    assert!(rejected["error"]
        .as_str()
        .unwrap()
        .contains("testrole.no_such_key"));
    assert_eq!(node.get("testrole", "/hello").json()["greeting"], "bonjour");
    assert_eq!(node.get("metrics", "/readyz").status, 200);
    assert_eq!(
        node.get("admin", "/api/v1/status").json()["config_version"],
        2
    );

    // The admin reload route reports the rejection to its caller.
    let r = request(node.addr("admin"), "POST", "/api/v1/reload", &[], b"");
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["reason"], "config_invalid");
}

#[test]
fn a_panicking_role_is_restarted_with_backoff_then_quarantined_until_reload() {
    let builder = NodeBuilder::new()
        .arg("--roles")
        .arg("testrole")
        .config_extra("mode = \"panic\"\n");
    let path = builder.config_path();
    let base = common::base_config(builder.dir());
    let node = builder.start();

    let report = poll(LONG, || {
        let r = try_request(node.addr("metrics"), "GET", "/readyz", &[], b"").ok()?;
        let body = r.json();
        let reason = body["roles"]["testrole"]["reason"].as_str()?.to_owned();
        reason
            .starts_with("quarantined")
            .then_some((r.status, reason, body))
    })
    .unwrap_or_else(|| panic!("never quarantined:\n{}", node.log_dump()));
    assert_eq!(report.0, 503);
    assert!(report.1.contains("6 crashes"), "{}", report.1);
    assert!(report.1.contains("told to panic"), "{}", report.1);
    assert!(report.2["missing"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("role:testrole")));

    let metrics = node.get("metrics", "/metrics").body;
    assert!(
        metrics.contains(r#"service_restarts_total{service="testrole"} 6"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"service_quarantined{service="testrole"} 1"#));
    let status = node.get("admin", "/api/v1/status").json();
    assert_eq!(status["roles"]["testrole"]["state"], "quarantined");
    assert_eq!(status["roles"]["testrole"]["restarts"], 6);
    // Still quarantined: nothing restarts it behind the operator's back.
    assert_eq!(
        node.get("admin", "/api/v1/status").json()["roles"]["testrole"]["restarts"],
        6
    );

    // The operator fixes the config and reloads: the role comes back.
    std::fs::write(&path, format!("{base}mode = \"serve\"\n")).unwrap();
    let r = request(node.addr("admin"), "POST", "/api/v1/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["released"], serde_json::json!(["testrole"]));
    node.wait_ready();
    assert_eq!(node.get("testrole", "/hello").status, 200);
}

#[test]
fn a_role_that_returns_an_error_is_restarted_and_its_crash_is_on_the_bus() {
    let node = NodeBuilder::new().arg("--roles").arg("testrole").start();
    node.wait_ready();
    let mut bus = Sse::open(node.addr("admin"), "/api/v1/bus?topic=crash");
    assert_eq!(node.get("testrole", "/crash").status, 202);
    assert!(
        bus.wait_line(LONG, |l| l.contains(
            r#"{"event":"service_crashed","service":"testrole","reason":"error: testrole was told to crash by GET /crash"}"#
        )),
        "{:?}",
        bus.seen()
    );
    // Restarted on the same port, and ready again.
    node.wait_ready();
    assert_eq!(node.get("testrole", "/hello").status, 200);
    let status = node.get("admin", "/api/v1/status").json();
    assert_eq!(status["roles"]["testrole"]["restarts"], 1);
    assert_eq!(status["roles"]["testrole"]["state"], "running");
    let metrics = node.get("metrics", "/metrics").body;
    assert!(
        metrics.contains(r#"service_restarts_total{service="testrole"} 1"#),
        "{metrics}"
    );
}

#[test]
fn admin_routes_need_the_token_when_the_peer_is_not_trusted() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .config_replace(
            "[admin]\naddr = \"127.0.0.1:0\"\n",
            "[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"t0ken-abc\"\ntrust_loopback = false\n",
        )
        .start();
    let admin = node.addr("admin");
    node.wait_ready();

    for (method, path) in [
        ("POST", "/api/v1/drain"),
        ("POST", "/api/v1/reload"),
        ("POST", "/api/v1/shutdown"),
        ("GET", "/api/v1/status"),
    ] {
        let r = request(admin, method, path, &[], b"");
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = request(
            admin,
            method,
            path,
            &[("Authorization", "Bearer t0ken-abX")],
            b"",
        );
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
        // Client-chosen headers are no credential.
        let r = request(
            admin,
            method,
            path,
            &[("X-Forwarded-For", "127.0.0.1")],
            b"",
        );
        assert_eq!(r.status, 401);
    }

    let ok = [("Authorization", "Bearer t0ken-abc")];
    let r = request(admin, "POST", "/api/v1/drain", &ok, b"");
    assert_eq!(r.status, 202);
    let ready = node.get("metrics", "/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["missing"], serde_json::json!(["draining"]));
    assert_eq!(
        request(admin, "DELETE", "/api/v1/drain", &ok, b"").status,
        200
    );
    node.wait_ready();
    let r = request(admin, "POST", "/api/v1/reload", &ok, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 2);
}

#[test]
fn admin_shutdown_exits_0() {
    let mut node = NodeBuilder::new().start();
    node.wait_ready();
    let r = request(node.addr("admin"), "POST", "/api/v1/shutdown", &[], b"");
    assert_eq!(r.status, 202);
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn config_print_redacts_secrets_and_ron_config_beats_the_flag() {
    let b = NodeBuilder::new();
    let other = b.dir().join("other.toml");
    std::fs::write(
        &other,
        "[admin]\naddr = \"127.0.0.1:7777\"\ntoken = \"super-secret\"\n[auth]\nwrite_tokens = [\"w-secret\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::MACRONODE)
        .args(["config", "print", "--config"])
        .arg(b.dir().join("missing-but-overridden.toml"))
        .env("RON_CONFIG", &other)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("127.0.0.1:7777"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(
        !text.contains("super-secret") && !text.contains("w-secret"),
        "{text}"
    );
    // The printed config is itself a valid config file (with secrets blank).
    assert!(text.contains("drain_deadline = \"5s\""), "{text}");
}

#[test]
fn doctor_reports_each_check_and_fails_on_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = NodeBuilder::new();
    let cfg = format!(
        "{}\n",
        common::base_config(b.dir()).replace(
            "[metrics]\naddr = \"127.0.0.1:0\"",
            &format!("[metrics]\naddr = \"{}\"", taken.local_addr().unwrap())
        )
    );
    std::fs::write(b.config_path(), &cfg).unwrap();
    let out = std::process::Command::new(common::MACRONODE)
        .args(["doctor", "--config"])
        .arg(b.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fail") && l.contains("port metrics")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("config")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("data dir")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("clock")),
        "{text}"
    );
    drop(taken);
}

#[test]
fn micronode_runs_in_amnesia_and_writes_no_data_dir() {
    let b = NodeBuilder::new().bin(common::MICRONODE);
    let data = b.dir().join("data");
    let node = b.start();
    node.wait_ready();
    let status = node.get("admin", "/api/v1/status").json();
    assert_eq!(status["profile"], "micronode");
    assert_eq!(status["amnesia"], true);
    assert!(!data.exists(), "amnesia must not create {}", data.display());
    assert_small_pages(&node, "micronode");
}

/// The node runs on 4 KiB pages (`PR_SET_THP_DISABLE`: RUNBOOK, "Edge
/// boxes"; ARCHITECTURE, `alloc.rs`); kernels older than 6.x do not show
/// the field.
fn assert_small_pages(node: &common::Node, what: &str) {
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    if let Some(line) = proc_status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert!(line.ends_with('0'), "{what} left huge pages on: {line}");
    }
}

#[test]
fn macronode_runs_on_small_pages_too() {
    let node = NodeBuilder::new().arg("--roles").arg("testrole").start();
    node.wait_ready();
    assert_small_pages(&node, "macronode");
}

#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let mut node = NodeBuilder::new().arg("--roles").arg("testrole").start();
    node.wait_ready();
    let role = node.addr("testrole");
    let hold = std::thread::spawn(move || try_request(role, "GET", "/hold?ms=60000", &[], b""));
    assert!(poll(LONG, || {
        let r = try_request(role, "GET", "/held", &[], b"").ok()?;
        (r.json()["held"] == 1).then_some(())
    })
    .is_some());
    node.signal("TERM");
    assert!(poll(LONG, || {
        let r = try_request(node.addr("metrics"), "GET", "/readyz", &[], b"").ok()?;
        (r.status == 503).then_some(())
    })
    .is_some());
    node.signal("INT");
    assert_eq!(
        node.wait_exit(LONG).code(),
        Some(130),
        "{}",
        node.log_dump()
    );
    // The held request was cut, not answered.
    assert!(hold.join().unwrap().is_err());
}

/// `probe`: the image's healthcheck. 0 on a 200, 1 on anything else (a
/// draining node, nothing listening), 2 on a bad flag.
#[test]
fn probe_exits_0_when_ready_and_1_when_not() {
    let node = NodeBuilder::new().arg("--roles").arg("storage").start();
    node.wait_ready();
    let metrics = node.addr("metrics").to_string();
    let probe = |args: &[&str]| {
        Command::new(common::MACRONODE)
            .env_remove("RON_CONFIG")
            .arg("probe")
            .args(args)
            .output()
            .unwrap()
    };
    let out = probe(&["--addr", &metrics]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    let r = request(node.addr("admin"), "POST", "/api/v1/drain", &[], b"");
    assert_eq!(r.status, 202);
    let out = probe(&["--addr", &metrics]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
    // Liveness stays green while draining.
    let out = probe(&["--addr", &metrics, "--path", "/healthz"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = probe(&["--addr", &metrics, "--path", "healthz"]);
    assert_eq!(out.status.code(), Some(2));
    drop(node);
    let out = probe(&["--addr", &metrics, "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Under systemd's `Type=notify`: READY=1 once ready, STOPPING=1 when the
/// drain starts, over the datagram socket NOTIFY_SOCKET names.
#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut node = NodeBuilder::new()
        .arg("--roles")
        .arg("index")
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start();
    let mut buf = [0u8; 512];
    let recv = |buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&mut buf);
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    // It came once the node was ready.
    assert_eq!(node.get("metrics", "/readyz").status, 200);
    node.signal("TERM");
    let second = recv(&mut buf);
    assert!(second.lines().any(|l| l == "STOPPING=1"), "{second}");
    assert!(node.wait_exit(Duration::from_secs(30)).success());
}
