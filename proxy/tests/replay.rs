//! `gatehouse replay` over a session recorded by a real gateway in front
//! of a real PostgreSQL.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use gatehouse_ledger::event::{Action, EventBody};
use gatehouse_ledger::LedgerReader;
use support::{Env, POLICY};

const HOSTILE: &str = "<script>alert(1)</script>";

fn gatehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse")
}

/// Runs `gatehouse replay` with `args`, expecting success; its stdout.
fn replay(ledger: &Path, args: &[&str]) -> String {
    let mut all = vec!["replay", "--ledger", ledger.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = gatehouse(&all);
    assert!(
        out.status.success(),
        "gatehouse {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("replay output is UTF-8")
}

fn json(ledger: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&replay(ledger, &all)).expect("--json prints one JSON document")
}

/// Waits until `n` sessions have been recorded as closed.
async fn sessions_closed(env: &Env, n: usize) {
    for _ in 0..100 {
        let closed = env
            .events()
            .iter()
            .filter(|e| matches!(e, EventBody::SessionClosed(_)))
            .count();
        if closed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} sessions were not recorded as closed within 5 s");
}

fn statements(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "statement")
        .collect()
}

fn statement<'a>(doc: &'a serde_json::Value, sql: &str) -> &'a serde_json::Value {
    statements(doc)
        .into_iter()
        .find(|s| s["received"]["sql"] == sql)
        .unwrap_or_else(|| panic!("no statement {sql:?} in {doc:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_shows_a_recorded_session_as_text_json_and_html_and_filters_it() {
    let env = Env::start(POLICY).await;

    // The agent's session: an allowed read with rows (simple protocol, text
    // results), one with a bind parameter (extended protocol, binary
    // results), a denial, and an error from the database.
    let agent = env.connect("agent").await;
    agent
        .simple_query("SELECT id, name, email FROM customers WHERE id <= 3 ORDER BY id")
        .await
        .unwrap();
    let row = agent
        .query_one("SELECT id, customer FROM orders WHERE id = $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    agent
        .simple_query("SELECT ssn FROM customers")
        .await
        .unwrap_err();
    agent
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    drop(agent);

    // Another identity's session, which --identity agent must leave out.
    let reader = env.connect("reader").await;
    reader
        .simple_query("SELECT count(*) FROM orders WHERE total > 17")
        .await
        .unwrap();
    drop(reader);

    // A second agent session with markup in everything it controls.
    let mut config: tokio_postgres::Config = env.conn_str("agent").parse().unwrap();
    config.application_name(HOSTILE);
    let (hostile, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    hostile
        .simple_query(&format!("SELECT '{HOSTILE}' AS \"{HOSTILE}\""))
        .await
        .unwrap();
    hostile
        .simple_query(&format!("SELECT * FROM \"{HOSTILE}\""))
        .await
        .unwrap_err();
    drop(hostile);
    sessions_closed(&env, 3).await;
    env.settle().await;

    let ledger = env.ledger();
    let events: Vec<_> = LedgerReader::open(&ledger)
        .unwrap()
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event)
        .collect();
    let session_of = |who: &str, app: &str| {
        events
            .iter()
            .find_map(|e| match &e.body {
                EventBody::SessionOpened(o)
                    if o.identity == who && o.application_name.as_deref() == Some(app) =>
                {
                    Some(o.session)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("a session of {who} from {app}"))
    };
    let session = session_of("agent", "gh-test");
    let hostile_session = session_of("agent", HOSTILE);
    let session_arg = session.to_string();

    // Text.
    let text = replay(&ledger, &["--session", &session_arg]);
    for expected in [
        format!("Gatehouse replay of session {session}"),
        format!("session {session} OPENED by agent from 127.0.0.1:"),
        "application \"gh-test\"".to_owned(),
        "SELECT id, name, email FROM customers WHERE id <= 3 ORDER BY id".to_owned(),
        "ALLOWED by rule agent-reads".to_owned(),
        "SELECT 3 at ".to_owned(),
        "customer 1".to_owned(),
        "c3@example.com".to_owned(),
        "SELECT id, customer FROM orders WHERE id = $1".to_owned(),
        "$1 (binary) = 0x00000007".to_owned(),
        "0x00000007 (7)".to_owned(),
        "SELECT ssn FROM customers".to_owned(),
        "DENIED by rule no-ssn".to_owned(),
        "message: SSNs are off limits to agents".to_owned(),
        "SQLSTATE 42P01: relation \"no_such_table\" does not exist".to_owned(),
        format!("session {session} CLOSED after 4 statements"),
        "gatehouse-verify ".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("total > 17"), "another identity's statement");
    assert!(!text.contains(HOSTILE), "another session's statement");
    // Rows appear as a table under their statement, ms durations.
    assert!(text.contains(" ms, "), "{text}");

    // JSON.
    let doc = json(&ledger, &["--session", &session_arg]);
    assert_eq!(doc["format"], "gatehouse-replay/1");
    assert_eq!(doc["selection"]["session"], session);
    assert!(doc["covered_by_checkpoint"].is_boolean());
    assert_eq!(statements(&doc).len(), 4);
    let read = statement(
        &doc,
        "SELECT id, name, email FROM customers WHERE id <= 3 ORDER BY id",
    );
    assert_eq!(read["decision"]["action"], "allow");
    assert_eq!(read["decision"]["rule"], "agent-reads");
    assert_eq!(read["received"]["protocol"], "simple");
    let response = &read["response"];
    assert_eq!(response["command_tag"], "SELECT 3");
    assert_eq!(response["rows"], 3);
    assert_eq!(response["columns"][1]["name"], "name");
    assert_eq!(response["columns"][1]["format"], "text");
    assert_eq!(response["result"].as_array().unwrap().len(), 3);
    assert_eq!(response["result"][0][0]["text"], "1");
    assert_eq!(response["result"][0][1]["text"], "customer 1");
    assert_eq!(response["result"][2][2]["text"], "c3@example.com");
    assert_eq!(response["truncated"], false);
    // The ledger leaves the digest out when the recorded rows are the
    // database's; replay rebuilds it from them (docs/ledger-format.md, 7).
    let mut rows = blake3::Hasher::new();
    for id in 1..=3 {
        let values = [
            id.to_string(),
            format!("customer {id}"),
            format!("c{id}@example.com"),
        ];
        let len: usize = values.iter().map(|v| 4 + v.len()).sum();
        rows.update(b"D");
        rows.update(&((4 + 2 + len) as u32).to_be_bytes());
        rows.update(&3u16.to_be_bytes());
        for v in &values {
            rows.update(&(v.len() as u32).to_be_bytes());
            rows.update(v.as_bytes());
        }
    }
    assert_eq!(
        response["result_digest"].as_str().unwrap(),
        rows.finalize().to_hex().as_str()
    );
    let stored = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Response(r)
                if r.session == session && r.command_tag.as_deref() == Some("SELECT 3") =>
            {
                Some(r)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(stored.result_digest, None, "left out: the rows rebuild it");
    assert!(response["duration_ns"].as_u64().unwrap() > 0);
    let bound = statement(&doc, "SELECT id, customer FROM orders WHERE id = $1");
    assert_eq!(bound["received"]["protocol"], "extended");
    assert_eq!(bound["received"]["params"][0]["format"], "binary");
    assert_eq!(bound["received"]["params"][0]["value"]["hex"], "00000007");
    // tokio-postgres asks for binary results; the recorded values (whatever
    // the recorded column format says) are shown as hex and decoded.
    assert_eq!(bound["response"]["result"][0][0]["hex"], "00000007");
    assert_eq!(bound["response"]["result"][0][0]["decoded"], "7");
    let denied = statement(&doc, "SELECT ssn FROM customers");
    assert_eq!(denied["decision"]["action"], "deny");
    assert_eq!(denied["decision"]["rule"], "no-ssn");
    assert_eq!(
        denied["decision"]["message"],
        "SSNs are off limits to agents"
    );
    assert_eq!(denied["decision"]["columns"][0], "public.customers.ssn");
    let failed = statement(&doc, "SELECT * FROM no_such_table");
    assert_eq!(failed["response"]["sqlstate"], "42P01");
    assert_eq!(doc["summary"]["denied"], 1);
    assert_eq!(doc["summary"]["errors"], 1);

    // HTML.
    let html_file = env.dir.path().join("report.html");
    replay(
        &ledger,
        &[
            "--session",
            &session_arg,
            "--html",
            html_file.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&html_file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for expected in [
        "SELECT id, name, email FROM customers WHERE id &lt;= 3 ORDER BY id",
        "c3@example.com",
        "DENIED",
        "no-ssn",
        "SSNs are off limits to agents",
        "relation &quot;no_such_table&quot; does not exist",
        "gatehouse-verify ",
    ] {
        assert!(
            html.contains(expected),
            "missing {expected:?} in the HTML report"
        );
    }
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("://"));

    // The hostile session: application name, SQL, column name, row value
    // and error message all carry markup, and none of it survives as markup.
    let hostile_file = env.dir.path().join("hostile.html");
    let hostile_arg = hostile_session.to_string();
    replay(
        &ledger,
        &[
            "--session",
            &hostile_arg,
            "--html",
            hostile_file.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&hostile_file).unwrap();
    assert!(!html.contains("<script"), "{html}");
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    assert!(
        html.matches(escaped).count() >= 6,
        "application name, two statements, column, row and error escaped:\n{html}"
    );
    let doc = json(&ledger, &["--session", &hostile_arg]);
    let first = &statements(&doc)[0];
    assert_eq!(first["response"]["columns"][0]["name"], HOSTILE);
    assert_eq!(first["response"]["result"][0][0]["text"], HOSTILE);
    let text = replay(&ledger, &["--session", &hostile_arg]);
    assert!(text.contains(&format!("application \"{HOSTILE}\"")));

    // --identity: both agent sessions and the events about the identity,
    // nothing of the reader.
    let doc = json(&ledger, &["--identity", "agent"]);
    let opened: Vec<u64> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session_opened")
        .map(|e| e["session"].as_u64().unwrap())
        .collect();
    assert_eq!(opened, [session, hostile_session]);
    let kinds: Vec<&str> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"identity_created") && kinds.contains(&"credential_issued"),
        "{kinds:?}"
    );
    assert_eq!(statements(&doc).len(), 6);
    assert!(statements(&doc).iter().all(|s| s["identity"] == "agent"));
    let text = replay(&ledger, &["--identity", "agent"]);
    assert!(text.contains("identity agent created by tester"));
    assert!(!text.contains("total > 17"));

    // --from/--to by sequence number: exactly the denied statement.
    let denial_seqs: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| {
            matches!(&e.body, EventBody::Statement(s)
                if s.session == session
                    && s.sql == "SELECT ssn FROM customers"
                    && s.action == Action::Deny)
        })
        .map(|e| (e.seq, e.ts))
        .collect();
    let [(denial_seq, denial_ts)] = denial_seqs[..] else {
        panic!("one record for the denial: {denial_seqs:?}");
    };
    let ((from_seq, from_ts), (to_seq, to_ts)) = ((denial_seq, denial_ts), (denial_seq, denial_ts));
    let (from_arg, to_arg) = (from_seq.to_string(), to_seq.to_string());
    let doc = json(
        &ledger,
        &["--identity", "agent", "--from", &from_arg, "--to", &to_arg],
    );
    let only = statements(&doc);
    assert_eq!(only.len(), 1, "{doc:#}");
    assert_eq!(only[0]["received"]["sql"], "SELECT ssn FROM customers");
    assert_eq!(only[0]["decision"]["action"], "deny");
    assert_eq!(doc["entries"].as_array().unwrap().len(), 1);
    assert_eq!(doc["events"]["first"]["seq"], from_seq);
    assert_eq!(doc["events"]["last"]["seq"], to_seq);
    assert_eq!(doc["window"]["from"]["seq"], from_seq);

    // ... and by RFC 3339 time, to the nanosecond.
    let (from_time, to_time) = (
        gatehouse::replay::rfc3339(from_ts),
        gatehouse::replay::rfc3339(to_ts),
    );
    let by_time = json(
        &ledger,
        &[
            "--session",
            &session_arg,
            "--from",
            &from_time,
            "--to",
            &to_time,
        ],
    );
    // Events committed together share a time (the previous statement's
    // response rides along with this statement's write-ahead events), so
    // the window holds exactly the session's events stamped in it.
    let stamped: Vec<u64> = events
        .iter()
        .filter(|e| e.body.session() == Some(session) && (from_ts..=to_ts).contains(&e.ts))
        .map(|e| e.seq)
        .collect();
    assert_eq!(by_time["events"]["count"], stamped.len());
    assert_eq!(by_time["events"]["first"]["seq"], stamped[0]);
    assert_eq!(by_time["events"]["last"]["seq"], *stamped.last().unwrap());
    assert_eq!(by_time["window"]["from"]["time"], from_time);
    assert!(by_time["entries"]
        .as_array()
        .unwrap()
        .contains(&doc["entries"][0]));
    // From the denial on: no session opening, the rest of the session.
    let rest = json(&ledger, &["--session", &session_arg, "--from", &from_arg]);
    let kinds: Vec<&str> = rest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["statement", "statement", "session_closed"]);

    // Errors say what to do.
    let out = gatehouse(&[
        "replay",
        "--ledger",
        ledger.to_str().unwrap(),
        "--session",
        "999999",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no events of session 999999"), "{err}");
    let out = gatehouse(&[
        "replay",
        "--ledger",
        ledger.to_str().unwrap(),
        "--session",
        &session_arg,
        "--from",
        "yesterday",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = gatehouse(&["replay", "--ledger", ledger.to_str().unwrap()]);
    assert!(!out.status.success(), "a selection is required");
    let out = gatehouse(&[
        "replay",
        "--ledger",
        ledger.to_str().unwrap(),
        "--session",
        &session_arg,
        "--from",
        "9",
        "--to",
        "3",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from lies after --to"));
}

const APPROVAL_POLICY: &str = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "delete-orders"
identity = "agent"
classes = ["write"]
commands = ["DELETE"]
tables = ["public.orders"]
action = "require_approval"
approval_timeout_seconds = 30
"#;

/// Approves or denies a held statement through the admin API as approver `who`.
async fn decide(env: &Env, who: &str, path: String, body: serde_json::Value) {
    let url = format!("http://{}{path}", env.admin);
    let token = env.secret(&format!("operator:{who}")).to_owned();
    let status = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{who} decides {path}");
}

/// Waits for the next approval request after `after`; its number.
async fn requested(env: &Env, after: u64) -> u64 {
    for _ in 0..200 {
        if let Some(id) = env.events().iter().find_map(|e| match e {
            EventBody::ApprovalRequested(r) if r.approval > after => Some(r.approval),
            _ => None,
        }) {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no approval request after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_shows_held_statements_with_who_approved_and_who_denied() {
    let env = Env::start_approvals(APPROVAL_POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let run = |sql: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.execute(sql, &[]).await })
    };
    let held = run("DELETE FROM orders WHERE id = 1");
    let first = requested(&env, 0).await;
    decide(
        &env,
        "alice",
        format!("/v1/approvals/{first}/approve"),
        serde_json::json!({ "for": "10m" }),
    )
    .await;
    assert_eq!(held.await.unwrap().unwrap(), 1);
    let held = run("DELETE FROM orders WHERE customer = 3 AND id > 100");
    let second = requested(&env, first).await;
    decide(
        &env,
        "bob",
        format!("/v1/approvals/{second}/deny"),
        serde_json::json!({ "reason": "not during business hours" }),
    )
    .await;
    held.await.unwrap().unwrap_err();
    drop(client);
    sessions_closed(&env, 1).await;
    env.settle().await;

    let ledger = env.ledger();
    let doc = json(&ledger, &["--identity", "agent"]);
    let granted = statement(&doc, "DELETE FROM orders WHERE id = 1");
    assert_eq!(granted["decision"]["action"], "require_approval");
    assert_eq!(granted["decision"]["rule"], "delete-orders");
    let approval = &granted["approvals"][0];
    assert_eq!(approval["approval"], first);
    assert_eq!(approval["requested"]["rule"], "delete-orders");
    assert_eq!(approval["requested"]["quorum"], 1);
    assert_eq!(approval["outcomes"][0]["outcome"], "granted");
    assert_eq!(approval["outcomes"][0]["operator"], "alice");
    assert!(approval["outcomes"][0]["grant_until"].is_string());
    assert_eq!(granted["response"]["command_tag"], "DELETE 1");
    let refused = statement(&doc, "DELETE FROM orders WHERE customer = 3 AND id > 100");
    let outcome = &refused["approvals"][0]["outcomes"][0];
    assert_eq!(outcome["outcome"], "denied");
    assert_eq!(outcome["operator"], "bob");
    assert_eq!(outcome["reason"], "not during business hours");
    assert_eq!(doc["summary"]["held_for_approval"], 2);

    let text = replay(&ledger, &["--identity", "agent"]);
    for expected in [
        "HELD FOR APPROVAL by rule delete-orders",
        &format!("{first} requested at "),
        "GRANTED by alice at ",
        ", and for this statement's fingerprint until ",
        "DENIED by bob at ",
        "not during business hours",
        "status: GRANTED",
        "status: DENIED",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let out = env.dir.path().join("approvals.html");
    replay(
        &ledger,
        &["--identity", "agent", "--html", out.to_str().unwrap()],
    );
    let html = std::fs::read_to_string(out).unwrap();
    assert!(html.contains("HELD, APPROVED") && html.contains("HELD, APPROVAL DENIED"));
    assert!(html.contains("<section class=\"part approval\">"));
    assert!(html.contains("<span class=\"granted\">Granted</span> by alice"));
    assert!(html.contains("<span class=\"denied\">Denied</span> by bob"));
}
