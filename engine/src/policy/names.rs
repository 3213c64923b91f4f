//! Checks the tables and columns that deny and mask rules name against a
//! target's catalog, so a typo cannot silently leave data unprotected.
//!
//! A deny rule on `public.customers.sn` denies nothing, and a mask rule on
//! `public.customers.emial` masks nothing: both parse, and both fail open.
//! [`Policy::unknown_names`] lists every exact name such a rule uses that the
//! catalog does not have, and every glob that matches nothing in it, each
//! with the line of the policy file it is on and, where one is close, the
//! name that was probably meant. Allow and approval rules are not checked:
//! a name that matches nothing there allows nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::glob::Glob;
use super::parse::line_col;
use super::{Action, Policy, Rule};

/// The relations of one target and their columns, by `schema.table`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogNames {
    /// `schema.table` → its column names.
    pub relations: BTreeMap<String, BTreeSet<String>>,
    /// Names of functions PostgreSQL could call in column notation: those
    /// taking one argument (others defaulted) of a row type or a
    /// pseudo-type such as `record` or `anyelement` (see
    /// `CatalogNames::column_notation_calls`).
    pub row_functions: BTreeSet<String>,
}

impl CatalogNames {
    /// Adds one column of one relation (or a relation with no column yet,
    /// when `column` is `None`).
    pub fn add(&mut self, relation: &str, column: Option<&str>) {
        let columns = self.relations.entry(relation.to_owned()).or_default();
        if let Some(column) = column {
            columns.insert(column.to_owned());
        }
    }

    fn has_column(&self, name: &str) -> bool {
        match name.rsplit_once('.') {
            Some((relation, column)) => self
                .relations
                .get(relation)
                .is_some_and(|columns| columns.contains(column)),
            None => false,
        }
    }

    fn columns(&self) -> impl Iterator<Item = String> + '_ {
        self.relations
            .iter()
            .flat_map(|(r, cols)| cols.iter().map(move |c| format!("{r}.{c}")))
    }
}

/// A name in a deny or mask rule that the catalog does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// 1-based line and column of the name in the policy file.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The rule that names it.
    pub rule: String,
    /// The name or glob as written.
    pub name: String,
    /// What is wrong, and the likely intended name if one is close.
    pub problem: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: rule {:?}: {}: {}",
            self.line, self.column, self.rule, self.name, self.problem
        )
    }
}

/// Which kind of name a pattern is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Table,
    Column,
}

impl Policy {
    /// The names that deny and mask rules covering `target` use and that
    /// `catalog` (that target's) does not have (see the module docs).
    pub fn unknown_names(&self, target: &str, catalog: &CatalogNames) -> Vec<UnknownName> {
        let mut found = Vec::new();
        for rule in &self.rules {
            if !matches!(rule.action, Action::Deny | Action::Mask) {
                continue;
            }
            if !rule.matcher.target.matches(target) {
                continue;
            }
            let mut names: Vec<(&str, NameKind)> = Vec::new();
            for t in rule.tables.iter().flatten() {
                names.push((t, NameKind::Table));
            }
            for c in rule.columns.iter().flatten() {
                names.push((c, NameKind::Column));
            }
            if let Some(mask) = &rule.mask {
                for (c, _) in &mask.columns {
                    names.push((c, NameKind::Column));
                }
            }
            let mut seen = BTreeSet::new();
            for (name, kind) in names {
                if !seen.insert((name, kind == NameKind::Table)) {
                    continue;
                }
                if let Some(problem) = problem(name, kind, catalog) {
                    let (line, column) = self.locate(rule, name);
                    found.push(UnknownName {
                        line,
                        column,
                        rule: rule.name.clone(),
                        name: name.to_owned(),
                        problem,
                    });
                }
            }
        }
        found
    }

    /// Where `name` is written in `rule`: the first quoted occurrence after
    /// the rule's header (the header itself when it cannot be found).
    fn locate(&self, rule: &Rule, name: &str) -> (usize, usize) {
        let source = self.source();
        // The byte after the newline that ends line `rule.line - 1`.
        let start = rule.line.checked_sub(2).map_or(0, |n| {
            source.match_indices('\n').nth(n).map_or(0, |(i, _)| i + 1)
        });
        let quoted = format!("\"{name}\"");
        match source[start..].find(&quoted) {
            Some(at) => line_col(source, start + at + 1),
            None => (rule.line, 1),
        }
    }
}

/// What is wrong with `name` in `catalog`, if anything.
fn problem(name: &str, kind: NameKind, catalog: &CatalogNames) -> Option<String> {
    let glob = Glob::new(name).ok()?;
    let is_glob = name.contains(['*', '?']);
    let candidates: Vec<String> = match kind {
        NameKind::Table => catalog.relations.keys().cloned().collect(),
        NameKind::Column => catalog.columns().collect(),
    };
    if is_glob {
        if candidates.iter().any(|c| glob.matches(c)) {
            return None;
        }
        let what = match kind {
            NameKind::Table => "table",
            NameKind::Column => "column",
        };
        return Some(format!("the pattern matches no {what} on this target"));
    }
    let exists = match kind {
        NameKind::Table => catalog.relations.contains_key(name),
        NameKind::Column => catalog.has_column(name),
    };
    if exists {
        return None;
    }
    let problem = match kind {
        NameKind::Table => "no such table".to_owned(),
        NameKind::Column => match name.rsplit_once('.') {
            Some((relation, _)) if !catalog.relations.contains_key(relation) => {
                format!("no such table {relation}")
            }
            _ => "no such column".to_owned(),
        },
    };
    match closest(name, &candidates) {
        Some(best) => Some(format!("{problem}; did you mean {best}?")),
        None => Some(problem),
    }
}

/// The candidate nearest to `name` by edit distance, if it is close: at most
/// a third of the name's length away (so `emial` finds `email`).
fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c.as_str())
}

/// Levenshtein distance over characters, ASCII case folded (a wrong case is
/// a typo too: PostgreSQL folds unquoted names, policy does not).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> CatalogNames {
        let mut c = CatalogNames::default();
        for col in ["id", "name", "email", "ssn", "card_number"] {
            c.add("public.customers", Some(col));
        }
        for col in ["id", "customer", "total"] {
            c.add("public.orders", Some(col));
        }
        c.add("Sales.Orders", Some("Id"));
        c
    }

    fn problems(policy: &str) -> Vec<UnknownName> {
        Policy::parse(policy)
            .unwrap()
            .unknown_names("shop", &shop())
    }

    const MASK: &str = r#"
[[rule]]
name = "m"
identity = "agent-*"
tables = ["public.customers"]
action = "mask"

[rule.mask]
"public.customers.name" = "hash"
"public.customers.emial" = "email"
"#;

    #[test]
    fn a_misspelt_masked_column_is_found_with_its_line_and_the_likely_name() {
        let found = problems(MASK);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, 10);
        assert_eq!(found[0].column, 2);
        assert_eq!(found[0].name, "public.customers.emial");
        assert_eq!(
            found[0].problem,
            "no such column; did you mean public.customers.email?"
        );
    }

    #[test]
    fn ten_kinds_of_typo_in_deny_and_mask_rules_are_found() {
        let typos = [
            // a column name misspelt
            ("columns", "public.customers.sn"),
            // a table name misspelt
            ("columns", "public.custmers.ssn"),
            // a schema misspelt
            ("columns", "pubic.customers.ssn"),
            // case that PostgreSQL folded away
            ("columns", "public.Customers.ssn"),
            // a table that does not exist
            ("tables", "public.customer"),
            // a schema-less table
            ("tables", "customers.ssn"),
            // a glob matching nothing
            ("tables", "public.cust*s_old"),
            // a column glob matching nothing
            ("columns", "*.customers.social_*"),
            // a plural/singular slip in a column
            ("columns", "public.orders.totals"),
            // a quoted mixed-case table written folded
            ("tables", "sales.orders"),
        ];
        for (key, name) in typos {
            let policy = format!(
                "[[rule]]\nname = \"d\"\nidentity = \"*\"\n{key} = [\"{name}\"]\naction = \"deny\"\n"
            );
            let found = problems(&policy);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert_eq!(found[0].line, 4, "{name}");
            assert_eq!(found[0].name, name);
        }
    }

    #[test]
    fn names_that_exist_and_rules_that_allow_are_not_reported() {
        let policy = r#"
[[rule]]
name = "no-pii"
identity = "*"
columns = ["public.customers.ssn", "public.customers.card_number", "*.customers.ssn", "Sales.Orders.Id"]
action = "deny"

[[rule]]
name = "reads"
identity = "*"
tables = ["public.nonexistent"]
action = "allow"

[[rule]]
name = "other-target"
identity = "*"
target = "warehouse"
tables = ["public.facts"]
action = "deny"
"#;
        assert_eq!(problems(policy), []);
    }

    #[test]
    fn suggestions_are_only_close_names() {
        assert_eq!(
            closest("public.customers.emial", &["public.customers.email".into()]),
            Some("public.customers.email")
        );
        assert_eq!(
            closest("public.customers.zzz", &["public.orders.total".into()]),
            None
        );
    }
}
