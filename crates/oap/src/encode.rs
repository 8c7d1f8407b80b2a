//! The frame encoder: the 38-byte header is written inline into the
//! `OutFrame` (no buffer, no refcount), a capability is cut from a small
//! pool of reusable arenas, and the payload `Bytes` is carried alongside and
//! written with a vectored write, never copied.
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
    /// What the frame this spec encodes is.
    pub fn kind(&self) -> crate::FrameKind {
        crate::FrameKind::of(self.app_proto_id, self.code, self.flags)
    }

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

/// Bytes kept inline in an `OutFrame`: the header, plus an ACK's payload.
const FIXED: usize = HEADER_LEN + crate::decode::ACK_PAYLOAD_LEN;

/// An encoded frame ready for a vectored write, in up to three parts: the
/// header (inline, no allocation), the capability (cut from the pool; empty
/// on all but START frames) and the payload (the caller's bytes, carried).
#[derive(Clone, Debug)]
pub struct OutFrame {
    fixed: [u8; FIXED],
    fixed_len: u8,
    fixed_pos: u8,
    cap: Bytes,
    payload: Bytes,
}

impl OutFrame {
    /// The header bytes not yet written (and an ACK's payload).
    pub fn header_bytes(&self) -> &[u8] {
        &self.fixed[self.fixed_pos as usize..self.fixed_len as usize]
    }

    pub fn cap(&self) -> &Bytes {
        &self.cap
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn len(&self) -> usize {
        self.remaining()
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The whole frame as one vector (copies; for tests and tools, never
    /// for the data path).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(self.header_bytes());
        v.extend_from_slice(&self.cap);
        v.extend_from_slice(&self.payload);
        v
    }
}

impl Buf for OutFrame {
    fn remaining(&self) -> usize {
        (self.fixed_len - self.fixed_pos) as usize + self.cap.len() + self.payload.len()
    }

    fn chunk(&self) -> &[u8] {
        if self.fixed_pos < self.fixed_len {
            self.header_bytes()
        } else if !self.cap.is_empty() {
            &self.cap
        } else {
            &self.payload
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        let f = cnt.min((self.fixed_len - self.fixed_pos) as usize);
        // f ≤ FIXED < 256.
        self.fixed_pos += f as u8;
        cnt -= f;
        let c = cnt.min(self.cap.len());
        self.cap.advance(c);
        cnt -= c;
        self.payload.advance(cnt.min(self.payload.len()));
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for part in [self.header_bytes(), &self.cap[..], &self.payload[..]] {
            if n < dst.len() && !part.is_empty() {
                dst[n] = std::io::IoSlice::new(part);
                n += 1;
            }
        }
        n
    }
}

/// A small, bounded set of arenas that capabilities are cut from. A cut is a
/// `Bytes` view into an arena; once every cut from an arena is dropped, the
/// arena's memory is reused in place.
#[derive(Debug)]
pub struct FramePool {
    arenas: Vec<BytesMut>,
    current: usize,
    arena_bytes: usize,
}

/// Largest cut: the largest capability.
const MAX_HEAD: usize = u16::MAX as usize;

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
    #[inline]
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
        let mut out = self.fixed(spec, len, cap.len() as u16, &[]);
        if !cap.is_empty() {
            let arena = self.pool.arena(cap.len());
            arena.extend_from_slice(cap);
            out.cap = arena.split().freeze();
        }
        out.payload = payload;
        Ok(out)
    }

    /// A frame whose header (and `tail`, an ACK's 12 bytes) is inline.
    #[inline]
    fn fixed(&mut self, spec: &FrameSpec, len: usize, cap_len: u16, tail: &[u8]) -> OutFrame {
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
        let mut fixed = [0u8; FIXED];
        fixed[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        fixed[HEADER_LEN..HEADER_LEN + tail.len()].copy_from_slice(tail);
        OutFrame {
            fixed,
            // HEADER_LEN + tail.len() ≤ FIXED < 256.
            fixed_len: (HEADER_LEN + tail.len()) as u8,
            fixed_pos: 0,
            cap: Bytes::new(),
            payload: Bytes::new(),
        }
    }

    /// Encodes an ACK for stream `corr_id`.
    pub fn encode_ack(&mut self, corr_id: u64, ack_up_to: u64, window: u32) -> OutFrame {
        let mut p = [0u8; crate::decode::ACK_PAYLOAD_LEN];
        p[..8].copy_from_slice(&ack_up_to.to_be_bytes());
        p[8..].copy_from_slice(&window.to_be_bytes());
        // The 12-byte payload travels inline with the header: an ACK needs
        // no buffer at all.
        self.fixed(&FrameSpec::ack(corr_id), HEADER_LEN + p.len(), 0, &p)
    }
}
