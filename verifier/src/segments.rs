//! Ledgers cut into segments (specification section 9): each segment file
//! verified in turn, every one after the first from the record that opens
//! it, which must name its predecessor exactly (final checkpoint, file
//! digest, tree).

use std::path::{Path, PathBuf};

use crate::cbor::{self, Cursor};
use crate::ledger::Ledger;
use crate::merkle::Frontier;
use crate::note::{self, VerifierKey};
use crate::report::{Failure, FailureClass, Report};
use crate::verify::{verify_segment, Trusted, VerifyError, VerifyOptions};

/// The kind code of `SegmentOpened`.
const SEGMENT_OPENED: u64 = 26;

/// Digits of a segment number in a file name, at least.
const NUMBER_DIGITS: usize = 6;

/// The segment files of the ledger at `path` (`<name>.<number>` beside it),
/// by number; or, for a directory, of the one ledger in it. Empty: `path`
/// is a one-file ledger.
pub fn segment_files(path: &Path) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
    let listing = |dir: &Path| {
        std::fs::read_dir(dir)
            .map_err(|e| VerifyError::Segments(format!("cannot list {}: {e}", dir.display())))
    };
    if path.is_dir() {
        let mut groups: std::collections::BTreeMap<String, Vec<(u64, PathBuf)>> =
            Default::default();
        for entry in listing(path)?.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((base, number)) = split_number(name) {
                groups
                    .entry(base.to_owned())
                    .or_default()
                    .push((number, entry.path()));
            }
        }
        let mut groups = groups.into_iter();
        return match (groups.next(), groups.next()) {
            (Some((_, mut files)), None) => {
                files.sort();
                Ok(files)
            }
            // Not a ledger's directory: opening it as a ledger says so.
            (None, _) => Ok(Vec::new()),
            (Some((a, _)), Some((b, _))) => Err(VerifyError::Segments(format!(
                "{} holds the segments of more than one ledger ({a}, {b}, ...): pass the ledger's path instead",
                path.display()
            ))),
        };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (b, number) = split_number(name.to_str()?)?;
            (b == base).then(|| (number, e.path()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The segment number of a file that opens with a `SegmentOpened` record
/// (a segment after the first, given on its own); `None` for anything else.
pub fn opening_segment(path: &Path) -> Result<Option<u64>, VerifyError> {
    if !path.is_file() {
        return Ok(None);
    }
    let ledger = Ledger::open(path)?;
    let Some(first) = ledger.first_seq()? else {
        return Ok(None);
    };
    let record = ledger.record(first)?;
    Ok(record
        .as_deref()
        .and_then(Opening::from_record)
        .map(|o| o.segment))
}

/// `<base>.<digits>` split in two.
fn split_number(name: &str) -> Option<(&str, u64)> {
    let (base, digits) = name.rsplit_once('.')?;
    if base.is_empty()
        || digits.len() < NUMBER_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((base, digits.parse().ok()?))
}

/// What opens a segment after the first.
pub(crate) struct Opening {
    pub(crate) segment: u64,
    pub(crate) previous_note: String,
    pub(crate) previous_digest: Vec<u8>,
    pub(crate) frontier: Frontier,
    pub(crate) seq: u64,
    pub(crate) ts: u64,
}

impl Opening {
    /// Decodes a `SegmentOpened` record (body `{0: segment, 1:
    /// previous_checkpoint, 2: previous_digest, 3: frontier}`).
    fn from_record(record: &[u8]) -> Option<Opening> {
        let envelope = cbor::check_record(record).ok()?;
        if envelope.kind != SEGMENT_OPENED {
            return None;
        }
        let mut c = Cursor::new(record);
        c.map().ok()?;
        for key in 0..3 {
            c.key(key).ok()?;
            c.uint().ok()?;
        }
        c.key(3).ok()?;
        if c.map().ok()? != 4 {
            return None;
        }
        c.key(0).ok()?;
        let segment = c.uint().ok()?;
        c.key(1).ok()?;
        let previous_note = c.text().ok()?.to_owned();
        c.key(2).ok()?;
        let previous_digest = c.bytes().ok()?.to_vec();
        c.key(3).ok()?;
        let frontier = frontier_from_bytes(c.bytes().ok()?)?;
        Some(Opening {
            segment,
            previous_note,
            previous_digest,
            frontier,
            seq: envelope.seq,
            ts: envelope.ts,
        })
    }
}

/// `u64be(size)` then one hash per set bit of `size`, largest first.
fn frontier_from_bytes(bytes: &[u8]) -> Option<Frontier> {
    let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let hashes = &bytes[8..];
    if hashes.len() != size.count_ones() as usize * 32 {
        return None;
    }
    let subtrees = hashes
        .chunks(32)
        .map(|h| h.try_into().expect("32 bytes"))
        .collect();
    Frontier::from_subtrees(size, subtrees)
}

/// Whether a file holds no SQLite schema at all (an empty file among them).
fn unwritten(file: &Path) -> bool {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return false;
    };
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .is_ok_and(|n| n == 0)
}

/// BLAKE3 of a file's bytes.
fn file_digest(path: &Path) -> Result<[u8; 32], VerifyError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| VerifyError::Segments(format!("cannot read {}: {e}", path.display())))?;
    // Large reads let BLAKE3 hash several chunks at once (SIMD).
    let mut hasher = blake3::Hasher::new();
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, &mut file),
        &mut hasher,
    )
    .map_err(|e| VerifyError::Segments(format!("cannot read {}: {e}", path.display())))?;
    Ok(*hasher.finalize().as_bytes())
}

fn broken(seq: u64, message: String) -> Failure {
    Failure {
        seq,
        class: FailureClass::SegmentBroken,
        message,
        evidence: Vec::new(),
    }
}

/// Verifies a ledger in segments from a checkpoint the auditor kept
/// (section 6.2), reading only the segments after it: from the segment
/// that opens right after the kept checkpoint when one does (the kept note
/// is then the one its opening record must carry), otherwise from the
/// segment holding the kept checkpoint's last event, which is read whole
/// and must still hold exactly what the note signs (it is checked there as
/// a trusted checkpoint). The segments before it are not read.
pub fn verify_segments_from(
    files: &[(u64, PathBuf)],
    key: &VerifierKey,
    note: &str,
    options: VerifyOptions<'_>,
) -> Result<Report, VerifyError> {
    let kept = Trusted::open(note, key)?;
    let size = kept.checkpoint.size;
    // Where each segment starts: its opening record's sequence number, or
    // 0 for the first segment of a ledger.
    let mut start = None;
    for (i, (_, file)) in files.iter().enumerate() {
        if i > 0 && i + 1 == files.len() && unwritten(file) {
            break;
        }
        let first = Ledger::open(file)?.first_seq()?;
        match first {
            Some(first) if first <= size => start = Some((i, first)),
            _ => break,
        }
    }
    let Some((i, first)) = start else {
        return Err(VerifyError::TrustedCheckpoint(format!(
            "the kept checkpoint covers {size} events, before the oldest segment on disk starts: \
             fetch the archived segment that holds event {} and verify from there",
            size.saturating_sub(1)
        )));
    };
    let options = if first == size && first > 0 {
        VerifyOptions {
            trusted_checkpoint: None,
            ..options
        }
    } else {
        VerifyOptions {
            trusted_checkpoint: Some(note),
            from_checkpoint: None,
            ..options
        }
    };
    verify_segments(&files[i..], key, options)
}

/// Verifies every segment in `files` (by number) as one log: the first
/// from its first event (or from its opening record when the ledger's
/// earlier segments were archived away: then from the checkpoint that
/// record carries), each later one from its opening record, which must
/// match the segment verified before it. A trusted checkpoint is checked
/// by the segment that holds its last event; every segment but the last
/// must be sealed (signed to its end).
pub fn verify_segments(
    files: &[(u64, PathBuf)],
    key: &VerifierKey,
    options: VerifyOptions<'_>,
) -> Result<Report, VerifyError> {
    let trusted = options
        .trusted_checkpoint
        .map(|note| Trusted::open(note, key))
        .transpose()?;
    // A segment verified from a kept checkpoint: the one its predecessor
    // ended on, which its opening record must carry.
    let from = options
        .from_checkpoint
        .map(|note| Trusted::open(note, key))
        .transpose()?;
    let mut total: Option<Report> = None;
    let mut key_now = key.clone();
    let mut previous: Option<Sealed> = None;
    for (i, (number, file)) in files.iter().enumerate() {
        let last = i + 1 == files.len();
        // A live segment a writer was stopped while creating holds nothing,
        // not even the schema; the writer creates it again at its start.
        if last && previous.is_some() && unwritten(file) {
            break;
        }
        let ledger = Ledger::open(file)?;
        let Some(first) = ledger.first_seq()? else {
            // A writer that stopped while opening the live segment leaves it
            // empty, and writes its opening record when it starts again.
            if last && previous.is_some() {
                break;
            }
            return Ok(fail(
                total,
                broken(0, format!("{} holds no events", file.display())),
            ));
        };
        let first = ledger.record(first)?;
        let opening = first.as_deref().and_then(Opening::from_record);
        let name = file.display();
        // The segment this file must be, and what it must start from.
        let start = match (&previous, &opening) {
            (None, None) => None,
            (Some(prev), None) => {
                return Ok(fail(total, broken(0, format!(
                    "{name} follows segment {} ({}) but does not open with a SegmentOpened record: it is not that ledger's next segment",
                    prev.number,
                    prev.file.display()
                ))))
            }
            (previous, Some(o)) => {
                if o.segment != *number {
                    return Ok(fail(total, broken(o.seq, format!(
                        "{name} holds segment {} but is named as segment {number}: segments were renamed or swapped",
                        o.segment
                    ))));
                }
                if let Some(Sealed { number: n, file: prev, final_note: prev_note, .. }) = previous {
                    if o.segment != n + 1 {
                        return Ok(fail(total, broken(o.seq, format!(
                            "segment {} is missing: {name} (segment {}) follows {} (segment {n})",
                            n + 1,
                            o.segment,
                            prev.display()
                        ))));
                    }
                    if o.previous_note != *prev_note {
                        return Ok(fail(total, broken(o.seq, format!(
                            "{name} (segment {}) was opened after a final checkpoint that is not the last checkpoint of {}: the segments do not belong together",
                            o.segment,
                            prev.display()
                        ))));
                    }
                    if o.previous_digest != file_digest(prev)? {
                        return Ok(fail(total, broken(o.seq, format!(
                            "{} (segment {n}) is not the file that was sealed: its bytes differ from the digest recorded in {name} — it was edited or replaced after sealing",
                            prev.display()
                        ))));
                    }
                }
                let checkpoint = note::open_checkpoint(&o.previous_note, &key_now).map_err(|e| {
                    VerifyError::Segments(format!(
                        "{name} opens after a checkpoint not signed by key {}: {e}",
                        key_now.label()
                    ))
                })?;
                if checkpoint.size != o.seq || checkpoint.root != o.frontier.root() || o.frontier.size() != o.seq {
                    return Ok(fail(total, broken(o.seq, format!(
                        "{name} opens with a tree that does not match the checkpoint it carries"
                    ))));
                }
                if let (None, Some(kept)) = (previous, &from) {
                    if kept.checkpoint != checkpoint {
                        return Err(VerifyError::TrustedCheckpoint(format!(
                            "{name} opens after the checkpoint of size {}, not after the kept one of size {}: \
                             pass the checkpoint its predecessor ended on, or verify the segments together",
                            checkpoint.size, kept.checkpoint.size
                        )));
                    }
                }
                Some((o.previous_note.clone(), checkpoint, o.frontier.clone(), o.seq, o.ts))
            }
        };
        let previous_ts = previous.as_ref().map_or(0, |p| p.last_ts);
        // A trusted checkpoint is checked by the segment holding its last
        // event (the last segment also catches one beyond the log's end).
        let begins = start.as_ref().map_or(0, |s| s.3);
        let ends = ledger.event_count_hint().max(begins);
        let here = trusted.as_ref().filter(|t| {
            let size = t.checkpoint.size;
            size > begins && (last || size <= ends)
        });
        let (report, current) = verify_segment(
            &ledger,
            &key_now,
            here,
            start.map(|(note, checkpoint, frontier, size, _)| {
                (note, checkpoint, frontier, size, previous_ts)
            }),
            VerifyOptions {
                strict: options.strict || !last,
                from_checkpoint: None,
                ..options
            },
        )?;
        let intact = report.is_intact();
        key_now = current;
        let final_note = report.final_checkpoint.clone();
        let last_ts = report.last_ts.unwrap_or(previous_ts);
        total = Some(merge(total, report, file));
        if !intact {
            return Ok(total.expect("merged"));
        }
        previous = Some(Sealed {
            number: *number,
            file: file.clone(),
            final_note: final_note.unwrap_or_default(),
            last_ts,
        });
    }
    let mut total = total.unwrap_or_default();
    if let Some(t) = &trusted {
        let held = total.from.unwrap_or(0) + total.events;
        if t.checkpoint.size > held {
            total.failure = Some(Failure {
                seq: held,
                class: FailureClass::Truncated,
                message: format!(
                    "the trusted checkpoint covers {} events but the ledger's segments hold only {held}: \
                     segments were truncated, rolled back or removed",
                    t.checkpoint.size
                ),
                evidence: vec![t.note.clone()],
            });
        }
    }
    Ok(total)
}

/// The segment verified before the next: what the next must start from.
struct Sealed {
    number: u64,
    file: PathBuf,
    /// Its last checkpoint note.
    final_note: String,
    /// Its last event's time.
    last_ts: u64,
}

fn fail(total: Option<Report>, failure: Failure) -> Report {
    let mut report = total.unwrap_or_default();
    report.failure = Some(failure);
    report
}

/// One report for the segments verified so far.
fn merge(total: Option<Report>, mut next: Report, file: &Path) -> Report {
    if let Some(f) = &mut next.failure {
        f.message = format!("{}: {}", file.display(), f.message);
    }
    let Some(mut total) = total else {
        return next;
    };
    total.events += next.events;
    total.checkpoints += next.checkpoints;
    total
        .recovered_checkpoints
        .extend(next.recovered_checkpoints);
    total.first_ts = total.first_ts.or(next.first_ts);
    total.last_ts = next.last_ts.or(total.last_ts);
    total.final_checkpoint = next.final_checkpoint.or(total.final_checkpoint);
    total.unsigned_tail = next.unsigned_tail;
    total.failure = next.failure;
    for k in next.signing_keys {
        if !total.signing_keys.contains(&k) {
            total.signing_keys.push(k);
        }
    }
    total
}
