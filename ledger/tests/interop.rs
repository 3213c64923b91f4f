//! Cross-checks against independent implementations: Cloudflare's
//! `signed_note` for C2SP notes and `ct-merkle` for the RFC 6962 tree.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use gatehouse_ledger::checkpoint::Checkpoint;
use gatehouse_ledger::merkle::{self, Frontier};
use gatehouse_ledger::note::NoteSigner;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};

fn checkpoint_text(size: u64) -> String {
    Checkpoint {
        origin: "gatehouse.test/interop".into(),
        size,
        root: [size as u8; 32],
        chain: [7; 32],
        recovered: false,
    }
    .text()
}

#[test]
fn signed_note_crate_verifies_our_checkpoints() {
    let signer = NoteSigner::from_seed("gatehouse.test/interop", [42; 32]).unwrap();
    let ours = signer.sign(&checkpoint_text(10));
    let verifier =
        StandardVerifier::new(&signer.verifier().to_string()).expect("our verifier key parses");
    let note = Note::from_bytes(ours.as_bytes()).expect("our note parses");
    let (verified, unverified) = note
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .expect("our signature verifies");
    assert_eq!(verified.len(), 1);
    assert!(unverified.is_empty());
    assert_eq!(note.text(), checkpoint_text(10).as_bytes());
}

#[test]
fn signed_note_crate_produces_identical_notes_and_keys() {
    let signer = NoteSigner::from_seed("gatehouse.test/interop", [9; 32]).unwrap();
    let theirs_signer =
        StandardSigner::new(&signer.to_secret_string()).expect("our signing key parses");
    let mut note = Note::new(checkpoint_text(3).as_bytes(), &[]).unwrap();
    note.add_sigs(&[&theirs_signer]).unwrap();
    // Ed25519 is deterministic, so both implementations emit the same bytes.
    assert_eq!(
        String::from_utf8(note.to_bytes()).unwrap(),
        signer.sign(&checkpoint_text(3))
    );
    // And a note they signed passes our verifier.
    assert!(signer
        .verifier()
        .verify(std::str::from_utf8(&note.to_bytes()).unwrap())
        .is_ok());
    // Their verifier-key encoding of our public key is ours.
    let vk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert_eq!(
        signed_note::new_ed25519_verifier_key("gatehouse.test/interop", &vk),
        signer.verifier().to_string()
    );
}

#[test]
fn ct_merkle_agrees_on_roots_and_proofs() {
    let mut theirs: MemoryBackedTree<sha2_ct::Sha256, Vec<u8>> = MemoryBackedTree::new();
    let mut ours = Frontier::new();
    let mut leaves = Vec::new();
    for i in 0u32..130 {
        let data = format!("event {i}").into_bytes();
        theirs.push(data.clone());
        let leaf = merkle::leaf_hash(&data);
        leaves.push(leaf);
        ours.push(leaf);
        let root = theirs.root();
        assert_eq!(
            root.as_bytes().as_slice(),
            ours.root().as_slice(),
            "root at size {}",
            i + 1
        );
        let n = leaves.len();
        for idx in [0, n / 2, n - 1] {
            let p = theirs.prove_inclusion(idx);
            assert_eq!(
                p.as_bytes(),
                merkle::inclusion_proof(&leaves, idx as u64)
                    .concat()
                    .as_slice()
            );
        }
        if n > 1 {
            for added in [1, n / 2, n - 1] {
                let p = theirs.prove_consistency(added);
                let m = (n - added) as u64;
                assert_eq!(
                    p.as_bytes(),
                    merkle::consistency_proof(&leaves, m).concat().as_slice(),
                    "consistency {m} -> {n}"
                );
            }
        }
    }
}
