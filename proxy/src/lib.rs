//! The `gatehouse` binary's building blocks: configuration, the gateway in
//! the data path, operator commands and the demo. A library so that
//! integration tests can run a gateway in-process against a real PostgreSQL.

#![warn(missing_docs)]

pub mod admin_client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod export;
pub mod gateway;
pub mod init;
pub mod replay;
pub mod state;
