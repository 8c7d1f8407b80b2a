//! Who may connect, and whom to dial: the static `overlay.peers` list and
//! the registry's `node` descriptors (DESIGN §9).
//!
//! The registry's versions are changes: a `node` descriptor in a later
//! version replaces the one with the same id from an earlier version (a new
//! key unpins the old one). The directory folds the versions it has not
//! seen yet whenever the registry's head moves — committed here, applied by
//! a follower, or synced from a peer.
//!
//! A node descriptor's `addrs` entries of the form `oap://IP:PORT` (TLS over
//! TCP) or `oap+quic://IP:PORT` (QUIC) are dialed, the first one that
//! parses; other entries (an HTTP gateway URL, a host name) are for other
//! readers and ignored here. This node's own descriptor is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ron_kernel::handles::DescriptorLog;
use ron_kernel::HandleError;

use crate::config::Transport;

/// Where and how to reach a peer.
pub type DialTarget = (SocketAddr, Transport);

/// The dialable address in a node descriptor's `addrs`, if any.
pub fn dial_target<'a>(addrs: impl IntoIterator<Item = &'a str>) -> Option<DialTarget> {
    addrs.into_iter().find_map(|a| {
        if let Some(rest) = a.strip_prefix("oap+quic://") {
            rest.parse().ok().map(|s| (s, Transport::Quic))
        } else if let Some(rest) = a.strip_prefix("oap://") {
            rest.parse().ok().map(|s| (s, Transport::Tcp))
        } else {
            None
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEntry {
    key: [u8; 32],
    dial: Option<DialTarget>,
}

/// The peers the registry names, folded up to `folded`.
#[derive(Debug, Default)]
pub struct Directory {
    /// This node's key: never pinned or dialed from the registry.
    own: [u8; 32],
    nodes: BTreeMap<String, NodeEntry>,
    folded: u64,
}

impl Directory {
    pub fn new(own: [u8; 32]) -> Self {
        Directory {
            own,
            ..Default::default()
        }
    }

    /// The registry version folded so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Applies one version's `node` descriptors `(id, public_key, addrs)`.
    pub fn fold_nodes<'a>(
        &mut self,
        version: u64,
        nodes: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    ) {
        for (id, public_key, addrs) in nodes {
            let Some(key) = crate::identity::parse_key_hex(public_key) else {
                // The registry validated it; a key that does not parse
                // here is left out rather than pinned wrongly.
                continue;
            };
            if key == self.own {
                self.nodes.remove(id);
                continue;
            }
            let dial = dial_target(addrs.iter().map(String::as_str));
            self.nodes.insert(id.to_owned(), NodeEntry { key, dial });
        }
        self.folded = version;
    }

    /// Folds the registry's versions after `folded()` up to its head;
    /// starts over when the head went back (a restored registry). True
    /// when the pinned or dialed set changed.
    pub fn refresh(&mut self, registry: &dyn DescriptorLog) -> Result<bool, HandleError> {
        let head = registry.head().version;
        let before = self.nodes.clone();
        if head < self.folded {
            self.nodes.clear();
            self.folded = 0;
        }
        for v in self.folded + 1..=head {
            // A follower that started from a checkpoint lacks early
            // versions; what it has is all there is to fold.
            let nodes = registry.nodes_at(v)?.unwrap_or_default();
            self.fold_nodes(
                v,
                nodes
                    .iter()
                    .map(|n| (n.id.as_str(), n.public_key.as_str(), &n.addrs[..])),
            );
        }
        Ok(self.nodes != before)
    }

    /// Keys the registry names.
    pub fn keys(&self) -> BTreeSet<[u8; 32]> {
        self.nodes.values().map(|n| n.key).collect()
    }

    /// Peers to keep a session with, by key.
    pub fn dial_targets(&self) -> BTreeMap<[u8; 32], DialTarget> {
        self.nodes
            .values()
            .filter_map(|n| n.dial.map(|d| (n.key, d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }

    #[test]
    fn only_oap_addresses_are_dialed() {
        assert_eq!(
            dial_target(["https://gw.example", "oap://127.0.0.1:9445"]),
            Some(("127.0.0.1:9445".parse().unwrap(), Transport::Tcp))
        );
        assert_eq!(
            dial_target(["oap+quic://[::1]:9445"]),
            Some(("[::1]:9445".parse().unwrap(), Transport::Quic))
        );
        assert_eq!(dial_target(["oap://node.example:9445", "10.0.0.1:1"]), None);
    }

    #[test]
    fn a_later_descriptor_replaces_the_earlier_key_and_our_own_is_skipped() {
        let own = [9u8; 32];
        let mut d = Directory::new(own);
        let addrs = ["oap://127.0.0.1:1".to_owned()];
        let own_hex = hex(9);
        let (k1, k2) = (hex(1), hex(2));
        d.fold_nodes(
            1,
            [
                ("a", k1.as_str(), &addrs[..]),
                ("me", own_hex.as_str(), &addrs[..]),
            ],
        );
        assert_eq!(d.keys(), BTreeSet::from([[1u8; 32]]));
        assert_eq!(d.dial_targets().len(), 1);
        d.fold_nodes(2, [("a", k2.as_str(), &[][..])]);
        assert_eq!(d.keys(), BTreeSet::from([[2u8; 32]]));
        assert!(d.dial_targets().is_empty());
        assert_eq!(d.folded(), 2);
    }
}
