//! Issue 14: the gateway's own faults, each checked for three things:
//! nothing acknowledged is lost, nothing reached the database that the
//! ledger does not show, and it recovers by itself (or says what to do).
//! (The ledger file removed, the disk refusing commits, a dead database
//! and the connection limits are in tests/gateway.rs.)

mod support;

use std::collections::HashSet;
use std::time::Duration;

use gatehouse_ledger::segment::segment_files;
use gatehouse_ledger::EventBody;
use support::{Env, POLICY};

/// Every note that the ledger shows in a statement: in its SQL text (simple
/// protocol) or a parameter (extended).
fn recorded_notes(env: &Env) -> HashSet<String> {
    notes_in(&env.events())
}

/// Every note in the statements among `events`.
fn notes_in(events: &[EventBody]) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in events {
        if let EventBody::Statement(q) = e {
            for word in q.sql.split('\'') {
                if word.starts_with("fault-") {
                    out.insert(word.to_owned());
                }
            }
            for p in &q.params {
                if let Some(v) = &p.value {
                    let v = String::from_utf8_lossy(&v.0).into_owned();
                    if v.starts_with("fault-") {
                        out.insert(v);
                    }
                }
            }
        }
    }
    out
}

fn notes_in_database(env: &Env) -> HashSet<String> {
    env.pg
        .psql(
            "shop",
            "SELECT note FROM audit_probe WHERE note LIKE 'fault-%'",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What a load reports: the clients' tasks, and the notes each was told of
/// (an insert acknowledged, a result received).
type Load = (
    Vec<tokio::task::JoinHandle<()>>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
);

/// Runs the gateway as a process, puts 8 sessions under `load`, SIGKILLs
/// the gateway 1.5 s in, and returns the notes the clients were told of.
async fn killed_under_load(
    env: &mut Env,
    load: fn(Vec<tokio_postgres::Client>) -> Load,
) -> HashSet<String> {
    env.stop().await;
    let (mut child, port) = env.serve_as_process().await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(env.connect_to_port(port, "agent").await);
    }
    let (clients, told) = load(sessions);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    let told: HashSet<String> = told.lock().unwrap().iter().cloned().collect();
    assert!(told.len() > 50, "the load ran: {} notes", told.len());
    eprintln!("{} notes told to clients before the kill", told.len());
    told
}

/// SIGKILL under an 8-client write load, half simple and half extended
/// protocol: every insert a client was told succeeded is in the database
/// and in the ledger, every row in the database was written by a statement
/// the ledger shows, the ledger verifies, and the gateway starts again and
/// records the end of the sessions the kill left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_nothing_and_runs_nothing_unrecorded() {
    let mut env = Env::start(POLICY).await;
    let acknowledged = killed_under_load(&mut env, support::write_load).await;
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    let recorded = recorded_notes(&env);
    let in_database = notes_in_database(&env);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !in_database.contains(*n) || !recorded.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let unrecorded: Vec<&String> = in_database
        .iter()
        .filter(|n| !recorded.contains(*n))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "in the database, not in the ledger: {unrecorded:?}"
    );
    env.assert_database_ran_only_allowed();
    // It starts again by itself, and the record says the sessions ended.
    env.restart().await;
    env.settle().await;
    let closed = env
        .events()
        .iter()
        .filter(|e| {
            matches!(e, EventBody::SessionClosed(c) if c.reason.contains("stopped without closing"))
        })
        .count();
    assert_eq!(closed, 8, "the 8 sessions the kill left open are closed");
    let c = env.connect("agent").await;
    c.simple_query("SELECT 1").await.unwrap();
}

/// SIGKILL under an 8-client read load, half simple and half extended
/// protocol. Pure reads go to the database while their record commits, so
/// a kill can leave a read that ran unrecorded; what must hold is that no
/// client received a result whose statement the ledger does not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_read_load_shows_no_client_an_unrecorded_result() {
    let mut env = Env::start(POLICY).await;
    let seen = killed_under_load(&mut env, support::read_load).await;
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    let recorded = recorded_notes(&env);
    let unrecorded: Vec<&String> = seen.iter().filter(|n| !recorded.contains(*n)).collect();
    assert!(
        unrecorded.is_empty(),
        "results a client received with no record of their statement: {unrecorded:?}"
    );
}

/// PostgreSQL fast-restarted under load: sessions end with FATAL 08006,
/// nothing acknowledged is lost or unrecorded, and new sessions work as
/// soon as the database is back, without restarting the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_is_survived() {
    let env = Env::start(POLICY).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(env.connect("agent").await);
    }
    let (clients, acknowledged) = support::write_load(sessions);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pg = &env.pg;
    tokio::task::block_in_place(|| pg.restart_fast());
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    // Back: new sessions work without restarting the gateway.
    let c = env.connect_when_admitted("agent").await;
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('fault-after')")
        .await
        .unwrap();
    env.settle().await;
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(!acknowledged.is_empty());
    let recorded = recorded_notes(&env);
    let in_database = notes_in_database(&env);
    for note in &acknowledged {
        assert!(
            in_database.contains(note),
            "{note} acknowledged, not in the database"
        );
        assert!(
            recorded.contains(note),
            "{note} acknowledged, not in the ledger"
        );
    }
    for note in &in_database {
        assert!(
            recorded.contains(note),
            "{note} in the database, not in the ledger"
        );
    }
    env.assert_database_ran_only_allowed();
    assert!(env.verify().is_intact());
}

/// Issue 14, finding 1: out of file descriptors. With the gateway process
/// limited to 96 open files and flooded with connections that send
/// nothing, accept() fails (EMFILE): the process must not exit, the
/// session already open keeps working, and once the flood is gone new
/// logins are accepted again, by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_stops_nothing_that_runs() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let (mut child, port) = env.serve_as_process().await;
    let open = env.connect_to_port(port, "agent").await;
    open.simple_query("SELECT 1").await.unwrap();
    let limit = libc::rlimit {
        rlim_cur: 96,
        rlim_max: 96,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (old limit: null).
    let set = unsafe {
        libc::prlimit(
            child.id() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
    open.simple_query("SELECT 1")
        .await
        .expect("the open session keeps working while accept() fails");
    drop(flood);
    // Accepting resumes by itself (the back-off is at most a second).
    let mut back = None;
    for _ in 0..60 {
        let conn_str = format!(
            "host=127.0.0.1 port={port} user=agent password={} dbname=shop connect_timeout=2",
            env.secret("agent")
        );
        if let Ok(Ok((c, conn))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&conn_str, tokio_postgres::NoTls),
        )
        .await
        {
            tokio::spawn(conn);
            back = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back = back.expect("new logins are accepted again");
    back.simple_query("SELECT 1").await.unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Issue 14: slow and stalled clients. One logs in and sends half a
/// message; one asks for a large result (about 2 GB) and never reads it.
/// Another keeps running statements meanwhile, and the gateway's memory
/// stays bounded: backpressure reaches the database instead of the
/// gateway buffering the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_hold_up_no_one_else() {
    use tokio::io::AsyncWriteExt;
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let (mut child, port) = env.serve_as_process().await;
    let worker = env.connect_to_port(port, "agent").await;
    worker.simple_query("SELECT 1").await.unwrap();
    let before = rss_kib(child.id());

    let mut half = support::RawClient::login_port(&env, port, "agent").await;
    half.stream
        .write_all(b"Q\x00\x00\x00\x40SELECT")
        .await
        .unwrap();
    let mut unread = support::RawClient::login_port(&env, port, "agent").await;
    unread
        .stream
        .write_all(
            b"Q\x00\x00\x00\x3eSELECT repeat('x', 1000) FROM generate_series(1, 2000000)\x00",
        )
        .await
        .unwrap();

    let started = std::time::Instant::now();
    for i in 0..300 {
        let row = worker.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_kib(child.id()).saturating_sub(before);
    assert!(
        took < Duration::from_secs(30),
        "300 statements took {took:?} beside the stalled clients"
    );
    assert!(
        grown < 64 * 1024,
        "the gateway grew by {grown} KiB holding an unread result"
    );
    drop((half, unread));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Mounts a tmpfs of `size` at `dir` (as root, where the machine allows
/// it); `false` when it cannot.
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Issue 14: the ledger's disk full, then space returned. While full,
/// statements are refused with 58030 and do not reach the database; once
/// space is back, statements run again without a restart; nothing
/// acknowledged is lost and the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_disk_refuses_statements_and_recovers_by_itself() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let disk = env.dir.path().join("small-disk");
    std::fs::create_dir(&disk).unwrap();
    if !mount_tmpfs(&disk, "8m") {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); tests/gateway.rs covers refused commits");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
    let _unmount = Unmount(disk.clone());
    // The ledger moves onto the small disk; the configuration follows it.
    let ledger = env.ledger();
    std::fs::copy(&ledger, disk.join("ledger.db")).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen(
        "path = \"ledger.db\"",
        &format!("path = \"{}\"", disk.join("ledger.db").display()),
        1,
    );
    std::fs::write(&env.config, text).unwrap();
    let (mut child, port) = env.serve_as_process().await;
    let c = env.connect_to_port(port, "agent").await;
    c.simple_query("INSERT INTO audit_probe (note) VALUES ('fault-before')")
        .await
        .unwrap();
    // Fill the disk, leaving next to nothing.
    let filler = disk.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let mut refused = None;
    for n in 0..2000 {
        match c
            .simple_query(&format!(
                "INSERT INTO audit_probe (note) VALUES ('fault-full-{n}')"
            ))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a statement is refused while the disk is full");
    let db = e.as_db_error().expect("an error, not a dropped session");
    assert_eq!(db.code().code(), "58030", "{}", db.message());
    let refused_note = db.message().to_owned();
    // Space returned: statements run again, no restart.
    std::fs::remove_file(&filler).unwrap();
    let mut back = false;
    for _ in 0..40 {
        if c.simple_query("INSERT INTO audit_probe (note) VALUES ('fault-after')")
            .await
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "statements run again once space is back ({refused_note})"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Every note in the database is in the ledger, and it verifies.
    let copy = env.ledger();
    std::fs::copy(disk.join("ledger.db"), &copy).unwrap();
    for suffix in ["-wal", "-shm"] {
        let from = disk.join(format!("ledger.db{suffix}"));
        let to = copy.with_file_name(format!("ledger.db{suffix}"));
        let _ = std::fs::remove_file(&to);
        if from.exists() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let recorded = recorded_notes(&env);
    for note in notes_in_database(&env) {
        assert!(
            recorded.contains(&note),
            "{note} in the database, not in the ledger"
        );
    }
    assert!(recorded.contains("fault-after"));
    assert!(env.verify().is_intact());
}

/// Issue 16 (in part): the gateway's log in a file or a pipe has no colour
/// codes, and `[log] format = "json"` gives one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_in_a_pipe_and_json_on_request() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    for json in [false, true] {
        if json {
            let mut text = std::fs::read_to_string(&env.config).unwrap();
            text.push_str("\n[log]\nformat = \"json\"\n");
            std::fs::write(&env.config, text).unwrap();
        }
        let (mut child, port) = env.serve_as_process_logging().await;
        let c = env.connect_to_port(port, "agent").await;
        let _ = c.simple_query("SELECT ssn FROM customers").await;
        drop(c);
        let wrong =
            format!("host=127.0.0.1 port={port} user=agent password=wrong-secret dbname=shop");
        assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(300)).await;
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(log.contains("gatehouse is serving"), "{log}");
        assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log}");
        // The denial is one line with its identity, session, rule and reason.
        let denial = log
            .lines()
            .find(|l| l.contains("statement denied"))
            .unwrap_or_else(|| panic!("no denial logged: {log}"));
        for part in ["agent", "no-ssn", "session", "SSNs are off limits"] {
            assert!(denial.contains(part), "{part} missing: {denial}");
        }
        assert!(!log.contains("000000001"), "row data in the log");
        let failed = log
            .lines()
            .find(|l| l.contains("authentication failed"))
            .unwrap_or_else(|| panic!("no failed login logged: {log}"));
        assert!(failed.contains("agent"), "{failed}");
        assert!(!log.contains("wrong-secret"), "a secret in the log");
        if json {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            }
            let v: serde_json::Value = serde_json::from_str(denial).unwrap();
            assert_eq!(v["fields"]["rule"], "no-ssn", "{denial}");
            assert_eq!(v["fields"]["identity"], "agent", "{denial}");
        }
    }
}

/// A target that cannot be reached at start-up (issue 16): the log names it
/// and why, the gateway serves the other targets, and a client of the dead
/// one is told the reason class, not only "try again later".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_named_at_start_up_and_the_others_serve() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let extra = format!(
        "\n[[target]]\nname = \"archive\"\nurl = \"postgres://gatehouse@127.0.0.1:{dead_port}/archive\"\npassword = \"unused\"\n"
    );
    let mut env = Env::start_custom(POLICY, "", &extra, |_| {}).await;
    env.stop().await;
    let (mut child, port) = env.serve_as_process_logging().await;
    let c = env.connect_to_port(port, "agent").await;
    c.simple_query("SELECT 1").await.unwrap();
    let to_archive = format!(
        "host=127.0.0.1 port={port} user=agent password={} dbname=archive",
        env.secret("agent")
    );
    let e = tokio_postgres::connect(&to_archive, tokio_postgres::NoTls)
        .await
        .err()
        .expect("the archive target is down");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("archive") && message.contains("does not accept connections"),
        "{e:?}"
    );
    drop(c);
    child.kill().unwrap();
    let log = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains("target check failed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("archive") && line.contains("does not accept connections"),
        "{line}"
    );
    assert!(log.contains("gatehouse is serving"), "{log}");
}

/// Fails naming every acknowledged note the ledger does not show.
fn assert_all_recorded(acknowledged: &[String], recorded: &HashSet<String>) {
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !recorded.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not recorded: {lost:?}");
}

/// Puts `lines` at the top of the configuration's `[ledger]` table.
fn configure_ledger(env: &Env, lines: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen("[ledger]\n", &format!("[ledger]\n{lines}\n"), 1);
    std::fs::write(&env.config, text).unwrap();
}

fn segment_count(env: &Env) -> usize {
    segment_files(&env.ledger()).unwrap().len()
}

/// Issue 17: segments sealed while the gateway records a mixed load. The
/// one-file ledger becomes segment 0 when segments are configured; under
/// load the writer seals segment after segment; the set verifies from the
/// ledger's path and from its directory; every acknowledged write is
/// recorded; and after a restart the state recorded in segment 0 (policy,
/// identities, credentials) is still what the gateway enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_sealed_under_gateway_load_verify_and_keep_the_state() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    configure_ledger(&env, "segment_max = \"128 KiB\"");
    env.restart().await;
    assert_eq!(segment_count(&env), 1, "the ledger became segment 0");
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        writers.push(env.connect("agent").await);
        readers.push(env.connect("agent").await);
    }
    let (write_tasks, acknowledged) = support::write_load(writers);
    let (read_tasks, _) = support::read_load(readers);
    let started = std::time::Instant::now();
    while segment_count(&env) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} segments after two minutes of load",
            segment_count(&env)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
    for t in write_tasks.into_iter().chain(read_tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    let held = gatehouse_ledger::LedgerReader::open(env.ledger())
        .unwrap()
        .len()
        .unwrap();
    assert_eq!(report.events, held);
    let key = std::fs::read_to_string(env.dir.path().join("gh").join("verifier.pub")).unwrap();
    let key = gatehouse_verify::VerifierKey::parse(key.trim()).unwrap();
    let whole_directory =
        gatehouse_verify::verify_ledger(&env.dir.path().join("gh"), &key, None).unwrap();
    assert!(whole_directory.is_intact(), "{}", whole_directory.to_text());
    assert_eq!(whole_directory.events, held);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );
    assert_all_recorded(&acknowledged, &recorded_notes(&env));
    // A session whose statements span several segments replays whole, and
    // the state at the end is rebuilt across them.
    let mut sessions: std::collections::HashMap<u64, usize> = Default::default();
    for e in env.events() {
        if let EventBody::Statement(q) = e {
            *sessions.entry(q.session).or_default() += 1;
        }
    }
    let (&busiest, &statements) = sessions.iter().max_by_key(|(_, n)| **n).unwrap();
    let files_holding_it = segment_files(&env.ledger())
        .unwrap()
        .iter()
        .filter(|(_, file)| {
            gatehouse_ledger::LedgerReader::open(file)
                .unwrap()
                .events(0..u64::MAX)
                .any(|e| matches!(e.unwrap().event.body, EventBody::Statement(q) if q.session == busiest))
        })
        .count();
    assert!(
        files_holding_it >= 2,
        "the session spans segments: {files_holding_it}"
    );
    let replay = gatehouse::replay::load(
        &env.ledger(),
        gatehouse::replay::Selection::Session(busiest),
        Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(replay.timeline.statements().count(), statements);
    let at_end = gatehouse::state::At::Seq(u64::MAX - 1);
    let state = gatehouse::state::verified_state_at(&env.ledger(), at_end, None).unwrap();
    assert!(state.state.sessions.is_empty(), "every session was closed");
    // The state recorded in segment 0 is read back across the segments.
    env.restart().await;
    let reader = env.connect("reader").await;
    let refused = reader
        .simple_query("DELETE FROM orders")
        .await
        .expect_err("the policy of segment 0 still holds the reader to reads");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    let agent = env.connect("agent").await;
    assert!(agent
        .simple_query("SELECT ssn FROM customers")
        .await
        .is_err());
    agent.simple_query("SELECT 1").await.unwrap();
    env.stop().await;
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
}

/// Issue 17: SIGKILL while the writer seals small segments under write
/// load: whatever step of a seal the kill lands on, the gateway starts
/// again, the set of segments verifies, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_sealing_segments_loses_nothing() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    configure_ledger(&env, "segment_max = \"32 KiB\"");
    env.restart().await;
    let acknowledged = killed_under_load(&mut env, support::write_load).await;
    assert!(
        segment_count(&env) >= 3,
        "segments were sealed: {}",
        segment_count(&env)
    );
    env.restart().await;
    env.settle().await;
    let c = env.connect("agent").await;
    c.simple_query("SELECT 1").await.unwrap();
    env.stop().await;
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    let acknowledged: Vec<String> = acknowledged.into_iter().collect();
    assert_all_recorded(&acknowledged, &recorded_notes(&env));
}

/// Issue 17: sealed segments archived with `archive_command` while the
/// gateway records a write load. The command fails twice (the archive is
/// "down"); each attempt is recorded and retried until it succeeds, later
/// segments wait their turn; `retain_local = 1` then removes archived
/// segments from disk, each removal recorded first. The archive and the
/// segments left verify together as the whole log, the segments left
/// verify alone, and a restarted gateway rebuilds its state from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_command_failures_are_retried_and_recorded_and_old_segments_leave() {
    let mut env = Env::start(POLICY).await;
    env.stop().await;
    let archive = env.dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let failures = env.dir.path().join("failures");
    let script = env.dir.path().join("archive.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Down for the first two attempts, then copies.\n\
             n=$(cat {f} 2>/dev/null || echo 0)\n\
             if [ \"$n\" -lt 2 ]; then echo $((n + 1)) > {f}; echo 'archive unreachable' >&2; exit 3; fi\n\
             test ! -e {a}/\"$2\" && cp \"$1\" {a}/\"$2\"\n",
            f = failures.display(),
            a = archive.display()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace("snapshot_every = 10000", "snapshot_every = 50");
    std::fs::write(&env.config, text).unwrap();
    configure_ledger(
        &env,
        &format!(
            "segment_max = \"32 KiB\"\narchive_command = \"sh {} %p %f\"\nretain_local = 1",
            script.display()
        ),
    );
    env.restart().await;
    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(env.connect("agent").await);
    }
    let (tasks, acknowledged) = support::write_load(writers);
    // Cheap to watch: the archive's files, and the oldest segment on disk.
    let archived = || std::fs::read_dir(&archive).unwrap().count();
    let oldest = |env: &Env| segment_files(&env.ledger()).unwrap()[0].0;
    let started = std::time::Instant::now();
    while archived() < 3 || oldest(&env) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "archived {} segments; the oldest on disk is segment {}",
            archived(),
            oldest(&env)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.stop().await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let local = segment_files(&env.ledger()).unwrap();
    assert!(local[0].0 >= 2, "old segments left the disk: {local:?}");
    // The segments left verify alone (from the first one's opening record)...
    let report = env.verify();
    assert!(report.is_intact(), "{}", report.to_text());
    // ...and with the archive, as the whole log from event 0.
    let key = std::fs::read_to_string(env.dir.path().join("gh").join("verifier.pub")).unwrap();
    let key = gatehouse_verify::VerifierKey::parse(key.trim()).unwrap();
    let together = env.dir.path().join("together");
    std::fs::create_dir(&together).unwrap();
    for entry in std::fs::read_dir(&archive).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), together.join(entry.file_name())).unwrap();
    }
    for (_, file) in &local {
        std::fs::copy(file, together.join(file.file_name().unwrap())).unwrap();
    }
    let whole = gatehouse_verify::verify_ledger(&together, &key, None).unwrap();
    assert!(whole.is_intact(), "{}", whole.to_text());
    assert_eq!(whole.from, None, "verified from event 0");
    assert_eq!(whole.events, report.events + report.from.unwrap());
    let everything: Vec<EventBody> =
        gatehouse_ledger::LedgerReader::open(together.join("ledger.db"))
            .unwrap()
            .events(0..u64::MAX)
            .map(|e| e.unwrap().event.body)
            .collect();
    // Segment 0: two failed attempts recorded with the command's error,
    // then the one that succeeded; a removal recorded for each file gone.
    let attempts: Vec<(u64, bool, Option<String>)> = everything
        .iter()
        .filter_map(|e| match e {
            EventBody::SegmentArchived(a) if a.segment == 0 => {
                Some((a.attempt, a.succeeded, a.detail.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        !attempts[0].1 && !attempts[1].1 && attempts[2].1,
        "{attempts:?}"
    );
    assert!(
        attempts[0]
            .2
            .as_deref()
            .unwrap()
            .contains("archive unreachable"),
        "{attempts:?}"
    );
    let removals: Vec<u64> = everything
        .iter()
        .filter_map(|e| match e {
            EventBody::SegmentRemoved(r) => Some(r.segment),
            _ => None,
        })
        .collect();
    assert_eq!(removals, (0..local[0].0).collect::<Vec<_>>());
    // Every acknowledged write is in the log that archive and disk hold.
    assert_all_recorded(&acknowledged.lock().unwrap(), &notes_in(&everything));
    // A restart rebuilds the state from a snapshot in the segments kept.
    env.restart().await;
    let reader = env.connect("reader").await;
    assert!(reader.simple_query("DELETE FROM orders").await.is_err());
    env.connect("agent")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}
