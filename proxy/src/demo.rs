//! `gatehouse demo`: the incident scenario on a throwaway PostgreSQL.
//!
//! A real PostgreSQL is started in a temporary directory and seeded from
//! fixtures/demo/shop.sql; a gateway is put in front of it with the agents
//! policy (fixtures/policies/agents.toml); an agent identity with its own
//! short-lived credential reads orders, tries to read SSNs and to delete
//! customers; then the ledger is verified as an auditor would, and two kinds
//! of tampering (an edited record, a rolled-back file) are shown to be caught.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gatehouse_pgtest::PgCluster;
use gatehouse_verify::{verify_ledger, Report, VerifierKey};

use crate::commands;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::init::{self, LEDGER, VERIFIER_KEY};

const SHOP: &str = include_str!("../../fixtures/demo/shop.sql");
const POLICY: &str = include_str!("../../fixtures/policies/agents.toml");
const AGENT: &str = "agent-report-bot";

fn say(step: &str, text: &str) {
    println!("\n== {step}\n{text}");
}

/// Starts the throwaway database, or says exactly how to get PostgreSQL.
fn start_postgres() -> Result<PgCluster> {
    if gatehouse_pgtest::find_bindir().is_none() {
        bail!(
            "the demo needs PostgreSQL server binaries (initdb, pg_ctl, postgres) and found none; \
             install them (Debian/Ubuntu: apt-get install postgresql) or set {} to their directory",
            gatehouse_pgtest::BINDIR_ENV
        );
    }
    std::panic::catch_unwind(PgCluster::start).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!("could not start a throwaway PostgreSQL: {why}")
    })
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
    let pg = start_postgres()?;
    pg.create_database("shop");
    pg.psql("shop", SHOP);
    say(
        "1. A database with personal data",
        &format!(
            "A throwaway PostgreSQL is running on 127.0.0.1:{} with a shop: 500 customers\n\
             (names, emails, SSNs, card numbers) and 5,000 orders.",
            pg.port()
        ),
    );

    let out = init::init(&dir, Some("gatehouse.demo/incident"))?;
    let var = "GATEHOUSE_DEMO_UPSTREAM_PASSWORD";
    std::env::set_var(var, pg.password());
    let mut text = std::fs::read_to_string(&out.config)?;
    text.push_str(&format!(
        "\n[admin]\naddress = \"127.0.0.1:0\"\n\n[listen]\naddress = \"127.0.0.1:0\"\n\n[[target]]\nname = \"shop\"\n\
         url = \"postgres://{}@127.0.0.1:{}/shop\"\npassword_env = \"{var}\"\n",
        pg.superuser(),
        pg.port()
    ));
    std::fs::write(&out.config, text)?;
    let config = Config::load(&out.config)?;
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, POLICY)?;
    commands::policy_apply(&config, &policy_file, "alice".into(), false)?;
    commands::identity_create_offline(
        &config,
        AGENT,
        Some("nightly sales report agent".into()),
        "alice".into(),
    )?;
    let issued = commands::credential_issue_offline(
        &config,
        AGENT,
        Duration::from_secs(3600),
        "alice".into(),
    )?;
    say(
        "2. Gatehouse in front of it",
        &format!(
            "Created {} with an owner-only signing key. Auditors trust only this public key:\n  {}\n\
             Applied the agents policy: agents may read orders, and customers with names and emails\n\
             masked inline; never SSNs or card numbers; no changes to data (deleting orders needs a\n\
             human's approval). Issued {AGENT} a credential valid for one hour;\n\
             the database's own password never leaves the gateway.",
            dir.display(),
            out.verifier_key
        ),
    );

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(agent_session(&config, &issued.secret))?;
    drop(runtime);
    let ledger_path = dir.join(LEDGER);
    let replay = crate::replay::load(
        &ledger_path,
        crate::replay::Selection::Identity(AGENT.into()),
        crate::replay::Window::default(),
        None,
    )?;
    let report = dir.join("replay.html");
    std::fs::write(&report, crate::replay::html::render(&replay))?;
    say(
        "4. The responder replays what the agent did",
        &format!(
            "Every statement was recorded, and committed, before it could reach the database.\n\
             gatehouse replay --ledger {} --identity {AGENT}   (also written as {}):\n",
            ledger_path.display(),
            report.display()
        ),
    );
    print!("{}", indent(&crate::replay::text::render(&replay)));

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
        "5. The auditor verifies",
        &format!(
            "gatehouse-verify re-derived every hash from the raw bytes: {} events, {} checkpoints, intact.\n\
             The auditor keeps the final checkpoint ({}):\n{}",
            report.events,
            report.checkpoints,
            trusted_path.display(),
            indent(&trusted)
        ),
    );

    let bundle_path = dir.join("session-1.bundle");
    let exported = crate::export::export(&crate::export::ExportOptions {
        ledger: ledger_path.clone(),
        session: Some(1),
        out: bundle_path.clone(),
        ..Default::default()
    })?;
    let checked = gatehouse_verify::bundle_verify::verify_bundle(
        &bundle_path,
        &key,
        Some(&trusted),
        Some(&exported.digest),
    )?;
    if !checked.is_intact() {
        bail!("the fresh bundle did not verify: {:?}", checked.failure);
    }
    let forged = dir.join("session-1-tampered.bundle");
    let mut bytes = std::fs::read(&bundle_path)?;
    let needle = b"SELECT name, ssn FROM customers";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .context("the bundle holds the SSN query")?;
    bytes[at..at + needle.len()]
        .copy_from_slice(format!("{:<1$}", "SELECT 1", needle.len()).as_bytes());
    std::fs::write(&forged, &bytes)?;
    let caught =
        gatehouse_verify::bundle_verify::verify_bundle_bytes(&bytes, &key, Some(&trusted), None)?;
    say(
        "6. Compliance exports the evidence",
        &format!(
            "gatehouse export --ledger {} --session 1 --out {}\n\
             {} events of the agent's session and the {} statement shapes they refer to, each with an\n\
             inclusion proof against the signed checkpoint\n\
             of size {}; the other {} events of the log are not disclosed ({} bytes, {}).\n\
             gatehouse-verify {} --key verifier.pub --trusted-checkpoint trusted-checkpoint.note: {}\n\
             A copy with the SSN query rewritten ({}): {}",
            ledger_path.display(),
            bundle_path.display(),
            exported.events,
            exported.shapes,
            exported.checkpoint_size,
            exported.checkpoint_size - (exported.events + exported.shapes) as u64,
            exported.bytes,
            exported.digest,
            bundle_path.display(),
            if checked.is_intact() { "intact" } else { "FAILED" },
            forged.display(),
            match &caught.failure {
                Some(f) => format!(
                    "FAILED at event {}: {}",
                    f.seq.map_or("-".to_owned(), |s| s.to_string()),
                    f.message
                ),
                None => "intact (unexpected)".to_owned(),
            }
        ),
    );
    if caught.is_intact() {
        bail!("the tampered bundle verified");
    }

    let tampered = dir.join("tampered-edit.db");
    std::fs::copy(&ledger_path, &tampered)?;
    let seq = edit_denied_query(&tampered)?;
    let report = verify_ledger(&tampered, &key, None)?;
    say(
        "7. Someone edits the record",
        &format!(
            "In a copy ({}), event {seq} (the SSN dump attempt) was rewritten to look harmless,\n\
             leaving every stored hash as it was.\n{}",
            tampered.display(),
            outcome(&report)
        ),
    );
    match report.failure.as_ref().map(|f| f.seq) {
        Some(at) if at == seq => {}
        Some(at) if at < seq => println!(
            "  (event {at} opens the write batch that also holds event {seq}: one signed checkpoint\n\
             covers the whole batch, so the verifier names the first event it can no longer vouch for)"
        ),
        _ => bail!("the edit of event {seq} was not caught"),
    }

    let rolled_back = dir.join("tampered-rollback.db");
    std::fs::copy(&ledger_path, &rolled_back)?;
    let kept = drop_tail(&rolled_back, 4)?;
    let alone = verify_ledger(&rolled_back, &key, None)?;
    let report = verify_ledger(&rolled_back, &key, Some(&trusted))?;
    say(
        "8. Someone rolls the ledger back",
        &format!(
            "In another copy ({}), the agent's last statements and the end of its session were cut off,\n\
             checkpoints included.\n\
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
             gatehouse-verify {dir}/tampered-edit.db --key {dir}/verifier.pub\n  \
             gatehouse-verify {dir}/session-1.bundle --key {dir}/verifier.pub\n  \
             open {dir}/replay.html",
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

/// Rewrites the SQL of the first denied query in place, leaving every stored
/// hash as it was, and returns that event's sequence number.
fn edit_denied_query(path: &Path) -> Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT seq, data FROM events ORDER BY seq")?;
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let needle = b"SELECT name, ssn FROM customers";
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

/// The agent tries a bulk delete of orders, which policy holds for a human;
/// an approver looks at it and denies it.
async fn held_delete(
    client: &tokio_postgres::Client,
    api: &std::sync::Arc<crate::admin_client::AdminClient>,
) -> Result<()> {
    let sql = "DELETE FROM orders WHERE day < current_date - 30";
    println!("  tries to delete old orders: {sql}");
    let held = client.simple_query(sql);
    let approver = async {
        let started = std::time::Instant::now();
        let pending = loop {
            let list = {
                let api = api.clone();
                tokio::task::spawn_blocking(move || api.approvals(false)).await??
            };
            if let Some(first) = list.as_array().and_then(|l| l.first()).cloned() {
                break first;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the delete was not held for approval");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let id = pending["approval"].as_u64().unwrap_or_default();
        println!(
            "    held for approval #{id} by rule {} (nothing reached the database); an approver sees it:
      gatehouse approvals  ->  #{id} {} · {}: {}",
            pending["rule"].as_str().unwrap_or("-"),
            pending["status"].as_str().unwrap_or("-"),
            pending["identity"].as_str().unwrap_or("-"),
            pending["sql"].as_str().unwrap_or("-"),
        );
        let reason = "agents do not bulk-delete orders";
        let api = api.clone();
        tokio::task::spawn_blocking(move || api.deny(id, reason)).await??;
        println!("      gatehouse deny {id} --reason \"{reason}\"");
        Ok::<_, anyhow::Error>(())
    };
    let (outcome, decided) = tokio::join!(held, approver);
    decided?;
    match outcome {
        Ok(_) => bail!("the held delete ran although it was denied"),
        Err(e) => println!(
            "    the agent gets: {}",
            e.as_db_error().map_or_else(
                || e.to_string(),
                |d| format!("{} ({})", d.message(), d.code().code())
            )
        ),
    }
    Ok(())
}

/// The agent's session through the gateway, and the responder's block.
async fn agent_session(config: &Config, secret: &str) -> Result<()> {
    let gateway = Gateway::bind(config).await?;
    let addr = gateway.local_addr()?;
    let admin_addr = gateway.admin_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));
    let conn = format!(
        "host=127.0.0.1 port={} user={AGENT} password={secret} dbname=shop application_name=autogen-report-bot",
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .context("the agent could not log in through the gateway")?;
    let driver = tokio::spawn(connection);
    println!(
        "\n== 3. The agent at work\n{AGENT} connects to the gateway as if it were PostgreSQL."
    );
    let steps: [(&str, &str); 7] = [
        (
            "reads today's orders",
            "SELECT count(*), sum(total)::text FROM orders WHERE day = current_date",
        ),
        (
            "reads customer names and emails (masked inline: names pseudonymized, emails keep only the domain)",
            "SELECT name, email FROM customers ORDER BY id LIMIT 3",
        ),
        ("tries to dump every SSN", "SELECT name, ssn FROM customers"),
        (
            "tries SELECT * to get around the rule",
            "SELECT * FROM customers LIMIT 5",
        ),
        (
            "tries to smuggle the emails out through an aggregate",
            "SELECT string_agg(email, ',') FROM customers",
        ),
        (
            "tries to probe masked values with a predicate",
            "SELECT id FROM customers WHERE email LIKE 'grace%'",
        ),
        (
            "tries to delete customers",
            "DELETE FROM customers WHERE id > 100",
        ),
    ];
    for (what, sql) in steps {
        match client.simple_query(sql).await {
            Ok(messages) => {
                let rows: Vec<String> = messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or("NULL"))
                                .collect::<Vec<_>>()
                                .join(" | "),
                        ),
                        _ => None,
                    })
                    .collect();
                println!(
                    "  {what}: allowed, {} row(s), first: {}",
                    rows.len(),
                    rows.first().map_or("-", |r| r.as_str())
                );
            }
            Err(e) => {
                let msg = e.as_db_error().map_or_else(
                    || e.to_string(),
                    |d| format!("{} ({})", d.message(), d.code().code()),
                );
                println!("  {what}: DENIED: {msg}");
            }
        }
    }
    let still_usable = client.simple_query("SELECT 1").await.is_ok();
    println!("  the session is still usable after the denials: {still_usable}");

    let admin = format!("http://{admin_addr}");
    let token_file = config
        .ledger
        .path
        .with_file_name(crate::init::OPERATOR_TOKEN);
    let api = {
        let (admin, token_file) = (admin.clone(), token_file.clone());
        tokio::task::spawn_blocking(move || {
            crate::admin_client::AdminClient::new(&admin, &token_file, None)
        })
        .await??
    };
    let api = std::sync::Arc::new(api);
    held_delete(&client, &api).await?;

    // A responder sees the denials and contains the agent with one command
    // (`gatehouse block`), through the admin API.
    tokio::task::spawn_blocking(move || {
        crate::admin_client::AdminClient::new(&admin, &token_file, None)?
            .block(AGENT, "tried to read every SSN and to delete customers")
    })
    .await??;
    println!("\n== 3b. A responder blocks the agent\n  gatehouse block {AGENT} --reason \"tried to read every SSN and to delete customers\"");
    let after = client.simple_query("SELECT 1").await;
    println!(
        "  the agent's open session: {}",
        match &after {
            Ok(_) => "still running (unexpected)".to_owned(),
            Err(e) => e.as_db_error().map_or_else(
                || "closed".to_owned(),
                |d| format!("ended: {} ({})", d.message(), d.code().code())
            ),
        }
    );
    let relogin = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await;
    println!(
        "  a new login as {AGENT}: {}",
        match relogin {
            Ok(_) => "accepted (unexpected)".to_owned(),
            Err(e) => format!(
                "refused: {}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            ),
        }
    );
    drop(client);
    let _ = driver.await;
    // A little later the operator stops the gateway, which ends any session
    // left and closes the ledger.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}
