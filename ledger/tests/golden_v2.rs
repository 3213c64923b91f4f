//! Golden vectors for ledger formats 2 and 3 (docs/ledger-format.md,
//! sections 5.3 and 7.2): checkpoints signed at a delay (here: every three
//! events), a crash that left events unsigned, the next start's checkpoint
//! over them marked `recovered`, and more events left unsigned by a second
//! crash. Format 2 (`fixtures/ledger/golden-v2.ledger`, written before
//! format 3 existed) records a statement as one kind-25 event; the writer
//! now writes format 3 (`golden-v3.ledger`), where statements are recorded
//! as a shape (kind 29, once per shape) and a shaped statement (kind 30).
//! Written with a fixed key and clock; the writer must reproduce
//! `golden-v3.ledger` record for record and note for note, and
//! `gatehouse-verify` is tested against both (verifier/tests/golden.rs).
//!
//! Regenerate after an intentional format change with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test golden_v2`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::*;
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{EventBody, Ledger, LedgerReader, WriterOptions};

const SEED: [u8; 32] = [0x7a; 32];
const ORIGIN: &str = "gatehouse.test/golden-v2";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

/// Operator actions; at 4 a statement with a bind parameter, at 5 and 6
/// two statements of one shape (their literals differ).
fn event(i: u64) -> EventBody {
    if i == 5 || i == 6 {
        return Statement {
            session: 1,
            identity: "agent-7".into(),
            query: i - 3,
            sql: format!("SELECT id FROM orders WHERE customer = {}", 37 + i),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
            action: Action::Allow,
            rule: Some("agent-reads".into()),
            class: StatementClass::Read,
            tables: vec!["public.orders".into()],
            columns: vec!["public.orders.id".into(), "public.orders.customer".into()],
            message: None,
        }
        .into();
    }
    if i == 4 {
        return Statement {
            session: 1,
            identity: "agent-7".into(),
            query: 1,
            sql: "SELECT id FROM orders WHERE customer = $1".into(),
            params: vec![Param {
                format: 0,
                value: Some(Bytes(b"42".to_vec())),
            }],
            statement: Some(String::new()),
            portal: Some(String::new()),
            protocol: Protocol::Extended,
            action: Action::Allow,
            rule: Some("agent-reads".into()),
            class: StatementClass::Read,
            tables: vec!["public.orders".into()],
            columns: vec!["public.orders.id".into(), "public.orders.customer".into()],
            message: None,
        }
        .into();
    }
    OperatorAction {
        operator: "alice".into(),
        action: format!("step {i}"),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

/// The file and its WAL as a crash leaves them, folded into one file.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    rusqlite::Connection::open(to)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = DELETE")
        .unwrap();
}

fn build(dir: &Path) -> PathBuf {
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    let options = |path: &Path| {
        let mut o = WriterOptions::new(path, NoteSigner::from_seed(ORIGIN, SEED).unwrap());
        let clock = clock.clone();
        o.clock = Arc::new(move || clock.fetch_add(1_000_000, Ordering::Relaxed));
        o.sign_every = Duration::from_secs(60);
        o.sign_max_events = 3;
        o
    };
    // Events 0..8: checkpoints at 3 and 6, then a crash with 6 and 7
    // committed and unsigned.
    let first = dir.join("first.ledger");
    let ledger = Ledger::open(options(&first)).unwrap();
    for i in 0..8 {
        ledger.append_blocking(&[event(i)]).unwrap();
    }
    let second = dir.join("second.ledger");
    crash_copy(&first, &second);
    ledger.close();
    // The next start signs 6 and 7 as recovered; events 8 and 9 are then
    // left unsigned by a second crash.
    let ledger = Ledger::open(options(&second)).unwrap();
    for i in 8..10 {
        ledger.append_blocking(&[event(i)]).unwrap();
    }
    let golden = dir.join("golden-v2.ledger");
    crash_copy(&second, &golden);
    ledger.close();
    golden
}

fn read(p: &Path) -> (String, Vec<Vec<u8>>, Vec<String>) {
    let format: String = rusqlite::Connection::open(p)
        .unwrap()
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let r = LedgerReader::open(p).unwrap();
    let events = r.events(0..u64::MAX).map(|e| e.unwrap().bytes).collect();
    let notes = r
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    (format, events, notes)
}

#[test]
fn the_writer_reproduces_the_format_3_golden_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path());
    let key = NoteSigner::from_seed(ORIGIN, SEED).unwrap().verifier();
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        std::fs::copy(&built, fixtures().join("golden-v3.ledger")).unwrap();
        std::fs::write(fixtures().join("golden-v3.pub"), format!("{key}\n")).unwrap();
    }
    let (format, events, notes) = read(&built);
    assert_eq!(format, "gatehouse-ledger-v3");
    // Ten events appended, two shapes recorded before their first statements.
    assert_eq!(events.len(), 12);
    let kinds: Vec<EventKind> = events
        .iter()
        .map(|e| Event::from_bytes(e).unwrap().body.kind())
        .collect();
    assert_eq!(
        kinds[4..9].to_vec(),
        [
            EventKind::StatementShape,
            EventKind::ShapedStatement,
            EventKind::StatementShape,
            EventKind::ShapedStatement,
            EventKind::ShapedStatement,
        ]
    );
    // Readers give back the statements as they were appended.
    let reader = LedgerReader::open(&built).unwrap();
    let statements: Vec<EventBody> = reader
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event.body)
        .filter(|b| matches!(b, EventBody::Statement(_)))
        .collect();
    assert_eq!(statements, [event(4), event(5), event(6)]);
    let sizes: Vec<&str> = notes.iter().map(|n| n.lines().nth(1).unwrap()).collect();
    assert_eq!(sizes, ["3", "6", "9", "10"]);
    assert!(notes[3].contains("\nrecovered\n\n"), "{}", notes[3]);
    assert!(!notes[2].contains("recovered"));
    assert_eq!(
        (format, events, notes),
        read(&fixtures().join("golden-v3.ledger")),
        "the writer's output differs from the golden ledger"
    );
}

/// The format-2 golden ledger, written before format 3, reads as it did.
#[test]
fn the_format_2_golden_ledger_still_reads() {
    let (format, events, notes) = read(&fixtures().join("golden-v2.ledger"));
    assert_eq!(format, "gatehouse-ledger-v2");
    assert_eq!(events.len(), 10);
    let sizes: Vec<&str> = notes.iter().map(|n| n.lines().nth(1).unwrap()).collect();
    assert_eq!(sizes, ["3", "6", "8"]);
    assert!(notes[2].contains("\nrecovered\n\n"), "{}", notes[2]);
    let fourth = Event::from_bytes(&events[4]).unwrap();
    assert_eq!(fourth.body, event(4));
}
