//! An object's BLAKE3 tree above its 64 KiB chunk groups: what proves a
//! range of an object against its address without the rest of it
//! (verified streaming, as iroh-blobs does with `bao-tree`, whose tree
//! geometry and traversal order this uses).
//!
//! The leaves are the chaining values of the object's 64 KiB groups at
//! their offsets — the store's chunk size, so a group is one stored chunk
//! and one blob frame. For an object of one group the only "leaf" is the
//! address itself. A [`Tree`] holds the leaves and every level above them
//! (about 0.1 % of the object); the address is its root.
//!
//! An answer for a byte range carries the range rounded out to BLAKE3's
//! 1 KiB chunks, and the object's last chunk (which proves its size), as
//! *pieces*: whole groups inside the range, and below a group where the
//! range ends inside one, the largest whole subtrees (down to single
//! chunks) — `bao-tree`'s response traversal with 64 KiB chunk groups.
//! Its proof is the parent pairs (64 bytes each) on the paths from the
//! root to those pieces, in the pre-order `bao-tree` visits them: pairs
//! above the groups come from the [`Tree`], pairs inside an edge group are
//! hashed from that group's bytes when the proof is made. The asker checks
//! the whole proof against the address first ([`check_proof`]), which
//! yields the hash each piece must have; each piece is then checked as it
//! arrives ([`Expect::verify`]), so a liar is caught within one group.

use std::ops::Range;

use bao_tree::iter::{BaoChunk, ResponseIterRef};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges, TreeNode};
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

/// BLAKE3 chunks (1 KiB) per group, as a power of two: 64 KiB groups.
const GROUP_LOG: u8 = 6;
/// Bytes per BLAKE3 chunk, the finest piece an answer carries.
const CHUNK_BYTES: u64 = 1024;
/// Bytes per group.
pub const GROUP_BYTES: u64 = 1024 << GROUP_LOG;

pub fn block_size() -> BlockSize {
    BlockSize::from_chunk_log(GROUP_LOG)
}

/// Groups in an object of `size` bytes (an empty object has none).
pub fn groups(size: u64) -> u64 {
    size.div_ceil(GROUP_BYTES)
}

/// The chaining value of group `index` of an object that has more than
/// one group (its subtree of the BLAKE3 tree, not a root).
pub fn group_cv(index: u64, data: &[u8]) -> [u8; 32] {
    subtree_hash(index << GROUP_LOG, data, false)
}

/// A group's hash as the tree knows it: the chaining value, or for an
/// object of one group the object's BLAKE3 hash (its address).
pub fn leaf_hash(index: u64, data: &[u8], is_root: bool) -> [u8; 32] {
    subtree_hash(index << GROUP_LOG, data, is_root)
}

/// The hash of the whole subtree of `data` starting at chunk `start`: its
/// chaining value, or the BLAKE3 hash when it is the whole object.
fn subtree_hash(start: u64, data: &[u8], is_root: bool) -> [u8; 32] {
    if is_root {
        *blake3::hash(data).as_bytes()
    } else {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(start * CHUNK_BYTES);
        h.update(data);
        h.finalize_non_root()
    }
}

fn parent(l: &[u8; 32], r: &[u8; 32], is_root: bool) -> [u8; 32] {
    if is_root {
        *merge_subtrees_root(l, r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(l, r, Mode::Hash)
    }
}

/// The address of an object of `size` bytes from its groups' hashes,
/// merged the way BLAKE3 builds its tree (each left subtree the largest
/// power of two below its parent's length; with 64 KiB groups every split
/// falls on a group boundary) without keeping the levels.
pub fn root(leaves: &[[u8; 32]], size: u64) -> [u8; 32] {
    fn subtree(leaves: &[[u8; 32]], len: u64, is_root: bool) -> [u8; 32] {
        match leaves {
            [] => *blake3::hash(&[]).as_bytes(),
            [one] => *one,
            _ => {
                let left = blake3::hazmat::left_subtree_len(len);
                let n = (left / GROUP_BYTES) as usize;
                let l = subtree(&leaves[..n], left, false);
                let r = subtree(&leaves[n..], len - left, false);
                parent(&l, &r, is_root)
            }
        }
    }
    subtree(leaves, size, true)
}

/// An object's tree: its size and every level from the group hashes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    /// `levels[0]` are the groups' hashes; `levels[j][i]` is the chaining
    /// value of groups `[i·2^j, (i+1)·2^j)` (the last one of a level may be
    /// short: merging pairwise and carrying an odd one up builds exactly
    /// BLAKE3's left-leaning tree). The top level has at most two.
    levels: Vec<Vec<[u8; 32]>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("{got} group hashes for an object of {size} bytes (needs {want})")]
    Groups { size: u64, got: usize, want: u64 },
    #[error("the proof has {got} bytes, {want} expected")]
    Length { got: usize, want: usize },
    #[error("the proof does not lead to the address (tree node at chunk {chunk}, level {level})")]
    Mismatch { chunk: u64, level: u32 },
}

impl Tree {
    /// The tree of an object of `size` bytes from its groups' hashes (for
    /// one group, that group's hash is the address; none for an empty
    /// object).
    pub fn new(size: u64, leaves: Vec<[u8; 32]>) -> Result<Self, ProofError> {
        let want = groups(size);
        if leaves.len() as u64 != want {
            return Err(ProofError::Groups {
                size,
                got: leaves.len(),
                want,
            });
        }
        let mut levels = vec![leaves];
        while let Some(top) = levels.last().filter(|t| t.len() > 2) {
            let up = top
                .chunks(2)
                .map(|p| match p {
                    [l, r] => parent(l, r, false),
                    [one] => *one,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(up);
        }
        Ok(Tree { size, levels })
    }

    /// The tree as bytes: the size (u64, little-endian), then every
    /// level's hashes from the leaves up.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n: usize = self.levels.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(8 + 32 * n);
        out.extend_from_slice(&self.size.to_le_bytes());
        for level in &self.levels {
            for h in level {
                out.extend_from_slice(h);
            }
        }
        out
    }

    /// A tree from [`Tree::to_bytes`], whose root must be `address` (one
    /// merge: the levels below are trusted as stored; a wrong hash there
    /// makes a proof that its asker refuses).
    pub fn from_bytes(address: &[u8; 32], raw: &[u8]) -> Result<Self, ProofError> {
        let short = ProofError::Length {
            got: raw.len(),
            want: 8,
        };
        let (size, rest) = raw.split_first_chunk::<8>().ok_or(short)?;
        let size = u64::from_le_bytes(*size);
        let mut lens = vec![groups(size) as usize];
        while let Some(&l) = lens.last().filter(|l| **l > 2) {
            lens.push(l.div_ceil(2));
        }
        let want = 32 * lens.iter().sum::<usize>();
        if rest.len() != want {
            return Err(ProofError::Length {
                got: rest.len(),
                want,
            });
        }
        let mut hashes = rest.chunks_exact(32).map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        });
        let levels: Vec<Vec<[u8; 32]>> = lens
            .iter()
            .map(|&l| hashes.by_ref().take(l).collect())
            .collect();
        let tree = Tree { size, levels };
        if tree.root() != *address {
            return Err(ProofError::Mismatch { chunk: 0, level: 0 });
        }
        Ok(tree)
    }

    /// The tree of `data`, hashed here (one pass).
    pub fn of(data: &[u8]) -> Self {
        let n = groups(data.len() as u64);
        let leaves = data
            .chunks(GROUP_BYTES as usize)
            .enumerate()
            .map(|(i, g)| leaf_hash(i as u64, g, n == 1))
            .collect();
        // The leaf count is the group count by construction.
        Tree::new(data.len() as u64, leaves).unwrap_or_else(|_| unreachable!())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The groups' hashes.
    pub fn leaves(&self) -> &[[u8; 32]] {
        &self.levels[0]
    }

    /// The BLAKE3 hash of the whole object: its address.
    pub fn root(&self) -> [u8; 32] {
        match self.levels.last().map(Vec::as_slice) {
            Some([one]) => *one,
            Some([l, r]) => parent(l, r, true),
            _ => *blake3::hash(&[]).as_bytes(),
        }
    }

    pub fn bao(&self) -> BaoTree {
        BaoTree::new(self.size, block_size())
    }

    /// The child pair of a parent node above the groups.
    fn pair(&self, node: TreeNode) -> Option<([u8; 32], [u8; 32])> {
        let level = node.level();
        let j = level.checked_sub(u32::from(GROUP_LOG))? as usize;
        let left = (node.chunk_range().start.0 >> level) as usize;
        let row = self.levels.get(j)?;
        Some((*row.get(left)?, *row.get(left + 1)?))
    }

    /// The proof for `ranges` (see the module docs). Where a range ends
    /// inside a group, the pairs below it are hashed from that group's
    /// bytes, which `group(index)` gives (asked once per such group, at
    /// most three per answer: a range's two ends and the last group).
    pub fn proof<B: AsRef<[u8]>, E>(
        &self,
        ranges: &ChunkRanges,
        mut group: impl FnMut(u64) -> Result<B, E>,
    ) -> Result<Vec<u8>, E> {
        let mut out = Vec::new();
        let mut read: Option<(u64, B)> = None;
        for item in ResponseIterRef::new(self.bao(), ranges) {
            let BaoChunk::Parent { node, .. } = item else {
                continue;
            };
            let (l, r) = match self.pair(node) {
                // Every parent the traversal visits at a group's level or
                // above is in the tree (`pair` is `None` only below it).
                Some(pair) => pair,
                None if node.level() >= u32::from(GROUP_LOG) => unreachable!(),
                None => {
                    // A parent inside group `g`: both children are bytes of
                    // it (the traversal visits no parent whose right child
                    // is past the end).
                    let chunks = node.chunk_range();
                    let (start, mid) = (chunks.start.0, node.mid().0);
                    let g = start >> GROUP_LOG;
                    if read.as_ref().is_none_or(|(at, _)| *at != g) {
                        read = Some((g, group(g)?));
                    }
                    let bytes = read.as_ref().map_or(&[][..], |(_, b)| b.as_ref());
                    let at = |chunk: u64| {
                        (((chunk - (g << GROUP_LOG)) * CHUNK_BYTES) as usize).min(bytes.len())
                    };
                    let end = at(chunks.end.0);
                    (
                        subtree_hash(start, &bytes[at(start)..at(mid)], false),
                        subtree_hash(mid, &bytes[at(mid)..end], false),
                    )
                }
            };
            out.extend_from_slice(&l);
            out.extend_from_slice(&r);
        }
        Ok(out)
    }
}

impl bao_tree::io::sync::Outboard for Tree {
    fn root(&self) -> blake3::Hash {
        blake3::Hash::from(Tree::root(self))
    }

    fn tree(&self) -> BaoTree {
        self.bao()
    }

    fn load(&self, node: TreeNode) -> std::io::Result<Option<(blake3::Hash, blake3::Hash)>> {
        Ok(self
            .pair(node)
            .map(|(l, r)| (blake3::Hash::from(l), blake3::Hash::from(r))))
    }
}

/// The chunk spans an answer for bytes `range` of an object of `size`
/// bytes (all of it for `None`) carries: the range rounded out to whole
/// chunks, then from the object's last chunk to its end (a proof that
/// includes the last chunk proves the size). Sorted and apart.
fn spans(size: u64, range: Option<Range<u64>>) -> Vec<Range<u64>> {
    let n = size.div_ceil(CHUNK_BYTES);
    if n == 0 {
        return Vec::new();
    }
    let (first, end) = match range {
        None => (0, n),
        // An empty range (or one past the end) carries only the last chunk.
        Some(r) if r.start >= r.end.min(size) => (0, 0),
        Some(r) => (r.start / CHUNK_BYTES, r.end.min(size).div_ceil(CHUNK_BYTES)),
    };
    let last = n - 1;
    let mut out = Vec::with_capacity(2);
    if first < end && end < last {
        out.push(first..end);
    }
    // The last chunk's run, joined with the range's where they touch.
    out.push(
        if first < end && end >= last {
            first
        } else {
            last
        }..n,
    );
    out
}

/// The byte runs an answer for bytes `range` of an object of `size` bytes
/// carries (see [`spans`]): the range rounded out to 1 KiB chunks, and the
/// last chunk. Sorted and apart; the last run ends at `size`.
pub fn runs(size: u64, range: Option<Range<u64>>) -> Vec<Range<u64>> {
    spans(size, range)
        .into_iter()
        .map(|c| c.start * CHUNK_BYTES..(c.end * CHUNK_BYTES).min(size))
        .collect()
}

/// [`runs`] as the BLAKE3 chunk ranges `bao-tree` traverses (the last one
/// open-ended, as `bao-tree` asks for a size proof).
pub fn ranges_for(size: u64, range: Option<Range<u64>>) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    let spans = spans(size, range);
    let n = spans.len();
    for (i, c) in spans.into_iter().enumerate() {
        out |= if i + 1 == n {
            ChunkRanges::from(ChunkNum(c.start)..)
        } else {
            ChunkRanges::from(ChunkNum(c.start)..ChunkNum(c.end))
        };
    }
    out
}

/// A piece the asker is to receive (a whole group, or a whole subtree of
/// an edge group), and the hash it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Its first BLAKE3 chunk.
    pub chunk: u64,
    pub len: usize,
    pub hash: [u8; 32],
    pub is_root: bool,
}

impl Expect {
    /// Where the piece starts in the object.
    pub fn offset(&self) -> u64 {
        self.chunk * CHUNK_BYTES
    }

    /// The group it is, if it is one whole group of an object of `size`
    /// bytes (its hash then is the group's, what a store keys it by).
    pub fn group(&self, size: u64) -> Option<u64> {
        let whole = GROUP_BYTES.min(size.saturating_sub(self.offset()));
        (self.offset() % GROUP_BYTES == 0 && self.len as u64 == whole)
            .then_some(self.offset() / GROUP_BYTES)
    }

    /// Whether `data` is this piece (one BLAKE3 pass over it).
    pub fn verify(&self, data: &[u8]) -> bool {
        data.len() == self.len && subtree_hash(self.chunk, data, self.is_root) == self.hash
    }
}

/// The proof's length for `ranges` of an object of `size` bytes.
pub fn proof_len(size: u64, ranges: &ChunkRanges) -> usize {
    let tree = BaoTree::new(size, block_size());
    64 * ResponseIterRef::new(tree, ranges)
        .filter(|c| matches!(c, BaoChunk::Parent { .. }))
        .count()
}

/// Checks a proof for `ranges` of the object `address` of `size` bytes:
/// every parent pair against the hash its parent gave it, from the
/// address down. Returns the pieces to expect, in order, with their
/// hashes.
pub fn check_proof(
    address: &[u8; 32],
    size: u64,
    ranges: &ChunkRanges,
    proof: &[u8],
) -> Result<Vec<Expect>, ProofError> {
    let want = proof_len(size, ranges);
    if proof.len() != want {
        return Err(ProofError::Length {
            got: proof.len(),
            want,
        });
    }
    // An empty object has no piece to carry its proof: its address is
    // the hash of nothing (a peer claiming size 0 for another is lying).
    if size == 0 && *address != *blake3::hash(&[]).as_bytes() {
        return Err(ProofError::Mismatch { chunk: 0, level: 0 });
    }
    let tree = BaoTree::new(size, block_size());
    let mut pairs = proof.chunks_exact(64);
    let mut stack = vec![*address];
    let mut out = Vec::new();
    for item in ResponseIterRef::new(tree, ranges) {
        match item {
            BaoChunk::Parent {
                node,
                is_root,
                left,
                right,
                ..
            } => {
                let mismatch = ProofError::Mismatch {
                    chunk: node.chunk_range().start.0,
                    level: node.level(),
                };
                let (pair, expected) = match (pairs.next(), stack.pop()) {
                    (Some(p), Some(e)) => (p, e),
                    _ => return Err(mismatch),
                };
                let mut l = [0u8; 32];
                let mut r = [0u8; 32];
                l.copy_from_slice(&pair[..32]);
                r.copy_from_slice(&pair[32..]);
                if parent(&l, &r, is_root) != expected {
                    return Err(mismatch);
                }
                if right {
                    stack.push(r);
                }
                if left {
                    stack.push(l);
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                size: len,
                is_root,
                ..
            } => {
                let hash = stack.pop().ok_or(ProofError::Mismatch {
                    chunk: start_chunk.0,
                    level: 0,
                })?;
                out.push(Expect {
                    chunk: start_chunk.0,
                    len,
                    hash,
                    is_root,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    const G: usize = GROUP_BYTES as usize;

    #[test]
    fn the_root_is_the_blake3_hash_for_every_shape() {
        for len in [
            0,
            1,
            G - 1,
            G,
            G + 1,
            2 * G,
            3 * G + 5,
            4 * G,
            5 * G,
            7 * G + 1,
            33 * G,
        ] {
            let d = data(len);
            let t = Tree::of(&d);
            assert_eq!(t.root(), *blake3::hash(&d).as_bytes(), "len {len}");
            assert_eq!(t.leaves().len() as u64, groups(len as u64));
        }
    }

    #[test]
    fn the_root_merged_from_group_values_is_blake3() {
        for len in [
            0,
            5,
            G,
            G + 1,
            2 * G + 1,
            3 * G + 7,
            4 * G,
            16 * G,
            17 * G + 1,
            33 * G - 1,
        ] {
            let d = data(len);
            let n = groups(len as u64);
            let leaves: Vec<[u8; 32]> = d
                .chunks(G)
                .enumerate()
                .map(|(i, g)| leaf_hash(i as u64, g, n == 1))
                .collect();
            assert_eq!(
                &root(&leaves, len as u64),
                blake3::hash(&d).as_bytes(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn a_tree_survives_its_bytes_and_refuses_another_address() {
        for len in [0, 10, G, 3 * G + 1, 17 * G] {
            let t = Tree::of(&data(len));
            let raw = t.to_bytes();
            assert_eq!(
                Tree::from_bytes(&t.root(), &raw),
                Ok(t.clone()),
                "len {len}"
            );
            assert!(Tree::from_bytes(&[9; 32], &raw).is_err());
            assert!(Tree::from_bytes(&t.root(), &raw[..raw.len() - 1]).is_err());
        }
    }

    /// The proof for `range` of `d`, its groups read from `d`.
    fn proof_of(t: &Tree, d: &[u8], ranges: &ChunkRanges) -> Vec<u8> {
        t.proof(ranges, |g| -> Result<&[u8], ()> {
            let at = (g * GROUP_BYTES) as usize;
            Ok(&d[at..(at + G).min(d.len())])
        })
        .expect("proof")
    }

    /// Every shape and range, against bao-tree's own encoder: its
    /// pre-order stream, split into parent pairs and data, is exactly our
    /// proof and our runs' bytes; bao-tree's decoder verifies it; and our
    /// checker gives pieces that tile the runs and verify.
    #[test]
    fn answers_are_bao_trees_encoding_split_into_proof_and_data() {
        use bao_tree::io::sync::{encode_ranges, DecodeResponseIter};
        let g = GROUP_BYTES;
        let cases: &[(u64, Option<Range<u64>>)] = &[
            (1, None),
            (1000, Some(10..20)),
            (G as u64 - 1, Some(3000..5000)),
            (g + 1, Some(g + 10..2 * g)),
            (5 * g, Some(0..1)),
            (5 * g, Some(g..2 * g)),
            (5 * g, Some(12_345..12_345 + g)),
            (9 * g + 100, Some(g + 10..2 * g)),
            (9 * g + 100, Some(3 * g + 1..5 * g)),
            (9 * g + 100, Some(8 * g + 5..9 * g + 50)),
            (9 * g + 100, Some(7..7)),
            (9 * g + 100, Some(20 * g..21 * g)),
            (33 * g - 1, Some(17 * g - 1..17 * g + 1)),
            (33 * g - 1, None),
        ];
        for (size, range) in cases {
            let (size, what) = (*size, format!("{size} bytes, {range:?}"));
            let d = data(size as usize);
            let t = Tree::of(&d);
            let ranges = ranges_for(size, range.clone());
            let proof = proof_of(&t, &d, &ranges);
            assert_eq!(proof.len(), proof_len(size, &ranges), "{what}");
            let runs = runs(size, range.clone());
            let carried: Vec<u8> = runs
                .iter()
                .flat_map(|r| d[r.start as usize..r.end as usize].iter().copied())
                .collect();
            // bao-tree's encoding of the same ranges from the same tree.
            let mut encoded = Vec::new();
            encode_ranges(&d[..], &t, &ranges, &mut encoded).expect("encode");
            let (mut pairs, mut bytes, mut at) = (Vec::new(), Vec::new(), 0);
            for item in ResponseIterRef::new(t.bao(), &ranges) {
                let n = match item {
                    BaoChunk::Parent { .. } => 64,
                    BaoChunk::Leaf { size, .. } => size,
                };
                let out = if n == 64 && matches!(item, BaoChunk::Parent { .. }) {
                    &mut pairs
                } else {
                    &mut bytes
                };
                out.extend_from_slice(&encoded[at..at + n]);
                at += n;
            }
            assert_eq!(at, encoded.len(), "{what}");
            assert_eq!(pairs, proof, "{what}: the proof");
            assert_eq!(bytes, carried, "{what}: the data");
            let root = blake3::Hash::from(t.root());
            for item in DecodeResponseIter::new(root, t.bao(), &encoded[..], &ranges) {
                item.expect("bao-tree verifies it");
            }
            let expect = check_proof(&t.root(), size, &ranges, &proof).expect("proof");
            let mut covered = Vec::new();
            for e in &expect {
                let at = e.offset() as usize;
                assert!(e.verify(&d[at..at + e.len]), "{what}: piece at {at}");
                match covered.last_mut() {
                    Some(r @ Range { .. }) if r.end == e.offset() => r.end += e.len as u64,
                    _ => covered.push(e.offset()..e.offset() + e.len as u64),
                }
            }
            assert_eq!(covered, runs, "{what}: the pieces tile the runs");
            // The wire carries the range, rounded to 1 KiB at its ends.
            if let Some(r) = range.clone().filter(|r| r.start < r.end.min(size)) {
                let (a, b) = (r.start, r.end.min(size));
                assert!(runs[0].start <= a && a - runs[0].start < 1024, "{what}");
                let last = runs.iter().find(|x| x.end >= b).expect("covers");
                assert!(last.end - b < 1024 || last.end == size, "{what}");
            }
        }
    }

    #[test]
    fn a_checked_proof_names_each_pieces_hash_and_a_forged_one_fails() {
        let len = 9 * G + 100;
        let d = data(len);
        let t = Tree::of(&d);
        let address = t.root();
        let ranges = ranges_for(len as u64, Some(3 * G as u64 + 1..5 * G as u64));
        let proof = proof_of(&t, &d, &ranges);
        let expect = check_proof(&address, len as u64, &ranges, &proof).expect("proof");
        let groups: Vec<Option<u64>> = expect.iter().map(|e| e.group(len as u64)).collect();
        assert_eq!(
            groups,
            [Some(3), Some(4), Some(9)],
            "whole groups: chunk 3·64 starts one"
        );
        let ranges = ranges_for(len as u64, Some(3 * G as u64 + 1025..5 * G as u64));
        let proof = proof_of(&t, &d, &ranges);
        let expect = check_proof(&address, len as u64, &ranges, &proof).expect("proof");
        assert_eq!(expect[0].offset(), 3 * G as u64 + 1024);
        assert_eq!(expect[0].group(len as u64), None, "a piece of group 3");
        for e in &expect {
            let at = e.offset() as usize;
            let piece = &d[at..(at + e.len)];
            assert!(e.verify(piece));
            let mut bad = piece.to_vec();
            bad[e.len / 2] ^= 1;
            assert!(!e.verify(&bad), "one flipped byte");
        }
        // A forged pair anywhere, a short proof, another address.
        for i in (0..proof.len()).step_by(32) {
            let mut forged = proof.clone();
            forged[i] ^= 1;
            assert!(matches!(
                check_proof(&address, len as u64, &ranges, &forged),
                Err(ProofError::Mismatch { .. })
            ));
        }
        assert!(check_proof(&address, len as u64, &ranges, &proof[..64]).is_err());
        let other = *blake3::hash(b"other").as_bytes();
        assert!(check_proof(&other, len as u64, &ranges, &proof).is_err());
        // A lie about the size changes the shape: refused.
        assert!(check_proof(&address, len as u64 + G as u64, &ranges, &proof).is_err());
        assert!(
            check_proof(&address, 0, &ranges_for(0, None), &[]).is_err(),
            "size 0 is only the empty object's"
        );
    }

    #[test]
    fn runs_cover_the_range_in_whole_chunks_and_the_last_chunk() {
        let size = 10 * GROUP_BYTES + 7;
        let g = GROUP_BYTES;
        let last = 10 * g;
        assert_eq!(runs(size, None), vec![(0..size)]);
        assert_eq!(runs(size, Some(g + 1..3 * g)), [g..3 * g, last..size]);
        assert_eq!(
            runs(size, Some(g + 1025..3 * g - 1)),
            [g + 1024..3 * g, last..size]
        );
        assert_eq!(runs(size, Some(9 * g + 5..size)), vec![(9 * g..size)]);
        assert_eq!(
            runs(size, Some(5..5)),
            vec![(last..size)],
            "an empty range still proves the size"
        );
        assert_eq!(runs(size, Some(size + 5..size + 9)), vec![(last..size)]);
        assert_eq!(runs(0, None), []);
        assert_eq!(runs(size - 7, Some(0..10)), [0..1024, last - 1024..last]);
    }

    #[test]
    fn one_group_needs_no_proof_and_is_checked_against_the_address() {
        let d = data(1000);
        let t = Tree::of(&d);
        let ranges = ranges_for(1000, None);
        assert!(proof_of(&t, &d, &ranges).is_empty());
        let e = check_proof(&t.root(), 1000, &ranges, &[]).expect("proof");
        assert_eq!(e.len(), 1);
        assert!(e[0].is_root && e[0].verify(&d));
        let empty = check_proof(blake3::hash(&[]).as_bytes(), 0, &ranges_for(0, None), &[]);
        assert_eq!(empty.expect("empty"), []);
    }
}
