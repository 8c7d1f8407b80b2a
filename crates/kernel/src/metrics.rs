//! The one place metric names are declared. A role records metrics through
//! the `metrics` facade using these constants; the host installs the
//! Prometheus recorder and serves `/metrics`.
//!
//! Invariant: a metric name appears as a string literal only here, and each
//! is described (help text) once in `describe_all`.

pub mod names {
    // Bus
    pub const BUS_LAGGED_TOTAL: &str = "bus_lagged_total";
    pub const BUS_OVERFLOW_DROPPED_TOTAL: &str = "bus_overflow_dropped_total";
    pub const BUS_SUBSCRIBERS: &str = "bus_subscribers";
    // Supervisor
    pub const SERVICE_RESTARTS_TOTAL: &str = "service_restarts_total";
    pub const SERVICE_QUARANTINED: &str = "service_quarantined";
    // Node
    pub const NODE_READY: &str = "node_ready";
    pub const NODE_UPTIME_SECONDS: &str = "node_uptime_seconds";
    pub const CONFIG_VERSION: &str = "config_version";
    pub const CONFIG_RELOADS_TOTAL: &str = "config_reloads_total";
    // HTTP planes (every listener records these, labelled by route template)
    pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
    pub const REQUEST_LATENCY_SECONDS: &str = "request_latency_seconds";
    pub const INFLIGHT_REQUESTS: &str = "inflight_requests";
    pub const REJECTED_TOTAL: &str = "rejected_total";
    pub const ADMIN_AUTH_FAILURES_TOTAL: &str = "admin_auth_failures_total";
    // Omnigate
    pub const OMNIGATE_HYDRATION_LATENCY_SECONDS: &str = "omnigate_hydration_latency_seconds";
    pub const OMNIGATE_RANGE_START_LATENCY_SECONDS: &str = "omnigate_range_start_latency_seconds";
    pub const OMNIGATE_HEDGED_READS_TOTAL: &str = "omnigate_hedged_reads_total";
    pub const DOWNSTREAM_LATENCY_SECONDS: &str = "downstream_latency_seconds";
    pub const DOWNSTREAM_CONNECT_ERRORS_TOTAL: &str = "downstream_connect_errors_total";
    // Storage
    pub const STORAGE_INTEGRITY_ERRORS_TOTAL: &str = "storage_integrity_errors_total";
    pub const STORAGE_BYTES_STORED: &str = "storage_bytes_stored";
    pub const STORAGE_CHUNKS_TOTAL: &str = "storage_chunks_total";
    pub const STORAGE_DEDUP_RATIO: &str = "storage_dedup_ratio";
    // Index
    pub const INDEX_NAMES_TOTAL: &str = "index_names_total";
    // Mailbox
    pub const MAILBOX_DEPTH: &str = "mailbox_depth";
    pub const MAILBOX_REDELIVERIES_TOTAL: &str = "mailbox_redeliveries_total";
    pub const MAILBOX_DEAD_LETTERS_TOTAL: &str = "mailbox_dead_letters_total";
    // Registry
    pub const COMMIT_LATENCY_SECONDS: &str = "commit_latency_seconds";
    pub const REGISTRY_HEAD_VERSION: &str = "registry_head_version";
    pub const REGISTRY_CHECKPOINT_AGE_SECONDS: &str = "registry_checkpoint_age_seconds";
    pub const COMMIT_CAS_FAIL_TOTAL: &str = "commit_cas_fail_total";
    pub const APPROVAL_VERIFY_TOTAL: &str = "approval_verify_total";
    pub const REGISTRY_STREAM_DROPPED_TOTAL: &str = "registry_stream_dropped_total";
    pub const REGISTRY_STREAM_CLIENTS: &str = "registry_stream_clients";
    pub const REGISTRY_FOLLOWER_APPLIED_TOTAL: &str = "registry_follower_applied_total";
    pub const REGISTRY_FOLLOWER_REJECTED_TOTAL: &str = "registry_follower_rejected_total";
    // Overlay
    pub const HANDSHAKE_TOTAL: &str = "handshake_total";
    pub const OVERLAY_SESSIONS_ACTIVE: &str = "overlay_sessions_active";
    pub const OVERLAY_INFLIGHT_FRAMES: &str = "overlay_inflight_frames";
    pub const OVERLAY_FRAMES_TOTAL: &str = "overlay_frames_total";
    pub const OVERLAY_BYTES_TOTAL: &str = "overlay_bytes_total";
}

/// Registers help text for every metric. Call once after installing the
/// recorder.
/// Adds one to a gauge while it lives (a session, a stream client).
#[derive(Debug)]
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn up(name: &'static str) -> Self {
        let g = metrics::gauge!(name);
        g.increment(1.0);
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pub fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(
        BUS_LAGGED_TOTAL,
        "Events a slow bus subscriber missed and had to reconcile from a snapshot"
    );
    describe_counter!(
        BUS_OVERFLOW_DROPPED_TOTAL,
        "Bus events published while no subscriber could take them"
    );
    describe_gauge!(BUS_SUBSCRIBERS, "Current bus subscribers");
    describe_counter!(
        SERVICE_RESTARTS_TOTAL,
        "Role task exits (error, panic or unexpected return) followed by a restart attempt"
    );
    describe_gauge!(
        SERVICE_QUARANTINED,
        "1 while a role is quarantined after too many restarts"
    );
    describe_gauge!(NODE_READY, "1 when /readyz answers 200");
    describe_gauge!(NODE_UPTIME_SECONDS, Unit::Seconds, "Seconds since start");
    describe_gauge!(
        CONFIG_VERSION,
        "Version of the config in force (1 at start, +1 per reload)"
    );
    describe_counter!(CONFIG_RELOADS_TOTAL, "Reload attempts by result");
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route template, method and status"
    );
    describe_histogram!(
        REQUEST_LATENCY_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route template"
    );
    describe_gauge!(INFLIGHT_REQUESTS, "HTTP requests being served, by listener");
    describe_counter!(REJECTED_TOTAL, "Requests refused by admission, by reason");
    describe_histogram!(
        OMNIGATE_HYDRATION_LATENCY_SECONDS,
        Unit::Seconds,
        "Time to answer a hydrated view (index, then storage and mailbox in parallel)"
    );
    describe_histogram!(
        OMNIGATE_RANGE_START_LATENCY_SECONDS,
        Unit::Seconds,
        "Time from a ranged object GET arriving to its first body byte"
    );
    describe_counter!(
        OMNIGATE_HEDGED_READS_TOTAL,
        "Hedged object reads by outcome (hedge_won, primary_won, budget_exhausted)"
    );
    describe_histogram!(
        DOWNSTREAM_LATENCY_SECONDS,
        Unit::Seconds,
        "Time for a remote downstream to answer (response head), by service"
    );
    describe_counter!(
        DOWNSTREAM_CONNECT_ERRORS_TOTAL,
        "Connections to a remote downstream that failed or timed out, by service"
    );
    describe_counter!(
        STORAGE_INTEGRITY_ERRORS_TOTAL,
        "Chunks or object records that failed verification (never served)"
    );
    describe_gauge!(
        STORAGE_BYTES_STORED,
        Unit::Bytes,
        "Bytes of distinct chunks kept"
    );
    describe_gauge!(STORAGE_CHUNKS_TOTAL, "Distinct chunks kept");
    describe_gauge!(
        STORAGE_DEDUP_RATIO,
        "Logical object bytes divided by stored chunk bytes (1.0 = no sharing)"
    );
    describe_gauge!(INDEX_NAMES_TOTAL, "Names with a current record");
    describe_gauge!(
        MAILBOX_DEPTH,
        "Messages waiting (sent, not acknowledged, not dead), by topic"
    );
    describe_counter!(
        MAILBOX_REDELIVERIES_TOTAL,
        "Deliveries of a message that had been delivered before"
    );
    describe_counter!(
        MAILBOX_DEAD_LETTERS_TOTAL,
        "Messages moved to a dead-letter list after their last failed delivery"
    );
    describe_histogram!(
        COMMIT_LATENCY_SECONDS,
        Unit::Seconds,
        "Registry commit time: quorum check and the durable write of the new head"
    );
    describe_gauge!(REGISTRY_HEAD_VERSION, "Version of the registry head");
    describe_gauge!(
        REGISTRY_CHECKPOINT_AGE_SECONDS,
        Unit::Seconds,
        "Age of the last consistent registry checkpoint file"
    );
    describe_counter!(
        COMMIT_CAS_FAIL_TOTAL,
        "Registry commits refused because the head had moved (chain_mismatch)"
    );
    describe_counter!(
        APPROVAL_VERIFY_TOTAL,
        "Registry approvals checked, by result (valid, invalid, unknown_signer)"
    );
    describe_counter!(
        REGISTRY_STREAM_DROPPED_TOTAL,
        "Registry stream clients dropped for falling behind"
    );
    describe_gauge!(REGISTRY_STREAM_CLIENTS, "Open registry stream connections");
    describe_counter!(
        REGISTRY_FOLLOWER_APPLIED_TOTAL,
        "Artifacts a follower verified and applied from its upstream or an overlay peer"
    );
    describe_counter!(
        REGISTRY_FOLLOWER_REJECTED_TOTAL,
        "Artifacts a follower or an overlay sync refused (bad chain, hash or quorum), by reason"
    );
    describe_counter!(
        HANDSHAKE_TOTAL,
        "Overlay TLS handshakes by result (ok, refused, timeout) and key exchange group"
    );
    describe_gauge!(
        OVERLAY_SESSIONS_ACTIVE,
        "Overlay sessions past TLS and HELLO"
    );
    describe_gauge!(
        OVERLAY_INFLIGHT_FRAMES,
        "Overlay frames sent and not yet acknowledged, over all sessions"
    );
    describe_counter!(
        OVERLAY_FRAMES_TOTAL,
        "OAP/1 frames on overlay sessions by direction (in, out) and kind"
    );
    describe_counter!(
        OVERLAY_BYTES_TOTAL,
        Unit::Bytes,
        "OAP/1 frame bytes on overlay sessions by direction (in, out)"
    );
    describe_counter!(
        ADMIN_AUTH_FAILURES_TOTAL,
        "Admin requests refused for a missing or wrong bearer token"
    );
}
