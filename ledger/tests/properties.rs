//! Property tests: record encoding round-trips and is unique; the chain
//! commits to every record and its position.

use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::chain;
use gatehouse_ledger::event::*;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z_.]{0,12}", Just(String::new())]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes)
}

fn param() -> impl Strategy<Value = Param> {
    (0u16..3, proptest::option::of(bytes())).prop_map(|(format, value)| Param { format, value })
}

fn result_column() -> impl Strategy<Value = ResultColumn> {
    (text(), any::<u32>(), 0u16..2).prop_map(|(name, type_oid, format)| ResultColumn {
        name,
        type_oid,
        format,
    })
}

fn result_row() -> impl Strategy<Value = ResultRow> {
    proptest::collection::vec(proptest::option::of(bytes()), 0..4)
        .prop_map(|values| ResultRow { values })
}

fn class() -> impl Strategy<Value = StatementClass> {
    proptest::sample::select(StatementClass::ALL)
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (
            any::<u64>(),
            text(),
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            any::<bool>()
        )
            .prop_map(
                |(session, identity, target, client_addr, application_name, credential, tls)| {
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
        (
            any::<u64>(),
            text(),
            any::<u64>(),
            text(),
            proptest::collection::vec(param(), 0..4),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::sample::select(Protocol::ALL)
        )
            .prop_map(
                |(session, identity, query, sql, params, statement, portal, protocol)| {
                    QueryReceived {
                        session,
                        identity,
                        query,
                        sql,
                        params,
                        statement,
                        portal,
                        protocol,
                    }
                    .into()
                }
            ),
        (
            any::<u64>(),
            text(),
            any::<u64>(),
            proptest::sample::select(Action::ALL),
            proptest::option::of(text()),
            class(),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of(text())
        )
            .prop_map(
                |(session, identity, query, action, rule, class, tables, columns, message)| {
                    Decision {
                        session,
                        identity,
                        query,
                        action,
                        rule,
                        class,
                        tables,
                        columns,
                        message,
                    }
                    .into()
                }
            ),
        (
            any::<u64>(),
            text(),
            any::<u64>(),
            proptest::collection::vec((text(), text(), any::<u64>()), 0..3)
        )
            .prop_map(|(session, identity, query, cols)| {
                let columns = cols
                    .into_iter()
                    .map(|(column, strategy, values)| MaskedColumn {
                        column,
                        strategy,
                        values,
                    })
                    .collect();
                MaskApplied {
                    session,
                    identity,
                    query,
                    columns,
                }
                .into()
            }),
        (
            text(),
            text(),
            text(),
            any::<u64>(),
            bytes(),
            any::<u32>(),
            bytes(),
            bytes()
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
        (
            (
                any::<u64>(),
                text(),
                any::<u64>(),
                proptest::option::of(text()),
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(text()),
                proptest::option::of(text()),
                any::<u64>()
            ),
            (
                proptest::collection::vec(result_column(), 0..4),
                proptest::collection::vec(result_row(), 0..4),
                any::<bool>(),
                proptest::option::of(bytes()),
            )
        )
            .prop_map(
                |(
                    (
                        session,
                        identity,
                        query,
                        command_tag,
                        rows,
                        duration_ns,
                        sqlstate,
                        error,
                        bytes,
                    ),
                    (columns, result, truncated, result_digest),
                )| {
                    Response {
                        session,
                        identity,
                        query,
                        command_tag,
                        rows,
                        duration_ns,
                        sqlstate,
                        error,
                        bytes,
                        columns,
                        result,
                        truncated,
                        result_digest,
                    }
                    .into()
                }
            ),
        (any::<u64>(), bytes(), bytes()).prop_map(|(covers, state, state_hash)| Snapshot {
            covers,
            state,
            state_hash
        }
        .into()),
        (any::<u64>(), any::<u64>(), text()).prop_map(|(approval, session, identity)| {
            ApprovalExpired {
                approval,
                session,
                identity,
            }
            .into()
        }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), any::<u64>(), body()).prop_map(|(seq, ts, body)| Event { seq, ts, body })
}

proptest! {
    #[test]
    fn records_round_trip(e in event()) {
        let bytes = e.to_bytes();
        let back = Event::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn no_other_bytes_decode_to_the_same_event(e in event(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let bytes = e.to_bytes();
        let mut mutated = bytes.clone();
        let i = at.index(mutated.len());
        mutated[i] ^= xor;
        if let Ok(other) = Event::from_bytes(&mutated) {
            prop_assert_ne!(other, e, "two encodings of one event");
        }
        for len in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(Event::from_bytes(&bytes[..len]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Event::from_bytes(&longer).is_err());
    }

    #[test]
    fn chain_commits_to_every_record_and_its_position(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 2..20),
        at in any::<prop::sample::Index>(),
    ) {
        let links = |rs: &[Vec<u8>]| {
            let mut out = Vec::new();
            let mut l = chain::GENESIS;
            for r in rs {
                l = chain::link(&l, r);
                out.push(l);
            }
            out
        };
        let original = links(&records);
        let i = at.index(records.len());
        let mut edited = records.clone();
        edited[i].push(0x2a);
        let changed = links(&edited);
        prop_assert_eq!(&original[..i], &changed[..i]);
        for j in i..records.len() {
            prop_assert_ne!(original[j], changed[j], "link {} must change", j);
        }
        if records[i] != records[(i + 1) % records.len()] {
            let mut swapped = records.clone();
            swapped.swap(i, (i + 1) % records.len());
            let head = links(&swapped).last().copied();
            prop_assert_ne!(head, original.last().copied());
        }
    }
}
