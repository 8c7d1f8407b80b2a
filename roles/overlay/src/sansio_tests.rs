//! The session core with simulated time and no sockets: two cores are
//! wired to each other by copying what one transmits into the other's
//! input, and the clock is whatever instant the test passes.

use std::time::Duration;

use ron_oap::{Decoder, Frame};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::config::PeerLimits;
use crate::identity::hex;
use crate::state::Transport;

const SEC: Duration = Duration::from_secs(1);
const A: [u8; 32] = [0xa1; 32];
const B: [u8; 32] = [0xb2; 32];

fn limits() -> Limits {
    Limits {
        handshake_timeout: 5 * SEC,
        read_timeout: 10 * SEC,
        write_timeout: 20 * SEC,
        idle_timeout: 60 * SEC,
        max_conns: 8,
        fetch_max_bytes: 64 << 20,
        peer: PeerLimits::default(),
    }
}

/// The dialer's (`A`, out) or the acceptor's (`B`, in) side.
fn core(t: Instant, l: Limits, dir: Direction) -> SessionCore {
    let (me, peer) = match dir {
        Direction::Out => (A, B),
        Direction::In => (B, A),
    };
    let info = SessionInfo::new(
        hex(&peer),
        "127.0.0.1:1".into(),
        Transport::Tcp,
        dir,
        "X25519".into(),
        "now".into(),
    );
    SessionCore::new(t, l, &hex(&me), peer, Arc::new(info), OapHook::new())
}

/// Everything `c` has queued, as the wire would carry it; the stream
/// took it all at `now`.
fn drain(now: Instant, c: &mut SessionCore) -> BytesMut {
    let mut wire = BytesMut::new();
    loop {
        let mut iov = [IoSlice::new(&[]); WRITE_SLICES];
        let (n_iov, bytes) = c.transmit(&mut iov);
        if n_iov == 0 {
            break;
        }
        for s in &iov[..n_iov] {
            wire.extend_from_slice(s);
        }
        c.on_written(now, bytes);
    }
    c.on_flushed();
    wire
}

/// The frames in `wire`.
fn frames(mut wire: BytesMut) -> Vec<Frame> {
    let dec = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    while let Ok(Decoded::Frame(f)) = dec.decode(&mut wire) {
        out.push(f);
    }
    assert!(wire.is_empty(), "whole frames only");
    out
}

/// Moves what `from` queued into `to`; how many bytes.
fn deliver(now: Instant, from: &mut SessionCore, to: &mut SessionCore) -> Result<usize> {
    let mut wire = drain(now, from);
    let n = wire.len();
    if n > 0 {
        to.handle_input(now, &mut wire)?;
        assert!(wire.is_empty());
    }
    Ok(n)
}

/// A node's side of the test: serves `blob` for any fetch, reads ahead
/// at once, and notes the other actions.
#[derive(Default)]
struct Node {
    blob: Option<Bytes>,
    notes: Vec<String>,
    /// Serve requests left unanswered (when `blob` is `None`).
    unanswered: Vec<u64>,
}

impl Node {
    fn act(&mut self, now: Instant, c: &mut SessionCore) -> Result<()> {
        while let Some(a) = c.poll_action() {
            match a {
                Action::Up { ack_window } => self.notes.push(format!("up:{ack_window}")),
                Action::Serve { corr, proto, .. } => match &self.blob {
                    Some(b) => {
                        let o = Outgoing::blob(Vec::new(), b.len() as u64, pieces_of(b.clone()));
                        c.handle_served(now, Served::Answer(corr, proto, o.map(Some)))?;
                    }
                    None => self.unanswered.push(corr),
                },
                Action::ReadMore {
                    corr,
                    mut source,
                    mut left,
                } => {
                    let r = read_ahead(&mut source, &mut left).map(|p| (p, source, left));
                    c.handle_served(now, Served::More(corr, r))?;
                }
                Action::Gossip(_) => self.notes.push("gossip".into()),
                Action::Synced(parts) => self.notes.push(format!("synced:{}", parts.len())),
            }
        }
        Ok(())
    }
}

/// Runs both sides until neither has anything to send (bounded);
/// `check` sees both after every step.
fn settle(
    now: Instant,
    (a, na): (&mut SessionCore, &mut Node),
    (b, nb): (&mut SessionCore, &mut Node),
    mut check: impl FnMut(&SessionCore, &SessionCore),
) -> Result<()> {
    for _ in 0..100_000 {
        na.act(now, a)?;
        nb.act(now, b)?;
        let moved = deliver(now, a, b)? + deliver(now, b, a)?;
        check(a, b);
        if moved == 0 && a.actions.is_empty() && b.actions.is_empty() {
            return Ok(());
        }
    }
    panic!("the two sides never settled");
}

fn pieces_of(blob: Bytes) -> Pieces {
    let n = blob.len().div_ceil(BLOB_FRAME);
    Box::new((0..n).map(move |i| {
        let end = ((i + 1) * BLOB_FRAME).min(blob.len());
        Ok(blob.slice(i * BLOB_FRAME..end))
    }))
}

/// Two sides up at `t`, their first pings answered.
fn up_pair(t: Instant, l: Limits) -> (SessionCore, SessionCore) {
    let (mut a, mut b) = (core(t, l, Direction::Out), core(t, l, Direction::In));
    let (mut na, mut nb) = (Node::default(), Node::default());
    settle(t, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("hello");
    assert!(a.is_up() && b.is_up());
    assert_eq!(na.notes, [format!("up:{}", l.peer.send_window_frames)]);
    a.handle_timeout(t).expect("first ping");
    b.handle_timeout(t).expect("first ping");
    settle(t, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("pings");
    (a, b)
}

fn fetch(
    now: Instant,
    c: &mut SessionCore,
) -> (
    mpsc::UnboundedReceiver<Bytes>,
    oneshot::Receiver<Result<()>>,
) {
    let (sink, data) = mpsc::unbounded_channel();
    let (reply, done) = oneshot::channel();
    let request = Bytes::from_static(br#"{"address":"b3:00"}"#);
    c.handle_command(
        now,
        Command::Fetch {
            request,
            sink,
            reply,
        },
    )
    .expect("fetch");
    (data, done)
}

#[test]
fn hello_both_ways_brings_both_sides_up_and_a_ping_measures_the_round_trip() {
    let t = Instant::now();
    let (mut a, mut b) = (
        core(t, limits(), Direction::Out),
        core(t, limits(), Direction::In),
    );
    assert!(!a.is_up());
    deliver(t, &mut a, &mut b).expect("a's hello");
    deliver(t, &mut b, &mut a).expect("b's hello");
    assert!(a.is_up() && b.is_up());
    assert!(matches!(
        a.poll_action(),
        Some(Action::Up { ack_window: 16 })
    ));
    // Up: the first ping goes at once, its answer comes 3 ms later.
    assert_eq!(a.poll_timeout(), t);
    a.handle_timeout(t).expect("ping");
    deliver(t, &mut a, &mut b).expect("ping");
    deliver(t + Duration::from_millis(3), &mut b, &mut a).expect("pong");
    assert_eq!(a.info.rtt_us.load(Relaxed), 3000);
    assert_eq!(a.poll_timeout(), t + 15 * SEC, "the next ping");
}

#[test]
fn no_hello_within_the_handshake_timeout_ends_the_session() {
    let t = Instant::now();
    let mut a = core(t, limits(), Direction::Out);
    drain(t, &mut a);
    assert_eq!(a.poll_timeout(), t + 5 * SEC);
    a.handle_timeout(t + 5 * SEC - Duration::from_millis(1))
        .expect("not yet");
    let e = a.handle_timeout(t + 5 * SEC).expect_err("no hello");
    assert!(matches!(e, OverlayError::HelloTimeout), "{e}");
}

#[test]
fn a_quiet_peer_is_pinged_every_quarter_of_the_idle_timeout_then_dropped() {
    let t = Instant::now();
    let (mut a, _b) = up_pair(t, limits());
    let mut pings = 0;
    let (e, now) = loop {
        let now = a.poll_timeout();
        assert!(now <= t + 60 * SEC, "deadlines stop at the idle timeout");
        if let Err(e) = a.handle_timeout(now) {
            break (e, now);
        }
        // The peer takes our bytes but never answers.
        pings += frames(drain(now, &mut a)).len();
    };
    assert!(matches!(e, OverlayError::IdleTimeout), "{e}");
    assert_eq!(now, t + 60 * SEC);
    assert_eq!(pings, 3, "at 15, 30 and 45 s; at 60 s the peer is dropped");
}

#[test]
fn a_peer_that_answers_pings_is_never_idle() {
    let t = Instant::now();
    let (mut a, mut b) = up_pair(t, limits());
    let (mut na, mut nb) = (Node::default(), Node::default());
    let mut now = t;
    // Ten simulated minutes, every deadline of both sides.
    while now < t + 600 * SEC {
        now = a.poll_timeout().min(b.poll_timeout());
        a.handle_timeout(now).expect("a lives");
        b.handle_timeout(now).expect("b lives");
        settle(now, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("pings");
    }
    assert!(
        a.info.frames_in.load(Relaxed) >= 2 * 40,
        "a ping and an answer each way"
    );
}

#[test]
fn a_frame_that_does_not_complete_within_the_read_timeout_ends_the_session() {
    let t = Instant::now();
    let (mut a, mut b) = up_pair(t, limits());
    let t1 = t + SEC;
    b.handle_command(
        t1,
        Command::Gossip {
            payload: Bytes::from_static(b"{}"),
        },
    )
    .expect("gossip");
    let wire = drain(t1, &mut b);
    let mut part = BytesMut::from(&wire[..10]);
    let need = a.handle_input(t1, &mut part).expect("half a frame");
    assert!(need > 0 && need <= wire.len() - 10, "{need}");
    assert_eq!(a.poll_timeout(), t1 + 10 * SEC);
    let e = a.handle_timeout(t1 + 10 * SEC).expect_err("read timeout");
    assert!(matches!(e, OverlayError::ReadTimeout), "{e}");
}

#[test]
fn frames_the_peer_takes_nothing_of_end_the_session_after_the_write_timeout() {
    let t = Instant::now();
    let (mut a, _b) = up_pair(t, limits());
    let t1 = t + SEC;
    a.handle_command(
        t1,
        Command::Gossip {
            payload: Bytes::from_static(b"{}"),
        },
    )
    .expect("gossip");
    // Some bytes taken at 15 s: the clock starts again from there.
    let mut iov = [IoSlice::new(&[]); WRITE_SLICES];
    assert!(a.transmit(&mut iov).1 > 5);
    a.on_written(t1 + 15 * SEC, 5);
    a.handle_timeout(t1 + 20 * SEC)
        .expect("the peer took bytes at 16 s");
    assert_eq!(a.poll_timeout(), t1 + 35 * SEC);
    let e = a.handle_timeout(t1 + 35 * SEC).expect_err("write timeout");
    assert!(matches!(e, OverlayError::WriteTimeout), "{e}");
    assert!(
        a.write_stalled(t1 + 35 * SEC),
        "closing does not wait for the peer"
    );
}

#[tokio::test]
async fn a_fetch_whose_answer_stalls_fails_alone_and_the_peer_is_told_to_stop() {
    let t = Instant::now();
    let (mut a, mut b) = up_pair(t, limits());
    let (mut na, mut nb) = (Node::default(), Node::default());
    let t1 = t + SEC;
    let (_data, done) = fetch(t1, &mut a);
    settle(t1, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("asked");
    assert_eq!(nb.unanswered.len(), 1, "b never answers");
    assert_eq!(a.poll_timeout(), t1 + 10 * SEC);
    a.handle_timeout(t1 + 10 * SEC)
        .expect("the session lives on");
    let e = done.await.expect("replied").expect_err("stalled");
    assert!(matches!(e, OverlayError::FetchStalled), "{e}");
    let cancel = frames(drain(t1 + 10 * SEC, &mut a));
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].kind(), FrameKind::Error);
    assert_eq!(cancel[0].header.code, 408);
}

#[tokio::test]
async fn a_blob_goes_within_the_inflight_cap_and_the_askers_window_whole_and_in_order() {
    // (peer.inflight_frames, the window the asker grants): the smaller
    // one bounds what the holder sends before an ACK.
    for (cap, window) in [(4, 8), (32, 3)] {
        let t = Instant::now();
        let mut l = limits();
        l.peer.inflight_frames = cap;
        l.peer.send_window_frames = window;
        let (mut a, mut b) = up_pair(t, l);
        let blob: Bytes = (0..40 * BLOB_FRAME + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut na = Node::default();
        let mut nb = Node {
            blob: Some(blob.clone()),
            ..Node::default()
        };
        let (mut data, done) = fetch(t, &mut a);
        deliver(t, &mut a, &mut b).expect("ask");
        nb.act(t, &mut b).expect("serve");
        let bound = u64::from(cap.min(window));
        let first = frames(drain(t, &mut b));
        assert_eq!(first.len() as u64, bound, "cap {cap}, window {window}");
        // The frame that fills the cap asks for an ACK.
        let asks = first
            .iter()
            .filter(|f| f.header.flags.contains(Flags::ACK_REQ));
        assert_eq!(asks.count(), usize::from(cap < window));
        let mut wire = BytesMut::new();
        for f in &first {
            wire.extend_from_slice(&f.header.to_bytes());
            wire.extend_from_slice(&f.payload);
        }
        a.handle_input(t, &mut wire).expect("first frames");
        let mut most = 0;
        settle(t, (&mut a, &mut na), (&mut b, &mut nb), |_, b| {
            most = most.max(b.session.inflight_frames());
        })
        .expect("transfer");
        assert!(most <= bound, "at most {bound} unacknowledged: {most}");
        done.await.expect("replied").expect("whole");
        let mut got = Vec::new();
        while let Ok(p) = data.try_recv() {
            assert!(p.len() <= BLOB_FRAME);
            got.extend_from_slice(&p);
        }
        assert!(got == blob[..], "every byte, in order");
        assert!(b.outgoing.is_empty() && b.session.inflight_frames() == 0);
    }
}

#[test]
fn a_peer_sending_past_the_window_it_was_granted_is_rejected_with_an_error_frame() {
    let t = Instant::now();
    let mut l = limits();
    l.peer.send_window_frames = 2;
    let mut a = core(t, l, Direction::Out);
    // The peer, by hand: HELLO, then the answer to fetch 1 without
    // waiting for an ACK.
    let mut enc = Encoder::default();
    let mut wire = BytesMut::new();
    let hello = ron_oap::Hello::new(hex(&B), 1 << 20, 16).to_json();
    let mut put = |wire: &mut BytesMut, spec: FrameSpec, p: Bytes| {
        let f = enc.encode(&spec, &[], p).expect("encode");
        wire.extend_from_slice(&f.to_vec());
    };
    put(&mut wire, FrameSpec::hello(Flags::RESP), Bytes::from(hello));
    a.handle_input(t, &mut wire).expect("hello");
    let (_data, _done) = fetch(t, &mut a);
    let chunk = Bytes::from(vec![7u8; 1000]);
    put(
        &mut wire,
        FrameSpec::start(PROTO_BLOB, 1, Flags::RESP),
        chunk.clone(),
    );
    for _ in 0..4 {
        put(
            &mut wire,
            FrameSpec::data(PROTO_BLOB, 1, Flags::RESP),
            chunk.clone(),
        );
    }
    let e = a.handle_input(t, &mut wire).expect_err("over the window");
    assert!(
        matches!(e, OverlayError::Rejected("window_exceeded")),
        "{e}"
    );
    let out = frames(drain(t, &mut a));
    let last = out.last().expect("an error frame");
    assert_eq!(last.kind(), FrameKind::Error);
    assert!(String::from_utf8_lossy(&last.payload).contains("window_exceeded"));
}

#[test]
fn garbage_and_a_hello_naming_another_key_are_rejected_never_a_silent_close() {
    let t = Instant::now();
    let mut a = core(t, limits(), Direction::Out);
    drain(t, &mut a);
    let mut junk = BytesMut::from(&[0xffu8; 64][..]);
    let e = a.handle_input(t, &mut junk).expect_err("junk");
    assert!(matches!(e, OverlayError::Rejected(_)), "{e}");
    assert_eq!(frames(drain(t, &mut a))[0].kind(), FrameKind::Error);

    // A peer whose HELLO names a key other than the one it authenticated
    // with (here: A's, to A).
    let mut a = core(t, limits(), Direction::Out);
    let mut c = core(t, limits(), Direction::Out);
    drain(t, &mut a);
    let e = deliver(t, &mut c, &mut a).expect_err("wrong key");
    assert!(matches!(e, OverlayError::Rejected("bad_hello")), "{e}");
    let out = frames(drain(t, &mut a));
    assert_eq!(out[0].kind(), FrameKind::Error);
    assert!(!a.is_up());
}

#[test]
fn requests_past_the_peers_rate_are_answered_429_and_the_session_lives() {
    let t = Instant::now();
    let mut l = limits();
    l.peer.max_rps = 2;
    let (mut a, mut b) = up_pair(t, l);
    let (mut na, mut nb) = (Node::default(), Node::default());
    // The pings in `up_pair` spent the budget at t; a second later two
    // requests are in it again, the third is not.
    let t1 = t + SEC;
    let asks: Vec<_> = (0..3).map(|_| fetch(t1, &mut a)).collect();
    settle(t1, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("asked");
    assert_eq!(nb.unanswered.len(), 2);
    let mut refused = 0;
    for (_, mut done) in asks {
        if let Ok(Err(OverlayError::Refused(why))) = done.try_recv() {
            assert!(why.contains("peer_rps"), "{why}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
    assert!(a.is_up() && b.is_up());
}

#[test]
fn an_unknown_app_protocol_is_answered_501_and_gossip_past_its_burst_is_dropped() {
    let t = Instant::now();
    let (mut a, mut b) = up_pair(t, limits());
    let corr = a.open();
    a.send(
        t,
        FrameSpec::start(9, corr, Flags::REQ).with_flags(Flags::END),
        Bytes::new(),
    )
    .expect("send");
    deliver(t, &mut a, &mut b).expect("unknown");
    let answer = frames(drain(t, &mut b));
    assert_eq!(
        (answer[0].kind(), answer[0].header.code),
        (FrameKind::Error, 501)
    );

    let (mut na, mut nb) = (Node::default(), Node::default());
    for _ in 0..250 {
        a.handle_command(
            t,
            Command::Gossip {
                payload: Bytes::from_static(b"{}"),
            },
        )
        .expect("gossip");
    }
    settle(t, (&mut a, &mut na), (&mut b, &mut nb), |_, _| {}).expect("gossip");
    assert_eq!(nb.notes.iter().filter(|n| *n == "gossip").count(), 200);
}

#[test]
fn a_blob_is_read_a_batch_at_a_time_not_whole() {
    let size = 20 * BLOB_FRAME as u64;
    let blob = Bytes::from(vec![1u8; size as usize]);
    let o = Outgoing::blob(Vec::new(), size, pieces_of(blob)).expect("blob");
    assert_eq!(o.frames.len(), FIRST_PIECES, "a few before the first frame");
    assert_eq!(o.left, size - (FIRST_PIECES * BLOB_FRAME) as u64);
    assert!(o.source.is_some(), "the rest is still to be read");

    let mut src = o.source.expect("source");
    let mut left = o.left;
    let mut batches = 0;
    while left > 0 {
        let got = read_ahead(&mut src, &mut left).expect("read");
        assert!(!got.is_empty() && got.len() <= READ_AHEAD);
        batches += 1;
    }
    assert_eq!(batches, (20 - FIRST_PIECES).div_ceil(READ_AHEAD));
}

#[test]
fn a_store_error_or_a_short_object_is_a_500_never_a_short_answer() {
    let n = 2 * READ_AHEAD + 4;
    let failing = move || -> Pieces {
        Box::new((0..n).map(|i| {
            if i == READ_AHEAD + 2 {
                Err(Refusal::new(500, "store", "chunk failed its hash"))
            } else {
                Ok(Bytes::from(vec![i as u8; BLOB_FRAME]))
            }
        }))
    };
    let mut src = failing();
    let mut left = (n * BLOB_FRAME) as u64;
    read_ahead(&mut src, &mut left).expect("the first batch is fine");
    let e = read_ahead(&mut src, &mut left).expect_err("the failed chunk");
    assert_eq!((e.status, e.reason), (500, "store"));

    // The store yields fewer bytes than the object's recorded size.
    let short = Bytes::from(vec![0u8; 3 * BLOB_FRAME]);
    let mut src = pieces_of(short);
    let mut left = 5 * BLOB_FRAME as u64;
    let e = read_ahead(&mut src, &mut left).expect_err("short");
    assert_eq!(e.status, 500);
}

#[test]
fn an_empty_answer_is_one_empty_frame() {
    let o = Outgoing::blob(Vec::new(), 0, pieces_of(Bytes::new())).expect("blob");
    assert_eq!(o.frames.len(), 1);
    assert!(o.frames[0].is_empty() && o.left == 0 && o.source.is_none());
    assert_eq!(Outgoing::whole(PROTO_BLOB, VecDeque::new()).frames.len(), 1);
}

#[test]
fn transmit_puts_every_frame_on_the_wire_whole_and_in_order_in_any_write_sizes() {
    let t = Instant::now();
    let mut enc = Encoder::default();
    let mut queued = Vec::new();
    let mut want = Vec::new();
    // Frames of many sizes (empty, tiny, 64 KiB and odd), more than one
    // batch of them.
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
        want.extend_from_slice(&f.to_vec());
        queued.push(f);
    }
    for step in [1000, 7, 300_000] {
        let mut c = core(t, limits(), Direction::Out);
        drain(t, &mut c);
        let before = c.info.frames_out.load(Relaxed);
        for f in &queued {
            c.out.push(t, f.clone(), FrameKind::Start);
        }
        let mut got = Vec::new();
        loop {
            let mut iov = [IoSlice::new(&[]); WRITE_SLICES];
            let (n_iov, bytes) = c.transmit(&mut iov);
            if n_iov == 0 {
                break;
            }
            assert!(bytes <= WRITE_BATCH.max(iov[0].len()));
            let mut take = step.min(bytes);
            let taken = take;
            for s in &iov[..n_iov] {
                let n = take.min(s.len());
                got.extend_from_slice(&s[..n]);
                take -= n;
            }
            c.on_written(t, taken);
        }
        assert_eq!(got.len(), want.len(), "step {step}");
        assert!(got == want, "step {step}: bytes differ");
        assert_eq!(
            c.info.frames_out.load(Relaxed) - before,
            11,
            "each frame counted once"
        );
    }
}

#[test]
fn frame_kinds_count_in_the_order_of_frame_kind_all() {
    for (i, k) in FrameKind::ALL.into_iter().enumerate() {
        assert_eq!(kind_index(k), i, "{k:?}");
    }
}
