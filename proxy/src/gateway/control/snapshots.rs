//! Writing snapshots while the gateway runs.
//!
//! A background thread tails the committed ledger with its own reader,
//! folds every event into its own [`GatewayState`] (decoding only the
//! bodies the state depends on, see [`GatewayState::apply_record`]), and
//! each time the count of folded events reaches a multiple of `every` it
//! appends a `Snapshot` event (the state after exactly that many events).
//! Sessions never wait for it: it reads committed rows through SQLite's
//! write-ahead log, which never blocks the writer, and its appends queue
//! behind theirs like any other event. Its cost is CPU on another core
//! (docs/benchmarks.md). If it fails, the gateway carries on without new
//! snapshots (start-up then folds more events, which is slower, never
//! wrong).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_engine::snapshot;
use gatehouse_engine::state::GatewayState;
use gatehouse_ledger::{Ledger, LedgerReader};
use tracing::{debug, warn};

use super::ledger_thread::LedgerThread;

/// How often the thread looks for newly committed events.
const POLL: Duration = Duration::from_millis(100);

/// The running snapshot writer. Dropping it asks the thread to stop
/// without waiting; [`Snapshotter::stop`] waits.
pub struct Snapshotter(LedgerThread);

impl Snapshotter {
    /// Starts writing a snapshot every `every` events of the ledger behind
    /// `ledger`, continuing the fold from `state` (which must be the state
    /// after the ledger's first `state.events` events). `every == 0`
    /// disables snapshots: returns `None`.
    pub fn start(
        ledger: Ledger,
        state: GatewayState,
        every: u64,
    ) -> std::io::Result<Option<Snapshotter>> {
        if every == 0 {
            return Ok(None);
        }
        LedgerThread::start("ledger-snapshots", move |stop| {
            run(ledger, state, every, stop)
        })
        .map(|t| Some(Snapshotter(t)))
    }

    /// Stops the thread and waits for it: a snapshot being appended is
    /// committed first. Call before closing the ledger.
    pub fn stop(self) {
        self.0.stop();
    }
}

fn run(ledger: Ledger, mut state: GatewayState, every: u64, stop: &AtomicBool) {
    let mut reader = match LedgerReader::open(ledger.path()) {
        Ok(r) => r,
        Err(e) => {
            warn!("snapshots are off until the gateway restarts: cannot read the ledger: {e}");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        // After a seal the events go on in the next segment's file.
        if let Err(e) = reader.refresh() {
            warn!("snapshots are off until the gateway restarts: cannot read the ledger: {e}");
            return;
        }
        if let Err(e) = catch_up(&reader, &ledger, &mut state, every, stop) {
            warn!("snapshots are off until the gateway restarts: {e}");
            return;
        }
        std::thread::park_timeout(POLL);
    }
}

/// Folds every committed event not yet folded, appending a snapshot at each
/// multiple of `every`.
fn catch_up(
    reader: &LedgerReader,
    ledger: &Ledger,
    state: &mut GatewayState,
    every: u64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let end = reader
        .len()
        .map_err(|e| format!("cannot read the ledger: {e}"))?;
    let mut failed = None;
    let mut due = Vec::new();
    reader
        .for_each_record(state.events..end, |seq, bytes| {
            if failed.is_none() && !stop.load(Ordering::Relaxed) {
                match fold_one(state, every, seq, bytes) {
                    Ok(snapshot) => due.extend(snapshot),
                    Err(e) => failed = Some(e),
                }
            }
        })
        .map_err(|e| format!("cannot read the ledger: {e}"))?;
    // Appended once the read is over: a reader in the middle of a read
    // holds the log's write-ahead log at its snapshot, and the writer may
    // need it to let go (to seal a segment) before it can commit.
    for body in due {
        let (covers, bytes) = (body.covers, body.state.0.len());
        let receipt = ledger
            .append_blocking(&[body.into()])
            .map_err(|e| format!("cannot append a snapshot: {e}"))?;
        debug!(covers, seq = receipt[0].seq, bytes, "snapshot written");
    }
    failed.map_or(Ok(()), Err)
}

/// Folds the record stored as event `seq`; returns the snapshot to append
/// if the count of folded events reaches a multiple of `every`.
fn fold_one(
    state: &mut GatewayState,
    every: u64,
    seq: u64,
    bytes: &[u8],
) -> Result<Option<gatehouse_ledger::event::Snapshot>, String> {
    state
        .apply_record(bytes)
        .map_err(|e| format!("event {seq} cannot be decoded: {e}"))?;
    if state.events != seq + 1 {
        return Err(format!(
            "the record stored as event {seq} says it is event {}",
            state.events - 1
        ));
    }
    Ok(state
        .events
        .is_multiple_of(every)
        .then(|| snapshot::snapshot(state)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::event::{IdentityBlocked, IdentityCreated, OperatorAction};
    use gatehouse_ledger::note::NoteSigner;
    use gatehouse_ledger::{EventBody, WriterOptions};

    fn body(i: u64) -> EventBody {
        match i % 7 {
            0 => IdentityCreated {
                identity: format!("agent-{i}"),
                operator: "alice".into(),
                description: None,
            }
            .into(),
            3 => IdentityBlocked {
                identity: format!("agent-{}", i - 3),
                operator: "bob".into(),
                reason: "test".into(),
                trigger: None,
            }
            .into(),
            _ => OperatorAction {
                operator: "ops".into(),
                action: format!("action {i}"),
                target: None,
                outcome: "ok".into(),
                detail: None,
            }
            .into(),
        }
    }

    #[test]
    fn every_kth_event_gets_a_snapshot_of_exactly_the_fold_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let signer = NoteSigner::from_seed("gatehouse.test/snapshots", [5; 32]).unwrap();
        let ledger = Ledger::open(WriterOptions::new(&path, signer)).unwrap();
        // Events before the thread starts are the state it is given.
        let first: Vec<EventBody> = (0..5).map(body).collect();
        ledger.append_blocking(&first).unwrap();
        let mut given = GatewayState::default();
        for e in LedgerReader::open(&path).unwrap().events(0..5) {
            given.apply(&e.unwrap().event);
        }
        let snapshots = Snapshotter::start(ledger.clone(), given, 10)
            .unwrap()
            .unwrap();
        for i in 5..60 {
            ledger.append_blocking(&[body(i)]).unwrap();
        }
        let reader = LedgerReader::open(&path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // 60 events and the snapshots among them: covers 10 ... 60.
        while reader
            .latest_snapshot(u64::MAX)
            .unwrap()
            .map(|s| s.snapshot.covers)
            < Some(60)
        {
            assert!(std::time::Instant::now() < deadline, "snapshots keep up");
            std::thread::sleep(Duration::from_millis(20));
        }
        snapshots.stop();
        ledger.close();
        let index = reader.snapshot_index().unwrap();
        let covers: Vec<u64> = index.iter().map(|(c, _)| *c).collect();
        let len = reader.len().unwrap();
        assert_eq!(
            covers,
            (1..=len / 10).map(|k| k * 10).collect::<Vec<_>>(),
            "one snapshot per multiple of 10, none missing, none twice"
        );
        let mut fold = GatewayState::default();
        let mut hashes = std::collections::BTreeMap::new();
        for e in reader.events(0..len) {
            fold.apply(&e.unwrap().event);
            hashes.insert(fold.events, snapshot::state_hash(&fold));
        }
        for (covers, seq) in index {
            assert!(seq >= covers);
            let s = reader.latest_snapshot(covers).unwrap().unwrap();
            assert_eq!(s.seq, seq);
            assert_eq!(s.snapshot.state_hash.0[..], hashes[&covers].0[..]);
        }
    }

    #[test]
    fn zero_disables_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::from_seed("gatehouse.test/snapshots", [5; 32]).unwrap();
        let ledger = Ledger::open(WriterOptions::new(dir.path().join("l.db"), signer)).unwrap();
        assert!(Snapshotter::start(ledger, GatewayState::default(), 0)
            .unwrap()
            .is_none());
    }
}
