//! The topology builder: which roles exist in this binary, which the config
//! asks for, which listeners each needs, and how to start each one. Start-up
//! and reload both go through here (one place builds the set of roles).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ron_kernel::{RoleContext, RoleResult};

use crate::config::NodeConfig;

/// Every production role name, compiled in or not, in start order
/// (downstreams before the roles that call them).
pub const ALL_ROLES: &[&str] = &[
    "storage", "index", "mailbox", "registry", "overlay", "omnigate",
];

/// Roles compiled into this binary (production roles, then test roles).
pub fn compiled() -> &'static [&'static str] {
    &[
        #[cfg(feature = "storage")]
        "storage",
        #[cfg(feature = "index")]
        "index",
        #[cfg(feature = "mailbox")]
        "mailbox",
        #[cfg(feature = "registry")]
        "registry",
        #[cfg(feature = "overlay")]
        "overlay",
        #[cfg(feature = "omnigate")]
        "omnigate",
        #[cfg(feature = "test-roles")]
        "testrole",
    ]
}

/// Production roles compiled in: what runs when no role list is given.
pub fn default_roles() -> Vec<&'static str> {
    compiled()
        .iter()
        .copied()
        .filter(|r| ALL_ROLES.contains(r))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RoleSelectError {
    #[error("role `{role}` is not compiled into this binary; rebuild with `--features {role}` (compiled roles: {compiled})")]
    NotCompiled { role: String, compiled: String },
    #[error("unknown role `{role}`; known roles: {known} (compiled in: {compiled})")]
    Unknown {
        role: String,
        known: String,
        compiled: String,
    },
    #[error("role `{0}` is listed twice")]
    Duplicate(String),
}

/// Resolves a requested role list (empty = defaults) into compiled role
/// names in start order.
pub fn select(requested: &[String]) -> Result<Vec<&'static str>, RoleSelectError> {
    if requested.is_empty() {
        return Ok(default_roles());
    }
    let compiled_list = compiled().join(", ");
    let mut picked = Vec::new();
    for raw in requested {
        let name = raw.trim();
        if let Some(r) = compiled().iter().find(|r| **r == name) {
            if picked.contains(r) {
                return Err(RoleSelectError::Duplicate(name.to_owned()));
            }
            picked.push(*r);
        } else if ALL_ROLES.contains(&name) || name == "testrole" {
            let role = if name == "testrole" {
                "test-roles"
            } else {
                name
            };
            return Err(RoleSelectError::NotCompiled {
                role: role.to_owned(),
                compiled: compiled_list,
            });
        } else {
            return Err(RoleSelectError::Unknown {
                role: name.to_owned(),
                known: ALL_ROLES.join(", "),
                compiled: compiled_list,
            });
        }
    }
    picked.sort_by_key(|r| compiled().iter().position(|c| c == r));
    Ok(picked)
}

type StartFn =
    dyn Fn(RoleContext) -> Pin<Box<dyn Future<Output = RoleResult> + Send>> + Send + Sync;

/// One role as the supervisor runs it.
pub struct RoleSpec {
    pub name: &'static str,
    /// Listeners the host binds before the first start: (name, address).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    pub start: Arc<StartFn>,
    /// Creates the role's metric series at their zero values.
    pub init_series: fn(),
    /// The layout of the redb file the role keeps under `data_dir`, if
    /// any: the host checks its version before starting the role, and
    /// `ctl migrate` upgrades it.
    pub schema: Option<&'static ron_kernel::schema::Schema>,
}

impl RoleSpec {
    #[allow(dead_code)] // unused in a build with no role that keeps a file
    fn with_schema(mut self, schema: &'static ron_kernel::schema::Schema) -> Self {
        self.schema = Some(schema);
        self
    }
}

/// Per-role live config cells, so reload can swap each role's section.
#[derive(Clone, Default)]
pub struct LiveSections {
    #[cfg(feature = "omnigate")]
    pub omnigate: Option<ron_kernel::Live<ron_omnigate::OmnigateConfig>>,
    #[cfg(feature = "overlay")]
    pub overlay: Option<ron_kernel::Live<ron_overlay::OverlayConfig>>,
    #[cfg(feature = "registry")]
    pub registry: Option<ron_kernel::Live<ron_registry::RegistryConfig>>,
    #[cfg(feature = "storage")]
    pub storage: Option<ron_kernel::Live<ron_storage::StorageConfig>>,
    #[cfg(feature = "index")]
    pub index: Option<ron_kernel::Live<ron_index::IndexConfig>>,
    #[cfg(feature = "mailbox")]
    pub mailbox: Option<ron_kernel::Live<ron_mailbox::MailboxConfig>>,
    #[cfg(feature = "test-roles")]
    pub testrole: Option<ron_kernel::Live<crate::testrole::TestRoleConfig>>,
}

impl LiveSections {
    /// Swaps every running role's section to the one in `cfg`.
    pub fn store(&self, cfg: &NodeConfig) {
        #[cfg(feature = "omnigate")]
        if let Some(l) = &self.omnigate {
            l.store(cfg.omnigate.clone());
        }
        #[cfg(feature = "overlay")]
        if let Some(l) = &self.overlay {
            l.store(cfg.overlay.clone());
        }
        #[cfg(feature = "registry")]
        if let Some(l) = &self.registry {
            l.store(cfg.registry.clone());
        }
        #[cfg(feature = "storage")]
        if let Some(l) = &self.storage {
            l.store(cfg.storage.clone());
        }
        #[cfg(feature = "index")]
        if let Some(l) = &self.index {
            l.store(cfg.index.clone());
        }
        #[cfg(feature = "mailbox")]
        if let Some(l) = &self.mailbox {
            l.store(cfg.mailbox.clone());
        }
        #[cfg(feature = "test-roles")]
        if let Some(l) = &self.testrole {
            l.store(cfg.testrole.clone());
        }
        let _ = cfg;
    }
}

#[allow(dead_code)] // unused only in a build with no role compiled in
fn spec<C, F, Fut>(
    name: &'static str,
    listeners: Vec<(&'static str, SocketAddr)>,
    live: ron_kernel::Live<C>,
    run: F,
    init_series: fn(),
) -> RoleSpec
where
    C: Send + Sync + 'static,
    F: Fn(RoleContext, ron_kernel::Live<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RoleResult> + Send + 'static,
{
    RoleSpec {
        name,
        listeners,
        start: Arc::new(move |ctx| Box::pin(run(ctx, live.clone()))),
        init_series,
        schema: None,
    }
}

/// The listener of a downstream role's own HTTP API: bound only when
/// omnigate is not in this process to front it, or when asked to.
#[allow(dead_code)] // unused only in a build without storage, index and mailbox
fn own_api(
    name: &'static str,
    addr: SocketAddr,
    serve_remote: bool,
    fronted: bool,
) -> Vec<(&'static str, SocketAddr)> {
    if !fronted || serve_remote {
        vec![(name, addr)]
    } else {
        Vec::new()
    }
}

/// Builds the role specs for `names` from `cfg`, and the live cells reload
/// will update.
#[allow(unused_mut, unused_variables)] // a build with no role compiled in
pub fn build(names: &[&'static str], cfg: &NodeConfig) -> (Vec<RoleSpec>, LiveSections) {
    #[allow(unused_mut)]
    let mut live = LiveSections::default();
    let mut specs = Vec::new();
    #[allow(unused_variables)]
    let fronted = names.contains(&"omnigate");
    for name in names {
        match *name {
            #[cfg(feature = "storage")]
            "storage" => {
                let l = ron_kernel::Live::new(cfg.storage.clone());
                live.storage = Some(l.clone());
                let ls = own_api(
                    "storage",
                    cfg.storage.addr,
                    cfg.storage.serve_remote,
                    fronted,
                );
                specs.push(
                    spec("storage", ls, l, ron_storage::run, ron_storage::init_series)
                        .with_schema(&ron_storage::store::SCHEMA),
                );
            }
            #[cfg(feature = "index")]
            "index" => {
                let l = ron_kernel::Live::new(cfg.index.clone());
                live.index = Some(l.clone());
                let ls = own_api("index", cfg.index.addr, cfg.index.serve_remote, fronted);
                specs.push(
                    spec("index", ls, l, ron_index::run, ron_index::init_series)
                        .with_schema(&ron_index::store::SCHEMA),
                );
            }
            #[cfg(feature = "mailbox")]
            "mailbox" => {
                let l = ron_kernel::Live::new(cfg.mailbox.clone());
                live.mailbox = Some(l.clone());
                let ls = own_api(
                    "mailbox",
                    cfg.mailbox.addr,
                    cfg.mailbox.serve_remote,
                    fronted,
                );
                specs.push(
                    spec("mailbox", ls, l, ron_mailbox::run, ron_mailbox::init_series)
                        .with_schema(&ron_mailbox::store::SCHEMA),
                );
            }
            #[cfg(feature = "registry")]
            "registry" => {
                let l = ron_kernel::Live::new(cfg.registry.clone());
                live.registry = Some(l.clone());
                specs.push(
                    spec(
                        "registry",
                        vec![("registry", cfg.registry.addr)],
                        l,
                        ron_registry::run,
                        ron_registry::init_series,
                    )
                    .with_schema(&ron_registry::log::SCHEMA),
                );
            }
            #[cfg(feature = "overlay")]
            "overlay" => {
                let l = ron_kernel::Live::new(cfg.overlay.clone());
                live.overlay = Some(l.clone());
                specs.push(spec(
                    "overlay",
                    vec![("overlay", cfg.overlay.addr)],
                    l,
                    ron_overlay::run,
                    ron_overlay::init_series,
                ));
            }
            #[cfg(feature = "omnigate")]
            "omnigate" => {
                let l = ron_kernel::Live::new(cfg.omnigate.clone());
                live.omnigate = Some(l.clone());
                specs.push(spec(
                    "omnigate",
                    vec![("omnigate", cfg.omnigate.addr)],
                    l,
                    ron_omnigate::run,
                    ron_omnigate::init_series,
                ));
            }
            #[cfg(feature = "test-roles")]
            "testrole" => {
                let l = ron_kernel::Live::new(cfg.testrole.clone());
                live.testrole = Some(l.clone());
                specs.push(spec(
                    "testrole",
                    vec![("testrole", cfg.testrole.addr)],
                    l,
                    crate::testrole::run,
                    || {},
                ));
            }
            other => {
                // `select` only yields compiled names, each with an arm above.
                tracing::error!(role = other, "no builder for role; skipped");
            }
        }
    }
    (specs, live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_request_means_every_compiled_production_role() {
        let all = select(&[]).unwrap();
        assert!(!all.contains(&"testrole"));
        assert_eq!(all, default_roles());
    }

    #[test]
    fn unknown_and_duplicate_roles_are_refused() {
        let e = select(&["nosuch".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown role `nosuch`"), "{e}");
        assert!(e.contains("known roles"), "{e}");
        if let Some(r) = compiled().first() {
            let e = select(&[r.to_string(), r.to_string()]).unwrap_err();
            assert!(matches!(e, RoleSelectError::Duplicate(_)));
        }
    }
}
