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
    // Fault injection (drills)
    pub const CHAOS_FAULTS_INJECTED_TOTAL: &str = "chaos_faults_injected_total";
    pub const CHAOS_FAULTS_ACTIVE: &str = "chaos_faults_active";
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
    pub const STORAGE_CHUNKS: &str = "storage_chunks";
    pub const STORAGE_DEDUP_RATIO: &str = "storage_dedup_ratio";
    pub const STORAGE_MAX_BYTES: &str = "storage_max_bytes";
    pub const STORAGE_EVICTIONS_TOTAL: &str = "storage_evictions_total";
    // Index
    pub const INDEX_NAMES: &str = "index_names";
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
    // OAP/1 (the crates/oap health hook, recorded by the overlay)
    pub const OAP_READ_FRAME_SECONDS: &str = "oap_read_frame_seconds";
    pub const OAP_FRAMES_TOTAL: &str = "oap_frames_total";
    pub const OAP_REJECTS_TOTAL: &str = "oap_rejects_total";
    pub const OAP_ACK_WINDOW: &str = "oap_ack_window";
    pub const OAP_INFLIGHT_FRAMES: &str = "oap_inflight_frames";
}

/// Bucket upper bounds, in seconds, of request-scale latencies (HTTP
/// requests, hydration, range starts, downstream calls): from half a
/// millisecond to ten seconds, with the runbooks' thresholds (0.05, 0.1,
/// 0.15, 0.25, 0.75 s) on bucket boundaries so `histogram_quantile` is
/// exact where the alerts compare.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 10.0,
];

/// Registry commits: an fsync and signature checks, milliseconds to
/// seconds; 0.75 s (the commit alert) and 1.2 s (its escalation) are
/// boundaries.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.2, 2.5, 5.0, 10.0,
];

/// Reading one OAP/1 frame: microseconds for a small frame in memory, up to
/// tens of milliseconds for a 1 MiB frame off a slow peer; 0.02 s (the
/// decode alert) is a boundary.
pub const FRAME_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.02, 0.05, 0.1, 0.25, 1.0,
];

/// Every latency histogram and its buckets. The host's recorder renders
/// each as a Prometheus histogram (`_bucket`, `_sum`, `_count`); any other
/// histogram gets `REQUEST_BUCKETS`, so none is ever a summary.
pub fn histogram_buckets() -> [(&'static str, &'static [f64]); 6] {
    use names::*;
    [
        (REQUEST_LATENCY_SECONDS, REQUEST_BUCKETS),
        (OMNIGATE_HYDRATION_LATENCY_SECONDS, REQUEST_BUCKETS),
        (OMNIGATE_RANGE_START_LATENCY_SECONDS, REQUEST_BUCKETS),
        (DOWNSTREAM_LATENCY_SECONDS, REQUEST_BUCKETS),
        (COMMIT_LATENCY_SECONDS, COMMIT_BUCKETS),
        (OAP_READ_FRAME_SECONDS, FRAME_BUCKETS),
    ]
}

/// Creates a counter series at 0 for each value of `label`, so it exists
/// from the first scrape (a rate over a series that appears only with its
/// first event misses that event, and "should be 0" is uncheckable).
pub fn zero_counters(name: &'static str, label: &'static str, values: &[&'static str]) {
    for v in values {
        metrics::counter!(name, label => *v).increment(0);
    }
}

/// Creates a series for each value of `label` of a histogram, empty until
/// its first sample.
pub fn zero_histograms(name: &'static str, label: &'static str, values: &[&'static str]) {
    for v in values {
        let _ = metrics::histogram!(name, label => *v);
    }
}

/// The host's own series, and those every role shares, at 0: call once
/// when the recorder is installed, with the roles this node runs.
pub fn init_host_series(roles: &[&'static str]) {
    use names::*;
    metrics::counter!(BUS_LAGGED_TOTAL).increment(0);
    metrics::counter!(BUS_OVERFLOW_DROPPED_TOTAL).increment(0);
    metrics::counter!(ADMIN_AUTH_FAILURES_TOTAL).increment(0);
    for (target, fault) in crate::chaos::series() {
        metrics::counter!(CHAOS_FAULTS_INJECTED_TOTAL, "target" => target, "fault" => fault)
            .increment(0);
    }
    metrics::gauge!(CHAOS_FAULTS_ACTIVE).set(0.0);
    zero_counters(CONFIG_RELOADS_TOTAL, "result", &["ok", "error"]);
    // The serving layer's own refusals, on every listener.
    zero_counters(
        REJECTED_TOTAL,
        "reason",
        &["header_timeout", "tls_handshake"],
    );
    zero_counters(SERVICE_RESTARTS_TOTAL, "service", roles);
    for r in roles {
        metrics::gauge!(SERVICE_QUARANTINED, "service" => *r).set(0.0);
    }
    metrics::gauge!(INFLIGHT_REQUESTS).set(0.0);
    zero_histograms(REQUEST_LATENCY_SECONDS, "route", &["/readyz", "/metrics"]);
}

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
        CHAOS_FAULTS_INJECTED_TOTAL,
        "Calls a drill's injected fault hit (chaos.enabled), by target and fault"
    );
    describe_gauge!(
        CHAOS_FAULTS_ACTIVE,
        "Injected faults in force (0 outside a drill)"
    );
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
    describe_gauge!(STORAGE_CHUNKS, "Distinct chunks kept");
    describe_gauge!(
        STORAGE_DEDUP_RATIO,
        "Logical object bytes divided by stored chunk bytes (1.0 = no sharing)"
    );
    describe_gauge!(
        STORAGE_MAX_BYTES,
        Unit::Bytes,
        "The byte budget for stored chunk bytes (storage.max_bytes; 0 = none)"
    );
    describe_counter!(
        STORAGE_EVICTIONS_TOTAL,
        "Objects evicted (least recently used, unnamed) to make room under amnesia"
    );
    describe_gauge!(INDEX_NAMES, "Names with a current record");
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
    describe_histogram!(
        OAP_READ_FRAME_SECONDS,
        Unit::Seconds,
        "Time from the first byte of an OAP/1 frame arriving to the whole frame decoded"
    );
    describe_counter!(OAP_FRAMES_TOTAL, "OAP/1 frames decoded, by kind");
    describe_counter!(
        OAP_REJECTS_TOTAL,
        "OAP/1 frames or sessions rejected, by reason"
    );
    describe_gauge!(
        OAP_ACK_WINDOW,
        "Smallest send window a peer granted on a live overlay session (frames)"
    );
    describe_gauge!(
        OAP_INFLIGHT_FRAMES,
        "OAP/1 frames sent and not yet acknowledged, over all overlay sessions"
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
