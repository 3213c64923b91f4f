//! Reading events only as the signed log vouches for them.
//!
//! Investigators' tools (replay, state, export) must show exactly what the
//! verifier vouched for. So they decode every event from its stored record
//! bytes (never from the index columns `session`, `identity`, or the bucket
//! tables, which are not authenticated) and check the records against the
//! newest checkpoint's note, whose signature they check with the verifier
//! key. Events after the checkpoint are handed over marked as not covered.
//!
//! Two passes do that. [`read_verified`] recomputes the Merkle root and the
//! chain head of every record: about a second per million events on these
//! machines. [`read_window`] checks only a window (a session, a snapshot and
//! what follows) by rebuilding the root from the window's records and the
//! writer's stored subtree hashes ([`crate::tree_window`]): the window's
//! size plus one stored hash per level. [`read_selected`] tries the window
//! and falls back to the whole pass whenever a hint disagrees.
//!
//! A statement recorded compactly (section 7.2 of the format) is handed
//! over whole: its record, which the pass checks, binds its shape by digest,
//! so the shape is checked against that digest wherever it lies.
//!
//! The file itself is opened with its schema pinned
//! ([`crate::schema::check_pinned`]), so no planted index can answer the
//! scan with other rows than the table's.

use crate::chain::{self, Link};
use crate::checkpoint::Checkpoint;
use crate::event::{Event, EventBody};
use crate::merkle::{leaf_hash, Frontier};
use crate::note::{self, VerifierKey};
use crate::reader::LedgerReader;
use crate::tree_window::{merge, TreeWindow};
use crate::LedgerError;
use std::ops::Range;

/// What [`read_verified`] vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Events covered by the newest checkpoint: `0..covered`.
    pub covered: u64,
    /// Events in the ledger.
    pub events: u64,
    /// The newest checkpoint's signed note (`None`: there is none).
    pub note: Option<String>,
    /// The label of the key whose signature on the note was checked; `None`
    /// when no key was given, so the note's authenticity is unknown.
    pub key: Option<String>,
    /// Records hashed to check the note: every covered one for a whole
    /// pass, the window and its surroundings for [`read_window`].
    pub hashed: u64,
    /// Which pass read the events.
    pub pass: Pass,
    /// The key rotations followed to check the note's signature (sequence
    /// numbers, from the writer's index; empty without a key). A whole pass
    /// checks them against every record; a window's reader must check them
    /// against a verified snapshot's and the rotations in its window.
    pub rotations: Vec<u64>,
}

impl Coverage {
    /// Whether every event in `0..covered` is vouched for by a signature
    /// that was checked.
    pub fn signed(&self) -> bool {
        self.key.is_some() && self.note.is_some()
    }
}

/// Reads every event in log order, decoded from its record, and checks the
/// records against the newest checkpoint. `visit` gets each event and
/// whether the checkpoint covers it. When this returns an error, nothing
/// `visit` got may be shown as the ledger's content: the records differ
/// from what was signed, or the ledger is damaged.
pub fn read_verified(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    mut visit: impl FnMut(Event, bool),
) -> Result<Coverage, LedgerError> {
    let newest = newest_checkpoint(reader, key)?;
    let (events, covered) = (newest.events, newest.covered());
    let mut frontier = Frontier::new();
    let mut link: Link = chain::GENESIS;
    let mut failure: Option<LedgerError> = None;
    let mut rotated = Vec::new();
    reader.for_each_record(0..events, |seq, bytes| {
        if failure.is_some() {
            return;
        }
        if seq < covered {
            frontier.push(leaf_hash(bytes));
            link = chain::link(&link, bytes);
        }
        match decode(seq, bytes).and_then(|event| reader.resolve(event)) {
            Ok(event) => {
                if matches!(event.body, EventBody::KeyRotated(_)) {
                    rotated.push(seq);
                }
                visit(event, seq < covered)
            }
            Err(e) => failure = Some(e),
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // The key the note was checked with follows the rotations the index
    // listed; every record has now been read, so a hidden one shows.
    if key.is_some() && newest.checkpoint.is_some() && rotated != newest.rotations {
        return Err(LedgerError::Damaged(format!(
            "the ledger's records rotate its signing key at events {rotated:?}, its rotation index says {rotations:?}: \
             the file has been altered; run gatehouse-verify on it and read a trusted copy",
            rotations = newest.rotations
        )));
    }
    if let Some(c) = &newest.checkpoint {
        if frontier.root() != c.root || link != c.chain {
            return Err(LedgerError::Damaged(format!(
                "events 0..{} are not the events the newest checkpoint signed (their root or chain head differs): \
                 the ledger has been altered; run gatehouse-verify on it and read a trusted copy",
                c.size - 1
            )));
        }
    }
    Ok(newest.coverage(key, covered, Pass::Whole))
}

/// Reads the events in `ranges` (sequence numbers, half-open) and checks
/// them against the newest checkpoint without hashing the rest of the log.
///
/// The writer stores the hash of every complete subtree of at least 256
/// events (`subtrees`, not authenticated). The root is rebuilt from the
/// records of the 256-event blocks the ranges touch (and of the last,
/// partial block), and from stored hashes for everything else: the cost is
/// the window, at most 255 events beyond each end of each range and of the
/// log, and one stored hash per level. A stored hash that lies makes the
/// root differ, like an altered record: SHA-256's collision resistance is
/// what ties the window to the signed root, as in any inclusion proof. The
/// records of key rotations followed to check the note's signature are
/// checked the same way.
///
/// `Ok(None)`: the shortcut is not available (a ledger without stored
/// subtrees, or a root that differs, which may be damage to the unsigned
/// table only); nothing `visit` got may then be used, and the caller reads
/// the whole log with [`read_verified`], which tells the two apart.
/// `visit` gets the events in order, and whether the checkpoint covers each.
pub fn read_window(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    ranges: &[Range<u64>],
    mut visit: impl FnMut(Event, bool),
) -> Result<Option<Coverage>, LedgerError> {
    let newest = newest_checkpoint(reader, key)?;
    let (events, covered) = (newest.events, newest.covered());
    let wanted = merge(
        ranges
            .iter()
            .map(|r| r.start.min(events)..r.end.min(events)),
    );
    let is_wanted = |seq: u64| wanted.iter().any(|r| r.contains(&seq));
    let mut failure: Option<LedgerError> = None;
    let mut on_record = |seq: u64, bytes: &[u8], covered: bool| {
        if failure.is_none() && is_wanted(seq) {
            match decode(seq, bytes).and_then(|event| reader.resolve(event)) {
                Ok(event) => visit(event, covered),
                Err(e) => failure = Some(e),
            }
        }
    };
    let touched = wanted
        .iter()
        .cloned()
        .chain(newest.rotations.iter().map(|&r| r..r + 1));
    let mut tree = TreeWindow::new(reader, covered, touched, &[]);
    if let Some(checkpoint) = &newest.checkpoint {
        // Left to right: the window's records are visited in order.
        let root = tree.mth(0, covered, &mut |seq, bytes| on_record(seq, bytes, true))?;
        if root != Some(checkpoint.root) {
            return Ok(None);
        }
    }
    for range in &wanted {
        let uncovered = range.start.max(covered)..range.end;
        if !uncovered.is_empty() {
            reader.for_each_record(uncovered, |seq, bytes| on_record(seq, bytes, false))?;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let hashed = tree.hashed();
    Ok(Some(newest.coverage(key, hashed, Pass::Window)))
}

/// Which of [`read_selected`]'s passes a value is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Only the window's events are visited ([`read_window`]).
    Window,
    /// Every event of the log is visited ([`read_verified`]).
    Whole,
}

/// Builds a `T` from the events of `window` when [`read_window`] can vouch
/// for them and `accept` agrees with what it read (say, that the window's
/// first event is the session's opening the index pointed at, and that the
/// key rotations followed are all there are); otherwise,
/// or with no window, from every event of the log. `init` starts a value
/// for the pass it is told; `visit` folds an event in, with whether the
/// newest checkpoint covers it. The whole pass is the fallback whenever a
/// hint (an index, a stored subtree) turns out wrong: it is slower, never
/// less exact.
pub fn read_selected<T>(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    window: Option<&[Range<u64>]>,
    mut init: impl FnMut(Pass) -> T,
    mut visit: impl FnMut(&mut T, Event, bool),
    accept: impl Fn(&T, &Coverage) -> bool,
) -> Result<(T, Coverage), LedgerError> {
    if let Some(ranges) = window {
        let mut value = init(Pass::Window);
        if let Some(coverage) = read_window(reader, key, ranges, |e, c| visit(&mut value, e, c))? {
            if accept(&value, &coverage) {
                return Ok((value, coverage));
            }
        }
    }
    let mut value = init(Pass::Whole);
    let coverage = read_verified(reader, key, |e, c| visit(&mut value, e, c))?;
    Ok((value, coverage))
}

/// The event in record `bytes`, stored at `seq`.
fn decode(seq: u64, bytes: &[u8]) -> Result<Event, LedgerError> {
    match Event::from_bytes(bytes) {
        Ok(event) if event.seq == seq => Ok(event),
        Ok(event) => Err(LedgerError::Damaged(format!(
            "row {seq} holds the record of event {}",
            event.seq
        ))),
        Err(e) => Err(LedgerError::Damaged(format!(
            "event {seq} cannot be decoded: {e}"
        ))),
    }
}

/// The newest checkpoint and its note, its signature checked with the key
/// `key` leads to (following key rotations); without a key, only parsed.
/// Also the sequence numbers of the key rotations followed, whose records
/// a reader that does not hash the whole log must check itself.
fn newest_checkpoint(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
) -> Result<Newest, LedgerError> {
    let events = reader.len()?;
    let mut rotations = Vec::new();
    let stored = reader.latest_checkpoint()?;
    let (checkpoint, note) = match &stored {
        None => (None, None),
        Some(row) => {
            let text = match key {
                Some(trusted) => {
                    // The key that signs the newest checkpoint, following any
                    // key rotations from the trusted key.
                    let schedule = reader.key_schedule(trusted)?;
                    rotations = schedule.rotations().to_vec();
                    let key = schedule.key_after(reader.previous_checkpoint_size(row.size)?);
                    key.verify(&row.note).map_err(|e| {
                        LedgerError::Damaged(format!(
                            "the newest checkpoint's note does not carry a valid signature by {} ({e}); \
                             the ledger may have been altered: run gatehouse-verify on it",
                            key.label()
                        ))
                    })?
                }
                None => {
                    note::unverified_parts(&row.note)
                        .map_err(|e| {
                            LedgerError::Damaged(format!(
                                "the newest checkpoint's note is malformed: {e}"
                            ))
                        })?
                        .0
                }
            };
            let checkpoint = Checkpoint::parse(text).map_err(|e| {
                LedgerError::Damaged(format!("the newest checkpoint's note is malformed: {e}"))
            })?;
            if checkpoint.size != row.size || checkpoint.size > events {
                return Err(LedgerError::Damaged(format!(
                    "the newest checkpoint commits to {} events, its row says {}, the ledger holds {events}: \
                     run gatehouse-verify on it",
                    checkpoint.size, row.size
                )));
            }
            (Some(checkpoint), Some(row.note.clone()))
        }
    };
    Ok(Newest {
        events,
        checkpoint,
        note,
        rotations,
    })
}

/// The newest checkpoint as [`newest_checkpoint`] found it.
struct Newest {
    /// Events in the ledger.
    events: u64,
    checkpoint: Option<Checkpoint>,
    note: Option<String>,
    rotations: Vec<u64>,
}

impl Newest {
    /// Events the checkpoint covers.
    fn covered(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.size)
    }

    /// What a pass that hashed `hashed` records vouches for.
    fn coverage(self, key: Option<&VerifierKey>, hashed: u64, pass: Pass) -> Coverage {
        Coverage {
            covered: self.covered(),
            events: self.events,
            key: key
                .filter(|_| self.checkpoint.is_some())
                .map(VerifierKey::label),
            note: self.note,
            hashed,
            pass,
            rotations: self.rotations,
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // windows of one range
mod tests {
    use super::*;
    use crate::event::{EventBody, OperatorAction};
    use crate::writer::{Ledger, WriterOptions};

    fn ledger(dir: &std::path::Path) -> (std::path::PathBuf, VerifierKey) {
        let path = dir.join("ledger.db");
        let signer = note::NoteSigner::generate("test/verified").unwrap();
        let key = signer.verifier();
        let writer = Ledger::open(WriterOptions::new(&path, signer)).unwrap();
        for i in 0..5 {
            writer
                .append_blocking(&[EventBody::from(OperatorAction {
                    operator: "ops".into(),
                    action: format!("note {i}"),
                    target: None,
                    outcome: "ok".into(),
                    detail: None,
                })])
                .unwrap();
        }
        writer.close();
        (path, key)
    }

    fn texts(path: &std::path::Path, key: Option<&VerifierKey>) -> Result<Vec<String>, String> {
        let reader = LedgerReader::open(path).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        read_verified(&reader, key, |e, covered| {
            assert!(covered);
            if let EventBody::OperatorAction(a) = e.body {
                out.push(a.action);
            }
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn an_intact_ledger_is_read_whole_and_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = ledger(dir.path());
        assert_eq!(texts(&path, Some(&key)).unwrap().len(), 5);
        let reader = LedgerReader::open(&path).unwrap();
        let coverage = read_verified(&reader, Some(&key), |_, _| {}).unwrap();
        assert!(coverage.signed());
        assert_eq!(coverage.covered, 5);
        let unkeyed = read_verified(&reader, None, |_, _| {}).unwrap();
        assert!(!unkeyed.signed());
    }

    #[test]
    fn an_edited_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = ledger(dir.path());
        let original = texts(&path, Some(&key)).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let data: Vec<u8> = conn
            .query_row("SELECT data FROM events WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        let at = data
            .windows(6)
            .position(|w| w == b"note 2")
            .expect("the action text is in the record");
        let mut edited = data.clone();
        edited[at + 5] = b'X';
        conn.execute("UPDATE events SET data = ?1 WHERE seq = 2", [&edited])
            .unwrap();
        drop(conn);
        let refused = texts(&path, Some(&key)).unwrap_err();
        assert!(refused.contains("altered"), "{refused}");
        // Without the key, the content still has to match the note.
        assert!(texts(&path, None).is_err());
        assert_eq!(original[2], "note 2");
    }

    #[test]
    fn a_note_signed_by_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ledger(dir.path());
        let other = note::NoteSigner::generate("test/verified")
            .unwrap()
            .verifier();
        let refused = texts(&path, Some(&other)).unwrap_err();
        assert!(refused.contains("signature"), "{refused}");
    }

    fn action(i: u64) -> EventBody {
        EventBody::from(OperatorAction {
            operator: "ops".into(),
            action: format!("note {i}"),
            target: None,
            outcome: "ok".into(),
            detail: None,
        })
    }

    /// A ledger of `n` events committed in batches of up to `batch`.
    fn long_ledger(dir: &std::path::Path, n: u64, batch: u64) -> (std::path::PathBuf, VerifierKey) {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("long.db");
        let signer = note::NoteSigner::from_seed("test/window", [7; 32]).unwrap();
        let key = signer.verifier();
        let writer = Ledger::open(WriterOptions::new(&path, signer)).unwrap();
        let mut i = 0;
        while i < n {
            let bodies: Vec<EventBody> = (i..(i + batch).min(n)).map(action).collect();
            writer.append_blocking(&bodies).unwrap();
            i += bodies.len() as u64;
        }
        writer.close();
        (path, key)
    }

    fn window(
        path: &std::path::Path,
        key: &VerifierKey,
        ranges: &[Range<u64>],
    ) -> Option<(Vec<u64>, Coverage)> {
        let reader = LedgerReader::open(path).unwrap();
        let mut seen = Vec::new();
        read_window(&reader, Some(key), ranges, |e, covered| {
            assert!(covered);
            seen.push(e.seq);
        })
        .unwrap()
        .map(|c| (seen, c))
    }

    fn edit(path: &std::path::Path, sql: &str) {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    #[test]
    fn a_window_is_checked_against_the_signed_root_without_hashing_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = long_ledger(dir.path(), 5000, 13);
        let (seen, coverage) = window(&path, &key, &[1000..1010, 3000..3001]).unwrap();
        assert_eq!(seen, (1000..1010).chain(3000..3001).collect::<Vec<_>>());
        assert!(coverage.signed());
        assert_eq!(coverage.covered, 5000);
        // Two touched blocks and the partial last one (5000 = 19 * 256 + 136).
        assert_eq!(coverage.hashed, 256 + 256 + 136, "{coverage:?}");
    }

    #[test]
    fn an_edit_inside_the_window_or_of_a_stored_subtree_loses_the_shortcut_never_the_truth() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = long_ledger(dir.path(), 1500, 9);
        let intact = texts(&path, Some(&key)).unwrap();
        // A lying stored subtree (events 0..512, which the rebuild of the
        // root around 700..710 uses): the window cannot be vouched for, the
        // whole pass still can (and shows the same events).
        edit(
            &path,
            "UPDATE subtrees SET hash = zeroblob(32) WHERE level = 9 AND idx = 0",
        );
        assert!(window(&path, &key, &[700..710]).is_none());
        assert_eq!(texts(&path, Some(&key)).unwrap(), intact);
        let reader = LedgerReader::open(&path).unwrap();
        let (seen, _) = read_selected(
            &reader,
            Some(&key),
            Some(&[700..710]),
            |_| Vec::new(),
            |v: &mut Vec<u64>, e, _| v.push(e.seq),
            |_, _| true,
        )
        .unwrap();
        assert_eq!(seen.len(), 1500, "fell back to the whole log");
        // An edited record in the window: refused, whichever pass.
        let (path, key) = long_ledger(&dir.path().join("b"), 1500, 9);
        let data: Vec<u8> = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT data FROM events WHERE seq = 705", [], |r| r.get(0))
            .unwrap();
        let at = data.windows(8).position(|w| w == b"note 705").unwrap();
        let mut edited = data.clone();
        edited[at + 7] = b'9';
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("UPDATE events SET data = ?1 WHERE seq = 705", [&edited])
            .unwrap();
        assert!(window(&path, &key, &[700..710]).is_none());
        let reader = LedgerReader::open(&path).unwrap();
        let refused = read_selected(
            &reader,
            Some(&key),
            Some(&[700..710]),
            |_| (),
            |_, _, _| {},
            |_, _| true,
        )
        .unwrap_err();
        assert!(refused.to_string().contains("altered"), "{refused}");
        // A window elsewhere is still vouched for: it does not depend on
        // event 705, which the whole verifier reports.
        assert!(window(&path, &key, &[100..110]).is_some());
    }

    #[test]
    fn the_writer_rebuilds_missing_subtrees_once() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = long_ledger(dir.path(), 1100, 50);
        edit(&path, "DELETE FROM subtrees");
        assert!(window(&path, &key, &[10..20]).is_none());
        // Reopening with the ledger's own key completes the table.
        let (seen, _) = {
            let signer = note::NoteSigner::from_seed("test/window", [7; 32]).unwrap();
            let writer = Ledger::open(WriterOptions::new(&path, signer)).unwrap();
            writer.close();
            window(&path, &key, &[10..20]).unwrap()
        };
        assert_eq!(seen, (10..20).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        #[test]
        fn any_window_of_any_log_is_vouched_for_exactly(
            n in 1u64..1400,
            batch in 1u64..40,
            picks in proptest::collection::vec((0u64..1400, 0u64..300), 1..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (path, key) = long_ledger(dir.path(), n, batch);
            let ranges: Vec<Range<u64>> = picks.iter().map(|&(a, len)| a..a + len).collect();
            let (seen, coverage) = window(&path, &key, &ranges).unwrap();
            let mut expected: Vec<u64> = (0..n).filter(|s| ranges.iter().any(|r| r.contains(s))).collect();
            expected.dedup();
            proptest::prop_assert_eq!(seen, expected);
            proptest::prop_assert!(coverage.hashed <= n);
        }
    }

    #[test]
    fn a_planted_index_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ledger(dir.path());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE INDEX forged ON events (seq, data)")
            .unwrap();
        drop(conn);
        let refused = LedgerReader::open(&path).err().unwrap().to_string();
        assert!(refused.contains("index forged"), "{refused}");
    }
}
