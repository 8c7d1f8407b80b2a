//! The session state machine and ACK window, with no sockets and no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use bytes::Bytes;
use common::{ack_wire, hello_wire, one, wire};
use ron_oap::{Event, Flags, FrameSpec, RejectReason, SendError, Session, SessionConfig};

fn session(window: u32) -> Session {
    let mut s = Session::new(SessionConfig {
        local_window: window,
        ..SessionConfig::default()
    });
    let ev = s.on_frame(one(&hello_wire(4))).unwrap();
    assert!(matches!(ev, Event::Hello(ref h) if h.ack_window == 4));
    s
}

#[test]
fn frames_before_hello_are_bad_hello() {
    let mut s = Session::new(SessionConfig::default());
    let f = one(&wire(&FrameSpec::start(2, 1, Flags::REQ), b"", b"x"));
    assert_eq!(s.on_frame(f).unwrap_err().reason, RejectReason::BadHello);
    assert!(s.failed());
}

#[test]
fn a_second_hello_and_a_malformed_hello_are_refused() {
    let mut s = session(8);
    assert_eq!(
        s.on_frame(one(&hello_wire(4))).unwrap_err().reason,
        RejectReason::BadHello
    );

    let mut s = Session::new(SessionConfig::default());
    let f = one(&wire(&FrameSpec::hello(Flags::REQ), b"", b"{not json"));
    assert_eq!(s.on_frame(f).unwrap_err().reason, RejectReason::BadHello);

    let mut s = Session::new(SessionConfig::default());
    let bad = br#"{"versions":[2],"max_frame":1048576,"ack_window":8,"node_id":"x"}"#;
    let f = one(&wire(&FrameSpec::hello(Flags::REQ), b"", bad));
    assert_eq!(s.on_frame(f).unwrap_err().reason, RejectReason::BadVersion);

    let mut s = Session::new(SessionConfig::default());
    let bad = br#"{"versions":[1],"max_frame":1048576,"ack_window":0,"node_id":"x"}"#;
    let f = one(&wire(&FrameSpec::hello(Flags::REQ), b"", bad));
    assert_eq!(s.on_frame(f).unwrap_err().reason, RejectReason::BadHello);
}

#[test]
fn a_stream_opens_carries_data_and_closes() {
    let mut s = session(8);
    let ev = s
        .on_frame(one(&wire(
            &FrameSpec::start(2, 7, Flags::REQ),
            b"cap",
            b"a",
        )))
        .unwrap();
    assert!(matches!(
        ev,
        Event::Start {
            corr_id: 7,
            app_proto_id: 2,
            end: false,
            ..
        }
    ));
    assert_eq!(s.open_streams(), 1);
    let ev = s
        .on_frame(one(&wire(&FrameSpec::data(2, 7, Flags::REQ), b"", b"b")))
        .unwrap();
    assert_eq!(
        ev,
        Event::Data {
            corr_id: 7,
            payload: Bytes::from_static(b"b"),
            end: false
        }
    );
    let ev = s
        .on_frame(one(&wire(&FrameSpec::end(2, 7, Flags::REQ), b"", b"c")))
        .unwrap();
    assert!(matches!(ev, Event::Data { end: true, .. }));
    assert_eq!(s.open_streams(), 0, "no half open: the stream is closed");
    // DATA after END on a closed stream is stale, not fatal.
    let ev = s
        .on_frame(one(&wire(&FrameSpec::data(2, 7, Flags::REQ), b"", b"late")))
        .unwrap();
    assert_eq!(ev, Event::Stale { corr_id: 7 });
}

#[test]
fn data_on_a_stream_never_opened_is_unknown_stream() {
    let mut s = session(8);
    let f = one(&wire(&FrameSpec::data(2, 99, Flags::REQ), b"", b"x"));
    let r = s.on_frame(f).unwrap_err();
    assert_eq!(r.reason, RejectReason::UnknownStream);
    assert_eq!(r.corr_id, Some(99));
}

#[test]
fn start_twice_on_an_open_half_is_bad_flags() {
    let mut s = session(8);
    s.on_frame(one(&wire(&FrameSpec::start(2, 1, Flags::REQ), b"", b"")))
        .unwrap();
    let r = s
        .on_frame(one(&wire(&FrameSpec::start(2, 1, Flags::REQ), b"", b"")))
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadFlags);
}

#[test]
fn the_receiver_acks_at_half_window_and_refuses_a_sender_past_it() {
    let data = || one(&wire(&FrameSpec::data(2, 1, Flags::REQ), b"", b""));
    let mut s = session(4);
    s.on_frame(one(&wire(&FrameSpec::start(2, 1, Flags::REQ), b"", b"")))
        .unwrap();
    assert_eq!(s.poll_ack(), None);
    s.on_frame(data()).unwrap();
    let ack = s.poll_ack().expect("ack at half the window");
    assert_eq!((ack.corr_id, ack.ack_up_to, ack.window), (1, 2, 4));
    // The peer may send frames 3..=6 before our next ACK is taken.
    for _ in 3..=6 {
        s.on_frame(data()).unwrap();
    }
    // The host is backed up and does not take the ACK queued at frame 4:
    // frame 7 is past the window the peer was granted.
    let r = s.on_frame(data()).unwrap_err();
    assert_eq!(r.reason, RejectReason::WindowExceeded);
    assert_eq!(r.corr_id, Some(1));
}

#[test]
fn a_sender_that_waits_for_acks_is_never_refused() {
    let mut s = session(4);
    s.on_frame(one(&wire(&FrameSpec::start(2, 9, Flags::REQ), b"", b"")))
        .unwrap();
    let mut acks = 0;
    for _ in 0..1000 {
        s.on_frame(one(&wire(&FrameSpec::data(2, 9, Flags::REQ), b"", b"")))
            .unwrap();
        while s.poll_ack().is_some() {
            acks += 1;
        }
    }
    assert_eq!(acks, 500, "one ACK per half window");
    // ACK_REQ asks for an ACK at once.
    let spec = FrameSpec::data(2, 9, Flags::REQ).with_flags(Flags::ACK_REQ);
    s.on_frame(one(&wire(&spec, b"", b""))).unwrap();
    assert_eq!(s.poll_ack().map(|a| a.ack_up_to), Some(1002));
}

#[test]
fn credit_is_enforced_and_acks_restore_it() {
    let mut s = session(8); // peer window 4
    let start = FrameSpec::start(2, 3, Flags::REQ);
    let data = FrameSpec::data(2, 3, Flags::REQ);
    s.on_send(&start).unwrap();
    for _ in 0..3 {
        s.on_send(&data).unwrap();
    }
    assert_eq!(s.credit(3), 0);
    assert_eq!(s.inflight_frames(), 4);
    assert_eq!(s.on_send(&data), Err(SendError::NoCredit(3)));
    let ev = s.on_frame(one(&ack_wire(3, 2, 4))).unwrap();
    assert_eq!(
        ev,
        Event::Credit {
            corr_id: 3,
            credit: 2
        }
    );
    assert_eq!(s.inflight_frames(), 2);
    s.on_send(&data).unwrap();
    s.on_send(&FrameSpec::end(2, 3, Flags::REQ)).unwrap();
    assert_eq!(s.on_send(&data), Err(SendError::NotOpen(3)));
}

#[test]
fn ack_regress_and_acks_past_what_was_sent_are_refused() {
    let mut s = session(8);
    s.on_send(&FrameSpec::start(2, 3, Flags::REQ)).unwrap();
    s.on_send(&FrameSpec::data(2, 3, Flags::REQ)).unwrap();
    s.on_frame(one(&ack_wire(3, 2, 4))).unwrap();
    let r = s.on_frame(one(&ack_wire(3, 1, 4))).unwrap_err();
    assert_eq!(r.reason, RejectReason::AckRegress);

    let mut s = session(8);
    s.on_send(&FrameSpec::start(2, 3, Flags::REQ)).unwrap();
    let r = s.on_frame(one(&ack_wire(3, 5, 4))).unwrap_err();
    assert_eq!(r.reason, RejectReason::AckRegress);
}

#[test]
fn ack_window_outside_bounds_is_malformed_and_unknown_acks_are_unknown_stream() {
    let mut s = session(8);
    s.on_send(&FrameSpec::start(2, 3, Flags::REQ)).unwrap();
    let r = s.on_frame(one(&ack_wire(3, 1, 1025))).unwrap_err();
    assert_eq!(r.reason, RejectReason::HeaderMalformed);

    let mut s = session(8);
    let r = s.on_frame(one(&ack_wire(42, 1, 4))).unwrap_err();
    assert_eq!(r.reason, RejectReason::UnknownStream);
}

#[test]
fn request_and_response_share_a_corr_id() {
    // Side A sends a one-frame request; B answers on the same corr_id.
    let mut b = session(8);
    let ev = b
        .on_frame(one(&wire(
            &FrameSpec::start(2, 11, Flags::REQ).with_flags(Flags::END),
            b"",
            b"get",
        )))
        .unwrap();
    assert!(matches!(ev, Event::Start { end: true, .. }));
    assert_eq!(b.open_streams(), 0);
    b.on_send(&FrameSpec::start(2, 11, Flags::RESP)).unwrap();
    b.on_send(&FrameSpec::end(2, 11, Flags::RESP)).unwrap();
    assert_eq!(b.open_streams(), 0);
    // A's ACK for the response arrives after B forgot the stream: stale.
    assert_eq!(
        b.on_frame(one(&ack_wire(11, 2, 4))).unwrap(),
        Event::Stale { corr_id: 11 }
    );
}

#[test]
fn compressed_payloads_inflate_within_the_cap() {
    let mut s = Session::new(SessionConfig {
        inflate_cap: 1000,
        ..SessionConfig::default()
    });
    s.on_frame(one(&hello_wire(4))).unwrap();
    let small = ron_oap::comp::compress(&[7u8; 900]).unwrap();
    let spec = FrameSpec::start(2, 1, Flags::REQ).with_flags(Flags::COMP);
    let ev = s.on_frame(one(&wire(&spec, b"", &small))).unwrap();
    let Event::Start { payload, .. } = ev else {
        panic!()
    };
    assert_eq!(payload.len(), 900);
    let big = ron_oap::comp::compress(&[7u8; 1001]).unwrap();
    let spec = FrameSpec::start(2, 2, Flags::REQ).with_flags(Flags::COMP);
    let r = s.on_frame(one(&wire(&spec, b"", &big))).unwrap_err();
    assert_eq!(r.reason, RejectReason::DecompressCap);
}

#[test]
fn a_stream_error_closes_the_stream_and_later_frames_are_stale() {
    let mut s = session(8);
    s.on_frame(one(&wire(&FrameSpec::start(2, 4, Flags::REQ), b"", b"")))
        .unwrap();
    s.on_send(&FrameSpec::error(2, 4, 500, Flags::RESP))
        .unwrap();
    assert_eq!(s.open_streams(), 0);
    let ev = s
        .on_frame(one(&wire(&FrameSpec::data(2, 4, Flags::REQ), b"", b"")))
        .unwrap();
    assert_eq!(ev, Event::Stale { corr_id: 4 });
    let ev = s
        .on_frame(one(&wire(
            &FrameSpec::error(0, 0, 503, Flags::EVENT),
            b"",
            br#"{"reason":"x","message":"y"}"#,
        )))
        .unwrap();
    assert!(matches!(ev, Event::ConnectionError { code: 503, .. }));
}

#[test]
fn readiness_summary_reflects_the_session() {
    let rate = ron_oap::RejectRate::default();
    let mut s = Session::new(SessionConfig {
        inflight_critical: 2,
        ..SessionConfig::default()
    });
    let r = s.readiness(&rate, 0);
    assert!(r.parser_ready && r.reject_rate_ok && r.backpressure_ok);
    assert!(!r.ack_window_ok, "no window before the peer's HELLO");
    s.on_frame(one(&hello_wire(8))).unwrap();
    assert!(s.readiness(&rate, 0).all_ok());
    for spec in [
        FrameSpec::start(2, 1, Flags::REQ),
        FrameSpec::data(2, 1, Flags::REQ),
        FrameSpec::data(2, 1, Flags::REQ),
    ] {
        s.on_send(&spec).unwrap();
    }
    assert!(
        !s.readiness(&rate, 0).backpressure_ok,
        "3 unacked frames > critical 2"
    );
    let _ = s.on_frame(one(&wire(&FrameSpec::data(2, 77, Flags::REQ), b"", b"")));
    assert!(
        !s.readiness(&rate, 0).parser_ready,
        "a reject finishes the parser"
    );
}

#[test]
fn a_one_frame_request_waits_for_its_answer_and_an_error_reaches_it() {
    // A sends a one-frame request: the stream stays tracked for the answer.
    let mut a = session(8);
    a.on_send(&FrameSpec::start(2, 5, Flags::REQ).with_flags(Flags::END))
        .unwrap();
    assert_eq!(a.open_streams(), 1);
    // B took the request (its half closed on arrival) and answers with an
    // ERROR on the stream it no longer tracks.
    let mut b = session(8);
    b.on_frame(one(&wire(
        &FrameSpec::start(2, 5, Flags::REQ).with_flags(Flags::END),
        b"",
        b"get",
    )))
    .unwrap();
    b.on_send(&FrameSpec::error(2, 5, 404, Flags::RESP))
        .unwrap();
    // A sees the error on its request, and the stream is done.
    let ev = a
        .on_frame(one(&wire(
            &FrameSpec::error(2, 5, 404, Flags::RESP),
            b"",
            br#"{"reason":"not_found","message":"no"}"#,
        )))
        .unwrap();
    assert!(matches!(
        ev,
        Event::StreamError {
            corr_id: 5,
            code: 404,
            ..
        }
    ));
    assert_eq!(a.open_streams(), 0);
    // An answer that opens a response half ends the wait the same way.
    a.on_send(&FrameSpec::start(4, 7, Flags::REQ).with_flags(Flags::END))
        .unwrap();
    a.on_frame(one(&wire(
        &FrameSpec::start(4, 7, Flags::RESP).with_flags(Flags::END),
        b"",
        b"",
    )))
    .unwrap();
    assert_eq!(a.open_streams(), 0);
    assert_eq!(a.inflight_frames(), 0);
    // An EVENT expects nothing back and is forgotten at once; a request
    // given up on can be abandoned.
    a.on_send(&FrameSpec::start(1, 9, Flags::EVENT).with_flags(Flags::END))
        .unwrap();
    a.on_send(&FrameSpec::start(4, 11, Flags::REQ).with_flags(Flags::END))
        .unwrap();
    assert_eq!(a.open_streams(), 1);
    a.abandon(11);
    assert_eq!(a.open_streams(), 0);
    assert_eq!(a.inflight_frames(), 0);
}
