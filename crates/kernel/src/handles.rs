//! Typed handles roles publish for each other, and what each one promises.
//!
//! A handle is a trait object declared here and implemented by the role
//! that owns it: [`Objects`] (storage), [`Names`] (index), [`Feeds`]
//! (mailbox), [`DescriptorLog`] (registry), [`PeerFetch`] and [`Peers`]
//! (overlay). A role crate depends on `ron-kernel` and never on another
//! role crate, so omnigate and the overlay cannot name a store type: the
//! compiler keeps the boundary (`tests/boundaries.rs` checks the
//! manifests).
//!
//! All handles have one shape: `Arc<dyn Trait>`, published once the role
//! is open for business and fetched with [`Handles::get`]. Each trait's
//! [`Handle`] impl names the role that owns it, so publishing needs no
//! name and the supervisor withdraws a role's handles by its
//! [`RoleName`] when its attempt ends: a caller never keeps using the
//! handle of a crashed role, and a withdrawn handle answers one typed
//! error, [`HandleError::Down`].
//!
//! Methods marked *blocking* touch a store: call them on the blocking pool
//! (`ron_kernel::request::blocking`).
//!
//! Invariant: at most one handle per trait; the latest publisher wins.
//! Reads are lock-free snapshots; publishing is rare.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::http::{ReqBody, Routed};
use crate::role::RoleName;
use crate::ContentAddress;

/// What a handle call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The role that owns the handle is not up (not started yet, or
    /// restarting after a crash).
    #[error("{0} is not up in this node right now")]
    Down(RoleName),
    /// The input was refused (a malformed or unverifiable artifact).
    #[error("{0}")]
    Refused(String),
    /// The owning role failed to do it (its store failed, a full disk).
    #[error("{0}")]
    Failed(String),
}

impl HandleError {
    /// A role's own error, rendered.
    pub fn failed(e: impl std::fmt::Display) -> Self {
        HandleError::Failed(e.to_string())
    }
}

pub type HandleResult<T> = Result<T, HandleError>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A trait object that can be published: names the role that owns it.
pub trait Handle: Send + Sync + 'static {
    const OWNER: RoleName;
}

#[derive(Clone)]
struct Entry {
    owner: RoleName,
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
        let owners: Vec<RoleName> = self.map.load().values().map(|e| e.owner).collect();
        f.debug_struct("Handles").field("owners", &owners).finish()
    }
}

impl Handles {
    /// Publishes `value` as the handle `H` (owned by `H::OWNER`).
    pub fn publish<H: ?Sized + Handle>(&self, value: Arc<H>) {
        let entry = Entry {
            owner: H::OWNER,
            value: Arc::new(value),
        };
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(TypeId::of::<H>(), entry.clone());
            m
        });
    }

    /// The current handle `H`, or `Down` while its role is not up.
    pub fn get<H: ?Sized + Handle>(&self) -> HandleResult<Arc<H>> {
        let m = self.map.load();
        m.get(&TypeId::of::<H>())
            .and_then(|e| e.value.downcast_ref::<Arc<H>>())
            .cloned()
            .ok_or(HandleError::Down(H::OWNER))
    }

    /// Withdraws every handle `owner` published (its attempt ended).
    pub fn withdraw(&self, owner: RoleName) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|_, e| e.owner != owner);
            m
        });
    }
}

/// Serving a role's HTTP API in-process (omnigate calls it instead of
/// going over a socket). Implemented with [`crate::serve_http_with!`].
pub trait HttpApi: Send + Sync {
    fn serve(self: Arc<Self>, req: http::Request<ReqBody>, peer: SocketAddr) -> BoxFuture<Routed>;
}

/// `serve_http_with!(Api, handler)`: `Api`'s [`HttpApi`] is
/// `handler(Arc<Api>, request, peer)`, the same function its own listener
/// serves.
#[macro_export]
macro_rules! serve_http_with {
    ($t:ty, $handler:path) => {
        impl $crate::handles::HttpApi for $t {
            fn serve(
                self: ::std::sync::Arc<Self>,
                req: ::http::Request<$crate::http::ReqBody>,
                peer: ::std::net::SocketAddr,
            ) -> ::std::pin::Pin<
                ::std::boxed::Box<dyn ::std::future::Future<Output = $crate::Routed> + Send>,
            > {
                ::std::boxed::Box::pin($handler(self, req, peer))
            }
        }
    };
}

/// An object's verified pieces, in order, read lazily.
pub type Pieces = Box<dyn Iterator<Item = HandleResult<Bytes>> + Send>;

/// Content-addressed objects (storage).
pub trait Objects: HttpApi {
    /// An object's size, `None` when it is not here. Blocking.
    fn size(&self, address: &ContentAddress) -> HandleResult<Option<u64>>;
    /// The object's whole size and a reader of its verified pieces
    /// (`range` of it, or all), `None` when it is not here. Nothing is
    /// read before the iterator is. Blocking.
    fn read(
        &self,
        address: &ContentAddress,
        range: Option<Range<u64>>,
    ) -> HandleResult<Option<(u64, Pieces)>>;
    /// The object looked up once, to read several ranges of it without
    /// looking its record up again for each (a ranged answer to a peer
    /// reads its proof's edge groups and then its runs); `None` when it is
    /// not here. Blocking.
    fn open(&self, address: &ContentAddress) -> HandleResult<Option<Box<dyn OpenObject>>>;
    /// A writer that hashes and stores what it is given; nothing is
    /// visible until `finish`, and a dropped writer leaves nothing behind.
    fn writer(&self) -> Box<dyn ObjectSink>;
    /// The object's BLAKE3 tree above its 64 KiB groups (what proves a
    /// range of it to a peer), `None` when it is not here. Blocking; free
    /// for objects whose chunk ids are the tree's leaves, one verified read
    /// of the object otherwise.
    fn tree(&self, address: &ContentAddress) -> HandleResult<Option<Arc<crate::outboard::Tree>>>;
}

impl Handle for dyn Objects {
    const OWNER: RoleName = RoleName::Storage;
}

/// An object found by [`Objects::open`].
pub trait OpenObject: Send {
    fn size(&self) -> u64;
    /// A reader of bytes `range` (within the object) as verified pieces;
    /// nothing is read before the iterator is. A piece of an object
    /// deleted since it was opened is an error. Blocking.
    fn read(&self, range: Range<u64>) -> HandleResult<Pieces>;
}

/// An object being written (see [`Objects::writer`]). Blocking.
pub trait ObjectSink: Send {
    fn write(&mut self, data: &[u8]) -> HandleResult<()>;
    /// The next 64 KiB group of the object (or its last, shorter one),
    /// whose tree hash `hash` the caller already checked against the
    /// address (`outboard::Expect::verify`): a store keyed by those hashes
    /// keeps it without hashing it again.
    fn write_verified(&mut self, data: bytes::Bytes, hash: [u8; 32]) -> HandleResult<()> {
        let _ = hash;
        self.write(&data)
    }
    /// The address of what was written so far.
    fn address(&self) -> ContentAddress;
    /// Commits the object; returns its address.
    fn finish(self: Box<Self>) -> HandleResult<ContentAddress>;
}

/// The part of a name's record other roles read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    pub address: ContentAddress,
    pub version: u64,
    pub content_type: Option<String>,
    pub feed: Option<String>,
}

/// Names → addresses (index).
pub trait Names: HttpApi {
    /// A name's current record; `None` when it is unset or not a valid
    /// name. Blocking.
    fn lookup(&self, name: &str) -> HandleResult<Option<NameRecord>>;
    /// Every address a current name points to (an amnesia store never
    /// evicts those). Blocking.
    fn named_addresses(&self) -> HandleResult<HashSet<ContentAddress>>;
}

impl Handle for dyn Names {
    const OWNER: RoleName = RoleName::Index;
}

/// Topics and their messages (mailbox).
pub trait Feeds: HttpApi {
    /// The newest `n` messages of `topic`, oldest first, as served.
    /// Blocking.
    fn latest(&self, topic: &str, n: usize) -> HandleResult<Vec<serde_json::Value>>;
}

impl Handle for dyn Feeds {
    const OWNER: RoleName = RoleName::Mailbox;
}

/// The registry's head: its version and the payload hash at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHead {
    pub version: u64,
    pub payload_b3: String,
}

/// A node descriptor as a registry version carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDescriptor {
    pub id: String,
    pub public_key: String,
    pub addrs: Vec<String>,
}

/// The quorum-signed descriptor log (registry).
pub trait DescriptorLog: Send + Sync {
    /// The committed head (a snapshot; not blocking).
    fn head(&self) -> RegistryHead;
    /// Version `v`'s artifact as served, `None` when this log does not
    /// hold it (a follower that started from a checkpoint). Blocking.
    fn artifact_json(&self, version: u64) -> HandleResult<Option<Bytes>>;
    /// Applies an artifact another node sent, fully checked (chain,
    /// signatures, quorum). `Ok(false)` when this log already has that
    /// version; `Refused` when it does not verify. Blocking.
    fn apply_json(&self, artifact: &[u8]) -> HandleResult<bool>;
    /// The node descriptors version `v` carries, `None` when this log does
    /// not hold it. Blocking.
    fn nodes_at(&self, version: u64) -> HandleResult<Option<Vec<NodeDescriptor>>>;
}

impl Handle for dyn DescriptorLog {
    const OWNER: RoleName = RoleName::Registry;
}

/// Fetching an object this node lacks from peers (overlay).
pub trait PeerFetch: Send + Sync {
    /// Resolves once the object is verified against its address and
    /// stored locally.
    fn fetch(&self, address: ContentAddress) -> BoxFuture<HandleResult<()>>;
    /// Bytes `range` of an object (to its end when `range.end` is past
    /// it), fetched from peers and verified group by group as they arrive;
    /// nothing is stored. Resolves with the object's proved size and the
    /// range's bytes in order, as they verify (an `Err` ends them early).
    fn fetch_range(
        &self,
        address: ContentAddress,
        range: Range<u64>,
    ) -> BoxFuture<HandleResult<(u64, PeerBytes)>>;
}

/// The verified bytes of a [`PeerFetch::fetch_range`], in order.
pub type PeerBytes = tokio::sync::mpsc::Receiver<Result<bytes::Bytes, crate::http::BoxError>>;

impl Handle for dyn PeerFetch {
    const OWNER: RoleName = RoleName::Overlay;
}

/// The overlay's sessions, for the admin plane.
pub trait Peers: Send + Sync {
    /// `{"node_id": …, "peers": […]}`.
    fn status(&self) -> serde_json::Value;
}

impl Handle for dyn Peers {
    const OWNER: RoleName = RoleName::Overlay;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);

    impl DescriptorLog for Fixed {
        fn head(&self) -> RegistryHead {
            RegistryHead {
                version: self.0,
                payload_b3: String::new(),
            }
        }
        fn artifact_json(&self, _: u64) -> HandleResult<Option<Bytes>> {
            Ok(None)
        }
        fn apply_json(&self, _: &[u8]) -> HandleResult<bool> {
            Ok(false)
        }
        fn nodes_at(&self, _: u64) -> HandleResult<Option<Vec<NodeDescriptor>>> {
            Ok(None)
        }
    }

    #[test]
    fn publish_get_withdraw() {
        let h = Handles::default();
        assert_eq!(
            h.get::<dyn DescriptorLog>().err(),
            Some(HandleError::Down(RoleName::Registry))
        );
        h.publish::<dyn DescriptorLog>(Arc::new(Fixed(7)));
        let got = h
            .clone()
            .get::<dyn DescriptorLog>()
            .map(|r| r.head().version);
        assert_eq!(got, Ok(7));
        h.withdraw(RoleName::Index);
        assert!(h.get::<dyn DescriptorLog>().is_ok());
        h.withdraw(RoleName::Registry);
        let e = h.get::<dyn DescriptorLog>().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("registry is not up in this node right now")
        );
    }
}
