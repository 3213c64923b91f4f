//! Issue 17: sealed segments (docs/ledger-format.md, section 9). The writer
//! cuts the ledger into files, readers read them as one log, and the
//! independent verifier checks them in order and names each way the set
//! can be broken: a deleted middle segment, two segments swapped, a sealed
//! segment edited, the last one truncated below a kept checkpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_ledger::event::{EventBody, OperatorAction};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::segment::{segment_files, segment_path};
use gatehouse_ledger::{Ledger, LedgerReader, SegmentPolicy, WriterOptions};
use gatehouse_verify::{verify_ledger_with, FailureClass, Report, VerifierKey, VerifyOptions};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.test/segments", [7; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier().to_string()).unwrap()
}

fn action(i: u64) -> EventBody {
    OperatorAction {
        operator: "ops".into(),
        action: format!("step {i:05} {}", "x".repeat(200)),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

fn open(path: &Path) -> Ledger {
    let mut options = WriterOptions::new(path, signer());
    options.sign_every = Duration::from_millis(50);
    options.segments = SegmentPolicy {
        max_bytes: Some(64 * 1024),
        every: None,
    };
    Ledger::open(options).unwrap()
}

/// A writer whose clock advances `step` nanoseconds at each reading (once
/// per commit), and that clock, to move it on.
fn open_on_clock(
    path: &Path,
    step: u64,
    segments: SegmentPolicy,
) -> (Ledger, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let clock = std::sync::Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    let mut options = WriterOptions::new(path, signer());
    options.clock = {
        let clock = clock.clone();
        std::sync::Arc::new(move || clock.fetch_add(step, Ordering::Relaxed))
    };
    options.sign_every = Duration::from_millis(50);
    options.segments = segments;
    (Ledger::open(options).unwrap(), clock)
}

/// Appends `n` events from `start` in batches of 10.
fn fill(ledger: &Ledger, start: u64, n: u64) {
    for batch in (start..start + n).collect::<Vec<_>>().chunks(10) {
        let bodies: Vec<EventBody> = batch.iter().map(|i| action(*i)).collect();
        ledger.append_blocking(&bodies).unwrap();
    }
}

fn verify(path: &Path, trusted: Option<&str>) -> Report {
    verify_ledger_with(
        path,
        &key(),
        VerifyOptions {
            trusted_checkpoint: trusted,
            ..VerifyOptions::default()
        },
    )
    .unwrap()
}

/// A ledger of 1,500 events in several segments, closed.
fn segmented(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.db");
    let ledger = open(&path);
    fill(&ledger, 0, 1500);
    ledger.close();
    path
}

fn failure(report: &Report) -> (FailureClass, String) {
    let f = report.failure.as_ref().expect("the verifier must fail");
    (f.class, f.message.clone())
}

#[test]
fn the_writer_cuts_the_ledger_into_sealed_segments_read_as_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let files = segment_files(&path).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    let numbers: Vec<u64> = files.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..files.len() as u64).collect::<Vec<_>>());
    // The configured path is a link to the live (last) segment; every other
    // one is read-only.
    let live = &files.last().unwrap().1;
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new(live.file_name().unwrap())
    );
    for (_, sealed) in &files[..files.len() - 1] {
        let mode = std::fs::metadata(sealed).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "{} is writable", sealed.display());
    }
    // Readers see one log: every event in order, each segment after the
    // first opening with its record.
    let reader = LedgerReader::open(&path).unwrap();
    let n = reader.len().unwrap();
    assert_eq!(n, 1500 + files.len() as u64 - 1);
    let events: Vec<_> = reader.events(0..n).map(Result::unwrap).collect();
    assert_eq!(events.len() as u64, n);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event.seq, i as u64);
    }
    let openings = events
        .iter()
        .filter(|e| matches!(e.event.body, EventBody::SegmentOpened(_)))
        .count();
    assert_eq!(openings, files.len() - 1);
    let mut seen = 0;
    reader
        .for_each_record(0..n, |seq, _| {
            assert_eq!(seq, seen);
            seen += 1;
        })
        .unwrap();
    assert_eq!(seen, n);
    // The verifier, given the ledger's path or its directory, checks them all.
    for given in [path.as_path(), dir.path()] {
        let report = verify(given, None);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.events, n);
    }
    // A restarted writer goes on in the live segment and seals on.
    let ledger = open(&path);
    fill(&ledger, 1500, 500);
    ledger.close();
    assert!(segment_files(&path).unwrap().len() > files.len());
    let report = verify(&path, None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        report.events,
        LedgerReader::open(&path).unwrap().len().unwrap()
    );
}

#[test]
fn a_deleted_middle_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    std::fs::remove_file(segment_path(&path, 1)).unwrap();
    let (class, message) = failure(&verify(&path, None));
    assert_eq!(class, FailureClass::SegmentBroken);
    assert!(message.contains("segment 1 is missing"), "{message}");
}

#[test]
fn two_swapped_segments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let (a, b) = (segment_path(&path, 1), segment_path(&path, 2));
    let temp = dir.path().join("swap");
    std::fs::rename(&a, &temp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&temp, &b).unwrap();
    let (class, message) = failure(&verify(&path, None));
    assert_eq!(class, FailureClass::SegmentBroken);
    assert!(
        message.contains("holds segment 2 but is named as segment 1"),
        "{message}"
    );
}

#[test]
fn an_edited_sealed_segment_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let sealed = segment_path(&path, 1);
    std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o644)).unwrap();
    // An edit SQLite itself makes, to a row the checkpoints do not
    // authenticate: only the digest can tell.
    let conn = rusqlite::Connection::open(&sealed).unwrap();
    conn.execute(
        "UPDATE events SET identity = 'someone' WHERE seq = (SELECT MAX(seq) FROM events)",
        [],
    )
    .unwrap();
    drop(conn);
    let (class, message) = failure(&verify(&path, None));
    assert_eq!(class, FailureClass::SegmentBroken);
    assert!(
        message.contains("is not the file that was sealed"),
        "{message}"
    );
}

#[test]
fn the_last_segment_truncated_below_a_kept_checkpoint_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let kept = verify(&path, None).final_checkpoint.unwrap();
    // Events removed from the end of the live segment, with the
    // checkpoints that covered them.
    let live = segment_files(&path).unwrap().pop().unwrap().1;
    let conn = rusqlite::Connection::open(&live).unwrap();
    let max: i64 = conn
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM events WHERE seq > ?1", [max - 5])
        .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE size > ?1", [max - 5])
        .unwrap();
    drop(conn);
    let (class, message) = failure(&verify(&path, Some(&kept)));
    assert_eq!(class, FailureClass::Truncated, "{message}");
    // Without the kept checkpoint the shorter ledger still verifies: that is
    // what the auditor keeps checkpoints for.
    assert!(verify(&path, None).is_intact());
}

#[test]
fn a_long_lived_reader_follows_seals_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path);
    fill(&ledger, 0, 300);
    let mut reader = LedgerReader::open(&path).unwrap();
    let held = reader.len().unwrap();
    fill(&ledger, 300, 600);
    // Without a refresh it reads on in the files it holds (the live one it
    // opened was sealed meanwhile), and with one, the segments begun since.
    let now = LedgerReader::open(&path).unwrap().len().unwrap();
    assert!(reader.len().unwrap() < now);
    reader.refresh().unwrap();
    assert!(now > held);
    assert_eq!(reader.len().unwrap(), now);
    assert_eq!(reader.events(0..now).count() as u64, now);
    // The two oldest segments removed (archived elsewhere): the reader lets
    // go of them and starts at the third's opening record.
    let files = segment_files(&path).unwrap();
    for (_, file) in &files[..2] {
        std::fs::remove_file(file).unwrap();
    }
    reader.refresh().unwrap();
    let first = reader.first();
    assert!(first > 0);
    let events: Vec<_> = reader.events(0..u64::MAX).map(Result::unwrap).collect();
    assert_eq!(events[0].event.seq, first);
    assert!(matches!(events[0].event.body, EventBody::SegmentOpened(_)));
    assert_eq!(events.len() as u64, now - first);
    ledger.close();
    // The independent verifier starts there too.
    let report = verify(&path, None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.from, Some(first));
}

#[test]
fn one_segment_verifies_alone_from_the_checkpoint_its_predecessor_ended_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let files = segment_files(&path).unwrap();
    let (second, third) = (&files[1].1, &files[2].1);
    let ended_on = LedgerReader::open(second)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .unwrap();
    let alone = |from: Option<&str>| {
        verify_ledger_with(
            third,
            &key(),
            VerifyOptions {
                from_checkpoint: from,
                ..VerifyOptions::default()
            },
        )
    };
    // From the checkpoint segment 1 ended on, and from its own opening.
    for from in [Some(ended_on.note.as_str()), None] {
        let report = alone(from).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.from, Some(ended_on.size));
    }
    // Another kept checkpoint is not where segment 2 starts.
    let earlier = LedgerReader::open(second).unwrap().checkpoints().unwrap()[0]
        .note
        .clone();
    let refused = alone(Some(&earlier)).unwrap_err().to_string();
    assert!(refused.contains("not after the kept one"), "{refused}");
}

/// An auditor who verified the ledger up to a kept checkpoint verifies a
/// ledger in segments from it: the segments before it are not read.
#[test]
fn a_ledger_in_segments_verifies_from_a_kept_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let files = segment_files(&path).unwrap();
    assert!(files.len() >= 3);
    let from = |note: &str| {
        verify_ledger_with(
            &path,
            &key(),
            VerifyOptions {
                from_checkpoint: Some(note),
                ..VerifyOptions::default()
            },
        )
    };
    let first_ended_on = LedgerReader::open(&files[0].1)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .unwrap();
    let second = LedgerReader::open(&files[1].1).unwrap();
    let second_starts = second.first();
    let second_ends = second.len().unwrap();
    let mid_second = second
        .checkpoints()
        .unwrap()
        .into_iter()
        .find(|c| c.size > second_starts && c.size < second_ends)
        .expect("a checkpoint inside the second segment");
    let total = LedgerReader::open(&path).unwrap().len().unwrap();
    // A note the same key signed for another log (a fork) is caught in
    // the segment that must hold it.
    let other = tempfile::tempdir().unwrap();
    let forked = other.path().join("other.db");
    let foreign = open(&forked);
    fill(&foreign, 100, 10);
    foreign.close();
    let note = LedgerReader::open(&forked)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .unwrap()
        .note;
    let (class, _) = failure(&from(&note).unwrap());
    assert_eq!(class, FailureClass::Forked);
    // The first segment edited after it was verified (and sealed): a
    // verification from a later checkpoint does not read it.
    let sealed = &files[0].1;
    std::fs::set_permissions(sealed, std::fs::Permissions::from_mode(0o644)).unwrap();
    rusqlite::Connection::open(sealed)
        .unwrap()
        .execute("UPDATE events SET data = x'00' WHERE seq = 3", [])
        .unwrap();
    let report = from(&first_ended_on.note).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.from, Some(first_ended_on.size));
    assert_eq!(report.from.unwrap() + report.events, total);
    // A checkpoint inside the second segment: that segment is read whole
    // and must still hold what the note signs.
    let report = from(&mid_second.note).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.from, Some(second_starts));
    // The whole ledger, by contrast, shows the edit.
    assert!(!verify(&path, None).is_intact());
}

#[test]
fn segment_every_seals_by_the_age_of_the_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    // Each commit is stamped 300 ms after the last: a segment older than
    // a second is sealed.
    let policy = SegmentPolicy {
        max_bytes: None,
        every: Some(Duration::from_secs(1)),
    };
    let (ledger, _) = open_on_clock(&path, 300_000_000, policy);
    for i in 0..20 {
        ledger.append_blocking(&[action(i)]).unwrap();
    }
    ledger.close();
    let files = segment_files(&path).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    // No sealed segment spans much more than the age limit.
    let reader = LedgerReader::open(&path).unwrap();
    for (_, file) in &files[..files.len() - 1] {
        let r = LedgerReader::open(file).unwrap();
        let ts: Vec<u64> = r.events(0..u64::MAX).map(|e| e.unwrap().event.ts).collect();
        let span = ts.last().unwrap() - ts.first().unwrap();
        assert!(span <= 1_500_000_000, "{}: {span} ns", file.display());
    }
    assert_eq!(reader.len().unwrap(), 20 + files.len() as u64 - 1);
    assert!(verify(&path, None).is_intact());
}

#[test]
fn a_writer_stopped_between_sealing_and_opening_the_next_segment_opens_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let before = LedgerReader::open(&path).unwrap().len().unwrap();
    let files = segment_files(&path).unwrap();
    let (last, live) = files.last().unwrap().clone();
    // As a crash leaves it: the live segment sealed (read-only, its WAL
    // folded) and the next file created with no record yet; the link still
    // names the sealed one.
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o644)).unwrap();
    let next = segment_path(&path, last + 1);
    drop(
        gatehouse_ledger::schema::open_for_writing(
            &next,
            "gatehouse.test/segments",
            gatehouse_ledger::Durability::Os,
        )
        .unwrap(),
    );
    let ledger = open(&path);
    fill(&ledger, 1500, 10);
    ledger.close();
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new(next.file_name().unwrap())
    );
    let mode = std::fs::metadata(&live).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "the sealed segment is read-only again");
    let reader = LedgerReader::open(&path).unwrap();
    let opening = reader.get(before).unwrap().unwrap().event.body;
    assert!(matches!(opening, EventBody::SegmentOpened(o) if o.segment == last + 1));
    let report = verify(&path, None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, reader.len().unwrap());
}

#[test]
fn a_next_segment_a_crash_left_empty_is_passed_over_and_then_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let before = LedgerReader::open(&path).unwrap().len().unwrap();
    let (last, _) = segment_files(&path).unwrap().pop().unwrap();
    // SQLite had created the file, not yet its schema.
    let next = segment_path(&path, last + 1);
    std::fs::File::create(&next).unwrap();
    // Readers and the verifier see the log as it was...
    assert_eq!(LedgerReader::open(&path).unwrap().len().unwrap(), before);
    let report = verify(&path, None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, before);
    // ...and the writer opens the segment properly at its start.
    let ledger = open(&path);
    fill(&ledger, 1500, 10);
    ledger.close();
    let reader = LedgerReader::open(&path).unwrap();
    assert!(matches!(
        reader.get(before).unwrap().unwrap().event.body,
        EventBody::SegmentOpened(o) if o.segment == last + 1
    ));
    let report = verify(&path, None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, before + 11);
}

#[test]
fn a_reader_holding_an_old_snapshot_delays_a_seal_never_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let policy = SegmentPolicy {
        max_bytes: Some(64 * 1024),
        every: None,
    };
    let (ledger, clock) = open_on_clock(&path, 1_000, policy);
    fill(&ledger, 0, 100);
    let segments = segment_files(&path).unwrap().len();
    // A reader in the middle of a read, on the log as it is now.
    let live = segment_files(&path).unwrap().pop().unwrap().1;
    let reader = rusqlite::Connection::open(&live).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    // The segment fills up behind it: the seal cannot fold the log the
    // reader still reads, gives up, and every append is committed anyway.
    fill(&ledger, 100, 400);
    assert_eq!(segment_files(&path).unwrap().len(), segments);
    // Once the reader has moved on, the seal is retried after its delay.
    reader.execute_batch("COMMIT").unwrap();
    clock.fetch_add(11_000_000_000, std::sync::atomic::Ordering::Relaxed);
    fill(&ledger, 400, 20);
    ledger.close();
    assert!(segment_files(&path).unwrap().len() > segments);
    assert!(verify(&path, None).is_intact());
}

#[test]
fn a_trusted_checkpoint_is_checked_by_the_segment_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = segmented(dir.path());
    let files = segment_files(&path).unwrap();
    // A checkpoint from the middle of segment 1, kept by an auditor.
    let kept = LedgerReader::open(&files[1].1)
        .unwrap()
        .checkpoints()
        .unwrap()[1]
        .note
        .clone();
    let report = verify(&path, Some(&kept));
    assert!(report.is_intact(), "{report:?}");
    // A checkpoint of the same size over other events (signed by the log's
    // key: a fork shown to the auditor) is caught by that segment.
    let text = kept.split_once("\n\n").unwrap().0;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let forked = signer().sign(&format!("{}\n", lines.join("\n")));
    let (class, message) = failure(&verify(&path, Some(&forked)));
    assert_eq!(class, FailureClass::Forked, "{message}");
    assert!(
        message.contains(&*files[1].1.display().to_string()),
        "{message}"
    );
}

#[test]
fn a_session_opened_just_after_a_seal_is_found_by_its_index() {
    use gatehouse_ledger::event::{SessionClosed, SessionOpened};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = open(&path);
    // Fill until the first seal, then open a session: its first index
    // bucket begins in the sealed segment and goes on in the next.
    let mut i = 0;
    while segment_files(&path).unwrap().len() < 2 {
        ledger.append_blocking(&[action(i)]).unwrap();
        i += 1;
    }
    let opened = ledger
        .append_blocking(&[SessionOpened {
            session: 7,
            identity: "agent".into(),
            target: "shop".into(),
            client_addr: "127.0.0.1:5000".into(),
            application_name: None,
            credential: None,
            tls: false,
        }
        .into()])
        .unwrap()[0]
        .seq;
    let closed = ledger
        .append_blocking(&[SessionClosed {
            session: 7,
            identity: "agent".into(),
            reason: "client disconnected".into(),
            statements: 0,
        }
        .into()])
        .unwrap()[0]
        .seq;
    ledger.close();
    let files = segment_files(&path).unwrap();
    let second_starts = LedgerReader::open(&files[1].1).unwrap().first();
    assert_ne!(second_starts % 1024, 0, "the seal cuts a bucket");
    assert_eq!(
        opened / 1024,
        second_starts / 1024,
        "same bucket as the seal"
    );
    let reader = LedgerReader::open(&path).unwrap();
    assert_eq!(
        reader.session_hint(7).unwrap(),
        Some((opened, Some(closed)))
    );
    assert_eq!(reader.events_by_session(7).unwrap().count(), 2);
}
