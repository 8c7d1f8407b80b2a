//! The frame decoder: bytes in, `Frame`s out, with no copy of any
//! capability or payload byte.
//!
//! Invariants: the declared length is judged from the first 4 bytes, before
//! anything else is buffered or allocated; a partial frame is never
//! consumed; a reject consumes nothing and the decoder does not try to
//! resynchronise (the host sends ERROR and closes).

use bytes::{Buf, Bytes, BytesMut};

use crate::header::{
    Flags, FrameKind, Header, CODE_ACK, CODE_ERROR_MIN, CODE_HELLO, CONTROL_PROTO, HEADER_LEN,
    MAX_FRAME_BYTES, VERSION,
};
use crate::reject::{Reject, RejectReason as R};

/// Size of an ACK payload: `ack_up_to u64, window u32`.
pub const ACK_PAYLOAD_LEN: usize = 12;

/// A decoded frame. `cap` and `payload` are slices of the decoder's input
/// buffer: no byte was copied to make them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub cap: Bytes,
    pub payload: Bytes,
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        self.header.kind()
    }
}

/// What one `decode` call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// At least this many more bytes are needed; nothing was consumed.
    NeedMore(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest frame accepted, header included (≤ `MAX_FRAME_BYTES`).
    pub max_frame: usize,
    /// Reject reserved flag bits, versions other than 1, a capability on a
    /// non-START frame, and illegal flag combinations.
    pub strict: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_frame: MAX_FRAME_BYTES,
            strict: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Decoder {
    cfg: DecoderConfig,
}

impl Decoder {
    pub fn new(cfg: DecoderConfig) -> Self {
        let mut cfg = cfg;
        cfg.max_frame = cfg.max_frame.clamp(HEADER_LEN, MAX_FRAME_BYTES);
        Self { cfg }
    }

    pub fn config(&self) -> DecoderConfig {
        self.cfg
    }

    /// Decodes one frame from the front of `buf`. On `Frame`, exactly that
    /// frame's bytes were split off `buf`; on `NeedMore` or a reject,
    /// `buf` is untouched.
    #[inline]
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Decoded, Reject> {
        if buf.len() < 4 {
            return Ok(Decoded::NeedMore(4 - buf.len()));
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.cfg.max_frame {
            return Err(Reject::new(
                R::FrameOversize,
                "declared frame length exceeds the maximum",
            ));
        }
        if len < HEADER_LEN {
            return Err(Reject::new(
                R::HeaderMalformed,
                "declared frame length is shorter than the header",
            ));
        }
        if buf.len() < HEADER_LEN {
            return Ok(Decoded::NeedMore(HEADER_LEN - buf.len()));
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&buf[..HEADER_LEN]);
        let header = Header::parse(&head);
        self.validate(&header)?;
        if buf.len() < len {
            return Ok(Decoded::NeedMore(len - buf.len()));
        }
        // One shallow split per frame (one refcount increment); the header
        // bytes are skipped in place and a capability, when present, is a
        // second split. No byte is copied.
        let mut frame = buf.split_to(len);
        frame.advance(HEADER_LEN);
        let cap = match header.cap_len {
            0 => Bytes::new(),
            n => frame.split_to(n as usize).freeze(),
        };
        Ok(Decoded::Frame(Frame {
            header,
            cap,
            payload: frame.freeze(),
        }))
    }

    /// At end of input: any bytes left are a truncated frame.
    pub fn decode_eof(&self, buf: &mut BytesMut) -> Result<Option<Frame>, Reject> {
        match self.decode(buf)? {
            Decoded::Frame(f) => Ok(Some(f)),
            Decoded::NeedMore(_) if buf.is_empty() => Ok(None),
            Decoded::NeedMore(_) => Err(Reject::new(R::Truncated, "input ended inside a frame")),
        }
    }

    #[inline]
    fn validate(&self, h: &Header) -> Result<(), Reject> {
        // The common case — a strict decoder, version 1, no reserved bits,
        // no capability, exactly one direction, a stream frame that is not
        // an ERROR — is settled by one test.
        if self.cfg.strict
            && h.ver == VERSION
            && h.flags.0 & 0xff00 == 0
            && h.cap_len == 0
            && h.app_proto_id != CONTROL_PROTO
            && h.code < CODE_ERROR_MIN
            && h.flags.direction_count() == 1
        {
            return Ok(());
        }
        self.validate_slow(h)
    }

    #[cold]
    fn validate_slow(&self, h: &Header) -> Result<(), Reject> {
        let corr = h.corr_id;
        let len = h.len as usize;
        if h.cap_len as usize > len - HEADER_LEN {
            return Err(Reject::on(
                R::HeaderMalformed,
                corr,
                "cap_len runs past the end of the frame",
            ));
        }
        let kind = h.kind();
        if kind == FrameKind::Ack && len - HEADER_LEN - h.cap_len as usize != ACK_PAYLOAD_LEN {
            return Err(Reject::on(
                R::HeaderMalformed,
                corr,
                "ACK payload is not 12 bytes",
            ));
        }
        if h.app_proto_id == CONTROL_PROTO
            && h.code != CODE_HELLO
            && h.code != CODE_ACK
            && h.code < CODE_ERROR_MIN
        {
            return Err(Reject::on(R::HeaderMalformed, corr, "unknown control code"));
        }
        if !self.cfg.strict {
            return Ok(());
        }
        if h.ver != VERSION {
            return Err(Reject::on(R::BadVersion, corr, "frame version is not 1"));
        }
        if h.flags.intersects(Flags::RESERVED) {
            return Err(Reject::on(R::BadFlags, corr, "reserved flag bits are set"));
        }
        if h.cap_len > 0 && !h.flags.contains(Flags::START) {
            return Err(Reject::on(
                R::CapOnNonStart,
                corr,
                "capability on a frame without START",
            ));
        }
        match kind {
            FrameKind::Ack => {
                if h.flags.direction_count() != 0 {
                    return Err(Reject::on(
                        R::BadFlags,
                        corr,
                        "ACK carries REQ, RESP or EVENT",
                    ));
                }
                if h.flags.intersects(Flags::START | Flags::END | Flags::COMP) {
                    return Err(Reject::on(
                        R::BadFlags,
                        corr,
                        "ACK carries START, END or COMP",
                    ));
                }
            }
            _ => {
                if h.flags.direction_count() != 1 {
                    return Err(Reject::on(
                        R::BadFlags,
                        corr,
                        "exactly one of REQ, RESP, EVENT must be set",
                    ));
                }
            }
        }
        match kind {
            FrameKind::Error if !h.flags.contains(Flags::END) => {
                Err(Reject::on(R::BadFlags, corr, "ERROR frame without END"))
            }
            FrameKind::Hello if !h.flags.contains(Flags::START | Flags::END) => Err(Reject::on(
                R::BadFlags,
                corr,
                "HELLO must be a one-frame message (START|END)",
            )),
            FrameKind::Hello if h.flags.contains(Flags::COMP) => {
                Err(Reject::on(R::BadFlags, corr, "HELLO cannot be compressed"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{Encoder, OutFrame};

    fn wire(out: &OutFrame) -> Vec<u8> {
        out.to_vec()
    }

    #[test]
    fn length_is_judged_from_four_bytes() {
        let d = Decoder::default();
        let mut buf = BytesMut::from(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().reason, R::FrameOversize);
        let mut buf = BytesMut::from(&37u32.to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().reason, R::HeaderMalformed);
        assert_eq!(buf.len(), 4, "a reject consumes nothing");
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::NeedMore(2));
    }

    #[test]
    fn payload_and_cap_are_slices_of_the_input() {
        let mut enc = Encoder::default();
        let out = enc
            .encode(
                &crate::encode::FrameSpec::start(2, 9, Flags::REQ),
                b"capab",
                Bytes::from_static(b"the payload"),
            )
            .unwrap();
        let mut buf = BytesMut::from(&wire(&out)[..]);
        let base = buf.as_ptr() as usize;
        let Decoded::Frame(f) = Decoder::default().decode(&mut buf).unwrap() else {
            panic!("no frame")
        };
        assert_eq!(f.cap.as_ptr() as usize, base + HEADER_LEN);
        assert_eq!(f.payload.as_ptr() as usize, base + HEADER_LEN + 5);
        assert_eq!(&f.payload[..], b"the payload");
        assert!(buf.is_empty());
    }
}
