//! `ctl migrate ROLE|all`: the schema version of each role's redb file,
//! reported and upgraded offline (`ron_kernel::schema`). The node must be
//! stopped: redb's lock refuses a file a running node holds, and that
//! refusal is reported as such.

use std::path::PathBuf;

use argh::FromArgs;
use ron_kernel::schema::{self, Schema};
use serde_json::Value;

use crate::config::ConfigSource;
use crate::ctl::{CtlError, Out};
use crate::ctl_ops::{compiled_role, load_config, profile};

#[derive(FromArgs, Debug)]
/// Report and upgrade the schema version of a role's redb file, with the
/// node stopped. ROLE: storage, index, mailbox, registry (svc-NAME too) or
/// all. Exit 1 if a file is newer than this build or in use.
#[argh(subcommand, name = "migrate")]
pub struct MigrateCmd {
    /// the role whose file to migrate, or all
    #[argh(positional)]
    pub role: String,
    /// config file whose data_dir holds the files (RON_CONFIG wins)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// the data dir (default: the config's data_dir)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// the profile whose defaults apply (macronode or micronode)
    #[argh(option, default = "String::from(\"macronode\")")]
    pub profile: String,
    /// report only; change nothing
    #[argh(switch)]
    pub dry_run: bool,
}

/// Every compiled role that keeps a redb file, with its layout.
fn schemas(cfg: &crate::config::NodeConfig) -> Vec<(&'static str, &'static Schema)> {
    let (specs, _) = crate::roles::build(crate::roles::COMPILED, cfg);
    specs
        .iter()
        .filter_map(|s| s.schema.map(|schema| (s.name.as_str(), schema)))
        .collect()
}

pub(crate) fn run(out: Out, c: MigrateCmd) -> Result<(), CtlError> {
    let src = ConfigSource::new(profile(&c.profile)?, c.config, Default::default());
    let cfg = load_config(&src)?;
    let all = schemas(&cfg);
    let picked: Vec<(&str, &Schema)> = if c.role == "all" {
        all
    } else {
        let name = compiled_role(&c.role)?;
        let found: Vec<_> = all.into_iter().filter(|(n, _)| *n == name).collect();
        if found.is_empty() {
            return Err(CtlError::Usage(format!(
                "{name} keeps no redb file; roles with one: storage, index, mailbox, registry"
            )));
        }
        found
    };
    let data_dir = match c.data_dir {
        Some(d) => d,
        None if cfg.amnesia => {
            let v = serde_json::json!({"amnesia": true, "files": []});
            out.emit(&v, || {
                "amnesia: this config keeps nothing on disk; nothing to migrate".into()
            });
            return Ok(());
        }
        None => cfg.data_dir.clone(),
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (name, schema) in picked {
        let path = data_dir.join(schema.file);
        let mut row = serde_json::json!({
            "role": name, "path": path.display().to_string(), "to": schema.current(),
        });
        if !path.exists() {
            row["status"] = "no_file".into();
            rows.push(row);
            continue;
        }
        let result = schema::open_offline(&path, schema)
            .and_then(|db| schema::migrate(&db, schema, !c.dry_run));
        match result {
            Ok(m) => {
                row["from"] = m.from.into();
                row["status"] = if m.from.is_none_or(|v| v == m.to) {
                    "current"
                } else if m.upgraded {
                    "upgraded"
                } else {
                    "would_upgrade"
                }
                .into();
            }
            Err(e) => {
                row["status"] = "failed".into();
                row["error"] = e.to_string().into();
                failed.push(format!("{}: {e}", path.display()));
            }
        }
        rows.push(row);
    }
    let v = serde_json::json!({"files": rows, "dry_run": c.dry_run});
    out.emit(&v, || rows_text(&rows));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Failed(failed.join("\n")))
    }
}

fn rows_text(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| {
            let what = match r["status"].as_str().unwrap_or("") {
                "no_file" => "no file yet (the role creates it at version {to})".to_owned(),
                "current" => "schema {to}, current".to_owned(),
                "upgraded" => "schema {from} → {to}: upgraded".to_owned(),
                "would_upgrade" => "schema {from} → {to}: would upgrade (dry run)".to_owned(),
                _ => "failed: {error}".to_owned(),
            };
            let what = what
                .replace("{to}", &r["to"].to_string())
                .replace("{from}", &r["from"].to_string())
                .replace("{error}", r["error"].as_str().unwrap_or(""));
            format!(
                "{:<9} {}  {what}",
                r["role"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
