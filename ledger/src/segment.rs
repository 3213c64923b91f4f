//! Sealed segments (docs/ledger-format.md, section 9).
//!
//! A ledger that would grow without bound is cut into segments: SQLite
//! files beside the configured path, each named after it with its segment
//! number appended (`gatehouse.ledger.000003`). The highest-numbered one is
//! live; the configured path becomes a symbolic link to it, so tools given
//! that path find the whole ledger. Sequence numbers, the hash chain and the
//! Merkle tree run on across segments; a sealed segment ends with a signed
//! checkpoint over everything before it, is read-only, and its digest is in
//! the next segment's first record ([`crate::event::SegmentOpened`]), so a
//! deleted, reordered, swapped or edited segment is caught by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LedgerError;

/// When the writer seals the live segment and opens the next one. Both
/// `None`: one file forever (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// Seal once the live segment holds about this many bytes.
    pub max_bytes: Option<u64>,
    /// Seal once the live segment's first event is this old.
    pub every: Option<Duration>,
}

impl SegmentPolicy {
    /// Whether segments are cut at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.every.is_some()
    }
}

/// Digits of the segment number in a sealed segment's name.
const NUMBER_DIGITS: usize = 6;

/// The file of segment `number` of the ledger at `ledger`: its name, a dot,
/// the segment number in six or more decimal digits.
pub fn segment_path(ledger: &Path, number: u64) -> PathBuf {
    let mut name = ledger.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{number:0NUMBER_DIGITS$}"));
    ledger.with_file_name(name)
}

/// The segment files of the ledger at `ledger`, by segment number (the
/// number in each name; the records say what each file holds, and readers
/// and verifiers check that the two agree). Empty: the ledger is one file.
pub fn segment_files(ledger: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let dir = match ledger.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = ledger.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LedgerError::Io(format!(
                "cannot list the ledger's directory {}: {e}",
                dir.display()
            )))
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = segment_number(base, name) {
            found.push((number, dir.join(name)));
        }
    }
    found.sort();
    Ok(found)
}

/// The segment number in `name` if it is `<base>.<digits>`.
fn segment_number(base: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    if digits.len() < NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Points the link at `ledger` to `file` (a segment beside it), replacing
/// whatever link is there in one step.
pub fn link_live(ledger: &Path, file: &Path) -> Result<(), LedgerError> {
    let io = |e: std::io::Error| {
        LedgerError::Io(format!(
            "cannot point {} at segment {}: {e}",
            ledger.display(),
            file.display()
        ))
    };
    let target = file.file_name().unwrap_or_default();
    if std::fs::read_link(ledger).is_ok_and(|t| t.as_os_str() == target) {
        return Ok(());
    }
    let mut temp = ledger.file_name().unwrap_or_default().to_os_string();
    temp.push(".link");
    let temp = ledger.with_file_name(temp);
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).map_err(io)?;
    std::fs::rename(&temp, ledger).map_err(io)?;
    sync_dir(ledger)
}

/// Makes a sealed segment read-only: nothing writes it again.
pub fn make_read_only(file: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| LedgerError::Io(format!("cannot make {} read-only: {e}", file.display())))
}

/// Makes renames and new files in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> Result<(), LedgerError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LedgerError::Io(format!("cannot sync directory {}: {e}", dir.display())))
}

/// Whether a segment file holds nothing yet, not even the schema: the
/// writer was stopped while creating it (a crash), and creates it again at
/// its next start. Readers and verifiers pass over such a last file.
pub fn unwritten(file: &Path) -> bool {
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

/// Whether the segments `kept` (in order, the live one last) hold what a
/// start-up needs without the segments before them: a snapshot covering at
/// least every event before the first of them. Reads the newest files
/// first, where the newest snapshot is. An archiver asks this before it
/// removes the segment before `kept`.
pub fn snapshot_from(kept: &[(u64, PathBuf)]) -> Result<bool, LedgerError> {
    let Some((_, oldest)) = kept.first() else {
        return Ok(false);
    };
    let open = |file: &Path| {
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| LedgerError::sqlite(file, e))
    };
    let start: Option<i64> = open(oldest)?
        .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))
        .map_err(|e| LedgerError::sqlite(oldest, e))?;
    let Some(start) = start else {
        return Ok(false);
    };
    for (_, file) in kept.iter().rev() {
        let found: bool = open(file)?
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshots WHERE covers >= ?1 AND seq >= ?1)",
                [start],
                |r| r.get(0),
            )
            .map_err(|e| LedgerError::sqlite(file, e))?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// BLAKE3 of a file's bytes: a sealed segment's digest.
pub fn file_digest(path: &Path) -> Result<[u8; 32], LedgerError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| LedgerError::Io(format!("cannot read {}: {e}", path.display())))?;
    // Large reads let BLAKE3 hash several chunks at once (SIMD).
    let mut hasher = blake3::Hasher::new();
    std::io::copy(
        &mut std::io::BufReader::with_capacity(1 << 20, &mut file),
        &mut hasher,
    )
    .map_err(|e| LedgerError::Io(format!("cannot read {}: {e}", path.display())))?;
    Ok(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_names_carry_the_number_after_the_live_name() {
        let ledger = Path::new("/var/lib/gatehouse/ledger.db");
        assert_eq!(
            segment_path(ledger, 3),
            Path::new("/var/lib/gatehouse/ledger.db.000003")
        );
        assert_eq!(segment_number("ledger.db", "ledger.db.000003"), Some(3));
        assert_eq!(
            segment_number("ledger.db", "ledger.db.1234567"),
            Some(1_234_567)
        );
        for other in [
            "ledger.db",
            "ledger.db-wal",
            "ledger.db.lock",
            "ledger.db.03",
            "ledger.db.00000x",
            "other.db.000001",
        ] {
            assert_eq!(segment_number("ledger.db", other), None, "{other}");
        }
    }
}
