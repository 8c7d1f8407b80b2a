//! Typed rejects: every protocol violation has exactly one reason label
//! (`oap_rejects_total{reason}`), and no reject allocates.

/// Why a frame or byte stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    HeaderMalformed,
    FrameOversize,
    BadVersion,
    BadFlags,
    CapOnNonStart,
    Truncated,
    AckRegress,
    WindowExceeded,
    DecompressCap,
    BadHello,
    UnknownStream,
}

impl RejectReason {
    pub const fn label(self) -> &'static str {
        match self {
            RejectReason::HeaderMalformed => "header_malformed",
            RejectReason::FrameOversize => "frame_oversize",
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadFlags => "bad_flags",
            RejectReason::CapOnNonStart => "cap_on_non_start",
            RejectReason::Truncated => "truncated",
            RejectReason::AckRegress => "ack_regress",
            RejectReason::WindowExceeded => "window_exceeded",
            RejectReason::DecompressCap => "decompress_cap",
            RejectReason::BadHello => "bad_hello",
            RejectReason::UnknownStream => "unknown_stream",
        }
    }

    pub const ALL: [RejectReason; 11] = [
        RejectReason::HeaderMalformed,
        RejectReason::FrameOversize,
        RejectReason::BadVersion,
        RejectReason::BadFlags,
        RejectReason::CapOnNonStart,
        RejectReason::Truncated,
        RejectReason::AckRegress,
        RejectReason::WindowExceeded,
        RejectReason::DecompressCap,
        RejectReason::BadHello,
        RejectReason::UnknownStream,
    ];

    pub fn from_label(s: &str) -> Option<RejectReason> {
        Self::ALL.into_iter().find(|r| r.label() == s)
    }

    /// The code an ERROR frame reporting this reject carries.
    pub const fn error_code(self) -> u16 {
        match self {
            RejectReason::FrameOversize | RejectReason::DecompressCap => 413,
            RejectReason::BadVersion => 505,
            RejectReason::UnknownStream => 404,
            RejectReason::WindowExceeded => 429,
            _ => 400,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A refused frame: the reason label, the stream it concerned (when
/// known), and a fixed sentence for logs and ERROR frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Reject {
    pub reason: RejectReason,
    pub corr_id: Option<u64>,
    pub detail: &'static str,
}

impl Reject {
    pub const fn new(reason: RejectReason, detail: &'static str) -> Self {
        Self {
            reason,
            corr_id: None,
            detail,
        }
    }

    pub const fn on(reason: RejectReason, corr_id: u64, detail: &'static str) -> Self {
        Self {
            reason,
            corr_id: Some(corr_id),
            detail,
        }
    }
}
