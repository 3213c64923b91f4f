//! The writer and readers against real SQLite files.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_ledger::checkpoint::Checkpoint;
use gatehouse_ledger::event::{OperatorAction, QueryReceived, SessionOpened};
use gatehouse_ledger::merkle::{self, Frontier};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{AppendError, EventBody, Ledger, LedgerError, LedgerReader, WriterOptions};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.test/writer", [3; 32]).unwrap()
}

fn options(path: &std::path::Path) -> WriterOptions {
    let mut o = WriterOptions::new(path, signer());
    let clock = Arc::new(AtomicU64::new(1_000));
    o.clock = Arc::new(move || clock.fetch_add(10, Ordering::Relaxed));
    o
}

fn query(session: u64, identity: &str, n: u64) -> EventBody {
    QueryReceived {
        session,
        identity: identity.into(),
        query: n,
        sql: format!("SELECT {n}"),
        params: vec![],
        statement: None,
        portal: None,
        protocol: gatehouse_ledger::event::Protocol::Simple,
    }
    .into()
}

fn action(n: u64) -> EventBody {
    OperatorAction {
        operator: "ops".into(),
        action: format!("action {n}"),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_contiguous_sequence_numbers_under_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let r = ledger
                    .append(&query(t, &format!("agent-{}", t % 4), i))
                    .await
                    .unwrap();
                assert!(r.checkpoint > r.seq, "covered by its checkpoint");
                seqs.push(r.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..1600).collect::<Vec<_>>());

    let reader = LedgerReader::open(&path).unwrap();
    assert_eq!(reader.len().unwrap(), 1600);
    let checkpoints = reader.checkpoints().unwrap();
    assert_eq!(checkpoints.last().unwrap().size, 1600);
    // Recompute the tree and chain from the stored bytes and check every note.
    let verifier = signer().verifier();
    let mut frontier = Frontier::new();
    let mut chain = gatehouse_ledger::chain::GENESIS;
    let mut next = checkpoints.iter().peekable();
    let mut last_ts = 0;
    for stored in reader.events(0..u64::MAX) {
        let stored = stored.unwrap();
        assert!(stored.event.ts >= last_ts);
        last_ts = stored.event.ts;
        frontier.push(merkle::leaf_hash(&stored.bytes));
        chain = gatehouse_ledger::chain::link(&chain, &stored.bytes);
        if next.peek().map(|c| c.size) == Some(frontier.size()) {
            let c = next.next().unwrap();
            let cp = Checkpoint::parse(verifier.verify(&c.note).unwrap()).unwrap();
            assert_eq!((cp.root, cp.chain), (frontier.root(), chain));
        }
    }
    assert!(next.next().is_none());
    // Each session's events, via the index.
    let s7: Vec<_> = reader
        .events_by_session(7)
        .unwrap()
        .map(|e| e.unwrap().event.seq)
        .collect();
    let scanned: Vec<_> = reader
        .events(0..u64::MAX)
        .map(|e| e.unwrap())
        .filter(|e| e.event.body.session() == Some(7))
        .map(|e| e.event.seq)
        .collect();
    assert_eq!(
        s7, scanned,
        "the bucket index finds exactly the session's events"
    );
    assert_eq!(s7.len(), 50);
    let a3 = reader.events_by_identity("agent-3").unwrap().count();
    assert_eq!(a3, 8 * 50);
    ledger.close();
}

/// Callers commit on their own thread when the ledger is quiet and leave
/// a backlog to the writer thread: appends from runtime tasks, from plain
/// threads, and from callers that give up waiting all commit exactly once,
/// in one contiguous log, under both durabilities, and the ledger still
/// closes promptly.
#[test]
fn appends_from_tasks_threads_and_abandoned_callers_all_commit() {
    for durability in [
        gatehouse_ledger::Durability::Os,
        gatehouse_ledger::Durability::Fsync,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut o = options(&path);
        o.durability = durability;
        let ledger = Ledger::open(o).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let ledger = ledger.clone();
            tasks.push(runtime.spawn(async move {
                let mut abandoned = 0;
                for i in 0..40 {
                    let event = query(t, "agent", i);
                    let append = ledger.append(&event);
                    if i % 3 == 0 {
                        // Polled once, then dropped unless already done.
                        let mut append = std::pin::pin!(append);
                        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                        match append.as_mut().poll(&mut cx) {
                            std::task::Poll::Ready(r) => assert!(r.is_ok()),
                            std::task::Poll::Pending => abandoned += 1,
                        }
                    } else {
                        append.await.unwrap();
                    }
                }
                abandoned
            }));
        }
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        ledger.append_blocking(&[action(t * 100 + i)]).unwrap();
                    }
                })
            })
            .collect();
        let abandoned: u64 = runtime.block_on(async {
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            n
        });
        for t in threads {
            t.join().unwrap();
        }
        let started = std::time::Instant::now();
        ledger.close();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let reader = LedgerReader::open(&path).unwrap();
        assert_eq!(reader.len().unwrap(), 8 * 40 + 3 * 40, "{durability:?}");
        assert_eq!(reader.checkpoints().unwrap().last().unwrap().size, 440);
        let seqs: Vec<u64> = reader
            .events(0..u64::MAX)
            .map(|e| e.unwrap().event.seq)
            .collect();
        assert_eq!(seqs, (0..440).collect::<Vec<_>>());
        assert!(
            abandoned > 0,
            "no caller gave up waiting: the test checks too little"
        );
    }
}

/// A caller that queued on a quiet ledger holds the commit role: nothing
/// commits (its own events and others' wait) until it gives the role up,
/// and giving it up by dropping it, however the caller ends, commits both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_commit_turn_holds_every_commit_until_it_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    let (turn, mut mine) = ledger.queue_pending(vec![action(1).to_pending()]).unwrap();
    let turn = turn.expect("a quiet ledger gives the first caller the commit role");
    let other = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.append(&action(2)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!other.is_finished(), "another append waits for the role");
    assert!(
        futures_now(&mut mine).is_none(),
        "nothing committed while the role is held"
    );
    drop(turn);
    let receipts = mine.await.unwrap();
    assert_eq!(receipts[0].seq, 0);
    assert_eq!(other.await.unwrap().unwrap().seq, 1);
    ledger.close();
    assert_eq!(LedgerReader::open(&path).unwrap().len().unwrap(), 2);
}

/// Polls a future once.
fn futures_now<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn append_all_is_atomic_and_contiguous_and_reopen_continues_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    let r = ledger
        .append_blocking(&[action(0), action(1), action(2)])
        .unwrap();
    assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    ledger.close();

    let ledger = Ledger::open(options(&path)).unwrap();
    let r = ledger.append_blocking(&[action(3)]).unwrap();
    assert_eq!(r[0].seq, 3);
    assert_eq!(r[0].checkpoint, 4);
    ledger.close();
    let reader = LedgerReader::open(&path).unwrap();
    let sizes: Vec<u64> = reader
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, vec![3, 4]);
}

#[test]
fn a_failed_commit_fails_every_event_of_the_batch_and_the_writer_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    ledger.append_blocking(&[action(0)]).unwrap();
    // Make the database refuse operator actions, as a full disk would refuse any write.
    let saboteur = rusqlite::Connection::open(&path).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind = 19 \
             BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END;",
        )
        .unwrap();
    let session = SessionOpened {
        session: 1,
        identity: "a".into(),
        target: "db".into(),
        client_addr: "127.0.0.1:1".into(),
        application_name: None,
        credential: None,
        tls: false,
    };
    let err = ledger
        .append_blocking(&[session.clone().into(), action(1)])
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Commit(ref m) if m.contains("simulated")),
        "{err}"
    );
    // (Readers refuse the file while the trigger is in it: it is not part
    // of the format.)
    assert!(LedgerReader::open(&path).is_err());
    let stored: i64 = saboteur
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1, "nothing of the batch stored");
    saboteur.execute_batch("DROP TRIGGER refuse").unwrap();
    let r = ledger.append_blocking(&[session.into()]).unwrap();
    assert_eq!(
        r[0].seq, 1,
        "sequence numbers stay contiguous after the failure"
    );
    ledger.close();
    // The failed batch left no trace that breaks the log.
    let key = gatehouse_verify::VerifierKey::parse(&signer().verifier().to_string()).unwrap();
    let report = gatehouse_verify::verify_ledger(&path, &key, None).unwrap();
    assert!(report.is_intact(), "{:?}", report.failure);
}

/// Issue 14, finding 3: the ledger removed (or replaced) under a running
/// writer. SQLite keeps writing to the open, nameless file; the writer must
/// refuse every append instead of acknowledging events that will be lost,
/// and take appends again once the file is back at its path.
#[test]
fn a_removed_or_replaced_ledger_file_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    ledger.append_blocking(&[action(0)]).unwrap();
    let aside = dir.path().join("aside.db");
    std::fs::rename(&path, &aside).unwrap();
    let err = ledger.append_blocking(&[action(1)]).unwrap_err();
    assert!(err.to_string().contains("moved away"), "{err}");
    std::fs::rename(&aside, &path).unwrap();
    ledger.append_blocking(&[action(1)]).unwrap();

    std::fs::copy(&path, &aside).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let err = ledger.append_blocking(&[action(2)]).unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");

    std::fs::remove_file(&path).unwrap();
    let err = ledger.append_blocking(&[action(2)]).unwrap_err();
    assert!(
        !path.exists(),
        "nothing recreated an empty ledger at its path"
    );
    assert!(err.to_string().contains("removed"), "{err}");
    ledger.close();
}

#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let first = Ledger::open(options(&path)).unwrap();
    assert!(matches!(
        Ledger::open(options(&path)),
        Err(LedgerError::Busy(_))
    ));
    first.close();
    Ledger::open(options(&path)).unwrap().close();
}

#[test]
fn reopening_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    ledger.append_blocking(&[action(0)]).unwrap();
    ledger.close();
    let mut o = options(&path);
    o.signer = NoteSigner::from_seed("gatehouse.test/writer", [4; 32]).unwrap();
    assert!(matches!(Ledger::open(o), Err(LedgerError::KeyMismatch(_))));
    let mut o = options(&path);
    o.signer = NoteSigner::from_seed("other-origin", [3; 32]).unwrap();
    assert!(matches!(Ledger::open(o), Err(LedgerError::KeyMismatch(_))));
}

#[test]
fn time_queries_use_monotonic_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    let mut ts = Vec::new();
    for i in 0..20 {
        ts.push(ledger.append_blocking(&[action(i)]).unwrap()[0].ts);
    }
    ledger.close();
    let reader = LedgerReader::open(&path).unwrap();
    assert_eq!(reader.first_at_or_after(0).unwrap(), 0);
    assert_eq!(reader.first_at_or_after(ts[5]).unwrap(), 5);
    assert_eq!(reader.first_at_or_after(ts[19] + 1).unwrap(), 20);
    let got: Vec<u64> = reader
        .events_between(ts[3], ts[8])
        .unwrap()
        .map(|e| e.unwrap().event.seq)
        .collect();
    assert_eq!(got, vec![3, 4, 5, 6, 7]);
    assert!(LedgerReader::open(dir.path().join("missing.db")).is_err());
}

fn snapshot(covers: u64) -> EventBody {
    gatehouse_ledger::event::Snapshot {
        covers,
        state: gatehouse_ledger::cbor::Bytes(vec![covers as u8]),
        state_hash: gatehouse_ledger::cbor::Bytes(vec![0; 32]),
    }
    .into()
}

#[test]
fn snapshots_are_found_by_the_events_they_cover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    ledger
        .append_blocking(&[action(0), action(1), action(2)])
        .unwrap();
    // Written after more events committed: covers 2, lands at seq 3.
    ledger.append_blocking(&[snapshot(2)]).unwrap();
    ledger.append_blocking(&[action(4), action(5)]).unwrap();
    ledger.append_blocking(&[snapshot(6)]).unwrap();
    // A snapshot claiming events after itself is recorded, not indexed.
    ledger.append_blocking(&[snapshot(100)]).unwrap();
    ledger.close();
    let reader = LedgerReader::open(&path).unwrap();
    assert_eq!(reader.snapshot_index().unwrap(), vec![(2, 3), (6, 6)]);
    assert!(reader.latest_snapshot(1).unwrap().is_none());
    let s = reader.latest_snapshot(5).unwrap().unwrap();
    assert_eq!((s.seq, s.snapshot.covers), (3, 2));
    let s = reader.latest_snapshot(u64::MAX).unwrap().unwrap();
    assert_eq!((s.seq, s.snapshot.covers), (6, 6));
    assert_eq!(s.ts, reader.get(6).unwrap().unwrap().event.ts);
}

#[test]
fn a_snapshot_index_row_that_lies_is_damage_not_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(options(&path)).unwrap();
    ledger.append_blocking(&[action(0), snapshot(1)]).unwrap();
    ledger.close();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE snapshots SET seq = 0", []).unwrap();
    drop(conn);
    let reader = LedgerReader::open(&path).unwrap();
    let err = reader.latest_snapshot(10).unwrap_err();
    assert!(matches!(err, LedgerError::Damaged(_)), "{err}");
    // A ledger without the index (written before it existed) has no snapshots to find.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("DROP TABLE snapshots", []).unwrap();
    drop(conn);
    let reader = LedgerReader::open(&path).unwrap();
    assert!(reader.latest_snapshot(10).unwrap().is_none());
    assert!(reader.snapshot_index().unwrap().is_empty());
}
