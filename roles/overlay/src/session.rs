//! One OAP/1 session over any byte stream (TLS/TCP or a QUIC stream).
//!
//! A session task owns the stream: it reads and decodes frames, feeds them
//! to the `crates/oap` Session (state, windows, rejects), acts on the
//! events, and writes queued frames — one future polls both directions, so
//! a peer that is slow to read never stops this side from reading, and no
//! lock sits between the halves of the stream. What is queued is bounded
//! by the protocol: data frames by the credit the peer granted and
//! `peer.inflight_frames`, ACKs and answers by what the peer sent.
//!
//! Timeouts: no HELLO within `handshake_timeout`, a frame that started
//! arriving and is not complete within `read_timeout`, queued frames the
//! peer takes no byte of within `write_timeout`, nothing received for
//! `idle_timeout` — each
//! closes the session and is counted in `rejected_total{reason}`. Each
//! side pings (app protocol 4) every quarter of `idle_timeout`, so a live
//! peer is never idle; the answer's round trip is the session's `rtt_ms`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use metrics::Counter;
use ron_kernel::metrics::names;
use ron_oap::{
    Decoded, Decoder, DecoderConfig, Encoder, Event, Flags, FrameKind, FrameSpec, OapMetrics,
    OutFrame, Reject, Session, SessionConfig, HEADER_LEN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::blob::{local_get, Pieces, Refusal};
use crate::identity::hex;
use crate::proto::PROTO_BLOB;
use crate::state::{handshake, Command, Direction, Overlay, SessionInfo, Transport};

pub use crate::proto::PROTO_PING;
const BLOB_FRAME: usize = 64 * 1024;
/// Unanswered pings remembered per session.
const PINGS: usize = 8;

const KINDS: [FrameKind; 6] = [
    FrameKind::Hello,
    FrameKind::Ack,
    FrameKind::Start,
    FrameKind::Data,
    FrameKind::End,
    FrameKind::Error,
];

fn kind_index(k: FrameKind) -> usize {
    match k {
        FrameKind::Hello => 0,
        FrameKind::Ack => 1,
        FrameKind::Start => 2,
        FrameKind::Data => 3,
        FrameKind::End => 4,
        FrameKind::Error => 5,
    }
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
            frames: KINDS.map(|k| {
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

fn closed(reason: &'static str) {
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// Frames waiting for the wire, written by the session task itself: the
/// stream is not split, because tokio's split puts a blocking mutex
/// between the halves and both directions of a TLS stream need the one
/// rustls connection — a read waited for a 64 KiB write to be sealed and
/// sent, and the other way round.
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

    fn push(&mut self, f: OutFrame, kind: FrameKind) {
        if self.frames.is_empty() {
            self.waiting_since = Some(Instant::now());
        }
        self.frames.push_back((f, kind));
    }

    /// Writes queued frames in order until the stream would block; flushes
    /// once everything is written. `Ready(Ok)` when nothing is left.
    ///
    /// Up to `WRITE_BATCH` bytes of consecutive frames go down in one
    /// vectored write (header, capability and payload slices, no copy):
    /// over TLS that is one `writev` and full 16 KiB records across frame
    /// boundaries, where one write per part made a 38-byte record and a
    /// system call of its own for every frame header.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while !self.frames.is_empty() {
            let mut iov = [std::io::IoSlice::new(&[]); WRITE_SLICES];
            let (mut n_iov, mut bytes) = (0, 0);
            let mut skip = self.written;
            'gather: for (f, _) in &self.frames {
                for part in [f.header_bytes(), f.cap(), f.payload()] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    let part = &part[skip..];
                    skip = 0;
                    if n_iov == WRITE_SLICES || (bytes > 0 && bytes + part.len() > WRITE_BATCH) {
                        break 'gather;
                    }
                    iov[n_iov] = std::io::IoSlice::new(part);
                    n_iov += 1;
                    bytes += part.len();
                }
            }
            let mut n = match std::pin::Pin::new(&mut *w).poll_write_vectored(cx, &iov[..n_iov]) {
                Poll::Ready(Ok(0)) if bytes > 0 => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.dirty = true;
            self.waiting_since = Some(Instant::now());
            // Retire every frame the write finished (an empty frame
            // finishes with the bytes before it).
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
        if self.dirty {
            std::task::ready!(std::pin::Pin::new(&mut *w).poll_flush(cx))?;
            self.dirty = false;
        }
        self.waiting_since = None;
        Poll::Ready(Ok(()))
    }
}

/// Most bytes, and slices, one vectored write hands the stream: four
/// 64 KiB frames with their headers. The TLS streams' rustls buffer limit
/// (`net::TLS_BUFFER_LIMIT`) takes a whole batch.
const WRITE_BATCH: usize = 4 * (BLOB_FRAME + HEADER_LEN);
const WRITE_SLICES: usize = 16;

/// What the stream did: read some bytes (0: the peer closed), or failed
/// to take queued frames.
enum Io {
    Read(std::io::Result<usize>),
    WriteFailed(std::io::Error),
}

/// A fetch this side asked for.
struct Pending {
    /// Where the payloads go as they arrive.
    sink: tokio::sync::mpsc::UnboundedSender<Bytes>,
    size: usize,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
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
const READ_AHEAD: usize = 16;

/// Reads up to `READ_AHEAD` pieces of a blob (blocking: the store).
fn read_ahead(src: &mut Pieces, left: &mut u64) -> Result<Vec<Bytes>, Refusal> {
    let mut pieces = Vec::with_capacity(READ_AHEAD);
    while pieces.len() < READ_AHEAD && *left > 0 {
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
    fn whole(proto: u16, mut frames: VecDeque<Bytes>) -> Self {
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

    /// An object of `size` bytes from the store, with its first pieces
    /// read (blocking).
    fn blob(size: u64, mut source: Pieces) -> Result<Self, Refusal> {
        let mut left = size;
        let first = read_ahead(&mut source, &mut left)?;
        if first.is_empty() {
            return Ok(Outgoing::whole(PROTO_BLOB, VecDeque::new()));
        }
        let mut o = Outgoing {
            proto: PROTO_BLOB,
            frames: VecDeque::with_capacity(2 * READ_AHEAD),
            started: false,
            source: None,
            left,
        };
        o.refilled(first, source, left);
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

/// The sending side of a session: the OAP/1 state and the frames queued
/// for the wire.
struct Conn {
    out: Outbox,
    enc: Encoder,
    session: Session<crate::oap_health::OapHook>,
    /// `peer.inflight_frames`.
    inflight_cap: u64,
}

impl Conn {
    /// Queues a stream frame the session agrees to (credit, state).
    fn send(&mut self, spec: FrameSpec, payload: Bytes) -> Result<(), String> {
        self.session.on_send(&spec).map_err(|e| e.to_string())?;
        let f = self
            .enc
            .encode(&spec, &[], payload)
            .map_err(|e| e.to_string())?;
        self.out.push(f, spec.kind());
        Ok(())
    }

    /// Ends stream `corr` of `proto` with an ERROR frame.
    fn error(&mut self, proto: u16, corr: u64, code: u16, reason: &str, message: &str) {
        let body = serde_json::json!({"reason": reason, "message": message}).to_string();
        let _ = self.send(
            FrameSpec::error(proto, corr, code, Flags::RESP),
            Bytes::from(body),
        );
    }

    /// Gives up on the answer to our request `corr`: an ERROR frame tells
    /// the peer to stop sending it.
    fn cancel(&mut self, proto: u16, corr: u64, message: &str) {
        let body = serde_json::json!({"reason": "fetch_stalled", "message": message}).to_string();
        let _ = self.send(
            FrameSpec::error(proto, corr, 408, Flags::REQ),
            Bytes::from(body),
        );
    }

    /// Queues the ERROR frame for a reject; the caller then ends the
    /// session (the writer sends it before closing).
    fn reject(&mut self, r: &Reject) {
        let body = serde_json::json!({"reason": r.reason.label(), "message": r.detail}).to_string();
        let spec = FrameSpec::error(
            0,
            r.corr_id.unwrap_or(0),
            r.reason.error_code(),
            Flags::RESP,
        );
        if let Ok(f) = self.enc.encode(&spec, &[], Bytes::from(body)) {
            self.out.push(f, FrameKind::Error);
        }
        closed(r.reason.label());
    }

    /// Queues every ACK the session has ready.
    fn acks(&mut self) {
        while let Some(a) = self.session.poll_ack() {
            let f = self.enc.encode_ack(a.corr_id, a.ack_up_to, a.window);
            self.out.push(f, FrameKind::Ack);
        }
    }

    /// Queues as many frames of each outgoing response as the peer's
    /// windows and `peer.inflight_frames` allow, and starts a read-ahead
    /// (on `refills`) for each blob running low on read frames.
    fn pump(
        &mut self,
        out: &mut BTreeMap<u64, Outgoing>,
        refills: &tokio::sync::mpsc::Sender<Served>,
    ) -> Result<(), String> {
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
                self.send(spec, piece)?;
                o.started = true;
                if last {
                    done.push(corr);
                    break;
                }
            }
            if o.frames.len() <= READ_AHEAD {
                if let Some(mut src) = o.source.take() {
                    let (tx, mut left) = (refills.clone(), o.left);
                    tokio::task::spawn_blocking(move || {
                        let r = read_ahead(&mut src, &mut left).map(|p| (p, src, left));
                        // The session may have ended: the reader is dropped.
                        let _ = tx.blocking_send(Served::More(corr, r));
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

/// What the blocking pool hands back to a session (one channel, so an idle
/// session holds one).
enum Served {
    /// The answer to request `corr` of `proto`: what to send, `None` when
    /// it is not here, or why it is refused.
    Answer(u64, u16, Result<Option<Outgoing>, Refusal>),
    /// A read-ahead of blob stream `corr`: the pieces, the source to read on
    /// from and how many bytes it still owes; or why the store failed.
    More(u64, Result<(Vec<Bytes>, Pieces, u64), Refusal>),
}

pub async fn run_session<S>(
    overlay: Arc<Overlay>,
    stream: S,
    addr: SocketAddr,
    key: [u8; 32],
    kex: String,
    direction: Direction,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_id = hex(&key);
    let limits = overlay.limits;
    let info = Arc::new(SessionInfo::new(
        peer_id.clone(),
        addr.to_string(),
        transport,
        direction,
        kex.clone(),
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    ));
    let mut stream = stream;
    let mut conn = Conn {
        out: Outbox::new(info.clone()),
        // Overlay frames carry no capabilities: one arena (the smallest the
        // pool makes) instead of the default four, which an idle session
        // would hold for nothing.
        enc: Encoder::new(ron_oap::FramePool::new(1, 0), ron_oap::MAX_FRAME_BYTES),
        session: Session::with_metrics(
            SessionConfig {
                local_window: limits.peer.send_window_frames,
                max_streams: limits.peer.max_streams as usize,
                ..SessionConfig::default()
            },
            overlay.oap.clone(),
        ),
        inflight_cap: u64::from(limits.peer.inflight_frames),
    };
    let dec = Decoder::new(DecoderConfig::default());
    let wire_in = Wire::new("in");
    let hello = conn.session.local_hello(&overlay.identity.node_id());
    // OAP-1 §4: the dialer's HELLO is the request, the acceptor's the
    // response (both are sent at once, neither waits for the other).
    let hello_flags = if direction == Direction::Out {
        Flags::REQ
    } else {
        Flags::RESP
    };
    if let Ok(f) = conn.enc.encode(
        &FrameSpec::hello(hello_flags),
        &[],
        Bytes::from(hello.to_json()),
    ) {
        conn.out.push(f, FrameKind::Hello);
    }
    let conn_id = overlay.next_conn_id();
    let unpinned = tokio_util::sync::CancellationToken::new();
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<Command>(64);
    let (served_tx, mut served_rx) = tokio::sync::mpsc::channel::<Served>(64);
    let mut syncs: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
    let mut gossip_budget = crate::apps::Budget::new();
    let rps = f64::from(limits.peer.max_rps);
    let mut requests = crate::apps::Budget::with(rps, rps);
    // Streams this side opens: odd ids from the dialer, even from the
    // acceptor, so the two never collide.
    let mut next_corr: u64 = if direction == Direction::Out { 1 } else { 2 };
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut outgoing: BTreeMap<u64, Outgoing> = BTreeMap::new();
    let mut pings: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut buf = BytesMut::new();
    let mut up: Option<ron_kernel::metrics::GaugeGuard> = None;
    let inflight_gauge = metrics::gauge!(names::OVERLAY_INFLIGHT_FRAMES, "state" => "all");
    let mut reported_inflight = 0u64;
    // Timers: one sleep, moved earlier when a nearer deadline appears and
    // re-armed from the real deadlines whenever it fires.
    let started = Instant::now();
    let ping_every = limits.idle_timeout / 4;
    let mut last_rx = started;
    let mut partial_since: Option<Instant> = None;
    let mut next_ping = started + limits.handshake_timeout;
    let wake = |last_rx: Instant,
                partial: Option<Instant>,
                next_ping: Instant,
                writing: Option<Instant>,
                fetching: Option<Instant>| {
        let mut w = (last_rx + limits.idle_timeout).min(next_ping);
        for t in [partial, fetching].into_iter().flatten() {
            w = w.min(t + limits.read_timeout);
        }
        if let Some(t) = writing {
            w = w.min(t + limits.write_timeout);
        }
        w
    };
    let timer = tokio::time::sleep_until(next_ping.into());
    tokio::pin!(timer);
    let result: Result<(), String> = 'session: loop {
        // Decode everything buffered before waiting again.
        let mut decoded_any = false;
        let need = loop {
            let frame = match dec.decode(&mut buf) {
                Err(r) => {
                    // The session counts its own rejects; the decoder's
                    // are counted here.
                    overlay.oap.reject(r.reason);
                    conn.reject(&r);
                    break 'session Err(format!("rejected: {}", r.reason.label()));
                }
                Ok(Decoded::NeedMore(n)) => break n,
                Ok(Decoded::Frame(f)) => f,
            };
            // From the frame's first byte (or the read that brought it
            // whole) to decoded.
            let began = if decoded_any {
                last_rx
            } else {
                partial_since.unwrap_or(last_rx)
            };
            overlay
                .oap
                .read_frame_seconds(began.elapsed().as_secs_f64());
            decoded_any = true;
            let n = (HEADER_LEN + frame.cap.len() + frame.payload.len()) as u64;
            wire_in.frames[kind_index(frame.kind())].increment(1);
            wire_in.bytes.increment(n);
            info.frames_in.fetch_add(1, Relaxed);
            info.bytes_in.fetch_add(n, Relaxed);
            let event = match conn.session.on_frame(frame) {
                Err(r) => {
                    conn.reject(&r);
                    break 'session Err(format!("rejected: {}", r.reason.label()));
                }
                Ok(e) => e,
            };
            // Requests a peer starts are rate-limited (`peer.max_rps`).
            if let Event::Start {
                corr_id,
                app_proto_id,
                flags,
                ..
            } = &event
            {
                if flags.contains(Flags::REQ) && !requests.take() {
                    closed("peer_rps");
                    conn.error(
                        *app_proto_id,
                        *corr_id,
                        429,
                        "peer_rps",
                        "more requests than overlay.peer.max_rps",
                    );
                    continue;
                }
            }
            match event {
                Event::Hello(h) => {
                    // `ed25519:<hex>` and bare hex name the same key.
                    if h.node_key() != Some(key) {
                        let r = Reject::new(
                            ron_oap::reject::RejectReason::BadHello,
                            "HELLO node_id is not the key the peer authenticated with",
                        );
                        conn.reject(&r);
                        break 'session Err("HELLO node_id mismatch".into());
                    }
                    info.ack_window.store(u64::from(h.ack_window), Relaxed);
                    if direction == Direction::Out {
                        handshake("ok", &kex);
                    }
                    up = Some(ron_kernel::metrics::GaugeGuard::up(
                        names::OVERLAY_SESSIONS_ACTIVE,
                    ));
                    overlay.session_up(conn_id, info.clone(), cmd_tx.clone(), unpinned.clone());
                    // Ping at once (the first rtt), then every quarter of
                    // the idle timeout.
                    next_ping = Instant::now();
                    // Tell the new peer our registry head: whoever is
                    // behind asks for the rest.
                    if let Some(payload) = crate::apps::head_announcement(&overlay) {
                        let _ = cmd_tx.try_send(Command::Gossip { payload });
                    }
                    tracing::info!(peer = %peer_id, %addr, transport = transport.as_str(), direction = direction.as_str(), kex = %kex, "overlay session up");
                }
                Event::Start {
                    corr_id,
                    app_proto_id: PROTO_PING,
                    flags,
                    payload,
                    ..
                } => {
                    if flags.contains(Flags::REQ) {
                        let spec = FrameSpec::start(PROTO_PING, corr_id, Flags::RESP)
                            .with_flags(Flags::END);
                        if let Err(e) = conn.send(spec, payload) {
                            break 'session Err(e);
                        }
                    } else if let Some(sent) = pings.remove(&corr_id) {
                        let us = sent.elapsed().as_micros().clamp(1, u128::from(u64::MAX));
                        info.rtt_us.store(us as u64, Relaxed);
                    }
                }
                Event::Start {
                    corr_id,
                    app_proto_id: PROTO_BLOB,
                    flags,
                    payload,
                    ..
                } if flags.contains(Flags::REQ) => {
                    // A peer asks for an object: look it up off the task.
                    let address = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|s| ron_kernel::ContentAddress::parse(s).ok());
                    let (ov, tx) = (overlay.clone(), served_tx.clone());
                    let max = limits.fetch_max_bytes;
                    tokio::task::spawn_blocking(move || {
                        let r = match address {
                            Some(a) => local_get(&ov, &a, max).and_then(|found| {
                                found
                                    .map(|(size, src)| Outgoing::blob(size, src))
                                    .transpose()
                            }),
                            None => Err(Refusal::new(400, "bad_request", "not a content address")),
                        };
                        let _ = tx.blocking_send(Served::Answer(corr_id, PROTO_BLOB, r));
                    });
                }
                Event::Start {
                    corr_id,
                    app_proto_id: crate::apps::PROTO_SYNC,
                    flags,
                    payload,
                    ..
                } if flags.contains(Flags::REQ) => {
                    let since = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v["since"].as_u64())
                        .unwrap_or(0);
                    let (ov, tx) = (overlay.clone(), served_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let r = crate::apps::sync_frames(&ov, since)
                            .map(|o| {
                                o.map(|frames| Outgoing::whole(crate::apps::PROTO_SYNC, frames))
                            })
                            .map_err(|e| Refusal::new(500, "registry", e));
                        let _ =
                            tx.blocking_send(Served::Answer(corr_id, crate::apps::PROTO_SYNC, r));
                    });
                }
                Event::Start {
                    app_proto_id: crate::apps::PROTO_GOSSIP,
                    payload,
                    ..
                } => {
                    if !gossip_budget.take() {
                        closed("gossip_burst");
                        continue;
                    }
                    if let Some(since) = crate::apps::on_gossip(&overlay, conn_id, &payload) {
                        let _ = cmd_tx.try_send(Command::Sync { since });
                    }
                }
                Event::Start {
                    corr_id,
                    app_proto_id,
                    flags,
                    ..
                } if flags.contains(Flags::REQ) => {
                    conn.error(
                        app_proto_id,
                        corr_id,
                        501,
                        "unknown_app_proto",
                        "this node does not speak that app protocol",
                    );
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
                } => {
                    if let Some(parts) = syncs.get_mut(&corr_id) {
                        parts.push(payload);
                        if end {
                            let parts = syncs.remove(&corr_id).unwrap_or_default();
                            let ov = overlay.clone();
                            let from = peer_id.clone();
                            tokio::task::spawn_blocking(move || {
                                match crate::apps::apply_sync(&ov, &parts) {
                                    Ok(n) => {
                                        tracing::info!(peer = %from, applied = n, "registry synced from peer")
                                    }
                                    Err(e) => {
                                        tracing::warn!(peer = %from, error = %e, "registry sync refused")
                                    }
                                }
                            });
                        }
                        continue;
                    }
                    let Some(p) = pending.get_mut(&corr_id) else {
                        continue;
                    };
                    p.size += payload.len();
                    p.progress = Instant::now();
                    // A consumer that went away just misses the rest.
                    let _ = p.sink.send(payload);
                    if p.size > limits.fetch_max_bytes {
                        if let Some(p) = pending.remove(&corr_id) {
                            let _ = p
                                .reply
                                .send(Err("object larger than the overlay fetch limit".into()));
                        }
                        continue;
                    }
                    if end {
                        // The whole answer is with the consumer (no copy),
                        // which verifies it; the sink closes here.
                        if let Some(p) = pending.remove(&corr_id) {
                            let _ = p.reply.send(Ok(()));
                        }
                    }
                }
                Event::StreamError {
                    corr_id, payload, ..
                } => {
                    if let Some(p) = pending.remove(&corr_id) {
                        let _ = p
                            .reply
                            .send(Err(String::from_utf8_lossy(&payload).into_owned()));
                    }
                    syncs.remove(&corr_id);
                    pings.remove(&corr_id);
                    outgoing.remove(&corr_id);
                }
                Event::ConnectionError { code, payload } => {
                    break 'session Err(format!(
                        "peer closed with error {code}: {}",
                        String::from_utf8_lossy(&payload)
                    ));
                }
                Event::Credit { .. } | Event::Stale { .. } => {}
            }
        };
        if buf.is_empty() {
            partial_since = None;
        } else if decoded_any || partial_since.is_none() {
            // A new frame has begun arriving.
            partial_since = Some(Instant::now());
        }
        conn.acks();
        if let Err(e) = conn.pump(&mut outgoing, &served_tx) {
            break Err(e);
        }
        let inflight = conn.session.inflight_frames();
        if inflight != reported_inflight {
            overlay.add_inflight(reported_inflight, inflight);
            inflight_gauge.increment(inflight as f64 - reported_inflight as f64);
            overlay
                .oap
                .inflight_delta(inflight as f64 - reported_inflight as f64);
            info.inflight.store(inflight, Relaxed);
            reported_inflight = inflight;
        }
        let fetching = pending.values().map(|p| p.progress).min();
        let w = wake(
            last_rx,
            partial_since,
            next_ping,
            conn.out.waiting_since,
            fetching,
        );
        if w < timer.deadline().into_std() {
            timer.as_mut().reset(w.into());
        }
        // Room for the rest of the frame being read (whole, so decoding
        // slices it without a copy), at least 8 KiB. (Larger buffers, for
        // several frames per read, measured slower: the allocator maps and
        // unmaps them.)
        let want = need.max(8 * 1024);
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        // One future drives both directions of the stream: queued frames
        // go out as far as the peer takes them, and whatever arrives is
        // read (a peer slow to read never stops this side from reading).
        let io = std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(Err(e)) = conn.out.poll_write(&mut stream, cx) {
                return std::task::Poll::Ready(Io::WriteFailed(e));
            }
            tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut stream), cx, &mut buf)
                .map(Io::Read)
        });
        tokio::select! {
            _ = overlay.shutdown.cancelled() => break Ok(()),
            _ = unpinned.cancelled() => {
                closed("unpinned");
                break Err("the peer's key is no longer pinned".into());
            }
            r = io => match r {
                Io::Read(Ok(0)) => {
                    if !buf.is_empty() {
                        closed("truncated");
                    }
                    break Ok(());
                }
                Io::Read(Ok(_)) => last_rx = Instant::now(),
                Io::Read(Err(e)) => break Err(e.to_string()),
                Io::WriteFailed(e) => break Err(e.to_string()),
            },
            _ = &mut timer => {
                let now = Instant::now();
                if up.is_none() && now >= started + limits.handshake_timeout {
                    closed("hello_timeout");
                    break Err("no HELLO within overlay.handshake_timeout".into());
                }
                if now >= last_rx + limits.idle_timeout {
                    closed("idle_timeout");
                    break Err("nothing received within overlay.idle_timeout".into());
                }
                if partial_since.is_some_and(|t| now >= t + limits.read_timeout) {
                    closed("read_timeout");
                    break Err("a frame did not complete within overlay.read_timeout".into());
                }
                if conn.out.waiting_since.is_some_and(|t| now >= t + limits.write_timeout) {
                    closed("write_timeout");
                    break Err("write timed out: the peer stopped reading".into());
                }
                // Answers that stopped coming: the fetch fails (the asker
                // tries its next peer) and the peer is told to stop.
                let stalled: Vec<u64> = pending
                    .iter()
                    .filter(|(_, p)| now >= p.progress + limits.read_timeout)
                    .map(|(c, _)| *c)
                    .collect();
                for corr in stalled {
                    if let Some(p) = pending.remove(&corr) {
                        closed("fetch_stalled");
                        let msg = "the peer sent nothing for this fetch within overlay.read_timeout";
                        conn.cancel(PROTO_BLOB, corr, msg);
                        let _ = p.reply.send(Err(msg.into()));
                    }
                }
                if up.is_some() && now >= next_ping {
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(PROTO_PING, corr, Flags::REQ).with_flags(Flags::END);
                    if let Err(e) = conn.send(spec, Bytes::new()) {
                        break Err(e);
                    }
                    if pings.len() >= PINGS {
                        if let Some((old, _)) = pings.pop_first() {
                            conn.session.abandon(old);
                        }
                    }
                    pings.insert(corr, now);
                    next_ping = now + ping_every;
                    if buf.is_empty() {
                        // Quiet: give the read buffer back.
                        buf = BytesMut::new();
                    }
                }
                let fetching = pending.values().map(|p| p.progress).min();
                timer.as_mut().reset(wake(last_rx, partial_since, next_ping, conn.out.waiting_since, fetching).into());
            }
            Some(cmd) = cmd_rx.recv(), if up.is_some() => match cmd {
                Command::Fetch { address, sink, reply } => {
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(PROTO_BLOB, corr, Flags::REQ).with_flags(Flags::END);
                    match conn.send(spec, Bytes::from(address.to_string())) {
                        Ok(()) => {
                            pending.insert(corr, Pending {
                                sink,
                                size: 0,
                                reply,
                                progress: Instant::now(),
                            });
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.clone()));
                            break Err(e);
                        }
                    }
                }
                Command::Corrupt { detail } => {
                    // Wrong bytes: never stored, never served; the peer is
                    // disconnected and counted.
                    closed("blob_mismatch");
                    break Err(detail);
                }
                Command::Gossip { payload } => {
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(crate::apps::PROTO_GOSSIP, corr, Flags::EVENT)
                        .with_flags(Flags::END);
                    if let Err(e) = conn.send(spec, payload) {
                        break Err(e);
                    }
                }
                Command::Sync { since } => {
                    if !syncs.is_empty() {
                        continue; // one sync at a time per peer
                    }
                    let corr = next_corr;
                    next_corr += 2;
                    let spec = FrameSpec::start(crate::apps::PROTO_SYNC, corr, Flags::REQ)
                        .with_flags(Flags::END);
                    let body = Bytes::from(serde_json::json!({"since": since}).to_string());
                    if let Err(e) = conn.send(spec, body) {
                        break Err(e);
                    }
                    syncs.insert(corr, Vec::new());
                }
            },
            Some(served) = served_rx.recv() => match served {
                Served::Answer(corr, _, Ok(Some(o))) => {
                    outgoing.insert(corr, o);
                }
                Served::Answer(corr, proto, Ok(None)) => {
                    conn.error(proto, corr, 404, "not_found", "not found")
                }
                Served::Answer(corr, proto, Err(r)) => {
                    conn.error(proto, corr, r.status, r.reason, &r.detail)
                }
                Served::More(corr, Ok((pieces, src, left))) => {
                    // Gone when the peer ended the stream meanwhile.
                    if let Some(o) = outgoing.get_mut(&corr) {
                        o.refilled(pieces, src, left);
                    }
                }
                Served::More(corr, Err(r)) => {
                    if outgoing.remove(&corr).is_some() {
                        conn.error(PROTO_BLOB, corr, r.status, r.reason, &r.detail);
                    }
                }
            },
        }
    };
    overlay.session_down(conn_id);
    overlay.add_inflight(reported_inflight, 0);
    inflight_gauge.decrement(reported_inflight as f64);
    overlay.oap.inflight_delta(-(reported_inflight as f64));
    for (_, p) in pending {
        let _ = p.reply.send(Err("session ended".into()));
    }
    if up.is_none() && direction == Direction::Out {
        handshake("refused", &kex);
    }
    drop(up);
    // What is queued (a final ERROR frame) goes out, then the stream is
    // closed; a peer that takes nothing gets `write_timeout` for both.
    let mut out = conn.out;
    let stalled = out
        .waiting_since
        .is_some_and(|t| Instant::now() >= t + limits.write_timeout);
    if !stalled {
        let _ = tokio::time::timeout(limits.write_timeout, async {
            std::future::poll_fn(|cx| out.poll_write(&mut stream, cx)).await?;
            stream.shutdown().await
        })
        .await;
    }
    match result {
        Ok(()) => tracing::info!(peer = %peer_id, %addr, "overlay session closed"),
        Err(e) => tracing::info!(peer = %peer_id, %addr, error = %e, "overlay session ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(n: usize, fail_at: Option<usize>) -> Pieces {
        Box::new((0..n).map(move |i| {
            if Some(i) == fail_at {
                Err(Refusal::new(500, "store", "chunk failed its hash"))
            } else {
                Ok(Bytes::from(vec![i as u8; BLOB_FRAME]))
            }
        }))
    }

    #[test]
    fn a_blob_is_read_a_batch_at_a_time_not_whole() {
        let size = 20 * BLOB_FRAME as u64;
        let o = Outgoing::blob(size, pieces(20, None)).expect("blob");
        assert_eq!(o.frames.len(), READ_AHEAD);
        assert_eq!(o.left, size - (READ_AHEAD * BLOB_FRAME) as u64);
        assert!(o.source.is_some(), "the rest is still to be read");

        let mut src = o.source.expect("source");
        let mut left = o.left;
        let mut batches = 1;
        while left > 0 {
            let got = read_ahead(&mut src, &mut left).expect("read");
            assert!(!got.is_empty() && got.len() <= READ_AHEAD);
            batches += 1;
        }
        assert_eq!(batches, 20_usize.div_ceil(READ_AHEAD));
    }

    #[test]
    fn a_store_error_or_a_short_object_is_a_500_never_a_short_answer() {
        let n = 2 * READ_AHEAD + 4;
        let mut src = pieces(n, Some(READ_AHEAD + 2));
        let mut left = (n * BLOB_FRAME) as u64;
        read_ahead(&mut src, &mut left).expect("the first batch is fine");
        let e = read_ahead(&mut src, &mut left).expect_err("the failed chunk");
        assert_eq!((e.status, e.reason), (500, "store"));

        // The store yields fewer bytes than the object's recorded size.
        let e = Outgoing::blob(5 * BLOB_FRAME as u64, pieces(3, None))
            .err()
            .expect("short");
        assert_eq!(e.status, 500);
    }

    /// A writer that takes at most `step` bytes per call and is not ready
    /// every other call, recording what it took.
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = (self.step - n).min(b.len());
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn batched_writes_put_every_frame_on_the_wire_whole_and_in_order() {
        let info = Arc::new(SessionInfo::new(
            "p".into(),
            "127.0.0.1:1".into(),
            Transport::Tcp,
            Direction::Out,
            "X25519".into(),
            "now".into(),
        ));
        let mut enc = Encoder::default();
        let mut out = Outbox::new(info.clone());
        let mut want = Vec::new();
        // Frames of many sizes (empty, tiny, 64 KiB and odd), more than
        // one batch of them.
        for (i, len) in [
            0, 1, BLOB_FRAME, 5, BLOB_FRAME, 0, 70_001, BLOB_FRAME, 3, BLOB_FRAME, 9,
        ]
        .into_iter()
        .enumerate()
        {
            let spec =
                FrameSpec::start(PROTO_BLOB, 2 * i as u64 + 1, Flags::RESP).with_flags(Flags::END);
            let f = enc
                .encode(&spec, &[], Bytes::from(vec![i as u8; len]))
                .expect("encode");
            want.extend_from_slice(f.header_bytes());
            want.extend_from_slice(f.cap());
            want.extend_from_slice(f.payload());
            out.push(f, FrameKind::Start);
        }
        for step in [1000, 7, 300_000] {
            let mut w = Trickle {
                step,
                got: Vec::new(),
                calls: 0,
            };
            let mut again = Outbox::new(info.clone());
            again.frames = out.frames.clone();
            std::future::poll_fn(|cx| again.poll_write(&mut w, cx))
                .await
                .expect("write");
            assert!(again.frames.is_empty() && again.waiting_since.is_none());
            assert_eq!(w.got.len(), want.len(), "step {step}");
            assert!(w.got == want, "step {step}: bytes differ");
        }
        // Each frame counted once per run.
        assert_eq!(info.frames_out.load(Relaxed), 3 * 11);
        assert_eq!(info.bytes_out.load(Relaxed), 3 * want.len() as u64);
    }

    #[test]
    fn an_empty_answer_is_one_empty_frame() {
        let o = Outgoing::blob(0, pieces(0, None)).expect("blob");
        assert_eq!(o.frames.len(), 1);
        assert!(o.frames[0].is_empty() && o.left == 0 && o.source.is_none());
        assert_eq!(Outgoing::whole(PROTO_BLOB, VecDeque::new()).frames.len(), 1);
    }
}
