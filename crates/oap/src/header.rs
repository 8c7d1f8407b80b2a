//! The 38-byte OAP/1 header: field layout, flags, and the frame kinds a
//! header denotes.

use bytes::BufMut;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 38;
/// Largest frame (header included) a conforming peer may send.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// Header flag bits. Bits 8–15 are reserved and rejected by a strict
/// decoder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    pub const REQ: Flags = Flags(1 << 0);
    pub const RESP: Flags = Flags(1 << 1);
    pub const EVENT: Flags = Flags(1 << 2);
    pub const START: Flags = Flags(1 << 3);
    pub const END: Flags = Flags(1 << 4);
    pub const ACK_REQ: Flags = Flags(1 << 5);
    pub const COMP: Flags = Flags(1 << 6);
    pub const APP_E2E: Flags = Flags(1 << 7);
    pub const RESERVED: Flags = Flags(0xff00);
    pub const EMPTY: Flags = Flags(0);

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    #[must_use]
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// How many of REQ, RESP, EVENT are set.
    pub const fn direction_count(self) -> u32 {
        (self.0 & 0b111).count_ones()
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.with(rhs)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 8] = [
            "REQ", "RESP", "EVENT", "START", "END", "ACK_REQ", "COMP", "APP_E2E",
        ];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if self.0 & 0xff00 != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "RESERVED({:#06x})", self.0 & 0xff00)?;
            first = false;
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

/// `app_proto_id` of connection control frames (HELLO, ACK, connection
/// ERROR).
pub const CONTROL_PROTO: u16 = 0;
/// Control code of HELLO.
pub const CODE_HELLO: u16 = 0;
/// Control code of ACK.
pub const CODE_ACK: u16 = 1;
/// Codes at or above this are errors.
pub const CODE_ERROR_MIN: u16 = 400;

/// A decoded header. `len` is the whole frame, header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub ver: u16,
    pub flags: Flags,
    pub code: u16,
    pub app_proto_id: u16,
    pub tenant: u128,
    pub cap_len: u16,
    pub corr_id: u64,
}

/// What a frame is, by its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Hello,
    Ack,
    Start,
    Data,
    End,
    Error,
}

impl FrameKind {
    /// What a frame with these header fields is (§3).
    #[inline]
    pub fn of(app_proto_id: u16, code: u16, flags: Flags) -> Self {
        if app_proto_id == CONTROL_PROTO && code == CODE_HELLO {
            FrameKind::Hello
        } else if app_proto_id == CONTROL_PROTO && code == CODE_ACK {
            FrameKind::Ack
        } else if code >= CODE_ERROR_MIN {
            FrameKind::Error
        } else if flags.contains(Flags::START) {
            FrameKind::Start
        } else if flags.contains(Flags::END) {
            FrameKind::End
        } else {
            FrameKind::Data
        }
    }

    /// The `kind` label of `oap_frames_total`.
    pub const fn label(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Ack => "ack",
            FrameKind::Start => "start",
            FrameKind::Data => "data",
            FrameKind::End => "end",
            FrameKind::Error => "error",
        }
    }

    pub const ALL: [FrameKind; 6] = [
        FrameKind::Hello,
        FrameKind::Ack,
        FrameKind::Start,
        FrameKind::Data,
        FrameKind::End,
        FrameKind::Error,
    ];
}

impl Header {
    /// Parses the 38 header bytes at the front of `b`. Validation is the
    /// decoder's job.
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut tenant = [0u8; 16];
        tenant.copy_from_slice(&b[12..28]);
        let mut corr = [0u8; 8];
        corr.copy_from_slice(&b[30..38]);
        Header {
            len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            ver: u16_at(4),
            flags: Flags(u16_at(6)),
            code: u16_at(8),
            app_proto_id: u16_at(10),
            tenant: u128::from_be_bytes(tenant),
            cap_len: u16_at(28),
            corr_id: u64::from_be_bytes(corr),
        }
    }

    /// The 38 header bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_be_bytes());
        b[4..6].copy_from_slice(&self.ver.to_be_bytes());
        b[6..8].copy_from_slice(&self.flags.0.to_be_bytes());
        b[8..10].copy_from_slice(&self.code.to_be_bytes());
        b[10..12].copy_from_slice(&self.app_proto_id.to_be_bytes());
        b[12..28].copy_from_slice(&self.tenant.to_be_bytes());
        b[28..30].copy_from_slice(&self.cap_len.to_be_bytes());
        b[30..38].copy_from_slice(&self.corr_id.to_be_bytes());
        b
    }

    /// Writes the 38 header bytes.
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u32(self.len);
        out.put_u16(self.ver);
        out.put_u16(self.flags.0);
        out.put_u16(self.code);
        out.put_u16(self.app_proto_id);
        out.put_u128(self.tenant);
        out.put_u16(self.cap_len);
        out.put_u64(self.corr_id);
    }

    #[inline]
    pub fn kind(&self) -> FrameKind {
        FrameKind::of(self.app_proto_id, self.code, self.flags)
    }

    /// Bytes after the header and capability.
    pub fn payload_len(&self) -> usize {
        (self.len as usize).saturating_sub(HEADER_LEN + self.cap_len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_38_bytes() {
        let h = Header {
            len: 1234,
            ver: 1,
            flags: Flags::REQ | Flags::START,
            code: 7,
            app_proto_id: 2,
            tenant: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            cap_len: 3,
            corr_id: 0xdead_beef,
        };
        let mut v = Vec::new();
        h.write(&mut v);
        assert_eq!(v.len(), HEADER_LEN);
        assert_eq!(&v[..4], &1234u32.to_be_bytes());
        let arr: [u8; HEADER_LEN] = v[..].try_into().unwrap();
        assert_eq!(Header::parse(&arr), h);
        assert_eq!(h.to_bytes().to_vec(), v);
        assert_eq!(format!("{:?}", h.flags), "REQ|START");
    }
}
