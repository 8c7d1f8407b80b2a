//! The sans-I/O session: feed it decoded frames, it returns events and the
//! ACKs to send; ask it before sending a frame, it enforces the peer's
//! window. No sockets, no clock, no tokio.
//!
//! Stream model (per `corr_id`): each direction of a stream is a *half*,
//! `idle → open (START) → closed (END or ERROR)`. The stream is *open* while
//! either half is open, *half-closed* once one half has closed, and
//! *closed* (forgotten) when no half is open. A request/response pair is
//! one stream: each side's half carries its message.
//!
//! Invariants: every violation is a typed reject and the session must not
//! be used after one; `ack_up_to` never goes backwards; no sender may have
//! more than `window` unacknowledged frames in a stream.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::comp;
use crate::decode::{Frame, ACK_PAYLOAD_LEN};
use crate::encode::FrameSpec;
use crate::header::{Flags, FrameKind, CONTROL_PROTO, MAX_FRAME_BYTES};
use crate::health::{NoMetrics, OapMetrics, ReadinessSummary, RejectRate};
use crate::hello::{Hello, MAX_WINDOW, MIN_WINDOW};
use crate::reject::{Reject, RejectReason as R};

/// How many recently closed streams are remembered, so that frames already
/// in flight when a stream closed (a late ACK, data after our ERROR) are
/// dropped instead of tearing the connection down.
const RECENTLY_CLOSED: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Window this side grants per stream (∈ [1, 1024]).
    pub local_window: u32,
    /// Largest frame this side accepts (advertised in HELLO).
    pub max_frame: u32,
    /// Cap on one inflated COMP payload (also bounded by 8 × max_frame).
    pub inflate_cap: usize,
    /// Streams open at once before new STARTs are refused.
    pub max_streams: usize,
    /// Unacknowledged frames across all streams above which
    /// `backpressure_ok` turns false.
    pub inflight_critical: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            local_window: 16,
            max_frame: MAX_FRAME_BYTES as u32,
            inflate_cap: 8 * MAX_FRAME_BYTES,
            max_streams: 1024,
            inflight_critical: 32 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    Idle,
    Open,
    Closed,
}

#[derive(Debug)]
struct Stream {
    send: Half,
    recv: Half,
    /// Frames we sent in this stream's current send half.
    sent: u64,
    /// Highest of our frames the peer acknowledged.
    peer_acked: u64,
    peer_window: u32,
    /// Frames received in order in the current receive half.
    received: u64,
    /// Highest frame number in an ACK the host has taken to send.
    acked: u64,
    /// An ACK for this stream is queued and not yet taken.
    ack_queued: bool,
    /// We sent a request on this stream and no response half has opened
    /// (nor an ERROR arrived): it stays tracked for the answer.
    awaiting: bool,
}

impl Stream {
    fn new(peer_window: u32) -> Self {
        Self {
            send: Half::Idle,
            recv: Half::Idle,
            sent: 0,
            peer_acked: 0,
            peer_window,
            received: 0,
            acked: 0,
            ack_queued: false,
            awaiting: false,
        }
    }

    fn live(&self) -> bool {
        self.send == Half::Open
            || self.recv == Half::Open
            || (self.awaiting && self.recv == Half::Idle)
    }
}

/// What a received frame meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hello(Hello),
    /// The peer opened its half of stream `corr_id` (START; `end` for a
    /// one-frame message).
    Start {
        corr_id: u64,
        app_proto_id: u16,
        flags: Flags,
        tenant: u128,
        cap: Bytes,
        payload: Bytes,
        end: bool,
    },
    Data {
        corr_id: u64,
        payload: Bytes,
        end: bool,
    },
    /// The peer acknowledged frames; `credit` frames may now be sent.
    Credit {
        corr_id: u64,
        credit: u32,
    },
    /// The peer ended stream `corr_id` with an error.
    StreamError {
        corr_id: u64,
        code: u16,
        payload: Bytes,
    },
    /// The peer reported a connection-level error; close.
    ConnectionError {
        code: u16,
        payload: Bytes,
    },
    /// A frame for a stream that closed moments ago; nothing to do.
    Stale {
        corr_id: u64,
    },
}

/// An ACK the host should send now. A host that cannot keep up stops
/// taking ACKs (`poll_ack`); its peer then runs out of credit, and a peer
/// that sends anyway is refused with `window_exceeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOut {
    pub corr_id: u64,
    pub ack_up_to: u64,
    pub window: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the peer's HELLO has not arrived")]
    NoHello,
    #[error("stream {0} has no send credit; wait for an ACK")]
    NoCredit(u64),
    #[error("stream {0} already has an open send half")]
    AlreadyOpen(u64),
    #[error("stream {0} has no open send half")]
    NotOpen(u64),
    #[error("too many open streams")]
    TooManyStreams,
    #[error("control frames (HELLO, ACK) are not sent through send()")]
    Control,
}

pub struct Session<M: OapMetrics = NoMetrics> {
    cfg: SessionConfig,
    peer: Option<Hello>,
    streams: HashMap<u64, Stream>,
    recently_closed: VecDeque<u64>,
    acks: VecDeque<u64>,
    inflight: u64,
    failed: bool,
    metrics: M,
}

impl Session<NoMetrics> {
    pub fn new(cfg: SessionConfig) -> Self {
        Self::with_metrics(cfg, NoMetrics)
    }
}

impl<M: OapMetrics> Session<M> {
    pub fn with_metrics(cfg: SessionConfig, metrics: M) -> Self {
        let mut cfg = cfg;
        cfg.local_window = cfg.local_window.clamp(MIN_WINDOW, MAX_WINDOW);
        Self {
            cfg,
            peer: None,
            streams: HashMap::new(),
            recently_closed: VecDeque::with_capacity(RECENTLY_CLOSED),
            acks: VecDeque::new(),
            inflight: 0,
            failed: false,
            metrics,
        }
    }

    /// The HELLO this side sends first.
    pub fn local_hello(&self, node_id: &str) -> Hello {
        Hello::new(node_id, self.cfg.max_frame, self.cfg.local_window)
    }

    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Frames sent and not yet acknowledged, over all streams.
    pub fn inflight_frames(&self) -> u64 {
        self.inflight
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether a reject has happened (the session is finished).
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn backpressure_ok(&self) -> bool {
        self.inflight <= self.cfg.inflight_critical
    }

    /// The readiness inputs for this session: the parser has not failed;
    /// fewer than 1 % of frames were rejected over five minutes (the host
    /// keeps `rate` across its sessions and passes its clock in seconds);
    /// the peer granted a window (its HELLO arrived, so every stream starts
    /// with credit); unacknowledged frames are under the critical mark.
    pub fn readiness(&self, rate: &RejectRate, now_secs: u64) -> ReadinessSummary {
        ReadinessSummary {
            parser_ready: !self.failed,
            reject_rate_ok: rate.ok(now_secs),
            ack_window_ok: self
                .peer
                .as_ref()
                .is_some_and(|p| p.ack_window >= MIN_WINDOW),
            backpressure_ok: self.backpressure_ok(),
        }
    }

    /// The next ACK to send, if any. Taking it is what grants the peer
    /// more credit.
    pub fn poll_ack(&mut self) -> Option<AckOut> {
        let window = self.cfg.local_window;
        while let Some(corr_id) = self.acks.pop_front() {
            if let Some(s) = self.streams.get_mut(&corr_id) {
                s.ack_queued = false;
                if s.recv == Half::Open && s.received > s.acked {
                    s.acked = s.received;
                    return Some(AckOut {
                        corr_id,
                        ack_up_to: s.received,
                        window,
                    });
                }
            }
        }
        None
    }

    fn reject(&mut self, r: Reject) -> Reject {
        self.failed = true;
        self.metrics.reject(r.reason);
        r
    }

    fn close_if_done(&mut self, corr_id: u64) {
        if self.streams.get(&corr_id).is_some_and(|s| !s.live()) {
            if let Some(s) = self.streams.remove(&corr_id) {
                self.inflight -= s.sent - s.peer_acked;
            }
            if self.recently_closed.len() == RECENTLY_CLOSED {
                self.recently_closed.pop_front();
            }
            self.recently_closed.push_back(corr_id);
        }
    }

    /// Forgets stream `corr_id` (a request the host gave up waiting
    /// for); its unacknowledged frames no longer count as in flight.
    pub fn abandon(&mut self, corr_id: u64) {
        if let Some(s) = self.streams.remove(&corr_id) {
            self.inflight -= s.sent - s.peer_acked;
        }
    }

    fn recently_closed(&self, corr_id: u64) -> bool {
        self.recently_closed.contains(&corr_id)
    }

    /// Feeds one decoded frame. After an `Err` the session is finished:
    /// the host sends an ERROR frame with the reason and closes.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Event, Reject> {
        if self.failed {
            return Err(Reject::new(R::HeaderMalformed, "session already failed"));
        }
        let kind = frame.kind();
        self.metrics.frame(kind);
        let r = self.handle(kind, frame);
        r.map_err(|e| self.reject(e))
    }

    fn handle(&mut self, kind: FrameKind, frame: Frame) -> Result<Event, Reject> {
        let h = frame.header;
        let corr = h.corr_id;
        if kind == FrameKind::Hello {
            if self.peer.is_some() {
                return Err(Reject::on(
                    R::BadHello,
                    corr,
                    "second HELLO on a connection",
                ));
            }
            let hello = Hello::parse(&frame.payload)?;
            self.peer = Some(hello.clone());
            self.metrics.ack_window(hello.ack_window);
            return Ok(Event::Hello(hello));
        }
        let Some(peer_window) = self.peer.as_ref().map(|p| p.ack_window) else {
            return Err(Reject::on(R::BadHello, corr, "frame before HELLO"));
        };
        match kind {
            FrameKind::Hello => unreachable_hello(),
            FrameKind::Ack => self.on_ack(corr, &frame.payload),
            FrameKind::Error if h.app_proto_id == CONTROL_PROTO => Ok(Event::ConnectionError {
                code: h.code,
                payload: frame.payload,
            }),
            FrameKind::Error => {
                let Some(s) = self.streams.get_mut(&corr) else {
                    return self.stale_or(corr, "ERROR for a stream that is not open");
                };
                s.recv = Half::Closed;
                if s.send == Half::Open {
                    s.send = Half::Closed;
                }
                self.close_if_done(corr);
                Ok(Event::StreamError {
                    corr_id: corr,
                    code: h.code,
                    payload: frame.payload,
                })
            }
            FrameKind::Start => {
                let open_now = self.streams.len();
                let s = match self.streams.get_mut(&corr) {
                    Some(s) => s,
                    None => {
                        if open_now >= self.cfg.max_streams {
                            return Err(Reject::on(
                                R::WindowExceeded,
                                corr,
                                "too many open streams",
                            ));
                        }
                        self.streams.entry(corr).or_insert(Stream::new(peer_window))
                    }
                };
                if s.recv != Half::Idle {
                    return Err(Reject::on(
                        R::BadFlags,
                        corr,
                        "START on a stream whose receive half is already open",
                    ));
                }
                s.recv = Half::Open;
                s.received = 1;
                s.acked = 0;
                s.ack_queued = false;
                let end = h.flags.contains(Flags::END);
                let payload = self.payload(&frame)?;
                self.after_receive(corr, h.flags, end);
                Ok(Event::Start {
                    corr_id: corr,
                    app_proto_id: h.app_proto_id,
                    flags: h.flags,
                    tenant: h.tenant,
                    cap: frame.cap,
                    payload,
                    end,
                })
            }
            FrameKind::Data | FrameKind::End => {
                let window = self.cfg.local_window as u64;
                let Some(s) = self.streams.get_mut(&corr).filter(|s| s.recv == Half::Open) else {
                    return self.stale_or(
                        corr,
                        "DATA or END on a stream that is not open for receiving",
                    );
                };
                if s.received - s.acked >= window {
                    return Err(Reject::on(
                        R::WindowExceeded,
                        corr,
                        "peer sent more frames than the window allows",
                    ));
                }
                s.received += 1;
                let end = kind == FrameKind::End;
                let payload = self.payload(&frame)?;
                self.after_receive(corr, h.flags, end);
                Ok(Event::Data {
                    corr_id: corr,
                    payload,
                    end,
                })
            }
        }
    }

    fn stale_or(&self, corr: u64, detail: &'static str) -> Result<Event, Reject> {
        if self.recently_closed(corr) {
            Ok(Event::Stale { corr_id: corr })
        } else {
            Err(Reject::on(R::UnknownStream, corr, detail))
        }
    }

    fn payload(&self, frame: &Frame) -> Result<Bytes, Reject> {
        if !frame.header.flags.contains(Flags::COMP) {
            return Ok(frame.payload.clone());
        }
        let cap = self.cfg.inflate_cap.min(8 * self.cfg.max_frame as usize);
        comp::inflate(&frame.payload, cap).map_err(|mut r| {
            r.corr_id = Some(frame.header.corr_id);
            r
        })
    }

    /// Schedules an ACK when half the window is used, when asked (ACK_REQ),
    /// and closes the receive half on END.
    fn after_receive(&mut self, corr: u64, flags: Flags, end: bool) {
        let half = self.cfg.local_window.div_ceil(2) as u64;
        if let Some(s) = self.streams.get_mut(&corr) {
            if end {
                s.recv = Half::Closed;
            } else if !s.ack_queued
                && (flags.contains(Flags::ACK_REQ) || s.received - s.acked >= half)
            {
                s.ack_queued = true;
                self.acks.push_back(corr);
            }
        }
        if end {
            self.close_if_done(corr);
        }
    }

    fn on_ack(&mut self, corr: u64, payload: &[u8]) -> Result<Event, Reject> {
        if payload.len() != ACK_PAYLOAD_LEN {
            return Err(Reject::on(
                R::HeaderMalformed,
                corr,
                "ACK payload is not 12 bytes",
            ));
        }
        let mut up = [0u8; 8];
        up.copy_from_slice(&payload[..8]);
        let mut win = [0u8; 4];
        win.copy_from_slice(&payload[8..]);
        let ack_up_to = u64::from_be_bytes(up);
        let window = u32::from_be_bytes(win);
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(Reject::on(
                R::HeaderMalformed,
                corr,
                "ACK window outside [1, 1024]",
            ));
        }
        let Some(s) = self.streams.get_mut(&corr).filter(|s| s.send != Half::Idle) else {
            return self.stale_or(corr, "ACK for a stream this side never sent on");
        };
        if ack_up_to < s.peer_acked {
            return Err(Reject::on(R::AckRegress, corr, "ack_up_to went backwards"));
        }
        if ack_up_to > s.sent {
            return Err(Reject::on(
                R::AckRegress,
                corr,
                "ack_up_to is past the last frame sent",
            ));
        }
        self.inflight -= ack_up_to - s.peer_acked;
        s.peer_acked = ack_up_to;
        s.peer_window = window;
        let credit = (s.peer_acked + window as u64).saturating_sub(s.sent) as u32;
        self.metrics.ack_window(window);
        self.metrics.inflight_frames(self.inflight);
        Ok(Event::Credit {
            corr_id: corr,
            credit,
        })
    }

    /// Frames stream `corr_id` may send now.
    pub fn credit(&self, corr_id: u64) -> u32 {
        match self.streams.get(&corr_id) {
            Some(s) if s.send == Half::Open => {
                (s.peer_acked + s.peer_window as u64).saturating_sub(s.sent) as u32
            }
            Some(s) if s.send == Half::Idle => s.peer_window,
            None => self.peer.as_ref().map(|p| p.ack_window).unwrap_or(0),
            _ => 0,
        }
    }

    /// Records that the host is about to send a frame described by `spec`;
    /// refuses when the state machine or the peer's window forbids it.
    pub fn on_send(&mut self, spec: &FrameSpec) -> Result<(), SendError> {
        if spec.app_proto_id == CONTROL_PROTO && spec.code < crate::header::CODE_ERROR_MIN {
            return Err(SendError::Control);
        }
        let Some(peer_window) = self.peer.as_ref().map(|p| p.ack_window) else {
            return Err(SendError::NoHello);
        };
        let corr = spec.corr_id;
        let is_error = spec.code >= crate::header::CODE_ERROR_MIN;
        if spec.flags.contains(Flags::START) && !is_error {
            let open_now = self.streams.len();
            let s = match self.streams.get_mut(&corr) {
                Some(s) => s,
                None => {
                    if open_now >= self.cfg.max_streams {
                        return Err(SendError::TooManyStreams);
                    }
                    self.streams.entry(corr).or_insert(Stream::new(peer_window))
                }
            };
            if s.send != Half::Idle {
                return Err(SendError::AlreadyOpen(corr));
            }
            s.send = Half::Open;
            s.sent = 0;
            s.peer_acked = 0;
            s.awaiting = spec.flags.contains(Flags::REQ);
        }
        if is_error && !self.streams.contains_key(&corr) {
            // Answering a request whose half closed as it arrived (a
            // one-frame request): nothing here tracks that stream.
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&corr) else {
            return Err(SendError::NotOpen(corr));
        };
        if is_error {
            s.send = Half::Closed;
            if s.recv == Half::Open {
                s.recv = Half::Closed;
            }
            self.close_if_done(corr);
            return Ok(());
        }
        if s.send != Half::Open {
            return Err(SendError::NotOpen(corr));
        }
        if s.sent - s.peer_acked >= s.peer_window as u64 {
            return Err(SendError::NoCredit(corr));
        }
        s.sent += 1;
        self.inflight += 1;
        if spec.flags.contains(Flags::END) {
            s.send = Half::Closed;
        }
        self.metrics.inflight_frames(self.inflight);
        self.close_if_done(corr);
        Ok(())
    }
}

#[inline]
fn unreachable_hello() -> Result<Event, Reject> {
    // HELLO is answered before this match; reaching here would be a bug,
    // reported as a reject rather than a panic.
    Err(Reject::new(R::BadHello, "HELLO out of place"))
}
