//! A background thread that works on the ledger beside the sessions
//! (snapshots, archiving) until asked to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The running thread. Dropping it asks the thread to stop without
/// waiting; [`LedgerThread::stop`] waits.
pub struct LedgerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LedgerThread {
    /// Starts `work` on a thread named `name`; it should return soon after
    /// the flag it is given turns true, and park between rounds (it is
    /// unparked when asked to stop).
    pub fn start(
        name: &str,
        work: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<LedgerThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name(name.into()).spawn({
            let stop = stop.clone();
            move || work(&stop)
        })?;
        Ok(LedgerThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: what it is appending is
    /// committed first. Call before closing the ledger (the thread holds a
    /// handle to its writer).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for LedgerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}
