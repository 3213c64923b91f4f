//! The approval desk: statements held for a human, and the approvers'
//! decisions that release or refuse them.
//!
//! The desk's state is the [`Approvals`] projection, updated with exactly
//! the events the desk appends, plus one waiting channel per held
//! statement. Every decision (vote, denial, expiry, abandonment) happens
//! under one async lock, around its append: a request can be decided once,
//! and a decision that cannot be recorded is not taken.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use gatehouse_engine::approvals::{Approval, ApprovalStatus, Approvals, Grant, Vote, VoteError};
use gatehouse_ledger::event::{
    ApprovalDenied, ApprovalExpired, ApprovalGranted, ApprovalHeld, ApprovalRequested, EventBody,
    Nanos,
};
use gatehouse_ledger::{AppendError, Event, Ledger};
use tokio::sync::oneshot;
use tracing::info;

use crate::gateway::control::metrics::{ApprovalOutcome, Metrics};
use crate::gateway::control::webhooks::Webhooks;

/// What became of a held statement (defined with the session that waits
/// for it).
pub use crate::gateway::relay::session::Approval as Outcome;

/// Why an approver's action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// The projection refused the vote.
    #[error(transparent)]
    Vote(#[from] VoteError),
    /// A grant revocation named a request that left no grant in force.
    #[error("approval request {0} left no grant in force: list grants with `gatehouse grants`")]
    NoGrant(u64),
    /// The decision could not be recorded, so it was not taken.
    #[error("the decision could not be recorded, so it was not taken: {0}")]
    Unrecorded(#[from] AppendError),
}

/// Held statements and their approvals.
pub struct ApprovalDesk {
    /// Serializes decisions (held across their appends).
    decide: tokio::sync::Mutex<()>,
    /// The projection; read synchronously on the hot path for grants.
    state: Mutex<Approvals>,
    /// The sessions waiting, by request id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// In a cluster: this gateway's name, and the requests it holds (the
    /// others' are in the projection too, from the control log). Alone,
    /// every request is this gateway's.
    gateway: std::sync::OnceLock<String>,
    mine: Mutex<HashSet<u64>>,
    /// Told of every event of a request this gateway holds.
    webhooks: Option<Webhooks>,
    /// Counts how requests end.
    metrics: Arc<Metrics>,
    /// Increases with each request or decision applied: the console's live
    /// inbox follows it.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The approval request an event is about, if it is one of theirs.
fn approval_of(body: &EventBody) -> Option<u64> {
    match body {
        EventBody::ApprovalRequested(a) => Some(a.approval),
        EventBody::ApprovalGranted(g) => Some(g.approval),
        EventBody::ApprovalDenied(d) => Some(d.approval),
        EventBody::ApprovalExpired(e) => Some(e.approval),
        EventBody::ApprovalHeld(h) => Some(h.approval),
        _ => None,
    }
}

impl ApprovalDesk {
    /// A desk starting from the projection rebuilt from the ledger,
    /// notifying `webhooks` of what it records.
    pub fn new(state: Approvals, webhooks: Option<Webhooks>, metrics: Arc<Metrics>) -> Self {
        ApprovalDesk {
            decide: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            waiting: Mutex::new(HashMap::new()),
            gateway: std::sync::OnceLock::new(),
            mine: Mutex::new(HashSet::new()),
            webhooks,
            metrics,
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// Makes this the desk of gateway `name` in a cluster: it then holds
    /// only the requests it makes ([`ApprovalDesk::request_events`]) and
    /// those the control log says it holds.
    pub fn join_cluster(&self, name: &str) {
        let _ = self.gateway.set(name.to_owned());
    }

    /// Whether this gateway holds request `id` (alone: every request).
    pub fn holds(&self, id: u64) -> bool {
        let Some(me) = self.gateway.get() else {
            return true;
        };
        self.mine.lock().expect("mine lock").contains(&id)
            || self
                .state
                .lock()
                .expect("approvals lock")
                .requests
                .get(&id)
                .is_some_and(|a| a.holder.as_ref() == Some(me))
    }

    /// Follows the desk's changes: a number that increases with each
    /// request or decision applied.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// At shutdown, before the ledger closes: see [`Webhooks::finish`].
    pub fn finish_webhooks(&self, grace: std::time::Duration) {
        if let Some(w) = &self.webhooks {
            w.finish(grace);
        }
    }

    /// Records `body` in this gateway's ledger, then applies it.
    async fn record(&self, ledger: &Ledger, body: EventBody) -> Result<(), AppendError> {
        let receipt = ledger.append(&body).await?;
        self.observe(&Event {
            seq: receipt.seq,
            ts: receipt.ts,
            body,
        });
        Ok(())
    }

    fn wake(&self, id: u64, outcome: Outcome) {
        if let Some(tx) = self.waiting.lock().expect("waiting lock").remove(&id) {
            let _ = tx.send(outcome);
        }
    }

    /// Applies a recorded event: one this desk recorded, or one applied
    /// from elsewhere (a block or a revocation ends grants; in a cluster,
    /// every approval event of the control log). For a request this
    /// gateway holds, webhooks are told, and a final decision releases or
    /// refuses the waiting session and is counted.
    pub fn observe(&self, event: &Event) {
        let id = approval_of(&event.body);
        let was_pending = id.is_some_and(|id| {
            self.state
                .lock()
                .expect("approvals lock")
                .requests
                .get(&id)
                .is_some_and(|a| a.status == ApprovalStatus::Pending)
        });
        self.state.lock().expect("approvals lock").apply(event);
        let Some(id) = id else { return };
        self.changed
            .send_modify(|n| *n = if event.seq > *n { event.seq } else { *n + 1 });
        if !self.holds(id) {
            return;
        }
        if let Some(w) = &self.webhooks {
            w.notify(event);
        }
        if !was_pending {
            return;
        }
        match &event.body {
            EventBody::ApprovalGranted(g) => {
                let vote = self.state.lock().expect("approvals lock").vote_outcome(id);
                info!(
                    approval = id,
                    session = g.session,
                    identity = g.identity,
                    operator = g.operator,
                    "approval vote recorded"
                );
                if matches!(vote, Some(Vote::Released { .. })) {
                    info!(approval = id, "approval granted: the statement runs");
                    self.metrics.approval_ended(ApprovalOutcome::Granted);
                    self.wake(id, Outcome::Approved);
                }
            }
            EventBody::ApprovalDenied(d) => {
                info!(
                    approval = id,
                    session = d.session,
                    identity = d.identity,
                    operator = d.operator.as_deref().unwrap_or("gatehouse"),
                    "approval denied: {}",
                    d.reason
                );
                self.metrics.approval_ended(match d.operator {
                    Some(_) => ApprovalOutcome::Denied,
                    None => ApprovalOutcome::Withdrawn,
                });
                self.wake(
                    id,
                    match &d.operator {
                        Some(o) => Outcome::Refused(format!("denied by {o}: {}", d.reason)),
                        None => Outcome::Withdrawn(d.reason.clone()),
                    },
                );
            }
            EventBody::ApprovalExpired(e) => {
                info!(
                    approval = id,
                    session = e.session,
                    "approval timed out: the statement did not run"
                );
                self.metrics.approval_ended(ApprovalOutcome::Expired);
                self.waiting.lock().expect("waiting lock").remove(&id);
            }
            _ => {}
        }
    }

    /// Every grant in force at `now`: (approval, identity, fingerprint,
    /// until, approvers), oldest request first.
    pub fn grants(&self, now: Nanos) -> Vec<(u64, String, String, Nanos, Vec<String>)> {
        let state = self.state.lock().expect("approvals lock");
        let mut grants: Vec<_> = state
            .active_grants(now)
            .map(|(identity, fingerprint, g)| {
                (
                    g.approval,
                    identity.to_owned(),
                    fingerprint.to_owned(),
                    g.until,
                    g.approvers.clone(),
                )
            })
            .collect();
        grants.sort_by_key(|g| g.0);
        grants
    }

    // Each decision is built against the projection as it stands (in a
    // cluster, caught up under the control log's lock), then recorded,
    // then applied by `observe`.

    /// The event ending the grant request `id` left: a denial of the
    /// granted request.
    pub fn revocation_event(
        &self,
        id: u64,
        operator: &str,
        reason: &str,
        now: Nanos,
    ) -> Result<EventBody, DeskError> {
        let state = self.state.lock().expect("approvals lock");
        let a = state.grant_of(id, now).ok_or(DeskError::NoGrant(id))?;
        Ok(ApprovalDenied {
            approval: id,
            operator: Some(operator.to_owned()),
            reason: reason.to_owned(),
            session: a.session,
            identity: a.identity.clone(),
        }
        .into())
    }

    /// The events of a new request: it is numbered after every request in
    /// the projection; in a cluster it is marked as this gateway's.
    pub fn request_events(&self, mut request: ApprovalRequested) -> (u64, Vec<EventBody>) {
        let id = self.state.lock().expect("approvals lock").next_id();
        request.approval = id;
        let mut events = vec![EventBody::from(request)];
        if let Some(me) = self.gateway.get() {
            self.mine.lock().expect("mine lock").insert(id);
            events.push(
                ApprovalHeld {
                    approval: id,
                    gateway: me.clone(),
                }
                .into(),
            );
        }
        (id, events)
    }

    /// The event of `operator`'s approval of request `id`.
    pub fn vote_event(
        &self,
        id: u64,
        operator: &str,
        grant_until: Option<Nanos>,
    ) -> Result<EventBody, DeskError> {
        let state = self.state.lock().expect("approvals lock");
        state.check_vote(id, operator)?;
        let a = &state.requests[&id];
        Ok(ApprovalGranted {
            approval: id,
            operator: operator.to_owned(),
            grant_until,
            session: a.session,
            identity: a.identity.clone(),
        }
        .into())
    }

    /// The event refusing pending request `id`.
    pub fn denial_event(
        &self,
        id: u64,
        operator: Option<&str>,
        reason: &str,
    ) -> Result<EventBody, DeskError> {
        let state = self.state.lock().expect("approvals lock");
        let a = state.requests.get(&id).ok_or(VoteError::Unknown(id))?;
        if a.status != ApprovalStatus::Pending {
            return Err(VoteError::Closed {
                id,
                status: a.status.name(),
            }
            .into());
        }
        Ok(ApprovalDenied {
            approval: id,
            operator: operator.map(str::to_owned),
            reason: reason.to_owned(),
            session: a.session,
            identity: a.identity.clone(),
        }
        .into())
    }

    /// The event timing request `id` out, unless it was decided.
    pub fn expiry_event(&self, id: u64) -> Option<EventBody> {
        let state = self.state.lock().expect("approvals lock");
        let a = state.requests.get(&id)?;
        (a.status == ApprovalStatus::Pending).then(|| {
            ApprovalExpired {
                approval: id,
                session: a.session,
                identity: a.identity.clone(),
            }
            .into()
        })
    }

    /// What the session waiting on request `id` should do once it was
    /// decided (or timed out).
    pub fn outcome(&self, id: u64) -> Outcome {
        let state = self.state.lock().expect("approvals lock");
        match state.requests.get(&id).map(|a| (a.status, a)) {
            Some((ApprovalStatus::Granted, _)) => Outcome::Approved,
            Some((ApprovalStatus::Expired, _)) => Outcome::Expired,
            Some((ApprovalStatus::Denied, a)) => match &a.denied_by {
                Some(o) => Outcome::Refused(format!(
                    "denied by {o}: {}",
                    a.reason.as_deref().unwrap_or("")
                )),
                None => Outcome::Withdrawn(a.reason.clone().unwrap_or_default()),
            },
            _ => Outcome::Refused("the request was decided while it timed out".into()),
        }
    }

    /// How the vote count on request `id` stands.
    pub fn vote_outcome(&self, id: u64) -> Result<Vote, DeskError> {
        self.state
            .lock()
            .expect("approvals lock")
            .vote_outcome(id)
            .ok_or_else(|| VoteError::Unknown(id).into())
    }

    /// A channel for the outcome of request `id`, which this gateway holds:
    /// answered at once if the request was decided already.
    pub fn wait_for(&self, id: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let pending = self
            .state
            .lock()
            .expect("approvals lock")
            .requests
            .get(&id)
            .is_some_and(|a| a.status == ApprovalStatus::Pending);
        if pending {
            self.waiting.lock().expect("waiting lock").insert(id, tx);
        } else {
            let _ = tx.send(self.outcome(id));
        }
        rx
    }

    /// The pending requests this gateway holds that `which` picks.
    pub fn pending_here(&self, which: impl Fn(&Approval) -> bool) -> Vec<u64> {
        let ids: Vec<u64> = self
            .state
            .lock()
            .expect("approvals lock")
            .pending()
            .filter(|(_, a)| which(a))
            .map(|(id, _)| id)
            .collect();
        ids.into_iter().filter(|id| self.holds(*id)).collect()
    }

    // This gateway's own ledger (no cluster): decisions serialized by the
    // desk, recorded, applied.

    /// Ends the grant request `id` left, before its time: recorded as a
    /// denial of the granted request, by `operator`, with `reason`.
    pub async fn revoke_grant(
        &self,
        ledger: &Ledger,
        id: u64,
        operator: &str,
        reason: &str,
        now: Nanos,
    ) -> Result<(), DeskError> {
        let _decide = self.decide.lock().await;
        let body = self.revocation_event(id, operator, reason, now)?;
        self.record(ledger, body).await?;
        Ok(())
    }

    /// Records a held statement (the request's `approval` number is
    /// assigned here) and returns its id and the channel its outcome
    /// arrives on.
    pub async fn request(
        &self,
        ledger: &Ledger,
        request: ApprovalRequested,
    ) -> Result<(u64, oneshot::Receiver<Outcome>), AppendError> {
        let _decide = self.decide.lock().await;
        let (id, events) = self.request_events(request);
        for body in events {
            self.record(ledger, body).await?;
        }
        Ok((id, self.wait_for(id)))
    }

    /// An approver's approval; `grant_until` asks for a grant of the
    /// statement's fingerprint until then.
    pub async fn approve(
        &self,
        ledger: &Ledger,
        id: u64,
        operator: &str,
        grant_until: Option<Nanos>,
    ) -> Result<Vote, DeskError> {
        let _decide = self.decide.lock().await;
        let body = self.vote_event(id, operator, grant_until)?;
        self.record(ledger, body).await?;
        self.vote_outcome(id)
    }

    /// Refuses a pending request. `operator` is `None` when the gateway
    /// refuses it itself (a block, the session's end, a restart).
    pub async fn deny(
        &self,
        ledger: &Ledger,
        id: u64,
        operator: Option<&str>,
        reason: &str,
    ) -> Result<(), DeskError> {
        let _decide = self.decide.lock().await;
        let body = self.denial_event(id, operator, reason)?;
        self.record(ledger, body).await?;
        Ok(())
    }

    /// Times a request out, unless it was decided meanwhile. Returns the
    /// outcome the waiting session should act on.
    pub async fn expire(&self, ledger: &Ledger, id: u64) -> Result<Outcome, AppendError> {
        let _decide = self.decide.lock().await;
        if let Some(body) = self.expiry_event(id) {
            self.record(ledger, body).await?;
        }
        Ok(self.outcome(id))
    }

    /// Denies every pending request matching `which` (the gateway's own
    /// decision); returns how many were denied.
    pub async fn deny_where(
        &self,
        ledger: &Ledger,
        which: impl Fn(&Approval) -> bool,
        reason: &str,
    ) -> Result<usize, AppendError> {
        let _decide = self.decide.lock().await;
        let ids = self.pending_here(which);
        for id in &ids {
            match self.denial_event(*id, None, reason) {
                Ok(body) => self.record(ledger, body).await?,
                Err(_) => continue,
            }
        }
        Ok(ids.len())
    }

    /// The grant letting `identity` run `fingerprint` now, if any.
    pub fn active_grant(&self, identity: &str, fingerprint: &str, now: Nanos) -> Option<Grant> {
        self.state
            .lock()
            .expect("approvals lock")
            .active_grant(identity, fingerprint, now)
            .cloned()
    }

    /// One request as it stands.
    pub fn get(&self, id: u64) -> Option<Approval> {
        self.state
            .lock()
            .expect("approvals lock")
            .requests
            .get(&id)
            .cloned()
    }

    /// The requests numbered after `id`, oldest first (numbers increase
    /// with time, so this is what was asked since `id`).
    pub fn newer_than(&self, id: u64) -> Vec<(u64, Approval)> {
        let state = self.state.lock().expect("approvals lock");
        state
            .requests
            .range(id.saturating_add(1)..)
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    }

    /// The newest request's number (0 before the first).
    pub fn newest(&self) -> u64 {
        let state = self.state.lock().expect("approvals lock");
        state.requests.keys().next_back().copied().unwrap_or(0)
    }

    /// Every request, optionally only the pending ones.
    pub fn list(&self, pending_only: bool) -> Vec<(u64, Approval)> {
        let state = self.state.lock().expect("approvals lock");
        state
            .requests
            .iter()
            .filter(|(_, a)| !pending_only || a.status == ApprovalStatus::Pending)
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    }
}
