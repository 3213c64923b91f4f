//! Several gateways, one control log (issue 19, embedded store): two
//! gateways in front of one real PostgreSQL, each with its own ledger,
//! sharing a control log file. A block, a policy change, a new credential
//! or a revocation made through one takes effect on the other within its
//! poll interval; a command decided against a stale state cannot land;
//! each gateway records what control state it applied.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::config::Config;
use gatehouse::gateway::shared::Shared;
use gatehouse::gateway::Gateway;
use gatehouse::{commands, init};
use gatehouse_ledger::event::EventBody;
use gatehouse_ledger::LedgerReader;
use gatehouse_pgtest::PgCluster;
use tokio_postgres::error::SqlState;

/// One gateway of the cluster.
struct Member {
    addr: SocketAddr,
    /// Let go at stop, so the gateway's ledger is free like a stopped
    /// process's.
    shared: Option<Arc<Shared>>,
    ledger: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

struct TwoGateways {
    _pg: PgCluster,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    configs: Vec<Config>,
    secret: String,
}

impl TwoGateways {
    async fn start() -> TwoGateways {
        Self::start_with(support::POLICY, "").await
    }

    /// With `policy` and extra `[cluster]` lines.
    async fn start_with(policy: &str, cluster_extra: &str) -> TwoGateways {
        let cluster_extra = cluster_extra.to_owned();
        let policy_text = policy.to_owned();
        let pg = tokio::task::spawn_blocking(|| {
            let pg = PgCluster::start();
            pg.create_database("shop");
            pg.psql("shop", support::SCHEMA);
            pg
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let var = format!("GH_TEST_PW_{}", pg.port());
        std::env::set_var(&var, pg.password());
        let (pg_port, superuser) = (pg.port(), pg.superuser().to_owned());
        let root = dir.path().to_owned();
        let configs = tokio::task::spawn_blocking(move || {
            let mut configs = Vec::new();
            for i in 0..2 {
                let home = root.join(format!("gw{i}"));
                let out = init::init(&home, Some(&format!("gatehouse.test/gw{i}"))).unwrap();
                let mut text = std::fs::read_to_string(&out.config).unwrap();
                text.push_str(&format!(
                    "\n[admin]\naddress = \"127.0.0.1:0\"\n\n[listen]\naddress = \"127.0.0.1:0\"\n\n\
                     [[target]]\nname = \"shop\"\nurl = \"postgres://{superuser}@127.0.0.1:{pg_port}/shop\"\npassword_env = \"{var}\"\n\
                     accept_read_only_without_role = true\n\n\
                     [cluster]\ngateway = \"gw{i}\"\ncontrol = \"{}\"\ncontrol_key = \"{}\"\npoll_ms = 50\n{cluster_extra}\n",
                    root.join("control.ledger").display(),
                    root.join("control.key").display(),
                ));
                std::fs::write(&out.config, text).unwrap();
                configs.push(Config::load(&out.config).unwrap());
            }
            configs
        })
        .await
        .unwrap();
        let secret = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || {
                let config = Config::load(&dir.join("gw0/gatehouse.toml")).unwrap();
                commands::cluster_init(&config, "gatehouse.test/control").unwrap();
                // Offline commands through gateway 0's config land in the
                // control log both gateways read.
                let policy = dir.join("policy.toml");
                std::fs::write(&policy, policy_text).unwrap();
                commands::policy_apply(&config, &policy, "tester".into(), true).unwrap();
                commands::identity_create_offline(&config, "agent", None, "tester".into()).unwrap();
                commands::credential_issue_offline(
                    &config,
                    "agent",
                    Duration::from_secs(3600),
                    "tester".into(),
                )
                .unwrap()
                .secret
            }
        })
        .await
        .unwrap();
        let mut members = Vec::new();
        for config in &configs {
            let gateway = Gateway::bind(config).await.unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let addr = gateway.local_addr().unwrap();
            let shared = gateway.shared();
            let task = tokio::spawn(async move {
                gateway
                    .run_until(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            members.push(Member {
                addr,
                shared: Some(shared),
                ledger: config.ledger.path.clone(),
                stop: Some(stop),
                task,
            });
        }
        TwoGateways {
            _pg: pg,
            dir,
            members,
            configs,
            secret,
        }
    }

    fn conn_str(&self, gw: usize, secret: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=agent password={secret} dbname=shop application_name=gh-test",
            self.members[gw].addr.port()
        )
    }

    async fn connect(
        &self,
        gw: usize,
        secret: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_str(gw, secret), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn shared(&self, gw: usize) -> &Shared {
        self.members[gw]
            .shared
            .as_ref()
            .expect("the gateway is running")
    }

    async fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(stop) = m.stop.take() {
                let _ = stop.send(());
            }
        }
        for m in &mut self.members {
            (&mut m.task).await.unwrap();
            m.shared = None;
        }
    }

    fn events(&self, gw: usize) -> Vec<EventBody> {
        let reader = LedgerReader::open(&self.members[gw].ledger).unwrap();
        let n = reader.len().unwrap();
        reader.events(0..n).map(|e| e.unwrap().event.body).collect()
    }

    /// The control log's verifier key.
    fn control_key(&self) -> gatehouse_verify::VerifierKey {
        let signer = gatehouse_ledger::keyfile::load_signing_key(
            &self.configs[0].cluster.as_ref().unwrap().control_key,
        )
        .unwrap();
        gatehouse_verify::VerifierKey::parse(&signer.verifier().to_string()).unwrap()
    }

    /// `(gateway name, ledger)` of every member, for `verify_cluster`.
    fn member_ledgers(&self) -> Vec<(String, PathBuf)> {
        (0..self.members.len())
            .map(|gw| (format!("gw{gw}"), self.members[gw].ledger.clone()))
            .collect()
    }

    fn control_events(&self) -> Vec<EventBody> {
        let path = self.dir.path().join("control.ledger");
        let reader = LedgerReader::open(&path).unwrap();
        let n = reader.len().unwrap();
        reader.events(0..n).map(|e| e.unwrap().event.body).collect()
    }
}

/// Waits up to `limit` for `check` to hold.
async fn within(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_through_one_gateway_ends_the_identitys_sessions_on_the_other() {
    let mut cluster = TwoGateways::start().await;
    let secret = cluster.secret.clone();
    // Both gateways start from the control log: the policy, the identity
    // and its credential were recorded there, not in their ledgers.
    let on_gw1 = cluster.connect(1, &secret).await.unwrap();
    on_gw1.simple_query("SELECT 1").await.unwrap();
    let sleeping = {
        let c = cluster.connect(1, &secret).await.unwrap();
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster
        .shared(0)
        .block("agent", "alice", "rogue agent", None)
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("the sleeping session on gateway 1 ended")
        .unwrap()
        .unwrap_err();
    match error.as_db_error() {
        Some(db) => {
            assert_eq!(db.code(), &SqlState::ADMIN_SHUTDOWN, "{db:?}");
            assert!(db.message().contains("rogue agent"), "{db:?}");
        }
        None => assert!(error.is_closed(), "{error}"),
    }
    let Err(refused) = cluster.connect(1, &secret).await else {
        panic!("gateway 1 admitted the blocked identity");
    };
    assert!(
        refused.to_string().contains("blocked") || format!("{refused:?}").contains("blocked"),
        "{refused:?}"
    );
    assert!(cluster.shared(1).blocked("agent").is_some());
    // Lifted through gateway 1: gateway 0 admits the identity again.
    assert!(cluster
        .shared(1)
        .unblock("agent", "bob", None)
        .await
        .unwrap());
    within(
        Duration::from_secs(5),
        "the unblock reaching gateway 0",
        async || cluster.shared(0).blocked("agent").is_none(),
    )
    .await;
    cluster.connect(0, &secret).await.unwrap();
    // A second unblock, decided against the control log, records nothing.
    assert!(!cluster
        .shared(0)
        .unblock("agent", "bob", None)
        .await
        .unwrap());
    cluster.stop().await;
    let control = cluster.control_events();
    assert_eq!(
        control
            .iter()
            .filter(|e| matches!(e, EventBody::IdentityBlocked(_)))
            .count(),
        1
    );
    assert_eq!(
        control
            .iter()
            .filter(|e| matches!(e, EventBody::IdentityUnblocked(_)))
            .count(),
        1
    );
    // Each gateway's ledger says what control state it applied; neither
    // holds the control events themselves.
    for gw in 0..2 {
        let events = cluster.events(gw);
        let applied: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                EventBody::ControlApplied(a) => Some(a.through),
                _ => None,
            })
            .collect();
        assert!(
            applied.windows(2).all(|w| w[0] < w[1]),
            "gw{gw}: {applied:?}"
        );
        // Applied through the end, but for the final anchors written as
        // the gateways stopped.
        let through = *applied.last().unwrap() as usize;
        assert!(
            control[through..]
                .iter()
                .all(|e| matches!(e, EventBody::GatewayAnchored(_))),
            "gw{gw}: {applied:?} of {}",
            control.len()
        );
        assert!(!events.iter().any(|e| matches!(
            e,
            EventBody::IdentityBlocked(_) | EventBody::PolicyChanged(_)
        )));
        assert!(events.iter().any(|e| matches!(e,
            EventBody::ControlApplied(a) if a.gateway == format!("gw{gw}") && a.checkpoint.as_deref().is_some_and(|n| n.starts_with("gatehouse.test/control\n")))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_policy_changed_on_one_gateway_hold_on_the_other_and_a_race_is_decided_once(
) {
    let mut cluster = TwoGateways::start().await;
    // A credential issued through gateway 0 logs in through gateway 1.
    let issued = cluster
        .shared(0)
        .execute(|ids| {
            commands::credential_issue(ids, "agent", Duration::from_secs(600), "alice".into())
        })
        .await
        .unwrap();
    let fresh = within(
        Duration::from_secs(5),
        "the credential reaching gateway 1",
        async || cluster.connect(1, &issued.secret).await.is_ok(),
    )
    .await;
    eprintln!("a new credential reached gateway 1 after {fresh:?}");
    let on_gw1 = cluster.connect(1, &issued.secret).await.unwrap();
    // A policy applied through gateway 1 judges gateway 0's statements.
    let (policy_event, _) = commands::policy_change(
        format!("{}\n[[rule]]\nname = \"no-orders\"\nidentity = \"agent\"\ntables = [\"public.orders\"]\naction = \"deny\"\nmessage = \"orders are closed\"\n", support::POLICY),
        "bob".into(),
    )
    .unwrap();
    cluster
        .shared(1)
        .execute(|_| Ok((policy_event, ())))
        .await
        .unwrap();
    let on_gw0 = cluster.connect(0, &cluster.secret.clone()).await.unwrap();
    within(
        Duration::from_secs(5),
        "the policy reaching gateway 0",
        async || {
            on_gw0
                .simple_query("SELECT count(*) FROM orders")
                .await
                .is_err_and(|e| format!("{e:?}").contains("orders are closed"))
        },
    )
    .await;
    // Both gateways revoke the same credential at once: one records it,
    // the other finds it already revoked; the session using it ends.
    let (a, b) = tokio::join!(
        cluster.shared(0).revoke(&issued.id, "alice", "leaked"),
        cluster.shared(1).revoke(&issued.id, "bob", "leaked too"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one gateway records the revocation: {a} {b}");
    within(
        Duration::from_secs(5),
        "the session of the revoked credential ending",
        async || on_gw1.simple_query("SELECT 1").await.is_err(),
    )
    .await;
    cluster.stop().await;
    let revoked = cluster
        .control_events()
        .into_iter()
        .filter(|e| matches!(e, EventBody::CredentialRevoked(r) if r.credential == issued.id))
        .count();
    assert_eq!(
        revoked, 1,
        "decided once, against the control log under its lock"
    );
    // Every log verifies: the control log with its own key.
    let key = std::fs::read_to_string(cluster.dir.path().join("gw0/verifier.pub")).unwrap();
    let key = gatehouse_verify::VerifierKey::parse(key.trim()).unwrap();
    assert!(
        gatehouse_verify::verify_ledger(&cluster.members[0].ledger, &key, None)
            .unwrap()
            .is_intact()
    );
    let control_key = cluster.control_key();
    assert!(gatehouse_verify::verify_ledger(
        &cluster.dir.path().join("control.ledger"),
        &control_key,
        None
    )
    .unwrap()
    .is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_read_the_control_log_stops_vouching_and_resumes_when_it_can() {
    let mut cluster = TwoGateways::start_with(support::POLICY, "max_staleness = \"1s\"").await;
    let secret = cluster.secret.clone();
    let session = cluster.connect(1, &secret).await.unwrap();
    session.simple_query("SELECT 1").await.unwrap();
    // The control log disappears from under the gateways.
    let control = cluster.dir.path().join("control.ledger");
    let away = cluster.dir.path().join("control.ledger.away");
    std::fs::rename(&control, &away).unwrap();
    let ended = within(Duration::from_secs(5), "the session ending", async || {
        session.simple_query("SELECT 1").await.is_err()
    })
    .await;
    assert!(
        ended >= Duration::from_millis(900),
        "not before max_staleness: {ended:?}"
    );
    let Err(refused) = cluster.connect(1, &secret).await else {
        panic!("a gateway that cannot read the control log admitted a login");
    };
    assert!(
        format!("{refused:?}").contains("control log"),
        "{refused:?}"
    );
    // Back: logins are admitted again.
    std::fs::rename(&away, &control).unwrap();
    within(Duration::from_secs(5), "logins resuming", async || {
        cluster.connect(1, &secret).await.is_ok()
    })
    .await;
    cluster.stop().await;
    let outcomes: Vec<String> = cluster
        .events(1)
        .into_iter()
        .filter_map(|e| match e {
            EventBody::OperatorAction(a) if a.action == "cluster.control" => Some(a.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, ["failed", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_held_on_one_gateway_is_decided_once_from_either_and_a_grant_holds_on_both() {
    let mut cluster = TwoGateways::start_with(support::console_http::POLICY, "").await;
    let secret = cluster.secret.clone();
    let client = Arc::new(cluster.connect(1, &secret).await.unwrap());
    let mut approved = 0;
    for round in 1..=8u64 {
        let held = support::spawn_query(&client, &format!("DELETE FROM orders WHERE id = {round}"));
        // The request, held on gateway 1, reaches gateway 0's desk.
        within(
            Duration::from_secs(5),
            "the request reaching gateway 0",
            async || cluster.shared(0).approvals.get(round).is_some(),
        )
        .await;
        let (a, d) = tokio::join!(
            cluster.shared(0).approve_request(round, "alice", None),
            cluster.shared(1).deny_request(round, Some("bob"), "raced"),
        );
        assert!(
            a.is_ok() ^ d.is_ok(),
            "round {round}: exactly one decision: {a:?} {d:?}"
        );
        let ran = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ran.is_ok(),
            a.is_ok(),
            "round {round}: the statement runs only if granted: {ran:?}"
        );
        approved += a.is_ok() as u64;
    }
    eprintln!("{approved} of 8 races went to the approval");
    // A grant for a duration, given through gateway 0 for a statement
    // held on gateway 1, lets the same fingerprint run unheld on both.
    let held = support::spawn_query(&client, "DELETE FROM orders WHERE id = 100");
    within(
        Duration::from_secs(5),
        "request 9 reaching gateway 0",
        async || cluster.shared(0).approvals.get(9).is_some(),
    )
    .await;
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 600_000_000_000;
    cluster
        .shared(0)
        .approve_request(9, "alice", Some(until))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let on_gw0 = cluster.connect(0, &secret).await.unwrap();
    within(
        Duration::from_secs(5),
        "the grant reaching gateway 0",
        async || {
            cluster
                .shared(0)
                .approvals
                .active_grant("agent", "delete from orders where id=?", until - 1)
                .is_some()
        },
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(5),
        on_gw0.execute("DELETE FROM orders WHERE id = 101", &[]),
    )
    .await
    .expect("granted: not held")
    .unwrap();
    cluster.stop().await;
    // Each request has exactly one decision in the control log, and the
    // holder of each is gateway 1.
    let control = cluster.control_events();
    for id in 1..=9u64 {
        let decisions = control
            .iter()
            .filter(|e| match e {
                EventBody::ApprovalGranted(g) => g.approval == id,
                EventBody::ApprovalDenied(d) => d.approval == id,
                _ => false,
            })
            .count();
        assert_eq!(decisions, 1, "request {id}");
        assert!(control.iter().any(
            |e| matches!(e, EventBody::ApprovalHeld(h) if h.approval == id && h.gateway == "gw1")
        ));
    }
}

/// The salt a gateway's SCRAM exchange offers `user` (its server-first
/// message), read with a raw client.
async fn offered_salt(addr: SocketAddr, user: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut params = Vec::new();
    for (k, v) in [("user", user), ("database", "shop")] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut startup = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(&params);
    tcp.write_all(&startup).await.unwrap();
    async fn message(tcp: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
        let tag = tcp.read_u8().await.unwrap();
        let len = tcp.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        tcp.read_exact(&mut body).await.unwrap();
        (tag, body)
    }
    let (tag, body) = message(&mut tcp).await;
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &10u32.to_be_bytes()[..]),
        "SASL offered"
    );
    let first = b"n,,n=,r=clientnonce123";
    let mut sasl = b"SCRAM-SHA-256\0".to_vec();
    sasl.extend_from_slice(&(first.len() as u32).to_be_bytes());
    sasl.extend_from_slice(first);
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((sasl.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&sasl);
    tcp.write_all(&msg).await.unwrap();
    let (tag, body) = message(&mut tcp).await;
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &11u32.to_be_bytes()[..]),
        "SASL continue"
    );
    let text = String::from_utf8(body[4..].to_vec()).unwrap();
    text.split(',')
        .find_map(|p| p.strip_prefix("s="))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_offers_an_unknown_identity_the_same_fake_salt() {
    let mut cluster = TwoGateways::start().await;
    let (a0, a1) = (cluster.members[0].addr, cluster.members[1].addr);
    let ghost = (
        offered_salt(a0, "ghost").await,
        offered_salt(a1, "ghost").await,
    );
    assert_eq!(ghost.0, ghost.1, "the same fake salt on both gateways");
    assert_ne!(
        ghost.0,
        offered_salt(a0, "phantom").await,
        "one per identity"
    );
    // The real identity's salt is its credential's, the same everywhere.
    assert_eq!(
        offered_salt(a0, "agent").await,
        offered_salt(a1, "agent").await
    );
    cluster.stop().await;
}

/// Copies a closed ledger (with its write-ahead log, if any) to `to`.
fn copy_ledger(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_verifies_and_a_missing_or_rolled_back_ledger_fails() {
    let mut cluster = TwoGateways::start().await;
    let secret = cluster.secret.clone();
    for gw in 0..2 {
        let c = cluster.connect(gw, &secret).await.unwrap();
        for i in 0..5 {
            c.simple_query(&format!("SELECT {i}")).await.unwrap();
        }
    }
    cluster.stop().await;
    let control = cluster.dir.path().join("control.ledger");
    let key = cluster.control_key();
    let members = cluster.member_ledgers();
    let report = gatehouse_verify::verify_cluster(&control, &key, &members).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.members.len(), 2);
    assert!(
        report.members.iter().all(|m| m.anchor.is_some()),
        "{}",
        report.to_text()
    );
    // A gateway's ledger left out.
    let report = gatehouse_verify::verify_cluster(&control, &key, &members[..1]).unwrap();
    assert!(!report.is_intact());
    assert!(
        report
            .to_text()
            .contains("gateway gw1: FAILED: no ledger given"),
        "{}",
        report.to_text()
    );
    // gw1's ledger rolled back: its last events and checkpoints removed.
    // Alone it still verifies (a shorter log); against its anchor it fails.
    let rolled = cluster.dir.path().join("gw1-rolled-back.db");
    copy_ledger(&cluster.members[1].ledger, &rolled);
    {
        let conn = rusqlite::Connection::open(&rolled).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        let keep = n - 4;
        conn.execute("DELETE FROM events WHERE seq >= ?1", [keep])
            .unwrap();
        conn.execute("DELETE FROM checkpoints WHERE size > ?1", [keep])
            .unwrap();
        conn.execute("DELETE FROM subtrees", []).ok();
        conn.execute("DELETE FROM writer_state", []).ok();
    }
    let gw1_key = std::fs::read_to_string(cluster.dir.path().join("gw1/verifier.pub")).unwrap();
    let gw1_key = gatehouse_verify::VerifierKey::parse(gw1_key.trim()).unwrap();
    let alone = gatehouse_verify::verify_ledger(&rolled, &gw1_key, None).unwrap();
    assert!(alone.is_intact(), "{:?}", alone.failure);
    let with_rolled = vec![members[0].clone(), ("gw1".to_owned(), rolled)];
    let report = gatehouse_verify::verify_cluster(&control, &key, &with_rolled).unwrap();
    assert!(!report.is_intact());
    assert!(report.members[1].failure.is_some(), "{}", report.to_text());
    // A ledger for a gateway never enrolled.
    let mut extra = members.clone();
    extra.push(("gw9".into(), cluster.members[0].ledger.clone()));
    assert!(!gatehouse_verify::verify_cluster(&control, &key, &extra)
        .unwrap()
        .is_intact());
    // An edited control event fails the control log first.
    {
        let conn = rusqlite::Connection::open(&control).unwrap();
        let data: Vec<u8> = conn
            .query_row("SELECT data FROM events WHERE seq = 0", [], |r| r.get(0))
            .unwrap();
        let mut edited = data.clone();
        let last = edited.len() - 1;
        edited[last] ^= 1;
        conn.execute("UPDATE events SET data = ?1 WHERE seq = 0", [edited])
            .unwrap();
    }
    let report = gatehouse_verify::verify_cluster(&control, &key, &members).unwrap();
    assert!(!report.control.is_intact() && !report.is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_gateway_does_not_start_again_and_its_ledger_must_end_at_its_final_note() {
    let mut cluster = TwoGateways::start().await;
    let c = cluster.connect(1, &cluster.secret.clone()).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    // Retiring a running gateway is refused: its ledger is held.
    let running = cluster.configs[1].ledger.path.clone();
    assert!(running.exists());
    let config = Config::load(&cluster.dir.path().join("gw1/gatehouse.toml")).unwrap();
    let refused = tokio::task::spawn_blocking(move || commands::cluster_retire(&config))
        .await
        .unwrap();
    assert!(format!("{:#}", refused.unwrap_err()).contains("stop the gateway"));
    cluster.stop().await;
    let config = Config::load(&cluster.dir.path().join("gw1/gatehouse.toml")).unwrap();
    let note = tokio::task::spawn_blocking(move || commands::cluster_retire(&config))
        .await
        .unwrap()
        .unwrap();
    assert!(note.starts_with("gatehouse.test/gw1\n"), "{note}");
    let err = Gateway::bind(&cluster.configs[1]).await.err().unwrap();
    assert!(format!("{err:#}").contains("retired"), "{err:#}");
    let control = cluster.dir.path().join("control.ledger");
    let key = cluster.control_key();
    let members = cluster.member_ledgers();
    let report = gatehouse_verify::verify_cluster(&control, &key, &members).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert!(
        report.to_text().contains("gateway gw1: intact") && report.to_text().contains("retired")
    );
    // The retired ledger written to afterwards: it no longer ends where
    // the cluster was told it ends.
    let options = cluster.configs[1].writer_options().unwrap();
    tokio::task::spawn_blocking(move || {
        let ledger = gatehouse_ledger::Ledger::open(options).unwrap();
        ledger
            .append_blocking(&[gatehouse_ledger::event::OperatorAction {
                operator: "mallory".into(),
                action: "afterthought".into(),
                target: None,
                outcome: "ok".into(),
                detail: None,
            }
            .into()])
            .unwrap();
        ledger.close();
    })
    .await
    .unwrap();
    let report = gatehouse_verify::verify_cluster(&control, &key, &members).unwrap();
    assert!(!report.is_intact());
    assert!(
        report.members[1]
            .failure
            .as_deref()
            .unwrap()
            .contains("goes on after it"),
        "{}",
        report.to_text()
    );
}
