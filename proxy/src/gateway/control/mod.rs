//! The control layer: what runs the gateway around its sessions. Accepting
//! and logging in clients (`server`, `scram`, `pending_logins`), the state
//! every session shares (`shared`), approvals and grants (`approvals`),
//! the admin API (`admin`, `admin_tls`), the console (`console`), chat
//! (`slack`, `chat_links`), webhooks and snapshots.

pub mod admin;
pub mod admin_tls;
pub mod approvals;
pub mod archive;
pub mod chat_links;
pub mod cluster;
pub mod console;
pub mod ledger_thread;
pub mod metrics;
pub mod pending_logins;
pub mod scram;
pub mod server;
pub mod shared;
pub mod slack;
pub mod snapshots;
pub mod webhooks;
