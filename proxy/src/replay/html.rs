//! The replay as one self-contained HTML file a responder can attach to a
//! ticket: inline CSS, no scripts, no external resources (a Content
//! Security Policy forbids loading any), so it reads the same offline and
//! years later.
//!
//! Everything that came from agents or the database goes through
//! [`escape::html`]; denials, approvals, masks, errors and blocks are
//! styled apart and also labelled in words, so they stand out in print and
//! to readers who do not see the colours.

use std::fmt::Write;

use super::escape::{self, Lines};
use super::text::{cell_text, millis};
use super::value::Value;
use super::{count, Entry, Outcome, Replay, Response, Stamp, Statement};

const STYLE: &str = r#"
:root { --allow: #2e7d32; --deny: #c62828; --held: #b26a00; --mask: #6a1b9a; --error: #d84315; --muted: #616161; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #212121; }
h1 { font-size: 1.5em; margin-bottom: .3em; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: 0 0 1em; }
header dt { font-weight: 600; color: var(--muted); }
header dd { margin: 0; overflow-wrap: anywhere; }
code, pre, .hex { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .92em; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: .3em 0; background: #f5f5f5; padding: .5em .7em; border-radius: 4px; }
ol.timeline { list-style: none; padding: 0; margin: 0; }
li.entry { border-left: 5px solid #bdbdbd; padding: .5em 1em; margin: .7em 0; background: #fafafa; }
li.entry.allow { border-left-color: var(--allow); }
li.entry.deny, li.entry.block, li.entry.terminated, li.entry.authfail { border-left-color: var(--deny); background: #fdecea; }
li.entry.held { border-left-color: var(--held); background: #fff8e1; }
li.entry.mask { border-left-color: var(--mask); background: #f3e5f5; }
li.entry.error { border-left-color: var(--error); }
.when { color: var(--muted); font-size: .9em; }
.title { font-weight: 600; }
.badge { display: inline-block; padding: 0 .5em; border-radius: 3px; color: #fff; font-size: .85em; font-weight: 700; letter-spacing: .03em; }
.badge.allow { background: var(--allow); } .badge.deny { background: var(--deny); } .badge.held { background: var(--held); }
.badge.mask { background: var(--mask); } .badge.error { background: var(--error); } .badge.info { background: var(--muted); }
section.part { margin: .4em 0; }
section.part > h3 { font-size: .85em; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: .6em 0 .2em; }
section.approval { border: 1px dashed var(--held); padding: .3em .7em; background: #fffdf5; }
section.approval .granted { color: var(--allow); font-weight: 600; } section.approval .denied { color: var(--deny); font-weight: 600; }
section.approval .expired { color: var(--held); font-weight: 600; }
section.mask { border: 1px dashed var(--mask); padding: .3em .7em; background: #fcf7fd; }
.errortext { color: var(--error); font-weight: 600; }
table { border-collapse: collapse; margin: .3em 0; }
th, td { border: 1px solid #e0e0e0; padding: .15em .5em; text-align: left; vertical-align: top; }
th { background: #eeeeee; font-weight: 600; }
td .null { color: var(--muted); font-style: italic; }
td .hex, .param .hex { color: #1565c0; }
.decoded { color: var(--muted); }
.note { color: var(--muted); font-style: italic; }
"#;

/// A hostile string for one line of element content or an attribute.
use super::text::UNKNOWN;

fn h(text: &str) -> String {
    escape::html(text, Lines::Escape)
}

fn time(ts: u64) -> String {
    super::rfc3339(ts)
}

fn stamp(at: Stamp) -> String {
    format!(
        "<span class=\"when\"><time datetime=\"{t}\">{t}</time> · event #{seq}</span>",
        t = time(at.ts),
        seq = at.seq
    )
}

/// The replay as a complete HTML document.
pub fn render(replay: &Replay) -> String {
    let t = &replay.timeline;
    let selection = h(&t.selection.to_string());
    let mut out = String::with_capacity(16 << 10);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"gatehouse replay {version}\">\n\
         <title>Gatehouse replay: {selection}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n\
         <h1>Gatehouse replay of {selection}</h1>\n<dl>\n",
        version = env!("CARGO_PKG_VERSION"),
    );
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "<dt>{k}</dt><dd>{v}</dd>");
    };
    row(
        "Ledger",
        format!("<code>{}</code>", h(&replay.ledger.display().to_string())),
    );
    row("Selection", selection.clone());
    row("Window", h(&t.window.to_string()));
    row(
        "Events",
        match t.events {
            None => "none in this window".to_owned(),
            Some(r) => format!(
                "{} shown, event #{} ({}) to event #{} ({})",
                r.count,
                r.first.seq,
                time(r.first.ts),
                r.last.seq,
                time(r.last.ts)
            ),
        },
    );
    row(
        "Checkpoint",
        match &replay.checkpoint {
            Some(c) => format!(
                "newest signed checkpoint: {} events, root <code>{}</code> — {}; {}; {}{}",
                c.size,
                h(&c.root),
                if replay.covered_by_checkpoint() {
                    "covers every event shown"
                } else {
                    "does not yet cover the last events shown"
                },
                h(&super::text::signature(c)),
                h(&super::text::checked(c)),
                if replay.unsigned_not_shown > 0 {
                    format!(
                        "; {} not shown: no signed checkpoint covers them yet",
                        h(&super::count(replay.unsigned_not_shown, "later event"))
                    )
                } else {
                    String::new()
                }
            ),
            None => "none signed yet".to_owned(),
        },
    );
    row(
        "Verify",
        format!(
            "<code>{}</code><br><span class=\"note\">checks every event's hash chain, the Merkle tree and the signed checkpoints of the whole ledger with the auditor's verifier key; the event numbers above locate each entry in it</span>",
            h(&replay.verify)
        ),
    );
    let m = &t.summary;
    row(
        "Summary",
        format!(
            "{}; {}: {} allowed, <strong>{} denied</strong>, {} held for approval, {} masked, {} errors; {} terminations, {} blocks, {} failed logins",
            count(m.sessions, "session"), count(m.statements, "statement"), m.allowed, m.denied, m.held_for_approval, m.masked, m.errors,
            m.terminations, m.blocks, m.authentication_failures
        ),
    );
    out.push_str("</dl>\n</header>\n<main>\n<ol class=\"timeline\">\n");
    for entry in &t.entries {
        entry_html(&mut out, entry);
    }
    if t.entries.is_empty() {
        out.push_str("<li class=\"entry\"><span class=\"note\">No events of this selection in this window.</span></li>\n");
    }
    out.push_str("</ol>\n</main>\n</body>\n</html>\n");
    out
}

fn badge(class: &str, label: &str) -> String {
    format!("<span class=\"badge {class}\">{label}</span>")
}

fn opt(v: &Option<String>, none: &str) -> String {
    v.as_deref().map_or_else(|| none.to_owned(), h)
}

fn simple(out: &mut String, class: &str, at: Stamp, title: String, detail: String) {
    let _ = writeln!(
        out,
        "<li class=\"entry {class}\">{}<div class=\"title\">{title}</div>{detail}</li>",
        stamp(at)
    );
}

fn entry_html(out: &mut String, entry: &Entry) {
    match entry {
        Entry::SessionOpened(e) => simple(
            out,
            "session",
            e.at,
            format!("{} Session {} opened by {}", badge("info", "CONNECT"), e.session, h(&e.identity)),
            format!(
                "<div>from <code>{}</code> to target <code>{}</code>; application {}; credential {}; TLS {}</div>",
                h(&e.client_addr),
                h(&e.target),
                e.application_name
                    .as_deref()
                    .map_or_else(|| "not given".to_owned(), |a| format!("<code>{}</code>", h(a))),
                opt(&e.credential, "none"),
                if e.tls { "yes" } else { "no" }
            ),
        ),
        Entry::SessionClosed(e) => simple(
            out,
            "session",
            e.at,
            format!("{} Session {} closed after {} statements", badge("info", "DISCONNECT"), e.session, e.statements),
            format!("<div>{}</div>", h(&e.reason)),
        ),
        Entry::SessionTerminated(e) => simple(
            out,
            "terminated",
            e.at,
            format!(
                "{} Session {} terminated by {}",
                badge("deny", "TERMINATED"),
                e.session,
                opt(&e.operator, "Gatehouse")
            ),
            format!("<div>{}</div>", h(&e.reason)),
        ),
        Entry::Statement(s) => statement_html(out, s),
        Entry::ApprovalOutcome(e) => simple(
            out,
            "held",
            e.at,
            format!(
                "{} Session {} approval {} (requested before this window)",
                badge("held", "APPROVAL"),
                e.session,
                e.approval
            ),
            format!("<div>{}</div>", outcome_html(&e.outcome)),
        ),
        Entry::AuthenticationFailed(e) => simple(
            out,
            "authfail",
            e.at,
            format!("{} Login failed as {}", badge("deny", "LOGIN FAILED"), h(&e.identity)),
            format!(
                "<div>from <code>{}</code> to target {}: {}</div>",
                h(&e.client_addr),
                opt(&e.target, "(none)"),
                h(&e.reason)
            ),
        ),
        Entry::IdentityCreated(e) => simple(
            out,
            "identity",
            e.at,
            format!("Identity {} created by {}", h(&e.identity), h(&e.operator)),
            e.description.as_deref().map(|d| format!("<div>{}</div>", h(d))).unwrap_or_default(),
        ),
        Entry::IdentityBlocked(e) => simple(
            out,
            "block",
            e.at,
            format!(
                "{} Identity {} blocked {}",
                badge("deny", "BLOCKED"),
                h(&e.identity),
                match &e.trigger {
                    Some(t) => format!("automatically ({})", h(t)),
                    None => format!("by {}", h(&e.operator)),
                }
            ),
            format!("<div>{}</div>", h(&e.reason)),
        ),
        Entry::IdentityUnblocked(e) => simple(
            out,
            "identity",
            e.at,
            format!("Identity {} unblocked by {}", h(&e.identity), h(&e.operator)),
            e.reason.as_deref().map(|r| format!("<div>{}</div>", h(r))).unwrap_or_default(),
        ),
        Entry::CredentialIssued(e) => simple(
            out,
            "identity",
            e.at,
            format!("Credential <code>{}</code> issued to {} by {}", h(&e.credential), h(&e.identity), h(&e.operator)),
            format!("<div>valid until {}</div>", time(e.expires_at.0)),
        ),
        Entry::CredentialRevoked(e) => simple(
            out,
            "block",
            e.at,
            format!(
                "{} Credential <code>{}</code> of {} revoked by {}",
                badge("deny", "REVOKED"),
                h(&e.credential),
                h(&e.identity),
                h(&e.operator)
            ),
            format!("<div>{}</div>", h(&e.reason)),
        ),
        Entry::Other(e) => simple(
            out,
            "other",
            e.at,
            format!("{} event", h(e.event)),
            e.detail.as_deref().map(h).unwrap_or_default(),
        ),
    }
}

fn statement_html(out: &mut String, st: &Statement) {
    let action = st.decision.as_ref().map(|d| d.action);
    let errored = st
        .response
        .as_ref()
        .is_some_and(|r| r.sqlstate.is_some() || r.error.is_some());
    let (class, label) = match action {
        Some("deny") => ("deny", "DENIED"),
        Some("require_approval") => match st.approvals.last().map(super::Approval::status) {
            Some("granted") => ("held", "HELD, APPROVED"),
            Some("denied") => ("deny", "HELD, APPROVAL DENIED"),
            Some("expired") => ("deny", "HELD, APPROVAL EXPIRED"),
            _ => ("held", "HELD FOR APPROVAL"),
        },
        Some("mask") => ("mask", "MASKED"),
        _ if !st.masks.is_empty() => ("mask", "MASKED"),
        Some("allow") => ("allow", "ALLOWED"),
        _ => ("", "NO DECISION IN WINDOW"),
    };
    let mut classes = format!("entry statement {class}");
    if errored {
        classes.push_str(" error");
    }
    let _ = writeln!(
        out,
        "<li class=\"{classes}\">{}<div class=\"title\">{} {}Session {} · statement {}{}</div>",
        stamp(st.at),
        badge(if class.is_empty() { "info" } else { class }, label),
        if errored {
            format!("{} ", badge("error", "ERROR"))
        } else {
            String::new()
        },
        st.session,
        st.query,
        st.received
            .as_ref()
            .map(|r| format!(" <span class=\"when\">({} protocol)</span>", r.protocol))
            .unwrap_or_default()
    );
    match &st.received {
        Some(r) => {
            let _ = writeln!(
                out,
                "<pre class=\"sql\">{}</pre>",
                escape::html(&r.sql, Lines::Keep)
            );
            if !r.params.is_empty() {
                out.push_str(
                    "<section class=\"part\"><h3>Parameters</h3><table class=\"params\">\n",
                );
                for (i, p) in r.params.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "<tr class=\"param\"><th>${}</th><td>{}</td><td>{}</td></tr>",
                        i + 1,
                        p.format,
                        value_html(&p.value)
                    );
                }
                out.push_str("</table></section>\n");
            }
        }
        None => out.push_str("<div class=\"note\">Received before this window.</div>\n"),
    }
    if let Some(d) = &st.decision {
        let rule = match &d.rule {
            Some(r) => format!("rule <code>{}</code>", h(r)),
            None => "the default (no rule matched)".to_owned(),
        };
        let _ = write!(
            out,
            "<section class=\"part decision\"><h3>Decision</h3><div>{} by {rule}; class {}",
            h(d.action),
            d.class
        );
        if !d.tables.is_empty() {
            let _ = write!(out, "; tables <code>{}</code>", h(&d.tables.join(", ")));
        }
        if !d.columns.is_empty() {
            let _ = write!(out, "; columns <code>{}</code>", h(&d.columns.join(", ")));
        }
        let _ = write!(out, " {}</div>", stamp(d.at));
        if let Some(m) = &d.message {
            let _ = write!(
                out,
                "<div class=\"errortext\">Message to the client: {}</div>",
                h(m)
            );
        }
        out.push_str("</section>\n");
    }
    for a in &st.approvals {
        let _ = write!(
            out,
            "<section class=\"part approval\"><h3>Approval {}</h3>",
            a.approval
        );
        match &a.requested {
            Some(r) => {
                let _ = write!(
                    out,
                    "<div>Requested {}: rule <code>{}</code>, {} approver(s) needed, expires {}</div>\
                     <div>Fingerprint <code>{}</code></div><div>Binding <code>{}</code></div>",
                    stamp(r.at),
                    h(&r.rule),
                    r.quorum,
                    time(r.expires_at.0),
                    h(&r.fingerprint),
                    h(&r.binding)
                );
            }
            None => out.push_str("<div class=\"note\">Requested before this window.</div>"),
        }
        for o in &a.outcomes {
            let _ = write!(out, "<div>{}</div>", outcome_html(o));
        }
        if a.outcomes.is_empty() {
            out.push_str("<div class=\"note\">No decision recorded.</div>");
        }
        let _ = write!(out, "<div>Status: <strong>{}</strong></div>", a.status());
        out.push_str("</section>\n");
    }
    for m in &st.masks {
        let _ = write!(
            out,
            "<section class=\"part mask\"><h3>Masked {}</h3><table><tr><th>Column</th><th>Strategy</th><th>Values masked</th></tr>",
            stamp(m.at)
        );
        for c in &m.columns {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                h(&c.column),
                h(&c.strategy),
                c.values
            );
        }
        out.push_str("</table></section>\n");
    }
    if let Some(r) = &st.response {
        response_html(out, r);
    }
    if st.outcome_unknown {
        out.push_str(&format!(
            "<div class=\"error\"><strong>Outcome unknown</strong>: {}</div>",
            h(UNKNOWN)
        ));
    }
    out.push_str("</li>\n");
}

fn outcome_html(o: &Outcome) -> String {
    match o {
        Outcome::Granted {
            at,
            operator,
            grant_until,
        } => format!(
            "<span class=\"granted\">Granted</span> by {} {}{}",
            h(operator),
            stamp(*at),
            grant_until
                .map(|u| format!(
                    "; this statement's fingerprint is allowed until {}",
                    time(u.0)
                ))
                .unwrap_or_default()
        ),
        Outcome::Denied {
            at,
            operator,
            reason,
        } => format!(
            "<span class=\"denied\">Denied</span> by {} {}: {}",
            opt(operator, "Gatehouse"),
            stamp(*at),
            h(reason)
        ),
        Outcome::Expired { at } => format!("<span class=\"expired\">Expired</span> {}", stamp(*at)),
        Outcome::GrantRevoked {
            at,
            operator,
            reason,
        } => format!(
            "<span class=\"denied\">Grant revoked</span> by {} {}: {}",
            opt(operator, "Gatehouse"),
            stamp(*at),
            h(reason)
        ),
    }
}

fn response_html(out: &mut String, r: &Response) {
    let _ = write!(
        out,
        "<section class=\"part response\"><h3>Response</h3><div><code>{}</code>: {} in {}, {} bytes to the client {}</div>",
        r.command_tag.as_deref().map_or_else(|| "no command tag".to_owned(), h),
        count(r.rows, "row"),
        millis(r.duration_ns),
        r.bytes,
        stamp(r.at)
    );
    if r.sqlstate.is_some() || r.error.is_some() {
        let _ = write!(
            out,
            "<div class=\"errortext\">{}{}</div>",
            r.sqlstate
                .as_deref()
                .map(|c| format!("SQLSTATE {}: ", h(c)))
                .unwrap_or_default(),
            opt(&r.error, "")
        );
    }
    if !r.columns.is_empty() || !r.result.is_empty() {
        out.push_str("<table class=\"rows\"><tr>");
        for c in &r.columns {
            let _ = write!(
                out,
                "<th>{} <span class=\"decoded\">{}{}</span></th>",
                h(&c.name),
                c.type_name
                    .map_or_else(|| format!("type {}", c.type_oid), str::to_owned),
                if c.format == "binary" { ", binary" } else { "" }
            );
        }
        out.push_str("</tr>\n");
        for row in &r.result {
            out.push_str("<tr>");
            for v in row {
                let _ = write!(out, "<td>{}</td>", value_html(v));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        if r.truncated {
            let _ = write!(
                out,
                "<div class=\"note\">Truncated: {} of {} rows recorded.</div>",
                r.result.len(),
                r.rows.max(r.result.len() as u64)
            );
        } else if r.result.is_empty() {
            out.push_str("<div class=\"note\">No rows.</div>");
        }
    }
    if let Some(d) = &r.result_digest {
        let _ = write!(
            out,
            "<div>Result digest <code>{}</code> <span class=\"note\">(BLAKE3 of the rows as the database sent them, before masking)</span></div>",
            h(d)
        );
    }
    out.push_str("</section>\n");
}

fn value_html(v: &Value) -> String {
    match v {
        Value::Null => "<span class=\"null\">NULL</span>".to_owned(),
        Value::Text { .. } => h(&cell_text(v)),
        Value::Bytes { hex, decoded } => format!(
            "<span class=\"hex\">0x{}</span>{}",
            h(hex),
            decoded
                .as_deref()
                .map(|d| format!(" <span class=\"decoded\">({})</span>", h(d)))
                .unwrap_or_default()
        ),
    }
}
