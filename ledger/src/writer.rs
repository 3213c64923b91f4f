//! The single writer: group commit with one signed checkpoint per batch.
//!
//! Callers hand their encoded bodies to the writer. Whoever commits takes
//! everything queued (up to a batch limit), frames each body with its
//! sequence number and time, extends the hash chain and the Merkle frontier,
//! signs one checkpoint for the batch and commits events and checkpoint in
//! one SQLite transaction. Only then do the batch's callers get their
//! receipts; if the commit fails, every one of them gets the error, so the
//! gateway can refuse the statements it was about to forward (fail closed).
//!
//! Who commits: a caller that finds the ledger quiet (nothing queued, no
//! commit under way, the last batch a single request) commits its own
//! request on its own thread (with `os` durability only), so an
//! append on a quiet ledger costs no hand-off between threads; that is the
//! common case at low concurrency, where latency matters most. Any other
//! caller queues and waits. Requests that queue while a caller commits are
//! left to the writer thread, which commits until the queue is empty: no
//! caller commits for others, and under load one thread that does nothing
//! else drains the queue in large batches.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::chain::{self, Link};
use crate::checkpoint::Checkpoint;
use crate::event::{
    record_bytes, record_bytes_of, Event, EventBody, EventKind, Nanos, PendingEvent, Snapshot,
};
use crate::merkle::{leaf_hash, Frontier, SUBTREE_MIN_LEVEL};
use crate::note::{NoteSigner, VerifierKey};
use crate::rotation::KeySchedule;
use crate::schema;
use crate::segment::{self, SegmentPolicy};
use crate::shape;
use crate::LedgerError;

/// How hard a commit tries to survive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a committed batch survives a process crash, not
    /// necessarily a power loss.
    #[default]
    Os,
    /// `synchronous=FULL`: every commit is fsynced and survives power loss.
    Fsync,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "os" => Ok(Durability::Os),
            "fsync" => Ok(Durability::Fsync),
            other => Err(format!(
                "durability must be \"os\" or \"fsync\", not {other:?}"
            )),
        }
    }
}

/// Where time comes from; tests and golden vectors use a fixed clock.
pub type Clock = Arc<dyn Fn() -> Nanos + Send + Sync>;

/// The wall clock in Unix nanoseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as Nanos)
            .unwrap_or(0)
    })
}

/// One commit, as told to a [`CommitObserver`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitSample {
    /// Events in the batch.
    pub events: usize,
    /// How long the commit took (checks, inserts, signature, SQLite
    /// commit), in seconds.
    pub seconds: f64,
    /// Whether it committed.
    pub committed: bool,
}

/// Told of every commit, on the committing thread (metrics; keep it cheap).
pub type CommitObserver = Arc<dyn Fn(CommitSample) + Send + Sync>;

/// How to open a ledger for writing.
#[derive(Clone)]
pub struct WriterOptions {
    /// The SQLite file; created with the schema if missing.
    pub path: PathBuf,
    /// Signs checkpoints; its name is the log's origin.
    pub signer: NoteSigner,
    /// Commit durability.
    pub durability: Durability,
    /// Source of event timestamps.
    pub clock: Clock,
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// Told of every commit, if set.
    pub on_commit: Option<CommitObserver>,
    /// How long committed events may wait for a signed checkpoint (format
    /// 2, docs/ledger-format.md section 5.3). Zero: a checkpoint in every
    /// commit (format 1). Every event is committed before its append
    /// returns either way; only the signature over it waits.
    pub sign_every: Duration,
    /// Most committed events waiting for a signed checkpoint.
    pub sign_max_events: u64,
    /// When to seal the live segment and open the next (docs/ledger-format.md,
    /// section 9); the default never does.
    pub segments: SegmentPolicy,
}

impl WriterOptions {
    /// Defaults: `os` durability, system clock, batches of up to 8,192 events.
    pub fn new(path: impl Into<PathBuf>, signer: NoteSigner) -> Self {
        WriterOptions {
            path: path.into(),
            signer,
            durability: Durability::Os,
            clock: system_clock(),
            max_batch: 8192,
            on_commit: None,
            sign_every: Duration::ZERO,
            sign_max_events: 10_000,
            segments: SegmentPolicy::default(),
        }
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence number.
    pub seq: u64,
    /// Its timestamp.
    pub ts: Nanos,
    /// Size of the signed checkpoint committed with it.
    pub checkpoint: u64,
}

/// Why an append did not commit. Nothing of the request is in the ledger.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The batch's transaction failed.
    #[error("ledger commit failed: {0}; the events were not recorded")]
    Commit(String),
    /// The writer has stopped (closed, or poisoned by an earlier failure it
    /// could not recover from).
    #[error("ledger writer is not running: {0}")]
    Stopped(String),
}

type Reply = Result<Vec<Receipt>, AppendError>;

struct Request {
    events: Vec<PendingEvent>,
    reply: oneshot::Sender<Reply>,
}

/// What callers and the writer thread share.
struct Core {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a backlog to take over, or the ledger closing.
    wake: Condvar,
    /// Whoever holds [`Queue::committing`] locks it, and the writer thread
    /// to sign an unsigned tail that is due (never with the queue locked).
    state: Mutex<WriterState>,
    /// A commit left the first unsigned event: the writer thread must wake
    /// to sign it in time.
    tail_started: std::sync::atomic::AtomicBool,
    /// The live segment is due to be sealed: the writer thread seals it,
    /// having stopped its WAL thread, which holds the file open.
    seal_due: std::sync::atomic::AtomicBool,
    /// When the unsigned tail is due, in nanoseconds since `epoch` (0:
    /// there is none): a copy of the state's, readable without its lock.
    sign_deadline: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    max_batch: usize,
    /// Callers may commit on their own thread: only with `os` durability,
    /// where a commit writes to the page cache. An fsync would block a
    /// runtime thread for milliseconds, so with `fsync` durability every
    /// commit runs on the writer thread.
    inline: bool,
    on_commit: Option<CommitObserver>,
}

/// Requests waiting for a commit, and who commits them.
struct Queue {
    requests: VecDeque<Request>,
    /// A caller or the writer thread is committing; whoever it is commits
    /// the queue or, for a caller, leaves it to the writer thread.
    committing: bool,
    /// No more appends are accepted.
    closed: bool,
    /// The last batch held more than one request: callers are arriving
    /// faster than commits finish, so they leave commits to the writer
    /// thread, which gathers larger batches.
    contended: bool,
    /// The writer thread is waiting to be woken.
    writer_waiting: bool,
}

/// A handle to the ledger writer. Cheap to clone; the writer stops when the
/// last handle is dropped or [`Ledger::close`] is called.
#[derive(Clone)]
pub struct Ledger {
    core: Arc<Core>,
    /// Shared by handles only (not the writer thread): the last one dropped
    /// closes the ledger.
    _open: Arc<CloseOnDrop>,
    verifier: VerifierKey,
    path: PathBuf,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Closes the ledger when the last handle goes.
struct CloseOnDrop(Arc<Core>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The commit role, held by a caller that queued on a quiet ledger (see
/// [`Ledger::queue_pending`]). Dropping it commits the queue (one batch on
/// this thread, any backlog on the writer thread), so the role is given up
/// whatever happens to its holder.
pub struct CommitTurn(Arc<Core>);

impl Drop for CommitTurn {
    fn drop(&mut self) {
        self.0.commit_once();
    }
}

/// How a queued append ended: committed (with its receipts) or not.
pub struct AppendOutcome(oneshot::Receiver<Reply>);

impl AppendOutcome {
    /// The outcome if it is known now, without waiting.
    pub fn now(&mut self) -> Option<Reply> {
        match self.0.try_recv() {
            Ok(reply) => Some(reply),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(writer_gone())),
        }
    }
}

impl std::future::Future for AppendOutcome {
    type Output = Reply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Reply> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| writer_gone())?)
    }
}

/// The error for an append whose answer never came.
fn writer_gone() -> AppendError {
    AppendError::Stopped("the writer exited before answering".into())
}

/// What an appending caller does next.
enum Turn {
    /// Commit (its own request and whatever queued behind it).
    Commit,
    /// Wait for someone else's commit.
    Wait,
}

impl Ledger {
    /// Opens (or creates) the ledger at `options.path` and starts its writer.
    pub fn open(options: WriterOptions) -> Result<Ledger, LedgerError> {
        let state = WriterState::open(&options)?;
        let core = Arc::new(Core {
            queue: Mutex::new(Queue {
                requests: VecDeque::new(),
                committing: false,
                closed: false,
                contended: false,
                writer_waiting: false,
            }),
            wake: Condvar::new(),
            state: Mutex::new(state),
            tail_started: std::sync::atomic::AtomicBool::new(false),
            seal_due: std::sync::atomic::AtomicBool::new(false),
            sign_deadline: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            max_batch: options.max_batch.max(1),
            inline: options.durability == Durability::Os,
            on_commit: options.on_commit.clone(),
        });
        // A tail the start could not sign (a full disk) is retried on time.
        core.publish_deadline(&core.state.lock().unwrap_or_else(|e| e.into_inner()));
        let writer = core.clone();
        let wal = options.path.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(&wal))
            .map_err(|e| LedgerError::Io(format!("cannot start the ledger writer thread: {e}")))?;
        Ok(Ledger {
            _open: Arc::new(CloseOnDrop(core.clone())),
            core,
            verifier: options.signer.verifier(),
            path: options.path,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Whether appends can be recorded now: the writer is not stopped by a
    /// failure it could not recover from, and the ledger file is still the
    /// one at its path. `Err` says why not (for a readiness check).
    pub fn health(&self) -> Result<(), String> {
        let state = self.core.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &state.poisoned {
            return Err(why.clone());
        }
        state.file.still_at_path()
    }

    /// The key that verifies this ledger's checkpoints.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; returns once it is committed under a signed checkpoint.
    pub async fn append(&self, body: &EventBody) -> Result<Receipt, AppendError> {
        let mut r = self.append_pending(vec![body.to_pending()]).await?;
        Ok(r.remove(0))
    }

    /// Appends events atomically, with contiguous sequence numbers: all
    /// commit in the same transaction or none do.
    pub async fn append_all(&self, bodies: &[EventBody]) -> Result<Vec<Receipt>, AppendError> {
        self.append_pending(bodies.iter().map(EventBody::to_pending).collect())
            .await
    }

    /// Appends pre-encoded bodies (see [`EventBody::to_pending`]).
    ///
    /// On a quiet ledger the commit runs right here, on the caller's thread
    /// (blocking it for the commit, typically tens of microseconds): a
    /// hand-off to another thread and back would cost more than the commit.
    pub async fn append_pending(&self, events: Vec<PendingEvent>) -> Reply {
        let (turn, outcome) = self.queue_pending(events)?;
        drop(turn);
        outcome.await
    }

    /// Queues pre-encoded bodies without waiting for their commit: for a
    /// caller with something to do between queueing and committing (the
    /// relay sends a pure read to the database first, and holds its
    /// results until [`AppendOutcome`] says the record committed).
    ///
    /// On a quiet ledger the caller gets the commit role as a [`CommitTurn`]:
    /// every other append waits until it is used or dropped, so a caller
    /// must give it up before it awaits anything but its own writes.
    pub fn queue_pending(
        &self,
        events: Vec<PendingEvent>,
    ) -> Result<(Option<CommitTurn>, AppendOutcome), AppendError> {
        let (turn, rx) = self.core.enqueue(events)?;
        let turn = match turn {
            Turn::Commit => Some(CommitTurn(self.core.clone())),
            Turn::Wait => None,
        };
        Ok((turn, AppendOutcome(rx)))
    }

    /// Blocking form of [`Ledger::append_all`] for code outside an async
    /// runtime (command-line tools, background threads). Panics if called
    /// from inside one.
    pub fn append_blocking(&self, bodies: &[EventBody]) -> Reply {
        let (turn, outcome) =
            self.queue_pending(bodies.iter().map(EventBody::to_pending).collect())?;
        drop(turn);
        outcome.0.blocking_recv().map_err(|_| writer_gone())?
    }

    /// Stops accepting appends (on every clone of this handle: they then
    /// get `Stopped`), lets queued ones commit, and waits for the writer
    /// to finish.
    pub fn close(self) {
        self.core.close();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Core {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every
        // change to it is a single step), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; says whether the caller commits it or waits.
    fn enqueue(
        &self,
        events: Vec<PendingEvent>,
    ) -> Result<(Turn, oneshot::Receiver<Reply>), AppendError> {
        let (reply, rx) = oneshot::channel();
        let mut q = self.queue();
        if q.closed {
            return Err(AppendError::Stopped("the writer has shut down".into()));
        }
        // Commit here only on a quiet ledger; under load, one thread drains
        // the queue in large batches.
        // A seal that is due goes first (the writer thread does it), so a
        // segment ends after the commit that filled it, whatever the timing.
        let quiet = self.inline
            && !q.committing
            && q.requests.is_empty()
            && !q.contended
            && !self.seal_due.load(std::sync::atomic::Ordering::Acquire);
        q.requests.push_back(Request { events, reply });
        if quiet {
            q.committing = true;
            return Ok((Turn::Commit, rx));
        }
        if !q.committing && q.writer_waiting {
            self.wake.notify_one();
        }
        Ok((Turn::Wait, rx))
    }

    /// Takes the next batch (empty if nothing is queued). Only the holder
    /// of the commit role calls it.
    fn next_batch(&self) -> Vec<Request> {
        let mut q = self.queue();
        let mut count = 0;
        let mut batch = Vec::new();
        while let Some(req) = q.requests.front() {
            if count > 0 && count + req.events.len() > self.max_batch {
                break;
            }
            count += req.events.len();
            batch.extend(q.requests.pop_front());
        }
        if !batch.is_empty() {
            q.contended = batch.len() > 1;
        }
        batch
    }

    /// A caller's commit: one batch, then any backlog goes to the writer thread.
    fn commit_once(&self) {
        /// Gives the commit role up even if the commit panics, so the queue
        /// is never left without a committer (the batch's callers then get
        /// `Stopped`: nothing is forwarded unrecorded).
        struct Release<'a>(&'a Core);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _release = Release(self);
        let batch = self.next_batch();
        if !batch.is_empty() {
            self.commit(batch);
        }
    }

    /// Gives up the commit role; anything still queued goes to the writer thread.
    fn release(&self) {
        let mut q = self.queue();
        q.committing = false;
        let tail_started = self
            .tail_started
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        let seal = self.seal_due.load(std::sync::atomic::Ordering::Acquire);
        if (!q.requests.is_empty() || q.closed || tail_started || seal) && q.writer_waiting {
            self.wake.notify_one();
        }
    }

    /// How long until the unsigned tail must be signed (`None`: there is
    /// none). Read from [`Core::sign_deadline`], not the state: the writer
    /// thread asks with the queue locked, and must not wait there for a
    /// commit in progress, which would hold up every appender.
    fn sign_due_in(&self) -> Option<Duration> {
        match self
            .sign_deadline
            .load(std::sync::atomic::Ordering::Acquire)
        {
            0 => None,
            at => {
                let now = self.epoch.elapsed().as_nanos() as u64;
                Some(Duration::from_nanos(at.saturating_sub(now)))
            }
        }
    }

    /// Publishes when the state's unsigned tail is due (see
    /// [`Core::sign_due_in`]); called with the state locked after each
    /// change to it.
    fn publish_deadline(&self, state: &WriterState) {
        let at = state.unsigned_since.map_or(0, |since| {
            let due = since + state.sign_every;
            (due.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
        });
        self.sign_deadline
            .store(at, std::sync::atomic::Ordering::Release);
    }

    /// Signs the unsigned tail if it is due (a committer may have signed
    /// it meanwhile).
    fn sign_if_due(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .unsigned_since
            .is_some_and(|since| since.elapsed() >= state.sign_every)
        {
            state.sign_tail();
        }
        self.publish_deadline(&state);
    }

    /// Commits one batch and answers its callers.
    fn commit(&self, batch: Vec<Request>) {
        let started = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let unsigned_before = state.unsigned_since.is_some();
        let results = state.commit_batch(&batch);
        self.publish_deadline(&state);
        if !unsigned_before && state.unsigned_since.is_some() {
            // The writer thread must wake to sign this tail in time.
            self.tail_started
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if state.segment.due {
            self.seal_due
                .store(true, std::sync::atomic::Ordering::Release);
        }
        drop(state);
        if let Some(observe) = &self.on_commit {
            observe(CommitSample {
                events: batch.iter().map(|r| r.events.len()).sum(),
                seconds: started.elapsed().as_secs_f64(),
                committed: results.iter().all(Result::is_ok),
            });
        }
        for (req, result) in batch.into_iter().zip(results) {
            let _ = req.reply.send(result);
        }
    }

    /// The writer thread: takes over whatever a committing caller left
    /// queued, until the queue is empty; at close, finishes the queue,
    /// saves the frontier and exits.
    fn run(&self, path: &Path) {
        let mut checkpointer = Some(WalCheckpointer::start(path));
        loop {
            let mut sign = false;
            let mut seal = false;
            {
                let mut q = self.queue();
                loop {
                    if !q.committing && self.seal_due.load(std::sync::atomic::Ordering::Acquire) {
                        q.committing = true;
                        seal = true;
                        break;
                    }
                    if !q.committing && !q.requests.is_empty() {
                        q.committing = true;
                        break;
                    }
                    if q.closed && !q.committing {
                        drop(q);
                        self.state
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .finish();
                        drop(checkpointer.take());
                        return;
                    }
                    // An unsigned tail is signed when its delay is up, with
                    // no commit to carry the checkpoint.
                    let due = self.sign_due_in();
                    if due.is_some_and(|d| d.is_zero()) {
                        sign = true;
                        break;
                    }
                    q.writer_waiting = true;
                    q = match due {
                        Some(wait) => self
                            .wake
                            .wait_timeout(q, wait)
                            .map_or_else(|e| e.into_inner().0, |(q, _)| q),
                        None => self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                    };
                    q.writer_waiting = false;
                }
            }
            if sign {
                self.sign_if_due();
                continue;
            }
            if seal {
                self.seal(&mut checkpointer, path);
                self.release();
                continue;
            }
            loop {
                // A seal that fell due goes before the next batch.
                if self.seal_due.load(std::sync::atomic::Ordering::Acquire) {
                    self.seal(&mut checkpointer, path);
                }
                let batch = self.next_batch();
                if batch.is_empty() {
                    self.release();
                    break;
                }
                self.commit(batch);
            }
        }
    }

    /// Seals the live segment (the caller holds the commit role), with the
    /// WAL thread stopped meanwhile (it holds the file open). A failure is
    /// logged and retried later: appends go on into the live segment.
    fn seal(&self, checkpointer: &mut Option<WalCheckpointer>, path: &Path) {
        self.seal_due
            .store(false, std::sync::atomic::Ordering::Release);
        drop(checkpointer.take());
        self.seal_live();
        *checkpointer = Some(WalCheckpointer::start(path));
    }

    fn seal_live(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = state.seal() {
            tracing::warn!(
                "cannot seal ledger segment {} (retried in {} s; appends go on into it): {e}",
                state.segment.file.display(),
                SEAL_RETRY.as_secs()
            );
            let now = (state.clock)();
            state.segment.hold_until = now + SEAL_RETRY.as_nanos() as Nanos;
        }
        self.publish_deadline(&state);
    }

    /// Refuses further appends and wakes the writer thread to finish.
    fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }
}

/// The ledger file the writer opened, and how to tell whether its path still
/// names it.
///
/// Removing or replacing the file under a running writer goes unnoticed by
/// SQLite, which keeps writing to the open (now nameless) file: commits
/// succeed and everything is lost when the process ends. So before each
/// commit batch the writer compares the file it holds open with the one at
/// the path (device and inode): one `stat` of the path, since the open
/// file's identity cannot change (and while it is held open, its inode
/// number cannot be reused). While they differ every append fails, so
/// nothing is acknowledged that cannot be found at the path; if the file
/// comes back, appends resume.
struct OpenedFile {
    path: PathBuf,
    /// Device and inode of the opened file.
    identity: (u64, u64),
    /// Kept open: while the writer runs, a removed ledger can still be
    /// copied back from /proc/PID/fd.
    _handle: std::fs::File,
}

impl OpenedFile {
    fn open(path: &Path) -> Result<OpenedFile, LedgerError> {
        use std::os::unix::fs::MetadataExt;
        let cannot = |e| LedgerError::Io(format!("cannot open {}: {e}", path.display()));
        let handle = std::fs::File::open(path).map_err(cannot)?;
        let opened = handle.metadata().map_err(cannot)?;
        Ok(OpenedFile {
            path: path.to_path_buf(),
            identity: (opened.dev(), opened.ino()),
            _handle: handle,
        })
    }

    /// `Err` says why the path no longer names the opened file.
    fn still_at_path(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let recovery = "nothing more is recorded, so no statement runs; restore the file (while the gateway runs, \
                        its open copy is readable under /proc/PID/fd) or move it aside and restart the gateway \
                        (docs/incident-response.md)";
        match std::fs::metadata(&self.path) {
            Ok(now) if (now.dev(), now.ino()) == self.identity => Ok(()),
            Ok(_) => Err(format!(
                "the ledger file {} was replaced by another file; {recovery}",
                self.path.display()
            )),
            Err(e) => Err(format!(
                "the ledger file {} was removed or moved away ({e}); {recovery}",
                self.path.display()
            )),
        }
    }
}

/// Stores one complete subtree's hash (docs/ledger-format.md, section 1).
const SUBTREE_INSERT: &str =
    "INSERT OR REPLACE INTO subtrees (level, idx, hash) VALUES (?1, ?2, ?3)";

/// How many stored subtrees a tree of `size` leaves has: one per complete
/// aligned subtree of at least `2^SUBTREE_MIN_LEVEL` leaves.
fn subtrees_of(size: u64) -> u64 {
    (SUBTREE_MIN_LEVEL..64).map(|level| size >> level).sum()
}

/// The longest an event may wait for a signed checkpoint (format 2): a
/// verifier fails an unsigned tail that spans longer.
pub const MAX_SIGNING_DELAY: Duration = Duration::from_secs(60);

/// Commits between saves of the Merkle frontier (`writer_state`).
const SAVE_FRONTIER_EVERY: u32 = 64;

/// Statement shapes the writer remembers; past this it starts over, and
/// records a shape again the next time a statement has it.
const MAX_SHAPES: usize = 65_536;

/// The writer thread's state: everything needed to extend the log.
struct WriterState {
    /// Why the writer refuses appends: a failed commit it could not recover from.
    poisoned: Option<String>,
    /// Commits since the frontier was last saved.
    commits_since_save: u32,
    /// Held for the writer's lifetime: a second writer would fork the log.
    _lock: std::fs::File,
    /// The ledger file as opened, to notice it being removed or replaced.
    file: OpenedFile,
    conn: Connection,
    signer: NoteSigner,
    clock: Clock,
    size: u64,
    last_ts: Nanos,
    frontier: Frontier,
    chain: Link,
    path: PathBuf,
    /// See [`WriterOptions::sign_every`]; zero signs every commit.
    sign_every: Duration,
    sign_max_events: u64,
    /// The frontier at the newest signed checkpoint: the consistency proof
    /// of the next one starts there.
    signed_frontier: Frontier,
    /// Leaf hashes of the committed events after it.
    unsigned_leaves: Vec<crate::merkle::Hash>,
    /// When the first of them was committed (`None`: all are signed).
    unsigned_since: Option<std::time::Instant>,
    /// The unsigned tail was read back from the file, not built in memory:
    /// its checkpoint is marked as recovered.
    tail_recovered: bool,
    /// The last bucket each session was indexed in (committed rows only).
    sessions: HashMap<u64, u64>,
    /// The last bucket each identity was indexed in (committed rows only).
    identities: HashMap<String, u64>,
    /// The statement shapes recorded in the live segment since the writer
    /// opened it (committed rows only), by digest: where each is.
    shapes: HashMap<[u8; shape::DIGEST_LEN], u64>,
    /// Where the live segment starts and when it is sealed.
    segment: LiveSegment,
    durability: Durability,
}

/// The segment the writer appends to (docs/ledger-format.md, section 9).
struct LiveSegment {
    policy: SegmentPolicy,
    /// Its number: 0 for the first (and only, without a policy).
    number: u64,
    /// The real file (the configured path is a link to it once the ledger
    /// is cut into segments).
    file: PathBuf,
    /// Sequence number of its first event, and the tree, chain head and
    /// time where it starts (the end of its predecessor).
    first: u64,
    base: Frontier,
    base_chain: Link,
    base_ts: Nanos,
    /// About how many bytes it holds.
    bytes: u64,
    /// The time of its first event.
    started: Option<Nanos>,
    /// The policy says it is time to seal.
    due: bool,
    /// A failed seal is tried again from this time on.
    hold_until: Nanos,
    /// The key rotations recorded in the sealed segments before it: a key
    /// retired there must not sign here.
    sealed_rotations: Vec<(u64, String, String)>,
}

/// How long a seal's checkpoint waits for readers of an older snapshot,
/// per try (appends wait meanwhile).
const SEAL_WAIT_FOR_READERS: Duration = Duration::from_millis(100);

/// How long after a failed seal the writer tries again.
const SEAL_RETRY: Duration = Duration::from_secs(10);

impl WriterState {
    fn open(options: &WriterOptions) -> Result<Self, LedgerError> {
        let lock = lock_exclusively(&options.path)?;
        let segment = LiveSegment::locate(&options.path, options.segments)?;
        let conn =
            schema::open_for_writing(&segment.file, options.signer.name(), options.durability)?;
        let file = OpenedFile::open(&options.path)?;
        let mut state = WriterState {
            poisoned: None,
            commits_since_save: SAVE_FRONTIER_EVERY,
            _lock: lock,
            file,
            conn,
            signer: options.signer.clone(),
            clock: options.clock.clone(),
            size: 0,
            last_ts: 0,
            frontier: Frontier::new(),
            chain: chain::GENESIS,
            path: options.path.clone(),
            // The format bounds the delay (docs/ledger-format.md, 5.3).
            sign_every: options.sign_every.min(MAX_SIGNING_DELAY),
            sign_max_events: options.sign_max_events.max(1),
            signed_frontier: Frontier::new(),
            unsigned_leaves: Vec::new(),
            unsigned_since: None,
            tail_recovered: false,
            sessions: HashMap::new(),
            identities: HashMap::new(),
            shapes: HashMap::new(),
            segment,
            durability: options.durability,
        };
        let opening = state.read_opening()?;
        state.resync()?;
        if let Some((note, digest)) = opening {
            state.write_opening(note, digest)?;
        }
        state.measure_segment()?;
        Ok(state)
    }

    /// Reloads the tail of the log from the database: used at open and after
    /// a failed commit, so memory never runs ahead of what is stored.
    fn resync(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let ctx = |e: rusqlite::Error| LedgerError::sqlite(&path, e);
        self.sessions.clear();
        self.identities.clear();
        self.shapes.clear();
        let last: Option<(i64, String, Option<Vec<u8>>)> = self
            .conn
            .query_row(
                "SELECT c.size, c.note, w.frontier FROM checkpoints c \
                 LEFT JOIN writer_state w ON w.id = 0 AND w.size <= c.size \
                 ORDER BY c.size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(ctx)?;
        let events: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(ctx)?;
        // Formats 2 and 3 sign at a delay: events committed after the last
        // checkpoint by a writer that stopped without signing them (a crash)
        // are signed now, in a checkpoint marked as recovered.
        let delayed: bool = self
            .conn
            .query_row(
                "SELECT value IN (?1, ?2) FROM ledger_meta WHERE key = 'format'",
                [schema::FORMAT_V2, schema::FORMAT_V3],
                |r| r.get(0),
            )
            .map_err(ctx)?;
        // After a failed commit the tail in memory is the writer's own; it
        // is compared with what the file holds.
        let own_tail = std::mem::take(&mut self.unsigned_leaves);
        self.unsigned_since = None;
        let Some((size, note, frontier)) = last else {
            if events != 0 && !delayed {
                return Err(LedgerError::Damaged(format!(
                    "{} holds {events} events but no checkpoint; run gatehouse-verify on it",
                    path.display()
                )));
            }
            let base = &self.segment;
            self.size = base.first;
            self.last_ts = base.base_ts;
            self.frontier = base.base.clone();
            self.signed_frontier = base.base.clone();
            self.chain = base.base_chain;
            self.recover_tail(events.max(base.first as i64) as u64, &own_tail);
            return Ok(());
        };
        // After a key rotation the last checkpoint may still be the
        // retired key's (the one covering the rotation); the writer must
        // hold the key in force now, never a retired one.
        let own = self.signer.verifier();
        let mut rotations = self.segment.sealed_rotations.clone();
        rotations.extend(crate::rotation::recorded_rotations(&self.conn)?);
        let schedule = KeySchedule::build(&own, &rotations)?;
        if schedule.current() != &own {
            return Err(LedgerError::KeyMismatch(format!(
                "key {} of {} was retired by a key rotation; sign with the current key {}",
                own.label(),
                self.path.display(),
                schedule.current().label()
            )));
        }
        // The checkpoint before a segment's first is its predecessor's last.
        let previous = crate::rotation::previous_checkpoint_size(&self.conn, size as u64)?
            .max(self.segment.first);
        let text = schedule.key_after(previous).verify(&note).map_err(|e| {
            LedgerError::KeyMismatch(format!(
                "the last checkpoint of {} is not signed by key {} ({e}); use the key this ledger was created with",
                self.path.display(),
                schedule.key_after(previous)
            ))
        })?;
        let checkpoint =
            Checkpoint::parse(text).map_err(|e| LedgerError::Damaged(e.to_string()))?;
        // The saved frontier is a shortcut, saved every few commits: extend
        // it with the events after it, or rebuild it from the start if it is
        // missing (a ledger restored from a copy, say).
        let saved = frontier
            .as_deref()
            .and_then(Frontier::from_bytes)
            .filter(|f| f.size() <= size as u64 && f.size() >= self.segment.first)
            .unwrap_or_else(|| self.segment.base.clone());
        let frontier = self.extend_frontier(saved, size as u64)?;
        if frontier.root() != checkpoint.root {
            return Err(LedgerError::Damaged(format!(
                "the events of {} do not hash to the root of its last checkpoint; run gatehouse-verify on it",
                self.path.display()
            )));
        }
        if events < size || (events > size && !delayed) {
            return Err(LedgerError::Damaged(format!(
                "{} holds {events} events but its last checkpoint covers {size}; run gatehouse-verify on it",
                self.path.display()
            )));
        }
        let last_ts: i64 = self
            .conn
            .query_row("SELECT ts FROM events WHERE seq = ?1", [size - 1], |r| {
                r.get(0)
            })
            .map_err(ctx)?;
        self.size = size as u64;
        self.last_ts = last_ts as Nanos;
        self.signed_frontier = frontier.clone();
        self.frontier = frontier;
        self.chain = checkpoint.chain;
        self.recover_tail(events as u64, &own_tail);
        self.complete_subtrees()?;
        Ok(())
    }

    /// Takes up the events from the last checkpoint (`self.size`) to
    /// `events` that were committed and not signed: left by a writer that
    /// stopped (a crash), or by this one before a failed commit (`own`, its
    /// tail in memory). Unless they are exactly `own`, their root is the one
    /// read back from the file, so the checkpoint that signs them is marked
    /// as recovered (the verifier lists those: whatever changed the rows
    /// while no writer held them is signed as found), and it is signed now.
    /// A signature that fails (a full disk) is retried after the delay.
    fn recover_tail(&mut self, events: u64, own: &[crate::merkle::Hash]) {
        if events <= self.size {
            return;
        }
        if let Err(e) = self.read_tail(events) {
            // The tail cannot be read: nothing after it can be appended
            // consistently.
            self.poisoned = Some(e.to_string());
            return;
        }
        if self.unsigned_leaves != own {
            self.tail_recovered = true;
            self.sign_tail();
        }
    }

    /// Extends the tree with the committed events from `self.size` to
    /// `events`, as the unsigned tail.
    fn read_tail(&mut self, events: u64) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let ctx = |e: rusqlite::Error| LedgerError::sqlite(&path, e);
        let mut leaves = Vec::with_capacity((events - self.size) as usize);
        let mut last_ts = self.last_ts;
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT seq, ts, data FROM events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
                )
                .map_err(ctx)?;
            let mut rows = stmt.query([self.size as i64, events as i64]).map_err(ctx)?;
            let mut next = self.size;
            while let Some(row) = rows.next().map_err(ctx)? {
                let seq: i64 = row.get(0).map_err(ctx)?;
                if seq as u64 != next {
                    return Err(LedgerError::Damaged(format!(
                        "{}: event {next} is missing from the unsigned tail; run gatehouse-verify on it",
                        path.display()
                    )));
                }
                last_ts = row.get::<_, i64>(1).map_err(ctx)? as Nanos;
                let data = row.get_ref(2).map_err(ctx)?;
                let bytes = data.as_blob().map_err(|e| ctx(e.into()))?;
                Event::from_bytes(bytes).map_err(|e| {
                    LedgerError::Damaged(format!(
                        "{}: event {next} of the unsigned tail cannot be decoded ({e}); run gatehouse-verify on it",
                        path.display()
                    ))
                })?;
                let leaf = leaf_hash(bytes);
                self.frontier.push(leaf);
                self.chain = chain::link(&self.chain, bytes);
                leaves.push(leaf);
                next += 1;
            }
        }
        self.size = events;
        self.last_ts = last_ts;
        self.unsigned_leaves = leaves;
        self.unsigned_since = Some(std::time::Instant::now());
        Ok(())
    }

    /// Makes the `subtrees` and `rotations` tables whole for the events
    /// committed, once, for a ledger written before they existed (or whose
    /// subtrees were damaged): readers fall back to hashing the whole log
    /// without them.
    fn complete_subtrees(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let ctx = |e: rusqlite::Error| LedgerError::sqlite(&path, e);
        let stored: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM subtrees", [], |r| r.get(0))
            .map_err(ctx)?;
        // A segment holds the subtrees that end in it (section 9).
        let first = self.segment.first;
        if stored as u64 == subtrees_of(self.size) - subtrees_of(first) {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(ctx)?;
        tx.execute("DELETE FROM subtrees", []).map_err(ctx)?;
        tx.execute("DELETE FROM rotations", []).map_err(ctx)?;
        tx.execute(
            "INSERT INTO rotations (seq) SELECT seq FROM events WHERE kind = ?1 AND seq < ?2",
            [EventKind::KeyRotated.code() as i64, self.size as i64],
        )
        .map_err(ctx)?;
        {
            let mut insert = tx.prepare(SUBTREE_INSERT).map_err(ctx)?;
            let mut read = tx
                .prepare("SELECT data FROM events WHERE seq < ?1 ORDER BY seq")
                .map_err(ctx)?;
            let mut rows = read.query([self.size as i64]).map_err(ctx)?;
            let mut frontier = self.segment.base.clone();
            let mut result = Ok(());
            while let Some(row) = rows.next().map_err(ctx)? {
                let data = row.get_ref(0).map_err(ctx)?;
                let bytes = data.as_blob().map_err(|e| ctx(e.into()))?;
                frontier.push_with(leaf_hash(bytes), |level, idx, hash| {
                    if level >= SUBTREE_MIN_LEVEL && result.is_ok() {
                        result = insert
                            .execute(params![level, idx as i64, &hash[..]])
                            .map(drop);
                    }
                });
                std::mem::replace(&mut result, Ok(())).map_err(ctx)?;
            }
        }
        tx.commit().map_err(ctx)
    }

    /// Extends `frontier` with events up to `size`.
    fn extend_frontier(&self, mut frontier: Frontier, size: u64) -> Result<Frontier, LedgerError> {
        let ctx = |e| LedgerError::sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")
            .map_err(ctx)?;
        let mut rows = stmt
            .query([frontier.size() as i64, size as i64])
            .map_err(ctx)?;
        while let Some(row) = rows.next().map_err(ctx)? {
            let data = row.get_ref(0).map_err(ctx)?;
            let bytes = data.as_blob().map_err(|e| ctx(e.into()))?;
            frontier.push(leaf_hash(bytes));
        }
        Ok(frontier)
    }

    /// Commits a batch: one result per request. A failed commit fails every
    /// request in it, and the writer reloads its tail from disk; if even
    /// that fails, it refuses every later batch.
    fn commit_batch(&mut self, batch: &[Request]) -> Vec<Reply> {
        if let Some(why) = &self.poisoned {
            return vec![Err(AppendError::Stopped(why.clone())); batch.len()];
        }
        if let Err(why) = self.file.still_at_path() {
            return vec![Err(AppendError::Commit(why)); batch.len()];
        }
        match self.commit(batch) {
            Ok(receipts) => receipts.into_iter().map(Ok).collect(),
            Err(e) => {
                let err = AppendError::Commit(e.to_string());
                if let Err(e) = self.resync() {
                    self.poisoned = Some(format!("cannot recover after a failed commit: {e}"));
                }
                vec![Err(err); batch.len()]
            }
        }
    }

    /// At close: leaves a current frontier behind so the next open need
    /// not rehash.
    fn finish(&mut self) {
        self.sign_tail();
        if self.poisoned.is_none() && self.size > 0 && self.unsigned_leaves.is_empty() {
            let _ = self.conn.execute(
                "INSERT OR REPLACE INTO writer_state (id, size, frontier) VALUES (0, ?1, ?2)",
                params![self.size as i64, self.frontier.to_bytes()],
            );
        }
    }

    fn commit(&mut self, batch: &[Request]) -> Result<Vec<Vec<Receipt>>, rusqlite::Error> {
        let ts = (self.clock)().max(self.last_ts);
        let mut frontier = self.frontier.clone();
        let mut chain = self.chain;
        let mut leaves = Vec::new();
        let mut receipts = Vec::with_capacity(batch.len());
        let mut written = 0u64;
        // Index pairs this batch adds; cached only once the commit succeeds.
        let mut new_sessions: HashMap<u64, u64> = HashMap::new();
        let mut new_identities: HashMap<String, u64> = HashMap::new();
        let mut new_shapes: HashMap<[u8; shape::DIGEST_LEN], u64> = HashMap::new();
        let tx = WriteTransaction::begin(&self.conn)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, ts, kind, session, identity, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut index_session = tx.prepare_cached(
                "INSERT OR IGNORE INTO session_buckets (session, bucket) VALUES (?1, ?2)",
            )?;
            let mut index_identity = tx.prepare_cached(
                "INSERT OR IGNORE INTO identity_buckets (identity, bucket) VALUES (?1, ?2)",
            )?;
            let mut index_snapshot =
                tx.prepare_cached("INSERT OR IGNORE INTO snapshots (covers, seq) VALUES (?1, ?2)")?;
            let mut store_subtree = tx.prepare_cached(SUBTREE_INSERT)?;
            let mut index_rotation =
                tx.prepare_cached("INSERT OR IGNORE INTO rotations (seq) VALUES (?1)")?;
            // Appends one record: hashed into the tree and the chain, stored,
            // and indexed.
            let mut put = |kind: EventKind,
                           session: Option<u64>,
                           identity: Option<&str>,
                           record: &dyn Fn(u64) -> Vec<u8>|
             -> rusqlite::Result<u64> {
                let seq = frontier.size();
                let bytes = record(seq);
                written += bytes.len() as u64 + ROW_OVERHEAD;
                let leaf = leaf_hash(&bytes);
                leaves.push(leaf);
                let mut closed = Ok(());
                frontier.push_with(leaf, |level, idx, hash| {
                    if level >= SUBTREE_MIN_LEVEL && closed.is_ok() {
                        closed = store_subtree
                            .execute(params![level, idx as i64, &hash[..]])
                            .map(drop);
                    }
                });
                closed?;
                chain = chain::link(&chain, &bytes);
                // `events.identity` stays empty (format version 3): readers
                // select an identity's events on the decoded records.
                insert.execute(params![
                    seq as i64,
                    ts as i64,
                    kind.code() as i64,
                    session.map(|s| s as i64),
                    None::<String>,
                    bytes
                ])?;
                let bucket = seq >> schema::BUCKET_BITS;
                if let Some(session) = session {
                    let known = self.sessions.get(&session) == Some(&bucket)
                        || new_sessions.get(&session) == Some(&bucket);
                    if !known {
                        index_session.execute(params![session as i64, bucket as i64])?;
                        new_sessions.insert(session, bucket);
                    }
                }
                if let Some(identity) = identity {
                    let known = self.identities.get(identity) == Some(&bucket)
                        || new_identities.get(identity) == Some(&bucket);
                    if !known {
                        index_identity.execute(params![identity, bucket as i64])?;
                        new_identities.insert(identity.to_owned(), bucket);
                    }
                }
                Ok(seq)
            };
            for req in batch {
                let mut mine = Vec::with_capacity(req.events.len());
                for ev in &req.events {
                    let shaped = match &ev.shape {
                        None => None,
                        Some(shape) => {
                            let known = self
                                .shapes
                                .get(&shape.digest)
                                .or_else(|| new_shapes.get(&shape.digest))
                                .copied();
                            let at = match known {
                                Some(at) => at,
                                None => {
                                    let at = put(EventKind::StatementShape, None, None, &|seq| {
                                        record_bytes(
                                            seq,
                                            ts,
                                            EventKind::StatementShape,
                                            &shape.body,
                                        )
                                    })?;
                                    new_shapes.insert(shape.digest, at);
                                    at
                                }
                            };
                            Some(crate::shape::reference(at, &shape.digest))
                        }
                    };
                    let seq = put(
                        ev.kind,
                        ev.session,
                        ev.identity.as_deref(),
                        &|seq| match &shaped {
                            None => record_bytes(seq, ts, ev.kind, &ev.body),
                            Some(reference) => {
                                record_bytes_of(seq, ts, ev.kind, &[&ev.body, reference])
                            }
                        },
                    )?;
                    if ev.kind == EventKind::KeyRotated {
                        index_rotation.execute([seq as i64])?;
                    }
                    // A snapshot can only describe events before itself;
                    // one claiming more is recorded but never indexed.
                    if ev.kind == EventKind::Snapshot {
                        if let Some(covers) = Snapshot::covers_of(&ev.body).filter(|c| *c <= seq) {
                            index_snapshot.execute(params![covers as i64, seq as i64])?;
                        }
                    }
                    mine.push(Receipt {
                        seq,
                        ts,
                        checkpoint: 0,
                    });
                }
                receipts.push(mine);
            }
        }
        let size = frontier.size();
        if size == self.size {
            tx.commit()?;
            return Ok(receipts);
        }
        // The signature waits (format 2) unless the tail is old or long
        // enough; the events themselves are committed now either way.
        let waiting = (self.unsigned_leaves.len() + leaves.len()) as u64;
        let sign = self.sign_every.is_zero()
            || waiting >= self.sign_max_events
            || self
                .unsigned_since
                .is_some_and(|since| since.elapsed() >= self.sign_every);
        if sign {
            let mut unsigned = self.unsigned_leaves.clone();
            unsigned.extend_from_slice(&leaves);
            self.commits_since_save += 1;
            let save = self.commits_since_save >= SAVE_FRONTIER_EVERY;
            if save {
                self.commits_since_save = 0;
            }
            let signer = &self.signer;
            let before = &self.signed_frontier;
            insert_checkpoint(
                &tx, signer, before, &frontier, chain, &unsigned, false, save,
            )?;
        }
        tx.commit()?;
        if sign {
            self.signed(&frontier);
            for r in receipts.iter_mut().flatten() {
                r.checkpoint = size;
            }
        } else {
            self.unsigned_leaves.extend_from_slice(&leaves);
            self.unsigned_since
                .get_or_insert_with(std::time::Instant::now);
        }
        let previous = self.size.saturating_sub(1) >> schema::BUCKET_BITS;
        self.size = size;
        self.last_ts = ts;
        self.frontier = frontier;
        self.chain = chain;
        let current = (size - 1) >> schema::BUCKET_BITS;
        if previous != current {
            // Forget sessions and identities idle since an earlier bucket.
            self.sessions.retain(|_, b| *b == current);
            self.identities.retain(|_, b| *b == current);
        }
        self.sessions.extend(new_sessions);
        self.identities.extend(new_identities);
        if self.shapes.len() + new_shapes.len() > MAX_SHAPES {
            self.shapes.clear();
        }
        self.shapes.extend(new_shapes);
        self.segment.committed(ts, written);
        Ok(receipts)
    }

    /// After a checkpoint of `frontier`'s size committed: nothing waits.
    fn signed(&mut self, frontier: &Frontier) {
        self.signed_frontier = frontier.clone();
        self.unsigned_leaves.clear();
        self.unsigned_since = None;
    }

    /// Signs the committed events no checkpoint covers yet, in a commit of
    /// its own: when their delay is up and no append carries it, and at
    /// close; marked as recovered when the tail was read back from the file
    /// (`tail_recovered`). A failure leaves them for the next attempt, one
    /// delay later.
    fn sign_tail(&mut self) {
        if self.unsigned_leaves.is_empty() || self.poisoned.is_some() {
            return;
        }
        let recovered = self.tail_recovered;
        if self.file.still_at_path().is_err() {
            self.unsigned_since = Some(std::time::Instant::now());
            return;
        }
        let frontier = self.frontier.clone();
        let unsigned = std::mem::take(&mut self.unsigned_leaves);
        let written = WriteTransaction::begin(&self.conn).and_then(|tx| {
            let (signer, before, chain) = (&self.signer, &self.signed_frontier, self.chain);
            insert_checkpoint(
                &tx, signer, before, &frontier, chain, &unsigned, recovered, true,
            )?;
            tx.commit()
        });
        match written {
            Ok(()) => {
                self.signed(&frontier);
                self.tail_recovered = false;
            }
            Err(_) => {
                self.unsigned_leaves = unsigned;
                self.unsigned_since = Some(std::time::Instant::now());
            }
        }
    }
}

/// Bytes a stored event costs beyond its record, about: the row's other
/// columns, B-tree cells, index entries, its share of checkpoints.
const ROW_OVERHEAD: u64 = 48;

impl LiveSegment {
    /// Finds the live segment of the ledger at `path`, cutting a one-file
    /// ledger into segments when `policy` asks for them: the file becomes
    /// segment 0 and `path` a link to it. A ledger already in segments
    /// stays in segments whatever the policy (its live file is the
    /// highest-numbered one), and its link is repaired if a crash left it
    /// pointing at a sealed segment.
    fn locate(path: &Path, policy: SegmentPolicy) -> Result<LiveSegment, LedgerError> {
        let mut files = segment::segment_files(path)?;
        if files.is_empty() && policy.enabled() {
            let first = segment::segment_path(path, 0);
            let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
            if regular {
                // The write-ahead log is named after the file: fold it in
                // before the file gets its segment name.
                let conn = Connection::open(path).map_err(|e| LedgerError::sqlite(path, e))?;
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(|e| LedgerError::sqlite(path, e))?;
                drop(conn);
                std::fs::rename(path, &first).map_err(|e| {
                    LedgerError::Io(format!(
                        "cannot rename {} to {} to cut the ledger into segments: {e}",
                        path.display(),
                        first.display()
                    ))
                })?;
            }
            files.push((0, first));
        }
        let Some((number, file)) = files.last().cloned() else {
            return Ok(LiveSegment::whole(path, policy));
        };
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
            return Err(LedgerError::Damaged(format!(
                "{} is a plain file, but segments of it ({}) lie beside it: a ledger in segments is \
                 reached through a link to its live segment; move one of them aside",
                path.display(),
                file.display()
            )));
        }
        segment::link_live(path, &file)?;
        let mut sealed_rotations = Vec::new();
        for (_, sealed) in &files[..files.len() - 1] {
            let conn =
                Connection::open_with_flags(sealed, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| LedgerError::sqlite(sealed, e))?;
            sealed_rotations.extend(crate::rotation::recorded_rotations(&conn)?);
        }
        Ok(LiveSegment {
            number,
            file,
            sealed_rotations,
            ..LiveSegment::whole(path, policy)
        })
    }

    /// The one-file ledger at `path`, segment 0.
    fn whole(path: &Path, policy: SegmentPolicy) -> LiveSegment {
        LiveSegment {
            policy,
            number: 0,
            file: path.to_path_buf(),
            first: 0,
            base: Frontier::new(),
            base_chain: chain::GENESIS,
            base_ts: 0,
            bytes: 0,
            started: None,
            due: false,
            hold_until: 0,
            sealed_rotations: Vec::new(),
        }
    }

    /// Counts a commit of `bytes` at `ts` against the policy.
    fn committed(&mut self, ts: Nanos, bytes: u64) {
        self.bytes += bytes;
        let started = *self.started.get_or_insert(ts);
        let full = self.policy.max_bytes.is_some_and(|max| self.bytes >= max);
        let old = self
            .policy
            .every
            .is_some_and(|every| ts.saturating_sub(started) >= every.as_nanos() as Nanos);
        self.due |= (full || old) && ts >= self.hold_until;
    }
}

/// The text of a signed note (what its signatures sign).
fn note_text(note: &str) -> Option<String> {
    note.split_once("\n\n").map(|(text, _)| format!("{text}\n"))
}

impl WriterState {
    /// Reads where the live segment starts from its first record. A live
    /// segment after the first with no record yet (the writer stopped while
    /// opening it) starts where its sealed predecessor ends: returns that
    /// predecessor's final note and digest, for [`Self::write_opening`].
    fn read_opening(&mut self) -> Result<Option<(String, [u8; 32])>, LedgerError> {
        let file = self.segment.file.clone();
        let ctx = |e| LedgerError::sqlite(&file, e);
        let first: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, data FROM events ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(ctx)?;
        let damaged = |why: String| {
            LedgerError::Damaged(format!(
                "{}: {why}; run gatehouse-verify on the ledger",
                file.display()
            ))
        };
        match first {
            None if self.segment.number == 0 => Ok(None),
            None => {
                let previous = segment::segment_path(&self.path, self.segment.number - 1);
                let end = SegmentEnd::read(&previous)?;
                // The seal may have stopped before the file was made read-only.
                segment::make_read_only(&previous)?;
                self.segment.first = end.frontier.size();
                self.segment.base = end.frontier;
                self.segment.base_chain = end.chain;
                self.segment.base_ts = end.last_ts;
                Ok(Some((end.note, segment::file_digest(&previous)?)))
            }
            Some((0, _)) if self.segment.number == 0 => Ok(None),
            Some((seq, data)) => {
                let event = Event::from_bytes(&data)
                    .map_err(|e| damaged(format!("its first event cannot be decoded ({e})")))?;
                let EventBody::SegmentOpened(opened) = event.body else {
                    return Err(damaged(format!(
                        "segment {} starts at event {seq} with no SegmentOpened record",
                        self.segment.number
                    )));
                };
                if opened.segment != self.segment.number {
                    return Err(damaged(format!(
                        "the file is named as segment {} but holds segment {}",
                        self.segment.number, opened.segment
                    )));
                }
                let base = Frontier::from_bytes(&opened.frontier.0)
                    .filter(|f| f.size() == seq as u64)
                    .ok_or_else(|| damaged("its opening record's frontier is malformed".into()))?;
                let checkpoint = note_text(&opened.previous_checkpoint)
                    .and_then(|t| Checkpoint::parse(&t).ok())
                    .filter(|c| c.size == seq as u64 && c.root == base.root())
                    .ok_or_else(|| {
                        damaged(
                            "its opening record's checkpoint does not match its frontier".into(),
                        )
                    })?;
                self.segment.first = seq as u64;
                self.segment.base = base;
                self.segment.base_chain = checkpoint.chain;
                self.segment.base_ts = event.ts;
                Ok(None)
            }
        }
    }

    /// Appends the live segment's first record and signs it at once, so a
    /// segment with events always starts with a checkpoint of its own.
    fn write_opening(&mut self, note: String, digest: [u8; 32]) -> Result<(), LedgerError> {
        let body = EventBody::SegmentOpened(crate::event::SegmentOpened {
            segment: self.segment.number,
            previous_checkpoint: note,
            previous_digest: digest.to_vec().into(),
            frontier: self.frontier.to_bytes().into(),
        });
        let (reply, _) = oneshot::channel();
        let request = Request {
            events: vec![body.to_pending()],
            reply,
        };
        self.commit(std::slice::from_ref(&request))
            .map_err(|e| LedgerError::sqlite(&self.segment.file, e))?;
        self.sign_tail();
        if !self.unsigned_leaves.is_empty() {
            return Err(LedgerError::Io(format!(
                "cannot sign the opening of segment {}",
                self.segment.file.display()
            )));
        }
        Ok(())
    }

    /// Sizes the live segment at open (and once opened): its records, as
    /// [`LiveSegment::committed`] counts them, and its first event's time.
    /// The schema's pages are not counted, so a segment's size means the
    /// same at any `segment_max`.
    fn measure_segment(&mut self) -> Result<(), LedgerError> {
        let file = self.segment.file.clone();
        let ctx = |e| LedgerError::sqlite(&file, e);
        let (bytes, started): (i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT COALESCE(SUM(length(data)), 0) + COUNT(*) * ?1, MIN(ts) FROM events",
                [ROW_OVERHEAD as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(ctx)?;
        self.segment.bytes = bytes as u64;
        self.segment.started = started.map(|t| t as Nanos);
        self.segment.due = false;
        Ok(())
    }

    /// Seals the live segment and opens the next (section 9): signs every
    /// event, folds the write-ahead log into the file, leaves it read-only
    /// under its number, and starts the next file with a record of the
    /// sealed one's final checkpoint, digest and tree. Nothing else may
    /// hold the file open for writing (the caller stopped its WAL thread).
    /// A failure leaves the live segment as it was, to be sealed later.
    fn seal(&mut self) -> Result<(), LedgerError> {
        self.segment.due = false;
        if self.poisoned.is_some() || self.size <= self.segment.first + 1 {
            return Ok(());
        }
        self.sign_tail();
        if !self.unsigned_leaves.is_empty() {
            return Err(LedgerError::Io(
                "cannot sign the segment's last events".into(),
            ));
        }
        let file = self.segment.file.clone();
        let ctx = |e| LedgerError::sqlite(&file, e);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO writer_state (id, size, frontier) VALUES (0, ?1, ?2)",
                params![self.size as i64, self.frontier.to_bytes()],
            )
            .map_err(ctx)?;
        let note: String = self
            .conn
            .query_row(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .map_err(ctx)?;
        // Every page must be in the file itself before it is sealed (a
        // copy of the file is the archived segment). A FULL checkpoint
        // waits only for readers of an older snapshot (TRUNCATE would wait
        // for every reader, and readers come and go all the time). Appends
        // wait while the seal runs, so such readers get a short while to
        // move on, and a seal they still hold back is retried later. The
        // log's frames, all copied, go when the last connection closes.
        self.conn.busy_timeout(SEAL_WAIT_FOR_READERS).map_err(ctx)?;
        let mut folded = false;
        for _ in 0..3 {
            let (busy, log, done): (i64, i64, i64) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(ctx)?;
            if busy == 0 && log == done {
                folded = true;
                break;
            }
        }
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(ctx)?;
        if !folded {
            return Err(LedgerError::Io(format!(
                "readers kept {} from folding its write-ahead log",
                file.display()
            )));
        }
        // Readers need no write-ahead log for a file that never changes
        // again; if one holds it open the mode stays, which is harmless.
        let _ = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()));
        // A key retired in this segment stays retired in every later one.
        let rotations = crate::rotation::recorded_rotations(&self.conn)?;
        let next = segment::segment_path(&self.path, self.segment.number + 1);
        let conn = schema::open_for_writing(&next, self.signer.name(), self.durability)?;
        // The sealed file is closed before its digest is taken. From here
        // on the writer holds the next file: if opening it fails, nothing
        // more is appended until a restart opens it from the sealed one.
        drop(std::mem::replace(&mut self.conn, conn));
        if let Err(e) = self.open_next(note, rotations, next) {
            let why = format!(
                "cannot open the next ledger segment after sealing {}: {e}; restart the gateway",
                file.display()
            );
            self.poisoned = Some(why.clone());
            return Err(LedgerError::Io(why));
        }
        Ok(())
    }

    /// The second half of [`Self::seal`]: the sealed file made read-only
    /// and hashed, the next one's first record written, the link moved.
    fn open_next(
        &mut self,
        note: String,
        rotations: Vec<(u64, String, String)>,
        next: PathBuf,
    ) -> Result<(), LedgerError> {
        let file = self.segment.file.clone();
        segment::make_read_only(&file)?;
        let digest = segment::file_digest(&file)?;
        let mut sealed_rotations = std::mem::take(&mut self.segment.sealed_rotations);
        sealed_rotations.extend(rotations);
        self.segment = LiveSegment {
            sealed_rotations,
            number: self.segment.number + 1,
            file: next.clone(),
            first: self.size,
            base: self.frontier.clone(),
            base_chain: self.chain,
            base_ts: self.last_ts,
            ..LiveSegment::whole(&next, self.segment.policy)
        };
        self.signed_frontier = self.frontier.clone();
        self.sessions.clear();
        self.identities.clear();
        // A segment's statements refer only to shapes in it, so that it
        // reads whole when older segments are gone.
        self.shapes.clear();
        self.write_opening(note, digest)?;
        segment::link_live(&self.path, &next)?;
        self.file = OpenedFile::open(&self.path)?;
        self.measure_segment()
    }
}

/// Where a sealed segment ends: read back when the writer stopped between
/// sealing it and opening its successor.
struct SegmentEnd {
    note: String,
    frontier: Frontier,
    chain: Link,
    last_ts: Nanos,
}

impl SegmentEnd {
    fn read(path: &Path) -> Result<SegmentEnd, LedgerError> {
        let ctx = |e| LedgerError::sqlite(path, e);
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(ctx)?;
        let damaged = |why: &str| {
            LedgerError::Damaged(format!(
                "sealed segment {}: {why}; run gatehouse-verify on the ledger",
                path.display()
            ))
        };
        let (size, note): (i64, String) = conn
            .query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(ctx)?;
        let frontier: Vec<u8> = conn
            .query_row("SELECT frontier FROM writer_state WHERE id = 0", [], |r| {
                r.get(0)
            })
            .map_err(ctx)?;
        let last_ts: i64 = conn
            .query_row("SELECT MAX(ts) FROM events", [], |r| r.get(0))
            .map_err(ctx)?;
        let checkpoint = note_text(&note)
            .and_then(|t| Checkpoint::parse(&t).ok())
            .ok_or_else(|| damaged("its final checkpoint cannot be read"))?;
        let frontier = Frontier::from_bytes(&frontier)
            .filter(|f| f.size() == size as u64 && f.root() == checkpoint.root)
            .ok_or_else(|| damaged("its saved tree does not match its final checkpoint"))?;
        Ok(SegmentEnd {
            note,
            frontier,
            chain: checkpoint.chain,
            last_ts: last_ts as Nanos,
        })
    }
}

/// Inserts the signed checkpoint of the tree whose frontier is `frontier`
/// and chain head `chain`, whose leaves after the last signed checkpoint
/// (frontier `before`) are `unsigned`, for the consistency proof from it.
/// The root signed is the one of the writer's own tree in memory, never one
/// read back from disk, unless `recovered` says so. With `save`, the
/// frontier is kept for the next start (only a recent one at a signed size
/// is needed; saving it every few checkpoints spares a page write on most).
#[allow(clippy::too_many_arguments)]
fn insert_checkpoint(
    tx: &WriteTransaction<'_>,
    signer: &NoteSigner,
    before: &Frontier,
    frontier: &Frontier,
    chain: Link,
    unsigned: &[crate::merkle::Hash],
    recovered: bool,
    save: bool,
) -> rusqlite::Result<()> {
    let size = frontier.size();
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root: frontier.root(),
        chain,
        recovered,
    };
    let proof: Vec<u8> = before.consistency_proof(unsigned).concat();
    let note = signer.sign(&checkpoint.text());
    tx.prepare_cached("INSERT INTO checkpoints (size, note, proof) VALUES (?1, ?2, ?3)")?
        .execute(params![size as i64, note, proof])?;
    if save {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO writer_state (id, size, frontier) VALUES (0, ?1, ?2)",
        )?
        .execute(params![size as i64, frontier.to_bytes()])?;
    }
    Ok(())
}

/// A write transaction begun and ended through cached statements, so BEGIN
/// and COMMIT are parsed once rather than for every batch. Rolled back if
/// dropped before [`WriteTransaction::commit`].
struct WriteTransaction<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> WriteTransaction<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTransaction { conn, open: true })
    }

    fn prepare_cached(&self, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
        self.conn.prepare_cached(sql)
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Takes the ledger's writer lock (`<ledger>.lock`). Two writers would each
/// extend the chain from their own view of the tail and fork the log, so a
/// second one is refused.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, LedgerError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            LedgerError::Io(format!(
                "cannot create lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    // A lock can outlive its holder by a moment: a process forked by the
    // holder shares the descriptor until it execs. Retry briefly before
    // concluding that another writer is running.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Busy(format!(
                    "ledger {} is open for writing by another process (a running gateway?); stop it, or make the change through that gateway",
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LedgerError::Io(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )))
            }
        }
    }
}

/// Copies the write-ahead log back into the database from its own thread and
/// connection, so the copying (and its fsyncs) mostly happens off the commit
/// path. The WAL can only restart from its beginning once a checkpoint has
/// caught up with a writer that is not writing, which a background thread
/// never sees under sustained load; so the writer connection also keeps
/// SQLite's automatic checkpoint at a high threshold (64 MiB of WAL), where
/// the writer finishes what this thread left and the file stops growing.
struct WalCheckpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WalCheckpointer {
    fn start(path: &Path) -> WalCheckpointer {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ledger-wal".into())
            .spawn(move || {
                // Never creates the file: if the ledger was removed
                // meanwhile, an empty one must not appear at its path.
                let Ok(conn) = Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                ) else {
                    return;
                };
                let _ = conn.busy_timeout(Duration::from_millis(50));
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(Duration::from_millis(50))
                {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .ok();
        WalCheckpointer {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
