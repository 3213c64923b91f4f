//! The gateway's state as one fold over ledger events.
//!
//! There is no other store: at start-up the gateway replays the ledger
//! through [`GatewayState::apply`], and every later change is an event
//! folded in the same way. Folding a prefix of the ledger gives the state
//! at that instant (`gatehouse state --at`).

use std::collections::BTreeMap;

use gatehouse_ledger::cbor::DecodeError;
use gatehouse_ledger::cbor_record;
use gatehouse_ledger::event::{EventBody, EventKind, Nanos, RecordHead, SessionId};
use gatehouse_ledger::Event;
use serde::Serialize;

use crate::approvals::Approvals;
use crate::identities::Identities;
use crate::operators::Operators;

/// The policy in force and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyState {
    /// The policy file as applied.
    pub source: String,
    /// Who applied it.
    pub operator: String,
    /// The event that applied it.
    pub seq: u64,
    /// When.
    pub ts: Nanos,
}

/// A block on an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Who blocked it (an operator, or the gateway for automatic containment).
    pub operator: String,
    /// Why.
    pub reason: String,
    /// The automatic trigger, if no human did it.
    pub trigger: Option<String>,
    /// The event that blocked it.
    pub seq: u64,
    /// When.
    pub ts: Nanos,
}

/// An open session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenSession {
    /// The identity that logged in.
    pub identity: String,
    /// The upstream target.
    pub target: String,
    /// The client's address.
    pub client_addr: String,
    /// The client's application_name.
    pub application_name: Option<String>,
    /// The credential used.
    pub credential: Option<String>,
    /// When it opened.
    pub opened: Nanos,
    /// Statements received so far.
    pub statements: u64,
}

/// Everything the gateway derives from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GatewayState {
    /// Identities and their credentials.
    pub identities: Identities,
    /// Operators of the admin API.
    pub operators: Operators,
    /// The policy in force, if any was applied.
    pub policy: Option<PolicyState>,
    /// Blocked identities.
    pub blocks: BTreeMap<String, Block>,
    /// Sessions open at this point of the log.
    pub sessions: BTreeMap<SessionId, OpenSession>,
    /// Approval requests and grants.
    pub approvals: Approvals,
    /// The highest session number used, so new sessions never reuse one.
    pub last_session: u64,
    /// Events folded in.
    pub events: u64,
    /// Timestamp of the last event folded in.
    pub as_of: Option<Nanos>,
    /// Where the signing key was rotated: the sequence numbers of the
    /// `KeyRotated` events folded in. A reader that checks only the events
    /// after a snapshot learns from it every rotation before, so an index
    /// that hides one cannot make it trust a retired key.
    pub key_rotations: Vec<u64>,
}

impl GatewayState {
    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        let body = &event.body;
        self.identities.apply(body);
        self.operators.apply(body);
        self.approvals.apply(event);
        self.count(event.seq, event.ts, body.kind(), body.session());
        match body {
            EventBody::PolicyChanged(p) => {
                self.policy = Some(PolicyState {
                    source: p.source.clone(),
                    operator: p.operator.clone(),
                    seq: event.seq,
                    ts: event.ts,
                });
            }
            EventBody::IdentityBlocked(b) => {
                self.blocks
                    .entry(b.identity.clone())
                    .or_insert_with(|| Block {
                        operator: b.operator.clone(),
                        reason: b.reason.clone(),
                        trigger: b.trigger.clone(),
                        seq: event.seq,
                        ts: event.ts,
                    });
            }
            EventBody::IdentityUnblocked(u) => {
                self.blocks.remove(&u.identity);
            }
            EventBody::SessionOpened(s) => {
                self.sessions.insert(
                    s.session,
                    OpenSession {
                        identity: s.identity.clone(),
                        target: s.target.clone(),
                        client_addr: s.client_addr.clone(),
                        application_name: s.application_name.clone(),
                        credential: s.credential.clone(),
                        opened: event.ts,
                        statements: 0,
                    },
                );
            }
            EventBody::SessionClosed(c) => {
                self.sessions.remove(&c.session);
            }
            EventBody::SessionTerminated(t) => {
                self.sessions.remove(&t.session);
            }
            _ => {}
        }
    }

    /// What every event does, whatever its body: the counters, the last
    /// session number, a session's statement count, and key rotations.
    fn count(&mut self, seq: u64, ts: Nanos, kind: EventKind, session: Option<SessionId>) {
        self.events = seq + 1;
        self.as_of = Some(ts);
        if kind == EventKind::KeyRotated {
            self.key_rotations.push(seq);
        }
        if let Some(s) = session {
            self.last_session = self.last_session.max(s);
            if matches!(
                kind,
                EventKind::Statement | EventKind::ShapedStatement | EventKind::QueryReceived
            ) {
                if let Some(open) = self.sessions.get_mut(&s) {
                    open.statements += 1;
                }
            }
        }
    }

    /// Whether folding an event of `kind` needs more than its envelope and
    /// session: false for the statement-path kinds, which are nearly every
    /// event of a busy ledger and only move counters.
    pub fn needs_body(kind: EventKind) -> bool {
        !matches!(
            kind,
            EventKind::Statement
                | EventKind::ShapedStatement
                | EventKind::StatementShape
                | EventKind::QueryReceived
                | EventKind::Decision
                | EventKind::MaskApplied
                | EventKind::Response
                | EventKind::AuthenticationFailed
                | EventKind::OperatorAction
                | EventKind::KeyRotated
                | EventKind::Snapshot
        )
    }

    /// Folds one stored record, decoding its body only if
    /// [`GatewayState::needs_body`]; the same as [`GatewayState::apply`] on
    /// the decoded event, several times cheaper on a busy ledger. For
    /// records the gateway's own writer committed (the snapshot thread): it
    /// does not check the bodies it skips.
    pub fn apply_record(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let head = RecordHead::parse(bytes)?;
        if Self::needs_body(head.kind) {
            self.apply(&Event::from_bytes(bytes)?);
        } else {
            self.count(head.seq, head.ts, head.kind, head.session);
        }
        Ok(())
    }

    /// The source of the policy in force, if any.
    pub fn policy_source(&self) -> Option<&str> {
        self.policy.as_ref().map(|p| p.source.as_str())
    }
}

// Snapshot encodings (crate::snapshot). Adding a field to any of these
// structs fails to compile until its encoding names it.

cbor_record!(PolicyState {
    0 => source,
    1 => operator,
    2 => seq,
    3 => ts,
});

cbor_record!(Block {
    0 => operator,
    1 => reason,
    2 => trigger,
    3 => seq,
    4 => ts,
});

cbor_record!(OpenSession {
    0 => identity,
    1 => target,
    2 => client_addr,
    3 => application_name,
    4 => credential,
    5 => opened,
    6 => statements,
});

cbor_record!(GatewayState {
    0 => identities,
    1 => operators,
    2 => policy,
    3 => blocks,
    4 => sessions,
    5 => approvals,
    6 => last_session,
    7 => events,
    8 => as_of,
    9 => key_rotations,
});

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::cbor::Bytes;
    use gatehouse_ledger::event::{
        Action, IdentityBlocked, IdentityUnblocked, PolicyChanged, Protocol, QueryReceived,
        SessionClosed, SessionOpened, Statement, StatementClass,
    };

    fn fold(bodies: Vec<EventBody>) -> Vec<GatewayState> {
        let mut state = GatewayState::default();
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                state.apply(&Event {
                    seq: i as u64,
                    ts: 1000 + i as u64,
                    body,
                });
                state.clone()
            })
            .collect()
    }

    fn opened(session: u64) -> EventBody {
        SessionOpened {
            session,
            identity: "bot".into(),
            target: "shop".into(),
            client_addr: "127.0.0.1:1".into(),
            application_name: None,
            credential: None,
            tls: false,
        }
        .into()
    }

    /// A statement's arrival as ledgers before the one-event record hold it.
    fn received(session: u64) -> EventBody {
        QueryReceived {
            session,
            identity: "bot".into(),
            query: 1,
            sql: "SELECT 1".into(),
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
        }
        .into()
    }

    /// Ledgers written before the one-event record hold QueryReceived and
    /// Decision; later ones hold Statement. Each counts once.
    #[test]
    fn both_statement_records_count_once() {
        let statement = |query| {
            EventBody::from(Statement {
                session: 41,
                identity: "bot".into(),
                query,
                sql: "SELECT 1".into(),
                params: vec![],
                statement: None,
                portal: None,
                protocol: Protocol::Simple,
                action: Action::Allow,
                rule: None,
                class: StatementClass::Read,
                tables: vec![],
                columns: vec![],
                message: None,
            })
        };
        let states = fold(vec![opened(41), received(41), statement(2), statement(3)]);
        assert_eq!(states[1].sessions[&41].statements, 1);
        assert_eq!(states[3].sessions[&41].statements, 3);
    }

    #[test]
    fn every_prefix_is_the_state_at_that_instant() {
        let states = fold(vec![
            PolicyChanged {
                operator: "o".into(),
                source: "a".into(),
                digest: Bytes(vec![]),
            }
            .into(),
            opened(41),
            received(41),
            IdentityBlocked {
                identity: "bot".into(),
                operator: "bob".into(),
                reason: "exfiltration".into(),
                trigger: None,
            }
            .into(),
            SessionClosed {
                session: 41,
                identity: "bot".into(),
                reason: "blocked".into(),
                statements: 1,
            }
            .into(),
            IdentityUnblocked {
                identity: "bot".into(),
                operator: "alice".into(),
                reason: None,
            }
            .into(),
        ]);
        assert_eq!(states[0].policy_source(), Some("a"));
        assert_eq!(states[2].sessions[&41].statements, 1);
        assert!(states[2].blocks.is_empty());
        assert_eq!(states[3].blocks["bot"].reason, "exfiltration");
        assert_eq!(states[3].sessions.len(), 1);
        assert!(states[4].sessions.is_empty());
        assert!(states[5].blocks.is_empty());
        assert_eq!(states[5].last_session, 41);
        assert_eq!(states[5].events, 6);
        // Before and after the block differ exactly by the block.
        let mut before = states[2].clone();
        before.events = states[3].events;
        before.as_of = states[3].as_of;
        before.blocks = states[3].blocks.clone();
        assert_eq!(before, states[3]);
    }
}
