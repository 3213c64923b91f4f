//! Whether a statement can be masked, from how it uses masked columns.
//!
//! The gateway masks a value by the column PostgreSQL says it comes from
//! (RowDescription's table OID and attribute number), which PostgreSQL
//! reports only for plain columns of the top-level select or RETURNING
//! list. So a statement that reads masked columns only that way is fine:
//! each value is masked by its source. Everything else is decided here,
//! failing closed:
//!
//! * **refused** (always denied): a masked column steering which rows come
//!   back or in which order (WHERE, JOIN, HAVING, ORDER BY, CASE, window
//!   and FILTER clauses, ON CONFLICT), copied into stored data (INSERT ...
//!   SELECT, UPDATE ... SET, CREATE TABLE AS, SELECT INTO, DDL), or read by
//!   COPY (whose output has no column origins). Equality between two
//!   columns both masked with `hash` is the exception: a pseudonym reveals
//!   equality anyway, so such joins stay possible.
//! * **derived**: a masked column inside an expression, function,
//!   subquery, CTE, set operation or whole-row reference, grouped by
//!   (unless hash-masked), or any use of a view built on masked columns.
//!   `on_derived = "deny"` denies; `"mask"` runs the statement and has the
//!   gateway redact every result column PostgreSQL does not trace. A
//!   derived use in PREPARE or DECLARE CURSOR is refused: its rows come
//!   back later, through EXECUTE or FETCH.
//! * a statement calling functions the classifier does not know to be
//!   harmless is derived too: a function may read masked columns and
//!   return them in a result PostgreSQL cannot trace.
//! * a statement the classifier cannot follow is refused.

use crate::classify::{ColumnUses, StatementKind, Uses};
use crate::policy::{Action, Verdict};

use super::{MaskPlan, OnDerived, Strategy};

/// What the analysis concludes for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Masked columns are read only as plain output columns (or not at
    /// all): the gateway masks them by source.
    Traced,
    /// Results may carry masked values the gateway cannot trace.
    Derived {
        /// The masked column (or view, or function) concerned.
        column: String,
        /// How it is used, in words.
        how: &'static str,
        /// The rule that masks it.
        rule: Option<String>,
        /// Why the statement is denied when `on_derived = "deny"`.
        message: String,
    },
    /// The statement cannot be masked at all.
    Refused {
        /// Why, in words a client can act on.
        why: String,
        /// The rule that masks the column concerned.
        rule: Option<String>,
    },
}

const DERIVED_HOW: &str =
    "in an expression, function, subquery, CTE, set operation, VALUES list or whole-row reference";
const GROUP_HOW: &str = "in GROUP BY (only columns masked with \"hash\" can be grouped)";
const VIEW_HOW: &str = "through a view built on masked columns";
const FUNCTION_HOW: &str =
    "through a function the gateway cannot see into (it could read masked columns)";

/// Analyses one statement against a plan. `tainted_view` says whether a
/// relation (`schema.table`) is a view built on masked columns (the
/// gateway knows from the catalog).
pub fn analyse(plan: &MaskPlan, uses: &ColumnUses, tainted_view: &dyn Fn(&str) -> bool) -> Finding {
    let touches_masked = uses
        .tables
        .iter()
        .any(|t| plan.tables().contains(t.as_str()) || tainted_view(t));
    if let Some(reason) = &uses.unknown {
        return Finding::Refused {
            why: format!(
                "the gateway cannot tell how this statement uses masked columns ({reason}), \
                 so it is denied"
            ),
            rule: plan.first_rule().map(str::to_owned),
        };
    }
    let mut derived: Option<(String, &'static str, Option<String>)> = None;
    for (reference, &flags) in &uses.columns {
        let hits: Vec<_> = plan.covered(reference).collect();
        let view = reference
            .rsplit_once('.')
            .map(|(table, _)| table)
            .filter(|t| tainted_view(t));
        if hits.is_empty() && view.is_none() {
            continue;
        }
        let (column, rule) = match (hits.first(), view) {
            (Some((name, mask)), _) => ((*name).clone(), Some(mask.rule.clone())),
            (None, Some(_)) => (
                format!("{reference} (of a view over masked columns)"),
                plan.first_rule().map(str::to_owned),
            ),
            (None, None) => continue,
        };
        if let Some(why) = refusal(&column, flags) {
            return Finding::Refused { why, rule };
        }
        if flags.contains(Uses::EQUALITY) && !equality_is_hashed(plan, uses, reference) {
            return Finding::Refused {
                why: format!(
                    "column {column} is masked for you: comparing it with a column that is not \
                     masked with \"hash\" would reveal its values; only hash-masked columns can \
                     be compared with each other"
                ),
                rule,
            };
        }
        let grouped_unhashed = flags.contains(Uses::GROUP)
            && (view.is_some()
                || reference.ends_with('*')
                || hits.iter().any(|(_, m)| m.strategy != Strategy::Hash));
        let how = if flags.contains(Uses::DERIVED) {
            Some(DERIVED_HOW)
        } else if grouped_unhashed {
            Some(GROUP_HOW)
        } else if view.is_some() {
            Some(VIEW_HOW)
        } else {
            None
        };
        if let (Some(how), None) = (how, &derived) {
            derived = Some((column, how, rule));
        }
    }
    if derived.is_none() {
        if let Some(f) = uses.functions.first() {
            derived = Some((
                format!("function {f}"),
                FUNCTION_HOW,
                plan.first_rule().map(str::to_owned),
            ));
        }
    }
    if derived.is_none() {
        if let Some(v) = uses.tables.iter().find(|t| tainted_view(t)) {
            derived = Some((
                format!("{v} (a view over masked columns)"),
                VIEW_HOW,
                plan.first_rule().map(str::to_owned),
            ));
        }
    }
    let Some((column, how, rule)) = derived else {
        return Finding::Traced;
    };
    let subject = if how == FUNCTION_HOW {
        format!("this statement calls {column}, which the gateway cannot see into and which could return masked values")
    } else {
        format!("column {column} is masked for you, and this statement uses it {how}")
    };
    match uses.kind {
        StatementKind::Deferred => Finding::Refused {
            why: format!(
                "{subject}; as a PREPARE or DECLARE CURSOR, its rows would come back later, \
                 through EXECUTE or FETCH, where they cannot be redacted"
            ),
            rule,
        },
        StatementKind::Copy | StatementKind::Other if touches_masked || how == FUNCTION_HOW => {
            Finding::Refused {
                why: format!("{subject}, where masking cannot follow"),
                rule,
            }
        }
        _ => Finding::Derived {
            message: if how == FUNCTION_HOW {
                format!(
                    "{subject}; masked identities may call only functions the gateway knows to be harmless"
                )
            } else {
                format!(
                    "{subject}, where its values cannot be masked; select the plain column \
                     instead, which comes back masked"
                )
            },
            column,
            how,
            rule,
        },
    }
}

/// Why a use of a masked column can never be masked, if it cannot.
fn refusal(column: &str, flags: Uses) -> Option<String> {
    if flags.contains(Uses::COPY) {
        return Some(format!(
            "column {column} is masked for you, and COPY cannot mask: its output does not say \
             which column a value comes from; use SELECT, which returns it masked"
        ));
    }
    if flags.contains(Uses::STORED) {
        return Some(format!(
            "column {column} is masked for you, and this statement would copy its values into \
             stored data (INSERT ... SELECT, UPDATE ... SET, CREATE TABLE AS, SELECT INTO, DDL), \
             where masking cannot follow them"
        ));
    }
    if flags.contains(Uses::FILTER) {
        return Some(format!(
            "column {column} is masked for you: a condition or ordering on it (WHERE, JOIN, \
             HAVING, ORDER BY, LIMIT, CASE, window or FILTER clause) would reveal its values \
             through which rows come back"
        ));
    }
    None
}

/// Whether every equality `reference` takes part in compares hash-masked
/// columns only.
fn equality_is_hashed(plan: &MaskPlan, uses: &ColumnUses, reference: &str) -> bool {
    let hashed = |c: &String| {
        !c.ends_with('*')
            && plan
                .columns
                .get(c)
                .is_some_and(|m| m.strategy == Strategy::Hash)
    };
    uses.equalities
        .iter()
        .filter(|(l, r)| l.iter().chain(r).any(|c| c == reference))
        .all(|(l, r)| l.iter().chain(r).all(hashed))
}

/// Applies the analysis to every statement of `verdict` that carries a
/// mask: refused and (with `on_derived = "deny"`) derived statements become
/// denials naming the column and the masking rule; derived statements with
/// `on_derived = "mask"` get their untraced results redacted. The query's
/// verdict is then recomputed. `uses` is [`crate::classify::column_uses`]
/// of the query string; if it failed, masked statements are denied.
pub fn judge(
    verdict: &mut Verdict,
    uses: &Result<Vec<ColumnUses>, String>,
    tainted_view: &dyn Fn(&str) -> bool,
) {
    let mut changed = false;
    for (i, statement) in verdict.statements.iter_mut().enumerate() {
        if statement.action == Action::Deny {
            continue;
        }
        let Some(masking) = &mut statement.mask else {
            continue;
        };
        let finding = match uses {
            Err(reason) => Finding::Refused {
                why: format!(
                    "the gateway cannot tell how this statement uses masked columns ({reason}), \
                     so it is denied"
                ),
                rule: masking.plan.first_rule().map(str::to_owned),
            },
            Ok(list) => match list.get(i) {
                Some(u) => analyse(&masking.plan, u, tainted_view),
                None => Finding::Refused {
                    why: "the gateway cannot match this statement to its analysis for masking, \
                          so it is denied"
                        .to_owned(),
                    rule: masking.plan.first_rule().map(str::to_owned),
                },
            },
        };
        let denial = match finding {
            Finding::Traced => None,
            Finding::Derived { .. } if masking.plan.on_derived == OnDerived::Mask => {
                masking.redact_untraced = true;
                changed = true;
                None
            }
            Finding::Derived { message, rule, .. } => Some((message, rule)),
            Finding::Refused { why, rule } => Some((why, rule)),
        };
        if let Some((message, rule)) = denial {
            statement.action = Action::Deny;
            statement.rule = rule;
            statement.message = Some(message);
            statement.mask = None;
            changed = true;
        }
    }
    if changed && !verdict.statements.is_empty() {
        let statements = std::mem::take(&mut verdict.statements);
        let fallback = verdict.message.clone().unwrap_or_default();
        *verdict = Verdict::from_statements(statements, &fallback);
    }
}
