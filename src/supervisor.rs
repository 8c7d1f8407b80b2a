//! Runs each role as a supervised task group: a role that returns an error,
//! panics, or returns before shutdown is restarted with full-jitter backoff;
//! too many restarts in a window quarantine it until an operator reloads.
//!
//! Invariants: a clean exit during shutdown is never a crash; a crash is
//! always published on the bus and counted; a quarantined role is never
//! restarted behind the operator's back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_kernel::metrics::names;
use ron_kernel::readiness::RoleReadiness;
use ron_kernel::{Bus, KernelEvent, Live, RoleContext, RoleState};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SupervisorConfig;
use crate::roles::RoleSpec;

/// Full-jitter backoff: a uniform delay in `[0, min(max, base · 2^n)]`.
pub fn backoff_delay(base: Duration, max: Duration, crashes_before: u32) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(crashes_before.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    ceiling.mul_f64(fastrand::f64())
}

struct Slot {
    ready: RoleReadiness,
    release: Arc<Notify>,
    task: JoinHandle<()>,
}

pub struct Supervisor {
    slots: Vec<Slot>,
}

impl Supervisor {
    /// Starts every role. `contexts` pairs each spec with its context.
    pub fn start(roles: Vec<(RoleSpec, RoleContext)>, policy: Live<SupervisorConfig>) -> Self {
        let slots = roles
            .into_iter()
            .map(|(spec, ctx)| {
                let release = Arc::new(Notify::new());
                let ready = ctx.ready.clone();
                let task = tokio::spawn(supervise(spec, ctx, policy.clone(), release.clone()));
                Slot {
                    ready,
                    release,
                    task,
                }
            })
            .collect();
        Self { slots }
    }

    /// Lets every quarantined role start again (on reload).
    pub fn release_quarantined(&self) -> Vec<String> {
        let mut released = Vec::new();
        for s in &self.slots {
            let quarantined = s
                .ready
                .board()
                .role_status(s.ready.name())
                .is_some_and(|st| st.state == RoleState::Quarantined);
            if quarantined {
                released.push(s.ready.name().to_owned());
                s.release.notify_waiters();
            }
        }
        released
    }

    /// Waits for every role to stop, at most `deadline`; roles still running
    /// then are aborted. Returns the names of aborted roles.
    pub async fn join(self, deadline: Duration) -> Vec<String> {
        let stop_by = tokio::time::Instant::now() + deadline;
        let mut aborted = Vec::new();
        for mut s in self.slots {
            match tokio::time::timeout_at(stop_by, &mut s.task).await {
                Ok(_) => {}
                Err(_) => {
                    s.task.abort();
                    aborted.push(s.ready.name().to_owned());
                }
            }
        }
        aborted
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

async fn supervise(
    spec: RoleSpec,
    ctx: RoleContext,
    policy: Live<SupervisorConfig>,
    release: Arc<Notify>,
) {
    let name = spec.name.as_str();
    let bus: Bus = ctx.bus.clone();
    let shutdown: CancellationToken = ctx.shutdown.clone();
    let ready = ctx.ready.clone();
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut total_restarts: u64 = 0;
    let restarts = metrics::counter!(names::SERVICE_RESTARTS_TOTAL, "service" => name);
    let quarantined = metrics::gauge!(names::SERVICE_QUARANTINED, "service" => name);
    restarts.increment(0);
    quarantined.set(0.0);

    loop {
        ready.set_state(RoleState::Starting, "starting");
        tracing::info!(role = name, "role starting");
        // Each attempt gets its own token, cancelled when the attempt ends,
        // so tasks the role spawned (its servers) end with it instead of
        // outliving a crash next to the restarted role.
        let attempt = shutdown.child_token();
        let mut attempt_ctx = ctx.clone();
        attempt_ctx.shutdown = attempt.clone();
        let outcome = tokio::spawn((spec.start)(attempt_ctx)).await;
        attempt.cancel();
        // Nobody may keep calling into an attempt that has ended.
        ctx.handles.withdraw(spec.name);
        let reason = match outcome {
            Ok(Ok(())) if shutdown.is_cancelled() => {
                ready.set_state(RoleState::Stopped, "stopped");
                tracing::info!(role = name, "role stopped");
                return;
            }
            Ok(Ok(())) => "returned before shutdown".to_owned(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(je) if je.is_panic() => format!("panic: {}", panic_message(je.into_panic())),
            Err(je) => format!("task cancelled: {je}"),
        };
        if shutdown.is_cancelled() {
            // Failing while being stopped is worth a line, not a restart.
            tracing::warn!(role = name, %reason, "role failed during shutdown");
            ready.set_state(RoleState::Stopped, format!("stopped: {reason}"));
            return;
        }

        total_restarts += 1;
        restarts.increment(1);
        ready.set_restarts(total_restarts);
        // Unready before anyone hears of the crash.
        ready.set_state(RoleState::Restarting, format!("crashed: {reason}"));
        bus.publish(KernelEvent::ServiceCrashed {
            service: name.to_owned(),
            reason: reason.clone(),
        });
        let pol = policy.load();
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > pol.quarantine_window)
        {
            recent.pop_front();
        }
        tracing::error!(role = name, %reason, restarts = total_restarts, "role crashed");

        if recent.len() > pol.quarantine_after as usize {
            // Register interest before announcing the state, so a reload
            // that sees "quarantined" can never miss this waiter.
            let released = release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let why = format!(
                "quarantined after {} crashes in {}s (last: {reason}); reload to restart",
                recent.len(),
                pol.quarantine_window.as_secs()
            );
            tracing::error!(role = name, reason = %why, "role quarantined");
            ready.set_state(RoleState::Quarantined, why);
            quarantined.set(1.0);
            tokio::select! {
                _ = &mut released => {
                    tracing::info!(role = name, "quarantine lifted by reload");
                    recent.clear();
                    quarantined.set(0.0);
                    continue;
                }
                _ = shutdown.cancelled() => {
                    ready.set_state(RoleState::Stopped, "stopped while quarantined");
                    return;
                }
            }
        }

        let delay = backoff_delay(
            pol.backoff_base,
            pol.backoff_max,
            recent.len().saturating_sub(1) as u32,
        );
        ready.set_state(
            RoleState::Restarting,
            format!(
                "restarting in {} ms after crash: {reason}",
                delay.as_millis()
            ),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {
                ready.set_state(RoleState::Stopped, "stopped while restarting");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(30);
        for n in 0..40 {
            let d = backoff_delay(base, max, n);
            let ceiling = (base * 2u32.saturating_pow(n.min(20))).min(max);
            assert!(d <= ceiling, "n={n} d={d:?} ceiling={ceiling:?}");
        }
    }
}
