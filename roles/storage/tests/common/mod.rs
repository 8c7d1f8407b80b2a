//! Shared by the store tests.

/// Bytes that do not repeat within an object (so chunks of one object do
/// not dedup among themselves unless a test means them to).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}
