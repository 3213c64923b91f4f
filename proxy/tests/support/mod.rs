//! A gateway in front of a throwaway PostgreSQL, for integration tests.

#![allow(dead_code)]

pub mod console_http;
pub mod fake_slack;

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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    shared: Option<std::sync::Arc<gatehouse::gateway::shared::Shared>>,
    /// The admin API's address.
    pub admin: SocketAddr,
}

impl Env {
    /// Starts PostgreSQL with the fixture schema in database `shop`, sets up
    /// a ledger with `policy` and identities `agent` and `reader`, and serves.
    pub async fn start(policy: &str) -> Env {
        Self::start_with(policy, "").await
    }

    /// Like [`Env::start`], with extra `[listen]` lines (e.g. TLS files).
    pub async fn start_with(policy: &str, listen_extra: &str) -> Env {
        Self::start_custom(policy, listen_extra, "", |_| {}).await
    }

    /// Like [`Env::start`], with extra `[listen]` and `[[target]]` lines, and
    /// `prepare` run on the cluster before the gateway starts.
    pub async fn start_custom(
        policy: &str,
        listen_extra: &str,
        target_extra: &str,
        prepare: impl FnOnce(&PgCluster) + Send + 'static,
    ) -> Env {
        Self::start_inner(policy, listen_extra, target_extra, "", "", prepare, &[]).await
    }

    /// Like [`Env::start`], with extra `[admin]` lines (e.g. TLS files).
    pub async fn start_admin(policy: &str, admin_extra: &str) -> Env {
        Self::start_inner(policy, "", "", admin_extra, "", |_| {}, &[]).await
    }

    /// Like [`Env::start`], with extra `[ledger]` lines (e.g. `record_bytes`).
    pub async fn start_ledger(policy: &str, ledger_extra: &str) -> Env {
        Self::start_inner(policy, "", "", "", ledger_extra, |_| {}, &[]).await
    }

    /// Like [`Env::start`], with `config_extra` appended to the config file
    /// (e.g. `[[webhook]]` tables) and approver operators `alice`, `bob` and
    /// `agent` (named like the identity, to test self-approval); their
    /// tokens are secrets `operator:NAME`.
    pub async fn start_approvals(policy: &str, config_extra: &str) -> Env {
        Self::start_approvals_with(policy, "", config_extra).await
    }

    /// Like [`Env::start_approvals`], with extra `[admin]` lines too.
    pub async fn start_approvals_with(policy: &str, admin_extra: &str, config_extra: &str) -> Env {
        let approver = [gatehouse_engine::operators::Role::Approver];
        Self::start_inner(
            policy,
            "",
            config_extra,
            admin_extra,
            "",
            |_| {},
            &[
                ("alice", &approver),
                ("bob", &approver),
                ("agent", &approver),
            ],
        )
        .await
    }

    async fn start_inner(
        policy: &str,
        listen_extra: &str,
        target_extra: &str,
        admin_extra: &str,
        ledger_extra: &str,
        prepare: impl FnOnce(&PgCluster) + Send + 'static,
        operators: &[(&str, &[gatehouse_engine::operators::Role])],
    ) -> Env {
        let admin_extra = admin_extra.to_owned();
        let ledger_extra = ledger_extra.to_owned();
        let operators: Vec<(String, Vec<gatehouse_engine::operators::Role>)> = operators
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_vec()))
            .collect();
        let listen_extra = listen_extra.to_owned();
        let target_extra = target_extra.to_owned();
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
            prepare(&pg);
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("gh");
            let out = init::init(&home, Some("gatehouse.test/gateway")).unwrap();
            // Test identities such as `reader` are kept read-only by their
            // policies; most tests run them on default_transaction_read_only.
            let target_extra = if target_extra.contains("accept_read_only_without_role") {
                target_extra
            } else {
                format!("accept_read_only_without_role = true\n{target_extra}")
            };
            let var = format!("GH_TEST_PW_{}", pg.port());
            std::env::set_var(&var, pg.password());
            let mut text = std::fs::read_to_string(&out.config)
                .unwrap()
                .replace("[ledger]\n", &format!("[ledger]\n{ledger_extra}\n"));
            text.push_str(&format!(
                "\n[admin]\naddress = \"127.0.0.1:0\"\n{admin_extra}\n\n[listen]\naddress = \"127.0.0.1:0\"\nmax_frame_bytes = 1048576\n{listen_extra}\n\n[[target]]\nname = \"shop\"\nurl = \"postgres://{}@127.0.0.1:{}/shop\"\npassword_env = \"{var}\"\n{target_extra}\n",
                pg.superuser(),
                pg.port()
            ));
            std::fs::write(&out.config, text).unwrap();
            let config = Config::load(&out.config).unwrap();
            let policy_file = dir.path().join("policy.toml");
            std::fs::write(&policy_file, &policy).unwrap();
            commands::policy_apply(&config, &policy_file, "tester".into(), true).unwrap();
            let mut secrets = Vec::new();
            let viewer = commands::operator_add_offline(
                &config,
                "viewer",
                &[gatehouse_engine::operators::Role::Auditor],
                "tester".into(),
            )
            .unwrap();
            secrets.push(("operator:viewer".to_owned(), viewer));
            for (name, roles) in &operators {
                let token = commands::operator_add_offline(&config, name, roles, "tester".into()).unwrap();
                secrets.push((format!("operator:{name}"), token));
            }
            for who in ["agent", "reader"] {
                commands::identity_create_offline(&config, who, None, "tester".into()).unwrap();
                let issued = commands::credential_issue_offline(&config, who, Duration::from_secs(3600), "tester".into()).unwrap();
                secrets.push((who.to_owned(), issued.secret));
            }
            (pg, dir, out.config, config, secrets)
        })
        .await
        .unwrap();
        let gateway = Gateway::bind(&config).await.unwrap();
        let addr = gateway.local_addr().unwrap();
        let shared = gateway.shared();
        let admin = gateway.admin_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Env {
            pg,
            dir,
            addr,
            config: out_config,
            secrets,
            task,
            stop: Some(stop),
            shared: Some(shared),
            admin,
        }
    }

    /// The running gateway, for operator actions.
    pub fn shared(&self) -> &gatehouse::gateway::shared::Shared {
        self.shared.as_ref().expect("the gateway is running")
    }

    /// Stops the gateway as SIGTERM would, and waits until it has.
    pub async fn stop(&mut self) {
        // Our handle would keep the ledger writer alive.
        self.shared = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
    }

    /// After [`Env::stop`]: runs the gateway as its own process (`gatehouse
    /// serve`) on a free port, to kill it like a real one; returns it and
    /// the port, once it accepts logins.
    pub async fn serve_as_process(&self) -> (std::process::Child, u16) {
        self.spawn_serve(std::process::Stdio::null()).await
    }

    /// Like [`Env::serve_as_process`], with its standard error (the log)
    /// piped, for `wait_with_output`.
    pub async fn serve_as_process_logging(&self) -> (std::process::Child, u16) {
        self.spawn_serve(std::process::Stdio::piped()).await
    }

    async fn spawn_serve(&self, stderr: std::process::Stdio) -> (std::process::Child, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let key = "[listen]\naddress = \"";
        let at = text.find(key).expect("the listen address") + key.len();
        let end = at + text[at..].find('"').expect("the address's end");
        let text = format!("{}127.0.0.1:{port}{}", &text[..at], &text[end..]);
        std::fs::write(&self.config, text).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return (child, port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway process does not listen on {port}");
    }

    /// A client of the gateway process [`Env::serve_as_process`] started.
    pub async fn connect_to_port(&self, port: u16, who: &str) -> tokio_postgres::Client {
        let conn_str = format!(
            "host=127.0.0.1 port={port} user={who} password={} dbname=shop",
            self.secret(who)
        );
        let (c, connection) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        c
    }

    /// Drops the gateway without a shutdown, as a crash would: sessions end
    /// unrecorded (the ledger's writer still commits what it was given).
    pub async fn crash(&mut self) {
        self.shared = None;
        self.stop = None;
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Starts the gateway again on the same configuration and ledger, after
    /// [`Env::stop`] (reading the configuration file anew).
    pub async fn restart(&mut self) {
        let config = Config::load(&self.config).unwrap();
        // After a crash, the aborted sessions may hold the ledger's writer
        // for a moment.
        let mut tries = 0;
        let gateway = loop {
            match Gateway::bind(&config).await {
                Ok(g) => break g,
                Err(e) if tries < 50 && e.to_string().contains("open for writing") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the gateway does not start again: {e:#}"),
            }
        };
        self.addr = gateway.local_addr().unwrap();
        self.admin = gateway.admin_addr().unwrap();
        self.shared = Some(gateway.shared());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = tokio::spawn(async move {
            gateway
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
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

    /// The admin API's `GET /ready` document (any status).
    pub fn ready(&self) -> serde_json::Value {
        let url = format!("http://{}/ready", self.admin);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        tokio::task::block_in_place(|| {
            agent
                .get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap()
        })
    }

    /// Connects through the gateway, trying again for up to 2.5 s: a place
    /// freed by a closed connection is given back asynchronously.
    pub async fn connect_when_admitted(&self, who: &str) -> tokio_postgres::Client {
        for _ in 0..50 {
            if let Ok((c, conn)) =
                tokio_postgres::connect(&self.conn_str(who), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{who} could not log in within 2.5 s");
    }

    /// Asserts that every statement the database ran for the gateway's
    /// client sessions (its own log) is one the ledger shows judged and let
    /// through; returns how many it ran.
    pub fn assert_database_ran_only_allowed(&self) -> usize {
        let allowed = allowed_sql(&self.events());
        let ran = statements_run_for_sessions(&self.pg.log());
        let unrecorded: Vec<&String> = ran.iter().filter(|sql| !allowed.contains(*sql)).collect();
        assert!(
            unrecorded.is_empty(),
            "the database ran statements the ledger does not show allowed: {unrecorded:?}"
        );
        ran.len()
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

    /// The first operator's token (every role).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gh").join("operator.token"))
            .unwrap()
            .trim()
            .to_owned()
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

/// `[[target]]` lines giving read-only identities the upstream role
/// [`READ_ONLY_ROLE_SQL`] creates (password in `GH_TEST_RO_PASSWORD`).
pub const READ_ONLY_TARGET: &str =
    "read_only_user = \"gatehouse_ro\"\nread_only_password_env = \"GH_TEST_RO_PASSWORD\"";

/// Creates the read-only upstream role of [`READ_ONLY_TARGET`]; sets its
/// password variable for the gateway.
pub const READ_ONLY_ROLE_SQL: &str = "CREATE ROLE gatehouse_ro LOGIN PASSWORD 'ro-secret'; \
     GRANT SELECT ON ALL TABLES IN SCHEMA public TO gatehouse_ro";

/// Sets the read-only role's password variable (see [`READ_ONLY_TARGET`]).
pub fn read_only_password() {
    std::env::set_var("GH_TEST_RO_PASSWORD", "ro-secret");
}

/// Clients that insert notes `fault-CLIENT-N` into `audit_probe` until an
/// insert fails, half by simple Query and half by extended protocol; every
/// note whose insert was acknowledged is pushed to the returned list.
pub fn write_load(
    clients: Vec<tokio_postgres::Client>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(client, c)| {
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
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
            })
        })
        .collect();
    (tasks, acknowledged)
}

/// Clients that read notes `fault-read-CLIENT-N` back from the database
/// (`SELECT 'note'` by simple Query, `SELECT $1::text` by extended
/// protocol: pure reads, which go to the database while their record
/// commits) until a read fails; every note a client received in a result
/// row is pushed to the returned list.
pub fn read_load(
    clients: Vec<tokio_postgres::Client>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(client, c)| {
            let seen = seen.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let note = format!("fault-read-{client}-{n}");
                    let got = if client % 2 == 0 {
                        c.simple_query(&format!("SELECT '{note}'")).await.map(|m| {
                            m.iter().find_map(|m| match m {
                                tokio_postgres::SimpleQueryMessage::Row(r) => {
                                    r.get(0).map(str::to_owned)
                                }
                                _ => None,
                            })
                        })
                    } else {
                        c.query_opt("SELECT $1::text", &[&note])
                            .await
                            .map(|r| r.map(|r| r.get::<_, String>(0)))
                    };
                    match got {
                        Ok(Some(value)) => seen.lock().unwrap().push(value),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    (tasks, seen)
}

/// A hand-driven protocol client, for messages no driver sends.
pub struct RawClient {
    pub stream: tokio::net::TcpStream,
}

impl RawClient {
    /// Logs in as `who` with SCRAM-SHA-256 and waits for ReadyForQuery.
    pub async fn login(env: &Env, who: &str) -> RawClient {
        Self::try_login(env, who, &[])
            .await
            .unwrap_or_else(|e| panic!("login refused: {e}"))
    }

    /// Like [`RawClient::login`], to a gateway process on `port` (see
    /// [`Env::serve_as_process`]).
    pub async fn login_port(env: &Env, port: u16, who: &str) -> RawClient {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::try_login_at(env, addr, who, &[])
            .await
            .unwrap_or_else(|e| panic!("login refused: {e}"))
    }

    /// Logs in with extra startup parameters; `Err` holds the gateway's
    /// error message if it refuses.
    pub async fn try_login(
        env: &Env,
        who: &str,
        parameters: &[(&str, &str)],
    ) -> Result<RawClient, String> {
        Self::try_login_at(env, env.addr, who, parameters).await
    }

    async fn try_login_at(
        env: &Env,
        addr: SocketAddr,
        who: &str,
        parameters: &[(&str, &str)],
    ) -> Result<RawClient, String> {
        use bytes::BufMut;
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut body = bytes::BytesMut::new();
        body.put_i32(196608);
        for (k, v) in [("user", who), ("database", "shop")]
            .into_iter()
            .chain(parameters.iter().copied())
        {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut startup = bytes::BytesMut::new();
        startup.put_i32(body.len() as i32 + 4);
        startup.put_slice(&body);
        stream.write_all(&startup).await.unwrap();
        let mut scram = ScramSha256::new(env.secret(who).as_bytes(), ChannelBinding::unsupported());
        loop {
            let (tag, body) = read_message(&mut stream).await;
            match (
                tag,
                i32::from_be_bytes(body[..4.min(body.len())].try_into().unwrap_or([0; 4])),
            ) {
                (b'R', 10) => {
                    let mut m = bytes::BytesMut::new();
                    m.put_slice(b"SCRAM-SHA-256\0");
                    m.put_i32(scram.message().len() as i32);
                    m.put_slice(scram.message());
                    send(&mut stream, b'p', &m).await;
                }
                (b'R', 11) => {
                    scram.update(&body[4..]).unwrap();
                    send(&mut stream, b'p', scram.message()).await;
                }
                (b'Z', _) => return Ok(RawClient { stream }),
                (b'E', _) => return Err(String::from_utf8_lossy(&body).into_owned()),
                _ => {}
            }
        }
    }

    /// Sends a Parse of `sql` as statement `name`, with no parameter types.
    pub async fn parse(&mut self, name: &str, sql: &str) {
        let mut body = Vec::new();
        for s in [name, sql] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        self.send(b'P', &body).await;
    }

    /// Sends one message.
    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        send(&mut self.stream, tag, body).await;
    }

    /// The next message, or `None` if none came within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(limit, try_read_message(&mut self.stream))
            .await
            .ok()
            .flatten()
    }

    /// Like [`RawClient::until_ready`], but `None` if no ReadyForQuery or
    /// close came within `limit`.
    pub async fn until_ready_within(&mut self, limit: Duration) -> Option<Vec<(u8, Vec<u8>)>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, try_read_message(&mut self.stream)).await {
                Err(_) => return None,
                Ok(None) => return Some(out),
                Ok(Some(m)) => {
                    let done = m.0 == b'Z';
                    out.push(m);
                    if done {
                        return Some(out);
                    }
                }
            }
        }
    }

    /// Reads messages up to and including ReadyForQuery, or until the
    /// connection closes; returns (tag, body) pairs.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let m =
                tokio::time::timeout(Duration::from_secs(10), try_read_message(&mut self.stream))
                    .await
                    .expect("an answer within 10 s");
            match m {
                Some(m) => {
                    let done = m.0 == b'Z';
                    out.push(m);
                    if done {
                        return out;
                    }
                }
                None => return out,
            }
        }
    }
}

/// The statements PostgreSQL ran for the gateway's client sessions, from its
/// log (`log_statement = all`): simple Query strings and executed extended
/// statements of connections whose application_name is `gatehouse` (the
/// gateway's catalog reads are `gatehouse catalog`). The gateway's own
/// `SET` of client start-up parameters (DateStyle and the like) is left out.
pub fn statements_run_for_sessions(log: &str) -> Vec<String> {
    let pid = |line: &str| -> Option<String> {
        let start = line.find(" [")? + 2;
        let end = start + line[start..].find(']')?;
        Some(line[start..end].to_owned())
    };
    let mut sessions = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    // A statement's later lines follow its first, each starting with a tab.
    let mut continuing = false;
    for line in log.lines() {
        if let Some(more) = line.strip_prefix('\t') {
            if continuing {
                let last = out.last_mut().expect("continuing a statement");
                last.push('\n');
                last.push_str(more);
            }
            continue;
        }
        continuing = false;
        let Some(p) = pid(line) else { continue };
        if let Some((_, rest)) = line.split_once("connection authorized: ") {
            let name = rest.split_once("application_name=").map(|(_, v)| v.trim());
            if name == Some("gatehouse") {
                sessions.insert(p);
            } else {
                sessions.remove(&p);
            }
            continue;
        }
        if !sessions.contains(&p) {
            continue;
        }
        let sql = if let Some((_, sql)) = line.split_once("LOG:  statement: ") {
            sql
        } else if let Some((_, rest)) = line.split_once("LOG:  execute ") {
            match rest.split_once(": ") {
                Some((_, sql)) => sql,
                None => continue,
            }
        } else {
            continue;
        };
        out.push(sql.to_owned());
        continuing = true;
    }
    out.retain(|sql| {
        !sql.split_terminator(';').all(|s| {
            let s = s.trim();
            [
                "DateStyle",
                "TimeZone",
                "extra_float_digits",
                "IntervalStyle",
            ]
            .iter()
            .any(|p| s.starts_with(&format!("SET {p} TO '")))
        })
    });
    out
}

/// The SQL of every statement the ledger shows judged and let through
/// (allowed, masked, or approved).
pub fn allowed_sql(events: &[EventBody]) -> std::collections::HashSet<String> {
    use gatehouse_ledger::event::Action;
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::Statement(s)
                if matches!(
                    s.action,
                    Action::Allow | Action::Mask | Action::RequireApproval
                ) =>
            {
                Some(s.sql.clone())
            }
            _ => None,
        })
        .collect()
}

/// The text of the first ErrorResponse among messages read by
/// [`RawClient::until_ready`], if there is one.
pub fn error_text(answer: &[(u8, Vec<u8>)]) -> Option<String> {
    answer
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
}

async fn send(stream: &mut tokio::net::TcpStream, tag: u8, body: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    stream.write_all(&m).await.unwrap();
}

async fn try_read_message(stream: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

async fn read_message(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    try_read_message(stream).await.expect("the gateway answers")
}

/// Runs `sql` in the background (a statement that may be held).
pub fn spawn_query(
    client: &std::sync::Arc<tokio_postgres::Client>,
    sql: &str,
) -> tokio::task::JoinHandle<Result<u64, tokio_postgres::Error>> {
    let client = client.clone();
    let sql = sql.to_owned();
    tokio::spawn(async move { client.execute(sql.as_str(), &[]).await })
}
