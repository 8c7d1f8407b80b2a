//! How `storage.backend = "s3"` lays objects out in a bucket: packs and
//! manifests.
//!
//! A bucket request costs far more than a 64 KiB chunk is worth (one
//! request per chunk ran a 64 MiB upload at 0.06× a plain multipart upload
//! to the same server), so bytes travel in units of up to 1 MiB:
//! - a **pack** (`<prefix>/packs/<key>`) holds up to [`PACK_CHUNKS`]
//!   consecutive full chunks of one write, back to back. Its key is a hash
//!   of its chunks' hashes ([`pack_key`]): the same chunks from two
//!   replicas are the same key and the same bytes, so packs are immutable,
//!   content-addressed and written without coordination, and no pass over
//!   the bytes is spent on the key.
//! - an object's **manifest** (`<prefix>/objects/<address>`) holds its
//!   record (size, chunk hashes, a checksum binding both to the address),
//!   the packs holding its first chunks in order (the runs), and the bytes
//!   of its remaining chunks inline — at most [`PACK_CHUNKS`] of them. An
//!   object of up to 1 MiB is its manifest alone: one request to write,
//!   one to read.
//!
//! Nothing here is trusted when read back: the record verifies against the
//! address, the runs against a checksum, and every chunk against its hash
//! before a byte of it is served.
//!
//! A resumable upload's parts become packs as they arrive; its completion
//! needs the object's BLAKE3 hash without reading the parts back, so each
//! chunk's chaining value (its subtree of the BLAKE3 tree: every 64 KiB
//! chunk is a whole, aligned subtree) is kept with the upload and the
//! root is merged from them (`kernel::outboard::{group_cv, root}`).

use bytes::Bytes;

use crate::store::CHUNK_BYTES;

/// Full chunks per pack (1 MiB), and the most chunks a manifest carries
/// inline.
pub const PACK_CHUNKS: usize = 16;

const MAGIC: &[u8; 8] = b"ronman2\n";
const RUN_LEN: usize = 32 + 4;

/// A pack and how many of the object's chunks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub pack: [u8; 32],
    pub chunks: u32,
}

/// The key of the pack holding `chunks` (their hashes, in order).
pub fn pack_key(chunks: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ron:storage:pack:v1\n");
    for c in chunks {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

/// Where an object's chunks are in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Each run with the index of its first chunk.
    runs: Vec<(u64, Run)>,
    /// Chunks held in packs (those before the inline ones).
    packed: u64,
    /// The inline chunks' bytes.
    pub inline: Bytes,
}

/// Where one chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// In `pack`, whose first chunk is the object's chunk `first`; the
    /// pack holds the object's chunks `first..end`.
    Pack {
        pack: [u8; 32],
        first: u64,
        end: u64,
    },
    /// In the manifest, at this offset of the inline bytes.
    Inline(usize),
}

impl Placement {
    pub fn locate(&self, idx: u64) -> Loc {
        if idx >= self.packed {
            return Loc::Inline(((idx - self.packed) as usize) * CHUNK_BYTES);
        }
        // The last run starting at or before `idx` (runs are in order).
        let i = self.runs.partition_point(|(first, _)| *first <= idx) - 1;
        let (first, run) = self.runs[i];
        Loc::Pack {
            pack: run.pack,
            first,
            end: first + u64::from(run.chunks),
        }
    }
}

/// A manifest, as the parts of one bucket put: the header (magic, record,
/// runs, checksum), then the inline chunks' bytes as they are.
pub fn encode(
    address: &[u8; 32],
    record: &[u8],
    runs: &[Run],
    inline: impl IntoIterator<Item = Bytes>,
) -> Vec<Bytes> {
    let mut head = Vec::with_capacity(8 + 4 + record.len() + 4 + RUN_LEN * runs.len() + 32);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(record.len() as u32).to_be_bytes());
    head.extend_from_slice(record);
    head.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for r in runs {
        head.extend_from_slice(&r.pack);
        head.extend_from_slice(&r.chunks.to_be_bytes());
    }
    let sum = checksum(address, &head);
    head.extend_from_slice(&sum);
    std::iter::once(Bytes::from(head)).chain(inline).collect()
}

fn checksum(address: &[u8; 32], head: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ron:storage:manifest:v2\n");
    h.update(address);
    h.update(head);
    *h.finalize().as_bytes()
}

fn be32(raw: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?))
}

/// The length of the header that `prefix` (the first bytes of a manifest)
/// starts, once enough of it is there to tell; `None` when it is not a
/// manifest or more bytes are needed to tell.
pub fn header_len(prefix: &[u8]) -> Option<usize> {
    if prefix.get(..8)? != MAGIC {
        return None;
    }
    let record = be32(prefix, 8)? as usize;
    let runs = be32(prefix, 12 + record)? as usize;
    Some(12 + record + 4 + RUN_LEN * runs + 32)
}

/// A manifest's header, checked: the record's bytes and the runs.
pub fn decode_header<'a>(
    address: &[u8; 32],
    raw: &'a [u8],
) -> Result<(&'a [u8], Vec<Run>, usize), &'static str> {
    if raw.get(..8) != Some(MAGIC) {
        return Err("manifest is not a manifest");
    }
    let bad = "manifest is cut short";
    let record_len = be32(raw, 8).ok_or(bad)? as usize;
    let record = raw.get(12..12 + record_len).ok_or(bad)?;
    let runs_at = 12 + record_len;
    let n = be32(raw, runs_at).ok_or(bad)? as usize;
    let end = runs_at + 4 + RUN_LEN * n;
    let runs_raw = raw.get(runs_at + 4..end).ok_or(bad)?;
    let sum = raw.get(end..end + 32).ok_or(bad)?;
    if sum != checksum(address, &raw[..end]) {
        return Err("manifest checksum mismatch");
    }
    let runs = runs_raw
        .chunks_exact(RUN_LEN)
        .map(|r| {
            let mut pack = [0u8; 32];
            pack.copy_from_slice(&r[..32]);
            Run {
                pack,
                chunks: u32::from_be_bytes([r[32], r[33], r[34], r[35]]),
            }
        })
        .collect();
    Ok((record, runs, end + 32))
}

/// Checks a whole manifest against the object's record (decoded and
/// verified by the caller from the record bytes) and returns where its
/// chunks are.
pub fn placement(
    runs: Vec<Run>,
    inline: Bytes,
    size: u64,
    chunks: usize,
) -> Result<Placement, &'static str> {
    let mut placed = Vec::with_capacity(runs.len());
    let mut packed = 0u64;
    for r in runs {
        if r.chunks == 0 {
            return Err("manifest names an empty pack");
        }
        placed.push((packed, r));
        packed += u64::from(r.chunks);
    }
    // Packs hold full chunks only; the inline bytes are the rest.
    let in_packs = packed
        .checked_mul(CHUNK_BYTES as u64)
        .ok_or("manifest too large")?;
    if packed > chunks as u64 || in_packs > size || inline.len() as u64 != size - in_packs {
        return Err("manifest places more or fewer bytes than the object has");
    }
    if inline.len() > PACK_CHUNKS * CHUNK_BYTES {
        return Err("manifest carries more inline bytes than a manifest may");
    }
    Ok(Placement {
        runs: placed,
        packed,
        inline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_manifest_decodes_to_what_was_encoded_and_refuses_tampering() {
        let address = [7u8; 32];
        let runs = vec![
            Run {
                pack: [1; 32],
                chunks: 16,
            },
            Run {
                pack: [2; 32],
                chunks: 3,
            },
        ];
        let inline = Bytes::from(data(1000));
        let parts = encode(&address, b"record", &runs, [inline.clone()]);
        let raw: Vec<u8> = parts.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(header_len(&raw[..21]), None, "too short to tell");
        assert_eq!(header_len(&raw[..22]), Some(raw.len() - 1000));
        let (record, got, at) = decode_header(&address, &raw).unwrap();
        assert_eq!(
            (record, &got[..], at),
            (&b"record"[..], &runs[..], raw.len() - 1000)
        );
        let size = 19 * CHUNK_BYTES as u64 + 1000;
        let p = placement(got, Bytes::copy_from_slice(&raw[at..]), size, 20).unwrap();
        assert_eq!(p.inline, inline);
        assert_eq!(
            p.locate(17),
            Loc::Pack {
                pack: [2; 32],
                first: 16,
                end: 19
            }
        );
        assert_eq!(p.locate(19), Loc::Inline(0));
        assert!(placement(runs.clone(), inline.clone(), size + 1, 20).is_err());
        // Any byte of the header changed, or another address: refused.
        let mut bad = raw.clone();
        bad[30] ^= 1;
        assert!(decode_header(&address, &bad).is_err());
        assert!(decode_header(&[8; 32], &raw).is_err());
    }
}
