//! Throwaway PostgreSQL clusters for integration tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory and
//! starts a server that listens on a free port on 127.0.0.1 only, with
//! password (`scram-sha-256`) authentication for every connection and
//! `log_statement=all`, so a test can read back with [`PgCluster::log`] what
//! really reached the server. Dropping the cluster stops the server
//! (`pg_ctl -m immediate stop`) and deletes its directory. Clusters are
//! independent: tests running in parallel each get their own directory and
//! port.
//!
//! PostgreSQL refuses to run as root, so when the test process is root the
//! server-side commands (`initdb`, `pg_ctl`) run as the unprivileged
//! `postgres` OS user through `runuser`, and the cluster directory is handed
//! to that user. Client commands (`psql`) always connect over TCP with the
//! superuser's password, as the gateway does.
//!
//! ```no_run
//! let pg = gatehouse_pgtest::PgCluster::start();
//! pg.create_database("app");
//! assert_eq!(pg.psql("app", "SELECT 1"), "1");
//! assert!(pg.log().contains("SELECT 1"));
//! ```

#![warn(missing_docs)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// The address every cluster listens on, and the only one.
const HOST: &str = "127.0.0.1";
/// The bootstrap superuser every cluster is created with.
const SUPERUSER: &str = "postgres";
/// The OS user that runs the server when the test process is root.
const OS_USER: &str = "postgres";
/// How many ports `start` tries before giving up on collisions.
const START_ATTEMPTS: usize = 5;
/// Environment variable naming a directory holding initdb, pg_ctl, postgres.
pub const BINDIR_ENV: &str = "GATEHOUSE_PG_BINDIR";

/// A throwaway PostgreSQL cluster: initdb into a temp dir, listening on a free
/// port on 127.0.0.1 only, torn down (stopped and deleted) on Drop.
pub struct PgCluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    password: String,
    /// `Some(user)` when server commands must run as that OS user (we are root).
    run_as: Option<String>,
    /// Last field: dropped (directory deleted) after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Create and start a cluster. Panics with an actionable message when the
    /// PostgreSQL binaries are missing or the server cannot start.
    pub fn start() -> PgCluster {
        let bindir = find_bindir().unwrap_or_else(|| {
            panic!(
                "gatehouse-pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; \
                 install the postgresql package: apt-get install postgresql \
                 (or run `bash .ci/run`, which installs it). Searched: {}",
                searched_locations().join(", ")
            )
        });
        let run_as = if is_root() {
            if !user_exists(OS_USER) {
                panic!(
                    "gatehouse-pgtest: running as root, and PostgreSQL refuses to run as root, \
                     but there is no `{OS_USER}` OS user to run it as; install the postgresql \
                     package (apt-get install postgresql), which creates it, or create it with \
                     `useradd --system --no-create-home --shell /usr/sbin/nologin {OS_USER}`"
                );
            }
            Some(OS_USER.to_string())
        } else {
            None
        };

        // A 0755 directory under the system temp dir (itself traversable by
        // everyone), owned by the server's user when we are root.
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pgtest-")
            .tempdir_in(std::env::temp_dir())
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: cannot create a temp dir: {e}"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: chmod {}: {e}", dir.path().display()));
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{password}\n"))
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: write {}: {e}", pwfile.display()));
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: chmod {}: {e}", pwfile.display()));
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| {
                    panic!("gatehouse-pgtest: chown {user} {}: {e}", path.display())
                });
            }
        }

        let mut cluster = PgCluster {
            data_dir: dir.path().join("data"),
            log_file: dir.path().join("server.log"),
            bindir,
            port: 0,
            password,
            run_as,
            dir,
        };

        let out = cluster.server_command(
            "initdb",
            [
                "-D".as_ref(),
                cluster.data_dir.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "-A".as_ref(),
                "scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        if !out.status.success() {
            panic!(
                "gatehouse-pgtest: initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = fs::remove_file(&pwfile);

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let _ = fs::remove_file(&cluster.log_file);
            let opts = format!(
                "-c listen_addresses={HOST} -p {port} -c unix_socket_directories='{}' \
                 -c fsync=off -c max_connections=200 -c log_statement=all \
                 -c log_connections=on -c logging_collector=off",
                cluster.dir.path().display()
            );
            let out = cluster.server_command(
                "pg_ctl",
                [
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-D".as_ref(),
                    cluster.data_dir.as_os_str(),
                    "-l".as_ref(),
                    cluster.log_file.as_os_str(),
                    "-o".as_ref(),
                    OsStr::new(&opts),
                    "start".as_ref(),
                ],
            );
            if out.status.success() {
                cluster.port = port;
                return cluster;
            }
            let log = fs::read_to_string(&cluster.log_file).unwrap_or_default();
            let report = format!(
                "port {port}: pg_ctl {}:\n{}{}\n--- server log ---\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let collision = log.contains("Address already in use")
                || log.contains("could not create any TCP/IP sockets")
                || log.contains("could not bind");
            // A server that half-started must not be left behind.
            cluster.stop();
            failures.push(report);
            if !collision {
                break;
            }
        }
        panic!(
            "gatehouse-pgtest: could not start PostgreSQL in {}:\n{}",
            cluster.data_dir.display(),
            failures.join("\n")
        );
    }

    /// The TCP port the server listens on (on [`host`](Self::host) only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The bootstrap superuser's name.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The bootstrap superuser's password (authentication is scram-sha-256).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://USER:PASS@127.0.0.1:PORT/DATABASE` for the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{HOST}:{}/{}",
            percent_encode(SUPERUSER),
            percent_encode(&self.password),
            self.port,
            percent_encode(database)
        )
    }

    /// The directory holding initdb, pg_ctl, postgres and (usually) psql and pgbench.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The cluster's data directory (owned by the server's OS user).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Run `psql -X -A -t -v ON_ERROR_STOP=1 -c SQL` as the superuser over TCP
    /// and return its stdout without the trailing newline. Panics with psql's
    /// stderr when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|e| {
            panic!("gatehouse-pgtest: psql -d {database} -c {sql:?} failed: {e}")
        })
    }

    /// Like [`psql`](Self::psql), but returns psql's stderr (and exit status)
    /// as the error instead of panicking: for statements expected to fail.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.client_program("psql"));
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(HOST)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql);
        clean_pg_env(&mut cmd);
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "gatehouse-pgtest")
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: cannot run psql: {e}"));
        if out.status.success() {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            while s.ends_with('\n') {
                s.pop();
            }
            Ok(s)
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }

    /// `CREATE DATABASE "name"` (the name is quoted as an identifier).
    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// The server log so far (`log_statement=all`, `log_connections=on`).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_else(|e| {
            panic!(
                "gatehouse-pgtest: cannot read server log {}: {e}",
                self.log_file.display()
            )
        })
    }

    /// Run a server-side program from the bindir, as the server's OS user.
    fn server_command<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exe = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            // The test's working directory may not be readable by the server's user.
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        clean_pg_env(&mut cmd);
        cmd.env("LC_ALL", "C");
        cmd.output().unwrap_or_else(|e| {
            panic!(
                "gatehouse-pgtest: cannot run {}{}: {e}",
                if self.run_as.is_some() {
                    "runuser ... "
                } else {
                    ""
                },
                exe.display()
            )
        })
    }

    /// psql/pgbench from the bindir, or from PATH when the bindir lacks it.
    fn client_program(&self, name: &str) -> PathBuf {
        let p = self.bindir.join(name);
        if p.is_file() {
            p
        } else {
            PathBuf::from(name)
        }
    }

    /// Restarts the server with `pg_ctl restart -m fast` (open sessions are
    /// ended, as in a failover or an operator's restart), on the same port
    /// and options; waits until it accepts connections again.
    pub fn restart_fast(&self) {
        let out = self.server_command(
            "pg_ctl",
            [
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                self.log_file.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "restart".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "gatehouse-pgtest: pg_ctl restart failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server if it runs; kill it if `pg_ctl stop` fails. Never panics.
    fn stop(&self) {
        let pid_file = self.data_dir.join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let out = self.server_command(
            "pg_ctl",
            [
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "stop".as_ref(),
            ],
        );
        if out.status.success() {
            return;
        }
        // Last resort: SIGKILL the postmaster named in postmaster.pid.
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        eprintln!(
            "gatehouse-pgtest: pg_ctl stop failed for {} ({}): {}",
            self.data_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        // `self.dir` (a TempDir) is dropped after this and deletes the tree.
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("bindir", &self.bindir)
            .finish_non_exhaustive()
    }
}

/// Find the directory holding the PostgreSQL server binaries (initdb, pg_ctl,
/// postgres): `$GATEHOUSE_PG_BINDIR`, then `pg_config --bindir`, then
/// /usr/lib/postgresql/15/bin, then the newest /usr/lib/postgresql/*/bin,
/// then the directory `initdb` on PATH resolves to.
pub fn find_bindir() -> Option<PathBuf> {
    candidates().into_iter().find(|d| has_server_binaries(d))
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(d) = std::env::var_os(BINDIR_ENV) {
        out.push(PathBuf::from(d));
    }
    if let Ok(o) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        if o.status.success() {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !s.is_empty() {
                out.push(PathBuf::from(s));
            }
        }
    }
    out.push(PathBuf::from("/usr/lib/postgresql/15/bin"));
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        out.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Follow symlinks (e.g. /usr/local/bin/initdb -> .../15/bin/initdb)
                // so pg_ctl and postgres are looked for next to the real binary.
                if let Some(parent) = fs::canonicalize(&initdb)
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                {
                    out.push(parent);
                }
                out.push(dir);
            }
        }
    }
    out
}

fn searched_locations() -> Vec<String> {
    let mut v = vec![format!("${BINDIR_ENV}"), "`pg_config --bindir`".to_string()];
    v.extend(candidates().iter().map(|p| p.display().to_string()));
    v.push("/usr/lib/postgresql/*/bin".to_string());
    v.push("initdb on PATH".to_string());
    v.dedup();
    v
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

fn is_root() -> bool {
    match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false),
    }
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .arg(flag)
            .arg(user)
            .output()
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: cannot run id: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("gatehouse-pgtest: `id {flag} {user}` failed"))
    };
    (id("-u"), id("-g"))
}

/// Remove the PG* variables of the caller's environment so that nothing
/// (PGHOST, PGSERVICE, PGSSLMODE, PGPASSFILE, PGOPTIONS...) changes where or
/// how we connect.
fn clean_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(k);
        }
    }
}

/// Ports this process has handed out; never handed out twice, so a port a
/// dropped cluster released is not reused by a cluster another test starts
/// while the first test checks that the port is closed.
fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("gatehouse-pgtest: cannot bind 127.0.0.1:0: {e}"));
        let mut used = used_ports().lock().unwrap_or_else(|p| p.into_inner());
        if used.insert(port) {
            return port;
        }
    }
    panic!("gatehouse-pgtest: no unused free port found");
}

/// 32 lowercase hex characters from /dev/urandom (URL-safe as is).
fn random_password() -> String {
    let mut buf = [0u8; 16];
    let read = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if let Err(e) = read {
        fallback_random(&mut buf, e);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn fallback_random(buf: &mut [u8; 16], _: io::Error) {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("abc-_.~09"), "abc-_.~09");
        assert_eq!(percent_encode("a b/c@d:é"), "a%20b%2Fc%40d%3A%C3%A9");
    }

    #[test]
    fn passwords_differ_and_are_hex() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn free_ports_are_not_reused() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(used_ports().lock().unwrap().contains(&a));
    }
}
