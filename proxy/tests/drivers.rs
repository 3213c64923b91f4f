//! Issue 12, finding 4: the drivers agents are built on work through the
//! gateway exactly as they work direct. Each scenario of
//! fixtures/drivers/matrix.py (pipelines, executemany, COPY, server-side
//! cursors, prepared statements reused after a cancelled one, pools) runs
//! once against PostgreSQL and once through the gateway with recording on;
//! both runs must succeed and give the same results. The same for
//! node-postgres (fixtures/drivers/node: pg, pg-cursor, pg-copy-streams)
//! and the JDBC driver (fixtures/drivers/Batch.java: batches with
//! reWriteBatchedInserts off and on, fetch sizes, a failing batch).

mod support;

use std::process::Command;

use gatehouse_ledger::EventBody;
use support::Env;

/// Everything these drivers do is allowed: the test is about the protocol,
/// not policy.
const POLICY: &str = r#"
[[rule]]
name = "drivers"
identity = "agent"
classes = ["read", "write", "transaction", "session", "function"]
functions = ["pg_sleep", "pg_advisory_unlock_all"]
action = "allow"
"#;

const TABLE: &str = "CREATE TABLE driver_items (id int PRIMARY KEY, note text)";

/// Runs one matrix program with `args` then HOST PORT USER PASSWORD BASE;
/// returns its JSON object.
async fn matrix(
    program: &str,
    args: &[&str],
    missing: &str,
    (port, user, password): (u16, &str, &str),
    base: u32,
) -> serde_json::Map<String, serde_json::Value> {
    let mut command = Command::new(program);
    command.args(args).args([
        "127.0.0.1",
        &port.to_string(),
        user,
        password,
        &base.to_string(),
        "-v",
    ]);
    let missing = missing.to_owned();
    let out = tokio::task::spawn_blocking(move || command.output().expect(&missing))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{program} printed no JSON ({e}): {stdout}"));
    value.as_object().unwrap().clone()
}

/// Runs the matrix direct and through the gateway; both must succeed and
/// agree, and the gateway's run must be in the ledger.
async fn direct_and_through(program: &str, args: &[&str], missing: &str) {
    let env = Env::start_custom(POLICY, "", "", |pg| {
        pg.psql("shop", TABLE);
    })
    .await;
    let direct = matrix(
        program,
        args,
        missing,
        (env.pg.port(), env.pg.superuser(), env.pg.password()),
        0,
    )
    .await;
    let through = matrix(
        program,
        args,
        missing,
        (env.addr.port(), "agent", env.secret("agent")),
        100_000,
    )
    .await;
    assert!(!direct.is_empty());
    let mut failures = Vec::new();
    for (scenario, expected) in &direct {
        assert!(
            !expected.to_string().contains("ERROR"),
            "{scenario} fails even direct: {expected}"
        );
        let got = &through[scenario];
        if got != expected {
            failures.push(format!("{scenario}: direct {expected}, gateway {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.settle().await;
    let recorded = env
        .events()
        .iter()
        .filter(|e| matches!(e, EventBody::Statement(q) if q.sql.contains("driver_items")))
        .count();
    assert!(recorded > 0, "the gateway's run is in the ledger");
    // What the database ran for the gateway's sessions is what the ledger
    // shows judged and let through.
    env.assert_database_ran_only_allowed();
    // Every row the gateway's run left was written by a statement recorded
    // as allowed: the rows are there, and so are their statements.
    assert!(env.verify().is_intact());
}

fn fixture(path: &str) -> String {
    format!("{}/../fixtures/drivers/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_work_through_the_gateway_as_direct() {
    direct_and_through(
        "python3",
        &[&fixture("matrix.py")],
        "python3 runs (.ci/run installs psycopg and asyncpg)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_works_through_the_gateway_as_direct() {
    direct_and_through(
        "node",
        &[&fixture("node/matrix.js")],
        "node runs (.ci/run installs node and fixtures/drivers/node's packages)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_works_through_the_gateway_as_direct() {
    direct_and_through(
        "java",
        &[
            "-cp",
            "/usr/share/java/postgresql.jar",
            &fixture("Batch.java"),
        ],
        "java runs (.ci/run installs a JDK and the JDBC driver)",
    )
    .await;
}

/// tokio-postgres pipelines the queries of futures polled together on one
/// client (Parse, Bind, Execute, Sync for each, sent before any answer):
/// direct and through the gateway, the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelined_futures_work_through_the_gateway_as_direct() {
    let env = Env::start_custom(POLICY, "", "", |pg| {
        pg.psql("shop", TABLE);
    })
    .await;
    async fn run(c: &tokio_postgres::Client, base: i32) -> Vec<String> {
        let insert = c
            .prepare("INSERT INTO driver_items (id, note) VALUES ($1, $2)")
            .await
            .unwrap();
        type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
        let (one, two, top) = (base + 1, base + 2, base + 100);
        let five = 5i32;
        let first: Params = vec![&one, &"one"];
        let second: Params = vec![&two, &"two"];
        let range: Params = vec![&base, &top];
        let limit: Params = vec![&five];
        let again: Params = vec![&one, &"duplicate"];
        let (a, b, n, t, e) = futures_util::join!(
            c.execute(&insert, &first),
            c.execute(&insert, &second),
            c.query_one(
                "SELECT count(*) FROM driver_items WHERE id > $1 AND id <= $2",
                &range
            ),
            c.query("SELECT id FROM orders WHERE id <= $1 ORDER BY id", &limit),
            c.execute(&insert, &again),
        );
        let ids: Vec<i32> = t.unwrap().iter().map(|r| r.get(0)).collect();
        vec![
            format!("{:?} {:?}", a.unwrap(), b.unwrap()),
            format!("{}", n.unwrap().get::<_, i64>(0)),
            format!("{ids:?}"),
            e.unwrap_err()
                .code()
                .map(|c| c.code().to_owned())
                .unwrap_or_default(),
        ]
    }
    let (direct, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname=shop",
            env.pg.port(),
            env.pg.superuser(),
            env.pg.password()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let expected = run(&direct, 0).await;
    let through = env.connect("agent").await;
    assert_eq!(run(&through, 100_000).await, expected);
    env.settle().await;
    env.assert_database_ran_only_allowed();
}
