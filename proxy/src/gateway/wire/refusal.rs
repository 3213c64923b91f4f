//! What kind of refusal an error from Gatehouse itself is, in a field a
//! program can read without parsing prose.
//!
//! PostgreSQL's ErrorResponse has a "routine" field (`R`), the source
//! function that raised the error; every driver exposes it (psycopg
//! `diag.source_function`, asyncpg `routine`, node-postgres `routine`,
//! JDBC `ServerErrorMessage.getRoutine()`). Errors the gateway writes
//! itself carry `gatehouse_<kind>` there, so an agent's tool tells a final
//! refusal from one worth retrying by one string compare; the SQLSTATE and
//! message stay what PostgreSQL clients expect. docs/agents.md is the
//! contract.

/// Why Gatehouse refused, as the `R` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Policy denied the statement (42501). Final for this statement.
    PolicyDenied,
    /// An approver denied the held statement (42501). Final.
    ApprovalDenied,
    /// No approver decided in time (57014). The same statement may be
    /// tried again, to be held again.
    ApprovalExpired,
    /// The held statement was withdrawn: the client cancelled, or the
    /// gateway refused it itself (a block, a restart) (57014 or 42501).
    ApprovalWithdrawn,
    /// The identity is blocked (28000 at login; the session ends 57P01).
    /// Final until an operator unblocks it.
    IdentityBlocked,
    /// The identity was disabled (retired) (28000 at login). Final.
    IdentityDisabled,
    /// An operator or the gateway ended the session (57P01).
    SessionEnded,
    /// The gateway is shutting down (57P01). Retry after reconnecting.
    ShuttingDown,
    /// The ledger cannot record now, so nothing runs (58030). Retryable.
    LedgerUnavailable,
    /// A statement or portal name the gateway cannot vouch for (26000,
    /// 34000): prepare or bind it again.
    UnknownName,
}

impl Refusal {
    /// The `R` field's value.
    pub fn routine(self) -> &'static str {
        match self {
            Refusal::PolicyDenied => "gatehouse_policy_denied",
            Refusal::ApprovalDenied => "gatehouse_approval_denied",
            Refusal::ApprovalExpired => "gatehouse_approval_expired",
            Refusal::ApprovalWithdrawn => "gatehouse_approval_withdrawn",
            Refusal::IdentityBlocked => "gatehouse_identity_blocked",
            Refusal::IdentityDisabled => "gatehouse_identity_disabled",
            Refusal::SessionEnded => "gatehouse_session_ended",
            Refusal::ShuttingDown => "gatehouse_shutting_down",
            Refusal::LedgerUnavailable => "gatehouse_ledger_unavailable",
            Refusal::UnknownName => "gatehouse_unknown_name",
        }
    }
}

/// The `R` value of the notice sent while a statement is held for approval.
pub const HELD: &str = "gatehouse_held";

/// The `R` value of the notice sent after a result Gatehouse masked.
pub const MASKED: &str = "gatehouse_masked";
