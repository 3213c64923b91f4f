//! RFC 6962 / RFC 9162 Merkle tree hashing with SHA-256 (specification
//! section 4.2) and proof verification (section 4.3).
//!
//! The verifier never materialises the tree: [`Frontier`] keeps one hash per
//! set bit of the tree size (at most 64), which is enough to compute the root
//! at whatever size a checkpoint names while the events stream past.
//!
//! Proof verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by
//! step. Before evaluating a proof it computes how many hashes a proof for the
//! given sizes must contain and rejects any other count, as the specification
//! requires: a verifier that tolerates extra or missing hashes accepts
//! several encodings of one proof, and an auditor cannot reason about that.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 hash as used for leaves, nodes and roots.
pub type Hash = [u8; 32];

/// `MTH({}) = SHA-256("")`: the root of the empty tree.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    /// The proof has a different number of hashes than a proof for these
    /// sizes must have. It was not evaluated.
    #[error("proof has {actual} hashes; a proof for these sizes has exactly {expected}")]
    WrongLength {
        /// The number of hashes required.
        expected: usize,
        /// The number of hashes supplied.
        actual: usize,
    },
    /// The proof bytes are not a whole number of 32-byte hashes.
    #[error("proof is {0} bytes long, not a multiple of 32")]
    Ragged(usize),
    /// An inclusion proof for an index outside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("cannot prove consistency from size {old} to the smaller size {new}")]
    SizesDecrease {
        /// The size of the earlier tree.
        old: u64,
        /// The size of the later tree.
        new: u64,
    },
    /// The proof evaluates to a different root than the one claimed.
    #[error("proof does not lead to the claimed root")]
    RootMismatch,
}

/// `SHA-256(0x00 || data)`: the hash of one leaf.
#[inline]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
#[inline]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of a tree over `leaves`, given as leaf hashes. Convenience for
/// callers that hold a whole (small) tree; the verifier uses [`Frontier`].
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// The right edge of a Merkle tree being built leaf by leaf: the roots of
/// the perfect subtrees that the tree of the current size decomposes into,
/// largest (leftmost) first. Appending a leaf costs one hash plus one per
/// subtree it completes (amortised two); the root costs one hash per subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, from the most significant bit down.
    subtrees: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier {
            size: 0,
            subtrees: Vec::with_capacity(64),
        }
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf, given as its leaf hash.
    #[inline]
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        // Each trailing one bit of the old size is a perfect subtree of the
        // same height as the one being carried: merge them, like binary
        // addition.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.subtrees.pop().expect("one subtree per set bit");
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.subtrees.push(hash);
        self.size += 1;
    }

    /// The frontier of a tree of `size` leaves whose perfect subtrees, from
    /// the most significant bit of `size` down, have the hashes `subtrees`
    /// (`None` unless there is one per set bit).
    pub fn from_subtrees(size: u64, subtrees: Vec<Hash>) -> Option<Frontier> {
        (subtrees.len() == size.count_ones() as usize).then_some(Frontier { size, subtrees })
    }

    /// `MTH(D[0:size])` for the current size. Because RFC 6962 splits at the
    /// largest power of two below the size, the root is the subtrees folded
    /// together from the right.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(last) = subtrees.next() else {
            return EMPTY_ROOT;
        };
        subtrees.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Splits `bytes` into 32-byte hashes, as stored in `checkpoints.proof`.
pub fn split_proof(bytes: &[u8]) -> Result<Vec<Hash>, ProofError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(ProofError::Ragged(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|chunk| chunk.try_into().expect("32-byte chunk"))
        .collect())
}

/// Number of bits needed to represent `x` (0 for 0).
fn bit_length(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// The number of hashes in an inclusion proof of leaf `index` in a tree of
/// `size` leaves: the siblings on the path from the leaf to the root. The
/// path has one sibling per level below the point where the leaf's path and
/// the tree's right edge diverge (`inner`), plus one per left subtree on the
/// right edge above it (`border`). Zero when `index >= size` (no proof).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let inner = bit_length(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in a consistency proof from size `old` to size
/// `new`: the number RFC 9162's `SUBPROOF(old, D[0:new], true)` produces.
/// Zero when `old` is 0 or `old >= new` (no hashes are needed or possible).
///
/// The proof is the inclusion path of the last leaf of the old tree, taken
/// from the largest perfect subtree that ends at `old` (which needs no hashes
/// below it), plus that subtree's root unless it is the whole old tree.
pub fn consistency_proof_len(old: u64, new: u64) -> usize {
    if old == 0 || old >= new {
        return 0;
    }
    let inner = bit_length((old - 1) ^ (new - 1));
    let border = (old - 1).checked_shr(inner).unwrap_or(0).count_ones();
    let shift = old.trailing_zeros();
    let seed = usize::from(!old.is_power_of_two());
    seed + (inner - shift) as usize + border as usize
}

/// Verifies that `proof` shows `leaf` (a leaf hash) at `index` in the tree
/// of `size` leaves whose root is `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    // Step 2: fn is the leaf's index, sn the last index, at the current level.
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            // p is a left sibling.
            r = node_hash(p, &r);
            // A right-edge node with no sibling at this level rises as is.
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that `proof` shows the tree of `old` leaves with root `old_root`
/// to be a prefix of the tree of `new` leaves with root `new_root` (RFC 9162
/// section 2.1.4.2).
///
/// Edge cases outside `0 < old < new`: equal sizes need an empty proof and
/// equal roots; `old = 0` needs an empty proof (every tree extends the empty
/// tree); `old > new` is always rejected.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesDecrease { old, new });
    }
    let expected = consistency_proof_len(old, new);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    if old == new {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        return Ok(());
    }
    // Step 2: if old is a power of two, the old root is itself the first
    // node of the path; otherwise the proof starts with it.
    let (seed, rest) = if old.is_power_of_two() {
        (old_root, proof)
    } else {
        (&proof[0], &proof[1..])
    };
    // Step 3 and 4.
    let mut fn_ = old - 1;
    let mut sn = new - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let mut fr = *seed;
    let mut sr = *seed;
    // Step 6.
    for c in rest {
        if sn == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn == 0 && fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(s: &str) -> Hash {
        unhex(s).try_into().unwrap()
    }

    /// The leaves of the Certificate Transparency reference test suite
    /// (certificate-transparency merkle_tree_test.cc, reused by Trillian and
    /// transparency-dev/merkle).
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// The roots after each of those leaves.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn empty_tree_hash_is_sha256_of_nothing() {
        assert_eq!(
            EMPTY_ROOT.to_vec(),
            unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(Frontier::new().root(), EMPTY_ROOT);
        assert_eq!(root(&[]), EMPTY_ROOT);
    }

    #[test]
    fn frontier_matches_the_ct_reference_roots() {
        let mut frontier = Frontier::new();
        for (leaf, expected) in CT_LEAVES.iter().zip(CT_ROOTS) {
            frontier.push(leaf_hash(&unhex(leaf)));
            assert_eq!(frontier.root(), h(expected), "size {}", frontier.size());
        }
    }

    #[test]
    fn ct_reference_inclusion_proofs_verify() {
        let leaves: Vec<Hash> = CT_LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect();
        let cases: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, proof) in cases {
            let proof: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
            let root = h(CT_ROOTS[size as usize - 1]);
            assert_eq!(inclusion_proof_len(index, size), proof.len());
            assert_eq!(
                verify_inclusion(index, size, &leaves[index as usize], &root, &proof),
                Ok(()),
                "leaf {index} of {size}"
            );
        }
    }

    #[test]
    fn ct_reference_consistency_proofs_verify() {
        let cases: [(u64, u64, &[&str]); 4] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (old, new, proof) in cases {
            let proof: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
            let old_root = h(CT_ROOTS[old as usize - 1]);
            let new_root = h(CT_ROOTS[new as usize - 1]);
            assert_eq!(consistency_proof_len(old, new), proof.len());
            assert_eq!(
                verify_consistency(old, new, &old_root, &new_root, &proof),
                Ok(()),
                "{old} -> {new}"
            );
            assert_eq!(
                verify_consistency(old, new, &new_root, &old_root, &proof),
                Err(ProofError::RootMismatch)
            );
        }
    }

    #[test]
    fn edge_cases() {
        let a = leaf_hash(b"a");
        assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(3, 3, &a, &EMPTY_ROOT, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 3, &a, &a, &[a]),
            Err(ProofError::WrongLength {
                expected: 0,
                actual: 1
            })
        );
        assert_eq!(verify_consistency(0, 5, &EMPTY_ROOT, &a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(5, 4, &a, &a, &[]),
            Err(ProofError::SizesDecrease { old: 5, new: 4 })
        );
        assert_eq!(
            verify_inclusion(1, 1, &a, &a, &[]),
            Err(ProofError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert_eq!(verify_inclusion(0, 1, &a, &a, &[]), Ok(()));
        assert_eq!(inclusion_proof_len(0, 0), 0);
        assert_eq!(consistency_proof_len(0, 9), 0);
        assert_eq!(split_proof(&[0; 33]), Err(ProofError::Ragged(33)));
        assert_eq!(split_proof(&[]), Ok(vec![]));
        assert_eq!(split_proof(&[1; 64]).unwrap(), vec![[1; 32], [1; 32]]);
    }

    #[test]
    fn proof_lengths_at_the_extremes_do_not_overflow() {
        assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
        assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
        assert_eq!(consistency_proof_len(1, u64::MAX), 64);
        assert_eq!(consistency_proof_len(u64::MAX - 1, u64::MAX), 64);
        // The old tree is the new tree's left child: the proof is its sibling.
        assert_eq!(consistency_proof_len(1 << 63, u64::MAX), 1);
    }
}
