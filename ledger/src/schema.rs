//! The SQLite container (docs/ledger-format.md, section 1).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::writer::Durability;
use crate::LedgerError;

/// Value of `ledger_meta.format` for version 1 of the format: a checkpoint
/// in every commit.
pub const FORMAT: &str = "gatehouse-ledger-v1";

/// Value of `ledger_meta.format` for version 2: checkpoints signed at a
/// bounded delay, so the events after the last one are an unsigned tail
/// (docs/ledger-format.md, section 5.3).
pub const FORMAT_V2: &str = "gatehouse-ledger-v2";

/// Value of `ledger_meta.format` for version 3, what writers write:
/// version 2 with statements recorded compactly (a `StatementShape` and
/// `ShapedStatement`s, docs/ledger-format.md, section 7.2) and
/// `events.identity` left empty.
pub const FORMAT_V3: &str = "gatehouse-ledger-v3";

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
CREATE TABLE IF NOT EXISTS subtrees (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rotations (
    seq INTEGER PRIMARY KEY
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
    // A planted trigger could rewrite what the writer inserts.
    check_pinned(&tx, path)?;
    let format: Option<String> = tx
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(ctx)?;
    // Writers write format 3; a format-1 or -2 ledger one opens becomes
    // one (each version only allows more: an unsigned tail, compact
    // statements).
    match format.as_deref() {
        None => {
            tx.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('format', ?1), ('origin', ?2)",
                [FORMAT_V3, origin],
            )
            .map_err(ctx)?;
        }
        Some(FORMAT | FORMAT_V2 | FORMAT_V3) => {
            if format.as_deref() != Some(FORMAT_V3) {
                tx.execute(
                    "UPDATE ledger_meta SET value = ?1 WHERE key = 'format'",
                    [FORMAT_V3],
                )
                .map_err(ctx)?;
            }
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
            "{} has format {other:?}; this Gatehouse reads {FORMAT}, {FORMAT_V2} and {FORMAT_V3}",
            path.display()
        )))
        }
    }
    tx.commit().map_err(ctx)?;
    Ok(conn)
}

/// The schema objects a ledger file may hold: `(type, name, sql)` as
/// SQLite records them in `sqlite_master` (the [`SCHEMA`] statements
/// without `IF NOT EXISTS`; an automatic index has no SQL).
fn pinned_objects() -> Vec<(&'static str, String, Option<String>)> {
    let mut objects: Vec<(&'static str, String, Option<String>)> = SCHEMA
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let sql = s.replacen("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE ", 1);
            let name = sql["CREATE TABLE ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            ("table", name, Some(sql))
        })
        .collect();
    objects.push(("index", "sqlite_autoindex_ledger_meta_1".into(), None));
    objects
}

/// Refuses a ledger file whose schema holds anything the format does not
/// define, or defines a table differently.
///
/// Readers query the tables by sequence number; SQLite answers a query
/// from any index that covers it, and an index (or a view, or a trigger)
/// can be planted in the file, through `writable_schema`, without touching
/// one signed record. Such an index would show readers rows the verifier,
/// which scans the table, never saw. Every object is therefore checked
/// against the format's own statements before anything is read, and the
/// format's one index against its table. Tables a
/// ledger written by an older version lacks (`snapshots`, `subtrees`,
/// `rotations`, `writer_state`)
/// may be missing.
pub fn check_pinned(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let pinned = pinned_objects();
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master")
        .map_err(|e| LedgerError::sqlite(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(|e| LedgerError::sqlite(path, e))?;
    for row in rows {
        let (kind, name, sql) = row.map_err(|e| LedgerError::sqlite(path, e))?;
        let known = pinned
            .iter()
            .any(|(k, n, s)| *k == kind && *n == name && *s == sql);
        if !known {
            return Err(LedgerError::Damaged(format!(
                "{} holds a schema object the ledger format does not define ({kind} {name}: {}); \
                 it may have been planted to show readers other content than the signed records. \
                 Run gatehouse-verify on it, and read a copy from a trusted backup",
                path.display(),
                sql.as_deref().unwrap_or("no SQL")
            )));
        }
    }
    // The format's one index (every other table is its own index) must
    // agree with its table.
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(ledger_meta)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| LedgerError::sqlite(path, e))?;
    if problems != ["ok"] {
        return Err(LedgerError::Damaged(format!(
            "{}: the index of ledger_meta disagrees with its table ({}); run gatehouse-verify on it, \
             and read a copy from a trusted backup",
            path.display(),
            problems.join("; ")
        )));
    }
    Ok(())
}

/// Opens an existing ledger read-only; readers never block the writer. The
/// path is resolved first (symbolic links followed), so that SQLite's
/// `-wal` file is the one beside the real file, as the verifier reads it;
/// the schema is checked against the format (see [`check_pinned`]).
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    if !path.exists() {
        return Err(LedgerError::Io(format!(
            "no ledger at {}; check the path (gatehouse init creates one)",
            path.display()
        )));
    }
    let real = std::fs::canonicalize(path)
        .map_err(|e| LedgerError::Io(format!("cannot resolve {}: {e}", path.display())))?;
    let conn = Connection::open_with_flags(
        &real,
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
    if !matches!(format.as_deref(), Some(FORMAT | FORMAT_V2 | FORMAT_V3)) {
        return Err(LedgerError::Damaged(format!(
            "{} is not a {FORMAT}, {FORMAT_V2} or {FORMAT_V3} ledger",
            path.display()
        )));
    }
    check_pinned(&conn, path)?;
    Ok(conn)
}
