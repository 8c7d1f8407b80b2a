//! What the host hands every role when it starts it: `RoleContext`.
//!
//! Invariant: a role reaches the rest of the node only through its context
//! (bus, readiness, shutdown token, pre-bound listeners, live config) and the
//! typed handles other roles publish; never through another role's internals.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::http::BoxError;
use crate::listener::{BoundAddr, HttpListener, StdListener};
use crate::readiness::RoleReadiness;

/// What a role's `run` returns. An `Err` (or a panic, or an `Ok` before
/// shutdown) is a crash: the supervisor restarts the role with backoff.
pub type RoleResult = Result<(), BoxError>;

/// A config value that reload can swap while readers keep going: `load()` is
/// a lock-free snapshot; a reader holds its snapshot for as long as it likes.
#[derive(Debug)]
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(value)))
    }

    pub fn load(&self) -> Arc<T> {
        self.0.load_full()
    }

    pub fn store(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

/// Node-wide settings every role may read.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub data_dir: PathBuf,
    pub amnesia: bool,
    pub read_only: bool,
    pub drain_deadline: Duration,
    pub header_read_timeout: Duration,
    /// Whole request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Who may write: `auth.write_tokens` merged with the token file that
    /// `ronctl cap rotate` keeps; with no token at all, loopback peers.
    pub write_cap: crate::cap::Capability,
}

impl NodeSettings {
    /// Whether a request may write: a valid write token, or — while the
    /// capability lets loopback through — a loopback peer.
    pub fn may_write(&self, peer: std::net::SocketAddr, authorization: Option<&[u8]>) -> bool {
        self.write_cap.allows(
            std::time::SystemTime::now(),
            peer.ip().to_canonical().is_loopback(),
            authorization,
        )
    }
}

/// Listening sockets the host bound for a role before starting it. The host
/// keeps the originals so a restarted role gets the same port back, and
/// connections that arrive during a restart wait in the backlog.
#[derive(Debug, Clone, Default)]
pub struct RoleListeners {
    slots: BTreeMap<String, Arc<Slot>>,
}

/// The host's copy of a bound socket. `close` drops it so that, once the
/// role's own accept loop has stopped, the port refuses new connections
/// instead of queueing them in a backlog nobody will read.
#[derive(Debug)]
struct Slot {
    addr: BoundAddr,
    socket: Mutex<Option<StdListener>>,
}

impl RoleListeners {
    pub fn insert(&mut self, name: &str, listener: StdListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let addr = listener.addr()?;
        self.slots.insert(
            name.to_owned(),
            Arc::new(Slot {
                addr,
                socket: Mutex::new(Some(listener)),
            }),
        );
        Ok(())
    }

    pub fn insert_tcp(&mut self, name: &str, listener: std::net::TcpListener) -> io::Result<()> {
        self.insert(name, StdListener::Tcp(listener))
    }

    /// Where listener `name` is bound, if the host bound it.
    pub fn addr(&self, name: &str) -> Option<&BoundAddr> {
        self.slots.get(name).map(|s| &s.addr)
    }

    /// The TCP address of listener `name` (None for none or a Unix socket).
    pub fn tcp_addr(&self, name: &str) -> Option<SocketAddr> {
        match self.addr(name)? {
            BoundAddr::Tcp(a) => Some(*a),
            BoundAddr::Unix(_) => None,
        }
    }

    /// Drops the host's copies of every socket (at shutdown).
    pub fn close(&self) {
        for slot in self.slots.values() {
            slot.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    fn dup(&self, name: &str) -> io::Result<StdListener> {
        let slot = self.slots.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no listener named {name:?} was bound for this role"),
            )
        })?;
        let guard = slot.socket.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(l) => l.try_clone(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("listener {name:?} is closed (node shutting down)"),
            )),
        }
    }

    /// A tokio TCP listener on the pre-bound socket `name` (for the
    /// overlay, which speaks TLS and QUIC to other hosts). Must be called
    /// from inside the runtime.
    pub fn tcp(&self, name: &str) -> io::Result<tokio::net::TcpListener> {
        match self.dup(name)? {
            StdListener::Tcp(l) => tokio::net::TcpListener::from_std(l),
            StdListener::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listener {name:?} is a Unix socket; it needs TCP"),
            )),
        }
    }

    /// An HTTP plane's listener `name`, TCP or Unix as the host bound it.
    /// Must be called from inside the runtime.
    pub fn http(&self, name: &str) -> io::Result<HttpListener> {
        HttpListener::from_std(self.dup(name)?)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }
}

/// Everything a role gets from the host.
#[derive(Clone)]
pub struct RoleContext {
    pub name: crate::RoleName,
    pub bus: Bus,
    pub ready: RoleReadiness,
    /// Fires when the node shuts down: stop accepting, finish in-flight work
    /// within `settings.drain_deadline`, return `Ok(())`.
    pub shutdown: CancellationToken,
    pub listeners: RoleListeners,
    pub settings: Live<NodeSettings>,
    /// Handles the roles of this process publish for each other.
    pub handles: crate::handles::Handles,
    /// Every role this process runs (this one included).
    pub node_roles: Arc<[crate::RoleName]>,
}

impl std::fmt::Debug for RoleContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleContext")
            .field("name", &self.name)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl RoleContext {
    /// Serves `handler` on this role's own listener `name`, when the host
    /// bound one (storage, index and mailbox have one only when omnigate is
    /// not in the process, or `serve_remote` is set).
    pub fn serve_own_listener(
        &self,
        name: &'static str,
        handler: Arc<dyn crate::http::Handler>,
    ) -> io::Result<Option<tokio::task::JoinHandle<()>>> {
        if self.listeners.addr(name).is_none() {
            return Ok(None);
        }
        let listener = self.listeners.http(name)?;
        Ok(Some(tokio::spawn(crate::http::serve(
            listener,
            handler,
            self.shutdown.clone(),
            self.serve_options(name),
        ))))
    }

    /// Until shutdown, runs `probe` on the blocking pool every `every` (and
    /// at once): the role is ready while it returns true, and unready with
    /// `what` otherwise.
    pub async fn ready_while(
        &self,
        every: Duration,
        what: &'static str,
        probe: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        self.ready_unless(every, move || (!probe()).then(|| what.to_owned()))
            .await
    }

    /// Like `ready_while`, with the reason coming from the probe: `None`
    /// is ready, `Some(reason)` unready for that reason.
    pub async fn ready_unless(
        &self,
        every: Duration,
        probe: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) {
        let probe = Arc::new(probe);
        let mut tick = crate::ReadyTick::new(every);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let p = probe.clone();
                    let unready = tokio::task::spawn_blocking(move || p())
                        .await
                        .unwrap_or_else(|e| Some(format!("readiness probe failed: {e}")));
                    match unready {
                        None => {
                            self.ready.set_ready();
                            tick.settled();
                        }
                        Some(why) => self.ready.set_unready(why),
                    }
                }
            }
        }
    }

    /// The serving options for one of this role's listeners, from the live
    /// node settings.
    pub fn serve_options(&self, listener: &'static str) -> crate::http::ServeOptions {
        let s = self.settings.load();
        let mut o = crate::http::ServeOptions::new(listener);
        o.drain_deadline = s.drain_deadline;
        o.header_read_timeout = s.header_read_timeout;
        o
    }
}
