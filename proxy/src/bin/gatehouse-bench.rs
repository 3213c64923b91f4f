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
    }
    Ok(())
}
