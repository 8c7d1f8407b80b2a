//! Every way an overlay operation fails, in one type: a session's end, a
//! fetch that did not deliver, a dial that did not connect. Rendered once,
//! where it is logged or handed to another role as a `HandleError`.

use ron_kernel::HandleError;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The peer broke OAP/1 (the label is `rejected_total{reason}`'s).
    #[error("rejected: {0}")]
    Rejected(&'static str),
    #[error("no HELLO within overlay.handshake_timeout")]
    HelloTimeout,
    #[error("nothing received within overlay.idle_timeout")]
    IdleTimeout,
    #[error("a frame did not complete within overlay.read_timeout")]
    ReadTimeout,
    #[error("write timed out: the peer stopped reading")]
    WriteTimeout,
    #[error("the peer sent nothing for this fetch within overlay.read_timeout")]
    FetchStalled,
    #[error("the peer's key is no longer pinned")]
    Unpinned,
    /// A peer's bytes did not verify against the address asked for.
    #[error("{0}")]
    Corrupt(String),
    /// The peer ended the whole session with an ERROR frame.
    #[error("peer closed with error {code}: {message}")]
    PeerClosed { code: u16, message: String },
    /// The peer answered one request with an ERROR frame.
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("object larger than the overlay fetch limit")]
    TooLarge,
    #[error("session ended")]
    SessionEnded,
    #[error("no peer is connected")]
    NoPeer,
    /// This side could not queue a frame the session would not take.
    #[error("OAP/1: {0}")]
    Protocol(String),
    #[error("{what} timed out")]
    Timeout { what: &'static str },
    /// A TLS or QUIC handshake, or a QUIC stream, failed.
    #[error("{0}")]
    Handshake(String),
    #[error("the peer presented another node's key")]
    WrongKey,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A role this node runs (storage, registry) failed.
    #[error(transparent)]
    Handle(#[from] HandleError),
    /// A task doing this node's work (storing, hashing) was lost.
    #[error("task failed: {0}")]
    Task(String),
}

impl From<tokio::task::JoinError> for OverlayError {
    fn from(e: tokio::task::JoinError) -> Self {
        OverlayError::Task(e.to_string())
    }
}

impl From<OverlayError> for HandleError {
    fn from(e: OverlayError) -> Self {
        match e {
            OverlayError::Handle(h) => h,
            other => HandleError::Failed(other.to_string()),
        }
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;
