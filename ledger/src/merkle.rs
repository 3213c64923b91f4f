//! The RFC 6962 / RFC 9162 Merkle tree over event records, with SHA-256 as
//! the transparency ecosystem defines it (docs/ledger-format.md, section 4.2).
//!
//! The writer never holds the whole tree: a [`Frontier`] (one hash per set bit
//! of the tree size) gives the root at any size and, together with a batch's
//! new leaves, the consistency proof from the previous checkpoint. Proofs over
//! a complete list of leaf hashes serve exports and tests.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// Hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly less than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The tree head of the leaves in `leaves` (a whole tree or an aligned subtree).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The smallest subtree the writer stores (`subtrees` table): 2^8 = 256
/// leaves. A reader rebuilding a root around a window hashes at most one such
/// subtree's leaves beyond each end of the window, and reads one stored hash
/// per level above it.
pub const SUBTREE_MIN_LEVEL: u32 = 8;

/// The roots of the maximal complete subtrees covering leaves `0..size`, left
/// to right: all a writer needs to keep to extend the tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Appends a leaf hash and reports every complete subtree it closes, as
    /// `(level, index, hash)`: the subtree of leaves
    /// `index << level .. (index + 1) << level`. The writer stores the large
    /// ones ([`SUBTREE_MIN_LEVEL`]) so a reader can rebuild the root around a
    /// window of events without hashing the rest of the log.
    pub fn push_with(&mut self, leaf: Hash, mut closed: impl FnMut(u32, u64, &Hash)) {
        let mut hash = leaf;
        let mut size = self.size;
        let mut level = 0u32;
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            hash = node_hash(&left, &hash);
            size >>= 1;
            level += 1;
            closed(level, size, &hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The tree head.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        match nodes.next() {
            None => empty_root(),
            Some(last) => nodes.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Serialises as `u64be(size) || nodes`, for the writer's own restart state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.nodes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for n in &self.nodes {
            out.extend_from_slice(n);
        }
        out
    }

    /// Parses [`Frontier::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Option<Frontier> {
        let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let rest = &bytes[8..];
        if rest.len() != 32 * size.count_ones() as usize {
            return None;
        }
        let nodes = rest
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunk"))
            .collect();
        Some(Frontier { size, nodes })
    }

    /// The hash of the aligned complete subtree `[start, start + len)` if it
    /// is one of the frontier's nodes.
    pub fn node(&self, start: u64, len: u64) -> Option<Hash> {
        let mut at = 0u64;
        let mut i = 0;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if self.size & width != 0 {
                if at == start && width == len {
                    return Some(self.nodes[i]);
                }
                at += width;
                i += 1;
            }
        }
        None
    }

    /// The consistency proof from this frontier's tree to the tree that also
    /// holds `new_leaves` after it. This is how the writer proves each
    /// checkpoint extends the previous one without keeping old leaves.
    pub fn consistency_proof(&self, new_leaves: &[Hash]) -> Vec<Hash> {
        let m = self.size;
        let n = m + new_leaves.len() as u64;
        consistency_proof_with(m, n, &mut |start, end| {
            if start >= m {
                root_of(&new_leaves[(start - m) as usize..(end - m) as usize])
            } else {
                self.node(start, end - start)
                    .expect("consistency proofs use only frontier nodes of the old tree")
            }
        })
    }
}

/// RFC 9162 `SUBPROOF(m, D[0:n], true)` with subtree hashes from
/// `mth(start, end)` = `MTH(D[start:end])`.
///
/// Every range asked for is either an aligned complete subtree (its length a
/// power of two dividing its start) or ends at `n`. Callers that hold no
/// leaves (the writer's frontier, the exporter's streaming pass) rely on it.
pub fn consistency_proof_with(m: u64, n: u64, mth: &mut dyn FnMut(u64, u64) -> Hash) -> Vec<Hash> {
    fn sub(
        m: u64,
        start: u64,
        n: u64,
        whole: bool,
        mth: &mut dyn FnMut(u64, u64) -> Hash,
        out: &mut Vec<Hash>,
    ) {
        if m == n {
            if !whole {
                out.push(mth(start, start + n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            sub(m, start, k, whole, mth, out);
            out.push(mth(start + k, start + n));
        } else {
            sub(m - k, start + k, n - k, false, mth, out);
            out.push(mth(start, start + k));
        }
    }
    let mut out = Vec::new();
    if 0 < m && m < n {
        sub(m, 0, n, true, mth, &mut out);
    }
    out
}

/// Consistency proof from size `m` to `leaves.len()`, over all leaf hashes.
pub fn consistency_proof(leaves: &[Hash], m: u64) -> Vec<Hash> {
    consistency_proof_with(m, leaves.len() as u64, &mut |a, b| {
        root_of(&leaves[a as usize..b as usize])
    })
}

/// Inclusion proof (audit path) of leaf `index` among `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    inclusion_proof_with(index, leaves.len() as u64, &mut |a, b| {
        root_of(&leaves[a as usize..b as usize])
    })
}

/// RFC 9162 `PATH(index, D[0:size])` with subtree hashes from
/// `mth(start, end)` = `MTH(D[start:end])`; empty if `index >= size`.
///
/// As for [`consistency_proof_with`], every range asked for is an aligned
/// complete subtree or ends at `size`, so proofs can be built from hashes
/// collected in one pass over the leaves (see `crate::bundle`).
pub fn inclusion_proof_with(
    index: u64,
    size: u64,
    mth: &mut dyn FnMut(u64, u64) -> Hash,
) -> Vec<Hash> {
    fn path(
        index: u64,
        start: u64,
        n: u64,
        mth: &mut dyn FnMut(u64, u64) -> Hash,
        out: &mut Vec<Hash>,
    ) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if index < k {
            path(index, start, k, mth, out);
            out.push(mth(start + k, start + n));
        } else {
            path(index - k, start + k, n - k, mth, out);
            out.push(mth(start, start + k));
        }
    }
    let mut out = Vec::new();
    if index < size {
        path(index, 0, size, mth, &mut out);
    }
    out
}

/// Why a proof was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The proof has the wrong number of hashes; it was not evaluated.
    #[error("proof has {got} hashes, expected exactly {expected}")]
    WrongLength {
        /// Hashes supplied.
        got: usize,
        /// Hashes the sizes require.
        expected: usize,
    },
    /// The sizes do not describe a valid proof.
    #[error("invalid tree sizes: {0}")]
    BadSizes(String),
    /// The proof does not connect the given hashes.
    #[error("proof does not verify")]
    Mismatch,
}

/// The exact number of hashes in a consistency proof from `m` to `n`.
pub fn consistency_proof_len(m: u64, n: u64) -> usize {
    fn sub(m: u64, n: u64, whole: bool) -> usize {
        if m == n {
            return usize::from(!whole);
        }
        let k = split(n);
        if m <= k {
            sub(m, k, whole) + 1
        } else {
            sub(m - k, n - k, false) + 1
        }
    }
    if 0 < m && m < n {
        sub(m, n, true)
    } else {
        0
    }
}

/// The exact number of hashes in an inclusion proof of `index` in a tree of `size`.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut f, mut s) = (index, size.saturating_sub(1));
    let mut len = 0;
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        len += 1;
        f >>= 1;
        s >>= 1;
    }
    len
}

/// Verifies an inclusion proof (RFC 9162, section 2.1.3.2), checking its
/// exact length first.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::BadSizes(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Verifies a consistency proof (RFC 9162, section 2.1.4.2), checking its
/// exact length first.
pub fn verify_consistency(
    m: u64,
    n: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if m > n {
        return Err(ProofError::BadSizes(format!(
            "old size {m} exceeds new size {n}"
        )));
    }
    let expected = consistency_proof_len(m, n);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    if m == n {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if m == 0 {
        return Ok(());
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (m - 1, n - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::Mismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr == *old_root && sr == *new_root && s == 0 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_tree_hash_is_sha256_of_nothing() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Frontier::new().root(), empty_root());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn wrong_length_proofs_are_rejected_before_evaluation() {
        let l = leaves(13);
        let mut p = consistency_proof(&l, 5);
        p.push([0; 32]);
        assert!(matches!(
            verify_consistency(5, 13, &root_of(&l[..5]), &root_of(&l), &p),
            Err(ProofError::WrongLength { .. })
        ));
        let mut p = inclusion_proof(&l, 4);
        p.pop();
        assert!(matches!(
            verify_inclusion(4, 13, &l[4], &root_of(&l), &p),
            Err(ProofError::WrongLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn frontier_matches_recursive_root(n in 0usize..300) {
            let l = leaves(n);
            let mut f = Frontier::new();
            for (i, leaf) in l.iter().enumerate() {
                f.push(*leaf);
                prop_assert_eq!(f.root(), root_of(&l[..=i]));
            }
            prop_assert_eq!(Frontier::from_bytes(&f.to_bytes()), Some(f));
        }

        #[test]
        fn consistency_proofs_verify_and_resist_tampering(n in 2u64..200, m_frac in 0.0f64..1.0, flip in any::<prop::sample::Index>()) {
            let m = 1 + ((n - 1) as f64 * m_frac) as u64;
            let m = m.min(n - 1);
            let l = leaves(n as usize);
            let proof = consistency_proof(&l, m);
            prop_assert_eq!(proof.len(), consistency_proof_len(m, n));
            let (old, new) = (root_of(&l[..m as usize]), root_of(&l));
            prop_assert!(verify_consistency(m, n, &old, &new, &proof).is_ok());
            // The frontier-based proof the writer stores is the same proof.
            let mut f = Frontier::new();
            for leaf in &l[..m as usize] { f.push(*leaf); }
            prop_assert_eq!(&f.consistency_proof(&l[m as usize..]), &proof);
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = flip.index(bad.len());
                bad[i][0] ^= 1;
                prop_assert!(verify_consistency(m, n, &old, &new, &bad).is_err());
                let mut short = proof.clone();
                short.pop();
                prop_assert!(verify_consistency(m, n, &old, &new, &short).is_err());
            }
            let mut long = proof.clone();
            long.push(new);
            prop_assert!(verify_consistency(m, n, &old, &new, &long).is_err());
            prop_assert!(verify_consistency(m, n, &new, &new, &proof).is_err());
        }

        #[test]
        fn inclusion_proofs_verify_and_resist_tampering(n in 1u64..200, i_frac in 0.0f64..1.0) {
            let i = ((n as f64 * i_frac) as u64).min(n - 1);
            let l = leaves(n as usize);
            let root = root_of(&l);
            let proof = inclusion_proof(&l, i);
            prop_assert_eq!(proof.len(), inclusion_proof_len(i, n));
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &root, &proof).is_ok());
            let other = leaf_hash(b"not in the tree");
            prop_assert!(verify_inclusion(i, n, &other, &root, &proof).is_err());
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert!(verify_inclusion(j, n, &l[i as usize], &root, &proof).is_err());
            }
        }
    }
}
