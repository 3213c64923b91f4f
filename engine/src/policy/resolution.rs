//! Names a statement uses that the target's catalog does not have, next to
//! a table policy protects.
//!
//! The classifier reads names as PostgreSQL's lexer does, but what a name
//! *resolves* to is the catalog's answer. A name the catalog lacks is
//! either an error PostgreSQL will report, or something the gateway reads
//! differently from the server: `c.leak` is the function call `leak(c)`
//! when `customers` has no column `leak`; a misread identifier judged as a
//! column nobody protects would touch "nothing sensitive". Policy cannot
//! judge either, so a statement that touches a table a deny or mask rule
//! covers and names a table or column the catalog lacks is denied
//! ([`Policy::deny_unresolved`]), with the unresolved names in its message.
//!
//! What counts as known, so that legitimate statements are not refused:
//! the relations of the catalog (temporary ones under `pg_temp`, found for
//! unqualified names as PostgreSQL's `search_path = public, pg_temp`
//! finds them), system columns, and relations the catalog lacks that the
//! session's own DDL named (a transaction's DDL is invisible to the
//! gateway's catalog connection until it commits). Only reads, writes and
//! function calls are checked: DDL names what does not exist yet by
//! design.

use std::collections::BTreeSet;

use super::CatalogNames;
use super::{Action, Policy, StatementVerdict, Subject, Verdict};
use crate::{Classification, ColumnReference, StatementClass, StatementInfo};

/// Columns every table has without declaring them.
const SYSTEM_COLUMNS: &[&str] = &["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// How a relation name is known.
enum Known<'a> {
    /// In the catalog, with these columns.
    Columns(&'a BTreeSet<String>),
    /// Not in the catalog, but named by the session's own DDL: any column
    /// may exist.
    Own,
}

impl CatalogNames {
    /// The relation a classifier name stands for. Unqualified names are
    /// reported as `public.x` (and `pg_catalog.pg_x` for `pg_x`); the
    /// server also finds temporary tables (`pg_temp.x`) and system
    /// catalogs under them.
    /// A relation the catalog has is judged by the catalog's columns even
    /// when the session altered it: its own DDL names every table it reads
    /// (`CREATE TABLE t AS SELECT * FROM customers`), and must not make
    /// those "any column".
    fn lookup<'a>(&'a self, name: &str, own: &BTreeSet<String>) -> Option<Known<'a>> {
        if let Some(columns) = self.relations.get(name) {
            return Some(Known::Columns(columns));
        }
        let (schema, table) = name.split_once('.')?;
        let alternatives: Vec<String> = match schema {
            "public" if table.starts_with("pg_") => {
                vec![format!("pg_temp.{table}"), format!("pg_catalog.{table}")]
            }
            "public" => vec![format!("pg_temp.{table}")],
            "pg_catalog" => vec![format!("public.{table}"), format!("pg_temp.{table}")],
            _ => Vec::new(),
        };
        alternatives
            .iter()
            .find_map(|a| self.relations.get(a))
            .map(Known::Columns)
            .or_else(|| {
                (own.contains(name) || alternatives.iter().any(|a| own.contains(a)))
                    .then_some(Known::Own)
            })
    }

    /// What `statement` names that this catalog does not have: tables
    /// (`schema.table`), and column references none of whose candidate
    /// tables has the column (`schema.table.column`, the first candidate).
    /// A reference to a table the catalog lacks is reported as the table.
    /// `own` holds relations the session created or altered.
    pub fn unresolved(&self, statement: &StatementInfo, own: &BTreeSet<String>) -> Vec<String> {
        let mut found = Vec::new();
        for table in &statement.tables {
            if self.lookup(table, own).is_none()
                && !is_catalog_twin(table, |t| self.lookup(t, own).is_some())
            {
                found.push(table.clone());
            }
        }
        for reference in &statement.references {
            if self.missing(reference, own) {
                if let Some(first) = reference.candidates.first() {
                    found.push(first.clone());
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

impl CatalogNames {
    /// Whether no candidate table of `reference` has its column (a table
    /// the catalog lacks is the table check's to report).
    fn missing(&self, reference: &ColumnReference, own: &BTreeSet<String>) -> bool {
        reference.candidates.iter().all(|candidate| {
            let Some((table, column)) = candidate.rsplit_once('.') else {
                return false;
            };
            match self.lookup(table, own) {
                Some(Known::Columns(columns)) => {
                    !columns.contains(column) && !SYSTEM_COLUMNS.contains(&column)
                }
                Some(Known::Own) | None => false,
            }
        })
    }

    /// The qualified references of `statement` that name no column of
    /// their table but a function that takes a row, as `schema.table.f`:
    /// PostgreSQL reads `t.f` as the call `f(t)` (column notation), which
    /// passes the whole row to `f`. (Where no such function exists, it
    /// refuses the name as an unknown column.) See
    /// `classify::with_column_notation_calls`.
    pub fn column_notation_calls(
        &self,
        statement: &StatementInfo,
        own: &BTreeSet<String>,
    ) -> Vec<String> {
        statement
            .references
            .iter()
            .filter(|r| {
                r.qualified
                    && r.candidates.first().is_some_and(|c| {
                        c.rsplit_once('.')
                            .is_some_and(|(_, f)| self.row_functions.contains(f))
                    })
                    && self.missing(r, own)
            })
            .flat_map(|r| r.candidates.iter().cloned())
            .collect()
    }
}

/// Whether `table` is the second candidate the classifier reports for an
/// unqualified `pg_x` (`pg_catalog.pg_x` and `public.pg_x`) and the other
/// one exists.
fn is_catalog_twin(table: &str, exists: impl Fn(&str) -> bool) -> bool {
    if let Some(rest) = table.strip_prefix("public.pg_") {
        return exists(&format!("pg_catalog.pg_{rest}"));
    }
    if let Some(rest) = table.strip_prefix("pg_catalog.pg_") {
        return exists(&format!("public.pg_{rest}"));
    }
    false
}

impl Policy {
    /// Whether a deny or mask rule covering `identity` on `target` protects
    /// `table`: names it, or a column of it (by exact name or glob).
    pub fn protects(&self, identity: &str, target: &str, table: &str) -> bool {
        let prefix = format!("{table}.");
        self.rules.iter().any(|rule| {
            if !matches!(rule.action, Action::Deny | Action::Mask) || !rule.covers(identity, target)
            {
                return false;
            }
            let m = &rule.matcher;
            m.tables.as_ref().is_some_and(|g| g.matches(table))
                || m.columns
                    .as_ref()
                    .is_some_and(|g| g.matches_some_extension_of(&prefix))
                || rule
                    .mask
                    .as_ref()
                    .is_some_and(|mask| mask.columns.iter().any(|(c, _)| c.starts_with(&prefix)))
        })
    }

    /// `verdict` with each statement denied that touches a table this
    /// subject's deny or mask rules protect (named, or read through the
    /// views it names: `reached[i]`, base columns) and names a table or
    /// column `catalog` does not have (see the module documentation);
    /// `None` when no statement is.
    pub fn deny_unresolved(
        &self,
        subject: &Subject<'_>,
        classification: &Classification,
        reached: &[Vec<String>],
        catalog: &CatalogNames,
        own: &BTreeSet<String>,
        verdict: &Verdict,
    ) -> Option<Verdict> {
        let mut statements = verdict.statements.clone();
        let mut changed = false;
        for (i, statement) in classification.statements.iter().enumerate() {
            let Some(current) = statements.get(i) else {
                break;
            };
            if current.action == Action::Deny
                || !matches!(
                    statement.class,
                    StatementClass::Read | StatementClass::Write | StatementClass::Function
                )
            {
                continue;
            }
            let through = reached
                .get(i)
                .into_iter()
                .flatten()
                .filter_map(|c| c.rsplit_once('.').map(|(t, _)| t.to_owned()));
            let protected: BTreeSet<String> = statement
                .tables
                .iter()
                .cloned()
                .chain(through)
                .filter(|t| self.protects(subject.identity, subject.target, t))
                .collect();
            if protected.is_empty() {
                continue;
            }
            let unresolved = catalog.unresolved(statement, own);
            if unresolved.is_empty() {
                continue;
            }
            statements[i] = StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: Some(unresolved_message(&unresolved, &protected, subject.target)),
                mask: None,
            };
            changed = true;
        }
        changed.then(|| Verdict::from_statements(statements, &self.settings.default_message))
    }
}

/// The denial's message: what could not be resolved, next to what.
fn unresolved_message(unresolved: &[String], protected: &BTreeSet<String>, target: &str) -> String {
    format!(
        "Gatehouse cannot find {} in the catalog of target {target}, and the statement also \
         touches {}, which policy protects: a name the gateway cannot resolve cannot be judged \
         (check the spelling; a column added in a transaction that has not committed is known \
         once it commits)",
        unresolved.join(", "),
        protected.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn shop() -> CatalogNames {
        let mut c = CatalogNames::default();
        for col in ["id", "name", "email", "ssn", "card_number"] {
            c.add("public.customers", Some(col));
        }
        for col in ["id", "customer_id", "total"] {
            c.add("public.orders", Some(col));
        }
        c.add("pg_temp.scratch", Some("n"));
        c.add("pg_catalog.pg_class", Some("relname"));
        c
    }

    fn unresolved(sql: &str) -> Vec<String> {
        let c = classify(sql);
        c.statements
            .iter()
            .flat_map(|s| shop().unresolved(s, &BTreeSet::new()))
            .collect()
    }

    #[test]
    fn names_the_catalog_has_resolve() {
        for sql in [
            "SELECT name, email FROM customers",
            "SELECT ssn FROM orders, customers",
            "SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
            "SELECT ctid, xmin FROM customers",
            "SELECT n FROM scratch JOIN customers ON true",
            "SELECT relname FROM pg_class",
            "SELECT x FROM (SELECT name AS x FROM customers) s",
            "SELECT value FROM customers, jsonb_each('{}') j",
            "SELECT c FROM customers c",
            "SELECT DISTINCT ON (n) name AS n FROM customers ORDER BY n",
            "SELECT name AS n FROM customers ORDER BY n",
            "SELECT a FROM customers AS c(a)",
            "WITH w AS (SELECT id FROM orders) SELECT id FROM w",
            "UPDATE customers SET email = DEFAULT WHERE id = 1 RETURNING id",
            "SELECT current_user, name FROM customers",
            "SELECT (SELECT name FROM orders o WHERE o.customer_id = c.id) FROM customers c",
        ] {
            assert_eq!(unresolved(sql), Vec::<String>::new(), "{sql}");
        }
    }

    #[test]
    fn names_the_catalog_lacks_are_reported() {
        for (sql, name) in [
            ("SELECT emial FROM customers", "public.customers.emial"),
            ("SELECT c.leak FROM customers c", "public.customers.leak"),
            ("SELECT \"SSN\" FROM customers", "public.customers.SSN"),
            (
                "SELECT * FROM customers JOIN custmers USING (id)",
                "public.custmers",
            ),
            (
                "SELECT x FROM (SELECT * FROM customers) s",
                "public.customers.x",
            ),
            (
                "UPDATE customers SET name = nme WHERE id = 1",
                "public.customers.nme",
            ),
            (
                "SELECT public.customers.sn FROM customers",
                "public.customers.sn",
            ),
        ] {
            assert!(
                unresolved(sql).contains(&name.to_owned()),
                "{sql}: {:?}",
                unresolved(sql)
            );
        }
    }

    #[test]
    fn own_relations_are_known_with_any_column() {
        let c = classify("SELECT t.anything FROM tmp t JOIN customers USING (id)");
        assert_eq!(
            shop().unresolved(&c.statements[0], &BTreeSet::new()),
            vec!["public.tmp"]
        );
        let own: BTreeSet<String> = ["public.tmp".to_owned(), "public.customers".to_owned()].into();
        assert!(shop().unresolved(&c.statements[0], &own).is_empty());
        // A relation the catalog has keeps the catalog's columns.
        let leak = classify("SELECT c.leak FROM customers c");
        assert_eq!(
            shop().unresolved(&leak.statements[0], &own),
            vec!["public.customers.leak"]
        );
    }

    #[test]
    fn column_notation_is_a_call_only_where_a_row_function_exists() {
        let mut catalog = shop();
        catalog.row_functions.insert("leak".into());
        catalog.row_functions.insert("to_json".into());
        let calls = |sql: &str| {
            let c = classify(sql);
            catalog.column_notation_calls(&c.statements[0], &BTreeSet::new())
        };
        assert_eq!(
            calls("SELECT c.leak FROM customers c"),
            vec!["public.customers.leak"]
        );
        assert_eq!(
            calls("SELECT customers.to_json FROM customers"),
            vec!["public.customers.to_json"]
        );
        assert!(calls("SELECT c.totl FROM customers c").is_empty());
        assert!(calls("SELECT c.name FROM customers c").is_empty());
        assert!(calls("SELECT leak FROM customers").is_empty());
        let judged = crate::classify::with_column_notation_calls(
            &classify("SELECT c.leak FROM customers c").statements[0],
            &["public.customers.leak".to_owned()],
        );
        assert_eq!(judged.class, StatementClass::Function);
        assert!(judged.columns.contains(&"public.customers.*".to_owned()));
        assert!(judged.functions.contains(&"leak".to_owned()));
    }
}
