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
) -> Result<()> {
    let path = dir.join(format!("append-{appenders}.db"));
    let _ = std::fs::remove_file(&path);
    let ledger = open(&path, durability)?;
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
            gatehouse::commands::policy_apply(&config, &policy, "bench".into())?;
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
            gatehouse::commands::policy_apply(&config, &policy, "bench".into())?;
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

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::LedgerAppend {
            appenders,
            seconds,
            durability,
            dir,
        } => {
            let durability: Durability = durability.parse().map_err(anyhow::Error::msg)?;
            let keep = dir.is_some();
            let dir = match dir {
                Some(d) => d,
                None => tempfile_dir()?,
            };
            std::fs::create_dir_all(&dir)?;
            println!(
                "ledger append benchmark: {} durability, {seconds}s per run, on {}",
                if durability == Durability::Os {
                    "os"
                } else {
                    "fsync"
                },
                machine()
            );
            println!("targets (os durability): >= 50,000 events/s at 64 appenders; p99 <= 2,000us at 1 and 64; overhead <= 200 B/event");
            for a in appenders {
                append_run(&dir, a, seconds, durability).await?;
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
