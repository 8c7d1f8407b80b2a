//! Keeps the example configs and docs in step with the code: every config
//! key the binary has is in both example files and in docs/CONFIG.md, the
//! examples hold exactly the defaults, every metric name is documented,
//! and the ARCHITECTURE code map names every module.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const MACRONODE: &str = env!("CARGO_BIN_EXE_macronode");
const MICRONODE: &str = env!("CARGO_BIN_EXE_micronode");

/// Keys that are unset by default (so `config print` leaves them out).
const OPTIONAL_KEYS: &[&str] = &[
    "admin.token",
    "omnigate.downstream.storage",
    "omnigate.downstream.index",
    "omnigate.downstream.mailbox",
    "omnigate.tls.cert",
    "omnigate.tls.key",
    "registry.upstream",
    "storage.s3.access_key_id",
    "storage.s3.secret_access_key",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn print(bin: &str, config: Option<&Path>) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(["config", "print"]).env_remove("RON_CONFIG");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().expect("config print");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Drop the header comment (it names the source).
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn leaf_keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&p, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

fn default_keys() -> BTreeSet<String> {
    let printed: toml::Value =
        toml::from_str(&print(MACRONODE, None)).expect("printed config is TOML");
    let mut keys = BTreeSet::new();
    leaf_keys("", &printed, &mut keys);
    keys.retain(|k| !k.starts_with("testrole."));
    keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
    keys
}

#[test]
fn example_configs_hold_exactly_the_defaults() {
    for (bin, file) in [
        (MACRONODE, "config/macronode.toml"),
        (MICRONODE, "config/micronode.toml"),
    ] {
        let from_file = print(bin, Some(&root().join(file)));
        let defaults = print(bin, None);
        assert_eq!(from_file, defaults, "{file} differs from {bin}'s defaults");
    }
}

#[test]
fn every_config_key_is_in_the_examples_and_in_config_md() {
    let doc = std::fs::read_to_string(root().join("docs/CONFIG.md")).unwrap();
    for file in ["config/macronode.toml", "config/micronode.toml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for key in default_keys() {
            let leaf = key.rsplit('.').next().unwrap();
            let present = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{leaf} =")) || l.starts_with(&format!("{leaf}="))
            });
            assert!(present, "{file} does not show `{key}`");
        }
    }
    for key in default_keys() {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/CONFIG.md does not document `{key}`"
        );
    }
}

#[test]
fn every_metric_name_is_documented() {
    let src = std::fs::read_to_string(root().join("crates/kernel/src/metrics.rs")).unwrap();
    let api = std::fs::read_to_string(root().join("docs/API.md")).unwrap();
    let mut n = 0;
    for line in src.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub const ") {
            if let Some(name) = rest.split('"').nth(1) {
                n += 1;
                assert!(
                    api.contains(&format!("`{name}`")),
                    "docs/API.md does not document `{name}`"
                );
            }
        }
    }
    assert!(n > 10, "found only {n} metric names");
}

/// Every alert's `runbook` annotation points at a section of
/// docs/RUNBOOK.md that exists.
#[test]
fn every_alert_links_to_a_runbook_section() {
    let rules =
        std::fs::read_to_string(root().join("packaging/prometheus/macronode.rules.yml")).unwrap();
    let runbook = std::fs::read_to_string(root().join("docs/RUNBOOK.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut n = 0;
    for line in rules.lines() {
        if let Some(link) = line.trim().strip_prefix("runbook: ") {
            let link = link.trim_matches('"');
            let anchor = link
                .strip_prefix("docs/RUNBOOK.md#")
                .unwrap_or_else(|| panic!("{link} is not a docs/RUNBOOK.md section"));
            assert!(anchors.contains(anchor), "no section for {link}");
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} runbook links");
}

/// The `.rs` files under `dir` (recursively).
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module of the host, the crates and the roles.
fn source_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for parent in ["crates", "roles"] {
        for krate in std::fs::read_dir(root().join(parent)).unwrap() {
            let src = krate.unwrap().path().join("src");
            if src.is_dir() {
                rust_files(&src, &mut files);
            }
        }
    }
    files
}

/// docs/ARCHITECTURE.md's code map names every module of the host, the
/// crates and the roles (`lib.rs` and `main.rs` are the crates
/// themselves), so a new module cannot go unmapped.
#[test]
fn the_code_map_names_every_module() {
    let map = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let files = source_files();
    let mut missing = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name != "lib.rs" && !map.contains(&name) {
            missing.push(f.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    // Every test and bench target, by its path.
    for dir in ["tests", "benches"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root()).unwrap().display().to_string();
                if !map.contains(&format!("`{rel}`")) {
                    missing.push(rel);
                }
            }
        }
    }
    assert!(files.len() > 50, "found only {} modules", files.len());
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name: {missing:?}"
    );
}

/// `text` without the bodies of its `fn validate`s (checking a key is not
/// using it).
fn without_validate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("fn validate(") {
        out.push_str(&rest[..i]);
        let body = &rest[i..];
        let Some(open) = body.find('{') else { break };
        let mut depth = 0;
        let mut end = body.len();
        for (j, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Every config key the binary has is read by code (a field access
/// `.key` anywhere but in a `validate`): a knob that is declared,
/// validated and documented but governs nothing fails here.
#[test]
fn every_config_key_is_read_by_code() {
    let files = source_files();
    let code: String = files
        .iter()
        .map(|f| without_validate(&std::fs::read_to_string(f).unwrap()))
        .collect::<Vec<_>>()
        .join("\n");
    let read = |leaf: &str| {
        let access = format!(".{leaf}");
        code.match_indices(&access).any(|(i, _)| {
            !code[i + access.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let unread: Vec<String> = default_keys()
        .into_iter()
        .filter(|k| !read(k.rsplit('.').next().unwrap()))
        .collect();
    assert!(unread.is_empty(), "config keys no code reads: {unread:?}");
}

/// docs/CONFIG.md's "hot" column says what the code declares: a key is
/// "no" exactly when its section's `restart_keys!` names it (or the whole
/// section).
#[test]
fn config_md_hot_column_matches_the_restart_declarations() {
    let doc = std::fs::read_to_string(root().join("docs/CONFIG.md")).unwrap();
    let mut checked = 0;
    for key in default_keys() {
        let cell = format!("| `{key}` |");
        let Some(row) = doc.lines().find(|l| l.starts_with(&cell)) else {
            continue;
        };
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        // | key | default | hot | meaning |
        let hot = cols[3];
        let documented_restart = hot.starts_with("no");
        assert!(
            documented_restart || hot.starts_with("yes"),
            "`{key}`: hot column {hot:?}"
        );
        let declared = macronode::config::NodeConfig::restart_only(&key)
            .unwrap_or_else(|| panic!("`{key}` is in no section"));
        assert_eq!(
            declared, documented_restart,
            "`{key}`: docs/CONFIG.md says hot = {hot:?}, the code declares restart-only = {declared}"
        );
        checked += 1;
    }
    assert!(checked > 60, "only {checked} keys checked");
}
