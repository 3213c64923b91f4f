//! End to end: ledgers written here from the specification (with the
//! test-only encoder and signer in `common`) verify intact, and each kind of
//! tampering is reported with the class and sequence number the table of
//! specification section 6 prescribes.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gatehouse_verify::ledger::LedgerError;
use gatehouse_verify::{verify_ledger, FailureClass, Report, VerifierKey, VerifyError};
use tempfile::TempDir;

/// Batches of 3, 1, 4 and 2 events: checkpoints at 3, 4, 8, 10.
const SIZES: [u64; 4] = [3, 4, 8, 10];

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    key: Key,
    notes: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with(&events(10), &SIZES)
    }

    fn with(events: &[Event], sizes: &[u64]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.ledger");
        let key = test_key();
        let notes = build(&path, &key, events, sizes);
        Fixture {
            _dir: dir,
            path,
            key,
            notes,
        }
    }

    fn verify(&self) -> Report {
        self.verify_trusting(None)
    }

    fn verify_trusting(&self, trusted: Option<&str>) -> Report {
        let key = VerifierKey::parse(&self.key.verifier()).unwrap();
        verify_ledger(&self.path, &key, trusted).unwrap()
    }

    fn sql(&self, sql: &str) {
        exec(&self.path, sql);
    }

    /// A copy of this ledger, changed by `sql`.
    fn copy_with(&self, sql: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.ledger");
        std::fs::copy(&self.path, &path).unwrap();
        exec(&path, sql);
        Fixture {
            _dir: dir,
            path,
            key: test_key(),
            notes: self.notes.clone(),
        }
    }
}

#[track_caller]
fn assert_failure(report: &Report, seq: u64, class: FailureClass) {
    let failure = report
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected {class} at {seq}, got an intact report"));
    assert_eq!(
        (failure.seq, failure.class),
        (seq, class),
        "{}",
        report.to_text()
    );
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_untouched_ledger_is_intact() {
    let f = Fixture::new();
    let report = f.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.events, 10);
    assert_eq!(report.checkpoints, 4);
    assert_eq!(report.first_ts, Some(T0));
    assert_eq!(report.last_ts, Some(T0 + 9000));
    assert_eq!(
        report.final_checkpoint.as_deref(),
        Some(f.notes[3].as_str())
    );
    let text = report.to_text();
    assert!(
        text.starts_with("intact: 10 events, 4 checkpoints\n"),
        "{text}"
    );
    assert!(text.contains("2023-11-14T22:13:20.000000000Z to 2023-11-14T22:13:20.000009000Z"));
    let json = report.to_json();
    assert_eq!(json["status"], "intact");
    assert_eq!(json["events"], 10);
    assert!(json["failure"].is_null());
}

#[test]
fn an_empty_ledger_without_checkpoints_is_intact() {
    let f = Fixture::with(&[], &[]);
    let report = f.verify();
    assert!(report.is_intact());
    assert_eq!((report.events, report.checkpoints), (0, 0));
    assert_eq!(report.final_checkpoint, None);
}

#[test]
fn single_event_batches_pin_the_exact_event() {
    let sizes: Vec<u64> = (1..=10).collect();
    let f = Fixture::with(&events(10), &sizes);
    assert!(f.verify().is_intact());
    // Event 5 rewritten canonically, hashes not recomputed: checkpoint 6
    // (size 6) no longer matches, reported at s_5 = 5.
    let e = event(5, T0 + 5000, 1);
    f.sql(&format!(
        "UPDATE events SET data = X'{}', kind = 1 WHERE seq = 5",
        hex(&e.data)
    ));
    assert_failure(&f.verify(), 5, FailureClass::RootMismatch);
}

#[test]
fn events_without_any_checkpoint_are_unsigned() {
    let f = Fixture::with(&events(3), &[]);
    assert_failure(&f.verify(), 0, FailureClass::Unsigned);
}

#[test]
fn events_after_the_last_checkpoint_are_unsigned() {
    let f = Fixture::new();
    f.sql("DELETE FROM checkpoints WHERE size = 10");
    let report = f.verify();
    assert_failure(&report, 8, FailureClass::Unsigned);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(
        report.final_checkpoint.as_deref(),
        Some(f.notes[2].as_str())
    );
}

#[test]
fn a_missing_event_is_a_gap_at_the_expected_number() {
    let f = Fixture::new();
    f.sql("DELETE FROM events WHERE seq = 6");
    assert_failure(&f.verify(), 6, FailureClass::SequenceGap);
    let f = Fixture::new();
    f.sql("UPDATE events SET seq = 100 WHERE seq = 0");
    assert_failure(&f.verify(), 0, FailureClass::SequenceGap);
}

#[test]
fn a_non_canonical_record_is_reported_at_its_event() {
    let f = Fixture::new();
    // Trailing byte.
    f.sql("UPDATE events SET data = data || X'00' WHERE seq = 5");
    let report = f.verify();
    assert_failure(&report, 5, FailureClass::NonCanonical);
    assert!(report.failure.unwrap().message.contains("trailing"));
    // seq 2 (0x02) re-encoded in two bytes (0x18 0x02).
    let f = Fixture::new();
    f.sql("UPDATE events SET data = X'a4001802' || substr(data, 3) WHERE seq = 2");
    assert_failure(&f.verify(), 2, FailureClass::NonCanonical);
    // Not a BLOB at all.
    let f = Fixture::new();
    f.sql("UPDATE events SET data = 12 WHERE seq = 9");
    assert_failure(&f.verify(), 9, FailureClass::NonCanonical);
}

#[test]
fn a_record_under_the_wrong_row_is_a_sequence_mismatch() {
    let f = Fixture::new();
    let e = event(4, T0 + 3000, 0);
    f.sql(&format!(
        "UPDATE events SET data = X'{}', ts = {}, kind = 0 WHERE seq = 3",
        hex(&e.data),
        T0 + 3000
    ));
    assert_failure(&f.verify(), 3, FailureClass::SequenceMismatch);
}

#[test]
fn timestamps_must_not_decrease() {
    let mut evs = events(6);
    evs[4] = event(4, T0 + 2500, 1);
    let f = Fixture::with(&evs, &[6]);
    assert_failure(&f.verify(), 4, FailureClass::TimestampBackwards);
    // Equal timestamps are fine.
    let mut evs = events(6);
    evs[4] = event(4, T0 + 3000, 1);
    assert!(Fixture::with(&evs, &[6]).verify().is_intact());
}

#[test]
fn index_columns_must_match_the_record() {
    let f = Fixture::new();
    f.sql("UPDATE events SET kind = 99 WHERE seq = 7");
    assert_failure(&f.verify(), 7, FailureClass::IndexMismatch);
    let f = Fixture::new();
    f.sql("UPDATE events SET ts = ts + 1 WHERE seq = 2");
    assert_failure(&f.verify(), 2, FailureClass::IndexMismatch);
    let f = Fixture::new();
    f.sql("UPDATE events SET ts = 'soon' WHERE seq = 2");
    assert_failure(&f.verify(), 2, FailureClass::IndexMismatch);
    // Unauthenticated conveniences are not checked.
    let f = Fixture::new();
    f.sql("UPDATE events SET session = 5, identity = 'mallory'; INSERT INTO writer_state VALUES (0, 1, X'00')");
    assert!(f.verify().is_intact());
}

#[test]
fn an_edit_with_recomputed_hashes_is_caught_by_the_signature() {
    // The attacker rewrites event 5 and re-signs every checkpoint with a
    // key of their own under the same name.
    let mut evs = events(10);
    evs[5] = event(5, T0 + 5000, 1);
    let f = Fixture::new();
    let attacker = Key::new(ORIGIN, 99);
    let rows = checkpoints(&attacker, &evs, &SIZES);
    f.sql(&format!(
        "DELETE FROM checkpoints; UPDATE events SET data = X'{}', kind = 1 WHERE seq = 5;",
        hex(&evs[5].data)
    ));
    for row in rows {
        f.sql(&format!(
            "INSERT INTO checkpoints VALUES ({}, '{}', X'{}')",
            row.size,
            row.note,
            hex(&row.proof)
        ));
    }
    // The first checkpoint fails already: none is signed by the pinned key.
    let report = f.verify();
    assert_failure(&report, 0, FailureClass::SignatureInvalid);
    assert_eq!(report.events, 3);
}

#[test]
fn a_corrupted_signature_is_reported_at_the_start_of_its_range() {
    let f = Fixture::new();
    let note = &f.notes[2];
    let mut corrupted = note.clone();
    // Change a character of the base64 signature (not the key id).
    let at = corrupted.len() - 10;
    let c = if &corrupted[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    corrupted.replace_range(at..at + 1, c);
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{corrupted}' WHERE size = 8"
    ));
    assert_failure(&f.verify(), 4, FailureClass::SignatureInvalid);
}

#[test]
fn a_signed_but_malformed_checkpoint_is_invalid() {
    let f = Fixture::new();
    let key = test_key();
    // Right size, extra line.
    let text = f.notes[1].split("\n\n").next().unwrap().to_owned() + "\nextra\n";
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{}' WHERE size = 4",
        key.sign(&text)
    ));
    assert_failure(&f.verify(), 3, FailureClass::CheckpointInvalid);
    // A note for another size stored under this row.
    let f = Fixture::new();
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{}' WHERE size = 4",
        f.notes[0]
    ));
    assert_failure(&f.verify(), 3, FailureClass::CheckpointInvalid);
    // Another origin, signed by the pinned key.
    let f = Fixture::new();
    let text = f.notes[3]
        .split("\n\n")
        .next()
        .unwrap()
        .replacen(ORIGIN, "elsewhere", 1)
        + "\n";
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{}' WHERE size = 10",
        key.sign(&text)
    ));
    assert_failure(&f.verify(), 8, FailureClass::CheckpointInvalid);
}

/// Signs a checkpoint for the ledger's real first `size` events but with
/// `root` or `chain` replaced.
fn signed_variant(size: u64, root: Option<Hash>, chain: Option<Hash>) -> String {
    let evs = events(10);
    let leaves: Vec<Hash> = evs.iter().map(|e| ref_leaf(&e.data)).collect();
    let mut link = [0; 32];
    for e in &evs[..size as usize] {
        link = chain_link(&link, &e.data);
    }
    let text = checkpoint_text(
        ORIGIN,
        size,
        &root.unwrap_or_else(|| mth(&leaves[..size as usize])),
        &chain.unwrap_or(link),
    );
    test_key().sign(&text)
}

#[test]
fn a_signed_wrong_root_or_chain_is_reported() {
    let f = Fixture::new();
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{}' WHERE size = 3",
        signed_variant(3, Some([1; 32]), None)
    ));
    assert_failure(&f.verify(), 0, FailureClass::RootMismatch);
    let f = Fixture::new();
    f.sql(&format!(
        "UPDATE checkpoints SET note = '{}' WHERE size = 8",
        signed_variant(8, None, Some([2; 32]))
    ));
    assert_failure(&f.verify(), 4, FailureClass::ChainMismatch);
}

#[test]
fn consistency_proofs_are_checked_exactly() {
    // One hash too many.
    let f = Fixture::new();
    f.sql("UPDATE checkpoints SET proof = proof || zeroblob(32) WHERE size = 8");
    let report = f.verify();
    assert_failure(&report, 4, FailureClass::ProofInvalid);
    assert!(report.failure.unwrap().message.contains("exactly"));
    // One hash too few.
    let f = Fixture::new();
    f.sql("UPDATE checkpoints SET proof = substr(proof, 33) WHERE size = 10");
    assert_failure(&f.verify(), 8, FailureClass::ProofInvalid);
    // A flipped byte.
    let f = Fixture::new();
    f.sql("UPDATE checkpoints SET proof = X'ff' || substr(proof, 2) WHERE size = 4");
    assert_failure(&f.verify(), 3, FailureClass::ProofInvalid);
    // Not whole hashes.
    let f = Fixture::new();
    f.sql("UPDATE checkpoints SET proof = proof || X'00' WHERE size = 4");
    assert_failure(&f.verify(), 3, FailureClass::ProofInvalid);
    // The first checkpoint's proof must be empty.
    let f = Fixture::new();
    f.sql("UPDATE checkpoints SET proof = zeroblob(32) WHERE size = 3");
    assert_failure(&f.verify(), 0, FailureClass::ProofInvalid);
}

#[test]
fn a_checkpoint_beyond_the_events_is_reported_at_the_event_count() {
    let f = Fixture::new();
    f.sql("DELETE FROM events WHERE seq >= 9");
    let report = f.verify();
    assert_failure(&report, 9, FailureClass::CheckpointBeyondLog);
    assert_eq!(report.events, 9);
    let f = Fixture::new();
    f.sql("DELETE FROM events");
    assert_failure(&f.verify(), 0, FailureClass::CheckpointBeyondLog);
}

#[test]
fn a_checkpoint_of_size_zero_is_invalid() {
    let f = Fixture::new();
    f.sql("INSERT INTO checkpoints VALUES (0, 'x', X'')");
    assert_failure(&f.verify(), 0, FailureClass::CheckpointInvalid);
}

#[test]
fn a_trusted_checkpoint_of_the_same_ledger_passes() {
    let f = Fixture::new();
    for note in &f.notes {
        let report = f.verify_trusting(Some(note));
        assert!(report.is_intact(), "{}", report.to_text());
    }
}

#[test]
fn a_rolled_back_ledger_is_truncated() {
    let f = Fixture::new();
    f.sql("DELETE FROM events WHERE seq >= 8; DELETE FROM checkpoints WHERE size = 10");
    assert!(f.verify().is_intact(), "consistent on its own");
    let report = f.verify_trusting(Some(&f.notes[3]));
    assert_failure(&report, 8, FailureClass::Truncated);
    let failure = report.failure.unwrap();
    assert_eq!(
        failure.evidence,
        vec![f.notes[3].clone(), f.notes[2].clone()]
    );
}

#[test]
fn a_rewritten_history_is_a_fork() {
    // The ledger is rewritten from event 5 on and fully re-signed with the
    // real key (a compromised writer): only the auditor's note shows it.
    let original = Fixture::new();
    let mut evs = events(12);
    evs[5] = event(5, T0 + 5000, 1);
    let forked = Fixture::with(&evs, &[3, 4, 8, 10, 12]);
    assert!(forked.verify().is_intact());
    let report = forked.verify_trusting(Some(&original.notes[2]));
    assert_failure(&report, 7, FailureClass::Forked);
    let failure = report.failure.as_ref().unwrap();
    assert_eq!(
        failure.evidence,
        vec![original.notes[2].clone(), forked.notes[4].clone()]
    );
    let text = report.to_text();
    assert!(text.starts_with("FAILED at seq 7: forked: "), "{text}");
    assert!(text.contains(&original.notes[2]));
    // A trusted note from before the fork point still matches.
    assert!(forked.verify_trusting(Some(&original.notes[1])).is_intact());
}

#[test]
fn an_unusable_trusted_checkpoint_is_an_error_not_a_verdict() {
    let f = Fixture::new();
    let key = VerifierKey::parse(&f.key.verifier()).unwrap();
    let other = Key::new(ORIGIN, 8).sign(f.notes[0].split("\n\n").next().unwrap());
    for trusted in [other.as_str(), "garbage", &f.notes[0][..20]] {
        assert!(matches!(
            verify_ledger(&f.path, &key, Some(trusted)),
            Err(VerifyError::TrustedCheckpoint(_))
        ));
    }
}

fn error_for(path: &Path) -> VerifyError {
    let key = VerifierKey::parse(&test_key().verifier()).unwrap();
    verify_ledger(path, &key, None).unwrap_err()
}

#[test]
fn files_that_are_not_ledgers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.ledger");
    let err = error_for(&missing);
    assert!(
        matches!(err, VerifyError::Ledger(LedgerError::NotFound { .. })),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("pass the path of a Gatehouse ledger file"));
    assert!(!missing.exists(), "the verifier must not create the file");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a database, just some text that is long enough ......................................................................").unwrap();
    let err = error_for(&text);
    assert!(
        matches!(err, VerifyError::Ledger(LedgerError::NotALedger { .. })),
        "{err}"
    );

    let other_db = dir.path().join("other.db");
    exec(&other_db, "CREATE TABLE t (x)");
    let err = error_for(&other_db);
    assert!(
        matches!(err, VerifyError::Ledger(LedgerError::NotALedger { .. })),
        "{err}"
    );

    let f = Fixture::new();
    f.sql("UPDATE ledger_meta SET value = 'gatehouse-ledger-v4' WHERE key = 'format'");
    assert!(matches!(
        error_for(&f.path),
        VerifyError::Ledger(LedgerError::UnsupportedFormat { .. })
    ));

    let f = Fixture::new();
    f.sql("ALTER TABLE events DROP COLUMN kind");
    let err = error_for(&f.path);
    assert!(
        matches!(err, VerifyError::Ledger(LedgerError::NotALedger { .. })),
        "{err}"
    );

    assert!(matches!(
        error_for(dir.path()),
        VerifyError::Ledger(LedgerError::NotFound { .. })
    ));
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn verification_reads_without_writing() {
    let f = Fixture::new();
    let dir = f.path.parent().unwrap();
    let before = listing(dir);
    let bytes = std::fs::read(&f.path).unwrap();
    assert!(f.verify().is_intact());
    assert_eq!(listing(dir), before);
    assert_eq!(std::fs::read(&f.path).unwrap(), bytes);
}

#[test]
fn a_wal_ledger_verifies_while_a_writer_holds_it_open() {
    let f = Fixture::new();
    let writer = rusqlite::Connection::open(&f.path).unwrap();
    let mode: String = writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // A batch still in the WAL (not checkpointed into the main file).
    let evs = events(12);
    let rows = checkpoints(&test_key(), &evs, &[3, 4, 8, 10, 12]);
    writer
        .execute_batch(&format!(
            "BEGIN; INSERT INTO events VALUES (10, {}, {}, NULL, NULL, X'{}');
             INSERT INTO events VALUES (11, {}, {}, NULL, NULL, X'{}');
             INSERT INTO checkpoints VALUES (12, '{}', X'{}'); COMMIT;",
            evs[10].ts,
            evs[10].kind,
            hex(&evs[10].data),
            evs[11].ts,
            evs[11].kind,
            hex(&evs[11].data),
            rows[4].note,
            hex(&rows[4].proof)
        ))
        .unwrap();
    let report = f.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.events, 12);
    drop(writer);
    // After the writer closed (and removed its WAL), still readable.
    let dir = f.path.parent().unwrap();
    let before = listing(dir);
    assert_eq!(f.verify().events, 12);
    assert_eq!(listing(dir), before);
}

#[test]
fn an_unlocked_read_notices_a_writer_arriving() {
    use gatehouse_verify::ledger::Ledger;
    let f = Fixture::new();
    exec(&f.path, "PRAGMA journal_mode = WAL");
    let wal = PathBuf::from(format!("{}-wal", f.path.display()));
    assert!(!wal.exists());
    let ledger = Ledger::open(&f.path).unwrap();
    assert_eq!(ledger.checkpoints().unwrap().len(), 4);
    assert!(ledger.read_was_stable());
    std::fs::write(&wal, b"").unwrap();
    assert!(!ledger.read_was_stable());
}

/// Issue 20: a schema object the format does not define (an index SQLite
/// could answer readers from, a view, a trigger, a table) is an integrity
/// failure, reported at 0 before anything else.
#[test]
fn schema_objects_outside_the_format_are_failures() {
    for plant in [
        "CREATE INDEX planted ON events (seq, data)",
        "CREATE VIEW planted AS SELECT * FROM events",
        "CREATE TRIGGER planted BEFORE INSERT ON events BEGIN SELECT 1; END",
        "CREATE TABLE planted (x)",
    ] {
        let f = Fixture::new();
        f.sql(plant);
        let report = f.verify();
        assert_failure(&report, 0, FailureClass::SchemaForeign);
        assert!(report.to_text().contains("planted"), "{}", report.to_text());
    }
}

/// Issue 17: the verifier reads checkpoint rows a page (1,024) at a time
/// alongside the events. Its memory is measured in docs/benchmarks.md; this
/// checks that across page boundaries every rule still holds.
#[test]
fn thousands_of_checkpoints_verify_across_page_boundaries() {
    const N: u64 = 2150;
    let sizes: Vec<u64> = (1..=N).collect();
    let f = Fixture::with(&events(N), &sizes);
    let report = f.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.checkpoints, N);
    assert_eq!(
        report.final_checkpoint.as_deref(),
        f.notes.last().map(String::as_str)
    );

    // An event rewritten past two pages of checkpoints, hashes not
    // recomputed: pinned to it exactly.
    let e = event(2100, T0 + 2100 * 1000, 1);
    let edited = f.copy_with(&format!(
        "UPDATE events SET data = x'{}' WHERE seq = 2100",
        hex(&e.data[..e.data.len() - 1]).to_owned() + "ff"
    ));
    let report = edited.verify();
    assert_eq!(
        report.failure.as_ref().map(|f| f.seq),
        Some(2100),
        "{}",
        report.to_text()
    );

    // The log cut after 2500 events: the checkpoints beyond it are found.
    let cut = f.copy_with("DELETE FROM events WHERE seq >= 2120");
    assert_failure(&cut.verify(), 2120, FailureClass::CheckpointBeyondLog);

    // A checkpoint table redefined so that a size is not an integer: read
    // whole, in SQLite's order, and the odd row is a failure.
    let odd = f.copy_with(
        "ALTER TABLE checkpoints RENAME TO kept; \
         CREATE TABLE checkpoints (size, note, proof); \
         INSERT INTO checkpoints SELECT * FROM kept; DROP TABLE kept; \
         UPDATE checkpoints SET size = 'x' WHERE size = 1800",
    );
    let report = odd.verify();
    assert!(!report.is_intact(), "{}", report.to_text());
}

/// The format's one index (`ledger_meta`'s key) must agree with its table:
/// an index page edited in the file is reported like a planted object.
#[test]
fn an_index_that_disagrees_with_its_table_is_a_failure() {
    let f = Fixture::new();
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    let (root, page_size): (i64, i64) = conn
        .query_row(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size()) FROM sqlite_master \
             WHERE name = 'sqlite_autoindex_ledger_meta_1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&f.path).unwrap();
    let page = ((root - 1) * page_size) as usize..(root * page_size) as usize;
    let at = bytes[page.clone()]
        .windows(6)
        .position(|w| w == b"origin")
        .expect("the index page holds the key 'origin'")
        + page.start;
    bytes[at + 5] = b'm';
    std::fs::write(&f.path, bytes).unwrap();
    let report = f.verify();
    assert_failure(&report, 0, FailureClass::SchemaForeign);
    assert!(
        report.to_text().contains("sqlite_autoindex_ledger_meta_1"),
        "{}",
        report.to_text()
    );
}

/// Issue 20, finding 3: through a symbolic link, the verifier reads the WAL
/// beside the real file, as SQLite (and every other reader) does.
#[test]
fn a_symlink_is_read_with_the_wal_beside_the_real_file() {
    let f = Fixture::new();
    let staging = f.path.with_file_name("staging.ledger");
    std::fs::copy(&f.path, &staging).unwrap();
    let conn = rusqlite::Connection::open(&staging).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
         UPDATE events SET kind = 99 WHERE seq = 5",
    )
    .unwrap();
    let mut wal = f.path.clone().into_os_string();
    wal.push("-wal");
    let mut staged_wal = staging.clone().into_os_string();
    staged_wal.push("-wal");
    // The main file must be in WAL mode for SQLite to read a WAL beside it.
    exec(&f.path, "PRAGMA journal_mode = WAL");
    std::fs::copy(&staged_wal, &wal).unwrap();
    drop(conn);
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("link.ledger");
    std::os::unix::fs::symlink(&f.path, &link).unwrap();
    let key = VerifierKey::parse(&f.key.verifier()).unwrap();
    let report = verify_ledger(&link, &key, None).unwrap();
    assert_failure(&report, 5, FailureClass::IndexMismatch);
}
