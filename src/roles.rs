//! The table of roles, and the topology builder: which roles exist in this
//! binary, which the config asks for, which listeners each needs, and how
//! to start each one. Start-up and reload both go through here.
//!
//! Adding a role is one line in [`role_table!`]: its cargo feature, its
//! config section (the field and its type) and its crate. The crate
//! provides `run(ctx, live_section)` and `init_series()`, and its section
//! type implements `ron_kernel::section::RoleSection` (which role, edge
//! defaults, checks, listener, redb layout, restart-only keys). The config
//! struct, the live sections reload swaps, the compiled role list and the
//! builder are all generated from that one table.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ron_kernel::section::RoleSection;
use ron_kernel::{RoleContext, RoleName, RoleResult};

use crate::config::NodeConfig;

/// The one table of roles, in start order (downstreams before the roles
/// that call them): `"feature" field: SectionType => crate::path;`. It
/// hands the table to `$then!`, which generates code for every row.
macro_rules! role_table {
    ($then:ident) => {
        $then! {
            "storage"    storage:  ron_storage::StorageConfig         => ron_storage;
            "index"      index:    ron_index::IndexConfig             => ron_index;
            "mailbox"    mailbox:  ron_mailbox::MailboxConfig         => ron_mailbox;
            "registry"   registry: ron_registry::RegistryConfig       => ron_registry;
            "overlay"    overlay:  ron_overlay::OverlayConfig         => ron_overlay;
            "omnigate"   omnigate: ron_omnigate::OmnigateConfig       => ron_omnigate;
            "test-roles" testrole: crate::testrole::TestRoleConfig    => crate::testrole;
        }
    };
}
pub(crate) use role_table;

macro_rules! role_builders {
    ($($feat:literal $field:ident : $ty:ty => $($krate:ident)::+;)*) => {
        /// Roles compiled into this binary, in start order.
        pub const COMPILED: &[RoleName] = &[
            $(#[cfg(feature = $feat)] <$ty as RoleSection>::ROLE,)*
        ];

        /// Per-role live config cells, so reload can swap each role's
        /// section.
        #[derive(Clone, Default)]
        pub struct LiveSections {
            $(#[cfg(feature = $feat)] $field: Option<ron_kernel::Live<$ty>>,)*
        }

        impl LiveSections {
            /// Swaps every running role's section to the one in `cfg`.
            pub fn store(&self, cfg: &NodeConfig) {
                $(#[cfg(feature = $feat)]
                if let Some(l) = &self.$field {
                    l.store(cfg.$field.clone());
                })*
                let _ = cfg;
            }
        }

        /// The spec of role `name`, if it is compiled in.
        fn build_one(
            name: RoleName,
            cfg: &NodeConfig,
            fronted: bool,
            live: &mut LiveSections,
        ) -> Option<RoleSpec> {
            $(#[cfg(feature = $feat)]
            if name == <$ty as RoleSection>::ROLE {
                let l = ron_kernel::Live::new(cfg.$field.clone());
                live.$field = Some(l.clone());
                return Some(spec(
                    &cfg.$field,
                    fronted,
                    l,
                    $($krate)::+::run,
                    $($krate)::+::init_series,
                ));
            })*
            let _ = (name, cfg, fronted, live);
            None
        }
    };
}
role_table!(role_builders);

/// Production roles compiled in: what runs when no role list is given.
pub fn default_roles() -> Vec<RoleName> {
    COMPILED
        .iter()
        .copied()
        .filter(|r| RoleName::PRODUCTION.contains(r))
        .collect()
}

/// The compiled roles' names, for messages and `version`.
pub fn compiled_names() -> Vec<&'static str> {
    COMPILED.iter().map(|r| r.as_str()).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RoleSelectError {
    #[error("role `{role}` is not compiled into this binary; rebuild with `--features {feature}` (compiled roles: {compiled})")]
    NotCompiled {
        role: String,
        feature: &'static str,
        compiled: String,
    },
    #[error("unknown role `{role}`; known roles: {known} (compiled in: {compiled})")]
    Unknown {
        role: String,
        known: String,
        compiled: String,
    },
    #[error("role `{0}` is listed twice")]
    Duplicate(String),
}

/// Resolves a requested role list (empty = defaults) into compiled roles
/// in start order.
pub fn select(requested: &[String]) -> Result<Vec<RoleName>, RoleSelectError> {
    if requested.is_empty() {
        return Ok(default_roles());
    }
    let compiled = || compiled_names().join(", ");
    let mut picked = Vec::new();
    for raw in requested {
        let name = raw.trim();
        match RoleName::parse(name) {
            Some(r) if COMPILED.contains(&r) => {
                if picked.contains(&r) {
                    return Err(RoleSelectError::Duplicate(name.to_owned()));
                }
                picked.push(r);
            }
            Some(r) => {
                return Err(RoleSelectError::NotCompiled {
                    role: name.to_owned(),
                    feature: r.feature(),
                    compiled: compiled(),
                })
            }
            None => {
                let known: Vec<&str> = RoleName::PRODUCTION.iter().map(|r| r.as_str()).collect();
                return Err(RoleSelectError::Unknown {
                    role: name.to_owned(),
                    known: known.join(", "),
                    compiled: compiled(),
                });
            }
        }
    }
    picked.sort();
    Ok(picked)
}

type StartFn =
    dyn Fn(RoleContext) -> Pin<Box<dyn Future<Output = RoleResult> + Send>> + Send + Sync;

/// One role as the supervisor runs it.
pub struct RoleSpec {
    pub name: RoleName,
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

/// A role's spec from its section: everything but how to run it and its
/// series comes from the section's `RoleSection` impl.
pub fn spec<C, F, Fut>(
    section: &C,
    fronted: bool,
    live: ron_kernel::Live<C>,
    run: F,
    init_series: fn(),
) -> RoleSpec
where
    C: RoleSection,
    F: Fn(RoleContext, ron_kernel::Live<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RoleResult> + Send + 'static,
{
    let name = C::ROLE;
    RoleSpec {
        name,
        listeners: section
            .listen_addr(fronted)
            .map(|a| (name.as_str(), a))
            .into_iter()
            .collect(),
        start: Arc::new(move |ctx| Box::pin(run(ctx, live.clone()))),
        init_series,
        schema: C::SCHEMA,
    }
}

/// Builds the role specs for `names` from `cfg`, and the live cells reload
/// will update.
pub fn build(names: &[RoleName], cfg: &NodeConfig) -> (Vec<RoleSpec>, LiveSections) {
    let mut live = LiveSections::default();
    let fronted = names.contains(&RoleName::Omnigate);
    let specs = names
        .iter()
        .filter_map(|name| {
            let s = build_one(*name, cfg, fronted, &mut live);
            if s.is_none() {
                // `select` only yields compiled roles, each in the table.
                tracing::error!(role = name.as_str(), "no builder for role; skipped");
            }
            s
        })
        .collect();
    (specs, live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_request_means_every_compiled_production_role() {
        let all = select(&[]).unwrap();
        assert!(!all.contains(&RoleName::TestRole));
        assert_eq!(all, default_roles());
    }

    #[test]
    fn unknown_and_duplicate_roles_are_refused() {
        let e = select(&["nosuch".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown role `nosuch`"), "{e}");
        assert!(e.contains("known roles"), "{e}");
        if let Some(r) = COMPILED.first() {
            let e = select(&[r.to_string(), r.to_string()]).unwrap_err();
            assert!(matches!(e, RoleSelectError::Duplicate(_)));
        }
    }

    #[test]
    fn the_table_is_in_start_order() {
        let mut sorted = COMPILED.to_vec();
        sorted.sort();
        assert_eq!(sorted, COMPILED);
    }
}
