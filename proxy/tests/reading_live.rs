//! The differential test against a live server: query strings built from
//! PostgreSQL's lexical corner cases, with forbidden writes hidden among
//! them, go through the gateway as `agent`, whose session is read-write
//! (policy lets it write orders) but who may not change customers.
//! Whatever the gateway lets through, the database's own counters of rows
//! inserted, updated and deleted in `customers` must not move: a write that
//! ran would have been judged as something else.

mod support;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use support::{Env, POLICY};

/// Pieces of SQL text (as in engine/tests/reading_differential.rs, with
/// the writes the reader must never run).
fn piece() -> impl Strategy<Value = String> {
    let tag_char = prop::sample::select(vec![
        "", "a", "_", "1", "€", "·", "—", "😀", "\u{a0}", "é", "$",
    ]);
    let tag = prop::collection::vec(tag_char, 0..3).prop_map(|v| v.concat());
    let fixed = prop::sample::select(vec![
        "SELECT 1",
        "SELECT id FROM orders",
        "DELETE FROM orders WHERE id = 1",
        "UPDATE customers SET email = 'pwned' WHERE id = 1",
        "DELETE FROM customers WHERE id = 2",
        "INSERT INTO customers (id, name) VALUES (99, 'x')",
        "WITH d AS (DELETE FROM customers WHERE id = 3 RETURNING id) SELECT id FROM d",
        "COMMIT",
        "BEGIN READ WRITE",
        ";",
        " ",
        "\n",
        "\u{a0}",
        ",",
        "||",
        "$$",
        "$1",
        "'",
        "''",
        "'a'",
        "E'\\''",
        "E'a'\n'\\''",
        "U&'\\0061'",
        "U&\"\\0073sn\"",
        "\"a\"\"b\"",
        "B'1'",
        "/*",
        "*/",
        "--",
        "-- c\n",
        "(",
        ")",
    ]);
    prop_oneof![
        3 => fixed.prop_map(str::to_owned),
        1 => tag.prop_map(|t| format!("${t}$")),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pieces = prop::collection::vec(piece(), 1..10).prop_map(|pieces| {
        let mut sql = String::from("SELECT ");
        for p in pieces {
            sql.push_str(&p);
            sql.push(' ');
        }
        sql
    });
    // The smuggling shape: a string for one reader that is code for the
    // other, around a forbidden write, with a quote tag of any characters.
    let tag_char = prop::sample::select(vec!["a", "_", "€", "·", "—", "😀", "\u{a0}", "é", "1"]);
    let tag = prop::collection::vec(tag_char, 0..3).prop_map(|v| v.concat());
    let write = prop::sample::select(vec![
        "UPDATE customers SET email = 'pwned' WHERE id = 1",
        "DELETE FROM customers WHERE id = 2",
        "INSERT INTO customers (id, name) VALUES (99, 'x')",
    ]);
    let smuggled = (tag, write, prop::bool::ANY).prop_map(|(t, w, concat)| {
        if concat {
            format!("SELECT ${t}$, $$ ${t}$; {w}; SELECT ${t}$ $$ || ${t}$")
        } else {
            format!("SELECT ${t}$ $$ ${t}$; {w}; SELECT ${t}$ $$ ${t}$")
        }
    });
    prop_oneof![3 => pieces, 1 => smuggled]
}

/// Rows of `customers` inserted, updated and deleted so far, as the
/// database counts them (its statistics, flushed by the sessions that end),
/// and a checksum of its contents.
fn changes(env: &Env) -> String {
    env.pg.psql(
        "shop",
        "SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del FROM pg_stat_user_tables \
          WHERE relname = 'customers'; \
         SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_gateway_lets_through_changes_a_forbidden_table() {
    let cases: u32 = std::env::var("GATEHOUSE_READING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let env = Env::start(POLICY).await;
    let before = changes(&env);
    let c = env.connect("agent").await;
    let mut runner = TestRunner::new(Config::default());
    let strategy = query();
    let mut allowed = 0;
    for _ in 0..cases {
        let sql = strategy.new_tree(&mut runner).unwrap().current();
        if c.simple_query(&sql).await.is_ok() {
            allowed += 1;
        }
        // A failed statement can leave a transaction aborted: start clean.
        let _ = c.simple_query("ROLLBACK").await;
    }
    drop(c);
    // The statistics of an ended session reach the counters shortly after.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = changes(&env);
    assert_eq!(before, after, "customers changed through the gateway");
    assert!(
        allowed > 0,
        "nothing was allowed: the test checks too little"
    );
    env.settle().await;
    assert!(env.verify().is_intact());
}
