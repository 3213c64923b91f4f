//! The normative golden vectors in `fixtures/ledger/` (written by the
//! ledger writer, specified by docs/ledger-format.md): the verifier must
//! accept `golden.ledger` with `golden.pub`, and its independent
//! implementation must reproduce every leaf hash, chain link, root, proof
//! and note listed in `golden.json`.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use gatehouse_verify::merkle::{self, Hash};
use gatehouse_verify::note::{open_checkpoint, Checkpoint};
use gatehouse_verify::{cbor, chain, verify_ledger, FailureClass, VerifierKey};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden.json"))
        .expect("fixtures/ledger/golden.json is part of the repository");
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hash(v: &Value) -> Hash {
    unhex(v.as_str().unwrap()).try_into().unwrap()
}

fn key() -> VerifierKey {
    let text = std::fs::read_to_string(fixtures().join("golden.pub")).unwrap();
    VerifierKey::parse(text.trim()).unwrap()
}

#[test]
fn golden_ledger_is_intact() {
    let g = golden();
    let report = verify_ledger(&fixtures().join("golden.ledger"), &key(), None).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    let events = g["events"].as_array().unwrap();
    let checkpoints = g["checkpoints"].as_array().unwrap();
    assert_eq!(report.events, events.len() as u64);
    assert_eq!(report.checkpoints, checkpoints.len() as u64);
    assert_eq!(
        report.first_ts,
        events.first().map(|e| e["ts"].as_u64().unwrap())
    );
    assert_eq!(
        report.last_ts,
        events.last().map(|e| e["ts"].as_u64().unwrap())
    );
    assert_eq!(
        report.final_checkpoint.as_deref(),
        checkpoints.last().map(|c| c["note"].as_str().unwrap())
    );
    // Every checkpoint of the ledger is also a valid trusted checkpoint.
    for c in checkpoints {
        let note = c["note"].as_str().unwrap();
        let report = verify_ledger(&fixtures().join("golden.ledger"), &key(), Some(note)).unwrap();
        assert!(report.is_intact(), "{}", report.to_text());
    }
}

#[test]
fn golden_keys_and_constants() {
    let g = golden();
    let key = key();
    assert_eq!(key.to_string(), g["verifier_key"].as_str().unwrap());
    assert_eq!(key.name(), g["origin"].as_str().unwrap());
    assert_eq!(hash(&g["empty_root_hex"]), merkle::EMPTY_ROOT);
    assert_eq!(hash(&g["genesis_link_hex"]), chain::GENESIS);
    // The signing key's public half is the verifier key.
    let signing = g["signing_key"].as_str().unwrap();
    let prefix = format!("PRIVATE+KEY+{}+{}+", key.name(), {
        let id = key.key_id();
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });
    let seed = BASE64
        .decode(
            signing
                .strip_prefix(&prefix)
                .expect("signing key names the same key"),
        )
        .unwrap();
    assert_eq!(seed[0], 0x01);
    let signing = SigningKey::from_bytes(&seed[1..].try_into().unwrap());
    assert_eq!(&signing.verifying_key(), key.public_key());
}

#[test]
fn golden_records_leaves_and_links() {
    let g = golden();
    let mut link = chain::GENESIS;
    for e in g["events"].as_array().unwrap() {
        let record = unhex(e["record_hex"].as_str().unwrap());
        let envelope = cbor::check_record(&record).unwrap();
        assert_eq!(envelope.seq, e["seq"].as_u64().unwrap());
        assert_eq!(envelope.ts, e["ts"].as_u64().unwrap());
        assert_eq!(envelope.kind, e["kind"].as_u64().unwrap());
        assert_eq!(
            merkle::leaf_hash(&record),
            hash(&e["leaf_hash_hex"]),
            "leaf {}",
            envelope.seq
        );
        link = chain::link(&link, &record);
        assert_eq!(link, hash(&e["link_hex"]), "link {}", envelope.seq);
    }
}

#[test]
fn golden_checkpoints_roots_proofs_and_notes() {
    let g = golden();
    let key = key();
    let leaves: Vec<Hash> = g["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| hash(&e["leaf_hash_hex"]))
        .collect();
    let links: Vec<Hash> = g["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| hash(&e["link_hex"]))
        .collect();
    let signing = {
        let s = g["signing_key"].as_str().unwrap();
        let seed = BASE64.decode(&s[s.len() - 44..]).unwrap();
        SigningKey::from_bytes(&seed[1..].try_into().unwrap())
    };
    let mut previous: Option<(u64, Hash)> = None;
    for c in g["checkpoints"].as_array().unwrap() {
        let size = c["size"].as_u64().unwrap();
        let root = hash(&c["root_hex"]);
        let chain_head = hash(&c["chain_hex"]);
        assert_eq!(merkle::root(&leaves[..size as usize]), root, "root {size}");
        assert_eq!(links[size as usize - 1], chain_head, "chain {size}");
        let note = c["note"].as_str().unwrap();
        let expected = Checkpoint {
            origin: g["origin"].as_str().unwrap().to_owned(),
            size,
            root,
            chain: chain_head,
            recovered: false,
        };
        assert_eq!(open_checkpoint(note, &key), Ok(expected.clone()));
        // Ed25519 is deterministic: re-signing the text reproduces the note.
        let text = expected.to_text();
        let mut blob = key.key_id().to_vec();
        blob.extend_from_slice(&signing.sign(text.as_bytes()).to_bytes());
        assert_eq!(
            note,
            format!("{text}\n\u{2014} {} {}\n", key.name(), BASE64.encode(blob))
        );
        let proof: Vec<Hash> = c["proof_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(hash)
            .collect();
        match previous {
            None => assert!(proof.is_empty()),
            Some((old, old_root)) => {
                assert_eq!(proof.len(), merkle::consistency_proof_len(old, size));
                assert_eq!(
                    merkle::verify_consistency(old, size, &old_root, &root, &proof),
                    Ok(())
                );
            }
        }
        previous = Some((size, root));
    }
}

#[test]
fn golden_ledger_tampered_copy_fails() {
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("golden.ledger");
    std::fs::copy(fixtures().join("golden.ledger"), &copy).unwrap();
    // Drop the last checkpoint: the events after the one before it are
    // unsigned.
    let checkpoints = g["checkpoints"].as_array().unwrap();
    let last = checkpoints.last().unwrap()["size"].as_u64().unwrap();
    let before = checkpoints[checkpoints.len() - 2]["size"].as_u64().unwrap();
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute("DELETE FROM checkpoints WHERE size = ?1", [last as i64])
        .unwrap();
    let report = verify_ledger(&copy, &key(), None).unwrap();
    let failure = report.failure.expect("a dropped checkpoint is noticed");
    assert_eq!(
        (failure.seq, failure.class),
        (before, FailureClass::Unsigned)
    );
    // ...and the auditor who kept the last note sees the rollback too once
    // the uncovered events are gone as well.
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute("DELETE FROM events WHERE seq >= ?1", [before as i64])
        .unwrap();
    let trusted = checkpoints.last().unwrap()["note"].as_str().unwrap();
    let report = verify_ledger(&copy, &key(), Some(trusted)).unwrap();
    let failure = report.failure.expect("a rollback is noticed");
    assert_eq!(
        (failure.seq, failure.class),
        (before, FailureClass::Truncated)
    );
}

/// The rotated golden ledger (fixtures/ledger/golden-rotated.ledger,
/// written by ledger/tests/golden_rotation.rs; format section 5.2): intact
/// when pinned to its first key or to the key its rotation brought in, and
/// refused when pinned to a key outside its chain.
#[test]
fn the_rotated_golden_ledger_is_followed_from_either_key() {
    let ledger = fixtures().join("golden-rotated.ledger");
    for file in ["golden-rotated.pub", "golden-rotated-2.pub"] {
        let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
        let key = VerifierKey::parse(text.trim()).unwrap();
        let report = verify_ledger(&ledger, &key, None).unwrap();
        assert!(report.is_intact(), "{file}: {}", report.to_text());
        assert_eq!((report.events, report.checkpoints), (6, 5), "{file}");
    }
    // golden.pub: the same seed as the first key, another origin.
    let report = verify_ledger(&ledger, &key(), None).unwrap();
    assert!(!report.is_intact());
    assert_eq!(
        report.failure.unwrap().class,
        FailureClass::SignatureInvalid
    );
}

#[test]
fn the_report_names_a_rotated_ledgers_key_chain() {
    let text = std::fs::read_to_string(fixtures().join("golden-rotated.pub")).unwrap();
    let first = VerifierKey::parse(text.trim()).unwrap();
    let report = verify_ledger(&fixtures().join("golden-rotated.ledger"), &first, None).unwrap();
    assert_eq!(report.signing_keys.len(), 2, "{:?}", report.signing_keys);
    assert_eq!(report.signing_keys[0], first.label());
    assert!(report.to_text().contains(" -> "), "{}", report.to_text());
    assert_eq!(report.to_json()["signing_keys"][1], report.signing_keys[1]);
    // A ledger never rotated names its one key, and the text says nothing more.
    let report = verify_ledger(&fixtures().join("golden.ledger"), &key(), None).unwrap();
    assert_eq!(report.signing_keys.len(), 1);
    assert!(!report.to_text().contains(" -> "));
}

/// Format 2 (section 5.3): `golden-v2.ledger` has checkpoints at 3 and 6,
/// a recovered one at 8, and events 8 and 9 unsigned.
#[test]
fn the_format_2_golden_ledger_has_a_recovered_checkpoint_and_an_unsigned_tail() {
    use gatehouse_verify::{verify_ledger_with, VerifyOptions};
    let text = std::fs::read_to_string(fixtures().join("golden-v2.pub")).unwrap();
    let key = VerifierKey::parse(text.trim()).unwrap();
    let path = fixtures().join("golden-v2.ledger");
    let report = verify_ledger(&path, &key, None).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!((report.events, report.checkpoints), (10, 3));
    assert_eq!(report.recovered_checkpoints, vec![8]);
    assert_eq!(report.unsigned_tail.as_ref().map(|t| t.events), Some(2));
    let strict = verify_ledger_with(
        &path,
        &key,
        VerifyOptions {
            strict: true,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        strict.failure.map(|f| (f.seq, f.class)),
        Some((8, FailureClass::Unsigned))
    );
}

/// Format 3 (section 7.2): `golden-v3.ledger` records three statements as
/// two shapes (events 4 and 6) and three shaped statements; nothing about
/// them changes what verification checks, and its tail is as in format 2.
#[test]
fn the_format_3_golden_ledger_verifies_with_its_shapes() {
    let text = std::fs::read_to_string(fixtures().join("golden-v3.pub")).unwrap();
    let key = VerifierKey::parse(text.trim()).unwrap();
    let path = fixtures().join("golden-v3.ledger");
    let report = verify_ledger(&path, &key, None).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!((report.events, report.checkpoints), (12, 4));
    assert_eq!(report.recovered_checkpoints, vec![10]);
    assert_eq!(report.unsigned_tail.as_ref().map(|t| t.events), Some(2));
}

/// Section 9: `golden-segments/` is one log in three segment files; the
/// verifier reads them in order from the directory or the ledger's name,
/// and names the file when one is missing, swapped or edited.
#[test]
fn the_golden_segments_verify_as_one_log_and_a_broken_set_is_named() {
    let golden = fixtures().join("golden-segments");
    let text = std::fs::read_to_string(golden.join("verifier.pub")).unwrap();
    let key = VerifierKey::parse(text.trim()).unwrap();
    for given in [golden.clone(), golden.join("ledger.db")] {
        let report = verify_ledger(&given, &key, None).unwrap();
        assert!(report.is_intact(), "{}", report.to_text());
        assert_eq!(report.events, 14);
        assert_eq!(report.from, None);
    }
    let copy = |skip: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&golden).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if Some(name.as_str()) != skip {
                let to = dir.path().join(&name);
                std::fs::copy(entry.path(), &to).unwrap();
                let mut perms = std::fs::metadata(&to).unwrap().permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&to, perms).unwrap();
            }
        }
        dir
    };
    let broken = |dir: &Path| {
        let report = verify_ledger(dir, &key, None).unwrap();
        let failure = report.failure.expect("a broken set fails");
        assert_eq!(
            failure.class,
            FailureClass::SegmentBroken,
            "{}",
            failure.message
        );
        failure.message
    };
    // The middle segment missing.
    let dir = copy(Some("ledger.db.000001"));
    assert!(broken(dir.path()).contains("segment 1 is missing"));
    // The last two swapped.
    let dir = copy(None);
    let (a, b) = (
        dir.path().join("ledger.db.000001"),
        dir.path().join("ledger.db.000002"),
    );
    std::fs::rename(&a, dir.path().join("swap")).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(dir.path().join("swap"), &b).unwrap();
    assert!(broken(dir.path()).contains("named as segment 1"));
    // A byte of a sealed segment changed where SQLite does not look.
    let dir = copy(None);
    let sealed = dir.path().join("ledger.db.000000");
    let mut bytes = std::fs::read(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&sealed, bytes).unwrap();
    assert!(broken(dir.path()).contains("is not the file that was sealed"));
    // Without segment 0 the rest verifies from segment 1's opening record.
    let dir = copy(Some("ledger.db.000000"));
    let report = verify_ledger(dir.path(), &key, None).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert!(report.from.is_some_and(|f| f > 0), "{:?}", report.from);
}
