//! A scope-aware walk over one statement that finds the tables and columns it
//! touches.
//!
//! sqlparser's own `visit_relations` reports CTE names and table functions as
//! tables and misses several places tables hide, and column references mean
//! nothing without knowing which FROM item an alias stands for. This walker
//! keeps a stack of scopes (the FROM items of each query level) and a stack
//! of visible CTEs, resolves aliases, and passes columns through derived
//! tables and CTEs to the base tables they come from.
//!
//! It handles the parts of the tree that need scope explicitly and hands
//! everything else to [`Children`], a generic visitor that finds the nearest
//! expressions, queries, FROM items, statements and relations below a node
//! and walks each of them. So no part of the tree is skipped even where the
//! walker has no special rule for it.
//!
//! Resolution is conservative where PostgreSQL's answer depends on the
//! catalog: an unqualified column with several FROM items in scope is
//! reported for each of them (and for those of enclosing query levels, since
//! a subquery may refer to them), and a name that may be a whole-row
//! reference is reported as `schema.table.*`.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::rc::Rc;

use sqlparser::ast::{
    AccessExpr, Assignment, AssignmentTarget, BinaryOperator, CopySource, Delete, Distinct, Expr,
    FromTable, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GrantObjects,
    GroupByExpr, InTarget, Insert, JoinConstraint, JoinOperator, Merge, MergeAction,
    MergeInsertKind, MergeUpdateKind, ObjectName, ObjectType, OnConflictAction, OnInsert, OrderBy,
    OrderByKind, Privileges, Query, Select, SelectInto, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, Table, TableAlias, TableFactor,
    TableObject, TableWithJoins, Update, UpdateTableFromKind, Values, Visit, Visitor, WindowType,
};

use super::names;
use super::uses::{Tracker, Uses};
use super::Findings;
use crate::ColumnReference;

/// What a query (or a RETURNING list) yields, so that outer references to
/// a derived table or CTE can be traced back to base-table columns.
#[derive(Debug, Default, Clone)]
pub(super) struct Output {
    /// The named (or unnamed) output columns and the columns they come from.
    cols: Vec<OutCol>,
    /// Tables whose every column flows through (`SELECT *` or `t.*`).
    star: Vec<String>,
}

#[derive(Debug, Clone)]
struct OutCol {
    name: Option<String>,
    sources: Vec<String>,
}

/// What a FROM item stands for.
#[derive(Debug, Clone)]
enum Source {
    /// A base table (or view): its candidate `schema.table` names, and whether
    /// an alias column list renamed its columns (then a column can only be
    /// traced to `schema.table.*`).
    Table { names: Vec<String>, renamed: bool },
    /// A derived table or CTE.
    Derived(Rc<Output>),
    /// A table function, VALUES list or similar: no table columns behind it.
    Opaque,
}

/// One FROM item visible in a scope.
#[derive(Debug, Clone)]
struct Entry {
    /// The name columns are qualified with: the alias, or the table's name.
    name: Option<String>,
    /// `schema.table` names it can also be qualified with (unaliased tables).
    qualified: Vec<String>,
    source: Source,
}

/// The FROM items of one query level.
#[derive(Debug, Default)]
struct Scope {
    entries: Vec<Entry>,
}

/// The walk's state; see the module documentation.
pub(super) struct Walker {
    /// What was found (tables, columns, unknown reasons).
    pub(super) findings: Findings,
    /// Addresses of the relation names the walker accounted for (as tables,
    /// CTE references or table functions), so the exhaustive sweep that
    /// follows does not report them again as tables.
    pub(super) seen: HashSet<usize>,
    scopes: Vec<Scope>,
    ctes: Vec<Vec<(String, Rc<Output>)>>,
    captures: Vec<Vec<String>>,
    /// Column references left to record before the statement is declared
    /// too complex (a bound on the work a hostile query can cause: each
    /// unqualified name is resolved against every FROM item in scope).
    budget: usize,
    /// How each column is used, when masking asked (see the `uses` module).
    pub(super) uses: Option<Tracker>,
    /// Above zero while walking expressions that may also name output
    /// columns (DISTINCT ON): their names are not kept as references.
    lenient: usize,
}

/// See [`Walker::budget`].
const COLUMN_BUDGET: usize = 1_000_000;

/// The address of a node, used as its identity between the walk and the
/// sweep (the tree is not modified in between).
pub(super) fn addr<T>(node: &T) -> usize {
    node as *const T as usize
}

impl Walker {
    /// A walker that records into `findings`.
    pub(super) fn new(findings: Findings) -> Self {
        Walker {
            findings,
            seen: HashSet::new(),
            scopes: Vec::new(),
            ctes: Vec::new(),
            captures: Vec::new(),
            budget: COLUMN_BUDGET,
            uses: None,
            lenient: 0,
        }
    }

    /// A walker that also tracks how each column is used.
    pub(super) fn with_uses(findings: Findings, tracker: Tracker) -> Self {
        Walker {
            uses: Some(tracker),
            ..Walker::new(findings)
        }
    }

    /// Whether uses are tracked (extra bookkeeping for masking only, so the
    /// classification itself never changes).
    fn tracking(&self) -> bool {
        self.uses.is_some()
    }

    /// Runs `f` with `add` joined to the context of the uses it records.
    fn within<R>(&mut self, add: Uses, f: impl FnOnce(&mut Self) -> R) -> R {
        self.in_context(|c| c | add, f)
    }

    /// Runs `f` with the context `change` makes of the current one.
    fn in_context<R>(
        &mut self,
        change: impl FnOnce(Uses) -> Uses,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let saved = self.uses.as_mut().map(|u| {
            let saved = (u.context, u.whole_row_derived);
            u.context = change(u.context);
            u.whole_row_derived = false;
            saved
        });
        let result = f(self);
        if let (Some(u), Some((context, whole_row))) = (self.uses.as_mut(), saved) {
            u.context = context;
            u.whole_row_derived = whole_row;
        }
        result
    }

    /// Runs `f` for a plain column of the top-level output.
    fn output_column<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.uses.as_mut().map(|u| {
            let saved = u.whole_row_derived;
            u.whole_row_derived = true;
            saved
        });
        let result = f(self);
        if let (Some(u), Some(saved)) = (self.uses.as_mut(), saved) {
            u.whole_row_derived = saved;
        }
        result
    }

    /// Whether `node` is one of the outputs PostgreSQL traces.
    fn is_top<T>(&self, node: &T) -> bool {
        self.uses
            .as_ref()
            .is_some_and(|u| u.top.contains(&addr(node)))
    }

    /// Whether the column budget is spent (then the statement is Unknown).
    fn exhausted(&mut self) -> bool {
        if self.budget == 0 {
            self.findings
                .unknown("the statement is too complex for the gateway to classify".to_owned());
            return true;
        }
        false
    }

    // ----- recording -------------------------------------------------------

    fn record(&mut self, column: String) {
        if self.exhausted() {
            return;
        }
        self.budget -= 1;
        for capture in &mut self.captures {
            capture.push(column.clone());
        }
        if let Some(u) = &mut self.uses {
            u.note(&column);
        }
        self.findings.columns.insert(column);
    }

    fn record_all(&mut self, columns: Vec<String>) {
        for column in columns {
            self.record(column);
        }
    }

    /// Keeps a column reference's candidates (see
    /// [`crate::StatementInfo::references`]) unless one of them is a whole
    /// row, which every table has.
    fn reference(&mut self, candidates: &[String], qualified: bool) {
        if candidates.is_empty() || candidates.iter().any(|c| c.ends_with(".*")) {
            return;
        }
        self.findings.references.insert(ColumnReference {
            candidates: candidates.to_vec(),
            qualified,
        });
    }

    /// Whether an unqualified name can only be a column of a table: no FROM
    /// item in scope is called that (a whole-row reference), and none could
    /// supply it without the walker knowing its table (a table function,
    /// a derived column whose name it could not infer, a renamed table).
    fn closed_unqualified(&self, name: &str) -> bool {
        !self.scopes.is_empty()
            && self
                .scopes
                .iter()
                .flat_map(|s| s.entries.iter())
                .all(|e| e.name.as_deref() != Some(name) && only_table_columns(e, name))
    }

    /// [`Self::closed_unqualified`] for `t.c`, `s.t.c` and `t.c.field`: the
    /// qualifier names a FROM item that can only supply table columns.
    /// A qualifier that names no FROM item is left to PostgreSQL (which
    /// refuses it) and to the table check.
    fn closed_qualified(&self, parts: &[String]) -> bool {
        match parts {
            [q, c] => self
                .entry_named(q)
                .is_some_and(|e| only_table_columns(&e, c)),
            [a, b, c] => match self.entry_qualified(a, b) {
                Some(e) => only_table_columns(&e, c),
                None => self
                    .entry_named(a)
                    .is_some_and(|e| only_table_columns(&e, b)),
            },
            _ => false,
        }
    }

    /// Runs `f` and returns the columns it recorded.
    fn captured(&mut self, f: impl FnOnce(&mut Self)) -> Vec<String> {
        self.captures.push(Vec::new());
        f(self);
        let mut sources = self.captures.pop().unwrap_or_default();
        sources.sort();
        sources.dedup();
        sources
    }

    /// Records a relation name as a table; returns its candidate names.
    fn table(&mut self, name: &ObjectName) -> Vec<String> {
        self.seen.insert(addr(name));
        self.findings.relation(name)
    }

    /// Records a table given as plain name parts (SELECT INTO targets,
    /// `TABLE name`, COMMENT ON COLUMN).
    fn table_parts(&mut self, parts: &[String]) -> Vec<String> {
        let candidates = names::relation_candidates(parts);
        self.findings.tables.extend(candidates.iter().cloned());
        candidates
    }

    fn cte(&self, name: &str) -> Option<Rc<Output>> {
        self.ctes
            .iter()
            .rev()
            .flat_map(|frame| frame.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, out)| Rc::clone(out))
    }

    fn push_entry(&mut self, entry: Entry) {
        if self.scopes.is_empty() {
            self.scopes.push(Scope::default());
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.entries.push(entry);
        }
    }

    /// Runs `f` with the innermost scope's FROM items hidden (a non-LATERAL
    /// subquery in FROM cannot see its siblings).
    fn hidden<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self
            .scopes
            .last_mut()
            .map(|s| std::mem::take(&mut s.entries));
        let result = f(self);
        if let (Some(saved), Some(scope)) = (saved, self.scopes.last_mut()) {
            scope.entries = saved;
        }
        result
    }

    // ----- statements ------------------------------------------------------

    /// Walks a statement; returns its output (a query's columns, or a
    /// data-modifying statement's RETURNING list).
    pub(super) fn walk_statement(&mut self, stmt: &Statement) -> Rc<Output> {
        // The context a statement's own parts are used in (see `uses`).
        let context = match stmt {
            Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_)
            | Statement::Prepare { .. }
            | Statement::Declare { .. } => Uses::OUTPUT,
            Statement::Copy { .. } => Uses::COPY,
            Statement::Explain { .. } => Uses::DERIVED,
            _ => Uses::STORED,
        };
        self.within(context, |w| w.walk_statement_parts(stmt))
    }

    fn walk_statement_parts(&mut self, stmt: &Statement) -> Rc<Output> {
        match stmt {
            Statement::Query(q) => return self.walk_query(q),
            Statement::Insert(i) => return self.walk_insert(i),
            Statement::Update(u) => return self.walk_update(u),
            Statement::Delete(d) => return self.walk_delete(d),
            Statement::Merge(m) => self.walk_merge(m),
            Statement::Copy { source, .. } => match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let tables = self.table(table_name);
                    for t in tables {
                        if columns.is_empty() {
                            self.record(format!("{t}.*"));
                        }
                        for c in columns {
                            self.record(format!("{t}.{}", names::ident(c)));
                        }
                    }
                }
                CopySource::Query(q) => {
                    self.walk_query(q);
                }
            },
            Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
                self.walk_statement(statement);
            }
            Statement::Call(f) => self.walk_function(f),
            Statement::CreateIndex(ci) => {
                let tables = self.table(&ci.table_name);
                self.with_table_scope(&ci.table_name, tables, |w| w.statement_children(stmt));
            }
            Statement::CreatePolicy(p) => {
                let tables = self.table(&p.table_name);
                self.with_table_scope(&p.table_name, tables, |w| w.statement_children(stmt));
            }
            Statement::AlterPolicy(p) => {
                let tables = self.table(&p.table_name);
                self.with_table_scope(&p.table_name, tables, |w| w.statement_children(stmt));
            }
            Statement::AlterTable(at) => {
                let tables = self.table(&at.name);
                self.with_table_scope(&at.name, tables, |w| w.statement_children(stmt));
            }
            other => {
                self.statement_tables(other);
                self.statement_children(other);
            }
        }
        Rc::new(Output::default())
    }

    /// Runs `f` in a scope holding one table (index expressions, policy
    /// conditions and constraints refer to the table's columns).
    fn with_table_scope(
        &mut self,
        name: &ObjectName,
        tables: Vec<String>,
        f: impl FnOnce(&mut Self),
    ) {
        let entry = Entry {
            name: names::parts(name).and_then(|p| p.last().cloned()),
            qualified: tables.clone(),
            source: Source::Table {
                names: tables,
                renamed: false,
            },
        };
        self.scopes.push(Scope {
            entries: vec![entry],
        });
        f(self);
        self.scopes.pop();
    }

    /// Tables named by statements in places sqlparser does not mark as
    /// relations.
    fn statement_tables(&mut self, stmt: &Statement) {
        match stmt {
            Statement::Drop {
                object_type:
                    ObjectType::Table
                    | ObjectType::View
                    | ObjectType::MaterializedView
                    | ObjectType::ForeignTable
                    | ObjectType::Sequence,
                names: dropped,
                ..
            } => {
                for n in dropped {
                    self.table(n);
                }
            }
            Statement::Grant(g) => self.grant_objects(&g.privileges, g.objects.as_ref()),
            Statement::Revoke(r) => self.grant_objects(&r.privileges, r.objects.as_ref()),
            Statement::Comment {
                object_type,
                object_name,
                ..
            } => {
                use sqlparser::ast::CommentObject as C;
                match object_type {
                    C::Table | C::View | C::MaterializedView | C::ForeignTable | C::Sequence => {
                        self.table(object_name);
                    }
                    C::Column => {
                        if let Some(parts) = names::parts(object_name) {
                            if let Some((column, table)) = parts.split_last() {
                                for t in self.table_parts(table) {
                                    self.record(format!("{t}.{column}"));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            Statement::Vacuum(v) => {
                if let Some(n) = &v.table_name {
                    self.table(n);
                }
            }
            Statement::Analyze(a) => {
                if let Some(n) = &a.table_name {
                    for t in self.table(n) {
                        for c in &a.columns {
                            self.record(format!("{t}.{}", names::ident(c)));
                        }
                    }
                }
            }
            Statement::CreateSequence { name, .. } => {
                self.table(name);
            }
            Statement::CreateTrigger(ct) => {
                self.table(&ct.table_name);
                if let Some(n) = &ct.referenced_table_name {
                    self.table(n);
                }
            }
            Statement::DropTrigger(dt) => {
                if let Some(n) = &dt.table_name {
                    self.table(n);
                }
            }
            Statement::CreateTable(ct) => {
                use sqlparser::ast::CreateTableLikeKind as L;
                if let Some(L::Parenthesized(like) | L::Plain(like)) = &ct.like {
                    self.table(&like.name);
                }
                if let Some(n) = &ct.clone {
                    self.table(n);
                }
                for n in ct.inherits.iter().flatten() {
                    self.table(n);
                }
            }
            _ => {}
        }
    }

    fn grant_objects(&mut self, privileges: &Privileges, objects: Option<&GrantObjects>) {
        let Some(
            GrantObjects::Tables(objects)
            | GrantObjects::Views(objects)
            | GrantObjects::Sequences(objects),
        ) = objects
        else {
            return;
        };
        let mut columns: Vec<String> = Vec::new();
        if let Privileges::Actions(actions) = privileges {
            use sqlparser::ast::Action as A;
            for action in actions {
                if let A::Select { columns: Some(c) }
                | A::Insert { columns: Some(c) }
                | A::Update { columns: Some(c) }
                | A::References { columns: Some(c) } = action
                {
                    columns.extend(c.iter().map(names::ident));
                }
            }
        }
        for n in objects {
            for t in self.table(n) {
                for c in &columns {
                    self.record(format!("{t}.{c}"));
                }
            }
        }
    }

    fn walk_insert(&mut self, insert: &Insert) -> Rc<Output> {
        let Insert {
            insert_token: _,
            optimizer_hints: _,
            or: _,
            ignore: _,
            into: _,
            table,
            table_alias,
            columns,
            by_name: _,
            overwrite: _,
            source,
            assignments,
            partitioned,
            after_columns: _,
            overriding: _,
            has_table_keyword: _,
            on,
            returning,
            output,
            replace_into: _,
            priority: _,
            insert_alias: _,
            settings,
            format_clause,
            multi_table_insert_type: _,
            multi_table_into_clauses,
            multi_table_when_clauses,
            multi_table_else_clause,
        } = insert;
        let (tables, table_name) = match table {
            TableObject::TableName(n) => (
                self.table(n),
                names::parts(n).and_then(|p| p.last().cloned()),
            ),
            TableObject::TableFunction(f) => {
                self.findings
                    .unknown("INSERT INTO FUNCTION is not PostgreSQL syntax".to_owned());
                self.walk_function(f);
                (Vec::new(), None)
            }
            TableObject::TableQuery(q) => {
                self.findings
                    .unknown("INSERT INTO a subquery is not PostgreSQL syntax".to_owned());
                self.walk_query(q);
                (Vec::new(), None)
            }
        };
        let alias = table_alias.as_ref().map(|a| names::ident(&a.alias));
        let target = Entry {
            qualified: if alias.is_none() {
                tables.clone()
            } else {
                Vec::new()
            },
            name: alias.or(table_name),
            source: Source::Table {
                names: tables.clone(),
                renamed: false,
            },
        };
        self.within(Uses::TARGET, |w| {
            for c in columns {
                if let Some(first) = names::parts(c).and_then(|p| p.into_iter().next()) {
                    for t in &tables {
                        w.record(format!("{t}.{first}"));
                    }
                }
            }
        });
        if let Some(source) = source {
            // Without a column list the values go to every column in order.
            if columns.is_empty() {
                self.within(Uses::TARGET, |w| {
                    for t in &tables {
                        w.record(format!("{t}.*"));
                    }
                });
            }
            self.within(Uses::STORED, |w| w.walk_query(source));
        }
        self.scopes.push(Scope {
            entries: vec![target.clone()],
        });
        for a in assignments {
            self.walk_assignment(a, Some(&target));
        }
        match on {
            Some(OnInsert::OnConflict(oc)) => {
                use sqlparser::ast::ConflictTarget as C;
                if let Some(C::Columns { columns, predicate }) = &oc.conflict_target {
                    // Whether the insert conflicts depends on these values.
                    self.within(Uses::FILTER, |w| {
                        for c in columns {
                            let c = names::ident(c);
                            for t in &tables {
                                w.record(format!("{t}.{c}"));
                            }
                        }
                        if let Some(p) = predicate {
                            w.walk_expr(p);
                        }
                    });
                }
                if let OnConflictAction::DoUpdate(du) = &oc.action {
                    // EXCLUDED is the row proposed for insertion.
                    self.push_entry(Entry {
                        name: Some("excluded".to_owned()),
                        qualified: Vec::new(),
                        source: Source::Table {
                            names: tables.clone(),
                            renamed: false,
                        },
                    });
                    for a in &du.assignments {
                        self.walk_assignment(a, Some(&target));
                    }
                    if let Some(s) = &du.selection {
                        self.within(Uses::FILTER, |w| w.walk_expr(s));
                    }
                }
            }
            Some(OnInsert::DuplicateKeyUpdate(assignments)) => {
                for a in assignments {
                    self.walk_assignment(a, Some(&target));
                }
            }
            Some(other) => self.generic(other),
            None => {}
        }
        let out = match returning {
            Some(items) => {
                let top = self.is_top(items);
                self.walk_projection(items, top)
            }
            None => Output::default(),
        };
        self.generic(partitioned);
        self.generic(output);
        self.generic(settings);
        self.generic(format_clause);
        self.generic(multi_table_into_clauses);
        self.generic(multi_table_when_clauses);
        self.generic(multi_table_else_clause);
        self.scopes.pop();
        Rc::new(out)
    }

    fn walk_assignment(&mut self, assignment: &Assignment, target: Option<&Entry>) {
        let columns: Vec<&ObjectName> = match &assignment.target {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        for n in columns {
            // `SET col.field = ...` assigns a field of column `col`.
            if let Some(first) = names::parts(n).and_then(|p| p.into_iter().next()) {
                let mut out = Vec::new();
                match target {
                    Some(entry) => column_in_entry(entry, &first, &mut out),
                    None => out = self.resolve_unqualified(&first),
                }
                self.within(Uses::TARGET, |w| w.record_all(out));
            }
        }
        self.within(Uses::STORED, |w| w.walk_expr(&assignment.value));
    }

    fn walk_update(&mut self, update: &Update) -> Rc<Output> {
        let Update {
            update_token: _,
            optimizer_hints: _,
            table,
            on_cluster: _,
            assignments,
            from,
            selection,
            returning,
            output,
            or: _,
            order_by,
            limit,
            settings,
        } = update;
        self.scopes.push(Scope::default());
        self.walk_target(&table.relation);
        for join in &table.joins {
            self.walk_table_factor(&join.relation);
            self.walk_join_operator(&join.join_operator);
        }
        let target = self.scopes.last().and_then(|s| s.entries.first().cloned());
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            from
        {
            for twj in from {
                self.walk_table_with_joins(twj);
            }
        }
        for a in assignments {
            self.walk_assignment(a, target.as_ref());
        }
        if let Some(s) = selection {
            self.within(Uses::FILTER, |w| w.walk_expr(s));
        }
        let out = match returning {
            Some(items) => {
                let top = self.is_top(items);
                self.walk_projection(items, top)
            }
            None => Output::default(),
        };
        self.generic(output);
        self.within(Uses::FILTER, |w| {
            w.generic(order_by);
            w.generic(limit);
        });
        self.generic(settings);
        self.scopes.pop();
        Rc::new(out)
    }

    fn walk_delete(&mut self, delete: &Delete) -> Rc<Output> {
        let Delete {
            delete_token: _,
            optimizer_hints: _,
            tables,
            from,
            on_cluster: _,
            using,
            selection,
            returning,
            output,
            order_by,
            limit,
            settings,
        } = delete;
        self.scopes.push(Scope::default());
        for n in tables {
            self.table(n);
        }
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = from;
        for twj in from {
            self.walk_target(&twj.relation);
            for join in &twj.joins {
                self.walk_table_factor(&join.relation);
                self.walk_join_operator(&join.join_operator);
            }
        }
        for twj in using.iter().flatten() {
            self.walk_table_with_joins(twj);
        }
        if let Some(s) = selection {
            self.within(Uses::FILTER, |w| w.walk_expr(s));
        }
        let out = match returning {
            Some(items) => {
                let top = self.is_top(items);
                self.walk_projection(items, top)
            }
            None => Output::default(),
        };
        self.generic(output);
        self.within(Uses::FILTER, |w| {
            w.generic(order_by);
            w.generic(limit);
        });
        self.generic(settings);
        self.scopes.pop();
        Rc::new(out)
    }

    fn walk_merge(&mut self, merge: &Merge) {
        let Merge {
            merge_token: _,
            optimizer_hints: _,
            into: _,
            table,
            source,
            on,
            clauses,
            output,
        } = merge;
        self.scopes.push(Scope::default());
        self.walk_target(table);
        let target = self.scopes.last().and_then(|s| s.entries.first().cloned());
        self.walk_table_factor(source);
        self.within(Uses::FILTER, |w| w.walk_expr(on));
        for clause in clauses {
            if let Some(p) = &clause.predicate {
                self.within(Uses::FILTER, |w| w.walk_expr(p));
            }
            match &clause.action {
                MergeAction::Insert(ins) => {
                    if let Some(t) = &target {
                        let mut out = Vec::new();
                        if ins.columns.is_empty() {
                            whole_row(t, &mut out);
                        }
                        for c in &ins.columns {
                            if let Some(first) = names::parts(c).and_then(|p| p.into_iter().next())
                            {
                                column_in_entry(t, &first, &mut out);
                            }
                        }
                        self.within(Uses::TARGET, |w| w.record_all(out));
                    }
                    match &ins.kind {
                        MergeInsertKind::Values(v) => {
                            self.within(Uses::STORED, |w| w.walk_values(v));
                        }
                        MergeInsertKind::Row | MergeInsertKind::Wildcard => {}
                    }
                    if let Some(p) = &ins.insert_predicate {
                        self.within(Uses::FILTER, |w| w.walk_expr(p));
                    }
                }
                MergeAction::Update(up) => {
                    match &up.kind {
                        MergeUpdateKind::Set(assignments) => {
                            for a in assignments {
                                self.walk_assignment(a, target.as_ref());
                            }
                        }
                        MergeUpdateKind::Wildcard => {
                            if let Some(t) = &target {
                                let mut out = Vec::new();
                                whole_row(t, &mut out);
                                self.within(Uses::STORED, |w| w.record_all(out));
                            }
                        }
                    }
                    for p in up.update_predicate.iter().chain(&up.delete_predicate) {
                        self.within(Uses::FILTER, |w| w.walk_expr(p));
                    }
                }
                MergeAction::Delete { .. } | MergeAction::DoNothing { .. } => {}
            }
        }
        self.generic(output);
        self.scopes.pop();
    }

    // ----- queries ---------------------------------------------------------

    /// Walks a query in the current scope stack (its own FROM items get a new
    /// scope); returns what it yields.
    pub(super) fn walk_query(&mut self, query: &Query) -> Rc<Output> {
        let Query {
            with,
            body,
            order_by,
            limit_clause,
            fetch,
            locks: _,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = query;
        if let Some(with) = with {
            self.ctes.push(Vec::new());
            if with.recursive {
                // Every CTE of a WITH RECURSIVE sees all of them, itself
                // included; register placeholders first.
                for cte in &with.cte_tables {
                    let placeholder = rename(Output::default(), Some(&cte.alias));
                    let name = names::ident(&cte.alias.name);
                    if let Some(frame) = self.ctes.last_mut() {
                        frame.push((name, Rc::new(placeholder)));
                    }
                }
                for (i, cte) in with.cte_tables.iter().enumerate() {
                    let out = self.within(Uses::DERIVED, |w| w.walk_query(&cte.query));
                    let out = Rc::new(rename(Output::clone(&out), Some(&cte.alias)));
                    if let Some(slot) = self.ctes.last_mut().and_then(|f| f.get_mut(i)) {
                        slot.1 = out;
                    }
                }
            } else {
                // Without RECURSIVE a CTE sees only the ones before it.
                for cte in &with.cte_tables {
                    let out = self.within(Uses::DERIVED, |w| w.walk_query(&cte.query));
                    let out = Rc::new(rename(Output::clone(&out), Some(&cte.alias)));
                    let name = names::ident(&cte.alias.name);
                    if let Some(frame) = self.ctes.last_mut() {
                        frame.push((name, out));
                    }
                }
            }
        }
        if !pipe_operators.is_empty() {
            // Pipe syntax can call functions in places the sweep cannot see.
            self.findings
                .unknown("pipe syntax (|>) is not PostgreSQL syntax".to_owned());
        }
        let out = self.walk_set_expr(body, order_by.as_ref());
        self.within(Uses::FILTER, |w| {
            w.generic(limit_clause);
            w.generic(fetch);
        });
        self.generic(for_clause);
        self.generic(settings);
        self.generic(format_clause);
        self.generic(pipe_operators);
        if with.is_some() {
            self.ctes.pop();
        }
        out
    }

    fn walk_set_expr(&mut self, body: &SetExpr, order_by: Option<&OrderBy>) -> Rc<Output> {
        if let SetExpr::Select(select) = body {
            return self.walk_select(select, order_by);
        }
        let out = match body {
            SetExpr::Select(_) => Rc::new(Output::default()),
            SetExpr::Query(q) => self.walk_query(q),
            SetExpr::SetOperation { .. } => {
                // UNION chains are parsed in a loop and can be as deep as the
                // input is long: flatten them instead of recursing.
                let mut leaves = Vec::new();
                let mut pending = vec![body];
                while let Some(s) = pending.pop() {
                    match s {
                        SetExpr::SetOperation { left, right, .. } => {
                            pending.push(right);
                            pending.push(left);
                        }
                        leaf => leaves.push(leaf),
                    }
                }
                let mut out = Output::default();
                for (i, leaf) in leaves.into_iter().enumerate() {
                    let leaf_out = self.walk_set_expr(leaf, None);
                    if i == 0 {
                        out = Output::clone(&leaf_out);
                    } else {
                        merge_into(&mut out, &leaf_out);
                    }
                }
                Rc::new(out)
            }
            SetExpr::Values(v) => Rc::new(self.walk_values(v)),
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                self.walk_statement(s)
            }
            SetExpr::Table(t) => Rc::new(self.within(Uses::DERIVED, |w| w.walk_table_command(t))),
        };
        if let Some(order_by) = order_by {
            self.walk_order_by(order_by, &out);
        }
        out
    }

    /// `TABLE name`: all columns of a table (or CTE).
    fn walk_table_command(&mut self, table: &Table) -> Output {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(table.schema_name.as_ref().map(names::ident));
        parts.extend(table.table_name.as_ref().map(names::ident));
        if let [name] = parts.as_slice() {
            if let Some(out) = self.cte(name) {
                let mut cols = Vec::new();
                whole_row_of_output(&out, &mut cols);
                self.record_all(cols);
                return Output::clone(&out);
            }
        }
        if parts.is_empty() {
            return Output::default();
        }
        let tables = self.table_parts(&parts);
        for t in &tables {
            self.record(format!("{t}.*"));
        }
        Output {
            cols: Vec::new(),
            star: tables,
        }
    }

    fn walk_values(&mut self, values: &Values) -> Output {
        self.within(Uses::DERIVED, |w| w.walk_values_rows(values))
    }

    fn walk_values_rows(&mut self, values: &Values) -> Output {
        let mut cols: Vec<OutCol> = Vec::new();
        for row in &values.rows {
            for (i, e) in row.content.iter().enumerate() {
                let sources = self.captured(|w| w.walk_expr(e));
                if let Some(col) = cols.get_mut(i) {
                    col.sources.extend(sources);
                } else {
                    cols.push(OutCol {
                        name: Some(format!("column{}", i + 1)),
                        sources,
                    });
                }
            }
        }
        Output {
            cols,
            star: Vec::new(),
        }
    }

    fn walk_select(&mut self, select: &Select, order_by: Option<&OrderBy>) -> Rc<Output> {
        let Select {
            select_token: _,
            optimizer_hints: _,
            distinct,
            select_modifiers: _,
            top,
            top_before_distinct: _,
            projection,
            exclude,
            into,
            from,
            lateral_views,
            prewhere,
            selection,
            connect_by,
            group_by,
            cluster_by,
            distribute_by,
            sort_by,
            having,
            named_window,
            qualify,
            window_before_qualify: _,
            value_table_mode: _,
            flavor: _,
        } = select;
        // Only the top-level SELECT's own columns are traced by PostgreSQL;
        // SELECT INTO stores what it selects.
        let top_level = self.is_top(select);
        let mut context = if top_level {
            Uses::OUTPUT
        } else {
            Uses::DERIVED
        };
        if into.is_some() {
            context |= Uses::STORED;
        }
        self.within(context, |w| {
            w.scopes.push(Scope::default());
            for twj in from {
                w.walk_table_with_joins(twj);
            }
            w.generic(lateral_views);
            let out = w.walk_projection(projection, top_level);
            w.generic(exclude);
            w.within(Uses::FILTER, |w| {
                if let Some(Distinct::On(exprs)) = distinct {
                    // Like ORDER BY, DISTINCT ON may name output columns.
                    w.lenient += 1;
                    for e in exprs {
                        w.walk_expr(e);
                    }
                    w.lenient -= 1;
                }
                w.generic(top);
            });
            if let Some(into) = into {
                w.walk_into(into);
            }
            w.within(Uses::FILTER, |w| {
                for e in [prewhere, selection, having, qualify].into_iter().flatten() {
                    w.walk_expr(e);
                }
                w.generic(connect_by);
            });
            match group_by {
                GroupByExpr::Expressions(exprs, modifiers) => {
                    for e in exprs {
                        w.walk_group_by(e, &out);
                    }
                    w.within(Uses::DERIVED, |w| w.generic(modifiers));
                }
                GroupByExpr::All(modifiers) => {
                    if w.tracking() {
                        let mut cols = Vec::new();
                        whole_row_of_output(&out, &mut cols);
                        w.within(Uses::GROUP, |w| w.record_all(cols));
                    }
                    w.within(Uses::DERIVED, |w| w.generic(modifiers));
                }
            }
            w.within(Uses::FILTER, |w| {
                for e in cluster_by.iter().chain(distribute_by) {
                    w.walk_expr(e);
                }
                w.generic(sort_by);
                w.generic(named_window);
            });
            if let Some(order_by) = order_by {
                w.walk_order_by(order_by, &out);
            }
            w.scopes.pop();
            Rc::new(out)
        })
    }

    /// One GROUP BY item. A plain column groups by equality only (the
    /// `GROUP` use); anything else is an expression over its columns. An
    /// output name or position also refers to that output column.
    fn walk_group_by(&mut self, e: &Expr, out: &Output) {
        if self.tracking() {
            if let Some(sources) = output_reference(e, out) {
                self.within(Uses::GROUP, |w| w.record_all(sources));
            }
        }
        let context = if self.plain_column(e) {
            Uses::GROUP
        } else {
            Uses::DERIVED
        };
        self.within(context, |w| w.walk_expr(e));
    }

    /// ORDER BY: a bare name that is an output column refers to it (already
    /// accounted for); anything else is an expression over the FROM items.
    /// For masking, the order rows come back in reveals the values sorted
    /// on, output columns included.
    fn walk_order_by(&mut self, order_by: &OrderBy, out: &Output) {
        self.within(Uses::FILTER, |w| w.walk_order_by_items(order_by, out));
    }

    fn walk_order_by_items(&mut self, order_by: &OrderBy, out: &Output) {
        if self.tracking() {
            if let OrderByKind::Expressions(exprs) = &order_by.kind {
                for e in exprs {
                    if let Some(sources) = output_reference(&e.expr, out) {
                        self.record_all(sources);
                    }
                }
            }
        }
        if let OrderByKind::Expressions(exprs) = &order_by.kind {
            for e in exprs {
                let is_output = match &e.expr {
                    Expr::Identifier(id) => {
                        let name = names::ident(id);
                        out.cols.iter().any(|c| c.name.as_deref() == Some(&name))
                    }
                    _ => false,
                };
                if !is_output {
                    self.walk_expr(&e.expr);
                }
                self.generic(&e.with_fill);
            }
        }
        self.generic(&order_by.interpolate);
    }

    /// `SELECT ... INTO newt` creates a table named as written.
    fn walk_into(&mut self, into: &SelectInto) {
        for target in &into.targets {
            let parts: Vec<String> = match target {
                Expr::Identifier(id) => vec![names::ident(id)],
                Expr::CompoundIdentifier(ids) => ids.iter().map(names::ident).collect(),
                other => {
                    self.findings.unknown(
                        "SELECT INTO a target that is not a table name cannot be judged".to_owned(),
                    );
                    self.walk_expr(other);
                    continue;
                }
            };
            self.table_parts(&parts);
        }
    }

    /// A SELECT list or RETURNING list.
    /// `top` says PostgreSQL traces its plain columns to their source (the
    /// top-level select list or RETURNING list); every other projection
    /// derives its values.
    fn walk_projection(&mut self, items: &[SelectItem], top: bool) -> Output {
        if top {
            self.walk_projection_items(items)
        } else {
            self.within(Uses::DERIVED, |w| w.walk_projection_items(items))
        }
    }

    /// Walks one select-list expression: a plain column keeps the context
    /// (traced if the list is), anything else derives.
    fn walk_output_expr(&mut self, e: &Expr) -> Vec<String> {
        if self.plain_column(e) {
            self.output_column(|w| w.captured(|w| w.walk_expr(e)))
        } else {
            self.within(Uses::DERIVED, |w| w.captured(|w| w.walk_expr(e)))
        }
    }

    fn walk_projection_items(&mut self, items: &[SelectItem]) -> Output {
        let mut out = Output::default();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let sources = self.walk_output_expr(e);
                    out.cols.push(OutCol {
                        name: expr_name(e),
                        sources,
                    });
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let sources = self.walk_output_expr(expr);
                    out.cols.push(OutCol {
                        name: Some(names::ident(alias)),
                        sources,
                    });
                }
                SelectItem::ExprWithAliases { expr, aliases } => {
                    let sources = self.within(Uses::DERIVED, |w| w.captured(|w| w.walk_expr(expr)));
                    for alias in aliases {
                        out.cols.push(OutCol {
                            name: Some(names::ident(alias)),
                            sources: sources.clone(),
                        });
                    }
                }
                SelectItem::Wildcard(options) => {
                    let entries: Vec<Entry> = self
                        .scopes
                        .last()
                        .map(|s| s.entries.clone())
                        .unwrap_or_default();
                    for entry in &entries {
                        self.star_entry(entry, &mut out);
                    }
                    self.within(Uses::DERIVED, |w| w.generic(options));
                }
                SelectItem::QualifiedWildcard(kind, options) => {
                    match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            match self.entry_for_name(n) {
                                Some(entry) => self.star_entry(&entry, &mut out),
                                None => {
                                    for t in self.fallback_tables(n) {
                                        self.record(format!("{t}.*"));
                                        out.star.push(t);
                                    }
                                }
                            }
                        }
                        SelectItemQualifiedWildcardKind::Expr(e) => {
                            let sources =
                                self.within(Uses::DERIVED, |w| w.captured(|w| w.walk_expr(e)));
                            out.cols.push(OutCol {
                                name: None,
                                sources,
                            });
                        }
                    }
                    self.within(Uses::DERIVED, |w| w.generic(options));
                }
            }
        }
        out
    }

    /// `*` over one FROM item: its columns flow into `out`.
    fn star_entry(&mut self, entry: &Entry, out: &mut Output) {
        match &entry.source {
            Source::Table { names, .. } => {
                for t in names {
                    self.record(format!("{t}.*"));
                    out.star.push(t.clone());
                }
            }
            Source::Derived(inner) => {
                let mut cols = Vec::new();
                whole_row_of_output(inner, &mut cols);
                self.record_all(cols);
                out.cols.extend(inner.cols.iter().cloned());
                out.star.extend(inner.star.iter().cloned());
            }
            Source::Opaque => {}
        }
    }

    // ----- FROM ------------------------------------------------------------

    fn walk_table_with_joins(&mut self, twj: &TableWithJoins) {
        self.walk_table_factor(&twj.relation);
        for join in &twj.joins {
            self.walk_table_factor(&join.relation);
            self.walk_join_operator(&join.join_operator);
        }
    }

    /// A join's condition decides which rows come back (the `FILTER` use).
    fn walk_join_operator(&mut self, op: &JoinOperator) {
        self.within(Uses::FILTER, |w| w.walk_join_condition(op));
    }

    fn walk_join_condition(&mut self, op: &JoinOperator) {
        use JoinOperator as J;
        let constraint = match op {
            J::Join(c)
            | J::Inner(c)
            | J::Left(c)
            | J::LeftOuter(c)
            | J::Right(c)
            | J::RightOuter(c)
            | J::FullOuter(c)
            | J::CrossJoin(c)
            | J::Semi(c)
            | J::LeftSemi(c)
            | J::RightSemi(c)
            | J::Anti(c)
            | J::LeftAnti(c)
            | J::RightAnti(c)
            | J::StraightJoin(c) => c,
            J::AsOf {
                match_condition,
                constraint,
            } => {
                self.walk_expr(match_condition);
                constraint
            }
            J::CrossApply | J::OuterApply | J::ArrayJoin | J::LeftArrayJoin | J::InnerArrayJoin => {
                return
            }
        };
        match constraint {
            JoinConstraint::On(e) => self.walk_expr(e),
            JoinConstraint::Using(columns) | JoinConstraint::UsingAlias(columns, _) => {
                // USING (c) compares c of both sides: every FROM item so far.
                let entries: Vec<Entry> = self
                    .scopes
                    .last()
                    .map(|s| s.entries.clone())
                    .unwrap_or_default();
                let mut out = Vec::new();
                for c in columns {
                    if let Some(name) = names::parts(c).and_then(|p| p.last().cloned()) {
                        for entry in &entries {
                            column_in_entry(entry, &name, &mut out);
                        }
                    }
                }
                self.record_all(out);
            }
            JoinConstraint::Natural => {
                // Compares every pair of equally named columns, unnamed here.
                if self.tracking() {
                    let entries: Vec<Entry> = self
                        .scopes
                        .last()
                        .map(|s| s.entries.clone())
                        .unwrap_or_default();
                    let mut out = Vec::new();
                    for entry in &entries {
                        whole_row(entry, &mut out);
                    }
                    self.record_all(out);
                }
            }
            JoinConstraint::None => {}
        }
    }

    /// The target of UPDATE, DELETE or MERGE: always a table, never a CTE
    /// (PostgreSQL does not look targets up among the WITH names, so
    /// `WITH t AS (...) DELETE FROM t` deletes from the table `t`).
    fn walk_target(&mut self, factor: &TableFactor) {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let tables = self.table(name);
                let alias_name = alias.as_ref().map(|a| names::ident(&a.name));
                let last = names::parts(name).and_then(|p| p.last().cloned());
                self.push_entry(Entry {
                    qualified: if alias_name.is_none() {
                        tables.clone()
                    } else {
                        Vec::new()
                    },
                    name: alias_name.or(last),
                    source: Source::Table {
                        names: tables,
                        renamed: alias.as_ref().is_some_and(|a| !a.columns.is_empty()),
                    },
                });
                self.factor_children(factor);
            }
            other => self.walk_table_factor(other),
        }
    }

    /// A FROM item found outside any query (exotic statements): walked in a
    /// scope of its own.
    fn walk_table_factor_standalone(&mut self, factor: &TableFactor) {
        self.scopes.push(Scope::default());
        self.walk_table_factor(factor);
        self.scopes.pop();
    }

    /// A FROM item. Whatever is computed in it (subqueries, table function
    /// arguments) reaches the query as values no longer tied to a column.
    fn walk_table_factor(&mut self, factor: &TableFactor) {
        self.within(Uses::DERIVED, |w| w.walk_table_factor_parts(factor));
    }

    fn walk_table_factor_parts(&mut self, factor: &TableFactor) {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality: _,
                partitions: _,
                json_path: _,
                sample,
                index_directives: _,
                inheritance: _,
            } => {
                let parts = names::parts(name);
                let last = parts.as_ref().and_then(|p| p.last().cloned());
                let alias_name = alias.as_ref().map(|a| names::ident(&a.name));
                if let Some(args) = args {
                    // A table function (judged as a function by the sweep).
                    self.seen.insert(addr(name));
                    self.generic(args);
                    self.push_entry(Entry {
                        name: alias_name.or(last),
                        qualified: Vec::new(),
                        source: Source::Opaque,
                    });
                } else {
                    let cte = match parts.as_deref() {
                        Some([single]) => self.cte(single),
                        _ => None,
                    };
                    if let Some(out) = cte {
                        self.seen.insert(addr(name));
                        let out = match alias {
                            Some(a) if !a.columns.is_empty() => {
                                Rc::new(rename(Output::clone(&out), Some(a)))
                            }
                            _ => out,
                        };
                        self.push_entry(Entry {
                            name: alias_name.or(last),
                            qualified: Vec::new(),
                            source: Source::Derived(out),
                        });
                    } else {
                        let tables = self.table(name);
                        let renamed = alias.as_ref().is_some_and(|a| !a.columns.is_empty());
                        self.push_entry(Entry {
                            qualified: if alias_name.is_none() {
                                tables.clone()
                            } else {
                                Vec::new()
                            },
                            name: alias_name.or(last),
                            source: Source::Table {
                                names: tables,
                                renamed,
                            },
                        });
                    }
                }
                self.generic(with_hints);
                self.generic(version);
                self.generic(sample);
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample,
            } => {
                let out = if *lateral {
                    self.walk_query(subquery)
                } else {
                    self.hidden(|w| w.walk_query(subquery))
                };
                let out = match alias {
                    Some(a) if !a.columns.is_empty() => {
                        Rc::new(rename(Output::clone(&out), Some(a)))
                    }
                    _ => out,
                };
                self.push_entry(Entry {
                    name: alias.as_ref().map(|a| names::ident(&a.name)),
                    qualified: Vec::new(),
                    source: Source::Derived(out),
                });
                self.generic(sample);
            }
            TableFactor::TableFunction { expr, alias } => {
                self.walk_expr(expr);
                self.opaque_entry(alias.as_ref(), None);
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                for arg in args {
                    self.walk_function_arg(arg);
                }
                let last = names::parts(name).and_then(|p| p.last().cloned());
                self.opaque_entry(alias.as_ref(), last);
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                for e in array_exprs {
                    self.walk_expr(e);
                }
                self.opaque_entry(alias.as_ref(), Some("unnest".to_owned()));
            }
            TableFactor::JsonTable {
                json_expr, alias, ..
            } => {
                self.walk_expr(json_expr);
                self.opaque_entry(alias.as_ref(), None);
            }
            TableFactor::XmlTable {
                row_expression,
                passing,
                alias,
                ..
            } => {
                self.walk_expr(row_expression);
                self.generic(passing);
                self.opaque_entry(alias.as_ref(), None);
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.walk_table_with_joins(table_with_joins),
            other => {
                self.findings
                    .unknown("this kind of FROM item is not PostgreSQL syntax".to_owned());
                self.factor_children(other);
            }
        }
    }

    fn opaque_entry(&mut self, alias: Option<&TableAlias>, default: Option<String>) {
        self.push_entry(Entry {
            name: alias.map(|a| names::ident(&a.name)).or(default),
            qualified: Vec::new(),
            source: Source::Opaque,
        });
    }

    // ----- expressions -----------------------------------------------------

    /// Walks an expression in the current scope stack.
    ///
    /// Operators and postfix forms are parsed in a loop, not by recursion,
    /// so their chains (`a + b + ...`, long `AND` lists, `x::t::t`) can be as
    /// deep as the input is long. They are walked with an explicit work list
    /// instead of recursion (and not by the generic descent, which would
    /// revisit a subtree once per level); everything else nests only as
    /// deep as the parser's recursion limit allows.
    pub(super) fn walk_expr(&mut self, expr: &Expr) {
        let mut pending: Vec<&Expr> = vec![expr];
        while let Some(e) = pending.pop() {
            match e {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } if self.equality_of_columns(left, right) => {}
                Expr::BinaryOp { left, right, .. }
                | Expr::AnyOp { left, right, .. }
                | Expr::AllOp { left, right, .. }
                | Expr::IsDistinctFrom(left, right)
                | Expr::IsNotDistinctFrom(left, right)
                | Expr::AtTimeZone {
                    timestamp: left,
                    time_zone: right,
                }
                | Expr::RLike {
                    expr: left,
                    pattern: right,
                    ..
                } => {
                    pending.push(right);
                    pending.push(left);
                }
                Expr::IsNull(x)
                | Expr::IsNotNull(x)
                | Expr::IsTrue(x)
                | Expr::IsNotTrue(x)
                | Expr::IsFalse(x)
                | Expr::IsNotFalse(x)
                | Expr::IsUnknown(x)
                | Expr::IsNotUnknown(x)
                | Expr::Nested(x)
                | Expr::OuterJoin(x)
                | Expr::Prior(x)
                | Expr::UnaryOp { expr: x, .. }
                | Expr::Collate { expr: x, .. }
                | Expr::IsNormalized { expr: x, .. }
                | Expr::IsJson { expr: x, .. } => pending.push(x),
                Expr::Cast {
                    expr, data_type, ..
                } => {
                    self.generic(data_type);
                    pending.push(expr);
                }
                Expr::Like {
                    expr,
                    pattern,
                    escape_char,
                    ..
                }
                | Expr::ILike {
                    expr,
                    pattern,
                    escape_char,
                    ..
                }
                | Expr::SimilarTo {
                    expr,
                    pattern,
                    escape_char,
                    ..
                } => {
                    pending.extend(escape_char.as_deref());
                    pending.push(pattern);
                    pending.push(expr);
                }
                Expr::Between {
                    expr, low, high, ..
                } => {
                    pending.push(high);
                    pending.push(low);
                    pending.push(expr);
                }
                Expr::In { expr, target, .. } => {
                    match target {
                        InTarget::List(list) => pending.extend(list.iter()),
                        InTarget::Subquery(q) => {
                            self.walk_query(q);
                        }
                        InTarget::Unnest(x) => pending.push(x),
                        InTarget::Table { name, args } => match args {
                            Some(args) => {
                                // A table function (judged by the sweep).
                                self.seen.insert(addr(name));
                                for arg in args {
                                    self.walk_function_arg(arg);
                                }
                            }
                            None => {
                                self.table(name);
                            }
                        },
                    }
                    pending.push(expr);
                }
                Expr::JsonAccess { value, path } => {
                    self.generic(path);
                    pending.push(value);
                }
                Expr::Case {
                    operand,
                    conditions,
                    else_result,
                    ..
                } => {
                    pending.extend(else_result.as_deref());
                    for when in conditions {
                        pending.push(&when.result);
                    }
                    if self.tracking() {
                        // Which branch is taken depends on these values.
                        self.within(Uses::FILTER, |w| {
                            if let Some(operand) = operand {
                                w.walk_expr(operand);
                            }
                            for when in conditions {
                                w.walk_expr(&when.condition);
                            }
                        });
                    } else {
                        pending.extend(operand.as_deref());
                        for when in conditions {
                            pending.push(&when.condition);
                        }
                    }
                }
                Expr::Tuple(list) => pending.extend(list.iter()),
                Expr::Array(array) => pending.extend(array.elem.iter()),
                Expr::CompoundFieldAccess { root, access_chain } => {
                    for access in access_chain {
                        match access {
                            // A field name, not a column reference.
                            AccessExpr::Dot(Expr::Identifier(_)) => {}
                            AccessExpr::Dot(other) => pending.push(other),
                            AccessExpr::Subscript(s) => self.generic(s),
                        }
                    }
                    if !self.field_of_row(root, access_chain.first()) {
                        pending.push(root);
                    }
                }
                other => self.walk_expr_node(other),
            }
        }
    }

    /// The expressions [`Self::walk_expr`] does not take apart itself.
    fn walk_expr_node(&mut self, expr: &Expr) {
        match expr {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) if self.exhausted() => {}
            // Unquoted, these are SQL value keywords, never column names.
            Expr::Identifier(id) if id.quote_style.is_none() && is_value_keyword(&id.value) => {}
            Expr::Identifier(id) => {
                let name = names::ident(id);
                let cols = self.resolve_unqualified(&name);
                if self.lenient == 0 && self.closed_unqualified(&name) {
                    self.reference(&cols, false);
                }
                self.record_all(cols);
            }
            Expr::CompoundIdentifier(ids) => {
                let parts: Vec<String> = ids.iter().map(names::ident).collect();
                let cols = self.resolve_qualified(&parts);
                if self.lenient == 0 && self.closed_qualified(&parts) {
                    self.reference(&cols, true);
                }
                self.record_all(cols);
            }
            Expr::QualifiedWildcard(name, _) => self.qualified_row(name),
            Expr::Function(f) => self.walk_function(f),
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => {
                self.walk_query(q);
            }
            Expr::Value(_) | Expr::Wildcard(_) | Expr::TypedString(_) => {}
            other => self.expr_children(other),
        }
    }

    /// `(alias).field` or `(alias).*`: a column (or every column) of a FROM
    /// item. Returns whether it was handled.
    fn field_of_row(&mut self, root: &Expr, first: Option<&AccessExpr>) -> bool {
        let (Expr::Nested(inner), Some(AccessExpr::Dot(field))) = (root, first) else {
            return false;
        };
        let Expr::Identifier(id) = inner.as_ref() else {
            return false;
        };
        let Some(entry) = self.entry_named(&names::ident(id)) else {
            return false;
        };
        let mut out = Vec::new();
        match field {
            Expr::Identifier(f) => column_in_entry(&entry, &names::ident(f), &mut out),
            Expr::Wildcard(_) => whole_row(&entry, &mut out),
            _ => return false,
        }
        self.record_all(out);
        true
    }

    fn walk_function(&mut self, function: &Function) {
        let Function {
            name: _,
            uses_odbc_syntax: _,
            parameters,
            args,
            within_group,
            filter,
            null_treatment: _,
            over,
        } = function;
        self.walk_function_arguments(parameters);
        self.walk_function_arguments(args);
        // Orderings, filters and windows decide which values an aggregate
        // or window function sees, and in which order.
        self.within(Uses::FILTER, |w| {
            w.generic(within_group);
            if let Some(filter) = filter {
                w.walk_expr(filter);
            }
            if let Some(WindowType::WindowSpec(spec)) = over {
                w.generic(spec);
            }
        });
    }

    fn walk_function_arguments(&mut self, arguments: &FunctionArguments) {
        match arguments {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(q) => {
                self.walk_query(q);
            }
            FunctionArguments::List(list) => {
                for arg in &list.args {
                    self.walk_function_arg(arg);
                }
                self.generic(&list.clauses);
            }
        }
    }

    fn walk_function_arg(&mut self, arg: &FunctionArg) {
        let (FunctionArg::Named { arg, .. }
        | FunctionArg::ExprNamed { arg, .. }
        | FunctionArg::Unnamed(arg)) = arg;
        match arg {
            FunctionArgExpr::Expr(e) => self.walk_expr(e),
            FunctionArgExpr::QualifiedWildcard(n) => self.qualified_row(n),
            FunctionArgExpr::Wildcard => {}
            FunctionArgExpr::WildcardWithOptions(options) => self.generic(options),
        }
    }

    /// `t.*` as an expression (`row_to_json(t.*)`): the whole row of `t`.
    fn qualified_row(&mut self, name: &ObjectName) {
        let mut out = Vec::new();
        match self.entry_for_name(name) {
            Some(entry) => whole_row(&entry, &mut out),
            None => {
                for t in self.fallback_tables(name) {
                    out.push(format!("{t}.*"));
                }
            }
        }
        self.record_all(out);
    }

    /// `a = b` between two plain columns inside a condition, when tracking
    /// uses: walks both sides as an equality (which reveals only whether the
    /// values are equal) and returns true. Otherwise returns false and the
    /// caller walks the comparison as usual.
    fn equality_of_columns(&mut self, left: &Expr, right: &Expr) -> bool {
        let in_condition = self
            .uses
            .as_ref()
            .is_some_and(|u| u.context.contains(Uses::FILTER));
        if !in_condition || !self.plain_column(left) || !self.plain_column(right) {
            return false;
        }
        let equality = |c: Uses| c.without(Uses::FILTER) | Uses::EQUALITY;
        let l = self.in_context(equality, |w| w.captured(|w| w.walk_expr(left)));
        let r = self.in_context(equality, |w| w.captured(|w| w.walk_expr(right)));
        if let Some(u) = &mut self.uses {
            u.equalities.push((l, r));
        }
        true
    }

    /// Whether `e` is a plain column reference, which PostgreSQL can trace to
    /// its source: `c`, `t.c`, `s.t.c` (not a field of a composite column,
    /// such as `t.c.f`).
    fn plain_column(&self, e: &Expr) -> bool {
        match e {
            Expr::Nested(inner) => self.plain_column(inner),
            Expr::Identifier(_) => true,
            Expr::CompoundIdentifier(ids) => {
                let parts: Vec<String> = ids.iter().map(names::ident).collect();
                match parts.as_slice() {
                    [_, _] => true,
                    [s, t, _] | [_, s, t, _] => self.entry_qualified(s, t).is_some(),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    // ----- name resolution -------------------------------------------------

    /// The innermost FROM item called `name`.
    fn entry_named(&self, name: &str) -> Option<Entry> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.entries.iter())
            .find(|e| e.name.as_deref() == Some(name))
            .cloned()
    }

    /// The innermost unaliased table FROM item called `schema.table`.
    fn entry_qualified(&self, schema: &str, table: &str) -> Option<Entry> {
        let full = format!("{schema}.{table}");
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.entries.iter())
            .find(|e| e.qualified.iter().any(|q| q == &full))
            .cloned()
    }

    /// The FROM item a qualifier such as `t` or `s.t` names.
    fn entry_for_name(&self, name: &ObjectName) -> Option<Entry> {
        match names::parts(name)?.as_slice() {
            [n] => self.entry_named(n),
            [s, t] => self.entry_qualified(s, t),
            [_, s, t] => self.entry_qualified(s, t),
            _ => None,
        }
    }

    /// Tables for a qualifier that matches no FROM item: taken as a table
    /// name (PostgreSQL would reject the statement, but the report should
    /// still name what was asked for).
    fn fallback_tables(&self, name: &ObjectName) -> Vec<String> {
        names::parts(name)
            .map(|p| names::relation_candidates(&p))
            .unwrap_or_default()
    }

    /// An unqualified name: a column of any FROM item in scope (at any
    /// level, since a subquery may refer to an outer one), or the whole row
    /// of the FROM item it names.
    fn resolve_unqualified(&self, name: &str) -> Vec<String> {
        let row = self.scopes.iter().enumerate().rev().find_map(|(si, s)| {
            s.entries
                .iter()
                .position(|e| e.name.as_deref() == Some(name))
                .map(|ei| (si, ei))
        });
        let mut out = Vec::new();
        for (si, scope) in self.scopes.iter().enumerate() {
            for (ei, entry) in scope.entries.iter().enumerate() {
                if row == Some((si, ei)) {
                    whole_row(entry, &mut out);
                } else {
                    column_in_entry(entry, name, &mut out);
                }
            }
        }
        out
    }

    /// A qualified name: `t.c`, `s.t.c`, `db.s.t.c` or `t.c.field`.
    fn resolve_qualified(&self, parts: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let fallback = |table: &[String], column: &str, out: &mut Vec<String>| {
            for t in names::relation_candidates(table) {
                out.push(format!("{t}.{column}"));
            }
        };
        match parts {
            [] | [_] => {}
            [q, c] => match self.entry_named(q) {
                Some(e) => column_in_entry(&e, c, &mut out),
                None => fallback(&parts[..1], c, &mut out),
            },
            [a, b, c] => {
                if let Some(e) = self.entry_qualified(a, b) {
                    column_in_entry(&e, c, &mut out);
                } else if let Some(e) = self.entry_named(a) {
                    column_in_entry(&e, b, &mut out);
                } else {
                    fallback(&parts[..2], c, &mut out);
                }
            }
            [first, second, .., b, c] => {
                let a = &parts[parts.len() - 3];
                if let Some(e) = self.entry_qualified(a, b) {
                    column_in_entry(&e, c, &mut out);
                } else if let Some(e) = self.entry_qualified(first, second) {
                    column_in_entry(&e, &parts[2], &mut out);
                } else if let Some(e) = self.entry_named(first) {
                    column_in_entry(&e, second, &mut out);
                } else {
                    fallback(&parts[..parts.len() - 1], c, &mut out);
                }
            }
        }
        out
    }

    // ----- generic descent -------------------------------------------------

    /// Walks the nearest expressions, queries, FROM items, statements and
    /// relations below a node that has no visitor hook of its own (options,
    /// lists, clauses).
    fn generic<T: Visit>(&mut self, node: &T) {
        let mut children = Children {
            walker: self,
            depth: 0,
            target: 1,
        };
        let _ = node.visit(&mut children);
    }

    /// Like [`Self::generic`] for an expression (which has a hook itself).
    fn expr_children(&mut self, expr: &Expr) {
        let mut children = Children {
            walker: self,
            depth: 0,
            target: 2,
        };
        let _ = expr.visit(&mut children);
    }

    /// Like [`Self::generic`] for a statement (which has a hook itself).
    fn statement_children(&mut self, stmt: &Statement) {
        let mut children = Children {
            walker: self,
            depth: 0,
            target: 2,
        };
        let _ = stmt.visit(&mut children);
    }

    /// Like [`Self::generic`] for a FROM item (which has a hook itself).
    fn factor_children(&mut self, factor: &TableFactor) {
        let mut children = Children {
            walker: self,
            depth: 0,
            target: 2,
        };
        let _ = factor.visit(&mut children);
    }
}

/// A visitor that hands the nearest hooked nodes below its root to the
/// walker and ignores everything deeper (the walker walks those itself).
struct Children<'w> {
    walker: &'w mut Walker,
    depth: usize,
    /// The depth of the nodes to hand over: 1 below an unhooked root, 2
    /// below a hooked one (whose own hook is depth 1).
    target: usize,
}

impl Visitor for Children<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == self.target {
            self.walker.walk_query(query);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == self.target {
            self.walker.walk_table_factor_standalone(factor);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == self.target {
            self.walker.walk_expr(expr);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == self.target {
            self.walker.walk_statement(stmt);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth == self.target {
            self.walker.table(relation);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_relation(&mut self, _: &ObjectName) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

// ----- helpers on FROM items and outputs ----------------------------------

/// Column `name` of one FROM item.
fn column_in_entry(entry: &Entry, name: &str, out: &mut Vec<String>) {
    match &entry.source {
        Source::Table { names, renamed } => {
            for t in names {
                if *renamed {
                    out.push(format!("{t}.*"));
                } else {
                    out.push(format!("{t}.{name}"));
                }
            }
        }
        Source::Derived(inner) => {
            let mut found = false;
            for col in &inner.cols {
                if col.name.as_deref() == Some(name) {
                    found = true;
                    out.extend(col.sources.iter().cloned());
                }
            }
            if !found {
                // Maybe a column whose name we could not infer, or one that
                // came through a star.
                for col in inner.cols.iter().filter(|c| c.name.is_none()) {
                    out.extend(col.sources.iter().cloned());
                }
                for t in &inner.star {
                    out.push(format!("{t}.{name}"));
                }
            }
        }
        Source::Opaque => {}
    }
}

/// Whether `name` from `entry` can only be a column of a table the walker
/// knows (see [`Walker::closed_unqualified`]).
fn only_table_columns(entry: &Entry, name: &str) -> bool {
    match &entry.source {
        Source::Table { renamed, .. } => !renamed,
        Source::Derived(inner) => inner
            .cols
            .iter()
            .all(|c| c.name.as_deref().is_some_and(|n| n != name)),
        Source::Opaque => false,
    }
}

/// Every column of one FROM item.
fn whole_row(entry: &Entry, out: &mut Vec<String>) {
    match &entry.source {
        Source::Table { names, .. } => {
            for t in names {
                out.push(format!("{t}.*"));
            }
        }
        Source::Derived(inner) => whole_row_of_output(inner, out),
        Source::Opaque => {}
    }
}

fn whole_row_of_output(output: &Output, out: &mut Vec<String>) {
    for col in &output.cols {
        out.extend(col.sources.iter().cloned());
    }
    for t in &output.star {
        out.push(format!("{t}.*"));
    }
}

/// The sources of the output column an ORDER BY or GROUP BY item names by
/// output name or position, if it names one. A position over a `*` may be
/// any column of it.
fn output_reference(e: &Expr, out: &Output) -> Option<Vec<String>> {
    match e {
        Expr::Identifier(id) => {
            let name = names::ident(id);
            let sources: Vec<String> = out
                .cols
                .iter()
                .filter(|c| c.name.as_deref() == Some(name.as_str()))
                .flat_map(|c| c.sources.iter().cloned())
                .collect();
            (!sources.is_empty()).then_some(sources)
        }
        Expr::Value(v) => {
            let sqlparser::ast::Value::Number(n, _) = &v.value else {
                return None;
            };
            let position: usize = n.parse().ok()?;
            if out.star.is_empty() {
                out.cols
                    .get(position.checked_sub(1)?)
                    .map(|c| c.sources.clone())
            } else {
                let mut all = Vec::new();
                whole_row_of_output(out, &mut all);
                Some(all)
            }
        }
        _ => None,
    }
}

/// Applies an alias column list (`AS x(a, b)`) to an output.
fn rename(mut output: Output, alias: Option<&TableAlias>) -> Output {
    let Some(alias) = alias else {
        return output;
    };
    if alias.columns.is_empty() {
        return output;
    }
    let new_names: Vec<String> = alias
        .columns
        .iter()
        .map(|c| names::ident(&c.name))
        .collect();
    if output.star.is_empty() && output.cols.len() >= new_names.len() {
        for (col, name) in output.cols.iter_mut().zip(&new_names) {
            col.name = Some(name.clone());
        }
        return output;
    }
    // Positions are unknown (a star, or fewer columns than names): each new
    // name may be any of the columns.
    let mut all = Vec::new();
    whole_row_of_output(&output, &mut all);
    Output {
        cols: new_names
            .into_iter()
            .map(|name| OutCol {
                name: Some(name),
                sources: all.clone(),
            })
            .collect(),
        star: Vec::new(),
    }
}

/// Adds the right side of a set operation to its output: names come from
/// the left, sources from both.
fn merge_into(out: &mut Output, right: &Output) {
    for (i, col) in right.cols.iter().enumerate() {
        match out.cols.get_mut(i) {
            Some(existing) => existing.sources.extend(col.sources.iter().cloned()),
            None => out.cols.push(OutCol {
                name: None,
                sources: col.sources.clone(),
            }),
        }
    }
    out.star.extend(right.star.iter().cloned());
}

/// Reserved words PostgreSQL reads as values (`DEFAULT`, `CURRENT_USER`,
/// ...) that sqlparser may hand over as identifiers.
fn is_value_keyword(word: &str) -> bool {
    const WORDS: &[&str] = &[
        "default",
        "current_user",
        "current_role",
        "current_schema",
        "current_catalog",
        "session_user",
        "system_user",
        "user",
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// The name PostgreSQL gives an output column without an alias.
fn expr_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(id) => Some(names::ident(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(names::ident),
        Expr::Function(f) => names::parts(&f.name).and_then(|p| p.last().cloned()),
        Expr::Cast { expr, .. } => expr_name(expr),
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(id))) => Some(names::ident(id)),
            _ => None,
        },
        _ => None,
    }
}
