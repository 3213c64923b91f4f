//! Signing-key rotation (docs/ledger-format.md, section 5.2): which key
//! signs which checkpoint.
//!
//! A `KeyRotated` event names the key it retires and its successor, and is
//! committed under a checkpoint signed by the retired key; every later
//! checkpoint is signed by the successor. The keys form a chain; a reader
//! trusting any key of it can follow the whole chain, since the events
//! that name the keys are inside the tree the newest checkpoint signs.

use rusqlite::{Connection, OptionalExtension};

use crate::event::{Event, EventBody, EventKind};
use crate::note::VerifierKey;
use crate::LedgerError;

/// The chain of signing keys and where each rotation was recorded.
#[derive(Debug, Clone)]
pub struct KeySchedule {
    keys: Vec<VerifierKey>,
    rotated_at: Vec<u64>,
}

impl KeySchedule {
    /// The schedule recorded in `conn`'s events, trusted through `trusted`,
    /// which must be one of its keys. The rotations are found through the
    /// writer's `rotations` table (a ledger without it: through the `kind`
    /// column, a scan); either is a hint, and each record found is decoded.
    /// Readers that hash records check the rotations they meet against
    /// [`KeySchedule::rotations`].
    pub fn read(conn: &Connection, trusted: &VerifierKey) -> Result<KeySchedule, LedgerError> {
        Self::build(trusted, &recorded_rotations(conn)?)
    }

    /// The schedule recorded across a ledger's segments (`conns` in segment
    /// order), trusted through `trusted`: a key retired in a sealed segment
    /// stays retired in every later one.
    pub fn read_all(
        conns: &[&Connection],
        trusted: &VerifierKey,
    ) -> Result<KeySchedule, LedgerError> {
        let mut rotations = Vec::new();
        for conn in conns {
            rotations.extend(recorded_rotations(conn)?);
        }
        Self::build(trusted, &rotations)
    }

    /// The schedule of rotations `(seq, old_key, new_key)`, in order.
    pub fn build(
        trusted: &VerifierKey,
        rotations: &[(u64, String, String)],
    ) -> Result<KeySchedule, LedgerError> {
        let parse = |s: &str, seq: u64| {
            VerifierKey::parse(s).map_err(|e| {
                LedgerError::Damaged(format!(
                    "the key rotation at event {seq} names a malformed key: {e}"
                ))
            })
        };
        let mut keys = match rotations.first() {
            Some((seq, old, _)) => vec![parse(old, *seq)?],
            None => vec![trusted.clone()],
        };
        let mut rotated_at = Vec::new();
        for (seq, old, new) in rotations {
            if keys.last() != Some(&parse(old, *seq)?) {
                return Err(LedgerError::Damaged(format!(
                    "the key rotation at event {seq} retires a key that was not in force"
                )));
            }
            keys.push(parse(new, *seq)?);
            rotated_at.push(*seq);
        }
        if !keys.contains(trusted) {
            return Err(LedgerError::KeyMismatch(format!(
                "key {} is none of this ledger's signing keys ({})",
                trusted.label(),
                keys.iter()
                    .map(VerifierKey::label)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )));
        }
        Ok(KeySchedule { keys, rotated_at })
    }

    /// The key that signs the checkpoint following one of size
    /// `previous_size` (0 for the first).
    pub fn key_after(&self, previous_size: u64) -> &VerifierKey {
        let rotated = self
            .rotated_at
            .iter()
            .filter(|seq| **seq < previous_size)
            .count();
        &self.keys[rotated]
    }

    /// Where the rotations were recorded: their sequence numbers, in order.
    pub fn rotations(&self) -> &[u64] {
        &self.rotated_at
    }

    /// The key in force now: the last of the chain.
    pub fn current(&self) -> &VerifierKey {
        self.keys.last().expect("a schedule has a key")
    }
}

/// The rotations `(seq, old_key, new_key)` recorded in one file, in order.
pub fn recorded_rotations(conn: &Connection) -> Result<Vec<(u64, String, String)>, LedgerError> {
    let indexed: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rotations')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| LedgerError::Damaged(format!("cannot read key rotations: {e}")))?;
    let sql = if indexed {
        "SELECT e.seq, e.data FROM rotations r JOIN events e ON e.seq = r.seq ORDER BY r.seq"
    } else {
        "SELECT seq, data FROM events WHERE kind = ?1 ORDER BY seq"
    };
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| LedgerError::Damaged(format!("cannot read key rotations: {e}")))?;
    let kind = EventKind::KeyRotated.code() as i64;
    let map = |r: &rusqlite::Row| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?));
    let rows = if indexed {
        stmt.query_map([], map)
    } else {
        stmt.query_map([kind], map)
    }
    .map_err(|e| LedgerError::Damaged(format!("cannot read key rotations: {e}")))?;
    let mut rotations = Vec::new();
    for row in rows {
        let (seq, data) =
            row.map_err(|e| LedgerError::Damaged(format!("cannot read key rotations: {e}")))?;
        let event = Event::from_bytes(&data).map_err(|e| {
            LedgerError::Damaged(format!(
                "the key rotation at event {seq} cannot be decoded: {e}"
            ))
        })?;
        if let EventBody::KeyRotated(r) = event.body {
            rotations.push((seq as u64, r.old_key, r.new_key));
        }
    }
    Ok(rotations)
}

/// The size of the checkpoint before the one of `size` (0 if none).
pub fn previous_checkpoint_size(conn: &Connection, size: u64) -> Result<u64, LedgerError> {
    conn.query_row(
        "SELECT size FROM checkpoints WHERE size < ?1 ORDER BY size DESC LIMIT 1",
        [size as i64],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|s| s.map_or(0, |s| s as u64))
    .map_err(|e| LedgerError::Damaged(format!("cannot read checkpoints: {e}")))
}
