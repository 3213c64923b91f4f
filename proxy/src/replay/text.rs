//! The human-readable timeline, for a terminal.
//!
//! One block per entry, each starting with its RFC 3339 time and event
//! number; statements show their SQL, parameters, decision, approvals,
//! masks, response and recorded rows underneath. Every string that came
//! from outside passes through [`escape::visible`], so nothing in the
//! output can drive the terminal. The JSON output is the exact form; this
//! one is for reading.

use std::borrow::Cow;
use std::fmt::Write;

use super::escape::{self, Lines};
use super::value::Value;
use super::{count, Entry, Outcome, Replay, Response, Stamp, Statement};

/// Cells wider than this do not widen their column further.
const MAX_ALIGN: usize = 40;

/// One line's worth of a hostile string.
fn s(text: &str) -> Cow<'_, str> {
    escape::visible(text, Lines::Escape)
}

fn time(ts: u64) -> String {
    super::rfc3339(ts)
}

fn stamp(at: Stamp) -> String {
    format!("{} #{}", time(at.ts), at.seq)
}

/// Milliseconds with microsecond precision.
pub fn millis(ns: u64) -> String {
    format!("{}.{:03} ms", ns / 1_000_000, ns % 1_000_000 / 1_000)
}

/// The whole replay as text.
pub fn render(replay: &Replay) -> String {
    let mut out = String::new();
    let t = &replay.timeline;
    let _ = writeln!(out, "Gatehouse replay of {}", t.selection);
    let _ = writeln!(
        out,
        "  ledger      {}",
        s(&replay.ledger.display().to_string())
    );
    let _ = writeln!(out, "  window      {}", t.window);
    match t.events {
        None => {
            let _ = writeln!(out, "  events      none in this window");
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "  events      {} shown, #{} ({}) to #{} ({})",
                r.count,
                r.first.seq,
                time(r.first.ts),
                r.last.seq,
                time(r.last.ts)
            );
        }
    }
    match &replay.checkpoint {
        Some(c) => {
            let covered = if replay.covered_by_checkpoint() {
                "covers every event shown"
            } else {
                "does not yet cover the last events shown"
            };
            let _ = writeln!(
                out,
                "  checkpoint  newest signed: {} events, root {} ({covered}; {})",
                c.size,
                s(&c.root),
                signature(c)
            );
            let _ = writeln!(out, "  checked     {}", checked(c));
        }
        None => {
            let _ = writeln!(out, "  checkpoint  none signed yet");
        }
    }
    if replay.unsigned_not_shown > 0 {
        let _ = writeln!(
            out,
            "  not shown   {}: no signed checkpoint covers them yet",
            count(replay.unsigned_not_shown, "later event")
        );
    }
    let _ = writeln!(out, "  verify      {}", s(&replay.verify));
    let m = &t.summary;
    let _ = writeln!(
        out,
        "  summary     {}, {}: {} allowed, {} denied, {} held for approval, {} masked, {} errors; {} terminations, {} blocks, {} failed logins",
        count(m.sessions, "session"),
        count(m.statements, "statement"),
        m.allowed,
        m.denied,
        m.held_for_approval,
        m.masked,
        m.errors,
        m.terminations,
        m.blocks,
        m.authentication_failures
    );
    for entry in &t.entries {
        out.push('\n');
        entry_text(&mut out, entry);
    }
    out
}

fn opt(v: &Option<String>, none: &str) -> String {
    v.as_deref()
        .map_or_else(|| none.to_owned(), |v| s(v).into_owned())
}

fn entry_text(out: &mut String, entry: &Entry) {
    let head = stamp(entry.at());
    match entry {
        Entry::SessionOpened(e) => {
            let _ = writeln!(
                out,
                "{head}  session {} OPENED by {} from {} to target {}; application {}; credential {}; TLS {}",
                e.session,
                s(&e.identity),
                s(&e.client_addr),
                s(&e.target),
                e.application_name
                    .as_deref()
                    .map_or_else(|| "not given".to_owned(), |a| format!("\"{}\"", s(a))),
                opt(&e.credential, "none"),
                if e.tls { "yes" } else { "no" }
            );
        }
        Entry::SessionClosed(e) => {
            let _ = writeln!(
                out,
                "{head}  session {} CLOSED after {} statements: {}",
                e.session,
                e.statements,
                s(&e.reason)
            );
        }
        Entry::SessionTerminated(e) => {
            let _ = writeln!(
                out,
                "{head}  session {} TERMINATED by {}: {}",
                e.session,
                opt(&e.operator, "Gatehouse"),
                s(&e.reason)
            );
        }
        Entry::Statement(st) => statement_text(out, &head, st),
        Entry::ApprovalOutcome(e) => {
            let _ = writeln!(
                out,
                "{head}  session {} approval {} (requested before this window): {}",
                e.session,
                e.approval,
                outcome_text(&e.outcome)
            );
        }
        Entry::AuthenticationFailed(e) => {
            let _ = writeln!(
                out,
                "{head}  LOGIN FAILED as {} from {} to target {}: {}",
                s(&e.identity),
                s(&e.client_addr),
                opt(&e.target, "(none)"),
                s(&e.reason)
            );
        }
        Entry::IdentityCreated(e) => {
            let _ = writeln!(
                out,
                "{head}  identity {} created by {}{}",
                s(&e.identity),
                s(&e.operator),
                e.description
                    .as_deref()
                    .map(|d| format!(": {}", s(d)))
                    .unwrap_or_default()
            );
        }
        Entry::IdentityBlocked(e) => {
            let by = match &e.trigger {
                Some(trigger) => format!("automatically ({})", s(trigger)),
                None => format!("by {}", s(&e.operator)),
            };
            let _ = writeln!(
                out,
                "{head}  identity {} BLOCKED {by}: {}",
                s(&e.identity),
                s(&e.reason)
            );
        }
        Entry::IdentityUnblocked(e) => {
            let _ = writeln!(
                out,
                "{head}  identity {} unblocked by {}{}",
                s(&e.identity),
                s(&e.operator),
                e.reason
                    .as_deref()
                    .map(|r| format!(": {}", s(r)))
                    .unwrap_or_default()
            );
        }
        Entry::CredentialIssued(e) => {
            let _ = writeln!(
                out,
                "{head}  credential {} issued to {} by {}, valid until {}",
                s(&e.credential),
                s(&e.identity),
                s(&e.operator),
                time(e.expires_at.0)
            );
        }
        Entry::CredentialRevoked(e) => {
            let _ = writeln!(
                out,
                "{head}  credential {} of {} REVOKED by {}: {}",
                s(&e.credential),
                s(&e.identity),
                s(&e.operator),
                s(&e.reason)
            );
        }
        Entry::Other(e) => {
            let _ = writeln!(out, "{head}  {} event", e.event);
            if let Some(detail) = &e.detail {
                field(out, "what", &s(detail));
            }
        }
    }
}

/// A labelled block: the label right-aligned in a margin, continuation
/// lines indented under the first.
fn field(out: &mut String, label: &str, text: &str) {
    let mut lines = text.split('\n');
    let _ = writeln!(out, "    {label:>9}  {}", lines.next().unwrap_or(""));
    for line in lines {
        let _ = writeln!(out, "    {:>9}  {line}", "");
    }
}

fn statement_text(out: &mut String, head: &str, st: &Statement) {
    let protocol = st
        .received
        .as_ref()
        .map(|r| format!(" ({} protocol)", r.protocol))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{head}  session {} statement {}{protocol}",
        st.session, st.query
    );
    match &st.received {
        Some(r) => {
            field(out, "sql", &escape::visible(&r.sql, Lines::Keep));
            if !r.params.is_empty() {
                let params = r
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("${} ({}) = {}", i + 1, p.format, param_text(&p.value)))
                    .collect::<Vec<_>>()
                    .join("\n");
                field(out, "params", &params);
            }
        }
        None => field(out, "sql", "(received before this window)"),
    }
    if let Some(d) = &st.decision {
        let verdict = match d.action {
            "allow" => "ALLOWED",
            "deny" => "DENIED",
            "require_approval" => "HELD FOR APPROVAL",
            "mask" => "ALLOWED WITH MASKING",
            other => other,
        };
        let rule = match &d.rule {
            Some(r) => format!("by rule {}", s(r)),
            None => "by default (no rule matched)".to_owned(),
        };
        let mut text = format!("{verdict} {rule}; class {}", d.class);
        if !d.tables.is_empty() {
            let _ = write!(text, "; tables {}", s(&d.tables.join(", ")));
        }
        if !d.columns.is_empty() {
            let _ = write!(text, "; columns {}", s(&d.columns.join(", ")));
        }
        if let Some(m) = &d.message {
            let _ = write!(text, "\nmessage: {}", s(m));
        }
        field(out, "decision", &text);
    }
    for a in &st.approvals {
        let mut lines = Vec::new();
        match &a.requested {
            Some(r) => lines.push(format!(
                "{} requested at {}: rule {}, {} approver(s) needed, expires {}\nfingerprint {}\nbinding {}",
                a.approval,
                stamp(r.at),
                s(&r.rule),
                r.quorum,
                time(r.expires_at.0),
                s(&r.fingerprint),
                r.binding
            )),
            None => lines.push(format!("{} (requested before this window)", a.approval)),
        }
        lines.extend(a.outcomes.iter().map(outcome_text));
        if a.outcomes.is_empty() {
            lines.push("no decision recorded".to_owned());
        }
        lines.push(format!("status: {}", a.status().to_uppercase()));
        field(out, "approval", &lines.join("\n"));
    }
    for m in &st.masks {
        let text = m
            .columns
            .iter()
            .map(|c| format!("{}: {}, {} values", s(&c.column), s(&c.strategy), c.values))
            .collect::<Vec<_>>()
            .join("\n");
        field(out, "masked", &format!("at {}\n{text}", stamp(m.at)));
    }
    if let Some(r) = &st.response {
        response_text(out, r);
    }
    if st.outcome_unknown {
        field(out, "response", &format!("OUTCOME UNKNOWN: {UNKNOWN}"));
    }
}

/// What an unknown outcome means.
pub(super) const UNKNOWN: &str = "let through to the database, but its session ended with no response \
recorded (the gateway stopped first, or could not record it): whether it ran, and what it returned, is unknown";

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Granted {
            at,
            operator,
            grant_until,
        } => format!(
            "GRANTED by {} at {}{}",
            s(operator),
            stamp(*at),
            grant_until
                .map(|u| format!(", and for this statement's fingerprint until {}", time(u.0)))
                .unwrap_or_default()
        ),
        Outcome::Denied {
            at,
            operator,
            reason,
        } => format!(
            "DENIED by {} at {}: {}",
            opt(operator, "Gatehouse"),
            stamp(*at),
            s(reason)
        ),
        Outcome::Expired { at } => format!("EXPIRED at {}", stamp(*at)),
        Outcome::GrantRevoked {
            at,
            operator,
            reason,
        } => format!(
            "GRANT REVOKED by {} at {}: {}",
            opt(operator, "Gatehouse"),
            stamp(*at),
            s(reason)
        ),
    }
}

fn response_text(out: &mut String, r: &Response) {
    let tag = r
        .command_tag
        .as_deref()
        .map_or_else(|| "no command tag".to_owned(), |t| s(t).into_owned());
    field(
        out,
        "response",
        &format!(
            "{tag} at {}: {} in {}, {} bytes to the client",
            stamp(r.at),
            count(r.rows, "row"),
            millis(r.duration_ns),
            r.bytes
        ),
    );
    if r.sqlstate.is_some() || r.error.is_some() {
        field(
            out,
            "error",
            &format!(
                "{}{}",
                r.sqlstate
                    .as_deref()
                    .map(|c| format!("SQLSTATE {}: ", s(c)))
                    .unwrap_or_default(),
                opt(&r.error, "")
            ),
        );
    }
    if !r.columns.is_empty() || !r.result.is_empty() {
        field(out, "rows", &table(r));
    }
    if let Some(d) = &r.result_digest {
        field(
            out,
            "digest",
            &format!("{d} (BLAKE3 of the rows as the database sent them, before masking)"),
        );
    }
}

/// The recorded rows as an aligned table.
fn table(r: &Response) -> String {
    let header: Vec<String> = r
        .columns
        .iter()
        .map(|c| match c.type_name {
            Some(t) => format!("{} ({t})", s(&c.name)),
            None => format!("{} (type {})", s(&c.name), c.type_oid),
        })
        .collect();
    let rows: Vec<Vec<String>> = r
        .result
        .iter()
        .map(|row| row.iter().map(cell_text).collect())
        .collect();
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let width = |i: usize| {
        rows.iter()
            .chain([&header])
            .filter_map(|row| row.get(i))
            .map(|c| c.chars().count().min(MAX_ALIGN))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let line = |row: &[String]| {
        row.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![line(&header)];
    lines.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    lines.extend(rows.iter().map(|row| line(row)));
    if r.truncated {
        lines.push(format!(
            "(truncated: {} of {} rows recorded)",
            r.result.len(),
            r.rows.max(r.result.len() as u64)
        ));
    } else if r.result.is_empty() {
        lines.push("(no rows)".to_owned());
    }
    lines.join("\n")
}

/// A value in a table cell: text as is unless it could be mistaken for
/// NULL, hex or padding (then quoted), binary as `0x…` with its decoding.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::Text { text } => {
            let ambiguous = text.is_empty()
                || text.eq_ignore_ascii_case("null")
                || text.starts_with("0x")
                || text.starts_with('\'')
                || text.contains('|')
                || text.trim() != text;
            if ambiguous {
                quoted(text)
            } else {
                s(text).into_owned()
            }
        }
        Value::Bytes { hex, decoded } => bytes_text(hex, decoded.as_deref()),
    }
}

/// A parameter: text always quoted, binary as `0x…`, NULL bare.
fn param_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::Text { text } => quoted(text),
        Value::Bytes { hex, decoded } => bytes_text(hex, decoded.as_deref()),
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", s(text).replace('\'', "''"))
}

fn bytes_text(hex: &str, decoded: Option<&str>) -> String {
    match decoded {
        Some(d) => format!("0x{hex} ({})", s(d)),
        None => format!("0x{hex}"),
    }
}

/// How much of the log was hashed to check the events shown.
pub(super) fn checked(c: &super::CheckpointInfo) -> String {
    if c.checked >= c.size {
        format!("every record it covers ({}) hashed against it", c.size)
    } else {
        format!(
            "{} of its {} records hashed against it (the window read, and the rest of its tree from stored subtree hashes)",
            c.checked, c.size
        )
    }
}

/// Whether a checkpoint's signature was checked, and with which key.
pub(super) fn signature(c: &super::CheckpointInfo) -> String {
    match &c.key {
        Some(key) => format!(
            "signature checked with {}",
            escape::visible(key, Lines::Escape)
        ),
        None => "its signature was NOT checked: no verifier key beside the ledger (pass --key)"
            .to_owned(),
    }
}
