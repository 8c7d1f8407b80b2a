//! What this binary is: version, commit, build time, compiler, roles.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub git_sha: &'static str,
    pub build_time: String,
    pub rustc: &'static str,
    pub features: Vec<&'static str>,
}

pub fn build_unix_secs() -> u64 {
    env!("MACRONODE_BUILD_UNIX").parse().unwrap_or(0)
}

pub fn info() -> BuildInfo {
    let built = UNIX_EPOCH + Duration::from_secs(build_unix_secs());
    BuildInfo {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        git_sha: env!("MACRONODE_BUILD_GIT_SHA"),
        build_time: humantime::format_rfc3339_seconds(built).to_string(),
        rustc: env!("MACRONODE_BUILD_RUSTC"),
        features: crate::roles::compiled_names(),
    }
}

impl std::fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.name, self.version)?;
        writeln!(f, "git sha:    {}", self.git_sha)?;
        writeln!(f, "built:      {}", self.build_time)?;
        writeln!(f, "rustc:      {}", self.rustc)?;
        write!(f, "features:   {}", self.features.join(", "))
    }
}
