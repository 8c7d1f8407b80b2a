//! The node's broadcast bus: every role publishes `KernelEvent`s here and any
//! part of the node may subscribe.
//!
//! Invariant: publishing never blocks and never fails the publisher. A slow
//! subscriber lags (and is told how far, so it can reconcile from a snapshot);
//! it can never slow a publisher down.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::chaos::{Target, CHAOS};
use crate::metrics::names;

/// Default number of events the bus holds for its slowest subscriber.
pub const DEFAULT_BUS_CAPACITY: usize = 1024;

/// An event on the node bus. New variants may be added by any role issue, so
/// consumers must keep a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KernelEvent {
    Health {
        service: String,
        ok: bool,
    },
    ConfigUpdated {
        version: u64,
    },
    /// A capability (`write` or `admin`) got a new token; older ones end
    /// after `grace_seconds`. Never carries a token.
    CapRotated {
        service: String,
        grace_seconds: u64,
    },
    ServiceCrashed {
        service: String,
        reason: String,
    },
    Shutdown,
    RegistryCommitted {
        version: u64,
        payload_b3: String,
    },
    ObjectStored {
        address: String,
        size: u64,
    },
    /// Stored bytes failed verification and were not served.
    IntegrityFailed {
        service: String,
        address: String,
        what: String,
    },
    PeerUp {
        node_id: String,
    },
    PeerDown {
        node_id: String,
    },
    /// A drill's fault went into force (admin `POST /api/v1/chaos`).
    ChaosInjected {
        id: String,
        target: String,
        fault: String,
    },
    /// Faults ended: cleared, or their duration was over.
    ChaosCleared {
        ids: Vec<String>,
    },
}

impl KernelEvent {
    /// The topic an event is filed under (the admin bus stream filters on it).
    pub fn topic(&self) -> &'static str {
        match self {
            KernelEvent::Health { .. } => "health",
            KernelEvent::ConfigUpdated { .. } | KernelEvent::CapRotated { .. } => "config",
            KernelEvent::ServiceCrashed { .. } => "crash",
            KernelEvent::Shutdown => "shutdown",
            KernelEvent::RegistryCommitted { .. } => "registry",
            KernelEvent::ObjectStored { .. } | KernelEvent::IntegrityFailed { .. } => "storage",
            KernelEvent::PeerUp { .. } | KernelEvent::PeerDown { .. } => "overlay",
            KernelEvent::ChaosInjected { .. } | KernelEvent::ChaosCleared { .. } => "chaos",
        }
    }

    /// Every topic name, for validating `?topic=` filters: the categories
    /// `topic` returns, `kernel` (the host's own: health, config, crash,
    /// shutdown), and each role's name (its own events plus its health
    /// flips and crashes).
    pub const TOPICS: &'static [&'static str] = &[
        "kernel", "health", "config", "crash", "shutdown", "chaos", "omnigate", "overlay",
        "registry", "storage", "index", "mailbox",
    ];

    /// Whether a `?topic=` filter of `topic` lets this event through.
    pub fn matches(&self, topic: &str) -> bool {
        let category = self.topic();
        if category == topic {
            return true;
        }
        match self {
            KernelEvent::Health { service, .. } | KernelEvent::ServiceCrashed { service, .. } => {
                topic == "kernel" || service == topic
            }
            KernelEvent::ConfigUpdated { .. }
            | KernelEvent::CapRotated { .. }
            | KernelEvent::Shutdown
            | KernelEvent::ChaosInjected { .. }
            | KernelEvent::ChaosCleared { .. } => topic == "kernel",
            KernelEvent::IntegrityFailed { service, .. } => service == topic,
            _ => false,
        }
    }
}

/// Cheap to clone; every clone publishes into the same channel.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<KernelEvent>,
    capacity: usize,
    stats: Arc<BusStats>,
}

#[derive(Debug, Default)]
struct BusStats {
    overflowed: std::sync::atomic::AtomicU64,
}

/// What a subscriber gets: an event, or word that it fell behind by `n`
/// events and must reconcile from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    Event(KernelEvent),
    Lagged(u64),
}

impl Bus {
    /// `capacity` is clamped to at least 1 (a zero-capacity broadcast channel
    /// is a programming error in tokio).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        Self {
            tx,
            capacity,
            stats: Arc::new(BusStats::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Publishes without blocking. Returns how many subscribers will see the
    /// event. An event nobody can take (no subscriber) is dropped and
    /// counted as `bus_overflow_dropped_total`; a subscriber too slow to
    /// keep up loses the oldest events and is told how many when it next
    /// receives (`bus_lagged_total`). The publisher pays for neither.
    pub fn publish(&self, event: KernelEvent) -> usize {
        match self.tx.send(event) {
            Ok(n) => n,
            Err(_) => {
                self.note_overflow();
                0
            }
        }
    }

    fn note_overflow(&self) {
        self.stats
            .overflowed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(names::BUS_OVERFLOW_DROPPED_TOTAL).increment(1);
    }

    /// Events dropped since start (also exported as a metric).
    pub fn overflow_dropped(&self) -> u64 {
        self.stats
            .overflowed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A readiness input: true while an overflow happened within the last
    /// `hold`, as of the calls to `OverflowWatch::check`.
    pub fn overflow_watch(&self, hold: std::time::Duration) -> OverflowWatch {
        OverflowWatch {
            bus: self.clone(),
            seen: self.overflow_dropped(),
            hold,
            until: None,
        }
    }

    pub fn subscribe(&self) -> BusReceiver {
        BusReceiver {
            rx: self.tx.subscribe(),
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// A subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct BusReceiver {
    rx: broadcast::Receiver<KernelEvent>,
}

impl BusReceiver {
    /// Waits for the next event. `None` once the bus (every `Bus` clone) is
    /// gone. Under a drill's bus fault (`chaos`), a delivery waits out the
    /// injected latency, and a dropped event is reported as a lag of one,
    /// as an overflow would be: the subscriber reconciles.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        match self.rx.recv().await {
            Ok(ev) if CHAOS.armed(Target::Bus) => {
                let v = CHAOS.verdict(Target::Bus);
                if !v.delay.is_zero() {
                    tokio::time::sleep(v.delay).await;
                }
                if v.fail.is_some() {
                    metrics::counter!(names::BUS_LAGGED_TOTAL).increment(1);
                    return Some(BusMessage::Lagged(1));
                }
                Some(BusMessage::Event(ev))
            }
            Ok(ev) => Some(BusMessage::Event(ev)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!(names::BUS_LAGGED_TOTAL).increment(n);
                Some(BusMessage::Lagged(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Non-blocking variant for hot loops and tests.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        match self.rx.try_recv() {
            Ok(ev) => Some(BusMessage::Event(ev)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                metrics::counter!(names::BUS_LAGGED_TOTAL).increment(n);
                Some(BusMessage::Lagged(n))
            }
            Err(_) => None,
        }
    }
}

/// Whether the bus overflowed recently (roles report unready for a while
/// after an overflow).
#[derive(Debug)]
pub struct OverflowWatch {
    bus: Bus,
    seen: u64,
    hold: std::time::Duration,
    until: Option<std::time::Instant>,
}

impl OverflowWatch {
    /// True when an overflow happened since the last call or within
    /// `hold` before now.
    pub fn check(&mut self) -> bool {
        let now = std::time::Instant::now();
        let dropped = self.bus.overflow_dropped();
        if dropped > self.seen {
            self.seen = dropped;
            self.until = Some(now + self.hold);
        }
        self.until.is_some_and(|t| t > now)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn runbook_topics_select_the_events_they_name() {
        let health = |s: &str| KernelEvent::Health {
            service: s.into(),
            ok: false,
        };
        let commit = KernelEvent::RegistryCommitted {
            version: 1,
            payload_b3: "b3:00".into(),
        };
        assert!(KernelEvent::Shutdown.matches("kernel"));
        assert!(KernelEvent::ConfigUpdated { version: 2 }.matches("kernel"));
        assert!(health("omnigate").matches("kernel"));
        assert!(health("omnigate").matches("omnigate"));
        assert!(health("omnigate").matches("health"));
        assert!(!health("omnigate").matches("registry"));
        assert!(commit.matches("registry"));
        assert!(!commit.matches("kernel"));
        for t in ["kernel", "omnigate", "index", "mailbox"] {
            assert!(KernelEvent::TOPICS.contains(&t), "{t}");
        }
    }

    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let bus = Bus::new(8);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        assert_eq!(bus.publish(KernelEvent::ConfigUpdated { version: 1 }), 2);
        bus.publish(KernelEvent::Shutdown);
        for rx in [&mut a, &mut b] {
            assert_eq!(
                rx.recv().await,
                Some(BusMessage::Event(KernelEvent::ConfigUpdated { version: 1 }))
            );
            assert_eq!(
                rx.recv().await,
                Some(BusMessage::Event(KernelEvent::Shutdown))
            );
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_and_never_blocks_the_publisher() {
        let bus = Bus::new(4);
        let mut slow = bus.subscribe();
        for v in 0..10 {
            assert_eq!(bus.publish(KernelEvent::ConfigUpdated { version: v }), 1);
        }
        assert_eq!(
            bus.overflow_dropped(),
            0,
            "a subscriber existed for every event"
        );
        assert_eq!(slow.recv().await, Some(BusMessage::Lagged(6)));
        assert_eq!(
            slow.recv().await,
            Some(BusMessage::Event(KernelEvent::ConfigUpdated { version: 6 }))
        );
    }

    #[test]
    fn publishing_with_no_subscriber_counts_a_drop() {
        let bus = Bus::new(0);
        assert_eq!(bus.capacity(), 1);
        assert_eq!(bus.publish(KernelEvent::Shutdown), 0);
        assert_eq!(bus.overflow_dropped(), 1);
    }

    #[test]
    fn an_overflow_watch_holds_after_a_drop_and_then_clears() {
        let bus = Bus::new(1);
        let mut held = bus.overflow_watch(std::time::Duration::from_secs(3600));
        let mut brief = bus.overflow_watch(std::time::Duration::ZERO);
        assert!(!held.check());
        bus.publish(KernelEvent::Shutdown); // no subscriber: dropped
        assert!(held.check());
        assert!(held.check(), "still within the hold");
        assert!(!brief.check(), "a zero hold is over at once");
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let json = serde_json::to_string(&KernelEvent::ServiceCrashed {
            service: "storage".into(),
            reason: "boom".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"event":"service_crashed","service":"storage","reason":"boom"}"#
        );
    }
}
