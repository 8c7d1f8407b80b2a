//! The frame encoder: the header (and the small capability) is written into
//! a pooled buffer; the payload `Bytes` is carried alongside and written
//! with a vectored write, never copied.
//!
//! Invariant: in steady state (frames written and dropped at the rate they
//! are made) encoding allocates nothing: pool arenas are reclaimed in place.

use bytes::{Buf, Bytes, BytesMut};

use crate::header::{
    Flags, Header, CODE_ACK, CODE_HELLO, CONTROL_PROTO, HEADER_LEN, MAX_FRAME_BYTES, VERSION,
};

/// The header fields a sender chooses (length and `cap_len` are computed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub flags: Flags,
    pub code: u16,
    pub app_proto_id: u16,
    pub tenant: u128,
    pub corr_id: u64,
}

impl FrameSpec {
    /// First frame of a stream; `dir` is one of REQ, RESP, EVENT.
    pub fn start(app_proto_id: u16, corr_id: u64, dir: Flags) -> Self {
        Self {
            flags: dir | Flags::START,
            code: 0,
            app_proto_id,
            tenant: 0,
            corr_id,
        }
    }

    pub fn data(app_proto_id: u16, corr_id: u64, dir: Flags) -> Self {
        Self {
            flags: dir,
            code: 0,
            app_proto_id,
            tenant: 0,
            corr_id,
        }
    }

    pub fn end(app_proto_id: u16, corr_id: u64, dir: Flags) -> Self {
        Self {
            flags: dir | Flags::END,
            code: 0,
            app_proto_id,
            tenant: 0,
            corr_id,
        }
    }

    pub fn hello(dir: Flags) -> Self {
        Self {
            flags: dir | Flags::START | Flags::END,
            code: CODE_HELLO,
            app_proto_id: CONTROL_PROTO,
            tenant: 0,
            corr_id: 0,
        }
    }

    pub fn ack(corr_id: u64) -> Self {
        Self {
            flags: Flags::EMPTY,
            code: CODE_ACK,
            app_proto_id: CONTROL_PROTO,
            tenant: 0,
            corr_id,
        }
    }

    /// ERROR on a stream (`app_proto_id` ≠ 0) or for the connection (0).
    pub fn error(app_proto_id: u16, corr_id: u64, code: u16, dir: Flags) -> Self {
        Self {
            flags: dir | Flags::END,
            code,
            app_proto_id,
            tenant: 0,
            corr_id,
        }
    }

    #[must_use]
    pub fn with_flags(mut self, f: Flags) -> Self {
        self.flags = self.flags | f;
        self
    }

    #[must_use]
    pub fn with_tenant(mut self, tenant: u128) -> Self {
        self.tenant = tenant;
        self
    }

    #[must_use]
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {0} bytes exceeds the maximum frame size")]
    FrameTooLarge(usize),
    #[error("capability of {0} bytes exceeds 65535")]
    CapTooLong(usize),
    #[error("a capability may only travel on a START frame")]
    CapOnNonStart,
}

/// An encoded frame ready for a vectored write: `head` (header and
/// capability, from the pool) then `payload` (the caller's bytes).
#[derive(Clone, Debug)]
pub struct OutFrame {
    head: Bytes,
    payload: Bytes,
}

impl OutFrame {
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both parts, for writers that take a slice of buffers.
    pub fn into_parts(self) -> (Bytes, Bytes) {
        (self.head, self.payload)
    }
}

impl Buf for OutFrame {
    fn remaining(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    fn chunk(&self) -> &[u8] {
        if self.head.is_empty() {
            &self.payload
        } else {
            &self.head
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        let h = cnt.min(self.head.len());
        self.head.advance(h);
        cnt -= h;
        self.payload.advance(cnt.min(self.payload.len()));
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for part in [&self.head, &self.payload] {
            if n < dst.len() && !part.is_empty() {
                dst[n] = std::io::IoSlice::new(part);
                n += 1;
            }
        }
        n
    }
}

/// A small, bounded set of arenas that frame heads are cut from. A head is
/// a `Bytes` view into an arena; once every head cut from an arena is
/// dropped, the arena's memory is reused in place.
#[derive(Debug)]
pub struct FramePool {
    arenas: Vec<BytesMut>,
    current: usize,
    arena_bytes: usize,
}

/// Largest head: header plus the largest capability.
const MAX_HEAD: usize = HEADER_LEN + u16::MAX as usize;

impl FramePool {
    /// `arenas` buffers of `arena_bytes` each (at least one, each at least
    /// large enough for the largest head).
    pub fn new(arenas: usize, arena_bytes: usize) -> Self {
        let arena_bytes = arena_bytes.max(MAX_HEAD);
        Self {
            arenas: (0..arenas.max(1))
                .map(|_| BytesMut::with_capacity(arena_bytes))
                .collect(),
            current: 0,
            arena_bytes,
        }
    }

    /// An arena with room for `need` bytes. Rotates to the next arena when
    /// the current one is full; `reserve` reclaims that arena in place when
    /// its earlier heads are gone (and only allocates when they are not).
    fn arena(&mut self, need: usize) -> &mut BytesMut {
        if self.arenas[self.current].capacity() - self.arenas[self.current].len() < need {
            self.current = (self.current + 1) % self.arenas.len();
            let bytes = self.arena_bytes;
            self.arenas[self.current].reserve(bytes.max(need));
        }
        &mut self.arenas[self.current]
    }
}

impl Default for FramePool {
    fn default() -> Self {
        Self::new(4, 128 * 1024)
    }
}

#[derive(Debug)]
pub struct Encoder {
    pool: FramePool,
    max_frame: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new(FramePool::default(), MAX_FRAME_BYTES)
    }
}

impl Encoder {
    pub fn new(pool: FramePool, max_frame: usize) -> Self {
        Self {
            pool,
            max_frame: max_frame.clamp(HEADER_LEN, MAX_FRAME_BYTES),
        }
    }

    /// Encodes one frame. The payload is carried, not copied.
    pub fn encode(
        &mut self,
        spec: &FrameSpec,
        cap: &[u8],
        payload: Bytes,
    ) -> Result<OutFrame, EncodeError> {
        if cap.len() > u16::MAX as usize {
            return Err(EncodeError::CapTooLong(cap.len()));
        }
        if !cap.is_empty() && !spec.flags.contains(Flags::START) {
            return Err(EncodeError::CapOnNonStart);
        }
        let len = HEADER_LEN + cap.len() + payload.len();
        if len > self.max_frame {
            return Err(EncodeError::FrameTooLarge(len));
        }
        // cap.len() ≤ u16::MAX was checked above.
        let head = self.head(spec, len, cap.len() as u16, cap);
        Ok(OutFrame { head, payload })
    }

    /// Writes the header (and `tail`: capability, or an ACK's 12 bytes)
    /// into a pool arena and cuts it off as a `Bytes`.
    fn head(&mut self, spec: &FrameSpec, len: usize, cap_len: u16, tail: &[u8]) -> Bytes {
        let header = Header {
            // Every caller checked len ≤ max_frame ≤ 1 MiB.
            len: len as u32,
            ver: VERSION,
            flags: spec.flags,
            code: spec.code,
            app_proto_id: spec.app_proto_id,
            tenant: spec.tenant,
            cap_len,
            corr_id: spec.corr_id,
        };
        let arena = self.pool.arena(HEADER_LEN + tail.len());
        header.write(arena);
        arena.extend_from_slice(tail);
        arena.split().freeze()
    }

    /// Encodes an ACK for stream `corr_id`.
    pub fn encode_ack(&mut self, corr_id: u64, ack_up_to: u64, window: u32) -> OutFrame {
        let mut p = [0u8; crate::decode::ACK_PAYLOAD_LEN];
        p[..8].copy_from_slice(&ack_up_to.to_be_bytes());
        p[8..].copy_from_slice(&window.to_be_bytes());
        // The payload is 12 bytes: it travels in the head, like a capability
        // would, so ACKs need no payload allocation either.
        let head = self.head(&FrameSpec::ack(corr_id), HEADER_LEN + p.len(), 0, &p);
        OutFrame {
            head,
            payload: Bytes::new(),
        }
    }
}
