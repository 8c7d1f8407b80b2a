//! Role boundaries the compiler keeps: a role reaches another role only
//! through the handles `ron-kernel` declares, so no role crate may depend
//! on another (it could then name that role's store), and the kernel
//! depends on none.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

use std::path::Path;

/// The `ron-*` crates `manifest` depends on (any dependency table).
fn ron_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut out = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(table).and_then(|t| t.as_table()) {
            out.extend(deps.keys().filter(|k| k.starts_with("ron-")).cloned());
        }
    }
    out
}

#[test]
fn no_role_crate_depends_on_another_role() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roles = 0;
    for entry in std::fs::read_dir(root.join("roles")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        roles += 1;
        let bad: Vec<String> = ron_deps(&manifest)
            .into_iter()
            .filter(|d| d != "ron-kernel" && d != "ron-oap")
            .collect();
        assert!(
            bad.is_empty(),
            "{} depends on {bad:?}: reach another role through a kernel handle \
             (crates/kernel/src/handles.rs) instead",
            manifest.display()
        );
    }
    assert_eq!(roles, 6, "six role crates under roles/");
    let kernel = ron_deps(&root.join("crates/kernel/Cargo.toml"));
    assert!(kernel.is_empty(), "ron-kernel depends on {kernel:?}");
}

#[test]
fn every_role_in_the_table_is_a_feature_of_the_package() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let features = doc["features"].as_table().unwrap();
    for role in ron_kernel::RoleName::ALL {
        assert!(
            features.contains_key(role.feature()),
            "role {role} has no cargo feature {:?}",
            role.feature()
        );
    }
    for role in ron_kernel::RoleName::PRODUCTION {
        assert!(
            macronode::roles::COMPILED.contains(role),
            "the default build (all features here) runs {role}"
        );
    }
}
