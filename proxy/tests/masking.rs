//! Masking through the gateway, against a real PostgreSQL seeded from
//! fixtures/demo/shop.sql (500 customers with names, emails, SSNs and card
//! numbers) under fixtures/masking/policy.toml.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use gatehouse_ledger::event::{Action, EventBody};
use support::Env;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryMessage;

const SHOP: &str = include_str!("../../fixtures/demo/shop.sql");
const VIEWS: &str = include_str!("../../fixtures/masking/views.sql");
const POLICY: &str = include_str!("../../fixtures/masking/policy.toml");
const CORPUS: &str = include_str!("../../fixtures/masking/bypass.txt");

/// Extra fixture: a unique SSN (for unique-violation errors) and a table of
/// other types, masked by the `types` rule added to the policy.
const EXTRA: &str = "
CREATE UNIQUE INDEX customers_ssn_key ON customers (ssn);
CREATE TABLE profiles (
    id int PRIMARY KEY,
    score int4, points int8, ratio float8, balance numeric(12, 2),
    token uuid, born date, doc jsonb, blob bytea, nick varchar(20), code char(6)
);
INSERT INTO profiles
SELECT g, g * 10, g::int8 * 1000000000, g / 3.0, g * 1.25,
       md5(g::text)::uuid, date '2000-01-01' + g, jsonb_build_object('n', g, 'mail', 'p' || g || '@example.com'),
       decode(md5(g::text), 'hex'), 'nick' || g, 'c' || lpad(g::text, 5, '0')
FROM generate_series(1, 20) g;
";

const TYPES_RULE: &str = r#"
[[rule]]
name = "agents-mask-profiles"
identity = "agent*"
target = "shop"
classes = ["read", "transaction"]
tables = ["public.profiles"]
action = "mask"
on_derived = "ON_DERIVED"

[rule.mask]
"public.profiles.score" = "hash"
"public.profiles.points" = "redact"
"public.profiles.ratio" = "hash"
"public.profiles.balance" = "redact"
"public.profiles.token" = "hash"
"public.profiles.born" = "redact"
"public.profiles.doc" = "redact"
"public.profiles.blob" = "hash"
"public.profiles.nick" = { strategy = "partial", keep = 2 }
"public.profiles.code" = "null"

[[rule]]
name = "agents-read-new-views"
identity = "agent*"
target = "shop"
classes = ["read"]
tables = ["public.emails", "public.ssns"]
action = "allow"

[[rule]]
name = "reader-does-ddl"
identity = "reader"
target = "shop"
classes = ["read", "ddl", "transaction"]
action = "allow"
"#;

fn policy(on_derived: &str) -> String {
    let base = POLICY.replace(
        "detectors = [",
        &format!("on_derived = \"{on_derived}\"\ndetectors = ["),
    );
    format!("{base}\n{}", TYPES_RULE.replace("ON_DERIVED", on_derived))
}

async fn start(on_derived: &str) -> Env {
    start_with(on_derived, "").await
}

async fn start_with(on_derived: &str, target_extra: &str) -> Env {
    Env::start_custom(&policy(on_derived), "", target_extra, |pg| {
        pg.psql(
            "shop",
            &format!(
                "DROP TABLE orders, customers, audit_probe CASCADE;\n{SHOP}\n{VIEWS}\n{EXTRA}"
            ),
        );
    })
    .await
}

/// A direct connection to the database, bypassing the gateway.
async fn direct(env: &Env) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&env.pg.url("shop"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn text_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

fn denied(e: &tokio_postgres::Error) -> String {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error, got {e}"));
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{db:?}");
    db.message().to_owned()
}

/// Any value at all, as raw bytes: checks that a driver can read a masked
/// value of a type tokio-postgres does not decode by itself.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_in_text_and_binary_results() {
    let env = start("deny").await;
    let db = direct(&env).await;
    let raw = db
        .query_one(
            "SELECT name, email, ssn, card_number FROM customers WHERE id = 7",
            &[],
        )
        .await
        .unwrap();
    let (raw_name, raw_email, raw_ssn, raw_card): (String, String, String, String) =
        (raw.get(0), raw.get(1), raw.get(2), raw.get(3));
    let c = env.connect("agent").await;

    // Simple protocol: text.
    let rows = text_rows(
        &c.simple_query("SELECT id, name, email, ssn, card_number FROM customers WHERE id = 7")
            .await
            .unwrap(),
    );
    let row = &rows[0];
    assert_eq!(row[0].as_deref(), Some("7"));
    let name = row[1].clone().unwrap();
    assert!(name.starts_with("h_") && name.len() == 18, "{name}");
    assert_eq!(row[2].as_deref(), Some("***@example.com"));
    assert_eq!(row[3].as_deref(), Some("[redacted]"));
    let card = row[4].clone().unwrap();
    assert_eq!(card, format!("************{}", &raw_card[12..]));
    for v in [&raw_name, &raw_email, &raw_ssn, &raw_card] {
        assert!(!row.iter().flatten().any(|x| x == v));
    }

    // Extended protocol (tokio-postgres asks for binary results).
    let stmt = c
        .prepare("SELECT c.ssn AS x, c.name, c.email, card_number FROM customers c WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..2 {
        let r = c.query_one(&stmt, &[&7i32]).await.unwrap();
        assert_eq!(r.get::<_, String>(0), "[redacted]", "renamed, still masked");
        assert_eq!(
            r.get::<_, String>(1),
            name,
            "the same pseudonym in text and binary"
        );
        assert_eq!(r.get::<_, String>(2), "***@example.com");
        assert_eq!(r.get::<_, String>(3), card);
    }
    // query_typed: Parse, Bind, Describe and Execute in one go.
    let r = c
        .query_typed(
            "SELECT ssn, email FROM customers WHERE id = $1",
            &[(&7i32, Type::INT4)],
        )
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, String>(0), "[redacted]");
    assert_eq!(r[0].get::<_, String>(1), "***@example.com");

    // Other types decode, text and binary.
    let r = c
        .query_one("SELECT * FROM profiles WHERE id = 3", &[])
        .await
        .unwrap();
    let score: i32 = r.get("score");
    assert_ne!(score, 30);
    assert_eq!(r.get::<_, i64>("points"), 0);
    let ratio: f64 = r.get("ratio");
    assert!(ratio.fract() == 0.0 && ratio != 1.0, "{ratio}");
    let balance: Raw = r.get("balance");
    assert_eq!(balance.0, vec![0; 8], "numeric zero");
    let token: Raw = r.get("token");
    assert_eq!(token.0.len(), 16);
    assert!(
        r.get::<_, Option<Raw>>("born").is_none(),
        "no date placeholder: NULL"
    );
    let doc: Raw = r.get("doc");
    assert_eq!(doc.0, b"\x01null");
    let blob: Vec<u8> = r.get("blob");
    assert_eq!(blob.len(), 16);
    assert_eq!(r.get::<_, String>("nick"), "***k3");
    assert!(r.get::<_, Option<String>>("code").is_none());
    let text = text_rows(
        &c.simple_query("SELECT * FROM profiles WHERE id = 3")
            .await
            .unwrap(),
    );
    let t = &text[0];
    assert_eq!(
        t[1].as_deref(),
        Some(score.to_string().as_str()),
        "one pseudonym in both formats"
    );
    assert_eq!(t[2].as_deref(), Some("0"));
    assert_eq!(t[4].as_deref(), Some("0"));
    assert_eq!(t[6], None);
    assert_eq!(t[7].as_deref(), Some("null"));
    assert!(t[8].as_deref().unwrap().starts_with("\\x"));
    assert_eq!(t[9].as_deref(), Some("***k3"));

    // A named portal read in pieces (PortalSuspended, Execute again).
    let mut c2 = env.connect("agent").await;
    let tx = c2.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT ssn FROM customers ORDER BY id", &[])
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.get::<_, String>(0) == "[redacted]"));
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_pseudonyms_are_stable_and_join_and_group() {
    let env = start("deny").await;
    let a = env.connect("agent").await;
    let b = env.connect("agent").await;
    let first: Vec<String> = a
        .query("SELECT name FROM customers ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let again: Vec<String> = text_rows(
        &b.simple_query("SELECT name FROM customers ORDER BY id")
            .await
            .unwrap(),
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    assert_eq!(first, again, "stable across sessions and formats");
    // The fixture repeats 36 distinct names over 500 customers.
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 36);
    // GROUP BY a hashed column: the groups of the raw values, pseudonymised.
    let groups = a
        .query("SELECT name, count(*) FROM customers GROUP BY name", &[])
        .await
        .unwrap();
    assert_eq!(groups.len(), 36);
    let total: i64 = groups.iter().map(|r| r.get::<_, i64>(1)).sum();
    assert_eq!(total, 500);
    assert!(groups
        .iter()
        .all(|r| distinct.contains(&r.get::<_, String>(0))));
    // A self-join on hashed names: equality of pseudonyms.
    let pairs: i64 = a
        .query_one(
            "SELECT count(*) FROM customers x JOIN customers y ON x.name = y.name",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected: i64 = groups.iter().map(|r| r.get::<_, i64>(1).pow(2)).sum();
    assert_eq!(pairs, expected);
    // Joining a hashed column to an unmasked one is a probe.
    denied(
        &a.query(
            "SELECT count(*) FROM customers x JOIN orders o ON x.name = o.customer::text",
            &[],
        )
        .await
        .unwrap_err(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_uses_follow_on_derived() {
    let env = start("deny").await;
    let c = env.connect("agent").await;
    let msg = denied(
        &c.simple_query("SELECT lower(email) FROM customers")
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("public.customers.email"), "{msg}");
    let msg = denied(
        &c.simple_query("SELECT * FROM customer_contacts")
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("customer_contacts"), "{msg}");
    let msg = denied(
        &c.simple_query("SELECT id FROM customers WHERE ssn LIKE '1%'")
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("condition"), "{msg}");
    drop(c);

    let env = start("mask").await;
    let c = env.connect("agent").await;
    let rows = text_rows(
        &c.simple_query("SELECT id, lower(email), length(ssn) FROM customers WHERE id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(
        rows[0][0].as_deref(),
        Some("1"),
        "a traced plain column passes"
    );
    assert_eq!(rows[0][1].as_deref(), Some("[redacted]"));
    assert_eq!(
        rows[0][2].as_deref(),
        Some("0"),
        "an untraced int4 becomes 0"
    );
    let r = c
        .query_one(
            "SELECT row_to_json(c)::text, c.id FROM customers c WHERE id = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "[redacted]");
    assert_eq!(r.get::<_, i32>(1), 2);
    // A whole row: redacted (NULL, no placeholder for records).
    let rows = text_rows(
        &c.simple_query("SELECT c FROM customers c WHERE id = 2")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0], None);
    // The view over masked columns: every column redacted.
    let rows = text_rows(
        &c.simple_query("SELECT * FROM customer_contacts LIMIT 1")
            .await
            .unwrap(),
    );
    assert_eq!(
        rows[0],
        vec![
            Some("0".to_owned()),
            Some("[redacted]".to_owned()),
            Some("[redacted]".to_owned())
        ]
    );
    // Probes stay denied.
    denied(
        &c.simple_query("SELECT id FROM customers ORDER BY ssn")
            .await
            .unwrap_err(),
    );
    // Errors that would quote a value are withheld.
    let e = c
        .simple_query("SELECT card_number::int FROM customers")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::NUMERIC_VALUE_OUT_OF_RANGE);
    assert!(!db.message().contains("4111"), "{}", db.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_notices_do_not_echo_masked_values() {
    let env = start("deny").await;
    let db = direct(&env).await;
    let ssn: String = db
        .query_one("SELECT ssn FROM customers WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    let c = env.connect("agent").await;
    let e = c
        .simple_query(&format!(
            "INSERT INTO customers VALUES (9999, 'x', 'x@example.com', '{ssn}', '1')"
        ))
        .await
        .unwrap_err();
    let err = e.as_db_error().unwrap();
    assert_eq!(err.code(), &SqlState::UNIQUE_VIOLATION);
    assert!(
        err.message().contains("customers_ssn_key"),
        "{}",
        err.message()
    );
    assert!(err.detail().is_none(), "{:?}", err.detail());
    env.settle().await;
    let recorded = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::Response(r) => r.error,
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(recorded.iter().any(|m| m.contains("customers_ssn_key")));
    assert!(recorded.iter().all(|m| !m.contains(&ssn)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_record_the_masking_and_the_masked_rows() {
    let env = start("deny").await;
    let c = env.connect("agent").await;
    let sql = "SELECT id, name, email, ssn, card_number FROM customers WHERE id <= 3 ORDER BY id";
    let rows = c.simple_query(sql).await.unwrap();
    assert_eq!(text_rows(&rows).len(), 3);
    c.simple_query("SELECT * FROM orders WHERE id = 1")
        .await
        .unwrap();
    drop(c);
    env.settle().await;
    let events = env.events();
    let query = events
        .iter()
        .find_map(|e| match e {
            EventBody::Statement(q) if q.sql == sql => Some(q.query),
            _ => None,
        })
        .unwrap();
    let decision = events
        .iter()
        .find_map(|e| match e {
            EventBody::Statement(d) if d.query == query => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (decision.action, decision.rule.as_deref()),
        (Action::Mask, Some("agents-mask-customers"))
    );
    let applied: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::MaskApplied(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        applied.len(),
        1,
        "one event per masked statement, none for orders"
    );
    let got: BTreeMap<&str, (&str, u64)> = applied[0]
        .columns
        .iter()
        .map(|c| (c.column.as_str(), (c.strategy.as_str(), c.values)))
        .collect();
    assert_eq!(got["public.customers.name"], ("hash", 3));
    assert_eq!(got["public.customers.email"], ("email", 3));
    assert_eq!(got["public.customers.ssn"], ("redact", 3));
    assert_eq!(got["public.customers.card_number"], ("partial", 3));
    assert_eq!(applied[0].query, query);
    // The response records the rows as the client saw them, and the digest
    // of the rows as the database sent them.
    let response = events
        .iter()
        .find_map(|e| match e {
            EventBody::Response(r) if r.query == query => Some(r),
            _ => None,
        })
        .unwrap();
    let recorded: Vec<Vec<Option<String>>> = response
        .result
        .iter()
        .map(|r| {
            r.values
                .iter()
                .map(|v| v.as_ref().map(|b| String::from_utf8(b.0.clone()).unwrap()))
                .collect()
        })
        .collect();
    assert_eq!(recorded, text_rows(&rows));
    let db = direct(&env).await;
    let unmasked = text_rows(&db.simple_query(sql).await.unwrap());
    let digest = |rows: &[Vec<Option<String>>]| {
        let mut h = blake3::Hasher::new();
        for row in rows {
            let mut body = Vec::new();
            body.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for v in row {
                match v {
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        body.extend_from_slice(v.as_bytes());
                    }
                }
            }
            h.update(b"D");
            h.update(&(body.len() as i32 + 4).to_be_bytes());
            h.update(&body);
        }
        h.finalize().as_bytes().to_vec()
    };
    let recorded_digest = response.result_digest.as_ref().unwrap().0.clone();
    assert_eq!(
        recorded_digest,
        digest(&unmasked),
        "over the database's rows"
    );
    assert_ne!(recorded_digest, digest(&recorded));
    assert!(env.verify().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_created_later_are_found() {
    let env = start("deny").await;
    let agent = env.connect("agent").await;
    // Warm the catalog cache.
    agent
        .simple_query("SELECT ssn FROM customers WHERE id = 1")
        .await
        .unwrap();
    // DDL through the gateway invalidates it.
    let reader = env.connect("reader").await;
    reader
        .simple_query("CREATE VIEW emails AS SELECT id, email FROM customers")
        .await
        .unwrap();
    let msg = denied(
        &agent
            .simple_query("SELECT * FROM emails")
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("public.emails"), "{msg}");
    // DDL behind the gateway's back: an unknown name triggers a new lookup.
    let db = direct(&env).await;
    db.simple_query("CREATE VIEW ssns AS SELECT ssn FROM customers")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    denied(&agent.simple_query("SELECT * FROM ssns").await.unwrap_err());
    // A table recreated behind the gateway's back has a new OID: results
    // from an OID the cache does not know are redacted, never passed, and
    // the next statement looks the catalog up again.
    db.simple_query(
        "ALTER TABLE customers RENAME TO customers_old; \
         CREATE TABLE customers AS SELECT * FROM customers_old",
    )
    .await
    .unwrap();
    let email = |rows: Vec<SimpleQueryMessage>| text_rows(&rows)[0][0].clone();
    let sql = "SELECT email FROM customers WHERE id = 1";
    assert_eq!(
        email(agent.simple_query(sql).await.unwrap()).as_deref(),
        Some("[redacted]")
    );
    assert_eq!(
        email(agent.simple_query(sql).await.unwrap()).as_deref(),
        Some("***@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_catalog_denies_masked_statements() {
    let env = start_with("deny", "read_only_user = \"no_such_role\"\n").await;
    let c = env.connect("agent").await;
    let msg = denied(&c.simple_query("SELECT * FROM orders").await.unwrap_err());
    // Denied by the first catalog read that fails: what views read and call
    // (every statement that names a relation), or the masked columns.
    assert!(
        msg.contains("cannot mask this statement") || msg.contains("cannot read what the views"),
        "{msg}"
    );
    // Statements that name no relation are unaffected.
    let r = env.connect("reader").await;
    r.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_masked_results() {
    let env = start("deny").await;
    let out = Command::new(env.pg.bindir().join("psql"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", env.addr.port().to_string())
        .env("PGUSER", "agent")
        .env("PGPASSWORD", env.secret("agent"))
        .env("PGDATABASE", "shop")
        .env("PGSSLMODE", "disable")
        .env_remove("PGSERVICE")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT email, ssn, card_number FROM customers WHERE id = 9",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(fields[0], "***@example.com");
    assert_eq!(fields[1], "[redacted]");
    assert!(fields[2].starts_with("************"), "{line}");
}

/// Every seeded sensitive value, read directly from the database: emails,
/// SSNs, card numbers and the (36 distinct) names.
async fn seeded_values(env: &Env) -> Vec<String> {
    let db = direct(env).await;
    let mut values = Vec::new();
    for r in db
        .query("SELECT name, email, ssn, card_number FROM customers", &[])
        .await
        .unwrap()
    {
        for i in 0..4 {
            values.push(r.get::<_, String>(i));
        }
    }
    values.sort();
    values.dedup();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_corpus_leaks_nothing_end_to_end() {
    for on_derived in ["deny", "mask"] {
        let env = start(on_derived).await;
        let secrets = seeded_values(&env).await;
        assert_eq!(secrets.len(), 1536);
        let matcher = aho_corasick::AhoCorasick::new(&secrets).unwrap();
        let mut received = Vec::new();
        let mut cases = 0;
        for line in CORPUS.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (_, sql) = line.split_once('|').unwrap();
            let sql = sql.trim();
            cases += 1;
            // A fresh session each time, so one error cannot mask the next.
            let c = env.connect("agent").await;
            match c.simple_query(sql).await {
                Ok(messages) => {
                    for row in text_rows(&messages) {
                        received.extend(row.into_iter().flatten());
                    }
                }
                Err(e) => received.push(format!("{e:?}")),
            }
            // And in the extended protocol, with binary results.
            let c = env.connect("agent").await;
            match c.query(sql, &[]).await {
                Ok(rows) => {
                    for r in rows {
                        for i in 0..r.len() {
                            if let Ok(Some(Raw(v))) = r.try_get::<_, Option<Raw>>(i) {
                                received.push(String::from_utf8_lossy(&v).into_owned());
                            }
                        }
                    }
                }
                Err(e) => received.push(format!("{e:?}")),
            }
        }
        assert!(cases >= 100, "{cases}");
        let mut leaks: Vec<String> = Vec::new();
        for r in &received {
            for m in matcher.find_iter(r) {
                leaks.push(format!("{:?} in {r:?}", secrets[m.pattern().as_usize()]));
            }
        }
        assert!(
            leaks.is_empty(),
            "on_derived = {on_derived}: {} raw values reached the client: {:?}",
            leaks.len(),
            &leaks[..leaks.len().min(10)]
        );
        // The ledger holds no raw value either (the SQL the agent wrote is
        // evidence, not a leak).
        env.settle().await;
        for e in env.events() {
            let texts: Vec<String> = match &e {
                EventBody::Statement(_) => continue,
                EventBody::Response(r) => r
                    .result
                    .iter()
                    .flat_map(|row| row.values.iter().flatten())
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    .chain(r.error.clone())
                    .collect(),
                other => vec![format!("{other:?}")],
            };
            for text in texts {
                assert!(
                    matcher.find(&text).is_none(),
                    "the ledger holds a raw value: {text}"
                );
            }
        }
    }
}

/// psycopg (text results, and binary with `binary=True`) and asyncpg
/// (binary results, prepared statements) read masked results through the
/// gateway without errors, and no seeded value reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_read_masked_results() {
    let env = start("deny").await;
    let script = r#"
import asyncio, json, sys
import psycopg, asyncpg

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sql = "SELECT id, name, email, ssn, card_number FROM customers ORDER BY id LIMIT 50"
out = {}
with psycopg.connect(host=host, port=port, user=user, password=password, dbname="shop") as conn:
    out["psycopg_text"] = [list(r) for r in conn.execute(sql).fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(sql)
        out["psycopg_binary"] = [list(r) for r in cur.fetchall()]

async def main():
    conn = await asyncpg.connect(host=host, port=port, user=user, password=password, database="shop")
    rows = await conn.fetch(sql)
    out["asyncpg"] = [list(r.values()) for r in rows]
    stmt = await conn.prepare("SELECT name, email FROM customers WHERE id = $1")
    out["asyncpg_prepared"] = [list((await stmt.fetchrow(i)).values()) for i in (1, 2)]
    await conn.close()

asyncio.run(main())
print(json.dumps(out, default=str))
"#;
    let stdout = run_driver(
        &env,
        "python3",
        &["-c", script],
        "python3 runs (.ci/run installs psycopg and asyncpg)",
    )
    .await;
    let results: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for driver in ["psycopg_text", "psycopg_binary", "asyncpg"] {
        let rows = results[driver].as_array().unwrap();
        assert_eq!(rows.len(), 50, "{driver}");
        for row in rows {
            let name = row[1].as_str().unwrap();
            let email = row[2].as_str().unwrap();
            assert!(name.starts_with("h_"), "{driver}: name {name}");
            assert!(email.starts_with("***@"), "{driver}: email {email}");
            assert_eq!(row[3], "[redacted]", "{driver}: ssn");
            let card = row[4].as_str().unwrap();
            assert!(card.starts_with('*'), "{driver}: card {card}");
        }
        // The hash pseudonym is the same whatever the format.
        assert_eq!(rows[0][1], results["psycopg_text"][0][1], "{driver}");
    }
    assert_no_seeded_value(&env, &stdout).await;
}

/// The PostgreSQL JDBC driver (Debian's `libpostgresql-jdbc-java`, which
/// .ci/run installs) reads masked results through the gateway: plain
/// statements, statements it prepares on the server after five executions
/// (binary results), statements prepared from the first execution; a
/// refused statement reaches it as SQLSTATE 42501 and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_driver_reads_masked_results() {
    const JAR: &str = "/usr/share/java/postgresql.jar";
    let env = start("deny").await;
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/drivers/MaskedRead.java"
    );
    let stdout = run_driver(
        &env,
        "java",
        &["-cp", JAR, source],
        "java runs (.ci/run installs a JDK and the JDBC driver)",
    )
    .await;
    let mut rows: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
    for line in stdout.lines() {
        let mut fields = line.split('\t');
        let how = fields.next().unwrap();
        rows.entry(how).or_default().push(fields.collect());
    }
    assert_eq!(rows["denied"], vec![vec!["42501"]], "{stdout}");
    assert_eq!(rows["after-denial"].len(), 1, "{stdout}");
    assert_eq!(rows["prepared"].len(), 8, "{stdout}");
    for how in ["statement", "binary"] {
        let all = &rows[how];
        assert_eq!(all.len(), 50, "{how}");
        for row in all {
            assert!(row[1].starts_with("h_"), "{how}: name {}", row[1]);
            assert!(row[2].starts_with("***@"), "{how}: email {}", row[2]);
            assert_eq!(row[3], "[redacted]", "{how}: ssn");
            assert!(row[4].starts_with('*'), "{how}: card {}", row[4]);
        }
    }
    // The pseudonym is the same whichever way the row was read.
    assert_eq!(rows["binary"][0][1], rows["statement"][0][1]);
    assert_eq!(rows["prepared"][0][1], rows["statement"][0][1]);
    assert_eq!(rows["prepared"][7][1], rows["statement"][7][1]);
    assert_eq!(rows["after-denial"][0][1], rows["statement"][0][1]);
    for row in &rows["prepared"] {
        assert!(row[2].starts_with("***@"), "prepared: email {}", row[2]);
    }
    assert_no_seeded_value(&env, &stdout).await;
}

/// Runs a driver program (`program args... HOST PORT agent SECRET`) against
/// the gateway as the masked identity; returns what it printed.
async fn run_driver(env: &Env, program: &str, args: &[&str], missing: &str) -> String {
    let mut command = Command::new(program);
    command
        .args(args)
        .args(["127.0.0.1", &env.addr.port().to_string(), "agent"])
        .arg(env.secret("agent"));
    let missing = missing.to_owned();
    let out = tokio::task::spawn_blocking(move || command.output().expect(&missing))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// No raw seeded value (name, email, SSN, card) appears in `output`.
async fn assert_no_seeded_value(env: &Env, output: &str) {
    let secrets = seeded_values(env).await;
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| output.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "raw values reached a driver: {leaked:?}");
}

/// Issue 13: a mask rule can scan a free-text column with the content
/// detectors (`"public.tickets.body" = "detect"`): the text stays, the
/// emails, card numbers and SSNs in it are masked in place, in text and
/// binary results; a rule listing no detectors uses all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_columns_are_scanned_by_the_detectors() {
    let policy = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "scan-tickets"
identity = "agent"
classes = ["read", "transaction"]
action = "mask"

[rule.mask]
"public.tickets.body" = "detect"
"public.tickets.n" = "detect"
"#;
    let env = Env::start_custom(policy, "", "", |pg| {
        pg.psql(
            "shop",
            "CREATE TABLE tickets (id int PRIMARY KEY, n int, body text); \
             INSERT INTO tickets VALUES \
             (1, 7, 'Please mail jane.doe@corp.example, card 4111 1111 1111 1111, SSN 078-05-1120. Thanks!'), \
             (2, 8, 'Nothing sensitive here')",
        );
    })
    .await;
    let c = env.connect("agent").await;
    let rows = text_rows(
        &c.simple_query("SELECT n, body FROM tickets ORDER BY id")
            .await
            .unwrap(),
    );
    let first = rows[0][1].clone().unwrap();
    for secret in ["jane.doe@", "4111 1111 1111 1111", "078-05-1120"] {
        assert!(!first.contains(secret), "{secret} in {first}");
    }
    assert!(
        first.starts_with("Please mail ") && first.ends_with(". Thanks!"),
        "{first}"
    );
    assert!(
        first.contains("corp.example"),
        "the email keeps its domain: {first}"
    );
    assert_eq!(rows[1][1].as_deref(), Some("Nothing sensitive here"));
    // A detect column that is not text is redacted: 0 for an int.
    assert_eq!(rows[0][0].as_deref(), Some("0"));
    // Binary results: the same scan.
    let row = c
        .query_one("SELECT body FROM tickets WHERE id = 1", &[])
        .await
        .unwrap();
    let body: String = row.get(0);
    assert_eq!(body, first);
}
