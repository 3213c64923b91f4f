//! Read-only access to the ledger container, an SQLite database
//! (specification section 1).
//!
//! The verifier must never change what it audits, so the file is opened
//! read-only through an SQLite URI: SQLite will neither create the file nor
//! write to it. Everything is read inside one read transaction, so that a
//! writer appending at the same time cannot show the verifier a checkpoint
//! without the events it covers (the writer commits both together).
//!
//! A read-only SQLite connection is not enough on its own to leave the
//! directory untouched: opening a WAL-mode database (which a ledger is while
//! its writer has it open) creates the `-wal` and `-shm` files if they do not
//! exist, and a reader cannot remove them again. So when the file is in WAL
//! mode but has no `-wal` file, no connection has it open and all its content
//! is in the main file: it is then opened `immutable`, which reads that file
//! without locks and creates nothing. Because an immutable reader cannot
//! notice a writer that starts meanwhile, [`Ledger::read_was_stable`] tells
//! the caller whether the file stayed untouched, so it can read again.
//!
//! This module knows the schema but no verification rules: it hands rows
//! over as they are stored and leaves every judgement to [`crate::verify`].

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use thiserror::Error;

/// The value of `ledger_meta.format` of format version 1.
pub const FORMAT: &str = "gatehouse-ledger-v1";

/// The value of `ledger_meta.format` of format version 2, whose checkpoints
/// are signed at a bounded delay: the events after the last one are an
/// unsigned tail, not a failure (section 5.3).
pub const FORMAT_V2: &str = "gatehouse-ledger-v2";

/// The value of `ledger_meta.format` of format version 3: version 2 with
/// statements recorded compactly (section 7.2), which changes nothing a
/// ledger's verification checks.
pub const FORMAT_V3: &str = "gatehouse-ledger-v3";

/// What every error about the file ends with: what to do about it.
const HINT: &str = "pass the path of a Gatehouse ledger file or evidence bundle";

/// Why a ledger cannot be read at all. These are not integrity failures:
/// the verifier could not run, so it has nothing to say about integrity.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// The path does not name an existing regular file.
    #[error("cannot open ledger {path}: {reason} — {HINT}")]
    NotFound {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// SQLite could not open the file.
    #[error("cannot open ledger {path}: {source} — {HINT}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file is not an SQLite database or lacks the ledger tables.
    #[error("{path} is not a Gatehouse ledger: {reason} — {HINT}")]
    NotALedger {
        /// The path given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The file is a ledger of another format version.
    #[error(
        "{path} is a ledger of format {found:?}, but this verifier reads {FORMAT:?}, {FORMAT_V2:?} and {FORMAT_V3:?} — \
         use the verifier released with that format"
    )]
    UnsupportedFormat {
        /// The path given.
        path: PathBuf,
        /// The format recorded in `ledger_meta`.
        found: String,
    },
    /// A query failed after the file was opened (damage, I/O error, lock).
    #[error(
        "cannot read ledger {path}: {source} — the file may be damaged or locked; \
         retry, or verify a copy"
    )]
    Read {
        /// The path given.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

/// Why a stored value cannot be used as the byte string the format expects
/// (`events.data`, `checkpoints.note`, `checkpoints.proof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellError {
    /// The value is NULL, an INTEGER or a REAL instead of bytes.
    WrongType(&'static str),
    /// A text value (the note) that is not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CellError::WrongType(found) => write!(f, "is {found}, not a byte or text string"),
            CellError::InvalidUtf8 => f.write_str("is not valid UTF-8"),
        }
    }
}

/// One row of `events`, borrowed from SQLite without copying.
///
/// Integer columns are `None` when the stored value is not an integer;
/// `data` is an error when it is not a BLOB or TEXT. Whether such a row
/// breaks a rule is for the verifier to say.
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'a> {
    /// `events.seq`.
    pub seq: Option<i64>,
    /// `events.ts`.
    pub ts: Option<i64>,
    /// `events.kind`.
    pub kind: Option<i64>,
    /// `events.data`: the bytes that are hashed. TEXT is accepted as its
    /// bytes because the hashes, not the SQLite storage class, authenticate
    /// the record.
    pub data: Result<&'a [u8], CellError>,
}

/// One row of `checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// `checkpoints.size`, or `None` if it is not an integer.
    pub size: Option<i64>,
    /// `checkpoints.note`.
    pub note: Result<String, CellError>,
    /// `checkpoints.proof`.
    pub proof: Result<Vec<u8>, CellError>,
}

/// An open ledger, inside one read transaction.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// `path` with symbolic links resolved: the file SQLite reads.
    real: PathBuf,
    /// For an immutable open: the main file's length and modification time
    /// when it was opened.
    immutable: Option<(u64, Option<SystemTime>)>,
    /// Whether the file has the writer's `subtrees` table (asked once).
    subtrees: std::sync::OnceLock<bool>,
}

/// The file that holds a WAL-mode database's recent transactions while a
/// connection has it open.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Whether the database header says WAL mode (file format read and write
/// versions, bytes 18 and 19, are 2). Anything unreadable is "no": the
/// ordinary read-only open then reports the problem.
fn is_wal_mode(path: &Path) -> bool {
    use std::io::Read as _;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map(|()| header[18] == 2 && header[19] == 2)
        .unwrap_or(false)
}

fn file_state(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// The SQLite URI that opens `path` read-only: `file://` followed by the
/// percent-encoded absolute path, so that no character of the path can be
/// mistaken for URI syntax (`?`, `#`, `%`).
fn read_only_uri(path: &Path, immutable: bool) -> Result<String, String> {
    let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
    let text = absolute
        .to_str()
        .ok_or_else(|| "the path is not valid UTF-8".to_owned())?;
    let mut uri = String::from("file://");
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    if immutable {
        uri.push_str("&immutable=1");
    }
    Ok(uri)
}

fn type_name(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an INTEGER",
        ValueRef::Real(_) => "a REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "a BLOB",
    }
}

fn integer(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

fn bytes(value: ValueRef<'_>) -> Result<&[u8], CellError> {
    match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b),
        other => Err(CellError::WrongType(type_name(other))),
    }
}

impl Ledger {
    /// Opens the ledger at `path` read-only, starts the read transaction and
    /// checks that the file is a ledger of this format: the three tables
    /// exist and `ledger_meta.format` is [`FORMAT`].
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let not_found = |reason: &str| LedgerError::NotFound {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(not_found("it is not a regular file")),
            Err(e) => return Err(not_found(&e.to_string())),
        }
        // SQLite follows symbolic links to the real file and reads the
        // `-wal` beside it; so must the check for one, or a WAL beside the
        // real file would be read while the verifier thought there was none.
        let real = std::fs::canonicalize(path).map_err(|e| not_found(&e.to_string()))?;
        let immutable = if is_wal_mode(&real) && !wal_path(&real).exists() {
            file_state(&real)
        } else {
            None
        };
        let uri = read_only_uri(&real, immutable.is_some()).map_err(|reason| not_found(&reason))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&uri, flags).map_err(|source| LedgerError::Open {
                path: path.to_owned(),
                source,
            })?;
        let ledger = Ledger {
            conn,
            path: path.to_owned(),
            real,
            immutable,
            subtrees: std::sync::OnceLock::new(),
        };
        // A writer in rollback-journal mode may hold the file briefly.
        ledger
            .conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| ledger.read_error(e))?;
        // DEFERRED: the snapshot is taken by the first read below and kept
        // until the connection is dropped.
        ledger
            .conn
            .execute_batch("BEGIN")
            .map_err(|e| ledger.read_error(e))?;
        ledger.check_schema()?;
        Ok(ledger)
    }

    /// The path the ledger was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether what was read is guaranteed to be one consistent state of
    /// the file. Always true for an ordinary read-only open (SQLite's read
    /// transaction guarantees it); for an immutable open, true if no writer
    /// opened the file meanwhile (no `-wal` file appeared) and the file's
    /// length and modification time did not change.
    pub fn read_was_stable(&self) -> bool {
        match self.immutable {
            None => true,
            Some(state) => !wal_path(&self.real).exists() && file_state(&self.real) == Some(state),
        }
    }

    fn read_error(&self, source: rusqlite::Error) -> LedgerError {
        if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            return self.not_a_ledger("it is not an SQLite database");
        }
        LedgerError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn not_a_ledger(&self, reason: &str) -> LedgerError {
        LedgerError::NotALedger {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    fn check_schema(&self) -> Result<(), LedgerError> {
        for table in ["ledger_meta", "events", "checkpoints"] {
            let exists: bool = self
                .conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                    [table],
                    |row| row.get(0),
                )
                .map_err(|e| self.read_error(e))?;
            if !exists {
                return Err(self.not_a_ledger(&format!("it has no table {table}")));
            }
        }
        let format: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = 'format'",
                [],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.schema_error(e))?;
        match format {
            None => Err(self.not_a_ledger("ledger_meta has no format entry")),
            Some(f) if f == FORMAT || f == FORMAT_V2 || f == FORMAT_V3 => Ok(()),
            Some(found) => Err(LedgerError::UnsupportedFormat {
                path: self.path.clone(),
                found,
            }),
        }
    }

    /// The format version `ledger_meta.format` names (1, 2 or 3).
    pub fn format_version(&self) -> u8 {
        let format = self
            .conn
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = 'format'",
                [],
                |row| row.get::<_, String>(0),
            )
            .unwrap_or_default();
        match format.as_str() {
            FORMAT_V3 => 3,
            FORMAT_V2 => 2,
            _ => 1,
        }
    }

    /// The schema objects the file holds beyond those section 1 defines
    /// (`type name` each), and the format's one index if it disagrees with
    /// its table. An index, view or trigger planted in the file can make
    /// readers see other rows than the table scan verified here.
    pub fn foreign_objects(&self) -> Result<Vec<String>, LedgerError> {
        const DEFINED: [(&str, &str); 10] = [
            ("table", "ledger_meta"),
            ("table", "events"),
            ("table", "checkpoints"),
            ("table", "writer_state"),
            ("table", "session_buckets"),
            ("table", "identity_buckets"),
            ("table", "snapshots"),
            ("table", "subtrees"),
            ("table", "rotations"),
            ("index", "sqlite_autoindex_ledger_meta_1"),
        ];
        let mut stmt = self
            .conn
            .prepare("SELECT type, name FROM sqlite_master ORDER BY type, name")
            .map_err(|e| self.read_error(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.read_error(e))?;
        let mut foreign = Vec::new();
        for row in rows {
            let (kind, name) = row.map_err(|e| self.read_error(e))?;
            if !DEFINED.contains(&(kind.as_str(), name.as_str())) {
                foreign.push(format!("{kind} {name}"));
            }
        }
        // The one index the format has (every other table is keyed by its
        // rowid or is WITHOUT ROWID, so it is its own index) must agree with
        // its table: SQLite's own check, of that table only, instead of a
        // whole-file PRAGMA integrity_check that would read every page twice.
        if foreign.is_empty() {
            let mut check = self
                .conn
                .prepare("PRAGMA integrity_check(ledger_meta)")
                .map_err(|e| self.read_error(e))?;
            let problems = check
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| self.read_error(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.read_error(e))?;
            if problems != ["ok"] {
                foreign.push(format!(
                    "index sqlite_autoindex_ledger_meta_1 disagreeing with its table ({})",
                    problems.join("; ")
                ));
            }
        }
        Ok(foreign)
    }

    /// Errors while preparing a query mean a table lacks a column the format
    /// requires: the file is not a ledger.
    fn schema_error(&self, source: rusqlite::Error) -> LedgerError {
        match source {
            rusqlite::Error::SqliteFailure(e, Some(msg)) if e.code == ErrorCode::Unknown => {
                self.not_a_ledger(&msg)
            }
            rusqlite::Error::SqlInputError { msg, .. } => self.not_a_ledger(&msg),
            rusqlite::Error::InvalidColumnType(_, name, _) => {
                self.not_a_ledger(&format!("column {name} has the wrong type"))
            }
            other => self.read_error(other),
        }
    }

    /// All checkpoint rows, ordered by size, in memory (see
    /// [`Ledger::for_each_checkpoint`] for a pass that keeps none).
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>, LedgerError> {
        let mut out = Vec::new();
        self.for_each_checkpoint(|row| {
            out.push(row);
            ControlFlow::<()>::Continue(())
        })?;
        Ok(out)
    }

    /// Streams the checkpoint rows, ordered by size, to `visit`: one
    /// statement stepped alongside the events' (SQLite allows both on one
    /// connection), so memory does not grow with the log (a gateway writes a
    /// checkpoint every few events). Stops early when `visit` breaks.
    pub fn for_each_checkpoint<B>(
        &self,
        mut visit: impl FnMut(CheckpointRow) -> ControlFlow<B>,
    ) -> Result<Option<B>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, note, proof FROM checkpoints ORDER BY size")
            .map_err(|e| self.schema_error(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.read_error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.read_error(e))? {
            if let ControlFlow::Break(b) = visit(checkpoint_row(row)) {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Up to `limit` checkpoint rows with integer sizes above `after`
    /// (all when `None`), ordered by size: a page of a pass that keeps
    /// only a page of a log's checkpoints in memory. Rows whose size is
    /// not an integer are never in a page (see
    /// [`Ledger::odd_checkpoint_sizes`]).
    pub fn checkpoint_page(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<CheckpointRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT size, note, proof FROM checkpoints \
                 WHERE typeof(size) = 'integer' AND size > ?1 ORDER BY size LIMIT ?2",
            )
            .map_err(|e| self.schema_error(e))?;
        let mut rows = stmt
            .query(rusqlite::params![after.unwrap_or(i64::MIN), limit as i64])
            .map_err(|e| self.read_error(e))?;
        let mut out = Vec::with_capacity(limit);
        while let Some(row) = rows.next().map_err(|e| self.read_error(e))? {
            out.push(checkpoint_row(row));
        }
        Ok(out)
    }

    /// Whether some checkpoint row's size is not an integer (the format's
    /// `INTEGER PRIMARY KEY` cannot hold one; a table defined otherwise
    /// can): such a ledger is read whole, in the order SQLite sorts sizes.
    pub fn odd_checkpoint_sizes(&self) -> Result<bool, LedgerError> {
        // As section 1 defines it, `size` is the table's rowid: an integer
        // by construction, and no row needs reading to know it.
        let declared: Option<String> = self
            .conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.schema_error(e))?;
        let rowid_alias = self
            .conn
            .query_row(
                "SELECT count(*) = 1 AND sum(name = 'size' AND upper(type) = 'INTEGER' AND pk = 1) = 1 \
                 FROM pragma_table_info('checkpoints') WHERE pk > 0",
                [],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| self.schema_error(e))?;
        let without_rowid =
            declared.is_some_and(|sql| sql.to_uppercase().contains("WITHOUT ROWID"));
        if rowid_alias && !without_rowid {
            return Ok(false);
        }
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE typeof(size) != 'integer')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.schema_error(e))
    }

    /// The note of the checkpoint with the largest size, if any: the
    /// ledger's own last word, shown as evidence next to a trusted note.
    pub fn last_checkpoint_note(&self) -> Result<Option<Result<String, CellError>>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, note, proof FROM checkpoints ORDER BY size DESC LIMIT 1")
            .map_err(|e| self.schema_error(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.read_error(e))?;
        Ok(rows
            .next()
            .map_err(|e| self.read_error(e))?
            .map(|row| checkpoint_row(row).note))
    }

    /// The hash the writer stored for the complete subtree of leaves
    /// `idx << level .. (idx + 1) << level` (section 1, `subtrees`), if it
    /// is there. Not authenticated: a caller checks what it builds from it
    /// against a signed root.
    pub fn subtree(&self, level: u32, idx: u64) -> Result<Option<[u8; 32]>, LedgerError> {
        let exists = *self.subtrees.get_or_init(|| {
            self.conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'subtrees')",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(false)
        });
        if !exists {
            return Ok(None);
        }
        let hash: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM subtrees WHERE level = ?1 AND idx = ?2")
            .and_then(|mut stmt| {
                let mut rows =
                    stmt.query(rusqlite::params![level, idx.min(i64::MAX as u64) as i64])?;
                rows.next()?.map(|r| r.get::<_, Vec<u8>>(0)).transpose()
            })
            .map_err(|e| self.read_error(e))?;
        Ok(hash.and_then(|h| h.try_into().ok()))
    }

    /// The number of events, as the largest `seq` says (for progress
    /// reports only; the pass counts them itself).
    pub fn event_count_hint(&self) -> u64 {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .unwrap_or(0)
    }

    /// The record of event `seq`, if a row holds it.
    pub fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        self.conn
            .prepare_cached("SELECT data FROM events WHERE seq = ?1")
            .and_then(|mut stmt| {
                let mut rows = stmt.query([seq.min(i64::MAX as u64) as i64])?;
                rows.next()?.map(|r| r.get::<_, Vec<u8>>(0)).transpose()
            })
            .map_err(|e| self.read_error(e))
    }

    /// The smallest sequence number stored (`None`: no events): 0, or where
    /// a segment after the first starts (section 9).
    pub fn first_seq(&self) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row("SELECT MIN(seq) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|s| s.map(|s| s.max(0) as u64))
            .map_err(|e| self.read_error(e))
    }

    /// The key rotations the log records from event `from` on (kind 20 rows
    /// whose records read as rotations), in sequence order.
    pub fn rotations_from(&self, from: u64) -> Result<Vec<crate::rotation::Rotation>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, data FROM events WHERE kind = 20 AND seq >= ?1 ORDER BY seq")
            .map_err(|e| self.schema_error(e))?;
        let mut rows = stmt
            .query([from.min(i64::MAX as u64) as i64])
            .map_err(|e| self.read_error(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.read_error(e))? {
            let (Some(seq), Ok(data)) =
                (integer(row.get_ref_unwrap(0)), bytes(row.get_ref_unwrap(1)))
            else {
                continue;
            };
            if let Some(r) = u64::try_from(seq)
                .ok()
                .and_then(|seq| crate::rotation::Rotation::from_record(seq, data))
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The key rotations the log records (kind 20 rows whose records read
    /// as rotations), in sequence order. The kind column is a hint here:
    /// the full scan checks it against every record, and a rotation hidden
    /// or invented through it leaves checkpoints whose signatures fail.
    pub fn rotations(&self) -> Result<Vec<crate::rotation::Rotation>, LedgerError> {
        self.rotations_from(0)
    }

    /// Streams every event row in `seq` order to `visit`, borrowing each
    /// row's data from SQLite. Stops early, returning the value, when
    /// `visit` breaks.
    pub fn for_each_event<B>(
        &self,
        visit: impl FnMut(EventRow<'_>) -> ControlFlow<B>,
    ) -> Result<Option<B>, LedgerError> {
        self.for_each_event_from(0, visit)
    }

    /// Like [`Ledger::for_each_event`], from the rows whose `seq` is at
    /// least `from` (those whose `seq` is not an integer come first, as
    /// SQLite orders them, when `from` is 0).
    pub fn for_each_event_from<B>(
        &self,
        from: u64,
        mut visit: impl FnMut(EventRow<'_>) -> ControlFlow<B>,
    ) -> Result<Option<B>, LedgerError> {
        let sql = if from == 0 {
            "SELECT seq, ts, kind, data FROM events ORDER BY seq"
        } else {
            "SELECT seq, ts, kind, data FROM events WHERE seq >= ?1 ORDER BY seq"
        };
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.schema_error(e))?;
        let mut rows = if from == 0 {
            stmt.query([])
        } else {
            stmt.query([from.min(i64::MAX as u64) as i64])
        }
        .map_err(|e| self.read_error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.read_error(e))? {
            let event = EventRow {
                seq: integer(row.get_ref_unwrap(0)),
                ts: integer(row.get_ref_unwrap(1)),
                kind: integer(row.get_ref_unwrap(2)),
                data: bytes(row.get_ref_unwrap(3)),
            };
            if let ControlFlow::Break(b) = visit(event) {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }
}

fn checkpoint_row(row: &rusqlite::Row<'_>) -> CheckpointRow {
    CheckpointRow {
        size: integer(row.get_ref_unwrap(0)),
        note: bytes(row.get_ref_unwrap(1))
            .and_then(|b| String::from_utf8(b.to_vec()).map_err(|_| CellError::InvalidUtf8)),
        proof: bytes(row.get_ref_unwrap(2)).map(<[u8]>::to_vec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_everything_but_plain_path_characters() {
        let uri = read_only_uri(Path::new("/tmp/a b?c#d%e/l.ledger"), false).unwrap();
        assert_eq!(uri, "file:///tmp/a%20b%3Fc%23d%25e/l.ledger?mode=ro");
        let uri = read_only_uri(Path::new("/l"), true).unwrap();
        assert_eq!(uri, "file:///l?mode=ro&immutable=1");
    }
}
