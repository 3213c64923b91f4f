//! This gateway's link to the cluster's control log (docs/cluster.md).
//!
//! Policy, identities, credentials, operators and blocks live in the
//! control log that every gateway of the cluster shares. A gateway applies
//! what the others append (its follower reads every `[cluster] poll_ms`),
//! and records its own commands there, deciding them against the log as it
//! stands under the log's append lock (compare-and-set), so two gateways
//! cannot both act on a state that one of them has already changed. Each
//! step of applying is recorded in the gateway's own ledger as
//! `ControlApplied`, with the control checkpoint that covers it.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_ledger::event::{ControlApplied, EventBody};
use gatehouse_ledger::shared_log::{Follower, SharedAppendError, SharedLog};
use gatehouse_ledger::{Event, LedgerError};
use tracing::warn;

use crate::gateway::control::admin;
use crate::gateway::control::shared::{CommandError, ControlEffect, Shared};

/// The control log, and how far this gateway has applied it.
pub struct ControlLink {
    /// This gateway's name in the cluster.
    pub gateway: String,
    log: SharedLog,
    follower: std::sync::Mutex<Follower>,
    /// Held while control events are read and applied, so each is applied
    /// once, in order, whoever reads it.
    applying: tokio::sync::Mutex<()>,
    /// How often the follower looks for other gateways' changes.
    pub poll: Duration,
    /// How long the log may go unread before the gateway stops vouching
    /// for identities (strict mode only).
    max_staleness: Duration,
    strict: bool,
    /// When the log was last read through.
    read_at: std::sync::Mutex<std::time::Instant>,
    /// Set, with why, while the gateway cannot vouch for any identity.
    stale: std::sync::RwLock<Option<String>>,
}

impl ControlLink {
    /// A link whose first `position` control events are already applied
    /// (folded into the state the gateway started from).
    pub fn new(
        gateway: String,
        log: SharedLog,
        position: u64,
        timing: Timing,
    ) -> Result<ControlLink, LedgerError> {
        let follower = log.follow(position)?;
        Ok(ControlLink {
            gateway,
            log,
            follower: std::sync::Mutex::new(follower),
            applying: tokio::sync::Mutex::new(()),
            poll: timing.poll,
            max_staleness: timing.max_staleness,
            strict: timing.strict,
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
            stale: std::sync::RwLock::new(None),
        })
    }

    /// Why the gateway vouches for no identity now, if it does not: in
    /// strict mode, the control log has gone unread past `max_staleness`.
    pub fn stale(&self) -> Option<String> {
        self.stale.read().expect("control staleness").clone()
    }

    /// Control events applied so far.
    pub fn position(&self) -> u64 {
        self.follower.lock().expect("control follower").position()
    }

    fn checkpoint(&self) -> Result<Option<String>, LedgerError> {
        self.follower.lock().expect("control follower").checkpoint()
    }

    fn checkpoint_or_none(&self) -> Option<String> {
        match self.checkpoint() {
            Ok(note) => note,
            Err(e) => {
                warn!("cannot read the control log's checkpoint: {e}");
                None
            }
        }
    }
}

/// How a gateway follows the control log.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between reads.
    pub poll: Duration,
    /// Longest time unread before the gateway stops vouching (strict).
    pub max_staleness: Duration,
    /// Fail closed past `max_staleness`.
    pub strict: bool,
}

/// Runs control-log I/O (file locks, SQLite) from async code: on a
/// multi-threaded runtime the worker hands its other tasks off first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn control_failed(e: impl std::fmt::Display) -> CommandError {
    CommandError::Control(e.to_string())
}

impl Shared {
    /// The control log's newest checkpoint note (`None` outside a cluster
    /// or for an empty control log).
    pub fn control_checkpoint(&self) -> Result<Option<String>, LedgerError> {
        match self.link() {
            Some(link) => link.checkpoint(),
            None => Ok(None),
        }
    }

    fn link(&self) -> Option<&ControlLink> {
        self.control.as_ref()
    }

    /// Applies what other gateways appended to the control log since the
    /// last step; returns how many events that was.
    pub async fn catch_up(&self) -> Result<u64, CommandError> {
        let Some(link) = self.link() else {
            return Ok(0);
        };
        let _applying = link.applying.lock().await;
        let events = blocking(|| link.follower.lock().expect("control follower").poll())
            .map_err(control_failed)?;
        let effects: Vec<ControlEffect> = events.iter().map(|e| self.apply_control(e)).collect();
        self.control_applied(link, events.len() as u64, effects)
            .await?;
        Ok(events.len() as u64)
    }

    /// Records an operator command in the control log: `build` decides it
    /// against the live state once every event already in the log is
    /// applied, under the log's append lock, so what it checked still holds
    /// when its event lands. `Ok(None)`: `build` chose to record nothing.
    pub(crate) async fn record_control<T>(
        &self,
        build: impl FnOnce(&Shared) -> anyhow::Result<Option<(EventBody, T)>>,
    ) -> Result<Option<(Event, T)>, CommandError> {
        let link = self.link().expect("record_control is for cluster members");
        let _applying = link.applying.lock().await;
        let position = link.position();
        let mut effects = Vec::new();
        let mut built = None;
        let appended = blocking(|| {
            link.log.append_with(position, |new| {
                for e in new {
                    effects.push(self.apply_control(e));
                }
                match build(self)? {
                    Some((event, answer)) => {
                        built = Some((event.clone(), answer));
                        Ok(vec![event])
                    }
                    None => Ok(Vec::new()),
                }
            })
        });
        let appended = match appended {
            Ok(a) => a,
            Err(SharedAppendError::Refused(e)) => {
                self.control_applied(link, effects.len() as u64, effects)
                    .await?;
                return Err(CommandError::Invalid(e));
            }
            Err(e) => return Err(control_failed(e)),
        };
        let mut step = appended.seen.len() as u64;
        let own = match (built, appended.receipts.first()) {
            (Some((body, answer)), Some(receipt)) => {
                let event = Event {
                    seq: receipt.seq,
                    ts: receipt.ts,
                    body,
                };
                effects.push(self.apply_control(&event));
                step += 1;
                Some((event, answer))
            }
            _ => None,
        };
        link.follower
            .lock()
            .expect("control follower")
            .skip_to(position + step);
        self.control_applied(link, step, effects).await?;
        Ok(own)
    }

    /// The control log was read through: the clock of staleness restarts,
    /// and a gateway that had stopped vouching for identities resumes.
    async fn control_read(&self) {
        let Some(link) = self.link() else { return };
        *link.read_at.lock().expect("control read time") = std::time::Instant::now();
        let was = link.stale.write().expect("control staleness").take();
        if was.is_some() {
            tracing::info!("the control log can be read again: logins are admitted");
            admin::record(
                self,
                "gatehouse",
                "cluster.control",
                None,
                "ok",
                Some("the control log can be read again; logins are admitted".into()),
            )
            .await;
        }
    }

    /// The control log could not be read. Past `max_staleness` in strict
    /// mode, the gateway cannot know whether any identity was blocked or
    /// any credential revoked meanwhile: it ends every session and refuses
    /// logins ([`Shared::blocked`] answers for every identity) until it can
    /// read the log again. Recorded once per episode.
    async fn control_unread(&self, error: &CommandError) {
        let Some(link) = self.link() else { return };
        let unread = link.read_at.lock().expect("control read time").elapsed();
        if !link.strict || unread <= link.max_staleness || link.stale().is_some() {
            return;
        }
        let why = format!(
            "the gateway has not been able to read the cluster's control log for {} s ({error}); it cannot vouch for any identity until it can",
            unread.as_secs()
        );
        *link.stale.write().expect("control staleness") = Some(why.clone());
        warn!("{why}: ending every session and refusing logins");
        self.end_every_session(crate::gateway::relay::session::Termination {
            operator: None,
            reason: why.clone(),
        });
        admin::record(
            self,
            "gatehouse",
            "cluster.control",
            None,
            "failed",
            Some(why),
        )
        .await;
    }

    /// After applying `applied` control events: their follow-ups (held
    /// statements of blocked or disabled identities are refused), then the
    /// step recorded in this gateway's ledger.
    async fn control_applied(
        &self,
        link: &ControlLink,
        applied: u64,
        effects: Vec<ControlEffect>,
    ) -> Result<(), CommandError> {
        if applied == 0 {
            return Ok(());
        }
        for effect in effects {
            self.follow_up(effect).await?;
        }
        let event = ControlApplied {
            gateway: link.gateway.clone(),
            through: link.position(),
            applied,
            checkpoint: link.checkpoint_or_none(),
        };
        self.ledger.append(&event.into()).await?;
        Ok(())
    }
}

/// Follows the control log until the gateway shuts down.
pub fn follow(shared: Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let poll = shared.control.as_ref()?.poll;
    Some(tokio::spawn(async move {
        let mut stop = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = async { let _ = stop.wait_for(|stopping| *stopping).await; } => return,
            }
            match shared.catch_up().await {
                Ok(_) => shared.control_read().await,
                Err(e) => {
                    warn!("cannot apply the control log: {e}");
                    shared.control_unread(&e).await;
                }
            }
        }
    }))
}
