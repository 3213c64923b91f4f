//! Golden vectors for key rotation (docs/ledger-format.md, section 5.2): a
//! small ledger whose first checkpoints are signed by one key, then a
//! `KeyRotated` event committed under that key's checkpoint, then
//! checkpoints signed by the new key. Written with fixed keys and clock;
//! the writer must reproduce `fixtures/ledger/golden-rotated.ledger` byte
//! for byte, and `gatehouse-verify` is tested against it
//! (verifier/tests/golden.rs).
//!
//! Regenerate after an intentional format change with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test golden_rotation`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_ledger::event::*;
use gatehouse_ledger::note::{unverified_parts, NoteSigner};
use gatehouse_ledger::{EventBody, Ledger, LedgerReader, WriterOptions};

const FIRST_SEED: [u8; 32] = [0x5e; 32];
const SECOND_SEED: [u8; 32] = [0x6f; 32];
const ORIGIN: &str = "gatehouse.test/golden-rotated";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

fn action(name: &str) -> EventBody {
    OperatorAction {
        operator: "alice".into(),
        action: name.into(),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

fn build(path: &Path) {
    let first = NoteSigner::from_seed(ORIGIN, FIRST_SEED).unwrap();
    let second = NoteSigner::from_seed(ORIGIN, SECOND_SEED).unwrap();
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    let options = |signer: &NoteSigner| {
        let mut o = WriterOptions::new(path, signer.clone());
        let clock = clock.clone();
        o.clock = Arc::new(move || clock.fetch_add(1_000_000, Ordering::Relaxed));
        o
    };
    let ledger = Ledger::open(options(&first)).unwrap();
    ledger.append_blocking(&[action("one")]).unwrap();
    ledger
        .append_blocking(&[action("two"), action("three")])
        .unwrap();
    ledger
        .append_blocking(&[KeyRotated {
            operator: "alice".into(),
            old_key: first.verifier().to_string(),
            new_key: second.verifier().to_string(),
        }
        .into()])
        .unwrap();
    ledger.close();
    let ledger = Ledger::open(options(&second)).unwrap();
    ledger.append_blocking(&[action("four")]).unwrap();
    ledger.append_blocking(&[action("five")]).unwrap();
    ledger.close();
}

/// Which key (by its key id) signed each checkpoint, in size order.
fn signers(path: &Path) -> Vec<(u64, String)> {
    LedgerReader::open(path)
        .unwrap()
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| {
            let (_, signatures) = unverified_parts(&c.note).unwrap();
            (
                c.size,
                gatehouse_ledger::note::key_label(&signatures[0].0, &signatures[0].1),
            )
        })
        .collect()
}

#[test]
fn the_writer_reproduces_the_rotated_golden_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden-rotated.ledger");
    build(&path);
    let first = NoteSigner::from_seed(ORIGIN, FIRST_SEED)
        .unwrap()
        .verifier();
    let second = NoteSigner::from_seed(ORIGIN, SECOND_SEED)
        .unwrap()
        .verifier();
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        std::fs::copy(&path, fixtures().join("golden-rotated.ledger")).unwrap();
        rusqlite::Connection::open(fixtures().join("golden-rotated.ledger"))
            .unwrap()
            .execute_batch("PRAGMA journal_mode = DELETE")
            .unwrap();
        std::fs::write(fixtures().join("golden-rotated.pub"), format!("{first}\n")).unwrap();
        std::fs::write(
            fixtures().join("golden-rotated-2.pub"),
            format!("{second}\n"),
        )
        .unwrap();
    }
    // Checkpoints up to and including the one covering the rotation (event
    // 3) are the first key's; the later ones the second key's.
    let id = |k: &gatehouse_ledger::note::VerifierKey| k.label();
    let expected = vec![
        (1, id(&first)),
        (3, id(&first)),
        (4, id(&first)),
        (5, id(&second)),
        (6, id(&second)),
    ];
    assert_eq!(signers(&path), expected);
    let golden = fixtures().join("golden-rotated.ledger");
    assert_eq!(signers(&golden), expected);
    // Same records and notes as the committed file.
    let read = |p: &Path| {
        let r = LedgerReader::open(p).unwrap();
        let events: Vec<Vec<u8>> = r.events(0..u64::MAX).map(|e| e.unwrap().bytes).collect();
        let notes: Vec<String> = r
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|c| c.note)
            .collect();
        (events, notes)
    };
    assert_eq!(
        read(&path),
        read(&golden),
        "the writer's output differs from the golden ledger"
    );
    // The tools' verified reader follows the chain from either key.
    for key in [&first, &second] {
        let reader = LedgerReader::open(&golden).unwrap();
        let coverage =
            gatehouse_ledger::verified::read_verified(&reader, Some(key), |_, _| {}).unwrap();
        assert_eq!(coverage.covered, 6);
    }
}
