//! Rebuilding the gateway's state from its ledger: the latest snapshot at
//! or before the point wanted, plus the events after it; and checking
//! snapshots against the fold from the first event.

use std::path::Path;

use anyhow::{Context, Result};
use gatehouse_engine::snapshot;
use gatehouse_engine::state::GatewayState;
use gatehouse_ledger::note::VerifierKey;
use gatehouse_ledger::verified::Pass;
use gatehouse_ledger::{Event, EventBody, LedgerReader};
use tracing::{debug, warn};

/// A point in the log: a sequence number, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Up to and including this event.
    Seq(u64),
    /// Up to the last event whose timestamp is at or before this (Unix ns).
    Time(u64),
}

impl std::str::FromStr for At {
    type Err = anyhow::Error;

    /// A sequence number (`1234`) or an RFC 3339 time (`2026-11-25T10:00:00Z`).
    fn from_str(s: &str) -> Result<At> {
        if let Ok(seq) = s.parse::<u64>() {
            return Ok(At::Seq(seq));
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{s:?} is neither a sequence number nor an RFC 3339 time such as 2026-11-25T10:00:00Z"))?;
        let ns = t.unix_timestamp_nanos();
        if ns < 0 {
            anyhow::bail!("{s:?} is before 1970");
        }
        Ok(At::Time(ns as u64))
    }
}

/// Where a rebuild starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the latest usable snapshot at or before the target (the normal case).
    Snapshot,
    /// From the first event, ignoring snapshots (audits and benchmarks).
    Genesis,
}

/// A state rebuilt from the ledger, and how.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The state.
    pub state: GatewayState,
    /// The snapshot it started from: `(the snapshot event's seq, events it covers)`.
    pub snapshot: Option<(u64, u64)>,
    /// Events folded after the snapshot (or from the first event).
    pub folded: u64,
    /// Why the latest snapshot was not used, if one was found but refused.
    /// The fold then starts from the first event: slower, never wrong.
    pub refused: Option<String>,
}

/// The state as of `at`, starting from `start`.
///
/// With [`Start::Snapshot`] this costs one snapshot (the one covering the
/// most events not after `at`, found through the ledger's snapshot index)
/// plus the events between it and `at`. A snapshot whose state does not
/// hash to its recorded hash, or cannot be decoded, is refused and the fold
/// starts from the first event (see [`Rebuilt::refused`]).
pub fn rebuild(path: &Path, at: At, start: Start) -> Result<Rebuilt> {
    let reader = LedgerReader::open(path)?;
    let end = match at {
        At::Seq(seq) => seq.saturating_add(1),
        At::Time(ts) => reader.first_at_or_after(ts.saturating_add(1))?,
    };
    let (mut state, snapshot, refused) = match start {
        Start::Genesis => (GatewayState::default(), None, None),
        Start::Snapshot => match SnapshotStart::latest(&reader, end) {
            Ok(Some(found)) => (found.state, Some((found.seq, found.covers)), None),
            Ok(None) => (GatewayState::default(), None, None),
            Err(why) => (GatewayState::default(), None, Some(why)),
        },
    };
    let mut folded = 0;
    for stored in reader.events(state.events..end) {
        let stored = stored.with_context(|| format!("cannot replay {}", path.display()))?;
        state.apply(&stored.event);
        folded += 1;
    }
    Ok(Rebuilt {
        state,
        snapshot,
        folded,
        refused,
    })
}

/// A state folded from verified events only, and what vouched for them.
#[derive(Debug, Clone)]
pub struct VerifiedState {
    /// The state.
    pub state: GatewayState,
    /// What the signed log vouches for.
    pub coverage: gatehouse_ledger::verified::Coverage,
    /// Events up to `at` that no checkpoint covers yet: not folded.
    pub unsigned_not_folded: u64,
}

/// The state as of `at` for an investigator (`gatehouse state`), from
/// verified events only (see `gatehouse_ledger::verified`): the newest
/// snapshot before `at` and the events after it, each record checked
/// against the newest checkpoint, whose signature is checked with `key`.
/// The snapshot is one of those checked records; where the indexes that
/// find it, or the stored subtree hashes, disagree with the records, the
/// state is folded from the first event over a check of the whole log.
/// Events no checkpoint covers are counted, not folded.
pub fn verified_state_at(path: &Path, at: At, key: Option<&Path>) -> Result<VerifiedState> {
    let key = crate::init::verifier_key(path, key).map_err(|(file, reason)| {
        anyhow::anyhow!("cannot use verifier key {file}: {reason}; pass the verifier.pub that `gatehouse init` wrote with --key")
    })?;
    let reader = LedgerReader::open(path)?;
    let events = reader.len()?;
    // The first event past `at`, as the (unsigned) time column says; the
    // window reads it and checks its signed time.
    let end = match at {
        At::Seq(seq) => seq.saturating_add(1).min(events),
        At::Time(ts) => reader.first_at_or_after(ts.saturating_add(1))?,
    };
    let wanted = |seq: u64, ts: u64| match at {
        At::Seq(last) => seq <= last,
        At::Time(t) => ts <= t,
    };
    let start = SnapshotStart::find(&reader, end);
    // The snapshot's own record may lie past `at` (it is written a moment
    // after the events it covers): it is read and checked all the same.
    let ranges = start.as_ref().map(|s| {
        [
            s.covers.saturating_sub(1)..end.saturating_add(1),
            s.seq..s.seq + 1,
        ]
    });
    let (fold, coverage) = read_checked(
        &reader,
        key.as_ref(),
        ranges.map(Vec::from),
        |pass| Fold::new(pass, start.as_ref()),
        |fold, event, covered| {
            fold.check_bounds(&event, wanted, end);
            if !wanted(event.seq, event.ts) || event.seq < fold.from {
                return;
            }
            if covered {
                fold.state.apply(&event);
            } else {
                fold.unsigned += 1;
            }
        },
        |fold| fold.complete(end, events),
    )
    .with_context(|| {
        format!(
            "cannot read {} as its signed checkpoint vouches for it",
            path.display()
        )
    })?;
    Ok(VerifiedState {
        state: fold.state,
        coverage,
        unsigned_not_folded: fold.unsigned,
    })
}

/// A snapshot a fold may start from, found through the index and read from
/// its record, restored. A verified fold trusts it only once the window
/// that holds its record has been checked against the signed root.
struct SnapshotStart {
    seq: u64,
    covers: u64,
    state: GatewayState,
    body: gatehouse_ledger::event::Snapshot,
}

impl SnapshotStart {
    /// The latest snapshot covering at most `end` events, restored; `Err`
    /// says why the one found cannot be used.
    fn latest(
        reader: &LedgerReader,
        end: u64,
    ) -> std::result::Result<Option<SnapshotStart>, String> {
        let Some(found) = reader.latest_snapshot(end).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let state = snapshot::restore(&found.snapshot)
            .map_err(|e| format!("snapshot at event {}: {e}", found.seq))?;
        Ok(Some(SnapshotStart {
            seq: found.seq,
            covers: found.snapshot.covers,
            state,
            body: found.snapshot,
        }))
    }

    /// The newest usable snapshot covering at most `end` events, for a
    /// verified fold (which reads everything when there is none).
    fn find(reader: &LedgerReader, end: u64) -> Option<SnapshotStart> {
        Self::latest(reader, end).ok().flatten()
    }
}

/// Reads verified events through [`gatehouse_ledger::verified::read_selected`],
/// checking also that a window read followed every key rotation there is.
///
/// A window read checks the newest checkpoint's signature with the key the
/// rotations found through the writer's index lead to. An index that hid a
/// rotation would make it accept a checkpoint signed by a retired key, which
/// may since have leaked. So the window also covers the newest snapshot's
/// record and every event after what it covers (at most one snapshot
/// interval): the snapshot's state lists the rotations before it, the window
/// shows those after, and together they must be the ones followed. Without a
/// snapshot to vouch for them, the whole log is read. `visit` gets only the
/// events of `window` (every event in the whole pass), `accept` decides on
/// what it built, as for `read_selected`.
pub(crate) fn read_checked<T>(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    window: Option<Vec<std::ops::Range<u64>>>,
    mut init: impl FnMut(Pass) -> T,
    mut visit: impl FnMut(&mut T, Event, bool),
    accept: impl Fn(&T) -> bool,
) -> std::result::Result<(T, gatehouse_ledger::verified::Coverage), gatehouse_ledger::LedgerError> {
    struct Checked<T> {
        pass: Pass,
        inner: T,
        snapshot_seen: bool,
        rotations: Vec<u64>,
    }
    let witness = match (&window, key) {
        (Some(_), Some(_)) => SnapshotStart::find(reader, u64::MAX),
        _ => None,
    };
    let window = window.filter(|_| key.is_none() || witness.is_some());
    let ranges = window.clone().map(|mut ranges| {
        if let Some(w) = &witness {
            ranges.push(w.seq..w.seq + 1);
            ranges.push(w.covers..u64::MAX);
        }
        ranges
    });
    let asked = |seq: u64| {
        window
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&seq)))
    };
    let (checked, coverage) = gatehouse_ledger::verified::read_selected(
        reader,
        key,
        ranges.as_deref(),
        |pass| Checked {
            pass,
            inner: init(pass),
            snapshot_seen: false,
            rotations: witness
                .as_ref()
                .map(|w| w.state.key_rotations.clone())
                .unwrap_or_default(),
        },
        |c, event, covered| {
            if let Some(w) = &witness {
                if event.seq == w.seq {
                    c.snapshot_seen = matches!(&event.body, EventBody::Snapshot(b) if *b == w.body);
                }
                if event.seq >= w.covers && matches!(event.body, EventBody::KeyRotated(_)) {
                    c.rotations.push(event.seq);
                }
            }
            if c.pass == Pass::Whole || asked(event.seq) {
                visit(&mut c.inner, event, covered);
            }
        },
        |c, coverage| {
            accept(&c.inner)
                && (witness.is_none() || (c.snapshot_seen && c.rotations == coverage.rotations))
        },
    )?;
    Ok((checked.inner, coverage))
}

/// A fold over verified events (see [`gatehouse_ledger::verified::read_selected`]):
/// from a snapshot when only its window is read, from the first event when
/// the whole log is.
struct Fold {
    state: GatewayState,
    /// Events before this are in the starting state.
    from: u64,
    /// Events past the end that were not folded because no checkpoint covers them.
    unsigned: u64,
    /// The snapshot the fold started from, until its record is seen.
    snapshot: Option<(u64, gatehouse_ledger::event::Snapshot)>,
    /// Whether the starting snapshot's record was read where the index
    /// said, and holds what the fold started from.
    snapshot_seen: bool,
    /// Whether the last event before the snapshot's coverage ends lies
    /// within the fold (its signed time is not past the end).
    before_ok: bool,
    /// Whether the first event past the end was read and is past it.
    after_ok: bool,
}

impl Fold {
    fn new(pass: Pass, start: Option<&SnapshotStart>) -> Fold {
        match (pass, start) {
            (Pass::Window, Some(s)) => Fold {
                state: s.state.clone(),
                from: s.covers,
                unsigned: 0,
                snapshot: Some((s.seq, s.body.clone())),
                snapshot_seen: false,
                before_ok: s.covers == 0,
                after_ok: false,
            },
            _ => Fold {
                state: GatewayState::default(),
                from: 0,
                unsigned: 0,
                snapshot: None,
                snapshot_seen: true,
                before_ok: true,
                after_ok: false,
            },
        }
    }

    /// Checks the window's edges on signed data: the event just before the
    /// snapshot's coverage ends is wanted, the snapshot's record is the one
    /// restored, and the event at `end` (if any) is not wanted.
    fn check_bounds(&mut self, event: &Event, wanted: impl Fn(u64, u64) -> bool, end: u64) {
        if self.from > 0 && event.seq == self.from - 1 {
            self.before_ok = wanted(event.seq, event.ts);
        }
        if let Some((seq, body)) = &self.snapshot {
            if event.seq == *seq {
                self.snapshot_seen = matches!(&event.body, EventBody::Snapshot(b) if *b == *body);
            }
        }
        if event.seq == end {
            self.after_ok = !wanted(event.seq, event.ts);
        }
    }

    /// Whether a window fold holds every event it should: its snapshot was
    /// verified, and the window's edges are where the index said.
    fn complete(&self, end: u64, events: u64) -> bool {
        self.snapshot_seen && self.before_ok && (self.after_ok || end >= events)
    }
}

/// The state as of `at`: every event up to that point folded in, from the
/// latest snapshot before it.
pub fn state_at(path: &Path, at: At) -> Result<GatewayState> {
    let rebuilt = rebuild(path, at, Start::Snapshot)?;
    if let Some(why) = &rebuilt.refused {
        warn!("{why}; folded from the first event instead");
    }
    Ok(rebuilt.state)
}

/// Replays the ledger at `path` into a [`GatewayState`]: the latest
/// snapshot plus the events after it.
pub fn load_state(path: &Path) -> Result<GatewayState> {
    let started = std::time::Instant::now();
    let rebuilt = rebuild(path, At::Seq(u64::MAX - 1), Start::Snapshot)?;
    if let Some(why) = &rebuilt.refused {
        warn!("{why}; folded from the first event instead");
    }
    debug!(
        snapshot_covers = rebuilt.snapshot.map(|(_, covers)| covers),
        folded = rebuilt.folded,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "state rebuilt from the ledger"
    );
    Ok(rebuilt.state)
}

/// The gateway's state at start-up, from events the signed log vouches
/// for: the newest snapshot (found through the index, read from its
/// record) and every event after it, checked against the newest checkpoint
/// and its signature by `key` (the gateway's own verifier key) through the
/// stored subtree hashes, so a start costs the events since the snapshot,
/// not the whole log. Where an index or a stored hash disagrees with the
/// records, the state is folded from the first event over a check of the
/// whole log. A ledger whose records differ from what was signed is
/// refused: the gateway does not start on state nobody vouches for. Events
/// after the newest checkpoint (none, unless a commit was cut short) are
/// folded too: they are the gateway's own, committed.
pub fn load_state_verified(path: &Path, key: &VerifierKey) -> Result<GatewayState> {
    let started = std::time::Instant::now();
    let reader = LedgerReader::open(path)?;
    let events = reader.len()?;
    let start = SnapshotStart::find(&reader, events);
    let ranges = start
        .as_ref()
        .map(|s| std::iter::once(s.covers.saturating_sub(1)..events).collect::<Vec<_>>());
    let (fold, coverage) = read_checked(
        &reader,
        Some(key),
        ranges,
        |pass| Fold::new(pass, start.as_ref()),
        |fold, event, _| {
            fold.check_bounds(&event, |_, _| true, events);
            if event.seq >= fold.from {
                fold.state.apply(&event);
            }
        },
        |fold| fold.complete(events, events),
    )
    .with_context(|| {
        format!(
            "{} is not what its signed checkpoints vouch for, so the gateway does not start on it; \
             run gatehouse-verify on it and start from a trusted copy",
            path.display()
        )
    })?;
    debug!(
        snapshot = fold.snapshot.as_ref().map(|(seq, _)| *seq),
        from = fold.from,
        hashed = coverage.hashed,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "state rebuilt from the verified ledger"
    );
    Ok(fold.state)
}

/// The state as operators read it: times in RFC 3339 (UTC), operators by
/// name with their roles (`gatehouse state`).
pub fn state_text(state: &GatewayState) -> String {
    use std::fmt::Write as _;
    let time = |ns: u64| gatehouse_verify::report::rfc3339(ns);
    let mut out = String::new();
    match state.as_of {
        Some(ts) => {
            let _ = writeln!(out, "as of {} (after {} events)", time(ts), state.events);
        }
        None => out.push_str("as of the start of the ledger (no events)\n"),
    }
    match &state.policy {
        Some(p) => {
            let _ = writeln!(
                out,
                "policy: applied by {} at {} (event {}, {} bytes)",
                p.operator,
                time(p.ts),
                p.seq,
                p.source.len()
            );
        }
        None => out.push_str("policy: none applied (everything is denied)\n"),
    }
    out.push_str("identities:\n");
    for i in state.identities.iter() {
        let blocked = state
            .blocks
            .get(&i.name)
            .map(|b| {
                format!(
                    " BLOCKED by {} at {} (event {}): {}",
                    b.operator,
                    time(b.ts),
                    b.seq,
                    b.reason
                )
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  {}{blocked}", i.name);
        for c in i.credentials.values() {
            let status = match (&c.revoked, state.as_of) {
                (Some(why), _) => format!("revoked: {why}"),
                (None, Some(now)) if now >= c.expires_at => {
                    format!("expired at {}", time(c.expires_at))
                }
                _ => format!("valid until {}", time(c.expires_at)),
            };
            let _ = writeln!(
                out,
                "    credential {} (issued by {}): {status}",
                c.id, c.issued_by
            );
        }
    }
    out.push_str("operators:\n");
    for o in state.operators.iter() {
        let roles: Vec<&str> = o.roles.iter().map(|r| r.name()).collect();
        let _ = writeln!(
            out,
            "  {} ({}), added by {}",
            o.name,
            roles.join(", "),
            o.added_by
        );
    }
    let _ = writeln!(out, "open sessions: {}", state.sessions.len());
    for (id, s) in &state.sessions {
        let _ = writeln!(
            out,
            "  session {id}: {} on {} from {} ({}), opened {}, {} statements",
            s.identity,
            s.target,
            s.client_addr,
            s.application_name.as_deref().unwrap_or("-"),
            time(s.opened),
            s.statements
        );
    }
    let _ = writeln!(out, "approvals: {}", state.approvals.requests.len());
    for (id, a) in &state.approvals.requests {
        let _ = writeln!(
            out,
            "  approval {id}: {} for {} ({}): {}",
            a.status.name(),
            a.identity,
            a.rule,
            a.sql
        );
    }
    for (identity, grants) in &state.approvals.grants {
        for (fingerprint, g) in grants {
            let _ = writeln!(
                out,
                "  grant to {identity} until {} (approval {}): {fingerprint}",
                time(g.until),
                g.approval
            );
        }
    }
    out
}

/// What `gatehouse state --check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCheck {
    /// Events folded from the first.
    pub events: u64,
    /// Snapshot events found.
    pub snapshots: u64,
    /// Of those, snapshots in an older encoding (an older Gatehouse's
    /// fold), which are neither used nor compared.
    pub older: u64,
    /// Snapshots whose state is not the fold of the events they cover, in
    /// log order.
    pub mismatches: Vec<Mismatch>,
    /// Where the writer's snapshot index disagrees with the snapshot events.
    pub index_problem: Option<String>,
}

impl SnapshotCheck {
    /// Whether every snapshot matched and the index agrees.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.index_problem.is_none()
    }
}

/// A snapshot that must not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The snapshot event.
    pub seq: u64,
    /// Events it claims to cover.
    pub covers: u64,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the snapshot at event {} (covering the first {} events) {}",
            self.seq, self.covers, self.problem
        )
    }
}

/// Folds the ledger from its first event and compares every snapshot in it
/// with the fold: a snapshot is trusted by start-up and time travel, so an
/// auditor checks that each one is exactly the fold of the events it covers.
/// Reads every event twice (once to find the snapshots, independently of
/// the index; once to fold), never the snapshots' own claims.
pub fn check_snapshots(path: &Path) -> Result<SnapshotCheck> {
    let reader = LedgerReader::open(path)?;
    let replay = |e: gatehouse_ledger::LedgerError| {
        anyhow::Error::new(e).context(format!("cannot replay {}", path.display()))
    };
    // Every snapshot event: (seq, covers, recorded hash), plus the ones
    // broken on their own.
    let mut found = Vec::new();
    let mut mismatches = Vec::new();
    // Written by an older Gatehouse, which folded events otherwise: listed
    // in the index, neither used nor compared.
    let mut older = Vec::new();
    for stored in reader.events(0..u64::MAX) {
        let event = stored.map_err(replay)?.event;
        if let EventBody::Snapshot(s) = event.body {
            let mismatch = |problem: String| Mismatch {
                seq: event.seq,
                covers: s.covers,
                problem,
            };
            if s.covers > event.seq {
                mismatches.push(mismatch("claims events recorded after itself".into()));
            } else if let Err(e) = snapshot::restore(&s) {
                match e {
                    snapshot::SnapshotError::UnknownVersion(v) if v < snapshot::VERSION => {
                        older.push((event.seq, s.covers, Vec::new()));
                    }
                    e => mismatches.push(mismatch(format!("cannot be used: {e}"))),
                }
            } else {
                found.push((event.seq, s.covers, s.state_hash.0));
            }
        }
    }
    let snapshots = (found.len() + mismatches.len() + older.len()) as u64;
    let indexed: Vec<(u64, u64, Vec<u8>)> = found.iter().chain(&older).cloned().collect();
    let index_problem = index_problem(&reader, &indexed, &mismatches)?;
    // Fold, hashing the state wherever a snapshot says it stands.
    let mut wanted: std::collections::BTreeMap<u64, Vec<(u64, Vec<u8>)>> = Default::default();
    for (seq, covers, hash) in found {
        wanted.entry(covers).or_default().push((seq, hash));
    }
    let mut state = GatewayState::default();
    let mut events = reader.events(0..u64::MAX);
    loop {
        if let Some(claims) = wanted.remove(&state.events) {
            let fold = snapshot::state_hash(&state);
            for (seq, recorded) in claims.into_iter().filter(|(_, h)| h[..] != fold.0[..]) {
                mismatches.push(mismatch_with_fold(&reader, seq, &recorded, &state, fold)?);
            }
        }
        match events.next() {
            Some(stored) => state.apply(&stored.map_err(replay)?.event),
            None => break,
        }
    }
    mismatches.sort_by_key(|m| m.seq);
    Ok(SnapshotCheck {
        events: state.events,
        snapshots,
        older: older.len() as u64,
        mismatches,
        index_problem,
    })
}

/// Describes a snapshot whose hash differs from the fold's, naming the
/// parts of the state that differ.
fn mismatch_with_fold(
    reader: &LedgerReader,
    seq: u64,
    recorded: &[u8],
    fold: &GatewayState,
    fold_hash: snapshot::StateHash,
) -> Result<Mismatch> {
    let claimed = match reader.get(seq)?.map(|s| s.event.body) {
        Some(EventBody::Snapshot(s)) => snapshot::restore(&s).ok(),
        _ => None,
    };
    let parts = claimed
        .map(|c| snapshot::differing_parts(&c, fold).join(", "))
        .unwrap_or_default();
    let recorded: String = recorded.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Mismatch {
        seq,
        covers: fold.events,
        problem: format!(
            "is not the fold of those events (its state hash is {recorded}, the fold's is {fold_hash}; they differ in: {parts}): it must not be trusted"
        ),
    })
}

/// Compares the writer's snapshot index with the snapshot events: the
/// writer indexes the first snapshot of each `covers` that does not claim
/// events after itself.
fn index_problem(
    reader: &LedgerReader,
    found: &[(u64, u64, Vec<u8>)],
    broken: &[Mismatch],
) -> Result<Option<String>> {
    let mut expected = std::collections::BTreeMap::new();
    let indexable = found.iter().map(|(seq, covers, _)| (*seq, *covers)).chain(
        broken
            .iter()
            .filter(|m| m.covers <= m.seq)
            .map(|m| (m.seq, m.covers)),
    );
    for (seq, covers) in indexable {
        expected
            .entry(covers)
            .and_modify(|s: &mut u64| *s = (*s).min(seq))
            .or_insert(seq);
    }
    let expected: Vec<(u64, u64)> = expected.into_iter().collect();
    let index = reader.snapshot_index()?;
    if index == expected {
        return Ok(None);
    }
    let first = index
        .iter()
        .zip(&expected)
        .find(|(a, b)| a != b)
        .map(|(a, b)| {
            format!(
                "it lists (covers {}, event {}) where the events say (covers {}, event {})",
                a.0, a.1, b.0, b.1
            )
        })
        .unwrap_or_else(|| {
            format!(
                "it has {} rows for {} snapshot events",
                index.len(),
                expected.len()
            )
        });
    Ok(Some(format!(
        "the snapshot index disagrees with the snapshot events: {first}; readers would start from the wrong snapshot or none"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_parses_sequence_numbers_and_rfc3339_times() {
        assert_eq!("17".parse::<At>().unwrap(), At::Seq(17));
        assert_eq!(
            "1970-01-01T00:00:01.5Z".parse::<At>().unwrap(),
            At::Time(1_500_000_000)
        );
        assert_eq!(
            "1970-01-01T01:00:01+01:00".parse::<At>().unwrap(),
            At::Time(1_000_000_000)
        );
        assert!("yesterday".parse::<At>().is_err());
    }

    #[test]
    fn state_at_an_event_and_at_an_instant() {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::init::init(&dir.path().join("gh"), Some("gatehouse.test/state")).unwrap();
        let config = crate::config::Config::load(&out.config).unwrap();
        crate::commands::identity_create_offline(&config, "bot", None, "t".into()).unwrap();
        let reader = LedgerReader::open(&config.ledger.path).unwrap();
        let created = reader.len().unwrap() - 1;
        let before = state_at(&config.ledger.path, At::Seq(created - 1)).unwrap();
        assert!(before.identities.get("bot").is_none());
        assert_eq!(before.events, created);
        let after = state_at(&config.ledger.path, At::Seq(created)).unwrap();
        assert!(after.identities.get("bot").is_some());
        let created_at = reader.get(created).unwrap().unwrap().event.ts;
        assert_eq!(
            state_at(&config.ledger.path, At::Time(created_at)).unwrap(),
            after
        );
        assert_eq!(
            state_at(&config.ledger.path, At::Time(created_at - 1)).unwrap(),
            before
        );
    }

    /// A ledger made by `init` plus identities, with the writer's options.
    fn ledger_with_identities(
        dir: &Path,
        names: &[&str],
    ) -> (crate::config::Config, gatehouse_ledger::Ledger) {
        let out = crate::init::init(&dir.join("gh"), Some("gatehouse.test/state")).unwrap();
        let config = crate::config::Config::load(&out.config).unwrap();
        for name in names {
            crate::commands::identity_create_offline(&config, name, None, "t".into()).unwrap();
        }
        let ledger = gatehouse_ledger::Ledger::open(config.writer_options().unwrap()).unwrap();
        (config, ledger)
    }

    fn blocked(identity: &str) -> EventBody {
        gatehouse_ledger::event::IdentityBlocked {
            identity: identity.into(),
            operator: "bob".into(),
            reason: "test".into(),
            trigger: None,
        }
        .into()
    }

    /// A retired signing key that leaked, and write access to the file: the
    /// attacker signs the newest checkpoint with the retired key and deletes
    /// the rotation from the writer's index. An investigator pinning the
    /// first key must not take the retired key's word for the window it
    /// reads: the newest snapshot lists the rotation, so the read falls back
    /// to the whole pass, which finds the record and refuses the ledger.
    #[test]
    fn a_rotation_hidden_from_the_index_is_not_trusted_away() {
        use gatehouse_ledger::event::{KeyRotated, OperatorAction};
        use gatehouse_ledger::note::NoteSigner;
        use gatehouse_ledger::{Ledger, WriterOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let first = NoteSigner::from_seed("gatehouse.test/rotated", [1; 32]).unwrap();
        let second = NoteSigner::from_seed("gatehouse.test/rotated", [2; 32]).unwrap();
        let action = |i: u64| -> EventBody {
            OperatorAction {
                operator: "ops".into(),
                action: format!("step {i}"),
                target: None,
                outcome: "ok".into(),
                detail: None,
            }
            .into()
        };
        let ledger = Ledger::open(WriterOptions::new(&path, first.clone())).unwrap();
        for i in 0..300 {
            ledger.append_blocking(&[action(i)]).unwrap();
        }
        ledger
            .append_blocking(&[KeyRotated {
                operator: "ops".into(),
                old_key: first.verifier().to_string(),
                new_key: second.verifier().to_string(),
            }
            .into()])
            .unwrap();
        ledger.close();
        let ledger = Ledger::open(WriterOptions::new(&path, second.clone())).unwrap();
        for i in 300..600 {
            ledger.append_blocking(&[action(i)]).unwrap();
        }
        let folded = rebuild(&path, At::Seq(u64::MAX - 1), Start::Genesis).unwrap();
        assert_eq!(folded.state.key_rotations, vec![300]);
        ledger
            .append_blocking(&[snapshot::snapshot(&folded.state).into()])
            .unwrap();
        for i in 600..610 {
            ledger.append_blocking(&[action(i)]).unwrap();
        }
        ledger.close();
        let pinned = dir.path().join("first.pub");
        std::fs::write(&pinned, format!("{}\n", first.verifier())).unwrap();
        let end = At::Seq(u64::MAX - 1);
        let honest = verified_state_at(&path, end, Some(&pinned)).unwrap();
        assert_eq!(honest.coverage.pass, Pass::Window);
        assert_eq!(honest.coverage.rotations, vec![300]);

        let conn = rusqlite::Connection::open(&path).unwrap();
        let (size, note): (i64, String) = conn
            .query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let text = format!("{}\n", note.split_once("\n\n").unwrap().0);
        conn.execute(
            "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
            rusqlite::params![first.sign(&text), size],
        )
        .unwrap();
        conn.execute("DELETE FROM rotations", []).unwrap();
        drop(conn);
        let refused = verified_state_at(&path, end, Some(&pinned)).unwrap_err();
        assert!(format!("{refused:#}").contains("rotat"), "{refused:#}");
    }

    #[test]
    fn the_state_text_gives_times_in_rfc3339_and_operators_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ledger) = ledger_with_identities(dir.path(), &["a"]);
        ledger.append_blocking(&[blocked("a")]).unwrap();
        ledger.close();
        let text = state_text(&load_state(&config.ledger.path).unwrap());
        let year = |line: &str| line.contains(" at 20") && line.contains('T') && line.contains('Z');
        let blocked_line = text
            .lines()
            .find(|l| l.contains("BLOCKED by bob"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(year(blocked_line), "{blocked_line}");
        assert!(text.starts_with("as of 20"), "{text}");
        // init's first operator, by name with its roles.
        let operators = text.split("operators:\n").nth(1).unwrap();
        assert!(
            operators.lines().next().unwrap().contains("(admin"),
            "{text}"
        );
    }

    #[test]
    fn snapshots_shorten_the_fold_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ledger) = ledger_with_identities(dir.path(), &["a", "b"]);
        let path = config.ledger.path.clone();
        let at_snapshot = load_state(&path).unwrap();
        ledger
            .append_blocking(&[blocked("a"), snapshot::snapshot(&at_snapshot).into()])
            .unwrap();
        ledger.append_blocking(&[blocked("b")]).unwrap();
        ledger.close();
        let len = LedgerReader::open(&path).unwrap().len().unwrap();
        for seq in 0..len {
            let fast = rebuild(&path, At::Seq(seq), Start::Snapshot).unwrap();
            let slow = rebuild(&path, At::Seq(seq), Start::Genesis).unwrap();
            assert_eq!(fast.state, slow.state, "at event {seq}");
            assert_eq!(slow.folded, seq + 1);
            assert!(fast.refused.is_none());
            if seq + 1 >= at_snapshot.events {
                // The snapshot was written after the block of "a", but it
                // describes the state before it, so it serves that instant too.
                assert_eq!(
                    fast.snapshot,
                    Some((at_snapshot.events + 1, at_snapshot.events))
                );
                assert_eq!(fast.folded, seq + 1 - at_snapshot.events);
            } else {
                assert_eq!(fast.snapshot, None);
            }
        }
        let end = rebuild(&path, At::Seq(u64::MAX - 1), Start::Snapshot).unwrap();
        assert_eq!(end.folded, 3, "block, snapshot, block");
        assert_eq!(end.state.blocks.len(), 2);
        let check = check_snapshots(&path).unwrap();
        assert!(check.passed(), "{check:?}");
        assert_eq!((check.snapshots, check.events), (1, len));
    }

    #[test]
    fn a_forged_snapshot_is_used_by_start_up_and_caught_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ledger) = ledger_with_identities(dir.path(), &["a"]);
        let path = config.ledger.path.clone();
        let honest = load_state(&path).unwrap();
        // Consistent with its own hash, signed and chained like any event,
        // and a lie: "a" was never blocked.
        let mut forged = honest.clone();
        forged.blocks.insert(
            "a".into(),
            gatehouse_engine::state::Block {
                operator: "mallory".into(),
                reason: "forged".into(),
                trigger: None,
                seq: 0,
                ts: 0,
            },
        );
        // And a damaged one, whose state no longer hashes to its hash.
        let mut damaged = snapshot::snapshot(&honest);
        let last = damaged.state.0.len() - 1;
        damaged.state.0[last] ^= 1;
        ledger
            .append_blocking(&[snapshot::snapshot(&forged).into()])
            .unwrap();
        ledger.close();
        let used = rebuild(&path, At::Seq(u64::MAX - 1), Start::Snapshot).unwrap();
        assert!(used.state.blocks.contains_key("a"), "the threat is real");
        let check = check_snapshots(&path).unwrap();
        assert!(!check.passed());
        let m = &check.mismatches[0];
        assert_eq!((m.seq, m.covers), (honest.events, honest.events));
        assert!(m.to_string().contains("differ in: blocks"), "{m}");

        let ledger = gatehouse_ledger::Ledger::open(config.writer_options().unwrap()).unwrap();
        ledger.append_blocking(&[damaged.into()]).unwrap();
        ledger.close();
        // The damaged snapshot covers as many events as the forged one; the
        // index keeps the first, so start-up still meets the forged one.
        let check = check_snapshots(&path).unwrap();
        assert_eq!(check.mismatches.len(), 2);
        assert!(
            check.mismatches[1].problem.contains("does not hash"),
            "{}",
            check.mismatches[1]
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_the_fold_starts_from_the_first_event() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ledger) = ledger_with_identities(dir.path(), &["a"]);
        let path = config.ledger.path.clone();
        let honest = load_state(&path).unwrap();
        let mut damaged = snapshot::snapshot(&honest);
        damaged.state_hash.0[0] ^= 1;
        ledger.append_blocking(&[damaged.into()]).unwrap();
        ledger.close();
        let rebuilt = rebuild(&path, At::Seq(u64::MAX - 1), Start::Snapshot).unwrap();
        assert!(rebuilt.refused.unwrap().contains("does not hash"));
        assert_eq!(rebuilt.snapshot, None);
        assert_eq!(rebuilt.folded, honest.events + 1);
        let mut expected = honest;
        expected.events += 1;
        expected.as_of = rebuilt.state.as_of;
        assert_eq!(rebuilt.state, expected);
    }

    #[test]
    fn an_older_encodings_snapshot_is_neither_used_nor_called_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ledger) = ledger_with_identities(dir.path(), &["a"]);
        let path = config.ledger.path.clone();
        let honest = load_state(&path).unwrap();
        // The same state, labelled with the previous encoding version.
        let mut older = snapshot::encode(&honest);
        assert_eq!(older[2] as u64, snapshot::VERSION);
        older[2] = (snapshot::VERSION - 1) as u8;
        let older = gatehouse_ledger::event::Snapshot {
            covers: honest.events,
            state_hash: gatehouse_ledger::cbor::Bytes(
                snapshot::StateHash::of_encoding(&older).0.to_vec(),
            ),
            state: gatehouse_ledger::cbor::Bytes(older),
        };
        ledger.append_blocking(&[older.into()]).unwrap();
        ledger.close();
        let rebuilt = rebuild(&path, At::Seq(u64::MAX - 1), Start::Snapshot).unwrap();
        assert_eq!(rebuilt.snapshot, None, "an older snapshot was used");
        let check = check_snapshots(&path).unwrap();
        assert!(check.passed(), "{check:?}");
        assert_eq!((check.snapshots, check.older), (1, 1));
    }
}
