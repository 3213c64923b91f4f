//! A gateway in front of a throwaway PostgreSQL, for integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse::config::Config;
use gatehouse::gateway::Gateway;
use gatehouse::{commands, init};
use gatehouse_ledger::{EventBody, LedgerReader};
use gatehouse_pgtest::PgCluster;

/// The fixture schema every gateway test runs against.
pub const SCHEMA: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2), day date DEFAULT current_date);
CREATE TABLE audit_probe (id serial PRIMARY KEY, note text);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com', lpad(g::text, 9, '0') FROM generate_series(1, 50) g;
INSERT INTO orders SELECT g, 1 + g % 50, g * 1.5 FROM generate_series(1, 200) g;
";

/// The policy most tests use.
pub const POLICY: &str = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "agent-writes-orders"
identity = "agent"
classes = ["write"]
tables = ["public.orders", "public.audit_probe"]
action = "allow"

[[rule]]
name = "no-ssn"
identity = "*"
columns = ["public.customers.ssn"]
action = "deny"
message = "SSNs are off limits to agents"

[[rule]]
name = "sleepy"
identity = "agent"
classes = ["function"]
functions = ["pg_sleep"]
action = "allow"

[[rule]]
name = "reader-reads"
identity = "reader"
classes = ["read", "transaction"]
action = "allow"
"#;

/// A running gateway with its upstream cluster and ledger.
pub struct Env {
    pub pg: PgCluster,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub secrets: Vec<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Env {
    /// Starts PostgreSQL with the fixture schema in database `shop`, sets up
    /// a ledger with `policy` and identities `agent` and `reader`, and serves.
    pub async fn start(policy: &str) -> Env {
        Self::start_with(policy, "").await
    }

    /// Like [`Env::start`], with extra `[listen]` lines (e.g. TLS files).
    pub async fn start_with(policy: &str, listen_extra: &str) -> Env {
        let listen_extra = listen_extra.to_owned();
        let pg = tokio::task::spawn_blocking(|| {
            let pg = PgCluster::start();
            pg.create_database("shop");
            pg.psql("shop", SCHEMA);
            pg
        })
        .await
        .unwrap();
        let policy = policy.to_owned();
        let (pg, dir, out_config, config, secrets) = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("gh");
            let out = init::init(&home, Some("gatehouse.test/gateway")).unwrap();
            let var = format!("GH_TEST_PW_{}", pg.port());
            std::env::set_var(&var, pg.password());
            let mut text = std::fs::read_to_string(&out.config).unwrap();
            text.push_str(&format!(
                "\n[listen]\naddress = \"127.0.0.1:0\"\nmax_frame_bytes = 1048576\n{listen_extra}\n\n[[target]]\nname = \"shop\"\nurl = \"postgres://{}@127.0.0.1:{}/shop\"\npassword_env = \"{var}\"\n",
                pg.superuser(),
                pg.port()
            ));
            std::fs::write(&out.config, text).unwrap();
            let config = Config::load(&out.config).unwrap();
            let policy_file = dir.path().join("policy.toml");
            std::fs::write(&policy_file, &policy).unwrap();
            commands::policy_apply(&config, &policy_file, "tester".into()).unwrap();
            let mut secrets = Vec::new();
            for who in ["agent", "reader"] {
                commands::identity_create(&config, who, None, "tester".into()).unwrap();
                let issued = commands::credential_issue(&config, who, Duration::from_secs(3600), "tester".into()).unwrap();
                secrets.push((who.to_owned(), issued.secret));
            }
            (pg, dir, out.config, config, secrets)
        })
        .await
        .unwrap();
        let gateway = Gateway::bind(&config).await.unwrap();
        let addr = gateway.local_addr().unwrap();
        let task = tokio::spawn(async move {
            gateway.run().await.unwrap();
        });
        Env {
            pg,
            dir,
            addr,
            config: out_config,
            secrets,
            task,
        }
    }

    /// The secret of an identity.
    pub fn secret(&self, who: &str) -> &str {
        &self.secrets.iter().find(|(w, _)| w == who).unwrap().1
    }

    /// A libpq-style connection string through the gateway.
    pub fn conn_str(&self, who: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={who} password={} dbname=shop application_name=gh-test",
            self.addr.port(),
            self.secret(who)
        )
    }

    /// Connects through the gateway with tokio-postgres.
    pub async fn connect(&self, who: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_str(who), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect as {who} through the gateway: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// The ledger file.
    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("gh").join("ledger.db")
    }

    /// Every event in the ledger so far.
    pub fn events(&self) -> Vec<EventBody> {
        let reader = LedgerReader::open(self.ledger()).unwrap();
        reader
            .events(0..u64::MAX)
            .map(|e| e.unwrap().event.body)
            .collect()
    }

    /// Waits until deferred response events have been flushed.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// Runs gatehouse-verify's library on the ledger.
    pub fn verify(&self) -> gatehouse_verify::Report {
        let key = std::fs::read_to_string(self.dir.path().join("gh").join("verifier.pub")).unwrap();
        let key = gatehouse_verify::VerifierKey::parse(key.trim()).unwrap();
        gatehouse_verify::verify_ledger(&self.ledger(), &key, None).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}
