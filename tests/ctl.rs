//! `macronode ctl put|get` against a running node.

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
    }

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
