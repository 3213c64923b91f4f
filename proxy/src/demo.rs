//! `gatehouse demo`: the incident scenario, narrated.
//!
//! This first version exercises the audit trail on its own: it records a
//! scripted incident (an agent reads, is denied, is blocked), verifies the
//! ledger as an auditor would, then shows that editing the record, or rolling
//! the file back, is caught. The gateway-in-the-data-path scenario on a real
//! PostgreSQL replaces the scripted part as the gateway lands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gatehouse_ledger::event::{
    Action, Decision, IdentityBlocked, IdentityCreated, Protocol, QueryReceived, Response,
    SessionOpened, SessionTerminated, StatementClass,
};
use gatehouse_ledger::{EventBody, Ledger, LedgerReader};
use gatehouse_verify::{verify_ledger, Report, VerifierKey};

use crate::config::Config;
use crate::init::{self, LEDGER, VERIFIER_KEY};

fn say(step: &str, text: &str) {
    println!("\n== {step}\n{text}");
}

/// Runs the demo in `dir` (a fresh directory under the current one if `None`).
pub fn run(dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("gatehouse-demo-{stamp}"))
        }
    };
    let out = init::init(&dir, Some("gatehouse.demo/incident"))?;
    say(
        "1. A new ledger",
        &format!(
            "Created {} with an owner-only signing key.\nAuditors trust only this public key:\n  {}",
            dir.display(),
            out.verifier_key
        ),
    );

    let config = Config::load(&out.config)?;
    let ledger = Ledger::open(config.writer_options()?)?;
    let events = incident();
    for event in &events {
        ledger.append_blocking(std::slice::from_ref(event))?;
    }
    ledger.close();
    say(
        "2. An incident, recorded",
        "Agent `report-bot` opened a session, read orders (allowed), tried to read every SSN\n\
         and to delete customers (denied), and was blocked by a responder. Every step is an\n\
         event, hash-chained and covered by a signed checkpoint.",
    );
    let ledger_path = dir.join(LEDGER);
    print_timeline(&ledger_path)?;

    let key = VerifierKey::parse(std::fs::read_to_string(dir.join(VERIFIER_KEY))?.trim())?;
    let report = verify_ledger(&ledger_path, &key, None)?;
    if !report.is_intact() {
        bail!("the fresh ledger did not verify: {:?}", report.failure);
    }
    let trusted = report
        .final_checkpoint
        .clone()
        .context("an intact ledger has a checkpoint")?;
    let trusted_path = dir.join("trusted-checkpoint.note");
    std::fs::write(&trusted_path, &trusted)?;
    say(
        "3. The auditor verifies",
        &format!(
            "gatehouse-verify re-derived every hash from the raw bytes: {} events, {} checkpoints, intact.\n\
             The auditor keeps the final checkpoint ({}):\n{}",
            report.events,
            report.checkpoints,
            trusted_path.display(),
            indent(&trusted)
        ),
    );

    let tampered = dir.join("tampered-edit.db");
    std::fs::copy(&ledger_path, &tampered)?;
    let seq = edit_denied_query(&tampered)?;
    let report = verify_ledger(&tampered, &key, None)?;
    say(
        "4. Someone edits the record",
        &format!(
            "In a copy ({}), event {seq} (the SSN dump attempt) was rewritten to look harmless.\n{}",
            tampered.display(),
            outcome(&report)
        ),
    );
    if report.failure.as_ref().map(|f| f.seq) != Some(seq) {
        bail!("the edit was not reported at event {seq}");
    }

    let rolled_back = dir.join("tampered-rollback.db");
    std::fs::copy(&ledger_path, &rolled_back)?;
    let kept = drop_tail(&rolled_back, 4)?;
    let alone = verify_ledger(&rolled_back, &key, None)?;
    let report = verify_ledger(&rolled_back, &key, Some(&trusted))?;
    say(
        "5. Someone rolls the ledger back",
        &format!(
            "In another copy ({}), the block and the last events were cut off, checkpoints included.\n\
             Alone, the shortened file is self-consistent ({}).\n\
             Against the auditor's kept checkpoint:\n{}",
            rolled_back.display(),
            if alone.is_intact() { "it verifies" } else { "it fails" },
            outcome(&report)
        ),
    );
    if report.failure.as_ref().map(|f| f.seq) != Some(kept) {
        bail!("the rollback was not reported at event {kept}");
    }

    say(
        "Done",
        &format!(
            "Everything is in {dir}. Check it yourself:\n  \
             gatehouse-verify {dir}/ledger.db --key {dir}/verifier.pub --trusted-checkpoint {dir}/trusted-checkpoint.note\n  \
             gatehouse-verify {dir}/tampered-edit.db --key {dir}/verifier.pub",
            dir = dir.display()
        ),
    );
    Ok(dir)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn outcome(report: &Report) -> String {
    match &report.failure {
        None => "  verifier: intact".into(),
        Some(f) => format!("  verifier: FAILED at event {}: {}", f.seq, f.message),
    }
}

fn print_timeline(path: &Path) -> Result<()> {
    let reader = LedgerReader::open(path)?;
    for stored in reader.events(0..u64::MAX) {
        let e = stored?.event;
        let what = match &e.body {
            EventBody::QueryReceived(q) => format!("query  {:?}", q.sql),
            EventBody::Decision(d) => format!(
                "decide {:?} by rule {}",
                d.action,
                d.rule.as_deref().unwrap_or("(default deny)")
            ),
            EventBody::IdentityBlocked(b) => {
                format!("block  {} by {}: {}", b.identity, b.operator, b.reason)
            }
            other => other.kind().name().to_string(),
        };
        println!("  #{:<3} {what}", e.seq);
    }
    Ok(())
}

/// Rewrites the SQL of the first denied query in place, leaving every stored
/// hash as it was, and returns that event's sequence number.
fn edit_denied_query(path: &Path) -> Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT seq, data FROM events ORDER BY seq")?;
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let needle = b"SELECT ssn FROM customers";
    for (seq, mut data) in rows {
        if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
            // Same length, so the CBOR stays well-formed and only hashes can tell.
            let harmless = format!("{:<1$}", "SELECT 1", needle.len());
            data[at..at + needle.len()].copy_from_slice(harmless.as_bytes());
            conn.execute(
                "UPDATE events SET data = ?1 WHERE seq = ?2",
                rusqlite::params![data, seq],
            )?;
            return Ok(seq as u64);
        }
    }
    bail!("the demo ledger has no SSN query to edit")
}

/// Deletes the last `n` events and every checkpoint covering them; returns
/// the number of events kept.
fn drop_tail(path: &Path, n: u64) -> Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    let len: i64 = conn.query_row("SELECT MAX(seq) + 1 FROM events", [], |r| r.get(0))?;
    let keep = len - n as i64;
    let boundary: i64 = conn.query_row(
        "SELECT MAX(size) FROM checkpoints WHERE size <= ?1",
        [keep],
        |r| r.get(0),
    )?;
    conn.execute("DELETE FROM events WHERE seq >= ?1", [boundary])?;
    conn.execute("DELETE FROM checkpoints WHERE size > ?1", [boundary])?;
    Ok(boundary as u64)
}

fn incident() -> Vec<EventBody> {
    let agent = "report-bot";
    let session = 1;
    let mut events: Vec<EventBody> = vec![
        IdentityCreated {
            identity: agent.into(),
            operator: "alice".into(),
            description: Some("nightly sales report agent".into()),
        }
        .into(),
        SessionOpened {
            session,
            identity: agent.into(),
            target: "shop".into(),
            client_addr: "127.0.0.1:51234".into(),
            application_name: Some("autogen".into()),
            credential: Some("cred-1".into()),
            tls: false,
        }
        .into(),
    ];
    let statements: [(&str, Action, Option<&str>, StatementClass, &str); 3] = [
        (
            "SELECT id, total FROM orders WHERE day = current_date",
            Action::Allow,
            Some("agents-read-orders"),
            StatementClass::Read,
            "public.orders",
        ),
        (
            "SELECT ssn FROM customers",
            Action::Deny,
            Some("no-ssn"),
            StatementClass::Read,
            "public.customers",
        ),
        (
            "DELETE FROM customers",
            Action::Deny,
            None,
            StatementClass::Write,
            "public.customers",
        ),
    ];
    for (i, (sql, action, rule, class, table)) in statements.into_iter().enumerate() {
        let query = i as u64 + 1;
        events.push(
            QueryReceived {
                session,
                identity: agent.into(),
                query,
                sql: sql.into(),
                params: vec![],
                statement: None,
                portal: None,
                protocol: Protocol::Simple,
            }
            .into(),
        );
        events.push(
            Decision {
                session,
                identity: agent.into(),
                query,
                action,
                rule: rule.map(str::to_owned),
                class,
                tables: vec![table.into()],
                columns: vec![],
                message: (action == Action::Deny).then(|| "not permitted for agents".to_owned()),
            }
            .into(),
        );
        let denied = action == Action::Deny;
        events.push(
            Response {
                session,
                identity: agent.into(),
                query,
                command_tag: (!denied).then(|| "SELECT 42".to_owned()),
                rows: if denied { 0 } else { 42 },
                duration_ns: 850_000,
                sqlstate: denied.then(|| "42501".to_owned()),
                error: denied.then(|| "not permitted for agents".to_owned()),
                bytes: if denied { 64 } else { 2048 },
            }
            .into(),
        );
    }
    events.push(
        IdentityBlocked {
            identity: agent.into(),
            operator: "bob".into(),
            reason: "tried to exfiltrate SSNs".into(),
            trigger: None,
        }
        .into(),
    );
    events.push(
        SessionTerminated {
            session,
            identity: agent.into(),
            operator: Some("bob".into()),
            reason: "identity blocked: tried to exfiltrate SSNs".into(),
        }
        .into(),
    );
    events
}
