//! What policy says about a classified statement.
//!
//! A policy is a TOML file of rules (reference: `docs/policy.md`). Every
//! statement of a query is judged on its own: a matching `deny` rule wins,
//! then `require_approval`, then `mask`, then `allow`; with no matching rule
//! the statement is denied. The query's verdict is its most restrictive
//! statement's. Globs are compiled once, at [`Policy::parse`]; judging a
//! statement allocates only the strings of the verdict it returns.
//!
//! `mask` rules also name columns to mask: their masks bind every statement
//! of the identities and targets they cover, whichever rule lets the
//! statement through, so an allow rule can never bypass them. Every verdict
//! that is not a denial carries the merged [`MaskPlan`]; whether a statement
//! can be masked is decided by [`crate::mask::analysis`].

mod glob;
mod names;
mod parse;
mod resolution;

use std::collections::btree_map::Entry;
use std::sync::Arc;

use crate::classify::{SESSION_LIMIT_CHANGE, SQL_MISREAD, SQL_TEXT_SETTING_CHANGE};
use crate::mask::{ColumnMask, Detector, MaskPlan, Masking, OnDerived, Strategy};
use crate::{Classification, StatementInfo};
pub use gatehouse_ledger::event::{Action, StatementClass};

use glob::GlobList;
pub use names::{CatalogNames, UnknownName};

/// The message of a default deny when the file sets none.
pub const DEFAULT_MESSAGE: &str = "not permitted by Gatehouse policy";

/// Class names as written in policy files, in code order.
const CLASS_NAMES: &[(&str, StatementClass)] = &[
    ("read", StatementClass::Read),
    ("write", StatementClass::Write),
    ("ddl", StatementClass::Ddl),
    ("session", StatementClass::Session),
    ("function", StatementClass::Function),
    ("admin", StatementClass::Admin),
    ("unknown", StatementClass::Unknown),
    ("transaction", StatementClass::Transaction),
];

/// The name of a class as written in policy files (`read`, `ddl`, ...).
pub fn class_name(class: StatementClass) -> &'static str {
    match class {
        StatementClass::Read => "read",
        StatementClass::Write => "write",
        StatementClass::Ddl => "ddl",
        StatementClass::Session => "session",
        StatementClass::Function => "function",
        StatementClass::Admin => "admin",
        StatementClass::Unknown => "unknown",
        StatementClass::Transaction => "transaction",
    }
}

/// The name of an action as written in policy files (`allow`, ...).
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
        Action::Mask => "mask",
    }
}

fn class_bit(class: StatementClass) -> u8 {
    1 << class.code()
}

const ALL_CLASSES: u8 = u8::MAX;
const READ_ONLY_CLASSES: u8 = (1 << 0) | (1 << 7); // read, transaction

/// How restrictive an action is: Deny > RequireApproval > Mask > Allow.
fn severity(action: Action) -> u8 {
    match action {
        Action::Allow => 0,
        Action::Mask => 1,
        Action::RequireApproval => 2,
        Action::Deny => 3,
    }
}

/// A policy file that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct PolicyError {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and what to write instead where that is clear.
    pub message: String,
}

/// File-wide settings (`[settings]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Told to the client when a statement is denied without a rule message.
    pub default_message: String,
    /// Automatic containment: block an identity by itself after this many
    /// denied statements within the window.
    pub containment: Option<Containment>,
}

/// `contain_after_denials` within `contain_window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Containment {
    /// Denied statements that trigger a block.
    pub denials: u32,
    /// Within this many seconds.
    pub window_seconds: u64,
}

/// How a `require_approval` rule holds statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// Distinct approvers required (`approvers`, default 1).
    pub approvers: u64,
    /// Seconds a statement is held before it is refused
    /// (`approval_timeout_seconds`, default 300).
    pub timeout_seconds: u64,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            approvers: 1,
            timeout_seconds: 300,
        }
    }
}

/// One `[[rule]]`, as written (patterns) and compiled (private).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique within the file.
    pub name: String,
    /// Free text for humans.
    pub description: Option<String>,
    /// Line of the rule's `[[rule]]` header.
    pub line: usize,
    /// What the rule does to the statements it matches.
    pub action: Action,
    /// Told to the client when this rule denies a statement.
    pub message: Option<String>,
    /// Identity globs (default `["*"]`).
    pub identity: Vec<String>,
    /// Target globs (default `["*"]`).
    pub target: Vec<String>,
    /// Classes covered, as written; `None` covers every class except
    /// `unknown` (for deny rules: every class).
    pub classes: Option<Vec<StatementClass>>,
    /// Command globs, matched ignoring ASCII case.
    pub commands: Option<Vec<String>>,
    /// Table globs (`schema.table`).
    pub tables: Option<Vec<String>>,
    /// Column globs (`schema.table.column`).
    pub columns: Option<Vec<String>>,
    /// Function and dangerous-operation globs.
    pub functions: Option<Vec<String>>,
    /// What a `mask` rule masks (always `Some` for mask rules, `None` for
    /// the others).
    pub mask: Option<RuleMask>,
    /// For `require_approval` rules: who must approve, and for how long the
    /// statement is held.
    pub approval: Option<ApprovalSettings>,
    matcher: Matcher,
}

/// The masking part of a `mask` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMask {
    /// `schema.table.column` and its strategy, in file order.
    pub columns: Vec<(String, Strategy)>,
    /// Content detectors switched on.
    pub detectors: Vec<Detector>,
    /// What to do with results derived from masked columns.
    pub on_derived: OnDerived,
}

#[derive(Debug, Clone)]
struct Matcher {
    identity: GlobList,
    target: GlobList,
    class_mask: u8,
    commands: Option<GlobList>,
    tables: Option<GlobList>,
    columns: Option<GlobList>,
    functions: Option<GlobList>,
}

impl Rule {
    /// Whether the rule applies to this identity on this target.
    pub fn covers(&self, identity: &str, target: &str) -> bool {
        self.matcher.identity.matches(identity) && self.matcher.target.matches(target)
    }

    /// Whether the rule matches `statement` for `subject`, with the
    /// semantics of its action (every/any; see `docs/policy.md`).
    pub fn matches(&self, subject: &Subject<'_>, statement: &StatementInfo) -> bool {
        let m = &self.matcher;
        if m.class_mask & class_bit(statement.class) == 0
            || !self.covers(subject.identity, subject.target)
        {
            return false;
        }
        if let Some(commands) = &m.commands {
            if !commands.matches(&statement.command) {
                return false;
            }
        }
        let mut calls = statement.functions.iter().chain(&statement.dangerous);
        if self.action == Action::Deny {
            // Each given list must hit at least one entry of the statement.
            m.tables
                .as_ref()
                .is_none_or(|g| statement.tables.iter().any(|t| g.matches(t)))
                && m.columns
                    .as_ref()
                    .is_none_or(|g| statement.columns.iter().any(|c| column_exposed(g, c)))
                && m.functions
                    .as_ref()
                    .is_none_or(|g| calls.any(|f| g.matches(f)))
        } else {
            // Everything the statement touches must be inside the lists;
            // functions and dangerous operations only when listed.
            m.tables
                .as_ref()
                .is_none_or(|g| statement.tables.iter().all(|t| g.matches(t)))
                && m.columns
                    .as_ref()
                    .is_none_or(|g| statement.columns.iter().all(|c| g.matches(c)))
                && match &m.functions {
                    Some(g) => calls.all(|f| g.matches(f)),
                    None => calls.next().is_none(),
                }
        }
    }
}

/// Whether a statement column hits one of a deny rule's column globs. A
/// `schema.table.*` reference exposes every column of the table, so it hits
/// any glob that could match some column of that table.
fn column_exposed(globs: &GlobList, column: &str) -> bool {
    if globs.matches(column) {
        return true;
    }
    match column.strip_suffix('*') {
        Some(table_dot) if table_dot.ends_with('.') => globs.matches_some_extension_of(table_dot),
        _ => false,
    }
}

/// Who is asking, and where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The authenticated identity.
    pub identity: &'a str,
    /// The upstream database the client chose.
    pub target: &'a str,
}

/// The decision for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementVerdict {
    /// What to do with the statement.
    pub action: Action,
    /// The rule that decided; `None` for the default deny and for empty
    /// statements.
    pub rule: Option<String>,
    /// For a deny: the rule's message, else the default message. For other
    /// actions: the rule's message, if it has one.
    pub message: Option<String>,
    /// For a statement that is not denied, when mask rules cover the
    /// identity on the target: what to mask. The gateway must apply it
    /// whatever the action.
    pub mask: Option<Masking>,
}

/// The decision for a whole query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The most restrictive action of any statement.
    pub action: Action,
    /// The rule of the deciding statement.
    pub rule: Option<String>,
    /// The message of the deciding statement.
    pub message: Option<String>,
    /// Index of the deciding statement: the first with the most restrictive
    /// action.
    pub statement: usize,
    /// One verdict per statement, in order.
    pub statements: Vec<StatementVerdict>,
    /// The masking of the statements that are not denied, merged (the plan
    /// is the same for all; results are redacted untraced if any statement
    /// needs it). `None` when no mask rule covers the identity on the target.
    pub mask: Option<Masking>,
}

impl Verdict {
    /// The verdict of a query from its statements' verdicts: the most
    /// restrictive one (Deny > RequireApproval > Mask > Allow), reported with
    /// the first statement that has it; a query without statements is
    /// denied with `default_message`.
    pub fn from_statements(statements: Vec<StatementVerdict>, default_message: &str) -> Verdict {
        let mut deciding: Option<usize> = None;
        for (i, v) in statements.iter().enumerate() {
            if deciding.is_none_or(|d| severity(v.action) > severity(statements[d].action)) {
                deciding = Some(i);
                if v.action == Action::Deny {
                    break;
                }
            }
        }
        let mask =
            statements
                .iter()
                .filter_map(|s| s.mask.as_ref())
                .fold(None::<Masking>, |merged, m| match merged {
                    None => Some(m.clone()),
                    Some(mut merged) => {
                        merged.redact_untraced |= m.redact_untraced;
                        Some(merged)
                    }
                });
        match deciding {
            Some(i) => Verdict {
                action: statements[i].action,
                rule: statements[i].rule.clone(),
                message: statements[i].message.clone(),
                statement: i,
                statements,
                mask,
            },
            None => Verdict {
                action: Action::Deny,
                rule: None,
                message: Some(default_message.to_owned()),
                statement: 0,
                statements,
                mask: None,
            },
        }
    }
}

/// A parsed, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    source: String,
    settings: Settings,
    rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::deny_all()
    }
}

impl Policy {
    /// Parses and validates a policy file. Never panics; errors carry the
    /// line and column to fix.
    pub fn parse(source: &str) -> Result<Policy, PolicyError> {
        parse::parse(source)
    }

    /// The policy before any is applied: no rules, so everything (except
    /// empty queries) is denied with the default message.
    pub fn deny_all() -> Policy {
        Policy {
            source: String::new(),
            settings: Settings {
                default_message: DEFAULT_MESSAGE.to_owned(),
                containment: None,
            },
            rules: Vec::new(),
        }
    }

    /// The text the policy was parsed from (empty for [`Policy::deny_all`]).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The file's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Judges every statement of a query; the verdict is the most
    /// restrictive one (Deny > RequireApproval > Mask > Allow), reported
    /// with the first statement that has it. A classification without
    /// statements (which the classifier never produces) is denied.
    pub fn decide(&self, subject: &Subject<'_>, classification: &Classification) -> Verdict {
        let plan = self.mask_plan(subject.identity, subject.target);
        let statements: Vec<StatementVerdict> = classification
            .statements
            .iter()
            .map(|s| self.decide_with_plan(subject, s, plan.as_ref()))
            .collect();
        Verdict::from_statements(statements, &self.settings.default_message)
    }

    /// [`Policy::decide`], with what each statement reads through views:
    /// `reached[i]` holds the base columns (`schema.table.column`, or
    /// `schema.table.*` for a whole row) the views named by statement `i`
    /// read, transitively. Deny rules are judged against those too, so
    /// `columns = ["public.customers.ssn"]` also denies a view selecting
    /// `ssn AS tax_id`, and `tables = ["secret.*"]` a view over
    /// `secret.orders`. Allow rules are not: naming a view that exposes
    /// only what it should is how operators grant narrower access.
    pub fn decide_with_views(
        &self,
        subject: &Subject<'_>,
        classification: &Classification,
        reached: &[Vec<String>],
    ) -> Verdict {
        let plan = self.mask_plan(subject.identity, subject.target);
        let statements: Vec<StatementVerdict> = classification
            .statements
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let verdict = self.decide_with_plan(subject, s, plan.as_ref());
                match reached.get(i) {
                    Some(columns) if verdict.action != Action::Deny && !columns.is_empty() => self
                        .deny_through_views(subject, s, columns)
                        .unwrap_or(verdict),
                    _ => verdict,
                }
            })
            .collect();
        Verdict::from_statements(statements, &self.settings.default_message)
    }

    /// The first deny rule that matches `statement` read as the base
    /// columns its views reach.
    fn deny_through_views(
        &self,
        subject: &Subject<'_>,
        statement: &StatementInfo,
        columns: &[String],
    ) -> Option<StatementVerdict> {
        let mut tables: Vec<String> = columns
            .iter()
            .filter_map(|c| c.rsplit_once('.').map(|(t, _)| t.to_owned()))
            .collect();
        tables.sort();
        tables.dedup();
        let base = StatementInfo {
            tables,
            columns: columns.to_vec(),
            ..statement.clone()
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.action == Action::Deny && r.matches(subject, &base))?;
        let mut verdict = self.verdict(rule);
        verdict.message = Some(format!(
            "{} (read through a view of {})",
            verdict.message.unwrap_or_default(),
            base.tables.join(", ")
        ));
        Some(verdict)
    }

    /// Whether any deny rule covering `identity` on `target` names tables or
    /// columns: only then does what views read matter to a decision.
    pub fn denies_names(&self, identity: &str, target: &str) -> bool {
        self.rules.iter().any(|r| {
            r.action == Action::Deny
                && r.covers(identity, target)
                && (r.tables.is_some() || r.columns.is_some())
        })
    }

    /// Judges one statement.
    pub fn decide_statement(
        &self,
        subject: &Subject<'_>,
        statement: &StatementInfo,
    ) -> StatementVerdict {
        let plan = self.mask_plan(subject.identity, subject.target);
        self.decide_with_plan(subject, statement, plan.as_ref())
    }

    /// The masks that bind `identity` on `target`: every `mask` rule whose
    /// identity and target globs cover them, merged. A column named by
    /// several rules keeps the first rule's strategy (file order);
    /// `on_derived` is `deny` if any rule says so; detectors add up.
    /// `None` when no mask rule covers them.
    pub fn mask_plan(&self, identity: &str, target: &str) -> Option<Arc<MaskPlan>> {
        let mut plan: Option<MaskPlan> = None;
        for rule in &self.rules {
            let Some(mask) = &rule.mask else { continue };
            if !rule.covers(identity, target) {
                continue;
            }
            let plan = plan.get_or_insert_with(|| MaskPlan {
                on_derived: OnDerived::Mask,
                ..MaskPlan::default()
            });
            for (column, strategy) in &mask.columns {
                if let Entry::Vacant(v) = plan.columns.entry(column.clone()) {
                    v.insert(ColumnMask {
                        strategy: *strategy,
                        rule: rule.name.clone(),
                    });
                }
            }
            for d in &mask.detectors {
                if !plan.detectors.contains(d) {
                    plan.detectors.push(*d);
                }
            }
            if mask.on_derived == OnDerived::Deny {
                plan.on_derived = OnDerived::Deny;
            }
            plan.rules.push(rule.name.clone());
        }
        plan.map(|mut p| {
            p.detectors.sort();
            Arc::new(p)
        })
    }

    fn decide_with_plan(
        &self,
        subject: &Subject<'_>,
        statement: &StatementInfo,
        plan: Option<&Arc<MaskPlan>>,
    ) -> StatementVerdict {
        let mut verdict = self.decide_unmasked(subject, statement);
        if verdict.action != Action::Deny && !is_empty_query(statement) {
            verdict.mask = plan.map(|plan| Masking {
                plan: Arc::clone(plan),
                redact_untraced: false,
            });
        }
        verdict
    }

    fn decide_unmasked(
        &self,
        subject: &Subject<'_>,
        statement: &StatementInfo,
    ) -> StatementVerdict {
        if is_empty_query(statement) {
            return StatementVerdict {
                action: Action::Allow,
                rule: None,
                message: None,
                mask: None,
            };
        }
        // Not a policy choice: with another client encoding or string
        // syntax, the database would run other SQL than the gateway judged.
        if statement
            .dangerous
            .iter()
            .any(|d| d == SQL_TEXT_SETTING_CHANGE)
        {
            return StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: Some(SQL_TEXT_SETTING_MESSAGE.to_owned()),
                mask: None,
            };
        }
        // Nor are the session limits the gateway sets for the operator.
        if statement
            .dangerous
            .iter()
            .any(|d| d == SESSION_LIMIT_CHANGE)
        {
            return StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: Some(SESSION_LIMIT_MESSAGE.to_owned()),
                mask: None,
            };
        }
        // Not a policy choice either: the rules would judge other SQL than
        // the database would run. The reason says what to change.
        if statement.dangerous.iter().any(|d| d == SQL_MISREAD) {
            return StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: statement.reason.clone(),
                mask: None,
            };
        }
        // First matching rule of each permissive action, in file order.
        let (mut approval, mut mask, mut allow) = (None, None, None);
        for rule in &self.rules {
            let slot = match rule.action {
                Action::Deny => None,
                Action::RequireApproval => Some(&mut approval),
                Action::Mask => Some(&mut mask),
                Action::Allow => Some(&mut allow),
            };
            if slot.as_ref().is_some_and(|s| s.is_some()) {
                continue; // an earlier rule already holds this action
            }
            if !rule.matches(subject, statement) {
                continue;
            }
            match slot {
                None => return self.verdict(rule),
                Some(s) => *s = Some(rule),
            }
        }
        match approval.or(mask).or(allow) {
            Some(rule) => self.verdict(rule),
            None => StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: Some(self.settings.default_message.clone()),
                mask: None,
            },
        }
    }

    fn verdict(&self, rule: &Rule) -> StatementVerdict {
        let message = match (&rule.message, rule.action) {
            (Some(m), _) => Some(m.clone()),
            (None, Action::Deny) => Some(self.settings.default_message.clone()),
            (None, _) => None,
        };
        StatementVerdict {
            action: rule.action,
            rule: Some(rule.name.clone()),
            message,
            mask: None,
        }
    }

    /// True when every allow, mask or require_approval rule covering this
    /// identity on this target is limited to classes `read` and
    /// `transaction` (also when no such rule exists: then nothing is
    /// allowed anyway). The gateway then opens the upstream session
    /// read-only, as defense in depth. A rule without `classes` counts as
    /// allowing everything.
    pub fn read_only(&self, identity: &str, target: &str) -> bool {
        self.rules
            .iter()
            .filter(|r| r.action != Action::Deny && r.covers(identity, target))
            .all(|r| r.matcher.class_mask & !READ_ONLY_CLASSES == 0)
    }
}

/// What a client that tries to change a session limit is told (see
/// [`crate::classify::SESSION_LIMIT_SETTINGS`]).
pub const SESSION_LIMIT_MESSAGE: &str = "Gatehouse sets statement_timeout and idle_in_transaction_session_timeout for every session (the target's settings in the gateway's configuration); clients cannot change them";

/// Told to a client whose statement would change how the database reads
/// SQL text (see [`crate::classify::SQL_TEXT_SETTINGS`]).
pub const SQL_TEXT_SETTING_MESSAGE: &str = "Gatehouse keeps client_encoding UTF8 and standard_conforming_strings on in every session: it judges SQL as the database reads it with them, and with other values the database would read other SQL; send UTF-8 text and standard strings instead";

/// The statement of an empty query string. Only the exact shape the
/// classifier produces for one counts; anything else is judged normally.
fn is_empty_query(s: &StatementInfo) -> bool {
    s.command == "EMPTY"
        && s.class == StatementClass::Read
        && s.tables.is_empty()
        && s.columns.is_empty()
        && s.functions.is_empty()
        && s.dangerous.is_empty()
}
