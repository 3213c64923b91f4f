//! The bundle verification procedure (specification section 8.5).
//!
//! A bundle is checked against the pinned key alone: its checkpoint note
//! must carry a valid signature, and every disclosed record must hash, along
//! its inclusion proof, to that checkpoint's root at the position it claims.
//! Nothing in the bundle is trusted because the bundle says so. The first
//! failure stops the procedure, as for a ledger (section 6).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bundle::{self, Entry, Selection};
use crate::cbor::{self, Envelope};
use crate::merkle;
use crate::note::{self, Checkpoint, NoteError, VerifierKey};
use crate::report::{
    rfc3339, BundleFailure, BundleReport, Completeness, FailureClass, SelectionSummary,
};
use crate::verify::{Trusted, VerifyError};

/// Verifies the bundle file at `path` against the pinned verifier `key`
/// and, if given, a checkpoint note the auditor kept (`trusted_checkpoint`)
/// and the digest recorded when the bundle was exported (`expected_digest`,
/// `sha256:<hex>` or just the hex).
///
/// Returns a [`BundleReport`] whether or not the bundle is intact (a file
/// that is not a bundle at all fails as `bundle_malformed`; tell bundles
/// from ledgers first with [`bundle::is_bundle`]); an `Err` means the
/// verification could not be carried out (unreadable file, unusable trusted
/// checkpoint).
pub fn verify_bundle(
    path: &Path,
    key: &VerifierKey,
    trusted_checkpoint: Option<&str>,
    expected_digest: Option<&str>,
) -> Result<BundleReport, VerifyError> {
    let bytes = std::fs::read(path).map_err(|e| VerifyError::Bundle {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    verify_bundle_bytes(&bytes, key, trusted_checkpoint, expected_digest)
}

/// [`verify_bundle`] on a bundle already in memory.
pub fn verify_bundle_bytes(
    bytes: &[u8],
    key: &VerifierKey,
    trusted_checkpoint: Option<&str>,
    expected_digest: Option<&str>,
) -> Result<BundleReport, VerifyError> {
    // The auditor's own input first: if it is bad, no verdict would mean
    // anything.
    let trusted = trusted_checkpoint
        .map(|note| Trusted::open(note, key))
        .transpose()?;
    let digest = digest(bytes);
    let mut run = Run {
        key,
        report: BundleReport {
            selection: None,
            events: 0,
            seqs: Vec::new(),
            shapes: 0,
            first_ts: None,
            last_ts: None,
            checkpoint_size: None,
            checkpoint: None,
            completeness: None,
            consistent_with: Vec::new(),
            trusted_checkpoint: None,
            digest,
            failure: None,
        },
    };
    let mut outcome = run.check(bytes, trusted.as_ref());
    if outcome.is_ok() {
        if let Some(expected) = expected_digest {
            outcome = run.check_digest(expected);
        }
    }
    let mut report = run.report;
    report.failure = outcome.err();
    Ok(report)
}

/// `sha256:<hex>` of a bundle file's bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn fail(seq: Option<u64>, class: FailureClass, message: String) -> BundleFailure {
    BundleFailure {
        seq,
        class,
        message,
        evidence: Vec::new(),
    }
}

fn note_failure(what: &str, e: NoteError) -> BundleFailure {
    let class = if e.is_signature_failure() {
        FailureClass::SignatureInvalid
    } else {
        FailureClass::CheckpointInvalid
    };
    fail(None, class, format!("{what}: {e}"))
}

fn summary(selection: Selection<'_>) -> SelectionSummary {
    match selection {
        Selection::Session(s) => SelectionSummary::Session(s),
        Selection::Identity(i) => SelectionSummary::Identity(i.to_owned()),
        Selection::TimeRange { from, to } => SelectionSummary::TimeRange { from, to },
    }
}

struct Run<'k> {
    key: &'k VerifierKey,
    report: BundleReport,
}

impl Run<'_> {
    fn check(&mut self, bytes: &[u8], trusted: Option<&Trusted>) -> Result<(), BundleFailure> {
        use FailureClass::*;
        let b = bundle::parse(bytes).map_err(|e| {
            fail(
                None,
                BundleMalformed,
                format!(
                    "the file is not a well-formed {} bundle: {e}",
                    bundle::FORMAT
                ),
            )
        })?;
        self.report.selection = Some(summary(b.selection));
        if b.key != self.key.label() {
            return Err(fail(
                None,
                KeyMismatch,
                format!(
                    "the bundle names {} as the key that signed its checkpoint, but the pinned key is {}: \
                     pass that log's verifier key, or ask for a bundle of this key's log",
                    b.key,
                    self.key.label()
                ),
            ));
        }
        let checkpoint = note::open_checkpoint(b.checkpoint, self.key)
            .map_err(|e| note_failure("the bundle's checkpoint", e))?;
        if checkpoint.size == 0 {
            return Err(fail(
                None,
                CheckpointInvalid,
                "the bundle's checkpoint commits to 0 events".into(),
            ));
        }
        self.report.checkpoint_size = Some(checkpoint.size);
        self.report.checkpoint = Some(b.checkpoint.to_owned());

        let earlier = self.check_consistency(&b, &checkpoint)?;
        self.check_events(&b, &checkpoint)?;
        if let Some(trusted) = trusted {
            check_trusted(trusted, &b, &checkpoint, &earlier)?;
            self.report.trusted_checkpoint = Some(trusted.checkpoint.size);
        }
        Ok(())
    }

    /// Every consistency proof is checked, whether or not the auditor
    /// passed a trusted checkpoint: a bundle carries nothing unverified.
    /// Returns the earlier checkpoints with their notes.
    fn check_consistency<'b>(
        &mut self,
        b: &bundle::Bundle<'b>,
        checkpoint: &Checkpoint,
    ) -> Result<Vec<(Checkpoint, &'b str)>, BundleFailure> {
        use FailureClass::*;
        let n = checkpoint.size;
        let count = b.consistency.len();
        let mut earlier: Vec<(Checkpoint, &str)> = Vec::with_capacity(count);
        for (i, c) in b.consistency.iter().enumerate() {
            let what = format!("consistency proof {} of {count}", i + 1);
            let old = note::open_checkpoint(c.note, self.key)
                .map_err(|e| note_failure(&format!("{what}: its earlier checkpoint"), e))?;
            let m = old.size;
            if old.origin != checkpoint.origin {
                return Err(fail(
                    None,
                    CheckpointInvalid,
                    format!(
                        "{what}: the earlier checkpoint's origin {:?} differs from the bundle checkpoint's {:?}",
                        old.origin, checkpoint.origin
                    ),
                ));
            }
            if m == 0 || m > n {
                return Err(fail(
                    None,
                    CheckpointInvalid,
                    format!(
                        "{what}: the earlier checkpoint covers {m} events; it must cover between 1 and {n}, \
                         the bundle checkpoint's size"
                    ),
                ));
            }
            if let Some((previous, _)) = earlier.last() {
                if m <= previous.size {
                    return Err(fail(
                        None,
                        BundleMalformed,
                        format!(
                            "{what}: its earlier checkpoint's size {m} does not exceed the previous proof's {}; \
                             proofs are listed by increasing size, one per size",
                            previous.size
                        ),
                    ));
                }
            }
            let proof = merkle::split_proof(c.proof)
                .map_err(|e| fail(None, ProofInvalid, format!("{what}: {e}")))?;
            merkle::verify_consistency(m, n, &old.root, &checkpoint.root, &proof).map_err(|e| {
                fail(
                    None,
                    ProofInvalid,
                    format!("{what}, from size {m} to {n}, does not verify: {e}"),
                )
            })?;
            if m == n && old.chain != checkpoint.chain {
                return Err(BundleFailure {
                    seq: None,
                    class: Forked,
                    message: format!(
                        "{what}: two checkpoints of size {n} commit to different chain heads: \
                         the log's key signed a fork (evidence: both notes)"
                    ),
                    evidence: vec![c.note.to_owned(), b.checkpoint.to_owned()],
                });
            }
            earlier.push((old, c.note));
        }
        self.report.consistent_with = earlier.iter().map(|(c, _)| c.size).collect();
        Ok(earlier)
    }

    /// The events, then the boundary events of a time range.
    fn check_events(
        &mut self,
        b: &bundle::Bundle<'_>,
        checkpoint: &Checkpoint,
    ) -> Result<(), BundleFailure> {
        use FailureClass::*;
        let time_range = match b.selection {
            Selection::TimeRange { from, to } => {
                if from >= to {
                    return Err(fail(
                        None,
                        BundleMalformed,
                        format!(
                            "the selection's time range is empty: from {} is not before to {}",
                            rfc3339(from),
                            rfc3339(to)
                        ),
                    ));
                }
                Some((from, to))
            }
            _ => None,
        };
        if time_range.is_none() && (b.before.is_some() || b.after.is_some()) {
            return Err(fail(
                None,
                BundleMalformed,
                "boundary events prove time ranges complete; this bundle selects a session or an \
                 identity, so it must carry none"
                    .into(),
            ));
        }
        if b.events.is_empty() && b.before.is_none() && b.after.is_none() {
            return Err(fail(
                None,
                BundleMalformed,
                "the bundle holds no event and no boundary event, so it proves nothing".into(),
            ));
        }
        // The shapes the disclosed statements refer to (section 7.2): a
        // bundle holds them beside the events it selects, so that their SQL
        // can be read. Each must be the one its statement names.
        let mut references: BTreeMap<u64, (u64, &[u8])> = BTreeMap::new();
        for entry in b.before.iter().chain(&b.events).chain(&b.after) {
            if let Ok(Some((shape, digest))) = bundle::shape_reference(entry.record) {
                references.entry(shape).or_insert((entry.seq, digest));
            }
        }
        let mut last: Option<u64> = None;
        let mut previous: Option<(u64, u64)> = None;
        let mut selected = Vec::new();
        for entry in &b.events {
            let seq = entry.seq;
            if let Some(prev) = last {
                if seq <= prev {
                    return Err(fail(
                        Some(seq),
                        SequenceGap,
                        format!(
                            "event {seq} follows event {prev}: events are listed by increasing \
                             sequence number, so it is a duplicate or out of order"
                        ),
                    ));
                }
            }
            last = Some(seq);
            let envelope = authenticate(entry, checkpoint, "event")?;
            if let Some((by, digest)) = references.remove(&seq) {
                check_shape(entry, by, digest)?;
                if matches_selection(entry, &envelope, b.selection).is_err() {
                    self.report.shapes += 1;
                    continue;
                }
            }
            if let Some((prev, _)) = previous {
                if time_range.is_some() && seq != prev + 1 {
                    return Err(fail(
                        Some(prev + 1),
                        SequenceGap,
                        format!(
                            "event {} is missing: a time-range bundle holds consecutive events, \
                             but event {prev} is followed by event {seq}",
                            prev + 1
                        ),
                    ));
                }
            }
            if let Some((_, prev_ts)) = previous {
                if envelope.ts < prev_ts {
                    return Err(fail(
                        Some(seq),
                        TimestampBackwards,
                        format!(
                            "event {seq}'s ts {} ({}) is earlier than the previous event's {} ({})",
                            envelope.ts,
                            rfc3339(envelope.ts),
                            prev_ts,
                            rfc3339(prev_ts)
                        ),
                    ));
                }
            }
            matches_selection(entry, &envelope, b.selection)?;
            previous = Some((seq, envelope.ts));
            selected.push(seq);
            self.report.events += 1;
            self.report.seqs.push(seq);
            self.report.first_ts.get_or_insert(envelope.ts);
            self.report.last_ts = Some(envelope.ts);
        }
        if let Some((shape, (by, _))) = references.into_iter().next() {
            return Err(fail(
                Some(by),
                BundleMalformed,
                format!(
                    "event {by} records a statement whose shape is event {shape}, which the bundle \
                     does not hold: the statement cannot be read (docs/ledger-format.md, section 7.2)"
                ),
            ));
        }
        self.report.completeness = Some(match time_range {
            None => Completeness::NotProvable,
            Some((from, to)) => check_bounds(b, checkpoint, &selected, from, to)?,
        });
        Ok(())
    }

    fn check_digest(&self, expected: &str) -> Result<(), BundleFailure> {
        let expected = expected.trim();
        let hex = expected.strip_prefix("sha256:").unwrap_or(expected);
        let actual = self.report.digest.strip_prefix("sha256:").unwrap_or("");
        if hex.eq_ignore_ascii_case(actual) {
            Ok(())
        } else {
            Err(fail(
                None,
                FailureClass::DigestMismatch,
                format!(
                    "the bundle's digest is {}, not the sha256:{hex} recorded at export: this is \
                     not the bundle that was exported (events may have been removed)",
                    self.report.digest
                ),
            ))
        }
    }
}

/// Checks one entry's record and inclusion proof: canonical CBOR, the
/// envelope's seq equals the entry's, and the leaf hashes along the proof
/// to the checkpoint's root. `what` names the entry's role in messages.
fn authenticate(
    entry: &Entry<'_>,
    checkpoint: &Checkpoint,
    what: &str,
) -> Result<Envelope, BundleFailure> {
    use FailureClass::*;
    let seq = entry.seq;
    let envelope = cbor::check_record(entry.record).map_err(|e| {
        fail(
            Some(seq),
            NonCanonical,
            format!("{what} {seq}'s record is not canonical: {e}"),
        )
    })?;
    if envelope.seq != seq {
        return Err(fail(
            Some(seq),
            SequenceMismatch,
            format!(
                "the bundle lists {what} {seq}, but its record's seq is {}",
                envelope.seq
            ),
        ));
    }
    let n = checkpoint.size;
    let proof = merkle::split_proof(entry.proof).map_err(|e| {
        fail(
            Some(seq),
            InclusionInvalid,
            format!("{what} {seq}'s inclusion proof: {e}"),
        )
    })?;
    merkle::verify_inclusion(
        seq,
        n,
        &merkle::leaf_hash(entry.record),
        &checkpoint.root,
        &proof,
    )
    .map_err(|e| {
        fail(
            Some(seq),
            InclusionInvalid,
            format!(
                "{what} {seq} is not proven to be in the log: its inclusion proof against the \
                 checkpoint of size {n} fails ({e}); the record was altered or is not this log's \
                 event {seq}"
            ),
        )
    })?;
    Ok(envelope)
}

/// A shape the bundle holds for statement `by` (section 7.2): it must be a
/// `StatementShape` whose body has the digest `by`'s record carries.
fn check_shape(entry: &Entry<'_>, by: u64, digest: &[u8]) -> Result<(), BundleFailure> {
    let seq = entry.seq;
    match bundle::kind_and_body(entry.record) {
        Ok((bundle::STATEMENT_SHAPE, body)) if bundle::shape_digest(body)[..] == *digest => Ok(()),
        _ => Err(fail(
            Some(seq),
            FailureClass::NotSelected,
            format!(
                "event {seq} is held as the shape of the statement recorded in event {by}, but it is \
                 not the shape that statement was recorded with"
            ),
        )),
    }
}

fn matches_selection(
    entry: &Entry<'_>,
    envelope: &Envelope,
    selection: Selection<'_>,
) -> Result<(), BundleFailure> {
    let seq = entry.seq;
    let not_selected = |message: String| fail(Some(seq), FailureClass::NotSelected, message);
    let subject = || {
        bundle::subject(entry.record).map_err(|e| {
            not_selected(format!(
                "event {seq} (kind {}) has a malformed subject field: {e}",
                envelope.kind
            ))
        })
    };
    match selection {
        Selection::Session(s) => match subject()?.session {
            Some(found) if found == s => Ok(()),
            Some(found) => Err(not_selected(format!(
                "event {seq} belongs to session {found}, but the bundle selects session {s}"
            ))),
            None => Err(not_selected(format!(
                "event {seq} (kind {}) belongs to no session, but the bundle selects session {s}",
                envelope.kind
            ))),
        },
        Selection::Identity(i) => match subject()?.identity {
            Some(found) if found == i => Ok(()),
            Some(found) => Err(not_selected(format!(
                "event {seq} concerns identity {found:?}, but the bundle selects identity {i:?}"
            ))),
            None => Err(not_selected(format!(
                "event {seq} (kind {}) concerns no identity, but the bundle selects identity {i:?}",
                envelope.kind
            ))),
        },
        Selection::TimeRange { from, to } => {
            if (from..to).contains(&envelope.ts) {
                Ok(())
            } else {
                Err(not_selected(format!(
                    "event {seq}'s time {} is outside the selected range {} to before {}",
                    rfc3339(envelope.ts),
                    rfc3339(from),
                    rfc3339(to)
                )))
            }
        }
    }
}

/// The boundary events of a time range (section 8.4): each must be
/// authentic, adjacent to the range's events and outside the range on its
/// side. Returns what the bundle then proves about completeness.
fn check_bounds(
    b: &bundle::Bundle<'_>,
    checkpoint: &Checkpoint,
    selected: &[u64],
    from: u64,
    to: u64,
) -> Result<Completeness, BundleFailure> {
    use FailureClass::BoundaryInvalid;
    let first = selected.first().copied();
    let last = selected.last().copied();
    if let Some(before) = &b.before {
        let seq = before.seq;
        let envelope = authenticate(before, checkpoint, "boundary event")?;
        let next = first.or(b.after.as_ref().map(|a| a.seq));
        if let Some(next) = next {
            if next != seq + 1 {
                return Err(fail(
                    Some(seq),
                    BoundaryInvalid,
                    format!(
                        "the boundary event before the range is event {seq}, but the next event in the \
                         bundle is {next}: it must be adjacent"
                    ),
                ));
            }
        }
        if envelope.ts >= from {
            return Err(fail(
                Some(seq),
                BoundaryInvalid,
                format!(
                    "event {seq}, given as the last event before the range, has time {}, inside the \
                     range starting {}: events of the range are missing",
                    rfc3339(envelope.ts),
                    rfc3339(from)
                ),
            ));
        }
    }
    if let Some(after) = &b.after {
        let seq = after.seq;
        let envelope = authenticate(after, checkpoint, "boundary event")?;
        let previous = last.or(b.before.as_ref().map(|e| e.seq));
        let adjacent = match previous {
            Some(p) => seq == p + 1,
            None => seq == 0,
        };
        if !adjacent {
            return Err(fail(
                Some(seq),
                BoundaryInvalid,
                format!(
                    "the boundary event after the range is event {seq}, but the event before it in the \
                     bundle is {}: it must be adjacent",
                    previous.map_or("none".to_owned(), |p| p.to_string())
                ),
            ));
        }
        if envelope.ts < to {
            return Err(fail(
                Some(seq),
                BoundaryInvalid,
                format!(
                    "event {seq}, given as the first event after the range, has time {}, inside the \
                     range ending before {}: events of the range are missing",
                    rfc3339(envelope.ts),
                    rfc3339(to)
                ),
            ));
        }
    }
    let seqs = || {
        b.before
            .iter()
            .map(|e| e.seq)
            .chain(selected.iter().copied())
            .chain(b.after.iter().map(|e| e.seq))
    };
    let starts_proven = b.before.is_some() || seqs().min() == Some(0);
    let ends_proven = b.after.is_some() || seqs().max() == Some(checkpoint.size - 1);
    Ok(if starts_proven && ends_proven {
        Completeness::Proven
    } else {
        Completeness::Contiguous
    })
}

/// The auditor's checkpoint of size `m` against the bundle's of size `n`
/// (section 8.5, step 7): the bundle must prove that its checkpoint extends
/// the trusted one.
fn check_trusted(
    trusted: &Trusted,
    b: &bundle::Bundle<'_>,
    checkpoint: &Checkpoint,
    earlier: &[(Checkpoint, &str)],
) -> Result<(), BundleFailure> {
    use FailureClass::*;
    let t = &trusted.checkpoint;
    let (m, n) = (t.size, checkpoint.size);
    let forked = |other: &Checkpoint, other_note: &str, how: &str| {
        let differs = if other.root != t.root {
            "root"
        } else {
            "chain head"
        };
        let mut evidence = vec![trusted.note.clone(), other_note.to_owned()];
        if other_note != b.checkpoint {
            evidence.push(b.checkpoint.to_owned());
        }
        BundleFailure {
            seq: None,
            class: Forked,
            message: format!(
                "{how} commits to another {differs} for size {m} than your trusted checkpoint: \
                 the log has forked from the one your checkpoint saw (evidence: your trusted \
                 checkpoint, then the bundle's conflicting notes)"
            ),
            evidence,
        }
    };
    if t.origin != checkpoint.origin {
        return Err(fail(
            None,
            CheckpointInvalid,
            format!(
                "your trusted checkpoint is of the log {:?}, the bundle's of {:?}",
                t.origin, checkpoint.origin
            ),
        ));
    }
    if m > n {
        return Err(fail(
            None,
            ConsistencyUnproven,
            format!(
                "your trusted checkpoint covers {m} events, more than the bundle's checkpoint ({n}): \
                 the bundle is older than your checkpoint and cannot show consistency with it; ask \
                 for a bundle exported since"
            ),
        ));
    }
    if m == n {
        return if t.root == checkpoint.root && t.chain == checkpoint.chain {
            Ok(())
        } else {
            Err(forked(checkpoint, b.checkpoint, "the bundle's checkpoint"))
        };
    }
    match earlier.iter().find(|(c, _)| c.size == m) {
        None => Err(fail(
            None,
            ConsistencyUnproven,
            format!(
                "the bundle carries no consistency proof from size {m}, the size of your trusted \
                 checkpoint, to its checkpoint's size {n}; ask for a bundle exported with \
                 --consistent-with and your checkpoint note"
            ),
        )),
        Some((c, _)) if c.root == t.root && c.chain == t.chain => Ok(()),
        Some((c, note)) => Err(forked(c, note, "the bundle's earlier checkpoint")),
    }
}
