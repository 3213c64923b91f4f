//! What a session asks of the gateway around it, as one narrow interface:
//! the relay depends on it, and the control layer implements it (its
//! shared state), so the relay imports nothing of the control layer.

use std::future::Future;
use std::sync::Arc;

use gatehouse_engine::approvals::Grant;
use gatehouse_engine::policy::Policy;
use gatehouse_engine::{Action, Classification, StatementClass};
use gatehouse_ledger::event::{ApprovalRequested, Nanos};
use gatehouse_ledger::{AppendError, Ledger};
use tokio::sync::oneshot;

use super::masking::Masking;
use super::session::Approval;

/// Something a session did that operators count (the control layer keeps
/// the metrics). Never row data.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// A statement was judged, and its judgement recorded.
    Statement {
        /// The session's identity.
        identity: &'a str,
        /// The session's target.
        target: &'a str,
        /// The verdict.
        action: Action,
        /// The statement's class.
        class: StatementClass,
        /// The deciding rule, if one decided.
        rule: Option<&'a str>,
    },
    /// Masking replaced `values` values with `strategy`.
    Masked {
        /// The strategy's name, as recorded.
        strategy: &'a str,
        /// How many values.
        values: u64,
    },
}

/// The gateway's services to its sessions.
pub trait Services: Send + Sync + 'static {
    /// Counts what a session did (metrics); cheap, never blocks.
    fn observe(&self, observation: Observation<'_>);
    /// The ledger every statement is recorded in before it runs.
    fn ledger(&self) -> &Ledger;
    /// The policy in force now.
    fn policy(&self) -> Arc<Policy>;
    /// The classification of a query string (cached).
    fn classify(&self, sql: &str) -> Arc<Classification>;
    /// Masking: the targets' catalogs and the hash key.
    fn masking(&self) -> &Masking;
    /// Why an identity is blocked, if it is.
    fn blocked(&self, identity: &str) -> Option<String>;
    /// Largest client frame accepted.
    fn max_frame(&self) -> usize;
    /// Result rows recorded per statement.
    fn record_rows(&self) -> usize;
    /// Most bytes of result values recorded per statement.
    fn record_bytes(&self) -> usize;
    /// Becomes true when the gateway stops.
    fn shutdown(&self) -> tokio::sync::watch::Receiver<bool>;
    /// The operators who may approve held statements, by name.
    fn approvers(&self) -> Vec<String>;
    /// A grant that lets `identity` run statements of `fingerprint` now.
    fn active_grant(&self, identity: &str, fingerprint: &str, now: Nanos) -> Option<Grant>;
    /// Records an approval request and holds it: its number, and where its
    /// outcome arrives.
    fn request_approval(
        &self,
        request: ApprovalRequested,
    ) -> impl Future<Output = Result<(u64, oneshot::Receiver<Approval>), AppendError>> + Send;
    /// Records that a held request timed out (or what decided it first).
    fn expire_approval(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Approval, AppendError>> + Send;
    /// Withdraws a held request (its client cancelled or left).
    fn withdraw_approval(
        &self,
        id: u64,
        reason: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Withdraws every request a session still holds (it ended).
    fn withdraw_session_approvals(
        &self,
        session: u64,
        reason: &str,
    ) -> impl Future<Output = Result<usize, AppendError>> + Send;
    /// Counts a denial of `identity` for automatic containment; the
    /// containment trigger, when the threshold is reached.
    fn note_denial(&self, identity: &str) -> Option<String>;
    /// Blocks an identity (automatic containment).
    fn block(
        &self,
        identity: &str,
        operator: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> impl Future<Output = Result<(), AppendError>> + Send;
}
