//! `gatehouse-bench`: measured figures for docs/benchmarks.md.
//!
//! Benchmarks print what they measured and the targets they are judged
//! against; they never pass or fail. Absolute numbers swing between machines,
//! so each run describes its machine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::{Param, Protocol, QueryReceived};
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{Durability, EventBody, Ledger, WriterOptions};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "Gatehouse benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sustained appends: throughput, latency percentiles, storage overhead.
    LedgerAppend {
        /// Concurrent appenders (each waits for its append before the next).
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        appenders: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `os` or `fsync`.
        #[arg(long, default_value = "os")]
        durability: String,
        /// Directory for the ledger files (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run the gateway's snapshot thread alongside, snapshotting every
        /// this many events (0: not at all), to see what it costs appenders.
        #[arg(long, default_value_t = 0)]
        snapshot_every: u64,
    },
    /// Builds a ledger of N events and times full verification of it.
    LedgerVerify {
        /// Events in the ledger.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Reuse (or keep) the ledger at this path.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Builds a ledger of N events (64 sessions) and times exporting and
    /// verifying evidence bundles out of it.
    Bundle {
        /// Events in the ledger.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Reuse (or keep) the ledger at this path.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// The session to export (one of 0..64).
        #[arg(long, default_value_t = 7)]
        session: u64,
    },
    /// Time from a block to the last of the identity's sessions ending, on a
    /// throwaway PostgreSQL, with every session busy in a long statement.
    Containment {
        /// Open sessions of the blocked identity, comma-separated runs.
        #[arg(long, value_delimiter = ',', default_value = "1,50")]
        sessions: Vec<usize>,
    },
    /// Streams a large masked result through a gateway (a separate
    /// `gatehouse serve` process, built next to this binary) and directly,
    /// on a throwaway PostgreSQL: time ratio and the gateway's memory.
    Masking {
        /// Rows in the result.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Timed runs per way of reading (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Builds a realistic ledger of N events (sessions, statements,
    /// decisions, responses, and a few policy, identity, block and approval
    /// events) while the gateway's snapshot thread writes a snapshot every
    /// K events, then times start-up's state rebuild and `state --at` at
    /// several points, with and without snapshots.
    State {
        /// Events in the ledger.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// A snapshot every this many events (the gateway's default).
        #[arg(long, default_value_t = 10_000)]
        every: u64,
        /// Reuse (or keep) the ledger at this path.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Appends forever from 4 tasks, printing each committed sequence number
    /// on its own line; used by the crash-safety test.
    AppendStream {
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
    },
}

fn body(i: u64) -> EventBody {
    QueryReceived {
        session: i % 64,
        identity: format!("agent-{}", i % 64),
        query: i,
        sql: "SELECT abalance FROM pgbench_accounts WHERE aid = $1".into(),
        params: vec![Param {
            format: 0,
            value: Some(Bytes((i % 100_000).to_string().into_bytes())),
        }],
        statement: Some(String::new()),
        portal: Some(String::new()),
        protocol: Protocol::Extended,
    }
    .into()
}

fn bench_signer() -> NoteSigner {
    NoteSigner::from_seed("gatehouse.bench/ledger", [11; 32]).expect("valid name")
}

fn open(path: &Path, durability: Durability) -> Result<Ledger> {
    let mut o = WriterOptions::new(path, bench_signer());
    o.durability = durability;
    Ok(Ledger::open(o)?)
}

fn file_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs, {model}")
}

async fn append_run(
    dir: &Path,
    appenders: usize,
    seconds: u64,
    durability: Durability,
    snapshot_every: u64,
) -> Result<()> {
    let path = dir.join(format!("append-{appenders}.db"));
    let _ = std::fs::remove_file(&path);
    let ledger = open(&path, durability)?;
    let snapshots = gatehouse::gateway::snapshots::Snapshotter::start(
        ledger.clone(),
        gatehouse_engine::state::GatewayState::default(),
        snapshot_every,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let body_bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // One second of warm-up is excluded from the latency histogram.
    let warm_until = Instant::now() + Duration::from_secs(1);
    for a in 0..appenders {
        let ledger = ledger.clone();
        let stop = stop.clone();
        let body_bytes = body_bytes.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut n = 0u64;
            let mut i = a as u64;
            while !stop.load(Ordering::Relaxed) {
                let event = body(i);
                let pending = event.to_pending();
                body_bytes.fetch_add(pending.body.len() as u64, Ordering::Relaxed);
                let t = Instant::now();
                ledger.append_pending(vec![pending]).await.expect("append");
                if t > warm_until {
                    hist.record(t.elapsed().as_micros().max(1) as u64).ok();
                    n += 1;
                }
                i += appenders as u64;
            }
            (hist, n)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut measured = 0;
    for t in tasks {
        let (h, n) = t.await?;
        hist.add(h)?;
        measured += n;
    }
    if let Some(snapshots) = snapshots {
        tokio::task::spawn_blocking(move || snapshots.stop()).await?;
    }
    ledger.close();
    // The writer's WAL thread truncates the WAL on close; what remains is the file.
    let reader = gatehouse_ledger::LedgerReader::open(&path)?;
    let events = reader.len()?;
    let checkpoints = reader.checkpoints()?.len() as u64;
    let bytes = file_bytes(&path);
    let body_avg = body_bytes.load(Ordering::Relaxed) as f64 / events as f64;
    let overhead = bytes as f64 / events as f64 - body_avg;
    let rate = measured as f64 / elapsed.as_secs_f64();
    println!(
        "appenders={appenders:<3} events/s={rate:>9.0} p50={:>6}us p99={:>6}us p99.9={:>6}us max={:>7}us \
         events={events} checkpoints={checkpoints} (avg batch {:.1}) file={:.1}MB body={body_avg:.0}B overhead={overhead:.0}B/event",
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        events as f64 / checkpoints.max(1) as f64,
        bytes as f64 / 1e6,
    );
    Ok(())
}

async fn fill(path: &Path, events: u64) -> Result<()> {
    let ledger = open(path, Durability::Os)?;
    let next = Arc::new(AtomicU64::new(
        gatehouse_ledger::LedgerReader::open(path)?.len()?,
    ));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let ledger = ledger.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            // One event per append from 64 tasks: batches as the gateway makes them.
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    break;
                }
                ledger.append(&body(i)).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    ledger.close();
    Ok(())
}

async fn verify_run(events: u64, ledger: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile_dir()?;
    let path = ledger.unwrap_or_else(|| tmp.join("verify.db"));
    let have = if path.exists() {
        gatehouse_ledger::LedgerReader::open(&path)?.len()?
    } else {
        0
    };
    if have < events {
        let t = Instant::now();
        fill(&path, events).await?;
        println!(
            "built a ledger of {events} events in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let key = gatehouse_verify::VerifierKey::parse(&bench_signer().verifier().to_string())?;
    let t = Instant::now();
    let report = gatehouse_verify::verify_ledger(&path, &key, None)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "verified {} events, {} checkpoints in {secs:.2}s: {:.0} events/s ({})",
        report.events,
        report.checkpoints,
        report.events as f64 / secs,
        if report.is_intact() {
            "intact"
        } else {
            "FAILED"
        }
    );
    Ok(())
}

/// Times `bundle::export` and `gatehouse_verify::verify_bundle_bytes` for
/// a session, a time range and an identity of a ledger of `events` events.
async fn bundle_run(events: u64, ledger: Option<PathBuf>, session: u64) -> Result<()> {
    use gatehouse_ledger::bundle::{self, ExportRequest, Selection};
    let tmp = tempfile_dir()?;
    let path = ledger.unwrap_or_else(|| tmp.join("bundle.db"));
    let have = if path.exists() {
        gatehouse_ledger::LedgerReader::open(&path)?.len()?
    } else {
        0
    };
    if have < events {
        let t = Instant::now();
        fill(&path, events).await?;
        println!(
            "built a ledger of {events} events in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let reader = gatehouse_ledger::LedgerReader::open(&path)?;
    let n = reader.len()?;
    let middle = reader.get(n / 2)?.context("the middle event")?.event.ts;
    let earlier = reader.checkpoints()?.get(10).map(|c| c.note.clone());
    let key = gatehouse_verify::VerifierKey::parse(&bench_signer().verifier().to_string())?;
    let runs: Vec<(&str, ExportRequest)> = vec![
        (
            "session",
            ExportRequest {
                selection: Selection::Session(session),
                consistent_with: earlier.into_iter().collect(),
                prove_complete: false,
            },
        ),
        (
            "time range, 1 ms",
            ExportRequest {
                selection: Selection::TimeRange {
                    from: middle,
                    to: middle + 1_000_000,
                },
                consistent_with: vec![],
                prove_complete: true,
            },
        ),
    ];
    for (what, request) in runs {
        let t = Instant::now();
        let b = bundle::export(&reader, &request)?;
        let bytes = b.to_bytes();
        let export_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let report = gatehouse_verify::verify_bundle_bytes(&bytes, &key, None, None)?;
        let verify_secs = t.elapsed().as_secs_f64();
        println!(
            "{what}: {} events of {n}, {} bytes ({:.0} B/event); export {export_secs:.2}s, verify {:.1}ms ({})",
            report.events,
            bytes.len(),
            bytes.len() as f64 / report.events.max(1) as f64,
            verify_secs * 1e3,
            if report.is_intact() { "intact" } else { "FAILED" }
        );
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn append_stream(path: PathBuf) -> Result<()> {
    use std::io::Write;
    let ledger = open(&path, Durability::Os)?;
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for a in 0..4u64 {
        let ledger = ledger.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = a;
            loop {
                let r = ledger.append(&body(i)).await.expect("append");
                let mut o = out.lock().expect("stdout lock");
                writeln!(o, "{}", r.seq)
                    .and_then(|_| o.flush())
                    .expect("stdout");
                i += 4;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Blocks an identity with `n` sessions each running `pg_sleep(60)` and
/// measures until every client has seen its session end.
async fn containment(n: usize) -> Result<()> {
    use gatehouse::config::Config;
    use gatehouse::gateway::Gateway;
    let pg = tokio::task::spawn_blocking(|| {
        let pg = gatehouse_pgtest::PgCluster::start();
        pg.create_database("shop");
        pg
    })
    .await?;
    let dir = tempfile_dir()?.join(format!("containment-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || gatehouse::init::init(&dir, Some("gatehouse.bench/containment"))
    })
    .await??;
    std::env::set_var("GATEHOUSE_BENCH_UPSTREAM", pg.password());
    let mut text = std::fs::read_to_string(&out.config)?;
    text.push_str(&format!(
        "\n[admin]\naddress = \"127.0.0.1:0\"\n[listen]\naddress = \"127.0.0.1:0\"\n[[target]]\nname = \"shop\"\n\
         url = \"postgres://{}@127.0.0.1:{}/shop\"\npassword_env = \"GATEHOUSE_BENCH_UPSTREAM\"\n",
        pg.superuser(),
        pg.port()
    ));
    std::fs::write(&out.config, text)?;
    let config = Config::load(&out.config)?;
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"sleep\"\nidentity = \"bot\"\nclasses = [\"read\", \"function\"]\nfunctions = [\"pg_sleep\"]\naction = \"allow\"\n",
    )?;
    let secret = tokio::task::spawn_blocking({
        let config_path = out.config.clone();
        let policy = policy.clone();
        move || -> Result<String> {
            let config = Config::load(&config_path)?;
            gatehouse::commands::policy_apply(&config, &policy, "bench".into(), true)?;
            gatehouse::commands::identity_create_offline(&config, "bot", None, "bench".into())?;
            Ok(gatehouse::commands::credential_issue_offline(
                &config,
                "bot",
                Duration::from_secs(600),
                "bench".into(),
            )?
            .secret)
        }
    })
    .await??;
    let gateway = Gateway::bind(&config).await?;
    let addr = gateway.local_addr()?;
    let shared = gateway.shared();
    let serving = tokio::spawn(gateway.run());
    let conn = format!(
        "host=127.0.0.1 port={} user=bot password={secret} dbname=shop",
        addr.port()
    );
    let mut running = Vec::new();
    for _ in 0..n {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        running.push(tokio::spawn(async move {
            let _ = client.simple_query("SELECT pg_sleep(60)").await;
            // The session is over once the next statement fails too.
            let _ = client.simple_query("SELECT 1").await;
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    shared
        .block("bot", "bench", "containment benchmark", None)
        .await?;
    let committed = start.elapsed();
    let mut last = start;
    for r in running {
        last = last.max(r.await?);
    }
    println!(
        "sessions={n:<3} block committed after {:.2} ms; last session ended {:.2} ms after the block was requested",
        committed.as_secs_f64() * 1e3,
        (last - start).as_secs_f64() * 1e3
    );
    serving.abort();
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The gateway's resident and peak memory (VmRSS, VmHWM), in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the memory of process {pid}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// CPU time the process has used, in nanoseconds (all its threads).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Reads `sql` to the end in the simple (text) or extended (binary)
/// protocol; returns (rows, the first row's values, elapsed).
async fn stream(
    client: &tokio_postgres::Client,
    sql: &str,
    binary: bool,
) -> Result<(u64, Vec<String>, Duration)> {
    let start = Instant::now();
    let (n, first) = if binary {
        let rows = client.query(sql, &[]).await?;
        let first = rows
            .first()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        (rows.len() as u64, first)
    } else {
        let mut n = 0;
        let mut first = Vec::new();
        for m in client.simple_query(sql).await? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                if n == 0 {
                    first = (0..row.len())
                        .map(|i| row.get(i).unwrap_or_default().to_owned())
                        .collect();
                }
                n += 1;
            }
        }
        (n, first)
    };
    Ok((n, first, start.elapsed()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn masking(rows: u64, runs: usize) -> Result<()> {
    use gatehouse::config::Config;
    let server = std::env::current_exe()?.with_file_name("gatehouse");
    if !server.exists() {
        anyhow::bail!(
            "{} is missing; build the gateway next to the benchmark first: cargo build --release -p gatehouse",
            server.display()
        );
    }
    let pg = tokio::task::spawn_blocking(move || {
        let pg = gatehouse_pgtest::PgCluster::start();
        pg.create_database("shop");
        pg.psql(
            "shop",
            &format!(
                "CREATE TABLE people AS SELECT g AS id, 'Person ' || (g % 997) AS name,
                   'person' || g || '@example.com' AS email,
                   lpad((100000000 + g::int8 * 7919 % 800000000)::text, 9, '0') AS ssn,
                   '4111' || lpad((g::int8 * 104729)::text, 12, '0') AS card_number,
                   'order notes for customer ' || g AS note
                 FROM generate_series(1, {rows}) g;
                 ANALYZE people;"
            ),
        );
        pg
    })
    .await?;
    let dir = tempfile_dir()?.join("masking");
    let _ = std::fs::remove_dir_all(&dir);
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || gatehouse::init::init(&dir, Some("gatehouse.bench/masking"))
    })
    .await??;
    let port = free_port()?;
    let mut text = std::fs::read_to_string(&out.config)?;
    text.push_str(&format!(
        "\n[admin]\naddress = \"127.0.0.1:{}\"\n[listen]\naddress = \"127.0.0.1:{port}\"\n[[target]]\nname = \"shop\"\n\
         url = \"postgres://{}@127.0.0.1:{}/shop\"\npassword_env = \"GATEHOUSE_BENCH_UPSTREAM\"\n",
        free_port()?,
        pg.superuser(),
        pg.port()
    ));
    std::fs::write(&out.config, text)?;
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[[rule]]
name = "read-people"
identity = "*"
classes = ["read", "transaction"]
tables = ["public.people"]
action = "allow"

[[rule]]
name = "mask-people"
identity = "masked"
action = "mask"
classes = ["read", "transaction"]
tables = ["public.people"]
[rule.mask]
"public.people.name" = "hash"
"public.people.email" = "email"
"public.people.ssn" = "redact"
"public.people.card_number" = { strategy = "partial", keep = 4 }
"#,
    )?;
    let secrets = tokio::task::spawn_blocking({
        let config_path = out.config.clone();
        move || -> Result<Vec<String>> {
            let config = Config::load(&config_path)?;
            gatehouse::commands::policy_apply(&config, &policy, "bench".into(), true)?;
            let mut secrets = Vec::new();
            for who in ["masked", "plain"] {
                gatehouse::commands::identity_create_offline(&config, who, None, "bench".into())?;
                secrets.push(
                    gatehouse::commands::credential_issue_offline(
                        &config,
                        who,
                        Duration::from_secs(3600),
                        "bench".into(),
                    )?
                    .secret,
                );
            }
            Ok(secrets)
        }
    })
    .await??;
    let mut child = std::process::Command::new(&server)
        .args(["serve", "--config"])
        .arg(&out.config)
        .env("GATEHOUSE_BENCH_UPSTREAM", pg.password())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", server.display()))?;
    let pid = child.id();
    let connect = |conn: String| async move {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        anyhow::Ok(client)
    };
    let through = |who: &str, secret: &str| {
        format!("host=127.0.0.1 port={port} user={who} password={secret} dbname=shop")
    };
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        let _ = child.kill();
        anyhow::bail!("the gateway did not start listening on port {port}");
    }
    let direct = connect(format!(
        "host=127.0.0.1 port={} user={} password={} dbname=shop",
        pg.port(),
        pg.superuser(),
        pg.password()
    ))
    .await?;
    let masked = connect(through("masked", &secrets[0])).await?;
    let plain = connect(through("plain", &secrets[1])).await?;
    let sql = "SELECT id, name, email, ssn, card_number, note FROM people";
    // Warm up: caches, the catalog lookup, the statement analysis.
    for c in [&direct, &masked, &plain] {
        stream(c, sql, false).await?;
    }
    let (rss_before, _) = memory_kib(pid)?;
    println!(
        "{rows} rows of 6 columns (4 masked: hash, email, redact, partial); median of {runs} runs"
    );
    for binary in [false, true] {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
        let mut cpu = [0u64; 3];
        let mut firsts = Vec::new();
        for _ in 0..runs {
            for (i, c) in [&direct, &plain, &masked].into_iter().enumerate() {
                let before = cpu_ns(pid);
                let (n, first, t) = stream(c, sql, binary).await?;
                cpu[i] += cpu_ns(pid) - before;
                anyhow::ensure!(n == rows, "read {n} rows, expected {rows}");
                times[i].push(t);
                if i == 2 {
                    firsts = first;
                }
            }
        }
        anyhow::ensure!(
            firsts.get(2).is_some_and(|e| e.starts_with("***@"))
                && firsts.get(3).is_some_and(|s| s == "[redacted]"),
            "the masked result is not masked: {firsts:?}"
        );
        let [d, p, m] = [0, 1, 2].map(|i| median(times[i].clone()));
        println!(
            "{:<28} direct {:>7.1} ms | gateway unmasked {:>7.1} ms ({:.2}x) | gateway masked {:>7.1} ms ({:.2}x direct)",
            if binary {
                "extended protocol, binary:"
            } else {
                "simple protocol, text:"
            },
            d.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            p.as_secs_f64() / d.as_secs_f64(),
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / d.as_secs_f64(),
        );
        println!(
            "{:<28} gateway CPU per run: unmasked {:.1} ms, masked {:.1} ms",
            "",
            cpu[1] as f64 / runs as f64 / 1e6,
            cpu[2] as f64 / runs as f64 / 1e6,
        );
    }
    let (rss_after, peak) = memory_kib(pid)?;
    println!(
        "gateway memory: RSS {:.1} MiB before the timed runs, {:.1} MiB after (peak {:.1} MiB)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Identities in the realistic ledger.
const AGENTS: u64 = 20;

fn agent(n: u64) -> String {
    format!("agent-{:02}", n % AGENTS)
}

/// One session's events, as the gateway writes them: opened; per statement
/// its record (query and decision in one event), then the response (denials
/// get none); closed.
async fn session_run(ledger: &Ledger, session: u64, appended: &AtomicU64) -> Result<()> {
    use gatehouse_ledger::event::{
        Action, Response, ResultColumn, ResultRow, SessionClosed, SessionOpened, Statement,
        StatementClass,
    };
    let identity = agent(session);
    let count = |n: usize| appended.fetch_add(n as u64, Ordering::Relaxed);
    ledger
        .append(
            &SessionOpened {
                session,
                identity: identity.clone(),
                target: "shop".into(),
                client_addr: format!("10.0.0.{}:{}", session % 250, 40_000 + session % 20_000),
                application_name: Some("orders-agent".into()),
                credential: Some(format!("cred-{identity}")),
                tls: true,
            }
            .into(),
        )
        .await?;
    count(1);
    let statements = 5 + session % 30;
    for query in 1..=statements {
        let id = (session * 31 + query) % 10_000;
        let denied = (session + query).is_multiple_of(25);
        let sql = if denied {
            "SELECT name, ssn FROM customers WHERE id = $1"
        } else {
            "SELECT id, total, day FROM orders WHERE customer = $1 ORDER BY day DESC LIMIT 3"
        };
        let record: EventBody = Statement {
            session,
            identity: identity.clone(),
            query,
            sql: sql.into(),
            params: vec![Param {
                format: 0,
                value: Some(Bytes(id.to_string().into_bytes())),
            }],
            statement: Some(String::new()),
            portal: Some(String::new()),
            protocol: Protocol::Extended,
            action: if denied { Action::Deny } else { Action::Allow },
            rule: Some(if denied { "no-ssn" } else { "agent-reads" }.into()),
            class: StatementClass::Read,
            tables: vec![if denied {
                "public.customers"
            } else {
                "public.orders"
            }
            .into()],
            columns: if denied {
                vec![
                    "public.customers.name".into(),
                    "public.customers.ssn".into(),
                ]
            } else {
                vec![
                    "public.orders.id".into(),
                    "public.orders.total".into(),
                    "public.orders.day".into(),
                ]
            },
            message: denied.then(|| "SSNs are off limits to agents".into()),
        }
        .into();
        ledger.append(&record).await?;
        count(1);
        if denied {
            continue;
        }
        let rows: Vec<ResultRow> = (0..1 + id % 3)
            .map(|r| ResultRow {
                values: vec![
                    Some(Bytes((id * 3 + r).to_string().into_bytes())),
                    Some(Bytes(format!("{}.{:02}", id % 500, r * 7).into_bytes())),
                    Some(Bytes(b"2026-11-25".to_vec())),
                ],
            })
            .collect();
        ledger
            .append(
                &Response {
                    session,
                    identity: identity.clone(),
                    query,
                    command_tag: Some(format!("SELECT {}", rows.len())),
                    rows: rows.len() as u64,
                    duration_ns: 180_000 + id * 13,
                    sqlstate: None,
                    error: None,
                    bytes: 64 + 40 * rows.len() as u64,
                    columns: ["id", "total", "day"]
                        .iter()
                        .zip([23, 1700, 1082])
                        .map(|(name, type_oid)| ResultColumn {
                            name: (*name).into(),
                            type_oid,
                            format: 0,
                        })
                        .collect(),
                    truncated: false,
                    result_digest: Some(Bytes(blake3::hash(&id.to_be_bytes()).as_bytes().to_vec())),
                    result: rows,
                }
                .into(),
            )
            .await?;
        count(1);
    }
    ledger
        .append(
            &SessionClosed {
                session,
                identity,
                reason: "client terminated".into(),
                statements,
            }
            .into(),
        )
        .await?;
    count(1);
    Ok(())
}

/// The control plane's occasional events: identities, credentials, policy,
/// blocks, approvals, failed logins, operator actions.
fn control_events(round: u64) -> Vec<EventBody> {
    use gatehouse_ledger::event::{
        ApprovalGranted, ApprovalRequested, AuthenticationFailed, CredentialIssued,
        IdentityBlocked, IdentityCreated, IdentityUnblocked, OperatorAction, OperatorAdded,
        PolicyChanged, StatementClass,
    };
    let policy = include_str!("../../../fixtures/policies/agents.toml");
    let identity = agent(round);
    let credential = |identity: &str, n: u64| -> EventBody {
        CredentialIssued {
            credential: format!("cred-{identity}-{n}"),
            identity: identity.to_owned(),
            operator: "alice".into(),
            expires_at: u64::MAX / 2,
            salt: Bytes(vec![7; 16]),
            iterations: 4096,
            stored_key: Bytes(blake3::hash(identity.as_bytes()).as_bytes().to_vec()),
            server_key: Bytes(blake3::hash(&n.to_be_bytes()).as_bytes().to_vec()),
        }
        .into()
    };
    if round == 0 {
        let mut setup: Vec<EventBody> = vec![PolicyChanged {
            operator: "alice".into(),
            source: policy.into(),
            digest: Bytes(blake3::hash(policy.as_bytes()).as_bytes().to_vec()),
        }
        .into()];
        for (name, roles) in [
            ("alice", vec!["admin", "auditor"]),
            ("bob", vec!["responder", "approver"]),
            ("carol", vec!["approver"]),
        ] {
            setup.push(
                OperatorAdded {
                    operator: name.into(),
                    roles: roles.into_iter().map(str::to_owned).collect(),
                    token_hash: Bytes(blake3::hash(name.as_bytes()).as_bytes().to_vec()),
                    added_by: "gatehouse-init".into(),
                }
                .into(),
            );
        }
        for n in 0..AGENTS {
            let identity = agent(n);
            setup.push(
                IdentityCreated {
                    identity: identity.clone(),
                    operator: "alice".into(),
                    description: Some("an order-processing agent".into()),
                }
                .into(),
            );
            setup.push(credential(&identity, 0));
        }
        return setup;
    }
    match round % 6 {
        0 => vec![credential(&identity, round)],
        1 => vec![IdentityBlocked {
            identity,
            operator: "bob".into(),
            reason: "investigating a spike of denials".into(),
            trigger: None,
        }
        .into()],
        2 => vec![IdentityUnblocked {
            identity: agent(round - 1),
            operator: "bob".into(),
            reason: Some("false alarm".into()),
        }
        .into()],
        3 => vec![
            ApprovalRequested {
                approval: round,
                session: 0,
                identity: identity.clone(),
                query: 1,
                sql: format!("DELETE FROM orders WHERE id = {round}"),
                params: vec![],
                class: StatementClass::Write,
                rule: "deletes-need-approval".into(),
                binding: Bytes(vec![1; 32]),
                quorum: 1,
                expires_at: u64::MAX / 2,
                fingerprint: "delete from orders where id = ?".into(),
            }
            .into(),
            ApprovalGranted {
                approval: round,
                operator: "carol".into(),
                grant_until: Some(u64::MAX / 2),
                session: 0,
                identity,
            }
            .into(),
        ],
        4 => vec![AuthenticationFailed {
            identity: "intruder".into(),
            client_addr: "203.0.113.9:5555".into(),
            target: Some("shop".into()),
            reason: "no such identity".into(),
        }
        .into()],
        _ => vec![
            OperatorAction {
                operator: "alice".into(),
                action: "policy apply".into(),
                target: None,
                outcome: "ok".into(),
                detail: None,
            }
            .into(),
            PolicyChanged {
                operator: "alice".into(),
                source: policy.into(),
                digest: Bytes(blake3::hash(policy.as_bytes()).as_bytes().to_vec()),
            }
            .into(),
        ],
    }
}

/// Fills `path` with about `events` realistic events while the gateway's
/// snapshot thread snapshots every `every` events.
async fn fill_realistic(path: &Path, events: u64, every: u64) -> Result<()> {
    use gatehouse::gateway::snapshots::Snapshotter;
    use gatehouse_engine::state::GatewayState;
    let started = Instant::now();
    let ledger = open(path, Durability::Os)?;
    let snapshots = Snapshotter::start(ledger.clone(), GatewayState::default(), every)?;
    let appended = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(AtomicU64::new(1));
    let control = {
        let ledger = ledger.clone();
        let appended = appended.clone();
        tokio::spawn(async move {
            let mut round = 0;
            while appended.load(Ordering::Relaxed) < events {
                if appended.load(Ordering::Relaxed) >= round * 5_000 {
                    let bodies = control_events(round);
                    ledger.append_all(&bodies).await.expect("append");
                    appended.fetch_add(bodies.len() as u64, Ordering::Relaxed);
                    round += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let ledger = ledger.clone();
        let appended = appended.clone();
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            while appended.load(Ordering::Relaxed) < events {
                let session = sessions.fetch_add(1, Ordering::Relaxed);
                session_run(&ledger, session, &appended).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    control.await?;
    // Let the snapshot thread reach the last multiple of `every`.
    if let Some(snapshots) = snapshots {
        let reader = gatehouse_ledger::LedgerReader::open(path)?;
        let last = reader.len()? / every * every;
        let deadline = Instant::now() + Duration::from_secs(120);
        while reader
            .latest_snapshot(u64::MAX)?
            .map(|s| s.snapshot.covers)
            .unwrap_or(0)
            < last
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu = thread_cpu_seconds("ledger-snapshot");
        tokio::task::spawn_blocking(move || snapshots.stop()).await?;
        if let Some(cpu) = cpu {
            let wall = started.elapsed().as_secs_f64();
            println!(
                "snapshot thread: {cpu:.2} s of CPU while building ({:.1}% of one core over {wall:.1} s)",
                cpu / wall * 100.0
            );
        }
    }
    tokio::task::spawn_blocking(move || ledger.close()).await?;
    Ok(())
}

/// CPU time (user and system) of this process's thread named `name`
/// (Linux thread names are cut to 15 bytes), from /proc.
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux this runs on.
        return Some(ticks as f64 / 100.0);
    }
    None
}

/// Median and maximum of `runs` timings of `f`, in milliseconds, and its
/// last result.
fn timed<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64, T)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let last = last.context("at least one run")?;
    Ok((times[times.len() / 2], times[times.len() - 1], last))
}

async fn state_bench(events: u64, every: u64, ledger: Option<PathBuf>) -> Result<()> {
    use gatehouse::state::{rebuild, At, Start};
    use gatehouse_engine::snapshot::state_hash;
    let tmp = tempfile_dir()?;
    let keep = ledger.is_some();
    let path = ledger.unwrap_or_else(|| tmp.join("state.db"));
    let have = if path.exists() {
        gatehouse_ledger::LedgerReader::open(&path)?.len()?
    } else {
        0
    };
    if have == 0 {
        let t = Instant::now();
        fill_realistic(&path, events, every).await?;
        println!(
            "built a ledger of {} events in {:.1}s",
            gatehouse_ledger::LedgerReader::open(&path)?.len()?,
            t.elapsed().as_secs_f64()
        );
    } else if have < events {
        anyhow::bail!(
            "{} holds {have} events, fewer than {events}; remove it to build a new one",
            path.display()
        );
    }
    let reader = gatehouse_ledger::LedgerReader::open(&path)?;
    let len = reader.len()?;
    let index = reader.snapshot_index()?;
    let last = reader.latest_snapshot(u64::MAX)?;
    println!(
        "ledger: {len} events, {:.0} MB; {} snapshots, the last covering {} events in {} bytes of state",
        file_bytes(&path) as f64 / 1e6,
        index.len(),
        last.as_ref().map_or(0, |s| s.snapshot.covers),
        last.as_ref().map_or(0, |s| s.snapshot.state.0.len()),
    );
    println!("target: start-up rebuild and state --at under 200 ms with snapshots");
    let ts_at =
        |seq: u64| -> Result<u64> { Ok(reader.get(seq)?.context("event exists")?.event.ts) };
    // Just before a snapshot's point: the longest tail to fold.
    let worst = (len / 2 / every.max(1)) * every.max(1);
    let mut points = vec![
        ("start-up (end of log)".to_owned(), At::Seq(u64::MAX - 1)),
        (format!("--at {}", len / 10), At::Seq(len / 10)),
        (format!("--at {}", len / 2), At::Seq(len / 2)),
        (
            format!("--at {} (tail of K-1)", worst.saturating_sub(2)),
            At::Seq(worst.saturating_sub(2)),
        ),
        (format!("--at {}", len * 9 / 10), At::Seq(len * 9 / 10)),
    ];
    for frac in [4, 2] {
        let seq = len * (frac - 1) / frac;
        points.push((format!("--at TIME of event {seq}"), At::Time(ts_at(seq)?)));
    }
    let path2 = path.clone();
    for (name, at) in points {
        let (fast_p50, fast_max, fast) = timed(5, || {
            let r = rebuild(&path2, at, Start::Snapshot)?;
            // What `state --at` prints, so formatting is counted too.
            let printed = gatehouse::state::state_text(&r.state);
            Ok((r, printed.len()))
        })?;
        let (slow_p50, _, slow) = timed(1, || rebuild(&path2, at, Start::Genesis))?;
        let (fast, _) = fast;
        let same = state_hash(&fast.state) == state_hash(&slow.state);
        println!(
            "{name:<36} with snapshots: p50 {fast_p50:>7.1} ms, max {fast_max:>7.1} ms (snapshot covering {:>7}, then {:>5} events); \
             from the first event: {slow_p50:>8.1} ms ({} events); state hashes {}",
            fast.snapshot.map_or(0, |(_, c)| c),
            fast.folded,
            slow.folded,
            if same { "equal" } else { "DIFFER" }
        );
    }
    // What investigators and start-up read: checked against the newest
    // signed checkpoint, through stored subtree hashes around the window.
    let key = bench_signer().verifier();
    let key_file = tmp.join("verifier.pub");
    std::fs::write(&key_file, format!("{key}\n"))?;
    let (whole, _, _) = timed(1, || {
        Ok(gatehouse_ledger::verified::read_verified(
            &reader,
            Some(&key),
            |_, _| {},
        )?)
    })?;
    println!("the whole pass the windows replace (hash and decode every record): {whole:.0} ms");
    let (p50, max, state) = timed(5, || gatehouse::state::load_state_verified(&path2, &key))?;
    let unverified = rebuild(&path2, At::Seq(u64::MAX - 1), Start::Snapshot)?;
    println!(
        "verified start-up (load_state_verified)   p50 {p50:>7.1} ms, max {max:>7.1} ms; state hash {}",
        if state_hash(&state) == state_hash(&unverified.state) { "equal" } else { "DIFFERS" }
    );
    for (name, at) in [
        (format!("verified state --at {}", len / 2), At::Seq(len / 2)),
        (
            format!("verified state --at TIME of event {}", len * 3 / 4),
            At::Time(ts_at(len * 3 / 4)?),
        ),
    ] {
        let (p50, max, v) = timed(5, || {
            gatehouse::state::verified_state_at(&path2, at, Some(&key_file))
        })?;
        println!(
            "{name:<40} p50 {p50:>7.1} ms, max {max:>7.1} ms; {:?} pass hashed {} of {} records",
            v.coverage.pass, v.coverage.hashed, v.coverage.covered
        );
    }
    let middle = (len / 2..len)
        .find_map(|seq| reader.get(seq).ok().flatten()?.event.body.session())
        .context("a session event after the middle")?;
    for session in [1, middle] {
        let (p50, max, replay) = timed(3, || {
            Ok(gatehouse::replay::load(
                &path2,
                gatehouse::replay::Selection::Session(session),
                gatehouse::replay::Window::default(),
                Some(&key_file),
            )?)
        })?;
        let checked = replay.checkpoint.as_ref().map_or(0, |c| c.checked);
        println!(
            "verified replay --session {session:<18} p50 {p50:>7.1} ms, max {max:>7.1} ms; {} events shown, hashed {checked} records",
            replay.timeline.entries.len()
        );
    }
    let t = Instant::now();
    let check = gatehouse::state::check_snapshots(&path)?;
    println!(
        "state --check: {} snapshots against the fold of {} events in {:.1}s: {}",
        check.snapshots,
        check.events,
        t.elapsed().as_secs_f64(),
        if check.passed() {
            "all match"
        } else {
            "MISMATCH"
        }
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::LedgerAppend {
            appenders,
            seconds,
            durability,
            dir,
            snapshot_every,
        } => {
            let durability: Durability = durability.parse().map_err(anyhow::Error::msg)?;
            let keep = dir.is_some();
            let dir = match dir {
                Some(d) => d,
                None => tempfile_dir()?,
            };
            std::fs::create_dir_all(&dir)?;
            println!(
                "ledger append benchmark: {} durability, {seconds}s per run, {}, on {}",
                if durability == Durability::Os {
                    "os"
                } else {
                    "fsync"
                },
                if snapshot_every == 0 {
                    "no snapshot thread".to_owned()
                } else {
                    format!("a snapshot every {snapshot_every} events")
                },
                machine()
            );
            println!("targets (os durability): >= 50,000 events/s at 64 appenders; p99 <= 2,000us at 1 and 64; overhead <= 200 B/event");
            for a in appenders {
                append_run(&dir, a, seconds, durability, snapshot_every).await?;
            }
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Command::LedgerVerify { events, ledger } => {
            println!(
                "ledger verify benchmark on {}; target >= 300,000 events/s",
                machine()
            );
            verify_run(events, ledger).await?;
        }
        Command::State {
            events,
            every,
            ledger,
        } => {
            println!(
                "state rebuild benchmark on {}: {events} events, a snapshot every {every}",
                machine()
            );
            state_bench(events, every, ledger).await?;
        }
        Command::Bundle {
            events,
            ledger,
            session,
        } => {
            println!("evidence bundle benchmark on {}", machine());
            bundle_run(events, ledger, session).await?;
        }
        Command::AppendStream { ledger } => append_stream(ledger).await?,
        Command::Containment { sessions } => {
            println!("containment benchmark on {}", machine());
            for n in sessions {
                containment(n).await?;
            }
        }
        Command::Masking { rows, runs } => {
            println!(
                "masking benchmark on {}; targets: masked result <= 1.5x direct time, flat gateway memory",
                machine()
            );
            masking(rows, runs.max(1)).await?;
        }
    }
    Ok(())
}
