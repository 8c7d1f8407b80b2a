//! `ron-kernel`: what every macronode role shares.
//!
//! - [`address`]: [`ContentAddress`], `b3:<hex>`.
//! - [`alloc`]: allocator settings applied at start.
//! - [`bus`]: the broadcast bus of [`KernelEvent`]s.
//! - [`cap`]: write and admin capabilities, their token file and rotation.
//! - [`chaos`]: fault injection for the runbooks' drills (off unless enabled).
//! - [`context`]: [`RoleContext`], what the host hands a role.
//! - [`handles`]: the narrow handles roles publish for each other.
//! - [`role`]: [`RoleName`], the roles as a type.
//! - [`readiness`]: the truthful readiness board behind `/readyz`.
//! - [`metrics`]: the one place metric names live.
//! - [`problem`]: the one error envelope (problem+json).
//! - [`http`]: serving HTTP the same way on every listener.
//! - [`db`]: what a redb failure means (out of space or not), once.
//! - [`schema`]: schema versions of the roles' redb files, and migration.
//! - [`section`]: what a config section declares (role, restart-only keys).
//! - [`listener`]: the sockets HTTP planes accept on (TCP or Unix).
//! - [`memstore`]: the paged RAM backend redb runs on under amnesia.
//!
//! This crate never depends on a role crate.

pub mod address;
pub mod alloc;
pub mod bus;
pub mod cap;
pub mod chaos;
pub mod context;
pub mod db;
pub mod handles;
pub mod http;
pub mod listener;
pub mod memstore;
pub mod metrics;
pub mod outboard;
pub mod problem;
pub mod range;
pub mod readiness;
pub mod request;
pub mod role;
pub mod schema;
pub mod secret;
pub mod section;

pub use address::{AddressError, ContentAddress};
pub use bus::{Bus, BusMessage, BusReceiver, KernelEvent, OverflowWatch};
pub use context::{Live, NodeSettings, RoleContext, RoleListeners, RoleResult};
pub use handles::{HandleError, Handles};
pub use http::{BoxError, Routed};
pub use listener::{BoundAddr, HttpListener, StdListener};
pub use problem::Problem;
pub use readiness::{Readiness, ReadyTick, RoleReadiness, RoleState};
pub use role::RoleName;
pub use secret::Secret;
