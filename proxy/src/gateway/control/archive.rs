//! Archiving sealed ledger segments (issue 17), the way PostgreSQL archives
//! its WAL: for each sealed segment, oldest first, the operator's
//! `archive_command` runs through `sh -c` with `%p` replaced by the
//! segment's path and `%f` by its file name; exit status 0 means the
//! archive holds it. Every attempt and its outcome is a `SegmentArchived`
//! event; a failure is retried, waiting 1 s, 2 s, 4 s ... up to a minute,
//! and no later segment is archived before it (an archive with a hole
//! would be useless). A segment known to be archived gets a marker file
//! beside it (`<segment>.archived`), like PostgreSQL's `archive_status`.
//!
//! `retain_local = N` then removes archived segments beyond the newest N
//! sealed ones, oldest first, each recorded (`SegmentRemoved`) before it
//! goes, and only once a snapshot of the state lies in a segment kept:
//! start-up rebuilds the state from that snapshot and the segments on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_ledger::event::{SegmentArchived, SegmentRemoved};
use gatehouse_ledger::segment::segment_files;
use gatehouse_ledger::{EventBody, Ledger};
use tracing::{info, warn};

use super::ledger_thread::LedgerThread;
use crate::config::ArchivePolicy;

/// How often the thread looks for newly sealed segments.
const POLL: Duration = Duration::from_secs(1);

/// The longest wait between two attempts at a failing segment.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Error output kept in a failed attempt's record.
const DETAIL_BYTES: usize = 400;

/// The running archiver. Dropping it asks the thread to stop without
/// waiting; [`Archiver::stop`] waits (for a command that is running, too).
pub struct Archiver(LedgerThread);

impl Archiver {
    /// Starts archiving the sealed segments of the ledger behind `ledger`.
    pub fn start(ledger: Ledger, policy: ArchivePolicy) -> std::io::Result<Archiver> {
        LedgerThread::start("ledger-archive", move |stop| run(&ledger, &policy, stop)).map(Archiver)
    }

    /// Stops the thread and waits for it (before the ledger closes: it
    /// records its attempts there).
    pub fn stop(self) {
        self.0.stop();
    }
}

fn run(ledger: &Ledger, policy: &ArchivePolicy, stop: &AtomicBool) {
    let mut attempts: HashMap<u64, u64> = HashMap::new();
    let mut next_try = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_try {
            match archive_pass(ledger, policy, &mut attempts, stop) {
                Ok(()) => next_try = Instant::now(),
                Err(wait) => next_try = Instant::now() + wait,
            }
        }
        std::thread::park_timeout(POLL);
    }
}

/// The marker saying a segment is archived.
fn marker(segment: &Path) -> PathBuf {
    let mut name = segment.file_name().unwrap_or_default().to_os_string();
    name.push(".archived");
    segment.with_file_name(name)
}

/// `command` with `%p` and `%f` replaced by the segment's path and file
/// name, each quoted for the shell, and `%%` by `%`.
pub fn expand(command: &str, segment: &Path) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let file = file_name(segment);
    let mut out = String::with_capacity(command.len() + 64);
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => out.push_str(&quote(&segment.to_string_lossy())),
            Some('f') => out.push_str(&quote(&file)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Runs the command; `Err` holds its exit status and the end of its error
/// output.
fn run_command(command: &str) -> Result<(), String> {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let cut = stderr
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| stderr.len() - i <= DETAIL_BYTES)
        .unwrap_or(stderr.len());
    Err(format!("{}; {}", output.status, &stderr[cut..]))
}

/// One pass: archives each sealed segment not archived yet, oldest first,
/// then removes what `retain_local` allows. `Err` says how long to wait
/// before trying again.
fn archive_pass(
    ledger: &Ledger,
    policy: &ArchivePolicy,
    attempts: &mut HashMap<u64, u64>,
    stop: &AtomicBool,
) -> Result<(), Duration> {
    let files = segment_files(ledger.path()).map_err(|e| {
        warn!("cannot list the ledger's segments to archive them: {e}");
        MAX_BACKOFF
    })?;
    let sealed = &files[..files.len().saturating_sub(1)];
    for (number, file) in sealed {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if marker(file).exists() {
            continue;
        }
        let attempt = attempts.entry(*number).or_insert(0);
        *attempt += 1;
        let command = expand(&policy.command, file);
        let outcome = run_command(&command);
        let event = EventBody::from(SegmentArchived {
            segment: *number,
            file: file_name(file),
            command: command.clone(),
            attempt: *attempt,
            succeeded: outcome.is_ok(),
            detail: outcome.as_ref().err().cloned(),
        });
        // Unrecorded, the attempt did not happen: it is made again.
        if let Err(e) = ledger.append_blocking(&[event]) {
            warn!("cannot record the archiving of {}: {e}", file.display());
            return Err(backoff(*attempt));
        }
        match outcome {
            Ok(()) => {
                write_marker(file).map_err(|e| {
                    warn!("{e}");
                    backoff(*attempt)
                })?;
                info!(segment = number, command = %command, "ledger segment archived");
                attempts.remove(number);
            }
            Err(detail) => {
                let wait = backoff(*attempt);
                warn!(
                    "archive_command failed for ledger segment {} (attempt {attempt}, retried in {} s): {detail}",
                    file.display(),
                    wait.as_secs()
                );
                return Err(wait);
            }
        }
    }
    if let Some(keep) = policy.retain_local {
        remove_archived(ledger, &files, keep);
    }
    Ok(())
}

fn backoff(attempt: u64) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_marker(file: &Path) -> Result<(), String> {
    let path = marker(file);
    std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .and_then(|()| gatehouse_ledger::segment::sync_dir(&path).map_err(std::io::Error::other))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Removes archived segments beyond the newest `keep` sealed ones of
/// `files` (every segment, the live one last), oldest first, while a
/// snapshot lies after the oldest segment left.
fn remove_archived(ledger: &Ledger, files: &[(u64, PathBuf)], keep: usize) {
    let sealed = files.len().saturating_sub(1);
    let removable = sealed.saturating_sub(keep);
    for (i, (number, file)) in files[..removable].iter().enumerate() {
        if !marker(file).exists() {
            return;
        }
        // After removing it, the ledger on disk starts with the next file.
        match gatehouse_ledger::segment::snapshot_from(&files[i + 1..]) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(
                    "keeping ledger segment {}: cannot look for a snapshot after it: {e}",
                    file.display()
                );
                return;
            }
        }
        let event = EventBody::from(SegmentRemoved {
            segment: *number,
            file: file_name(file),
            reason: format!("archived; retain_local = {keep}"),
        });
        if let Err(e) = ledger.append_blocking(&[event]) {
            warn!("cannot record the removal of {}: {e}", file.display());
            return;
        }
        if let Err(e) = std::fs::remove_file(file) {
            warn!(
                "cannot remove archived ledger segment {}: {e}",
                file.display()
            );
            return;
        }
        let _ = std::fs::remove_file(marker(file));
        let _ = gatehouse_ledger::segment::sync_dir(file);
        info!(
            segment = number,
            "archived ledger segment removed from disk"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_gets_the_path_and_name_quoted_for_the_shell() {
        let segment = Path::new("/var/lib/gh/it's.db.000002");
        assert_eq!(
            expand("cp %p /archive/%f && echo 100%% done %x", segment),
            r"cp '/var/lib/gh/it'\''s.db.000002' /archive/'it'\''s.db.000002' && echo 100% done %x"
        );
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
