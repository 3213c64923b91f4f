//! The mutation suite: one test per tamper class, on a ledger of 1,200
//! events written by the real writer, checked by the independent
//! `gatehouse-verify`. Every class must be caught and attributed to the
//! right sequence number.
//!
//! The first 600 events are appended concurrently (multi-event batches), the
//! rest one per batch, so a checkpoint there covers exactly one event and a
//! failure only a signature can catch is still pinned to its event.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use gatehouse_ledger::checkpoint::Checkpoint;
use gatehouse_ledger::event::{Event, EventBody, OperatorAction, Protocol, QueryReceived};
use gatehouse_ledger::merkle::{self, Frontier};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{chain, Ledger, WriterOptions};
use gatehouse_verify::{verify_ledger, FailureClass, Report, VerifierKey};
use rusqlite::{params, Connection};

const EVENTS: u64 = 1_200;
const BATCHED: u64 = 600;
/// A target event in the one-event-per-batch region.
const T: u64 = 900;
/// Size of the older copy kept for the rollback test.
const OLDER: u64 = 1_000;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.test/tamper", [21; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

fn body(i: u64) -> EventBody {
    if i.is_multiple_of(7) {
        OperatorAction {
            operator: "ops".into(),
            action: "block".into(),
            target: Some(format!("agent-{i}")),
            outcome: "ok".into(),
            detail: None,
        }
        .into()
    } else {
        QueryReceived {
            session: i % 5,
            identity: format!("agent-{}", i % 3),
            query: i,
            sql: format!("SELECT * FROM orders WHERE id = {i}"),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
        }
        .into()
    }
}

struct Base {
    dir: PathBuf,
}

impl Base {
    fn ledger(&self) -> PathBuf {
        self.dir.join("base.db")
    }
    fn older(&self) -> PathBuf {
        self.dir.join("older.db")
    }
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("base.db");
        let mut options = WriterOptions::new(&path, signer());
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000_000_000));
        options.clock = Arc::new(move || clock.fetch_add(1_000, Ordering::Relaxed));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let ledger = Ledger::open(options.clone()).unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..20u64 {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..BATCHED / 20 {
                        ledger.append(&body(t * 1000 + i)).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        ledger.close();
        let ledger = Ledger::open(options.clone()).unwrap();
        for i in BATCHED..OLDER {
            ledger.append_blocking(&[body(i)]).unwrap();
        }
        ledger.close();
        std::fs::copy(&path, dir.join("older.db")).unwrap();
        let ledger = Ledger::open(options).unwrap();
        for i in OLDER..EVENTS {
            ledger.append_blocking(&[body(i)]).unwrap();
        }
        ledger.close();
        let report = verify_ledger(&path, &key(), None).unwrap();
        assert!(report.is_intact(), "base ledger: {:?}", report.failure);
        assert_eq!(report.events, EVENTS);
        Base { dir }
    })
}

/// A private copy of the base ledger to tamper with.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    std::fs::copy(base().ledger(), &path).unwrap();
    (dir, path)
}

fn data(conn: &Connection, seq: u64) -> Vec<u8> {
    conn.query_row(
        "SELECT data FROM events WHERE seq = ?1",
        [seq as i64],
        |r| r.get(0),
    )
    .unwrap()
}

fn set_data(conn: &Connection, seq: u64, bytes: &[u8]) {
    conn.execute(
        "UPDATE events SET data = ?1 WHERE seq = ?2",
        params![bytes, seq as i64],
    )
    .unwrap();
}

/// Recomputes every stored hash the way a forger would: chain heads and
/// roots in the notes' text (keeping the old signature lines, which the
/// forger cannot recompute), consistency proofs and writer frontiers.
fn reseal(conn: &Connection) {
    let rows: Vec<Vec<u8>> = conn
        .prepare("SELECT data FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let cps: Vec<(i64, String)> = conn
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let leaves: Vec<merkle::Hash> = rows.iter().map(|d| merkle::leaf_hash(d)).collect();
    let mut links = vec![chain::GENESIS];
    for d in &rows {
        let next = chain::link(links.last().unwrap(), d);
        links.push(next);
    }
    let mut prev = 0u64;
    for (size, note) in cps {
        let size = size as u64;
        let (_, sigs) = note.rsplit_once("\n\n").unwrap();
        let text = Checkpoint {
            origin: "gatehouse.test/tamper".into(),
            size,
            root: merkle::root_of(&leaves[..size as usize]),
            chain: links[size as usize],
            recovered: false,
        }
        .text();
        let proof = merkle::consistency_proof(&leaves[..size as usize], prev).concat();
        conn.execute(
            "UPDATE checkpoints SET note = ?1, proof = ?2 WHERE size = ?3",
            params![format!("{text}\n{sigs}"), proof, size as i64],
        )
        .unwrap();
        prev = size;
    }
    let mut f = Frontier::new();
    for l in &leaves {
        f.push(*l);
    }
    conn.execute(
        "UPDATE writer_state SET size = ?1, frontier = ?2",
        params![leaves.len() as i64, f.to_bytes()],
    )
    .unwrap();
}

fn verify(path: &Path, trusted: Option<&str>) -> Report {
    verify_ledger(path, &key(), trusted).unwrap()
}

#[track_caller]
fn assert_caught(report: &Report, seq: u64, classes: &[FailureClass]) {
    let f = report.failure.as_ref().expect("tampering must be caught");
    assert_eq!(f.seq, seq, "reported at the wrong sequence number: {f:?}");
    assert!(classes.contains(&f.class), "unexpected class: {f:?}");
}

fn edit_sql(bytes: &[u8], sql: &str) -> Vec<u8> {
    let mut event = Event::from_bytes(bytes).unwrap();
    match &mut event.body {
        EventBody::QueryReceived(q) => q.sql = sql.into(),
        other => panic!("target is not a query: {other:?}"),
    }
    event.to_bytes()
}

#[test]
fn untouched_copy_is_intact() {
    let (_d, path) = copy();
    let r = verify(&path, None);
    assert!(r.is_intact(), "{:?}", r.failure);
    assert_eq!(r.events, EVENTS);
}

#[test]
fn byte_flip_in_an_event() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    // Inside the SQL text: still well-formed CBOR, so only hashes catch it.
    let mut d = data(&conn, T);
    let at = d.windows(6).position(|w| w == b"orders").unwrap();
    d[at] ^= 0x20;
    set_data(&conn, T, &d);
    assert_caught(
        &verify(&path, None),
        T,
        &[FailureClass::RootMismatch, FailureClass::ChainMismatch],
    );
    // In a CBOR head: malformed or non-canonical at once.
    let (_d2, path2) = copy();
    let conn = Connection::open(&path2).unwrap();
    let mut d = data(&conn, T + 1);
    d[0] ^= 0x01;
    set_data(&conn, T + 1, &d);
    assert_caught(&verify(&path2, None), T + 1, &[FailureClass::NonCanonical]);
}

#[test]
fn byte_flip_in_a_batched_event_is_pinned_to_its_batch() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let target = 333;
    let mut d = data(&conn, target);
    let last = d.len() - 1;
    d[last] ^= 0x01;
    set_data(&conn, target, &d);
    let start: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(size), 0) FROM checkpoints WHERE size <= ?1",
            [target as i64],
            |r| r.get(0),
        )
        .unwrap();
    let report = verify(&path, None);
    let f = report.failure.expect("caught");
    assert!(
        f.seq == target || f.seq == start as u64,
        "{f:?} (batch starts at {start})"
    );
}

#[test]
fn event_edited_with_stored_hashes_recomputed() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    set_data(&conn, T + 1, &edit_sql(&data(&conn, T + 1), "SELECT 1"));
    reseal(&conn);
    assert_caught(
        &verify(&path, None),
        T + 1,
        &[FailureClass::SignatureInvalid],
    );
}

#[test]
fn deleted_event() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE seq = ?1", [T as i64])
        .unwrap();
    assert_caught(&verify(&path, None), T, &[FailureClass::SequenceGap]);
}

#[test]
fn inserted_event() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    // Shift every later row up by one and slip a forged event in at T.
    conn.execute_batch(&format!(
        "UPDATE events SET seq = -seq - 1 WHERE seq >= {T}; UPDATE events SET seq = -seq WHERE seq < 0;"
    ))
    .unwrap();
    let mut forged = Event::from_bytes(&data(&conn, T + 1)).unwrap();
    forged.body = body(424_242);
    conn.execute(
        "INSERT INTO events (seq, ts, kind, data) VALUES (?1, ?2, ?3, ?4)",
        params![
            T as i64,
            forged.ts as i64,
            forged.body.kind().code() as i64,
            forged.to_bytes()
        ],
    )
    .unwrap();
    assert_caught(
        &verify(&path, None),
        T,
        &[FailureClass::RootMismatch, FailureClass::ChainMismatch],
    );
}

#[test]
fn reordered_events() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let (a, b) = (data(&conn, T), data(&conn, T + 1));
    set_data(&conn, T, &b);
    set_data(&conn, T + 1, &a);
    assert_caught(&verify(&path, None), T, &[FailureClass::SequenceMismatch]);
    // Reordered and renumbered so each record claims its new position.
    let (_d2, path2) = copy();
    let conn = Connection::open(&path2).unwrap();
    let mut ea = Event::from_bytes(&data(&conn, T)).unwrap();
    let mut eb = Event::from_bytes(&data(&conn, T + 1)).unwrap();
    std::mem::swap(&mut ea.seq, &mut eb.seq);
    // A careful forger keeps the index columns in step with the records.
    for e in [&ea, &eb] {
        conn.execute(
            "UPDATE events SET data = ?1, ts = ?2, kind = ?3 WHERE seq = ?4",
            params![
                e.to_bytes(),
                e.ts as i64,
                e.body.kind().code() as i64,
                e.seq as i64
            ],
        )
        .unwrap();
    }
    assert_caught(
        &verify(&path2, None),
        T,
        &[FailureClass::RootMismatch, FailureClass::ChainMismatch],
    );
}

#[test]
fn duplicated_sequence_number() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    // Rebuild the table without its primary key, then duplicate event T.
    conn.execute_batch(&format!(
        "CREATE TABLE e2 AS SELECT * FROM events; DROP TABLE events; ALTER TABLE e2 RENAME TO events;
         INSERT INTO events SELECT * FROM events WHERE seq = {T};"
    ))
    .unwrap();
    assert_caught(&verify(&path, None), T + 1, &[FailureClass::SequenceGap]);
}

#[test]
fn truncated_tail_is_caught_with_a_trusted_checkpoint() {
    let (_d, path) = copy();
    let trusted = verify(&path, None).final_checkpoint.unwrap();
    let conn = Connection::open(&path).unwrap();
    let keep = 1_100i64;
    conn.execute("DELETE FROM events WHERE seq >= ?1", [keep])
        .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE size > ?1", [keep])
        .unwrap();
    assert!(
        verify(&path, None).is_intact(),
        "a clean cut is self-consistent"
    );
    let report = verify(&path, Some(&trusted));
    assert_caught(&report, keep as u64, &[FailureClass::Truncated]);
    let evidence = &report.failure.as_ref().unwrap().evidence;
    assert!(
        evidence.iter().any(|n| n == &trusted),
        "the trusted note is evidence"
    );
    // Cutting events but leaving checkpoints is caught without help.
    let (_d2, path2) = copy();
    Connection::open(&path2)
        .unwrap()
        .execute("DELETE FROM events WHERE seq >= ?1", [keep])
        .unwrap();
    assert_caught(
        &verify(&path2, None),
        keep as u64,
        &[FailureClass::CheckpointBeyondLog],
    );
}

#[test]
fn file_rolled_back_to_an_older_copy() {
    let trusted = verify(&base().ledger(), None).final_checkpoint.unwrap();
    let (_d, path) = copy();
    std::fs::copy(base().older(), &path).unwrap();
    assert!(verify(&path, None).is_intact());
    assert_caught(
        &verify(&path, Some(&trusted)),
        OLDER,
        &[FailureClass::Truncated],
    );
}

#[test]
fn forked_history_is_caught_with_a_trusted_checkpoint() {
    // Someone holding the key rewrites history from event T and re-signs it.
    let trusted = verify(&base().ledger(), None).final_checkpoint.unwrap();
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE seq >= ?1", [T as i64])
        .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE size > ?1", [T as i64])
        .unwrap();
    drop(conn);
    let ledger = Ledger::open(WriterOptions::new(&path, signer())).unwrap();
    for i in T..EVENTS + 5 {
        ledger.append_blocking(&[body(i + 1)]).unwrap();
    }
    ledger.close();
    assert!(
        verify(&path, None).is_intact(),
        "the fork is self-consistent"
    );
    let report = verify(&path, Some(&trusted));
    assert_caught(&report, EVENTS - 1, &[FailureClass::Forked]);
    assert_eq!(report.failure.unwrap().evidence.len(), 2);
}

#[test]
fn checkpoint_signature_replaced() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let size = T as i64 + 1;
    let note: String = conn
        .query_row(
            "SELECT note FROM checkpoints WHERE size = ?1",
            [size],
            |r| r.get(0),
        )
        .unwrap();
    let (text, _) = note.rsplit_once("\n\n").unwrap();
    // A signature line naming our key, with the signature of other text.
    let other = signer().sign("gatehouse.test/tamper\n1\nAAAA\n");
    let (_, sig) = other.rsplit_once("\n\n").unwrap();
    conn.execute(
        "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
        params![format!("{text}\n\n{sig}"), size],
    )
    .unwrap();
    assert_caught(&verify(&path, None), T, &[FailureClass::SignatureInvalid]);
}

#[test]
fn whole_log_resigned_with_another_key() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let forger = NoteSigner::from_seed("gatehouse.test/tamper", [99; 32]).unwrap();
    let notes: Vec<(i64, String)> = conn
        .prepare("SELECT size, note FROM checkpoints")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (size, note) in notes {
        let (text, _) = note.rsplit_once("\n\n").unwrap();
        conn.execute(
            "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
            params![forger.sign(&format!("{text}\n")), size],
        )
        .unwrap();
    }
    assert_caught(
        &verify(&path, None),
        0,
        &[FailureClass::SignatureInvalid, FailureClass::Unsigned],
    );
}

#[test]
fn timestamp_moved_backwards() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let prev = Event::from_bytes(&data(&conn, T - 1)).unwrap();
    let mut e = Event::from_bytes(&data(&conn, T)).unwrap();
    e.ts = prev.ts - 1;
    set_data(&conn, T, &e.to_bytes());
    conn.execute(
        "UPDATE events SET ts = ?1 WHERE seq = ?2",
        params![e.ts as i64, T as i64],
    )
    .unwrap();
    reseal(&conn);
    assert_caught(&verify(&path, None), T, &[FailureClass::TimestampBackwards]);
}

#[test]
fn non_canonical_re_encoding() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    let d = data(&conn, T);
    // The record starts a4 00 19 03 84 (seq 900 in two bytes); write it in four.
    assert_eq!(&d[..5], &[0xa4, 0x00, 0x19, 0x03, 0x84]);
    let mut longer = vec![0xa4, 0x00, 0x1a, 0x00, 0x00, 0x03, 0x84];
    longer.extend_from_slice(&d[5..]);
    set_data(&conn, T, &longer);
    reseal(&conn);
    assert_caught(&verify(&path, None), T, &[FailureClass::NonCanonical]);
}

#[test]
fn forged_proof_of_the_wrong_length() {
    for extra in [true, false] {
        let (_d, path) = copy();
        let conn = Connection::open(&path).unwrap();
        let size = T as i64 + 1;
        let mut proof: Vec<u8> = conn
            .query_row(
                "SELECT proof FROM checkpoints WHERE size = ?1",
                [size],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!proof.is_empty());
        if extra {
            proof.extend_from_slice(&[0u8; 32]);
        } else {
            proof.truncate(proof.len() - 32);
        }
        conn.execute(
            "UPDATE checkpoints SET proof = ?1 WHERE size = ?2",
            params![proof, size],
        )
        .unwrap();
        assert_caught(&verify(&path, None), T, &[FailureClass::ProofInvalid]);
    }
}

#[test]
fn index_columns_that_disagree_with_the_record() {
    let (_d, path) = copy();
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE events SET kind = 2 WHERE seq = ?1", [T as i64])
        .unwrap();
    assert_caught(&verify(&path, None), T, &[FailureClass::IndexMismatch]);
}
