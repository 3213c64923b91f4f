//! Concurrent read access: events by sequence, time, session and identity.
//!
//! Readers use their own read-only connections; in WAL mode they see a
//! consistent committed prefix and never block the writer. Iterators fetch
//! pages by sequence number (keyset pagination), so a long scan holds no
//! transaction open and memory stays bounded.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::event::{Event, EventBody, Nanos, SessionId, Snapshot};
use crate::schema;
use crate::shape::ShapeResolver;
use crate::LedgerError;

const PAGE: i64 = 512;

/// A read-only view of a ledger: one file, or every segment of a ledger cut
/// into segments (section 9 of the format), read as one log.
pub struct LedgerReader {
    /// By increasing first sequence number; the last is the live one.
    parts: Vec<Part>,
    path: PathBuf,
    /// Whether the files have the `subtrees` table (asked once).
    subtrees: std::cell::OnceCell<bool>,
    /// When the oldest file kept is a later segment (the earlier ones
    /// archived and removed): the tree before it, from its opening record.
    base: Option<crate::merkle::Frontier>,
    /// Statement shapes read so far (section 7.2 of the format).
    shapes: std::cell::RefCell<ShapeResolver>,
}

/// One file of the ledger.
struct Part {
    conn: Connection,
    path: PathBuf,
    /// The sequence number of its first event.
    first: u64,
}

/// A stored event: the decoded event and the exact bytes that were hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The decoded event.
    pub event: Event,
    /// Its record bytes as stored.
    pub bytes: Vec<u8>,
}

/// A snapshot event found through the snapshot index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The snapshot event's own sequence number (at least `snapshot.covers`).
    pub seq: u64,
    /// The snapshot event's timestamp.
    pub ts: Nanos,
    /// Its body: the state after the first `covers` events, and its hash.
    pub snapshot: Snapshot,
}

/// A stored checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Events covered.
    pub size: u64,
    /// The signed note.
    pub note: String,
    /// Consistency proof from the previous checkpoint, 32-byte hashes.
    pub proof: Vec<u8>,
}

#[derive(Clone)]
enum Filter {
    All,
    Session(SessionId),
    Identity(String),
}

impl LedgerReader {
    /// Opens a ledger for reading; fails if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let files = crate::segment::segment_files(&path)?;
        let mut parts: Vec<Part> = Vec::with_capacity(files.len().max(1));
        if files.is_empty() {
            parts.push(Part::open(&path, None)?);
        }
        let count = files.len();
        for (i, (_, file)) in files.into_iter().enumerate() {
            // A live segment a crash left before its schema: nothing in it.
            if i + 1 == count && i > 0 && crate::segment::unwritten(&file) {
                break;
            }
            let part = Part::open(&file, parts.last())?;
            parts.push(part);
        }
        let mut reader = LedgerReader {
            parts,
            path,
            subtrees: std::cell::OnceCell::new(),
            base: None,
            shapes: Default::default(),
        };
        reader.load_base()?;
        Ok(reader)
    }

    /// Reads the tree before the oldest file held, when it is a later
    /// segment, from that segment's opening record.
    fn load_base(&mut self) -> Result<(), LedgerError> {
        let first = self.parts[0].first;
        self.base = None;
        if first > 0 {
            if let Some(StoredEvent {
                event:
                    Event {
                        body: EventBody::SegmentOpened(opened),
                        ..
                    },
                ..
            }) = self.get(first)?
            {
                self.base = crate::merkle::Frontier::from_bytes(&opened.frontier.0)
                    .filter(|f| f.size() == first);
            }
        }
        Ok(())
    }

    /// The sequence number of the first event this reader holds: 0, or the
    /// start of the oldest segment kept when earlier ones were removed.
    pub fn first(&self) -> u64 {
        self.parts[0].first
    }

    /// `MTH(D[lo:hi])` when it is one node of the tree before the oldest
    /// segment kept (whose events are no longer at hand), from that
    /// segment's opening record. Not authenticated: whatever is built from
    /// it is compared with a signed root.
    pub fn frontier_node(&self, lo: u64, hi: u64) -> Option<crate::merkle::Hash> {
        let base = self.base.as_ref()?;
        (hi <= base.size())
            .then(|| base.node(lo, hi - lo))
            .flatten()
    }

    fn err(&self, e: rusqlite::Error) -> LedgerError {
        LedgerError::sqlite(&self.path, e)
    }

    /// The live file: the one a running writer appends to.
    fn live(&self) -> &Part {
        self.parts.last().expect("a reader has a file")
    }

    /// The file holding event `seq` (if any does).
    fn part_of(&self, seq: u64) -> &Part {
        let at = self.parts.partition_point(|p| p.first <= seq);
        &self.parts[at.saturating_sub(1)]
    }

    /// Where the file after `part` starts (`u64::MAX` for the live one).
    fn end_of(&self, part: &Part) -> u64 {
        let at = self.parts.partition_point(|p| p.first <= part.first);
        self.parts.get(at).map_or(u64::MAX, |p| p.first)
    }

    /// The files holding events of `range`, in order (a range a seal cuts
    /// lies in two).
    fn parts_in(&self, range: Range<u64>) -> impl Iterator<Item = &Part> {
        self.parts
            .iter()
            .filter(move |p| p.first < range.end && range.start < self.end_of(p))
    }

    /// Number of events committed in the files this reader holds (see
    /// [`LedgerReader::refresh`] for a reader kept open while the writer
    /// seals segments).
    pub fn len(&self) -> Result<u64, LedgerError> {
        part_len(self.live())
    }

    /// Follows the writer: opens the segments sealed or begun since this
    /// reader opened (keeping the files it holds), and lets go of files
    /// removed from disk since (archived segments, `retain_local`). A
    /// reader that lives as long as the gateway calls this before reading on.
    pub fn refresh(&mut self) -> Result<(), LedgerError> {
        let files = crate::segment::segment_files(&self.path)?;
        if files.is_empty() {
            return Ok(());
        }
        if !files.iter().any(|(_, f)| *f == self.live().path) {
            // Not a file of this ledger any more (or never one): start over.
            *self = LedgerReader::open(&self.path)?;
            return Ok(());
        }
        let held: Vec<PathBuf> = self.parts.iter().map(|p| p.path.clone()).collect();
        for (_, file) in files.iter().filter(|(_, f)| !held.contains(f)) {
            if crate::segment::unwritten(file) {
                // Being created: read on the next refresh.
                break;
            }
            let part = Part::open(file, self.parts.last())?;
            self.parts.push(part);
        }
        // Removed files are dropped from the front only: the parts stay one
        // contiguous run of the log.
        let kept = self
            .parts
            .iter()
            .take_while(|p| !files.iter().any(|(_, f)| *f == p.path))
            .count();
        if kept > 0 && kept < self.parts.len() {
            self.parts.drain(..kept);
            self.load_base()?;
        }
        Ok(())
    }

    /// The ledger's path, as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA data_version` of the live file on this reader's
    /// connection: it changes when another connection commits, so a
    /// follower knows, at the cost of one pragma, whether to read on.
    pub fn data_version(&self) -> Result<i64, LedgerError> {
        let live = self.live();
        live.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| LedgerError::sqlite(&live.path, e))
    }

    /// Whether the ledger holds no events.
    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        Ok(self.len()? == 0)
    }

    /// One event by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
        self.record(seq)?
            .map(|data| self.decode(seq, data))
            .transpose()
    }

    /// The record bytes of one event, as stored (not checked).
    pub fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        self.part_of(seq)
            .conn
            .query_row(
                "SELECT data FROM events WHERE seq = ?1",
                [seq as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// `event` as the gateway recorded it: a statement recorded compactly
    /// comes back whole, its shape found by sequence number and checked
    /// against the digest its record carries.
    pub fn resolve(&self, event: Event) -> Result<Event, LedgerError> {
        let mut shapes = self.shapes.borrow_mut();
        shapes.note(&event);
        shapes.resolve(event, |seq| self.record(seq))
    }

    /// The stored event in row `seq`, decoded and resolved.
    fn decode(&self, seq: u64, data: Vec<u8>) -> Result<StoredEvent, LedgerError> {
        let stored = decode(seq, data)?;
        Ok(StoredEvent {
            event: self.resolve(stored.event)?,
            bytes: stored.bytes,
        })
    }

    /// Events with sequence numbers in `range`, in order.
    pub fn events(&self, range: Range<u64>) -> EventIter<'_> {
        EventIter::new(self, Filter::All, range)
    }

    /// Every event of one session, in order.
    pub fn events_by_session(&self, session: SessionId) -> Result<EventIter<'_>, LedgerError> {
        let ranges = self.bucket_ranges(
            "SELECT bucket FROM session_buckets WHERE session = ?1 ORDER BY bucket",
            (session as i64).into(),
        )?;
        Ok(EventIter::over(self, Filter::Session(session), ranges))
    }

    /// Every event concerning one identity, in order.
    pub fn events_by_identity(&self, identity: &str) -> Result<EventIter<'_>, LedgerError> {
        let ranges = self.bucket_ranges(
            "SELECT bucket FROM identity_buckets WHERE identity = ?1 ORDER BY bucket",
            identity.to_owned().into(),
        )?;
        Ok(EventIter::over(
            self,
            Filter::Identity(identity.to_owned()),
            ranges,
        ))
    }

    /// Where one session's events lie, as the unauthenticated index
    /// columns say: the sequence numbers of its `SessionOpened` and, if it
    /// ended, its `SessionClosed` event (`None`: the index knows no opening).
    /// A hint only: a caller checks that the events there are what it says,
    /// and that nothing of the session precedes the one or follows the other
    /// (the writer records a session's opening first and its close last).
    pub fn session_hint(
        &self,
        session: SessionId,
    ) -> Result<Option<(u64, Option<u64>)>, LedgerError> {
        let buckets = self.bucket_ranges(
            "SELECT bucket FROM session_buckets WHERE session = ?1 ORDER BY bucket",
            (session as i64).into(),
        )?;
        let (Some(first), Some(last)) = (buckets.front(), buckets.back()) else {
            return Ok(None);
        };
        let find = |range: &Range<u64>, kind: crate::event::EventKind| {
            for part in self.parts_in(range.clone()) {
                let found = part
                    .conn
                    .prepare_cached(
                        "SELECT seq FROM events WHERE seq >= ?1 AND seq < ?2 AND session = ?3 AND kind = ?4 \
                         ORDER BY seq LIMIT 1",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            rusqlite::params![
                                range.start as i64,
                                range.end as i64,
                                session as i64,
                                kind.code() as i64
                            ],
                            |r| r.get::<_, i64>(0),
                        )
                        .optional()
                    })
                    .map_err(|e| self.err(e))?;
                if let Some(seq) = found {
                    return Ok(Some(seq as u64));
                }
            }
            Ok(None)
        };
        let Some(opened) = find(first, crate::event::EventKind::SessionOpened)? else {
            return Ok(None);
        };
        let closed = find(last, crate::event::EventKind::SessionClosed)?;
        Ok(Some((opened, closed)))
    }

    /// The sequence ranges of the index buckets a key appears in.
    fn bucket_ranges(
        &self,
        sql: &str,
        key: rusqlite::types::Value,
    ) -> Result<VecDeque<Range<u64>>, LedgerError> {
        let mut buckets = Vec::new();
        for part in &self.parts {
            let mut stmt = part.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let found = stmt
                .query_map([key.clone()], |r| r.get::<_, i64>(0))
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
            buckets.extend(found);
        }
        // A bucket cut by a seal is indexed in both segments.
        buckets.sort_unstable();
        buckets.dedup();
        Ok(buckets
            .into_iter()
            .map(|b| {
                let start = (b as u64) << schema::BUCKET_BITS;
                start..start + (1 << schema::BUCKET_BITS)
            })
            .collect())
    }

    /// Events with `from <= ts < to`, in order.
    pub fn events_between(&self, from: Nanos, to: Nanos) -> Result<EventIter<'_>, LedgerError> {
        let start = self.first_at_or_after(from)?;
        let end = self.first_at_or_after(to)?;
        Ok(self.events(start..end.max(start)))
    }

    /// The first sequence number whose timestamp is at least `ts` (the
    /// event count if none). Timestamps never decrease along the log, so a
    /// binary search over sequence numbers replaces a time index.
    pub fn first_at_or_after(&self, ts: Nanos) -> Result<u64, LedgerError> {
        let (mut lo, mut hi) = (self.parts[0].first, self.len()?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at: i64 = self
                .part_of(mid)
                .conn
                .prepare_cached("SELECT ts FROM events WHERE seq = ?1")
                .and_then(|mut stmt| stmt.query_row([mid as i64], |r| r.get(0)))
                .map_err(|e| LedgerError::sqlite(&self.path, e))?;
            if (at as u64) < ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Streams the stored bytes of the events in `range` to `visit`, in
    /// order, without decoding them: an exporter hashes every record to
    /// rebuild the Merkle tree, and decoding a million events would cost more
    /// than hashing them. Pages by sequence number like [`EventIter`], so no
    /// read transaction stays open for the whole scan. A missing event is
    /// damage and is reported, not skipped.
    pub fn for_each_record(
        &self,
        range: Range<u64>,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> Result<(), LedgerError> {
        const RAW_PAGE: i64 = 8192;
        let end = range.end.min(i64::MAX as u64);
        let mut next = range.start;
        while next < end {
            let part = self.part_of(next);
            let mut stmt = part
                .conn
                .prepare_cached(
                    "SELECT seq, data FROM events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(|e| self.err(e))?;
            let part_end = end.min(self.end_of(part));
            let mut rows = stmt
                .query(rusqlite::params![next as i64, part_end as i64, RAW_PAGE])
                .map_err(|e| self.err(e))?;
            let before = next;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let seq = row.get::<_, i64>(0).map_err(|e| self.err(e))? as u64;
                if seq != next {
                    return Err(LedgerError::Damaged(format!(
                        "event {next} is missing (the next stored event is {seq})"
                    )));
                }
                let data = row.get_ref(1).map_err(|e| self.err(e))?;
                let data = data
                    .as_blob()
                    .map_err(|e| self.err(rusqlite::Error::from(e)))?;
                visit(seq, data);
                next += 1;
            }
            if next == before {
                return Err(LedgerError::Damaged(format!(
                    "event {next} is missing (the ledger ends before it)"
                )));
            }
        }
        Ok(())
    }

    /// The snapshot with the largest `covers` not above `max_covers`, found
    /// through the writer's snapshot index (`None` if there is none, or the
    /// ledger predates the index). The event is read and decoded, so the
    /// index can only point at a snapshot, never stand in for one; an index
    /// row that does not match its event is reported as damage.
    pub fn latest_snapshot(&self, max_covers: u64) -> Result<Option<StoredSnapshot>, LedgerError> {
        if !self.has_table("snapshots")? {
            return Ok(None);
        }
        let mut row: Option<(i64, i64)> = None;
        for part in self.parts.iter().rev() {
            row = part
                .conn
                .query_row(
                    "SELECT covers, seq FROM snapshots WHERE covers <= ?1 ORDER BY covers DESC LIMIT 1",
                    [max_covers.min(i64::MAX as u64) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if row.is_some() {
                break;
            }
        }
        let Some((covers, seq)) = row else {
            return Ok(None);
        };
        let (covers, seq) = (covers as u64, seq as u64);
        match self.get(seq)?.map(|s| s.event) {
            Some(Event {
                ts,
                body: EventBody::Snapshot(snapshot),
                ..
            }) if snapshot.covers == covers => Ok(Some(StoredSnapshot { seq, ts, snapshot })),
            _ => Err(LedgerError::Damaged(format!(
                "the snapshot index of {} says event {seq} is a snapshot of the first {covers} events, but it is not; \
                 the events are unaffected, so state can still be folded from the first event",
                self.path.display()
            ))),
        }
    }

    /// The writer's snapshot index: `(covers, seq)` pairs by increasing
    /// `covers` (empty if the ledger predates the index). `gatehouse state
    /// --check` compares it with the snapshots it finds by reading every event.
    pub fn snapshot_index(&self) -> Result<Vec<(u64, u64)>, LedgerError> {
        if !self.has_table("snapshots")? {
            return Ok(Vec::new());
        }
        let mut index = Vec::new();
        for part in &self.parts {
            let mut stmt = part
                .conn
                .prepare("SELECT covers, seq FROM snapshots ORDER BY covers")
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                index.push(row.map_err(|e| self.err(e))?);
            }
        }
        Ok(index)
    }

    /// The writer's stored hash of the complete subtree of leaves
    /// `idx << level .. (idx + 1) << level` (`None` if it is not stored, or
    /// the ledger predates the `subtrees` table). Not authenticated: a
    /// reader uses it to rebuild a signed root, which fails if it is wrong.
    pub fn subtree(
        &self,
        level: u32,
        idx: u64,
    ) -> Result<Option<crate::merkle::Hash>, LedgerError> {
        if !*self
            .subtrees
            .get_or_init(|| self.has_table("subtrees").unwrap_or(false))
        {
            return Ok(None);
        }
        // Stored in the segment that holds the subtree's last event.
        let last = ((idx + 1) << level).saturating_sub(1);
        let mut stmt = self
            .part_of(last)
            .conn
            .prepare_cached("SELECT hash FROM subtrees WHERE level = ?1 AND idx = ?2")
            .map_err(|e| self.err(e))?;
        let hash: Option<Vec<u8>> = stmt
            .query_row(
                rusqlite::params![level, idx.min(i64::MAX as u64) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(hash.and_then(|h| h.try_into().ok()))
    }

    fn has_table(&self, name: &str) -> Result<bool, LedgerError> {
        self.live()
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Every checkpoint, by increasing size.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        let mut all = Vec::new();
        for part in &self.parts {
            let mut stmt = part
                .conn
                .prepare("SELECT size, note, proof FROM checkpoints ORDER BY size")
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], checkpoint_row)
                .map_err(|e| self.err(e))?;
            for row in rows {
                all.push(row.map_err(|e| self.err(e))?);
            }
        }
        Ok(all)
    }

    /// The log's signing keys (see [`crate::rotation`]), trusted through
    /// `trusted`, which must be one of them.
    pub fn key_schedule(
        &self,
        trusted: &crate::note::VerifierKey,
    ) -> Result<crate::rotation::KeySchedule, LedgerError> {
        let conns: Vec<&Connection> = self.parts.iter().map(|p| &p.conn).collect();
        crate::rotation::KeySchedule::read_all(&conns, trusted)
    }

    /// The size of the checkpoint before the one of `size` (0 if none).
    pub fn previous_checkpoint_size(&self, size: u64) -> Result<u64, LedgerError> {
        for part in self.parts.iter().rev().filter(|p| p.first < size) {
            let previous = crate::rotation::previous_checkpoint_size(&part.conn, size)?;
            if previous > 0 {
                return Ok(previous);
            }
        }
        Ok(0)
    }

    /// The newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        for part in self.parts.iter().rev() {
            let newest = part
                .conn
                .query_row(
                    "SELECT size, note, proof FROM checkpoints ORDER BY size DESC LIMIT 1",
                    [],
                    checkpoint_row,
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if newest.is_some() {
                return Ok(newest);
            }
        }
        Ok(None)
    }

    fn page(
        &self,
        filter: &Filter,
        from: u64,
        to: u64,
    ) -> Result<Vec<(i64, Vec<u8>)>, LedgerError> {
        let (sql, key): (&str, Option<rusqlite::types::Value>) = match filter {
            Filter::Session(s) => (
                "SELECT seq, data FROM events WHERE seq >= ?1 AND seq < ?2 AND session = ?4 ORDER BY seq LIMIT ?3",
                Some((*s as i64).into()),
            ),
            // `events.identity` is empty in records written since format
            // version 3: the iterator selects on the decoded records.
            Filter::All | Filter::Identity(_) => (
                "SELECT seq, data FROM events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
                None,
            ),
        };
        let to = to.min(i64::MAX as u64);
        let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        // A range cut by a seal is read from one segment, then the next.
        let mut from = from;
        loop {
            let part = self.part_of(from);
            let part_to = to.min(self.end_of(part)) as i64;
            let mut stmt = part.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let rows = match &key {
                None => stmt.query_map(rusqlite::params![from as i64, part_to, PAGE], map),
                Some(k) => stmt.query_map(rusqlite::params![from as i64, part_to, PAGE, k], map),
            }
            .map_err(|e| self.err(e))?;
            let rows: Vec<(i64, Vec<u8>)> =
                rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
            let next = self.end_of(part);
            if !rows.is_empty() || next >= to {
                return Ok(rows);
            }
            from = next;
        }
    }
}

impl Part {
    /// Opens one file of the ledger; `before` is the file preceding it,
    /// where a segment with no event yet starts (a file given on its own
    /// starts at its first event).
    fn open(file: &Path, before: Option<&Part>) -> Result<Part, LedgerError> {
        let conn = schema::open_read_only(file)?;
        let first: Option<i64> = conn
            .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))
            .map_err(|e| LedgerError::sqlite(file, e))?;
        let first = match (first, before) {
            (Some(f), _) => f as u64,
            (None, Some(before)) => part_len(before)?,
            (None, None) => 0,
        };
        Ok(Part {
            conn,
            path: file.to_path_buf(),
            first,
        })
    }
}

/// A `checkpoints` row read as `size, note, proof`.
fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.get::<_, i64>(0)? as u64,
        note: r.get(1)?,
        proof: r.get(2)?,
    })
}

/// Events in one file: one past its highest sequence number (its first if
/// it holds none).
fn part_len(part: &Part) -> Result<u64, LedgerError> {
    part.conn
        .query_row("SELECT MAX(seq) + 1 FROM events", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map(|n| n.map_or(part.first, |n| n as u64))
        .map_err(|e| LedgerError::sqlite(&part.path, e))
}

fn decode(seq: u64, data: Vec<u8>) -> Result<StoredEvent, LedgerError> {
    let event = Event::from_bytes(&data)
        .map_err(|e| LedgerError::Damaged(format!("event {seq} cannot be decoded: {e}")))?;
    if event.seq != seq {
        return Err(LedgerError::Damaged(format!(
            "row {seq} holds the record of event {}",
            event.seq
        )));
    }
    Ok(StoredEvent { event, bytes: data })
}

/// Iterates events page by page over a list of sequence ranges. Yields an
/// error (and then stops) if a stored event cannot be decoded: damage is
/// reported, never skipped.
pub struct EventIter<'r> {
    reader: &'r LedgerReader,
    filter: Filter,
    ranges: VecDeque<Range<u64>>,
    buf: VecDeque<(i64, Vec<u8>)>,
    done: bool,
}

impl<'r> EventIter<'r> {
    fn new(reader: &'r LedgerReader, filter: Filter, range: Range<u64>) -> Self {
        Self::over(reader, filter, VecDeque::from([range]))
    }

    fn over(reader: &'r LedgerReader, filter: Filter, ranges: VecDeque<Range<u64>>) -> Self {
        EventIter {
            reader,
            filter,
            ranges,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl Iterator for EventIter<'_> {
    type Item = Result<StoredEvent, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while !self.done && self.buf.is_empty() {
                let Some(range) = self.ranges.front_mut() else {
                    self.done = true;
                    break;
                };
                match self.reader.page(&self.filter, range.start, range.end) {
                    Ok(rows) if rows.is_empty() => {
                        self.ranges.pop_front();
                    }
                    Ok(rows) => {
                        range.start = rows.last().map_or(range.end, |(seq, _)| *seq as u64 + 1);
                        self.buf.extend(rows);
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let (seq, data) = self.buf.pop_front()?;
            let item = self.reader.decode(seq as u64, data);
            match (&item, &self.filter) {
                (Err(_), _) => {
                    self.done = true;
                    self.buf.clear();
                }
                (Ok(stored), Filter::Identity(i))
                    if stored.event.body.identity() != Some(i.as_str()) =>
                {
                    continue;
                }
                _ => {}
            }
            return Some(item);
        }
    }
}
