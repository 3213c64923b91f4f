//! Issue 19's embedded control log: a ledger file several appenders share,
//! one append at a time, each deciding under the lock with the log as it
//! stands (compare-and-set), and followers reading what others appended.
//! Every appender here opens its own files, so their locks contend exactly
//! as separate processes' do (`flock` belongs to the open file).

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use gatehouse_ledger::event::{ApprovalDenied, ApprovalGranted, EventBody, OperatorAction};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::shared_log::{SharedAppendError, SharedLog};
use gatehouse_ledger::WriterOptions;
use gatehouse_verify::{verify_ledger, VerifierKey};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.test/control", [19; 32]).unwrap()
}

fn log(path: &Path) -> SharedLog {
    SharedLog::open(WriterOptions::new(path, signer())).unwrap()
}

fn verified(path: &Path) -> u64 {
    let key = VerifierKey::parse(&signer().verifier().to_string()).unwrap();
    let report = verify_ledger(path, &key, None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.unsigned_tail.is_none(), "every append is signed");
    report.events
}

fn step(who: usize, i: usize) -> EventBody {
    OperatorAction {
        operator: format!("gateway-{who}"),
        action: "control.test".into(),
        target: Some(format!("{i}")),
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

#[test]
fn concurrent_appenders_never_fork_the_log_and_each_sees_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.ledger");
    log(&path);
    let appenders = 4;
    let each = 15;
    let start = Arc::new(Barrier::new(appenders));
    let threads: Vec<_> = (0..appenders)
        .map(|who| {
            let path = path.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let log = log(&path);
                start.wait();
                let mut seen = 0u64;
                let mut mine = Vec::new();
                for i in 0..each {
                    let appended = log
                        .append_with(seen, |new| {
                            // What others appended since, in order and gapless.
                            for (k, e) in new.iter().enumerate() {
                                assert_eq!(e.seq, seen + k as u64);
                            }
                            Ok::<_, String>(vec![step(who, i)])
                        })
                        .unwrap();
                    let seq = appended.receipts[0].seq;
                    mine.push(seq);
                    seen = seq + 1;
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..(appenders * each) as u64).collect::<Vec<_>>());
    assert_eq!(verified(&path), (appenders * each) as u64);
}

/// A decision on request 1 unless one is already in the log.
fn decide(who: usize) -> impl FnOnce(&[gatehouse_ledger::Event]) -> Result<Vec<EventBody>, String> {
    move |log| {
        let decided = log.iter().any(|e| {
            matches!(&e.body, EventBody::ApprovalGranted(g) if g.approval == 1)
                || matches!(&e.body, EventBody::ApprovalDenied(d) if d.approval == 1)
        });
        if decided {
            return Err("request 1 is already decided".into());
        }
        Ok(vec![if who.is_multiple_of(2) {
            ApprovalGranted {
                approval: 1,
                operator: format!("approver-{who}"),
                grant_until: None,
                session: 1,
                identity: "agent".into(),
            }
            .into()
        } else {
            ApprovalDenied {
                approval: 1,
                operator: Some(format!("approver-{who}")),
                reason: "no".into(),
                session: 1,
                identity: "agent".into(),
            }
            .into()
        }])
    }
}

#[test]
fn approve_raced_against_deny_is_decided_exactly_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.ledger");
        log(&path);
        let racers = 6;
        let start = Arc::new(Barrier::new(racers));
        let outcomes: Vec<bool> = (0..racers)
            .map(|who| {
                let path = path.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let log = log(&path);
                    start.wait();
                    match log.append_with(0, decide(who)) {
                        Ok(a) => !a.receipts.is_empty(),
                        Err(SharedAppendError::Refused(_)) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            outcomes.iter().filter(|won| **won).count(),
            1,
            "round {round}: {outcomes:?}"
        );
        assert_eq!(verified(&path), 1);
    }
}

#[test]
fn a_follower_reads_each_new_event_once_and_refuses_an_altered_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.ledger");
    let writer = log(&path);
    let mut follower = log(&path).follow(0).unwrap();
    assert!(follower.poll().unwrap().is_empty());
    writer
        .append_with(0, |_| Ok::<_, String>(vec![step(1, 0), step(1, 1)]))
        .unwrap();
    let read = follower.poll().unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1]);
    assert!(follower.poll().unwrap().is_empty(), "nothing new");
    writer
        .append_with(2, |_| Ok::<_, String>(vec![step(2, 2)]))
        .unwrap();
    assert_eq!(follower.poll().unwrap()[0].seq, 2);
    assert_eq!(follower.position(), 3);
    // A refused decision appends nothing, and says why.
    let refused = writer.append_with(0, |_| Err::<Vec<EventBody>, _>("not now"));
    assert!(matches!(
        refused,
        Err(SharedAppendError::Refused("not now"))
    ));
    // Rows edited behind the writers' backs: neither followers nor
    // appenders act on them.
    {
        let conn = rusqlite_connection(&path);
        let data: Vec<u8> = conn
            .query_row("SELECT data FROM events WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        let at = data.windows(12).position(|w| w == b"control.test").unwrap();
        let mut edited = data.clone();
        edited[at..at + 12].copy_from_slice(b"control.tast");
        conn.execute("UPDATE events SET data = ?1 WHERE seq = 2", [edited])
            .unwrap();
    }
    // An appender deciding on the edited event is refused before it
    // decides; so is a follower reading it; the verifier names it.
    let refused = writer.append_with(0, |_| -> Result<Vec<EventBody>, String> {
        panic!("decided on an altered log")
    });
    assert!(
        matches!(refused, Err(SharedAppendError::Ledger(_))),
        "{refused:?}"
    );
    let mut late = log(&path).follow(0).unwrap();
    late.poll().unwrap_err();
    let key = VerifierKey::parse(&signer().verifier().to_string()).unwrap();
    assert!(!verify_ledger(&path, &key, None).unwrap().is_intact());
}

fn rusqlite_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn each_append_is_signed_in_its_own_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.ledger");
    let log = log(&path);
    let n = 50;
    let started = Instant::now();
    for i in 0..n {
        log.append_with(i, |_| Ok::<_, String>(vec![step(0, i as usize)]))
            .unwrap();
    }
    let per_append = started.elapsed() / n as u32;
    eprintln!("shared log: {per_append:?} per append (open, read, commit, sign, close)");
    assert_eq!(verified(&path), n);
    let checkpoints = gatehouse_ledger::LedgerReader::open(&path)
        .unwrap()
        .checkpoints()
        .unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
}
