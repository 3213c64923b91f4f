//! Property tests of `merkle` against the naive RFC 9162 reference in
//! `common`: the incremental frontier computes the same roots as the
//! recursive definition, reference proofs verify, and every proof that is
//! one hash longer or shorter, or has one byte flipped, is rejected.

mod common;

use common::{mth, ref_consistency, ref_inclusion, ref_leaf, Hash};
use gatehouse_verify::merkle::{
    self, consistency_proof_len, inclusion_proof_len, verify_consistency, verify_inclusion,
    Frontier, ProofError,
};
use proptest::prelude::*;

fn leaves(n: usize, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| ref_leaf(&[salt, (i >> 8) as u8, i as u8]))
        .collect()
}

/// Every proof derived from `proof` by adding a hash anywhere, removing
/// one, or flipping one byte.
fn mutations(proof: &[Hash]) -> Vec<Vec<Hash>> {
    let mut out = Vec::new();
    let extra = [0x5a; 32];
    for i in 0..=proof.len() {
        let mut p = proof.to_vec();
        p.insert(i, extra);
        out.push(p);
        if i < proof.len() {
            let mut p = proof.to_vec();
            p.insert(i, proof[i]);
            out.push(p);
        }
    }
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p.remove(i);
        out.push(p);
        for byte in [0, 17, 31] {
            let mut p = proof.to_vec();
            p[i][byte] ^= 0x01;
            out.push(p);
        }
    }
    out
}

#[test]
fn frontier_root_equals_naive_mth_at_every_size() {
    let d = leaves(300, 1);
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), mth(&[]));
    for (i, leaf) in d.iter().enumerate() {
        frontier.push(*leaf);
        assert_eq!(frontier.size(), i as u64 + 1);
        assert_eq!(frontier.root(), mth(&d[..=i]), "size {}", i + 1);
    }
}

#[test]
fn every_small_proof_has_the_predicted_length_and_verifies() {
    for n in 1..=40usize {
        let d = leaves(n, 2);
        let root = mth(&d);
        for i in 0..n {
            let proof = ref_inclusion(i, &d);
            assert_eq!(
                inclusion_proof_len(i as u64, n as u64),
                proof.len(),
                "{i} in {n}"
            );
            assert_eq!(
                verify_inclusion(i as u64, n as u64, &d[i], &root, &proof),
                Ok(())
            );
        }
        for m in 1..n {
            let proof = ref_consistency(m, &d);
            assert_eq!(
                consistency_proof_len(m as u64, n as u64),
                proof.len(),
                "{m} -> {n}"
            );
            assert_eq!(
                verify_consistency(m as u64, n as u64, &mth(&d[..m]), &root, &proof),
                Ok(()),
                "{m} -> {n}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frontier_matches_mth(n in 0usize..600, salt: u8) {
        let d = leaves(n, salt);
        prop_assert_eq!(merkle::root(&d), mth(&d));
    }

    #[test]
    fn inclusion_proofs_verify_and_mutations_fail(
        (n, i) in (1usize..400).prop_flat_map(|n| (Just(n), 0..n)),
        salt: u8,
    ) {
        let d = leaves(n, salt);
        let root = mth(&d);
        let proof = ref_inclusion(i, &d);
        let (i, n64) = (i as u64, n as u64);
        prop_assert_eq!(proof.len(), inclusion_proof_len(i, n64));
        prop_assert_eq!(verify_inclusion(i, n64, &d[i as usize], &root, &proof), Ok(()));
        for bad in mutations(&proof) {
            prop_assert!(verify_inclusion(i, n64, &d[i as usize], &root, &bad).is_err());
        }
        let other = [0xa5; 32];
        prop_assert!(verify_inclusion(i, n64, &other, &root, &proof).is_err());
        prop_assert!(verify_inclusion(i, n64, &d[i as usize], &other, &proof).is_err());
        if n > 1 {
            let j = (i + 1) % n64;
            prop_assert!(verify_inclusion(j, n64, &d[i as usize], &root, &proof).is_err());
        }
        // A proof binds the size only through its shape: where another size
        // gives a path of a different length, the proof is rejected.
        for other_size in [n64 + 1, n64 * 2, n64 - n64 / 2] {
            if i < other_size && inclusion_proof_len(i, other_size) != proof.len() {
                prop_assert!(verify_inclusion(i, other_size, &d[i as usize], &root, &proof).is_err());
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_mutations_fail(
        (n, m) in (2usize..400).prop_flat_map(|n| (Just(n), 1..n)),
        salt: u8,
    ) {
        let d = leaves(n, salt);
        let old_root = mth(&d[..m]);
        let new_root = mth(&d);
        let proof = ref_consistency(m, &d);
        let (m64, n64) = (m as u64, n as u64);
        prop_assert_eq!(proof.len(), consistency_proof_len(m64, n64));
        prop_assert_eq!(verify_consistency(m64, n64, &old_root, &new_root, &proof), Ok(()));
        for bad in mutations(&proof) {
            let result = verify_consistency(m64, n64, &old_root, &new_root, &bad);
            prop_assert!(result.is_err());
            if bad.len() != proof.len() {
                prop_assert_eq!(
                    result,
                    Err(ProofError::WrongLength { expected: proof.len(), actual: bad.len() })
                );
            }
        }
        prop_assert!(verify_consistency(m64, n64, &new_root, &old_root, &proof).is_err());
        prop_assert!(verify_consistency(m64, n64, &old_root, &old_root, &proof).is_err());
        // A tree that differs anywhere in its first m leaves is not consistent.
        let mut forked = d.clone();
        forked[m - 1][0] ^= 1;
        prop_assert!(verify_consistency(m64, n64, &mth(&forked[..m]), &new_root, &proof).is_err());
    }

    #[test]
    fn proof_lengths_match_the_reference_for_large_sizes(
        n in 2u64..(1u64 << 40),
        m_frac in 0.0f64..1.0,
    ) {
        let m = ((n - 1) as f64 * m_frac) as u64 + 1;
        prop_assume!(m < n);
        // The length of SUBPROOF depends only on the shape, so compute it on
        // the shape alone (same recursion as the reference, without hashes).
        fn subproof_len(m: u64, n: u64, b: bool) -> usize {
            if m == n {
                return usize::from(!b);
            }
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            if m <= k {
                subproof_len(m, k, b) + 1
            } else {
                subproof_len(m - k, n - k, false) + 1
            }
        }
        fn path_len(i: u64, n: u64) -> usize {
            if n == 1 {
                return 0;
            }
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            if i < k { path_len(i, k) + 1 } else { path_len(i - k, n - k) + 1 }
        }
        prop_assert_eq!(consistency_proof_len(m, n), subproof_len(m, n, true));
        prop_assert_eq!(inclusion_proof_len(m, n), path_len(m, n));
    }
}
