//! A progress line on standard error for long verifications: how many
//! events were checked, of how many, and at what rate. Written only when
//! asked (the command line asks when standard error is a terminal), at most
//! once a second, on one line that is rewritten in place.

use std::io::Write as _;
use std::time::{Duration, Instant};

/// Events between two looks at the clock.
pub const EVERY: u64 = 1 << 16;

/// The state of one progress line.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    started: Instant,
    shown: Option<Instant>,
}

impl Progress {
    /// A line for a pass over about `total` events.
    pub fn new(total: u64) -> Progress {
        Progress {
            total,
            started: Instant::now(),
            shown: None,
        }
    }

    /// Shows `done` events checked, if a second has passed since the line
    /// was last written.
    pub fn tick(&mut self, done: u64) {
        let now = Instant::now();
        if self
            .shown
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.shown = Some(now);
        let seconds = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let percent = if self.total > 0 {
            (done as f64 / self.total as f64 * 100.0).min(100.0)
        } else {
            100.0
        };
        let left = if rate > 0.0 && self.total > done {
            format!(", about {:.0} s left", (self.total - done) as f64 / rate)
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rverifying: {done} of {} events ({percent:.0}%), {rate:.0} events/s{left}    ",
            self.total
        );
        let _ = err.flush();
    }

    /// Ends the line, if one was written.
    pub fn done(&self) {
        if self.shown.is_some() {
            eprintln!();
        }
    }
}
