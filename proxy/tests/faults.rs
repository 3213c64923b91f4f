//! Issue 14: the gateway's own faults, each checked for three things:
//! nothing acknowledged is lost, nothing reached the database that the
//! ledger does not show, and it recovers by itself (or says what to do).
//! (The ledger file removed, the disk refusing commits, a dead database
//! and the connection limits are in tests/gateway.rs.)

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_ledger::EventBody;
use support::{Env, POLICY};

/// Every note that the ledger shows in a statement: in its SQL text (simple
/// protocol) or a parameter (extended).
fn recorded_notes(env: &Env) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in env.events() {
        if let EventBody::QueryReceived(q) = e {
            for word in q.sql.split('\'') {
                if word.starts_with("fault-") {
                    out.insert(word.to_owned());
                }
            }
            for p in q.params {
                if let Some(v) = p.value {
                    let v = String::from_utf8_lossy(&v.0).into_owned();
                    if v.starts_with("fault-") {
                        out.insert(v);
                    }
                }
            }
        }
    }
    out
}

fn notes_in_database(env: &Env) -> HashSet<String> {
    env.pg
        .psql(
            "shop",
            "SELECT note FROM audit_probe WHERE note LIKE 'fault-%'",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

/// SIGKILL under an 8-client write load, half simple and half extended
/// protocol: every insert a client was told succeeded is in the database
/// and in the ledger, every row in the database was written by a statement
/// the ledger shows, the ledger verifies, and the gateway starts again and
/// records the end of the sessions the kill left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_nothing_and_runs_nothing_unrecorded() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let (mut child, port) = env.serve_as_process().await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for client in 0..8 {
        let c = env.connect_to_port(port, "agent").await;
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let note = format!("fault-{client}-{n}");
                let done = if client % 2 == 0 {
                    c.simple_query(&format!("INSERT INTO audit_probe (note) VALUES ('{note}')"))
                        .await
                        .map(|_| ())
                } else {
                    c.execute("INSERT INTO audit_probe (note) VALUES ($1)", &[&note])
                        .await
                        .map(|_| ())
                };
                match done {
                    Ok(()) => acknowledged.lock().unwrap().push(note),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(
        acknowledged.len() > 50,
        "the load ran: {} inserts acknowledged",
        acknowledged.len()
    );
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    let recorded = recorded_notes(&env);
    let in_database = notes_in_database(&env);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !in_database.contains(*n) || !recorded.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let unrecorded: Vec<&String> = in_database
        .iter()
        .filter(|n| !recorded.contains(*n))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "in the database, not in the ledger: {unrecorded:?}"
    );
    env.assert_database_ran_only_allowed();
    // It starts again by itself, and the record says the sessions ended.
    env.restart().await;
    env.settle().await;
    let closed = env
        .events()
        .iter()
        .filter(|e| {
            matches!(e, EventBody::SessionClosed(c) if c.reason.contains("stopped without closing"))
        })
        .count();
    assert_eq!(closed, 8, "the 8 sessions the kill left open are closed");
    let c = env.connect("agent").await;
    c.simple_query("SELECT 1").await.unwrap();
}

/// PostgreSQL fast-restarted under load: sessions end with FATAL 08006,
/// nothing acknowledged is lost or unrecorded, and new sessions work as
/// soon as the database is back, without restarting the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_is_survived() {
    let env = Env::start(POLICY).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for client in 0..4 {
        let c = env.connect("agent").await;
        let acknowledged = acknowledged.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let note = format!("fault-{client}-{n}");
                let done = if client % 2 == 0 {
                    c.simple_query(&format!("INSERT INTO audit_probe (note) VALUES ('{note}')"))
                        .await
                        .map(|_| ())
                } else {
                    c.execute("INSERT INTO audit_probe (note) VALUES ($1)", &[&note])
                        .await
                        .map(|_| ())
                };
                match done {
                    Ok(()) => acknowledged.lock().unwrap().push(note),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pg = &env.pg;
    tokio::task::block_in_place(|| pg.restart_fast());
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    // Back: new sessions work without restarting the gateway.
    let c = env.connect_when_admitted("agent").await;
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('fault-after')")
        .await
        .unwrap();
    env.settle().await;
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(!acknowledged.is_empty());
    let recorded = recorded_notes(&env);
    let in_database = notes_in_database(&env);
    for note in &acknowledged {
        assert!(
            in_database.contains(note),
            "{note} acknowledged, not in the database"
        );
        assert!(
            recorded.contains(note),
            "{note} acknowledged, not in the ledger"
        );
    }
    for note in &in_database {
        assert!(
            recorded.contains(note),
            "{note} in the database, not in the ledger"
        );
    }
    env.assert_database_ran_only_allowed();
    assert!(env.verify().is_intact());
}
