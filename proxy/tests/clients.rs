//! Real PostgreSQL client programs through the gateway: psql and pgbench.

mod support;

use std::process::Command;

use gatehouse_ledger::event::EventBody;
use support::Env;

const ALLOW_ALL: &str = include_str!("../../fixtures/policies/allow-all.toml");

fn client(env: &Env, program: &str, who: &str) -> Command {
    let mut cmd = Command::new(env.pg.bindir().join(program));
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", env.addr.port().to_string())
        .env("PGUSER", who)
        .env("PGPASSWORD", env.secret(who))
        .env("PGDATABASE", "shop")
        .env("PGSSLMODE", "disable")
        .env_remove("PGSERVICE");
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("run client program");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_commands_and_files() {
    let env = Env::start(support::POLICY).await;
    let mut cmd = client(&env, "psql", "agent");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "SELECT count(*) FROM customers",
    ]);
    assert_eq!(run(cmd).trim(), "50");
    let script = env.dir.path().join("script.sql");
    std::fs::write(
        &script,
        "BEGIN;\nINSERT INTO orders (id, customer, total) VALUES (9001, 1, 2.5);\nSELECT total FROM orders WHERE id = 9001;\nCOMMIT;\n",
    )
    .unwrap();
    let mut cmd = client(&env, "psql", "agent");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&script);
    assert!(run(cmd).contains("2.50"));
    // A denied statement makes psql fail with the policy's message.
    let mut cmd = client(&env, "psql", "agent");
    cmd.args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "SELECT ssn FROM customers",
    ]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSNs are off limits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialise_and_select_only_in_both_protocols() {
    let env = Env::start(ALLOW_ALL).await;
    let mut init = client(&env, "pgbench", "agent");
    init.args(["-i", "-s", "1", "-q"]);
    run(init);
    for mode in ["simple", "extended"] {
        let mut bench = client(&env, "pgbench", "agent");
        bench.args(["-S", "-M", mode, "-c", "4", "-j", "2", "-t", "200", "-n"]);
        let out = run(bench);
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
    }
    env.settle().await;
    let events = env.events();
    let selects = events
        .iter()
        .filter(|e| matches!(e, EventBody::Statement(q) if q.sql.contains("pgbench_accounts") && q.sql.starts_with("SELECT")))
        .count();
    assert_eq!(selects, 1600, "every pgbench statement is in the ledger");
    let report = env.verify();
    assert!(report.is_intact(), "{:?}", report.failure);
}
