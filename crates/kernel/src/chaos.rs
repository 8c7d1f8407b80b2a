//! Fault injection for the runbooks' drills: latency (with jitter) and
//! errors on the node's downstream edges, lag and loss on the bus.
//!
//! One process-wide table, `CHAOS`, like the metrics recorder: the edges
//! that consult it sit deep in roles (an S3 request, a peer fetch) where
//! threading a handle through would touch every constructor for a thing
//! that is off in production. Off it costs one relaxed atomic load per
//! edge call: `armed` holds a bit per target that has a fault.
//!
//! Invariants: nothing is injected unless the host called `enable`
//! (`chaos.enabled = true`); every injected fault is counted in
//! `chaos_faults_injected_total{target,fault}`, so a drill is never
//! mistaken for an outage; the table's lock is never held across an
//! `.await` or a sleep. An error rate is applied deterministically (a
//! rate of 0.01 hits exactly the 100th, 200th, … call), so a drill's
//! error count is exact and its tests need no luck; jitter is random.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::metrics::names;

/// Where a fault applies: the edges the node calls across, and the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The gateway's calls to storage (in this process or remote).
    Storage,
    /// The gateway's calls to the index.
    Index,
    /// The gateway's calls to the mailbox.
    Mailbox,
    /// The registry's reads and durable writes of its log.
    Registry,
    /// Storage's requests to its S3 bucket.
    S3,
    /// The overlay's blob fetches from peers.
    Peer,
    /// Deliveries from the node bus to its subscribers.
    Bus,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Storage,
        Target::Index,
        Target::Mailbox,
        Target::Registry,
        Target::S3,
        Target::Peer,
        Target::Bus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Storage => "storage",
            Target::Index => "index",
            Target::Mailbox => "mailbox",
            Target::Registry => "registry",
            Target::S3 => "s3",
            Target::Peer => "peer",
            Target::Bus => "bus",
        }
    }

    /// The faults this target takes.
    pub fn faults(self) -> &'static [Fault] {
        match self {
            Target::Bus => &[Fault::Latency, Fault::Drop],
            _ => &[Fault::Latency, Fault::Error],
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::str::FromStr for Target {
    type Err = ChaosError;

    /// `svc-NAME` and `ron-NAME` (the runbooks' spellings) name NAME;
    /// `overlay` is the peer edge.
    fn from_str(s: &str) -> Result<Self, ChaosError> {
        let s = s
            .strip_prefix("svc-")
            .or_else(|| s.strip_prefix("ron-"))
            .unwrap_or(s);
        let s = if s == "overlay" { "peer" } else { s };
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| ChaosError::Target(s.to_owned()))
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Each call hit waits `ms` ± `jitter_ms` first.
    Latency,
    /// Each call hit fails as the edge's own failure would.
    Error,
    /// (bus) Each event hit is lost to the subscriber, which is told it
    /// lagged, as after an overflow, and reconciles.
    Drop,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Latency => "latency",
            Fault::Error => "error",
            Fault::Drop => "drop",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChaosError {
    #[error("unknown target {0:?}; targets: storage, index, mailbox, registry, s3, peer, bus")]
    Target(String),
    #[error("unknown fault {fault:?} for {target}; it takes: {takes}")]
    Fault {
        target: &'static str,
        fault: String,
        takes: String,
    },
    #[error("{0}")]
    Bad(String),
}

/// A fault as asked for (`POST /api/v1/chaos`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub target: String,
    /// `latency`, `error`, `drop`, or the runbooks' `TARGET-latency` /
    /// `storage-latency` style (the part after the last `-`).
    pub fault: String,
    #[serde(default)]
    pub ms: Option<u64>,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    /// Share of calls hit, 0..1; default 1.
    #[serde(default)]
    pub rate: Option<f64>,
    /// How long the fault lasts (`"30s"`); default until cleared.
    #[serde(default)]
    pub duration: Option<String>,
}

/// Longest latency a fault may add (a drill, not a hang).
pub const MAX_MS: u64 = 60_000;

/// What a fault does and where: as asked for, checked.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Settings {
    pub id: String,
    pub target: Target,
    pub fault: Fault,
    pub ms: u64,
    pub jitter_ms: u64,
    pub rate: f64,
}

/// A fault in force.
#[derive(Debug)]
pub struct Active {
    pub settings: Settings,
    pub duration: Option<Duration>,
    expires: Option<Instant>,
    /// Calls that consulted this fault, for the deterministic rate.
    calls: AtomicU64,
    /// Calls it hit.
    hits: AtomicU64,
}

/// What `GET /api/v1/chaos` shows of a fault.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultView {
    #[serde(flatten)]
    pub settings: Settings,
    /// Seconds left; absent = until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<f64>,
    pub hits: u64,
}

impl Active {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// Whether this call is hit: exactly ⌊n·rate⌋ of the first n calls.
    fn take(&self) -> bool {
        if self.settings.rate >= 1.0 {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let hit =
            ((n + 1) as f64 * self.settings.rate).floor() > (n as f64 * self.settings.rate).floor();
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn delay(&self) -> Duration {
        let ms = if self.settings.jitter_ms == 0 {
            self.settings.ms
        } else {
            let lo = self.settings.ms.saturating_sub(self.settings.jitter_ms);
            fastrand::u64(lo..=self.settings.ms + self.settings.jitter_ms)
        };
        Duration::from_millis(ms)
    }

    pub fn view(&self, now: Instant) -> FaultView {
        FaultView {
            settings: self.settings.clone(),
            remaining_seconds: self
                .expires
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }
}

/// A call an error fault hit: the edge fails it as its own failure.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("fault {id} injected on {target} (chaos drill)")]
pub struct Injected {
    pub id: String,
    pub target: &'static str,
}

/// What a call on an armed edge is to suffer.
#[derive(Debug, Default)]
pub struct Verdict {
    pub delay: Duration,
    /// An error (or, on the bus, a drop) fault hit this call.
    pub fail: Option<Injected>,
}

/// The fault table (see the module doc).
#[derive(Debug)]
pub struct Chaos {
    enabled: AtomicBool,
    armed: AtomicU32,
    next: AtomicU64,
    faults: Mutex<Vec<Arc<Active>>>,
}

/// The node's fault table.
pub static CHAOS: Chaos = Chaos::new();

impl Default for Chaos {
    fn default() -> Self {
        Self::new()
    }
}

impl Chaos {
    pub const fn new() -> Self {
        Chaos {
            enabled: AtomicBool::new(false),
            armed: AtomicU32::new(0),
            next: AtomicU64::new(1),
            faults: Mutex::new(Vec::new()),
        }
    }

    /// Allows faults (the host, when `chaos.enabled = true`).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn table(&self) -> MutexGuard<'_, Vec<Arc<Active>>> {
        // A panic while the lock was held left a valid Vec (every change
        // is one push or retain): keep using it.
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rearm(&self, faults: &[Arc<Active>]) {
        let bits = faults.iter().fold(0, |b, f| b | f.settings.target.bit());
        self.armed.store(bits, Ordering::Release);
        metrics::gauge!(names::CHAOS_FAULTS_ACTIVE).set(faults.len() as f64);
    }

    /// Checks `spec` and puts it in force; `Err` says what is wrong with
    /// it. The caller has checked `enabled`.
    pub fn inject(&self, spec: &Spec) -> Result<Arc<Active>, ChaosError> {
        let target: Target = spec.target.parse()?;
        let word = spec.fault.rsplit('-').next().unwrap_or(&spec.fault);
        let fault = target
            .faults()
            .iter()
            .copied()
            .find(|f| f.name() == word)
            .ok_or_else(|| ChaosError::Fault {
                target: target.name(),
                fault: spec.fault.clone(),
                takes: target
                    .faults()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let rate = spec.rate.unwrap_or(1.0);
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(ChaosError::Bad(format!("rate {rate} is not within (0, 1]")));
        }
        let ms = spec.ms.unwrap_or(0);
        let jitter_ms = spec.jitter_ms.unwrap_or(0);
        match fault {
            Fault::Latency if ms == 0 && jitter_ms == 0 => {
                return Err(ChaosError::Bad(
                    "a latency fault needs ms (or jitter_ms)".into(),
                ))
            }
            Fault::Latency if ms + jitter_ms > MAX_MS => {
                return Err(ChaosError::Bad(format!(
                    "ms + jitter_ms is at most {MAX_MS}"
                )))
            }
            Fault::Error | Fault::Drop if spec.ms.is_some() || spec.jitter_ms.is_some() => {
                return Err(ChaosError::Bad(format!(
                    "a {} fault takes no ms or jitter_ms",
                    fault.name()
                )))
            }
            _ => {}
        }
        let duration = match &spec.duration {
            None => None,
            Some(d) => match humantime::parse_duration(d) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => return Err(ChaosError::Bad("duration must be more than 0".into())),
                Err(e) => return Err(ChaosError::Bad(format!("duration {d:?}: {e}"))),
            },
        };
        let id = format!("f-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let active = Arc::new(Active {
            settings: Settings {
                id,
                target,
                fault,
                ms,
                jitter_ms,
                rate,
            },
            duration,
            expires: duration.map(|d| Instant::now() + d),
            calls: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        });
        let mut table = self.table();
        table.push(active.clone());
        self.rearm(&table);
        Ok(active)
    }

    /// Removes the fault `id` (`None`: every fault); returns the ids
    /// removed.
    pub fn clear(&self, id: Option<&str>) -> Vec<String> {
        let mut table = self.table();
        let mut gone = Vec::new();
        table.retain(|f| {
            let keep = id.is_some_and(|id| f.settings.id != id);
            if !keep {
                gone.push(f.settings.id.clone());
            }
            keep
        });
        self.rearm(&table);
        gone
    }

    /// Removes the faults whose duration is over; returns their ids.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut table = self.table();
        let mut gone = Vec::new();
        table.retain(|f| {
            let keep = !f.expired(now);
            if !keep {
                gone.push(f.settings.id.clone());
            }
            keep
        });
        if !gone.is_empty() {
            self.rearm(&table);
        }
        gone
    }

    pub fn list(&self) -> Vec<FaultView> {
        let now = Instant::now();
        self.table()
            .iter()
            .filter(|f| !f.expired(now))
            .map(|f| f.view(now))
            .collect()
    }

    /// Whether `target` has a fault at all (one relaxed load).
    #[inline]
    pub fn armed(&self, target: Target) -> bool {
        self.armed.load(Ordering::Relaxed) & target.bit() != 0
    }

    /// What this call on `target` suffers; counts every fault that hit.
    pub fn verdict(&self, target: Target) -> Verdict {
        let mut v = Verdict::default();
        if !self.armed(target) {
            return v;
        }
        let now = Instant::now();
        // Cloned out so the lock is not held while the call waits.
        let faults: Vec<Arc<Active>> = self
            .table()
            .iter()
            .filter(|f| f.settings.target == target && !f.expired(now))
            .cloned()
            .collect();
        for f in faults {
            if !f.take() {
                continue;
            }
            metrics::counter!(
                names::CHAOS_FAULTS_INJECTED_TOTAL,
                "target" => target.name(),
                "fault" => f.settings.fault.name()
            )
            .increment(1);
            match f.settings.fault {
                Fault::Latency => v.delay += f.delay(),
                Fault::Error | Fault::Drop => {
                    v.fail.get_or_insert(Injected {
                        id: f.settings.id.clone(),
                        target: target.name(),
                    });
                }
            }
        }
        v
    }

    /// An async edge's call: waits out any latency fault, then fails if
    /// an error fault hit.
    #[inline]
    pub async fn at(&self, target: Target) -> Result<(), Injected> {
        if !self.armed(target) {
            return Ok(());
        }
        let v = self.verdict(target);
        if !v.delay.is_zero() {
            tokio::time::sleep(v.delay).await;
        }
        v.fail.map_or(Ok(()), Err)
    }

    /// `at` for a call on a blocking thread.
    #[inline]
    pub fn at_blocking(&self, target: Target) -> Result<(), Injected> {
        if !self.armed(target) {
            return Ok(());
        }
        let v = self.verdict(target);
        if !v.delay.is_zero() {
            std::thread::sleep(v.delay);
        }
        v.fail.map_or(Ok(()), Err)
    }
}

/// Every (target, fault) pair, for the counter's series at zero.
pub fn series() -> impl Iterator<Item = (&'static str, &'static str)> {
    Target::ALL
        .into_iter()
        .flat_map(|t| t.faults().iter().map(move |f| (t.name(), f.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, fault: &str) -> Spec {
        Spec {
            target: target.into(),
            fault: fault.into(),
            ms: None,
            jitter_ms: None,
            rate: None,
            duration: None,
        }
    }

    #[test]
    fn an_unarmed_edge_suffers_nothing() {
        let c = Chaos::new();
        c.enable();
        let v = c.verdict(Target::Storage);
        assert!(v.delay.is_zero() && v.fail.is_none());
        assert!(c.at_blocking(Target::Storage).is_ok());
    }

    #[test]
    fn an_error_rate_hits_exactly_its_share_of_calls() {
        let c = Chaos::new();
        let f = c
            .inject(&Spec {
                rate: Some(0.01),
                ..spec("storage", "error")
            })
            .unwrap();
        let failed = (0..1000)
            .filter(|_| c.at_blocking(Target::Storage).is_err())
            .count();
        assert_eq!(failed, 10);
        assert_eq!(c.list()[0].hits, 10);
        assert!(
            c.at_blocking(Target::Index).is_ok(),
            "other edges untouched"
        );
        assert_eq!(c.clear(Some(&f.settings.id)), vec![f.settings.id.clone()]);
        assert!(!c.armed(Target::Storage));
        assert!(c.at_blocking(Target::Storage).is_ok());
    }

    #[test]
    fn latency_stays_within_its_jitter() {
        let c = Chaos::new();
        c.inject(&Spec {
            ms: Some(150),
            jitter_ms: Some(20),
            ..spec("svc-storage", "storage-latency")
        })
        .unwrap();
        for _ in 0..200 {
            let d = c.verdict(Target::Storage).delay;
            assert!(
                (130..=170).contains(&(d.as_millis() as u64)),
                "{d:?} outside 150 ± 20 ms"
            );
        }
    }

    #[test]
    fn bad_specs_are_refused_with_what_is_wrong() {
        let c = Chaos::new();
        let err = |s: Spec| c.inject(&s).unwrap_err().to_string();
        assert!(err(spec("disk", "latency")).contains("unknown target \"disk\""));
        assert!(err(spec("bus", "error")).contains("it takes: latency, drop"));
        assert!(err(spec("storage", "drop")).contains("it takes: latency, error"));
        assert!(err(spec("storage", "latency")).contains("needs ms"));
        assert!(err(Spec {
            ms: Some(MAX_MS + 1),
            ..spec("index", "latency")
        })
        .contains("at most"));
        assert!(err(Spec {
            rate: Some(0.0),
            ..spec("index", "error")
        })
        .contains("rate"));
        assert!(err(Spec {
            ms: Some(5),
            ..spec("index", "error")
        })
        .contains("no ms"));
        assert!(err(Spec {
            duration: Some("soon".into()),
            ..spec("index", "error")
        })
        .contains("duration"));
        assert!(c.list().is_empty(), "nothing refused is in force");
    }

    #[test]
    fn a_fault_ends_with_its_duration_and_clear_all_ends_the_rest() {
        let c = Chaos::new();
        let brief = c
            .inject(&Spec {
                duration: Some("1ms".into()),
                ..spec("overlay", "error")
            })
            .unwrap();
        assert_eq!(brief.settings.target, Target::Peer);
        let kept = c.inject(&spec("mailbox", "error")).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // past the 1 ms duration
        assert!(
            c.at_blocking(Target::Peer).is_ok(),
            "an expired fault hits nothing"
        );
        assert_eq!(c.expire(), vec![brief.settings.id.clone()]);
        assert_eq!(c.list().len(), 1);
        assert_eq!(c.clear(None), vec![kept.settings.id.clone()]);
        assert_eq!(c.armed.load(Ordering::Relaxed), 0);
    }
}
