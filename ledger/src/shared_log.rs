//! A log that several processes on one host append to: the embedded
//! control log of a cluster (issue 19), shared by the gateways' processes
//! with no service beside them.
//!
//! The contract, stated as Tessera states its own:
//! - **One append at a time.** An append holds `<log>.append-lock` (an
//!   `flock`, queued by the kernel) from before it reads the log's tail to
//!   after its events are committed and signed; nothing else can land in
//!   between, so sequence order is commit order.
//! - **Compare, then set.** [`SharedLog::append_with`] shows the caller
//!   every event appended since the last one it saw, read and checked
//!   against the newest signed checkpoint, and appends what the caller
//!   returns only if it returns something: a decision taken on a request
//!   already decided elsewhere is refused by the caller's own check, made
//!   under the lock.
//! - **Same format, same verifier.** Each append runs the ledger's own
//!   writer (hash chain, Merkle tree, a signed checkpoint in the same
//!   commit), so the file is an ordinary ledger that `gatehouse-verify`
//!   checks with the log's key, whoever appended.
//! - **Followers poll.** A [`Follower`] notices other processes' commits by
//!   SQLite's `PRAGMA data_version` on its own connection and reads only
//!   what is new.
//!
//! Opening the writer per append costs a few milliseconds (measured in
//! docs/benchmarks.md): control events are policy changes, blocks,
//! approvals, never a statement's record.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::{Event, EventBody};
use crate::note::VerifierKey;
use crate::reader::LedgerReader;
use crate::writer::{AppendError, Ledger, Receipt, WriterOptions};
use crate::LedgerError;

/// Why an append to a shared log did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SharedAppendError<E> {
    /// The caller's check refused it, given the log as it stood.
    #[error("{0}")]
    Refused(E),
    /// The log could not be opened or read as its signatures vouch for it.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The events could not be recorded, so nothing was appended.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// What an append saw and did.
#[derive(Debug)]
pub struct Appended {
    /// The events others appended since the caller's `after`, in order.
    pub seen: Vec<Event>,
    /// Where the caller's events landed.
    pub receipts: Vec<Receipt>,
}

/// A ledger file shared by several appending processes.
pub struct SharedLog {
    options: WriterOptions,
    lock_path: PathBuf,
}

impl SharedLog {
    /// The log at `options.path`, created if missing. Every append is
    /// signed in its own commit (`sign_every` is set to zero): followers
    /// act on control events at once, and only on signed ones.
    pub fn open(mut options: WriterOptions) -> Result<SharedLog, LedgerError> {
        options.sign_every = Duration::ZERO;
        let log = SharedLog {
            lock_path: PathBuf::from(format!("{}.append-lock", options.path.display())),
            options,
        };
        let _turn = log.turn()?;
        Ledger::open(log.options.clone())?.close();
        Ok(log)
    }

    /// The key its checkpoints are signed with.
    pub fn verifier_key(&self) -> VerifierKey {
        self.options.signer.verifier()
    }

    /// A secret every holder of the log's signing key derives alike, for
    /// `context` (BLAKE3's key derivation): what the members of a cluster
    /// must agree on without sending it anywhere.
    pub fn derived_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.options.signer.to_secret_string().as_bytes())
    }

    /// Waits for this process's turn to append.
    fn turn(&self) -> Result<File, LedgerError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| {
                LedgerError::Io(format!(
                    "cannot create lock file {}: {e}",
                    self.lock_path.display()
                ))
            })?;
        file.lock().map_err(|e| {
            LedgerError::Io(format!("cannot lock {}: {e}", self.lock_path.display()))
        })?;
        Ok(file)
    }

    /// Appends what `decide` returns, under the lock: `decide` gets the
    /// events appended after sequence number `after` (exclusive: pass the
    /// number of events already seen), verified, and returns the events
    /// to append or why not. An empty list appends nothing.
    pub fn append_with<E>(
        &self,
        after: u64,
        decide: impl FnOnce(&[Event]) -> Result<Vec<EventBody>, E>,
    ) -> Result<Appended, SharedAppendError<E>> {
        let _turn = self.turn()?;
        let ledger = Ledger::open(self.options.clone())?;
        let outcome = (|| {
            let reader = LedgerReader::open(&self.options.path)?;
            let seen = read_after(&reader, &self.verifier_key(), after)?;
            let bodies = decide(&seen).map_err(SharedAppendError::Refused)?;
            let receipts = if bodies.is_empty() {
                Vec::new()
            } else {
                ledger.append_blocking(&bodies)?
            };
            Ok(Appended { seen, receipts })
        })();
        ledger.close();
        outcome
    }

    /// Follows the log from event `after` (exclusive count, as above).
    pub fn follow(&self, after: u64) -> Result<Follower, LedgerError> {
        Ok(Follower {
            reader: LedgerReader::open(&self.options.path)?,
            key: self.verifier_key(),
            after,
            version: None,
        })
    }
}

/// The events from `after` on, each covered by the newest checkpoint,
/// whose signature is checked with `key`. A window read checks them
/// without hashing the whole log; when its shortcut is not available, the
/// whole log is read and checked.
fn read_after(
    reader: &LedgerReader,
    key: &VerifierKey,
    after: u64,
) -> Result<Vec<Event>, LedgerError> {
    let len = reader.len()?;
    let window: Range<u64> = after.min(len)..len;
    if window.is_empty() {
        return Ok(Vec::new());
    }
    let unsigned = |seq: u64| {
        LedgerError::Damaged(format!(
            "event {seq} of the shared log {} is not covered by a signed checkpoint; every append signs its own: run gatehouse-verify on it",
            reader.path().display()
        ))
    };
    let mut events = Vec::new();
    let mut bad = None;
    let window_read = crate::verified::read_window(
        reader,
        Some(key),
        std::slice::from_ref(&window),
        |event, covered| {
            if !covered {
                bad.get_or_insert(event.seq);
            }
            events.push(event);
        },
    )?;
    if window_read.is_none() {
        events.clear();
        bad = None;
        crate::verified::read_verified(reader, Some(key), |event, covered| {
            if event.seq >= window.start {
                if !covered {
                    bad.get_or_insert(event.seq);
                }
                events.push(event);
            }
        })?;
    }
    match bad {
        Some(seq) => Err(unsigned(seq)),
        None => Ok(events),
    }
}

/// Reads what other processes append to a shared log, once each.
pub struct Follower {
    reader: LedgerReader,
    key: VerifierKey,
    after: u64,
    version: Option<i64>,
}

impl Follower {
    /// The events appended since the last call (or since `after`),
    /// verified; empty, at the cost of one `PRAGMA`, when nothing changed.
    pub fn poll(&mut self) -> Result<Vec<Event>, LedgerError> {
        // A connection keeps reading a file that was removed or replaced:
        // the path is what the appenders write to.
        if let Err(e) = std::fs::metadata(self.reader.path()) {
            return Err(LedgerError::Io(format!(
                "the shared log {} cannot be read: {e}",
                self.reader.path().display()
            )));
        }
        let version = self.reader.data_version()?;
        if self.version == Some(version) {
            return Ok(Vec::new());
        }
        self.reader.refresh()?;
        let events = read_after(&self.reader, &self.key, self.after)?;
        self.version = Some(version);
        if let Some(last) = events.last() {
            self.after = last.seq + 1;
        }
        Ok(events)
    }

    /// How many events this follower has read through.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Moves past events the caller read another way (through
    /// [`SharedLog::append_with`], which shows what others appended and
    /// places the caller's own events).
    pub fn skip_to(&mut self, position: u64) {
        self.after = self.after.max(position);
    }

    /// The log's newest signed checkpoint note, as this follower's
    /// connection sees it (it covers what [`Follower::poll`] returned).
    pub fn checkpoint(&self) -> Result<Option<String>, LedgerError> {
        Ok(self.reader.latest_checkpoint()?.map(|c| c.note))
    }
}
