//! Evidence bundles end to end: the real writer fills a ledger, `export`
//! builds bundles from it, and the independent `gatehouse-verify` checks
//! them. Every way of tampering with a bundle (altered, added, removed or
//! reordered events, bad proofs, the wrong key, another log's checkpoint, a
//! fork from the auditor's checkpoint, any single changed byte) must fail,
//! and be attributed to the event concerned where there is one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use gatehouse_ledger::bundle::{self, Bundle, BundleError, BundleEvent, ExportRequest, Selection};
use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::*;
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{EventBody, Ledger, LedgerReader, WriterOptions};
use gatehouse_verify::{
    verify_bundle_bytes, BundleReport, Completeness, FailureClass, VerifierKey,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const ORIGIN: &str = "gatehouse.test/bundle";
const EVENTS: u64 = 400;
/// The fork ledger shares this many events (a checkpoint boundary) with
/// the main one, then differs.
const FORK_AT: u64 = 200;
const T0: u64 = 1_767_225_600_000_000_000;
const MS: u64 = 1_000_000;

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [0x42; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

fn identity(session: u64) -> String {
    format!("agent-{}", session % 3)
}

/// Event `i`: statements of sessions 1 to 6, approvals (whose session is
/// body key 3), failed logins and blocks (identity only) and operator
/// actions (neither).
fn body(i: u64, fork: bool) -> EventBody {
    let session = 1 + i % 6;
    match i % 10 {
        0 => OperatorAction {
            operator: "ops".into(),
            action: if fork { "forged" } else { "rotate" }.into(),
            target: None,
            outcome: "ok".into(),
            detail: None,
        }
        .into(),
        1 => AuthenticationFailed {
            identity: identity(i),
            client_addr: "127.0.0.1:5000".into(),
            target: Some("shop".into()),
            reason: "bad password".into(),
        }
        .into(),
        2 => ApprovalGranted {
            approval: i,
            operator: "carol".into(),
            grant_until: None,
            session,
            identity: identity(session),
        }
        .into(),
        3 => IdentityBlocked {
            identity: identity(i),
            operator: "bob".into(),
            reason: "test".into(),
            trigger: None,
        }
        .into(),
        _ => QueryReceived {
            session,
            identity: identity(session),
            query: i,
            sql: format!("SELECT * FROM orders WHERE id = {i}"),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
        }
        .into(),
    }
}

/// Writes `events` events in batches of 1, 3, 7, 2, 5, ... (so there are
/// many checkpoints, one of them at [`FORK_AT`]), on a clock advancing 1 ms
/// per event. A fork ledger has other events from [`FORK_AT`] on.
fn build(path: &Path, events: u64, fork: bool) {
    let mut options = WriterOptions::new(path, signer());
    let clock = Arc::new(AtomicU64::new(T0));
    options.clock = Arc::new(move || clock.fetch_add(MS, Ordering::Relaxed));
    let ledger = Ledger::open(options).unwrap();
    let sizes = [1u64, 3, 7, 2, 5, 6, 1, 7, 4, 4];
    let mut i = 0;
    let mut batch = 0;
    while i < events {
        let end = (i + sizes[batch % sizes.len()]).min(events);
        let bodies: Vec<EventBody> = (i..end).map(|j| body(j, fork && j >= FORK_AT)).collect();
        ledger.append_blocking(&bodies).unwrap();
        i = end;
        batch += 1;
    }
    ledger.close();
}

/// The ledgers of one test, removed with it.
struct Fixture {
    dir: tempfile::TempDir,
    /// Each event's timestamp. The writer stamps a batch once, so events
    /// of one batch share it.
    ts: Vec<u64>,
    fork: OnceLock<PathBuf>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ledger");
    build(&path, EVENTS, false);
    let reader = LedgerReader::open(&path).unwrap();
    assert!(
        reader
            .checkpoints()
            .unwrap()
            .iter()
            .any(|c| c.size == FORK_AT),
        "the batch sizes put a checkpoint at FORK_AT"
    );
    let ts = reader
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event.ts)
        .collect();
    Fixture {
        dir,
        ts,
        fork: OnceLock::new(),
    }
}

impl Fixture {
    fn ledger(&self) -> PathBuf {
        self.dir.path().join("main.ledger")
    }

    /// A ledger sharing the first [`FORK_AT`] events, then differing.
    fn fork(&self) -> PathBuf {
        self.fork
            .get_or_init(|| {
                let path = self.dir.path().join("fork.ledger");
                build(&path, EVENTS, true);
                path
            })
            .clone()
    }

    fn export(&self, request: &ExportRequest) -> Bundle {
        export_from(&self.ledger(), request).unwrap()
    }

    /// The events of the main ledger a predicate selects, found by decoding
    /// every event (not through the reader's indexes).
    fn expected(&self, keep: impl Fn(&Event) -> bool) -> Vec<u64> {
        let reader = LedgerReader::open(self.ledger()).unwrap();
        reader
            .events(0..u64::MAX)
            .map(|e| e.unwrap().event)
            .filter(|e| keep(e))
            .map(|e| e.seq)
            .collect()
    }

    /// Event `seq`'s timestamp; past the log, 1 ms per event after the last.
    fn ts(&self, seq: u64) -> u64 {
        match self.ts.get(seq as usize) {
            Some(t) => *t,
            None => self.ts[self.ts.len() - 1] + (seq - self.ts.len() as u64 + 1) * MS,
        }
    }

    /// The events with `from <= ts < to`.
    fn in_range(&self, from: u64, to: u64) -> Vec<u64> {
        (0..EVENTS)
            .filter(|s| (from..to).contains(&self.ts(*s)))
            .collect()
    }
}

fn request(selection: Selection) -> ExportRequest {
    ExportRequest {
        selection,
        consistent_with: vec![],
        prove_complete: false,
    }
}

fn export_from(path: &Path, request: &ExportRequest) -> Result<Bundle, BundleError> {
    bundle::export(&LedgerReader::open(path).unwrap(), request)
}

fn verify(bundle: &Bundle) -> BundleReport {
    verify_bytes(&bundle.to_bytes(), None)
}

fn verify_bytes(bytes: &[u8], trusted: Option<&str>) -> BundleReport {
    verify_bundle_bytes(bytes, &key(), trusted, None).unwrap()
}

fn intact(report: &BundleReport) {
    assert!(report.is_intact(), "{}", report.to_text());
}

/// The report's failure as (seq, class).
fn failure(report: &BundleReport) -> (Option<u64>, FailureClass) {
    let f = report
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure:\n{}", report.to_text()));
    (f.seq, f.class)
}

fn checkpoint_note(path: &Path, size: u64) -> String {
    LedgerReader::open(path)
        .unwrap()
        .checkpoints()
        .unwrap()
        .into_iter()
        .find(|c| c.size == size)
        .unwrap()
        .note
}

#[test]
fn a_session_bundle_holds_exactly_that_sessions_events() {
    let f = fixture();
    let b = f.export(&request(Selection::Session(3)));
    let report = verify(&b);
    intact(&report);
    let want = f.expected(|e| e.body.session() == Some(3));
    assert!(want.len() > 20);
    assert_eq!(report.seqs, want);
    assert_eq!(report.events, want.len() as u64);
    assert_eq!(report.checkpoint_size, Some(EVENTS));
    assert_eq!(report.completeness, Some(Completeness::NotProvable));
    assert!(b.before.is_none() && b.after.is_none() && b.consistency.is_empty());
    // Approvals carry their session in body key 3, not 0.
    assert!(b.events.iter().any(|e| {
        Event::from_bytes(&e.record.0).unwrap().body.kind() == EventKind::ApprovalGranted
    }));
    assert_eq!(report.digest, b.digest());
    assert_eq!(b.key, signer().verifier().label());
    assert_eq!(Bundle::from_bytes(&b.to_bytes()).unwrap(), b);
    // The same request gives the same bytes.
    assert_eq!(
        f.export(&request(Selection::Session(3))).to_bytes(),
        b.to_bytes()
    );
}

#[test]
fn an_identity_bundle_holds_exactly_that_identitys_events() {
    let f = fixture();
    let b = f.export(&request(Selection::Identity("agent-1".into())));
    let report = verify(&b);
    intact(&report);
    let want = f.expected(|e| e.body.identity() == Some("agent-1"));
    assert_eq!(report.seqs, want);
    let kinds: std::collections::HashSet<_> = b
        .events
        .iter()
        .map(|e| Event::from_bytes(&e.record.0).unwrap().body.kind())
        .collect();
    for kind in [
        EventKind::QueryReceived,
        EventKind::AuthenticationFailed,
        EventKind::IdentityBlocked,
        EventKind::ApprovalGranted,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing");
    }
}

#[test]
fn time_range_bundles_are_contiguous_and_can_be_proven_complete() {
    let f = fixture();
    let range = Selection::TimeRange {
        from: f.ts(100),
        to: f.ts(150),
    };
    let want = f.in_range(f.ts(100), f.ts(150));
    assert!(want.contains(&100) && !want.contains(&150) && want.len() > 30);
    let plain = f.export(&request(range.clone()));
    let report = verify(&plain);
    intact(&report);
    assert_eq!(report.seqs, want);
    assert_eq!(report.completeness, Some(Completeness::Contiguous));

    let mut r = request(range);
    r.prove_complete = true;
    let complete = f.export(&r);
    let (first, last) = (want[0], want[want.len() - 1]);
    assert_eq!(complete.before.as_ref().map(|e| e.seq), Some(first - 1));
    assert_eq!(complete.after.as_ref().map(|e| e.seq), Some(last + 1));
    let report = verify(&complete);
    intact(&report);
    assert_eq!(report.seqs, want);
    assert_eq!(report.completeness, Some(Completeness::Proven));

    // A range starting before the log needs no event before it; one running
    // past the checkpoint needs none after it.
    let mut r = request(Selection::TimeRange {
        from: 0,
        to: f.ts(5) + 1,
    });
    r.prove_complete = true;
    let head = f.export(&r);
    assert!(head.before.is_none());
    let report = verify(&head);
    intact(&report);
    assert_eq!(report.seqs, f.in_range(0, f.ts(5) + 1));
    assert_eq!(report.completeness, Some(Completeness::Proven));
    let mut r = request(Selection::TimeRange {
        from: f.ts(EVENTS - 3),
        to: u64::MAX,
    });
    r.prove_complete = true;
    let tail = f.export(&r);
    assert!(tail.after.is_none());
    let report = verify(&tail);
    intact(&report);
    assert_eq!(report.completeness, Some(Completeness::Proven));

    // A range between two events holds none; only its boundary events can
    // show that.
    let g = (0..EVENTS).find(|s| f.ts(*s) < f.ts(s + 1)).unwrap();
    let gap = Selection::TimeRange {
        from: f.ts(g) + 1,
        to: f.ts(g + 1),
    };
    assert!(matches!(
        export_from(&f.ledger(), &request(gap.clone())),
        Err(BundleError::NothingSelected(_))
    ));
    let mut r = request(gap);
    r.prove_complete = true;
    let empty = f.export(&r);
    assert!(empty.events.is_empty());
    assert_eq!(empty.before.as_ref().map(|e| e.seq), Some(g));
    assert_eq!(empty.after.as_ref().map(|e| e.seq), Some(g + 1));
    let report = verify(&empty);
    intact(&report);
    assert_eq!(report.events, 0);
    assert_eq!(report.completeness, Some(Completeness::Proven));
}

#[test]
fn export_refuses_what_cannot_be_proven() {
    let f = fixture();
    let path = f.ledger();
    let err = |r: ExportRequest| export_from(&path, &r).unwrap_err();
    assert!(matches!(
        err(request(Selection::Session(99))),
        BundleError::NothingSelected(_)
    ));
    assert!(matches!(
        err(request(Selection::Identity("nobody".into()))),
        BundleError::NothingSelected(_)
    ));
    assert!(matches!(
        err(request(Selection::TimeRange { from: 5, to: 5 })),
        BundleError::BadRequest(_)
    ));
    let mut r = request(Selection::Session(1));
    r.prove_complete = true;
    assert!(matches!(err(r), BundleError::BadRequest(_)));
    let mut r = request(Selection::Session(1));
    r.consistent_with = vec!["not a note".into()];
    assert!(matches!(err(r), BundleError::EarlierCheckpoint(_)));
    // A ledger without events has no checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.ledger");
    Ledger::open(WriterOptions::new(&empty, signer()))
        .unwrap()
        .close();
    assert!(matches!(
        export_from(&empty, &request(Selection::Session(1))),
        Err(BundleError::NoCheckpoint)
    ));
}

#[test]
fn an_altered_event_is_rejected_naming_it() {
    let f = fixture();
    let b = f.export(&request(Selection::Session(2)));
    let target = b.events[5].seq;
    // Change one character of the SQL text: still canonical CBOR, so only
    // the inclusion proof can tell.
    let mut altered = b.clone();
    let record = &mut altered.events[5].record.0;
    let at = record.iter().rposition(|&c| c.is_ascii_digit()).unwrap();
    record[at] = if record[at] == b'9' {
        b'8'
    } else {
        record[at] + 1
    };
    let report = verify(&altered);
    assert_eq!(
        failure(&report),
        (Some(target), FailureClass::InclusionInvalid)
    );
    assert!(
        report
            .failure
            .unwrap()
            .message
            .contains(&format!("event {target}")),
        "the message names the event"
    );
    // Re-encoding the record (an extra byte) breaks canonical form first.
    let mut padded = b.clone();
    padded.events[5].record.0.push(0);
    assert_eq!(
        failure(&verify(&padded)),
        (Some(target), FailureClass::NonCanonical)
    );
    // Claiming another position for an authentic record.
    let mut moved = b.clone();
    moved.events[5].seq += 1;
    assert_eq!(
        failure(&verify(&moved)),
        (Some(target + 1), FailureClass::SequenceMismatch)
    );
}

#[test]
fn added_events_are_rejected() {
    let f = fixture();
    let b = f.export(&request(Selection::Session(4)));
    // A forged event of the session at a position it does not hold, with a
    // real proof borrowed from the event after it.
    let after = b.events[3].seq;
    let free = (after + 1..EVENTS)
        .find(|s| !b.events.iter().any(|e| e.seq == *s))
        .unwrap();
    let forged = Event {
        seq: free,
        ts: f.ts(free),
        body: QueryReceived {
            session: 4,
            identity: identity(4),
            query: free,
            sql: "DROP TABLE orders".into(),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
        }
        .into(),
    };
    let mut added = b.clone();
    let index = added.events.iter().position(|e| e.seq > free).unwrap();
    added.events.insert(
        index,
        BundleEvent {
            seq: free,
            record: Bytes(forged.to_bytes()),
            proof: added.events[index].proof.clone(),
        },
    );
    assert_eq!(
        failure(&verify(&added)),
        (Some(free), FailureClass::InclusionInvalid)
    );
    // A genuine event of another session, with its genuine proof.
    let other = f.export(&request(Selection::Session(5)));
    let stranger = other.events[2].clone();
    let mut added = b.clone();
    let index = added
        .events
        .iter()
        .position(|e| e.seq > stranger.seq)
        .unwrap_or(added.events.len());
    added.events.insert(index, stranger.clone());
    let report = verify(&added);
    assert_eq!(
        failure(&report),
        (Some(stranger.seq), FailureClass::NotSelected)
    );
    assert!(report.failure.unwrap().message.contains("session 5"));
    // The same event twice.
    let mut twice = b.clone();
    twice.events.insert(3, b.events[3].clone());
    assert_eq!(
        failure(&verify(&twice)),
        (Some(b.events[3].seq), FailureClass::SequenceGap)
    );
}

#[test]
fn removed_and_reordered_events() {
    let f = fixture();
    // Time ranges are consecutive events: a hole is a named gap.
    let range = Selection::TimeRange {
        from: f.ts(100),
        to: f.ts(150),
    };
    let want = f.in_range(f.ts(100), f.ts(150));
    let (first, last) = (want[0], want[want.len() - 1]);
    let mut holed = f.export(&request(range.clone()));
    holed.events.remove(10);
    assert_eq!(
        failure(&verify(&holed)),
        (Some(first + 10), FailureClass::SequenceGap)
    );
    // With boundary events, the ends cannot be trimmed either.
    let mut r = request(range);
    r.prove_complete = true;
    let complete = f.export(&r);
    let mut trimmed = complete.clone();
    trimmed.events.pop();
    assert_eq!(
        failure(&verify(&trimmed)),
        (Some(last + 1), FailureClass::BoundaryInvalid)
    );
    let mut trimmed = complete.clone();
    trimmed.events.remove(0);
    assert_eq!(
        failure(&verify(&trimmed)),
        (Some(first - 1), FailureClass::BoundaryInvalid)
    );
    // Replacing a boundary event with an authentic one inside the range.
    let mut inside = complete.clone();
    let first = inside.events.remove(0);
    inside.before = Some(first);
    assert_eq!(
        failure(&verify(&inside)),
        (Some(want[0]), FailureClass::BoundaryInvalid)
    );

    // Swapping two events.
    let b = f.export(&request(Selection::Session(2)));
    let mut swapped = b.clone();
    swapped.events.swap(3, 4);
    assert_eq!(
        failure(&verify(&swapped)),
        (Some(b.events[3].seq), FailureClass::SequenceGap)
    );

    // A session bundle cannot prove that it holds every event of the
    // session (docs/ledger-format.md, section 8.4): a copy with one removed
    // still verifies, but not against the digest recorded at export.
    let mut fewer = b.clone();
    fewer.events.remove(3);
    let bytes = fewer.to_bytes();
    let report = verify_bytes(&bytes, None);
    intact(&report);
    assert_eq!(report.events, b.events.len() as u64 - 1);
    let report = verify_bundle_bytes(&bytes, &key(), None, Some(&b.digest())).unwrap();
    assert_eq!(failure(&report), (None, FailureClass::DigestMismatch));
    let report = verify_bundle_bytes(
        &b.to_bytes(),
        &key(),
        None,
        Some(&b.digest().to_uppercase()[7..]),
    )
    .unwrap();
    intact(&report);
}

#[test]
fn bad_proofs_are_rejected() {
    let f = fixture();
    let b = f.export(&request(Selection::Identity("agent-2".into())));
    let seq = b.events[7].seq;
    for tamper in [
        |p: &mut Vec<u8>| p[40] ^= 0x20,
        |p: &mut Vec<u8>| p.truncate(p.len() - 32),
        |p: &mut Vec<u8>| p.extend_from_slice(&[7; 32]),
        |p: &mut Vec<u8>| p.truncate(p.len() - 1),
        |p: &mut Vec<u8>| p.rotate_left(32),
    ] {
        let mut bad = b.clone();
        tamper(&mut bad.events[7].proof.0);
        assert_eq!(
            failure(&verify(&bad)),
            (Some(seq), FailureClass::InclusionInvalid)
        );
    }
}

#[test]
fn the_wrong_key_or_another_logs_checkpoint_is_rejected() {
    let f = fixture();
    let b = f.export(&request(Selection::Session(1)));
    let bytes = b.to_bytes();
    // Another key: the bundle names the key it needs.
    let other = NoteSigner::from_seed(ORIGIN, [0x43; 32]).unwrap();
    let other_key = VerifierKey::parse(&other.verifier().to_string()).unwrap();
    let report = verify_bundle_bytes(&bytes, &other_key, None, None).unwrap();
    assert_eq!(failure(&report), (None, FailureClass::KeyMismatch));
    assert!(report.failure.unwrap().message.contains(&b.key));
    // Relabelled for that key, the checkpoint's signature does not verify.
    let mut relabelled = b.clone();
    relabelled.key = other.verifier().label();
    let report = verify_bundle_bytes(&relabelled.to_bytes(), &other_key, None, None).unwrap();
    assert_eq!(failure(&report), (None, FailureClass::SignatureInvalid));
    // A checkpoint of another log signed by the same key: the proofs do
    // not lead to its root, which the first event shows.
    let mut swapped = b.clone();
    swapped.checkpoint = checkpoint_note(&f.fork(), EVENTS);
    assert_ne!(swapped.checkpoint, b.checkpoint);
    assert_eq!(
        failure(&verify(&swapped)),
        (Some(b.events[0].seq), FailureClass::InclusionInvalid)
    );
    // A checkpoint of another log under another key.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.ledger");
    let mut options = WriterOptions::new(&foreign, other);
    options.clock = Arc::new(|| T0);
    let writer = Ledger::open(options).unwrap();
    writer.append_blocking(&[body(4, false)]).unwrap();
    writer.close();
    let mut foreign_note = b.clone();
    foreign_note.checkpoint = checkpoint_note(&foreign, 1);
    assert_eq!(
        failure(&verify(&foreign_note)),
        (None, FailureClass::SignatureInvalid)
    );
    // An edited checkpoint note.
    let mut edited = b.clone();
    edited.checkpoint =
        edited
            .checkpoint
            .replacen(&format!("\n{EVENTS}\n"), &format!("\n{}\n", EVENTS + 1), 1);
    assert_eq!(
        failure(&verify(&edited)),
        (None, FailureClass::SignatureInvalid)
    );
}

#[test]
fn consistency_with_an_auditors_checkpoint() {
    let f = fixture();
    let path = f.ledger();
    let kept = checkpoint_note(&path, FORK_AT);
    let mut r = request(Selection::Session(6));
    r.consistent_with = vec![kept.clone(), checkpoint_note(&path, EVENTS)];
    let b = f.export(&r);
    assert_eq!(b.consistency_sizes(), vec![FORK_AT, EVENTS]);
    let report = verify_bytes(&b.to_bytes(), Some(&kept));
    intact(&report);
    assert_eq!(report.trusted_checkpoint, Some(FORK_AT));
    assert_eq!(report.consistent_with, vec![FORK_AT, EVENTS]);
    // The latest checkpoint itself needs no proof.
    let plain = f.export(&request(Selection::Session(6)));
    intact(&verify_bytes(
        &plain.to_bytes(),
        Some(&checkpoint_note(&path, EVENTS)),
    ));
    // Without a proof from its size, consistency is not shown.
    let report = verify_bytes(&plain.to_bytes(), Some(&kept));
    assert_eq!(failure(&report), (None, FailureClass::ConsistencyUnproven));
    // A bundle older than the auditor's checkpoint cannot show it either.
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("older.ledger");
    build(&older, FORK_AT, false);
    let old = export_from(&older, &request(Selection::Session(6))).unwrap();
    let report = verify_bytes(&old.to_bytes(), Some(&checkpoint_note(&path, EVENTS)));
    assert_eq!(failure(&report), (None, FailureClass::ConsistencyUnproven));
    // Every consistency proof a bundle carries is checked, trusted
    // checkpoint or not.
    let mut bad = b.clone();
    bad.consistency[0].proof.0[0] ^= 1;
    assert_eq!(failure(&verify(&bad)), (None, FailureClass::ProofInvalid));
    let mut unordered = b.clone();
    unordered.consistency.reverse();
    assert_eq!(
        failure(&verify(&unordered)),
        (None, FailureClass::BundleMalformed)
    );
}

#[test]
fn a_fork_from_the_auditors_checkpoint_is_caught_with_evidence() {
    let f = fixture();

    // The auditor kept the main log's checkpoint at size EVENTS; the fork
    // shares only the first FORK_AT events.
    let kept = checkpoint_note(&f.ledger(), EVENTS);
    // The forked ledger's exporter refuses to prove consistency with it.
    let mut r = request(Selection::Session(6));
    r.consistent_with = vec![kept.clone()];
    let err = export_from(&f.fork(), &r).unwrap_err();
    assert!(
        matches!(&err, BundleError::EarlierCheckpoint(m) if m.contains("forked")),
        "{err}"
    );
    // A bundle of the fork is caught against the auditor's checkpoint: its
    // checkpoint has the same size and another root.
    let forked = export_from(&f.fork(), &request(Selection::Session(6))).unwrap();
    intact(&verify(&forked));
    let report = verify_bytes(&forked.to_bytes(), Some(&kept));
    assert_eq!(failure(&report), (None, FailureClass::Forked));
    let evidence = &report.failure.as_ref().unwrap().evidence;
    assert_eq!(evidence, &vec![kept.clone(), forked.checkpoint.clone()]);
    // An earlier checkpoint of the auditor's before the fork point is
    // consistent with the fork: the shared prefix is the same.
    let shared = checkpoint_note(&f.ledger(), FORK_AT);
    assert_eq!(shared, checkpoint_note(&f.fork(), FORK_AT));
    let mut r = request(Selection::Session(6));
    r.consistent_with = vec![shared.clone()];
    let b = export_from(&f.fork(), &r).unwrap();
    intact(&verify_bytes(&b.to_bytes(), Some(&shared)));
    // A fork at a size the bundle proves from: the bundle's own earlier
    // checkpoint conflicts with the auditor's.
    let older = tempfile::tempdir().unwrap();
    let main_250 = older.path().join("main.ledger");
    let fork_250 = older.path().join("fork.ledger");
    build(&main_250, 250, false);
    build(&fork_250, 250, true);
    let kept = checkpoint_note(&main_250, 250);
    let mut r = request(Selection::Session(6));
    r.consistent_with = vec![checkpoint_note(&fork_250, 250)];
    let b = export_from(&f.fork(), &r).unwrap();
    let report = verify_bytes(&b.to_bytes(), Some(&kept));
    assert_eq!(failure(&report), (None, FailureClass::Forked));
    let evidence = &report.failure.unwrap().evidence;
    assert_eq!(
        evidence.len(),
        3,
        "trusted note, conflicting note, bundle checkpoint"
    );
    assert_eq!(evidence[0], kept);
}

/// Single-byte changes anywhere in a bundle. `exempt` says whether a
/// changed bundle that still verifies is acceptable.
fn every_byte_flip_is_rejected(b: &Bundle, exempt: impl Fn(&Bundle, &Bundle) -> bool) -> usize {
    let original = b.to_bytes();
    let key = key();
    let mut exempted = 0;
    for at in 0..original.len() {
        for mask in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= mask;
            let report = verify_bundle_bytes(&bytes, &key, None, None).unwrap();
            if report.is_intact() {
                let changed = Bundle::from_bytes(&bytes).expect("it verified, so it decodes");
                assert!(
                    exempt(b, &changed),
                    "flipping {mask:#04x} at byte {at} of {} left the bundle intact",
                    original.len()
                );
                exempted += 1;
            }
        }
    }
    exempted
}

#[test]
fn every_single_byte_change_of_a_bundle_is_rejected() {
    let f = fixture();
    // A small session with a consistency proof, so that every part of the
    // format is covered.
    let path = f.ledger();
    let mut r = request(Selection::Session(6));
    r.consistent_with = vec![checkpoint_note(&path, FORK_AT)];
    let mut b = f.export(&r);
    b.events.truncate(4);
    intact(&verify(&b));
    assert_eq!(every_byte_flip_is_rejected(&b, |_, _| false), 0);
}

#[test]
fn byte_changes_of_a_time_range_bundle_only_pass_if_the_range_claim_stays_true() {
    let f = fixture();
    let mut r = request(Selection::TimeRange {
        from: f.ts(20) - MS / 2,
        to: f.ts(23) + MS / 2,
    });
    r.prove_complete = true;
    let b = f.export(&r);
    intact(&verify(&b));
    // Only `from` and `to` may change, and only within the gaps between
    // the events either side, where the bundle's claim is just as true.
    let exempted = every_byte_flip_is_rejected(&b, |original, changed| {
        let mut same = changed.clone();
        same.selection = original.selection.clone();
        same == *original
    });
    assert!(exempted > 0, "low bits of from/to stay inside the gaps");
}

/// The exporter takes subtree hashes from the writer's `subtrees` table;
/// one that lies costs a pass over the log, never a wrong bundle.
#[test]
fn a_lying_stored_subtree_costs_a_pass_not_a_bundle() {
    let f = fixture();
    let copy = f.dir.path().join("lying.ledger");
    std::fs::copy(f.ledger(), &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let changed = conn
        .execute(
            "UPDATE subtrees SET hash = zeroblob(32) WHERE level = 8 AND idx = 0",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1, "events 0..256 are a stored subtree");
    drop(conn);
    let (from, to) = (f.ts(300), f.ts(330));
    let mut r = request(Selection::TimeRange { from, to });
    r.prove_complete = true;
    r.consistent_with = vec![checkpoint_note(&f.ledger(), FORK_AT)];
    let honest = f.export(&r);
    let despite = export_from(&copy, &r).unwrap();
    assert_eq!(despite.to_bytes(), honest.to_bytes());
    let report = verify(&despite);
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.seqs, f.in_range(from, to));
}

/// The time column is a hint: an edited one neither hides events from a
/// time range nor adds any, whether completeness is asked for or not.
#[test]
fn an_edited_time_column_hides_nothing_from_a_time_range() {
    let f = fixture();
    let copy = f.dir.path().join("times.ledger");
    std::fs::copy(f.ledger(), &copy).unwrap();
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute_batch(
            "UPDATE events SET ts = 0 WHERE seq BETWEEN 300 AND 329; \
             UPDATE events SET ts = ts + 1000000000 WHERE seq BETWEEN 100 AND 110",
        )
        .unwrap();
    for prove in [false, true] {
        for (a, b) in [(300, 330), (100, 111), (290, 340)] {
            let (from, to) = (f.ts(a), f.ts(b));
            let mut r = request(Selection::TimeRange { from, to });
            r.prove_complete = prove;
            let bundle = export_from(&copy, &r).unwrap();
            let report = verify(&bundle);
            assert!(report.is_intact(), "{}", report.to_text());
            assert_eq!(
                report.seqs,
                f.in_range(from, to),
                "{a}..{b}, complete: {prove}"
            );
        }
    }
}

/// Any range of the log exports and verifies, complete when asked. (A
/// proptest runner inside one test, so that the ledger is built once.)
#[test]
fn any_time_range_round_trips() {
    let f = fixture();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
    let cases = (0..EVENTS + 5, 1u64..40, any::<bool>());
    runner
        .run(&cases, |(a, len, prove)| {
            let from = f.ts(a) - MS / 3;
            let to = from + len * MS;
            let mut r = request(Selection::TimeRange { from, to });
            r.prove_complete = prove;
            match export_from(&f.ledger(), &r) {
                Ok(b) => {
                    let report = verify(&b);
                    prop_assert!(report.is_intact(), "{}", report.to_text());
                    prop_assert_eq!(&report.seqs, &f.in_range(from, to));
                    if prove {
                        prop_assert_eq!(report.completeness, Some(Completeness::Proven));
                    }
                }
                Err(BundleError::NothingSelected(_)) => prop_assert!(!prove && a >= EVENTS),
                Err(e) => prop_assert!(false, "{e}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_verifiers_subject_fields_are_the_writers() {
    use gatehouse_verify::bundle::{subject, subject_keys};
    let f = fixture();
    for kind in EventKind::ALL {
        let key_of = |name: &str| {
            kind.fields()
                .iter()
                .find(|(_, field, _)| *field == name)
                .map(|(k, _, _)| *k)
        };
        assert_eq!(
            subject_keys(kind.code()),
            (key_of("session"), key_of("identity")),
            "{kind:?}"
        );
    }
    let reader = LedgerReader::open(f.ledger()).unwrap();
    for stored in reader.events(0..u64::MAX) {
        let stored = stored.unwrap();
        let s = subject(&stored.bytes).unwrap();
        assert_eq!(s.session, stored.event.body.session());
        assert_eq!(s.identity, stored.event.body.identity());
    }
}
