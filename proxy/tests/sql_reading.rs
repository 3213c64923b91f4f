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
