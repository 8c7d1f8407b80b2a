//! `macronode ctl put|get` against a running node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::process::Command;

use common::NodeBuilder;

fn ctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(common::MACRONODE)
        .args(["ctl", "--url", url])
        .args(args)
        .output()
        .expect("ctl")
}

/// Through the gateway (ctl's default target, as the runbook shows it) and
/// against a storage listener of its own.
#[test]
fn put_and_get_small_and_large_files_verified() {
    put_and_get_through("omnigate,storage", "omnigate");
    put_and_get_through("storage", "storage");
}

fn put_and_get_through(roles: &str, listener: &str) {
    let node = NodeBuilder::new().arg("--roles").arg(roles).start();
    node.wait_ready();
    let url = format!("http://{}", node.addr(listener));
    let dir = tempfile::tempdir().unwrap();

    for (name, len) in [("small", 10_000usize), ("large", 3 * (1 << 20) + 123)] {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(name.as_bytes())
            .finalize_xof()
            .fill(&mut data);
        let src = dir.path().join(name);
        std::fs::write(&src, &data).unwrap();
        let want = format!("b3:{}", blake3::hash(&data).to_hex());

        let out = ctl(&url, &["put", src.to_str().unwrap(), "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
        if len > 1 << 20 {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("upload"),
                "large files go as uploads"
            );
        }

        let dst = dir.path().join(format!("{name}.out"));
        let out = ctl(&url, &["get", &want, "-o", dst.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read(&dst).unwrap() == data);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("verified"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );

        // --json, after the verb: one object each.
        let out = ctl(&url, &["put", src.to_str().unwrap(), "--quiet", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("put json");
        assert_eq!(v["address"], want.as_str());
        assert_eq!(v["size"], len as u64);
        let out = ctl(&url, &["get", &want, "-o", dst.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("get json");
        assert_eq!(
            (v["verified"].clone(), v["size"].clone()),
            (true.into(), len.into())
        );
    }
    // JSON and the object on stdout cannot share it.
    let out = ctl(&url, &["get", "--json", &format!("b3:{}", "0".repeat(64))]);
    assert_eq!(out.status.code(), Some(2));

    // An address that is not there: an error, and no file left behind.
    let missing = format!("b3:{}", blake3::hash(b"never stored").to_hex());
    let dst = dir.path().join("missing.out");
    let out = ctl(&url, &["get", &missing, "-o", dst.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert!(!dst.exists());
    // A malformed address is a usage error.
    let out = ctl(&url, &["get", "B3:nope"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `ctl --help` says what the client does today: every verb is listed and
/// the summary covers names and the registry, not only objects.
#[test]
fn ctl_help_describes_every_verb() {
    let out = Command::new(common::MACRONODE)
        .args(["ctl", "--help"])
        .output()
        .expect("ctl --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("put and get objects"), "{help}");
    for word in ["put", "get", "names", "registry"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let summary = help
        .lines()
        .find(|l| l.contains("Operator client"))
        .unwrap_or("");
    assert!(
        summary.contains("names") && summary.contains("registry"),
        "{help}"
    );
}

const RONCTL: &str = env!("CARGO_BIN_EXE_ronctl");

fn ronctl(admin: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new(RONCTL)
        .env_remove("RON_CONFIG")
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

/// `ronctl` is `macronode ctl`: as its own binary, and as a symlink or a
/// hard link to `macronode`; its usage names itself, not `ronctl ctl`.
#[test]
fn ronctl_is_ctl_under_any_link() {
    let dir = tempfile::tempdir().unwrap();
    let sym = dir.path().join("ronctl");
    std::os::unix::fs::symlink(common::MACRONODE, &sym).unwrap();
    let hard = dir.path().join("ronctl-hard");
    if std::fs::hard_link(common::MACRONODE, &hard).is_err() {
        // Another filesystem: a copy is the same program under that name.
        std::fs::copy(common::MACRONODE, &hard).unwrap();
    }
    for bin in [std::path::Path::new(RONCTL), &sym, &hard] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin:?}: {}", text(&out));
        assert!(help.contains("Usage: ronctl"), "{bin:?}: {help}");
        assert!(!help.contains("ronctl ctl"), "{bin:?}: {help}");
        for verb in [
            "status", "tail", "bus", "config", "cap", "chaos", "registry",
        ] {
            assert!(help.contains(verb), "{bin:?} lacks {verb}: {help}");
        }
        // A verb's own help, and a usage error exits 2.
        let out = Command::new(bin).args(["tail", "--help"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("--topic"));
        let out = Command::new(bin).arg("frobnicate").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    }
}

/// `status`, `config print`, `tail`, and `chaos` against a running node,
/// in text and with `--json` before or after the verb.
#[test]
fn status_config_print_tail_and_chaos_against_a_node() {
    let node = NodeBuilder::new().arg("--roles").arg("registry").start();
    node.wait_ready();
    let admin = node.addr("admin");

    let out = ronctl(admin, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("ready: yes"), "{s}");
    assert!(s.contains("ROLE") && s.contains("registry"), "{s}");
    assert!(s.contains(&admin.to_string()), "{s}");
    assert!(s.contains("registry.write"), "{s}");
    for args in [&["--json", "status"][..], &["status", "--json"]] {
        let out = ronctl(admin, args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["ready"], true);
        assert_eq!(v["roles"]["registry"]["restarts"], 0);
        assert!(v["build"]["git_sha"].is_string(), "{v}");
    }

    let out = ronctl(admin, &["config", "print", "svc-registry"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s.contains("[registry]") && s.contains("quorum_m"), "{s}");
    assert!(!s.contains("[storage]"), "{s}");
    let out = ronctl(admin, &["config", "print", "nosuchrole"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Tail the kernel topic; a reload is a `config` event on it.
    let mut tail = Command::new(RONCTL)
        .args(["--admin", &format!("http://{admin}")])
        .args(["tail", "--topic", "kernel", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(tail.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("following the bus"), "{line}");
    let r = common::request(admin, "POST", "/api/v1/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("config_updated") && s.contains("version="),
        "{s}"
    );

    let out = ronctl(admin, &["bus", "tail", "--topic", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown topic"), "{}", text(&out));

    // A node started without chaos.enabled refuses drills, and says how.
    let out = ronctl(
        admin,
        &[
            "chaos",
            "inject",
            "--target=svc-registry",
            "--fault=storage-latency",
            "--ms=50",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refuses fault injection")
            && text(&out).contains("chaos.enabled = true"),
        "{}",
        text(&out)
    );
}

/// `config check`: the runbooks' validate, without a node.
#[test]
fn config_check_names_the_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[registry]\nquorum_m = 1\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[registry]\nquorum_mm = 1\n").unwrap();
    let check = |args: &[&str]| {
        Command::new(RONCTL)
            .env_remove("RON_CONFIG")
            .args(["config", "check"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = check(&["svc-registry", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("config ok"), "{}", text(&out));
    let out = check(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("registry.quorum_mm"), "{}", text(&out));
    let out = check(&["nosuchrole", "--config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
