//! Inline masking: which columns a session may only see masked, how each
//! value is masked, and whether a statement can be masked at all.
//!
//! * [`MaskPlan`]: what the `mask` rules covering an identity on a target
//!   say (columns and strategies, content detectors, `on_derived`). Policy
//!   attaches it to every statement verdict that is not a denial.
//! * [`analysis`]: whether a statement only reads masked columns as plain
//!   columns of its output (masked by source at run time), or derives from
//!   them, filters on them or copies them elsewhere (denied, or masked as a
//!   whole, as `on_derived` says).
//! * [`strategy`]: masking one value so that its type still decodes.
//! * [`detect`]: recognising sensitive values by their content.
//!
//! All of it is pure: the gateway resolves columns to table OIDs and
//! attribute numbers through the catalog and rewrites the wire messages.

pub mod analysis;
pub mod detect;
pub mod strategy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use detect::Detector;
pub use strategy::{HashKey, Strategy};

/// What to do with a statement whose result derives from masked columns in
/// ways the gateway cannot trace back to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnDerived {
    /// Deny the statement (the default).
    #[default]
    Deny,
    /// Run it, and redact every result column that is not a plain column
    /// PostgreSQL traces to its source.
    Mask,
}

impl OnDerived {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            OnDerived::Deny => "deny",
            OnDerived::Mask => "mask",
        }
    }
}

/// One masked column of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMask {
    /// How its values are masked.
    pub strategy: Strategy,
    /// The rule that masks it (the first in file order that names it).
    pub rule: String,
}

/// What the mask rules covering one identity on one target say, merged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaskPlan {
    /// Masked columns by `schema.table.column`, as PostgreSQL names them
    /// (lower case unless quoted).
    pub columns: BTreeMap<String, ColumnMask>,
    /// Content detectors for values whose source column is unknown.
    pub detectors: Vec<Detector>,
    /// `deny` if any contributing rule says so.
    pub on_derived: OnDerived,
    /// The contributing rules, in file order.
    pub rules: Vec<String>,
}

impl MaskPlan {
    /// The tables (`schema.table`) that have masked columns.
    pub fn tables(&self) -> BTreeSet<&str> {
        self.columns
            .keys()
            .filter_map(|c| c.rsplit_once('.').map(|(t, _)| t))
            .collect()
    }

    /// Whether some column is masked with `hash`, which needs the gateway's
    /// hash key.
    pub fn needs_key(&self) -> bool {
        self.columns.values().any(|c| c.strategy == Strategy::Hash)
    }

    /// The masked columns a reference covers: the column itself, or every
    /// masked column of the table for `schema.table.*`.
    pub fn covered<'a>(
        &'a self,
        reference: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ColumnMask)> + 'a {
        let table_star = reference.strip_suffix('*').filter(|t| t.ends_with('.'));
        self.columns
            .iter()
            .filter(move |(name, _)| match table_star {
                Some(prefix) => name.starts_with(prefix) && !name[prefix.len()..].contains('.'),
                None => name.as_str() == reference,
            })
    }

    /// The rule reported when the plan as a whole decides (a view over
    /// masked columns, a statement that cannot be analysed).
    pub fn first_rule(&self) -> Option<&str> {
        self.rules.first().map(String::as_str)
    }
}

/// A statement verdict's masking: the plan, and whether the analysis found
/// that results may carry masked values untraced (then every result column
/// that is not a traced plain column is redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masking {
    /// The plan of the identity on the target.
    pub plan: Arc<MaskPlan>,
    /// Redact every result column PostgreSQL does not trace to a table
    /// column (table OID 0), and every column of a view over masked columns.
    pub redact_untraced: bool,
}
