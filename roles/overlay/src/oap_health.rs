//! The overlay's implementation of `crates/oap`'s health hook
//! (`OapMetrics`): the oap runbook's series (`oap_frames_total{kind}`,
//! `oap_rejects_total{reason}`, `oap_read_frame_seconds`, `oap_ack_window`,
//! `oap_inflight_frames`) and the four readiness inputs `/readyz` shows for
//! the overlay role.
//!
//! Every session holds a clone; recording is a handful of atomic adds on
//! handles registered once, never a map lookup or a lock on the frame path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram};
use ron_kernel::metrics::names;
use ron_oap::{FrameKind, OapMetrics, RejectRate, RejectReason};

/// Frames and rejects over the node's life, for the reject rate.
#[derive(Debug, Default)]
struct Totals {
    frames: AtomicU64,
    rejects: AtomicU64,
}

#[derive(Clone)]
pub struct OapHook {
    frames: Arc<[Counter; 6]>,
    rejects: Arc<[Counter; 11]>,
    read: Histogram,
    window: Gauge,
    inflight: Gauge,
    totals: Arc<Totals>,
}

fn kind_at(k: FrameKind) -> usize {
    FrameKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

impl OapHook {
    /// Registers every series (at zero: they exist from the first scrape).
    pub fn new() -> Self {
        let frames = FrameKind::ALL.map(|k| {
            let c = metrics::counter!(names::OAP_FRAMES_TOTAL, "kind" => k.label());
            c.increment(0);
            c
        });
        let rejects = RejectReason::ALL.map(|r| {
            let c = metrics::counter!(names::OAP_REJECTS_TOTAL, "reason" => r.label());
            c.increment(0);
            c
        });
        let window = metrics::gauge!(names::OAP_ACK_WINDOW);
        let inflight = metrics::gauge!(names::OAP_INFLIGHT_FRAMES);
        OapHook {
            frames: Arc::new(frames),
            rejects: Arc::new(rejects),
            read: metrics::histogram!(names::OAP_READ_FRAME_SECONDS),
            window,
            inflight,
            totals: Arc::new(Totals::default()),
        }
    }

    /// A change of the frames in flight over all sessions.
    pub fn inflight_delta(&self, delta: f64) {
        self.inflight.increment(delta);
    }

    /// (frames, rejects) since start.
    fn totals(&self) -> (u64, u64) {
        (
            self.totals.frames.load(Relaxed),
            self.totals.rejects.load(Relaxed),
        )
    }
}

impl Default for OapHook {
    fn default() -> Self {
        Self::new()
    }
}

impl OapMetrics for OapHook {
    fn frame(&self, kind: FrameKind) {
        self.frames[kind_at(kind)].increment(1);
        self.totals.frames.fetch_add(1, Relaxed);
    }

    fn reject(&self, reason: RejectReason) {
        let at = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejects[at].increment(1);
        self.totals.rejects.fetch_add(1, Relaxed);
    }

    fn read_frame_seconds(&self, secs: f64) {
        self.read.record(secs);
    }

    fn ack_window(&self, window: u32) {
        self.window.set(f64::from(window));
    }
}

/// Frames in the five-minute window below which the reject rate is not
/// judged.
pub const MIN_FRAMES: u64 = 1000;

/// The overlay role's readiness inputs, judged every readiness tick.
pub struct Inputs {
    hook: OapHook,
    rate: Mutex<(RejectRate, (u64, u64))>,
}

/// One evaluation of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The decoder and session layer take frames (false only while the
    /// role has no listener to take them on).
    pub parser_ready: bool,
    /// Under 1 % of decoded frames rejected over the last five minutes
    /// (judged once there are `MIN_FRAMES` frames in the window, so a few
    /// bad frames on an idle node do not flip it).
    pub reject_rate_ok: bool,
    /// Every live session's peer granted a window in HELLO.
    pub ack_window_ok: bool,
    /// Frames in flight over all sessions at most `overlay.inflight_critical`.
    pub backpressure_ok: bool,
}

impl Judged {
    pub fn pairs(&self) -> [(&'static str, bool); 4] {
        [
            ("oap_parser_ready", self.parser_ready),
            ("oap_reject_rate_ok", self.reject_rate_ok),
            ("oap_ack_window_ok", self.ack_window_ok),
            ("oap_backpressure_ok", self.backpressure_ok),
        ]
    }
}

impl Inputs {
    pub fn new(hook: OapHook) -> Self {
        Inputs {
            hook,
            rate: Mutex::new((RejectRate::default(), (0, 0))),
        }
    }

    /// Folds the frames and rejects since the last call into the five-minute
    /// window (`now_secs` on any monotonic scale) and judges every input.
    pub fn judge(
        &self,
        now_secs: u64,
        listening: bool,
        windows_granted: bool,
        inflight: u64,
        critical: u64,
    ) -> Judged {
        let (frames, rejects) = self.hook.totals();
        // Plain arithmetic under the lock, never held across an await.
        let mut g = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, seen) = &mut *g;
        rate.record(now_secs, frames - seen.0, rejects - seen.1);
        *seen = (frames, rejects);
        Judged {
            parser_ready: listening,
            reject_rate_ok: rate.totals(now_secs).0 < MIN_FRAMES || rate.ok(now_secs),
            ack_window_ok: windows_granted,
            backpressure_ok: inflight <= critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reject_rate_is_judged_only_on_enough_frames() {
        let hook = OapHook::default();
        let inputs = Inputs::new(hook.clone());
        for _ in 0..5 {
            hook.reject(RejectReason::BadFlags);
        }
        for _ in 0..10 {
            hook.frame(FrameKind::Data);
        }
        let j = inputs.judge(10, true, true, 0, 10);
        assert!(
            j.reject_rate_ok,
            "5 rejects in 10 frames is too few to judge"
        );
        for _ in 0..1000 {
            hook.frame(FrameKind::Data);
        }
        for _ in 0..20 {
            hook.reject(RejectReason::BadFlags);
        }
        let j = inputs.judge(20, true, true, 11, 10);
        assert!(!j.reject_rate_ok, "25 rejects in 1010 frames is over 1 %");
        assert!(!j.backpressure_ok);
        assert_eq!(j.pairs()[1], ("oap_reject_rate_ok", false));
        // Five minutes on, the window has emptied.
        assert!(inputs.judge(20 + 360, true, true, 0, 10).reject_rate_ok);
    }
}
