//! Schema versions of the roles' redb files: a node refuses a file of
//! another version at start, naming what to run; `ronctl migrate` reports
//! and upgrades older files offline and refuses newer ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::process::Command;
use std::time::Duration;

use common::{request, NodeBuilder};
use redb::{Database, ReadableDatabase, TableDefinition};

const RONCTL: &str = env!("CARGO_BIN_EXE_ronctl");
const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("ron_schema");

fn ronctl(args: &[&str]) -> std::process::Output {
    Command::new(RONCTL)
        .env_remove("RON_CONFIG")
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

fn version(path: &std::path::Path) -> Option<u64> {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(SCHEMA).ok()?;
    let v = t.get("version").unwrap().map(|g| g.value());
    v
}

/// A storage node that stored one object, stopped; returns its directory,
/// config and the object's address.
fn stopped_node_with_an_object() -> (std::path::PathBuf, std::path::PathBuf, String) {
    let b = NodeBuilder::new().arg("--roles").arg("storage,index");
    let cfg = b.config_path();
    let dir = b.dir().to_path_buf();
    let mut node = b.keep_dir().start();
    node.wait_ready();
    let r = request(
        node.addr("storage"),
        "PUT",
        "/v1/o",
        &[],
        b"kept across layouts",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let addr = r.json()["address"].as_str().unwrap().to_owned();
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(30)).success());
    (dir, cfg, addr)
}

#[test]
fn older_files_are_refused_until_migrated_offline() {
    let (dir, cfg, addr) = stopped_node_with_an_object();
    let cfg_s = cfg.to_str().unwrap();
    let storage = dir.join("data/storage.redb");
    assert_eq!(version(&storage), Some(2), "new files are stamped");

    // Everything current: nothing to do, exit 0.
    let out = ronctl(&["migrate", "all", "--config", cfg_s]);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains("storage") && s.contains("current"), "{s}");
    assert!(s.contains("mailbox") && s.contains("no file yet"), "{s}");

    // The file as a build before schema versions wrote it: same tables,
    // no version.
    {
        let db = Database::create(&storage).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(SCHEMA).unwrap());
        txn.commit().unwrap();
    }
    let out = NodeBuilder::in_dir(dir.clone(), cfg.clone())
        .keep_dir()
        .arg("--roles")
        .arg("storage")
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("schema version 0") && text(&out).contains("ronctl migrate storage"),
        "{}",
        text(&out)
    );

    let out = ronctl(&["migrate", "storage", "--config", cfg_s, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would upgrade"), "{}", text(&out));
    assert_eq!(version(&storage), None, "a dry run changes nothing");

    let out = ronctl(&["migrate", "svc-storage", "--config", cfg_s, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["status"], "upgraded", "{v}");
    assert_eq!(v["files"][0]["from"], 0, "{v}");
    assert_eq!(version(&storage), Some(2));

    // The node starts on it, the object intact; and a running node's file
    // cannot be migrated under it.
    let node = NodeBuilder::in_dir(dir, cfg.clone())
        .arg("--roles")
        .arg("storage")
        .start();
    node.wait_ready();
    let r = request(
        node.addr("storage"),
        "GET",
        &format!("/v1/o/{addr}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "kept across layouts");
    let out = ronctl(&["migrate", "storage", "--config", cfg_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("another process"), "{}", text(&out));
}

#[test]
fn newer_files_are_refused_by_node_and_migrate() {
    let (dir, cfg, _) = stopped_node_with_an_object();
    let index = dir.join("data/index.redb");
    {
        let db = Database::create(&index).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(SCHEMA)
            .unwrap()
            .insert("version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let out = ronctl(&["migrate", "index", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("newer"), "{}", text(&out));
    assert_eq!(version(&index), Some(99), "left as it was");
    let out = Command::new(common::MACRONODE)
        .env_remove("RON_CONFIG")
        .args(["doctor", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("schema index") && text(&out).contains("newer"),
        "{}",
        text(&out)
    );
    let out = NodeBuilder::in_dir(dir, cfg)
        .arg("--roles")
        .arg("index")
        .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("version 99, newer"), "{}", text(&out));
}

#[test]
fn migrate_usage_errors() {
    for (args, why) in [
        (&["migrate", "overlay"][..], "keeps no redb file"),
        (&["migrate", "nosuchrole"], "not a role"),
        (&["migrate"], "role"),
    ] {
        let out = ronctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(why), "{args:?}: {}", text(&out));
    }
    // Under amnesia there is nothing on disk to migrate.
    let out = ronctl(&["migrate", "all", "--profile", "micronode"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("amnesia"), "{}", text(&out));
}
