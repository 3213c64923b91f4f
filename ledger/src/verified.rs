//! Reading events only as the signed log vouches for them.
//!
//! Investigators' tools (replay, state, export) must show exactly what the
//! verifier vouched for. So they read through [`read_verified`], which
//! decodes every event from its stored record bytes (never from the index
//! columns `session`, `identity`, or the bucket tables, which are not
//! authenticated), recomputes the Merkle root and the chain head of the
//! records up to the newest checkpoint, and checks them against that
//! checkpoint's note, whose signature it checks with the verifier key.
//! Events after the checkpoint are handed over marked as not covered.
//!
//! The file itself is opened with its schema pinned
//! ([`crate::schema::check_pinned`]), so no planted index can answer the
//! scan with other rows than the table's.
//!
//! The cost is one pass over the records: hashing and decoding, about a
//! second per million events on these machines.

use crate::chain::{self, Link};
use crate::checkpoint::Checkpoint;
use crate::event::Event;
use crate::merkle::Frontier;
use crate::note::{self, VerifierKey};
use crate::reader::LedgerReader;
use crate::LedgerError;

/// What [`read_verified`] vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Events covered by the newest checkpoint: `0..covered`.
    pub covered: u64,
    /// Events in the ledger.
    pub events: u64,
    /// The newest checkpoint's signed note (`None`: there is none).
    pub note: Option<String>,
    /// The label of the key whose signature on the note was checked; `None`
    /// when no key was given, so the note's authenticity is unknown.
    pub key: Option<String>,
}

impl Coverage {
    /// Whether every event in `0..covered` is vouched for by a signature
    /// that was checked.
    pub fn signed(&self) -> bool {
        self.key.is_some() && self.note.is_some()
    }
}

/// Reads every event in log order, decoded from its record, and checks the
/// records against the newest checkpoint. `visit` gets each event and
/// whether the checkpoint covers it. When this returns an error, nothing
/// `visit` got may be shown as the ledger's content: the records differ
/// from what was signed, or the ledger is damaged.
pub fn read_verified(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    visit: impl FnMut(Event, bool),
) -> Result<Coverage, LedgerError> {
    read_verified_from(reader, key, 0, visit)
}

/// Like [`read_verified`], decoding and visiting only the events from
/// `from` on; every record is still hashed and checked. For a fold that
/// starts from a snapshot: its cost is the hashing of the whole log plus
/// the decoding of what comes after the snapshot.
pub fn read_verified_from(
    reader: &LedgerReader,
    key: Option<&VerifierKey>,
    from: u64,
    mut visit: impl FnMut(Event, bool),
) -> Result<Coverage, LedgerError> {
    let events = reader.len()?;
    let stored = reader.latest_checkpoint()?;
    let (checkpoint, note) = match &stored {
        None => (None, None),
        Some(row) => {
            let text = match key {
                Some(trusted) => {
                    // The key that signs the newest checkpoint, following any
                    // key rotations from the trusted key.
                    let schedule = reader.key_schedule(trusted)?;
                    let key = schedule.key_after(reader.previous_checkpoint_size(row.size)?);
                    key.verify(&row.note).map_err(|e| {
                        LedgerError::Damaged(format!(
                            "the newest checkpoint's note does not carry a valid signature by {} ({e}); \
                             the ledger may have been altered: run gatehouse-verify on it",
                            key.label()
                        ))
                    })?
                }
                None => {
                    note::unverified_parts(&row.note)
                        .map_err(|e| {
                            LedgerError::Damaged(format!(
                                "the newest checkpoint's note is malformed: {e}"
                            ))
                        })?
                        .0
                }
            };
            let checkpoint = Checkpoint::parse(text).map_err(|e| {
                LedgerError::Damaged(format!("the newest checkpoint's note is malformed: {e}"))
            })?;
            if checkpoint.size != row.size || checkpoint.size > events {
                return Err(LedgerError::Damaged(format!(
                    "the newest checkpoint commits to {} events, its row says {}, the ledger holds {events}: \
                     run gatehouse-verify on it",
                    checkpoint.size, row.size
                )));
            }
            (Some(checkpoint), Some(row.note.clone()))
        }
    };
    let covered = checkpoint.as_ref().map_or(0, |c| c.size);
    let mut frontier = Frontier::new();
    let mut link: Link = chain::GENESIS;
    let mut failure: Option<LedgerError> = None;
    reader.for_each_record(0..events, |seq, bytes| {
        if failure.is_some() {
            return;
        }
        if seq < covered {
            frontier.push(crate::merkle::leaf_hash(bytes));
            link = chain::link(&link, bytes);
        }
        if seq < from {
            return;
        }
        match Event::from_bytes(bytes) {
            Ok(event) if event.seq == seq => visit(event, seq < covered),
            Ok(event) => {
                failure = Some(LedgerError::Damaged(format!(
                    "row {seq} holds the record of event {}",
                    event.seq
                )))
            }
            Err(e) => {
                failure = Some(LedgerError::Damaged(format!(
                    "event {seq} cannot be decoded: {e}"
                )))
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(c) = &checkpoint {
        if frontier.root() != c.root || link != c.chain {
            return Err(LedgerError::Damaged(format!(
                "events 0..{} are not the events the newest checkpoint signed (their root or chain head differs): \
                 the ledger has been altered; run gatehouse-verify on it and read a trusted copy",
                c.size - 1
            )));
        }
    }
    Ok(Coverage {
        covered,
        events,
        note,
        key: key.filter(|_| checkpoint.is_some()).map(VerifierKey::label),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBody, OperatorAction};
    use crate::writer::{Ledger, WriterOptions};

    fn ledger(dir: &std::path::Path) -> (std::path::PathBuf, VerifierKey) {
        let path = dir.join("ledger.db");
        let signer = note::NoteSigner::generate("test/verified").unwrap();
        let key = signer.verifier();
        let writer = Ledger::open(WriterOptions::new(&path, signer)).unwrap();
        for i in 0..5 {
            writer
                .append_blocking(&[EventBody::from(OperatorAction {
                    operator: "ops".into(),
                    action: format!("note {i}"),
                    target: None,
                    outcome: "ok".into(),
                    detail: None,
                })])
                .unwrap();
        }
        writer.close();
        (path, key)
    }

    fn texts(path: &std::path::Path, key: Option<&VerifierKey>) -> Result<Vec<String>, String> {
        let reader = LedgerReader::open(path).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        read_verified(&reader, key, |e, covered| {
            assert!(covered);
            if let EventBody::OperatorAction(a) = e.body {
                out.push(a.action);
            }
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn an_intact_ledger_is_read_whole_and_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = ledger(dir.path());
        assert_eq!(texts(&path, Some(&key)).unwrap().len(), 5);
        let reader = LedgerReader::open(&path).unwrap();
        let coverage = read_verified(&reader, Some(&key), |_, _| {}).unwrap();
        assert!(coverage.signed());
        assert_eq!(coverage.covered, 5);
        let unkeyed = read_verified(&reader, None, |_, _| {}).unwrap();
        assert!(!unkeyed.signed());
    }

    #[test]
    fn an_edited_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = ledger(dir.path());
        let original = texts(&path, Some(&key)).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let data: Vec<u8> = conn
            .query_row("SELECT data FROM events WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        let at = data
            .windows(6)
            .position(|w| w == b"note 2")
            .expect("the action text is in the record");
        let mut edited = data.clone();
        edited[at + 5] = b'X';
        conn.execute("UPDATE events SET data = ?1 WHERE seq = 2", [&edited])
            .unwrap();
        drop(conn);
        let refused = texts(&path, Some(&key)).unwrap_err();
        assert!(refused.contains("altered"), "{refused}");
        // Without the key, the content still has to match the note.
        assert!(texts(&path, None).is_err());
        assert_eq!(original[2], "note 2");
    }

    #[test]
    fn a_note_signed_by_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ledger(dir.path());
        let other = note::NoteSigner::generate("test/verified")
            .unwrap()
            .verifier();
        let refused = texts(&path, Some(&other)).unwrap_err();
        assert!(refused.contains("signature"), "{refused}");
    }

    #[test]
    fn a_planted_index_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ledger(dir.path());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE INDEX forged ON events (seq, data)")
            .unwrap();
        drop(conn);
        let refused = LedgerReader::open(&path).err().unwrap().to_string();
        assert!(refused.contains("index forged"), "{refused}");
    }
}
