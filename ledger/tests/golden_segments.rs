//! Golden vector for a ledger cut into segments (docs/ledger-format.md,
//! section 9): `fixtures/ledger/golden-segments/` holds three segments of
//! one log, written with a fixed key and clock, each after the first
//! opening with its predecessor's final checkpoint, file digest and tree.
//! `gatehouse-verify` is tested against it (verifier/tests/golden.rs).
//! The sealed files' bytes are SQLite's, so the writer is held to the
//! structure here (where each segment starts, what its opening record
//! says), not to the bytes.
//!
//! Regenerate after an intentional format change with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test golden_segments`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_ledger::event::*;
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::segment::{file_digest, segment_files};
use gatehouse_ledger::{EventBody, Ledger, LedgerReader, SegmentPolicy, WriterOptions};

const SEED: [u8; 32] = [0x5e; 32];
const ORIGIN: &str = "gatehouse.test/golden-segments";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger/golden-segments")
}

fn event(i: u64) -> EventBody {
    OperatorAction {
        operator: "alice".into(),
        action: format!("step {i} {}", "-".repeat(600)),
        target: None,
        outcome: "ok".into(),
        detail: None,
    }
    .into()
}

/// Three segments of 12 operator actions and two openings.
fn build(dir: &Path) -> PathBuf {
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    let path = dir.join("ledger.db");
    let mut options = WriterOptions::new(&path, NoteSigner::from_seed(ORIGIN, SEED).unwrap());
    options.clock = Arc::new(move || clock.fetch_add(1_000_000, Ordering::Relaxed));
    options.sign_every = Duration::from_secs(60);
    options.sign_max_events = 2;
    options.segments = SegmentPolicy {
        max_bytes: Some(3_500),
        every: None,
    };
    let ledger = Ledger::open(options).unwrap();
    for i in 0..12 {
        ledger.append_blocking(&[event(i)]).unwrap();
    }
    ledger.close();
    path
}

/// Every record's bytes and every checkpoint note, read across segments.
fn read(path: &Path) -> (Vec<Vec<u8>>, Vec<String>) {
    let r = LedgerReader::open(path).unwrap();
    let events = r.events(0..u64::MAX).map(|e| e.unwrap().bytes).collect();
    let notes = r
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    (events, notes)
}

/// Where each segment starts, and its opening record if it has one.
fn openings(path: &Path) -> Vec<(u64, Option<SegmentOpened>)> {
    segment_files(path)
        .unwrap()
        .into_iter()
        .map(|(_, file)| {
            let r = LedgerReader::open(&file).unwrap();
            let first = r.events(0..u64::MAX).next().unwrap().unwrap().event;
            let opened = match first.body {
                EventBody::SegmentOpened(o) => Some(o),
                _ => None,
            };
            (first.seq, opened)
        })
        .collect()
}

#[test]
fn the_golden_segments_are_one_log_whose_openings_name_their_predecessors() {
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let built = build(dir.path());
        let out = fixtures();
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        for (_, file) in segment_files(&built).unwrap() {
            let to = out.join(file.file_name().unwrap());
            std::fs::copy(&file, &to).unwrap();
            // A fixture is a plain file: no write-ahead log beside it.
            let conn = rusqlite::Connection::open(&to).unwrap();
            conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
                .unwrap();
        }
        let key = NoteSigner::from_seed(ORIGIN, SEED).unwrap().verifier();
        std::fs::write(out.join("verifier.pub"), format!("{key}\n")).unwrap();
    }
    let golden = fixtures().join("ledger.db");
    let files = segment_files(&golden).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let (events, notes) = read(&golden);
    assert_eq!(events.len(), 14, "12 actions and 2 openings");
    let openings = openings(&golden);
    assert_eq!(openings[0].0, 0);
    assert!(openings[0].1.is_none());
    for (i, (start, opened)) in openings.iter().enumerate().skip(1) {
        let opened = opened.as_ref().expect("an opening record");
        assert_eq!(opened.segment, i as u64);
        // The predecessor's last checkpoint, byte for byte, covering
        // everything before this record.
        let previous = LedgerReader::open(&files[i - 1].1)
            .unwrap()
            .latest_checkpoint()
            .unwrap()
            .unwrap();
        assert_eq!(opened.previous_checkpoint, previous.note);
        assert_eq!(previous.size, *start);
        // The sealed file is what the opening says, except the last
        // sealed file's journal-mode bytes when blessed from a live copy.
        assert_eq!(
            opened.previous_digest.0,
            file_digest(&files[i - 1].1).unwrap().to_vec()
        );
        assert!(notes.contains(&previous.note));
    }
    // The writer produces the same structure today.
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path());
    let starts: Vec<u64> = self::openings(&built).iter().map(|(s, _)| *s).collect();
    let golden_starts: Vec<u64> = openings.iter().map(|(s, _)| *s).collect();
    assert_eq!(starts, golden_starts);
    assert_eq!(read(&built).0.len(), events.len());
}
