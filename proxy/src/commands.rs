//! Operator commands that become events: identities, credentials,
//! operators and policy.
//!
//! Each command is a builder that checks its input against the current
//! state and returns the events to record (plus what to show the operator
//! once, such as a new secret). The running gateway records them through
//! its admin API ([`crate::gateway::shared::Shared::execute`]); the
//! `*_offline` functions here record them straight into the ledger, which
//! needs the gateway stopped (the ledger has a single writer).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use gatehouse_engine::classify::classify;
use gatehouse_engine::identities::Identities;
use gatehouse_engine::operators::{token_hash, Operators, Role};
use gatehouse_engine::policy::{Policy, Subject};
use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::{
    CredentialIssued, CredentialRevoked, IdentityCreated, IdentityDisabled, KeyRotated,
    OperatorAdded, OperatorRemoved, PolicyChanged,
};
use gatehouse_ledger::shared_log::SharedAppendError;
use gatehouse_ledger::{EventBody, Ledger};

use crate::config::Config;
use crate::gateway::scram;
use crate::gateway::server::now_ns;
use crate::state::load_state;

/// Who is acting: `--operator`, else `$USER`, else `cli`.
pub fn operator(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into())
}

/// Identity and operator names: what logs in, and what events name.
fn valid_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c));
    if !ok {
        bail!(
            "{what} name {name:?} must be 1-63 characters of letters, digits, '_', '.', '-' or '@'"
        );
    }
    Ok(())
}

/// Records `event` in the ledger of a stopped gateway.
/// Builds an event from the ledger's current state (the gateway is
/// stopped) and records it: the offline form of an operator command.
/// In a cluster (`[cluster]`), the state is the control log's and the
/// event goes there, built under its append lock: running gateways go on
/// serving, and a command built on a state another appender changed
/// meanwhile cannot land.
fn record_from_state<T>(
    config: &Config,
    build: impl FnOnce(&gatehouse_engine::state::GatewayState) -> Result<(EventBody, T)>,
) -> Result<T> {
    if let Some(control) = config.control_log()? {
        let mut answer = None;
        control
            .append_with(0, |events| {
                let mut state = gatehouse_engine::state::GatewayState::default();
                for e in events {
                    state.apply(e);
                }
                let (event, a) = build(&state)?;
                answer = Some(a);
                Ok(vec![event])
            })
            .map_err(control_error)?;
        return answer.context("the control log took no event");
    }
    let state = load_state(&config.ledger.path)?;
    let (event, answer) = build(&state)?;
    record_offline(config, event)?;
    Ok(answer)
}

fn control_error(e: SharedAppendError<anyhow::Error>) -> anyhow::Error {
    match e {
        SharedAppendError::Refused(e) => e,
        other => anyhow::Error::new(other).context("cannot record in the control log"),
    }
}

/// The state policy, identities, credentials and operators are read from:
/// the control log's in a cluster, else the ledger's.
pub fn load_control_state(config: &Config) -> Result<gatehouse_engine::state::GatewayState> {
    let Some(control) = config.control_log()? else {
        return load_state(&config.ledger.path);
    };
    let mut state = gatehouse_engine::state::GatewayState::default();
    for e in control.follow(0)?.poll()? {
        state.apply(&e);
    }
    Ok(state)
}

/// `gatehouse cluster init`: the control log's signing key (unless the
/// file exists: a copy from another gateway) and the control log itself.
/// Returns the key's verifier line, for `gatehouse-verify`.
pub fn cluster_init(config: &Config, origin: &str) -> Result<String> {
    let cluster = config
        .cluster
        .as_ref()
        .context("the config has no [cluster] section: add one (docs/cluster.md)")?;
    if !cluster.control_key.exists() {
        let signer = gatehouse_ledger::note::NoteSigner::generate(origin)
            .context("cannot generate the control log's key")?;
        gatehouse_ledger::keyfile::write_signing_key(&cluster.control_key, &signer)?;
    }
    let control = config.control_log()?.context("[cluster] is set")?;
    Ok(control.verifier_key().to_string())
}

/// `gatehouse cluster retire`, with the gateway stopped: its ledger's tail
/// is signed (the writer is opened and closed, which also proves no gateway
/// holds it), and its final checkpoint is recorded in the control log as
/// `GatewayRetired`. Returns that checkpoint note.
pub fn cluster_retire(config: &Config) -> Result<String> {
    let cluster = config
        .cluster
        .as_ref()
        .context("the config has no [cluster] section: this gateway is in no cluster")?;
    Ledger::open(config.writer_options()?)
        .context("cannot open the ledger for writing; stop the gateway before retiring it")?
        .close();
    let note = gatehouse_ledger::LedgerReader::open(&config.ledger.path)?
        .latest_checkpoint()?
        .map(|c| c.note)
        .context("the ledger has no signed checkpoint to end at")?;
    let gateway = cluster.gateway.clone();
    let event = gatehouse_ledger::event::GatewayRetired {
        gateway: gateway.clone(),
        checkpoint: note.clone(),
    };
    let control = config.control_log()?.context("[cluster] is set")?;
    control
        .append_with(0, |events| {
            let retired = events
                .iter()
                .any(|e| matches!(&e.body, EventBody::GatewayRetired(r) if r.gateway == gateway));
            if retired {
                bail!("gateway {gateway} is retired already");
            }
            Ok(vec![event.into()])
        })
        .map_err(control_error)?;
    Ok(note)
}

/// Records `event` where control events go: the control log in a cluster,
/// else the ledger of a stopped gateway.
fn record_control(config: &Config, event: EventBody) -> Result<()> {
    record_from_state(config, |_| Ok((event, ())))
}

fn record_offline(config: &Config, event: EventBody) -> Result<()> {
    let ledger = Ledger::open(config.writer_options()?).context(
        "cannot open the ledger for writing; if the gateway is running, drop --config to go through its admin API",
    )?;
    let result = ledger.append_blocking(&[event]);
    ledger.close();
    result?;
    Ok(())
}

/// What `gatehouse key rotate` did.
pub struct Rotated {
    /// The retired key.
    pub old: gatehouse_ledger::note::VerifierKey,
    /// The key signing from now on.
    pub new: gatehouse_ledger::note::VerifierKey,
}

/// `gatehouse key rotate`, with the gateway stopped: a new signing key of
/// the same name; a `KeyRotated` event naming it, committed under a
/// checkpoint signed by the old key (which so vouches for its successor);
/// then the new key replaces the old in the key file. The new key is
/// written (as `<key file>.next`) before the event is recorded, so a crash
/// in between never loses it: see the error `writer_options` gives then.
pub fn key_rotate(config: &Config, operator: String) -> Result<Rotated> {
    use gatehouse_ledger::keyfile::{load_signing_key, write_signing_key};
    let path = &config.ledger.signing_key;
    let old = load_signing_key(path)?;
    let new = gatehouse_ledger::note::NoteSigner::generate(old.name())
        .context("cannot generate a signing key")?;
    let next = next_key_path(path);
    write_signing_key(&next, &new)
        .with_context(|| format!("cannot write the new key to {}", next.display()))?;
    let event = KeyRotated {
        operator,
        old_key: old.verifier().to_string(),
        new_key: new.verifier().to_string(),
    };
    if let Err(e) = record_offline(config, event.into()) {
        let _ = std::fs::remove_file(&next);
        return Err(e);
    }
    std::fs::rename(&next, path).with_context(|| {
        format!(
            "the rotation is recorded, but {} could not replace {}: move it there before starting the gateway",
            next.display(),
            path.display()
        )
    })?;
    Ok(Rotated {
        old: old.verifier(),
        new: new.verifier(),
    })
}

/// Where `gatehouse key rotate` keeps the new key until the rotation is
/// recorded.
pub fn next_key_path(key: &std::path::Path) -> std::path::PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    key.with_file_name(name)
}

/// The event creating identity `name`.
pub fn identity_create(
    identities: &Identities,
    name: &str,
    description: Option<String>,
    operator: String,
) -> Result<EventBody> {
    valid_name("identity", name)?;
    if identities.get(name).is_some() {
        bail!("identity {name} already exists");
    }
    Ok(IdentityCreated {
        identity: name.into(),
        operator,
        description,
    }
    .into())
}

/// `gatehouse identity create --config`: [`identity_create`], recorded offline.
pub fn identity_create_offline(
    config: &Config,
    name: &str,
    description: Option<String>,
    operator: String,
) -> Result<()> {
    record_from_state(config, |state| {
        identity_create(&state.identities, name, description, operator).map(|e| (e, ()))
    })
}

/// The event disabling (retiring) identity `name`: it can no longer log
/// in, its sessions end, and no credential can be issued to it. Final; a
/// block is the reversible stop.
pub fn identity_disable(
    identities: &Identities,
    name: &str,
    reason: String,
    operator: String,
) -> Result<EventBody> {
    let identity = identities
        .get(name)
        .with_context(|| format!("no identity {name}"))?;
    if let Some(why) = &identity.disabled {
        bail!("identity {name} is already disabled ({why})");
    }
    if reason.trim().is_empty() {
        bail!("give a reason (recorded): --reason TEXT");
    }
    Ok(IdentityDisabled {
        identity: name.into(),
        operator,
        reason,
    }
    .into())
}

/// `gatehouse identity disable --config`: [`identity_disable`], recorded offline.
pub fn identity_disable_offline(
    config: &Config,
    name: &str,
    reason: String,
    operator: String,
) -> Result<()> {
    record_from_state(config, |state| {
        identity_disable(&state.identities, name, reason, operator).map(|e| (e, ()))
    })
}

/// The event removing operator `name`: its token stops working. An
/// operator cannot remove itself, and the last admin cannot be removed
/// (nobody could add operators any more).
pub fn operator_remove(
    operators: &Operators,
    name: &str,
    reason: String,
    removed_by: String,
) -> Result<EventBody> {
    let operator = operators
        .get(name)
        .with_context(|| format!("no operator {name}"))?;
    if name == removed_by {
        bail!("an operator cannot remove itself; ask another admin");
    }
    if operator.roles.contains(&Role::Admin) && operators.holding(Role::Admin).len() == 1 {
        bail!("{name} is the last admin; add another admin first (gatehouse operator add NAME --role admin)");
    }
    if reason.trim().is_empty() {
        bail!("give a reason (recorded): --reason TEXT");
    }
    Ok(OperatorRemoved {
        operator: name.into(),
        removed_by,
        reason,
    }
    .into())
}

/// `gatehouse operator remove --config`: [`operator_remove`], recorded offline.
pub fn operator_remove_offline(
    config: &Config,
    name: &str,
    reason: String,
    removed_by: String,
) -> Result<()> {
    record_from_state(config, |state| {
        operator_remove(&state.operators, name, reason, removed_by).map(|e| (e, ()))
    })
}

pub use crate::config::parse_duration;

/// What `credential issue` produced.
pub struct Issued {
    /// The credential id.
    pub id: String,
    /// The secret: shown once, never stored.
    pub secret: String,
    /// Expiry, Unix nanoseconds.
    pub expires_at: u64,
}

/// A new credential for `identity`: the event holds only its SCRAM
/// verifier; the secret is returned once.
pub fn credential_issue(
    identities: &Identities,
    identity: &str,
    ttl: Duration,
    operator: String,
) -> Result<(EventBody, Issued)> {
    match identities.get(identity) {
        None => bail!("identity {identity} does not exist; create it first: gatehouse identity create {identity}"),
        Some(i) if i.disabled.is_some() => {
            bail!("identity {identity} is disabled; it gets no credentials (create a new identity)")
        }
        Some(_) => {}
    }
    let (salt, iterations) = identities
        .scram_parameters(identity)
        .unwrap_or_else(|| (scram::random_bytes::<16>().to_vec(), scram::ITERATIONS));
    let secret = format!("ghs_{}", B64URL.encode(scram::random_bytes::<24>()));
    let id = format!("cred_{}", B64URL.encode(scram::random_bytes::<9>()));
    let verifier = scram::verifier_for(&secret, &salt, iterations);
    let expires_at = now_ns() + ttl.as_nanos() as u64;
    let event = CredentialIssued {
        credential: id.clone(),
        identity: identity.into(),
        operator,
        expires_at,
        salt: Bytes(verifier.salt),
        iterations: verifier.iterations,
        stored_key: Bytes(verifier.stored_key),
        server_key: Bytes(verifier.server_key),
    };
    Ok((
        event.into(),
        Issued {
            id,
            secret,
            expires_at,
        },
    ))
}

/// `gatehouse credential issue --config`: [`credential_issue`], recorded offline.
pub fn credential_issue_offline(
    config: &Config,
    identity: &str,
    ttl: Duration,
    operator: String,
) -> Result<Issued> {
    record_from_state(config, |state| {
        credential_issue(&state.identities, identity, ttl, operator)
    })
}

/// The event revoking `credential`.
pub fn credential_revoke(
    identities: &Identities,
    credential: &str,
    reason: String,
    operator: String,
) -> Result<EventBody> {
    let owner = identities
        .iter()
        .find(|i| i.credentials.contains_key(credential))
        .map(|i| i.name.clone())
        .with_context(|| format!("no credential {credential}"))?;
    Ok(CredentialRevoked {
        credential: credential.into(),
        identity: owner,
        operator,
        reason,
    }
    .into())
}

/// `gatehouse credential revoke --config`: [`credential_revoke`], recorded offline.
pub fn credential_revoke_offline(
    config: &Config,
    credential: &str,
    reason: String,
    operator: String,
) -> Result<()> {
    record_from_state(config, |state| {
        credential_revoke(&state.identities, credential, reason, operator).map(|e| (e, ()))
    })
}

/// Adds (or re-keys) an admin-API operator: the event holds the token's
/// hash; the token is returned once.
pub fn operator_add(name: &str, roles: &[Role], added_by: String) -> Result<(EventBody, String)> {
    valid_name("operator", name)?;
    if roles.is_empty() {
        bail!("an operator needs at least one role: admin, approver, responder or auditor");
    }
    let token = format!("gho_{}", B64URL.encode(scram::random_bytes::<32>()));
    let event = OperatorAdded {
        operator: name.into(),
        roles: roles.iter().map(|r| r.name().to_owned()).collect(),
        token_hash: Bytes(token_hash(&token)),
        added_by,
    };
    Ok((event.into(), token))
}

/// `gatehouse operator add --config`: [`operator_add`], recorded offline;
/// returns the token.
pub fn operator_add_offline(
    config: &Config,
    name: &str,
    roles: &[Role],
    added_by: String,
) -> Result<String> {
    let (event, token) = operator_add(name, roles, added_by)?;
    record_control(config, event)?;
    Ok(token)
}

/// The event making `source` the policy in force, if it parses; a broken
/// policy is refused with its line and reason, and the old one stays.
pub fn policy_change(source: String, operator: String) -> Result<(EventBody, Policy)> {
    let policy = Policy::parse(&source)
        .map_err(|e| anyhow::anyhow!("{e}; the policy in force is unchanged"))?;
    let event = PolicyChanged {
        operator,
        digest: Bytes(blake3::hash(source.as_bytes()).as_bytes().to_vec()),
        source,
    };
    Ok((event.into(), policy))
}

/// What checking a policy's deny and mask rules against the targets'
/// catalogs found (see [`check_policy_names`]).
#[derive(Debug, Default)]
pub struct NameCheck {
    /// Names the rules use that a target's catalog does not have, each with
    /// its line, the rule and the likely intended name.
    pub unknown: Vec<String>,
    /// Targets whose catalog could not be read, and why.
    pub unchecked: Vec<String>,
}

impl NameCheck {
    /// Refuses the policy when it names what does not exist, unless
    /// `allow_missing`; otherwise the warnings to show the operator.
    pub fn verdict(self, allow_missing: bool) -> Result<Vec<String>> {
        if !self.unknown.is_empty() && !allow_missing {
            bail!(
                "the policy names {} table(s) or column(s) in deny or mask rules that do not \
                 exist, so those rules would protect nothing:\n  {}\nFix the names, or apply \
                 with --allow-missing to accept them as they are; the policy in force is \
                 unchanged",
                self.unknown.len(),
                self.unknown.join("\n  ")
            );
        }
        let mut warnings: Vec<String> = self
            .unknown
            .into_iter()
            .map(|u| {
                format!("{u} (applied with --allow-missing: this rule protects nothing there)")
            })
            .collect();
        warnings.extend(
            self.unchecked
                .into_iter()
                .map(|u| format!("the names in deny and mask rules were not checked on {u}")),
        );
        Ok(warnings)
    }
}

/// Checks the tables and columns that `policy`'s deny and mask rules name
/// against the catalog of each target (see
/// [`gatehouse_engine::policy::Policy::unknown_names`]).
pub async fn check_policy_names(policy: &Policy, targets: &[&crate::config::Target]) -> NameCheck {
    let mut check = NameCheck::default();
    for target in targets {
        match crate::gateway::relay::catalog::relation_names(target).await {
            Ok(names) => check.unknown.extend(
                policy
                    .unknown_names(&target.name, &names)
                    .into_iter()
                    .map(|u| format!("{u} (target {})", target.name)),
            ),
            Err(e) => check.unchecked.push(format!("target {}: {e}", target.name)),
        }
    }
    check
}

/// Reads a policy file.
pub fn read_policy(file: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read policy {}", file.display()))
}

/// `gatehouse policy apply --config`: [`policy_change`], recorded offline,
/// after its names are checked against every target the gateway can reach
/// (see [`check_policy_names`]). Returns warnings for the operator.
pub fn policy_apply(
    config: &Config,
    file: &std::path::Path,
    operator: String,
    allow_missing: bool,
) -> Result<Vec<String>> {
    let (event, policy) = policy_change(read_policy(file)?, operator)
        .with_context(|| format!("{}", file.display()))?;
    let check = match config.resolve_targets() {
        Ok(targets) => {
            let targets: Vec<&crate::config::Target> = targets.iter().collect();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(check_policy_names(&policy, &targets))
        }
        Err(e) => NameCheck {
            unknown: Vec::new(),
            unchecked: vec![format!("any target ({e:#})")],
        },
    };
    let warnings = check
        .verdict(allow_missing)
        .with_context(|| format!("{}", file.display()))?;
    record_control(config, event)?;
    Ok(warnings)
}

/// The policy in force according to the ledger.
pub fn current_policy(config: &Config) -> Result<Policy> {
    let state = load_control_state(config)?;
    match state.policy_source() {
        Some(s) => {
            Policy::parse(s).map_err(|e| anyhow::anyhow!("the policy in force does not load: {e}"))
        }
        None => Ok(Policy::deny_all()),
    }
}

/// What `gatehouse policy explain` shows: the decision for a statement, and
/// how each statement of the string was judged. Built by the running
/// gateway's own pipeline (`POST /v1/policy/explain`), or offline from the
/// policy alone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Explanation {
    /// `allow`, `deny`, `require_approval` or `mask`.
    pub action: String,
    /// The deciding rule (`None`: the default deny, or no rule needed).
    pub rule: Option<String>,
    /// What the client would be told, or why it is allowed (a grant).
    pub message: Option<String>,
    /// Each statement of the string, in order.
    pub statements: Vec<ExplainedStatement>,
    /// Whether the identity's upstream session is read-only.
    pub read_only: bool,
    /// `gateway` (the running gateway's pipeline: views, catalog, masking,
    /// grants, blocks) or `offline` (the policy file alone).
    pub pipeline: String,
}

/// One statement of an [`Explanation`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExplainedStatement {
    /// The command (`SELECT`, `DELETE`, ...).
    pub command: String,
    /// Its class.
    pub class: String,
    /// Policy's action for it.
    pub action: String,
    /// The rule that decided it.
    pub rule: Option<String>,
    /// Tables it touches.
    pub tables: Vec<String>,
    /// Columns it touches.
    pub columns: Vec<String>,
    /// Functions it calls, and dangerous operations.
    pub functions: Vec<String>,
    /// Why it is Unknown, if it is.
    pub reason: Option<String>,
    /// Masks that apply: `column=strategy (rule r)`.
    pub masks: Vec<String>,
}

/// The explanation of `classification` under `verdict`'s statements.
pub fn explain_statements(
    classification: &gatehouse_engine::Classification,
    verdicts: &[gatehouse_engine::policy::StatementVerdict],
) -> Vec<ExplainedStatement> {
    classification
        .statements
        .iter()
        .zip(verdicts)
        .map(|(s, v)| ExplainedStatement {
            command: s.command.clone(),
            class: format!("{:?}", s.class),
            action: format!("{:?}", v.action),
            rule: v.rule.clone(),
            tables: s.tables.clone(),
            columns: s.columns.clone(),
            functions: s.functions.iter().chain(&s.dangerous).cloned().collect(),
            reason: s.reason.clone(),
            masks: v
                .mask
                .iter()
                .flat_map(|m| m.plan.columns.iter())
                .map(|(column, m)| format!("{column}={} (rule {})", m.strategy.name(), m.rule))
                .collect(),
        })
        .collect()
}

impl Explanation {
    /// The text `gatehouse policy explain` prints.
    pub fn to_text(&self, identity: &str, target: &str) -> String {
        let shown = match self.action.as_str() {
            "allow" => "Allow",
            "deny" => "Deny",
            "mask" => "Mask",
            "require_approval" => "RequireApproval",
            other => other,
        };
        let mut out = format!(
            "decision: {shown} by {}\n",
            self.rule
                .as_deref()
                .map_or("the default (deny)".to_owned(), |r| format!("rule {r}"))
        );
        if let Some(m) = &self.message {
            out.push_str(&format!("message: {m}\n"));
        }
        for (i, s) in self.statements.iter().enumerate() {
            out.push_str(&format!(
                "statement {}: {} class={} action={} rule={} tables=[{}] columns=[{}] functions=[{}]{}\n",
                i + 1,
                s.command,
                s.class,
                s.action,
                s.rule.as_deref().unwrap_or("-"),
                s.tables.join(", "),
                s.columns.join(", "),
                s.functions.join(", "),
                s.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            ));
            if !s.masks.is_empty() {
                out.push_str(&format!("  masks: {}\n", s.masks.join(", ")));
            }
        }
        out.push_str(&format!(
            "upstream session for {identity} on {target}: {}\n",
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            }
        ));
        if self.pipeline == "offline" {
            out.push_str(
                "judged offline, by the policy alone: the running gateway also judges through the views a \
                 statement names, checks masked columns in the catalog, and applies grants and blocks \
                 (run without --config to ask it)\n",
            );
        } else {
            out.push_str("judged by the running gateway's own decision pipeline\n");
        }
        out
    }
}

/// `gatehouse policy explain --config`: the decision by the policy alone,
/// without a running gateway.
pub fn policy_explain(
    config: &Config,
    identity: &str,
    target: &str,
    sql: &str,
    policy_file: Option<&std::path::Path>,
) -> Result<String> {
    let policy = match policy_file {
        Some(file) => Policy::parse(&read_policy(file)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
        None => current_policy(config)?,
    };
    let classification = classify(sql);
    let verdict = policy.decide(&Subject { identity, target }, &classification);
    let explanation = Explanation {
        action: crate::replay::action_name(verdict.action).to_owned(),
        rule: verdict.rule.clone(),
        message: verdict.message.clone(),
        statements: explain_statements(&classification, &verdict.statements),
        read_only: policy.read_only(identity, target),
        pipeline: "offline".into(),
    };
    Ok(explanation.to_text(identity, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let out =
            crate::init::init(&dir.path().join("gh"), Some("gatehouse.test/commands")).unwrap();
        (dir, Config::load(&out.config).unwrap())
    }

    #[test]
    fn a_broken_policy_is_rejected_with_its_line_and_the_old_one_stays() {
        let (dir, config) = setup();
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "[[rule]]\nname = \"r\"\nclasses = [\"read\"]\naction = \"allow\"\n",
        )
        .unwrap();
        policy_apply(&config, &good, "t".into(), false).unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[rule]]\nname = \"r\"\nclasses = [\"reed\"]\naction = \"allow\"\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            policy_apply(&config, &bad, "t".into(), false).unwrap_err()
        );
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unchanged"), "{err}");
        assert_eq!(
            current_policy(&config).unwrap().source(),
            std::fs::read_to_string(&good).unwrap()
        );
    }

    #[test]
    fn explain_shows_the_decision_and_the_rule_without_running_anything() {
        let (dir, config) = setup();
        let policy = dir.path().join("p.toml");
        std::fs::write(
            &policy,
            "[[rule]]\nname = \"reads\"\nidentity = \"bot\"\nclasses = [\"read\"]\naction = \"allow\"\n",
        )
        .unwrap();
        policy_apply(&config, &policy, "t".into(), false).unwrap();
        let out = policy_explain(&config, "bot", "shop", "SELECT id FROM orders", None).unwrap();
        assert!(out.starts_with("decision: Allow by rule reads"), "{out}");
        assert!(out.contains("public.orders"), "{out}");
        assert!(out.contains("read-only"), "{out}");
        let out = policy_explain(&config, "bot", "shop", "DELETE FROM orders", None).unwrap();
        assert!(
            out.starts_with("decision: Deny by the default (deny)"),
            "{out}"
        );
        // A candidate file is tried without being applied; its masks shown.
        let candidate = dir.path().join("candidate.toml");
        std::fs::write(
            &candidate,
            "[[rule]]\nname = \"masked-reads\"\nidentity = \"bot\"\nclasses = [\"read\"]\naction = \"mask\"\n\n[rule.mask]\n\"public.orders.total\" = \"redact\"\n",
        )
        .unwrap();
        let out = policy_explain(
            &config,
            "bot",
            "shop",
            "SELECT id, total FROM orders",
            Some(&candidate),
        )
        .unwrap();
        assert!(
            out.starts_with("decision: Mask by rule masked-reads"),
            "{out}"
        );
        assert!(
            out.contains("masks: public.orders.total=redact (rule masked-reads)"),
            "{out}"
        );
        let out = policy_explain(&config, "bot", "shop", "SELECT id FROM orders", None).unwrap();
        assert!(
            out.starts_with("decision: Allow by rule reads"),
            "not applied: {out}"
        );
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[[rule]]\nname = 1\n").unwrap();
        let err = policy_explain(&config, "bot", "shop", "SELECT 1", Some(&broken)).unwrap_err();
        assert!(format!("{err:#}").contains("broken.toml"), "{err:#}");
    }

    #[test]
    fn credentials_need_an_identity_and_durations_parse() {
        let (_dir, config) = setup();
        assert!(
            credential_issue_offline(&config, "nobody", Duration::from_secs(60), "t".into())
                .is_err()
        );
        identity_create_offline(&config, "bot", None, "t".into()).unwrap();
        assert!(
            identity_create_offline(&config, "bot", None, "t".into()).is_err(),
            "no duplicates"
        );
        assert!(identity_create_offline(&config, "bad name", None, "t".into()).is_err());
        let a =
            credential_issue_offline(&config, "bot", Duration::from_secs(60), "t".into()).unwrap();
        let b =
            credential_issue_offline(&config, "bot", Duration::from_secs(60), "t".into()).unwrap();
        assert_ne!(a.secret, b.secret);
        credential_revoke_offline(&config, &a.id, "rotated".into(), "t".into()).unwrap();
        let state = load_state(&config.ledger.path).unwrap();
        assert_eq!(
            state.identities.usable_credentials("bot", now_ns()).len(),
            1
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
