//! The verification procedure (specification sections 5.1, 6 and 6.1).
//!
//! One pass over the events in `seq` order. Each event is checked on its own
//! (sequence, canonical encoding, envelope, timestamps, index columns) and
//! then folded into the hash chain and the Merkle frontier. As soon as the
//! first `s_j` events have been processed, checkpoint `j` is checked against
//! the recomputed root and chain head, so that a failure is found, and
//! attributed, at the earliest point the data allows.
//!
//! Signature verification does not depend on the events, and it is the most
//! expensive per-checkpoint step, so a second thread verifies the notes (in
//! order) while this thread hashes. The main thread reads the checkpoint
//! rows a page at a time ahead of the events and hands each to that thread,
//! and only waits for a note's verdict when the events have caught up with
//! that checkpoint. Memory is a page of rows, the Merkle frontier and the
//! chain head, whatever the size of the log.
//!
//! The first failure met stops the procedure: everything after it rests on
//! data already shown to be untrustworthy.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::mpsc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use thiserror::Error;

use crate::cbor;
use crate::chain;
use crate::ledger::{CellError, CheckpointRow, EventRow, Ledger, LedgerError};
use crate::merkle::{self, Frontier};
use crate::note::{self, Checkpoint, VerifierKey};
use crate::progress::Progress;
use crate::report::{rfc3339, Failure, FailureClass, Report, UnsignedTail};
use crate::rotation::KeySchedule;

/// Why the verifier could not run. Unlike a [`Failure`], this says nothing
/// about the ledger's integrity: the input could not be read or the
/// auditor's own input (the trusted checkpoint) is unusable.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The ledger file cannot be opened or read, or is not a ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The trusted checkpoint is malformed or not signed by the pinned key.
    #[error(
        "the trusted checkpoint cannot be used: {0} — pass a checkpoint note saved \
         earlier from this ledger, signed by the pinned key"
    )]
    TrustedCheckpoint(String),
    /// The ledger kept changing under an unlocked read (see
    /// [`Ledger::read_was_stable`]).
    #[error(
        "ledger {} changed while it was being read, {READ_ATTEMPTS} times — \
         retry, or verify a copy of the file",
        .0.display()
    )]
    Unstable(std::path::PathBuf),
    /// The segments of a ledger cannot be found or read (section 9).
    #[error("{0}")]
    Segments(String),
    /// The bundle file cannot be read.
    #[error(
        "cannot read bundle {}: {reason} — pass the path of a Gatehouse evidence bundle \
         (gatehouse export writes one)",
        .path.display()
    )]
    Bundle {
        /// The path given.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Verifies the ledger at `path` against the pinned verifier `key` and, if
/// given, a checkpoint note the auditor kept from earlier
/// (`trusted_checkpoint`, section 6.1).
///
/// Returns a [`Report`] whether or not the ledger is intact; an `Err` means
/// the verification could not be carried out at all.
pub fn verify_ledger(
    path: &Path,
    key: &VerifierKey,
    trusted_checkpoint: Option<&str>,
) -> Result<Report, VerifyError> {
    verify_ledger_with(
        path,
        key,
        VerifyOptions {
            trusted_checkpoint,
            ..VerifyOptions::default()
        },
    )
}

/// How to verify a ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// A checkpoint note the auditor kept from earlier (section 6.1): the
    /// ledger must still hold exactly what it covers.
    pub trusted_checkpoint: Option<&'a str>,
    /// A checkpoint note the auditor kept after verifying the ledger up to
    /// it (section 6.2): only the events after it are read, and they must
    /// extend exactly the tree it signs. Signed by the pinned key.
    pub from_checkpoint: Option<&'a str>,
    /// Report progress on standard error while reading events.
    pub progress: bool,
    /// Treat events after the last checkpoint as a failure in a format-2
    /// ledger too (in format 1 they always are).
    pub strict: bool,
}

/// Verifies the ledger at `path` against the pinned verifier `key`, as
/// `options` say. A verification from a kept checkpoint that the ledger
/// cannot start from (no stored subtree hashes, or they do not rebuild the
/// kept root) reads the whole ledger instead, with the note as a trusted
/// checkpoint: the report's `from` says which was done.
pub fn verify_ledger_with(
    path: &Path,
    key: &VerifierKey,
    options: VerifyOptions<'_>,
) -> Result<Report, VerifyError> {
    if options.trusted_checkpoint.is_some() && options.from_checkpoint.is_some() {
        return Err(VerifyError::TrustedCheckpoint(
            "pass either a trusted checkpoint or a checkpoint to verify from, not both".into(),
        ));
    }
    // A ledger cut into segments (section 9): its files verified in turn.
    let segments = crate::segments::segment_files(path)?;
    if !segments.is_empty() {
        if let Some(note) = options.from_checkpoint {
            return crate::segments::verify_segments_from(&segments, key, note, options);
        }
        return crate::segments::verify_segments(&segments, key, options);
    }
    // One segment after the first, given alone: from its opening record.
    if let Some(number) = crate::segments::opening_segment(path)? {
        return crate::segments::verify_segments(&[(number, path.to_owned())], key, options);
    }
    let trusted_checkpoint = options.trusted_checkpoint.or(options.from_checkpoint);
    // The auditor's own input is checked first: if it is bad, no verdict
    // about the ledger would mean anything. A note signed by a later key of
    // the log's rotation chain is checked once the chain is known.
    let trusted_by_pinned = trusted_checkpoint
        .map(|note| Trusted::open(note, key))
        .transpose()
        .map_err(|e| match e {
            VerifyError::TrustedCheckpoint(why) => why,
            other => other.to_string(),
        });
    // The checkpoint to start from must be signed by the pinned key: the
    // rotations before it are not read.
    let from = match options.from_checkpoint {
        Some(_) => trusted_by_pinned
            .clone()
            .map_err(VerifyError::TrustedCheckpoint)?,
        None => None,
    };
    // A ledger read without locks (see `ledger`) is read again if a writer
    // touched it meanwhile; by then the writer's WAL file exists and the
    // next read is an ordinary, locked one.
    // This covers errors too: a file changing under an unlocked read can
    // look damaged.
    for _ in 0..READ_ATTEMPTS {
        let ledger = Ledger::open(path)?;
        let resume = match &from {
            Some(kept) => Resume::find(&ledger, kept)?,
            None => None,
        };
        let rotations = match &resume {
            Some(r) => ledger.rotations_from(r.size)?,
            None => ledger.rotations()?,
        };
        let schedule = match KeySchedule::build(key, &rotations) {
            Ok(schedule) => schedule,
            Err(reason) => {
                return Ok(Run::idle(&ledger, None).into_report(Some(Failure {
                    seq: 0,
                    class: FailureClass::SignatureInvalid,
                    message: format!("the log's signing keys cannot be followed: {reason}"),
                    evidence: Vec::new(),
                })))
            }
        };
        let trusted = match (&trusted_by_pinned, trusted_checkpoint) {
            _ if resume.is_some() => None,
            (Ok(t), _) => t.clone(),
            (Err(first), Some(note)) => Some(
                schedule
                    .keys()
                    .iter()
                    .find_map(|k| Trusted::open(note, k).ok())
                    .ok_or_else(|| VerifyError::TrustedCheckpoint(first.clone()))?,
            ),
            (Err(first), None) => return Err(VerifyError::TrustedCheckpoint(first.clone())),
        };
        let tail_allowed = ledger.format_version() >= 2 && !options.strict;
        let outcome = verify_open_ledger(
            &ledger,
            &schedule,
            trusted.as_ref(),
            resume,
            options.progress,
            tail_allowed,
        )
        .map(|mut r| {
            r.signing_keys = schedule.keys().iter().map(VerifierKey::label).collect();
            r
        });
        if ledger.read_was_stable() {
            return outcome;
        }
    }
    Err(VerifyError::Unstable(path.to_owned()))
}

/// Verifies one segment of a ledger cut into segments (section 9), whose
/// checkpoints the key `key` signs at its start; `start` is where it starts
/// when it is not the first (the predecessor's final note, its parsed
/// checkpoint, the tree there, its size and its last event's time), checked
/// by the caller against the opening record. Returns the report and the key
/// in force at its end.
pub(crate) fn verify_segment(
    ledger: &Ledger,
    key: &VerifierKey,
    trusted: Option<&Trusted>,
    start: Option<(String, Checkpoint, Frontier, u64, u64)>,
    options: VerifyOptions<'_>,
) -> Result<(Report, VerifierKey), VerifyError> {
    let rotations = ledger.rotations()?;
    let schedule = match KeySchedule::build(key, &rotations) {
        Ok(schedule) => schedule,
        Err(reason) => {
            let report = Run::idle(ledger, None).into_report(Some(Failure {
                seq: 0,
                class: FailureClass::SignatureInvalid,
                message: format!("the log's signing keys cannot be followed: {reason}"),
                evidence: Vec::new(),
            }));
            return Ok((report, key.clone()));
        }
    };
    let resume = start.map(|(_, checkpoint, frontier, size, last_ts)| Resume {
        size,
        checkpoint,
        frontier,
        last_ts,
    });
    let tail_allowed = ledger.format_version() >= 2 && !options.strict;
    let mut report = verify_open_ledger(
        ledger,
        &schedule,
        trusted,
        resume,
        options.progress,
        tail_allowed,
    )?;
    report.signing_keys = schedule.keys().iter().map(VerifierKey::label).collect();
    let current = schedule.keys().last().unwrap_or(key).clone();
    Ok((report, current))
}

/// Where a verification from a kept checkpoint starts: the state of the
/// pass after the kept checkpoint's events, rebuilt without reading them.
struct Resume {
    /// Events the kept checkpoint covers.
    size: u64,
    /// The kept checkpoint.
    checkpoint: Checkpoint,
    frontier: Frontier,
    /// The timestamp of its last event.
    last_ts: u64,
}

impl Resume {
    /// The pass's state after the kept checkpoint's `m` events: the Merkle
    /// frontier at `m` from the writer's stored subtree hashes (section 1)
    /// and the records of the 256-event block that ends at `m`, which must
    /// fold to the kept root; the chain head is the kept note's. `None`
    /// when that cannot be done (the ledger holds fewer events or has no
    /// such checkpoint row, stored hashes are missing or do not rebuild the
    /// root): the caller then reads everything.
    fn find(ledger: &Ledger, kept: &Trusted) -> Result<Option<Resume>, LedgerError> {
        let checkpoint = &kept.checkpoint;
        let m = checkpoint.size;
        // The kept note must be one of this ledger's checkpoints, so that
        // the next row's consistency proof starts from it.
        let body = |note: &str| note.split_once("\n\n").map(|(text, _)| text.to_owned());
        let row = ledger.checkpoint_page(Some(m as i64 - 1), 1)?;
        let same = row.first().is_some_and(|r| {
            r.size == Some(m as i64) && r.note.as_deref().ok().and_then(body) == body(&kept.note)
        });
        if !same {
            return Ok(None);
        }
        let tail_start = (m - 1) / BLOCK * BLOCK;
        let mut leaves = Vec::with_capacity((m - tail_start) as usize);
        let mut last_ts = None;
        let mut next = tail_start;
        ledger.for_each_event_from(tail_start, |row| {
            if next == m || row.seq != Some(next as i64) {
                return ControlFlow::Break(());
            }
            let Ok(data) = row.data else {
                return ControlFlow::Break(());
            };
            leaves.push(merkle::leaf_hash(data));
            if next == m - 1 {
                last_ts = cbor::check_record(data).ok().map(|e| e.ts);
            }
            next += 1;
            ControlFlow::Continue(())
        })?;
        let Some(last_ts) = last_ts.filter(|_| next == m) else {
            return Ok(None);
        };
        let mut subtrees = Vec::new();
        let mut offset = 0u64;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if m & width == 0 {
                continue;
            }
            match subtree_hash(ledger, offset, offset + width, tail_start, &leaves)? {
                Some(hash) => subtrees.push(hash),
                None => return Ok(None),
            }
            offset += width;
        }
        let Some(frontier) = Frontier::from_subtrees(m, subtrees) else {
            return Ok(None);
        };
        if frontier.root() != checkpoint.root {
            return Ok(None);
        }
        Ok(Some(Resume {
            size: m,
            checkpoint: checkpoint.clone(),
            frontier,
            last_ts,
        }))
    }
}

/// Leaves of the smallest stored subtree (section 1, `subtrees`).
const BLOCK: u64 = 256;

/// `MTH(D[lo:hi])` of a complete aligned subtree: from the leaves of the
/// records from `tail_start` on, from the writer's stored hashes before.
fn subtree_hash(
    ledger: &Ledger,
    lo: u64,
    hi: u64,
    tail_start: u64,
    tail: &[merkle::Hash],
) -> Result<Option<merkle::Hash>, LedgerError> {
    let width = hi - lo;
    if lo >= tail_start {
        let from = (lo - tail_start) as usize;
        return Ok(tail.get(from..from + width as usize).map(merkle::root));
    }
    if hi <= tail_start && width >= BLOCK {
        return ledger.subtree(width.trailing_zeros(), lo / width);
    }
    let half = width / 2;
    let Some(left) = subtree_hash(ledger, lo, lo + half, tail_start, tail)? else {
        return Ok(None);
    };
    let Some(right) = subtree_hash(ledger, lo + half, hi, tail_start, tail)? else {
        return Ok(None);
    };
    Ok(Some(merkle::node_hash(&left, &right)))
}

/// How many times a ledger that changed while being read is read again.
const READ_ATTEMPTS: usize = 3;

fn verify_open_ledger(
    ledger: &Ledger,
    keys: &KeySchedule,
    trusted: Option<&Trusted>,
    resume: Option<Resume>,
    progress: bool,
    tail_allowed: bool,
) -> Result<Report, VerifyError> {
    let foreign = ledger.foreign_objects()?;
    if !foreign.is_empty() {
        let run = Run::idle(ledger, trusted);
        return Ok(run.into_report(Some(Failure {
            seq: 0,
            class: FailureClass::SchemaForeign,
            message: format!(
                "the file holds schema objects the ledger format does not define ({}): \
                 they can show readers other content than the signed records",
                foreign.join(", ")
            ),
            evidence: Vec::new(),
        })));
    }
    std::thread::scope(|scope| {
        let (sender, verdicts) = mpsc::channel();
        let (rows, to_check) = mpsc::sync_channel(LOOKAHEAD);
        let kept = resume.as_ref().map(|r| r.checkpoint.clone());
        scope.spawn(move || check_notes(to_check, keys, kept, sender));
        let start = resume.as_ref().map_or(0, |r| r.size);
        let checkpoints = Checkpoints::new(ledger, rows, start)?;
        let mut run = Run::new(ledger, checkpoints, verdicts, trusted);
        if let Some(resume) = resume {
            run.resume(resume);
        }
        if progress {
            run.progress = Some(Progress::new(ledger.event_count_hint()));
        }
        run.tail_allowed = tail_allowed;
        let failure = match run.due_checks() {
            Err(failure) => Some(failure),
            Ok(()) => match ledger.for_each_event_from(start, |row| match run.event(row) {
                Ok(()) => ControlFlow::Continue(()),
                Err(failure) => ControlFlow::Break(failure),
            })? {
                Some(failure) => Some(failure),
                None => run.finish().err(),
            },
        };
        if let Some(p) = &run.progress {
            p.done();
        }
        if let Some(e) = run.checkpoints.read_error.take() {
            return Err(e.into());
        }
        // `into_report` consumes `run`, dropping the receiver and the row
        // sender before the scope joins the note thread: a thread still
        // verifying notes after an early failure stops at its next row.
        Ok(run.into_report(failure))
    })
}

/// The longest a format-2 writer may leave an event unsigned (section 5.3).
const MAX_SIGNING_DELAY_NS: u64 = 60_000_000_000;

/// Checkpoint rows the pass reads ahead of the events, and the note thread
/// checks ahead of them: the memory of a verification is this many rows,
/// whatever the size of the log.
const LOOKAHEAD: usize = 1024;

/// The checkpoint rows still to be checked, read a page at a time (the
/// whole table for a ledger whose sizes are not all integers). Each row
/// read goes to the note thread; its size and note stay here until the
/// events reach it.
struct Checkpoints<'a> {
    ledger: &'a Ledger,
    /// Rows read, not yet due: their size and note.
    pending: VecDeque<(u64, Result<String, CellError>)>,
    /// The rest of an unpaged read.
    unpaged: Option<std::vec::IntoIter<CheckpointRow>>,
    /// The last integer size read, where the next page starts.
    after: Option<i64>,
    exhausted: bool,
    to_check: mpsc::SyncSender<CheckpointRow>,
    /// A read that failed: the verification could not be carried out.
    read_error: Option<LedgerError>,
}

impl<'a> Checkpoints<'a> {
    /// The rows whose sizes exceed `after` (all rows when it is 0).
    fn new(
        ledger: &'a Ledger,
        to_check: mpsc::SyncSender<CheckpointRow>,
        after: u64,
    ) -> Result<Self, LedgerError> {
        let unpaged = if after == 0 && ledger.odd_checkpoint_sizes()? {
            Some(ledger.checkpoints()?.into_iter())
        } else {
            None
        };
        let mut checkpoints = Checkpoints {
            ledger,
            pending: VecDeque::with_capacity(2 * LOOKAHEAD),
            unpaged,
            after: (after > 0).then_some(after as i64),
            exhausted: false,
            to_check,
            read_error: None,
        };
        checkpoints.fill();
        Ok(checkpoints)
    }

    /// Reads ahead until `LOOKAHEAD` rows are pending or none are left.
    fn fill(&mut self) {
        while self.pending.len() < LOOKAHEAD && !self.exhausted {
            let page = match &mut self.unpaged {
                Some(rows) => rows.by_ref().take(LOOKAHEAD).collect(),
                None => match self.ledger.checkpoint_page(self.after, LOOKAHEAD) {
                    Ok(page) => page,
                    Err(e) => {
                        self.read_error = Some(e);
                        Vec::new()
                    }
                },
            };
            if page.is_empty() {
                self.exhausted = true;
            }
            for row in page {
                if let Some(size) = row.size {
                    self.after = Some(size);
                }
                self.pending.push_back((due_at(&row), row.note.clone()));
                // (A note thread that stopped after a failing row needs no more.)
                let _ = self.to_check.send(row);
            }
        }
    }

    /// The size the next row is due at, if there is one.
    fn next_due(&mut self) -> Option<u64> {
        if self.pending.is_empty() {
            self.fill();
        }
        self.pending.front().map(|(due, _)| *due)
    }

    /// Takes the next row's note, once it has been checked.
    fn take(&mut self) -> Option<Result<String, CellError>> {
        let note = self.pending.pop_front().map(|(_, note)| note);
        if self.pending.len() < LOOKAHEAD / 2 {
            self.fill();
        }
        note
    }
}

/// The trusted checkpoint of section 6.1, already verified.
#[derive(Clone)]
pub(crate) struct Trusted {
    pub(crate) note: String,
    pub(crate) checkpoint: Checkpoint,
}

impl Trusted {
    pub(crate) fn open(note: &str, key: &VerifierKey) -> Result<Trusted, VerifyError> {
        let checkpoint = note::open_checkpoint(note, key)
            .map_err(|e| VerifyError::TrustedCheckpoint(e.to_string()))?;
        if checkpoint.size == 0 {
            return Err(VerifyError::TrustedCheckpoint(
                "it commits to 0 events; Gatehouse checkpoints cover at least one".into(),
            ));
        }
        Ok(Trusted {
            note: note.to_owned(),
            checkpoint,
        })
    }
}

/// What the note thread concluded about one checkpoint row: either a
/// failure of the row itself (format, signature), or its parsed body with
/// the outcome of its consistency proof (which is reported after the root
/// and chain checks, which need the events).
type Verdict = Result<CheckedNote, (FailureClass, String)>;

struct CheckedNote {
    checkpoint: Checkpoint,
    proof: Result<(), String>,
}

/// The size a row is due at. A size that is not a positive integer is due
/// at once, so that the row is checked (and rejected) as soon as the rows
/// before it have been.
fn due_at(row: &CheckpointRow) -> u64 {
    row.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
}

/// The note thread: checks every checkpoint row that does not need the
/// events, in order, as the pass reads them, and sends one verdict per row.
/// Stops after the first failing row (nothing after it will be looked at)
/// or when the pass is over.
fn check_notes(
    rows: mpsc::Receiver<CheckpointRow>,
    keys: &KeySchedule,
    kept: Option<Checkpoint>,
    verdicts: mpsc::Sender<Verdict>,
) {
    let mut previous: Option<Checkpoint> = kept;
    for row in rows {
        let key = keys.key_after(previous.as_ref().map_or(0, |c| c.size));
        let verdict = check_note(&row, key, previous.as_ref());
        let stop = match &verdict {
            Ok(checked) => {
                previous = Some(checked.checkpoint.clone());
                false
            }
            Err(_) => true,
        };
        if verdicts.send(verdict).is_err() || stop {
            return;
        }
    }
}

fn check_note(row: &CheckpointRow, key: &VerifierKey, previous: Option<&Checkpoint>) -> Verdict {
    use FailureClass::{CheckpointInvalid, SignatureInvalid};
    let size = match row.size {
        Some(size) if size >= 1 => size as u64,
        Some(size) => {
            return Err((
                CheckpointInvalid,
                format!("checkpoint row has size {size}; sizes start at 1"),
            ))
        }
        None => {
            return Err((
                CheckpointInvalid,
                "checkpoint row's size is not an integer".into(),
            ))
        }
    };
    let what = format!("checkpoint for size {size}");
    let note = row
        .note
        .as_deref()
        .map_err(|e| (CheckpointInvalid, format!("{what}: its note {e}")))?;
    let text = note::open(note, key).map_err(|e| {
        let class = if e.is_signature_failure() {
            SignatureInvalid
        } else {
            CheckpointInvalid
        };
        (class, format!("{what}: {e}"))
    })?;
    let checkpoint =
        Checkpoint::parse(text).map_err(|e| (CheckpointInvalid, format!("{what}: {e}")))?;
    if checkpoint.size != size {
        return Err((
            CheckpointInvalid,
            format!(
                "{what}: the note commits to size {}, not the row's size",
                checkpoint.size
            ),
        ));
    }
    if let Some(previous) = previous {
        if checkpoint.origin != previous.origin {
            return Err((
                CheckpointInvalid,
                format!(
                    "{what}: origin {:?} differs from the earlier checkpoints' {:?}",
                    checkpoint.origin, previous.origin
                ),
            ));
        }
    }
    let proof = check_proof(row, &checkpoint, previous).map_err(|e| format!("{what}: {e}"));
    Ok(CheckedNote { checkpoint, proof })
}

/// The row's consistency proof from the previous checkpoint (section 4.3):
/// empty for the first, exactly the right length for the others.
fn check_proof(
    row: &CheckpointRow,
    checkpoint: &Checkpoint,
    previous: Option<&Checkpoint>,
) -> Result<(), String> {
    let bytes = row.proof.as_deref().map_err(|e| format!("its proof {e}"))?;
    let proof = merkle::split_proof(bytes).map_err(|e| e.to_string())?;
    match previous {
        None if proof.is_empty() => Ok(()),
        None => Err(format!(
            "the first checkpoint's proof must be empty, but it has {} hashes",
            proof.len()
        )),
        Some(previous) => merkle::verify_consistency(
            previous.size,
            checkpoint.size,
            &previous.root,
            &checkpoint.root,
            &proof,
        )
        .map_err(|e| {
            format!(
                "consistency proof from size {} does not verify: {e}",
                previous.size
            )
        }),
    }
}

/// The state of one pass over the events.
struct Run<'a> {
    ledger: &'a Ledger,
    checkpoints: Checkpoints<'a>,
    verdicts: mpsc::Receiver<Verdict>,
    trusted: Option<&'a Trusted>,
    /// Whether any checkpoint row was checked or is pending.
    any_checkpoint: bool,
    /// The first event read: 0, or the size of the kept checkpoint the
    /// pass resumed from.
    start: u64,
    /// The progress line, when asked for.
    progress: Option<Progress>,
    /// Whether events after the last checkpoint are an unsigned tail
    /// (format 2) rather than a failure.
    tail_allowed: bool,
    /// The first event after the last checkpoint, and its timestamp.
    tail: Option<(u64, u64)>,
    /// Sizes of the checkpoints marked as recovered that passed.
    recovered: Vec<u64>,
    /// `s_{j-1}`: the size of the last checkpoint that passed (0 before
    /// any), which is where a failure of the next one is reported.
    covered: u64,
    /// Events processed.
    count: u64,
    frontier: Frontier,
    link: [u8; 32],
    first_ts: Option<u64>,
    last_ts: Option<u64>,
    /// The origin of the checkpoints that passed.
    origin: Option<String>,
    verified_checkpoints: u64,
    final_checkpoint: Option<String>,
}

fn b64(hash: &[u8; 32]) -> String {
    BASE64.encode(hash)
}

impl<'a> Run<'a> {
    fn new(
        ledger: &'a Ledger,
        mut checkpoints: Checkpoints<'a>,
        verdicts: mpsc::Receiver<Verdict>,
        trusted: Option<&'a Trusted>,
    ) -> Run<'a> {
        let any_checkpoint = checkpoints.next_due().is_some();
        Run {
            ledger,
            checkpoints,
            verdicts,
            trusted,
            any_checkpoint,
            start: 0,
            progress: None,
            tail_allowed: false,
            tail: None,
            recovered: Vec::new(),
            covered: 0,
            count: 0,
            frontier: Frontier::new(),
            link: chain::GENESIS,
            first_ts: None,
            last_ts: None,
            origin: None,
            verified_checkpoints: 0,
            final_checkpoint: None,
        }
    }

    /// Starts the pass after a kept checkpoint's events (section 6.2).
    fn resume(&mut self, resume: Resume) {
        self.any_checkpoint = true;
        self.start = resume.size;
        self.count = resume.size;
        self.covered = resume.size;
        self.frontier = resume.frontier;
        self.link = resume.checkpoint.chain;
        self.last_ts = Some(resume.last_ts);
        self.origin = Some(resume.checkpoint.origin);
    }

    /// A run that reads nothing: for a failure found before the pass.
    fn idle(ledger: &'a Ledger, trusted: Option<&'a Trusted>) -> Run<'a> {
        let (to_check, _) = mpsc::sync_channel(0);
        let checkpoints = Checkpoints {
            ledger,
            pending: VecDeque::new(),
            unpaged: None,
            after: None,
            exhausted: true,
            to_check,
            read_error: None,
        };
        Run::new(ledger, checkpoints, mpsc::channel().1, trusted)
    }

    fn fail(seq: u64, class: FailureClass, message: String) -> Failure {
        Failure {
            seq,
            class,
            message,
            evidence: Vec::new(),
        }
    }

    /// Checks one event row (the first five rows of the section 6 table, in
    /// that order), folds it into the chain and the tree, and then checks
    /// whatever checkpoints have become due.
    #[inline]
    fn event(&mut self, row: EventRow<'_>) -> Result<(), Failure> {
        use FailureClass::*;
        let seq = self.count;
        let in_tail = self.checkpoints.next_due().is_none();
        if in_tail && !self.tail_allowed {
            // No checkpoint left to cover this event (section 5.1: s_c = n).
            let message = if !self.any_checkpoint {
                "the ledger has events but no checkpoint; no event is signed".to_owned()
            } else {
                format!("events from seq {seq} on are not covered by any checkpoint")
            };
            return Err(Self::fail(self.covered, Unsigned, message));
        }
        if row.seq != i64::try_from(seq).ok() {
            let message = match row.seq {
                Some(found) if found > seq as i64 => {
                    format!("expected events.seq {seq}, found {found}: events are missing")
                }
                Some(found) => format!(
                    "expected events.seq {seq}, found {found}: sequence numbers repeat or go back"
                ),
                None => format!("expected events.seq {seq}, found a value that is not an integer"),
            };
            return Err(Self::fail(seq, SequenceGap, message));
        }
        let data = row
            .data
            .map_err(|e| Self::fail(seq, NonCanonical, format!("events.data {e}")))?;
        let envelope = cbor::check_record(data)
            .map_err(|e| Self::fail(seq, NonCanonical, format!("record is not canonical: {e}")))?;
        if envelope.seq != seq {
            return Err(Self::fail(
                seq,
                SequenceMismatch,
                format!(
                    "the record's seq is {} but events.seq is {seq}",
                    envelope.seq
                ),
            ));
        }
        if let Some(previous) = self.last_ts {
            if envelope.ts < previous {
                return Err(Self::fail(
                    seq,
                    TimestampBackwards,
                    format!(
                        "the record's ts {} ({}) is earlier than the previous event's {} ({})",
                        envelope.ts,
                        rfc3339(envelope.ts),
                        previous,
                        rfc3339(previous)
                    ),
                ));
            }
        }
        let index = |column: &str, stored: Option<i64>, record: u64| {
            if stored.and_then(|v| u64::try_from(v).ok()) == Some(record) {
                Ok(())
            } else {
                let stored = stored.map_or("a non-integer".to_owned(), |v| v.to_string());
                Err(Self::fail(
                    seq,
                    IndexMismatch,
                    format!("events.{column} is {stored} but the record's {column} is {record}"),
                ))
            }
        };
        index("ts", row.ts, envelope.ts)?;
        index("kind", row.kind, envelope.kind)?;

        if in_tail && self.tail.is_none() {
            self.tail = Some((seq, envelope.ts));
        }
        self.link = chain::link(&self.link, data);
        self.frontier.push(merkle::leaf_hash(data));
        self.first_ts.get_or_insert(envelope.ts);
        self.last_ts = Some(envelope.ts);
        self.count += 1;
        if self.count.is_multiple_of(crate::progress::EVERY) {
            if let Some(progress) = &mut self.progress {
                progress.tick(self.count - self.start);
            }
        }
        self.due_checks()
    }

    /// Checks every checkpoint that has become due (its size equals the
    /// events processed), then the trusted checkpoint if it is due: the
    /// ledger is checked against itself before it is checked against the
    /// auditor's note.
    fn due_checks(&mut self) -> Result<(), Failure> {
        while self
            .checkpoints
            .next_due()
            .is_some_and(|due| due <= self.count)
        {
            self.checkpoint()?;
        }
        if self
            .trusted
            .as_ref()
            .is_some_and(|t| t.checkpoint.size == self.count)
        {
            self.check_trusted()?;
        }
        Ok(())
    }

    /// Checks checkpoint row `next`, which is due now. Failures are reported
    /// at `covered`, the first event this checkpoint newly covers.
    fn checkpoint(&mut self) -> Result<(), Failure> {
        use FailureClass::*;
        let at = self.covered;
        let checked = self
            .verdicts
            .recv()
            .expect("the note thread sends a verdict for every row it reaches")
            .map_err(|(class, message)| Self::fail(at, class, message))?;
        let checkpoint = &checked.checkpoint;
        let size = checkpoint.size;
        let root = self.frontier.root();
        if checkpoint.root != root {
            return Err(Self::fail(
                at,
                RootMismatch,
                format!(
                    "checkpoint for size {size} commits to root {} but events 0..{} hash to {}",
                    b64(&checkpoint.root),
                    size - 1,
                    b64(&root)
                ),
            ));
        }
        if checkpoint.chain != self.link {
            return Err(Self::fail(
                at,
                ChainMismatch,
                format!(
                    "checkpoint for size {size} commits to chain head {} but events 0..{} chain to {}",
                    b64(&checkpoint.chain),
                    size - 1,
                    b64(&self.link)
                ),
            ));
        }
        if let Err(message) = &checked.proof {
            return Err(Self::fail(at, ProofInvalid, message.clone()));
        }
        self.origin = Some(checkpoint.origin.clone());
        if checkpoint.recovered {
            self.recovered.push(size);
        }
        self.covered = size;
        self.verified_checkpoints += 1;
        self.final_checkpoint = self.checkpoints.take().and_then(Result::ok);
        Ok(())
    }

    /// Section 6.1: the first `m` events must be exactly those the trusted
    /// checkpoint committed to.
    fn check_trusted(&self) -> Result<(), Failure> {
        let Some(trusted) = self.trusted else {
            return Ok(());
        };
        let t = &trusted.checkpoint;
        let root = self.frontier.root();
        let difference = if t.root != root {
            Some(format!(
                "the ledger's first {} events hash to root {}, but the trusted checkpoint commits to {}",
                t.size,
                b64(&root),
                b64(&t.root)
            ))
        } else if t.chain != self.link {
            Some(format!(
                "the ledger's first {} events chain to {}, but the trusted checkpoint commits to {}",
                t.size,
                b64(&self.link),
                b64(&t.chain)
            ))
        } else {
            match &self.origin {
                Some(origin) if *origin != t.origin => Some(format!(
                    "the ledger's checkpoints have origin {origin:?}, but the trusted checkpoint has {:?}",
                    t.origin
                )),
                _ => None,
            }
        };
        match difference {
            None => Ok(()),
            Some(message) => Err(Failure {
                seq: t.size - 1,
                class: FailureClass::Forked,
                message: format!(
                    "{message}: the ledger has forked from the one the trusted checkpoint saw \
                     (evidence: the trusted checkpoint, then the ledger's last checkpoint)"
                ),
                evidence: self.evidence(trusted),
            }),
        }
    }

    /// The trusted note and the ledger's last checkpoint note: together they
    /// show a third party two signed, incompatible statements.
    fn evidence(&self, trusted: &Trusted) -> Vec<String> {
        let mut evidence = vec![trusted.note.clone()];
        match self.ledger.last_checkpoint_note() {
            Ok(Some(note)) => evidence.push(
                note.unwrap_or_else(|e| format!("(the ledger's last checkpoint note {e})\n")),
            ),
            Ok(None) => {}
            Err(e) => evidence.push(format!(
                "(the ledger's last checkpoint cannot be read: {e})\n"
            )),
        }
        evidence
    }

    /// After the last event: checkpoints that were never due claim events
    /// the ledger does not hold, and a trusted checkpoint that was never due
    /// covers events the ledger no longer holds.
    fn finish(&mut self) -> Result<(), Failure> {
        let n = self.count;
        if let (Some((first, first_ts)), Some(last_ts)) = (self.tail, self.last_ts) {
            // A writer signs within its delay, at most a minute (section 5.3),
            // so an unsigned tail spans no longer: a longer one lost the
            // checkpoints that covered it.
            if last_ts.saturating_sub(first_ts) > MAX_SIGNING_DELAY_NS {
                return Err(Self::fail(
                    first,
                    FailureClass::Unsigned,
                    format!(
                        "events {first} to {} are not covered by any checkpoint and span {:.1} s, longer \
                         than the longest signing delay a writer may use (60 s): checkpoints that \
                         covered them were removed, or never written",
                        n - 1,
                        (last_ts - first_ts) as f64 / 1e9
                    ),
                ));
            }
        }
        if let Some(due) = self.checkpoints.next_due() {
            return Err(Self::fail(
                n,
                FailureClass::CheckpointBeyondLog,
                format!("a checkpoint claims {due} events but the ledger holds only {n}"),
            ));
        }
        if let Some(trusted) = self.trusted {
            if trusted.checkpoint.size > n {
                return Err(Failure {
                    seq: n,
                    class: FailureClass::Truncated,
                    message: format!(
                        "the trusted checkpoint covers {} events but the ledger holds only {n}: \
                         it was truncated or rolled back (evidence: the trusted checkpoint, then \
                         the ledger's last checkpoint)",
                        trusted.checkpoint.size
                    ),
                    evidence: self.evidence(trusted),
                });
            }
        }
        Ok(())
    }

    fn into_report(self, failure: Option<Failure>) -> Report {
        Report {
            events: self.count - self.start,
            from: (self.start > 0).then_some(self.start),
            unsigned_tail: self.tail.map(|(first, first_ts)| UnsignedTail {
                events: self.count - first,
                first_ts,
                last_ts: self.last_ts.unwrap_or(first_ts),
            }),
            recovered_checkpoints: self.recovered,
            checkpoints: self.verified_checkpoints,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            final_checkpoint: self.final_checkpoint,
            failure,
            signing_keys: Vec::new(),
        }
    }
}
