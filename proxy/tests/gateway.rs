//! The gateway in the data path, against a real PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use futures_util::{pin_mut, SinkExt, StreamExt};
use gatehouse_ledger::event::{Action, EventBody};
use support::{Env, POLICY};
use tokio_postgres::error::SqlState;

/// The session answers a trivial query with the expected value.
async fn assert_alive(c: &tokio_postgres::Client, n: i32) {
    let got: i32 = c
        .query_one(&format!("SELECT {n}::int"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, n, "the session still works");
}

fn denied(e: &tokio_postgres::Error) -> String {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error, got {e}"));
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{db:?}");
    db.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_prepared_statements_and_binary_results() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    // Simple protocol.
    let rows = c.simple_query("SELECT count(*) FROM orders").await.unwrap();
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("200"));
    // Extended protocol, named prepared statement reused, binary results.
    let stmt = c
        .prepare("SELECT id, total::float8, day FROM orders WHERE id = $1")
        .await
        .unwrap();
    for id in [1i32, 7, 150] {
        let row = c.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), id);
        assert_eq!(row.get::<_, f64>(1), id as f64 * 1.5);
    }
    // Errors from PostgreSQL itself come through untouched.
    let e = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::UNDEFINED_TABLE);
    let e = c.query("SELECT 1 / $1::int", &[&0i32]).await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::DIVISION_BY_ZERO);
    // The session survives all of it.
    assert_alive(&c, 2).await;

    drop(c);
    env.settle().await;
    let events = env.events();
    let queries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::Statement(q) => Some(q),
            _ => None,
        })
        .collect();
    assert!(queries
        .iter()
        .any(|q| q.sql == "SELECT count(*) FROM orders"));
    let with_param = queries
        .iter()
        .find(|q| q.sql.contains("WHERE id = $1") && q.params.len() == 1)
        .expect("bind parameters recorded");
    assert_eq!(
        with_param.params[0].format, 1,
        "tokio-postgres sends binary parameters"
    );
    let responses = events
        .iter()
        .filter(|e| matches!(e, EventBody::Response(_)))
        .count();
    let decisions = events
        .iter()
        .filter(|e| matches!(e, EventBody::Statement(_)))
        .count();
    assert_eq!(
        responses, decisions,
        "every allowed statement has a response event"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::Response(r) if r.sqlstate.as_deref() == Some("42P01"))));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::SessionClosed(_))));
    assert!(env.verify().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_statements_get_42501_and_the_session_survives_in_and_out_of_transactions() {
    let env = Env::start(POLICY).await;
    let mut c = env.connect("agent").await;
    // Outside a transaction, simple and extended.
    let msg = denied(
        &c.simple_query("SELECT ssn FROM customers")
            .await
            .unwrap_err(),
    );
    assert_eq!(msg, "SSNs are off limits to agents");
    denied(
        &c.query("SELECT name, ssn FROM customers WHERE id = $1", &[&1i32])
            .await
            .unwrap_err(),
    );
    denied(&c.simple_query("DELETE FROM customers").await.unwrap_err());
    assert_alive(&c, 1).await;

    // Inside a transaction: the denial aborts it, exactly as a PostgreSQL error would.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO orders (id, customer, total) VALUES (1001, 1, 9.99)",
        &[],
    )
    .await
    .unwrap();
    denied(
        &tx.execute("DELETE FROM customers WHERE id = 2", &[])
            .await
            .unwrap_err(),
    );
    let e = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        e.as_db_error().unwrap().code(),
        &SqlState::IN_FAILED_SQL_TRANSACTION
    );
    tx.rollback().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM orders WHERE id = 1001", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the transaction was rolled back");

    // Committed work around a denial in the simple protocol.
    c.batch_execute("BEGIN; INSERT INTO orders (id, customer, total) VALUES (1002, 1, 1); COMMIT")
        .await
        .unwrap();
    let e = c
        .batch_execute("BEGIN; SELECT ssn FROM customers; COMMIT")
        .await
        .unwrap_err();
    denied(&e);
    c.batch_execute("ROLLBACK").await.unwrap();

    // Unparseable SQL is denied with the parser's complaint.
    let msg = denied(&c.simple_query("SELEKT * FROM orders").await.unwrap_err());
    assert!(msg.contains("parser"), "{msg}");
    // Session-changing statements are their own class.
    denied(&c.simple_query("SET ROLE postgres").await.unwrap_err());
    denied(
        &c.simple_query("SET default_transaction_read_only = off")
            .await
            .unwrap_err(),
    );
    // Dangerous functions.
    denied(
        &c.simple_query("SELECT pg_read_file('/etc/passwd')")
            .await
            .unwrap_err(),
    );
    // A write hidden in a CTE.
    denied(
        &c.simple_query("WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d")
            .await
            .unwrap_err(),
    );
    assert_alive(&c, 3).await;

    drop(c);
    env.settle().await;
    // None of it reached PostgreSQL.
    let log = env.pg.log();
    assert!(
        !log.contains("DELETE FROM customers"),
        "a denied statement reached the database"
    );
    assert!(
        !log.contains("pg_read_file"),
        "a denied statement reached the database"
    );
    let events = env.events();
    let denials: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::Statement(d) if d.action == Action::Deny => Some(d),
            _ => None,
        })
        .collect();
    assert!(denials.iter().any(|d| d.rule.as_deref() == Some("no-ssn")));
    assert!(
        denials.iter().any(|d| d.rule.is_none()),
        "default deny recorded without a rule"
    );
    assert!(env.verify().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    let sink = c
        .copy_in("COPY orders (id, customer, total) FROM STDIN")
        .await
        .unwrap();
    pin_mut!(sink);
    let data: String = (5000..5100).map(|i| format!("{i}\t3\t{i}.25\n")).collect();
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100);
    let stream = c
        .copy_out("COPY (SELECT id FROM orders WHERE id >= 5000 ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 100);
    drop(c);
    env.settle().await;
    assert!(env.events().iter().any(
        |e| matches!(e, EventBody::Response(r) if r.command_tag.as_deref() == Some("COPY 100"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_upstream_statement() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = c.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::QUERY_CANCELED);
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.await.unwrap();
    assert_alive(&c, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_a_valid_gateway_credential_and_failures_are_recorded() {
    let env = Env::start(POLICY).await;
    let bad = format!(
        "host=127.0.0.1 port={} user=agent password=wrong dbname=shop",
        env.addr.port()
    );
    let e = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::INVALID_PASSWORD);
    let ghost = format!(
        "host=127.0.0.1 port={} user=ghost password=x dbname=shop",
        env.addr.port()
    );
    assert!(tokio_postgres::connect(&ghost, tokio_postgres::NoTls)
        .await
        .is_err());
    // The upstream credential does not work at the gateway.
    let upstream = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=shop",
        env.addr.port(),
        env.pg.superuser(),
        env.pg.password()
    );
    assert!(tokio_postgres::connect(&upstream, tokio_postgres::NoTls)
        .await
        .is_err());
    // An unknown target.
    let nodb = format!(
        "host=127.0.0.1 port={} user=agent password={} dbname=elsewhere",
        env.addr.port(),
        env.secret("agent")
    );
    let e = tokio_postgres::connect(&nodb, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        e.as_db_error().unwrap().code(),
        &SqlState::INVALID_CATALOG_NAME
    );
    let failures = env
        .events()
        .iter()
        .filter(|e| matches!(e, EventBody::AuthenticationFailed(_)))
        .count();
    assert_eq!(failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_identities_run_read_only_upstream() {
    let env = Env::start(POLICY).await;
    let c = env.connect("reader").await;
    let ro: String = c
        .query_one(
            "SELECT current_setting('default_transaction_read_only')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ro, "on",
        "a classifier miss would still be stopped by PostgreSQL"
    );
    denied(
        &c.simple_query("INSERT INTO audit_probe (note) VALUES ('x')")
            .await
            .unwrap_err(),
    );
    let a = env.connect("agent").await;
    let rw: String = a
        .query_one(
            "SELECT current_setting('default_transaction_read_only')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rw, "off");
}

/// Issue 14, finding 4: after a crash, the ledger showed sessions open that
/// no longer existed, and a statement forwarded just before it looked like
/// one still running. Start-up now records their end, and replay says the
/// statement's outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_closes_the_sessions_it_left_open() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    // The gateway as its own process, to SIGKILL.
    let (mut child, port) = env.serve_as_process().await;
    let c = env.connect_to_port(port, "agent").await;
    c.simple_query("SELECT 1").await.unwrap();
    let running = tokio::spawn(async move {
        let _ = c.simple_query("SELECT pg_sleep(3)").await;
    });
    // Wait until the sleep is recorded as let through, then kill.
    let ledger = env.ledger();
    let session = gatehouse::replay::Selection::Identity("agent".into());
    for _ in 0..100 {
        let seen = gatehouse::replay::load(&ledger, session.clone(), Default::default(), None)
            .map(|r| {
                r.timeline
                    .statements()
                    .any(|s| s.sql() == Some("SELECT pg_sleep(3)"))
            })
            .unwrap_or(false);
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    running.abort();
    let at_end = gatehouse::state::At::Seq(u64::MAX - 1);
    let open = gatehouse::state::verified_state_at(&ledger, at_end, None).unwrap();
    assert_eq!(
        open.state.sessions.len(),
        1,
        "the crash left the session open in the record"
    );
    let id = *open.state.sessions.keys().next().unwrap();
    env.restart().await;
    env.settle().await;
    let after = gatehouse::state::verified_state_at(&ledger, at_end, None).unwrap();
    assert!(
        after.state.sessions.is_empty(),
        "{:?}",
        after.state.sessions
    );
    let replay = gatehouse::replay::load(
        &ledger,
        gatehouse::replay::Selection::Session(id),
        Default::default(),
        None,
    )
    .unwrap();
    let sleep = replay
        .timeline
        .statements()
        .find(|s| s.sql() == Some("SELECT pg_sleep(3)"))
        .expect("the statement is in the replay");
    assert!(sleep.outcome_unknown);
    let first = replay
        .timeline
        .statements()
        .find(|s| s.sql() == Some("SELECT 1"))
        .unwrap();
    assert!(!first.outcome_unknown);
    let text = gatehouse::replay::text::render(&replay);
    assert!(text.contains("OUTCOME UNKNOWN"), "{text}");
    assert!(text.contains("stopped without closing it"), "{text}");
}

/// Issue 14: one address holding connections that never log in cannot take
/// every place: past `max_pending_logins_per_address` its next connection
/// is answered FATAL 53300, while logged-in sessions do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_log_in_are_capped_per_address() {
    let env = Env::start_with(POLICY, "max_pending_logins_per_address = 3").await;
    let sessions: Vec<tokio_postgres::Client> = vec![
        env.connect("agent").await,
        env.connect("agent").await,
        env.connect("reader").await,
        env.connect("agent").await,
    ];
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(env.addr).await.unwrap());
    }
    // Let the gateway count them before the next one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a fourth connection still logging in is refused");
    let db = e.as_db_error().expect("a FATAL error");
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("max_pending_logins_per_address"),
        "{}",
        db.message()
    );
    assert_eq!(env.ready()["refusals"]["pending_logins_per_address"], 1);
    drop(idle);
    // Places free up when the idle connections close.
    env.connect_when_admitted("agent")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    for s in &sessions {
        s.simple_query("SELECT 1").await.unwrap();
    }
}

/// Issue 14, finding 2: each session holds a database connection, and a
/// burst of logins exhausted PostgreSQL's slots with a message that did not
/// say so. A target's `max_sessions` caps them, answering 53300 with the
/// limit; a freed slot is usable again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_max_sessions_refuses_logins_beyond_it_with_53300() {
    let env = Env::start_custom(POLICY, "", "max_sessions = 2", |_| {}).await;
    let first = env.connect("agent").await;
    let second = env.connect("reader").await;
    let e = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a third session is refused");
    let db = e.as_db_error().expect("a FATAL error");
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("at most 2") && db.message().contains("max_sessions"),
        "{}",
        db.message()
    );
    drop(first);
    assert_eq!(
        env.ready()["refusals"]["max_sessions"],
        1,
        "the refusal is counted"
    );
    // The freed slot is used again.
    let again = env.connect_when_admitted("agent").await;
    again.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
}

/// Issue 14, finding 3: `rm ledger.db ledger.db-wal ledger.db-shm` under a
/// running gateway. SQLite kept committing to the nameless file, inserts
/// were acknowledged, and the whole ledger was gone at the next stop. Now
/// every statement is refused (58030) until the file is back, and nothing
/// reaches the database meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_ledger_file_stops_statements_before_the_database() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('before')")
        .await
        .unwrap();
    let ledger = env.ledger();
    let aside = ledger.with_file_name("moved-away");
    std::fs::create_dir(&aside).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("ledger.db{suffix}");
        let _ = std::fs::rename(ledger.with_file_name(&name), aside.join(&name));
    }
    for attempt in ["simple", "extended"] {
        let e = if attempt == "simple" {
            c.simple_query("INSERT INTO audit_probe (note) VALUES ('while removed')")
                .await
                .map(|_| ())
        } else {
            c.query(
                "INSERT INTO audit_probe (note) VALUES ($1)",
                &[&"while removed"],
            )
            .await
            .map(|_| ())
        }
        .unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "58030", "{attempt}");
        assert!(
            db.message().contains("removed or moved away"),
            "{}",
            db.message()
        );
    }
    assert_eq!(
        env.pg
            .psql(
                "shop",
                "SELECT count(*) FROM audit_probe WHERE note = 'while removed'"
            )
            .trim(),
        "0"
    );
    // Put back, it takes statements again.
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("ledger.db{suffix}");
        let _ = std::fs::rename(aside.join(&name), ledger.with_file_name(&name));
    }
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('after')")
        .await
        .unwrap();
    env.settle().await;
    assert!(env.verify().is_intact());
}

/// Makes the ledger refuse every statement record (kind 30, its shape 29,
/// or kind 25 as written before format 3) as a full disk
/// would, until the returned connection drops the trigger `refuse`.
fn refuse_statement_records(env: &Env) -> rusqlite::Connection {
    let saboteur = rusqlite::Connection::open(env.ledger()).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind IN (25, 29, 30) \
             BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
        )
        .unwrap();
    saboteur
}

/// A pure read goes to the database while its record commits (issue 15);
/// when the commit fails, the client gets none of its result: the session
/// ends with 58030, whichever protocol sent the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_record_cannot_commit_shows_the_client_nothing() {
    let env = Env::start(POLICY).await;
    let simple = env.connect("agent").await;
    let extended = env.connect("agent").await;
    simple.simple_query("SELECT 1").await.unwrap();
    let saboteur = refuse_statement_records(&env);
    let e = simple
        .simple_query("SELECT 'withheld-simple'")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("an error from the gateway");
    assert_eq!(db.code().code(), "58030", "{}", db.message());
    assert!(db.message().contains("withheld"), "{}", db.message());
    assert_eq!(db.routine(), Some("gatehouse_ledger_unavailable"));
    let e = extended
        .query("SELECT $1::text", &[&"withheld-extended"])
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("an error from the gateway");
    assert_eq!(db.code().code(), "58030", "{}", db.message());
    assert!(simple.is_closed() || simple.simple_query("SELECT 1").await.is_err());
    saboteur.execute_batch("DROP TRIGGER refuse").unwrap();
    let again = env.connect("agent").await;
    let rows = again.query("SELECT $1::text", &[&"after"]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "after");
    env.settle().await;
    assert!(env.verify().is_intact());
}

/// A view that calls a function which writes reads like a plain read
/// (`SELECT * FROM v`), but is not one: the catalog shows the call, so it
/// is recorded before it runs, as every write is. With the ledger refusing
/// records, it does not run at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_calls_a_writing_function_is_recorded_before_it_runs() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"bumper\"\nidentity = \"agent\"\nclasses = [\"function\"]\nfunctions = [\"bump\", \"public.bump\"]\naction = \"allow\"\n"
    );
    let env = Env::start_custom(&policy, "", "", |pg| {
        pg.psql(
            "shop",
            "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS \
             $$ INSERT INTO audit_probe (note) VALUES ('bumped') RETURNING 1 $$; \
             CREATE VIEW bumped AS SELECT bump() AS n",
        );
    })
    .await;
    let c = env.connect("agent").await;
    let rows = c.simple_query("SELECT * FROM bumped").await.unwrap();
    assert_eq!(rows.len(), 3, "allowed, and it ran: {rows:?}");
    env.settle().await;
    let recorded = env.events().into_iter().find_map(|e| match e {
        EventBody::Statement(s) if s.sql == "SELECT * FROM bumped" => Some(s),
        _ => None,
    });
    let recorded = recorded.expect("the statement's record");
    assert_eq!(
        recorded.class,
        gatehouse_ledger::event::StatementClass::Function,
        "recorded as the call it makes through the view"
    );
    refuse_statement_records(&env);
    for attempt in 0..2 {
        let e = if attempt == 0 {
            c.simple_query("SELECT * FROM bumped").await.map(drop)
        } else {
            c.query("SELECT n FROM bumped WHERE n = $1", &[&1i32])
                .await
                .map(drop)
        }
        .unwrap_err();
        let db = e.as_db_error().expect("an error from the gateway");
        assert!(
            db.message().contains("so it was not run"),
            "{}",
            db.message()
        );
    }
    assert_eq!(
        env.pg
            .psql(
                "shop",
                "SELECT count(*) FROM audit_probe WHERE note = 'bumped'"
            )
            .trim(),
        "1",
        "only the recorded call ran"
    );
}

/// A pure read's session holds the ledger's commit role only until the
/// read is sent: a client that sends an Execute and then part of a Sync,
/// and stalls, holds up no other session's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_after_a_read_holds_up_no_other_session() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(POLICY).await;
    let other = env.connect("agent").await;
    let mut raw = support::RawClient::login(&env, "agent").await;
    let message = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    let mut bytes = message(b'P', b"\0SELECT 1\0\0\0");
    bytes.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(message(b'E', b"\0\0\0\0\0"));
    // The first byte of a Sync, and nothing more for now.
    bytes.push(b'S');
    raw.stream.write_all(&bytes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        other.simple_query("INSERT INTO audit_probe (note) VALUES ('not held up')"),
    )
    .await
    .expect("another session's statement is not held up")
    .unwrap();
    raw.stream.write_all(&[0, 0, 0, 4]).await.unwrap();
    let answer = raw.until_ready().await;
    assert!(
        answer.iter().any(|(t, _)| *t == b'D'),
        "the read ran: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_commit_stops_statements_before_the_database() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('before')")
        .await
        .unwrap();
    let saboteur = refuse_statement_records(&env);
    let e = c
        .simple_query("INSERT INTO audit_probe (note) VALUES ('while broken')")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert!(
        db.message().contains("could not record"),
        "{}",
        db.message()
    );
    let e = c
        .query(
            "INSERT INTO audit_probe (note) VALUES ($1)",
            &[&"extended while broken"],
        )
        .await
        .unwrap_err();
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("could not record"));
    saboteur.execute_batch("DROP TRIGGER refuse").unwrap();
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('after')")
        .await
        .unwrap();
    let notes = env.pg.psql(
        "shop",
        "SELECT string_agg(note, ',' ORDER BY id) FROM audit_probe",
    );
    assert_eq!(
        notes, "before,after",
        "nothing unrecorded reached the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_client_bytes_get_errors_not_crashes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(POLICY).await;
    // Garbage instead of a startup packet.
    for junk in [
        &b"\x00\x00\x00\x02"[..],
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // An oversized frame after login ends that session with a FATAL error.
    let c = env.connect("agent").await;
    let huge = "x".repeat(2 << 20);
    let e = c
        .simple_query(&format!("SELECT '{huge}'"))
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("a FATAL error explains the refusal");
    assert_eq!(db.severity(), "FATAL");
    assert!(
        db.message().contains("exceeds the limit"),
        "{}",
        db.message()
    );
    // The gateway still serves others.
    let c2 = env.connect("agent").await;
    assert_alive(&c2, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_keep_their_order_around_a_denial() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    // tokio-postgres pipelines concurrent queries on one connection: each is
    // its own Parse/Bind/Execute/Sync group, sent before the first answer.
    let q1 = c.query_one("SELECT 1::int", &[]);
    let q2 = c.query("SELECT ssn FROM customers WHERE id = $1", &[&1i32]);
    let q3 = c.query_one("SELECT count(*)::int FROM orders", &[]);
    let (r1, r2, r3) = tokio::join!(q1, q2, q3);
    assert_eq!(r1.unwrap().get::<_, i32>(0), 1);
    denied(&r2.unwrap_err());
    assert_eq!(r3.unwrap().get::<_, i32>(0), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_with_psql() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let listen = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let env = Env::start_with(POLICY, &listen).await;
    let psql = env.pg.bindir().join("psql");
    let port = env.addr.port().to_string();
    let secret = env.secret("agent").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .args(["-X", "-A", "-t", "-c", "SELECT 1"])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", port)
            .env("PGUSER", "agent")
            .env("PGPASSWORD", secret)
            .env("PGDATABASE", "shop")
            .env("PGSSLMODE", "require")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.settle().await;
    assert!(env
        .events()
        .iter()
        .any(|e| matches!(e, EventBody::SessionOpened(s) if s.tls && s.identity == "agent")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_startup_bytes_never_take_the_gateway_down() {
    use proptest::test_runner::{Config, TestRunner};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(POLICY).await;
    let addr = env.addr;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96);
        runner
            .run(&strategy, |mut bytes| {
                // Half the cases start like a real startup packet, to get past the length check.
                if bytes.len() > 8 && bytes[0] % 2 == 0 {
                    let len = (bytes.len() as i32).to_be_bytes();
                    bytes[..4].copy_from_slice(&len);
                    bytes[4..8].copy_from_slice(&196608i32.to_be_bytes());
                }
                handle.block_on(async {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(&bytes).await;
                    let _ = s.shutdown().await;
                    let mut sink = Vec::new();
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink))
                        .await;
                });
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let c = env.connect("agent").await;
    assert_alive(&c, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_gateway_cannot_judge_are_refused() {
    let env = Env::start(POLICY).await;
    let mut raw = support::RawClient::login(&env, "agent").await;
    // FunctionCall (fast-path): refused with an error; the session goes on.
    let mut call = Vec::new();
    call.extend_from_slice(&2619i32.to_be_bytes()); // any function OID
    call.extend_from_slice(&0i16.to_be_bytes());
    call.extend_from_slice(&0i16.to_be_bytes());
    call.extend_from_slice(&0i16.to_be_bytes());
    raw.send(b'F', &call).await;
    let answer = raw.until_ready().await;
    let text = support::error_text(&answer).expect("an ErrorResponse");
    assert!(text.contains("FunctionCall"), "{text}");
    assert_eq!(answer.last().map(|m| m.0), Some(b'Z'));
    raw.send(b'Q', b"SELECT 1\0").await;
    let answer = raw.until_ready().await;
    assert!(
        answer.iter().any(|(t, _)| *t == b'D'),
        "the session survives a refused FunctionCall"
    );
    // A malformed Parse ends the session with a FATAL error, not a crash.
    raw.send(b'P', b"\xff\xff").await;
    let answer = raw.until_ready().await;
    let fatal = support::error_text(&answer).expect("a FATAL error");
    assert!(fatal.contains("FATAL"));
    // An unknown message type likewise.
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(b'!', b"").await;
    let answer = raw.until_ready().await;
    assert!(String::from_utf8_lossy(&answer[0].1).contains("unexpected message type"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_pass_through() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"agent-listen\"\nidentity = \"agent\"\nclasses = [\"session\"]\ncommands = [\"LISTEN\", \"NOTIFY\"]\naction = \"allow\"\n"
    );
    let env = Env::start(&policy).await;
    let (listener, mut connection) =
        tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        pin_mut!(stream);
        while let Some(Ok(message)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute("LISTEN orders_changed")
        .await
        .unwrap();
    let sender = env.connect("agent").await;
    sender
        .batch_execute("NOTIFY orders_changed, 'order 7 shipped'")
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the notification arrives")
        .unwrap();
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("orders_changed", "order 7 shipped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_ends_the_session_with_a_clear_error() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    assert_alive(&c, 7).await;
    let pg = &env.pg;
    let killed = tokio::task::block_in_place(|| {
        pg.psql(
            "shop",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'gatehouse'",
        )
    });
    assert_eq!(killed, "1");
    let e = c.simple_query("SELECT 8").await.unwrap_err();
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.severity(), "FATAL", "{db:?}");
    } else {
        assert!(e.is_closed(), "{e}");
    }
    env.settle().await;
    // PostgreSQL's own FATAL reaches the client first, so either side may be
    // seen closing first; the session's end is recorded either way.
    assert!(env
        .events()
        .iter()
        .any(|e| matches!(e, EventBody::SessionClosed(s) if s.reason.contains("upstream") || s.reason.contains("client"))));
    // New sessions work again.
    let c2 = env.connect("agent").await;
    assert_alive(&c2, 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_when_the_target_requires_it() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("db-ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let target = format!("tls = true\ntls_ca = \"{}\"", ca.display());
    let env = Env::start_custom(POLICY, "", &target, move |pg| {
        use std::os::unix::fs::PermissionsExt;
        let crt = pg.data_dir().join("server.crt");
        let key = pg.data_dir().join("server.key");
        std::fs::write(&crt, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The server runs as the data directory's owner.
        let owner = std::fs::metadata(pg.data_dir()).unwrap();
        use std::os::unix::fs::MetadataExt;
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        pg.psql("shop", "ALTER SYSTEM SET ssl = on");
        pg.psql("shop", "SELECT pg_reload_conf()");
        std::thread::sleep(Duration::from_millis(500));
    })
    .await;
    let c = env.connect("agent").await;
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the gateway's upstream session is encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_ends_sessions_and_records_it() {
    let mut env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    assert_alive(&c, 10).await;
    env.stop().await;
    let e = c.simple_query("SELECT 11").await.unwrap_err();
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code(), &SqlState::ADMIN_SHUTDOWN, "{db:?}");
    } else {
        assert!(e.is_closed(), "{e}");
    }
    // The writer has finished: the ledger can be reopened and verifies.
    assert!(env.events().iter().any(
        |e| matches!(e, EventBody::SessionClosed(s) if s.reason == "the gateway is shutting down")
    ));
    let report = env.verify();
    assert!(report.is_intact(), "{:?}", report.failure);
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    gatehouse_ledger::Ledger::open(config.writer_options().unwrap())
        .expect("the gateway released the ledger")
        .close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_identities_can_use_a_read_only_upstream_role() {
    support::read_only_password();
    let env = Env::start_custom(POLICY, "", support::READ_ONLY_TARGET, |pg| {
        pg.psql("shop", support::READ_ONLY_ROLE_SQL);
    })
    .await;
    let reader = env.connect("reader").await;
    let who: String = reader
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who, "gatehouse_ro",
        "read-only identities log in upstream as the read-only role"
    );
    let n: i64 = reader
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200);
    let agent = env.connect("agent").await;
    let who: String = agent
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who,
        env.pg.superuser(),
        "read-write identities use the target's own login"
    );
    // The role is what holds read-only identities if a statement were
    // misjudged: the database itself refuses its writes.
    let direct = env
        .pg
        .try_psql(
            "shop",
            "SET ROLE gatehouse_ro; DELETE FROM orders WHERE id = 1",
        )
        .unwrap_err();
    assert!(direct.contains("permission denied"), "{direct}");
    drop((reader, agent));

    // A read-only login that can write is refused at start-up, naming what.
    let mut env = env;
    env.stop().await;
    env.pg.psql(
        "shop",
        "GRANT INSERT ON orders TO gatehouse_ro; GRANT CREATE ON SCHEMA public TO gatehouse_ro",
    );
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    let err = match gatehouse::gateway::Gateway::bind(&config).await {
        Ok(_) => panic!("a gateway started with a read-only login that can write"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("read_only_user gatehouse_ro can change data")
            && err.contains("INSERT on public.orders")
            && err.contains("CREATE on schema public"),
        "{err}"
    );
}

/// Without a read-only role, a read-only identity relies on
/// default_transaction_read_only, which `BEGIN READ WRITE` and `set_config`
/// undo: its sessions are refused unless the operator accepts that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_identities_need_a_read_only_role_or_an_explicit_acceptance() {
    let env = Env::start_custom(POLICY, "", "accept_read_only_without_role = false", |_| {}).await;
    let refused = tokio_postgres::connect(&env.conn_str("reader"), tokio_postgres::NoTls).await;
    let e = refused
        .err()
        .expect("a read-only identity ran without a read-only role");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string());
    assert!(
        text.contains("policy keeps identity \"reader\" read-only")
            && text.contains("read_only_user"),
        "{text}"
    );
    // Read-write identities are not affected.
    assert_alive(&env.connect("agent").await, 3).await;
}

/// A statement of a blocked identity fails: the session ended (FATAL or
/// closed), or, if it arrived before the end, it was refused.
fn fatal_or_closed(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let refused = db.severity() == "ERROR"
                && db.code() == &SqlState::INSUFFICIENT_PRIVILEGE
                && db.message().contains("blocked");
            assert!(db.severity() == "FATAL" || refused, "{db:?}");
            db.message().to_owned()
        }
        None => {
            assert!(e.is_closed(), "{e}");
            String::new()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_an_identity_cancels_its_work_ends_its_sessions_and_refuses_logins() {
    let env = Env::start(POLICY).await;
    let sleeper = env.connect("agent").await;
    let idle = env.connect("agent").await;
    let bystander = env.connect("reader").await;
    let sleeping = tokio::spawn(async move {
        let started = Instant::now();
        let r = sleeper.simple_query("SELECT pg_sleep(30)").await;
        (r, started.elapsed(), sleeper)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let blocked_at = Instant::now();
    env.shared()
        .block("agent", "bob", "exfiltration attempt", None)
        .await
        .unwrap();
    let (r, _, _sleeper) = sleeping.await.unwrap();
    let ended_after = blocked_at.elapsed();
    assert!(r.is_err(), "the in-flight statement was stopped");
    assert!(ended_after < Duration::from_secs(2), "took {ended_after:?}");
    println!("block to end of the in-flight statement: {ended_after:?}");
    let msg = fatal_or_closed(&idle.simple_query("SELECT 1").await.unwrap_err());
    if !msg.is_empty() {
        assert!(
            msg.contains("blocked") && msg.contains("exfiltration attempt"),
            "{msg}"
        );
    }
    // New logins are refused; other identities carry on.
    let e = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a blocked identity cannot log in");
    assert!(e.as_db_error().unwrap().message().contains("blocked"));
    assert_alive(&bystander, 12).await;
    env.settle().await;
    let events = env.events();
    assert!(events.iter().any(|e| matches!(e, EventBody::IdentityBlocked(b) if b.identity == "agent" && b.operator == "bob")));
    let terminated = events
        .iter()
        .filter(|e| matches!(e, EventBody::SessionTerminated(t) if t.identity == "agent"))
        .count();
    assert_eq!(terminated, 2, "both of the agent's sessions ended");
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::AuthenticationFailed(a) if a.reason.contains("blocked"))));
    // The state before and after the block differs by the block.
    let seq = {
        let reader = gatehouse_ledger::LedgerReader::open(env.ledger()).unwrap();
        reader
            .events(0..u64::MAX)
            .map(|e| e.unwrap().event)
            .find(|e| matches!(e.body, EventBody::IdentityBlocked(_)))
            .unwrap()
            .seq
    };
    let before =
        gatehouse::state::state_at(&env.ledger(), gatehouse::state::At::Seq(seq - 1)).unwrap();
    let after = gatehouse::state::state_at(&env.ledger(), gatehouse::state::At::Seq(seq)).unwrap();
    assert!(before.blocks.is_empty());
    assert_eq!(after.blocks["agent"].reason, "exfiltration attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_denials_trigger_automatic_containment() {
    let policy =
        format!("[settings]\ncontain_after_denials = 3\ncontain_window_seconds = 60\n{POLICY}");
    let env = Env::start(&policy).await;
    let c = env.connect("agent").await;
    for _ in 0..2 {
        denied(
            &c.simple_query("SELECT ssn FROM customers")
                .await
                .unwrap_err(),
        );
    }
    assert_alive(&c, 13).await;
    // The third denial crosses the threshold: the block ends the session.
    let _ = c.simple_query("SELECT ssn FROM customers").await;
    let e = c
        .simple_query("SELECT 'after the block'")
        .await
        .unwrap_err();
    fatal_or_closed(&e);
    assert!(
        tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    env.settle().await;
    let block = env
        .events()
        .into_iter()
        .find_map(|e| match e {
            EventBody::IdentityBlocked(b) => Some(b),
            _ => None,
        })
        .expect("an automatic block");
    assert_eq!(block.operator, "gatehouse");
    assert_eq!(
        block.trigger.as_deref(),
        Some("3 denied statements within 60 s")
    );
    assert!(
        !env.pg.log().contains("after the block"),
        "nothing ran after the block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_unblock_and_revoke() {
    let env = Env::start(POLICY).await;
    // Kill one session: exactly that one ends.
    let a = env.connect("agent").await;
    let b = env.connect("agent").await;
    let first = *env.shared().sessions.lock().unwrap().keys().min().unwrap();
    assert!(env.shared().kill(first, "bob", "looked at it funny"));
    assert!(!env.shared().kill(999_999, "bob", "no such session"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ra = a.simple_query("SELECT 1").await;
    let rb = b.simple_query("SELECT 1").await;
    assert!(
        ra.is_err() != rb.is_err(),
        "exactly one session ended: {ra:?} / {rb:?}"
    );
    // Unblock lets an identity back in.
    env.shared()
        .block("agent", "bob", "pause", None)
        .await
        .unwrap();
    assert!(
        tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    assert!(env
        .shared()
        .unblock("agent", "alice", Some("cleared".into()))
        .await
        .unwrap());
    let back = env.connect("agent").await;
    assert_alive(&back, 14).await;
    // Revoking the credential ends the sessions using it and its logins.
    let credential = {
        let ids = env.shared().identities.read().unwrap();
        let id = ids.usable_credentials("agent", gatehouse::gateway::server::now_ns())[0]
            .id
            .clone();
        id
    };
    assert!(env
        .shared()
        .revoke(&credential, "alice", "leaked in a log")
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let msg = fatal_or_closed(&back.simple_query("SELECT 1").await.unwrap_err());
    if !msg.is_empty() {
        assert!(msg.contains("revoked"), "{msg}");
    }
    let e = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a revoked credential cannot log in");
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::INVALID_PASSWORD);
    env.settle().await;
    let events = env.events();
    assert!(events.iter().any(|e| matches!(e, EventBody::SessionTerminated(t) if t.operator.as_deref() == Some("bob") && t.reason == "looked at it funny")));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::IdentityUnblocked(u) if u.operator == "alice")));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventBody::CredentialRevoked(r) if r.credential == credential)));
    assert!(env.verify().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_nothing_of_a_blocked_identity_reaches_the_database() {
    let env = Env::start(POLICY).await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = env.connect("agent").await;
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let sql = format!("INSERT INTO audit_probe (note) VALUES ('w{w}-{n}')");
                if c.simple_query(&sql).await.is_err() {
                    return n;
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    env.shared()
        .block("agent", "bob", "runaway writes", None)
        .await
        .unwrap();
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let all_stopped = started.elapsed();
    println!("{written} writes before the block; all 4 writers stopped {all_stopped:?} after it");
    assert!(written > 0);
    let count =
        |pg: &gatehouse_pgtest::PgCluster| pg.psql("shop", "SELECT count(*) FROM audit_probe");
    let settled = tokio::task::block_in_place(|| count(&env.pg));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = tokio::task::block_in_place(|| count(&env.pg));
    assert_eq!(settled, later, "rows kept arriving after the block");
    assert!(
        settled.parse::<u64>().unwrap() <= written + 4,
        "the database holds {settled} rows but only {written} inserts were acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_record_the_result_formats_bind_asked_for() {
    let env = Env::start(POLICY).await;
    let client = env.connect("agent").await;
    // tokio-postgres prepares (Describe of the statement: text formats),
    // then binds asking for binary results.
    let rows = client
        .query("SELECT id, total FROM orders WHERE id = $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let text = client
        .simple_query("SELECT id FROM orders WHERE id = 7")
        .await
        .unwrap();
    assert!(!text.is_empty());
    env.settle().await;
    let responses: Vec<_> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            gatehouse_ledger::EventBody::Response(r) if !r.columns.is_empty() => Some(r),
            _ => None,
        })
        .collect();
    let binary = responses
        .iter()
        .find(|r| r.columns.len() == 2)
        .expect("the prepared query's response");
    assert!(
        binary.columns.iter().all(|c| c.format == 1),
        "{:?}",
        binary.columns
    );
    assert_eq!(
        binary.result[0].values[0].as_ref().unwrap().0,
        7i32.to_be_bytes()
    );
    let simple = responses.iter().find(|r| r.columns.len() == 1).unwrap();
    assert_eq!(simple.columns[0].format, 0);
    assert_eq!(simple.result[0].values[0].as_ref().unwrap().0, b"7");
}

/// `[ledger] record_bytes` bounds the recorded result however few rows it
/// has: a few wide rows are counted and digested, not stored, and what is
/// stored is a prefix of what the client got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_results_stop_at_the_byte_budget() {
    let env = Env::start_ledger(POLICY, "record_bytes = \"1 KiB\"").await;
    let client = env.connect("agent").await;
    let wide = "SELECT repeat('x', 300) || g FROM generate_series(1, 10) g";
    let rows = client.simple_query(wide).await.unwrap();
    let got = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(got, 10, "every row reaches the client");
    let narrow = "SELECT g FROM generate_series(1, 10) g";
    client.simple_query(narrow).await.unwrap();
    env.settle().await;
    let responses: Vec<_> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            gatehouse_ledger::EventBody::Response(r) if r.rows == 10 => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 2);
    let (wide, narrow) = (&responses[0], &responses[1]);
    // 301-302 bytes a row: three fit in 1,024.
    assert_eq!(wide.result.len(), 3);
    assert!(wide.truncated);
    let first = wide.result[0].values[0].as_ref().unwrap();
    assert_eq!(first.0, format!("{}1", "x".repeat(300)).as_bytes());
    // The rows the ledger does not hold are still digested.
    assert_eq!(wide.result_digest.as_ref().map(|d| d.0.len()), Some(32));
    assert_eq!(narrow.result.len(), 10);
    assert!(!narrow.truncated);
    assert!(env.verify().is_intact());
}

/// The gateway judges SQL as UTF-8 text, so the database must read the same
/// bytes as UTF-8. In Shift-JIS, `0x81 0x5C` is one character: a backslash
/// that escapes a quote in the gateway's view is swallowed in the
/// database's, so a string literal to one is `ssn` to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_reads_sql_in_the_encoding_the_gateway_judged() {
    let env = Env::start(POLICY).await;
    let mut smuggle = b"SELECT E'\xc3\x81\\', ssn FROM customers --'".to_vec();
    smuggle.push(0);
    assert!(
        std::str::from_utf8(&smuggle).is_ok(),
        "valid UTF-8: a constant to the gateway"
    );
    for encoding in ["SJIS", "sjis", "LATIN1", "BIG5", "GBK", "WIN1252"] {
        let refused =
            support::RawClient::try_login(&env, "agent", &[("client_encoding", encoding)])
                .await
                .err()
                .unwrap_or_else(|| panic!("a session with client_encoding {encoding} was opened"));
        assert!(refused.contains("client_encoding"), "{refused}");
    }
    for encoding in ["UTF8", "utf-8", "Unicode", "SQL_ASCII"] {
        let mut raw =
            support::RawClient::try_login(&env, "agent", &[("client_encoding", encoding)])
                .await
                .unwrap_or_else(|e| panic!("client_encoding {encoding} refused: {e}"));
        raw.send(b'Q', &smuggle).await;
        let answer = raw.until_ready().await;
        for (tag, body) in &answer {
            if *tag == b'D' {
                let text = String::from_utf8_lossy(body);
                assert!(
                    !text.contains("00000000"),
                    "an SSN leaked with {encoding}: {text}"
                );
            }
        }
        // Changing the encoding later is refused whatever the policy, in
        // every spelling PostgreSQL accepts.
        for change in [
            "SET client_encoding = 'SJIS'",
            "SET client_encoding TO DEFAULT",
            "SET SESSION client_encoding = 'LATIN1'",
            "SET LOCAL client_encoding = 'SJIS'",
            "SET NAMES 'SJIS'",
            "SELECT set_config('client_encoding', 'SJIS', false)",
        ] {
            let mut q = change.as_bytes().to_vec();
            q.push(0);
            raw.send(b'Q', &q).await;
            let answer = raw.until_ready().await;
            assert!(
                answer.iter().any(|(t, b)| *t == b'E' && {
                    let text = String::from_utf8_lossy(b);
                    text.contains("42501") && text.contains("keeps client_encoding UTF8")
                }),
                "{change} was not refused"
            );
        }
        raw.send(b'Q', b"SHOW client_encoding\0").await;
        let answer = raw.until_ready().await;
        let shown = answer
            .iter()
            .find(|(t, _)| *t == b'D')
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .expect("a row");
        assert!(shown.ends_with("UTF8"), "{shown}");
    }
}

/// A user function the policy allows can still change the encoding (here
/// through set_config): the gateway sees PostgreSQL report the new value
/// and ends the session before anything else reaches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_encoding_changes_anyway_is_ended() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"switcher\"\nidentity = \"agent\"\nclasses = [\"function\"]\nfunctions = [\"switch_encoding\", \"public.switch_encoding\"]\naction = \"allow\"\n"
    );
    let env = Env::start_custom(&policy, "", "", |pg| {
        pg.psql(
            "shop",
            "CREATE FUNCTION switch_encoding() RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM set_config('client_encoding', 'SJIS', false); RETURN 1; END $$",
        );
    })
    .await;
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(b'Q', b"SELECT switch_encoding()\0").await;
    let answer = raw.until_ready().await;
    let fatal = support::error_text(&answer).expect("a FATAL error");
    assert!(
        fatal.contains("FATAL") && fatal.contains("client_encoding SJIS"),
        "{fatal}"
    );
    assert!(
        !answer.iter().any(|(t, _)| *t == b'Z'),
        "the session ended instead of going on"
    );
    env.settle().await;
    let ended = env.events().into_iter().any(
        |e| matches!(e, EventBody::SessionClosed(c) if c.reason.contains("client_encoding SJIS")),
    );
    assert!(ended, "the end of the session is recorded with its reason");
}

/// With standard_conforming_strings off, `'a\''` ends after the backslash's
/// quote, where the gateway's string goes on: `ssn` would be code to the
/// database and text to the gateway. The gateway starts every session with
/// it on (over a database default), denies turning it off, and ends a
/// session a function turned it off in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_syntax_stays_standard_whatever_the_database_default() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"switcher\"\nidentity = \"agent\"\nclasses = [\"function\"]\nfunctions = [\"switch_strings\", \"public.switch_strings\"]\naction = \"allow\"\n"
    );
    let env = Env::start_custom(&policy, "", "", |pg| {
        pg.psql(
            "shop",
            "ALTER DATABASE shop SET standard_conforming_strings = off",
        );
        pg.psql(
            "shop",
            "CREATE FUNCTION switch_strings() RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 1; END $$",
        );
    })
    .await;
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(b'Q', b"SELECT 'a\\'', ssn FROM customers --'\0")
        .await;
    let answer = raw.until_ready().await;
    for (tag, body) in &answer {
        if *tag == b'D' {
            let text = String::from_utf8_lossy(body);
            assert!(!text.contains("00000000"), "an SSN leaked: {text}");
        }
    }
    raw.send(b'Q', b"SHOW standard_conforming_strings\0").await;
    let answer = raw.until_ready().await;
    assert!(
        answer
            .iter()
            .any(|(t, b)| *t == b'D' && String::from_utf8_lossy(b).ends_with("on")),
        "{answer:?}"
    );
    raw.send(b'Q', b"SET standard_conforming_strings = off\0")
        .await;
    let answer = raw.until_ready().await;
    assert!(
        answer.iter().any(|(t, b)| *t == b'E'
            && String::from_utf8_lossy(b).contains("standard_conforming_strings on")),
        "{answer:?}"
    );
    raw.send(b'Q', b"SELECT switch_strings()\0").await;
    let answer = raw.until_ready().await;
    assert!(
        answer.iter().any(|(t, b)| *t == b'E'
            && String::from_utf8_lossy(b).contains("FATAL")
            && String::from_utf8_lossy(b).contains("standard_conforming_strings off")),
        "{answer:?}"
    );
    assert!(!answer.iter().any(|(t, _)| *t == b'Z'), "the session ended");
}

/// Policy resolves unqualified names in `public`; so does every upstream
/// session, whatever search path the database defaults to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unqualified_names_resolve_where_policy_judged_them() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"no-secrets\"\nidentity = \"*\"\ntables = [\"secret.*\"]\naction = \"deny\"\nmessage = \"secret schema\"\n"
    );
    let env = Env::start_custom(&policy, "", "", |pg| {
        pg.psql(
            "shop",
            "CREATE SCHEMA secret; \
             CREATE TABLE secret.orders (id int, note text); \
             INSERT INTO secret.orders VALUES (1, 'top secret'); \
             GRANT USAGE ON SCHEMA secret TO PUBLIC; \
             GRANT SELECT ON secret.orders TO PUBLIC; \
             ALTER DATABASE shop SET search_path = secret, public",
        );
    })
    .await;
    let c = env.connect("agent").await;
    // Policy judged public.orders; the database must read that table too.
    match c.query("SELECT * FROM orders WHERE id = 1", &[]).await {
        Ok(rows) => {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].columns().len(), 4, "public.orders has 4 columns");
        }
        Err(e) => panic!("{e}"),
    }
    let leaked = c.query("SELECT note FROM orders", &[]).await;
    assert!(leaked.is_err(), "orders meant secret.orders: {leaked:?}");
    let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "public, pg_temp");
    let e = c
        .query("SELECT * FROM secret.orders", &[])
        .await
        .unwrap_err();
    assert!(denied(&e).contains("secret schema"));
}

/// Statements and portals made by SQL (PREPARE, DECLARE) share the protocol's
/// names, but the gateway never saw their text judged at Parse: binding or
/// executing them by protocol is refused, so a PREPAREd UPDATE cannot run
/// unjudged and unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_portals_made_by_sql_are_not_run_through_the_protocol() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"agent-session\"\nidentity = \"agent\"\nclasses = [\"session\"]\naction = \"allow\"\n"
    );
    let env = Env::start(&policy).await;
    let count = |env: &Env| {
        env.pg.psql(
            "shop",
            "SELECT count(*) FROM customers WHERE email = 'pwned'",
        )
    };
    assert_eq!(count(&env), "0");
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(
        b'Q',
        b"PREPARE sneaky AS UPDATE customers SET email = 'pwned' WHERE id = 3\0",
    )
    .await;
    let answer = raw.until_ready().await;
    assert!(
        answer.iter().all(|(t, _)| *t != b'E'),
        "PREPARE is a session statement the policy allows: {answer:?}"
    );
    raw.send(b'B', b"\0sneaky\0\0\0\0\0\0\0").await;
    raw.send(b'E', b"\0\0\0\0\0").await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    let error = support::error_text(&answer).expect("the Bind is refused");
    assert!(
        error.contains("26000") && error.contains("sneaky"),
        "{error}"
    );
    assert_eq!(count(&env), "0", "the PREPAREd UPDATE ran");

    raw.send(b'Q', b"BEGIN\0").await;
    raw.until_ready().await;
    raw.send(b'Q', b"DECLARE c CURSOR FOR SELECT id FROM orders\0")
        .await;
    raw.until_ready().await;
    raw.send(b'E', b"c\0\0\0\0\0").await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    assert!(
        answer
            .iter()
            .any(|(t, b)| *t == b'E' && String::from_utf8_lossy(b).contains("34000")),
        "{answer:?}"
    );
    assert!(
        !answer.iter().any(|(t, _)| *t == b'D'),
        "the cursor's rows came back"
    );
}

/// Issue 13, finding 5: statements ran seconds after a session's credential
/// expired. The session now ends at the expiry, with FATAL 57P01 naming the
/// credential, and the end is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_credential_expires() {
    let env = Env::start(POLICY).await;
    let url = format!("http://{}/v1/identities/agent/credentials", env.admin);
    let token = env.admin_token();
    let issued: serde_json::Value = tokio::task::spawn_blocking(move || {
        ureq::post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({ "ttl": "2s" }))
            .unwrap()
            .into_body()
            .read_json()
            .unwrap()
    })
    .await
    .unwrap();
    let credential = issued["credential"].as_str().unwrap().to_owned();
    let conn = format!(
        "host=127.0.0.1 port={} user=agent password={} dbname=shop",
        env.addr.port(),
        issued["secret"].as_str().unwrap()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = std::time::Instant::now();
    assert_alive(&client, 1).await;
    // A statement still running at the expiry is cancelled with the session.
    let long = client.simple_query("SELECT pg_sleep(30)").await;
    let e = long.expect_err("the statement outlived its credential");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ended after {:?}",
        started.elapsed()
    );
    let text = format!("{e:?}");
    assert!(text.contains("57P01") || e.is_closed(), "{text}");
    assert!(client.simple_query("SELECT 1").await.is_err());
    env.settle().await;
    let ended = env.events().into_iter().any(|e| {
        let text = format!("{e:?}");
        text.contains(&format!("credential {credential} expired"))
    });
    assert!(ended, "the expiry was not recorded");
    // The agent's long-lived credential still works.
    assert_alive(&env.connect("agent").await, 2).await;
}

/// Issue 13: a read cannot hold locks or burn the server indefinitely. Every
/// upstream session gets the target's statement_timeout and
/// idle_in_transaction_session_timeout (over database defaults), and no
/// client can change them, whatever the rules allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_are_set_upstream_and_cannot_be_changed() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"agent-session\"\nidentity = \"agent\"\nclasses = [\"session\", \"admin\"]\nfunctions = [\"*\"]\naction = \"allow\"\n"
    );
    let env = Env::start_custom(&policy, "", "statement_timeout = \"1s\"\n", |pg| {
        pg.psql(
            "shop",
            "ALTER DATABASE shop SET statement_timeout = 0; \
                 ALTER DATABASE shop SET idle_in_transaction_session_timeout = 0",
        );
    })
    .await;
    let c = env.connect("agent").await;
    let show = |name: &'static str| {
        let c = &c;
        async move {
            let row = c.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(show("statement_timeout").await, "1s");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    let e = c.simple_query("SELECT pg_sleep(3)").await.unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{e:?}"
    );
    for sql in [
        "SET statement_timeout = 0",
        "SET LOCAL idle_in_transaction_session_timeout = 0",
        "SELECT set_config('statement_timeout', '0', false)",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        let message = denied(&e);
        assert!(
            message.contains("clients cannot change them"),
            "{sql}: {message}"
        );
    }
    assert_eq!(show("statement_timeout").await, "1s");
    // RESET comes back to the gateway's value, not the database default.
    c.simple_query("RESET ALL").await.unwrap();
    assert_eq!(show("statement_timeout").await, "1s");
}

/// Issue 14, finding 1: one failed accept() stopped the gateway. With the
/// open-file limit at 64 and more idle connections than that, accepting
/// fails (EMFILE): the gateway keeps running, and serves again once the
/// idle connections go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_the_gateway() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen(
        "[listen]\naddress = \"127.0.0.1:0\"",
        &format!("[listen]\naddress = \"127.0.0.1:{port}\""),
        1,
    );
    std::fs::write(&env.config, text).unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--config"])
        .arg(&env.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut idle = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            idle.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gateway exited when it ran out of file descriptors"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let conn = format!(
        "host=127.0.0.1 port={port} user=agent password={} dbname=shop",
        env.secret("agent")
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("the gateway serves again");
    tokio::spawn(connection);
    assert_alive(&client, 5).await;
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 14, finding 2 (in part): a connection that sends nothing, or half
/// a startup packet, was held indefinitely. It is closed after the login
/// timeout; logged-in sessions are not limited by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_log_in_are_closed_after_the_login_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start_with(POLICY, "login_timeout = \"1s\"").await;
    let session = env.connect("agent").await;
    let mut silent = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    half.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    let started = std::time::Instant::now();
    for stream in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the connection was held past the login timeout")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // The session that logged in outlives the timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive(&session, 6).await;
}

/// Issue 14, finding 2 (in part): nothing limited how many connections the
/// gateway held. Past `[listen] max_connections`, a client is answered
/// FATAL 53300 naming the limit; once connections close, logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_53300_naming_it() {
    let env = Env::start_with(POLICY, "max_connections = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(env.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls).await;
    let e = refused
        .err()
        .expect("a connection past the limit was accepted");
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("max_connections"), "{}", db.message());
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive(&env.connect("agent").await, 7).await;
}
