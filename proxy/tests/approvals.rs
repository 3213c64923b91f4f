//! Just-in-time approval through the gateway, against a real PostgreSQL:
//! held statements, approve once, grants for a duration, deny, timeout,
//! self-approval, quorum, transactions, blocks, restarts and webhooks.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use gatehouse::gateway::admin::ApprovalView;
use gatehouse_ledger::event::EventBody;
use serde_json::Value;
use support::{spawn_query, Env};

const POLICY: &str = r#"
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

[[rule]]
name = "update-orders-two"
identity = "agent"
classes = ["write"]
commands = ["UPDATE"]
tables = ["public.orders"]
action = "require_approval"
approvers = 2
approval_timeout_seconds = 30

[[rule]]
name = "probe-quick"
identity = "agent"
classes = ["write"]
commands = ["INSERT"]
tables = ["public.audit_probe"]
action = "require_approval"
approval_timeout_seconds = 1
"#;

/// Calls the admin API as `who` (an operator secret name); returns status and body.
async fn call(env: &Env, who: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("http://{}{path}", env.admin);
    let token = if who == "admin" {
        env.admin_token()
    } else {
        env.secret(&format!("operator:{who}")).to_owned()
    };
    let method = method.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let auth = format!("Bearer {token}");
        let r = if method == "GET" {
            agent.get(&url).header("Authorization", &auth).call()
        } else {
            agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body)
        }
        .unwrap();
        let status = r.status().as_u16();
        (status, r.into_body().read_json().unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

/// Waits until exactly `n` requests are pending; returns them.
async fn pending(env: &Env, n: usize) -> Vec<ApprovalView> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call(env, "viewer", "GET", "/v1/approvals", Value::Null).await;
        assert_eq!(status, 200);
        let list: Vec<ApprovalView> = serde_json::from_value(body).unwrap();
        if list.len() == n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} pending requests, have {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn approve(env: &Env, who: &str, id: u64, duration: Option<&str>) -> (u16, Value) {
    call(
        env,
        who,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        serde_json::json!({ "for": duration }),
    )
    .await
}

async fn deny(env: &Env, who: &str, id: u64, reason: &str) -> (u16, Value) {
    call(
        env,
        who,
        "POST",
        &format!("/v1/approvals/{id}/deny"),
        serde_json::json!({ "reason": reason }),
    )
    .await
}

fn upstream_count(env: &Env, sql: &str) -> i64 {
    env.pg.psql("shop", sql).trim().parse().unwrap()
}

fn sqlstate(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().expect("a database error");
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_once_releases_exactly_that_statement_and_self_approval_is_refused() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 1");
    let list = pending(&env, 1).await;
    let a = &list[0];
    assert_eq!(
        (a.identity.as_str(), a.rule.as_str(), a.status.as_str()),
        ("agent", "delete-orders", "pending")
    );
    assert_eq!(a.sql, "DELETE FROM orders WHERE id = 1");
    assert_eq!(a.fingerprint, "delete from orders where id=?");
    // Nothing ran while it was held.
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id = 1"),
        1
    );
    // The identity that asked cannot approve, even as an approver.
    let (status, body) = approve(&env, "agent", a.approval, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cannot approve"));
    // An auditor cannot approve either.
    assert_eq!(approve(&env, "viewer", a.approval, None).await.0, 403);
    let (status, body) = approve(&env, "alice", a.approval, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("granted")));
    assert_eq!(held.await.unwrap().unwrap(), 1);
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id = 1"),
        0
    );
    // Deciding again is a conflict.
    assert_eq!(deny(&env, "bob", a.approval, "late").await.0, 409);

    // Approved once leaves no grant: the next delete is held, then denied.
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 2");
    let list = pending(&env, 1).await;
    assert_eq!(deny(&env, "bob", list[0].approval, "").await.0, 400);
    let (status, _) = deny(&env, "bob", list[0].approval, "not during business hours").await;
    assert_eq!(status, 200);
    let (code, message) = sqlstate(&held.await.unwrap().unwrap_err());
    assert_eq!(code, "42501");
    assert!(
        message.contains("denied by bob: not during business hours"),
        "{message}"
    );
    // The session survives.
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id = 2"),
        1
    );
    env.settle().await;
    let events = env.events();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::ApprovalRequested(_) => Some("requested"),
            EventBody::ApprovalGranted(g) => {
                assert_eq!((g.operator.as_str(), g.grant_until), ("alice", None));
                Some("granted")
            }
            EventBody::ApprovalDenied(d) => {
                assert_eq!(d.operator.as_deref(), Some("bob"));
                Some("denied")
            }
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["requested", "granted", "requested", "denied"]);
    let requested = events
        .iter()
        .find_map(|e| match e {
            EventBody::ApprovalRequested(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(requested.binding.0.len(), 32);
    assert_eq!(requested.quorum, 1);
    assert!(env.verify().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_covers_the_fingerprint_until_it_expires() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 3");
    let id = pending(&env, 1).await[0].approval;
    let (status, body) = approve(&env, "alice", id, Some("3s")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["grant_until"].is_string(), "{body}");
    assert_eq!(held.await.unwrap().unwrap(), 1);
    // Same fingerprint, other literal, other spelling: runs at once.
    let started = Instant::now();
    assert_eq!(
        client
            .execute("delete from orders  where id=4", &[])
            .await
            .unwrap(),
        1
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another shape is not covered.
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 5 OR id = 6");
    let other = pending(&env, 1).await[0].approval;
    deny(&env, "bob", other, "not covered").await;
    assert!(held.await.unwrap().is_err());
    // After the grant expires, the fingerprint is held again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 7");
    let again = pending(&env, 1).await[0].approval;
    deny(&env, "alice", again, "grant over").await;
    assert!(held.await.unwrap().is_err());
    assert_eq!(
        upstream_count(
            &env,
            "SELECT count(*) FROM orders WHERE id IN (3, 4, 5, 6, 7)"
        ),
        3
    );
    env.settle().await;
    let granted_decision = env.events().into_iter().any(|e| match e {
        EventBody::Statement(d) => d
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("grant of approval {id}"))),
        _ => false,
    });
    assert!(granted_decision, "the decision names the grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_needs_distinct_approvers_inside_a_transaction() {
    let env = Env::start_approvals(POLICY, "").await;
    let mut client = env.connect("agent").await;
    let tx = client.transaction().await.unwrap();
    let before: i64 = tx
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    // Extended protocol, with a bind parameter.
    let update = tx.execute("UPDATE orders SET total = 0 WHERE id = $1", &[&8i32]);
    let decide = async {
        let list = pending(&env, 1).await;
        let id = list[0].approval;
        assert_eq!(list[0].approvers_required, 2);
        let (status, body) = approve(&env, "alice", id, Some("1h")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
        assert_eq!(approve(&env, "alice", id, None).await.0, 409);
        let (status, body) = approve(&env, "bob", id, Some("1h")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("granted")));
        // Not committed yet: the update ran in the agent's transaction.
        assert_eq!(
            upstream_count(
                &env,
                "SELECT count(*) FROM orders WHERE id = 8 AND total = 0"
            ),
            0
        );
    };
    let (updated, ()) = tokio::join!(update, decide);
    assert_eq!(updated.unwrap(), 1);
    let after: i64 = tx
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    tx.commit().await.unwrap();
    assert_eq!(
        upstream_count(
            &env,
            "SELECT count(*) FROM orders WHERE id = 8 AND total = 0"
        ),
        1
    );
    // Both approvers asked for an hour: the $1 fingerprint is granted.
    assert_eq!(
        client
            .execute("UPDATE orders SET total = 0 WHERE id = $1", &[&9i32])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_refuses_the_statement_and_the_session_survives() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = env.connect("agent").await;
    let started = Instant::now();
    let e = client
        .execute("INSERT INTO audit_probe (note) VALUES ('held')", &[])
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let (code, message) = sqlstate(&e);
    assert_eq!(code, "42501");
    assert!(message.contains("no approver decided in time"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    assert_eq!(upstream_count(&env, "SELECT count(*) FROM audit_probe"), 0);
    let expired = env
        .events()
        .into_iter()
        .filter(|e| matches!(e, EventBody::ApprovalExpired(_)))
        .count();
    assert_eq!(expired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_denies_the_identitys_pending_approvals() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 10");
    let id = pending(&env, 1).await[0].approval;
    env.shared()
        .block("agent", "carol", "rogue deletes", None)
        .await
        .unwrap();
    assert!(held.await.unwrap().is_err());
    assert_eq!(pending(&env, 0).await.len(), 0);
    assert_eq!(approve(&env, "alice", id, None).await.0, 409);
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id = 10"),
        1
    );
    env.settle().await;
    let reason = env
        .events()
        .into_iter()
        .find_map(|e| match e {
            EventBody::ApprovalDenied(d) => Some(d.reason),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("blocked"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_are_denied_when_the_gateway_stops_or_restarts() {
    let mut env = Env::start_approvals(POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 11");
    pending(&env, 1).await;
    env.stop().await;
    assert!(held.await.unwrap().is_err());
    let denied: Vec<_> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::ApprovalDenied(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(denied.len(), 1);
    assert!(denied[0].reason.contains("shutting down"), "{denied:?}");

    // A request left pending in the ledger (as after a crash) is denied at
    // the next start, never silently lost.
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    {
        let options = config.writer_options().unwrap();
        let ledger = gatehouse_ledger::Ledger::open(options).unwrap();
        let request = gatehouse_ledger::event::ApprovalRequested {
            approval: 99,
            session: 77,
            identity: "agent".into(),
            query: 1,
            sql: "DELETE FROM orders".into(),
            params: vec![],
            class: gatehouse_ledger::event::StatementClass::Write,
            rule: "delete-orders".into(),
            binding: gatehouse_ledger::cbor::Bytes(vec![0; 32]),
            quorum: 1,
            expires_at: u64::MAX,
            fingerprint: "delete from orders".into(),
        };
        tokio::task::spawn_blocking(move || {
            ledger.append_blocking(&[request.into()]).unwrap();
            ledger.close();
        })
        .await
        .unwrap();
    }
    let gateway = gatehouse::gateway::Gateway::bind(&config).await.unwrap();
    let view = gateway.shared().approvals.list(false);
    let (_, restarted) = view.iter().find(|(id, _)| *id == 99).unwrap();
    assert_eq!(restarted.status.name(), "denied");
    assert!(restarted.reason.as_deref().unwrap().contains("restarted"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(gateway.run_until(async move {
        let _ = stop_rx.await;
    }));
    stop_tx.send(()).unwrap();
    run.await.unwrap().unwrap();
    let state = gatehouse::state::load_state(&env.ledger()).unwrap();
    assert_eq!(state.approvals.pending().count(), 0);
}

/// A request as a receiver saw it: headers (names in lower case), raw body.
type Received = (std::collections::HashMap<String, String>, Vec<u8>);

/// A one-route HTTP server that records each request's headers and raw
/// body.
fn raw_webhook_receiver() -> (u16, std::sync::mpsc::Receiver<Received>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = std::collections::HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let length: usize = headers
                .get("content-length")
                .map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((headers, body));
        }
    });
    (port, rx)
}

/// Signed webhooks (issue 16): a receiver holding the secret checks the
/// HMAC over the timestamp and the exact body, and a tampered body fails
/// it; the payload carries its version; a Slack-format webhook gets a
/// message naming the identity, SQL, parameters, rule and the commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_versioned_and_speak_slack() {
    let (port, received) = raw_webhook_receiver();
    let (slack_port, slack) = raw_webhook_receiver();
    let secret = "a-webhook-secret-of-some-length";
    std::env::set_var("GH_TEST_WEBHOOK_SECRET", secret);
    let extra = format!(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_env = \"GH_TEST_WEBHOOK_SECRET\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:{slack_port}/slack\"\nformat = \"slack\"\n"
    );
    let env = Env::start_approvals(POLICY, &extra).await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 13");
    let id = pending(&env, 1).await[0].approval;
    deny(&env, "alice", id, "not today").await;
    assert!(held.await.unwrap().is_err());

    let (headers, body) = received.recv_timeout(Duration::from_secs(10)).unwrap();
    let timestamp: u64 = headers["x-gatehouse-timestamp"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp) < 60);
    // The receiver's own check: HMAC-SHA256(secret, timestamp "." body).
    let check = |body: &[u8]| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        headers["x-gatehouse-signature"] == format!("v1={hex}")
    };
    assert!(check(&body), "{headers:?}");
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'3').unwrap();
    tampered[at] = b'4';
    assert!(!check(&tampered));
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["event"], "approval.requested");

    let (headers, body) = slack.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(!headers.contains_key("x-gatehouse-signature"));
    let message: Value = serde_json::from_slice(&body).unwrap();
    let text = message["text"].as_str().unwrap();
    for part in [
        "agent",
        "DELETE FROM orders WHERE id = 13",
        &format!("gatehouse approve {id}"),
        &format!("gatehouse deny {id}"),
        "rule `",
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
    let (_, body) = slack.recv_timeout(Duration::from_secs(10)).unwrap();
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        message["text"].as_str().unwrap().contains("not today"),
        "{message}"
    );
}

/// A one-route HTTP server that records the JSON bodies POSTed to it.
fn webhook_receiver() -> (u16, std::sync::mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_requests_and_decisions_and_failures_are_recorded() {
    let (port, received) = webhook_receiver();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let extra = format!(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:{dead_port}/gone\"\nattempts = 2\nbackoff_ms = 10\ntimeout_ms = 500\n"
    );
    let env = Env::start_approvals(POLICY, &extra).await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 12");
    let id = pending(&env, 1).await[0].approval;
    approve(&env, "alice", id, None).await;
    assert_eq!(held.await.unwrap().unwrap(), 1);
    let first = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["event"], "approval.requested");
    assert_eq!(first["detail"]["approval"], id);
    assert_eq!(first["detail"]["sql"], "DELETE FROM orders WHERE id = 12");
    assert_eq!(first["detail"]["identity"], "agent");
    let second = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(second["event"], "approval.granted");
    assert_eq!(second["detail"]["operator"], "alice");
    // The dead receiver's failures become events; the gateway did not wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failures = env
            .events()
            .into_iter()
            .filter(|e| matches!(e, EventBody::OperatorAction(a) if a.action == "webhook.deliver" && a.outcome == "failed"))
            .count();
        if failures == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{failures} failures recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// At shutdown, notifications still queued for a receiver that never
/// answers are not lost: each is either tried or recorded as not sent,
/// while the ledger is still open, and the gateway stops within its grace
/// period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_queued_at_shutdown_are_recorded_not_lost() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let extra = format!(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nattempts = 3\nbackoff_ms = 10\ntimeout_ms = 700\n"
    );
    let mut env = Env::start_approvals(POLICY, &extra).await;
    let mut held = Vec::new();
    for i in 1..=3 {
        // One connection per statement: a held statement holds its session.
        let client = std::sync::Arc::new(env.connect("agent").await);
        held.push(spawn_query(
            &client,
            &format!("DELETE FROM orders WHERE id = {i}"),
        ));
        pending(&env, i).await;
    }
    let started = Instant::now();
    env.stop().await;
    let stopped = started.elapsed();
    for h in held {
        assert!(h.await.unwrap().is_err(), "a held statement ran");
    }
    let events = env.events();
    let notified = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                EventBody::ApprovalRequested(_) | EventBody::ApprovalDenied(_)
            )
        })
        .count();
    let failures: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::OperatorAction(a) if a.action == "webhook.deliver" => a.detail.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(notified, 6, "three requests, three denials at shutdown");
    assert_eq!(failures.len(), notified, "{failures:#?}");
    assert!(
        failures.iter().any(|f| f.contains("shut down before")),
        "{failures:#?}"
    );
    assert!(
        stopped < Duration::from_secs(10),
        "stopping took {stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_approves_and_denies() {
    let env = Env::start_approvals(POLICY, "").await;
    let token = env.dir.path().join("alice.token");
    std::fs::write(&token, env.secret("operator:alice")).unwrap();
    let url = format!("http://{}", env.admin);
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let admin = |mut v: Vec<String>| {
        v.extend([
            "--admin".into(),
            url.clone(),
            "--token-file".into(),
            token.display().to_string(),
        ]);
        v
    };
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 13");
    let id = pending(&env, 1).await[0].approval;
    let (ok, out, err) = tokio::task::block_in_place(|| run(admin(vec!["approvals".into()])));
    assert!(ok, "{err}");
    assert!(out.contains("DELETE FROM orders WHERE id = 13"), "{out}");
    assert!(out.contains(&format!("#{id} pending")), "{out}");
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(admin(vec![
            "approve".into(),
            id.to_string(),
            "--for".into(),
            "10m".into(),
        ]))
    });
    assert!(ok, "{err}");
    assert!(err.contains("granted until"), "{err}");
    assert_eq!(held.await.unwrap().unwrap(), 1);
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(admin(vec![
            "deny".into(),
            id.to_string(),
            "--reason".into(),
            "x".into(),
        ]))
    });
    assert!(!ok);
    assert!(
        err.contains("409") && err.contains("already granted"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");

    // Issue 13, finding 6: a statement with bind parameters is listed with
    // their values (they were only in the ledger), in the API and the CLI.
    let with_params = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .execute(
                    "DELETE FROM orders WHERE customer = $1 AND id::text > $2",
                    &[&7i32, &"170"],
                )
                .await
        })
    };
    let listed = pending(&env, 1).await;
    let request = listed[0].approval;
    // tokio-postgres sends both in binary: int4 7 and the text '170'.
    let shown: Vec<(bool, Option<&str>)> = listed[0]
        .params
        .iter()
        .map(|p| (p.binary, p.value.as_deref()))
        .collect();
    assert_eq!(shown, [(true, Some("00000007")), (true, Some("313730"))]);
    let (ok, out, err) = tokio::task::block_in_place(|| run(admin(vec!["approvals".into()])));
    assert!(ok, "{err}");
    assert!(
        out.contains("$1 = \\x00000007 (binary") && out.contains("$2 = \\x313730 (binary"),
        "{out}"
    );
    deny(&env, "bob", request, "checked the values").await;
    assert!(with_params.await.unwrap().is_err());
}

/// A portal runs the statement it was bound to, whatever the statement's
/// name means later: re-parsing the unnamed statement (or closing and
/// re-parsing a named one) after Bind must not let the portal's DELETE run
/// unapproved and be recorded as the later SELECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_is_judged_as_the_statement_it_was_bound_to() {
    let env = Env::start_approvals(POLICY, "").await;
    let count = |env: &Env| {
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id = 1")
    };
    assert_eq!(count(&env), "1");
    for (statement, rebind) in [("", false), ("s1", true)] {
        let mut raw = support::RawClient::login(&env, "agent").await;
        raw.parse(statement, "DELETE FROM orders WHERE id = 1")
            .await;
        let mut bind = b"p1\0".to_vec();
        bind.extend_from_slice(statement.as_bytes());
        bind.push(0);
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        raw.send(b'B', &bind).await;
        if rebind {
            let mut close = b"S".to_vec();
            close.extend_from_slice(statement.as_bytes());
            close.push(0);
            raw.send(b'C', &close).await;
        }
        raw.parse(statement, "SELECT 1").await;
        raw.send(b'E', b"p1\0\0\0\0\0").await;
        raw.send(b'S', b"").await;
        // The DELETE is held for approval (nobody approves: it times out or
        // the session ends); it never runs as "SELECT 1".
        let answer = raw.until_ready_within(Duration::from_secs(2)).await;
        assert!(
            answer.is_none()
                || answer
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|(t, _)| *t == b'E')),
            "the portal ran without approval: {answer:?}"
        );
        drop(raw);
        env.settle().await;
        assert_eq!(
            count(&env),
            "1",
            "the DELETE ran unapproved (statement {statement:?})"
        );
        let recorded_select_for_p1 = env.events().iter().any(|e| {
            matches!(e, EventBody::Statement(q) if q.portal.as_deref() == Some("p1") && q.sql == "SELECT 1")
        });
        assert!(
            !recorded_select_for_p1,
            "the ledger recorded another statement than the portal's"
        );
    }
}

/// PostgreSQL skips every message after an error until Sync, a Parse
/// included: a later Bind must not run the statement the skipped Parse
/// would have replaced while the gateway judges the skipped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_postgresql_skipped_does_not_change_what_a_later_bind_runs() {
    let env = Env::start_approvals(POLICY, "").await;
    let count = |env: &Env| {
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id = 2")
    };
    assert_eq!(count(&env), "1");
    // The unnamed statement, replaced; a named one, closed and parsed again.
    for statement in ["", "s1"] {
        let mut raw = support::RawClient::login(&env, "agent").await;
        raw.parse(statement, "DELETE FROM orders WHERE id = 2")
            .await;
        raw.send(b'S', b"").await;
        raw.until_ready().await;
        raw.parse("s2", "SELECT * FROM no_such_table").await;
        if !statement.is_empty() {
            raw.send(b'C', format!("S{statement}\0").as_bytes()).await;
        }
        raw.parse(statement, "SELECT 1").await;
        raw.send(b'S', b"").await;
        raw.until_ready().await;
        raw.send(b'B', format!("p1\0{statement}\0\0\0\0\0\0\0").as_bytes())
            .await;
        raw.send(b'E', b"p1\0\0\0\0\0").await;
        raw.send(b'S', b"").await;
        let answer = raw.until_ready_within(Duration::from_secs(2)).await;
        if let Some(answer) = &answer {
            assert!(
                answer
                    .iter()
                    .any(|(t, b)| *t == b'E' && String::from_utf8_lossy(b).contains("26000")),
                "{answer:?}"
            );
        }
        drop(raw);
        env.settle().await;
        assert_eq!(
            count(&env),
            "1",
            "the DELETE ran unapproved ({statement:?})"
        );
    }
}

async fn grants(env: &Env) -> Vec<Value> {
    let (status, body) = call(env, "viewer", "GET", "/v1/grants", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

/// Holds `DELETE FROM orders WHERE id = {id}` and approves it for 30
/// minutes; returns the request.
async fn grant_delete(env: &Env, client: &std::sync::Arc<tokio_postgres::Client>, id: i32) -> u64 {
    let held = spawn_query(client, &format!("DELETE FROM orders WHERE id = {id}"));
    let request = pending(env, 1).await[0].approval;
    let (status, body) = approve(env, "alice", request, Some("30m")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.unwrap().unwrap(), 1);
    request
}

/// Whether `DELETE FROM orders WHERE id = {id}` is held (then denied) or
/// runs at once on a grant.
async fn held(env: &Env, client: &std::sync::Arc<tokio_postgres::Client>, id: i32) -> bool {
    let query = spawn_query(client, &format!("DELETE FROM orders WHERE id = {id}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if query.is_finished() {
            query.await.unwrap().unwrap();
            return false;
        }
        let (_, body) = call(env, "viewer", "GET", "/v1/approvals", Value::Null).await;
        if let Some(first) = body.as_array().and_then(|l| l.first()) {
            let request = first["approval"].as_u64().unwrap();
            deny(env, "bob", request, "checking the grant ended").await;
            assert!(query.await.unwrap().is_err());
            return true;
        }
        assert!(Instant::now() < deadline, "neither held nor run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 13, finding 4: a grant outlived a block, an unblock, a revoked
/// credential and a restart. Now each of them (and `grant revoke`) ends it,
/// and the grants in force can be listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_ends_with_a_block_a_revoked_credential_or_its_revocation() {
    let mut env = Env::start_approvals(POLICY, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);

    // Listed, used, then revoked by an approver.
    let first = grant_delete(&env, &client, 3).await;
    let listed = grants(&env).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["approval"].as_u64(), Some(first));
    assert_eq!(listed[0]["identity"], "agent");
    assert!(
        !held(&env, &client, 4).await,
        "the grant covers the fingerprint"
    );
    let (status, body) = call(
        &env,
        "bob",
        "POST",
        &format!("/v1/grants/{first}/revoke"),
        serde_json::json!({ "reason": "task finished" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(grants(&env).await.is_empty());
    assert!(held(&env, &client, 5).await, "a revoked grant still ran");
    let (status, _) = call(
        &env,
        "bob",
        "POST",
        &format!("/v1/grants/{first}/revoke"),
        serde_json::json!({ "reason": "again" }),
    )
    .await;
    assert_eq!(status, 404, "a grant revoked twice");

    // A block ends it; unblocking does not bring it back.
    grant_delete(&env, &client, 6).await;
    env.shared()
        .block("agent", "carol", "incident", None)
        .await
        .unwrap();
    env.shared()
        .unblock("agent", "carol", Some("cleared".into()))
        .await
        .unwrap();
    assert!(grants(&env).await.is_empty());
    let client = std::sync::Arc::new(env.connect("agent").await);
    assert!(held(&env, &client, 7).await, "a grant outlived a block");

    // A revoked credential of the identity ends it, across a restart too.
    grant_delete(&env, &client, 8).await;
    assert_eq!(grants(&env).await.len(), 1);
    let credential = {
        let ids = env.shared().identities.read().unwrap();
        let agent = ids.iter().find(|i| i.name == "agent").unwrap();
        agent.credentials.keys().next().unwrap().clone()
    };
    assert!(env
        .shared()
        .revoke(&credential, "ada", "leaked")
        .await
        .unwrap());
    assert!(grants(&env).await.is_empty());
    drop(client);
    env.stop().await;
    // The replay tells the revocation from a denial: the statement ran.
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["replay", "--ledger"])
        .arg(env.ledger())
        .args(["--identity", "agent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        text.contains("GRANT REVOKED by bob") && text.contains("task finished"),
        "{text}"
    );
    env.restart().await;
    assert!(
        grants(&env).await.is_empty(),
        "the grant came back at restart"
    );
    assert!(env.verify().is_intact());
}

/// Issue 12, findings 2 and 3: a held statement ends with its requester. A
/// client that goes away, or cancels (Ctrl-C, a driver's timeout), withdraws
/// it: recorded, nothing runs, and a later approval is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_is_withdrawn_when_its_client_cancels_or_leaves() {
    let env = Env::start_approvals(POLICY, "").await;
    let before = upstream_count(&env, "SELECT count(*) FROM orders WHERE id > 10");

    // Cancel: the client gets 57014 and the session goes on.
    let client = std::sync::Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id > 10");
    let id = pending(&env, 1).await[0].approval;
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    let e = held.await.unwrap().unwrap_err();
    let (code, message) = sqlstate(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(
        message.contains(&format!("withdrew approval request {id}")),
        "{message}"
    );
    pending(&env, 0).await;
    let (status, body) = approve(&env, "alice", id, None).await;
    assert_eq!(status, 409, "an approval after the withdrawal: {body}");
    client
        .simple_query("SELECT 1")
        .await
        .expect("the session goes on");

    // The client goes away (its socket closes, as when psql is killed):
    // the request is withdrawn, not left to run.
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(b'Q', b"DELETE FROM orders WHERE id > 10\0").await;
    let id = pending(&env, 1).await[0].approval;
    drop(raw);
    pending(&env, 0).await;
    let (status, _) = approve(&env, "alice", id, None).await;
    assert_eq!(status, 409, "approved after the client left");
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id > 10"),
        before,
        "the held DELETE ran"
    );
    env.settle().await;
    let withdrawals: Vec<String> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::ApprovalDenied(d) if d.operator.is_none() => Some(d.reason),
            _ => None,
        })
        .collect();
    assert!(
        withdrawals.iter().any(|r| r.contains("cancelled"))
            && withdrawals
                .iter()
                .any(|r| r.contains("disconnected") || r.contains("session ended")),
        "{withdrawals:?}"
    );
}

/// Issue 12: a held statement's client is told it is held (the request,
/// what it needs, who can approve), and a client that leaves is noticed
/// even with messages pipelined behind the held one (psql and drivers send
/// Execute and Sync together): the request is withdrawn and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_client_is_told_and_leaving_behind_pipelined_messages_withdraws() {
    let env = Env::start_approvals(POLICY, "").await;
    let before = upstream_count(&env, "SELECT count(*) FROM orders WHERE id > 10");
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.parse("", "DELETE FROM orders WHERE id > 10").await;
    raw.send(b'B', b"\0\0\0\0\0\0\0\0").await;
    raw.send(b'E', b"\0\0\0\0\0").await;
    raw.send(b'S', b"").await;
    raw.send(b'Q', b"SELECT 1\0").await;
    let id = pending(&env, 1).await[0].approval;
    let (tag, body) = raw
        .next_within(Duration::from_secs(5))
        .await
        .expect("a notice while held");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(tag, b'N', "{text}");
    assert!(
        text.contains(&format!("request {id}"))
            && text.contains("approvers: admin, alice, bob\0")
            && text.contains(&format!("gatehouse approve {id}")),
        "{text}"
    );
    drop(raw);
    pending(&env, 0).await;
    let (status, _) = approve(&env, "alice", id, None).await;
    assert_eq!(status, 409, "approved after the client left");
    assert_eq!(
        upstream_count(&env, "SELECT count(*) FROM orders WHERE id > 10"),
        before,
        "the held DELETE ran"
    );
}

/// Issue 12, finding 1: a protocol portal run by SQL. Parse and Bind of a
/// DELETE that needs approval, then `FETCH ALL FROM p` by a simple Query:
/// PostgreSQL's SQL FETCH reaches protocol portals, so the DELETE would run
/// unapproved, recorded as a read of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_portal_cannot_be_run_by_sql_fetch() {
    let env = Env::start_approvals(POLICY, "").await;
    let before = upstream_count(&env, "SELECT count(*) FROM orders WHERE id <= 3");
    for fetch in [
        "FETCH ALL FROM p",
        "FETCH FORWARD 5 p",
        "MOVE ALL IN p",
        "fetch all in \"p\"",
    ] {
        let mut raw = support::RawClient::login(&env, "agent").await;
        raw.send(b'Q', b"BEGIN\0").await;
        raw.until_ready().await;
        raw.parse("s1", "DELETE FROM orders WHERE id <= 3 RETURNING id, total")
            .await;
        raw.send(b'B', b"p\0s1\0\0\0\0\0\0\0").await;
        raw.send(b'S', b"").await;
        raw.until_ready().await;
        raw.send(b'Q', format!("{fetch}\0").as_bytes()).await;
        let answer = raw.until_ready().await;
        assert!(
            support::error_text(&answer).is_some(),
            "{fetch}: the portal ran: {answer:?}"
        );
        raw.send(b'Q', b"COMMIT\0").await;
        raw.until_ready().await;
        assert_eq!(
            upstream_count(&env, "SELECT count(*) FROM orders WHERE id <= 3"),
            before,
            "{fetch}: the DELETE ran unapproved"
        );
    }
}

/// The agent-facing contract (docs/agents.md, issue 16): every refusal
/// Gatehouse writes itself says what kind it is in the error's routine
/// field, so a tool tells a final refusal from a retryable one without
/// reading prose, and a masked result comes with a notice saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_masking_say_their_kind_to_programs() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"no-ssn\"\nidentity = \"*\"\ncolumns = [\"public.customers.ssn\"]\naction = \"deny\"\n\n[[rule]]\nname = \"mask-emails\"\nidentity = \"agent\"\nclasses = [\"read\"]\naction = \"mask\"\n\n[rule.mask]\n\"public.customers.email\" = \"email\"\n"
    );
    let env = Env::start_approvals(&policy, "").await;
    let client = std::sync::Arc::new(env.connect("agent").await);
    let routine = |e: &tokio_postgres::Error| {
        let db = e.as_db_error().expect("a database error");
        (db.code().code().to_owned(), db.routine().map(str::to_owned))
    };
    // A policy denial.
    let e = client
        .simple_query("SELECT ssn FROM customers")
        .await
        .unwrap_err();
    assert_eq!(
        routine(&e),
        ("42501".into(), Some("gatehouse_policy_denied".into()))
    );
    // An approver's denial.
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 14");
    let id = pending(&env, 1).await[0].approval;
    deny(&env, "alice", id, "no").await;
    let e = held.await.unwrap().unwrap_err();
    assert_eq!(
        routine(&e),
        ("42501".into(), Some("gatehouse_approval_denied".into()))
    );
    // A timeout (probe-quick holds for 1 s).
    let e = client
        .execute("INSERT INTO audit_probe (note) VALUES ('x')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        routine(&e),
        ("42501".into(), Some("gatehouse_approval_expired".into()))
    );
    // A masked result comes with a notice naming what was masked.
    let mut raw = support::RawClient::login(&env, "agent").await;
    raw.send(b'Q', b"SELECT email FROM customers WHERE id <= 2\0")
        .await;
    let answer = raw.until_ready().await;
    let notice = answer
        .iter()
        .find(|(tag, _)| *tag == b'N')
        .map(|(_, body)| gatehouse::gateway::wire::frame::error_fields(body))
        .expect("a notice after the masked result");
    assert!(
        notice.contains(&(b'R', "gatehouse_masked".to_owned())),
        "{notice:?}"
    );
    assert!(
        notice.iter().any(|(c, m)| *c == b'M'
            && m.contains("masked 2 values")
            && m.contains("public.customers.email")),
        "{notice:?}"
    );
    let rows = answer.iter().filter(|(tag, _)| *tag == b'D').count();
    assert_eq!(rows, 2);
    // Unmasked results carry no notice.
    raw.send(b'Q', b"SELECT id FROM orders WHERE id = 1\0")
        .await;
    assert!(!raw.until_ready().await.iter().any(|(tag, _)| *tag == b'N'));
    // A blocked identity: its sessions end, and logins are refused.
    call(
        &env,
        "admin",
        "POST",
        "/v1/identities/agent/block",
        serde_json::json!({ "reason": "contract test" }),
    )
    .await;
    let e = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a blocked login");
    assert_eq!(
        routine(&e),
        ("28000".into(), Some("gatehouse_identity_blocked".into()))
    );
}
