//! How a statement uses each column it references: the input masking needs.
//!
//! The gateway can mask a value by its source column only when PostgreSQL
//! reports that source, which it does for plain column references in the
//! top-level select list and `RETURNING` list (RowDescription's table OID
//! and attribute number). Everywhere else a column's value can reach the
//! client in a form no longer tied to the column (`lower(email)`), steer
//! which rows come back (`WHERE ssn LIKE '1%'`), or be copied somewhere the
//! gateway never sees again (`INSERT ... SELECT ssn`). The walker of the
//! classifier therefore tags every column reference it resolves with the
//! context it appears in; see [`Uses`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use sqlparser::ast::{Query, SetExpr, Statement};

use super::walker::addr;

/// The contexts a column was referenced in, as a set of flags. The empty
/// set means: only as a plain column of the top-level output (select list
/// or RETURNING list, `*` included), which the gateway masks by source.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Uses(u16);

impl Uses {
    /// Only in the top-level output.
    pub const OUTPUT: Uses = Uses(0);
    /// As the target of a write (`INSERT INTO t (c)`, `UPDATE t SET c = ...`):
    /// its value is replaced, not read.
    pub const TARGET: Uses = Uses(1 << 0);
    /// As a plain `GROUP BY` column: groups reveal which values are equal.
    pub const GROUP: Uses = Uses(1 << 1);
    /// As one side of `a = b` between two plain columns in a condition:
    /// reveals only whether values are equal.
    pub const EQUALITY: Uses = Uses(1 << 2);
    /// Inside an expression, function call, subquery, CTE, set operation,
    /// VALUES list or whole-row reference: its value may reach the client
    /// untraced.
    pub const DERIVED: Uses = Uses(1 << 3);
    /// In a condition or ordering (WHERE, JOIN, HAVING, ORDER BY, LIMIT,
    /// window clauses, CASE conditions, FILTER, DISTINCT ON, ON CONFLICT):
    /// which rows come back, and in which order, depends on its value.
    pub const FILTER: Uses = Uses(1 << 4);
    /// Feeding stored data (INSERT ... SELECT, UPDATE ... SET, CREATE TABLE
    /// AS, SELECT INTO, DDL): its value leaves the result stream.
    pub const STORED: Uses = Uses(1 << 5);
    /// In a COPY, whose output carries no column origins.
    pub const COPY: Uses = Uses(1 << 6);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Uses) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether no flag is set (only the top-level output).
    pub fn is_output_only(self) -> bool {
        self.0 == 0
    }

    /// These flags without those of `other`.
    pub fn without(self, other: Uses) -> Uses {
        Uses(self.0 & !other.0)
    }
}

impl BitOr for Uses {
    type Output = Uses;
    fn bitor(self, rhs: Uses) -> Uses {
        Uses(self.0 | rhs.0)
    }
}

impl BitOrAssign for Uses {
    fn bitor_assign(&mut self, rhs: Uses) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Uses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Uses, &str); 7] = [
            (Uses::TARGET, "target"),
            (Uses::GROUP, "group"),
            (Uses::EQUALITY, "equality"),
            (Uses::DERIVED, "derived"),
            (Uses::FILTER, "filter"),
            (Uses::STORED, "stored"),
            (Uses::COPY, "copy"),
        ];
        if self.is_output_only() {
            return f.write_str("output");
        }
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(u, _)| self.contains(*u))
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join("|"))
    }
}

/// What sort of statement the uses belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// A query (SELECT, VALUES, TABLE, EXPLAIN).
    Query,
    /// INSERT, UPDATE, DELETE or MERGE.
    Modify,
    /// COPY.
    Copy,
    /// PREPARE or DECLARE CURSOR: the rows come back later, from EXECUTE or
    /// FETCH, so nothing can be decided about them then.
    Deferred,
    /// Anything else (DDL, session and administrative statements).
    Other,
}

/// How one statement uses the columns it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUses {
    /// What sort of statement it is.
    pub kind: StatementKind,
    /// Every column resolved (`schema.table.column`, or `schema.table.*`
    /// for a star or whole-row reference) with every context it appears in.
    pub columns: BTreeMap<String, Uses>,
    /// The two sides of each `a = b` between plain columns in a condition
    /// (each side: the columns the name may resolve to).
    pub equalities: Vec<(Vec<String>, Vec<String>)>,
    /// Every relation the statement touches (`schema.table`).
    pub tables: Vec<String>,
    /// Functions called that are not on the classifier's known-safe list
    /// (they may read any table, masked ones included).
    pub functions: Vec<String>,
    /// Why the classifier could not follow the statement, if it could not.
    pub unknown: Option<String>,
}

/// The walker's state for tracking uses.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// The flags of the context being walked.
    pub(super) context: Uses,
    /// Set while walking a plain column of the top-level output: a name that
    /// turns out to be a whole row (`SELECT c FROM customers c`) is not a
    /// column PostgreSQL can trace.
    pub(super) whole_row_derived: bool,
    /// Addresses of the top-level `Select`s and RETURNING lists.
    pub(super) top: HashSet<usize>,
    pub(super) columns: BTreeMap<String, Uses>,
    pub(super) equalities: Vec<(Vec<String>, Vec<String>)>,
}

impl Tracker {
    /// A tracker for `stmt`, with its top-level outputs found and the base
    /// context its kind implies.
    pub(super) fn for_statement(stmt: &Statement) -> (Tracker, StatementKind) {
        let mut top = HashSet::new();
        let kind = top_outputs(stmt, &mut top);
        let context = match kind {
            StatementKind::Copy => Uses::COPY,
            StatementKind::Other => Uses::STORED,
            StatementKind::Query | StatementKind::Modify | StatementKind::Deferred => Uses::OUTPUT,
        };
        let context = match stmt {
            Statement::Explain { .. } => Uses::DERIVED,
            _ => context,
        };
        (
            Tracker {
                context,
                top,
                ..Tracker::default()
            },
            kind,
        )
    }

    /// Notes one resolved column in the current context.
    pub(super) fn note(&mut self, column: &str) {
        let mut uses = self.context;
        if self.whole_row_derived && column.ends_with(".*") {
            uses |= Uses::DERIVED;
        }
        match self.columns.get_mut(column) {
            Some(existing) => *existing |= uses,
            None => {
                self.columns.insert(column.to_owned(), uses);
            }
        }
    }
}

/// Finds the outputs PostgreSQL traces to their source columns: the select
/// list of a query's top-level SELECT (through parentheses, not through set
/// operations) and RETURNING lists; returns the statement's kind.
fn top_outputs(stmt: &Statement, top: &mut HashSet<usize>) -> StatementKind {
    fn query(q: &Query, top: &mut HashSet<usize>) {
        let mut body = q.body.as_ref();
        loop {
            match body {
                SetExpr::Select(s) => {
                    top.insert(addr(s.as_ref()));
                    return;
                }
                SetExpr::Query(inner) => body = inner.body.as_ref(),
                _ => return,
            }
        }
    }
    match stmt {
        Statement::Query(q) => {
            query(q, top);
            StatementKind::Query
        }
        Statement::Insert(i) => {
            if let Some(r) = &i.returning {
                top.insert(addr(r));
            }
            StatementKind::Modify
        }
        Statement::Update(u) => {
            if let Some(r) = &u.returning {
                top.insert(addr(r));
            }
            StatementKind::Modify
        }
        Statement::Delete(d) => {
            if let Some(r) = &d.returning {
                top.insert(addr(r));
            }
            StatementKind::Modify
        }
        Statement::Merge(_) => StatementKind::Modify,
        Statement::Copy { .. } => StatementKind::Copy,
        Statement::Explain { .. } => StatementKind::Query,
        Statement::Prepare { statement, .. } => {
            top_outputs(statement, top);
            StatementKind::Deferred
        }
        Statement::Declare { stmts, .. } => {
            for d in stmts {
                if let Some(q) = &d.for_query {
                    query(q, top);
                }
            }
            StatementKind::Deferred
        }
        _ => StatementKind::Other,
    }
}
