//! Issue 17: an auditor who verified a ledger up to a checkpoint they kept
//! verifies only what was appended since (`gatehouse-verify
//! --from-checkpoint`). The verifier rebuilds the tree at the kept size from
//! the writer's stored subtree hashes and the last block's records, checks
//! it against the kept root, and reads only the events after it; whatever
//! keeps it from starting there makes it read everything, with the kept
//! note as a trusted checkpoint, never trust less.

use std::path::{Path, PathBuf};

use gatehouse_ledger::event::{EventBody, KeyRotated, OperatorAction};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{Ledger, LedgerReader, WriterOptions};
use gatehouse_verify::{verify_ledger_with, FailureClass, Report, VerifierKey, VerifyOptions};

const ORIGIN: &str = "gatehouse.test/verify-from";

fn signer(seed: u8) -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [seed; 32]).unwrap()
}

fn key(seed: u8) -> VerifierKey {
    VerifierKey::parse(&signer(seed).verifier().to_string()).unwrap()
}

fn action(i: u64) -> EventBody {
    OperatorAction {
        operator: "ops".into(),
        action: format!("step {i:05}"),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

/// Appends events `from..to` in batches of 1 to 9.
fn append(path: &Path, seed: u8, from: u64, to: u64) {
    let ledger = Ledger::open(WriterOptions::new(path, signer(seed))).unwrap();
    let mut i = from;
    while i < to {
        let end = (i + 1 + i % 9).min(to);
        let bodies: Vec<EventBody> = (i..end).map(action).collect();
        ledger.append_blocking(&bodies).unwrap();
        i = end;
    }
    ledger.close();
}

/// The newest checkpoint note, as `--save-checkpoint` keeps it.
fn newest_note(path: &Path) -> String {
    LedgerReader::open(path)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .unwrap()
        .note
}

fn verify_from(path: &Path, pinned: &VerifierKey, kept: &str) -> Report {
    verify_ledger_with(
        path,
        pinned,
        VerifyOptions {
            from_checkpoint: Some(kept),
            ..VerifyOptions::default()
        },
    )
    .unwrap()
}

/// A ledger of 3,000 events with a note kept after its first 1,700.
fn written(dir: &Path) -> (PathBuf, String, u64) {
    let path = dir.join("ledger.db");
    append(&path, 1, 0, 1700);
    let kept = newest_note(&path);
    let m = LedgerReader::open(&path).unwrap().len().unwrap();
    append(&path, 1, 1700, 3000);
    (path, kept, m)
}

fn copy(path: &Path, name: &str) -> PathBuf {
    let to = path.with_file_name(name);
    std::fs::copy(path, &to).unwrap();
    to
}

fn sql(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// Flips one byte of event `seq`'s action text, hashes not recomputed.
fn edit(path: &Path, seq: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    let at = data.windows(5).position(|w| w == b"step ").unwrap();
    data[at + 5] ^= 1;
    conn.execute(
        "UPDATE events SET data = ?1 WHERE seq = ?2",
        rusqlite::params![data, seq as i64],
    )
    .unwrap();
}

#[test]
fn only_the_events_after_the_kept_checkpoint_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (path, kept, m) = written(dir.path());
    let report = verify_from(&path, &key(1), &kept);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.from, Some(m));
    assert_eq!(report.events, 3000 - m);
    let text = report.to_text();
    assert!(
        text.contains(&format!("after the kept checkpoint of size {m}")),
        "{text}"
    );
    assert_eq!(
        report.final_checkpoint.as_deref(),
        Some(newest_note(&path).as_str())
    );
    let json = report.to_json();
    assert_eq!(json["from"], m);

    // An edit after the kept checkpoint is found, at its event.
    let after = copy(&path, "after.db");
    edit(&after, 2500);
    let report = verify_from(&after, &key(1), &kept);
    let failure = report.failure.expect("the edit is found");
    // Reported at the first event of the batch whose checkpoint covers it.
    assert!(failure.seq > 2490 && failure.seq <= 2500, "{failure:?}");
    assert_eq!(failure.class, FailureClass::RootMismatch);

    // An edit long before it is not read again: the kept checkpoint vouched
    // for those events when it was saved. A full verification finds it.
    let before = copy(&path, "before.db");
    edit(&before, 100);
    let report = verify_from(&before, &key(1), &kept);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.from, Some(m));
    let full = gatehouse_verify::verify_ledger(&before, &key(1), None).unwrap();
    assert!(!full.is_intact());

    // Nothing appended since: nothing to read.
    let report = verify_from(&path, &key(1), &newest_note(&path));
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!((report.from, report.events), (Some(3000), 0));
}

#[test]
fn what_keeps_it_from_starting_there_makes_it_read_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (path, kept, m) = written(dir.path());

    // A stored subtree hash that lies (events 0..1024, which the frontier
    // at the kept size uses), or none at all: read from the first event,
    // the kept note as a trusted checkpoint.
    for (name, change) in [
        (
            "lying.db",
            "UPDATE subtrees SET hash = zeroblob(32) WHERE level = 10 AND idx = 0",
        ),
        ("none.db", "DROP TABLE subtrees"),
    ] {
        let changed = copy(&path, name);
        sql(&changed, change);
        let report = verify_from(&changed, &key(1), &kept);
        assert!(report.is_intact(), "{name}: {}", report.to_text());
        assert_eq!(report.from, None, "{name}");
        assert_eq!(report.events, 3000, "{name}");
    }

    // An edit in the block the kept checkpoint ends in is caught: its
    // records are hashed to rebuild the kept root, which then differs, and
    // the full pass that follows names the event.
    let tail = copy(&path, "tail.db");
    edit(&tail, m - 3);
    let report = verify_from(&tail, &key(1), &kept);
    assert!(!report.is_intact(), "{}", report.to_text());

    // Rolled back before the kept checkpoint: truncated.
    let cut = copy(&path, "cut.db");
    let earlier: i64 = rusqlite::Connection::open(&cut)
        .unwrap()
        .query_row(
            "SELECT max(size) FROM checkpoints WHERE size < ?1",
            [m as i64],
            |r| r.get(0),
        )
        .unwrap();
    sql(
        &cut,
        &format!(
            "DELETE FROM events WHERE seq >= {earlier}; DELETE FROM checkpoints WHERE size > {earlier};"
        ),
    );
    let report = verify_from(&cut, &key(1), &kept);
    assert_eq!(
        report.failure.as_ref().map(|f| f.class),
        Some(FailureClass::Truncated),
        "{}",
        report.to_text()
    );

    // A note signed by another key is refused before anything is read.
    let other = NoteSigner::from_seed(ORIGIN, [9; 32]).unwrap();
    let text = format!("{}\n", kept.split_once("\n\n").unwrap().0);
    let forged = other.sign(&text);
    let refused = verify_ledger_with(
        &path,
        &key(1),
        VerifyOptions {
            from_checkpoint: Some(&forged),
            ..VerifyOptions::default()
        },
    );
    assert!(refused.is_err());
}

#[test]
fn a_rotation_after_the_kept_checkpoint_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, kept, m) = written(dir.path());
    let ledger = Ledger::open(WriterOptions::new(&path, signer(1))).unwrap();
    ledger
        .append_blocking(&[KeyRotated {
            operator: "ops".into(),
            old_key: signer(1).verifier().to_string(),
            new_key: signer(2).verifier().to_string(),
        }
        .into()])
        .unwrap();
    ledger.close();
    append(&path, 2, 3001, 3400);
    let report = verify_from(&path, &key(1), &kept);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.from, Some(m));
    assert_eq!(report.signing_keys.len(), 2);
}
