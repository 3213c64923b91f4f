//! Issue 20: what an investigator sees is exactly what the verifier vouched
//! for. A ledger written by a real gateway session (an agent's reads and a
//! denied SSN dump) is copied and tampered with at the SQLite level, the way
//! someone with write access to the file but not the signing key can; for
//! every tamper, either `gatehouse-verify` fails, or replay, state and
//! export refuse, or they show exactly what they show for the untouched
//! ledger: eight chosen tampers, a symbolic link with a WAL beside the real
//! file, and random combinations of column updates, flipped record bytes,
//! deleted rows, bucket and checkpoint deletions, planted schema objects,
//! substituted WAL files, lying stored subtree hashes and bucket rows
//! (GATEHOUSE_TAMPER_CASES, default 24). A session's replay reads only its
//! window: damage elsewhere does not stop it, and it never shows more or
//! less than the whole log says.

mod support;

use std::path::{Path, PathBuf};

use gatehouse::replay::{self, Selection, Window};
use gatehouse_verify::VerifierKey;
use support::{Env, POLICY};

const SSN_DUMP: &str = "SELECT name, ssn FROM customers";

/// Statements of the bulk session.
const BULK: u32 = 400;

/// A stopped gateway's ledger directory (ledger.db and verifier.pub), with
/// session 1 of identity `agent`: two reads and the denied SSN dump, while
/// session 2 of `reader` runs enough statements (over 1,000 events) that
/// session 1's window is a small part of the log and the stored subtree
/// hashes stand in for the rest.
async fn written() -> (Env, PathBuf) {
    let mut env = Env::start(POLICY).await;
    // Snapshots often enough that the log has several: a window's reader
    // learns the key rotations before the newest one from its state.
    env.stop().await;
    let config = std::fs::read_to_string(&env.config).unwrap();
    assert!(config.contains("snapshot_every = 10000"), "{config}");
    std::fs::write(
        &env.config,
        config.replace("snapshot_every = 10000", "snapshot_every = 200"),
    )
    .unwrap();
    env.restart().await;
    let c = env.connect("agent").await;
    let bulk = env.connect("reader").await;
    c.simple_query("SELECT count(*) FROM orders").await.unwrap();
    assert!(c.simple_query(SSN_DUMP).await.is_err());
    c.simple_query("SELECT name FROM customers WHERE id = 1")
        .await
        .unwrap();
    drop(c);
    for i in 0..BULK {
        bulk.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(bulk);
    env.settle().await;
    env.stop().await;
    let dir = env.ledger().parent().unwrap().to_path_buf();
    (env, dir)
}

/// A copy of the ledger directory's ledger and key, to tamper with.
fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for name in ["ledger.db", "verifier.pub"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
    for name in ["ledger.db-wal", "ledger.db-shm"] {
        let _ = std::fs::remove_file(to.join(name));
    }
    to.join("ledger.db")
}

fn key(dir: &Path) -> VerifierKey {
    VerifierKey::parse(
        std::fs::read_to_string(dir.join("verifier.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

/// What the tools show for a ledger: replay of session 1 and of identity
/// agent (JSON, without the ledger's path), the state hash, and the
/// exported session bundle's events. `Err` when a tool refuses.
fn shown(ledger: &Path) -> Result<String, String> {
    let mut out = String::new();
    for selection in [Selection::Session(1), Selection::Identity("agent".into())] {
        let replay = replay::load(ledger, selection, Window::default(), None)
            .map_err(|e| format!("replay: {e}"))?;
        let mut doc = replay::json::document(&replay);
        doc["ledger"] = serde_json::Value::Null;
        doc["verify"] = serde_json::Value::Null;
        // How much was hashed depends on which hints held, not on what is shown.
        doc["checkpoint"]["checked"] = serde_json::Value::Null;
        out.push_str(&doc.to_string());
    }
    let state =
        gatehouse::state::verified_state_at(ledger, gatehouse::state::At::Seq(u64::MAX - 1), None)
            .map_err(|e| format!("state: {e:#}"))?;
    out.push_str(&gatehouse_engine::snapshot::state_hash(&state.state).to_string());
    let bundle = ledger.with_extension(format!(
        "{}.bundle",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let exported = gatehouse::export::export(&gatehouse::export::ExportOptions {
        ledger: ledger.to_path_buf(),
        session: Some(1),
        identity: None,
        from: None,
        to: None,
        out: bundle.clone(),
        consistent_with: Vec::new(),
        prove_complete: false,
    })
    .map_err(|e| format!("export: {e:#}"))?;
    let bytes = std::fs::read(&bundle).unwrap();
    let parsed = gatehouse_ledger::bundle::Bundle::from_bytes(&bytes).unwrap();
    out.push_str(&format!(
        "{} {:?}",
        exported.events,
        parsed.events.iter().map(|e| e.seq).collect::<Vec<_>>()
    ));
    Ok(out)
}

/// Whether the verifier vouches for every event (`--strict`: a format-2
/// tail left unsigned, say by deleted checkpoints, is not vouched for, and
/// the tools do not show it either).
fn intact(ledger: &Path, key: &VerifierKey) -> bool {
    gatehouse_verify::verify_ledger_with(
        ledger,
        key,
        gatehouse_verify::VerifyOptions {
            strict: true,
            ..Default::default()
        },
    )
    .map(|r| r.is_intact())
    .unwrap_or(false)
}

fn sql(ledger: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.execute_batch(statements).unwrap();
}

/// The sequence numbers of the events that carry `text` in their record.
fn seqs_holding(ledger: &Path, text: &str) -> Vec<i64> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn.prepare("SELECT seq, data FROM events").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    rows.filter_map(Result::ok)
        .filter(|(_, d)| d.windows(text.len()).any(|w| w == text.as_bytes()))
        .map(|(s, _)| s)
        .collect()
}

/// Changes one byte of the first record holding `text`, inside `text`.
fn edit_record(ledger: &Path, text: &str) {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let seq = seqs_holding(ledger, text)[0];
    let mut data: Vec<u8> = conn
        .query_row("SELECT data FROM events WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap();
    let at = data
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .unwrap();
    data[at + text.len() - 1] = b'p';
    conn.execute(
        "UPDATE events SET data = ?1 WHERE seq = ?2",
        rusqlite::params![data, seq],
    )
    .unwrap();
}

/// Changes one byte of the record of the statement whose SQL is `sql`,
/// inside its last literal (format 3 records a statement's literals apart
/// from the text around them).
fn edit_statement(ledger: &Path, sql: &str) {
    let seq = gatehouse_ledger::LedgerReader::open(ledger)
        .unwrap()
        .events(0..u64::MAX)
        .map(Result::unwrap)
        .find(
            |e| matches!(&e.event.body, gatehouse_ledger::EventBody::Statement(s) if s.sql == sql),
        )
        .map(|e| e.event.seq)
        .expect("the statement's record");
    let literal = gatehouse_ledger::shape::split(sql)
        .1
        .pop()
        .expect("a literal");
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    // The literal as CBOR text: its head byte (short text) and its bytes.
    let encoded = [&[0x60 + literal.len() as u8][..], literal.as_bytes()].concat();
    let at = data
        .windows(encoded.len())
        .position(|w| w == encoded)
        .unwrap();
    data[at + encoded.len() - 1] = b'p';
    conn.execute(
        "UPDATE events SET data = ?1 WHERE seq = ?2",
        rusqlite::params![data, seq as i64],
    )
    .unwrap();
}

/// A change to a copy of the ledger file.
type Tamper = Box<dyn Fn(&Path)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_is_caught_or_changes_nothing_shown() {
    let (_env, original_dir) = written().await;
    let scratch = tempfile::tempdir().unwrap();
    let pristine = copy(&original_dir, &scratch.path().join("pristine"));
    let expected = shown(&pristine).expect("the tools read an untouched ledger");
    assert!(expected.contains("ssn"), "the SSN dump is in the replay");
    let key = key(&original_dir);
    assert!(intact(&pristine, &key));

    let tampers: Vec<(&str, Tamper)> = vec![
        (
            // Finding 1: events hidden from index-based selection.
            "null index columns",
            Box::new(|l: &Path| {
                for seq in seqs_holding(l, SSN_DUMP) {
                    sql(
                        l,
                        &format!(
                            "UPDATE events SET session = NULL, identity = NULL WHERE seq = {seq}"
                        ),
                    );
                }
            }),
        ),
        (
            "index columns pointing elsewhere",
            Box::new(|l: &Path| sql(l, "UPDATE events SET session = 99, identity = 'nobody'")),
        ),
        (
            "bucket rows deleted",
            Box::new(|l: &Path| {
                sql(
                    l,
                    "DELETE FROM session_buckets; DELETE FROM identity_buckets",
                )
            }),
        ),
        (
            // Finding 2: a schema object SQLite would answer queries from.
            "covering index",
            Box::new(|l: &Path| sql(l, "CREATE INDEX forged ON events (seq, data)")),
        ),
        (
            "view",
            Box::new(|l: &Path| sql(l, "CREATE VIEW v AS SELECT 1")),
        ),
        (
            "trigger",
            Box::new(|l: &Path| {
                sql(
                    l,
                    "CREATE TRIGGER t AFTER INSERT ON events BEGIN DELETE FROM events WHERE seq = NEW.seq; END",
                )
            }),
        ),
        (
            "record edited",
            Box::new(|l: &Path| edit_record(l, "ssn FROM customers")),
        ),
        (
            "newest checkpoints deleted",
            Box::new(|l: &Path| {
                sql(
                    l,
                    "DELETE FROM checkpoints WHERE size > (SELECT min(size) FROM checkpoints)",
                )
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, tamper)) in tampers.iter().enumerate() {
        let ledger = copy(&original_dir, &scratch.path().join(format!("t{i}")));
        tamper(&ledger);
        let verified = intact(&ledger, &key);
        match shown(&ledger) {
            Err(_) => {}
            Ok(seen) if seen == expected => {}
            Ok(seen)
                if !verified && !seen.contains("ssn") && *name == "newest checkpoints deleted" =>
            {
                // A rollback: the tools show less, and say the rest is not
                // signed; only a trusted checkpoint proves the deletion.
                let _ = seen;
            }
            Ok(seen) => failures.push(format!(
                "{name}: verify says {}, and the tools show other content: {seen}",
                if verified { "intact" } else { "damaged" }
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Finding 3: a symbolic link to the ledger, with an uncheckpointed WAL
/// beside the real file that rewrites an event. The verifier and the tools
/// must read the same bytes: the rewrite is caught by both or by neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_ledger_is_read_with_the_wal_beside_the_real_file() {
    let (_env, original_dir) = written().await;
    let scratch = tempfile::tempdir().unwrap();
    let real = copy(&original_dir, &scratch.path().join("real"));
    let key = key(&original_dir);
    // A WAL that edits a record, left beside the real file: copy it out
    // while the connection that wrote it is still open (SQLite folds it in
    // and deletes it when the last connection closes).
    let staging = copy(&original_dir, &scratch.path().join("staging"));
    let conn = rusqlite::Connection::open(&staging).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0")
        .unwrap();
    edit_record(&staging, "ssn FROM customers");
    std::fs::copy(
        staging.with_file_name("ledger.db-wal"),
        real.with_file_name("ledger.db-wal"),
    )
    .unwrap();
    drop(conn);
    let link_dir = scratch.path().join("link");
    std::fs::create_dir_all(&link_dir).unwrap();
    std::fs::copy(
        original_dir.join("verifier.pub"),
        link_dir.join("verifier.pub"),
    )
    .unwrap();
    let link = link_dir.join("ledger.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let verified = intact(&link, &key);
    assert!(!verified, "the verifier reads the WAL beside the real file");
    let replay = replay::load(&link, Selection::Session(1), Window::default(), None);
    assert!(
        replay.is_err(),
        "replay shows the rewritten event as verified: {:?}",
        replay.map(|r| replay::json::document(&r).to_string())
    );
}

/// One SQLite-level change, with its random parameters.
#[derive(Debug, Clone)]
enum Change {
    /// `events.session` / `events.identity` / `ts` / `kind` of one row.
    IndexColumn(&'static str, u64, i64),
    /// One byte of one record flipped.
    RecordByte(u64, usize, u8),
    /// One event row deleted.
    EventDeleted(u64),
    /// Some bucket rows deleted.
    BucketsDeleted(&'static str),
    /// Checkpoint rows above a size deleted.
    CheckpointsAbove(u64),
    /// A schema object added.
    Object(&'static str),
    /// A WAL beside the file that flips one byte of one record.
    Wal(u64, usize, u8),
    /// One stored subtree hash (`level`, `idx` modulo what exists) replaced.
    Subtree(u32, u64),
    /// A session bucket row added: session, bucket.
    BucketAdded(i64, i64),
}

fn apply(ledger: &Path, change: &Change, events: u64) {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let seq = |s: u64| (s % events) as i64;
    let _ = match change {
        Change::IndexColumn(column, s, v) => conn.execute(
            &format!("UPDATE events SET {column} = ?1 WHERE seq = ?2"),
            rusqlite::params![v, seq(*s)],
        ),
        Change::RecordByte(s, at, bit) => {
            // (The row may be gone: an earlier change of the case deleted it.)
            let Ok(mut data) = conn.query_row::<Vec<u8>, _, _>(
                "SELECT data FROM events WHERE seq = ?1",
                [seq(*s)],
                |r| r.get(0),
            ) else {
                return;
            };
            let i = at % data.len();
            data[i] ^= 1 << (bit % 8);
            conn.execute(
                "UPDATE events SET data = ?1 WHERE seq = ?2",
                rusqlite::params![data, seq(*s)],
            )
        }
        Change::EventDeleted(s) => conn.execute("DELETE FROM events WHERE seq = ?1", [seq(*s)]),
        Change::BucketsDeleted(table) => {
            conn.execute(&format!("DELETE FROM {table} WHERE rowid % 2 = 0 OR 1"), [])
        }
        Change::CheckpointsAbove(s) => {
            conn.execute("DELETE FROM checkpoints WHERE size > ?1", [seq(*s)])
        }
        Change::Object(sql) => conn.execute_batch(sql).map(|_| 0),
        Change::Subtree(level, idx) => conn.execute(
            "UPDATE subtrees SET hash = zeroblob(32) WHERE level = ?1 AND idx = ?2 % \
             (SELECT count(*) FROM subtrees WHERE level = ?1)",
            rusqlite::params![level, *idx as i64 & i64::MAX],
        ),
        Change::BucketAdded(session, bucket) => conn.execute(
            "INSERT OR IGNORE INTO session_buckets (session, bucket) VALUES (?1, ?2)",
            [session, bucket],
        ),
        Change::Wal(s, at, bit) => {
            drop(conn);
            plant_wal(ledger, &Change::RecordByte(*s, *at, *bit), events);
            Ok(0)
        }
    };
}

/// Leaves beside `ledger` a WAL that makes `change`, the main file
/// untouched: made on a copy, and copied out while the connection that
/// wrote it is still open (SQLite folds it in when the last one closes).
fn plant_wal(ledger: &Path, change: &Change, events: u64) {
    let staging_dir = ledger.with_file_name("staging");
    std::fs::create_dir_all(&staging_dir).unwrap();
    let staging = staging_dir.join("ledger.db");
    std::fs::copy(ledger, &staging).unwrap();
    let conn = rusqlite::Connection::open(&staging).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0")
        .unwrap();
    apply(&staging, change, events);
    // (No WAL when the change changed nothing.)
    let _ = std::fs::copy(
        staging.with_file_name("ledger.db-wal"),
        ledger.with_file_name("ledger.db-wal"),
    );
    drop(conn);
    let _ = std::fs::remove_dir_all(&staging_dir);
}

fn change() -> impl proptest::strategy::Strategy<Value = Change> {
    use proptest::prelude::*;
    prop_oneof![
        (
            proptest::sample::select(&["session", "identity", "ts", "kind"][..]),
            any::<u64>(),
            -1i64..40
        )
            .prop_map(|(c, s, v)| Change::IndexColumn(c, s, v)),
        (any::<u64>(), any::<usize>(), any::<u8>())
            .prop_map(|(s, a, b)| Change::RecordByte(s, a, b)),
        any::<u64>().prop_map(Change::EventDeleted),
        proptest::sample::select(&["session_buckets", "identity_buckets", "snapshots"][..])
            .prop_map(Change::BucketsDeleted),
        any::<u64>().prop_map(Change::CheckpointsAbove),
        proptest::sample::select(
            &[
                "CREATE INDEX planted ON events (session, seq, data)",
                "CREATE VIEW planted AS SELECT * FROM events",
                "CREATE TABLE planted (x)",
                "CREATE TRIGGER planted BEFORE UPDATE ON events BEGIN SELECT 1; END",
            ][..]
        )
        .prop_map(Change::Object),
        (any::<u64>(), any::<usize>(), any::<u8>()).prop_map(|(s, a, b)| Change::Wal(s, a, b)),
        (8u32..12, any::<u64>()).prop_map(|(l, i)| Change::Subtree(l, i)),
        (1i64..3, 0i64..4).prop_map(|(s, b)| Change::BucketAdded(s, b)),
    ]
}

/// Random SQLite-level tampering of a gateway's ledger: for every copy,
/// either the verifier fails, or the tools refuse, or they show exactly
/// what they show for the untouched ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tampering_is_caught_or_changes_nothing_shown() {
    use proptest::test_runner::{Config, TestRunner};
    let (_env, original_dir) = written().await;
    let scratch = tempfile::tempdir().unwrap();
    let pristine = copy(&original_dir, &scratch.path().join("pristine"));
    let expected = shown(&pristine).unwrap();
    let events = gatehouse_ledger::LedgerReader::open(&pristine)
        .unwrap()
        .len()
        .unwrap();
    let key = key(&original_dir);
    let cases: u32 = std::env::var("GATEHOUSE_TAMPER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(change(), 1..4), |changes| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ledger = copy(&original_dir, &scratch.path().join(format!("case{n}")));
                for c in &changes {
                    apply(&ledger, c, events);
                }
                if intact(&ledger, &key) {
                    if let Ok(seen) = shown(&ledger) {
                        proptest::prop_assert_eq!(
                            &seen,
                            &expected,
                            "verify says intact after {:?}, and the tools show other content",
                            changes
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
}

/// A session's replay hashes its window, not the log (issue 20: a window
/// costs its size plus one stored hash per level): session 1's handful of
/// events is checked against the signed root with the bulk session's events
/// standing in as stored subtree hashes, so an edit among those is left to
/// the verifier (which reports it) and to the replays that read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_read_from_its_window() {
    let (_env, original_dir) = written().await;
    let scratch = tempfile::tempdir().unwrap();
    let ledger = copy(&original_dir, &scratch.path().join("window"));
    let key = key(&original_dir);
    let session = |l: &Path| replay::load(l, Selection::Session(1), Window::default(), None);
    let before = session(&ledger).unwrap();
    let checkpoint = before.checkpoint.clone().unwrap();
    assert!(checkpoint.key.is_some(), "the signature was checked");
    assert!(
        checkpoint.checked * 2 < checkpoint.size,
        "hashed {} of {} records for session 1",
        checkpoint.checked,
        checkpoint.size
    );
    let text = replay::text::render(&before);
    assert!(text.contains("stored subtree hashes"), "{text}");

    // (Mid-log: the last, partial block of 256 events is always hashed.)
    edit_statement(&ledger, &format!("SELECT {}", BULK / 2));
    assert!(!intact(&ledger, &key), "the verifier reports the edit");
    let after = session(&ledger).expect("session 1's window is intact");
    assert_eq!(after.timeline, before.timeline);
    let whole = replay::load(
        &ledger,
        Selection::Identity("reader".into()),
        Window::default(),
        None,
    );
    assert!(whole.is_err(), "the edited session's replay refuses");
}

/// The gateway itself starts only from what the signed log vouches for: a
/// block recorded in the ledger cannot be undone by editing the file (the
/// record edited, or the event deleted) while the gateway is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_does_not_start_on_an_edited_ledger() {
    let mut env = Env::start(POLICY).await;
    env.shared()
        .block("agent", "tester", "tamper test", None)
        .await
        .unwrap();
    env.settle().await;
    env.stop().await;
    let ledger = env.ledger();
    let pristine = std::fs::read(&ledger).unwrap();
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    for tamper in ["edit", "delete"] {
        std::fs::write(&ledger, &pristine).unwrap();
        let seq = seqs_holding(&ledger, "tamper test")[0];
        match tamper {
            "edit" => edit_record(&ledger, "tamper test"),
            _ => sql(&ledger, &format!("DELETE FROM events WHERE seq = {seq}")),
        }
        let refused = gatehouse::gateway::Gateway::bind(&config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{tamper}: the gateway started on a tampered ledger"));
        assert!(
            format!("{refused:#}").contains("signed checkpoints vouch"),
            "{tamper}: {refused:#}"
        );
    }
    std::fs::write(&ledger, &pristine).unwrap();
    env.restart().await;
    assert!(env.shared().blocked("agent").is_some(), "the block holds");
}
