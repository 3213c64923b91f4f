//! The SQLite container (docs/ledger-format.md, section 1).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::writer::Durability;
use crate::LedgerError;

/// Value of `ledger_meta.format` for this version of the format.
pub const FORMAT: &str = "gatehouse-ledger-v1";

/// Events per index bucket, as a power of two: `bucket = seq >> BUCKET_BITS`.
///
/// A per-event index on (session, seq) would touch one B-tree page per
/// distinct session in every commit, multiplying the bytes written to the
/// WAL by the number of concurrent sessions. The bucket tables instead get
/// one row per (session, bucket) pair: readers find a session's buckets and
/// scan those 1,024-event ranges by sequence number, filtering on the
/// `session` column.
pub const BUCKET_BITS: u32 = 10;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    ts       INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    session  INTEGER,
    identity TEXT,
    data     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS session_buckets (
    session INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    PRIMARY KEY (session, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identity_buckets (
    identity TEXT NOT NULL,
    bucket   INTEGER NOT NULL,
    PRIMARY KEY (identity, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    covers INTEGER PRIMARY KEY,
    seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size     INTEGER PRIMARY KEY,
    note     TEXT NOT NULL,
    proof    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS writer_state (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    size     INTEGER NOT NULL,
    frontier BLOB NOT NULL
);
";

/// Opens or creates a ledger for the writer, checking it is a ledger of
/// this format and of the signer's origin.
pub fn open_for_writing(
    path: &Path,
    origin: &str,
    durability: Durability,
) -> Result<Connection, LedgerError> {
    let ctx = |e| LedgerError::sqlite(path, e);
    let mut conn = Connection::open(path).map_err(ctx)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(ctx)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(ctx)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Io(format!(
            "{} cannot use write-ahead logging (journal mode {mode}); put the ledger on a local file system",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::Os => "NORMAL",
        Durability::Fsync => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 16384; PRAGMA cache_size = -16384;"
    ))
    .map_err(ctx)?;
    let tx = conn.transaction().map_err(ctx)?;
    tx.execute_batch(SCHEMA).map_err(ctx)?;
    let format: Option<String> = tx
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(ctx)?;
    match format.as_deref() {
        None => {
            tx.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('format', ?1), ('origin', ?2)",
                [FORMAT, origin],
            )
            .map_err(ctx)?;
        }
        Some(FORMAT) => {
            let stored: String = tx
                .query_row(
                    "SELECT value FROM ledger_meta WHERE key = 'origin'",
                    [],
                    |r| r.get(0),
                )
                .map_err(ctx)?;
            if stored != origin {
                return Err(LedgerError::KeyMismatch(format!(
                    "{} is the ledger of origin {stored:?}, but the signing key is named {origin:?}; use this ledger's own key",
                    path.display()
                )));
            }
        }
        Some(other) => {
            return Err(LedgerError::Damaged(format!(
                "{} has format {other:?}; this Gatehouse reads {FORMAT}",
                path.display()
            )))
        }
    }
    tx.commit().map_err(ctx)?;
    Ok(conn)
}

/// Opens an existing ledger read-only; readers never block the writer.
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    if !path.exists() {
        return Err(LedgerError::Io(format!(
            "no ledger at {}; check the path (gatehouse init creates one)",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LedgerError::sqlite(path, e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| LedgerError::sqlite(path, e))?;
    let format: Option<String> = conn
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| LedgerError::sqlite(path, e))?;
    if format.as_deref() != Some(FORMAT) {
        return Err(LedgerError::Damaged(format!(
            "{} is not a {FORMAT} ledger",
            path.display()
        )));
    }
    Ok(conn)
}
