//! Helpers shared by the codec's tests: build wire bytes for frames.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use ron_oap::{Decoded, Decoder, Encoder, Flags, Frame, FrameSpec, Hello, Reject};

pub fn wire(spec: &FrameSpec, cap: &[u8], payload: &[u8]) -> Vec<u8> {
    let out = Encoder::default()
        .encode(spec, cap, Bytes::copy_from_slice(payload))
        .expect("encodable");
    out.to_vec()
}

pub fn ack_wire(corr_id: u64, ack_up_to: u64, window: u32) -> Vec<u8> {
    let out = Encoder::default().encode_ack(corr_id, ack_up_to, window);
    out.to_vec()
}

pub fn hello_wire(window: u32) -> Vec<u8> {
    let h = Hello::new("peer-1", 1 << 20, window);
    wire(&FrameSpec::hello(Flags::REQ), b"", &h.to_json())
}

/// Decodes every frame of `bytes` (strict decoder), or the first reject.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, Reject> {
    let d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.decode_eof(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

pub fn one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    match Decoder::default().decode(&mut buf).expect("decodes") {
        Decoded::Frame(f) => f,
        Decoded::NeedMore(n) => panic!("needs {n} more"),
    }
}
