//! Typed handles roles publish for each other: how omnigate reaches the
//! storage, index and mailbox running in the same process without going
//! through HTTP or their listeners.
//!
//! A role publishes `Arc<T>` once it is open for business; the supervisor
//! withdraws everything a role published when its attempt ends, so a caller
//! never keeps using the handle of a crashed role (and the role's restart
//! can reopen its store). Reads are lock-free snapshots; publishing is rare.
//!
//! Invariant: at most one handle per type; the latest publisher wins.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

#[derive(Clone)]
struct Entry {
    owner: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

/// The node's handle registry (cheap to clone; every clone is the same
/// registry).
#[derive(Clone, Default)]
pub struct Handles {
    map: Arc<ArcSwap<HashMap<TypeId, Entry>>>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owners: Vec<&str> = self.map.load().values().map(|e| e.owner).collect();
        f.debug_struct("Handles").field("owners", &owners).finish()
    }
}

impl Handles {
    /// Publishes `value` as the handle of type `T`, owned by role `owner`.
    pub fn publish<T: Any + Send + Sync>(&self, owner: &'static str, value: Arc<T>) {
        let entry = Entry { owner, value };
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(TypeId::of::<T>(), entry.clone());
            m
        });
    }

    /// The current handle of type `T`, if its role is up.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let m = self.map.load();
        let e = m.get(&TypeId::of::<T>())?;
        e.value.clone().downcast::<T>().ok()
    }

    /// Withdraws every handle `owner` published (its attempt ended).
    pub fn withdraw(&self, owner: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|_, e| e.owner != owner);
            m
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Store(u32);

    #[test]
    fn publish_get_withdraw() {
        let h = Handles::default();
        assert!(h.get::<Store>().is_none());
        h.publish("storage", Arc::new(Store(7)));
        assert_eq!(h.clone().get::<Store>().map(|s| s.0), Some(7));
        h.withdraw("index");
        assert!(h.get::<Store>().is_some());
        h.withdraw("storage");
        assert!(h.get::<Store>().is_none());
    }
}

/// What the overlay publishes so omnigate can fetch an object it does not
/// have from peers (without depending on the overlay crate): the future
/// resolves once the object is verified against its address and stored
/// locally.
#[derive(Clone)]
pub struct PeerFetch(
    #[allow(clippy::type_complexity)]
    pub  Arc<
        dyn Fn(
                crate::ContentAddress,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for PeerFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFetch")
    }
}

/// What the index publishes so that storage can tell which objects a name
/// points to (without depending on the index crate): an amnesia store
/// evicts to make room, but never an object a current name points to.
/// The function reads the index's committed names (a blocking call).
#[derive(Clone)]
pub struct NamedAddresses(
    #[allow(clippy::type_complexity)]
    pub  Arc<
        dyn Fn() -> Result<std::collections::HashSet<crate::ContentAddress>, String> + Send + Sync,
    >,
);

impl std::fmt::Debug for NamedAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NamedAddresses")
    }
}
