//! Random message sequences from an authenticated client, against a real
//! PostgreSQL: whatever a client sends after login (messages out of order,
//! mismatched Bind parameters, COPY messages outside COPY, unknown tags), no
//! gateway task panics, the gateway keeps serving, every denied statement
//! stays away from the database, and the ledger still verifies.
//!
//! Its own test binary, so the panic hook sees only this gateway's threads.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::{Env, RawClient, POLICY};

/// Panics anywhere in this process since the hook was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Statements denied by [`POLICY`], each carrying a marker that must never
/// appear in the database's statement log.
const DENIED: &[&str] = &[
    "SELECT ssn AS fuzz_leak_1 FROM customers",
    "DELETE FROM customers WHERE name = 'fuzz_leak_2'",
    "SET search_path = fuzz_leak_3",
    "SELECT 1 AS fuzz_leak_4; DROP TABLE orders",
    "PREPARE p1 AS SELECT 'fuzz_leak_5'",
    "SET client_encoding = 'SJIS' -- fuzz_leak_6",
];

/// An audit trigger on every fixture table: each statement that inserts,
/// updates or deletes (rows or not) logs the query the client sent.
const AUDIT_TRIGGERS: &str = "
CREATE TABLE fuzz_audit (tbl text, query text);
CREATE FUNCTION fuzz_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fuzz_audit VALUES (TG_TABLE_NAME, current_query());
  RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON customers FOR EACH STATEMENT EXECUTE FUNCTION fuzz_audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH STATEMENT EXECUTE FUNCTION fuzz_audit();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON audit_probe FOR EACH STATEMENT EXECUTE FUNCTION fuzz_audit();
";

/// Statements that run (or fail in PostgreSQL, not in the gateway).
const ALLOWED: &[&str] = &[
    "SELECT 1",
    "SELECT name FROM customers WHERE id = $1",
    "SELECT $1::int + 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "INSERT INTO audit_probe (note) VALUES ($1)",
    "COPY orders TO STDOUT",
    "COPY audit_probe (note) FROM STDIN",
    "SELECT pg_sleep(0.01)",
    "SELECT 1; SELECT 2",
    "SELEC garbage",
    "",
    "DECLARE p1 CURSOR FOR SELECT id FROM orders",
    "CLOSE p1",
];

fn sql() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => proptest::sample::select(ALLOWED),
        1 => proptest::sample::select(DENIED),
    ]
}

fn name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["", "s1", "p1"][..])
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// One frontend message: tag and body.
fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let param = prop_oneof![
        Just(None),
        "[0-9]{1,4}".prop_map(|s| Some(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Some),
    ];
    prop_oneof![
        3 => sql().prop_map(|q| {
            let mut b = Vec::new();
            cstr(&mut b, q);
            (b'Q', b)
        }),
        3 => (name(), sql(), proptest::collection::vec(proptest::sample::select(&[0u32, 23, 25][..]), 0..3))
            .prop_map(|(n, q, types)| {
                let mut b = Vec::new();
                cstr(&mut b, n);
                cstr(&mut b, q);
                b.extend_from_slice(&(types.len() as i16).to_be_bytes());
                for t in types {
                    b.extend_from_slice(&t.to_be_bytes());
                }
                (b'P', b)
            }),
        3 => (
            name(),
            name(),
            proptest::collection::vec(0i16..3, 0..3),
            proptest::collection::vec(param, 0..3),
            proptest::collection::vec(0i16..3, 0..2),
        )
            .prop_map(|(portal, statement, formats, params, results)| {
                let mut b = Vec::new();
                cstr(&mut b, portal);
                cstr(&mut b, statement);
                b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
                for f in formats {
                    b.extend_from_slice(&f.to_be_bytes());
                }
                b.extend_from_slice(&(params.len() as i16).to_be_bytes());
                for p in params {
                    match p {
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            b.extend_from_slice(&v);
                        }
                    }
                }
                b.extend_from_slice(&(results.len() as i16).to_be_bytes());
                for r in results {
                    b.extend_from_slice(&r.to_be_bytes());
                }
                (b'B', b)
            }),
        2 => (proptest::sample::select(&[b'S', b'P'][..]), name()).prop_map(|(kind, n)| {
            let mut b = vec![kind];
            cstr(&mut b, n);
            (b'D', b)
        }),
        3 => (name(), 0i32..3).prop_map(|(portal, max)| {
            let mut b = Vec::new();
            cstr(&mut b, portal);
            b.extend_from_slice(&max.to_be_bytes());
            (b'E', b)
        }),
        1 => (proptest::sample::select(&[b'S', b'P'][..]), name()).prop_map(|(kind, n)| {
            let mut b = vec![kind];
            cstr(&mut b, n);
            (b'C', b)
        }),
        2 => Just((b'S', Vec::new())),
        1 => Just((b'H', Vec::new())),
        1 => "[a-z]{0,6}\n".prop_map(|s| (b'd', s.into_bytes())),
        1 => Just((b'c', Vec::new())),
        1 => Just((b'f', b"fuzz\0".to_vec())),
        1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..12)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_message_sequences_after_login_leave_the_gateway_serving() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let env = Env::start_custom(POLICY, "", "", |pg| {
        pg.psql("shop", AUDIT_TRIGGERS);
    })
    .await;
    let handle = tokio::runtime::Handle::current();
    let env = std::sync::Arc::new(env);
    let runner_env = env.clone();
    // GATEHOUSE_FUZZ_CASES=5000 for a deeper run.
    let cases: u32 = std::env::var("GATEHOUSE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = proptest::collection::vec(message(), 1..12);
        runner
            .run(&strategy, |messages| {
                let answered = handle.block_on(async {
                    let mut raw = RawClient::login(&runner_env, "agent").await;
                    for (tag, body) in &messages {
                        raw.send(*tag, body).await;
                    }
                    // CopyFail ends a COPY FROM STDIN the sequence may have
                    // started (PostgreSQL ignores Sync during one, and
                    // CopyFail outside one); Sync ends any pipeline.
                    raw.send(b'f', b"end of case\0").await;
                    raw.send(b'S', b"").await;
                    raw.until_ready_within(Duration::from_secs(10)).await
                });
                prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a gateway task panicked");
                // The session answers up to ReadyForQuery, or ends (a
                // protocol violation is FATAL); it never hangs.
                prop_assert!(
                    answered.is_some(),
                    "no ReadyForQuery and no close within 10 s"
                );
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();

    let c = env.connect("agent").await;
    let got: i32 = c.query_one("SELECT 7::int", &[]).await.unwrap().get(0);
    assert_eq!(got, 7, "the gateway still serves");
    env.settle().await;
    let log = env.pg.log();
    for marker in [
        "fuzz_leak_1",
        "fuzz_leak_2",
        "fuzz_leak_3",
        "fuzz_leak_4",
        "fuzz_leak_5",
        "fuzz_leak_6",
    ] {
        assert!(
            !log.contains(marker),
            "a denied statement reached the database ({marker})"
        );
    }
    // What the database itself ran for the fuzzed sessions is what the
    // ledger shows judged and let through, statement by statement.
    assert!(env.assert_database_ran_only_allowed() > 0);
    // And every statement that changed (or tried to change) a fixture
    // table, as the database's own triggers saw it.
    let allowed = support::allowed_sql(&env.events());
    let changed = env.pg.psql("shop", "SELECT DISTINCT query FROM fuzz_audit");
    for query in changed.lines().filter(|l| !l.is_empty()) {
        assert!(
            allowed.contains(query),
            "a table was changed by a statement the ledger does not show allowed: {query}"
        );
    }
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    // Every session's opening and end at least.
    assert!(
        report.events >= 2 * u64::from(cases),
        "the sessions were recorded: {} events",
        report.events
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a gateway task panicked");
}
