//! The metrics hook hosts implement, and the readiness summary they derive
//! from a session's health.
//!
//! The crate records nothing itself (no global recorder, no clock): the host
//! passes the time in and exports the numbers under the names of DESIGN §5.

use crate::header::FrameKind;
use crate::reject::RejectReason;

/// Called by `Session` as frames pass. Every method has a no-op default.
pub trait OapMetrics {
    /// `oap_frames_total{kind}`
    fn frame(&self, _kind: FrameKind) {}
    /// `oap_rejects_total{reason}`
    fn reject(&self, _reason: RejectReason) {}
    /// `oap_read_frame_seconds` (the host times its read+decode)
    fn read_frame_seconds(&self, _secs: f64) {}
    /// `oap_ack_window` (the window the peer granted most recently)
    fn ack_window(&self, _window: u32) {}
    /// `oap_inflight_frames` (sent, not yet acknowledged)
    fn inflight_frames(&self, _frames: u64) {}
}

/// Records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;
impl OapMetrics for NoMetrics {}

/// The readiness inputs a host exports (`oap_parser_ready`,
/// `oap_reject_rate_ok`, `oap_ack_window_ok`, `oap_backpressure_ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessSummary {
    pub parser_ready: bool,
    pub reject_rate_ok: bool,
    pub ack_window_ok: bool,
    pub backpressure_ok: bool,
}

impl ReadinessSummary {
    pub fn all_ok(&self) -> bool {
        self.parser_ready && self.reject_rate_ok && self.ack_window_ok && self.backpressure_ok
    }
}

const BUCKETS: usize = 5;
const BUCKET_SECS: u64 = 60;

/// Frames and rejects over the last five minutes, in one-minute buckets,
/// keyed by the time the host passes in (seconds on any monotonic scale).
#[derive(Debug, Clone, Default)]
pub struct RejectRate {
    buckets: [(u64, u64, u64); BUCKETS], // (minute, frames, rejects)
}

impl RejectRate {
    fn slot(&mut self, now_secs: u64) -> &mut (u64, u64, u64) {
        let minute = now_secs / BUCKET_SECS;
        let s = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if s.0 != minute {
            *s = (minute, 0, 0);
        }
        s
    }

    pub fn record_frame(&mut self, now_secs: u64) {
        self.slot(now_secs).1 += 1;
    }

    pub fn record_reject(&mut self, now_secs: u64) {
        self.slot(now_secs).2 += 1;
    }

    /// Adds `frames` and `rejects` at once (a host that counts with
    /// atomics and folds the counts in on a tick).
    pub fn record(&mut self, now_secs: u64, frames: u64, rejects: u64) {
        let s = self.slot(now_secs);
        s.1 += frames;
        s.2 += rejects;
    }

    /// (frames, rejects) over the last five minutes.
    pub fn totals(&self, now_secs: u64) -> (u64, u64) {
        let minute = now_secs / BUCKET_SECS;
        self.buckets
            .iter()
            .filter(|b| b.0 + (BUCKETS as u64) > minute && b.0 <= minute)
            .fold((0, 0), |acc, b| (acc.0 + b.1, acc.1 + b.2))
    }

    /// Under 1 % of frames rejected over five minutes.
    pub fn ok(&self, now_secs: u64) -> bool {
        let (frames, rejects) = self.totals(now_secs);
        rejects * 100 < frames.max(1) || rejects == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_rate_is_judged_over_five_minutes() {
        let mut r = RejectRate::default();
        for _ in 0..1000 {
            r.record_frame(10);
        }
        for _ in 0..9 {
            r.record_reject(10);
        }
        assert!(r.ok(10));
        r.record_reject(70);
        r.record_reject(70);
        assert!(!r.ok(70), "11 rejects in 1000 frames is over 1 %");
        // Six minutes later the old minutes have aged out.
        assert!(r.ok(70 + 360));
        assert_eq!(r.totals(70 + 360), (0, 0));
    }
}
