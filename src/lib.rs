//! The macronode host: CLI, config assembly, role wiring, supervisor, and the
//! health and admin planes. Roles live in their own crates under `roles/`;
//! what they share lives in `crates/kernel`.

pub mod caps;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod ctl_migrate;
pub mod ctl_ops;
#[cfg(feature = "registry")]
pub mod ctl_registry;
#[cfg(feature = "storage")]
pub mod ctl_storage;
pub mod doctor;
pub mod logging;
pub mod node;
pub mod planes;
pub mod probe;
pub mod roles;
pub mod supervisor;
#[cfg(feature = "test-roles")]
pub mod testrole;
pub mod version;
