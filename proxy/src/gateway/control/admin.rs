//! The admin API: operators drive containment over HTTP with bearer tokens.
//!
//! Every route names the role it needs. A request without a valid token gets
//! 401, one whose operator lacks the role gets 403; both are recorded as
//! operator-action events, like every action that succeeds. The routes are
//! listed in docs/admin-api.json (OpenAPI), and a test keeps the two equal.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_engine::operators::Role;
use gatehouse_ledger::event::OperatorAction;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::gateway::control::approvals::DeskError;
use crate::gateway::control::shared::{CommandError, Shared};
use gatehouse_engine::approvals::{Vote, VoteError};

/// The routes: (method, path, role). The OpenAPI document lists exactly these.
pub const ROUTES: &[(&str, &str, Role)] = &[
    ("get", "/v1/sessions", Role::Auditor),
    ("get", "/metrics", Role::Auditor),
    ("post", "/v1/sessions/{session}/kill", Role::Responder),
    ("post", "/v1/identities/{identity}/block", Role::Responder),
    ("post", "/v1/identities/{identity}/unblock", Role::Responder),
    ("post", "/v1/credentials/{credential}/revoke", Role::Admin),
    ("get", "/v1/policy", Role::Auditor),
    ("post", "/v1/policy", Role::Admin),
    ("post", "/v1/policy/explain", Role::Auditor),
    ("post", "/v1/identities", Role::Admin),
    ("get", "/v1/identities", Role::Auditor),
    ("post", "/v1/identities/{identity}/disable", Role::Admin),
    ("get", "/v1/credentials", Role::Auditor),
    ("get", "/v1/operators", Role::Auditor),
    ("post", "/v1/operators/{operator}/remove", Role::Admin),
    ("post", "/v1/identities/{identity}/credentials", Role::Admin),
    ("post", "/v1/operators", Role::Admin),
    ("get", "/v1/approvals", Role::Auditor),
    ("post", "/v1/approvals/{approval}/approve", Role::Approver),
    ("post", "/v1/approvals/{approval}/deny", Role::Approver),
    ("get", "/v1/grants", Role::Auditor),
    ("post", "/v1/grants/{approval}/revoke", Role::Approver),
];

/// Routes served without a token: liveness and readiness, for process
/// supervisors and load balancers. They reveal no state beyond what is
/// ready.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("get", "/health"), ("get", "/ready")];

/// The admin API's router over the gateway's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/sessions", get(sessions))
        .route("/metrics", get(metrics))
        .route("/v1/sessions/{session}/kill", post(kill))
        .route("/v1/identities/{identity}/block", post(block))
        .route("/v1/identities/{identity}/unblock", post(unblock))
        .route("/v1/credentials/{credential}/revoke", post(revoke))
        .route("/v1/policy", get(policy_show).post(policy_apply))
        .route("/v1/policy/explain", post(policy_explain))
        .route("/v1/identities", post(identity_create).get(identities))
        .route("/v1/identities/{identity}/disable", post(identity_disable))
        .route("/v1/credentials", get(credentials))
        .route("/v1/operators/{operator}/remove", post(operator_remove))
        .route(
            "/v1/identities/{identity}/credentials",
            post(credential_issue),
        )
        .route("/v1/operators", post(operator_add).get(operators))
        .route("/v1/approvals", get(approvals))
        .route("/v1/approvals/{approval}/approve", post(approve))
        .route("/v1/approvals/{approval}/deny", post(deny))
        .route("/v1/grants", get(grants))
        .route("/v1/grants/{approval}/revoke", post(grant_revoke))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(shared)
}

/// Liveness: the process answers.
async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness: the ledger can record (the writer runs and its file is the
/// one at its path) and every target accepts TCP connections within a
/// second. 503 with the reasons otherwise, so a load balancer stops
/// sending clients to a gateway that would refuse their statements.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let ledger = shared.ledger.health();
    let mut targets = serde_json::Map::new();
    let mut all = ledger.is_ok();
    for name in shared.target_names() {
        let target = &shared.targets[&name];
        let addr = format!("{}:{}", target.host, target.port);
        let reached = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        let status = match reached {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("cannot connect to {addr}: {e}"),
            Err(_) => format!("no answer from {addr} within 1 s"),
        };
        all &= status == "ok";
        targets.insert(name.clone(), status.into());
    }
    let body = serde_json::json!({
        "ready": all,
        "ledger": match &ledger {
            Ok(()) => "ok".to_owned(),
            Err(why) => why.clone(),
        },
        "targets": targets,
        "refusals": shared.refusals.to_json(),
    });
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A refused or failed request: a status and a sentence saying why.
pub struct Refusal(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

fn error(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal(status, text.into())
}

/// Records an operator action (or a refused attempt).
pub(crate) async fn record(
    shared: &Shared,
    operator: &str,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    detail: Option<String>,
) {
    let event = OperatorAction {
        operator: operator.to_owned(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        outcome: outcome.to_owned(),
        detail,
    };
    if let Err(e) = shared.ledger.append(&event.into()).await {
        warn!("cannot record an operator action: {e}");
    }
}

/// Checks the bearer token and the role; returns the operator's name.
async fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    action: &str,
    target: Option<&str>,
    role: Role,
) -> Result<String, Refusal> {
    authorize_any(shared, headers, action, target, &[role]).await
}

/// Like [`authorize`], accepting any of `roles` (the first is reported).
async fn authorize_any(
    shared: &Shared,
    headers: &HeaderMap,
    action: &str,
    target: Option<&str>,
    roles: &[Role],
) -> Result<String, Refusal> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let operator = token.and_then(|t| {
        shared
            .operators
            .read()
            .expect("operators lock")
            .authenticate(t)
            .map(|o| o.name.clone())
    });
    permit(shared, operator.as_deref(), action, target, roles).await
}

/// Whether `operator` (`None`: nobody authenticated) may take `action`,
/// holding any of `roles` now (the first is reported). A refusal is
/// recorded as an operator action, as every action taken is. The admin API
/// and the console share it, so a click and a request are judged alike.
pub(crate) async fn permit(
    shared: &Shared,
    operator: Option<&str>,
    action: &str,
    target: Option<&str>,
    roles: &[Role],
) -> Result<String, Refusal> {
    let role = roles[0];
    let holds = operator.and_then(|name| {
        shared
            .operators
            .read()
            .expect("operators lock")
            .get(name)
            .map(|o| roles.iter().any(|r| o.roles.contains(r)))
    });
    match (operator, holds) {
        (Some(name), Some(true)) => Ok(name.to_owned()),
        (Some(name), Some(false)) => {
            record(
                shared,
                name,
                action,
                target,
                "forbidden",
                Some(format!("needs role {}", role.name())),
            )
            .await;
            Err(error(
                StatusCode::FORBIDDEN,
                format!("operator {name} lacks the {} role this needs", role.name()),
            ))
        }
        _ => {
            record(
                shared,
                "(unauthenticated)",
                action,
                target,
                "unauthenticated",
                None,
            )
            .await;
            Err(error(
                StatusCode::UNAUTHORIZED,
                "a valid operator token is required: send Authorization: Bearer <token>",
            ))
        }
    }
}

/// A running session, as listed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// Session number.
    pub session: u64,
    /// Its identity.
    pub identity: String,
    /// The credential it logged in with.
    pub credential: String,
    /// The target it reaches.
    pub target: String,
    /// The client's address.
    pub client_addr: String,
    /// The client's application_name.
    pub application_name: Option<String>,
    /// When it logged in, RFC 3339.
    pub started: String,
    /// A statement of it is held for approval now.
    pub holding: bool,
    /// Statements judged so far (allowed, masked, held or denied).
    #[serde(default)]
    pub statements: u64,
    /// The statement running now (the latest, when several are
    /// pipelined; at most 500 bytes), if any.
    #[serde(default)]
    pub current: Option<String>,
    /// How long it has run, in milliseconds.
    #[serde(default)]
    pub running_ms: Option<u64>,
}

/// The running sessions, by number: what `GET /v1/sessions` lists and the
/// console's sessions page shows.
pub(crate) fn session_views(shared: &Shared) -> Vec<SessionView> {
    let mut list: Vec<SessionView> = shared
        .sessions
        .lock()
        .expect("sessions lock")
        .iter()
        .map(|(id, c)| (id, c, c.activity.current()))
        .map(|(id, c, current)| SessionView {
            session: *id,
            identity: c.identity.clone(),
            credential: c.credential.clone(),
            target: c.target.clone(),
            client_addr: c.client_addr.clone(),
            application_name: c.application_name.clone(),
            started: gatehouse_verify::report::rfc3339(c.started),
            holding: c
                .upstream
                .held
                .holding
                .load(std::sync::atomic::Ordering::SeqCst),
            statements: c.activity.statements(),
            running_ms: current.as_ref().map(|(_, ran)| ran.as_millis() as u64),
            current: current.map(|(sql, _)| sql),
        })
        .collect();
    list.sort_by_key(|s| s.session);
    list
}

async fn sessions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "sessions.list", None, Role::Auditor).await?;
    let list = session_views(&shared);
    Ok(Json(list).into_response())
}

/// The metrics in the OpenMetrics text format, which Prometheus scrapes
/// (see `control::metrics`). An auditor's token, like the session list.
async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "metrics.read", None, Role::Auditor).await?;
    let open: Vec<(String, String)> = shared
        .sessions
        .lock()
        .expect("sessions lock")
        .values()
        .map(|c| (c.identity.clone(), c.target.clone()))
        .collect();
    let pending = shared.approvals.list(true).len();
    let body = shared.metrics.render(&open, pending);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// The body of actions that take a reason.
#[derive(Deserialize, Serialize, Default)]
pub struct Reason {
    /// Why; recorded and shown to the sessions it ends.
    #[serde(default)]
    pub reason: Option<String>,
}

fn required(reason: Option<String>) -> Result<String, Refusal> {
    reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "a non-empty \"reason\" is required",
        )
    })
}

async fn kill(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let target = session.to_string();
    let operator = authorize(
        &shared,
        &headers,
        "session.kill",
        Some(&target),
        Role::Responder,
    )
    .await?;
    let reason = required(body.reason)?;
    if !shared.kill(session, &operator, &reason) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no running session {session}"),
        ));
    }
    Ok(Json(serde_json::json!({ "killed": session })).into_response())
}

async fn block(
    State(shared): State<Arc<Shared>>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let operator = authorize(
        &shared,
        &headers,
        "identity.block",
        Some(&identity),
        Role::Responder,
    )
    .await?;
    let reason = required(body.reason)?;
    shared
        .block(&identity, &operator, &reason, None)
        .await
        .map_err(|e| unrecorded("block", e))?;
    Ok(Json(serde_json::json!({ "blocked": identity })).into_response())
}

async fn unblock(
    State(shared): State<Arc<Shared>>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let operator = authorize(
        &shared,
        &headers,
        "identity.unblock",
        Some(&identity),
        Role::Responder,
    )
    .await?;
    let lifted = shared
        .unblock(&identity, &operator, body.reason)
        .await
        .map_err(|e| unrecorded("unblock", e))?;
    if !lifted {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("{identity} is not blocked"),
        ));
    }
    Ok(Json(serde_json::json!({ "unblocked": identity })).into_response())
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    Path(credential): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let operator = authorize(
        &shared,
        &headers,
        "credential.revoke",
        Some(&credential),
        Role::Admin,
    )
    .await?;
    let reason = required(body.reason)?;
    let revoked = shared
        .revoke(&credential, &operator, &reason)
        .await
        .map_err(|e| unrecorded("revocation", e))?;
    if !revoked {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no credential {credential}"),
        ));
    }
    Ok(Json(serde_json::json!({ "revoked": credential })).into_response())
}

/// Parses a JSON body after authorization, so an unauthenticated request
/// is refused as such whatever it sent.
fn parse_body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(raw)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn command_refusal(e: CommandError) -> Refusal {
    match e {
        CommandError::Invalid(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        CommandError::Unrecorded(_) | CommandError::Control(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// The policy in force.
#[derive(Serialize, Deserialize, Debug)]
pub struct PolicyView {
    /// The policy file as applied (empty: none applied, everything denied).
    pub source: String,
    /// Number of rules.
    pub rules: usize,
    /// BLAKE3 of `source`, hex.
    pub digest: String,
    /// What the operator should know about a policy just applied (names
    /// accepted with `allow_missing`, targets whose names were not checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub(crate) fn policy_view(policy: &gatehouse_engine::policy::Policy) -> PolicyView {
    PolicyView {
        source: policy.source().to_owned(),
        rules: policy.rules().len(),
        digest: blake3::hash(policy.source().as_bytes())
            .to_hex()
            .to_string(),
        warnings: Vec::new(),
    }
}

async fn policy_show(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "policy.show", None, Role::Auditor).await?;
    Ok(Json(policy_view(&shared.policy())).into_response())
}

/// The body of `POST /v1/policy`.
#[derive(Deserialize, Serialize)]
pub struct PolicySource {
    /// The policy file's text.
    pub source: String,
    /// Apply it even if deny or mask rules name tables or columns a
    /// target does not have (each is then a warning).
    #[serde(default)]
    pub allow_missing: bool,
}

async fn policy_apply(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let operator = authorize(&shared, &headers, "policy.apply", None, Role::Admin).await?;
    let body: PolicySource = parse_body(&raw)?;
    let (event, candidate) = crate::commands::policy_change(body.source, operator)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let targets: Vec<&crate::config::Target> =
        shared.targets.values().map(|t| t.as_ref()).collect();
    let warnings = crate::commands::check_policy_names(&candidate, &targets)
        .await
        .verdict(body.allow_missing)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    shared
        .execute(|_| Ok((event, ())))
        .await
        .map_err(command_refusal)?;
    let mut view = policy_view(&shared.policy());
    view.warnings = warnings;
    Ok(Json(view).into_response())
}

/// The body of `POST /v1/policy/explain`.
#[derive(Deserialize, Serialize)]
pub struct ExplainRequest {
    /// The identity asking.
    pub identity: String,
    /// The target (may be omitted when the gateway has only one).
    #[serde(default)]
    pub target: Option<String>,
    /// The SQL to judge.
    pub sql: String,
    /// A policy file's text to judge by instead of the one in force.
    #[serde(default)]
    pub policy: Option<String>,
}

/// Judges a statement with the gateway's own decision pipeline (the one
/// its sessions use: views, catalog, masking, grants, blocks), without
/// running or recording it.
async fn policy_explain(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, Refusal> {
    authorize_any(
        &shared,
        &headers,
        "policy.explain",
        None,
        &[Role::Auditor, Role::Approver, Role::Admin],
    )
    .await?;
    let body: ExplainRequest = parse_body(&raw)?;
    Ok(Json(explain(&shared, &body).await?).into_response())
}

/// What the gateway's decision pipeline would do with `body`'s statement
/// (the one its sessions use), without running or recording it: shared by
/// `POST /v1/policy/explain` and the console's dry run.
pub(crate) async fn explain(
    shared: &Arc<Shared>,
    body: &ExplainRequest,
) -> Result<crate::commands::Explanation, Refusal> {
    let target = match &body.target {
        Some(name) => shared.targets.get(name).cloned().ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no target {name:?}; the gateway's targets: {}",
                    target_names(shared)
                ),
            )
        })?,
        None if shared.targets.len() == 1 => shared.targets.values().next().cloned().expect("one"),
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "name the target (--target): one of {}",
                    target_names(shared)
                ),
            ))
        }
    };
    let policy = match &body.policy {
        Some(source) => Arc::new(
            gatehouse_engine::policy::Policy::parse(source).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("the policy does not load: {e}"),
                )
            })?,
        ),
        None => shared.policy(),
    };
    let classification = shared.verdicts.classify(&body.sql);
    let j = crate::gateway::relay::session::judge_statement(
        shared.as_ref(),
        &policy,
        &body.identity,
        &target,
        &body.sql,
        &classification,
        &std::collections::BTreeSet::new(),
    )
    .await;
    let explanation = crate::commands::Explanation {
        action: crate::replay::action_name(j.action).to_owned(),
        rule: j.rule.clone(),
        message: j.message.clone(),
        statements: crate::commands::explain_statements(&classification, &j.statements),
        read_only: policy.read_only(&body.identity, &target.name),
        pipeline: "gateway".into(),
    };
    Ok(explanation)
}

fn target_names(shared: &Shared) -> String {
    shared.target_names().join(", ")
}

/// The body of `POST /v1/identities`.
#[derive(Deserialize, Serialize)]
pub struct NewIdentity {
    /// The name it logs in with.
    pub identity: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

async fn identity_create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let operator = authorize(&shared, &headers, "identity.create", None, Role::Admin).await?;
    let body: NewIdentity = parse_body(&raw)?;
    let name = body.identity.clone();
    shared
        .execute(|ids| {
            crate::commands::identity_create(ids, &body.identity, body.description, operator)
                .map(|e| (e, ()))
        })
        .await
        .map_err(command_refusal)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "identity": name })),
    )
        .into_response())
}

/// An identity, as listed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct IdentityView {
    /// Its name.
    pub identity: String,
    /// What it is for.
    pub description: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Why it is blocked, if it is.
    pub blocked: Option<String>,
    /// Why it was disabled, if it was (final).
    pub disabled: Option<String>,
    /// Credentials that work now (not expired, not revoked).
    pub valid_credentials: usize,
}

async fn identities(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "identities.list", None, Role::Auditor).await?;
    let now = crate::gateway::server::now_ns();
    let list: Vec<IdentityView> = shared
        .identities
        .read()
        .expect("identities lock")
        .iter()
        .map(|i| IdentityView {
            identity: i.name.clone(),
            description: i.description.clone(),
            created_by: i.created_by.clone(),
            blocked: shared.blocked(&i.name),
            disabled: i.disabled.clone(),
            valid_credentials: i
                .credentials
                .values()
                .filter(|c| c.revoked.is_none() && c.expires_at > now)
                .count(),
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn identity_disable(
    State(shared): State<Arc<Shared>>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let operator = authorize(
        &shared,
        &headers,
        "identity.disable",
        Some(&identity),
        Role::Admin,
    )
    .await?;
    let reason = required(body.reason)?;
    shared
        .disable(&identity, &operator, &reason)
        .await
        .map_err(command_refusal)?;
    Ok(Json(serde_json::json!({ "disabled": identity })).into_response())
}

/// A credential, as listed (never its secret or verifier).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct CredentialView {
    /// Its id.
    pub credential: String,
    /// Whose it is.
    pub identity: String,
    /// Who issued it.
    pub issued_by: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// `valid`, `expired` or `revoked`.
    pub status: String,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
}

/// The query of `GET /v1/credentials`.
#[derive(Deserialize)]
pub struct CredentialsQuery {
    /// Only this identity's.
    #[serde(default)]
    pub identity: Option<String>,
}

async fn credentials(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<CredentialsQuery>,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "credentials.list", None, Role::Auditor).await?;
    let now = crate::gateway::server::now_ns();
    let ids = shared.identities.read().expect("identities lock");
    if let Some(name) = &query.identity {
        if ids.get(name).is_none() {
            return Err(error(StatusCode::NOT_FOUND, format!("no identity {name}")));
        }
    }
    let list: Vec<CredentialView> = ids
        .iter()
        .filter(|i| query.identity.as_ref().is_none_or(|n| n == &i.name))
        .flat_map(|i| {
            i.credentials.values().map(|c| CredentialView {
                credential: c.id.clone(),
                identity: i.name.clone(),
                issued_by: c.issued_by.clone(),
                expires_at: gatehouse_verify::report::rfc3339(c.expires_at),
                status: match &c.revoked {
                    Some(_) => "revoked",
                    None if c.expires_at <= now => "expired",
                    None => "valid",
                }
                .to_owned(),
                revoked: c.revoked.clone(),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// The body of `POST /v1/identities/{identity}/credentials`.
#[derive(Deserialize, Serialize, Default)]
pub struct NewCredential {
    /// Lifetime (`30m`, `24h`, `7d`); default 24h.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A credential just issued; the secret is shown this once.
#[derive(Deserialize, Serialize, Debug)]
pub struct IssuedView {
    /// The credential id.
    pub credential: String,
    /// The identity's new secret.
    pub secret: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

async fn credential_issue(
    State(shared): State<Arc<Shared>>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let operator = authorize(
        &shared,
        &headers,
        "credential.issue",
        Some(&identity),
        Role::Admin,
    )
    .await?;
    let body: NewCredential = parse_body(&raw)?;
    let ttl = crate::commands::parse_duration(body.ttl.as_deref().unwrap_or("24h"))
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let issued = shared
        .execute(|ids| crate::commands::credential_issue(ids, &identity, ttl, operator))
        .await
        .map_err(command_refusal)?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedView {
            credential: issued.id,
            secret: issued.secret,
            expires_at: gatehouse_verify::report::rfc3339(issued.expires_at),
        }),
    )
        .into_response())
}

/// The body of `POST /v1/operators`.
#[derive(Deserialize, Serialize)]
pub struct NewOperator {
    /// The operator's name.
    pub operator: String,
    /// `admin`, `approver`, `responder`, `auditor`.
    pub roles: Vec<String>,
}

async fn operator_add(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, Refusal> {
    let added_by = authorize(&shared, &headers, "operator.add", None, Role::Admin).await?;
    let body: NewOperator = parse_body(&raw)?;
    let roles = body
        .roles
        .iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown role {r:?}: use admin, approver, responder or auditor"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = body.operator.clone();
    let token = shared
        .execute(|_| crate::commands::operator_add(&body.operator, &roles, added_by))
        .await
        .map_err(command_refusal)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "operator": name, "token": token })),
    )
        .into_response())
}

/// An operator, as listed (never its token).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct OperatorView {
    /// Its name.
    pub operator: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Who added it.
    pub added_by: String,
    /// Chat users whose buttons act as it, as `service:workspace/user`.
    #[serde(default)]
    pub chat: Vec<String>,
}

async fn operators(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&shared, &headers, "operators.list", None, Role::Auditor).await?;
    let list: Vec<OperatorView> = shared
        .operators
        .read()
        .expect("operators lock")
        .iter()
        .map(|o| OperatorView {
            operator: o.name.clone(),
            roles: o.roles.iter().map(|r| r.name().to_owned()).collect(),
            added_by: o.added_by.clone(),
            chat: o
                .chat
                .iter()
                .map(|l| format!("{}:{}/{}", l.service, l.workspace, l.user))
                .collect(),
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn operator_remove(
    State(shared): State<Arc<Shared>>,
    Path(operator): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let removed_by = authorize(
        &shared,
        &headers,
        "operator.remove",
        Some(&operator),
        Role::Admin,
    )
    .await?;
    let reason = required(body.reason)?;
    shared
        .remove_operator(&operator, &removed_by, &reason)
        .await
        .map_err(command_refusal)?;
    Ok(Json(serde_json::json!({ "removed": operator })).into_response())
}

/// An approval request, as listed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct ApprovalView {
    /// Request number.
    pub approval: u64,
    /// `pending`, `granted`, `denied` or `expired`.
    pub status: String,
    /// The identity that asked.
    pub identity: String,
    /// Its session.
    pub session: u64,
    /// The held statement.
    pub sql: String,
    /// Its bind parameters: text as sent, binary in hex (see `ShownParam`).
    pub params: Vec<gatehouse_engine::approvals::ShownParam>,
    /// What a grant of it would cover.
    pub fingerprint: String,
    /// The rule that required approval.
    pub rule: String,
    /// Distinct approvers required.
    pub approvers_required: u64,
    /// Who approved so far.
    pub approvers: Vec<String>,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// When it times out (RFC 3339).
    pub expires_at: String,
    /// Who denied it and why, if it was denied.
    pub denied_by: Option<String>,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// `?all=true` lists decided requests too.
#[derive(Deserialize, Default)]
pub struct ApprovalsQuery {
    /// List every request, not only pending ones.
    #[serde(default)]
    pub all: bool,
}

async fn approvals(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ApprovalsQuery>,
) -> Result<Response, Refusal> {
    authorize_any(
        &shared,
        &headers,
        "approvals.list",
        None,
        &[Role::Auditor, Role::Approver],
    )
    .await?;
    let rfc3339 = gatehouse_verify::report::rfc3339;
    let list: Vec<ApprovalView> = shared
        .approvals
        .list(!query.all)
        .into_iter()
        .map(|(id, a)| ApprovalView {
            approval: id,
            status: a.status.name().to_owned(),
            identity: a.identity,
            session: a.session,
            sql: a.sql,
            params: a.params,
            fingerprint: a.fingerprint,
            rule: a.rule,
            approvers_required: a.quorum,
            approvers: a.approvers,
            requested_at: rfc3339(a.requested_at),
            expires_at: rfc3339(a.expires_at),
            denied_by: a.denied_by,
            reason: a.reason,
        })
        .collect();
    Ok(Json(list).into_response())
}

/// The body of an approval.
#[derive(Deserialize, Serialize, Default)]
pub struct Approve {
    /// Also grant the identity this statement's fingerprint for this long
    /// (`30m`, `2h`, `90s`, `1d`); absent: approve this statement once.
    #[serde(default, rename = "for")]
    pub duration: Option<String>,
}

pub(crate) fn desk_refusal(e: DeskError) -> Refusal {
    let status = match &e {
        DeskError::Vote(VoteError::Unknown(_)) => StatusCode::NOT_FOUND,
        DeskError::Vote(VoteError::SelfApproval(_)) => StatusCode::FORBIDDEN,
        DeskError::Vote(_) => StatusCode::CONFLICT,
        DeskError::NoGrant(_) => StatusCode::NOT_FOUND,
        DeskError::Unrecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn approve(
    State(shared): State<Arc<Shared>>,
    Path(approval): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Approve>,
) -> Result<Response, Refusal> {
    let target = approval.to_string();
    let operator = authorize(
        &shared,
        &headers,
        "approval.approve",
        Some(&target),
        Role::Approver,
    )
    .await?;
    let grant_until = match body.duration.as_deref() {
        None => None,
        Some(text) => {
            let d = crate::commands::parse_duration(text)
                .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Some((now + d).as_nanos() as u64)
        }
    };
    let vote = shared
        .approve_request(approval, &operator, grant_until)
        .await
        .map_err(desk_refusal)?;
    let body = match vote {
        Vote::Counted { have, need } => serde_json::json!({
            "approval": approval,
            "status": "pending",
            "approvers": have,
            "approvers_required": need,
        }),
        Vote::Released { grant_until } => serde_json::json!({
            "approval": approval,
            "status": "granted",
            "grant_until": grant_until.map(gatehouse_verify::report::rfc3339),
        }),
    };
    Ok(Json(body).into_response())
}

async fn deny(
    State(shared): State<Arc<Shared>>,
    Path(approval): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let (operator, reason) =
        approver_with_reason(&shared, &headers, "approval.deny", approval, body).await?;
    shared
        .deny_request(approval, Some(&operator), &reason)
        .await
        .map_err(desk_refusal)?;
    Ok(Json(serde_json::json!({ "approval": approval, "status": "denied" })).into_response())
}

/// An approver's action on approval request `approval` that needs a
/// reason: the operator the token names, and the reason given.
async fn approver_with_reason(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    action: &str,
    approval: u64,
    body: Reason,
) -> Result<(String, String), Refusal> {
    let target = approval.to_string();
    let operator = authorize(shared, headers, action, Some(&target), Role::Approver).await?;
    Ok((operator, required(body.reason)?))
}

/// A grant in force, as listed by `GET /v1/grants`.
#[derive(Serialize, Deserialize, Debug)]
pub struct GrantView {
    /// The approval request that left it (what `revoke` takes).
    pub approval: u64,
    /// The identity it lets run the statement.
    pub identity: String,
    /// The statement's fingerprint it covers.
    pub fingerprint: String,
    /// When it ends by itself.
    pub until: String,
    /// Who approved it.
    pub approvers: Vec<String>,
}

async fn grants(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize_any(
        &shared,
        &headers,
        "grants.list",
        None,
        &[Role::Auditor, Role::Approver],
    )
    .await?;
    let rfc3339 = gatehouse_verify::report::rfc3339;
    let list: Vec<GrantView> = shared
        .approvals
        .grants(crate::gateway::control::server::now_ns())
        .into_iter()
        .map(
            |(approval, identity, fingerprint, until, approvers)| GrantView {
                approval,
                identity,
                fingerprint,
                until: rfc3339(until),
                approvers,
            },
        )
        .collect();
    Ok(Json(list).into_response())
}

async fn grant_revoke(
    State(shared): State<Arc<Shared>>,
    Path(approval): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Reason>,
) -> Result<Response, Refusal> {
    let (operator, reason) =
        approver_with_reason(&shared, &headers, "grant.revoke", approval, body).await?;
    shared
        .revoke_grant(
            approval,
            &operator,
            &reason,
            crate::gateway::control::server::now_ns(),
        )
        .await
        .map_err(desk_refusal)?;
    Ok(Json(serde_json::json!({ "approval": approval, "grant": "revoked" })).into_response())
}

/// The ledger refused the action's event: nothing was done (fail closed).
pub(crate) fn unrecorded(what: &str, e: gatehouse_ledger::AppendError) -> Refusal {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the {what} could not be recorded, so it was not applied: {e}"),
    )
}
