//! Issue 12: the relay judges what PostgreSQL will run from PostgreSQL's own
//! answers. Pipelines that everyday drivers send (a simple Query behind
//! extended messages without Sync, a prepared statement reused after an
//! error in the stretch that parsed it, a Parse skipped after an error)
//! work as they do direct, and what runs is what the ledger shows.

mod support;

use gatehouse_ledger::EventBody;
use support::{error_text, Env, RawClient, POLICY};

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
    }
    b
}

/// Bind of `statement` to `portal`, no parameters, text results.
fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = cstrs(&[portal, statement]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    b
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = cstrs(&[portal]);
    b.extend_from_slice(&0i32.to_be_bytes());
    b
}

/// The text values of every DataRow's first column.
fn first_values(answer: &[(u8, Vec<u8>)]) -> Vec<String> {
    answer
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| {
            let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
            String::from_utf8_lossy(&body[6..6 + len]).into_owned()
        })
        .collect()
}

fn received(env: &Env) -> Vec<String> {
    env.events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::Statement(q) => Some(q.sql),
            _ => None,
        })
        .collect()
}

/// psycopg's pipeline mode and asyncpg's copy_records_to_table send a
/// simple Query right behind extended-protocol messages, without a Sync.
/// PostgreSQL runs it (nothing failed before it); so does the gateway,
/// judging and recording both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_query_behind_extended_messages_runs_when_nothing_failed() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("", "SELECT 'extended'").await;
    raw.send(b'B', &bind("", "")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(b'Q', b"SELECT 'simple'\0").await;
    let answer = raw.until_ready().await;
    assert_eq!(error_text(&answer), None);
    assert_eq!(first_values(&answer), ["extended", "simple"]);
    // The stretch ended with the Query: the session goes on normally.
    raw.send(b'Q', b"SELECT 'after'\0").await;
    assert_eq!(first_values(&raw.until_ready().await), ["after"]);
    env.settle().await;
    env.assert_database_ran_only_allowed();
    let sql = received(&env);
    for q in ["SELECT 'extended'", "SELECT 'simple'", "SELECT 'after'"] {
        assert!(sql.iter().any(|s| s == q), "{q} recorded: {sql:?}");
    }
}

/// A CopyDone outside COPY gets no answer from PostgreSQL: a Query after
/// it, inside a pipeline, must not wait for one (found by the session fuzz
/// test: the session hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_done_outside_copy_does_not_hold_up_a_query_in_a_pipeline() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("", "SELECT 1").await;
    raw.send(b'c', b"").await;
    raw.send(b'Q', b"SELECT 'answered'\0").await;
    let answer = raw
        .until_ready_within(std::time::Duration::from_secs(5))
        .await
        .expect("an answer, not a hang");
    assert_eq!(first_values(&answer), ["answered"]);
}

/// After an error PostgreSQL skips everything until Sync, a simple Query
/// included: the gateway neither runs nor records it, and the answers
/// stay in step with the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_query_after_a_failed_extended_message_is_skipped_like_postgresql_does() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("", "SELECT 1/0").await;
    raw.send(b'B', &bind("", "")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(
        b'Q',
        b"INSERT INTO audit_probe (note) VALUES ('skipped_probe')\0",
    )
    .await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    let error = error_text(&answer).expect("division by zero");
    assert!(error.contains("22012"), "{error}");
    raw.send(
        b'Q',
        b"SELECT count(*) FROM audit_probe WHERE note = 'skipped_probe'\0",
    )
    .await;
    assert_eq!(first_values(&raw.until_ready().await), ["0"]);
    env.settle().await;
    env.assert_database_ran_only_allowed();
    assert!(
        !received(&env)
            .iter()
            .any(|s| s.contains("VALUES ('skipped_probe')")),
        "a statement PostgreSQL skipped is not recorded as run"
    );
}

/// asyncpg after a command timeout: the stretch that parsed a statement
/// ended with an error (the cancelled Execute), but PostgreSQL had
/// answered ParseComplete first, so the statement exists and the driver
/// binds it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_parsed_before_an_error_can_be_bound_later() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("s_total", "SELECT 'cached'").await;
    raw.parse("s_fails", "SELECT 1/0").await;
    raw.send(b'B', &bind("", "s_fails")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    assert!(error_text(&answer).unwrap().contains("22012"));
    raw.send(b'B', &bind("", "s_total")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    assert_eq!(error_text(&answer), None);
    assert_eq!(first_values(&answer), ["cached"]);
}

/// A Parse PostgreSQL skipped (an error came before it) leaves the
/// statement it would have replaced: binding that name runs the old
/// statement, and the ledger records the old statement as what ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_parse_leaves_the_old_statement_and_the_ledger_says_so() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("", "SELECT 'old'").await;
    raw.send(b'S', b"").await;
    assert_eq!(error_text(&raw.until_ready().await), None);
    raw.parse("s_bad", "SELEC broken").await;
    raw.parse("", "SELECT 'new'").await;
    raw.send(b'S', b"").await;
    assert!(error_text(&raw.until_ready().await).is_some());
    raw.send(b'B', &bind("", "")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    assert_eq!(error_text(&answer), None);
    assert_eq!(first_values(&answer), ["old"]);
    env.settle().await;
    env.assert_database_ran_only_allowed();
    let executed: Vec<String> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::Statement(q) if q.portal.is_some() => Some(q.sql),
            _ => None,
        })
        .collect();
    assert_eq!(executed, ["SELECT 'old'"]);
}

/// A refused Bind does not disturb the client's unnamed statement: the
/// gateway's failing stand-in message names its own statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_leaves_the_unnamed_statement_in_place() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.parse("", "SELECT 'kept'").await;
    raw.send(b'S', b"").await;
    assert_eq!(error_text(&raw.until_ready().await), None);
    raw.send(b'B', &bind("", "never_parsed")).await;
    raw.send(b'S', b"").await;
    let refused = error_text(&raw.until_ready().await).expect("refused");
    assert!(refused.contains("never_parsed"), "{refused}");
    raw.send(b'B', &bind("", "")).await;
    raw.send(b'E', &execute("")).await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    assert_eq!(error_text(&answer), None);
    assert_eq!(first_values(&answer), ["kept"]);
}

/// psycopg's scrollable server-side cursors move with SQL MOVE; MOVE runs
/// a cursor's query as FETCH does, so on a portal bound by the protocol it
/// is refused like FETCH (issue 12, finding 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_is_read_and_refused_on_protocol_portals() {
    let env = Env::start(POLICY).await;
    let mut raw = RawClient::login(&env, "agent").await;
    raw.send(
        b'Q',
        b"BEGIN; DECLARE c SCROLL CURSOR FOR SELECT id FROM orders ORDER BY id; MOVE ABSOLUTE 9 IN c\0",
    )
    .await;
    assert_eq!(error_text(&raw.until_ready().await), None);
    raw.send(b'Q', b"FETCH NEXT FROM c\0").await;
    assert_eq!(first_values(&raw.until_ready().await), ["10"]);
    raw.parse("del", "DELETE FROM orders WHERE id <= 3").await;
    raw.send(b'B', &bind("p", "del")).await;
    raw.send(b'S', b"").await;
    raw.until_ready().await;
    raw.send(b'Q', b"MOVE ALL IN p\0").await;
    let refused = error_text(&raw.until_ready().await).expect("refused");
    assert!(refused.contains("portal \"p\""), "{refused}");
    raw.send(b'Q', b"ROLLBACK\0").await;
    raw.until_ready().await;
    assert_eq!(
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id <= 3")
            .trim(),
        "3"
    );
}

/// SQL shares the protocol's names: `DEALLOCATE s1` then `PREPARE s1 AS
/// DELETE ...` by simple Query left the relay judging a Bind of `s1` as the
/// `SELECT` it saw parsed, while PostgreSQL ran the DELETE (recorded as the
/// SELECT). Likewise `CLOSE p` then `DECLARE p CURSOR FOR ...` for an
/// Execute of `p`. The relay now forgets such names: the Bind or Execute
/// is refused, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_sql_reuses_are_not_judged_as_what_they_held() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"agent-session\"\nidentity = \"agent\"\nclasses = [\"session\"]\naction = \"allow\"\n"
    );
    let env = Env::start(&policy).await;
    let count = |env: &Env| {
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id <= 3")
    };
    let before = count(&env);
    for reuse in ["DEALLOCATE s1", "DEALLOCATE ALL", "DISCARD ALL"] {
        let mut raw = RawClient::login(&env, "agent").await;
        raw.parse("s1", "SELECT 1").await;
        raw.send(b'S', b"").await;
        assert_eq!(error_text(&raw.until_ready().await), None);
        for q in [reuse, "PREPARE s1 AS DELETE FROM orders WHERE id <= 3"] {
            raw.send(b'Q', format!("{q}\0").as_bytes()).await;
            let answer = raw.until_ready().await;
            assert_eq!(error_text(&answer), None, "{q}");
        }
        raw.send(b'B', &bind("", "s1")).await;
        raw.send(b'E', &execute("")).await;
        raw.send(b'S', b"").await;
        let refused = error_text(&raw.until_ready().await).expect("the Bind is refused");
        assert!(refused.contains("26000"), "{reuse}: {refused}");
        assert_eq!(count(&env), before, "{reuse}: the DELETE ran");
    }
    let mut raw = RawClient::login(&env, "agent").await;
    raw.send(b'Q', b"BEGIN\0").await;
    raw.until_ready().await;
    raw.parse("", "SELECT 1").await;
    raw.send(b'B', &bind("p", "")).await;
    raw.send(b'S', b"").await;
    raw.until_ready().await;
    raw.send(
        b'Q',
        b"CLOSE p; DECLARE p CURSOR FOR SELECT name FROM customers ORDER BY id\0",
    )
    .await;
    assert_eq!(error_text(&raw.until_ready().await), None);
    raw.send(b'E', &execute("p")).await;
    raw.send(b'S', b"").await;
    let answer = raw.until_ready().await;
    let refused = error_text(&answer).expect("the Execute is refused");
    assert!(refused.contains("34000"), "{refused}");
    assert!(
        first_values(&answer).is_empty(),
        "the cursor's rows came back"
    );
    env.settle().await;
    env.assert_database_ran_only_allowed();
}
