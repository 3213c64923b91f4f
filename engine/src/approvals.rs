//! Just-in-time approvals and the grants they leave behind, as a fold over
//! ledger events.
//!
//! A held statement is an `ApprovalRequested` event. Approvers add
//! `ApprovalGranted` events; once `quorum` distinct approvers have approved,
//! the request is granted. If every approver gave a duration, the identity
//! also gets a grant for the statement's fingerprint until the earliest of
//! those instants (an approver who approved "once" limits the grant to
//! once). `ApprovalDenied` and `ApprovalExpired` close a request for good.
//!
//! A grant ends before its time when what it was given to stops being
//! trusted: a block of the identity (unblocking does not bring it back),
//! the revocation of any of its credentials, or an `ApprovalDenied` of the
//! request that made it (`gatehouse grant revoke`).

use std::collections::BTreeMap;

use gatehouse_ledger::cbor::{Cbor, Dec, DecodeError, Enc};
use gatehouse_ledger::cbor_record;
use gatehouse_ledger::event::{EventBody, Nanos, Param, SessionId};
use gatehouse_ledger::Event;
use serde::{Deserialize, Serialize};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Held, waiting for approvers.
    Pending,
    /// Approved by a quorum; the statement was released.
    Granted,
    /// Refused by an approver, a block, or a gateway restart.
    Denied,
    /// Nobody decided in time.
    Expired,
}

impl ApprovalStatus {
    /// The status as shown to people and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Granted => "granted",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// A statement held for approval, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The session holding it.
    pub session: SessionId,
    /// The identity that asked.
    pub identity: String,
    /// The statement's query number within its session.
    pub query: u64,
    /// The statement.
    pub sql: String,
    /// Its bind parameters as approvers see them.
    pub params: Vec<ShownParam>,
    /// The rule that required approval.
    pub rule: String,
    /// Normalized SQL with literals removed: what a grant covers.
    pub fingerprint: String,
    /// Distinct approvers required.
    pub quorum: u64,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Distinct approvers so far, in order.
    pub approvers: Vec<String>,
    /// The grant durations they asked for (`None`: once).
    pub grant_untils: Vec<Option<Nanos>>,
    /// When it was requested.
    pub requested_at: Nanos,
    /// When the request times out.
    pub expires_at: Nanos,
    /// Who denied it, if an operator did.
    pub denied_by: Option<String>,
    /// Why it was denied.
    pub reason: Option<String>,
    /// In a cluster, the gateway holding the statement (`ApprovalHeld`).
    pub holder: Option<String>,
}

/// Permission for an identity to run one statement fingerprint until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The approval that created it.
    pub approval: u64,
    /// Until when (exclusive).
    pub until: Nanos,
    /// The approvers.
    pub approvers: Vec<String>,
}

/// Every approval request and every grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    /// Requests by id.
    pub requests: BTreeMap<u64, Approval>,
    /// Grants by identity, then fingerprint.
    pub grants: BTreeMap<String, BTreeMap<String, Grant>>,
}

/// What an `ApprovalGranted` event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Counted; more approvers are needed.
    Counted {
        /// Distinct approvers so far.
        have: u64,
        /// Distinct approvers required.
        need: u64,
    },
    /// The quorum is reached: the statement is released.
    Released {
        /// The grant created for later runs of the fingerprint, if any.
        grant_until: Option<Nanos>,
    },
}

/// Why an approver's vote cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// No such request.
    #[error("no approval request {0}: list them with `gatehouse approvals`")]
    Unknown(u64),
    /// Already decided.
    #[error("approval request {id} is already {status}")]
    Closed {
        /// The request.
        id: u64,
        /// Its status.
        status: &'static str,
    },
    /// The identity that asked tried to approve its own statement.
    #[error("{0} asked for this approval and cannot approve it; another approver must")]
    SelfApproval(String),
    /// The same approver again.
    #[error("{0} has already approved request {1}; it needs a different approver")]
    AlreadyApproved(String, u64),
}

impl Approvals {
    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        match &event.body {
            EventBody::ApprovalRequested(a) => {
                self.requests.insert(
                    a.approval,
                    Approval {
                        session: a.session,
                        identity: a.identity.clone(),
                        query: a.query,
                        sql: a.sql.clone(),
                        params: a.params.iter().map(ShownParam::of).collect(),
                        rule: a.rule.clone(),
                        fingerprint: a.fingerprint.clone(),
                        quorum: a.quorum.max(1),
                        status: ApprovalStatus::Pending,
                        approvers: Vec::new(),
                        grant_untils: Vec::new(),
                        requested_at: event.ts,
                        expires_at: a.expires_at,
                        denied_by: None,
                        reason: None,
                        holder: None,
                    },
                );
            }
            EventBody::ApprovalHeld(h) => {
                if let Some(a) = self.requests.get_mut(&h.approval) {
                    a.holder = Some(h.gateway.clone());
                }
            }
            EventBody::ApprovalGranted(g) => {
                let Some(a) = self.requests.get_mut(&g.approval) else {
                    return;
                };
                if a.status != ApprovalStatus::Pending || a.approvers.contains(&g.operator) {
                    return;
                }
                a.approvers.push(g.operator.clone());
                a.grant_untils.push(g.grant_until);
                if (a.approvers.len() as u64) < a.quorum {
                    return;
                }
                a.status = ApprovalStatus::Granted;
                if let Some(until) = grant_until(&a.grant_untils) {
                    let grant = Grant {
                        approval: g.approval,
                        until,
                        approvers: a.approvers.clone(),
                    };
                    let now = event.ts;
                    let grants = self.grants.entry(a.identity.clone()).or_default();
                    grants.retain(|_, g| g.until > now);
                    grants.insert(a.fingerprint.clone(), grant);
                }
            }
            EventBody::ApprovalDenied(d) => {
                let Some(a) = self.requests.get_mut(&d.approval) else {
                    return;
                };
                match a.status {
                    ApprovalStatus::Pending => {
                        a.status = ApprovalStatus::Denied;
                        a.denied_by = d.operator.clone();
                        a.reason = Some(d.reason.clone());
                    }
                    // A granted request denied afterwards: its grant is revoked.
                    ApprovalStatus::Granted => {
                        if let Some(grants) = self.grants.get_mut(&a.identity) {
                            grants.retain(|_, g| g.approval != d.approval);
                            if grants.is_empty() {
                                self.grants.remove(&a.identity);
                            }
                        }
                    }
                    ApprovalStatus::Denied | ApprovalStatus::Expired => {}
                }
            }
            EventBody::IdentityBlocked(b) => {
                self.grants.remove(&b.identity);
            }
            EventBody::CredentialRevoked(r) => {
                self.grants.remove(&r.identity);
            }
            EventBody::ApprovalExpired(e) => {
                if let Some(a) = self.requests.get_mut(&e.approval) {
                    if a.status == ApprovalStatus::Pending {
                        a.status = ApprovalStatus::Expired;
                    }
                }
            }
            _ => {}
        }
    }

    /// What an approval by `operator` would do, without doing it. The
    /// gateway checks this before it records the vote.
    pub fn check_vote(&self, id: u64, operator: &str) -> Result<(), VoteError> {
        let a = self.requests.get(&id).ok_or(VoteError::Unknown(id))?;
        if a.status != ApprovalStatus::Pending {
            return Err(VoteError::Closed {
                id,
                status: a.status.name(),
            });
        }
        if a.identity == operator {
            return Err(VoteError::SelfApproval(operator.to_owned()));
        }
        if a.approvers.iter().any(|o| o == operator) {
            return Err(VoteError::AlreadyApproved(operator.to_owned(), id));
        }
        Ok(())
    }

    /// The outcome of request `id` after its latest vote.
    pub fn vote_outcome(&self, id: u64) -> Option<Vote> {
        let a = self.requests.get(&id)?;
        Some(match a.status {
            ApprovalStatus::Granted => Vote::Released {
                grant_until: grant_until(&a.grant_untils),
            },
            _ => Vote::Counted {
                have: a.approvers.len() as u64,
                need: a.quorum,
            },
        })
    }

    /// The grant letting `identity` run `fingerprint` at `now`, if any.
    pub fn active_grant(&self, identity: &str, fingerprint: &str, now: Nanos) -> Option<&Grant> {
        self.grants
            .get(identity)?
            .get(fingerprint)
            .filter(|g| g.until > now)
    }

    /// Every grant in force at `now`: (identity, fingerprint, grant).
    pub fn active_grants(&self, now: Nanos) -> impl Iterator<Item = (&str, &str, &Grant)> {
        self.grants.iter().flat_map(move |(identity, grants)| {
            grants
                .iter()
                .filter(move |(_, g)| g.until > now)
                .map(move |(fingerprint, g)| (identity.as_str(), fingerprint.as_str(), g))
        })
    }

    /// The request whose grant is in force at `now`, for revoking it:
    /// `None` when request `id` left no grant or it has ended.
    pub fn grant_of(&self, id: u64, now: Nanos) -> Option<&Approval> {
        let a = self.requests.get(&id)?;
        self.active_grant(&a.identity, &a.fingerprint, now)
            .filter(|g| g.approval == id)
            .map(|_| a)
    }

    /// Requests still waiting for a decision, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (u64, &Approval)> {
        self.requests
            .iter()
            .filter(|(_, a)| a.status == ApprovalStatus::Pending)
            .map(|(id, a)| (*id, a))
    }

    /// The next unused request id.
    pub fn next_id(&self) -> u64 {
        self.requests.keys().next_back().map_or(1, |id| id + 1)
    }
}

/// A bind parameter as an approver reads it: a text-format value as sent;
/// a binary one in hex, since the event does not record its type (the
/// same bytes are an int4 or four characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownParam {
    /// Sent in binary format: `value` is hex.
    pub binary: bool,
    /// The value; `None` for SQL NULL.
    pub value: Option<String>,
}

impl ShownParam {
    /// The parameter as the client sent it.
    pub fn of(param: &Param) -> ShownParam {
        let text = match &param.value {
            Some(v) if param.format == 0 => std::str::from_utf8(&v.0).ok(),
            _ => None,
        };
        match (&param.value, text) {
            (None, _) => ShownParam {
                binary: param.format != 0,
                value: None,
            },
            (Some(_), Some(text)) => ShownParam {
                binary: false,
                value: Some(text.to_owned()),
            },
            (Some(v), None) => ShownParam {
                binary: true,
                value: Some(v.0.iter().map(|b| format!("{b:02x}")).collect()),
            },
        }
    }

    /// The value as one line of text: text as sent, binary as `\x` and
    /// hex; `None` for SQL NULL.
    pub fn text(&self) -> Option<String> {
        let value = self.value.as_ref()?;
        Some(if self.binary {
            format!("\\x{value}")
        } else {
            value.clone()
        })
    }
}

/// The grant a quorum leaves: the earliest end if every approver gave one.
fn grant_until(untils: &[Option<Nanos>]) -> Option<Nanos> {
    untils
        .iter()
        .try_fold(Nanos::MAX, |min, u| u.map(|u| min.min(u)))
        .filter(|_| !untils.is_empty())
}

// Snapshot encodings (crate::snapshot).

/// Statuses as codes 0 pending, 1 granted, 2 denied, 3 expired.
impl Cbor for ApprovalStatus {
    fn encode(&self, enc: &mut Enc) {
        enc.uint(match self {
            ApprovalStatus::Pending => 0,
            ApprovalStatus::Granted => 1,
            ApprovalStatus::Denied => 2,
            ApprovalStatus::Expired => 3,
        });
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let offset = dec.offset();
        Ok(match dec.uint()? {
            0 => ApprovalStatus::Pending,
            1 => ApprovalStatus::Granted,
            2 => ApprovalStatus::Denied,
            3 => ApprovalStatus::Expired,
            _ => {
                return Err(DecodeError::Unexpected {
                    offset,
                    expected: "an approval status code (0 to 3)",
                })
            }
        })
    }
}

cbor_record!(Approval {
    0 => session,
    1 => identity,
    2 => query,
    3 => sql,
    4 => rule,
    5 => fingerprint,
    6 => quorum,
    7 => status,
    8 => approvers,
    9 => grant_untils,
    10 => requested_at,
    11 => expires_at,
    12 => denied_by,
    13 => reason,
    14 => params,
    15 => holder,
});

cbor_record!(ShownParam {
    0 => binary,
    1 => value,
});

cbor_record!(Grant {
    0 => approval,
    1 => until,
    2 => approvers,
});

cbor_record!(Approvals {
    0 => requests,
    1 => grants,
});

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::cbor::Bytes;
    use gatehouse_ledger::event::{
        ApprovalDenied, ApprovalExpired, ApprovalGranted, ApprovalRequested, CredentialRevoked,
        IdentityBlocked, IdentityUnblocked, Param, StatementClass,
    };

    fn requested(id: u64, quorum: u64) -> EventBody {
        ApprovalRequested {
            approval: id,
            session: 7,
            identity: "agent-x".into(),
            query: 3,
            sql: "DELETE FROM orders WHERE id = $1".into(),
            params: vec![
                Param {
                    format: 0,
                    value: Some(Bytes(b"5".to_vec())),
                },
                Param {
                    format: 1,
                    value: Some(Bytes(vec![0, 0, 0, 5])),
                },
                Param {
                    format: 0,
                    value: None,
                },
            ],
            class: StatementClass::Write,
            rule: "needs-approval".into(),
            binding: Bytes(vec![1; 32]),
            quorum,
            expires_at: 5_000,
            fingerprint: "delete from orders where id = ?".into(),
        }
        .into()
    }

    fn granted(id: u64, operator: &str, until: Option<Nanos>) -> EventBody {
        ApprovalGranted {
            approval: id,
            operator: operator.into(),
            grant_until: until,
            session: 7,
            identity: "agent-x".into(),
        }
        .into()
    }

    fn fold(bodies: Vec<EventBody>) -> Approvals {
        let mut a = Approvals::default();
        for (i, body) in bodies.into_iter().enumerate() {
            a.apply(&Event {
                seq: i as u64,
                ts: 1_000 + i as u64,
                body,
            });
        }
        a
    }

    #[test]
    fn quorum_needs_distinct_approvers() {
        let a = fold(vec![
            requested(1, 2),
            granted(1, "alice", None),
            granted(1, "alice", None),
        ]);
        assert_eq!(a.requests[&1].status, ApprovalStatus::Pending);
        assert_eq!(
            a.requests[&1].params,
            [
                ShownParam {
                    binary: false,
                    value: Some("5".into())
                },
                ShownParam {
                    binary: true,
                    value: Some("00000005".into())
                },
                ShownParam {
                    binary: false,
                    value: None
                },
            ],
            "approvers see the values"
        );
        assert_eq!(a.vote_outcome(1), Some(Vote::Counted { have: 1, need: 2 }));
        assert_eq!(
            a.check_vote(1, "alice"),
            Err(VoteError::AlreadyApproved("alice".into(), 1))
        );
        assert_eq!(a.check_vote(1, "bob"), Ok(()));
        let a = fold(vec![
            requested(1, 2),
            granted(1, "alice", None),
            granted(1, "bob", None),
        ]);
        assert_eq!(a.requests[&1].status, ApprovalStatus::Granted);
        assert_eq!(
            a.vote_outcome(1),
            Some(Vote::Released { grant_until: None })
        );
        assert!(a.grants.is_empty(), "approved once leaves no grant");
    }

    #[test]
    fn a_grant_lasts_until_the_earliest_duration_and_expires_by_itself() {
        let a = fold(vec![
            requested(1, 2),
            granted(1, "alice", Some(90_000)),
            granted(1, "bob", Some(60_000)),
        ]);
        let fp = "delete from orders where id = ?";
        assert_eq!(a.active_grant("agent-x", fp, 59_999).unwrap().until, 60_000);
        assert!(a.active_grant("agent-x", fp, 60_000).is_none());
        assert!(a.active_grant("agent-y", fp, 2_000).is_none());
        assert!(a
            .active_grant("agent-x", "delete from customers", 2_000)
            .is_none());
        // One approver approving once limits the quorum's grant to once.
        let a = fold(vec![
            requested(1, 2),
            granted(1, "alice", Some(90_000)),
            granted(1, "bob", None),
        ]);
        assert!(a.grants.is_empty());
    }

    #[test]
    fn self_approval_and_closed_requests_are_refused() {
        let a = fold(vec![requested(1, 1)]);
        assert_eq!(
            a.check_vote(1, "agent-x"),
            Err(VoteError::SelfApproval("agent-x".into()))
        );
        assert_eq!(a.check_vote(2, "alice"), Err(VoteError::Unknown(2)));
        let a = fold(vec![
            requested(1, 1),
            ApprovalDenied {
                approval: 1,
                operator: Some("carol".into()),
                reason: "no".into(),
                session: 7,
                identity: "agent-x".into(),
            }
            .into(),
            granted(1, "alice", Some(9_000)),
        ]);
        assert_eq!(a.requests[&1].status, ApprovalStatus::Denied);
        assert_eq!(a.requests[&1].denied_by.as_deref(), Some("carol"));
        assert!(
            a.grants.is_empty(),
            "a vote after the denial changes nothing"
        );
        assert!(matches!(
            a.check_vote(1, "alice"),
            Err(VoteError::Closed { .. })
        ));
        let a = fold(vec![
            requested(1, 1),
            requested(2, 1),
            ApprovalExpired {
                approval: 1,
                session: 7,
                identity: "agent-x".into(),
            }
            .into(),
        ]);
        assert_eq!(a.requests[&1].status, ApprovalStatus::Expired);
        assert_eq!(a.pending().map(|(id, _)| id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(a.next_id(), 3);
    }

    #[test]
    fn a_block_a_credential_revocation_or_a_grant_revocation_ends_a_grant() {
        let fp = "delete from orders where id = ?";
        let with_grant = || {
            vec![
                requested(1, 1),
                granted(1, "alice", Some(1_000_000)),
                requested(2, 1),
            ]
        };
        let a = fold(with_grant());
        assert!(a.active_grant("agent-x", fp, 2_000).is_some());
        assert_eq!(
            a.grant_of(1, 2_000).map(|r| r.identity.as_str()),
            Some("agent-x")
        );
        assert!(a.grant_of(2, 2_000).is_none(), "request 2 left no grant");
        assert_eq!(a.active_grants(2_000).count(), 1);

        // Blocked, then unblocked: the grant stays gone.
        let mut events = with_grant();
        events.push(
            IdentityBlocked {
                identity: "agent-x".into(),
                operator: "rita".into(),
                reason: "incident".into(),
                trigger: None,
            }
            .into(),
        );
        events.push(
            IdentityUnblocked {
                identity: "agent-x".into(),
                operator: "rita".into(),
                reason: Some("cleared".into()),
            }
            .into(),
        );
        let a = fold(events);
        assert!(a.active_grant("agent-x", fp, 2_000).is_none());

        // Any of its credentials revoked.
        let mut events = with_grant();
        events.push(
            CredentialRevoked {
                credential: "cred_1".into(),
                identity: "agent-x".into(),
                operator: "ada".into(),
                reason: "leaked".into(),
            }
            .into(),
        );
        assert!(fold(events).active_grant("agent-x", fp, 2_000).is_none());

        // The grant itself revoked: a denial of the granted request.
        let mut events = with_grant();
        events.push(
            ApprovalDenied {
                approval: 1,
                operator: Some("bob".into()),
                reason: "no longer needed".into(),
                session: 7,
                identity: "agent-x".into(),
            }
            .into(),
        );
        let a = fold(events);
        assert!(a.active_grant("agent-x", fp, 2_000).is_none());
        assert_eq!(
            a.requests[&1].status,
            ApprovalStatus::Granted,
            "the statement did run"
        );
        assert!(a.grants.is_empty());
    }
}
