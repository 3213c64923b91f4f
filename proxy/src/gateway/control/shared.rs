//! State shared by every session of one gateway process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gatehouse_engine::classify::{classify, classify_templated, LiteralTemplate};
use gatehouse_engine::identities::Identities;
use gatehouse_engine::operators::Operators;
use gatehouse_engine::policy::Policy;
use gatehouse_engine::state::GatewayState;
use gatehouse_engine::Classification;
use gatehouse_ledger::event::{CredentialRevoked, IdentityBlocked, IdentityUnblocked};
use gatehouse_ledger::{AppendError, EventBody, Ledger};
use tracing::warn;

use crate::config::Target;
use crate::gateway::control::approvals::ApprovalDesk;
use crate::gateway::control::metrics::Metrics;
use crate::gateway::control::webhooks::{WebhookTarget, Webhooks};

/// Classifications of recently seen SQL texts. The simple protocol and
/// unnamed extended-protocol statements re-send the same text again and
/// again, and the simple protocol sends values inline, so entries are kept
/// under a query string's literal template when its classification holds
/// for every value (see [`LiteralTemplate`]), under the exact text
/// otherwise. Parsing costs 10-50 µs; tokenizing for the template about a
/// tenth of that, and a lookup well under one.
#[derive(Default)]
pub struct VerdictCache {
    map: Mutex<HashMap<String, Arc<Classification>>>,
}

/// Most entries kept; the cache is cleared when full (cheap, and a burst of
/// one-off statements cannot grow it without bound).
const CACHE_ENTRIES: usize = 10_000;

impl VerdictCache {
    /// The classification of `sql`, from the cache or freshly computed.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if let Some(c) = self.get(sql) {
            return c;
        }
        let template = LiteralTemplate::of(sql);
        if let Some(c) = template.as_ref().and_then(|t| self.get(t.key())) {
            return c;
        }
        let (classification, key) = match template {
            Some(t) => match classify_templated(sql, &t) {
                (c, true) => (c, t.key().to_owned()),
                (c, false) => (c, sql.to_owned()),
            },
            None => (classify(sql), sql.to_owned()),
        };
        let c = Arc::new(classification);
        let mut map = self.map.lock().expect("cache lock");
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, c.clone());
        c
    }

    fn get(&self, key: &str) -> Option<Arc<Classification>> {
        self.map.lock().expect("cache lock").get(key).cloned()
    }
}

/// Where a client's cancel key leads upstream.
#[derive(Clone)]
pub struct CancelTarget {
    /// The upstream target.
    pub target: Arc<Target>,
    /// The upstream (pid, secret).
    pub key: (i32, i32),
    /// Where a CancelRequest goes while the session holds a statement for
    /// approval (which is not running upstream): it withdraws it.
    pub held: Arc<HeldStatement>,
}

pub use crate::gateway::relay::session::{Activity, HeldStatement, Termination};

/// What the gateway can do to a running session from outside it.
pub struct SessionControl {
    /// The session's identity.
    pub identity: String,
    /// The credential it logged in with.
    pub credential: String,
    /// The target it reaches.
    pub target: String,
    /// The client's address.
    pub client_addr: String,
    /// The client's application_name.
    pub application_name: Option<String>,
    /// When it logged in (Unix ns).
    pub started: u64,
    /// Where its in-flight statement can be cancelled.
    pub upstream: CancelTarget,
    /// Ends the session.
    pub kill: tokio::sync::watch::Sender<Option<Termination>>,
    /// Its statements so far, and the one running now.
    pub activity: Arc<Activity>,
}

impl SessionControl {
    /// Cancels the in-flight statement upstream, then ends the session.
    fn terminate(&self, termination: Termination) {
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            if let Err(e) =
                crate::gateway::relay::upstream::cancel(&upstream.target, upstream.key).await
            {
                warn!("cannot cancel a statement upstream: {e}");
            }
        });
        self.kill.send_replace(Some(termination));
    }
}

/// Sizes the operator configures.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest client frame accepted.
    pub max_frame: usize,
    /// Result rows recorded per statement.
    pub record_rows: usize,
    /// Bytes of result values recorded per statement.
    pub record_bytes: usize,
    /// How long a connection may take to log in.
    pub login_timeout: std::time::Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most connections one client address may hold before they log in.
    pub max_pending_logins_per_address: usize,
}

/// Connections and logins refused by the gateway's own limits, counted
/// since start (shown by `GET /ready`).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Past `[listen] max_connections`.
    pub max_connections: AtomicU64,
    /// Past `[listen] max_pending_logins_per_address`.
    pub pending_logins_per_address: AtomicU64,
    /// Past a target's `max_sessions`.
    pub max_sessions: AtomicU64,
    /// No login within `[listen] login_timeout`.
    pub login_timeout: AtomicU64,
    /// The database had no connection slot left.
    pub database_full: AtomicU64,
    /// accept() failed (out of file descriptors and the like).
    pub accept_failures: AtomicU64,
}

impl Refusals {
    /// Counts one.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counts, by name.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        serde_json::json!({
            "max_connections": n(&self.max_connections),
            "pending_logins_per_address": n(&self.pending_logins_per_address),
            "max_sessions": n(&self.max_sessions),
            "login_timeout": n(&self.login_timeout),
            "database_full": n(&self.database_full),
            "accept_failures": n(&self.accept_failures),
        })
    }
}

/// Everything sessions share.
pub struct Shared {
    /// The audit ledger writer.
    pub ledger: Ledger,
    /// Upstream targets by name.
    pub targets: HashMap<String, Arc<Target>>,
    /// Identities and credentials (projection of ledger events).
    pub identities: RwLock<Identities>,
    /// The live policy (projection of PolicyChanged events).
    pub policy: RwLock<Arc<Policy>>,
    /// Classification cache.
    pub verdicts: VerdictCache,
    /// Client cancel keys handed out by the gateway.
    pub cancel_keys: Mutex<HashMap<(i32, i32), CancelTarget>>,
    /// Largest client frame accepted.
    pub max_frame: usize,
    /// Result rows recorded per statement.
    pub record_rows: usize,
    /// Bytes of result values recorded per statement.
    pub record_bytes: usize,
    /// How long a connection may take to log in.
    pub login_timeout: std::time::Duration,
    /// Client connections open now, at most `[listen] max_connections`.
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    /// The `[listen] max_connections` limit, for messages.
    pub max_connections: usize,
    /// Connections not logged in yet, per client address.
    pub pending_logins: Arc<crate::gateway::control::pending_logins::PendingLogins>,
    /// Connections and logins refused by the limits, counted.
    pub refusals: Refusals,
    /// Per target with `max_sessions`: its free session slots.
    pub session_slots: HashMap<String, Arc<tokio::sync::Semaphore>>,
    /// Secret for the fake SCRAM salts of unknown identities, so a login
    /// attempt cannot tell whether an identity exists.
    pub salt_secret: [u8; 32],
    next_session: AtomicU64,
    /// Set when the gateway is stopping; sessions end themselves.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Operators of the admin API (projection of operator events).
    pub operators: RwLock<Operators>,
    /// Blocked identities and why (projection of block events).
    pub blocks: RwLock<HashMap<String, String>>,
    /// Running sessions.
    pub sessions: Mutex<HashMap<u64, SessionControl>>,
    /// Recent denials per identity, for automatic containment.
    denials: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Statements held for approval, and grants.
    pub approvals: ApprovalDesk,
    /// What `GET /metrics` shows.
    pub metrics: Arc<Metrics>,
    /// Masking: catalog lookups, column-use analyses, the hash key.
    pub masking: crate::gateway::relay::masking::Masking,
    /// Serializes operator commands: each is checked against the state it
    /// changes, then recorded, then applied, before the next is checked.
    commands: tokio::sync::Mutex<()>,
    /// In a cluster: the shared control log, where commands are recorded
    /// and from which the other gateways' commands are applied.
    pub control: Option<crate::gateway::control::cluster::ControlLink>,
}

/// What is left to do after a control event is applied to the live state.
pub enum ControlEffect {
    /// Nothing.
    Done,
    /// Refuse the held statements of `identity`, telling them `reason`.
    RefuseHeld {
        /// The identity blocked or disabled.
        identity: String,
        /// Why.
        reason: String,
    },
}

/// One log line per recorded operator command: who did what to whom, never
/// a secret (credential secrets and tokens are not in events) nor policy
/// text.
fn log_command(event: &EventBody) {
    let operator = event.operator().unwrap_or("-");
    match event {
        EventBody::CredentialIssued(c) => tracing::info!(
            operator,
            identity = c.identity,
            credential = c.credential,
            "credential issued"
        ),
        EventBody::CredentialRevoked(c) => tracing::info!(
            operator,
            identity = c.identity,
            credential = c.credential,
            "credential revoked: {}",
            c.reason
        ),
        EventBody::IdentityCreated(i) => {
            tracing::info!(operator, identity = i.identity, "identity created")
        }
        EventBody::IdentityDisabled(i) => tracing::info!(
            operator,
            identity = i.identity,
            "identity disabled: {}",
            i.reason
        ),
        EventBody::OperatorAdded(o) => {
            tracing::info!(operator, added = o.operator, "operator added")
        }
        EventBody::OperatorRemoved(o) => tracing::info!(
            operator,
            removed = o.operator,
            "operator removed: {}",
            o.reason
        ),
        EventBody::PolicyChanged(_) => tracing::info!(operator, "policy applied"),
        EventBody::IdentityBlocked(b) => tracing::info!(
            operator,
            identity = b.identity,
            "identity blocked: {}",
            b.reason
        ),
        EventBody::IdentityUnblocked(u) => {
            tracing::info!(operator, identity = u.identity, "identity unblocked")
        }
        other => tracing::info!(operator, "{} recorded", other.kind().name()),
    }
}

/// Why an operator command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command does not make sense against the current state.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    /// Its event could not be recorded, so nothing changed.
    #[error("the change could not be recorded, so it was not made: {0}")]
    Unrecorded(#[from] AppendError),
    /// The cluster's control log could not be read or written, so nothing
    /// changed.
    #[error("the cluster's control log cannot be used, so the change was not made: {0}")]
    Control(String),
}

impl From<CommandError> for AppendError {
    /// For callers that only record: a command error as a failed commit.
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Unrecorded(e) => e,
            other => AppendError::Commit(other.to_string()),
        }
    }
}

impl Shared {
    /// The targets' names, sorted.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.targets.keys().cloned().collect();
        names.sort();
        names
    }

    /// Builds the shared state from the state rebuilt from the ledger.
    pub fn new(
        ledger: Ledger,
        targets: Vec<Target>,
        state: GatewayState,
        policy: Policy,
        limits: Limits,
        webhooks: Vec<WebhookTarget>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let webhooks = (!webhooks.is_empty()).then(|| Webhooks::start(webhooks, ledger.clone()));
        let blocks = state
            .blocks
            .iter()
            .map(|(identity, b)| (identity.clone(), b.reason.clone()))
            .collect();
        let session_slots = targets
            .iter()
            .filter_map(|t| {
                t.max_sessions
                    .map(|n| (t.name.clone(), Arc::new(tokio::sync::Semaphore::new(n))))
            })
            .collect();
        Shared {
            ledger,
            targets: targets
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            identities: RwLock::new(state.identities),
            policy: RwLock::new(Arc::new(policy)),
            verdicts: VerdictCache::default(),
            cancel_keys: Mutex::new(HashMap::new()),
            max_frame: limits.max_frame,
            record_rows: limits.record_rows,
            record_bytes: limits.record_bytes,
            login_timeout: limits.login_timeout,
            connection_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            session_slots,
            refusals: Refusals::default(),
            pending_logins: crate::gateway::control::pending_logins::PendingLogins::new(
                limits.max_pending_logins_per_address,
            ),
            salt_secret: crate::gateway::control::scram::random_bytes(),
            next_session: AtomicU64::new(state.last_session + 1),
            shutdown: tokio::sync::watch::channel(false).0,
            blocks: RwLock::new(blocks),
            operators: RwLock::new(state.operators),
            sessions: Mutex::new(HashMap::new()),
            denials: Mutex::new(HashMap::new()),
            approvals: ApprovalDesk::new(state.approvals, webhooks, metrics.clone()),
            metrics,
            masking: crate::gateway::relay::masking::Masking::default(),
            commands: tokio::sync::Mutex::new(()),
            control: None,
        }
    }

    /// Carries out an operator command: `build` checks it against the live
    /// identities and returns its event and what to answer; the event is
    /// recorded, then applied to the live projections (identities,
    /// operators, policy), so it takes effect at once without a restart.
    pub async fn execute<T>(
        &self,
        build: impl FnOnce(&Identities) -> anyhow::Result<(EventBody, T)>,
    ) -> Result<T, CommandError> {
        let _one_at_a_time = self.commands.lock().await;
        if self.control.is_some() {
            let recorded = self
                .record_control(|shared| {
                    let identities = shared.identities.read().expect("identities lock");
                    build(&identities).map(|(event, answer)| Some((vec![event], answer)))
                })
                .await?;
            return Ok(recorded.expect("execute always records").1);
        }
        let (body, answer) = {
            let identities = self.identities.read().expect("identities lock");
            build(&identities).map_err(CommandError::Invalid)?
        };
        let receipt = self.ledger.append(&body).await?;
        let event = gatehouse_ledger::Event {
            seq: receipt.seq,
            ts: receipt.ts,
            body,
        };
        let effect = self.apply_control(&event);
        self.follow_up(effect).await?;
        Ok(answer)
    }

    /// Applies a recorded control event (a command's, or in a cluster
    /// another gateway's) to the live state: identities, operators, policy,
    /// blocks, grants; the sessions it ends are told at once. Returns what
    /// is left to do (see [`Shared::follow_up`]).
    pub fn apply_control(&self, event: &gatehouse_ledger::Event) -> ControlEffect {
        let body = &event.body;
        log_command(body);
        self.identities
            .write()
            .expect("identities lock")
            .apply(body);
        self.operators.write().expect("operators lock").apply(body);
        self.approvals.observe(event);
        let stop = |identity: &str, credential: Option<&str>, termination: Termination| {
            let sessions = self.sessions.lock().expect("sessions lock");
            for control in sessions
                .values()
                .filter(|c| c.identity == identity && credential.is_none_or(|k| c.credential == k))
            {
                control.terminate(termination.clone());
            }
        };
        match body {
            EventBody::PolicyChanged(p) => match Policy::parse(&p.source) {
                Ok(policy) => *self.policy.write().expect("policy lock") = Arc::new(policy),
                Err(e) => warn!("a recorded policy does not load: {e}"),
            },
            EventBody::IdentityBlocked(b) => {
                self.blocks
                    .write()
                    .expect("blocks lock")
                    .insert(b.identity.clone(), b.reason.clone());
                self.metrics.blocked();
                let reason = format!("identity {} was blocked: {}", b.identity, b.reason);
                stop(
                    &b.identity,
                    None,
                    Termination {
                        operator: Some(b.operator.clone()),
                        reason: reason.clone(),
                    },
                );
                return ControlEffect::RefuseHeld {
                    identity: b.identity.clone(),
                    reason,
                };
            }
            EventBody::IdentityUnblocked(u) => {
                self.blocks
                    .write()
                    .expect("blocks lock")
                    .remove(&u.identity);
                self.denials
                    .lock()
                    .expect("denials lock")
                    .remove(&u.identity);
            }
            EventBody::IdentityDisabled(d) => {
                let reason = format!("identity {} was disabled: {}", d.identity, d.reason);
                stop(
                    &d.identity,
                    None,
                    Termination {
                        operator: Some(d.operator.clone()),
                        reason: reason.clone(),
                    },
                );
                return ControlEffect::RefuseHeld {
                    identity: d.identity.clone(),
                    reason,
                };
            }
            EventBody::CredentialRevoked(c) => stop(
                &c.identity,
                Some(&c.credential),
                Termination {
                    operator: Some(c.operator.clone()),
                    reason: format!("credential {} was revoked: {}", c.credential, c.reason),
                },
            ),
            _ => {}
        }
        ControlEffect::Done
    }

    /// Finishes what [`Shared::apply_control`] left: held statements of a
    /// blocked or disabled identity are refused (recorded).
    pub async fn follow_up(&self, effect: ControlEffect) -> Result<(), AppendError> {
        if let ControlEffect::RefuseHeld { identity, reason } = effect {
            self.withdraw_where(|a| a.identity == identity, &reason)
                .await?;
        }
        Ok(())
    }

    /// A new session number, unique within the ledger.
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Why `identity` is blocked, if it is. A cluster member that has lost
    /// sight of the control log in strict mode treats every identity as
    /// blocked (docs/cluster.md).
    pub fn blocked(&self, identity: &str) -> Option<String> {
        if let Some(why) = self.control.as_ref().and_then(|c| c.stale()) {
            return Some(why);
        }
        self.blocks
            .read()
            .expect("blocks lock")
            .get(identity)
            .cloned()
    }

    /// Blocks `identity`: records the block, then cancels its in-flight
    /// statements upstream and ends its sessions. New logins are refused
    /// from the moment the block is recorded.
    pub async fn block(
        &self,
        identity: &str,
        operator: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> Result<(), AppendError> {
        if self.blocked(identity).is_some() {
            return Ok(());
        }
        // The block takes effect before its event commits, so no statement
        // checked after the commit can slip through; it is undone if the
        // event cannot be recorded.
        self.blocks
            .write()
            .expect("blocks lock")
            .insert(identity.to_owned(), reason.to_owned());
        let body: EventBody = IdentityBlocked {
            identity: identity.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
            trigger,
        }
        .into();
        let recorded = match self.control {
            Some(_) => self
                .record_control(|_| Ok(Some((vec![body], ()))))
                .await
                .map(|_| ())
                .map_err(AppendError::from),
            None => self.record_local(body).await,
        };
        if recorded.is_err() {
            self.blocks.write().expect("blocks lock").remove(identity);
        }
        recorded
    }

    /// Records a control event in this gateway's own ledger (no cluster),
    /// then applies it and what follows from it.
    async fn record_local(&self, body: EventBody) -> Result<(), AppendError> {
        let receipt = self.ledger.append(&body).await?;
        let effect = self.apply_control(&gatehouse_ledger::Event {
            seq: receipt.seq,
            ts: receipt.ts,
            body,
        });
        self.follow_up(effect).await
    }

    /// Why `identity` is disabled (retired), if it is.
    pub fn disabled(&self, identity: &str) -> Option<String> {
        self.identities
            .read()
            .expect("identities lock")
            .get(identity)
            .and_then(|i| i.disabled.clone())
    }

    /// Disables (retires) an identity: recorded, then its sessions end and
    /// its held statements are refused; it can no longer log in.
    pub async fn disable(
        &self,
        identity: &str,
        operator: &str,
        reason: &str,
    ) -> Result<(), CommandError> {
        self.execute(|ids| {
            crate::commands::identity_disable(ids, identity, reason.to_owned(), operator.to_owned())
                .map(|e| (e, ()))
        })
        .await
    }

    /// Removes an operator: recorded, then its token stops working.
    pub async fn remove_operator(
        &self,
        name: &str,
        removed_by: &str,
        reason: &str,
    ) -> Result<(), CommandError> {
        // Checked under the command lock, so two removals cannot both
        // leave the other as the last admin.
        self.execute(|_| {
            crate::commands::operator_remove(
                &self.operators.read().expect("operators lock"),
                name,
                reason.to_owned(),
                removed_by.to_owned(),
            )
            .map(|e| (e, ()))
        })
        .await
    }

    /// Lifts a block; the identity can log in again.
    pub async fn unblock(
        &self,
        identity: &str,
        operator: &str,
        reason: Option<String>,
    ) -> Result<bool, AppendError> {
        if self.blocked(identity).is_none() {
            return Ok(false);
        }
        let body: EventBody = IdentityUnblocked {
            identity: identity.to_owned(),
            operator: operator.to_owned(),
            reason,
        }
        .into();
        if self.control.is_some() {
            // Another gateway may have lifted it meanwhile.
            let recorded = self
                .record_control(|shared| Ok(shared.blocked(identity).map(|_| (vec![body], ()))))
                .await?;
            return Ok(recorded.is_some());
        }
        self.record_local(body).await?;
        Ok(true)
    }

    /// Ends every running session, each told and recorded with
    /// `termination`.
    pub fn end_every_session(&self, termination: Termination) {
        let sessions = self.sessions.lock().expect("sessions lock");
        for control in sessions.values() {
            control.terminate(termination.clone());
        }
    }

    /// Ends one session; returns whether it was running.
    pub fn kill(&self, session: u64, operator: &str, reason: &str) -> bool {
        self.end_session(
            session,
            Termination {
                operator: Some(operator.to_owned()),
                reason: reason.to_owned(),
            },
        )
    }

    /// Cancels a session's in-flight statement and ends it, recorded with
    /// `termination`; false when no such session runs.
    pub fn end_session(&self, session: u64, termination: Termination) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&session) {
            Some(control) => {
                control.terminate(termination);
                true
            }
            None => false,
        }
    }

    /// When `identity`'s credential `credential` stops being valid, if it
    /// exists (`u64::MAX` for one that never expires).
    pub fn credential_expiry(&self, identity: &str, credential: &str) -> Option<u64> {
        let ids = self.identities.read().expect("identities lock");
        ids.get(identity)?
            .credentials
            .get(credential)
            .map(|c| c.expires_at)
    }

    /// The identity holding `credential`, if it exists.
    fn credential_owner(&self, credential: &str) -> Option<String> {
        let ids = self.identities.read().expect("identities lock");
        let owner = ids
            .iter()
            .find(|i| i.credentials.contains_key(credential))
            .map(|i| i.name.clone());
        owner
    }

    /// Revokes a credential: it can no longer log in, and the sessions that
    /// logged in with it end at once. Returns whether it existed.
    pub async fn revoke(
        &self,
        credential: &str,
        operator: &str,
        reason: &str,
    ) -> Result<bool, AppendError> {
        let Some(identity) = self.credential_owner(credential) else {
            return Ok(false);
        };
        let event: gatehouse_ledger::EventBody = CredentialRevoked {
            credential: credential.to_owned(),
            identity,
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        }
        .into();
        if self.control.is_some() {
            let recorded = self
                .record_control(|shared| {
                    // Another gateway may have revoked it meanwhile.
                    let ids = shared.identities.read().expect("identities lock");
                    let live = ids.iter().any(|i| {
                        i.credentials
                            .get(credential)
                            .is_some_and(|c| c.revoked.is_none())
                    });
                    Ok(live.then_some((vec![event], ())))
                })
                .await?;
            return Ok(recorded.is_some());
        }
        self.record_local(event).await?;
        Ok(true)
    }

    /// Counts a denial for automatic containment; returns the trigger
    /// description when the identity has now crossed the policy's threshold.
    pub fn note_denial(&self, identity: &str) -> Option<String> {
        let containment = self.policy().settings().containment?;
        let window = Duration::from_secs(containment.window_seconds);
        let now = Instant::now();
        let mut denials = self.denials.lock().expect("denials lock");
        let recent = denials.entry(identity.to_owned()).or_default();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        (recent.len() >= containment.denials as usize).then(|| {
            recent.clear();
            format!(
                "{} denied statements within {} s",
                containment.denials, containment.window_seconds
            )
        })
    }
}

/// What sessions ask of the gateway (see the relay's `Services`).
impl crate::gateway::relay::services::Services for Shared {
    fn observe(&self, observation: crate::gateway::relay::services::Observation<'_>) {
        self.metrics.observe(observation);
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn policy(&self) -> Arc<Policy> {
        Shared::policy(self)
    }

    fn classify(&self, sql: &str) -> Arc<Classification> {
        self.verdicts.classify(sql)
    }

    fn masking(&self) -> &super::super::relay::masking::Masking {
        &self.masking
    }

    fn blocked(&self, identity: &str) -> Option<String> {
        Shared::blocked(self, identity)
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn record_rows(&self) -> usize {
        self.record_rows
    }

    fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    fn shutdown(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn approvers(&self) -> Vec<String> {
        self.operators
            .read()
            .expect("operators lock")
            .holding(gatehouse_engine::operators::Role::Approver)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn active_grant(
        &self,
        identity: &str,
        fingerprint: &str,
        now: gatehouse_ledger::event::Nanos,
    ) -> Option<gatehouse_engine::approvals::Grant> {
        self.approvals.active_grant(identity, fingerprint, now)
    }

    async fn request_approval(
        &self,
        request: gatehouse_ledger::event::ApprovalRequested,
    ) -> Result<
        (
            u64,
            tokio::sync::oneshot::Receiver<super::approvals::Outcome>,
        ),
        AppendError,
    > {
        self.hold_for_approval(request).await
    }

    async fn expire_approval(&self, id: u64) -> Result<super::approvals::Outcome, AppendError> {
        self.expire_request(id).await
    }

    async fn withdraw_approval(&self, id: u64, reason: &str) -> Result<(), String> {
        self.deny_request(id, None, reason)
            .await
            .map_err(|e| e.to_string())
    }

    async fn withdraw_session_approvals(
        &self,
        session: u64,
        reason: &str,
    ) -> Result<usize, AppendError> {
        self.withdraw_where(|a| a.session == session, reason).await
    }

    fn note_denial(&self, identity: &str) -> Option<String> {
        Shared::note_denial(self, identity)
    }

    async fn block(
        &self,
        identity: &str,
        operator: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> Result<(), AppendError> {
        Shared::block(self, identity, operator, reason, trigger).await
    }
}

#[cfg(test)]
mod tests {
    use super::VerdictCache;
    use std::sync::Arc;

    #[test]
    fn statements_differing_only_in_literal_values_share_one_entry() {
        let cache = VerdictCache::default();
        let a = cache.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        let b = cache.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 2");
        assert!(Arc::ptr_eq(&a, &b));
        // A literal that is not a plain value is never generalized.
        let c = cache.classify("SELECT CAST(a AS varchar(10)) FROM t");
        let d = cache.classify("SELECT CAST(a AS varchar(20)) FROM t");
        assert!(!Arc::ptr_eq(&c, &d));
        let again = cache.classify("SELECT CAST(a AS varchar(10)) FROM t");
        assert!(Arc::ptr_eq(&c, &again));
        assert_eq!(cache.map.lock().unwrap().len(), 3);
    }
}
