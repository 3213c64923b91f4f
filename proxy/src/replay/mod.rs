//! `gatehouse replay`: what one session or one identity did, rebuilt from
//! the ledger.
//!
//! A responder needs the whole story in order: connections, every
//! statement with its parameters, what policy decided and why, who
//! approved what, which values were masked, what came back (the rows as
//! the client saw them) and how it ended. The ledger records each of these
//! as separate events tied together by (session, query); [`Timeline`]
//! gathers them, and is a pure function of the events so it can be tested
//! without a ledger. [`load`] is the I/O shell that reads a ledger file;
//! [`text`], [`json`] and [`html`] render the result.
//!
//! Everything in a timeline that came from an agent or the database (SQL,
//! parameters, rows, error messages, application names) is hostile: the
//! renderers make it inert ([`escape`]).

#![warn(missing_docs)]

pub mod escape;
pub mod html;
pub mod json;
pub mod text;
pub mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gatehouse_ledger::event::{self as ev, EventBody, Nanos, SessionId};
use gatehouse_ledger::{Event, LedgerError, LedgerReader};
use serde::{Serialize, Serializer};

pub use crate::state::At;
use value::Value;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One session's events.
    Session(SessionId),
    /// Everything an identity did: its sessions and the events about it
    /// (blocks, credentials, failed logins), and, for an operator's name,
    /// what that operator did.
    Identity(String),
}

impl Selection {
    /// Whether `body` belongs to the selection.
    fn includes(&self, body: &EventBody) -> bool {
        match self {
            Selection::Session(s) => body.session() == Some(*s),
            // An identity's own events, and what it did as an operator.
            Selection::Identity(i) => {
                body.identity() == Some(i.as_str()) || body.operator() == Some(i.as_str())
            }
        }
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Session(s) => write!(f, "session {s}"),
            Selection::Identity(i) => {
                write!(f, "identity {}", escape::visible(i, escape::Lines::Escape))
            }
        }
    }
}

impl Serialize for Selection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Selection::Session(id) => m.serialize_entry("session", id)?,
            Selection::Identity(name) => m.serialize_entry("identity", name)?,
        }
        m.end()
    }
}

/// The part of the log to show: both ends included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// The first event (by sequence number) or instant shown.
    pub from: Option<At>,
    /// The last event or instant shown.
    pub to: Option<At>,
}

impl Window {
    /// Whether the event at (`seq`, `ts`) lies in the window.
    pub fn contains(&self, seq: u64, ts: Nanos) -> bool {
        let after_start = match self.from {
            None => true,
            Some(At::Seq(n)) => seq >= n,
            Some(At::Time(t)) => ts >= t,
        };
        after_start && !self.is_past(seq, ts)
    }

    /// Whether the event at (`seq`, `ts`) lies beyond the window's end, and
    /// with it every later event (sequence numbers and times never decrease).
    pub fn is_past(&self, seq: u64, ts: Nanos) -> bool {
        match self.to {
            None => false,
            Some(At::Seq(n)) => seq > n,
            Some(At::Time(t)) => ts > t,
        }
    }

    /// Refuses a window whose start lies after its end.
    pub fn check(&self) -> Result<(), ReplayError> {
        let backwards = match (self.from, self.to) {
            (Some(At::Seq(a)), Some(At::Seq(b))) | (Some(At::Time(a)), Some(At::Time(b))) => a > b,
            _ => false,
        };
        if backwards {
            return Err(ReplayError::Backwards);
        }
        Ok(())
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |a: At| match a {
            At::Seq(n) => format!("event #{n}"),
            At::Time(t) => rfc3339(t),
        };
        match (self.from, self.to) {
            (None, None) => write!(f, "the whole log"),
            (Some(a), None) => write!(f, "from {} on", at(a)),
            (None, Some(b)) => write!(f, "up to {}", at(b)),
            (Some(a), Some(b)) => write!(f, "from {} to {}", at(a), at(b)),
        }
    }
}

fn serialize_at<S: Serializer>(at: &Option<At>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match at {
        None => s.serialize_none(),
        Some(At::Seq(seq)) => {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("seq", seq)?;
            m.end()
        }
        Some(At::Time(ts)) => {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("ts", ts)?;
            m.serialize_entry("time", &rfc3339(*ts))?;
            m.end()
        }
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            #[serde(serialize_with = "serialize_at")]
            from: &'a Option<At>,
            #[serde(serialize_with = "serialize_at")]
            to: &'a Option<At>,
        }
        Shape {
            from: &self.from,
            to: &self.to,
        }
        .serialize(s)
    }
}

/// `n` and a noun, plural unless `n` is one ("1 row", "3 rows").
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A time as RFC 3339 in UTC with nanoseconds.
pub fn rfc3339(ts: Nanos) -> String {
    gatehouse_verify::report::rfc3339(ts)
}

/// Where an event sits in the log: sequence number and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// The event's sequence number.
    pub seq: u64,
    /// When it was recorded, Unix nanoseconds.
    pub ts: Nanos,
}

impl Stamp {
    fn of(event: &Event) -> Stamp {
        Stamp {
            seq: event.seq,
            ts: event.ts,
        }
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("ts", &self.ts)?;
        m.serialize_entry("time", &rfc3339(self.ts))?;
        m.end()
    }
}

/// An instant that is not an event's own time (expiries, grant ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub Nanos);

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}

/// A client connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionOpened {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The session it belongs to.
    pub session: SessionId,
    /// The agent identity concerned.
    pub identity: String,
    /// The upstream target (database) named.
    pub target: String,
    /// The client's address and port.
    pub client_addr: String,
    /// What the client said it is (client-controlled, hostile).
    pub application_name: Option<String>,
    /// The gateway credential used.
    pub credential: Option<String>,
    /// Whether the client connection used TLS.
    pub tls: bool,
}

/// A session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionClosed {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The session it belongs to.
    pub session: SessionId,
    /// The agent identity concerned.
    pub identity: String,
    /// Why, in words (may quote client input).
    pub reason: String,
    /// Statements the session sent.
    pub statements: u64,
}

/// The gateway ended a session (kill, block, revocation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionTerminated {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The session it belongs to.
    pub session: SessionId,
    /// The agent identity concerned.
    pub identity: String,
    /// `None` when the gateway itself decided.
    pub operator: Option<String>,
    /// Why, in words (may quote client input).
    pub reason: String,
}

/// One bind parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    /// `text` or `binary`, as the client sent it.
    pub format: &'static str,
    /// The value as sent.
    pub value: Value,
}

/// The statement as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The SQL text exactly as sent (hostile).
    pub sql: String,
    /// Bind parameters, in order ($1 first).
    pub params: Vec<Param>,
    /// `simple`, `extended` or `copy`.
    pub protocol: &'static str,
    /// Prepared statement name (extended protocol).
    pub statement: Option<String>,
    /// Portal name (extended protocol).
    pub portal: Option<String>,
}

/// What policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Where it happened in the log.
    pub at: Stamp,
    /// `allow`, `deny`, `require_approval` or `mask`.
    pub action: &'static str,
    /// `None`: no rule matched and the default (deny) applied.
    pub rule: Option<String>,
    /// `read`, `write`, `ddl`, `session`, `function`, `admin`, `unknown`, `transaction`.
    pub class: &'static str,
    /// Schema-qualified tables the statement touches.
    pub tables: Vec<String>,
    /// The columns concerned.
    pub columns: Vec<String>,
    /// The message the client was shown on denial.
    pub message: Option<String>,
}

/// A statement was held for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRequest {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The policy rule concerned.
    pub rule: String,
    /// The statement's class as policy judged it.
    pub class: &'static str,
    /// Distinct approvers required.
    pub quorum: u64,
    /// When it expires.
    pub expires_at: Instant,
    /// Normalized SQL, literals removed: what a time-limited grant covers.
    pub fingerprint: String,
    /// Hex BLAKE3 of the exact SQL and parameters approved.
    pub binding: String,
}

/// What became of a held statement, one approver (or the clock) at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// An approver approved.
    Granted {
        /// Where it happened in the log.
        at: Stamp,
        /// The operator who acted.
        operator: String,
        /// The identity may rerun the statement's fingerprint until then.
        grant_until: Option<Instant>,
    },
    /// Refused by an approver (or the gateway, with no operator).
    Denied {
        /// Where it happened in the log.
        at: Stamp,
        /// The operator who acted.
        operator: Option<String>,
        /// Why, in words (may quote client input).
        reason: String,
    },
    /// Nobody decided in time.
    Expired {
        /// When the expiry was recorded.
        at: Stamp,
    },
    /// The grant the approval left was ended early (`gatehouse grant
    /// revoke`: a denial recorded after the request was granted).
    GrantRevoked {
        /// Where it happened in the log.
        at: Stamp,
        /// The operator who acted.
        operator: Option<String>,
        /// Why, in words.
        reason: String,
    },
}

/// One approval request of a statement and its outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The approval request's number.
    pub approval: u64,
    /// `None` when the request lies outside the window.
    pub requested: Option<ApprovalRequest>,
    /// Approvers' decisions and the expiry, in order.
    pub outcomes: Vec<Outcome>,
}

impl Approval {
    /// Where the request stands as far as the window shows: `granted` once
    /// `quorum` distinct approvers approved, `denied`, `expired`, or
    /// `pending` (also when the request itself lies before the window and
    /// its quorum is unknown, until a denial or expiry).
    pub fn status(&self) -> &'static str {
        let mut approvers: Vec<&str> = Vec::new();
        for o in &self.outcomes {
            match o {
                Outcome::Denied { .. } => return "denied",
                Outcome::Expired { .. } => return "expired",
                Outcome::GrantRevoked { .. } => {}
                Outcome::Granted { operator, .. } => {
                    if !approvers.contains(&operator.as_str()) {
                        approvers.push(operator);
                    }
                }
            }
        }
        match &self.requested {
            Some(r) if approvers.len() as u64 >= r.quorum => "granted",
            _ => "pending",
        }
    }
}

/// An approval outcome whose request lies outside the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalOutcome {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The approval request's number.
    pub approval: u64,
    /// The session it belongs to.
    pub session: SessionId,
    /// The agent identity concerned.
    pub identity: String,
    /// What was decided.
    pub outcome: Outcome,
}

/// A column whose values were masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedColumn {
    /// `schema.table.column`.
    pub column: String,
    /// The masking strategy.
    pub strategy: String,
    /// How many values were replaced.
    pub values: u64,
}

/// One mask-applied event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mask {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The columns concerned.
    pub columns: Vec<MaskedColumn>,
}

/// A result column as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The column's name as the client saw it (hostile).
    pub name: String,
    /// The column's type OID.
    pub type_oid: u32,
    /// The built-in type's name, when known.
    pub type_name: Option<&'static str>,
    /// `text` or `binary`.
    pub format: &'static str,
}

/// How a forwarded statement ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    /// Where it happened in the log.
    pub at: Stamp,
    /// PostgreSQL's command tag (`SELECT 3`), if the statement completed.
    pub command_tag: Option<String>,
    /// Rows sent to the client.
    pub rows: u64,
    /// From forwarding to completion, in nanoseconds.
    pub duration_ns: u64,
    /// The SQLSTATE of an error.
    pub sqlstate: Option<String>,
    /// The error message the client received (hostile).
    pub error: Option<String>,
    /// Bytes sent to the client.
    pub bytes: u64,
    /// The columns concerned.
    pub columns: Vec<Column>,
    /// The rows the client received, as recorded (masked values masked).
    pub result: Vec<Vec<Value>>,
    /// More rows reached the client than were recorded.
    pub truncated: bool,
    /// Hex BLAKE3 of the rows as the database sent them, before masking.
    pub result_digest: Option<String>,
}

/// Everything about one statement: the events of one (session, query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// The statement's first event in the window.
    pub at: Stamp,
    /// The session it belongs to.
    pub session: SessionId,
    /// The agent identity concerned.
    pub identity: String,
    /// Statement number within the session, from 1.
    pub query: u64,
    /// `None` only when the statement began before the window.
    pub received: Option<Received>,
    /// Policy's verdict; `None` when it lies outside the window.
    pub decision: Option<Decision>,
    /// Approval requests for the statement, with their outcomes.
    pub approvals: Vec<Approval>,
    /// Masks applied to its response.
    pub masks: Vec<Mask>,
    /// `None` for statements that were not forwarded (denied, held) or
    /// whose response lies outside the window.
    pub response: Option<Response>,
    /// Let through, yet its session ended with no response recorded (the
    /// gateway stopped first, or could not record it): whether and how it
    /// ran is unknown.
    pub outcome_unknown: bool,
}

impl Statement {
    /// The statement's SQL text, if its receipt lies in the window.
    pub fn sql(&self) -> Option<&str> {
        self.received.as_ref().map(|r| r.sql.as_str())
    }
}

/// A login attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthenticationFailed {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The agent identity concerned.
    pub identity: String,
    /// The client's address and port.
    pub client_addr: String,
    /// The upstream target (database) named.
    pub target: Option<String>,
    /// Why, in words (may quote client input).
    pub reason: String,
}

/// The identity was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityCreated {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The agent identity concerned.
    pub identity: String,
    /// The operator who acted.
    pub operator: String,
    /// What the identity is for.
    pub description: Option<String>,
}

/// The identity was blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityBlocked {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The agent identity concerned.
    pub identity: String,
    /// The operator who acted.
    pub operator: String,
    /// Why, in words (may quote client input).
    pub reason: String,
    /// The automatic trigger, if no human blocked it.
    pub trigger: Option<String>,
}

/// A block was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityUnblocked {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The agent identity concerned.
    pub identity: String,
    /// The operator who acted.
    pub operator: String,
    /// Why, in words (may quote client input).
    pub reason: Option<String>,
}

/// A credential was issued (its verifier material is not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialIssued {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The gateway credential used.
    pub credential: String,
    /// The agent identity concerned.
    pub identity: String,
    /// The operator who acted.
    pub operator: String,
    /// When it expires.
    pub expires_at: Instant,
}

/// A credential was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRevoked {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The gateway credential used.
    pub credential: String,
    /// The agent identity concerned.
    pub identity: String,
    /// The operator who acted.
    pub operator: String,
    /// Why, in words (may quote client input).
    pub reason: String,
}

/// An event of the selection that replay does not describe in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Other {
    /// Where it happened in the log.
    pub at: Stamp,
    /// The event kind's name.
    pub event: &'static str,
    /// Who acted and what, for an operator's action.
    pub detail: Option<String>,
}

/// One line of the story, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// See [`SessionOpened`].
    SessionOpened(SessionOpened),
    /// See [`SessionClosed`].
    SessionClosed(SessionClosed),
    /// See [`SessionTerminated`].
    SessionTerminated(SessionTerminated),
    /// See [`Statement`] (boxed: it is much larger than the others).
    Statement(Box<Statement>),
    /// See [`ApprovalOutcome`].
    ApprovalOutcome(ApprovalOutcome),
    /// See [`AuthenticationFailed`].
    AuthenticationFailed(AuthenticationFailed),
    /// See [`IdentityCreated`].
    IdentityCreated(IdentityCreated),
    /// See [`IdentityBlocked`].
    IdentityBlocked(IdentityBlocked),
    /// See [`IdentityUnblocked`].
    IdentityUnblocked(IdentityUnblocked),
    /// See [`CredentialIssued`].
    CredentialIssued(CredentialIssued),
    /// See [`CredentialRevoked`].
    CredentialRevoked(CredentialRevoked),
    /// See [`Other`].
    Other(Other),
}

impl Entry {
    /// Where the entry begins in the log.
    pub fn at(&self) -> Stamp {
        match self {
            Entry::SessionOpened(e) => e.at,
            Entry::SessionClosed(e) => e.at,
            Entry::SessionTerminated(e) => e.at,
            Entry::Statement(e) => e.at,
            Entry::ApprovalOutcome(e) => e.at,
            Entry::AuthenticationFailed(e) => e.at,
            Entry::IdentityCreated(e) => e.at,
            Entry::IdentityBlocked(e) => e.at,
            Entry::IdentityUnblocked(e) => e.at,
            Entry::CredentialIssued(e) => e.at,
            Entry::CredentialRevoked(e) => e.at,
            Entry::Other(e) => e.at,
        }
    }
}

/// The events a timeline was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EventRange {
    /// How many events.
    pub count: u64,
    /// The first event.
    pub first: Stamp,
    /// The last event.
    pub last: Stamp,
}

/// Counts for the report's header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Sessions opened.
    pub sessions: u64,
    /// Statements.
    pub statements: u64,
    /// Statements policy allowed.
    pub allowed: u64,
    /// Statements policy denied.
    pub denied: u64,
    /// Statements held for approval.
    pub held_for_approval: u64,
    /// Statements with masked values (or a mask decision).
    pub masked: u64,
    /// Responses with an error.
    pub errors: u64,
    /// Sessions the gateway ended.
    pub terminations: u64,
    /// Failed logins.
    pub authentication_failures: u64,
    /// Times the identity was blocked.
    pub blocks: u64,
}

/// The story of a selection within a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// What was asked for.
    pub selection: Selection,
    /// The part of the log shown.
    pub window: Window,
    /// `None` when no event of the selection lies in the window.
    pub events: Option<EventRange>,
    /// Counts for the header.
    pub summary: Summary,
    /// The story, in log order.
    pub entries: Vec<Entry>,
}

impl Timeline {
    /// The timeline of the events of `selection` in `window` among `events`
    /// (any others are ignored), which must be in log order.
    pub fn build<'e>(
        selection: Selection,
        window: Window,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Timeline {
        let mut builder = TimelineBuilder::new(selection, window);
        for event in events {
            builder.push(event);
        }
        builder.finish()
    }

    /// The statements, in order.
    pub fn statements(&self) -> impl Iterator<Item = &Statement> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Statement(s) => Some(s.as_ref()),
            _ => None,
        })
    }
}

/// Builds a [`Timeline`] one event at a time, so a long log is never held
/// in memory as events.
pub struct TimelineBuilder {
    /// What was asked for.
    selection: Selection,
    /// The part of the log shown.
    window: Window,
    /// The story, in log order.
    entries: Vec<Entry>,
    /// (session, query) to the index of its statement entry.
    statements: HashMap<(SessionId, u64), usize>,
    /// Approval number to (statement entry, index in its approvals).
    approvals: HashMap<u64, (usize, usize)>,
    range: Option<EventRange>,
}

impl TimelineBuilder {
    /// An empty timeline of `selection` within `window`.
    pub fn new(selection: Selection, window: Window) -> Self {
        TimelineBuilder {
            selection,
            window,
            entries: Vec::new(),
            statements: HashMap::new(),
            approvals: HashMap::new(),
            range: None,
        }
    }

    /// Adds an event; events outside the selection or window are ignored.
    /// Events must come in log order.
    pub fn push(&mut self, event: &Event) {
        if !self.window.contains(event.seq, event.ts) || !self.selection.includes(&event.body) {
            return;
        }
        let at = Stamp::of(event);
        self.range = Some(match self.range {
            None => EventRange {
                count: 1,
                first: at,
                last: at,
            },
            Some(r) => EventRange {
                count: r.count + 1,
                last: at,
                ..r
            },
        });
        let entry = match &event.body {
            EventBody::SessionOpened(b) => Entry::SessionOpened(SessionOpened {
                at,
                session: b.session,
                identity: b.identity.clone(),
                target: b.target.clone(),
                client_addr: b.client_addr.clone(),
                application_name: b.application_name.clone(),
                credential: b.credential.clone(),
                tls: b.tls,
            }),
            EventBody::SessionClosed(b) => {
                self.mark_unknown_outcomes(b.session);
                Entry::SessionClosed(SessionClosed {
                    at,
                    session: b.session,
                    identity: b.identity.clone(),
                    reason: b.reason.clone(),
                    statements: b.statements,
                })
            }
            EventBody::SessionTerminated(b) => Entry::SessionTerminated(SessionTerminated {
                at,
                session: b.session,
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                reason: b.reason.clone(),
            }),
            EventBody::AuthenticationFailed(b) => {
                Entry::AuthenticationFailed(AuthenticationFailed {
                    at,
                    identity: b.identity.clone(),
                    client_addr: b.client_addr.clone(),
                    target: b.target.clone(),
                    reason: b.reason.clone(),
                })
            }
            EventBody::IdentityCreated(b) => Entry::IdentityCreated(IdentityCreated {
                at,
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                description: b.description.clone(),
            }),
            EventBody::IdentityBlocked(b) => Entry::IdentityBlocked(IdentityBlocked {
                at,
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                reason: b.reason.clone(),
                trigger: b.trigger.clone(),
            }),
            EventBody::IdentityUnblocked(b) => Entry::IdentityUnblocked(IdentityUnblocked {
                at,
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                reason: b.reason.clone(),
            }),
            EventBody::CredentialIssued(b) => Entry::CredentialIssued(CredentialIssued {
                at,
                credential: b.credential.clone(),
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                expires_at: Instant(b.expires_at),
            }),
            EventBody::CredentialRevoked(b) => Entry::CredentialRevoked(CredentialRevoked {
                at,
                credential: b.credential.clone(),
                identity: b.identity.clone(),
                operator: b.operator.clone(),
                reason: b.reason.clone(),
            }),
            EventBody::Statement(b) => {
                self.received(&b.received(), at);
                self.decided(&b.decision(), at);
                return;
            }
            EventBody::QueryReceived(b) => {
                self.received(b, at);
                return;
            }
            EventBody::Decision(b) => {
                self.decided(b, at);
                return;
            }
            EventBody::MaskApplied(b) => {
                self.statement(b.session, &b.identity, b.query, at)
                    .masks
                    .push(Mask {
                        at,
                        columns: b
                            .columns
                            .iter()
                            .map(|c| MaskedColumn {
                                column: c.column.clone(),
                                strategy: c.strategy.clone(),
                                values: c.values,
                            })
                            .collect(),
                    });
                return;
            }
            EventBody::Response(b) => {
                self.statement(b.session, &b.identity, b.query, at).response =
                    Some(response(at, b));
                return;
            }
            EventBody::ApprovalRequested(b) => {
                let index = self.statement_index(b.session, &b.identity, b.query, at);
                let Entry::Statement(statement) = &mut self.entries[index] else {
                    unreachable!("statement_index points at statements")
                };
                statement.approvals.push(Approval {
                    approval: b.approval,
                    requested: Some(ApprovalRequest {
                        at,
                        rule: b.rule.clone(),
                        class: class_name(b.class),
                        quorum: b.quorum,
                        expires_at: Instant(b.expires_at),
                        fingerprint: b.fingerprint.clone(),
                        binding: value::hex(&b.binding.0),
                    }),
                    outcomes: Vec::new(),
                });
                self.approvals
                    .insert(b.approval, (index, statement.approvals.len() - 1));
                return;
            }
            EventBody::ApprovalGranted(b) => {
                let outcome = Outcome::Granted {
                    at,
                    operator: b.operator.clone(),
                    grant_until: b.grant_until.map(Instant),
                };
                match self.approval_outcome(b.approval, outcome) {
                    None => return,
                    Some(outcome) => Entry::ApprovalOutcome(ApprovalOutcome {
                        at,
                        approval: b.approval,
                        session: b.session,
                        identity: b.identity.clone(),
                        outcome,
                    }),
                }
            }
            EventBody::ApprovalDenied(b) => {
                let outcome = Outcome::Denied {
                    at,
                    operator: b.operator.clone(),
                    reason: b.reason.clone(),
                };
                match self.approval_outcome(b.approval, outcome) {
                    None => return,
                    Some(outcome) => Entry::ApprovalOutcome(ApprovalOutcome {
                        at,
                        approval: b.approval,
                        session: b.session,
                        identity: b.identity.clone(),
                        outcome,
                    }),
                }
            }
            EventBody::ApprovalExpired(b) => {
                match self.approval_outcome(b.approval, Outcome::Expired { at }) {
                    None => return,
                    Some(outcome) => Entry::ApprovalOutcome(ApprovalOutcome {
                        at,
                        approval: b.approval,
                        session: b.session,
                        identity: b.identity.clone(),
                        outcome,
                    }),
                }
            }
            other => Entry::Other(Other {
                at,
                event: other.kind().name(),
                detail: match other {
                    EventBody::OperatorAction(a) => Some(format!(
                        "operator {} {}{}: {}{}",
                        a.operator,
                        a.action,
                        a.target
                            .as_deref()
                            .map(|t| format!(" {t}"))
                            .unwrap_or_default(),
                        a.outcome,
                        a.detail
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    )),
                    EventBody::IdentityDisabled(d) => Some(format!(
                        "identity {} disabled by operator {}: {}",
                        d.identity, d.operator, d.reason
                    )),
                    EventBody::OperatorRemoved(r) => Some(format!(
                        "operator {} removed by {}: {}",
                        r.operator, r.removed_by, r.reason
                    )),
                    EventBody::ChatUserLinked(l) => Some(format!(
                        "{} user {} of workspace {} linked to operator {} by {}",
                        l.service,
                        l.shown_user(),
                        l.workspace,
                        l.operator,
                        l.linked_by
                    )),
                    EventBody::ChatUserUnlinked(u) => Some(format!(
                        "{} user {} of workspace {} unlinked from operator {} by {}: {}",
                        u.service, u.user, u.workspace, u.operator, u.unlinked_by, u.reason
                    )),
                    _ => other.operator().map(|o| format!("by operator {o}")),
                },
            }),
        };
        self.entries.push(entry);
    }

    /// At a session's end: its statements that were let through and got no
    /// response have an unknown outcome.
    fn mark_unknown_outcomes(&mut self, session: SessionId) {
        for (&(s, _), &entry) in &self.statements {
            if s != session {
                continue;
            }
            if let Entry::Statement(st) = &mut self.entries[entry] {
                let let_through = st
                    .decision
                    .as_ref()
                    .is_some_and(|d| matches!(d.action, "allow" | "mask"))
                    || st.approvals.iter().any(|a| a.status() == "granted");
                if let_through && st.response.is_none() {
                    st.outcome_unknown = true;
                }
            }
        }
    }

    /// Files an outcome under its request; gives it back when the request
    /// is not in the timeline.
    fn approval_outcome(&mut self, approval: u64, outcome: Outcome) -> Option<Outcome> {
        let Some(&(entry, index)) = self.approvals.get(&approval) else {
            return Some(outcome);
        };
        if let Entry::Statement(s) = &mut self.entries[entry] {
            let approval = &mut s.approvals[index];
            // A denial after the quorum revokes the grant; the statement ran.
            let outcome = match outcome {
                Outcome::Denied {
                    at,
                    operator,
                    reason,
                } if approval.status() == "granted" => Outcome::GrantRevoked {
                    at,
                    operator,
                    reason,
                },
                other => other,
            };
            approval.outcomes.push(outcome);
        }
        None
    }

    fn statement_index(
        &mut self,
        session: SessionId,
        identity: &str,
        query: u64,
        at: Stamp,
    ) -> usize {
        *self.statements.entry((session, query)).or_insert_with(|| {
            self.entries.push(Entry::Statement(Box::new(Statement {
                at,
                session,
                identity: identity.to_owned(),
                query,
                received: None,
                decision: None,
                approvals: Vec::new(),
                masks: Vec::new(),
                response: None,
                outcome_unknown: false,
            })));
            self.entries.len() - 1
        })
    }

    /// Adds what a statement's arrival says to its entry.
    fn received(&mut self, b: &gatehouse_ledger::event::QueryReceived, at: Stamp) {
        self.statement(b.session, &b.identity, b.query, at).received = Some(Received {
            at,
            sql: b.sql.clone(),
            params: b.params.iter().map(param).collect(),
            protocol: protocol_name(b.protocol),
            statement: b.statement.clone(),
            portal: b.portal.clone(),
        });
    }

    /// Adds policy's verdict on a statement to its entry.
    fn decided(&mut self, b: &gatehouse_ledger::event::Decision, at: Stamp) {
        self.statement(b.session, &b.identity, b.query, at).decision = Some(Decision {
            at,
            action: action_name(b.action),
            rule: b.rule.clone(),
            class: class_name(b.class),
            tables: b.tables.clone(),
            columns: b.columns.clone(),
            message: b.message.clone(),
        });
    }

    fn statement(
        &mut self,
        session: SessionId,
        identity: &str,
        query: u64,
        at: Stamp,
    ) -> &mut Statement {
        let index = self.statement_index(session, identity, query, at);
        match &mut self.entries[index] {
            Entry::Statement(s) => s,
            _ => unreachable!("statement_index points at statements"),
        }
    }

    /// The finished timeline.
    pub fn finish(self) -> Timeline {
        let mut summary = Summary::default();
        for entry in &self.entries {
            match entry {
                Entry::SessionOpened(_) => summary.sessions += 1,
                Entry::SessionTerminated(_) => summary.terminations += 1,
                Entry::AuthenticationFailed(_) => summary.authentication_failures += 1,
                Entry::IdentityBlocked(_) => summary.blocks += 1,
                Entry::Statement(s) => {
                    summary.statements += 1;
                    match s.decision.as_ref().map(|d| d.action) {
                        Some("allow") => summary.allowed += 1,
                        Some("deny") => summary.denied += 1,
                        Some("require_approval") => summary.held_for_approval += 1,
                        _ => {}
                    }
                    let mask_decided = s.decision.as_ref().is_some_and(|d| d.action == "mask");
                    if mask_decided || !s.masks.is_empty() {
                        summary.masked += 1;
                    }
                    if s.response
                        .as_ref()
                        .is_some_and(|r| r.sqlstate.is_some() || r.error.is_some())
                    {
                        summary.errors += 1;
                    }
                }
                _ => {}
            }
        }
        Timeline {
            selection: self.selection,
            window: self.window,
            events: self.range,
            summary,
            entries: self.entries,
        }
    }
}

fn format_name(format: u16) -> &'static str {
    if format == value::TEXT {
        "text"
    } else {
        "binary"
    }
}

fn param(p: &ev::Param) -> Param {
    Param {
        format: format_name(p.format),
        value: Value::new(p.value.as_ref().map(|b| b.0.as_slice()), p.format, 0),
    }
}

fn response(at: Stamp, b: &ev::Response) -> Response {
    let columns: Vec<Column> = b
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_name: value::type_name(c.type_oid),
            format: format_name(c.format),
        })
        .collect();
    let result = b
        .result
        .iter()
        .map(|row| {
            row.values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let bytes = v.as_ref().map(|b| b.0.as_slice());
                    match b.columns.get(i) {
                        Some(c) => Value::new(bytes, c.format, c.type_oid),
                        // A row wider than its description: show raw bytes.
                        None => Value::new(bytes, value::BINARY, 0),
                    }
                })
                .collect()
        })
        .collect();
    Response {
        at,
        command_tag: b.command_tag.clone(),
        rows: b.rows,
        duration_ns: b.duration_ns,
        sqlstate: b.sqlstate.clone(),
        error: b.error.clone(),
        bytes: b.bytes,
        columns,
        result,
        truncated: b.truncated,
        result_digest: b.rows_digest().map(|d| value::hex(&d)),
    }
}

fn protocol_name(p: ev::Protocol) -> &'static str {
    match p {
        ev::Protocol::Simple => "simple",
        ev::Protocol::Extended => "extended",
        ev::Protocol::Copy => "copy",
    }
}

/// An action's name as policy files and the ledger spell it.
pub fn action_name(a: ev::Action) -> &'static str {
    match a {
        ev::Action::Allow => "allow",
        ev::Action::Deny => "deny",
        ev::Action::RequireApproval => "require_approval",
        ev::Action::Mask => "mask",
    }
}

fn class_name(c: ev::StatementClass) -> &'static str {
    use ev::StatementClass::*;
    match c {
        Read => "read",
        Write => "write",
        Ddl => "ddl",
        Session => "session",
        Function => "function",
        Admin => "admin",
        Unknown => "unknown",
        Transaction => "transaction",
    }
}

/// The newest signed checkpoint of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointInfo {
    /// Events it covers.
    pub size: u64,
    /// Its RFC 6962 root, base64 as in the note.
    pub root: String,
    /// The key whose signature on it was checked (`None`: no verifier key
    /// was found, so its signature was not checked).
    pub key: Option<String>,
    /// Records hashed to check the events shown against it: every one it
    /// covers, or, for a session, the session's window and its
    /// surroundings (the rest of the tree from stored subtree hashes).
    pub checked: u64,
}

/// A timeline with what a reader needs to trust it: where it came from
/// and how to verify that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// The ledger file read.
    pub ledger: PathBuf,
    /// The shell command that verifies the ledger.
    pub verify: String,
    /// The newest signed checkpoint, if the ledger has one.
    pub checkpoint: Option<CheckpointInfo>,
    /// Events of the selection after the newest checkpoint: not shown,
    /// since nothing vouches for them yet.
    pub unsigned_not_shown: u64,
    /// The story.
    pub timeline: Timeline,
}

impl Replay {
    /// Whether every event shown lies under the newest signed checkpoint.
    pub fn covered_by_checkpoint(&self) -> bool {
        match (&self.checkpoint, self.timeline.events) {
            (Some(c), Some(r)) => r.last.seq < c.size,
            (_, None) => true,
            (None, Some(_)) => false,
        }
    }
}

/// Why a replay could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The ledger could not be opened or read.
    #[error("cannot read ledger {path}: {source}; pass the ledger.db of a Gatehouse setup (see `gatehouse init`)")]
    Ledger {
        /// The ledger file.
        path: String,
        /// What went wrong.
        #[source]
        source: LedgerError,
    },
    /// Nothing in the ledger belongs to the selection.
    #[error("{path} holds no events of {selection}; check the session number (`gatehouse sessions` lists live ones) or replay the whole identity with --identity")]
    NotFound {
        /// The ledger file.
        path: String,
        /// What was asked for.
        selection: String,
    },
    /// `--from` lies after `--to`.
    #[error("--from lies after --to; swap them")]
    Backwards,
    /// The verifier key could not be read.
    #[error("cannot use verifier key {path}: {reason}; pass the verifier.pub that `gatehouse init` wrote with --key")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Reads the events of `selection` within `window` from the ledger at
/// `path` and builds their timeline, from verified events only (see
/// `gatehouse_ledger::verified`): every record is checked against the
/// newest checkpoint, whose signature is checked with `key` (by default the
/// verifier key `gatehouse init` leaves beside the ledger); selection is on
/// the decoded events, never on the ledger's index columns. Events after
/// the newest checkpoint are counted, not shown.
pub fn load(
    path: &Path,
    selection: Selection,
    window: Window,
    key: Option<&Path>,
) -> Result<Replay, ReplayError> {
    window.check()?;
    let shown = path.display().to_string();
    let ledger_err = |source| ReplayError::Ledger {
        path: shown.clone(),
        source,
    };
    let key = crate::init::verifier_key(path, key)
        .map_err(|(path, reason)| ReplayError::Key { path, reason })?;
    let reader = LedgerReader::open(path).map_err(ledger_err)?;
    // A session's events lie between its opening and its close (the
    // writer records them first and last): that window is all that needs
    // reading, if the index's pointers to them decode as what they claim.
    let bounds = match &selection {
        Selection::Session(session) => reader.session_hint(*session).map_err(ledger_err)?,
        Selection::Identity(_) => None,
    };
    let events = reader.len().map_err(ledger_err)?;
    let ranges = bounds.map(|(opened, closed)| {
        std::iter::once(opened..closed.map_or(events, |c| c + 1)).collect::<Vec<_>>()
    });
    let (collected, coverage) = crate::state::read_checked(
        &reader,
        key.as_ref(),
        ranges,
        |_| Collected::new(TimelineBuilder::new(selection.clone(), window)),
        |c, event, covered| {
            if let (Some((opened, closed)), Selection::Session(session)) = (bounds, &selection) {
                if event.seq == opened {
                    c.opened_where_hinted =
                        matches!(&event.body, EventBody::SessionOpened(o) if o.session == *session);
                }
                if Some(event.seq) == closed {
                    c.closed_where_hinted =
                        matches!(&event.body, EventBody::SessionClosed(o) if o.session == *session);
                }
            }
            if !selection.includes(&event.body) {
                return;
            }
            c.found = true;
            if !covered {
                c.unsigned_not_shown += 1;
            } else if !window.is_past(event.seq, event.ts) {
                c.builder.push(&event);
            }
        },
        |c| c.opened_where_hinted && (bounds.and_then(|b| b.1).is_none() || c.closed_where_hinted),
    )
    .map_err(ledger_err)?;
    let Collected {
        builder,
        found,
        unsigned_not_shown,
        ..
    } = collected;
    if !found {
        return Err(ReplayError::NotFound {
            path: shown,
            selection: selection.to_string(),
        });
    }
    let checkpoint = coverage
        .note
        .as_deref()
        .and_then(checkpoint_info)
        .map(|c| CheckpointInfo {
            key: coverage.key.clone(),
            checked: coverage.hashed,
            ..c
        });
    Ok(Replay {
        ledger: path.to_path_buf(),
        verify: verify_command(path),
        checkpoint,
        unsigned_not_shown,
        timeline: builder.finish(),
    })
}

/// What [`load`] gathers in one verified pass.
struct Collected {
    builder: TimelineBuilder,
    found: bool,
    unsigned_not_shown: u64,
    /// Whether the events the index named as the session's opening and
    /// close are those (checked when only that window is read).
    opened_where_hinted: bool,
    closed_where_hinted: bool,
}

impl Collected {
    fn new(builder: TimelineBuilder) -> Self {
        Collected {
            builder,
            found: false,
            unsigned_not_shown: 0,
            opened_where_hinted: false,
            closed_where_hinted: false,
        }
    }
}

/// Size and root of a signed note's checkpoint body.
fn checkpoint_info(note: &str) -> Option<CheckpointInfo> {
    let (body, _signatures) = note.split_once("\n\n")?;
    let checkpoint = gatehouse_ledger::checkpoint::Checkpoint::parse(&format!("{body}\n")).ok()?;
    let root = body.lines().nth(2)?.to_owned();
    Some(CheckpointInfo {
        size: checkpoint.size,
        root,
        key: None,
        checked: 0,
    })
}

/// The command that verifies the ledger, naming the verifier key that
/// `gatehouse init` leaves beside it when it is there.
pub fn verify_command(ledger: &Path) -> String {
    let key = ledger
        .parent()
        .map(|dir| dir.join(crate::init::VERIFIER_KEY))
        .filter(|k| k.is_file());
    format!(
        "gatehouse-verify {} --key {}",
        shell_quote(&ledger.display().to_string()),
        match key {
            Some(k) => shell_quote(&k.display().to_string()),
            None => "VERIFIER_KEY_FILE".to_owned(),
        }
    )
}

/// `s` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
