//! Gatehouse's audit ledger: typed events, canonically encoded, hash-chained
//! with BLAKE3, gathered in an RFC 6962 Merkle tree and committed under
//! Ed25519-signed C2SP checkpoints into an append-only SQLite file.
//!
//! The byte-level format is specified in `docs/ledger-format.md`; the
//! standalone `gatehouse-verify` implements it independently of this crate.
//!
//! * [`event`]: what can be recorded.
//! * [`Ledger`]: the single group-committing writer.
//! * [`LedgerReader`]: concurrent readers by sequence, time, session and identity.
//! * [`merkle`], [`chain`], [`checkpoint`], [`note`]: the cryptographic pieces.
//! * [`keyfile`]: signing keys on disk, refused unless owner-only.
//! * [`bundle`]: evidence bundles, selected events with inclusion proofs.
//! * [`verified`]: events as the signed log vouches for them, for investigators' tools.
//! * [`segment`]: sealed segments, the ledger cut into immutable files.
//! * [`shape`]: statements recorded as literals and a shared shape, and read back whole.
//! * [`tree_window`]: the tree rebuilt around a window from stored subtree hashes.

#![warn(missing_docs)]

pub mod bundle;
pub mod cbor;
pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod keyfile;
pub mod merkle;
pub mod note;
pub mod reader;
pub mod rotation;
pub mod schema;
pub mod segment;
pub mod shape;
pub mod shared_log;
pub mod tree_window;
pub mod verified;
pub mod writer;

use std::path::Path;

pub use event::{Event, EventBody, EventKind};
pub use reader::{LedgerReader, StoredCheckpoint, StoredSnapshot};
pub use segment::SegmentPolicy;
pub use writer::{
    AppendError, AppendOutcome, CommitObserver, CommitSample, CommitTurn, Durability, Ledger,
    Receipt, WriterOptions,
};

/// What went wrong opening or reading a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused an operation.
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The ledger file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The signing key does not belong to this ledger.
    #[error("{0}")]
    KeyMismatch(String),
    /// The ledger's contents are not what the writer left.
    #[error("ledger damaged: {0}")]
    Damaged(String),
    /// Another process holds the ledger's writer lock.
    #[error("{0}")]
    Busy(String),
    /// A key file is missing, unreadable or too widely readable.
    #[error("{0}")]
    Key(String),
}

impl LedgerError {
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        LedgerError::Sqlite {
            path: path.display().to_string(),
            source,
        }
    }
}
