//! The approval desk: statements held for a human, and the approvers'
//! decisions that release or refuse them.
//!
//! The desk's state is the [`Approvals`] projection, updated with exactly
//! the events the desk appends, plus one waiting channel per held
//! statement. Every decision (vote, denial, expiry, abandonment) happens
//! under one async lock, around its append: a request can be decided once,
//! and a decision that cannot be recorded is not taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_engine::approvals::{Approval, ApprovalStatus, Approvals, Grant, Vote, VoteError};
use gatehouse_ledger::event::{
    ApprovalDenied, ApprovalExpired, ApprovalGranted, ApprovalRequested, EventBody, Nanos,
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
    /// Told of every event the desk records.
    webhooks: Option<Webhooks>,
    /// Counts how requests end.
    metrics: Arc<Metrics>,
    /// The sequence number of the newest event the desk recorded: the
    /// console's live inbox follows it.
    changed: tokio::sync::watch::Sender<u64>,
}

impl ApprovalDesk {
    /// A desk starting from the projection rebuilt from the ledger,
    /// notifying `webhooks` of what it records.
    pub fn new(state: Approvals, webhooks: Option<Webhooks>, metrics: Arc<Metrics>) -> Self {
        ApprovalDesk {
            decide: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            waiting: Mutex::new(HashMap::new()),
            webhooks,
            metrics,
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// Follows the desk's changes: the sequence number of the newest
    /// request or decision it recorded.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// At shutdown, before the ledger closes: see [`Webhooks::finish`].
    pub fn finish_webhooks(&self, grace: std::time::Duration) {
        if let Some(w) = &self.webhooks {
            w.finish(grace);
        }
    }

    async fn append(&self, ledger: &Ledger, body: EventBody) -> Result<(), AppendError> {
        let receipt = ledger.append(&body).await?;
        let event = Event {
            seq: receipt.seq,
            ts: receipt.ts,
            body,
        };
        self.state.lock().expect("approvals lock").apply(&event);
        if let Some(w) = &self.webhooks {
            w.notify(&event);
        }
        self.changed.send_replace(receipt.seq);
        Ok(())
    }

    fn wake(&self, id: u64, outcome: Outcome) {
        if let Some(tx) = self.waiting.lock().expect("waiting lock").remove(&id) {
            let _ = tx.send(outcome);
        }
    }

    /// Folds in an event recorded elsewhere that ends grants (a block of an
    /// identity, a revocation of one of its credentials), so no statement
    /// runs on such a grant after the event commits.
    pub fn observe(&self, event: &Event) {
        self.state.lock().expect("approvals lock").apply(event);
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
        let (session, identity) = {
            let state = self.state.lock().expect("approvals lock");
            let a = state.grant_of(id, now).ok_or(DeskError::NoGrant(id))?;
            (a.session, a.identity.clone())
        };
        let event = ApprovalDenied {
            approval: id,
            operator: Some(operator.to_owned()),
            reason: reason.to_owned(),
            session,
            identity,
        };
        self.append(ledger, event.into()).await?;
        Ok(())
    }

    /// Records a held statement (the request's `approval` number is
    /// assigned here) and returns its id and the channel its outcome
    /// arrives on.
    pub async fn request(
        &self,
        ledger: &Ledger,
        mut request: ApprovalRequested,
    ) -> Result<(u64, oneshot::Receiver<Outcome>), AppendError> {
        let _decide = self.decide.lock().await;
        let id = self.state.lock().expect("approvals lock").next_id();
        request.approval = id;
        self.append(ledger, request.into()).await?;
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting lock").insert(id, tx);
        Ok((id, rx))
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
        let (session, identity) = {
            let state = self.state.lock().expect("approvals lock");
            state.check_vote(id, operator)?;
            let a = &state.requests[&id];
            (a.session, a.identity.clone())
        };
        let event = ApprovalGranted {
            approval: id,
            operator: operator.to_owned(),
            grant_until,
            session,
            identity: identity.clone(),
        };
        self.append(ledger, event.into()).await?;
        let vote = self
            .state
            .lock()
            .expect("approvals lock")
            .vote_outcome(id)
            .ok_or(VoteError::Unknown(id))?;
        info!(
            approval = id,
            session, identity, operator, "approval vote recorded"
        );
        if matches!(vote, Vote::Released { .. }) {
            info!(approval = id, "approval granted: the statement runs");
            self.metrics.approval_ended(ApprovalOutcome::Granted);
            self.wake(id, Outcome::Approved);
        }
        Ok(vote)
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
        self.deny_locked(ledger, id, operator, reason).await
    }

    async fn deny_locked(
        &self,
        ledger: &Ledger,
        id: u64,
        operator: Option<&str>,
        reason: &str,
    ) -> Result<(), DeskError> {
        let (session, identity) = {
            let state = self.state.lock().expect("approvals lock");
            let a = state.requests.get(&id).ok_or(VoteError::Unknown(id))?;
            if a.status != ApprovalStatus::Pending {
                return Err(VoteError::Closed {
                    id,
                    status: a.status.name(),
                }
                .into());
            }
            (a.session, a.identity.clone())
        };
        let event = ApprovalDenied {
            approval: id,
            operator: operator.map(str::to_owned),
            reason: reason.to_owned(),
            session,
            identity: identity.clone(),
        };
        self.append(ledger, event.into()).await?;
        info!(
            approval = id,
            session,
            identity,
            operator = operator.unwrap_or("gatehouse"),
            "approval denied: {reason}"
        );
        self.metrics.approval_ended(match operator {
            Some(_) => ApprovalOutcome::Denied,
            None => ApprovalOutcome::Withdrawn,
        });
        self.wake(
            id,
            match operator {
                Some(o) => Outcome::Refused(format!("denied by {o}: {reason}")),
                None => Outcome::Withdrawn(reason.to_owned()),
            },
        );
        Ok(())
    }

    /// Times a request out, unless it was decided meanwhile. Returns the
    /// outcome the waiting session should act on.
    pub async fn expire(&self, ledger: &Ledger, id: u64) -> Result<Outcome, AppendError> {
        let _decide = self.decide.lock().await;
        let pending = {
            let state = self.state.lock().expect("approvals lock");
            state.requests.get(&id).and_then(|a| {
                (a.status == ApprovalStatus::Pending).then(|| (a.session, a.identity.clone()))
            })
        };
        let Some((session, identity)) = pending else {
            // Decided while the timer fired: the decision's outcome is
            // already on its way (or was just taken).
            let status = self
                .state
                .lock()
                .expect("approvals lock")
                .requests
                .get(&id)
                .map(|a| a.status);
            return Ok(match status {
                Some(ApprovalStatus::Granted) => Outcome::Approved,
                _ => Outcome::Refused("the request was decided while it timed out".into()),
            });
        };
        let event = ApprovalExpired {
            approval: id,
            session,
            identity,
        };
        self.append(ledger, event.into()).await?;
        info!(
            approval = id,
            session, "approval timed out: the statement did not run"
        );
        self.metrics.approval_ended(ApprovalOutcome::Expired);
        self.waiting.lock().expect("waiting lock").remove(&id);
        Ok(Outcome::Expired)
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
        let ids: Vec<u64> = self
            .state
            .lock()
            .expect("approvals lock")
            .pending()
            .filter(|(_, a)| which(a))
            .map(|(id, _)| id)
            .collect();
        for id in &ids {
            match self.deny_locked(ledger, *id, None, reason).await {
                Ok(()) | Err(DeskError::Vote(_) | DeskError::NoGrant(_)) => {}
                Err(DeskError::Unrecorded(e)) => return Err(e),
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
