//! The relay: one client session's path to the database. The protocol
//! bookkeeping of what PostgreSQL holds (`server_names`, pure), the session
//! loop that judges, records and forwards (`session`), the upstream
//! connection (`upstream`), what the target's catalog says (`catalog`) and
//! inline masking (`masking`).
//!
//! Still to untangle (issue 12): the relay depends on the control layer in
//! one place, on the statement path: `control::shared::Shared` (policy,
//! the ledger writer, blocks, containment, the approval desk). The control
//! layer starts sessions, so the two layers import each other there. The
//! next step is a narrow interface the relay is given, which the control
//! layer implements.

pub mod catalog;
pub mod masking;
pub mod read_ahead;
pub mod server_names;
pub mod session;
pub mod upstream;
