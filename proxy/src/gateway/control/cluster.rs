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

use gatehouse_engine::approvals::{Approval, Vote};
use gatehouse_ledger::event::{
    ApprovalRequested, ControlApplied, EventBody, GatewayAnchored, GatewayEnrolled, Nanos,
};
use gatehouse_ledger::shared_log::{Follower, SharedAppendError, SharedLog};
use gatehouse_ledger::AppendError;
use gatehouse_ledger::{Event, LedgerError};
use tracing::warn;

use crate::gateway::control::admin;
use crate::gateway::control::approvals::{ApprovalDesk, DeskError, Outcome};
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
    /// The size of this gateway's checkpoint last anchored, and when.
    anchored: std::sync::Mutex<(u64, std::time::Instant)>,
}

/// How often a gateway anchors its newest checkpoint in the control log.
pub const ANCHOR_EVERY: Duration = Duration::from_secs(5);

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
            anchored: std::sync::Mutex::new((0, std::time::Instant::now())),
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

/// Control events applied in one step, and what is left to do for them.
struct Step {
    applied: u64,
    through: u64,
    checkpoint: Option<String>,
    effects: Vec<ControlEffect>,
}

impl Step {
    fn taken(link: &ControlLink, applied: u64, effects: Vec<ControlEffect>) -> Step {
        Step {
            applied,
            through: link.position(),
            checkpoint: if applied == 0 {
                None
            } else {
                link.checkpoint_or_none()
            },
            effects,
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
        let step = {
            let _applying = link.applying.lock().await;
            let events = blocking(|| link.follower.lock().expect("control follower").poll())
                .map_err(control_failed)?;
            let effects: Vec<ControlEffect> =
                events.iter().map(|e| self.apply_control(e)).collect();
            Step::taken(link, events.len() as u64, effects)
        };
        let applied = step.applied;
        self.finish_step(link, step).await?;
        Ok(applied)
    }

    /// Records events in the control log: `build` decides them against the
    /// live state once every event already in the log is applied, under
    /// the log's append lock, so what it checked still holds when they
    /// land. `Ok(None)`: `build` chose to record nothing.
    pub(crate) async fn record_control<T>(
        &self,
        build: impl FnOnce(&Shared) -> anyhow::Result<Option<(Vec<EventBody>, T)>>,
    ) -> Result<Option<(Vec<Event>, T)>, CommandError> {
        let link = self.link().expect("record_control is for cluster members");
        let (step, outcome) = {
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
                        Some((events, answer)) => {
                            built = Some((events.clone(), answer));
                            Ok(events)
                        }
                        None => Ok(Vec::new()),
                    }
                })
            });
            match appended {
                Ok(appended) => {
                    let seen = appended.seen.len() as u64;
                    let own = built.map(|(bodies, answer)| {
                        let events: Vec<Event> = bodies
                            .into_iter()
                            .zip(&appended.receipts)
                            .map(|(body, receipt)| Event {
                                seq: receipt.seq,
                                ts: receipt.ts,
                                body,
                            })
                            .collect();
                        for event in &events {
                            effects.push(self.apply_control(event));
                        }
                        (events, answer)
                    });
                    let step = seen + appended.receipts.len() as u64;
                    link.follower
                        .lock()
                        .expect("control follower")
                        .skip_to(position + step);
                    (Step::taken(link, step, effects), Ok(own))
                }
                Err(SharedAppendError::Refused(e)) => {
                    let seen = effects.len() as u64;
                    link.follower
                        .lock()
                        .expect("control follower")
                        .skip_to(position + seen);
                    (
                        Step::taken(link, seen, effects),
                        Err(CommandError::Invalid(e)),
                    )
                }
                Err(e) => return Err(control_failed(e)),
            }
        };
        self.finish_step(link, step).await?;
        outcome
    }

    /// After a step of applying control events, outside the applying lock
    /// (refusing held statements may itself record in the control log):
    /// the follow-ups, then the step recorded in this gateway's ledger.
    async fn finish_step(&self, link: &ControlLink, step: Step) -> Result<(), CommandError> {
        if step.applied == 0 {
            return Ok(());
        }
        for effect in step.effects {
            // Boxed: refusing held statements records through
            // `record_control`, which finishes its own step here.
            Box::pin(self.follow_up(effect)).await?;
        }
        let event = ControlApplied {
            gateway: link.gateway.clone(),
            through: step.through,
            applied: step.applied,
            checkpoint: step.checkpoint,
        };
        self.ledger.append(&event.into()).await?;
        Ok(())
    }

    // Approvals. In a cluster, requests and decisions are control events:
    // any gateway's approvers decide any request, exactly once, and the
    // gateway holding the statement learns the outcome from the log.
    // Alone, the desk records them in this gateway's ledger.

    /// Records approval events the desk builds against the projection.
    async fn record_desk(
        &self,
        build: impl FnOnce(&ApprovalDesk) -> Result<Vec<EventBody>, DeskError>,
    ) -> Result<(), DeskError> {
        let recorded = self
            .record_control(|shared| {
                build(&shared.approvals)
                    .map(|events| Some((events, ())))
                    .map_err(anyhow::Error::from)
            })
            .await;
        match recorded {
            Ok(_) => Ok(()),
            Err(CommandError::Invalid(e)) => Err(e
                .downcast::<DeskError>()
                .unwrap_or_else(|e| DeskError::Unrecorded(AppendError::Commit(format!("{e:#}"))))),
            Err(e) => Err(DeskError::Unrecorded(e.into())),
        }
    }

    /// Holds a statement for approval: the request is numbered and
    /// recorded; returns its number and where its outcome arrives.
    pub async fn hold_for_approval(
        &self,
        request: ApprovalRequested,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<Outcome>), AppendError> {
        if self.control.is_none() {
            return self.approvals.request(&self.ledger, request).await;
        }
        let mut id = None;
        self.record_desk(|desk| {
            let (n, events) = desk.request_events(request);
            id = Some(n);
            Ok(events)
        })
        .await
        .map_err(desk_append_error)?;
        let id = id.expect("the request was numbered");
        Ok((id, self.approvals.wait_for(id)))
    }

    /// An approver's approval of request `id` (see [`ApprovalDesk::approve`]).
    pub async fn approve_request(
        &self,
        id: u64,
        operator: &str,
        grant_until: Option<Nanos>,
    ) -> Result<Vote, DeskError> {
        if self.control.is_none() {
            return self
                .approvals
                .approve(&self.ledger, id, operator, grant_until)
                .await;
        }
        self.record_desk(|desk| desk.vote_event(id, operator, grant_until).map(|e| vec![e]))
            .await?;
        self.approvals.vote_outcome(id)
    }

    /// Refuses pending request `id` (see [`ApprovalDesk::deny`]).
    pub async fn deny_request(
        &self,
        id: u64,
        operator: Option<&str>,
        reason: &str,
    ) -> Result<(), DeskError> {
        if self.control.is_none() {
            return self
                .approvals
                .deny(&self.ledger, id, operator, reason)
                .await;
        }
        self.record_desk(|desk| desk.denial_event(id, operator, reason).map(|e| vec![e]))
            .await
    }

    /// Ends the grant request `id` left (see [`ApprovalDesk::revoke_grant`]).
    pub async fn revoke_grant(
        &self,
        id: u64,
        operator: &str,
        reason: &str,
        now: Nanos,
    ) -> Result<(), DeskError> {
        if self.control.is_none() {
            return self
                .approvals
                .revoke_grant(&self.ledger, id, operator, reason, now)
                .await;
        }
        self.record_desk(|desk| {
            desk.revocation_event(id, operator, reason, now)
                .map(|e| vec![e])
        })
        .await
    }

    /// Times request `id` out unless it was decided; the outcome its
    /// session acts on.
    pub async fn expire_request(&self, id: u64) -> Result<Outcome, AppendError> {
        if self.control.is_none() {
            return self.approvals.expire(&self.ledger, id).await;
        }
        self.record_desk(|desk| Ok(desk.expiry_event(id).into_iter().collect()))
            .await
            .map_err(desk_append_error)?;
        Ok(self.approvals.outcome(id))
    }

    /// Refuses, as the gateway, the pending requests this gateway holds
    /// that `which` picks; returns how many.
    pub async fn withdraw_where(
        &self,
        which: impl Fn(&Approval) -> bool,
        reason: &str,
    ) -> Result<usize, AppendError> {
        if self.control.is_none() {
            return self.approvals.deny_where(&self.ledger, which, reason).await;
        }
        let ids = self.approvals.pending_here(which);
        for id in &ids {
            match self
                .record_desk(|desk| desk.denial_event(*id, None, reason).map(|e| vec![e]))
                .await
            {
                Ok(()) | Err(DeskError::Vote(_) | DeskError::NoGrant(_)) => {}
                Err(DeskError::Unrecorded(e)) => return Err(e),
            }
        }
        Ok(ids.len())
    }

    /// Enrols this gateway in the control log with its ledger's key, unless
    /// it is enrolled already.
    pub async fn enrol(&self, events: &[Event]) -> Result<(), CommandError> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let enrolled = events
            .iter()
            .any(|e| matches!(&e.body, EventBody::GatewayEnrolled(g) if g.gateway == link.gateway));
        if enrolled {
            return Ok(());
        }
        let event = GatewayEnrolled {
            gateway: link.gateway.clone(),
            key: self.ledger.verifier_key().to_string(),
        };
        self.record_control(|_| Ok(Some((vec![event.into()], ()))))
            .await?;
        Ok(())
    }

    /// This gateway's newest signed checkpoint note, from its ledger.
    fn own_checkpoint(&self) -> Result<Option<(u64, String)>, LedgerError> {
        let path = self.ledger.path().to_owned();
        blocking(|| {
            Ok(gatehouse_ledger::LedgerReader::open(&path)?
                .latest_checkpoint()?
                .map(|c| (c.size, c.note)))
        })
    }

    /// Anchors this gateway's newest checkpoint in the control log when it
    /// grew and [`ANCHOR_EVERY`] has passed since the last anchor.
    pub async fn anchor_if_due(&self) -> Result<(), CommandError> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let (size, at) = *link.anchored.lock().expect("anchor");
        if at.elapsed() < ANCHOR_EVERY && size > 0 {
            return Ok(());
        }
        let Some((now_size, note)) = self.own_checkpoint().map_err(control_failed)? else {
            return Ok(());
        };
        if now_size <= size {
            return Ok(());
        }
        let event = GatewayAnchored {
            gateway: link.gateway.clone(),
            checkpoint: note,
        };
        self.record_control(|_| Ok(Some((vec![event.into()], ()))))
            .await?;
        *link.anchored.lock().expect("anchor") = (now_size, std::time::Instant::now());
        Ok(())
    }

    /// At shutdown, once this gateway's ledger is closed (its tail signed):
    /// anchors its final checkpoint, appended as is (nothing else is
    /// applied any more).
    pub fn anchor_final(&self) -> Result<(), String> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let Some((_, note)) = self.own_checkpoint().map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let event: EventBody = GatewayAnchored {
            gateway: link.gateway.clone(),
            checkpoint: note,
        }
        .into();
        link.log
            .append_with(link.position(), |_| Ok::<_, String>(vec![event]))
            .map(|_| ())
            .map_err(|e| e.to_string())
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
}

fn desk_append_error(e: DeskError) -> AppendError {
    match e {
        DeskError::Unrecorded(e) => e,
        other => AppendError::Commit(other.to_string()),
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
                Ok(_) => {
                    shared.control_read().await;
                    if let Err(e) = shared.anchor_if_due().await {
                        warn!("cannot anchor this gateway's checkpoint in the control log: {e}");
                    }
                }
                Err(e) => {
                    warn!("cannot apply the control log: {e}");
                    shared.control_unread(&e).await;
                }
            }
        }
    }))
}
