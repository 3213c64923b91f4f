//! Throughput measurement (ignored by default: it builds a large ledger).
//!
//! ```text
//! cargo test --release -p gatehouse-verify --test throughput -- --ignored --nocapture
//! ```
//!
//! `GATEHOUSE_VERIFY_BENCH_EVENTS` (default 1,000,000) and
//! `GATEHOUSE_VERIFY_BENCH_BATCH` (default 50) set the ledger's size and
//! events per checkpoint. The target is at least 300,000 events/s on a
//! 2-core machine.

mod common;

use std::time::Instant;

use common::*;
use gatehouse_verify::{verify_ledger, VerifierKey};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// All levels of the tree over `leaves`: `levels[l][i]` is the hash of the
/// perfect subtree of 2^l leaves starting at leaf `i << l`.
fn levels(leaves: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves];
    while levels.last().unwrap().len() > 1 {
        let below = levels.last().unwrap();
        let above = below
            .chunks_exact(2)
            .map(|pair| ref_node(&pair[0], &pair[1]))
            .collect();
        levels.push(above);
    }
    levels
}

/// MTH(D[a:b]) from the stored levels, splitting as RFC 9162 does.
fn range_hash(levels: &[Vec<Hash>], a: usize, b: usize) -> Hash {
    let n = b - a;
    if n.is_power_of_two() && a.is_multiple_of(n) {
        return levels[n.trailing_zeros() as usize][a / n];
    }
    let k = split(n);
    ref_node(&range_hash(levels, a, a + k), &range_hash(levels, a + k, b))
}

/// SUBPROOF(m, D[a:b], b) on the stored levels.
fn subproof(levels: &[Vec<Hash>], m: usize, a: usize, b: usize, complete: bool) -> Vec<Hash> {
    let n = b - a;
    if m == n {
        return if complete {
            vec![]
        } else {
            vec![range_hash(levels, a, b)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(levels, m, a, a + k, complete);
        p.push(range_hash(levels, a + k, b));
        p
    } else {
        let mut p = subproof(levels, m - k, a + k, b, false);
        p.push(range_hash(levels, a, a + k));
        p
    }
}

#[test]
#[ignore = "builds a large ledger; run with --ignored --release to measure"]
fn verification_rate() {
    let n = env_u64("GATEHOUSE_VERIFY_BENCH_EVENTS", 1_000_000) as usize;
    let batch = env_u64("GATEHOUSE_VERIFY_BENCH_BATCH", 50) as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.ledger");
    let key = test_key();

    let started = Instant::now();
    let query = "SELECT id, name, email FROM customers WHERE region = $1 AND created_at > $2 ORDER BY id LIMIT 100";
    let evs: Vec<Event> = (0..n as u64)
        .map(|i| {
            let body = vec![
                (0, Value::Uint(i / 10)),
                (1, Value::Text("analyst@example.com".into())),
                (2, Value::Text(query.into())),
                (3, Value::Uint(i % 100)),
                (4, Value::Null),
            ];
            Event {
                seq: i as i64,
                ts: (T0 + i * 1000) as i64,
                kind: (i % 4) as i64,
                data: record(i, T0 + i * 1000, i % 4, body),
            }
        })
        .collect();
    let leaves: Vec<Hash> = evs.iter().map(|e| ref_leaf(&e.data)).collect();
    let mut links = Vec::with_capacity(n);
    let mut link = [0u8; 32];
    for e in &evs {
        link = chain_link(&link, &e.data);
        links.push(link);
    }
    let levels = levels(leaves);
    let mut rows = Vec::new();
    let mut previous = 0;
    let mut size = 0;
    while size < n {
        size = (size + batch).min(n);
        let text = checkpoint_text(
            ORIGIN,
            size as u64,
            &range_hash(&levels, 0, size),
            &links[size - 1],
        );
        let proof = if previous == 0 {
            vec![]
        } else {
            subproof(&levels, previous, 0, size, true).concat()
        };
        rows.push(CheckpointRow {
            size: size as i64,
            note: key.sign(&text),
            proof,
        });
        previous = size;
    }
    write_ledger(&path, &evs, &rows);
    let bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "built {n} events, {} checkpoints, {} MB in {:.1?}",
        rows.len(),
        bytes / 1_000_000,
        started.elapsed()
    );
    drop((evs, levels, links));

    let vkey = VerifierKey::parse(&key.verifier()).unwrap();
    // Warm the page cache, as an auditor re-running the tool would.
    let _ = std::fs::read(&path).unwrap();
    let started = Instant::now();
    let report = verify_ledger(&path, &vkey, None).unwrap();
    let elapsed = started.elapsed();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.events, n as u64);
    eprintln!(
        "verified {n} events and {} checkpoints in {elapsed:.2?}: {:.0} events/s",
        report.checkpoints,
        n as f64 / elapsed.as_secs_f64()
    );
}
