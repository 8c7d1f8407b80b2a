//! Truthful readiness: the node is ready only when its config is loaded, every
//! listener it needs is bound, the bus is subscribed, every role says it is
//! ready, and it is neither draining nor shutting down.
//!
//! Invariant: nothing here is held across an `.await`; every method takes the
//! lock, reads or writes plain data, and lets go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::listener::BoundAddr;

use serde::Serialize;

/// Where a role is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleState {
    Starting,
    Running,
    Restarting,
    Quarantined,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleStatus {
    pub state: RoleState,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub restarts: u64,
    /// Named readiness inputs the role reports (the overlay's
    /// `oap_parser_ready`, …); empty for most roles.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, bool>,
}

#[derive(Debug, Default)]
struct State {
    config_loaded: bool,
    bus_subscribed: bool,
    draining: bool,
    shutting_down: bool,
    /// listener name → bound address (None until bound)
    listeners: BTreeMap<String, Option<BoundAddr>>,
    roles: BTreeMap<String, RoleStatus>,
    /// Parts of a role that can be down while the role serves (the
    /// registry's write plane): reported, never gating readiness.
    planes: BTreeMap<String, PlaneReport>,
    /// The host has put every role it runs on the board: until then an
    /// empty role map would read as "every role ready".
    roles_registered: bool,
}

/// The node-wide readiness board. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    state: Arc<Mutex<State>>,
}

/// What `/readyz` renders.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub roles: BTreeMap<String, RoleReport>,
    pub missing: Vec<String>,
    /// `registry.write` and the like: shown, not counted in `ready`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub planes: BTreeMap<String, PlaneReport>,
}

/// One plane's state: whether it serves, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaneReport {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, bool>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // data is plain flags and maps that are valid after any single write.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_config_loaded(&self, v: bool) {
        self.lock().config_loaded = v;
    }

    pub fn set_bus_subscribed(&self, v: bool) {
        self.lock().bus_subscribed = v;
    }

    pub fn set_draining(&self, v: bool) {
        self.lock().draining = v;
    }

    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    pub fn set_shutting_down(&self) {
        self.lock().shutting_down = true;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Declares a listener the node needs before it can be ready.
    pub fn expect_listener(&self, name: &str) {
        self.lock().listeners.entry(name.to_owned()).or_insert(None);
    }

    pub fn listener_bound(&self, name: &str, addr: impl Into<BoundAddr>) {
        self.lock()
            .listeners
            .insert(name.to_owned(), Some(addr.into()));
    }

    /// Bound listeners by name (unbound ones are left out).
    pub fn bound_addrs(&self) -> BTreeMap<String, BoundAddr> {
        self.lock()
            .listeners
            .iter()
            .filter_map(|(k, v)| v.clone().map(|a| (k.clone(), a)))
            .collect()
    }

    /// Registers every role the node runs as starting (not ready), in one
    /// step, and returns their handles in order. The board is not ready
    /// before this, so a `/readyz` served before the roles start cannot
    /// find an empty role map and say ready.
    pub fn register_roles(&self, names: &[&str]) -> Vec<RoleReadiness> {
        let mut s = self.lock();
        for name in names {
            s.roles.insert(
                (*name).to_owned(),
                RoleStatus {
                    state: RoleState::Starting,
                    ready: false,
                    reason: Some("starting".into()),
                    restarts: 0,
                    inputs: BTreeMap::new(),
                },
            );
        }
        s.roles_registered = true;
        names
            .iter()
            .map(|name| RoleReadiness {
                board: self.clone(),
                name: (*name).to_owned(),
            })
            .collect()
    }

    pub fn role_status(&self, name: &str) -> Option<RoleStatus> {
        self.lock().roles.get(name).cloned()
    }

    pub fn roles(&self) -> BTreeMap<String, RoleStatus> {
        self.lock().roles.clone()
    }

    pub(crate) fn update_role(&self, name: &str, f: impl FnOnce(&mut RoleStatus)) {
        if let Some(s) = self.lock().roles.get_mut(name) {
            f(s);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    pub fn report(&self) -> ReadinessReport {
        let s = self.lock();
        let mut missing = Vec::new();
        if s.shutting_down {
            missing.push("shutting_down".to_owned());
        }
        if s.draining {
            missing.push("draining".to_owned());
        }
        if !s.config_loaded {
            missing.push("config".to_owned());
        }
        if !s.bus_subscribed {
            missing.push("bus".to_owned());
        }
        if !s.roles_registered {
            missing.push("roles".to_owned());
        }
        for (name, addr) in &s.listeners {
            if addr.is_none() {
                missing.push(format!("listener:{name}"));
            }
        }
        let mut roles = BTreeMap::new();
        for (name, st) in &s.roles {
            if !st.ready {
                missing.push(format!("role:{name}"));
            }
            roles.insert(
                name.clone(),
                RoleReport {
                    ready: st.ready,
                    reason: st.reason.clone(),
                    inputs: st.inputs.clone(),
                },
            );
        }
        ReadinessReport {
            ready: missing.is_empty(),
            roles,
            missing,
            planes: s.planes.clone(),
        }
    }
}

/// A role's own view of its readiness. The role flips it; the supervisor
/// uses the same handle to record crashes and quarantine.
#[derive(Debug, Clone)]
pub struct RoleReadiness {
    board: Readiness,
    name: String,
}

impl RoleReadiness {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_ready(&self) {
        self.board.update_role(&self.name, |s| {
            s.ready = true;
            s.reason = None;
            s.state = RoleState::Running;
        });
    }

    /// Marks the role unready with a reason an operator can act on
    /// (e.g. "inflight above critical threshold").
    pub fn set_unready(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.board.update_role(&self.name, |s| {
            s.ready = false;
            s.reason = Some(reason);
        });
    }

    pub fn set_state(&self, state: RoleState, reason: impl Into<String>) {
        let reason = reason.into();
        self.board.update_role(&self.name, |s| {
            s.state = state;
            s.ready = false;
            s.reason = Some(reason);
        });
    }

    /// Records the role's named readiness inputs (shown in `/readyz`); the
    /// role still decides its readiness with `set_ready`/`set_unready`.
    pub fn set_inputs(&self, inputs: &[(&str, bool)]) {
        self.board.update_role(&self.name, |s| {
            for (k, v) in inputs {
                s.inputs.insert((*k).to_owned(), *v);
            }
        });
    }

    /// Reports the role's plane `plane` (shown as `role.plane`): ready
    /// when `unready` is `None`, else not ready for that reason. A plane
    /// never makes the node unready; it tells operators and balancers
    /// that route to it (the registry's writes) what works.
    pub fn set_plane(&self, plane: &str, unready: Option<String>) {
        let key = format!("{}.{plane}", self.name);
        self.board.lock().planes.insert(
            key,
            PlaneReport {
                ready: unready.is_none(),
                reason: unready,
            },
        );
    }

    pub fn set_restarts(&self, n: u64) {
        self.board.update_role(&self.name, |s| s.restarts = n);
    }

    pub fn board(&self) -> &Readiness {
        &self.board
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Readiness {
        let r = Readiness::new();
        r.set_config_loaded(true);
        r.set_bus_subscribed(true);
        r
    }

    #[test]
    fn a_board_without_its_roles_is_not_ready() {
        let r = base();
        assert_eq!(r.report().missing, vec!["roles"]);
        r.register_roles(&[]);
        assert!(r.is_ready(), "a node that runs no role is ready");
    }

    #[test]
    fn ready_only_when_every_gate_is_met() {
        let r = base();
        r.expect_listener("metrics");
        let role = r.register_roles(&["storage"]).remove(0);
        let rep = r.report();
        assert!(!rep.ready);
        assert_eq!(rep.missing, vec!["listener:metrics", "role:storage"]);
        r.listener_bound(
            "metrics",
            "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
        );
        role.set_ready();
        assert!(r.is_ready());
        role.set_unready("inflight above critical threshold");
        let rep = r.report();
        assert!(!rep.ready);
        assert_eq!(
            rep.roles["storage"].reason.as_deref(),
            Some("inflight above critical threshold")
        );
    }

    #[test]
    fn shutdown_and_drain_make_the_node_unready() {
        let r = base();
        r.register_roles(&[]);
        assert!(r.is_ready());
        r.set_draining(true);
        assert_eq!(r.report().missing, vec!["draining"]);
        r.set_draining(false);
        r.set_shutting_down();
        assert_eq!(r.report().missing, vec!["shutting_down"]);
    }
}

/// The clock of a role's readiness loop: every 10 ms until the role is
/// first ready (so the node reports ready as soon as it is, not up to one
/// period later — a cold start was 255 ms for a 250 ms period) or for 2 s
/// at most, then every `every`.
#[derive(Debug)]
pub struct ReadyTick {
    every: std::time::Duration,
    fast_until: Option<tokio::time::Instant>,
    interval: tokio::time::Interval,
}

impl ReadyTick {
    const FAST: std::time::Duration = std::time::Duration::from_millis(10);
    const FAST_FOR: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(every: std::time::Duration) -> Self {
        let mut interval = tokio::time::interval(Self::FAST);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            every,
            fast_until: Some(tokio::time::Instant::now() + Self::FAST_FOR),
            interval,
        }
    }

    /// Waits for the next evaluation.
    pub async fn tick(&mut self) {
        if self
            .fast_until
            .is_some_and(|t| tokio::time::Instant::now() >= t)
        {
            self.settled();
        }
        self.interval.tick().await;
    }

    /// The role was judged ready (or the fast phase is over): from now on
    /// every `every`.
    pub fn settled(&mut self) {
        if self.fast_until.take().is_some() {
            let mut i =
                tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            self.interval = i;
        }
    }
}

#[cfg(test)]
mod tick_tests {
    use super::ReadyTick;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn ticks_every_10ms_until_settled_then_every_period() {
        let mut t = ReadyTick::new(Duration::from_millis(250));
        let start = Instant::now();
        t.tick().await; // the first tick is at once
        t.tick().await;
        t.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        t.settled();
        let at = Instant::now();
        t.tick().await;
        assert_eq!(at.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_fast_phase_ends_after_two_seconds_unready() {
        let mut t = ReadyTick::new(Duration::from_millis(250));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            t.tick().await;
        }
        t.tick().await; // this one notices the fast phase is over
        let at = Instant::now();
        t.tick().await;
        assert_eq!(at.elapsed(), Duration::from_millis(250));
    }
}
