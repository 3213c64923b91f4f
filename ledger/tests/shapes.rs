//! Statements recorded compactly (docs/ledger-format.md, section 7.2): a
//! `StatementShape` once per shape and segment, each statement as a
//! `ShapedStatement`. Readers, verified reads and evidence bundles give
//! back the statements as the gateway appended them, and a shape that is
//! not the one a statement was recorded with is caught wherever it lies.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_ledger::bundle::{self, Bundle, ExportRequest, Selection};
use gatehouse_ledger::event::*;
use gatehouse_ledger::note::{NoteSigner, VerifierKey};
use gatehouse_ledger::segment::segment_files;
use gatehouse_ledger::verified::{read_verified, read_window};
use gatehouse_ledger::{EventBody, Ledger, LedgerReader, SegmentPolicy, WriterOptions};
use gatehouse_verify::{verify_bundle_bytes, verify_ledger, FailureClass};

const ORIGIN: &str = "gatehouse.test/shapes";

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [0x33; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

fn verifier_key() -> gatehouse_verify::VerifierKey {
    gatehouse_verify::VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

/// Statement `i` of session `1 + i % 3`: two shapes, alternating, with
/// literals that differ every time.
fn statement(i: u64) -> Statement {
    let session = 1 + i % 3;
    let (sql, tables) = if i.is_multiple_of(2) {
        (
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                1000 + i
            ),
            vec!["public.pgbench_accounts".to_owned()],
        )
    } else {
        (
            format!("UPDATE t SET note = 'it''s {i}' WHERE id = {i}"),
            vec!["public.t".to_owned()],
        )
    };
    Statement {
        session,
        identity: format!("agent-{session}"),
        query: i,
        sql,
        params: vec![],
        statement: None,
        portal: None,
        protocol: Protocol::Simple,
        action: Action::Allow,
        rule: Some("allow-everything".into()),
        class: if i.is_multiple_of(2) {
            StatementClass::Read
        } else {
            StatementClass::Write
        },
        tables,
        columns: vec![],
        message: None,
    }
}

fn options(path: &Path, segments: SegmentPolicy) -> WriterOptions {
    let mut options = WriterOptions::new(path, signer());
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    options.clock = Arc::new(move || clock.fetch_add(1_000_000, Ordering::Relaxed));
    options.segments = segments;
    options
}

/// Appends statements `range`, one per commit, and closes the writer.
fn write(path: &Path, range: std::ops::Range<u64>, segments: SegmentPolicy) {
    let ledger = Ledger::open(options(path, segments)).unwrap();
    for i in range {
        ledger.append_blocking(&[statement(i).into()]).unwrap();
    }
    ledger.close();
}

fn kinds(path: &Path) -> Vec<EventKind> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT data FROM events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|d| Event::from_bytes(&d.unwrap()).unwrap().body.kind())
        .collect()
}

fn statements(reader: &LedgerReader) -> Vec<EventBody> {
    reader
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event.body)
        .filter(|b| matches!(b, EventBody::Statement(_)))
        .collect()
}

#[test]
fn statements_come_back_whole_and_a_shape_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    write(&path, 0..40, SegmentPolicy::default());
    let reader = LedgerReader::open(&path).unwrap();
    let want: Vec<EventBody> = (0..40).map(|i| statement(i).into()).collect();
    assert_eq!(statements(&reader), want);
    let k = kinds(&path);
    assert_eq!(
        k.iter()
            .filter(|k| **k == EventKind::StatementShape)
            .count(),
        2
    );
    assert_eq!(
        k.iter()
            .filter(|k| **k == EventKind::ShapedStatement)
            .count(),
        40
    );
    // Format 3 leaves the identity column empty; an identity's events are
    // found on the records.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let filled: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE identity IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(filled, 0);
    let of_agent_2: Vec<u64> = reader
        .events_by_identity("agent-2")
        .unwrap()
        .map(|e| match e.unwrap().event.body {
            EventBody::Statement(s) => s.query,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        of_agent_2,
        (0..40).filter(|i| i % 3 == 1).collect::<Vec<_>>()
    );
    // A restarted writer does not know what the file holds: it records a
    // shape again the first time it needs it.
    write(&path, 40..44, SegmentPolicy::default());
    let k = kinds(&path);
    assert_eq!(
        k.iter()
            .filter(|k| **k == EventKind::StatementShape)
            .count(),
        4
    );
    let reader = LedgerReader::open(&path).unwrap();
    let want: Vec<EventBody> = (0..44).map(|i| statement(i).into()).collect();
    assert_eq!(statements(&reader), want);
    assert!(verify_ledger(&path, &verifier_key(), None)
        .unwrap()
        .is_intact());
}

#[test]
fn every_segment_holds_the_shapes_its_statements_refer_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let policy = SegmentPolicy {
        max_bytes: Some(4096),
        every: None,
    };
    write(&path, 0..120, policy);
    let files: Vec<PathBuf> = segment_files(&path)
        .unwrap()
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    let whole = LedgerReader::open(&path).unwrap();
    let want: Vec<EventBody> = (0..120).map(|i| statement(i).into()).collect();
    assert_eq!(statements(&whole), want);
    for file in &files {
        let k = kinds(file);
        if k.contains(&EventKind::ShapedStatement) {
            assert!(k.contains(&EventKind::StatementShape), "{}", file.display());
        }
    }
    // The older segments archived and removed: what is left reads whole.
    for file in &files[..files.len() - 1] {
        std::fs::remove_file(file).unwrap();
    }
    let rest = LedgerReader::open(&path).unwrap();
    let read = statements(&rest);
    assert!(!read.is_empty());
    assert!(read.len() < 120);
    assert!(
        read == want[120 - read.len()..],
        "the last segment's statements"
    );
}

/// Events 0..3: the two shapes and a statement; then statements until the
/// log is past two 256-event blocks, so a window around a late statement
/// does not hash the first block.
fn long_ledger(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.db");
    write(&path, 0..700, SegmentPolicy::default());
    path
}

fn set_data(path: &Path, seq: u64, bytes: &[u8]) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE events SET data = ?1 WHERE seq = ?2",
            rusqlite::params![bytes, seq as i64],
        )
        .unwrap();
}

#[test]
fn a_shape_edited_outside_the_window_read_is_caught_by_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = long_ledger(dir.path());
    let reader = LedgerReader::open(&path).unwrap();
    let first = reader.get(0).unwrap().unwrap();
    let EventBody::StatementShape(mut shape) = Event::from_bytes(&first.bytes).unwrap().body else {
        panic!("event 0 is the first statement's shape");
    };
    // Unedited, a window far from the shape reads the statement whole.
    let late = 650..651;
    let mut seen = Vec::new();
    read_window(
        &reader,
        Some(&key()),
        std::slice::from_ref(&late),
        |e, _| seen.push(e),
    )
    .unwrap()
    .expect("the window checks out");
    assert!(matches!(&seen[0].body, EventBody::Statement(s) if s.sql.contains("pgbench_accounts")));
    // The shape rewritten to say the statements were denied and touched
    // another table: the window does not hash block 0, but the statement's
    // record names the shape's digest.
    shape.tables = vec!["public.other".into()];
    shape.action = Action::Deny;
    let forged = Event {
        seq: 0,
        ts: first.event.ts,
        body: shape.into(),
    };
    set_data(&path, 0, &forged.to_bytes());
    let reader = LedgerReader::open(&path).unwrap();
    let err = read_window(
        &reader,
        Some(&key()),
        std::slice::from_ref(&late),
        |_, _| {},
    )
    .expect_err("the forged shape is refused");
    assert!(
        err.to_string()
            .contains("differs from the one it was recorded with"),
        "{err}"
    );
    assert!(read_verified(&reader, Some(&key()), |_, _| {}).is_err());
    assert!(reader.events(600..700).any(|e| e.is_err()));
    // The verifier names the edited record.
    let report = verify_ledger(&path, &verifier_key(), None).unwrap();
    assert!(!report.is_intact(), "{}", report.to_text());
}

fn export(path: &Path, selection: Selection, prove_complete: bool) -> Bundle {
    bundle::export(
        &LedgerReader::open(path).unwrap(),
        &ExportRequest {
            selection,
            consistent_with: vec![],
            prove_complete,
        },
    )
    .unwrap()
}

fn verify(bundle: &Bundle) -> gatehouse_verify::BundleReport {
    verify_bundle_bytes(&bundle.to_bytes(), &verifier_key(), None, None).unwrap()
}

#[test]
fn bundles_carry_the_shapes_of_their_statements() {
    let dir = tempfile::tempdir().unwrap();
    let path = long_ledger(dir.path());
    for selection in [Selection::Session(2), Selection::Identity("agent-3".into())] {
        let b = export(&path, selection, false);
        let report = verify(&b);
        assert!(report.is_intact(), "{}", report.to_text());
        assert_eq!(report.shapes, 2);
        assert_eq!(report.events + 2, b.events.len() as u64);
    }
    // A time range after both shapes holds them beside its consecutive
    // events, and is still proven complete.
    let reader = LedgerReader::open(&path).unwrap();
    let ts = |seq: u64| reader.get(seq).unwrap().unwrap().event.ts;
    let range = Selection::TimeRange {
        from: ts(300),
        to: ts(320),
    };
    let b = export(&path, range, true);
    let report = verify(&b);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.seqs, (300..320).collect::<Vec<_>>());
    assert_eq!(report.shapes, 2);
    assert_eq!(
        report.completeness,
        Some(gatehouse_verify::Completeness::Proven)
    );

    // Without its shapes a bundle's statements cannot be read.
    let mut missing = export(&path, Selection::Session(2), false);
    missing.events.retain(|e| e.seq > 2);
    let report = verify(&missing);
    let f = report.failure.expect("a statement without its shape fails");
    assert_eq!(f.class, FailureClass::BundleMalformed);
    // One shape in place of the other is not the statement's.
    let mut swapped = export(&path, Selection::Session(2), false);
    let shapes: Vec<usize> = swapped
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.seq <= 2)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(shapes.len(), 2);
    let (a, b) = (shapes[0], shapes[1]);
    let record_a = swapped.events[a].record.clone();
    swapped.events[a].record = swapped.events[b].record.clone();
    swapped.events[b].record = record_a;
    let report = verify(&swapped);
    assert!(!report.is_intact());
}
