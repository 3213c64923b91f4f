//! The timeline model and its renderers, from hand-built events.

use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::{self as ev, Action, EventBody, Protocol, StatementClass};
use gatehouse_ledger::Event;

use super::value::Value;
use super::*;

const T0: u64 = 1_764_064_800_000_000_000; // 2025-11-25T10:00:00Z

/// A log: events numbered from 0, one millisecond apart.
fn log(bodies: Vec<EventBody>) -> Vec<Event> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Event {
            seq: i as u64,
            ts: T0 + i as u64 * 1_000_000,
            body,
        })
        .collect()
}

fn opened(session: u64, identity: &str, app: &str) -> EventBody {
    ev::SessionOpened {
        session,
        identity: identity.into(),
        target: "shop".into(),
        client_addr: "127.0.0.1:5555".into(),
        application_name: Some(app.into()),
        credential: Some("cred-1".into()),
        tls: false,
    }
    .into()
}

fn received(
    session: u64,
    identity: &str,
    query: u64,
    sql: &str,
    params: Vec<ev::Param>,
) -> EventBody {
    let protocol = if params.is_empty() {
        Protocol::Simple
    } else {
        Protocol::Extended
    };
    ev::QueryReceived {
        session,
        identity: identity.into(),
        query,
        sql: sql.into(),
        params,
        statement: None,
        portal: None,
        protocol,
    }
    .into()
}

fn decision(
    session: u64,
    query: u64,
    action: Action,
    rule: Option<&str>,
    message: Option<&str>,
) -> EventBody {
    ev::Decision {
        session,
        identity: "agent".into(),
        query,
        action,
        rule: rule.map(Into::into),
        class: StatementClass::Read,
        tables: vec!["public.customers".into()],
        columns: vec!["public.customers.ssn".into()],
        message: message.map(Into::into),
    }
    .into()
}

fn response(
    session: u64,
    query: u64,
    rows: Vec<Vec<Option<&[u8]>>>,
    error: Option<(&str, &str)>,
) -> EventBody {
    ev::Response {
        session,
        identity: "agent".into(),
        query,
        command_tag: error.is_none().then(|| format!("SELECT {}", rows.len())),
        rows: rows.len() as u64 + 1,
        duration_ns: 1_234_567,
        sqlstate: error.map(|e| e.0.into()),
        error: error.map(|e| e.1.into()),
        bytes: 321,
        columns: vec![
            ev::ResultColumn {
                name: "id".into(),
                type_oid: 23,
                format: 1,
            },
            ev::ResultColumn {
                name: "name".into(),
                type_oid: 25,
                format: 0,
            },
        ],
        result: rows
            .into_iter()
            .map(|r| ev::ResultRow {
                values: r.into_iter().map(|v| v.map(Bytes::from)).collect(),
            })
            .collect(),
        truncated: true,
        result_digest: Some(Bytes(vec![0xab; 32])),
    }
    .into()
}

/// Two sessions of `agent`, one of `reader`, identity events, approvals.
fn scenario() -> Vec<Event> {
    log(vec![
        ev::CredentialIssued {
            credential: "cred-1".into(),
            identity: "agent".into(),
            operator: "alice".into(),
            expires_at: T0 + 3_600_000_000_000,
            salt: Bytes(vec![1; 16]),
            iterations: 4096,
            stored_key: Bytes(vec![2; 32]),
            server_key: Bytes(vec![3; 32]),
        }
        .into(), // 0
        opened(1, "agent", "psql"), // 1
        received(1, "agent", 1, "SELECT id, name FROM customers", vec![]), // 2
        decision(1, 1, Action::Allow, Some("agent-reads"), None), // 3
        opened(2, "reader", "other"), // 4
        ev::MaskApplied {
            session: 1,
            identity: "agent".into(),
            query: 1,
            columns: vec![ev::MaskedColumn {
                column: "public.customers.email".into(),
                strategy: "email".into(),
                values: 2,
            }],
        }
        .into(), // 5
        response(
            1,
            1,
            vec![
                vec![Some(&[0, 0, 0, 1]), Some(b"alice")],
                vec![Some(&[0, 0, 0, 2]), None],
            ],
            None,
        ), // 6
        received(
            1,
            "agent",
            2,
            "SELECT ssn FROM customers WHERE id = $1 AND name = $2 AND x = $3",
            vec![
                ev::Param {
                    format: 1,
                    value: Some(Bytes(vec![0, 0, 0, 7])),
                },
                ev::Param {
                    format: 0,
                    value: Some(Bytes(b"bob".to_vec())),
                },
                ev::Param {
                    format: 0,
                    value: None,
                },
            ],
        ), // 7
        decision(
            1,
            2,
            Action::Deny,
            Some("no-ssn"),
            Some("SSNs are off limits"),
        ), // 8
        received(1, "agent", 3, "DELETE FROM orders", vec![]), // 9
        decision(1, 3, Action::RequireApproval, Some("held-deletes"), None), // 10
        ev::ApprovalRequested {
            approval: 7,
            session: 1,
            identity: "agent".into(),
            query: 3,
            sql: "DELETE FROM orders".into(),
            params: vec![],
            class: StatementClass::Write,
            rule: "held-deletes".into(),
            binding: Bytes(vec![0xcd; 32]),
            quorum: 2,
            expires_at: T0 + 60_000_000_000,
            fingerprint: "DELETE FROM orders".into(),
        }
        .into(), // 11
        ev::ApprovalGranted {
            approval: 7,
            operator: "bob".into(),
            grant_until: Some(T0 + 120_000_000_000),
            session: 1,
            identity: "agent".into(),
        }
        .into(), // 12
        ev::ApprovalDenied {
            approval: 7,
            operator: Some("carol".into()),
            reason: "not today".into(),
            session: 1,
            identity: "agent".into(),
        }
        .into(), // 13
        received(1, "agent", 4, "SELECT * FROM nope", vec![]), // 14
        decision(1, 4, Action::Allow, Some("agent-reads"), None), // 15
        response(
            1,
            4,
            vec![],
            Some(("42P01", "relation \"nope\" does not exist")),
        ), // 16
        ev::IdentityBlocked {
            identity: "agent".into(),
            operator: "gatehouse".into(),
            reason: "too many denials".into(),
            trigger: Some("denials".into()),
        }
        .into(), // 17
        ev::SessionTerminated {
            session: 1,
            identity: "agent".into(),
            operator: None,
            reason: "identity blocked".into(),
        }
        .into(), // 18
        ev::SessionClosed {
            session: 1,
            identity: "agent".into(),
            reason: "identity blocked".into(),
            statements: 4,
        }
        .into(), // 19
        ev::AuthenticationFailed {
            identity: "agent".into(),
            client_addr: "127.0.0.1:6666".into(),
            target: Some("shop".into()),
            reason: "identity is blocked".into(),
        }
        .into(), // 20
        opened(3, "agent", "later"), // 21
    ])
}

fn statement(t: &Timeline, session: u64, query: u64) -> &Statement {
    t.statements()
        .find(|s| s.session == session && s.query == query)
        .unwrap_or_else(|| panic!("statement {session}/{query} in the timeline"))
}

/// The one-event record (kind 25) and the pair older ledgers hold
/// (QueryReceived, Decision) make the same statement entry.
#[test]
fn a_statement_record_reads_as_the_pair_it_replaces() {
    let params = vec![ev::Param {
        format: 0,
        value: Some(Bytes(b"7".to_vec())),
    }];
    let (EventBody::QueryReceived(r), EventBody::Decision(d)) = (
        received(
            1,
            "agent",
            1,
            "SELECT ssn FROM customers WHERE id = $1",
            params,
        ),
        decision(1, 1, Action::Deny, Some("no-ssn"), Some("no SSNs")),
    ) else {
        unreachable!()
    };
    let one = ev::Statement {
        session: 1,
        identity: r.identity.clone(),
        query: 1,
        sql: r.sql.clone(),
        params: r.params.clone(),
        statement: r.statement.clone(),
        portal: r.portal.clone(),
        protocol: r.protocol,
        action: d.action,
        rule: d.rule.clone(),
        class: d.class,
        tables: d.tables.clone(),
        columns: d.columns.clone(),
        message: d.message.clone(),
    };
    assert_eq!((one.received(), one.decision()), (r.clone(), d.clone()));
    let pair = log(vec![opened(1, "agent", "app"), r.into(), d.into()]);
    let single = log(vec![opened(1, "agent", "app"), one.into()]);
    let entry = |events: &[Event]| {
        let t = Timeline::build(Selection::Session(1), Window::default(), events);
        let mut s = statement(&t, 1, 1).clone();
        // Where each part sits in the log is all that may differ.
        for at in [
            &mut s.at,
            &mut s.received.as_mut().unwrap().at,
            &mut s.decision.as_mut().unwrap().at,
        ] {
            *at = Stamp { seq: 0, ts: 0 };
        }
        s
    };
    let from_pair = entry(&pair);
    assert_eq!(from_pair.decision.as_ref().unwrap().action, "deny");
    assert_eq!(from_pair.received.as_ref().unwrap().params.len(), 1);
    assert_eq!(entry(&single), from_pair);
}

#[test]
fn a_session_ties_its_events_together_by_query() {
    let events = scenario();
    let t = Timeline::build(Selection::Session(1), Window::default(), &events);
    let kinds: Vec<&str> = t
        .entries
        .iter()
        .map(|e| match e {
            Entry::SessionOpened(_) => "opened",
            Entry::Statement(_) => "statement",
            Entry::SessionTerminated(_) => "terminated",
            Entry::SessionClosed(_) => "closed",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "statement",
            "statement",
            "statement",
            "statement",
            "terminated",
            "closed"
        ],
        "one entry per statement, in order; other sessions and identity events left out"
    );
    let range = t.events.unwrap();
    assert_eq!((range.first.seq, range.last.seq, range.count), (1, 19, 17));

    let read = statement(&t, 1, 1);
    assert_eq!(read.sql(), Some("SELECT id, name FROM customers"));
    assert_eq!(read.decision.as_ref().unwrap().action, "allow");
    assert_eq!(read.masks[0].columns[0].column, "public.customers.email");
    let r = read.response.as_ref().unwrap();
    assert_eq!(r.columns[0].type_name, Some("int4"));
    assert_eq!(
        r.result,
        vec![
            vec![
                Value::Bytes {
                    hex: "00000001".into(),
                    decoded: Some("1".into())
                },
                Value::Text {
                    text: "alice".into()
                }
            ],
            vec![
                Value::Bytes {
                    hex: "00000002".into(),
                    decoded: Some("2".into())
                },
                Value::Null
            ],
        ]
    );
    assert!(r.truncated);
    assert_eq!(r.result_digest.as_deref(), Some("ab".repeat(32).as_str()));

    let denied = statement(&t, 1, 2);
    let params: Vec<_> = denied
        .received
        .as_ref()
        .unwrap()
        .params
        .iter()
        .map(|p| (&p.value, p.format))
        .collect();
    assert_eq!(
        params,
        [
            (
                &Value::Bytes {
                    hex: "00000007".into(),
                    decoded: None
                },
                "binary"
            ),
            (&Value::Text { text: "bob".into() }, "text"),
            (&Value::Null, "text"),
        ],
        "parameters have no type, so binary ones stay undecoded hex"
    );
    let d = denied.decision.as_ref().unwrap();
    assert_eq!((d.action, d.rule.as_deref()), ("deny", Some("no-ssn")));
    assert_eq!(d.message.as_deref(), Some("SSNs are off limits"));
    assert!(denied.response.is_none());

    let held = statement(&t, 1, 3);
    assert_eq!(held.approvals.len(), 1);
    let a = &held.approvals[0];
    assert_eq!(a.approval, 7);
    assert_eq!(a.requested.as_ref().unwrap().quorum, 2);
    assert!(matches!(&a.outcomes[..], [
        Outcome::Granted { operator, grant_until: Some(_), .. },
        Outcome::Denied { operator: Some(denier), .. },
    ] if operator == "bob" && denier == "carol"));

    let failed = statement(&t, 1, 4);
    assert_eq!(
        failed.response.as_ref().unwrap().sqlstate.as_deref(),
        Some("42P01")
    );

    assert_eq!(
        t.summary,
        Summary {
            sessions: 1,
            statements: 4,
            allowed: 2,
            denied: 1,
            held_for_approval: 1,
            masked: 1,
            errors: 1,
            terminations: 1,
            authentication_failures: 0,
            blocks: 0,
        }
    );
}

#[test]
fn an_identity_includes_its_sessions_and_the_events_about_it() {
    let events = scenario();
    let t = Timeline::build(
        Selection::Identity("agent".into()),
        Window::default(),
        &events,
    );
    assert!(t
        .entries
        .iter()
        .all(|e| !matches!(e, Entry::SessionOpened(o) if o.identity != "agent")));
    assert!(matches!(t.entries[0], Entry::CredentialIssued(_)));
    assert!(t.entries.iter().any(
        |e| matches!(e, Entry::IdentityBlocked(b) if b.trigger.as_deref() == Some("denials"))
    ));
    assert!(t
        .entries
        .iter()
        .any(|e| matches!(e, Entry::AuthenticationFailed(_))));
    assert_eq!(t.summary.sessions, 2);
    assert_eq!(t.summary.blocks, 1);
    assert_eq!(t.summary.authentication_failures, 1);
    assert_eq!(t.events.unwrap().count, 21, "all but the reader's session");
}

#[test]
fn windows_by_sequence_number_and_time_include_both_ends() {
    let events = scenario();
    let agent = || Selection::Identity("agent".into());
    let by_seq = Timeline::build(
        agent(),
        Window {
            from: Some(At::Seq(7)),
            to: Some(At::Seq(8)),
        },
        &events,
    );
    assert_eq!(by_seq.entries.len(), 1);
    assert_eq!(
        statement(&by_seq, 1, 2).decision.as_ref().unwrap().action,
        "deny"
    );
    let by_time = Timeline::build(
        agent(),
        Window {
            from: Some(At::Time(T0 + 7_000_000)),
            to: Some(At::Time(T0 + 8_000_000)),
        },
        &events,
    );
    assert_eq!(by_time.entries, by_seq.entries);
    // Cutting into a statement keeps what lies inside and says what is missing.
    let cut = Timeline::build(
        agent(),
        Window {
            from: Some(At::Seq(12)),
            to: None,
        },
        &events,
    );
    assert!(
        matches!(&cut.entries[0], Entry::ApprovalOutcome(o) if o.approval == 7 && matches!(o.outcome, Outcome::Granted { .. }))
    );
    let tail = statement(&cut, 1, 4);
    assert!(tail.received.is_some());
    let half = Timeline::build(
        agent(),
        Window {
            from: Some(At::Seq(15)),
            to: Some(At::Seq(16)),
        },
        &events,
    );
    let s = statement(&half, 1, 4);
    assert!(s.received.is_none() && s.decision.is_some() && s.response.is_some());
    assert_eq!(
        s.at.seq, 15,
        "a statement starts at its first event in the window"
    );
    let empty = Timeline::build(
        agent(),
        Window {
            from: Some(At::Time(T0 + 1_000_000_000)),
            to: None,
        },
        &events,
    );
    assert!(empty.entries.is_empty() && empty.events.is_none());
}

#[test]
fn backwards_windows_are_refused() {
    let w = Window {
        from: Some(At::Seq(9)),
        to: Some(At::Seq(3)),
    };
    assert!(matches!(w.check(), Err(ReplayError::Backwards)));
    let mixed = Window {
        from: Some(At::Seq(9)),
        to: Some(At::Time(3)),
    };
    assert!(
        mixed.check().is_ok(),
        "a sequence number and a time cannot be compared up front"
    );
}

fn replay(events: &[Event], selection: Selection) -> Replay {
    Replay {
        ledger: "/var/lib/gatehouse/ledger.db".into(),
        verify: verify_command(Path::new("/var/lib/gatehouse/ledger.db")),
        checkpoint: Some(CheckpointInfo {
            size: 10,
            root: "cm9vdA==".into(),
            key: Some("gatehouse.test/gateway+01020304".into()),
            checked: 10,
        }),
        unsigned_not_shown: 0,
        timeline: Timeline::build(selection, Window::default(), events),
    }
}

#[test]
fn text_shows_the_story() {
    let events = scenario();
    let text = text::render(&replay(&events, Selection::Session(1)));
    for expected in [
        "Gatehouse replay of session 1",
        "gatehouse-verify /var/lib/gatehouse/ledger.db --key VERIFIER_KEY_FILE",
        "does not yet cover the last events shown",
        "2025-11-25T10:00:00.001000000Z #1  session 1 OPENED by agent from 127.0.0.1:5555 to target shop; application \"psql\"",
        "SELECT id, name FROM customers",
        "ALLOWED by rule agent-reads",
        "public.customers.email: email, 2 values",
        "SELECT 2 at 2025-11-25T10:00:00.006000000Z #6: 3 rows in 1.234 ms, 321 bytes",
        "id (int4)",
        "0x00000001 (1) | alice",
        "0x00000002 (2) | NULL",
        "(truncated: 2 of 3 rows recorded)",
        &"ab".repeat(32),
        "$1 (binary) = 0x00000007",
        "$2 (text) = 'bob'",
        "$3 (text) = NULL",
        "DENIED by rule no-ssn",
        "message: SSNs are off limits",
        "HELD FOR APPROVAL by rule held-deletes",
        "7 requested at",
        "GRANTED by bob",
        "DENIED by carol",
        "SQLSTATE 42P01: relation \"nope\" does not exist",
        "session 1 TERMINATED by Gatehouse: identity blocked",
        "session 1 CLOSED after 4 statements",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

/// Events full of markup and terminal escapes in every hostile field.
fn hostile() -> Vec<Event> {
    const X: &str = "<script>alert(1)</script>\x1b[2J\u{202e}";
    log(vec![
        opened(9, "agent", X),
        received(
            9,
            "agent",
            2,
            &format!("SELECT '{X}'"),
            vec![ev::Param {
                format: 0,
                value: Some(Bytes(X.as_bytes().to_vec())),
            }],
        ),
        decision(9, 2, Action::Deny, Some(X), Some(X)),
        {
            let mut r = response(
                9,
                2,
                vec![vec![Some(&[0, 0, 0, 1]), Some(X.as_bytes())]],
                Some(("XX000", X)),
            );
            if let EventBody::Response(r) = &mut r {
                r.columns[1].name = X.into();
                r.command_tag = Some(X.into());
            }
            r
        },
        ev::SessionClosed {
            session: 9,
            identity: "agent".into(),
            reason: X.into(),
            statements: 2,
        }
        .into(),
    ])
}

#[test]
fn html_escapes_everything_hostile() {
    let events = hostile();
    let html = html::render(&replay(&events, Selection::Session(9)));
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains('\x1b') && !html.contains('\u{202e}'));
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[2J\\u{202e}";
    // Application name, SQL, parameter, rule, message, column, row, tag, error, reason.
    assert!(html.matches(escaped).count() >= 10, "{html}");
    assert!(html.contains("default-src 'none'"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
}

#[test]
fn text_keeps_the_terminal_safe() {
    let events = hostile();
    let text = text::render(&replay(&events, Selection::Session(9)));
    assert!(
        !text.contains('\x1b') && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert!(text.contains("<script>alert(1)</script>\\x1b[2J\\u{202e}"));
    assert!(text.chars().all(|c| !c.is_control() || c == '\n'));
}

#[test]
fn json_has_the_documented_shape() {
    let events = scenario();
    let doc = json::document(&replay(&events, Selection::Session(1)));
    assert_eq!(doc["format"], json::FORMAT);
    assert_eq!(doc["selection"]["session"], 1);
    assert_eq!(doc["window"]["from"], serde_json::Value::Null);
    assert_eq!(doc["covered_by_checkpoint"], false);
    assert_eq!(doc["events"]["first"]["seq"], 1);
    assert_eq!(
        doc["events"]["first"]["time"],
        "2025-11-25T10:00:00.001000000Z"
    );
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries[0]["kind"], "session_opened");
    assert_eq!(entries[0]["application_name"], "psql");
    let read = &entries[1];
    assert_eq!(read["kind"], "statement");
    assert_eq!(read["received"]["sql"], "SELECT id, name FROM customers");
    assert_eq!(read["decision"]["action"], "allow");
    assert_eq!(read["masks"][0]["columns"][0]["strategy"], "email");
    assert_eq!(read["response"]["result"][0][0]["hex"], "00000001");
    assert_eq!(read["response"]["result"][0][0]["decoded"], "1");
    assert_eq!(read["response"]["result"][0][1]["text"], "alice");
    assert_eq!(read["response"]["result"][1][1], serde_json::Value::Null);
    assert_eq!(read["response"]["duration_ns"], 1_234_567);
    let held = &entries[3];
    assert_eq!(held["approvals"][0]["outcomes"][0]["outcome"], "granted");
    assert_eq!(held["approvals"][0]["outcomes"][1]["outcome"], "denied");
    assert_eq!(
        held["approvals"][0]["requested"]["expires_at"],
        "2025-11-25T10:01:00.000000000Z"
    );
    // The rendered text is the same document.
    let parsed: serde_json::Value =
        serde_json::from_str(&json::render(&replay(&events, Selection::Session(1)))).unwrap();
    assert_eq!(parsed, doc);
}

#[test]
fn the_verify_hint_quotes_odd_paths() {
    assert_eq!(
        verify_command(Path::new("/tmp/a b/ledger.db")),
        "gatehouse-verify '/tmp/a b/ledger.db' --key VERIFIER_KEY_FILE"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("verifier.pub"), "key\n").unwrap();
    let ledger = dir.path().join("ledger.db");
    assert_eq!(
        verify_command(&ledger),
        format!(
            "gatehouse-verify {} --key {}",
            ledger.display(),
            dir.path().join("verifier.pub").display()
        )
    );
}

#[test]
fn an_approval_is_granted_only_by_a_quorum_of_distinct_approvers() {
    let stamp = Stamp { seq: 1, ts: T0 };
    let granted = |who: &str| Outcome::Granted {
        at: stamp,
        operator: who.into(),
        grant_until: None,
    };
    let mut a = Approval {
        approval: 1,
        requested: Some(ApprovalRequest {
            at: stamp,
            rule: "r".into(),
            class: "write",
            quorum: 2,
            expires_at: Instant(T0),
            fingerprint: "f".into(),
            binding: "00".into(),
        }),
        outcomes: vec![],
    };
    assert_eq!(a.status(), "pending");
    a.outcomes = vec![granted("bob"), granted("bob")];
    assert_eq!(a.status(), "pending", "the same approver twice is one");
    a.outcomes.push(granted("carol"));
    assert_eq!(a.status(), "granted");
    a.outcomes = vec![granted("bob"), Outcome::Expired { at: stamp }];
    assert_eq!(a.status(), "expired");
    a.requested = None;
    a.outcomes = vec![granted("bob"), granted("carol")];
    assert_eq!(
        a.status(),
        "pending",
        "without the request the quorum is unknown"
    );
}
