//! Snapshots: the whole [`GatewayState`] in one canonical, versioned
//! encoding, so start-up and time travel fold one snapshot plus the events
//! after it instead of the whole ledger.
//!
//! # Encoding (version 3)
//!
//! A CBOR map `{0: version, 1: state}` in the ledger's canonical subset
//! (docs/ledger-format.md, section 3): every struct is a map with small
//! integer keys in increasing order, every field present; a map with
//! arbitrary keys (identities by name, sessions by id, ...) is an array of
//! `[key, value]` pairs in strictly increasing key order; sets are arrays in
//! increasing order. The keys of each struct are listed next to it (the
//! `cbor_record!` invocations in `state.rs`, `identities.rs`, `operators.rs`
//! and `approvals.rs`). Decoding is strict, so one state has exactly one
//! encoding and the **state hash**, BLAKE3 of the encoding, identifies the
//! state: two folds agree exactly when their hashes do.
//!
//! Version 2 added the bind parameters of approval requests and ends grants
//! on a block or a credential revocation; version 3 records disabled
//! identities (and folds operator removals). A snapshot of an older
//! version describes the state as an older Gatehouse folded it, so it is
//! not used (nor checked against today's fold).
//!
//! A reader that meets a version it does not know refuses the snapshot
//! ([`SnapshotError::UnknownVersion`]) and folds from the first event
//! instead; a snapshot is a shortcut, never the only copy of anything.
//!
//! # Trust
//!
//! A `Snapshot` event is signed and chained like every other event, and only
//! the gateway, holding the signing key, writes one. Signatures prove who
//! wrote it, not that its state is the fold of the events before it: a bug
//! in the fold, or anyone holding the key, could record a snapshot whose
//! state differs from that fold (an identity that was never blocked, a
//! credential never revoked), and a gateway restarting from it would
//! enforce that state. So:
//!
//! - [`restore`] checks the state hash and that the state folded exactly
//!   `covers` events, catching damage and careless edits cheaply;
//! - `gatehouse state --check` folds the ledger from its first event and
//!   compares every snapshot's hash with the fold's, reporting the first
//!   mismatch. Auditors run it next to `gatehouse-verify`; a mismatch means
//!   the snapshot must not be used and its writer must be investigated.
//!
//! The state holds SCRAM verifiers and operator token hashes, exactly as the
//! `CredentialIssued` and `OperatorAdded` events before it do: a snapshot
//! reveals nothing the ledger does not already hold.

use std::fmt;

use gatehouse_ledger::cbor::{Bytes, Cbor, Dec, DecodeError, Enc};
use gatehouse_ledger::event::Snapshot;

use crate::state::GatewayState;

/// The encoding version this build writes and reads.
pub const VERSION: u64 = 5;

/// BLAKE3 of a state's snapshot encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateHash(pub [u8; 32]);

impl StateHash {
    /// The hash of already-encoded state.
    pub fn of_encoding(encoded: &[u8]) -> StateHash {
        StateHash(*blake3::hash(encoded).as_bytes())
    }
}

impl fmt::Display for StateHash {
    /// Lower-case hex, as `gatehouse state --hash` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Written by a Gatehouse with a newer encoding.
    #[error("snapshot encoding version {0} is not one this Gatehouse reads (it reads version {VERSION}); state must be folded from the first event")]
    UnknownVersion(u64),
    /// The bytes are not a state of this version.
    #[error("snapshot state does not decode: {0}")]
    Malformed(#[from] DecodeError),
    /// The stored hash is not the hash of the stored state.
    #[error("the snapshot's state does not hash to its recorded state hash: it is damaged or forged; run `gatehouse state --check` and gatehouse-verify")]
    HashMismatch,
    /// The state does not describe the events the snapshot claims to cover.
    #[error("the snapshot claims to cover {covers} events but its state folded {events}: it is damaged or forged; run `gatehouse state --check`")]
    CoversMismatch {
        /// What the snapshot event says.
        covers: u64,
        /// What its state says.
        events: u64,
    },
}

/// The canonical encoding of `state`.
pub fn encode(state: &GatewayState) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.map(2);
    enc.uint(0);
    enc.uint(VERSION);
    enc.uint(1);
    state.encode(&mut enc);
    enc.into_bytes()
}

/// Decodes [`encode`]'s output, refusing any other bytes.
pub fn decode(bytes: &[u8]) -> Result<GatewayState, SnapshotError> {
    let mut dec = Dec::new(bytes);
    let offset = dec.offset();
    if dec.map()? != 2 {
        return Err(DecodeError::Unexpected {
            offset,
            expected: "a snapshot map {0: version, 1: state}",
        }
        .into());
    }
    dec.key(0)?;
    let version = dec.uint()?;
    if version != VERSION {
        return Err(SnapshotError::UnknownVersion(version));
    }
    dec.key(1)?;
    let state = GatewayState::decode(&mut dec)?;
    dec.finish()?;
    if encode(&state) != bytes {
        return Err(DecodeError::NotCanonical.into());
    }
    Ok(state)
}

/// The hash identifying `state`.
pub fn state_hash(state: &GatewayState) -> StateHash {
    StateHash::of_encoding(&encode(state))
}

/// The `Snapshot` event body recording `state` (which covers `state.events`
/// events).
pub fn snapshot(state: &GatewayState) -> Snapshot {
    let encoded = encode(state);
    let hash = StateHash::of_encoding(&encoded);
    Snapshot {
        covers: state.events,
        state: Bytes(encoded),
        state_hash: Bytes(hash.0.to_vec()),
    }
}

/// The state a `Snapshot` event records, after checking that it hashes to
/// the recorded hash and folded exactly the events it claims to cover.
/// Does not (cannot) check that it is the fold of those events: that is
/// `gatehouse state --check`.
pub fn restore(snapshot: &Snapshot) -> Result<GatewayState, SnapshotError> {
    if StateHash::of_encoding(&snapshot.state.0).0[..] != snapshot.state_hash.0[..] {
        return Err(SnapshotError::HashMismatch);
    }
    let state = decode(&snapshot.state.0)?;
    if state.events != snapshot.covers {
        return Err(SnapshotError::CoversMismatch {
            covers: snapshot.covers,
            events: state.events,
        });
    }
    Ok(state)
}

/// The parts of two states that differ, by name, for reports explaining a
/// hash mismatch.
pub fn differing_parts(a: &GatewayState, b: &GatewayState) -> Vec<&'static str> {
    let parts = [
        ("identities", a.identities != b.identities),
        ("operators", a.operators != b.operators),
        ("policy", a.policy != b.policy),
        ("blocks", a.blocks != b.blocks),
        ("sessions", a.sessions != b.sessions),
        ("approvals", a.approvals != b.approvals),
        ("last_session", a.last_session != b.last_session),
        ("events", a.events != b.events),
        ("as_of", a.as_of != b.as_of),
        ("key_rotations", a.key_rotations != b.key_rotations),
    ];
    parts
        .into_iter()
        .filter(|(_, differ)| *differ)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::event::{
        Action, ApprovalDenied, ApprovalExpired, ApprovalGranted, ApprovalRequested,
        AuthenticationFailed, CredentialIssued, CredentialRevoked, Decision, EventBody,
        IdentityBlocked, IdentityCreated, IdentityUnblocked, KeyRotated, MaskApplied,
        OperatorAction, OperatorAdded, PolicyChanged, Protocol, QueryReceived, Response,
        SessionClosed, SessionOpened, SessionTerminated, Statement, StatementClass,
    };
    use gatehouse_ledger::Event;
    use proptest::prelude::*;

    /// Mostly a few names, so events about the same things meet; sometimes
    /// any text at all.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["agent", "bot", "reader", "alice", "bob"])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn opt_name() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(name())
    }

    fn small_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(0u8..4, 0..3).prop_map(Bytes)
    }

    fn session_id() -> impl Strategy<Value = u64> {
        prop_oneof![4 => 0u64..6, 1 => any::<u64>()]
    }

    fn body() -> impl Strategy<Value = EventBody> {
        let sessions = prop_oneof![
            (
                session_id(),
                name(),
                name(),
                name(),
                opt_name(),
                opt_name(),
                any::<bool>()
            )
                .prop_map(
                    |(
                        session,
                        identity,
                        target,
                        client_addr,
                        application_name,
                        credential,
                        tls,
                    )| {
                        SessionOpened {
                            session,
                            identity,
                            target,
                            client_addr,
                            application_name,
                            credential,
                            tls,
                        }
                        .into()
                    }
                ),
            (session_id(), name(), name(), any::<u64>()).prop_map(
                |(session, identity, reason, statements)| {
                    SessionClosed {
                        session,
                        identity,
                        reason,
                        statements,
                    }
                    .into()
                }
            ),
            (session_id(), name(), opt_name(), name()).prop_map(
                |(session, identity, operator, reason)| {
                    SessionTerminated {
                        session,
                        identity,
                        operator,
                        reason,
                    }
                    .into()
                }
            ),
            (session_id(), name(), any::<u64>(), name()).prop_map(
                |(session, identity, query, sql)| {
                    QueryReceived {
                        session,
                        identity,
                        query,
                        sql,
                        params: vec![],
                        statement: None,
                        portal: None,
                        protocol: Protocol::Simple,
                    }
                    .into()
                }
            ),
            (session_id(), name(), any::<u64>()).prop_map(|(session, identity, query)| {
                Response {
                    session,
                    identity,
                    query,
                    command_tag: Some("SELECT 1".into()),
                    rows: 1,
                    duration_ns: 5,
                    sqlstate: None,
                    error: None,
                    bytes: 10,
                    columns: vec![],
                    result: vec![],
                    truncated: false,
                    result_digest: None,
                }
                .into()
            }),
        ];
        let identities = prop_oneof![
            (name(), name(), opt_name()).prop_map(|(identity, operator, description)| {
                IdentityCreated {
                    identity,
                    operator,
                    description,
                }
                .into()
            }),
            (
                name(),
                name(),
                name(),
                any::<u64>(),
                small_bytes(),
                any::<u32>(),
                small_bytes(),
                small_bytes()
            )
                .prop_map(
                    |(
                        credential,
                        identity,
                        operator,
                        expires_at,
                        salt,
                        iterations,
                        stored_key,
                        server_key,
                    )| {
                        CredentialIssued {
                            credential,
                            identity,
                            operator,
                            expires_at,
                            salt,
                            iterations,
                            stored_key,
                            server_key,
                        }
                        .into()
                    }
                ),
            (name(), name(), name(), name()).prop_map(
                |(credential, identity, operator, reason)| {
                    CredentialRevoked {
                        credential,
                        identity,
                        operator,
                        reason,
                    }
                    .into()
                }
            ),
            (name(), name(), name(), opt_name()).prop_map(
                |(identity, operator, reason, trigger)| {
                    IdentityBlocked {
                        identity,
                        operator,
                        reason,
                        trigger,
                    }
                    .into()
                }
            ),
            (name(), name(), opt_name()).prop_map(|(identity, operator, reason)| {
                IdentityUnblocked {
                    identity,
                    operator,
                    reason,
                }
                .into()
            }),
            (name(), name()).prop_map(|(operator, source)| {
                PolicyChanged {
                    operator,
                    source,
                    digest: Bytes(vec![]),
                }
                .into()
            }),
            (
                name(),
                proptest::collection::vec(
                    prop::sample::select(vec![
                        "admin",
                        "approver",
                        "responder",
                        "auditor",
                        "astronaut"
                    ])
                    .prop_map(str::to_owned),
                    0..4
                ),
                small_bytes(),
                name()
            )
                .prop_map(|(operator, roles, token_hash, added_by)| {
                    OperatorAdded {
                        operator,
                        roles,
                        token_hash,
                        added_by,
                    }
                    .into()
                }),
        ];
        let approvals = prop_oneof![
            (
                0u64..5,
                session_id(),
                name(),
                name(),
                name(),
                name(),
                0u64..3,
                any::<u64>()
            )
                .prop_map(
                    |(approval, session, identity, sql, rule, fingerprint, quorum, expires_at)| {
                        ApprovalRequested {
                            approval,
                            session,
                            identity,
                            query: 1,
                            sql,
                            params: vec![],
                            class: StatementClass::Write,
                            rule,
                            binding: Bytes(vec![7; 32]),
                            quorum,
                            expires_at,
                            fingerprint,
                        }
                        .into()
                    }
                ),
            (
                0u64..5,
                name(),
                proptest::option::of(any::<u64>()),
                session_id(),
                name()
            )
                .prop_map(|(approval, operator, grant_until, session, identity)| {
                    ApprovalGranted {
                        approval,
                        operator,
                        grant_until,
                        session,
                        identity,
                    }
                    .into()
                }),
            (0u64..5, opt_name(), name(), session_id(), name()).prop_map(
                |(approval, operator, reason, session, identity)| {
                    ApprovalDenied {
                        approval,
                        operator,
                        reason,
                        session,
                        identity,
                    }
                    .into()
                }
            ),
            (0u64..5, session_id(), name()).prop_map(|(approval, session, identity)| {
                ApprovalExpired {
                    approval,
                    session,
                    identity,
                }
                .into()
            }),
        ];
        let counted = prop_oneof![
            (session_id(), name(), any::<u64>(), name(), any::<bool>()).prop_map(
                |(session, identity, query, sql, deny)| {
                    Statement {
                        session,
                        identity,
                        query,
                        sql,
                        params: vec![],
                        statement: None,
                        portal: None,
                        protocol: Protocol::Extended,
                        action: if deny { Action::Deny } else { Action::Allow },
                        rule: None,
                        class: StatementClass::Read,
                        tables: vec![],
                        columns: vec![],
                        message: None,
                    }
                    .into()
                }
            ),
            (session_id(), name(), any::<u64>(), any::<bool>()).prop_map(
                |(session, identity, query, deny)| {
                    Decision {
                        session,
                        identity,
                        query,
                        action: if deny { Action::Deny } else { Action::Allow },
                        rule: None,
                        class: StatementClass::Read,
                        tables: vec![],
                        columns: vec![],
                        message: None,
                    }
                    .into()
                }
            ),
            (session_id(), name(), any::<u64>()).prop_map(|(session, identity, query)| {
                MaskApplied {
                    session,
                    identity,
                    query,
                    columns: vec![],
                }
                .into()
            }),
            (name(), name(), opt_name(), name()).prop_map(
                |(identity, client_addr, target, reason)| {
                    AuthenticationFailed {
                        identity,
                        client_addr,
                        target,
                        reason,
                    }
                    .into()
                }
            ),
            (name(), name(), opt_name()).prop_map(|(operator, action, target)| {
                OperatorAction {
                    operator,
                    action,
                    target,
                    outcome: "ok".into(),
                    detail: None,
                }
                .into()
            }),
            (name(), name(), name()).prop_map(|(operator, old_key, new_key)| {
                KeyRotated {
                    operator,
                    old_key,
                    new_key,
                }
                .into()
            }),
            any::<u64>().prop_map(|covers| {
                Snapshot {
                    covers,
                    state: Bytes(vec![1]),
                    state_hash: Bytes(vec![2]),
                }
                .into()
            }),
        ];
        prop_oneof![
            4 => sessions.boxed(),
            3 => identities.boxed(),
            2 => approvals.boxed(),
            2 => counted.boxed()
        ]
    }

    /// A log: bodies with sequence numbers from 0 and non-decreasing times.
    fn log() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec((body(), 0u64..1_000), 0..60).prop_map(|items| {
            let mut ts = 1_700_000_000_000_000_000;
            items
                .into_iter()
                .enumerate()
                .map(|(i, (body, step))| {
                    ts += step;
                    Event {
                        seq: i as u64,
                        ts,
                        body,
                    }
                })
                .collect()
        })
    }

    fn fold(events: &[Event]) -> GatewayState {
        let mut state = GatewayState::default();
        for e in events {
            state.apply(e);
        }
        state
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn states_round_trip_and_equal_states_encode_identically(events in log()) {
            let state = fold(&events);
            let bytes = encode(&state);
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(&back, &state);
            prop_assert_eq!(encode(&back), bytes.clone());
            // A second fold builds equal maps with other hash seeds and
            // insertion histories; the encoding must not notice.
            let again = fold(&events);
            prop_assert_eq!(&again, &state);
            prop_assert_eq!(encode(&again), bytes);
        }

        #[test]
        fn snapshot_plus_tail_is_the_fold_from_genesis(events in log(), at in any::<prop::sample::Index>()) {
            let whole = fold(&events);
            let cut = at.index(events.len() + 1);
            let recorded = snapshot(&fold(&events[..cut]));
            prop_assert_eq!(recorded.covers, cut as u64);
            let mut state = restore(&recorded).unwrap();
            for e in &events[cut..] {
                state.apply(e);
            }
            prop_assert_eq!(state_hash(&state), state_hash(&whole));
            prop_assert_eq!(state, whole);
        }

        #[test]
        fn folding_records_without_their_bodies_is_the_same_fold(events in log()) {
            let mut from_records = GatewayState::default();
            for e in &events {
                from_records.apply_record(&e.to_bytes()).unwrap();
            }
            prop_assert_eq!(from_records, fold(&events));
        }

        #[test]
        fn no_other_bytes_decode_to_a_state(events in log(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let bytes = encode(&fold(&events));
            let mut mutated = bytes.clone();
            let i = at.index(mutated.len());
            mutated[i] ^= xor;
            if let Ok(other) = decode(&mutated) {
                prop_assert_ne!(encode(&other), bytes.clone());
            }
            for len in [0, i, bytes.len() - 1] {
                prop_assert!(decode(&bytes[..len]).is_err());
            }
        }
    }

    #[test]
    fn restore_refuses_damaged_forged_and_future_snapshots() {
        let mut state = GatewayState::default();
        state.apply(&Event {
            seq: 0,
            ts: 5,
            body: IdentityCreated {
                identity: "bot".into(),
                operator: "alice".into(),
                description: None,
            }
            .into(),
        });
        let good = snapshot(&state);
        assert_eq!(restore(&good).unwrap(), state);

        let mut damaged = good.clone();
        *damaged.state.0.last_mut().unwrap() ^= 1;
        assert_eq!(restore(&damaged), Err(SnapshotError::HashMismatch));

        // Consistent with its own hash, but claiming other events.
        let mut forged = good.clone();
        forged.covers = 7;
        assert_eq!(
            restore(&forged),
            Err(SnapshotError::CoversMismatch {
                covers: 7,
                events: 1
            })
        );

        let mut future = encode(&state);
        assert_eq!(future[2], VERSION as u8);
        future[2] = VERSION as u8 + 1;
        let future = Snapshot {
            covers: 1,
            state_hash: Bytes(StateHash::of_encoding(&future).0.to_vec()),
            state: Bytes(future),
        };
        assert_eq!(
            restore(&future),
            Err(SnapshotError::UnknownVersion(VERSION + 1))
        );
    }

    #[test]
    fn the_empty_state_has_a_fixed_encoding() {
        // {0: 5, 1: {0: [], 1: {0: [], 1: []}, 2: null, 3: [], 4: [],
        //  5: {0: [], 1: []}, 6: 0, 7: 0, 8: null, 9: []}}
        let expected = [
            0xa2, 0x00, 0x05, 0x01, 0xaa, 0x00, 0xa1, 0x00, 0x80, 0x01, 0xa2, 0x00, 0x80, 0x01,
            0x80, 0x02, 0xf6, 0x03, 0x80, 0x04, 0x80, 0x05, 0xa2, 0x00, 0x80, 0x01, 0x80, 0x06,
            0x00, 0x07, 0x00, 0x08, 0xf6, 0x09, 0x80,
        ];
        assert_eq!(encode(&GatewayState::default()), expected);
        assert_eq!(
            state_hash(&GatewayState::default()),
            StateHash::of_encoding(&expected)
        );
    }

    #[test]
    fn differing_parts_name_what_differs() {
        let a = GatewayState::default();
        let mut b = a.clone();
        b.last_session = 3;
        b.events = 1;
        assert_eq!(differing_parts(&a, &b), vec!["last_session", "events"]);
        assert!(differing_parts(&a, &a).is_empty());
    }
}
