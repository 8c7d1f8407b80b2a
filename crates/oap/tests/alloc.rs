//! Zero heap allocations per frame in steady state, proved with a counting
//! global allocator (this test binary only).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};

struct Counting;

// Counted per thread: the test harness's own threads (its main thread, its
// output capture) may allocate while the measured loop runs, and those
// allocations are not the codec's.
thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may already be gone while the thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// One test function, measured on its own thread's allocations only.
#[test]
fn encode_and_decode_allocate_nothing_per_frame_in_steady_state() {
    // ---- encode
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let mut enc = Encoder::default();
    let spec = FrameSpec::data(2, 1, Flags::REQ);
    for _ in 0..1_000 {
        drop(enc.encode(&spec, b"", payload.clone()).unwrap());
    }
    let before = allocs();
    for _ in 0..100_000 {
        let f = enc.encode(&spec, b"", payload.clone()).unwrap();
        std::hint::black_box(&f);
        drop(f);
    }
    assert_eq!(allocs() - before, 0, "encode allocated in steady state");

    // START frames with a capability: the capability is cut from the pool.
    // Warm-up touches every pool arena once (the first cut from an arena
    // makes it shareable, which allocates its refcount once).
    let start = FrameSpec::start(2, 1, Flags::REQ);
    let cap = b"capability-token";
    for _ in 0..40_000 {
        drop(enc.encode(&start, cap, payload.clone()).unwrap());
    }
    let before = allocs();
    for _ in 0..100_000 {
        let f = enc.encode(&start, cap, payload.clone()).unwrap();
        assert_eq!(&f.cap()[..], cap);
        drop(std::hint::black_box(f));
    }
    assert_eq!(
        allocs() - before,
        0,
        "encode with a capability allocated in steady state"
    );

    // ACKs too.
    let before = allocs();
    for i in 0..100_000u64 {
        drop(std::hint::black_box(enc.encode_ack(1, i, 16)));
    }
    assert_eq!(allocs() - before, 0, "encode_ack allocated in steady state");

    // ---- decode: bytes arrive into one read buffer, frames are taken out
    // and dropped, as a connection's read loop does.
    let frame = enc
        .encode(&spec, b"", Bytes::from(vec![1u8; 1024]))
        .unwrap();
    let wire = frame.to_vec();
    let d = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let step = |buf: &mut BytesMut| {
        buf.reserve(wire.len());
        buf.extend_from_slice(&wire);
        match d.decode(buf).unwrap() {
            Decoded::Frame(f) => drop(std::hint::black_box(f)),
            Decoded::NeedMore(_) => panic!("whole frame given"),
        }
    };
    for _ in 0..10_000 {
        step(&mut buf);
    }
    let before = allocs();
    for _ in 0..100_000 {
        step(&mut buf);
    }
    assert_eq!(allocs() - before, 0, "decode allocated in steady state");
}
