//! Property tests: encode→decode round-trips, decoding never panics, and
//! any split of a valid byte stream decodes to the same frames.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ron_oap::{
    Decoded, Decoder, DecoderConfig, Encoder, Flags, Frame, FrameSpec, Session, SessionConfig,
    HEADER_LEN,
};

fn spec_strategy() -> impl Strategy<Value = (FrameSpec, Vec<u8>, Vec<u8>)> {
    (
        0usize..3,       // direction
        0usize..4,       // start / data / end / start|end
        any::<bool>(),   // ACK_REQ
        any::<bool>(),   // APP_E2E
        1u16..=u16::MAX, // app_proto_id (not control)
        0u16..400,       // code (not an error)
        any::<u128>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(
            |(dir, shape, ack_req, e2e, app, code, tenant, corr, cap, payload)| {
                let dir = [Flags::REQ, Flags::RESP, Flags::EVENT][dir];
                let mut flags = dir;
                flags = match shape {
                    0 => flags | Flags::START,
                    1 => flags,
                    2 => flags | Flags::END,
                    _ => flags | Flags::START | Flags::END,
                };
                if ack_req {
                    flags = flags | Flags::ACK_REQ;
                }
                if e2e {
                    flags = flags | Flags::APP_E2E;
                }
                let cap = if flags.contains(Flags::START) {
                    cap
                } else {
                    Vec::new()
                };
                let spec = FrameSpec {
                    flags,
                    code,
                    app_proto_id: app,
                    tenant,
                    corr_id: corr,
                };
                (spec, cap, payload)
            },
        )
}

fn to_wire(frames: &[(FrameSpec, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut enc = Encoder::default();
    let mut out = Vec::new();
    for (spec, cap, payload) in frames {
        let f = enc
            .encode(spec, cap, Bytes::copy_from_slice(payload))
            .expect("encodable");
        out.extend_from_slice(&f.to_vec());
    }
    out
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Frame> {
    let d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Decoded::Frame(f) = d.decode(&mut buf).expect("valid stream") {
            out.push(f);
        }
    }
    assert!(buf.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_round_trips(frames in proptest::collection::vec(spec_strategy(), 1..8)) {
        let wire = to_wire(&frames);
        let decoded = decode_chunks(&[&wire]);
        prop_assert_eq!(decoded.len(), frames.len());
        for (f, (spec, cap, payload)) in decoded.iter().zip(&frames) {
            prop_assert_eq!(f.header.flags, spec.flags);
            prop_assert_eq!(f.header.code, spec.code);
            prop_assert_eq!(f.header.app_proto_id, spec.app_proto_id);
            prop_assert_eq!(f.header.tenant, spec.tenant);
            prop_assert_eq!(f.header.corr_id, spec.corr_id);
            prop_assert_eq!(f.header.len as usize, HEADER_LEN + cap.len() + payload.len());
            prop_assert_eq!(&f.cap[..], &cap[..]);
            prop_assert_eq!(&f.payload[..], &payload[..]);
        }
    }

    #[test]
    fn any_split_decodes_to_the_same_frames(
        frames in proptest::collection::vec(spec_strategy(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let wire = to_wire(&frames);
        let whole = decode_chunks(&[&wire]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len())).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&wire[last..p]);
            last = p;
        }
        chunks.push(&wire[last..]);
        prop_assert_eq!(decode_chunks(&chunks), whole);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096), strict in any::<bool>()) {
        let d = Decoder::new(DecoderConfig { strict, ..DecoderConfig::default() });
        let mut buf = BytesMut::from(&bytes[..]);
        let mut session = Session::new(SessionConfig::default());
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => {
                    prop_assert!(buf.len() < before);
                    if session.on_frame(f).is_err() {
                        break;
                    }
                }
                Ok(Decoded::NeedMore(n)) => {
                    prop_assert!(n > 0);
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => {
                    prop_assert_eq!(buf.len(), before, "a reject consumes nothing");
                    break;
                }
            }
        }
    }

    #[test]
    fn arbitrary_headers_with_valid_lengths_never_panic(
        header in proptest::collection::vec(any::<u8>(), HEADER_LEN..HEADER_LEN + 1),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = header;
        let len = (HEADER_LEN + body.len()) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&body);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = Decoder::default().decode(&mut buf);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = Decoder::new(DecoderConfig { strict: false, ..DecoderConfig::default() }).decode(&mut buf);
    }
}
