//! What a config section declares about itself, so the host needs one
//! table entry per role and derives everything else.
//!
//! [`Reload`] says which keys take effect only at start. It is declared
//! with [`restart_keys!`] right under the section's struct, once: reload
//! derives both the keys it reports as "needs a restart" and the typed
//! copy that keeps their old values in force. Every other key is hot.
//!
//! [`RoleSection`] is a role's whole section: which role it configures,
//! its edge defaults, its checks, its listener and its redb layout.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::role::RoleName;
use crate::schema::Schema;

/// Which keys of a section need a restart.
pub trait Reload: Serialize {
    /// Restart-only keys; `["*"]` when the role reads its whole section
    /// once at start.
    const RESTART: &'static [&'static str];

    /// Puts `old`'s values back for every restart-only key.
    fn keep_restart_keys(&mut self, old: &Self);

    /// The restart-only keys (`section.key`) whose values differ between
    /// `old` and `self`.
    fn restart_changes(&self, section: &str, old: &Self) -> Vec<String> {
        changed_keys(section, old, self)
            .into_iter()
            .filter(|k| {
                let key = k
                    .strip_prefix(section)
                    .map_or(k.as_str(), |k| k.strip_prefix('.').unwrap_or(k));
                Self::RESTART.iter().any(|r| *r == "*" || *r == key)
            })
            .collect()
    }
}

/// The keys of `section` (one level down, e.g. `registry.quorum_m`, or
/// `overlay.peer` for any of its sub-keys) whose values differ; for the
/// top level (`section` empty) the bare keys.
pub fn changed_keys<T: Serialize + ?Sized>(section: &str, old: &T, new: &T) -> Vec<String> {
    use serde_json::Value;
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    if section.is_empty() {
                        k.clone()
                    } else {
                        format!("{section}.{k}")
                    }
                })
                .collect()
        }
        (Ok(a), Ok(b)) if a == b => Vec::new(),
        _ => vec![section.to_owned()],
    }
}

/// Declares a section's restart-only keys (`restart_keys!(T { a, b })`),
/// or that the whole section is read once at start
/// (`restart_keys!(T: all)`), or that every key is hot
/// (`restart_keys!(T {})`).
#[macro_export]
macro_rules! restart_keys {
    ($t:ty : all) => {
        impl $crate::section::Reload for $t {
            const RESTART: &'static [&'static str] = &["*"];
            fn keep_restart_keys(&mut self, old: &Self) {
                *self = old.clone();
            }
        }
    };
    ($t:ty { $($key:ident),* $(,)? }) => {
        impl $crate::section::Reload for $t {
            const RESTART: &'static [&'static str] = &[$(stringify!($key)),*];
            #[allow(unused_variables)] // a section with no restart-only key
            fn keep_restart_keys(&mut self, old: &Self) {
                $(self.$key = old.$key.clone();)*
            }
        }
    };
}

/// A role's config section (`[storage]`, `[overlay]`, …).
pub trait RoleSection:
    Reload + Clone + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The role this section configures.
    const ROLE: RoleName;
    /// The layout of the redb file the role keeps under `data_dir`, if
    /// any: the host checks its version before starting the role, and
    /// `ctl migrate` upgrades it.
    const SCHEMA: Option<&'static Schema> = None;

    /// micronode's defaults.
    fn micro() -> Self {
        Self::default()
    }

    /// Checks what types alone cannot; pushes one line per problem.
    fn validate(&self, _errs: &mut Vec<String>) {}

    /// The listener the host binds for the role before its first start;
    /// `fronted` when omnigate runs in the same process.
    fn listen_addr(&self, fronted: bool) -> Option<SocketAddr>;
}

/// The listener of a downstream role's own HTTP API (storage, index,
/// mailbox): bound only when omnigate is not in this process to front
/// it, or when `serve_remote` asks for it.
pub fn own_api(addr: SocketAddr, serve_remote: bool, fronted: bool) -> Option<SocketAddr> {
    (!fronted || serve_remote).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default, Serialize)]
    struct S {
        addr: u16,
        cap: u32,
    }
    crate::restart_keys!(S { addr });

    #[test]
    fn restart_keys_are_reported_and_kept() {
        let old = S { addr: 1, cap: 1 };
        let mut new = S { addr: 2, cap: 2 };
        assert_eq!(new.restart_changes("s", &old), vec!["s.addr".to_owned()]);
        new.keep_restart_keys(&old);
        assert_eq!((new.addr, new.cap), (1, 2));
    }
}
