//! The gateway's metrics, in the Prometheus text format (`GET /metrics` on
//! the admin listener, auditor role).
//!
//! Counters are bumped where the gateway records the matching event
//! (statements, masks, logins, blocks, approvals) or sees the fault
//! (upstream connections); gauges of what is open now (sessions, held
//! statements) are read from the session registry and the approval desk at
//! scrape time, so they cannot drift. Ledger commits are timed by the
//! writer itself (`WriterOptions::on_commit`). Labels carry identities,
//! targets, rules and classes, never SQL or row data.

use std::sync::Arc;

use gatehouse_engine::{Action, StatementClass};
use gatehouse_ledger::{CommitObserver, CommitSample};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::gateway::relay::services::Observation;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    identity: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    identity: String,
    target: String,
    verdict: String,
    class: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrategyLabels {
    strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// How an approval request ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Approved (quorum reached).
    Granted,
    /// Denied by an approver.
    Denied,
    /// Timed out.
    Expired,
    /// Withdrawn: its client cancelled or left, or the gateway stopped.
    Withdrawn,
}

/// The gateway's metrics (see the module documentation).
pub struct Metrics {
    registry: Registry,
    sessions_open: Family<SessionLabels, Gauge>,
    sessions: Family<SessionLabels, Counter>,
    statements: Family<StatementLabels, Counter>,
    approvals_pending: Gauge,
    approvals: Family<OutcomeLabels, Counter>,
    blocks: Counter,
    login_failures: Family<ReasonLabels, Counter>,
    upstream_errors: Family<TargetLabels, Counter>,
    masked_values: Family<StrategyLabels, Counter>,
    commit_seconds: Histogram,
    commit_events: Histogram,
    events: Counter,
    commit_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Every metric, registered under the `gatehouse_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gatehouse");
        let m = Metrics {
            sessions_open: Family::default(),
            sessions: Family::default(),
            statements: Family::default(),
            approvals_pending: Gauge::default(),
            approvals: Family::default(),
            blocks: Counter::default(),
            login_failures: Family::default(),
            upstream_errors: Family::default(),
            masked_values: Family::default(),
            // 10 µs to ~1.3 s.
            commit_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 18)),
            // 1 to 8,192 events.
            commit_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            events: Counter::default(),
            commit_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions_open",
            "Sessions open now, by identity and target",
            m.sessions_open.clone(),
        );
        registry.register(
            "sessions",
            "Sessions opened since start, by identity and target",
            m.sessions.clone(),
        );
        registry.register(
            "statements",
            "Statements judged and recorded, by identity, target, verdict, class and deciding rule",
            m.statements.clone(),
        );
        registry.register(
            "approvals_pending",
            "Statements held for approval now",
            m.approvals_pending.clone(),
        );
        registry.register(
            "approvals",
            "Approval requests ended since start, by outcome",
            m.approvals.clone(),
        );
        registry.register(
            "blocks",
            "Identities blocked since start (by operators or automatic containment)",
            m.blocks.clone(),
        );
        registry.register(
            "login_failures",
            "Failed logins since start, by reason",
            m.login_failures.clone(),
        );
        registry.register(
            "upstream_connect_errors",
            "Connections to a target's database that failed, by target",
            m.upstream_errors.clone(),
        );
        registry.register(
            "masked_values",
            "Values masked in results, by strategy",
            m.masked_values.clone(),
        );
        registry.register(
            "ledger_commit_seconds",
            "Time per ledger commit (write-ahead records wait for it)",
            m.commit_seconds.clone(),
        );
        registry.register(
            "ledger_commit_events",
            "Events per ledger commit (batch size)",
            m.commit_events.clone(),
        );
        registry.register(
            "ledger_events",
            "Events committed to the ledger since start",
            m.events.clone(),
        );
        registry.register(
            "ledger_commit_failures",
            "Ledger commits that failed (their statements were refused)",
            m.commit_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts what a session did.
    pub fn observe(&self, observation: Observation<'_>) {
        match observation {
            Observation::Statement {
                identity,
                target,
                action,
                class,
                rule,
            } => {
                self.statements
                    .get_or_create(&StatementLabels {
                        identity: identity.to_owned(),
                        target: target.to_owned(),
                        verdict: action_label(action).to_owned(),
                        class: class_label(class).to_owned(),
                        rule: rule.unwrap_or("").to_owned(),
                    })
                    .inc();
            }
            Observation::Masked { strategy, values } => {
                self.masked_values
                    .get_or_create(&StrategyLabels {
                        strategy: strategy.to_owned(),
                    })
                    .inc_by(values);
            }
        }
    }

    /// A session opened.
    pub fn session_opened(&self, identity: &str, target: &str) {
        self.sessions
            .get_or_create(&SessionLabels {
                identity: identity.to_owned(),
                target: target.to_owned(),
            })
            .inc();
    }

    /// A login failed, for `reason` (a short fixed word, never a secret).
    pub fn login_failed(&self, reason: &str) {
        self.login_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A connection to `target`'s database failed.
    pub fn upstream_error(&self, target: &str) {
        self.upstream_errors
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .inc();
    }

    /// An identity was blocked.
    pub fn blocked(&self) {
        self.blocks.inc();
    }

    /// An approval request ended.
    pub fn approval_ended(&self, outcome: ApprovalOutcome) {
        let outcome = match outcome {
            ApprovalOutcome::Granted => "granted",
            ApprovalOutcome::Denied => "denied",
            ApprovalOutcome::Expired => "expired",
            ApprovalOutcome::Withdrawn => "withdrawn",
        };
        self.approvals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The observer the ledger writer calls after each commit.
    pub fn commit_observer(self: &Arc<Self>) -> CommitObserver {
        let metrics = Arc::clone(self);
        Arc::new(move |sample: CommitSample| {
            metrics.commit_seconds.observe(sample.seconds);
            metrics.commit_events.observe(sample.events as f64);
            if sample.committed {
                metrics.events.inc_by(sample.events as u64);
            } else {
                metrics.commit_failures.inc();
            }
        })
    }

    /// The text exposition, with the gauges of what is open now: `open`
    /// holds each open session's (identity, target), `pending` the number
    /// of held statements.
    pub fn render(&self, open: &[(String, String)], pending: usize) -> String {
        self.sessions_open.clear();
        for (identity, target) in open {
            self.sessions_open
                .get_or_create(&SessionLabels {
                    identity: identity.clone(),
                    target: target.clone(),
                })
                .inc();
        }
        self.approvals_pending.set(pending as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The verdict as policy files spell it.
fn action_label(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
        Action::Mask => "mask",
    }
}

/// The class as policy files spell it.
fn class_label(class: StatementClass) -> &'static str {
    match class {
        StatementClass::Read => "read",
        StatementClass::Write => "write",
        StatementClass::Ddl => "ddl",
        StatementClass::Admin => "admin",
        StatementClass::Transaction => "transaction",
        StatementClass::Session => "session",
        StatementClass::Function => "function",
        StatementClass::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Arc::new(Metrics::new());
        m.observe(Observation::Statement {
            identity: "agent-1",
            target: "shop",
            action: Action::Deny,
            class: StatementClass::Read,
            rule: Some("no-ssn"),
        });
        m.observe(Observation::Masked {
            strategy: "email",
            values: 3,
        });
        m.session_opened("agent-1", "shop");
        (m.commit_observer())(CommitSample {
            events: 2,
            seconds: 0.0001,
            committed: true,
        });
        let text = m.render(&[("agent-1".into(), "shop".into())], 1);
        for line in [
            "gatehouse_statements_total{identity=\"agent-1\",target=\"shop\",verdict=\"deny\",class=\"read\",rule=\"no-ssn\"} 1",
            "gatehouse_masked_values_total{strategy=\"email\"} 3",
            "gatehouse_sessions_total{identity=\"agent-1\",target=\"shop\"} 1",
            "gatehouse_sessions_open{identity=\"agent-1\",target=\"shop\"} 1",
            "gatehouse_approvals_pending 1",
            "gatehouse_ledger_events_total 2",
            "gatehouse_ledger_commit_events_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // Sessions that closed leave the gauge.
        let text = m.render(&[], 0);
        assert!(!text.contains("gatehouse_sessions_open{"), "{text}");
    }
}
