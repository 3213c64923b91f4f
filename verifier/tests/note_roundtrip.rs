//! Signed-note round trips: notes signed here with ed25519-dalek (by the
//! test-only signer in `common`, written from the C2SP specification) open
//! with the library, and any change to text, signature or key is rejected.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::{checkpoint_text, Key};
use ed25519_dalek::{Signer, SigningKey};
use gatehouse_verify::note::{self, open, open_checkpoint, Checkpoint, NoteError};
use gatehouse_verify::{KeyError, VerifierKey};
use proptest::prelude::*;

/// The signing key of the example in Go's `golang.org/x/mod/sumdb/note`
/// documentation: Ed25519 signatures are deterministic, so signing the
/// example text with it must reproduce the published signature.
#[test]
fn signing_the_go_example_reproduces_its_signature() {
    let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    // The base64 itself contains a '+': take everything after the key id.
    let seed_b64 = &skey[skey.find("c74f20a3+").unwrap() + 9..];
    assert!(seed_b64.ends_with("KDFz"));
    let seed = BASE64.decode(seed_b64).unwrap();
    assert_eq!(seed[0], 1);
    let signing = SigningKey::from_bytes(&seed[1..].try_into().unwrap());
    let key =
        VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap();
    assert_eq!(key.public_key(), &signing.verifying_key());
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let mut blob = key.key_id().to_vec();
    blob.extend_from_slice(&signing.sign(text.as_bytes()).to_bytes());
    assert_eq!(
        BASE64.encode(blob),
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    );
}

#[test]
fn checkpoint_round_trip() {
    let key = Key::new("log.example/a", 3);
    let vkey = VerifierKey::parse(&key.verifier()).unwrap();
    assert_eq!(vkey.name(), "log.example/a");
    assert_eq!(vkey.to_string(), key.verifier());
    let text = checkpoint_text("log.example/a", 42, &[9; 32], &[8; 32]);
    let note = key.sign(&text);
    assert_eq!(
        open_checkpoint(&note, &vkey),
        Ok(Checkpoint {
            origin: "log.example/a".into(),
            size: 42,
            root: [9; 32],
            chain: [8; 32],
            recovered: false,
        })
    );
    // Signed but not a checkpoint.
    let note = key.sign("log.example/a\n42\n");
    assert_eq!(open_checkpoint(&note, &vkey), Err(NoteError::LineCount(2)));
    // The key of another log with the same name.
    let impostor = Key::new("log.example/a", 4);
    let note = impostor.sign(&text);
    assert!(matches!(
        open_checkpoint(&note, &vkey),
        Err(NoteError::NotSignedByKey { .. })
    ));
    // A forged line that claims our name and key id.
    let mut blob = key.id().to_vec();
    blob.extend_from_slice(&impostor.signing.sign(text.as_bytes()).to_bytes());
    let forged_line = format!("\u{2014} log.example/a {}\n", BASE64.encode(blob));
    let note = format!("{text}\n{forged_line}");
    assert!(matches!(
        open(&note, &vkey),
        Err(NoteError::BadSignature { line: 1, .. })
    ));
}

#[test]
fn verify_strict_rejects_a_small_order_key() {
    // The identity point (all zero but the sign-less y = 1) is a valid
    // encoding of a small-order point: accepted by the parser, but no
    // signature under it verifies strictly.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&identity);
    let id = note::key_id("weak", &identity);
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let vkey = VerifierKey::parse(&format!("weak+{hex}+{}", BASE64.encode(&bytes))).unwrap();
    // R = identity, s = 0 satisfies the cofactored and the plain equation
    // for A = identity; verify_strict must still reject it.
    let mut sig = identity.to_vec();
    sig.extend_from_slice(&[0; 32]);
    let mut blob = id.to_vec();
    blob.extend_from_slice(&sig);
    let note = format!("hello\n\n\u{2014} weak {}\n", BASE64.encode(blob));
    assert!(matches!(
        open(&note, &vkey),
        Err(NoteError::BadSignature { .. })
    ));
}

#[test]
fn key_parse_errors_are_typed() {
    let key = Key::new("n", 1).verifier();
    assert!(VerifierKey::parse(&key).is_ok());
    assert!(matches!(
        VerifierKey::parse(&key.replacen('n', "m", 1)),
        Err(KeyError::KeyIdMismatch { .. })
    ));
    assert!(matches!(
        VerifierKey::parse(&format!("+{key}")),
        Err(KeyError::InvalidName(_))
    ));
    assert!(VerifierKey::parse(&format!("{key} ")).is_err());
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./:_-]{1,40}"
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec("[ -~\u{a0}-\u{2fff}]{0,60}", 1..6).prop_map(|lines| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn signed_notes_open_and_tampering_is_rejected(
        name in name_strategy(),
        seed: [u8; 32],
        text in text_strategy(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = Key { name: name.clone(), signing: SigningKey::from_bytes(&seed) };
        let vkey = VerifierKey::parse(&key.verifier()).unwrap();
        prop_assert_eq!(vkey.name(), name.as_str());
        let note = key.sign(&text);
        prop_assert_eq!(open(&note, &vkey), Ok(text.as_str()));

        // Another key's signature line alongside ours is ignored.
        let other = Key { name: "other".into(), signing: SigningKey::from_bytes(&[seed[0] ^ 1; 32]) };
        let both = format!("{text}\n{}{}", other.signature_line(&text), key.signature_line(&text));
        prop_assert_eq!(open(&both, &vkey), Ok(text.as_str()));
        let only_other = other.sign(&text);
        let only_other_rejected = matches!(open(&only_other, &vkey), Err(NoteError::NotSignedByKey { .. }));
        prop_assert!(only_other_rejected);

        // Changing one byte of the signature is rejected.
        let sig_line = key.signature_line(&text);
        let b64 = sig_line.trim_end().rsplit(' ').next().unwrap();
        let mut blob = BASE64.decode(b64).unwrap();
        let i = 4 + flip.index(64);
        blob[i] ^= 0x01;
        let bad = format!("{text}\n\u{2014} {name} {}\n", BASE64.encode(&blob));
        prop_assert!(open(&bad, &vkey).is_err());

        // Changing the text is rejected (append a character to line 1).
        let changed = note.replacen('\n', "x\n", 1);
        prop_assert!(open(&changed, &vkey).is_err());
    }
}
