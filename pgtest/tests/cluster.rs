//! The throwaway cluster itself: it starts, answers over TCP with a password,
//! logs statements, runs alongside others and leaves nothing behind.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_pgtest::{find_bindir, PgCluster};

/// Whether a process runs (a zombie, waiting for a reaper, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) STATE ...": the state follows the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
        Err(_) => false,
    }
}

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

#[test]
fn select_one_over_tcp() {
    let pg = PgCluster::start();
    assert_eq!(pg.host(), "127.0.0.1");
    assert!(pg.port() > 0);
    assert!(connects(pg.port()));
    assert_eq!(pg.psql("postgres", "SELECT 1"), "1");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ),
        "t"
    );
    assert_eq!(pg.psql("postgres", "SELECT current_user"), pg.superuser());
    assert_eq!(
        pg.psql("postgres", "SHOW server_encoding; "),
        "UTF8",
        "initdb -E UTF8"
    );
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(pg.bindir(), find_bindir().unwrap().as_path());
    assert!(pg.bindir().join("initdb").is_file());
}

#[test]
fn url_has_credentials_host_port_and_database() {
    let pg = PgCluster::start();
    assert_eq!(
        pg.url("app"),
        format!(
            "postgres://{}:{}@127.0.0.1:{}/app",
            pg.superuser(),
            pg.password(),
            pg.port()
        )
    );
    // The URL works as a libpq connection string.
    let out = Command::new(pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT current_database()"])
        .arg(pg.url("postgres"))
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
}

#[test]
fn tcp_requires_the_password_with_scram() {
    let pg = PgCluster::start();
    assert!(!pg.password().is_empty());
    // Every pg_hba rule demands scram-sha-256: nothing is trusted.
    let methods = pg.psql(
        "postgres",
        "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules",
    );
    assert_eq!(methods, "scram-sha-256");
    assert_eq!(
        pg.psql("postgres", "SHOW password_encryption"),
        "scram-sha-256"
    );

    // A wrong password is refused.
    let out = Command::new(pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT 1", "-h", "127.0.0.1", "-U"])
        .arg(pg.superuser())
        .arg("-p")
        .arg(pg.port().to_string())
        .arg("-d")
        .arg("postgres")
        .env("PGPASSWORD", "not-the-password")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[test]
fn create_database_and_statements_reach_the_log() {
    let pg = PgCluster::start();
    pg.create_database("app_db");
    assert_eq!(pg.psql("app_db", "SELECT current_database()"), "app_db");
    pg.psql("app_db", "SELECT 'pgtest-marker-7c1f' AS marker");
    let log = pg.log();
    assert!(
        log.contains("statement: CREATE DATABASE \"app_db\""),
        "CREATE DATABASE missing from the log:\n{log}"
    );
    assert!(
        log.contains("statement: SELECT 'pgtest-marker-7c1f' AS marker"),
        "marker statement missing from the log:\n{log}"
    );
    assert!(
        log.contains("connection authorized: user=postgres database=app_db"),
        "connection line missing from the log:\n{log}"
    );
}

#[test]
fn failing_sql_is_reported() {
    let pg = PgCluster::start();
    let err = pg
        .try_psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pg.psql("postgres", "SELEC 1");
    }))
    .unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("syntax error"), "{msg}");
}

#[test]
fn two_clusters_run_at_once() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(a.password(), b.password());
    a.psql("postgres", "CREATE TABLE only_in_a (x int)");
    assert_eq!(
        a.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"
        ),
        "1"
    );
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"
        ),
        "0"
    );
    assert!(a.log().contains("CREATE TABLE only_in_a"));
    assert!(!b.log().contains("CREATE TABLE only_in_a"));
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let pg = PgCluster::start();
    let port = pg.port();
    let data_dir = pg.data_dir().to_path_buf();
    let root: PathBuf = data_dir.parent().unwrap().to_path_buf();
    let pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(root.is_dir());
    assert!(alive(pid));
    assert!(connects(port));

    drop(pg);

    assert!(!root.exists(), "{} still exists", root.display());
    // pg_ctl stop returns once postmaster.pid is gone; the exit follows at once.
    for _ in 0..50 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "postmaster {pid} still running");
    assert!(!connects(port), "port {port} still accepts connections");
}
