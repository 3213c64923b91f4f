//! The relay: one client session's path to the database. The protocol
//! bookkeeping of what PostgreSQL holds (`server_names`, pure), the session
//! loop that judges, records and forwards (`session`), the upstream
//! connection (`upstream`), what the target's catalog says (`catalog`) and
//! inline masking (`masking`).
//!
//! What a session needs from the gateway around it (the ledger, policy,
//! approvals, blocks) comes through [`services::Services`], which the
//! control layer implements: the relay imports nothing of it.

pub mod catalog;
pub mod masking;
pub mod read_ahead;
pub mod server_names;
pub mod services;
pub mod session;
pub mod upstream;
