//! The console's pages, rendered on the server from plain view values.
//!
//! maud escapes every interpolated value, so SQL, parameters, identities
//! and application names (all chosen by the agent being judged) render as
//! text. Pages load only the console's own script and style sheet (the
//! Content-Security-Policy allows nothing else): htmx refreshes a page's
//! live parts when the event stream says something changed, and forms are
//! plain POSTs carrying the session's form token.

use maud::{html, Markup, DOCTYPE};

use gatehouse_engine::operators::ChatLink;

use crate::gateway::control::admin::SessionView;
use crate::gateway::control::chat_links::ChatUser;

/// Who is looking, and what they may do.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The operator signed in.
    pub operator: String,
    /// The session's form token, put in every form.
    pub form_token: String,
    /// Holds the approver role.
    pub approver: bool,
    /// Holds the responder role.
    pub responder: bool,
}

/// A statement held for approval, with its context.
#[derive(Debug, Clone)]
pub struct HeldView {
    /// The approval request.
    pub approval: u64,
    /// The identity that asked.
    pub identity: String,
    /// Its session.
    pub session: u64,
    /// The session's application_name and client address, while it runs.
    pub application_name: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The statement as sent.
    pub sql: String,
    /// Its bind parameters, shown (text, or hex for binary; `None` = NULL).
    pub params: Vec<Option<String>>,
    /// Class, tables and columns, as policy judged them.
    pub class: Option<String>,
    /// Tables it touches.
    pub tables: Vec<String>,
    /// Columns it names.
    pub columns: Vec<String>,
    /// The rule that held it, and its message.
    pub rule: String,
    /// The rule's message, if any.
    pub message: Option<String>,
    /// What a grant covers.
    pub fingerprint: String,
    /// Distinct approvers required, and those so far.
    pub quorum: u64,
    /// Approvers so far.
    pub approvers: Vec<String>,
    /// When it was requested and when it expires, RFC 3339, and the
    /// expiry in Unix milliseconds (for the countdown).
    pub requested_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// The session's recent statements: SQL and what policy did.
    pub recent: Vec<(String, String)>,
}

/// Grant durations offered with "approve for".
pub const DURATIONS: &[&str] = &["15m", "30m", "1h", "4h", "8h"];

fn layout(title: &str, viewer: Option<&Viewer>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No inline styles from htmx, no eval: the CSP allows neither.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · Gatehouse" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/htmx.min.js" {}
                script src="/console/assets/console.js" {}
            }
            body {
                header {
                    strong { "Gatehouse" }
                    @if let Some(v) = viewer {
                        nav {
                            a href="/console/inbox" class=[(active == "inbox").then_some("active")] { "Held statements" }
                            a href="/console/sessions" class=[(active == "sessions").then_some("active")] { "Sessions" }
                            a href="/console/policy" class=[(active == "policy").then_some("active")] { "Policy" }
                            a href="/console/audit" class=[(active == "audit").then_some("active")] { "Audit" }
                            a href="/console/account" class=[(active == "account").then_some("active")] { "Account" }
                        }
                        form method="post" action="/console/signout" class="signout" {
                            input type="hidden" name="form_token" value=(v.form_token);
                            span { "Signed in as " strong { (v.operator) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn signin(error: Option<&str>, next: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        "",
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p class="error" { (e) } }
            form method="post" action="/console/signin" {
                @if let Some(next) = next { input type="hidden" name="next" value=(next); }
                label for="token" { "Operator token" }
                input id="token" type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
            p class="hint" {
                "The token is exchanged once for a session; the browser keeps only a session cookie."
            }
        },
    )
}

/// The inbox of held statements; its list refreshes itself.
pub fn inbox(viewer: &Viewer, held: &[HeldView], now_ms: u64) -> Markup {
    layout(
        "Held statements",
        Some(viewer),
        "inbox",
        html! {
            h1 { "Held statements" }
            div id="inbox" hx-get="/console/inbox/items" hx-trigger="gatehouse:changed from:body" hx-swap="innerHTML" {
                (inbox_items(viewer, held, now_ms))
            }
        },
    )
}

/// The inbox's list: every pending request with its context and, for an
/// approver who may vote on it, the decision forms.
pub fn inbox_items(viewer: &Viewer, held: &[HeldView], now_ms: u64) -> Markup {
    html! {
        @if held.is_empty() {
            p class="empty" { "No statement is waiting for approval." }
        }
        @for h in held {
            article class="held" id={ "approval-" (h.approval) } data-approval=(h.approval) {
                header {
                    h2 { "Request " (h.approval) }
                    span class="progress" { (h.approvers.len()) " of " (h.quorum) " approvals" }
                    @if !h.approvers.is_empty() {
                        span class="approvers" { "by " (h.approvers.join(", ")) }
                    }
                    span class="expiry" data-expires=(h.expires_ms) title=(h.expires_at) {
                        "expires in " (countdown(h.expires_ms, now_ms))
                    }
                }
                dl {
                    dt { "Identity" } dd class="identity" { (h.identity) }
                    dt { "Application" } dd class="application" { (h.application_name.as_deref().unwrap_or("—")) }
                    dt { "Session" } dd { a href={ "/console/replay?session=" (h.session) } { (h.session) } }
                    dt { "Client" } dd { (h.client_addr.as_deref().unwrap_or("—")) }
                    dt { "Rule" } dd class="rule" { (h.rule) }
                    @if let Some(m) = &h.message { dt { "Message" } dd class="message" { (m) } }
                    @if let Some(c) = &h.class { dt { "Class" } dd class="class" { (c) } }
                    dt { "Tables" } dd class="tables" { (list(&h.tables)) }
                    dt { "Columns" } dd class="columns" { (list(&h.columns)) }
                    dt { "Fingerprint" } dd { code class="fingerprint" { (h.fingerprint) } }
                    dt { "Requested" } dd { (h.requested_at) }
                }
                pre class="sql" { code { (h.sql) } }
                @if !h.params.is_empty() {
                    ol class="params" {
                        @for p in &h.params {
                            li { @match p { Some(v) => code { (v) }, None => em { "NULL" } } }
                        }
                    }
                }
                @if !h.recent.is_empty() {
                    details class="recent" {
                        summary { "Recent statements of this session" }
                        table {
                            @for (sql, action) in &h.recent {
                                tr { td { code { (sql) } } td { (action) } }
                            }
                        }
                    }
                }
                (decision_forms(viewer, h))
            }
        }
    }
}

fn decision_forms(viewer: &Viewer, h: &HeldView) -> Markup {
    let asked_by_viewer = viewer.operator == h.identity;
    let voted = h.approvers.contains(&viewer.operator);
    html! {
        @if !viewer.approver {
        } @else if asked_by_viewer {
            p class="note" { "You cannot decide on a statement of an identity named like you." }
        } @else if voted {
            p class="note" { "You approved; waiting for other approvers." }
        } @else {
            div class="decide" {
                form method="post" action={ "/console/approvals/" (h.approval) "/approve" } class="approve" {
                    input type="hidden" name="form_token" value=(viewer.form_token);
                    button type="submit" name="duration" value="" { "Approve once" }
                }
                form method="post" action={ "/console/approvals/" (h.approval) "/approve" } class="approve-for" {
                    input type="hidden" name="form_token" value=(viewer.form_token);
                    label { "Approve for "
                        select name="duration" {
                            @for d in DURATIONS { option value=(d) selected[*d == "30m"] { (d) } }
                        }
                    }
                    button type="submit" { "Approve for duration" }
                }
                form method="post" action={ "/console/approvals/" (h.approval) "/deny" } class="deny" {
                    input type="hidden" name="form_token" value=(viewer.form_token);
                    input type="text" name="reason" placeholder="Reason (shown to the client)" required;
                    button type="submit" { "Deny" }
                }
            }
        }
    }
}

/// The running sessions; the table refreshes itself.
pub fn sessions(viewer: &Viewer, rows: &[SessionView]) -> Markup {
    layout(
        "Sessions",
        Some(viewer),
        "sessions",
        html! {
            h1 { "Sessions" }
            div id="sessions" hx-get="/console/sessions/rows" hx-trigger="every 2s" hx-swap="innerHTML" {
                (session_rows(viewer, rows))
            }
        },
    )
}

/// The sessions table.
pub fn session_rows(viewer: &Viewer, rows: &[SessionView]) -> Markup {
    html! {
        @if rows.is_empty() { p class="empty" { "No session is open." } }
        @else {
            table class="sessions" {
                thead { tr {
                    th { "Session" } th { "Identity" } th { "Target" } th { "Client" }
                    th { "Application" } th { "Started" } th { "Statements" } th { "Running now" }
                    @if viewer.responder { th { "Contain" } }
                } }
                tbody {
                    @for r in rows {
                        tr id={ "session-" (r.session) } {
                            td { a href={ "/console/replay?session=" (r.session) } { (r.session) } }
                            td class="identity" { (r.identity) }
                            td { (r.target) }
                            td { (r.client_addr) }
                            td class="application" { (r.application_name.as_deref().unwrap_or("—")) }
                            td { (r.started) }
                            td { (r.statements) }
                            td { @if let Some(sql) = &r.current { code { (sql) } " (" (r.running_ms.unwrap_or(0)) " ms)" } }
                            @if viewer.responder {
                                td class="contain" {
                                    form method="post" action={ "/console/sessions/" (r.session) "/kill" } {
                                        input type="hidden" name="form_token" value=(viewer.form_token);
                                        input type="text" name="reason" placeholder="Reason" required;
                                        button type="submit" { "Kill" }
                                    }
                                    form method="post" action={ "/console/identities/" (r.identity) "/block" } {
                                        input type="hidden" name="form_token" value=(viewer.form_token);
                                        input type="text" name="reason" placeholder="Reason" required;
                                        button type="submit" { "Block " (r.identity) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The dry-run form's fields, as last submitted.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// The identity asking.
    pub identity: String,
    /// The target.
    pub target: String,
    /// The SQL to judge.
    pub sql: String,
}

/// The policy page: the policy in force and a dry run.
pub fn policy(
    viewer: &Viewer,
    source: &str,
    digest: &str,
    targets: &[String],
    form: &DryRun,
    result: Option<Result<&crate::commands::Explanation, &str>>,
) -> Markup {
    layout(
        "Policy",
        Some(viewer),
        "policy",
        html! {
            h1 { "Policy" }
            section class="dry-run" {
                h2 { "Dry run" }
                p class="hint" { "What the gateway would do with a statement, through the pipeline its sessions use (views, catalog, masking, grants, blocks), without running or recording it." }
                form method="post" action="/console/policy" {
                    input type="hidden" name="form_token" value=(viewer.form_token);
                    label { "Identity " input type="text" name="identity" value=(form.identity) required; }
                    label { "Target "
                        select name="target" {
                            @for t in targets { option value=(t) selected[*t == form.target] { (t) } }
                        }
                    }
                    label class="sql" { "SQL" textarea name="sql" rows="4" required { (form.sql) } }
                    button type="submit" { "Explain" }
                }
                @match result {
                    Some(Ok(e)) => {
                        div class="explanation" {
                            p { "Verdict: " strong class="verdict" { (e.action) }
                                @if let Some(r) = &e.rule { " by rule " code { (r) } }
                                @if e.read_only { " (the identity's upstream session is read-only)" } }
                            @if let Some(m) = &e.message { p class="message" { (m) } }
                            table class="statements" {
                                thead { tr { th { "Command" } th { "Class" } th { "Action" } th { "Rule" } th { "Tables" } th { "Columns" } th { "Functions" } th { "Why" } th { "Masks" } } }
                                tbody {
                                    @for st in &e.statements {
                                        tr {
                                            td { (st.command) } td { (st.class) } td { (st.action) }
                                            td { (st.rule.as_deref().unwrap_or("—")) }
                                            td { (list(&st.tables)) } td { (list(&st.columns)) } td { (list(&st.functions)) }
                                            td { (st.reason.as_deref().unwrap_or("")) } td { (list(&st.masks)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Some(Err(why)) => { p class="error" { (why) } }
                    None => {}
                }
            }
            section {
                h2 { "In force" }
                p class="hint" { "BLAKE3 " code { (digest) } }
                pre class="policy" { code { (source) } }
            }
        },
    )
}

/// One operator decision or containment, as the audit view lists it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// When it was recorded, RFC 3339.
    pub time: String,
    /// The ledger sequence number.
    pub seq: u64,
    /// Who (an operator, or `gateway` for the gateway's own decisions).
    pub operator: String,
    /// What was done.
    pub action: String,
    /// To what (an approval request, identity or session).
    pub target: String,
    /// The reason given, if any.
    pub reason: Option<String>,
}

/// The audit view: recent decisions and containment, newest first, from
/// the events the signed log vouches for.
pub fn audit(viewer: &Viewer, entries: &[AuditEntry], note: &str) -> Markup {
    layout(
        "Audit",
        Some(viewer),
        "audit",
        html! {
            h1 { "Audit" }
            p class="hint" { (note) }
            @if entries.is_empty() { p class="empty" { "Nothing to show yet." } }
            @else {
                table class="audit" {
                    thead { tr { th { "Time" } th { "Event" } th { "Operator" } th { "Action" } th { "On" } th { "Reason" } } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { (e.time) } td { (e.seq) }
                                td class="operator" { (e.operator) } td class="action" { (e.action) }
                                td { (e.target) } td class="reason" { (e.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A chat user asking to be linked to the signed-in operator: who they
/// are, what linking means, and the confirmation form.
pub fn chat_link(viewer: &Viewer, user: &ChatUser, code: &str, linked_to: Option<&str>) -> Markup {
    layout(
        "Link a chat user",
        Some(viewer),
        "account",
        html! {
            h1 { "Link a " (user.service) " user to your operator" }
            dl class="context" {
                dt { "User" } dd class="chat-user" { (user.display.as_deref().unwrap_or("(no name given)")) " (" (user.user) ")" }
                dt { "Workspace" } dd { (user.workspace) }
                dt { "Operator" } dd class="operator" { (viewer.operator) }
                @if let Some(other) = linked_to { dt { "Linked now to" } dd { (other) } }
            }
            p {
                "Buttons this user presses in " (user.service) " will act as " strong { (viewer.operator) }
                ", with your roles, and are recorded as yours. Link only your own account."
            }
            form method="post" action=(format!("/console/link/{code}")) {
                input type="hidden" name="form_token" value=(viewer.form_token);
                button type="submit" class="approve" { "Link to " (viewer.operator) }
            }
        },
    )
}

/// The signed-in operator's chat links, each with its unlink form.
pub fn account(viewer: &Viewer, links: &[ChatLink], notice: Option<&str>) -> Markup {
    layout(
        "Account",
        Some(viewer),
        "account",
        html! {
            h1 { "Account: " (viewer.operator) }
            @if let Some(n) = notice { p class="notice" { (n) } }
            h2 { "Linked chat users" }
            @if links.is_empty() {
                p class="empty" { "No chat user is linked to you. Press a button on a Gatehouse message in Slack to get a link." }
            } @else {
                table {
                    thead { tr { th { "Service" } th { "Workspace" } th { "User" } th {} } }
                    tbody {
                        @for l in links {
                            tr class="chat-link" {
                                td { (l.service) } td { (l.workspace) }
                                td { (l.display.as_deref().unwrap_or("")) " (" (l.user) ")" }
                                td {
                                    form method="post" action="/console/account/unlink" {
                                        input type="hidden" name="form_token" value=(viewer.form_token);
                                        input type="hidden" name="service" value=(l.service);
                                        input type="hidden" name="workspace" value=(l.workspace);
                                        input type="hidden" name="user" value=(l.user);
                                        button type="submit" class="deny" { "Unlink" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// An error page: what happened and what to do.
pub fn problem(viewer: Option<&Viewer>, title: &str, message: &str) -> Markup {
    layout(
        title,
        viewer,
        "",
        html! {
            h1 { (title) }
            p class="error" { (message) }
            p { a href="/console/inbox" { "Back to the held statements" } }
        },
    )
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "—".to_owned()
    } else {
        items.join(", ")
    }
}

/// `12m 05s` until `expires_ms` (the page's script keeps it current).
fn countdown(expires_ms: u64, now_ms: u64) -> String {
    let s = expires_ms.saturating_sub(now_ms) / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(name: &str, approver: bool) -> Viewer {
        Viewer {
            operator: name.into(),
            form_token: "tok".into(),
            approver,
            responder: false,
        }
    }

    fn held(identity: &str) -> HeldView {
        HeldView {
            approval: 7,
            identity: identity.into(),
            session: 3,
            application_name: Some("<img src=x onerror=alert(1)>".into()),
            client_addr: Some("127.0.0.1:5000".into()),
            sql: "DELETE FROM t WHERE note = '<script>alert(1)</script>'".into(),
            params: vec![Some("\"><script>x</script>".into()), None],
            class: Some("write".into()),
            tables: vec!["public.t".into()],
            columns: vec![],
            rule: "hold-deletes".into(),
            message: None,
            fingerprint: "delete from t where note=?".into(),
            quorum: 2,
            approvers: vec!["bob".into()],
            requested_at: "2026-12-07T00:00:00Z".into(),
            expires_at: "2026-12-07T00:15:00Z".into(),
            expires_ms: 900_000,
            recent: vec![("SELECT 1".into(), "allow".into())],
        }
    }

    #[test]
    fn what_the_agent_chose_renders_as_text() {
        let page = inbox(&viewer("alice", true), &[held("agent<b>")], 0).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // Only the console's own scripts, no inline script or handler.
        assert_eq!(page.matches("<script").count(), 2);
        assert!(!page.contains(" onerror=\"") && !page.contains(" onclick="));
    }

    #[test]
    fn buttons_are_for_approvers_who_may_vote() {
        let forms =
            |v: &Viewer, h: &HeldView| inbox_items(v, std::slice::from_ref(h), 0).into_string();
        assert!(forms(&viewer("alice", true), &held("agent")).contains("/approvals/7/approve"));
        assert!(!forms(&viewer("alice", false), &held("agent")).contains("<form"));
        let own = forms(&viewer("agent", true), &held("agent"));
        assert!(!own.contains("<form") && own.contains("named like you"));
        let voted = forms(&viewer("bob", true), &held("agent"));
        assert!(!voted.contains("<form") && voted.contains("waiting for other approvers"));
        assert!(forms(&viewer("alice", true), &held("agent")).contains("1 of 2 approvals"));
    }

    #[test]
    fn countdowns_read_naturally() {
        assert_eq!(countdown(905_000, 0), "15m 05s");
        assert_eq!(countdown(7_500_000, 0), "2h 05m");
        assert_eq!(countdown(0, 5_000), "0m 00s");
    }
}
