//! `macronode doctor`: checks the things that most often stop a node from
//! starting, and prints each with ok/fail.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigSource, NodeConfig};
use crate::roles;

pub struct Check {
    pub ok: bool,
    pub name: String,
    pub detail: String,
}

impl Check {
    fn new(ok: bool, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok,
            name: name.into(),
            detail: detail.into(),
        }
    }
}

/// Every listener the config would bind, by name.
pub fn planned_listeners(cfg: &NodeConfig) -> Vec<(&'static str, SocketAddr)> {
    let mut v = vec![("metrics", cfg.metrics.addr), ("admin", cfg.admin.addr)];
    if let Ok(names) = roles::select(&cfg.roles) {
        let (specs, _) = roles::build(&names, cfg);
        for s in specs {
            v.extend(s.listeners);
        }
    }
    v
}

pub fn run(src: &ConfigSource) -> Vec<Check> {
    let mut checks = Vec::new();
    let cfg = match src.load() {
        Ok(cfg) => {
            checks.push(Check::new(
                true,
                "config",
                crate::config::describe_source(src),
            ));
            cfg
        }
        Err(e) => {
            checks.push(Check::new(false, "config", e.to_string()));
            return checks;
        }
    };

    for (name, addr) in planned_listeners(&cfg) {
        let detail = match std::net::TcpListener::bind(addr) {
            Ok(_) => Check::new(true, format!("port {name}"), format!("{addr} is free")),
            Err(e) => Check::new(false, format!("port {name}"), format!("{addr}: {e}")),
        };
        checks.push(detail);
    }

    if cfg.amnesia {
        checks.push(Check::new(true, "data dir", "amnesia: nothing is written"));
    } else {
        checks.push(data_dir_check(&cfg));
        checks.extend(schema_checks(&cfg));
    }

    checks.push(clock_check());
    checks
}

/// Each selected role's redb file holds the schema version this build
/// reads (what the node checks before it starts the roles).
fn schema_checks(cfg: &NodeConfig) -> Vec<Check> {
    let Ok(names) = roles::select(&cfg.roles) else {
        return Vec::new();
    };
    let (specs, _) = roles::build(&names, cfg);
    specs
        .iter()
        .filter_map(|s| s.schema)
        .map(|schema| {
            let path = cfg.data_dir.join(schema.file);
            let name = format!("schema {}", schema.role);
            match ron_kernel::schema::preflight(&path, schema) {
                Ok(()) => Check::new(
                    true,
                    name,
                    format!("{}: version {} or new", path.display(), schema.current()),
                ),
                Err(e) => Check::new(false, name, format!("{}: {e}", path.display())),
            }
        })
        .collect()
}

fn data_dir_check(cfg: &NodeConfig) -> Check {
    let dir = &cfg.data_dir;
    let probe = dir.join(format!(".doctor-probe-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::new(true, "data dir", format!("{} is writable", dir.display())),
        Err(e) => Check::new(false, "data dir", format!("{}: {e}", dir.display())),
    }
}

fn clock_check() -> Check {
    let built = UNIX_EPOCH + Duration::from_secs(crate::version::build_unix_secs());
    let now = SystemTime::now();
    // A clock before the build (minus a day of slack for time zones and
    // reproducible-build stamps) or past 2100 is wrong; TLS and registry
    // expiry both depend on it.
    let floor = built
        .checked_sub(Duration::from_secs(86_400))
        .unwrap_or(UNIX_EPOCH);
    let ceiling = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    let shown = humantime::format_rfc3339_seconds(now);
    if now < floor {
        Check::new(
            false,
            "clock",
            format!("{shown} is before this binary was built"),
        )
    } else if now > ceiling {
        Check::new(false, "clock", format!("{shown} is past 2100"))
    } else {
        Check::new(true, "clock", shown.to_string())
    }
}
