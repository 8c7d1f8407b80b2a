//! OAP/1 codec throughput next to its peers, measured in the same run:
//! - decode: OAP decoder vs a `memcpy` of the same bytes vs
//!   `tokio_util::codec::LengthDelimitedCodec` decoding the same payloads;
//! - encode: OAP encoder (payload chained) vs `memcpy` of the payloads vs
//!   `LengthDelimitedCodec` encoding them.
//!
//! Frames of 64 KiB, 1 KiB and 64 B payload. Throughput is in bytes of
//! wire; frames/s = bytes/s ÷ frame size.
//!
//! Run: `cargo bench -p ron-oap --bench codec`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

const TOTAL: usize = 4 << 20;

fn sizes() -> [(&'static str, usize); 3] {
    [("64KiB", 64 * 1024), ("1KiB", 1024), ("64B", 64)]
}

fn oap_wire(payload: usize, frames: usize) -> Vec<u8> {
    let mut enc = Encoder::default();
    let p = Bytes::from(vec![0x5au8; payload]);
    let mut wire = Vec::with_capacity(frames * (payload + 38));
    for i in 0..frames {
        let f = enc
            .encode(&FrameSpec::data(2, i as u64, Flags::REQ), b"", p.clone())
            .expect("encodable");
        wire.extend_from_slice(&f.to_vec());
    }
    wire
}

fn ldc_wire(payload: usize, frames: usize) -> Vec<u8> {
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(1 << 20)
        .new_codec();
    let p = Bytes::from(vec![0x5au8; payload]);
    let mut dst = BytesMut::new();
    for _ in 0..frames {
        codec.encode(p.clone(), &mut dst).expect("ldc encode");
    }
    dst.to_vec()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, size) in sizes() {
        let frames = (TOTAL / (size + 38)).max(1);
        let wire = oap_wire(size, frames);
        let ldc = ldc_wire(size, frames);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::new("oap", name), &wire, |b, wire| {
            let d = Decoder::default();
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let mut n = 0usize;
                    while let Ok(Decoded::Frame(f)) = d.decode(&mut buf) {
                        black_box(&f);
                        n += 1;
                    }
                    assert_eq!(n, frames);
                    buf
                },
                BatchSize::LargeInput,
            );
        });
        g.bench_with_input(BenchmarkId::new("memcpy", name), &wire, |b, wire| {
            let mut dst = vec![0u8; wire.len()];
            b.iter(|| {
                dst.copy_from_slice(black_box(wire));
                black_box(&dst);
            });
        });
        g.bench_with_input(
            BenchmarkId::new("length_delimited", name),
            &ldc,
            |b, ldc| {
                b.iter_batched(
                    || {
                        (
                            BytesMut::from(&ldc[..]),
                            LengthDelimitedCodec::builder()
                                .max_frame_length(1 << 20)
                                .new_codec(),
                        )
                    },
                    |(mut buf, mut codec)| {
                        let mut n = 0usize;
                        while let Ok(Some(f)) = codec.decode(&mut buf) {
                            black_box(&f);
                            n += 1;
                        }
                        assert_eq!(n, frames);
                        buf
                    },
                    BatchSize::LargeInput,
                );
            },
        );
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, size) in sizes() {
        let frames = (TOTAL / (size + 38)).max(1);
        let payload = Bytes::from(vec![0x5au8; size]);
        g.throughput(Throughput::Bytes((frames * (size + 38)) as u64));
        g.bench_with_input(BenchmarkId::new("oap", name), &payload, |b, p| {
            let mut enc = Encoder::default();
            let spec = FrameSpec::data(2, 1, Flags::REQ);
            b.iter(|| {
                for _ in 0..frames {
                    let f = enc.encode(&spec, b"", p.clone()).expect("encodable");
                    black_box(&f);
                }
            });
        });
        g.bench_with_input(BenchmarkId::new("memcpy", name), &payload, |b, p| {
            let mut dst = vec![0u8; size + 38];
            b.iter(|| {
                for _ in 0..frames {
                    dst[38..].copy_from_slice(black_box(p));
                    black_box(&dst);
                }
            });
        });
        g.bench_with_input(
            BenchmarkId::new("length_delimited", name),
            &payload,
            |b, p| {
                let mut codec = LengthDelimitedCodec::builder()
                    .max_frame_length(1 << 20)
                    .new_codec();
                let mut dst = BytesMut::with_capacity(size + 4);
                b.iter(|| {
                    for _ in 0..frames {
                        dst.clear();
                        codec.encode(p.clone(), &mut dst).expect("ldc encode");
                        black_box(&dst);
                    }
                });
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = decode, encode
}
criterion_main!(benches);
