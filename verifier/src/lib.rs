//! `gatehouse-verify`: an independent verifier for Gatehouse ledgers.
//!
//! The ledger format is specified byte for byte in `docs/ledger-format.md`.
//! This crate implements that document on its own, without sharing code
//! with the writer (`ledger/`): an auditor should be able to read this crate
//! next to the specification and convince themselves that a ledger reported
//! intact really is, without having to trust the software that wrote it.
//!
//! One concept per module, so that each can be read against one section of
//! the specification:
//!
//! | module | specification | what it checks |
//! |---|---|---|
//! | [`cbor`] | section 2, 3 | the canonical CBOR subset and the record envelope |
//! | [`chain`] | section 4.1 | the BLAKE3 hash chain |
//! | [`merkle`] | section 4.2, 4.3 | RFC 6962 tree hashing and RFC 9162 proofs |
//! | [`note`] | section 5 | signed notes, verifier keys and checkpoint bodies |
//! | [`ledger`] | section 1 | read-only access to the SQLite container |
//! | [`verify`] | section 5.1, 6, 6.1 | the verification procedure and failure attribution |
//! | [`report`] | section 6 | what the procedure found, as text or JSON |
//! | [`bundle`] | section 8.1-8.3 | the evidence bundle encoding |
//! | [`bundle_verify`] | section 8.4, 8.5 | the bundle verification procedure |
//!
//! The entry points are [`verify_ledger`] and [`verify_bundle`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bundle;
pub mod bundle_verify;
pub mod cbor;
pub mod chain;
pub mod cluster;
pub mod ledger;
pub mod merkle;
pub mod note;
pub mod progress;
pub mod report;
pub mod rotation;
pub mod segments;
pub mod verify;

pub use bundle_verify::{verify_bundle, verify_bundle_bytes};
pub use cluster::{verify_cluster, ClusterReport};
pub use note::{Checkpoint, KeyError, NoteError, VerifierKey};
pub use report::{
    BundleFailure, BundleReport, Completeness, Failure, FailureClass, Report, UnsignedTail,
};
pub use verify::{verify_ledger, verify_ledger_with, VerifyError, VerifyOptions};
