//! One OAP/1 session's state, without I/O and without a clock (after
//! quinn-proto): the driver (`session.rs`) hands it the bytes it read
//! (`handle_input`), the commands other tasks send (`handle_command`),
//! what the blocking pool found (`handle_served`) and the time whenever
//! its deadline passes (`handle_timeout`); it takes the bytes to write
//! (`transmit`, `on_written`), the next deadline (`poll_timeout`) and the
//! work only the node can do (`poll_action`: announce the session, look
//! up a request, read more of a blob, hand over gossip or synced
//! versions). Every input carries `now`, so every timeout, window and
//! reject is tested here with simulated time and no socket.
//!
//! What is queued is bounded by the protocol: data frames by the credit
//! the peer granted and `peer.inflight_frames`, ACKs and answers by what
//! the peer sent.
//!
//! Timeouts: no HELLO within `handshake_timeout`, a frame that started
//! arriving and is not complete within `read_timeout`, queued frames the
//! peer takes no byte of within `write_timeout`, nothing received for
//! `idle_timeout` — each ends the session and is counted in
//! `rejected_total{reason}`. An answer to our fetch that makes no progress
//! for `read_timeout` fails that fetch alone (`fetch_stalled`). Each side
//! pings (app protocol 4) every quarter of `idle_timeout`, so a live peer
//! is never idle; the answer's round trip is the session's `rtt_ms`.

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use metrics::Counter;
use ron_kernel::metrics::names;
use ron_oap::{
    Decoded, Decoder, DecoderConfig, Encoder, Event, Flags, FrameKind, FrameSpec, OapMetrics,
    OutFrame, Reject, Session, SessionConfig, HEADER_LEN,
};

use crate::apps::Budget;
use crate::blob::{Pieces, Refusal};
use crate::error::{OverlayError, Result};
use crate::oap_health::OapHook;
use crate::proto::{PROTO_BLOB, PROTO_GOSSIP, PROTO_PING, PROTO_SYNC};
use crate::state::{Command, Direction, Limits, SessionInfo};

pub(crate) use crate::proto::BLOB_FRAME;
/// Unanswered pings remembered per session.
const PINGS: usize = 8;

/// A frame kind's place in `FrameKind::ALL` (declared in that order).
fn kind_index(k: FrameKind) -> usize {
    k as usize
}

/// `overlay_frames_total{dir,kind}` and `overlay_bytes_total{dir}` for one
/// direction, looked up once per session.
struct Wire {
    frames: [Counter; 6],
    bytes: Counter,
}

impl Wire {
    fn new(dir: &'static str) -> Self {
        Wire {
            frames: FrameKind::ALL.map(|k| {
                metrics::counter!(names::OVERLAY_FRAMES_TOTAL, "dir" => dir, "kind" => k.label())
            }),
            bytes: metrics::counter!(names::OVERLAY_BYTES_TOTAL, "dir" => dir),
        }
    }
}

/// Every reason `closed` is called with (besides the OAP/1 reject labels).
pub const CLOSE_REASONS: &[&str] = &[
    "blob_mismatch",
    "fetch_stalled",
    "gossip_burst",
    "hello_timeout",
    "idle_timeout",
    "peer_rps",
    "read_timeout",
    "truncated",
    "unpinned",
    "write_timeout",
];

pub(crate) fn closed(reason: &'static str) {
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// Most bytes, and slices, one `transmit` hands the stream: four 64 KiB
/// frames with their headers, as one vectored write. Over TLS that is one
/// `writev` and full 16 KiB records across frame boundaries, where one
/// write per part made a 38-byte record and a system call of its own for
/// every frame header. The TLS streams' rustls buffer limit
/// (`net::TLS_BUFFER_LIMIT`) takes a whole batch.
pub(crate) const WRITE_BATCH: usize = 4 * (BLOB_FRAME + HEADER_LEN);
pub(crate) const WRITE_SLICES: usize = 16;

/// Frames waiting for the wire, in order.
struct Outbox {
    frames: VecDeque<(OutFrame, FrameKind)>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Written since the last flush.
    dirty: bool,
    /// Since when frames have waited without the peer taking any bytes
    /// (`None` while nothing waits): `write_timeout` runs from here.
    waiting_since: Option<Instant>,
    wire: Wire,
    info: Arc<SessionInfo>,
}

impl Outbox {
    fn new(info: Arc<SessionInfo>) -> Self {
        Outbox {
            frames: VecDeque::new(),
            written: 0,
            dirty: false,
            waiting_since: None,
            wire: Wire::new("out"),
            info,
        }
    }

    fn push(&mut self, now: Instant, f: OutFrame, kind: FrameKind) {
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        self.frames.push_back((f, kind));
    }

    /// Header, capability and payload slices of the queued frames from the
    /// first unwritten byte, up to `WRITE_BATCH` bytes (at least one
    /// slice): how many slices, and their bytes.
    fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>; WRITE_SLICES]) -> (usize, usize) {
        let (mut n_iov, mut bytes) = (0, 0);
        let mut skip = self.written;
        for (f, _) in &self.frames {
            for part in [f.header_bytes(), &f.cap()[..], &f.payload()[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let part = &part[skip..];
                skip = 0;
                if n_iov == WRITE_SLICES || (bytes > 0 && bytes + part.len() > WRITE_BATCH) {
                    return (n_iov, bytes);
                }
                iov[n_iov] = IoSlice::new(part);
                n_iov += 1;
                bytes += part.len();
            }
        }
        (n_iov, bytes)
    }

    /// The stream took `n` more bytes: retire every frame they finish (an
    /// empty frame finishes with the bytes before it).
    fn advance(&mut self, now: Instant, mut n: usize) {
        self.dirty = true;
        self.waiting_since = Some(now);
        while let Some((f, kind)) = self.frames.front() {
            let left = f.len() - self.written;
            if n < left {
                self.written += n;
                break;
            }
            n -= left;
            let total = f.len() as u64;
            self.wire.frames[kind_index(*kind)].increment(1);
            self.wire.bytes.increment(total);
            self.info.frames_out.fetch_add(1, Relaxed);
            self.info.bytes_out.fetch_add(total, Relaxed);
            self.frames.pop_front();
            self.written = 0;
        }
    }
}

/// A fetch this side asked for.
struct Pending {
    /// Where the payloads go as they arrive.
    sink: tokio::sync::mpsc::UnboundedSender<Bytes>,
    size: usize,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
    /// When it was asked for or last brought a frame: an answer that
    /// makes no progress for `read_timeout` is given up.
    progress: Instant,
}

/// A response this side is sending: its frames' payloads, one frame per
/// credit of the peer's window. A blob's frames are read from the store
/// ahead of the window, `READ_AHEAD` pieces at a time.
pub(crate) struct Outgoing {
    proto: u16,
    frames: VecDeque<Bytes>,
    started: bool,
    /// Where the rest comes from: `None` while a read-ahead is running (or
    /// when everything is already in `frames`).
    source: Option<Pieces>,
    /// Bytes the source still owes.
    left: u64,
}

/// Store pieces read per read-ahead (a new one starts when no more than
/// this many frames are queued: at most two batches, 2 MiB, per stream in
/// memory). 8 measured about a tenth slower on the node→node bench (one
/// blocking-pool hop per 512 KiB), 32 no faster than 16.
pub(crate) const READ_AHEAD: usize = 16;

/// Store pieces read before an answer's first frame goes: few, so the
/// asker's first verified byte does not wait for a whole read-ahead (the
/// next one starts as soon as these are queued).
pub(crate) const FIRST_PIECES: usize = 2;

/// Reads up to `READ_AHEAD` pieces of a blob (blocking: the store).
pub(crate) fn read_ahead(src: &mut Pieces, left: &mut u64) -> Result<Vec<Bytes>, Refusal> {
    read_pieces(src, left, READ_AHEAD)
}

/// Reads up to `n` pieces of a blob, no more than `left` bytes.
fn read_pieces(src: &mut Pieces, left: &mut u64, n: usize) -> Result<Vec<Bytes>, Refusal> {
    let mut pieces = Vec::with_capacity(n);
    while pieces.len() < n && *left > 0 {
        match src.next() {
            Some(Ok(b)) if !b.is_empty() && b.len() as u64 <= *left => {
                *left -= b.len() as u64;
                pieces.push(b);
            }
            Some(Ok(_)) | None => {
                return Err(Refusal::new(
                    500,
                    "store",
                    "the stored object does not have its recorded size",
                ))
            }
            Some(Err(r)) => return Err(r),
        }
    }
    Ok(pieces)
}

impl Outgoing {
    /// A response whose frames are all known (an empty one is one empty
    /// frame: every request is answered).
    pub(crate) fn whole(proto: u16, mut frames: VecDeque<Bytes>) -> Self {
        if frames.is_empty() {
            frames.push_back(Bytes::new());
        }
        Outgoing {
            proto,
            frames,
            started: false,
            source: None,
            left: 0,
        }
    }

    /// A blob answer: the `head` frames (size and proof), then `len`
    /// bytes from the store, with their first pieces read (blocking).
    pub(crate) fn blob(head: Vec<Bytes>, len: u64, mut source: Pieces) -> Result<Self, Refusal> {
        let mut left = len;
        let first = read_pieces(&mut source, &mut left, FIRST_PIECES)?;
        let mut frames = VecDeque::with_capacity(head.len() + 2 * READ_AHEAD);
        frames.extend(head);
        let mut o = Outgoing {
            proto: PROTO_BLOB,
            frames,
            started: false,
            source: None,
            left,
        };
        o.refilled(first, source, left);
        if o.frames.is_empty() {
            o.frames.push_back(Bytes::new());
        }
        Ok(o)
    }

    /// Queues pieces a read-ahead brought, each cut to at most 64 KiB
    /// frames (slices, not copies; the store's pieces are already that
    /// size).
    fn refilled(&mut self, pieces: Vec<Bytes>, source: Pieces, left: u64) {
        for data in pieces {
            let mut off = 0;
            while off < data.len() {
                let end = (off + BLOB_FRAME).min(data.len());
                self.frames.push_back(data.slice(off..end));
                off = end;
            }
        }
        self.left = left;
        self.source = (left > 0).then_some(source);
    }
}

/// What the blocking pool hands back to a session.
pub(crate) enum Served {
    /// The answer to request `corr` of `proto`: what to send, `None` when
    /// it is not here, or why it is refused.
    Answer(u64, u16, Result<Option<Outgoing>, Refusal>),
    /// A read-ahead of blob stream `corr`: the pieces, the source to read on
    /// from and how many bytes it still owes; or why the store failed.
    More(u64, Result<(Vec<Bytes>, Pieces, u64), Refusal>),
}

/// Work the session needs from the node (its shared state, its store, its
/// registry); the driver does it and reports back through `handle_served`
/// or `handle_command`.
pub(crate) enum Action {
    /// HELLO went both ways and the peer is who it authenticated as.
    Up { ack_window: u32 },
    /// The peer asks for something (a blob, registry versions): look it up
    /// and answer with `Served::Answer(corr, proto, …)`.
    Serve {
        corr: u64,
        proto: u16,
        request: Bytes,
    },
    /// Blob stream `corr` runs low on read frames: `read_ahead` and answer
    /// with `Served::More(corr, …)`.
    ReadMore {
        corr: u64,
        source: Pieces,
        left: u64,
    },
    /// A gossip message (within the peer's burst budget).
    Gossip(Bytes),
    /// Registry versions the peer sent in answer to our sync, in order.
    Synced(Vec<Bytes>),
}

/// The state of one OAP/1 session (see the module docs).
pub(crate) struct SessionCore {
    limits: Limits,
    /// The key the peer authenticated with; its HELLO must name it.
    peer_key: [u8; 32],
    dec: Decoder,
    enc: Encoder,
    session: Session<OapHook>,
    oap: OapHook,
    /// `peer.inflight_frames`.
    inflight_cap: u64,
    reported_inflight: u64,
    inflight_gauge: metrics::Gauge,
    out: Outbox,
    wire_in: Wire,
    info: Arc<SessionInfo>,
    started: Instant,
    last_rx: Instant,
    /// Since when a frame has been arriving and is not complete.
    partial_since: Option<Instant>,
    next_ping: Instant,
    up: bool,
    /// Streams this side opens: odd ids from the dialer, even from the
    /// acceptor, so the two never collide.
    next_corr: u64,
    pending: BTreeMap<u64, Pending>,
    outgoing: BTreeMap<u64, Outgoing>,
    syncs: BTreeMap<u64, Vec<Bytes>>,
    pings: BTreeMap<u64, Instant>,
    gossip_budget: Budget,
    /// Requests the peer starts (`peer.max_rps`).
    requests: Budget,
    actions: VecDeque<Action>,
}

impl SessionCore {
    /// A session that has queued its HELLO (OAP-1 §4: the dialer's is the
    /// request, the acceptor's the response; both are sent at once,
    /// neither waits for the other).
    pub(crate) fn new(
        now: Instant,
        limits: Limits,
        node_id: &str,
        peer_key: [u8; 32],
        info: Arc<SessionInfo>,
        oap: OapHook,
    ) -> Self {
        let direction = info.direction;
        let rps = f64::from(limits.peer.max_rps);
        let mut core = SessionCore {
            limits,
            peer_key,
            dec: Decoder::new(DecoderConfig::default()),
            // Overlay frames carry no capabilities: one arena (the
            // smallest the pool makes) instead of the default four, which
            // an idle session would hold for nothing.
            enc: Encoder::new(ron_oap::FramePool::new(1, 0), ron_oap::MAX_FRAME_BYTES),
            session: Session::with_metrics(
                SessionConfig {
                    local_window: limits.peer.send_window_frames,
                    max_streams: limits.peer.max_streams as usize,
                    ..SessionConfig::default()
                },
                oap.clone(),
            ),
            oap,
            inflight_cap: u64::from(limits.peer.inflight_frames),
            reported_inflight: 0,
            inflight_gauge: metrics::gauge!(names::OVERLAY_INFLIGHT_FRAMES, "state" => "all"),
            out: Outbox::new(info.clone()),
            wire_in: Wire::new("in"),
            info,
            started: now,
            last_rx: now,
            partial_since: None,
            next_ping: now + limits.handshake_timeout,
            up: false,
            next_corr: if direction == Direction::Out { 1 } else { 2 },
            pending: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            syncs: BTreeMap::new(),
            pings: BTreeMap::new(),
            gossip_budget: Budget::gossip(now),
            requests: Budget::with(rps, rps, now),
            actions: VecDeque::new(),
        };
        let hello = core.session.local_hello(node_id);
        let flags = match direction {
            Direction::Out => Flags::REQ,
            Direction::In => Flags::RESP,
        };
        if let Ok(f) = core
            .enc
            .encode(&FrameSpec::hello(flags), &[], Bytes::from(hello.to_json()))
        {
            core.out.push(now, f, FrameKind::Hello);
        }
        core
    }

    /// Whether HELLO went both ways (commands are taken from then on).
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Work for the node, in the order it arose.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes were read into `buf` (at `now`): decodes and handles every
    /// whole frame in it. Returns how many bytes the next frame still
    /// needs; an error ends the session (its ERROR frame is queued).
    pub(crate) fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) -> Result<usize> {
        // From the frame's first byte (or the read that brought it whole)
        // to decoded.
        let mut began = self.partial_since.unwrap_or(now);
        self.last_rx = now;
        let mut decoded_any = false;
        let need = loop {
            let frame = match self.dec.decode(buf) {
                Err(r) => {
                    // The session counts its own rejects; the decoder's
                    // are counted here.
                    self.oap.reject(r.reason);
                    return Err(self.reject(now, &r));
                }
                Ok(Decoded::NeedMore(n)) => break n,
                Ok(Decoded::Frame(f)) => f,
            };
            self.oap
                .read_frame_seconds(now.saturating_duration_since(began).as_secs_f64());
            began = now;
            decoded_any = true;
            let n = (HEADER_LEN + frame.cap.len() + frame.payload.len()) as u64;
            self.wire_in.frames[kind_index(frame.kind())].increment(1);
            self.wire_in.bytes.increment(n);
            self.info.frames_in.fetch_add(1, Relaxed);
            self.info.bytes_in.fetch_add(n, Relaxed);
            let event = match self.session.on_frame(frame) {
                Err(r) => return Err(self.reject(now, &r)),
                Ok(e) => e,
            };
            self.on_event(now, event)?;
        };
        if buf.is_empty() {
            self.partial_since = None;
        } else if decoded_any || self.partial_since.is_none() {
            // A new frame has begun arriving.
            self.partial_since = Some(now);
        }
        self.pump(now)?;
        Ok(need)
    }

    /// The peer closed its side; `buf` holds what was left undecoded.
    pub(crate) fn handle_eof(&mut self, buf: &BytesMut) {
        if !buf.is_empty() {
            closed("truncated");
        }
    }

    /// The next instant `handle_timeout` has something to do.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let l = &self.limits;
        let mut w = (self.last_rx + l.idle_timeout).min(self.next_ping);
        if !self.up {
            w = w.min(self.started + l.handshake_timeout);
        }
        let fetching = self.pending.values().map(|p| p.progress).min();
        for t in [self.partial_since, fetching].into_iter().flatten() {
            w = w.min(t + l.read_timeout);
        }
        if let Some(t) = self.out.waiting_since {
            w = w.min(t + l.write_timeout);
        }
        w
    }

    /// Time passed: ends the session on a timeout, gives up fetches that
    /// stalled, pings when it is time.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        let l = self.limits;
        if !self.up && now >= self.started + l.handshake_timeout {
            closed("hello_timeout");
            return Err(OverlayError::HelloTimeout);
        }
        if now >= self.last_rx + l.idle_timeout {
            closed("idle_timeout");
            return Err(OverlayError::IdleTimeout);
        }
        if self
            .partial_since
            .is_some_and(|t| now >= t + l.read_timeout)
        {
            closed("read_timeout");
            return Err(OverlayError::ReadTimeout);
        }
        if self
            .out
            .waiting_since
            .is_some_and(|t| now >= t + l.write_timeout)
        {
            closed("write_timeout");
            return Err(OverlayError::WriteTimeout);
        }
        // Answers that stopped coming: the fetch fails (the asker tries
        // its next peer) and the peer is told to stop.
        let stalled: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.progress + l.read_timeout)
            .map(|(c, _)| *c)
            .collect();
        for corr in stalled {
            if let Some(p) = self.pending.remove(&corr) {
                closed("fetch_stalled");
                let e = OverlayError::FetchStalled;
                self.cancel(now, PROTO_BLOB, corr, &e.to_string());
                let _ = p.reply.send(Err(e));
            }
        }
        if self.up && now >= self.next_ping {
            let corr = self.open();
            let spec = FrameSpec::start(PROTO_PING, corr, Flags::REQ).with_flags(Flags::END);
            self.send(now, spec, Bytes::new())?;
            if self.pings.len() >= PINGS {
                if let Some((old, _)) = self.pings.pop_first() {
                    self.session.abandon(old);
                }
            }
            self.pings.insert(corr, now);
            self.next_ping = now + l.idle_timeout / 4;
        }
        Ok(())
    }

    /// Work another task hands this session (taken once it is up).
    pub(crate) fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<()> {
        match cmd {
            Command::Fetch {
                request,
                sink,
                reply,
            } => {
                let corr = self.open();
                let spec = FrameSpec::start(PROTO_BLOB, corr, Flags::REQ).with_flags(Flags::END);
                self.send(now, spec, request)?;
                self.pending.insert(
                    corr,
                    Pending {
                        sink,
                        size: 0,
                        reply,
                        progress: now,
                    },
                );
            }
            Command::Corrupt { detail } => {
                // Wrong bytes: never stored, never served; the peer is
                // disconnected and counted.
                closed("blob_mismatch");
                return Err(OverlayError::Corrupt(detail));
            }
            Command::Gossip { payload } => {
                let corr = self.open();
                let spec =
                    FrameSpec::start(PROTO_GOSSIP, corr, Flags::EVENT).with_flags(Flags::END);
                self.send(now, spec, payload)?;
            }
            Command::Sync { since } => {
                // One sync at a time per peer.
                if self.syncs.is_empty() {
                    let corr = self.open();
                    let spec =
                        FrameSpec::start(PROTO_SYNC, corr, Flags::REQ).with_flags(Flags::END);
                    let body = Bytes::from(serde_json::json!({ "since": since }).to_string());
                    self.send(now, spec, body)?;
                    self.syncs.insert(corr, Vec::new());
                }
            }
        }
        self.pump(now)
    }

    /// What the blocking pool found for a request or a read-ahead.
    pub(crate) fn handle_served(&mut self, now: Instant, served: Served) -> Result<()> {
        match served {
            Served::Answer(corr, _, Ok(Some(o))) => {
                self.outgoing.insert(corr, o);
            }
            Served::Answer(corr, proto, Ok(None)) => {
                self.error(now, proto, corr, 404, "not_found", "not found")
            }
            Served::Answer(corr, proto, Err(r)) => {
                self.error(now, proto, corr, r.status, r.reason, &r.detail)
            }
            Served::More(corr, Ok((pieces, src, left))) => {
                // Gone when the peer ended the stream meanwhile.
                if let Some(o) = self.outgoing.get_mut(&corr) {
                    o.refilled(pieces, src, left);
                }
            }
            Served::More(corr, Err(r)) => {
                if self.outgoing.remove(&corr).is_some() {
                    self.error(now, PROTO_BLOB, corr, r.status, r.reason, &r.detail);
                }
            }
        }
        self.pump(now)
    }

    /// Slices of the queued frames for one vectored write: how many, and
    /// their bytes (0 when nothing waits).
    pub(crate) fn transmit<'a>(&'a self, iov: &mut [IoSlice<'a>; WRITE_SLICES]) -> (usize, usize) {
        self.out.gather(iov)
    }

    /// The stream took `n` bytes of what `transmit` offered.
    pub(crate) fn on_written(&mut self, now: Instant, n: usize) {
        self.out.advance(now, n);
    }

    /// Whether bytes were written since the last flush.
    pub(crate) fn needs_flush(&self) -> bool {
        self.out.dirty
    }

    /// Everything queued is written and flushed.
    pub(crate) fn on_flushed(&mut self) {
        self.out.dirty = false;
        if self.out.frames.is_empty() {
            self.out.waiting_since = None;
        }
    }

    /// Whether queued frames have waited `write_timeout` without the peer
    /// taking a byte (then closing does not wait for them).
    pub(crate) fn write_stalled(&self, now: Instant) -> bool {
        self.out
            .waiting_since
            .is_some_and(|t| now >= t + self.limits.write_timeout)
    }

    /// Unacknowledged frames went from the first to the second since last
    /// asked (`None`: unchanged); the session's gauges follow.
    pub(crate) fn inflight_change(&mut self) -> Option<(u64, u64)> {
        let now = self.session.inflight_frames();
        self.move_inflight(now)
    }

    /// The session is over: its unacknowledged frames no longer count.
    pub(crate) fn release_inflight(&mut self) -> Option<(u64, u64)> {
        self.move_inflight(0)
    }

    fn move_inflight(&mut self, now: u64) -> Option<(u64, u64)> {
        let was = self.reported_inflight;
        if now == was {
            return None;
        }
        let delta = now as f64 - was as f64;
        self.inflight_gauge.increment(delta);
        self.oap.inflight_delta(delta);
        self.info.inflight.store(now, Relaxed);
        self.reported_inflight = now;
        Some((was, now))
    }

    /// Queues a frame as it is (tests of the write path).
    #[cfg(test)]
    pub(crate) fn queue(&mut self, now: Instant, f: OutFrame, kind: FrameKind) {
        self.out.push(now, f, kind);
    }

    /// A new stream id of ours.
    fn open(&mut self) -> u64 {
        let corr = self.next_corr;
        self.next_corr += 2;
        corr
    }

    /// Queues a stream frame the session agrees to (credit, state).
    fn send(&mut self, now: Instant, spec: FrameSpec, payload: Bytes) -> Result<()> {
        self.session
            .on_send(&spec)
            .map_err(|e| OverlayError::Protocol(e.to_string()))?;
        let f = self
            .enc
            .encode(&spec, &[], payload)
            .map_err(|e| OverlayError::Protocol(e.to_string()))?;
        self.out.push(now, f, spec.kind());
        Ok(())
    }

    /// Ends stream `corr` of `proto` with an ERROR frame.
    fn error(&mut self, now: Instant, proto: u16, corr: u64, code: u16, reason: &str, msg: &str) {
        let body = serde_json::json!({"reason": reason, "message": msg}).to_string();
        let spec = FrameSpec::error(proto, corr, code, Flags::RESP);
        let _ = self.send(now, spec, Bytes::from(body));
    }

    /// Gives up on the answer to our request `corr`: an ERROR frame tells
    /// the peer to stop sending it.
    fn cancel(&mut self, now: Instant, proto: u16, corr: u64, message: &str) {
        let body = serde_json::json!({"reason": "fetch_stalled", "message": message}).to_string();
        let spec = FrameSpec::error(proto, corr, 408, Flags::REQ);
        let _ = self.send(now, spec, Bytes::from(body));
    }

    /// Queues the ERROR frame for a reject (sent before the stream
    /// closes: never a silent close) and counts it.
    fn reject(&mut self, now: Instant, r: &Reject) -> OverlayError {
        let body = serde_json::json!({"reason": r.reason.label(), "message": r.detail}).to_string();
        let spec = FrameSpec::error(
            0,
            r.corr_id.unwrap_or(0),
            r.reason.error_code(),
            Flags::RESP,
        );
        if let Ok(f) = self.enc.encode(&spec, &[], Bytes::from(body)) {
            self.out.push(now, f, FrameKind::Error);
        }
        closed(r.reason.label());
        OverlayError::Rejected(r.reason.label())
    }

    /// Acts on one received frame.
    fn on_event(&mut self, now: Instant, event: Event) -> Result<()> {
        // Requests a peer starts are rate-limited (`peer.max_rps`).
        if let Event::Start {
            corr_id,
            app_proto_id,
            flags,
            ..
        } = &event
        {
            if flags.contains(Flags::REQ) && !self.requests.take(now) {
                closed("peer_rps");
                let msg = "more requests than overlay.peer.max_rps";
                self.error(now, *app_proto_id, *corr_id, 429, "peer_rps", msg);
                return Ok(());
            }
        }
        match event {
            Event::Hello(h) => {
                // `ed25519:<hex>` and bare hex name the same key.
                if h.node_key() != Some(self.peer_key) {
                    let r = Reject::new(
                        ron_oap::reject::RejectReason::BadHello,
                        "HELLO node_id is not the key the peer authenticated with",
                    );
                    return Err(self.reject(now, &r));
                }
                self.info.ack_window.store(u64::from(h.ack_window), Relaxed);
                self.up = true;
                // Ping at once (the first rtt), then every quarter of the
                // idle timeout.
                self.next_ping = now;
                self.actions.push_back(Action::Up {
                    ack_window: h.ack_window,
                });
            }
            Event::Start {
                corr_id,
                app_proto_id: PROTO_PING,
                flags,
                payload,
                ..
            } => {
                if flags.contains(Flags::REQ) {
                    let spec =
                        FrameSpec::start(PROTO_PING, corr_id, Flags::RESP).with_flags(Flags::END);
                    self.send(now, spec, payload)?;
                } else if let Some(sent) = self.pings.remove(&corr_id) {
                    let us = now
                        .saturating_duration_since(sent)
                        .as_micros()
                        .clamp(1, u128::from(u64::MAX));
                    self.info.rtt_us.store(us as u64, Relaxed);
                }
            }
            Event::Start {
                corr_id,
                app_proto_id: proto @ (PROTO_BLOB | PROTO_SYNC),
                flags,
                payload,
                ..
            } if flags.contains(Flags::REQ) => self.actions.push_back(Action::Serve {
                corr: corr_id,
                proto,
                request: payload,
            }),
            Event::Start {
                app_proto_id: PROTO_GOSSIP,
                payload,
                ..
            } => {
                if self.gossip_budget.take(now) {
                    self.actions.push_back(Action::Gossip(payload));
                } else {
                    closed("gossip_burst");
                }
            }
            Event::Start {
                corr_id,
                app_proto_id,
                flags,
                ..
            } if flags.contains(Flags::REQ) => {
                let msg = "this node does not speak that app protocol";
                self.error(now, app_proto_id, corr_id, 501, "unknown_app_proto", msg);
            }
            Event::Start {
                corr_id,
                payload,
                end,
                ..
            }
            | Event::Data {
                corr_id,
                payload,
                end,
            } => self.on_answer(now, corr_id, payload, end),
            Event::StreamError {
                corr_id, payload, ..
            } => {
                if let Some(p) = self.pending.remove(&corr_id) {
                    let why = String::from_utf8_lossy(&payload).into_owned();
                    let _ = p.reply.send(Err(OverlayError::Refused(why)));
                }
                self.syncs.remove(&corr_id);
                self.pings.remove(&corr_id);
                self.outgoing.remove(&corr_id);
            }
            Event::ConnectionError { code, payload } => {
                return Err(OverlayError::PeerClosed {
                    code,
                    message: String::from_utf8_lossy(&payload).into_owned(),
                });
            }
            Event::Credit { .. } | Event::Stale { .. } => {}
        }
        Ok(())
    }

    /// A frame of an answer to one of our requests (a sync or a fetch).
    fn on_answer(&mut self, now: Instant, corr: u64, payload: Bytes, end: bool) {
        if let Some(parts) = self.syncs.get_mut(&corr) {
            parts.push(payload);
            if end {
                let parts = self.syncs.remove(&corr).unwrap_or_default();
                self.actions.push_back(Action::Synced(parts));
            }
            return;
        }
        let Some(p) = self.pending.get_mut(&corr) else {
            return;
        };
        p.size += payload.len();
        p.progress = now;
        // A consumer that went away just misses the rest.
        let _ = p.sink.send(payload);
        if p.size > self.limits.fetch_max_answer() {
            if let Some(p) = self.pending.remove(&corr) {
                let _ = p.reply.send(Err(OverlayError::TooLarge));
            }
        } else if end {
            // The whole answer is with the consumer (no copy), which
            // verifies it; the sink closes here.
            if let Some(p) = self.pending.remove(&corr) {
                let _ = p.reply.send(Ok(()));
            }
        }
    }

    /// Queues every ACK the session has ready, then as many frames of each
    /// outgoing response as the peer's windows and `peer.inflight_frames`
    /// allow, and asks for a read-ahead for each blob running low on read
    /// frames.
    fn pump(&mut self, now: Instant) -> Result<()> {
        while let Some(a) = self.session.poll_ack() {
            let f = self.enc.encode_ack(a.corr_id, a.ack_up_to, a.window);
            self.out.push(now, f, FrameKind::Ack);
        }
        let mut out = std::mem::take(&mut self.outgoing);
        let r = self.pump_streams(now, &mut out);
        self.outgoing = out;
        r
    }

    fn pump_streams(&mut self, now: Instant, out: &mut BTreeMap<u64, Outgoing>) -> Result<()> {
        let mut done = Vec::new();
        for (&corr, o) in out.iter_mut() {
            while self.session.credit(corr) > 0
                && self.session.inflight_frames() < self.inflight_cap
            {
                // Nothing queued yet still to come: wait for the read-ahead.
                let Some(piece) = o.frames.pop_front() else {
                    break;
                };
                let last = o.frames.is_empty() && o.left == 0;
                let p = o.proto;
                let mut spec = match (o.started, last) {
                    (false, false) => FrameSpec::start(p, corr, Flags::RESP),
                    (false, true) => FrameSpec::start(p, corr, Flags::RESP).with_flags(Flags::END),
                    (true, false) => FrameSpec::data(p, corr, Flags::RESP),
                    (true, true) => FrameSpec::end(p, corr, Flags::RESP),
                };
                // The frame that fills `peer.inflight_frames` asks for an
                // ACK: the peer acknowledges on its own only at half its
                // window, which a peer granting more than twice our cap
                // per stream never reaches — both sides would wait.
                if !last && self.session.inflight_frames() + 1 >= self.inflight_cap {
                    spec = spec.with_flags(Flags::ACK_REQ);
                }
                self.send(now, spec, piece)?;
                o.started = true;
                if last {
                    done.push(corr);
                    break;
                }
            }
            if o.frames.len() <= READ_AHEAD {
                if let Some(source) = o.source.take() {
                    self.actions.push_back(Action::ReadMore {
                        corr,
                        source,
                        left: o.left,
                    });
                }
            }
        }
        for c in done {
            out.remove(&c);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "sansio_tests.rs"]
mod tests;
