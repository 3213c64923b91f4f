//! Unit tests for scope, alias and column resolution, and for the guards
//! around the parser. The statement-class corpus lives in
//! `engine/tests/classifier_corpus.rs`.

use super::classify;
use crate::StatementInfo;
use gatehouse_ledger::event::StatementClass;

fn one(sql: &str) -> StatementInfo {
    let mut c = classify(sql);
    assert_eq!(c.statements.len(), 1, "{sql}: {c:?}");
    c.statements.remove(0)
}

fn columns(sql: &str) -> Vec<String> {
    one(sql).columns
}

fn tables(sql: &str) -> Vec<String> {
    one(sql).tables
}

#[test]
fn unqualified_columns_belong_to_the_only_table() {
    assert_eq!(
        columns("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        [
            "public.pgbench_accounts.abalance",
            "public.pgbench_accounts.aid"
        ]
    );
}

#[test]
fn aliases_resolve_to_their_tables() {
    assert_eq!(
        columns(
            "SELECT o.id, c.name FROM orders o JOIN customers AS c ON c.id = o.customer_id \
             WHERE o.total > 10 ORDER BY c.name"
        ),
        [
            "public.customers.id",
            "public.customers.name",
            "public.orders.customer_id",
            "public.orders.id",
            "public.orders.total",
        ]
    );
}

#[test]
fn an_aliased_table_is_not_reachable_by_its_own_name() {
    // PostgreSQL rejects `orders.id` here; the report still names the table
    // that was asked for rather than dropping the reference.
    assert_eq!(
        columns("SELECT orders.id FROM orders o"),
        ["public.orders.id"]
    );
}

#[test]
fn ambiguous_unqualified_columns_are_reported_for_every_table() {
    assert_eq!(
        columns("SELECT name FROM orders o JOIN customers c ON c.id = o.customer_id"),
        [
            "public.customers.id",
            "public.customers.name",
            "public.orders.customer_id",
            "public.orders.name",
        ]
    );
}

#[test]
fn qualified_and_schema_qualified_references() {
    assert_eq!(columns("SELECT public.t.a FROM public.t"), ["public.t.a"]);
    assert_eq!(columns("SELECT s.t.a FROM s.t"), ["s.t.a"]);
    assert_eq!(columns("SELECT t.a FROM s.t"), ["s.t.a"]);
    assert_eq!(
        columns("SELECT x.a FROM \"Sales\".\"Orders\" x"),
        ["Sales.Orders.a"]
    );
}

#[test]
fn quoted_identifiers_keep_their_case() {
    assert_eq!(tables("SELECT * FROM \"Orders\""), ["public.Orders"]);
    assert_eq!(tables("SELECT * FROM ORDERS"), ["public.orders"]);
    assert_eq!(
        columns("SELECT \"Id\", NAME FROM \"Orders\""),
        ["public.Orders.Id", "public.Orders.name"]
    );
}

#[test]
fn stars_and_whole_row_references() {
    assert_eq!(columns("SELECT * FROM t"), ["public.t.*"]);
    assert_eq!(
        columns("SELECT c.*, o.id FROM customers c, orders o"),
        ["public.customers.*", "public.orders.id"]
    );
    assert_eq!(
        columns("SELECT row_to_json(c) FROM customers c"),
        ["public.customers.*"]
    );
    assert_eq!(
        columns("SELECT to_jsonb(c.*) FROM customers c"),
        ["public.customers.*"]
    );
    assert_eq!(
        columns("SELECT (c).email FROM customers c"),
        ["public.customers.email"]
    );
    // A bare name that is a FROM item elsewhere is a whole-row reference
    // there, and a column of the others.
    assert_eq!(
        columns("SELECT c FROM customers c, orders o"),
        ["public.customers.*", "public.orders.c"]
    );
}

#[test]
fn derived_tables_pass_columns_through() {
    assert_eq!(
        columns("SELECT s.x FROM (SELECT o.total AS x FROM orders o) s"),
        ["public.orders.total"]
    );
    assert_eq!(
        columns("SELECT s.total FROM (SELECT * FROM orders) s"),
        ["public.orders.*", "public.orders.total"]
    );
    // An alias column list renames positionally.
    assert_eq!(
        columns("SELECT s.y FROM (SELECT a, b FROM t) AS s(x, y)"),
        ["public.t.a", "public.t.b"]
    );
    assert_eq!(
        columns("SELECT row_to_json(s) FROM (SELECT a, b FROM t) s"),
        ["public.t.a", "public.t.b"]
    );
}

#[test]
fn table_alias_column_lists_hide_real_names() {
    // `x.p` is the first column of t, whatever it is called.
    assert_eq!(columns("SELECT x.p FROM t AS x(p, q)"), ["public.t.*"]);
}

#[test]
fn ctes_are_not_tables_and_pass_columns_through() {
    let info = one(
        "WITH big AS (SELECT customer_id, sum(total) AS s FROM orders GROUP BY customer_id) \
         SELECT c.email, big.s FROM big JOIN customers c ON c.id = big.customer_id",
    );
    assert_eq!(info.tables, ["public.customers", "public.orders"]);
    assert_eq!(
        info.columns,
        [
            "public.customers.email",
            "public.customers.id",
            "public.orders.customer_id",
            "public.orders.total",
        ]
    );
}

#[test]
fn a_cte_does_not_hide_the_table_it_shadows() {
    // Inside its own definition (without RECURSIVE) `t` is the real table.
    assert_eq!(
        tables("WITH t AS (SELECT * FROM t) SELECT * FROM t"),
        ["public.t"]
    );
    // A schema-qualified name is never a CTE.
    assert_eq!(
        tables("WITH orders AS (SELECT 1) SELECT * FROM public.orders"),
        ["public.orders"]
    );
    // CTE names are case-sensitive like any identifier.
    assert_eq!(
        tables("WITH \"D\" AS (SELECT 1) SELECT * FROM d"),
        ["public.d"]
    );
    // A later CTE sees an earlier one.
    assert!(tables("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b").is_empty());
    // An earlier CTE does not see a later one.
    assert_eq!(
        tables("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a"),
        ["public.b"]
    );
}

#[test]
fn recursive_ctes_see_themselves() {
    let info = one(
        "WITH RECURSIVE r(n) AS (SELECT id FROM nodes UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
         SELECT n FROM r",
    );
    assert_eq!(info.tables, ["public.nodes"]);
    assert_eq!(info.columns, ["public.nodes.id"]);
}

#[test]
fn table_functions_are_not_tables() {
    let info = one("SELECT g.n, t.a FROM generate_series(1, 3) AS g(n) JOIN t ON t.id = g.n");
    assert_eq!(info.tables, ["public.t"]);
    assert_eq!(info.columns, ["public.t.a", "public.t.id"]);
    assert!(info.functions.is_empty());
    let info = one("SELECT * FROM my_srf(1) f");
    assert!(info.tables.is_empty());
    assert_eq!(info.functions, ["my_srf"]);
    assert_eq!(info.class, StatementClass::Function);
}

#[test]
fn join_using_names_both_sides() {
    assert_eq!(
        columns("SELECT a.x FROM a JOIN b USING (id)"),
        ["public.a.id", "public.a.x", "public.b.id"]
    );
}

#[test]
fn correlated_subqueries_are_resolved_conservatively() {
    // `ssn` could belong to orders or (correlated) to customers.
    let cols =
        columns("SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders WHERE ssn = '1')");
    assert!(
        cols.contains(&"public.customers.ssn".to_owned()),
        "{cols:?}"
    );
    assert!(cols.contains(&"public.orders.ssn".to_owned()), "{cols:?}");
    // Qualified references resolve exactly.
    assert_eq!(
        columns(
            "SELECT c.id FROM customers c WHERE EXISTS \
             (SELECT 1 FROM orders o WHERE o.customer_id = c.id)"
        ),
        ["public.customers.id", "public.orders.customer_id"]
    );
}

#[test]
fn order_by_output_names_are_not_table_columns() {
    assert_eq!(columns("SELECT a AS x FROM t ORDER BY x"), ["public.t.a"]);
    assert_eq!(
        columns("SELECT a FROM t ORDER BY b DESC"),
        ["public.t.a", "public.t.b"]
    );
}

#[test]
fn value_keywords_are_not_columns() {
    assert_eq!(
        columns("SELECT current_user, current_schema, user FROM t WHERE d = current_date"),
        ["public.t.d"]
    );
    assert_eq!(columns("UPDATE t SET a = DEFAULT"), ["public.t.a"]);
}

#[test]
fn insert_columns_and_returning() {
    let info = one("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)");
    assert_eq!(
        info.columns,
        [
            "public.pgbench_history.aid",
            "public.pgbench_history.bid",
            "public.pgbench_history.delta",
            "public.pgbench_history.mtime",
            "public.pgbench_history.tid",
        ]
    );
    // Without a column list every column may be written.
    assert_eq!(columns("INSERT INTO t VALUES (1, 2)"), ["public.t.*"]);
    assert_eq!(
        columns("INSERT INTO t (a) SELECT b FROM u RETURNING id"),
        ["public.t.a", "public.t.id", "public.u.b"]
    );
}

#[test]
fn on_conflict_excluded_is_the_target_table() {
    assert_eq!(
        columns(
            "INSERT INTO t AS x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = x.b + EXCLUDED.c"
        ),
        ["public.t.a", "public.t.b", "public.t.c"]
    );
}

#[test]
fn update_and_delete_scopes() {
    assert_eq!(
        columns("UPDATE t AS x SET a = u.b FROM u WHERE x.id = u.id RETURNING x.c"),
        [
            "public.t.a",
            "public.t.c",
            "public.t.id",
            "public.u.b",
            "public.u.id",
        ]
    );
    assert_eq!(
        columns("DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*"),
        ["public.t.*", "public.t.id", "public.u.id"]
    );
}

#[test]
fn merge_target_and_source() {
    let info = one("MERGE INTO accounts a USING updates u ON a.id = u.id \
         WHEN MATCHED THEN UPDATE SET balance = u.balance \
         WHEN NOT MATCHED THEN INSERT (id, balance) VALUES (u.id, u.balance)");
    assert_eq!(info.tables, ["public.accounts", "public.updates"]);
    assert_eq!(
        info.columns,
        [
            "public.accounts.balance",
            "public.accounts.id",
            "public.updates.balance",
            "public.updates.id",
        ]
    );
}

#[test]
fn catalog_names_may_be_system_catalogs() {
    assert_eq!(
        tables("SELECT rolpassword FROM pg_authid"),
        ["pg_catalog.pg_authid", "public.pg_authid"]
    );
    assert_eq!(
        tables("SELECT * FROM pg_catalog.pg_authid"),
        ["pg_catalog.pg_authid"]
    );
}

#[test]
fn long_identifiers_are_truncated_like_postgres_does() {
    let long = format!("secret_{}", "x".repeat(80));
    let info = one(&format!("SELECT * FROM {long}"));
    assert_eq!(info.tables, [format!("public.{}", &long[..63])]);
}

#[test]
fn select_into_names_the_new_table_as_written() {
    let info = one("SELECT a, b INTO s.newt FROM t");
    assert_eq!(info.class, StatementClass::Ddl);
    assert_eq!(info.tables, ["public.t", "s.newt"]);
    assert_eq!(info.columns, ["public.t.a", "public.t.b"]);
}

#[test]
fn index_and_policy_expressions_refer_to_their_table() {
    assert_eq!(
        columns("CREATE INDEX ON t (lower(email))"),
        ["public.t.email"]
    );
    assert_eq!(
        columns("CREATE POLICY p ON t USING (owner = current_user)"),
        ["public.t.owner"]
    );
    assert_eq!(columns("COMMENT ON COLUMN s.t.a IS 'x'"), ["s.t.a"]);
}

#[test]
fn deep_operator_chains_do_not_overflow_or_crawl() {
    // Large enough to take the helper-thread path, deep enough to overflow
    // a default stack if walked naively.
    let sql = format!("SELECT a{} FROM t", "+1".repeat(200_000));
    let started = std::time::Instant::now();
    let info = one(&sql);
    assert_eq!(info.class, StatementClass::Read);
    assert_eq!(info.columns, ["public.t.a"]);
    assert!(started.elapsed().as_secs() < 30);
    let sql = format!("SELECT 1{}", " UNION SELECT a FROM t".repeat(20_000));
    assert_eq!(one(&sql).tables, ["public.t"]);
}

#[test]
fn huge_queries_are_unknown() {
    let sql = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    let info = one(&sql);
    assert_eq!(info.class, StatementClass::Unknown);
    assert!(info.reason.unwrap().contains("bytes"));
}

#[test]
fn quadratic_resolution_is_bounded() {
    // Every unqualified name against every FROM item: the budget stops it.
    let from: Vec<String> = (0..2000).map(|i| format!("t{i}")).collect();
    let sql = format!(
        "SELECT 1 FROM {} WHERE {}",
        from.join(", "),
        vec!["a = 1"; 2000].join(" AND ")
    );
    let started = std::time::Instant::now();
    let info = one(&sql);
    assert_eq!(info.class, StatementClass::Unknown);
    assert!(info.reason.unwrap().contains("too complex"));
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn dml_targets_are_never_ctes() {
    // PostgreSQL never looks a DELETE, UPDATE, MERGE or INSERT target up
    // among the WITH names: the real table is written.
    assert_eq!(
        tables("WITH accounts AS (SELECT 1) DELETE FROM accounts"),
        ["public.accounts"]
    );
    let info = one(
        "WITH accounts AS (SELECT 1 AS id) UPDATE accounts SET balance = 0 \
         WHERE id IN (SELECT id FROM accounts)",
    );
    assert_eq!(info.class, StatementClass::Write);
    assert_eq!(info.tables, ["public.accounts"]);
    assert_eq!(
        tables("WITH x AS (SELECT 1) INSERT INTO x VALUES (1)"),
        ["public.x"]
    );
}

#[test]
fn table_commands_inside_set_operations() {
    let info = one("SELECT id FROM orders UNION TABLE archived_orders");
    assert_eq!(info.tables, ["public.archived_orders", "public.orders"]);
    assert_eq!(
        info.columns,
        ["public.archived_orders.*", "public.orders.id"]
    );
}

#[test]
fn copy_inline_data_is_not_trusted() {
    let c = classify("COPY logs FROM STDIN;\nDROP TABLE accounts");
    assert_eq!(c.statements.len(), 1);
    assert_eq!(c.statements[0].class, StatementClass::Unknown);
    // A bare COPY FROM STDIN (the data follows in CopyData messages) is a write.
    assert_eq!(one("COPY logs FROM STDIN;\n").class, StatementClass::Write);
}

#[test]
fn multi_statement_fallback_is_per_statement_only_when_safe() {
    let c = classify("SELECT 1; VACUUM ANALYZE t; SELECT 2");
    let classes: Vec<_> = c.statements.iter().map(|s| s.class).collect();
    assert_eq!(
        classes,
        [
            StatementClass::Read,
            StatementClass::Admin,
            StatementClass::Read
        ]
    );
    // Unbalanced parentheses: the split cannot be trusted.
    let c = classify("SELECT (1; DELETE FROM t");
    assert_eq!(c.statements.len(), 1);
    assert_eq!(c.statements[0].class, StatementClass::Unknown);
}

#[test]
fn calls_hidden_in_views_are_judged_like_calls_in_the_statement() {
    let info = one("SELECT * FROM innocent");
    assert_eq!(info.class, StatementClass::Read);
    let with =
        crate::classify::with_view_calls(&info, &["pg_catalog.lower".into(), "public.bump".into()]);
    assert_eq!(with.class, StatementClass::Function);
    assert_eq!(with.functions, ["public.bump"]);
    let dangerous = crate::classify::with_view_calls(&info, &["pg_catalog.pg_read_file".into()]);
    assert_eq!(dangerous.class, StatementClass::Admin);
    assert_eq!(dangerous.dangerous, ["pg_read_file"]);
    let safe = crate::classify::with_view_calls(&info, &["pg_catalog.lower".into()]);
    assert_eq!(safe, info);
}

#[test]
fn statements_that_change_the_shared_namespaces_are_read_as_postgresql_does() {
    use crate::classify::namespace_changes;
    let c = namespace_changes("DEALLOCATE s1; PREPARE \"S2\" AS SELECT 1; prepare S3 AS SELECT 2");
    assert_eq!(c.statements, ["s1", "S2", "s3"]);
    assert!(!c.all_statements);
    assert!(namespace_changes("DEALLOCATE ALL").all_statements);
    assert!(namespace_changes("deallocate prepare all").all_statements);
    let d = namespace_changes("DISCARD ALL");
    assert!(d.all_statements && d.all_portals);
    assert!(namespace_changes("DISCARD PLANS").is_empty());
    let p = namespace_changes("DECLARE p CURSOR FOR SELECT 1; CLOSE q");
    assert_eq!(p.portals, ["p", "q"]);
    assert!(namespace_changes("CLOSE ALL").all_portals);
    assert!(namespace_changes("SELECT 1").is_empty());
    // Not SQL PostgreSQL runs: nothing changes.
    assert!(namespace_changes("DEALLOCATE").is_empty());
}

#[test]
fn move_reads_a_cursor_like_fetch() {
    for sql in [
        "MOVE c",
        "MOVE FROM c",
        "MOVE NEXT IN c",
        "MOVE ABSOLUTE -3 FROM c",
        "move relative 2 in \"C\"",
        "MOVE 10 FROM c",
        "MOVE FORWARD ALL FROM c",
        "MOVE BACKWARD 4 c",
        "MOVE ALL c",
    ] {
        let c = classify(sql);
        assert_eq!(c.statements.len(), 1, "{sql}");
        assert_eq!(c.statements[0].command, "MOVE", "{sql}");
        assert_eq!(c.statements[0].class, StatementClass::Read, "{sql}");
    }
    for sql in [
        "MOVE",
        "MOVE ABSOLUTE FROM c",
        "MOVE c d",
        "MOVE 1 + 1 FROM c",
    ] {
        assert_ne!(classify(sql).statements[0].command, "MOVE", "{sql}");
    }
}

#[test]
fn fetch_statements_name_their_cursors_as_postgresql_folds_them() {
    use crate::classify::fetched_cursors;
    assert_eq!(fetched_cursors("FETCH ALL FROM p"), ["p"]);
    assert_eq!(
        fetched_cursors("fetch forward 5 in P; FETCH NEXT FROM \"Q\""),
        ["p", "Q"]
    );
    assert!(fetched_cursors("SELECT 1").is_empty());
    // MOVE runs a cursor's query as FETCH does, rows unseen.
    assert_eq!(
        fetched_cursors("MOVE ALL IN p; move absolute -3 from \"R\"; MOVE q"),
        ["p", "R", "q"]
    );
}
