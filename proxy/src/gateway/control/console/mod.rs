//! The approvers' and responders' console: `/console` on the admin
//! listener (issue 18).
//!
//! Every action goes through the code the `/v1` API uses: the same role
//! check ([`admin::permit`], which records refusals), the same approval
//! desk, the same containment, so every click is an operator action in the
//! ledger. What is different is how the operator is known: an operator
//! token is exchanged once for a server-side session ([`signin`]); its
//! cookie is `HttpOnly`, `SameSite=Strict`, and `__Host-`/`Secure` when the
//! listener has TLS. A POST is refused unless the browser says it comes
//! from this origin (`Sec-Fetch-Site`, else `Origin`) and it carries the
//! session's form token. Pages are rendered on the server ([`pages`]) with
//! escaping on, and served under a Content-Security-Policy that runs only
//! the console's own scripts.

pub mod pages;
pub mod signin;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use gatehouse_engine::approvals::ShownParam;
use gatehouse_engine::operators::Role;
use gatehouse_ledger::writer::Clock;
use gatehouse_ledger::{EventBody, LedgerReader};
use serde::Deserialize;

use crate::gateway::control::admin::{self, Refusal};
use crate::gateway::control::chat_links::ChatLinkCodes;
use crate::gateway::control::shared::Shared;
use pages::{HeldView, Viewer};
use signin::{ConsoleSessions, SignedIn};

/// The vendored htmx (2.0.4, Zero-Clause BSD; see assets/console/).
const HTMX: &str = include_str!("../../../../assets/console/htmx.min.js");
const SCRIPT: &str = include_str!("../../../../assets/console/console.js");
const STYLE: &str = include_str!("../../../../assets/console/console.css");
const ICON: &str = include_str!("../../../../assets/console/favicon.svg");

/// Pages run the console's own script and style sheet, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A replay is the self-contained page `gatehouse replay --html` writes:
/// its styles are inline, and it runs no script at all.
const REPLAY_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Statements of a session shown with a held one.
const RECENT: usize = 10;

/// Events read before a held request for its statement and the session's
/// recent ones.
const CONTEXT_WINDOW: u64 = 5_000;

/// The audit view reads the log's newest events, this many at most.
const AUDIT_WINDOW: u64 = 50_000;

/// Entries the audit view shows, newest first.
const AUDIT_SHOWN: usize = 500;

/// The console's own state beside the gateway's.
pub struct Console {
    sessions: ConsoleSessions,
    /// The admin listener has TLS: the cookie is `__Host-` and `Secure`.
    tls: bool,
    clock: Clock,
    /// Codes chat users open here to link themselves to an operator.
    chat_links: Arc<ChatLinkCodes>,
}

impl Console {
    /// A console with no session yet.
    pub fn new(tls: bool, clock: Clock) -> Self {
        Console {
            sessions: ConsoleSessions::new(clock.clone()),
            tls,
            chat_links: Arc::new(ChatLinkCodes::new(clock.clone())),
            clock,
        }
    }

    /// The codes chat integrations offer unlinked users (opened at
    /// `/console/link/CODE`).
    pub fn chat_links(&self) -> Arc<ChatLinkCodes> {
        self.chat_links.clone()
    }

    fn cookie_name(&self) -> &'static str {
        if self.tls {
            "__Host-gatehouse"
        } else {
            "gatehouse_console"
        }
    }

    fn set_cookie(&self, value: &str) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        )
    }

    fn cookie<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    console: Arc<Console>,
}

/// The console's routes, to merge into the admin router.
pub fn router(shared: Arc<Shared>, console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/inbox") }))
        .route("/console/signin", get(signin_page).post(signin_submit))
        .route("/console/signout", post(signout))
        .route("/console/inbox", get(inbox))
        .route("/console/inbox/items", get(inbox_items))
        .route("/console/events", get(events))
        .route("/console/approvals/{approval}/approve", post(approve))
        .route("/console/approvals/{approval}/deny", post(deny))
        .route("/console/sessions", get(sessions))
        .route("/console/sessions/rows", get(session_rows))
        .route("/console/sessions/{session}/kill", post(kill))
        .route("/console/identities/{identity}/block", post(block))
        .route("/console/replay", get(replay))
        .route("/console/policy", get(policy_page).post(policy_dry_run))
        .route("/console/audit", get(audit))
        .route("/console/link/{code}", get(link_page).post(link_submit))
        .route("/console/account", get(account))
        .route("/console/account/unlink", post(unlink))
        .route("/console/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(hardened))
        .with_state(Ctx { shared, console })
}

/// Headers every console response carries.
async fn hardened(mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A console request that cannot go on: a page saying why, or the way to
/// sign in.
enum Stop {
    SignIn,
    /// Sign in, then come back to this console path.
    SignInThen(String),
    Page(StatusCode, String, Option<Viewer>),
}

impl IntoResponse for Stop {
    fn into_response(self) -> Response {
        match self {
            Stop::SignIn => Redirect::to("/console/signin").into_response(),
            Stop::SignInThen(next) => {
                Redirect::to(&format!("/console/signin?next={next}")).into_response()
            }
            Stop::Page(status, message, viewer) => {
                let title = match status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::BAD_REQUEST => "Cannot do that",
                    StatusCode::CONFLICT => "Already decided",
                    _ => "Not done",
                };
                (
                    status,
                    Html(pages::problem(viewer.as_ref(), title, &message).into_string()),
                )
                    .into_response()
            }
        }
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Stop::Page(r.0, r.1, None)
    }
}

/// A refusal shown as a page to `viewer`.
fn refused(viewer: &Viewer) -> impl Fn(Refusal) -> Stop + '_ {
    move |r| Stop::Page(r.0, r.1, Some(viewer.clone()))
}

impl Ctx {
    /// The signed-in operator behind this request, with what they may do
    /// now (roles are read fresh: a removed operator is signed out).
    fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, Stop> {
        let key = self.console.cookie(headers).ok_or(Stop::SignIn)?;
        let SignedIn {
            operator,
            form_token,
        } = self.console.sessions.find(key).ok_or(Stop::SignIn)?;
        let operators = self.shared.operators.read().expect("operators lock");
        let Some(o) = operators.get(&operator) else {
            self.console.sessions.end(key);
            return Err(Stop::SignIn);
        };
        Ok(Viewer {
            approver: o.roles.contains(&Role::Approver),
            responder: o.roles.contains(&Role::Responder),
            operator,
            form_token,
        })
    }

    /// The viewer of a POST: from this origin, with the session's form
    /// token; otherwise refused (and recorded) before anything is done.
    async fn poster(&self, headers: &HeaderMap, token: &str, action: &str) -> Result<Viewer, Stop> {
        if !same_origin(headers) {
            admin::record(
                &self.shared,
                "(unauthenticated)",
                action,
                None,
                "forbidden",
                Some("cross-origin console request".into()),
            )
            .await;
            return Err(Stop::Page(
                StatusCode::FORBIDDEN,
                "this request did not come from the console's own pages, so it was refused".into(),
                None,
            ));
        }
        let viewer = self.viewer(headers)?;
        if !signin::same_token(token, &viewer.form_token) {
            admin::record(
                &self.shared,
                &viewer.operator,
                action,
                None,
                "forbidden",
                Some("missing or wrong console form token".into()),
            )
            .await;
            return Err(Stop::Page(
                StatusCode::FORBIDDEN,
                "the form is stale or was not sent by the console: reload the page and try again"
                    .into(),
                Some(viewer),
            ));
        }
        Ok(viewer)
    }

    /// The operator taking `action` on `target` from a console form:
    /// [`Ctx::poster`]'s checks, then the admin API's role check.
    async fn actor(
        &self,
        headers: &HeaderMap,
        token: &str,
        action: &str,
        target: Option<&str>,
        roles: &[Role],
    ) -> Result<(Viewer, String), Stop> {
        let viewer = self.poster(headers, token, action).await?;
        let operator =
            admin::permit(&self.shared, Some(&viewer.operator), action, target, roles).await?;
        Ok((viewer, operator))
    }

    fn now_ms(&self) -> u64 {
        (self.console.clock)() / 1_000_000
    }
}

/// Whether the browser says the request comes from this origin. Browsers
/// send `Sec-Fetch-Site`; older ones `Origin`, compared with `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some(site) => site == "same-origin",
        None => match (text(header::ORIGIN), text(header::HOST)) {
            (Some(origin), Some(host)) => origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
            _ => false,
        },
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `next` if it is a console page to return to after sign-in: a path
/// under `/console/` in plain characters, so it can neither leave the
/// console nor break the header it goes in.
fn console_path(next: &str) -> Option<&str> {
    let plain = next
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    (plain && next.starts_with("/console/") && !next.contains("//") && !next.contains(".."))
        .then_some(next)
}

async fn signin_page(Query(q): Query<NextQuery>) -> Html<String> {
    Html(pages::signin(None, q.next.as_deref().and_then(console_path)).into_string())
}

#[derive(Deserialize)]
struct SigninForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn signin_submit(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    if !same_origin(&headers) {
        return Stop::Page(
            StatusCode::FORBIDDEN,
            "sign in from the console's own page".into(),
            None,
        )
        .into_response();
    }
    let operator = ctx
        .shared
        .operators
        .read()
        .expect("operators lock")
        .authenticate(form.token.trim())
        .map(|o| o.name.clone());
    let Some(operator) = operator else {
        admin::record(
            &ctx.shared,
            "(unauthenticated)",
            "console.signin",
            None,
            "unauthenticated",
            None,
        )
        .await;
        return (
            StatusCode::UNAUTHORIZED,
            Html(
                pages::signin(
                    Some("That is not a valid operator token."),
                    console_path(&form.next),
                )
                .into_string(),
            ),
        )
            .into_response();
    };
    let (key, _) = ctx.console.sessions.start(&operator);
    admin::record(&ctx.shared, &operator, "console.signin", None, "ok", None).await;
    let mut response =
        Redirect::to(console_path(&form.next).unwrap_or("/console/inbox")).into_response();
    if let Ok(v) = HeaderValue::from_str(&ctx.console.set_cookie(&key)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    form_token: String,
}

async fn signout(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, Stop> {
    let viewer = ctx
        .poster(&headers, &form.form_token, "console.signout")
        .await?;
    if let Some(key) = ctx.console.cookie(&headers) {
        ctx.console.sessions.end(key);
    }
    admin::record(
        &ctx.shared,
        &viewer.operator,
        "console.signout",
        None,
        "ok",
        None,
    )
    .await;
    let mut response = Redirect::to("/console/signin").into_response();
    let cleared = format!("{}; Max-Age=0", ctx.console.set_cookie(""));
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn inbox(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    let held = held(&ctx.shared).await;
    Ok(Html(
        pages::inbox(&viewer, &held, ctx.now_ms()).into_string(),
    ))
}

async fn inbox_items(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    let held = held(&ctx.shared).await;
    Ok(Html(
        pages::inbox_items(&viewer, &held, ctx.now_ms()).into_string(),
    ))
}

/// The pending requests with their context: the session's application and
/// client while it runs, and from the ledger the held statement's
/// judgement and the session's recent statements.
async fn held(shared: &Arc<Shared>) -> Vec<HeldView> {
    let rfc3339 = gatehouse_verify::report::rfc3339;
    let pending = shared.approvals.list(true);
    let live: Vec<(Option<String>, Option<String>)> = {
        let sessions = shared.sessions.lock().expect("sessions lock");
        pending
            .iter()
            .map(|(_, a)| match sessions.get(&a.session) {
                Some(c) => (c.application_name.clone(), Some(c.client_addr.clone())),
                None => (None, None),
            })
            .collect()
    };
    let path = shared.ledger.path().to_owned();
    let wanted: Vec<(u64, u64, u64)> = pending
        .iter()
        .map(|(_, a)| (a.session, a.query, a.requested_at))
        .collect();
    let context = tokio::task::spawn_blocking(move || session_context(&path, &wanted))
        .await
        .unwrap_or_default();
    pending
        .into_iter()
        .zip(live)
        .enumerate()
        .map(|(i, ((id, a), (application_name, client_addr)))| {
            let (judged, recent) = context.get(i).cloned().unwrap_or_default();
            let judged = judged.as_ref();
            HeldView {
                approval: id,
                identity: a.identity,
                session: a.session,
                application_name,
                client_addr,
                sql: a.sql,
                params: a.params.iter().map(ShownParam::text).collect(),
                class: judged.map(|s| format!("{:?}", s.class).to_lowercase()),
                tables: judged.map(|s| s.tables.clone()).unwrap_or_default(),
                columns: judged.map(|s| s.columns.clone()).unwrap_or_default(),
                rule: a.rule,
                message: judged.and_then(|s| s.message.clone()),
                fingerprint: a.fingerprint,
                quorum: a.quorum,
                approvers: a.approvers,
                requested_at: rfc3339(a.requested_at),
                expires_at: rfc3339(a.expires_at),
                expires_ms: a.expires_at / 1_000_000,
                recent,
            }
        })
        .collect()
}

type Judged = (
    Option<gatehouse_ledger::event::Statement>,
    Vec<(String, String)>,
);

/// For each held request (session, query, when it was requested): that
/// statement's record and the session's last statements with what policy
/// did, read from the gateway's own ledger in the [`CONTEXT_WINDOW`]
/// events up to the request (the statement's record is committed just
/// before it), so a long-lived session costs no more than a short one.
/// Empty where the ledger cannot be read: the inbox still shows the request.
fn session_context(path: &std::path::Path, wanted: &[(u64, u64, u64)]) -> Vec<Judged> {
    let Ok(reader) = LedgerReader::open(path) else {
        return Vec::new();
    };
    wanted
        .iter()
        .map(|&(session, query, requested_at)| {
            let Ok(end) = reader.first_at_or_after(requested_at.saturating_add(1)) else {
                return (None, Vec::new());
            };
            let start = end.saturating_sub(CONTEXT_WINDOW).max(reader.first());
            let mut judged = None;
            let mut recent = VecDeque::with_capacity(RECENT);
            for stored in reader.events(start..end).flatten() {
                match stored.event.body {
                    EventBody::Statement(s) if s.session == session => {
                        if recent.len() == RECENT {
                            recent.pop_front();
                        }
                        recent.push_back((s.sql.clone(), format!("{:?}", s.action).to_lowercase()));
                        if s.query == query {
                            judged = Some(s);
                        }
                    }
                    _ => {}
                }
            }
            (judged, recent.into())
        })
        .collect()
}

/// Server-sent events: one whenever the approval desk records something,
/// with the ledger sequence number as its id, so a browser that
/// reconnects (sending `Last-Event-ID`) is told at once of what it missed.
async fn events(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, Stop> {
    ctx.viewer(&headers)?;
    let last: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rx = ctx.shared.approvals.changes();
    // The stream ends when the gateway stops: an open console must not
    // hold up its shutdown (the listener waits for its connections).
    let stop = ctx.shared.shutdown.subscribe();
    let stream =
        futures_util::stream::unfold((rx, stop, last), |(mut rx, mut stop, last)| async move {
            loop {
                if *stop.borrow() {
                    return None;
                }
                let now = *rx.borrow_and_update();
                if now > last {
                    let event = SseEvent::default()
                        .id(now.to_string())
                        .event("changed")
                        .data(now.to_string());
                    return Some((Ok(event), (rx, stop, now)));
                }
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    _ = stop.wait_for(|stopping| *stopping) => return None,
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct ApproveForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    duration: String,
}

async fn approve(
    State(ctx): State<Ctx>,
    Path(approval): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<ApproveForm>,
) -> Result<Response, Stop> {
    let target = approval.to_string();
    let (viewer, operator) = ctx
        .actor(
            &headers,
            &form.form_token,
            "approval.approve",
            Some(&target),
            &[Role::Approver],
        )
        .await?;
    let grant_until = match form.duration.trim() {
        "" => None,
        text => {
            let d = crate::commands::parse_duration(text).map_err(|e| {
                Stop::Page(StatusCode::BAD_REQUEST, e.to_string(), Some(viewer.clone()))
            })?;
            Some((ctx.console.clock)() + d.as_nanos() as u64)
        }
    };
    ctx.shared
        .approve_request(approval, &operator, grant_until)
        .await
        .map_err(|e| refused(&viewer)(admin::desk_refusal(e)))?;
    Ok(Redirect::to("/console/inbox").into_response())
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    reason: String,
}

impl Ctx {
    /// [`Ctx::actor`] for a form that must carry a reason: the viewer, the
    /// operator and the reason; refused (400) when the reason is blank.
    async fn actor_with_reason(
        &self,
        headers: &HeaderMap,
        form: &ReasonForm,
        action: &str,
        target: &str,
        roles: &[Role],
    ) -> Result<(Viewer, String, String), Stop> {
        let (viewer, operator) = self
            .actor(headers, &form.form_token, action, Some(target), roles)
            .await?;
        let reason = form.reason.trim();
        if reason.is_empty() {
            return Err(Stop::Page(
                StatusCode::BAD_REQUEST,
                "a reason is required: it is recorded and shown to the client".into(),
                Some(viewer),
            ));
        }
        Ok((viewer, operator, reason.to_owned()))
    }
}

async fn deny(
    State(ctx): State<Ctx>,
    Path(approval): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<ReasonForm>,
) -> Result<Response, Stop> {
    let (viewer, operator, reason) = ctx
        .actor_with_reason(
            &headers,
            &form,
            "approval.deny",
            &approval.to_string(),
            &[Role::Approver],
        )
        .await?;
    ctx.shared
        .deny_request(approval, Some(&operator), &reason)
        .await
        .map_err(|e| refused(&viewer)(admin::desk_refusal(e)))?;
    Ok(Redirect::to("/console/inbox").into_response())
}

/// A link code as chat integrations issue them (base64url of 32 bytes);
/// anything else is no code.
fn link_code(code: &str) -> Result<&str, Stop> {
    let plain = code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain && (16..=64).contains(&code.len()) {
        Ok(code)
    } else {
        Err(Stop::Page(
            StatusCode::NOT_FOUND,
            "this is not a link Gatehouse gave out".into(),
            None,
        ))
    }
}

/// The link has expired or was used.
fn stale_link(viewer: &Viewer) -> Stop {
    Stop::Page(
        StatusCode::NOT_FOUND,
        format!(
            "this link has expired or was already used: press the button in chat again for a new one (links work once, within {} minutes)",
            crate::gateway::control::chat_links::TTL.as_secs() / 60
        ),
        Some(viewer.clone()),
    )
}

async fn link_page(
    State(ctx): State<Ctx>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Html<String>, Stop> {
    let code = link_code(&code)?;
    let viewer = match ctx.viewer(&headers) {
        Err(Stop::SignIn) => return Err(Stop::SignInThen(format!("/console/link/{code}"))),
        other => other?,
    };
    let user = ctx
        .console
        .chat_links
        .peek(code)
        .ok_or_else(|| stale_link(&viewer))?;
    let linked_to = ctx
        .shared
        .operators
        .read()
        .expect("operators lock")
        .chat_operator(&user.service, &user.workspace, &user.user)
        .map(|o| o.name.clone());
    Ok(Html(
        pages::chat_link(&viewer, &user, code, linked_to.as_deref()).into_string(),
    ))
}

async fn link_submit(
    State(ctx): State<Ctx>,
    Path(code): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, Stop> {
    let code = link_code(&code)?;
    let viewer = ctx.poster(&headers, &form.form_token, "chat.link").await?;
    let user = ctx
        .console
        .chat_links
        .take(code)
        .ok_or_else(|| stale_link(&viewer))?;
    let event = crate::gateway::control::slack::link_event(&viewer.operator, user);
    ctx.shared
        .execute(|_| Ok((event.into(), ())))
        .await
        .map_err(|e| {
            Stop::Page(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                Some(viewer.clone()),
            )
        })?;
    Ok(Redirect::to("/console/account?linked=1").into_response())
}

#[derive(Deserialize)]
struct AccountQuery {
    linked: Option<String>,
}

async fn account(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<AccountQuery>,
) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    let links = ctx
        .shared
        .operators
        .read()
        .expect("operators lock")
        .get(&viewer.operator)
        .map(|o| o.chat.clone())
        .unwrap_or_default();
    let notice = q.linked.is_some().then_some(
        "Linked: the buttons that chat user presses now act as you, and are recorded as yours.",
    );
    Ok(Html(pages::account(&viewer, &links, notice).into_string()))
}

#[derive(Deserialize)]
struct UnlinkForm {
    #[serde(default)]
    form_token: String,
    service: String,
    workspace: String,
    user: String,
}

async fn unlink(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<UnlinkForm>,
) -> Result<Response, Stop> {
    let viewer = ctx
        .poster(&headers, &form.form_token, "chat.unlink")
        .await?;
    let operator = viewer.operator.clone();
    ctx.shared
        .execute(|_| {
            let linked = ctx
                .shared
                .operators
                .read()
                .expect("operators lock")
                .chat_operator(&form.service, &form.workspace, &form.user)
                .is_some_and(|o| o.name == operator);
            if !linked {
                anyhow::bail!("that chat user is not linked to you");
            }
            let event = gatehouse_ledger::event::ChatUserUnlinked {
                operator: operator.clone(),
                service: form.service.clone(),
                workspace: form.workspace.clone(),
                user: form.user.clone(),
                unlinked_by: operator.clone(),
                reason: "unlinked by the operator in the console".into(),
            };
            Ok((event.into(), ()))
        })
        .await
        .map_err(|e| Stop::Page(StatusCode::CONFLICT, e.to_string(), Some(viewer.clone())))?;
    Ok(Redirect::to("/console/account").into_response())
}

async fn sessions(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    Ok(Html(
        pages::sessions(&viewer, &admin::session_views(&ctx.shared)).into_string(),
    ))
}

async fn session_rows(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    Ok(Html(
        pages::session_rows(&viewer, &admin::session_views(&ctx.shared)).into_string(),
    ))
}

async fn kill(
    State(ctx): State<Ctx>,
    Path(session): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<ReasonForm>,
) -> Result<Response, Stop> {
    let (viewer, operator, reason) = ctx
        .actor_with_reason(
            &headers,
            &form,
            "session.kill",
            &session.to_string(),
            &[Role::Responder],
        )
        .await?;
    if !ctx.shared.kill(session, &operator, &reason) {
        return Err(Stop::Page(
            StatusCode::NOT_FOUND,
            format!("session {session} is not running"),
            Some(viewer),
        ));
    }
    Ok(Redirect::to("/console/sessions").into_response())
}

async fn block(
    State(ctx): State<Ctx>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ReasonForm>,
) -> Result<Response, Stop> {
    let (viewer, operator, reason) = ctx
        .actor_with_reason(
            &headers,
            &form,
            "identity.block",
            &identity,
            &[Role::Responder],
        )
        .await?;
    ctx.shared
        .block(&identity, &operator, &reason, None)
        .await
        .map_err(|e| refused(&viewer)(admin::unrecorded("block", e)))?;
    Ok(Redirect::to("/console/sessions").into_response())
}

#[derive(Deserialize)]
struct ReplayQuery {
    session: u64,
}

/// The replay of one session, as `gatehouse replay --html` renders it,
/// from the events the signed log vouches for.
async fn replay(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, Stop> {
    let viewer = ctx.viewer(&headers)?;
    let target = query.session.to_string();
    admin::permit(
        &ctx.shared,
        Some(&viewer.operator),
        "replay.session",
        Some(&target),
        &[Role::Auditor, Role::Approver, Role::Responder, Role::Admin],
    )
    .await?;
    let path = ctx.shared.ledger.path().to_owned();
    let loaded = tokio::task::spawn_blocking(move || {
        crate::replay::load(
            &path,
            crate::replay::Selection::Session(query.session),
            crate::replay::Window::default(),
            None,
        )
        .map(|r| crate::replay::html::render(&r))
    })
    .await
    .map_err(|e| Stop::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    match loaded {
        Ok(page) => {
            let mut response = Html(page).into_response();
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(REPLAY_CSP),
            );
            Ok(response)
        }
        Err(e) => Err(Stop::Page(
            StatusCode::NOT_FOUND,
            format!("no replay of session {}: {e}", query.session),
            Some(viewer),
        )),
    }
}

/// Who may read the policy and judge a statement with it (as the API's
/// `policy.explain`).
const POLICY_READERS: &[Role] = &[Role::Auditor, Role::Approver, Role::Admin];

async fn policy_page(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    admin::permit(
        &ctx.shared,
        Some(&viewer.operator),
        "policy.show",
        None,
        POLICY_READERS,
    )
    .await?;
    let view = admin::policy_view(&ctx.shared.policy());
    let targets = ctx.shared.target_names();
    let form = pages::DryRun {
        target: targets.first().cloned().unwrap_or_default(),
        ..Default::default()
    };
    Ok(Html(
        pages::policy(&viewer, &view.source, &view.digest, &targets, &form, None).into_string(),
    ))
}

#[derive(Deserialize)]
struct DryRunForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    sql: String,
}

/// The dry run: the API's `policy.explain` on the form's statement.
async fn policy_dry_run(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<DryRunForm>,
) -> Result<Html<String>, Stop> {
    let (viewer, _) = ctx
        .actor(
            &headers,
            &form.form_token,
            "policy.explain",
            None,
            POLICY_READERS,
        )
        .await?;
    let request = admin::ExplainRequest {
        identity: form.identity.trim().to_owned(),
        target: Some(form.target.clone()),
        sql: form.sql.clone(),
        policy: None,
    };
    let result = admin::explain(&ctx.shared, &request).await;
    let view = admin::policy_view(&ctx.shared.policy());
    let shown = pages::DryRun {
        identity: form.identity,
        target: form.target,
        sql: form.sql,
    };
    let result = match &result {
        Ok(e) => Some(Ok(e)),
        Err(r) => Some(Err(r.1.as_str())),
    };
    Ok(Html(
        pages::policy(
            &viewer,
            &view.source,
            &view.digest,
            &ctx.shared.target_names(),
            &shown,
            result,
        )
        .into_string(),
    ))
}

/// Recent decisions and containment, from the newest events of the log as
/// the signed log vouches for them (a window checked against the newest
/// checkpoint); events not yet signed are counted, not shown.
async fn audit(State(ctx): State<Ctx>, headers: HeaderMap) -> Result<Html<String>, Stop> {
    let viewer = ctx.viewer(&headers)?;
    admin::permit(
        &ctx.shared,
        Some(&viewer.operator),
        "audit.read",
        None,
        &[Role::Auditor, Role::Approver, Role::Responder, Role::Admin],
    )
    .await?;
    let path = ctx.shared.ledger.path().to_owned();
    let key = ctx.shared.ledger.verifier_key().clone();
    let read = tokio::task::spawn_blocking(move || audit_entries(&path, &key))
        .await
        .map_err(|e| Stop::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    match read {
        Ok((entries, note)) => Ok(Html(pages::audit(&viewer, &entries, &note).into_string())),
        Err(e) => Err(Stop::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ledger cannot be read as its signatures vouch for it: {e}"),
            Some(viewer),
        )),
    }
}

fn audit_entries(
    path: &std::path::Path,
    key: &gatehouse_ledger::note::VerifierKey,
) -> Result<(Vec<pages::AuditEntry>, String), gatehouse_ledger::LedgerError> {
    let reader = LedgerReader::open(path)?;
    let len = reader.len()?;
    let from = len.saturating_sub(AUDIT_WINDOW).max(reader.first());
    let mut unsigned = 0u64;
    let window = from..len;
    let (entries, coverage) = gatehouse_ledger::verified::read_selected(
        &reader,
        Some(key),
        Some(std::slice::from_ref(&window)),
        |_| Vec::new(),
        |entries: &mut Vec<pages::AuditEntry>, event, covered| {
            if event.seq < from {
                return;
            }
            if !covered {
                unsigned += 1;
                return;
            }
            if let Some(entry) = audit_entry(&event) {
                entries.push(entry);
            }
        },
        |_, _| true,
    )?;
    let mut entries = entries;
    entries.reverse();
    entries.truncate(AUDIT_SHOWN);
    let mut note = format!(
        "Events {from} to {} of the ledger, checked against its newest signed checkpoint (size {}).",
        len.saturating_sub(1),
        coverage.covered
    );
    if unsigned > 0 {
        note.push_str(&format!(
            " {unsigned} newer events wait for their signature and are not shown yet."
        ));
    }
    Ok((entries, note))
}

/// The audit entry an event makes, if it is a decision or containment.
fn audit_entry(event: &gatehouse_ledger::Event) -> Option<pages::AuditEntry> {
    let entry = |operator: &str, action: &str, target: String, reason: Option<String>| {
        Some(pages::AuditEntry {
            time: gatehouse_verify::report::rfc3339(event.ts),
            seq: event.seq,
            operator: operator.to_owned(),
            action: action.to_owned(),
            target,
            reason,
        })
    };
    match &event.body {
        EventBody::ApprovalGranted(g) => entry(
            &g.operator,
            if g.grant_until.is_some() {
                "approved for a duration"
            } else {
                "approved"
            },
            format!("request {} ({})", g.approval, g.identity),
            None,
        ),
        EventBody::ApprovalDenied(d) => entry(
            d.operator.as_deref().unwrap_or("gateway"),
            "denied",
            format!("request {} ({})", d.approval, d.identity),
            Some(d.reason.clone()),
        ),
        EventBody::ApprovalExpired(x) => entry(
            "gateway",
            "expired",
            format!("request {} ({})", x.approval, x.identity),
            None,
        ),
        EventBody::IdentityBlocked(b) => entry(
            &b.operator,
            "blocked",
            b.identity.clone(),
            Some(b.reason.clone()),
        ),
        EventBody::IdentityUnblocked(u) => entry(
            &u.operator,
            "unblocked",
            u.identity.clone(),
            u.reason.clone(),
        ),
        EventBody::SessionTerminated(t) => entry(
            t.operator.as_deref().unwrap_or("gateway"),
            "ended session",
            format!("session {} ({})", t.session, t.identity),
            Some(t.reason.clone()),
        ),
        EventBody::CredentialRevoked(c) => entry(
            &c.operator,
            "revoked credential",
            format!("{} ({})", c.credential, c.identity),
            Some(c.reason.clone()),
        ),
        EventBody::PolicyChanged(p) => entry(&p.operator, "changed policy", String::new(), None),
        EventBody::ChatUserLinked(l) => entry(
            &l.linked_by,
            &format!("linked a {} user", l.service),
            format!("{} in {} to {}", l.shown_user(), l.workspace, l.operator),
            None,
        ),
        EventBody::ChatUserUnlinked(u) => entry(
            &u.unlinked_by,
            &format!("unlinked a {} user", u.service),
            format!("{} in {} from {}", u.user, u.workspace, u.operator),
            Some(u.reason.clone()),
        ),
        EventBody::OperatorAction(a) if a.outcome != "ok" => entry(
            &a.operator,
            &format!("{} ({})", a.action, a.outcome),
            a.target.clone().unwrap_or_default(),
            a.detail.clone(),
        ),
        _ => None,
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_same_origin_posts_pass() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:9000"),
            ("host", "127.0.0.1:9000")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:9000")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9000")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "x")])));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_named_for_the_transport() {
        let clock: Clock = Arc::new(|| 0);
        let plain = Console::new(false, clock.clone());
        let h = headers(&[("cookie", "a=1; gatehouse_console=abc; b=2")]);
        assert_eq!(plain.cookie(&h), Some("abc"));
        assert!(plain.set_cookie("v").contains("HttpOnly; SameSite=Strict"));
        assert!(!plain.set_cookie("v").contains("Secure"));
        let tls = Console::new(true, clock);
        assert_eq!(tls.cookie(&h), None);
        assert!(tls
            .set_cookie("v")
            .starts_with("__Host-gatehouse=v; Path=/;"));
        assert!(tls.set_cookie("v").ends_with("; Secure"));
    }
}
