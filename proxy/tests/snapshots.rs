//! Snapshots written by a running gateway, against a real PostgreSQL:
//! start-up from a snapshot gives exactly the state the fold from the first
//! event gives, across restarts.

mod support;

use std::time::{Duration, Instant};

use gatehouse::state::{self, At, Start};
use gatehouse_engine::snapshot::state_hash;
use gatehouse_ledger::event::EventBody;
use gatehouse_ledger::LedgerReader;
use support::{Env, POLICY};

const EVERY: u64 = 25;

/// The state at the end of the ledger from the latest snapshot and from the
/// first event; they must be the same state.
fn both_ways(env: &Env) -> (state::Rebuilt, state::Rebuilt) {
    let at = At::Seq(u64::MAX - 1);
    let fast = state::rebuild(&env.ledger(), at, Start::Snapshot).unwrap();
    let slow = state::rebuild(&env.ledger(), at, Start::Genesis).unwrap();
    assert!(fast.refused.is_none(), "{:?}", fast.refused);
    assert_eq!(state_hash(&fast.state), state_hash(&slow.state));
    assert_eq!(fast.state, slow.state);
    (fast, slow)
}

/// Waits until the gateway has snapshotted at least `covers` events.
async fn snapshot_covering(env: &Env, covers: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reader = LedgerReader::open(env.ledger()).unwrap();
        let latest = reader.latest_snapshot(u64::MAX).unwrap();
        if latest.is_some_and(|s| s.snapshot.covers >= covers) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot covering {covers} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_from_snapshots_give_the_state_the_fold_from_genesis_gives() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert!(text.contains("snapshot_every = 10000"), "{text}");
    std::fs::write(
        &env.config,
        text.replace(
            "snapshot_every = 10000",
            &format!("snapshot_every = {EVERY}"),
        ),
    )
    .unwrap();
    env.restart().await;

    let agent = env.connect("agent").await;
    let reader = env.connect("reader").await;
    for i in 0..30 {
        agent
            .simple_query(&format!("SELECT id FROM orders WHERE id = {i}"))
            .await
            .unwrap();
    }
    agent
        .simple_query("SELECT ssn FROM customers")
        .await
        .expect_err("denied");
    env.shared()
        .block("reader", "bob", "snapshot test", None)
        .await
        .unwrap();
    assert!(reader.simple_query("SELECT 1").await.is_err());
    env.settle().await;
    let len = LedgerReader::open(env.ledger()).unwrap().len().unwrap();
    snapshot_covering(&env, len / EVERY * EVERY).await;
    let (running, _) = both_ways(&env);
    let (_, covers) = running.snapshot.expect("start-up would use a snapshot");
    assert!(
        covers >= EVERY * 3,
        "snapshots kept up: latest covers {covers}"
    );
    assert!(
        running.folded <= 2 * EVERY,
        "folded {} events after the snapshot",
        running.folded
    );

    // The state just before and just after the block differs exactly by
    // the block, with snapshots on both sides of it.
    let block = LedgerReader::open(env.ledger())
        .unwrap()
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event)
        .find(|e| matches!(e.body, EventBody::IdentityBlocked(_)))
        .unwrap();
    let before = state::state_at(&env.ledger(), At::Seq(block.seq - 1)).unwrap();
    let after = state::state_at(&env.ledger(), At::Seq(block.seq)).unwrap();
    let mut expected = before.clone();
    expected.events = after.events;
    expected.as_of = after.as_of;
    expected.blocks = after.blocks.clone();
    assert_eq!(after, expected);
    assert!(before.blocks.is_empty());
    assert_eq!(after.blocks["reader"].reason, "snapshot test");
    drop(agent);
    drop(reader);

    // Stop and start twice: each start-up rebuilds from a snapshot, and
    // every rebuild agrees with the fold from the first event.
    let mut hashes = Vec::new();
    for _ in 0..2 {
        env.stop().await;
        let (stopped, genesis) = both_ways(&env);
        hashes.push(state_hash(&stopped.state));
        assert!(stopped.snapshot.is_some());
        assert!(genesis.folded > stopped.folded);
        env.restart().await;
        // The block survived the restart, and the restarted gateway works.
        let e = tokio_postgres::connect(&env.conn_str("reader"), tokio_postgres::NoTls)
            .await
            .err()
            .expect("still blocked after a restart");
        let refusal = e.as_db_error().map(|d| d.message().to_owned());
        assert!(
            refusal.as_deref().is_some_and(|m| m.contains("blocked")),
            "{refusal:?}"
        );
        let agent = env.connect("agent").await;
        agent.simple_query("SELECT 1").await.unwrap();
    }
    env.stop().await;
    let (end, _) = both_ways(&env);
    assert_ne!(hashes[0], hashes[1], "the second run added events");
    assert_eq!(end.state.blocks.len(), 1);

    let check = state::check_snapshots(&env.ledger()).unwrap();
    assert!(check.passed(), "{check:?}");
    assert!(check.snapshots >= 3);
    assert!(env.verify().is_intact());
    investigators_read_windows_from_verified_snapshots(&env);
}

/// `gatehouse state --at` reads only the window from the newest snapshot
/// before the instant (issue 20), and gets, at every event and at every
/// event's time, exactly the state the fold from the first event gets.
fn investigators_read_windows_from_verified_snapshots(env: &Env) {
    use gatehouse_ledger::verified::Pass;
    let ledger = env.ledger();
    let reader = LedgerReader::open(&ledger).unwrap();
    let events: Vec<_> = reader
        .events(0..u64::MAX)
        .map(|e| e.unwrap().event)
        .collect();
    let mut windows = 0;
    for event in &events {
        for at in [At::Seq(event.seq), At::Time(event.ts)] {
            let verified = state::verified_state_at(&ledger, at, None).unwrap();
            let genesis = state::rebuild(&ledger, at, Start::Genesis).unwrap();
            assert_eq!(verified.state, genesis.state, "at {at:?}");
            assert_eq!(verified.unsigned_not_folded, 0);
            if verified.coverage.pass == Pass::Window {
                windows += 1;
            }
        }
    }
    assert!(
        windows > events.len(),
        "{windows} of {} reads used a snapshot's window",
        2 * events.len()
    );
    // A snapshot index that points at another event, and one whose snapshot
    // record was edited: the fold falls back to the first event, or refuses.
    let copy = ledger.with_file_name("edited.db");
    std::fs::copy(&ledger, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute("UPDATE snapshots SET seq = seq - 1", [])
        .unwrap();
    drop(conn);
    let last = events.last().unwrap().seq;
    let verified = state::verified_state_at(
        &copy,
        At::Seq(last),
        Some(&ledger.with_file_name("verifier.pub")),
    )
    .unwrap();
    assert_eq!(verified.coverage.pass, Pass::Whole);
    assert_eq!(
        verified.state,
        state::rebuild(&ledger, At::Seq(last), Start::Genesis)
            .unwrap()
            .state
    );
}
