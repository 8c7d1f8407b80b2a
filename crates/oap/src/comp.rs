//! COMP: zstd payloads with a bounded inflate.
//!
//! Invariant: inflating never produces (or buffers) more than the cap, no
//! matter what the compressed data declares about itself: the decoder is
//! streamed and stopped one byte past the cap.

use std::io::Read;

use bytes::Bytes;

use crate::reject::{Reject, RejectReason};

/// Compresses a payload (level 3). Allocates the compressed copy.
pub fn compress(payload: &[u8]) -> std::io::Result<Bytes> {
    zstd::bulk::compress(payload, 3).map(Bytes::from)
}

/// Inflates `payload`, refusing once the output would exceed `cap` bytes.
pub fn inflate(payload: &[u8], cap: usize) -> Result<Bytes, Reject> {
    let decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(|_| Reject::new(RejectReason::DecompressCap, "cannot start the zstd decoder"))?;
    let mut out = Vec::with_capacity(payload.len().saturating_mul(2).min(cap));
    let read = decoder
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| {
            Reject::new(
                RejectReason::DecompressCap,
                "compressed payload is not valid zstd",
            )
        })?;
    if read > cap {
        return Err(Reject::new(
            RejectReason::DecompressCap,
            "inflated payload exceeds the cap",
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_under_the_cap() {
        let data = b"hello hello hello hello".repeat(100);
        let c = compress(&data).unwrap();
        assert_eq!(&inflate(&c, data.len()).unwrap()[..], &data[..]);
        assert_eq!(
            inflate(&c, data.len() - 1).unwrap_err().reason,
            RejectReason::DecompressCap
        );
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_cap() {
        // 64 MiB of zeros compress to a few KiB; inflating must stop at
        // the cap without producing the rest.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
        let err = inflate(&bomb, 1 << 20).unwrap_err();
        assert_eq!(err.reason, RejectReason::DecompressCap);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            inflate(b"definitely not zstd", 1024).unwrap_err().reason,
            RejectReason::DecompressCap
        );
    }
}
