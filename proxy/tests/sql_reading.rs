//! The gateway judges SQL as PostgreSQL reads it: spellings that sqlparser
//! reads differently from PostgreSQL (a dollar-quote tag with a non-ASCII
//! character, a `U&"..."` identifier) are refused, and nothing of them
//! reaches the database, whether sent by the simple or the extended
//! protocol.

mod support;

use support::{Env, POLICY};

/// The hidden statements of the dollar-quote smuggling attacks: each must
/// never reach the database.
const MARKERS: &[&str] = &[
    "pwned@evil",
    "DELETE FROM orders WHERE id = 1",
    "set_config",
];

fn refused(e: &tokio_postgres::Error) -> String {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error, got {e}"));
    assert_eq!(db.code().code(), "42501", "{}", db.message());
    db.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_hidden_in_a_dollar_quote_that_sqlparser_misreads_never_runs() {
    let env = Env::start(POLICY).await;
    let c = env.connect("reader").await;
    let attacks = [
        // A reader may only read: PostgreSQL would run a DELETE and an
        // UPDATE between two SELECTs whose strings sqlparser reads as one.
        "SELECT $€$, $$ $€$; DELETE FROM orders WHERE id = 1; UPDATE customers SET email='pwned@evil' WHERE id=1; SELECT $€$ $$ || $€$",
        "SELECT $·$, $$ $·$; DELETE FROM orders WHERE id = 1; SELECT $·$ $$ || $·$",
        "SELECT $—$, $$ $—$; DELETE FROM orders WHERE id = 1; SELECT $—$ $$ || $—$",
        "SELECT $😀$, $$ $😀$; DELETE FROM orders WHERE id = 1; SELECT $😀$ $$ || $😀$",
        "SELECT $a€$, $$ $a€$; DELETE FROM orders WHERE id = 1; SELECT $a€$ $$ || $a€$",
        "SELECT $\u{a0}$, $$ $\u{a0}$; DELETE FROM orders WHERE id = 1; SELECT $\u{a0}$ $$ || $\u{a0}$",
    ];
    for sql in attacks {
        let e = c.simple_query(sql).await.unwrap_err();
        let message = refused(&e);
        assert!(
            message.contains("PostgreSQL reads this query string differently"),
            "{sql}: {message}"
        );
    }
    // One statement, by the extended protocol: it would switch the
    // read-only wall off.
    let one = "SELECT $€$, $$ $€$ || (set_config('default_transaction_read_only','off',false))::text || $€$ $$ || $€$";
    let e = c.query(one, &[]).await.unwrap_err();
    refused(&e);
    // The same wrapper around denied columns.
    let e = c
        .simple_query("SELECT $€$ $$ $€$, ssn FROM customers --$€$ $$ $€$")
        .await
        .unwrap_err();
    refused(&e);

    // Nothing ran: the rows are intact and the database never saw the text.
    let rows = c
        .query("SELECT count(*) FROM orders WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    let email: String = c
        .query_one("SELECT email FROM customers WHERE id = 1", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(email, "c1@example.com");
    let log = env.pg.log();
    for marker in MARKERS {
        assert!(!log.contains(marker), "the database saw {marker:?}:\n{log}");
    }
    assert!(!log.contains("$€$"), "the database saw a smuggling query");
    // The session survives and every refusal is recorded.
    assert_eq!(
        c.query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    env.settle().await;
    let recorded = env
        .events()
        .iter()
        .filter(|e| format!("{e:?}").contains("PostgreSQL reads this query string differently"))
        .count();
    assert!(recorded > attacks.len(), "{recorded} refusals recorded");
    env.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_escaped_identifiers_do_not_read_denied_columns() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    let attacks = [
        r#"SELECT id, U&"\0073sn" AS s FROM customers WHERE id <= 3"#,
        r#"SELECT U&"!0073sn" UESCAPE '!' FROM customers"#,
        r#"SELECT U&"\0073\0073n" FROM customers"#,
        r#"SELECT * FROM U&"cust\006Fmers""#,
    ];
    for sql in attacks {
        let simple = c.simple_query(sql).await;
        let e = simple.expect_err(sql);
        refused(&e);
        let extended = c.query(sql, &[]).await;
        let e = extended.expect_err(sql);
        refused(&e);
    }
    let log = env.pg.log();
    assert!(!log.contains("U&"), "the database saw a U& spelling");
    env.verify();
}

/// A deny or mask rule naming a table or column the target does not have
/// would protect nothing: `policy apply` refuses it, with the line and the
/// likely intended name, unless `--allow-missing`; the policy in force is
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_apply_refuses_rules_that_name_what_does_not_exist() {
    let env = Env::start(POLICY).await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let url = format!("http://{}", env.admin);
    let typo = env.dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        format!(
            "{POLICY}\n[[rule]]\nname = \"mask-contacts\"\nidentity = \"agent\"\naction = \"mask\"\n\n[rule.mask]\n\"public.customers.name\" = \"hash\"\n\"public.customers.emial\" = \"email\"\n"
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "policy".to_owned(),
            "apply".to_owned(),
            typo.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let api = ["--admin", url.as_str(), "--token-file"];
    let token = token_file.display().to_string();
    let with_api = |more: &[&str]| {
        let mut a: Vec<&str> = api.to_vec();
        a.push(&token);
        a.extend_from_slice(more);
        a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let before = env.shared().policy().source().to_owned();
    let args = with_api(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, err) = tokio::task::block_in_place(|| run(&args));
    assert!(!ok, "a typo in a mask rule was applied");
    assert!(
        err.contains(
            "public.customers.emial: no such column; did you mean public.customers.email?"
        ),
        "{err}"
    );
    assert!(err.contains("line "), "{err}");
    assert_eq!(env.shared().policy().source(), before, "the policy changed");

    // The offline path checks the same names.
    let config = env.config.display().to_string();
    let (ok, err) = tokio::task::block_in_place(|| run(&["--config", &config]));
    assert!(
        !ok && err.contains("did you mean public.customers.email?"),
        "{err}"
    );

    // --allow-missing applies it, with a warning naming the column.
    let args = with_api(&["--allow-missing"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, err) = tokio::task::block_in_place(|| run(&args));
    assert!(ok, "{err}");
    assert!(
        err.contains("warning:") && err.contains("public.customers.emial"),
        "{err}"
    );
    assert_ne!(env.shared().policy().source(), before);
}

/// Issue 13: a read-only identity cannot change data even when a statement
/// is misjudged. The misjudgement is forced the way it can happen: a view
/// is replaced behind the gateway's back to call a function that writes,
/// and the gateway judges the next SELECT of it by its cached catalog (at
/// most a second old) as a plain read. The database itself then refuses
/// the write: the session is read-only, as a role without write privilege.
/// Whichever side refuses, nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misjudged_statement_of_a_read_only_identity_cannot_write() {
    support::read_only_password();
    let env = Env::start_custom(
        POLICY,
        "",
        support::READ_ONLY_TARGET,
        |pg| {
            pg.psql(
                "shop",
                "CREATE VIEW shifting AS SELECT 1 AS x; \
                 CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE \
                   AS $$ INSERT INTO audit_probe (note) VALUES ('written through a view') RETURNING 1 $$; \
                 GRANT EXECUTE ON FUNCTION bump() TO PUBLIC",
            );
            pg.psql("shop", support::READ_ONLY_ROLE_SQL);
        },
    )
    .await;
    let reader = env.connect("reader").await;
    let mut refused_by_database = false;
    for _ in 0..5 {
        env.pg
            .psql("shop", "CREATE OR REPLACE VIEW shifting AS SELECT 1 AS x");
        // Judged as a read, and the catalog (what the view calls) cached.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        reader.simple_query("SELECT * FROM shifting").await.unwrap();
        env.pg.psql(
            "shop",
            "CREATE OR REPLACE VIEW shifting AS SELECT bump() AS x",
        );
        let e = reader
            .simple_query("SELECT * FROM shifting")
            .await
            .expect_err("a write through the view is refused");
        let db = e.as_db_error().unwrap();
        if !db.message().contains("Gatehouse") {
            // The gateway let it through; PostgreSQL refused it.
            // Read-only transactions (25006) and the role's missing
            // privilege (42501, permission denied) both stand in the way.
            assert!(
                ["25006", "42501"].contains(&db.code().code()),
                "{}: {}",
                db.code().code(),
                db.message()
            );
            refused_by_database = true;
            break;
        }
    }
    assert_eq!(
        env.pg
            .psql(
                "shop",
                "SELECT count(*) FROM audit_probe WHERE note = 'written through a view'"
            )
            .trim(),
        "0",
        "nothing was written"
    );
    assert!(
        refused_by_database,
        "the stale-catalog window was never hit: the test did not force a misjudgement"
    );
    // Once the catalog is looked up again, the gateway judges the view's
    // call itself.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let e = reader
        .simple_query("SELECT * FROM shifting")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("Gatehouse")
            || e.as_db_error().unwrap().message().contains("not permitted"),
        "{}",
        e.as_db_error().unwrap().message()
    );
}
