//! Issue 15: checkpoints signed at a bounded delay (format 2). Every event
//! is committed before its append returns; the signature over it follows
//! within `sign_every` or `sign_max_events`, at close, or, after a crash,
//! at the next start in a checkpoint marked as recovered. The independent
//! verifier reports the events still waiting as an unsigned tail, and an
//! edit of a row still waiting is caught when the writer signs its own tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse_ledger::event::{EventBody, OperatorAction};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{Ledger, LedgerReader, WriterOptions};
use gatehouse_verify::{verify_ledger_with, FailureClass, Report, VerifierKey, VerifyOptions};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.test/delayed", [5; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

fn action(i: u64) -> EventBody {
    OperatorAction {
        operator: "ops".into(),
        action: format!("step {i:04}"),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

fn open(path: &Path, every: Duration, max: u64) -> Ledger {
    let mut options = WriterOptions::new(path, signer());
    options.sign_every = every;
    options.sign_max_events = max;
    Ledger::open(options).unwrap()
}

fn verify(path: &Path, strict: bool) -> Report {
    verify_ledger_with(
        path,
        &key(),
        VerifyOptions {
            strict,
            ..VerifyOptions::default()
        },
    )
    .unwrap()
}

fn checkpoint_sizes(path: &Path) -> Vec<u64> {
    LedgerReader::open(path)
        .unwrap()
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect()
}

/// A copy of a ledger a writer still holds, as a crash would leave it:
/// the file and its WAL as of the last commit.
fn crash_copy(path: &Path, name: &str) -> PathBuf {
    let to = path.with_file_name(name);
    std::fs::copy(path, &to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    to
}

#[test]
fn signatures_wait_for_the_size_bound_and_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path, Duration::from_secs(3600), 10);
    for i in 0..25 {
        let receipt = ledger.append_blocking(&[action(i)]).unwrap();
        // Committed before the append returns; signed in the commit that
        // reaches the bound.
        assert_eq!(receipt[0].seq, i);
        assert_eq!(
            receipt[0].checkpoint,
            if i == 9 || i == 19 { i + 1 } else { 0 }
        );
    }
    assert_eq!(checkpoint_sizes(&path), vec![10, 20]);
    let report = verify(&path, false);
    assert!(report.is_intact(), "{}", report.to_text());
    let tail = report.unsigned_tail.clone().expect("five events wait");
    assert_eq!(tail.events, 5);
    assert!(
        report.to_text().contains("unsigned tail: 5 events"),
        "{}",
        report.to_text()
    );
    assert_eq!(report.to_json()["unsigned_tail"]["events"], 5);
    let strict = verify(&path, true);
    assert_eq!(
        strict.failure.map(|f| (f.seq, f.class)),
        Some((20, FailureClass::Unsigned))
    );
    ledger.close();
    assert_eq!(checkpoint_sizes(&path), vec![10, 20, 25]);
    let report = verify(&path, true);
    assert!(report.is_intact(), "{}", report.to_text());
    assert!(report.unsigned_tail.is_none());
}

#[test]
fn an_idle_tail_is_signed_when_its_delay_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path, Duration::from_millis(30), 10_000);
    ledger
        .append_blocking(&[action(0), action(1), action(2)])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while checkpoint_sizes(&path).last() != Some(&3) {
        assert!(Instant::now() < deadline, "the tail was never signed");
        std::thread::sleep(Duration::from_millis(10));
    }
    ledger.close();
    assert!(verify(&path, true).is_intact());
}

#[test]
fn a_crash_leaves_a_tail_the_next_start_signs_as_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path, Duration::from_secs(3600), 10);
    for i in 0..14 {
        ledger.append_blocking(&[action(i)]).unwrap();
    }
    let crashed = crash_copy(&path, "crashed.db");
    ledger.close();
    // The copy holds 14 committed events, 4 unsigned: intact with a tail.
    let report = verify(&crashed, false);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.unsigned_tail.map(|t| t.events), Some(4));
    // The next start signs them, marked as recovered, and goes on.
    let restarted = open(&crashed, Duration::from_secs(3600), 10);
    assert_eq!(checkpoint_sizes(&crashed), vec![10, 14]);
    restarted.append_blocking(&[action(14)]).unwrap();
    restarted.close();
    let report = verify(&crashed, true);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.recovered_checkpoints, vec![14]);
    assert!(
        report.to_text().contains("recovered checkpoints"),
        "{}",
        report.to_text()
    );
}

#[test]
fn an_unsigned_row_edited_on_disk_is_caught_when_the_writer_signs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path, Duration::from_secs(3600), 1000);
    for i in 0..6 {
        ledger.append_blocking(&[action(i)]).unwrap();
    }
    // Event 3 has no signature over it yet; someone rewrites its row.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut data: Vec<u8> = conn
        .query_row("SELECT data FROM events WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    let at = data.windows(9).position(|w| w == b"step 0003").unwrap();
    data[at + 8] = b'9';
    conn.execute("UPDATE events SET data = ?1 WHERE seq = 3", [&data])
        .unwrap();
    drop(conn);
    // The writer signs the root of its own tree, not one read back.
    ledger.close();
    let report = verify(&path, false);
    assert_eq!(
        report.failure.map(|f| f.class),
        Some(FailureClass::RootMismatch)
    );
}

#[test]
fn a_format_1_ledger_becomes_format_3_when_a_writer_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let v1 = open(&path, Duration::ZERO, 10);
    v1.append_blocking(&[action(0)]).unwrap();
    v1.close();
    let format = |p: &Path| -> String {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = 'format'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(format(&path), "gatehouse-ledger-v3");
    // A ledger of an earlier version (a writer of its time) is upgraded:
    // each version only allows more.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE ledger_meta SET value = 'gatehouse-ledger-v1' WHERE key = 'format'",
            [],
        )
        .unwrap();
    let v3 = open(&path, Duration::from_secs(3600), 10);
    v3.append_blocking(&[action(1)]).unwrap();
    assert_eq!(format(&path), "gatehouse-ledger-v3");
    v3.close();
    assert!(verify(&path, true).is_intact());
}

/// Deleting checkpoints turns signed events into an unsigned tail; a tail
/// spanning more than the longest signing delay (60 s) cannot be one a
/// writer left, and fails.
#[test]
fn a_tail_longer_than_any_signing_delay_fails() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut options = WriterOptions::new(&path, signer());
    options.sign_every = Duration::from_secs(1);
    options.sign_max_events = 1;
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    options.clock = Arc::new(move || clock.fetch_add(30_000_000_000, Ordering::Relaxed));
    let ledger = Ledger::open(options).unwrap();
    for i in 0..10 {
        ledger.append_blocking(&[action(i)]).unwrap();
    }
    ledger.close();
    let sql = |q: &str| {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(q)
            .unwrap()
    };
    sql("DELETE FROM checkpoints WHERE size = 10");
    let report = verify(&path, false);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.unsigned_tail.map(|t| t.events), Some(1));
    sql("DELETE FROM checkpoints WHERE size > 2");
    let report = verify(&path, false);
    assert_eq!(
        report.failure.as_ref().map(|f| (f.seq, f.class)),
        Some((2, FailureClass::Unsigned)),
        "{}",
        report.to_text()
    );
}
