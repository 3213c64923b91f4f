//! What a verification found, and how it is shown to an auditor: as text
//! for a person, or as one JSON object for a script.
//!
//! A report names at most one failure, the first one the procedure of
//! specification section 6 meets, because everything after a first failure
//! is built on data that can no longer be trusted.

use std::fmt;
use std::fmt::Write as _;

use serde::Serialize;

/// The kind of integrity failure. The names (in `snake_case`) are stable:
/// scripts match on them in the JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// `events.seq` is not the next expected number (gap, duplicate, out of
    /// order).
    SequenceGap,
    /// The record is not canonical CBOR or not a four-entry record map.
    NonCanonical,
    /// The record's `seq` differs from `events.seq`.
    SequenceMismatch,
    /// The record's `ts` is smaller than the previous event's.
    TimestampBackwards,
    /// `events.ts` or `events.kind` differs from the record.
    IndexMismatch,
    /// The file holds a schema object (index, view, trigger, table) that
    /// section 1 does not define.
    SchemaForeign,
    /// A checkpoint row or note is malformed (format, size, origin).
    CheckpointInvalid,
    /// A checkpoint note is not validly signed by the pinned key.
    SignatureInvalid,
    /// A checkpoint's root differs from the root recomputed from the events.
    RootMismatch,
    /// A checkpoint's chain head differs from the one recomputed.
    ChainMismatch,
    /// A checkpoint's consistency proof is wrong.
    ProofInvalid,
    /// Events that no checkpoint covers.
    Unsigned,
    /// A checkpoint claims more events than the ledger holds.
    CheckpointBeyondLog,
    /// The ledger holds fewer events than a trusted checkpoint covers.
    Truncated,
    /// The ledger's events differ from what a trusted checkpoint covers.
    Forked,
    /// Bundles: the file is not canonical CBOR or not the bundle structure.
    BundleMalformed,
    /// Bundles: the bundle names another key than the one pinned.
    KeyMismatch,
    /// Bundles: an event's inclusion proof does not lead to the checkpoint.
    InclusionInvalid,
    /// Bundles: an event does not match the bundle's selection.
    NotSelected,
    /// Segments (section 9): a segment is missing, out of order, under
    /// another segment's name, or not the file its successor recorded.
    SegmentBroken,
    /// Bundles: a boundary event of a time range does not prove the range
    /// complete.
    BoundaryInvalid,
    /// Bundles: the bundle carries no proof that its checkpoint is
    /// consistent with the trusted checkpoint.
    ConsistencyUnproven,
    /// Bundles: the bundle's digest is not the one the auditor expects.
    DigestMismatch,
}

impl FailureClass {
    /// The stable `snake_case` name, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::SequenceGap => "sequence_gap",
            FailureClass::NonCanonical => "non_canonical",
            FailureClass::SequenceMismatch => "sequence_mismatch",
            FailureClass::TimestampBackwards => "timestamp_backwards",
            FailureClass::IndexMismatch => "index_mismatch",
            FailureClass::SchemaForeign => "schema_foreign",
            FailureClass::CheckpointInvalid => "checkpoint_invalid",
            FailureClass::SignatureInvalid => "signature_invalid",
            FailureClass::RootMismatch => "root_mismatch",
            FailureClass::ChainMismatch => "chain_mismatch",
            FailureClass::ProofInvalid => "proof_invalid",
            FailureClass::Unsigned => "unsigned",
            FailureClass::CheckpointBeyondLog => "checkpoint_beyond_log",
            FailureClass::Truncated => "truncated",
            FailureClass::Forked => "forked",
            FailureClass::BundleMalformed => "bundle_malformed",
            FailureClass::KeyMismatch => "key_mismatch",
            FailureClass::InclusionInvalid => "inclusion_invalid",
            FailureClass::NotSelected => "not_selected",
            FailureClass::SegmentBroken => "segment_broken",
            FailureClass::BoundaryInvalid => "boundary_invalid",
            FailureClass::ConsistencyUnproven => "consistency_unproven",
            FailureClass::DigestMismatch => "digest_mismatch",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first integrity failure found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The sequence number the failure is attributed to (section 6 table).
    pub seq: u64,
    /// What kind of failure.
    pub class: FailureClass,
    /// What was found, in words, with the values involved.
    pub message: String,
    /// Signed notes that prove the failure to a third party: for
    /// `truncated` and `forked`, the trusted checkpoint note and then the
    /// ledger's last checkpoint note.
    pub evidence: Vec<String>,
}

/// The outcome of verifying one ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events read and checked: all of them when intact, those before the
    /// failure otherwise (after `from`, when the pass started there).
    pub events: u64,
    /// The size of the kept checkpoint the pass started from (section 6.2):
    /// its events were not read again. `None`: read from the first event.
    pub from: Option<u64>,
    /// Format 2: the events after the last checkpoint, checked like every
    /// other but not signed yet (section 5.3).
    pub unsigned_tail: Option<UnsignedTail>,
    /// Sizes of the checkpoints a restarted writer signed over events it
    /// found on disk (section 5.3).
    pub recovered_checkpoints: Vec<u64>,
    /// Checkpoints that passed every check.
    pub checkpoints: u64,
    /// Timestamp (Unix nanoseconds) of the first event checked.
    pub first_ts: Option<u64>,
    /// Timestamp (Unix nanoseconds) of the last event checked.
    pub last_ts: Option<u64>,
    /// The note of the last checkpoint that passed; when intact, the one
    /// that signs the whole ledger.
    pub final_checkpoint: Option<String>,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// The log's signing keys, first to last, as `<name>+<key id>`: one
    /// key unless the log rotated it (format section 5.2).
    pub signing_keys: Vec<String>,
}

/// The events after a format-2 ledger's last checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsignedTail {
    /// How many.
    pub events: u64,
    /// The first one's timestamp (Unix nanoseconds).
    pub first_ts: u64,
    /// The last one's timestamp.
    pub last_ts: u64,
}

impl Report {
    /// Whether the ledger passed every check.
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }

    /// The report for a person: a summary, and on failure the line
    /// `FAILED at seq N: <class>: <message>` followed by the evidence notes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match &self.failure {
            None => {
                match self.from {
                    None => {
                        let _ = writeln!(
                            out,
                            "intact: {} events, {} checkpoints",
                            self.events, self.checkpoints
                        );
                    }
                    Some(from) => {
                        let _ = writeln!(
                            out,
                            "intact: {} events after the kept checkpoint of size {from}, {} checkpoints \
                             (events 0 to {} were not read again: the kept checkpoint vouches for them)",
                            self.events,
                            self.checkpoints,
                            from - 1
                        );
                    }
                }
                if self.signing_keys.len() > 1 {
                    let _ = writeln!(
                        out,
                        "signing keys, followed through their rotations: {}",
                        self.signing_keys.join(" -> ")
                    );
                }
            }
            Some(failure) => {
                let _ = writeln!(
                    out,
                    "FAILED at seq {}: {}: {}",
                    failure.seq, failure.class, failure.message
                );
                let _ = writeln!(
                    out,
                    "checked before the failure: {} events, {} checkpoints",
                    self.events, self.checkpoints
                );
            }
        }
        if let Some(tail) = &self.unsigned_tail {
            let _ = writeln!(
                out,
                "unsigned tail: {} events after the last checkpoint ({} to {}), checked but not signed yet \
                 (the gateway signs within its signing delay; --strict fails on them)",
                tail.events,
                rfc3339(tail.first_ts),
                rfc3339(tail.last_ts)
            );
        }
        if !self.recovered_checkpoints.is_empty() {
            let sizes: Vec<String> = self
                .recovered_checkpoints
                .iter()
                .map(u64::to_string)
                .collect();
            let _ = writeln!(
                out,
                "recovered checkpoints (signed after a restart over events found on disk): sizes {}",
                sizes.join(", ")
            );
        }
        match (self.first_ts, self.last_ts) {
            (Some(first), Some(last)) => {
                let _ = writeln!(out, "time range: {} to {}", rfc3339(first), rfc3339(last));
            }
            _ => out.push_str("time range: no events\n"),
        }
        if let Some(note) = &self.final_checkpoint {
            let label = if self.is_intact() {
                "final checkpoint"
            } else {
                "last checkpoint that verified"
            };
            let _ = write!(out, "{label}:\n{note}");
        }
        if let Some(failure) = &self.failure {
            let count = failure.evidence.len();
            for (i, note) in failure.evidence.iter().enumerate() {
                let _ = write!(out, "evidence {} of {count}:\n{note}", i + 1);
                if !note.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The report for a script: `{"status": "intact" | "failed", "events",
    /// "from" (null, or the kept checkpoint's size the pass started from),
    /// "checkpoints", "first_time", "last_time", "final_checkpoint",
    /// "failure": {"seq", "class", "message", "evidence"} | null}`, with
    /// times in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct TailJson {
            events: u64,
            first_time: String,
            last_time: String,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            status: &'static str,
            events: u64,
            from: Option<u64>,
            unsigned_tail: Option<TailJson>,
            recovered_checkpoints: &'a [u64],
            checkpoints: u64,
            first_time: Option<String>,
            last_time: Option<String>,
            final_checkpoint: Option<&'a str>,
            failure: Option<&'a Failure>,
            signing_keys: &'a [String],
        }
        let json = Json {
            status: if self.is_intact() { "intact" } else { "failed" },
            events: self.events,
            from: self.from,
            unsigned_tail: self.unsigned_tail.as_ref().map(|t| TailJson {
                events: t.events,
                first_time: rfc3339(t.first_ts),
                last_time: rfc3339(t.last_ts),
            }),
            recovered_checkpoints: &self.recovered_checkpoints,
            checkpoints: self.checkpoints,
            first_time: self.first_ts.map(rfc3339),
            last_time: self.last_ts.map(rfc3339),
            final_checkpoint: self.final_checkpoint.as_deref(),
            failure: self.failure.as_ref(),
            signing_keys: &self.signing_keys,
        };
        serde_json::to_value(json).expect("a report always serialises")
    }
}

/// The first integrity failure found in an evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleFailure {
    /// The sequence number of the event the failure concerns, or `None`
    /// for a failure of the bundle as a whole (format, key, checkpoint).
    pub seq: Option<u64>,
    /// What kind of failure.
    pub class: FailureClass,
    /// What was found, in words, with the values involved.
    pub message: String,
    /// Signed notes that prove the failure to a third party (`forked`: the
    /// trusted checkpoint, then the conflicting note or notes of the bundle).
    pub evidence: Vec<String>,
}

/// What a bundle claims to hold, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectionSummary {
    /// Every event of one session.
    Session(u64),
    /// Every event concerning one identity.
    Identity(String),
    /// Every event with `from <= ts < to` (Unix nanoseconds).
    TimeRange {
        /// Start, inclusive.
        from: u64,
        /// End, exclusive.
        to: u64,
    },
}

impl fmt::Display for SelectionSummary {
    /// As it follows "N events": `of session 7`, `of identity "bot"`,
    /// `from <time> to before <time>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectionSummary::Session(s) => write!(f, "of session {s}"),
            SelectionSummary::Identity(i) => write!(f, "of identity {i:?}"),
            SelectionSummary::TimeRange { from, to } => {
                write!(f, "from {} to before {}", rfc3339(*from), rfc3339(*to))
            }
        }
    }
}

/// What a bundle proves about having every event its selection names
/// (specification section 8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// A time range with its boundary events: the bundle holds every event
    /// of the log, up to its checkpoint, in the range.
    Proven,
    /// A time range without boundary events: no event is missing between
    /// the first and the last, but the edges are not proven.
    Contiguous,
    /// A session or identity: only the events held are proven.
    NotProvable,
}

impl Completeness {
    /// The stable name used in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Completeness::Proven => "proven",
            Completeness::Contiguous => "contiguous",
            Completeness::NotProvable => "not_provable",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Completeness::Proven => {
                "proven: the bundle holds every event in the range that the checkpoint covers"
            }
            Completeness::Contiguous => {
                "not proven at the edges: no event is missing between the first and the last, \
                 but events just before or after them may be in the range (export with --prove-complete)"
            }
            Completeness::NotProvable => {
                "not provable for this selection: each event held is proven, not that none was \
                 left out; compare the digest with the one recorded at export"
            }
        }
    }
}

/// The outcome of verifying one evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// What the bundle claims to hold, if its format could be read.
    pub selection: Option<SelectionSummary>,
    /// Events that passed every check (all of them when intact).
    pub events: u64,
    /// Their sequence numbers.
    pub seqs: Vec<u64>,
    /// Statement shapes held beside them because disclosed statements
    /// refer to them (section 7.2), each checked against its reference.
    pub shapes: u64,
    /// Timestamp (Unix nanoseconds) of the first event checked.
    pub first_ts: Option<u64>,
    /// Timestamp (Unix nanoseconds) of the last event checked.
    pub last_ts: Option<u64>,
    /// The checkpoint's size, once its signature verified.
    pub checkpoint_size: Option<u64>,
    /// The checkpoint note, once its signature verified.
    pub checkpoint: Option<String>,
    /// What the bundle proves about completeness (meaningful when intact).
    pub completeness: Option<Completeness>,
    /// Sizes of the earlier checkpoints the bundle proved consistency with.
    pub consistent_with: Vec<u64>,
    /// The trusted checkpoint's size, if one was given and it passed.
    pub trusted_checkpoint: Option<u64>,
    /// `sha256:<hex>` of the bundle file.
    pub digest: String,
    /// The first failure, if any.
    pub failure: Option<BundleFailure>,
}

impl BundleReport {
    /// Whether the bundle passed every check.
    pub fn is_intact(&self) -> bool {
        self.failure.is_none()
    }

    /// The report for a person, in the style of [`Report::to_text`].
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let what = self
            .selection
            .as_ref()
            .map_or_else(String::new, |s| format!(" {s}"));
        match &self.failure {
            None => {
                let _ = writeln!(
                    out,
                    "intact: bundle of {} events{what}, proven against the checkpoint of size {}",
                    self.events,
                    self.checkpoint_size.unwrap_or(0)
                );
            }
            Some(failure) => {
                match failure.seq {
                    Some(seq) => {
                        let _ = write!(out, "FAILED at seq {seq}: ");
                    }
                    None => out.push_str("FAILED: "),
                }
                let _ = writeln!(out, "{}: {}", failure.class, failure.message);
                let _ = writeln!(
                    out,
                    "checked before the failure: {} events{what}",
                    self.events
                );
            }
        }
        if !self.seqs.is_empty() {
            let _ = writeln!(out, "events: seq {}", seq_ranges(&self.seqs));
        }
        if self.shapes > 0 {
            let _ = writeln!(
                out,
                "statement shapes held for them: {} (each checked against its statement)",
                self.shapes
            );
        }
        if let (None, Some(c)) = (&self.failure, self.completeness) {
            let _ = writeln!(out, "complete: {}", c.explain());
        }
        match (self.first_ts, self.last_ts) {
            (Some(first), Some(last)) => {
                let _ = writeln!(out, "time range: {} to {}", rfc3339(first), rfc3339(last));
            }
            _ => out.push_str("time range: no events\n"),
        }
        let mut consistent: Vec<String> = self
            .consistent_with
            .iter()
            .map(|m| format!("checkpoint of size {m} (proof in the bundle)"))
            .collect();
        if let Some(m) = self.trusted_checkpoint {
            consistent.push(format!("your trusted checkpoint of size {m}"));
        }
        if !consistent.is_empty() {
            let _ = writeln!(out, "consistent with: {}", consistent.join("; "));
        }
        let _ = writeln!(out, "digest: {}", self.digest);
        if let Some(note) = &self.checkpoint {
            let _ = write!(out, "checkpoint:\n{note}");
        }
        if let Some(failure) = &self.failure {
            let count = failure.evidence.len();
            for (i, note) in failure.evidence.iter().enumerate() {
                let _ = write!(out, "evidence {} of {count}:\n{note}", i + 1);
                if !note.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The report for a script: `{"status", "input": "bundle", "selection":
    /// {"session"} | {"identity"} | {"from", "to"} | null, "events", "seqs",
    /// "shapes", "first_time", "last_time", "checkpoint_size", "checkpoint",
    /// "complete": "proven" | "contiguous" | "not_provable" | null,
    /// "consistent_with", "trusted_checkpoint", "digest", "failure": {"seq"
    /// (null for the bundle as a whole), "class", "message", "evidence"} |
    /// null}`, with times in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        let selection = self.selection.as_ref().map(|s| match s {
            SelectionSummary::Session(s) => serde_json::json!({ "session": s }),
            SelectionSummary::Identity(i) => serde_json::json!({ "identity": i }),
            SelectionSummary::TimeRange { from, to } => {
                serde_json::json!({ "from": rfc3339(*from), "to": rfc3339(*to) })
            }
        });
        serde_json::json!({
            "status": if self.is_intact() { "intact" } else { "failed" },
            "input": "bundle",
            "selection": selection,
            "events": self.events,
            "seqs": self.seqs,
            "shapes": self.shapes,
            "first_time": self.first_ts.map(rfc3339),
            "last_time": self.last_ts.map(rfc3339),
            "checkpoint_size": self.checkpoint_size,
            "checkpoint": self.checkpoint,
            "complete": self.completeness.map(Completeness::as_str),
            "consistent_with": self.consistent_with,
            "trusted_checkpoint": self.trusted_checkpoint,
            "digest": self.digest,
            "failure": self.failure,
        })
    }
}

/// Most runs of sequence numbers the text report lists; the JSON report
/// has them all.
const SHOWN_RUNS: usize = 24;

/// `3, 5-9, 12`: sorted sequence numbers with runs collapsed, the first
/// [`SHOWN_RUNS`] of them.
fn seq_ranges(seqs: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}-{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    if parts.len() > SHOWN_RUNS {
        let more = parts.len() - SHOWN_RUNS;
        parts.truncate(SHOWN_RUNS);
        parts.push(format!("and {more} more runs (--json lists them all)"));
    }
    parts.join(", ")
}

/// Formats Unix nanoseconds as RFC 3339 UTC with nanoseconds, e.g.
/// `2024-05-01T12:00:00.000000001Z`. Every `u64` is representable (up to
/// the year 2554), so this cannot fail.
pub fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days): shift the epoch to
/// 0000-03-01 so that the leap day ends each 400-year era's year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:00.000000001Z");
        // 2000-02-29 (a leap day of a century divisible by 400).
        assert_eq!(
            rfc3339(951_782_400_000_000_000 + 86_399_999_999_999),
            "2000-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339(951_868_800_000_000_000),
            "2000-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        // 2100 is not a leap year.
        assert_eq!(
            rfc3339(4_107_542_400_000_000_000),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn civil_from_days_agrees_with_counting_days() {
        let mut date = (1970, 1, 1);
        for days in 0..200_000u64 {
            assert_eq!(civil_from_days(days), date, "day {days}");
            let (y, m, d) = date;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            date = if d < len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn sequence_numbers_are_listed_as_runs() {
        assert_eq!(seq_ranges(&[3, 5, 6, 7, 8, 9, 12]), "3, 5-9, 12");
        assert_eq!(seq_ranges(&[]), "");
        let many: Vec<u64> = (0..100).map(|i| i * 2).collect();
        let text = seq_ranges(&many);
        assert!(text.starts_with("0, 2, 4, "), "{text}");
        assert!(
            text.ends_with(", 46, and 76 more runs (--json lists them all)"),
            "{text}"
        );
    }

    #[test]
    fn renders_failures_as_text_and_json() {
        let report = Report {
            events: 3,
            from: None,
            unsigned_tail: None,
            recovered_checkpoints: Vec::new(),
            checkpoints: 1,
            first_ts: Some(0),
            last_ts: Some(2),
            final_checkpoint: Some("note\n\n\u{2014} k sig\n".into()),
            failure: Some(Failure {
                seq: 3,
                class: FailureClass::CheckpointBeyondLog,
                message: "m".into(),
                evidence: vec!["a\n".into(), "b".into()],
            }),
            signing_keys: vec!["k+00000000".into()],
        };
        let text = report.to_text();
        assert!(
            text.starts_with("FAILED at seq 3: checkpoint_beyond_log: m\n"),
            "{text}"
        );
        assert!(
            text.contains("evidence 1 of 2:\na\nevidence 2 of 2:\nb\n"),
            "{text}"
        );
        let json = report.to_json();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["failure"]["class"], "checkpoint_beyond_log");
        assert_eq!(json["failure"]["seq"], 3);
        assert_eq!(json["first_time"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(json["failure"]["evidence"][1], "b");
    }
}
