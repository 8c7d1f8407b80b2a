//! Runs the conformance vectors in `tests/vectors/`: each decode vector is
//! decoded whole, split at every byte boundary, and fed one byte at a time;
//! each session vector is played step by step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ron_oap::{
    Decoded, Decoder, Flags, Frame, FrameSpec, Reject, RejectReason, Session, SessionConfig,
};
use serde_json::Value;

fn load() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut v: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).expect("vector JSON"),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut b = hex::decode(v["hex"].as_str().expect("hex")).expect("valid hex");
    if let Some(fill) = v.get("fill") {
        let byte = u8::from_str_radix(fill["byte"].as_str().unwrap(), 16).unwrap();
        let count = fill["count"].as_u64().unwrap() as usize;
        b.resize(b.len() + count, byte);
    }
    b
}

/// Feeds `chunks` in order to one buffer, decoding after each; at the end,
/// decodes with EOF semantics.
fn decode_chunked(chunks: &[&[u8]]) -> Result<Vec<Frame>, Reject> {
    let d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            let before = buf.len();
            match d.decode(&mut buf)? {
                Decoded::Frame(f) => out.push(f),
                Decoded::NeedMore(n) => {
                    assert!(n > 0);
                    assert_eq!(buf.len(), before, "NeedMore consumed input");
                    break;
                }
            }
        }
    }
    while let Some(f) = d.decode_eof(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

fn json_opt(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::String)
}

fn check_frames(name: &str, frames: &[Frame], expect: &Value) {
    let want = expect["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), want.len(), "{name}: frame count");
    for (f, w) in frames.iter().zip(want) {
        let h = f.header;
        assert_eq!(f.kind().label(), w["kind"], "{name}: kind");
        assert_eq!(h.len as u64, w["len"].as_u64().unwrap(), "{name}: len");
        assert_eq!(h.ver as u64, w["ver"].as_u64().unwrap(), "{name}: ver");
        assert_eq!(
            h.flags.bits() as u64,
            w["flags"].as_u64().unwrap(),
            "{name}: flags"
        );
        assert_eq!(h.code as u64, w["code"].as_u64().unwrap(), "{name}: code");
        assert_eq!(
            h.app_proto_id as u64,
            w["app_proto_id"].as_u64().unwrap(),
            "{name}: app"
        );
        assert_eq!(format!("{:032x}", h.tenant), w["tenant"], "{name}: tenant");
        assert_eq!(
            h.cap_len as u64,
            w["cap_len"].as_u64().unwrap(),
            "{name}: cap_len"
        );
        assert_eq!(h.corr_id, w["corr_id"].as_u64().unwrap(), "{name}: corr_id");
        assert_eq!(hex::encode(&f.cap), w["cap_hex"], "{name}: cap");
        if let Some(want) = w.get("node_key") {
            let got = ron_oap::Hello::parse(&f.payload)
                .ok()
                .and_then(|h| h.node_key())
                .map(hex::encode);
            assert_eq!(json_opt(got), *want, "{name}: node_key");
        }
        if let Some(p) = w.get("payload_hex") {
            assert_eq!(hex::encode(&f.payload), *p, "{name}: payload");
        } else {
            let fill = u8::from_str_radix(w["payload_fill"].as_str().unwrap(), 16).unwrap();
            assert_eq!(f.payload.len() as u64, w["payload_len"].as_u64().unwrap());
            assert!(f.payload.iter().all(|b| *b == fill), "{name}: payload fill");
        }
    }
}

fn run_decode(name: &str, v: &Value) {
    let bytes = bytes_of(v);
    let expect = &v["expect"];
    let check = |label: &str, got: Result<Vec<Frame>, Reject>| match expect.get("reject") {
        Some(reason) => {
            let err = got.expect_err(&format!("{name} ({label}): expected a reject"));
            assert_eq!(err.reason.label(), reason, "{name} ({label})");
        }
        None => check_frames(
            &format!("{name} ({label})"),
            &got.unwrap_or_else(|e| panic!("{name} ({label}): {e}")),
            expect,
        ),
    };
    check("whole", decode_chunked(&[&bytes]));
    // Every split into two chunks (sampled for the 1 MiB vector).
    let step = if bytes.len() > 4096 { 4093 } else { 1 };
    for k in (1..bytes.len()).step_by(step) {
        check(
            &format!("split at {k}"),
            decode_chunked(&[&bytes[..k], &bytes[k..]]),
        );
    }
    if bytes.len() <= 4096 {
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        check("byte by byte", decode_chunked(&singles));
    }
}

fn send_spec(s: &Value) -> FrameSpec {
    let corr = s["corr_id"].as_u64().unwrap();
    let app = s["app_proto_id"].as_u64().unwrap() as u16;
    match s["kind"].as_str().unwrap() {
        "start" => FrameSpec::start(app, corr, Flags::REQ),
        "data" => FrameSpec::data(app, corr, Flags::REQ),
        "end" => FrameSpec::end(app, corr, Flags::REQ),
        "start-resp" => FrameSpec::start(app, corr, Flags::RESP),
        "data-resp" => FrameSpec::data(app, corr, Flags::RESP),
        "end-resp" => FrameSpec::end(app, corr, Flags::RESP),
        other => panic!("unknown send kind {other}"),
    }
}

fn run_session(name: &str, v: &Value) {
    let c = &v["config"];
    let mut s = Session::new(SessionConfig {
        local_window: c["local_window"].as_u64().unwrap() as u32,
        inflate_cap: c["inflate_cap"].as_u64().unwrap() as usize,
        ..SessionConfig::default()
    });
    let expect = &v["expect"];
    for (i, step) in v["steps"].as_array().unwrap().iter().enumerate() {
        if let Some(send) = step.get("send") {
            s.on_send(&send_spec(send))
                .unwrap_or_else(|e| panic!("{name} step {i}: {e}"));
            continue;
        }
        let bytes = hex::decode(step["recv"].as_str().unwrap()).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = match Decoder::default()
            .decode(&mut buf)
            .expect("session vector frames decode")
        {
            Decoded::Frame(f) => f,
            Decoded::NeedMore(_) => panic!("{name} step {i}: partial frame"),
        };
        match s.on_frame(frame) {
            Ok(_) => {}
            Err(r) => {
                assert_eq!(
                    Some(r.reason.label()),
                    expect["reject"].as_str(),
                    "{name} step {i}: {r}"
                );
                assert_eq!(
                    i as u64,
                    expect["at_step"].as_u64().unwrap(),
                    "{name}: rejected at the wrong step"
                );
                return;
            }
        }
    }
    assert!(
        expect.get("reject").is_none(),
        "{name}: expected a reject, got none"
    );
    assert_eq!(
        s.open_streams() as u64,
        expect["open_streams"].as_u64().unwrap(),
        "{name}"
    );
}

#[test]
fn every_conformance_vector_holds() {
    let vectors = load();
    assert!(vectors.len() >= 40, "only {} vectors", vectors.len());
    let mut reasons = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (name, v) in &vectors {
        match v["layer"].as_str() {
            Some("decode") => run_decode(name, v),
            Some("session") => run_session(name, v),
            other => panic!("{name}: unknown layer {other:?}"),
        }
        if let Some(r) = v["expect"]["reject"].as_str() {
            reasons.insert(r.to_owned());
        }
        for f in v["expect"]["frames"].as_array().into_iter().flatten() {
            kinds.insert(f["kind"].as_str().unwrap().to_owned());
        }
    }
    // Every reject reason and every frame kind has at least one vector.
    for r in RejectReason::ALL {
        assert!(
            reasons.contains(r.label()),
            "no vector for reject {}",
            r.label()
        );
    }
    for k in ron_oap::FrameKind::ALL {
        assert!(
            kinds.contains(k.label()),
            "no vector for kind {}",
            k.label()
        );
    }
}

#[test]
fn max_plus_one_is_refused_before_the_body_is_buffered() {
    // Only the 4 length bytes are given: the decoder must not ask for more.
    let mut buf = BytesMut::from(&((ron_oap::MAX_FRAME_BYTES as u32) + 1).to_be_bytes()[..]);
    let err = Decoder::default().decode(&mut buf).unwrap_err();
    assert_eq!(err.reason, RejectReason::FrameOversize);
    let _ = Bytes::new();
}
