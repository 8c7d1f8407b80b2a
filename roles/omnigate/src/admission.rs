//! Omnigate's admission pieces: the in-flight cap, token-bucket quotas and
//! the per-downstream limiters. Each is sized from the live config on every
//! use, so a reload resizes them without dropping anyone's permit.
//!
//! Invariant: a permit is released exactly once, when its guard drops
//! (which for a streamed response is when the body ends or the client
//! goes), so the counts never drift.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A counting limiter whose capacity is read at acquire time.
#[derive(Debug, Default)]
pub struct Limiter {
    used: AtomicUsize,
    freed: Notify,
}

/// A held slot of a `Limiter`.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.used.fetch_sub(1, Ordering::AcqRel);
        self.limiter.freed.notify_one();
    }
}

impl Limiter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// A slot now, if fewer than `cap` are held.
    pub fn try_acquire(self: &Arc<Self>, cap: usize) -> Option<Permit> {
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            if cur >= cap {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Permit {
                        limiter: self.clone(),
                    })
                }
                Err(now) => cur = now,
            }
        }
    }

    /// A slot within `budget`, or `None` when none came free in time.
    pub async fn acquire_within(self: &Arc<Self>, cap: usize, budget: Duration) -> Option<Permit> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            // Register interest before checking, so a release between the
            // check and the wait is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(p) = self.try_acquire(cap) {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_acquire(cap);
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / f64::from(rate),
            ))
        }
    }
}

/// Per-client and global quotas. Per-client buckets that have refilled are
/// forgotten, so the table stays as large as the set of busy clients.
#[derive(Debug)]
pub struct Quotas {
    global: Mutex<Option<Bucket>>,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Which quota refused a request, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub global: bool,
    pub retry_after: Duration,
}

const MAX_TRACKED_CLIENTS: usize = 100_000;

impl Default for Quotas {
    fn default() -> Self {
        Self {
            global: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl Quotas {
    pub fn check(&self, cfg: &crate::config::QuotaConfig, ip: IpAddr) -> Result<(), OverQuota> {
        let now = Instant::now();
        if cfg.per_client_rps > 0 {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if clients.len() >= MAX_TRACKED_CLIENTS {
                // Forget clients whose bucket has refilled: they are not
                // over quota, and a fresh bucket is full anyway.
                let full_after = Duration::from_secs_f64(
                    f64::from(cfg.per_client_burst) / f64::from(cfg.per_client_rps),
                );
                clients.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            }
            let b = clients
                .entry(ip.to_canonical())
                .or_insert_with(|| Bucket::full(cfg.per_client_burst, now));
            b.take(cfg.per_client_rps, cfg.per_client_burst, now)
                .map_err(|retry_after| OverQuota {
                    global: false,
                    retry_after,
                })?;
        }
        if cfg.global_rps > 0 {
            let mut g = self.global.lock().unwrap_or_else(|p| p.into_inner());
            let b = g.get_or_insert_with(|| Bucket::full(cfg.global_burst, now));
            b.take(cfg.global_rps, cfg.global_burst, now)
                .map_err(|retry_after| OverQuota {
                    global: true,
                    retry_after,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaConfig;

    #[test]
    fn limiter_counts_and_releases() {
        let l = Limiter::new();
        let a = l.try_acquire(2).unwrap();
        let _b = l.try_acquire(2).unwrap();
        assert!(l.try_acquire(2).is_none());
        drop(a);
        assert_eq!(l.in_use(), 1);
        assert!(l.try_acquire(2).is_some());
    }

    #[tokio::test]
    async fn acquire_within_waits_for_a_release() {
        let l = Limiter::new();
        let held = l.try_acquire(1).unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            l2.acquire_within(1, Duration::from_secs(30))
                .await
                .is_some()
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(l.acquire_within(1, Duration::ZERO).await.is_some());
    }

    #[test]
    fn buckets_allow_burst_then_refuse() {
        let q = Quotas::default();
        let cfg = QuotaConfig {
            per_client_rps: 1,
            per_client_burst: 3,
            global_rps: 0,
            global_burst: 1,
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            q.check(&cfg, ip).unwrap();
        }
        let e = q.check(&cfg, ip).unwrap_err();
        assert!(!e.global);
        assert!(e.retry_after > Duration::ZERO);
        // Another client has its own bucket.
        q.check(&cfg, "10.0.0.2".parse().unwrap()).unwrap();
    }

    #[test]
    fn global_bucket_covers_everyone() {
        let q = Quotas::default();
        let cfg = QuotaConfig {
            per_client_rps: 0,
            per_client_burst: 1,
            global_rps: 1,
            global_burst: 2,
        };
        q.check(&cfg, "10.0.0.1".parse().unwrap()).unwrap();
        q.check(&cfg, "10.0.0.2".parse().unwrap()).unwrap();
        assert!(
            q.check(&cfg, "10.0.0.3".parse().unwrap())
                .unwrap_err()
                .global
        );
    }
}
