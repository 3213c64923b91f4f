//! What each kind of statement is, and the exhaustive sweep that finds every
//! statement, function call, row lock and relation anywhere in the tree.
//!
//! The class of a statement is the most dangerous class of anything inside
//! it: a `DELETE` hidden in a CTE, the statement under `EXPLAIN ANALYZE`
//! (which executes it), a `SELECT ... INTO` (which creates a table), row
//! locks, and function calls that are not known to be harmless.

use std::collections::HashSet;
use std::ops::ControlFlow;

use gatehouse_ledger::event::StatementClass;
use sqlparser::ast::{
    CopyTarget, Expr, InTarget, ObjectName, ObjectType, Query, Select, Statement, TableFactor,
    TransactionAccessMode, TransactionMode, Visit, Visitor,
};

use super::uses::{ColumnUses, Tracker};
use super::walker::{addr, Walker};
use super::Findings;
use crate::StatementInfo;

/// The kind of one statement node: its command words, its own class (before
/// anything nested is considered), and why it is Unknown if it is.
pub(super) struct Kind {
    pub(super) command: String,
    pub(super) class: StatementClass,
    pub(super) reason: Option<String>,
}

fn kind(command: &str, class: StatementClass) -> Kind {
    Kind {
        command: command.to_owned(),
        class,
        reason: None,
    }
}

fn unknown(command: &str, reason: impl Into<String>) -> Kind {
    Kind {
        command: command.to_owned(),
        class: StatementClass::Unknown,
        reason: Some(reason.into()),
    }
}

/// Another SQL dialect's statement that PostgreSQL does not have.
fn foreign(command: &str) -> Kind {
    unknown(
        command,
        format!("{command} is not a PostgreSQL statement; the gateway cannot judge it"),
    )
}

/// The command of a query: what PostgreSQL's command tag would say.
fn query_command(query: &Query) -> &'static str {
    use sqlparser::ast::SetExpr as S;
    match query.body.as_ref() {
        S::Select(_) | S::SetOperation { .. } => "SELECT",
        S::Query(q) => query_command(q),
        S::Values(_) => "VALUES",
        S::Insert(_) => "INSERT",
        S::Update(_) => "UPDATE",
        S::Delete(_) => "DELETE",
        S::Merge(_) => "MERGE",
        S::Table(_) => "TABLE",
    }
}

/// Describes one statement node (see [`Kind`]).
pub(super) fn describe(stmt: &Statement) -> Kind {
    use StatementClass::{Admin, Ddl, Function, Read, Session, Transaction, Write};
    match stmt {
        Statement::Query(q) => kind(query_command(q), Read),
        Statement::Insert(_) => kind("INSERT", Write),
        Statement::Update(_) => kind("UPDATE", Write),
        Statement::Delete(_) => kind("DELETE", Write),
        Statement::Merge(_) => kind("MERGE", Write),
        Statement::Truncate(_) => kind("TRUNCATE", Write),
        Statement::Lock(_) => kind("LOCK", Write),
        // sqlparser reads the lines after `COPY ... FROM STDIN;` as inline
        // data, the way psql scripts carry it. In a query string sent to
        // the server they are SQL, and PostgreSQL runs them after the COPY.
        Statement::Copy {
            payload: Some(_), ..
        } => unknown(
            "COPY",
            "text after COPY ... FROM STDIN in the same query string would run as SQL; \
             the gateway cannot judge it",
        ),
        Statement::Copy { to, target, .. } => match target {
            CopyTarget::File { .. } | CopyTarget::Program { .. } => kind("COPY", Admin),
            CopyTarget::Stdin | CopyTarget::Stdout => kind("COPY", if *to { Read } else { Write }),
        },
        Statement::Explain { describe_alias, .. } => match describe_alias {
            sqlparser::ast::DescribeAlias::Explain => kind("EXPLAIN", Read),
            _ => foreign("DESCRIBE"),
        },
        Statement::ShowVariable { .. } => kind("SHOW", Read),
        Statement::Set(set) if client_label(set) => kind("SET", Transaction),
        Statement::Set(_) => kind("SET", Session),
        Statement::Reset(_) => kind("RESET", Session),
        Statement::Discard { .. } => kind("DISCARD", Session),
        Statement::Load { .. } => kind("LOAD", Session),
        Statement::LISTEN { .. } => kind("LISTEN", Session),
        Statement::UNLISTEN { .. } => kind("UNLISTEN", Session),
        Statement::NOTIFY { .. } => kind("NOTIFY", Session),
        Statement::Prepare { .. } => kind("PREPARE", Session),
        Statement::Deallocate { .. } => kind("DEALLOCATE", Session),
        Statement::Execute { .. } => unknown(
            "EXECUTE",
            "EXECUTE runs a prepared statement whose text the gateway cannot see",
        ),
        Statement::StartTransaction {
            modes,
            begin,
            modifier,
            statements,
            exception,
            has_end_keyword,
            ..
        } => {
            let command = if *begin { "BEGIN" } else { "START TRANSACTION" };
            if !statements.is_empty()
                || exception.is_some()
                || *has_end_keyword
                || modifier.is_some()
            {
                foreign(&format!("{command} block"))
            } else if modes.iter().any(|m| {
                matches!(
                    m,
                    TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
                )
            }) {
                // READ WRITE overrides a read-only default: session-changing.
                kind(command, Session)
            } else {
                kind(command, Transaction)
            }
        }
        Statement::Commit { end, modifier, .. } => {
            let command = if *end { "END" } else { "COMMIT" };
            match modifier {
                Some(_) => foreign(command),
                None => kind(command, Transaction),
            }
        }
        Statement::Rollback { .. } => kind("ROLLBACK", Transaction),
        Statement::Savepoint { .. } => kind("SAVEPOINT", Transaction),
        Statement::ReleaseSavepoint { .. } => kind("RELEASE", Transaction),
        Statement::Grant(_) | Statement::GrantRole(_) => kind("GRANT", Admin),
        Statement::Revoke(_) | Statement::RevokeRole(_) => kind("REVOKE", Admin),
        Statement::AlterDefaultPrivileges(_) => kind("ALTER DEFAULT PRIVILEGES", Admin),
        Statement::Vacuum(_) => kind("VACUUM", Admin),
        Statement::Analyze(_) => kind("ANALYZE", Admin),
        Statement::Kill { .. } => kind("KILL", Admin),
        Statement::Call(_) => kind("CALL", Function),
        Statement::Declare { stmts, .. } => {
            if !stmts.is_empty() && stmts.iter().all(|d| d.for_query.is_some()) {
                kind("DECLARE", Read)
            } else {
                foreign("DECLARE (variable)")
            }
        }
        Statement::Fetch { into, .. } => match into {
            Some(_) => foreign("FETCH INTO"),
            None => kind("FETCH", Read),
        },
        Statement::Close { .. } => kind("CLOSE", Read),
        Statement::Comment { .. } => kind("COMMENT", Ddl),
        Statement::RefreshMaterializedView(_) => kind("REFRESH MATERIALIZED VIEW", Ddl),
        Statement::CreateTable(_) => kind("CREATE TABLE", Ddl),
        Statement::CreateView(v) => {
            if v.materialized {
                kind("CREATE MATERIALIZED VIEW", Ddl)
            } else {
                kind("CREATE VIEW", Ddl)
            }
        }
        Statement::CreateIndex(_) => kind("CREATE INDEX", Ddl),
        Statement::CreateRole(r) => {
            use sqlparser::ast::RoleKeyword as K;
            match r.keyword {
                K::Role => kind("CREATE ROLE", Admin),
                K::Group => kind("CREATE GROUP", Admin),
            }
        }
        Statement::CreateUser(_) => kind("CREATE USER", Admin),
        Statement::AlterRole { .. } => kind("ALTER ROLE", Admin),
        Statement::AlterUser(_) => kind("ALTER USER", Admin),
        Statement::CreateUserMapping(_) => kind("CREATE USER MAPPING", Admin),
        Statement::CreateServer(_) => kind("CREATE SERVER", Ddl),
        Statement::CreateForeignTable(_) => kind("CREATE FOREIGN TABLE", Ddl),
        Statement::CreateForeignDataWrapper(_) => kind("CREATE FOREIGN DATA WRAPPER", Ddl),
        Statement::CreatePolicy(_) => kind("CREATE POLICY", Ddl),
        Statement::CreateRule(_) => kind("CREATE RULE", Ddl),
        Statement::CreateOperator(_) => kind("CREATE OPERATOR", Ddl),
        Statement::CreateOperatorFamily(_) => kind("CREATE OPERATOR FAMILY", Ddl),
        Statement::CreateOperatorClass(_) => kind("CREATE OPERATOR CLASS", Ddl),
        Statement::CreateTextSearch(_) => kind("CREATE TEXT SEARCH", Ddl),
        Statement::CreateAggregate(_) => kind("CREATE AGGREGATE", Ddl),
        Statement::CreateExtension(_) => kind("CREATE EXTENSION", Ddl),
        Statement::CreateCollation(_) => kind("CREATE COLLATION", Ddl),
        Statement::CreateSchema { .. } => kind("CREATE SCHEMA", Ddl),
        Statement::CreateDatabase { .. } => kind("CREATE DATABASE", Ddl),
        Statement::CreateFunction(_) => kind("CREATE FUNCTION", Ddl),
        Statement::CreateProcedure { .. } => kind("CREATE PROCEDURE", Ddl),
        Statement::CreateTrigger(_) => kind("CREATE TRIGGER", Ddl),
        Statement::CreateSequence { .. } => kind("CREATE SEQUENCE", Ddl),
        Statement::CreateDomain(_) => kind("CREATE DOMAIN", Ddl),
        Statement::CreateType { .. } => kind("CREATE TYPE", Ddl),
        Statement::AlterTable(_) => kind("ALTER TABLE", Ddl),
        Statement::AlterSchema(_) => kind("ALTER SCHEMA", Ddl),
        Statement::AlterIndex { .. } => kind("ALTER INDEX", Ddl),
        Statement::AlterView(_) => kind("ALTER VIEW", Ddl),
        Statement::AlterFunction(_) => kind("ALTER FUNCTION", Ddl),
        Statement::AlterType(_) => kind("ALTER TYPE", Ddl),
        Statement::AlterCollation(_) => kind("ALTER COLLATION", Ddl),
        Statement::AlterOperator(_) => kind("ALTER OPERATOR", Ddl),
        Statement::AlterOperatorFamily(_) => kind("ALTER OPERATOR FAMILY", Ddl),
        Statement::AlterOperatorClass(_) => kind("ALTER OPERATOR CLASS", Ddl),
        Statement::AlterTextSearch(_) => kind("ALTER TEXT SEARCH", Ddl),
        Statement::AlterPolicy(_) => kind("ALTER POLICY", Ddl),
        Statement::AlterTrigger(_) => kind("ALTER TRIGGER", Ddl),
        Statement::Drop { object_type, .. } => {
            let (noun, class) = match object_type {
                ObjectType::Table => ("TABLE", Ddl),
                ObjectType::ForeignTable => ("FOREIGN TABLE", Ddl),
                ObjectType::View => ("VIEW", Ddl),
                ObjectType::MaterializedView => ("MATERIALIZED VIEW", Ddl),
                ObjectType::Index => ("INDEX", Ddl),
                ObjectType::Schema => ("SCHEMA", Ddl),
                ObjectType::Database => ("DATABASE", Ddl),
                ObjectType::Sequence => ("SEQUENCE", Ddl),
                ObjectType::Type => ("TYPE", Ddl),
                ObjectType::Collation => ("COLLATION", Ddl),
                ObjectType::Role => ("ROLE", Admin),
                ObjectType::User => ("USER", Admin),
                ObjectType::Group => ("GROUP", Admin),
                ObjectType::Stage => return foreign("DROP STAGE"),
                ObjectType::Stream => return foreign("DROP STREAM"),
                ObjectType::Warehouse => return foreign("DROP WAREHOUSE"),
            };
            kind(&format!("DROP {noun}"), class)
        }
        Statement::DropFunction(_) => kind("DROP FUNCTION", Ddl),
        Statement::DropDomain(_) => kind("DROP DOMAIN", Ddl),
        Statement::DropProcedure { .. } => kind("DROP PROCEDURE", Ddl),
        Statement::DropPolicy(_) => kind("DROP POLICY", Ddl),
        Statement::DropRule(_) => kind("DROP RULE", Ddl),
        Statement::DropExtension(_) => kind("DROP EXTENSION", Ddl),
        Statement::DropOperator(_) => kind("DROP OPERATOR", Ddl),
        Statement::DropOperatorFamily(_) => kind("DROP OPERATOR FAMILY", Ddl),
        Statement::DropOperatorClass(_) => kind("DROP OPERATOR CLASS", Ddl),
        Statement::DropTrigger(_) => kind("DROP TRIGGER", Ddl),
        // Everything below parses in sqlparser's PostgreSQL dialect but is
        // another dialect's syntax; PostgreSQL would reject or reinterpret it.
        Statement::ExplainTable { .. } => foreign("DESCRIBE"),
        Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => foreign("SHOW (this form)"),
        Statement::Use(_) => foreign("USE"),
        Statement::Deny(_) => foreign("DENY"),
        Statement::CopyIntoSnowflake { .. } => foreign("COPY INTO"),
        Statement::Msck(_) => foreign("MSCK"),
        Statement::Install { .. } => foreign("INSTALL"),
        Statement::Directory { .. } => foreign("INSERT OVERWRITE DIRECTORY"),
        Statement::Case(_) => foreign("CASE"),
        Statement::If(_) => foreign("IF"),
        Statement::While(_) => foreign("WHILE"),
        Statement::Raise(_) => foreign("RAISE"),
        Statement::Open(_) => foreign("OPEN"),
        Statement::CreateVirtualTable { .. } => foreign("CREATE VIRTUAL TABLE"),
        Statement::CreateSecret { .. } => foreign("CREATE SECRET"),
        Statement::CreateConnector(_) => foreign("CREATE CONNECTOR"),
        Statement::CreateMacro { .. } => foreign("CREATE MACRO"),
        Statement::CreateStage { .. } => foreign("CREATE STAGE"),
        Statement::CreateFileFormat { .. } => foreign("CREATE FILE FORMAT"),
        Statement::CreateWarehouse(_) => foreign("CREATE WAREHOUSE"),
        Statement::AlterConnector { .. } => foreign("ALTER CONNECTOR"),
        Statement::AlterSession { .. } => foreign("ALTER SESSION"),
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => {
            foreign("ATTACH")
        }
        Statement::DetachDuckDBDatabase { .. } => foreign("DETACH"),
        Statement::DropSecret { .. } => foreign("DROP SECRET"),
        Statement::DropConnector { .. } => foreign("DROP CONNECTOR"),
        Statement::Flush { .. } => foreign("FLUSH"),
        Statement::Assert { .. } => foreign("ASSERT"),
        Statement::Cache { .. } => foreign("CACHE"),
        Statement::UNCache { .. } => foreign("UNCACHE"),
        Statement::Pragma { .. } => foreign("PRAGMA"),
        Statement::LockTables { .. } => foreign("LOCK TABLES"),
        Statement::UnlockTables => foreign("UNLOCK TABLES"),
        Statement::Unload { .. } => foreign("UNLOAD"),
        Statement::OptimizeTable { .. } => foreign("OPTIMIZE"),
        Statement::LoadData { .. } => foreign("LOAD DATA"),
        Statement::RenameTable(_) => foreign("RENAME TABLE"),
        Statement::List(_) => foreign("LIST"),
        Statement::Put { .. } => foreign("PUT"),
        Statement::Remove(_) => foreign("REMOVE"),
        Statement::RaisError { .. } => foreign("RAISERROR"),
        Statement::Throw(_) => foreign("THROW"),
        Statement::Print(_) => foreign("PRINT"),
        Statement::WaitFor(_) => foreign("WAITFOR"),
        Statement::Return(_) => foreign("RETURN"),
        Statement::ExportData(_) => foreign("EXPORT DATA"),
        #[allow(unreachable_patterns)]
        _ => unknown(
            "UNKNOWN",
            "this kind of statement is not known to the gateway's classifier",
        ),
    }
}

/// Settings drivers set when they connect that change only how the session
/// is labelled or how floats are printed: `SET application_name = '...'`
/// (the PostgreSQL JDBC driver sends it on every connection) and
/// `SET extra_float_digits = N`, to a literal. They are classed with
/// transaction control rather than with session changes, so a policy that
/// lets an identity run transactions lets such drivers connect, and its
/// identity stays read-only upstream. Any other setting, scope or value
/// (an expression, `DEFAULT`) is a session change.
fn client_label(set: &sqlparser::ast::Set) -> bool {
    use sqlparser::ast::{ContextModifier, Set, UnaryOperator, Value};
    let Set::SingleAssignment {
        scope: None | Some(ContextModifier::Session),
        hivevar: false,
        variable,
        values,
    } = set
    else {
        return false;
    };
    let [name] = variable.0.as_slice() else {
        return false;
    };
    let Some(name) = name.as_ident() else {
        return false;
    };
    let literal = |e: &Expr| match e {
        Expr::Value(v) => matches!(v.value, Value::SingleQuotedString(_) | Value::Number(..)),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => matches!(&**expr, Expr::Value(v) if matches!(v.value, Value::Number(..))),
        _ => false,
    };
    // PostgreSQL folds unquoted names to lower case; quoted ones are exact.
    let name = match name.quote_style {
        None => name.value.to_ascii_lowercase(),
        Some(_) => name.value.clone(),
    };
    matches!(name.as_str(), "application_name" | "extra_float_digits")
        && matches!(values.as_slice(), [v] if literal(v))
}

/// Classifies one parsed statement.
pub(super) fn classify_statement(stmt: &Statement) -> StatementInfo {
    let command = describe(stmt).command;
    let mut walker = Walker::new(Findings::new());
    walker.walk_statement(stmt);
    let Walker {
        mut findings, seen, ..
    } = walker;
    let mut sweep = Sweep {
        seen: &seen,
        findings: &mut findings,
        table_functions: HashSet::new(),
    };
    let _ = stmt.visit(&mut sweep);
    let set = settings_set(stmt);
    if set.text {
        findings.sql_text_setting_change();
    }
    if set.limit {
        findings.session_limit_change();
    }
    findings.into_info(command)
}

/// Which pinned settings a statement or call may change.
#[derive(Default)]
struct PinnedSet {
    /// One of the [`super::SQL_TEXT_SETTINGS`].
    text: bool,
    /// One of the [`super::SESSION_LIMIT_SETTINGS`].
    limit: bool,
}

impl PinnedSet {
    /// A setting named `name` (as PostgreSQL compares them: ignoring case).
    fn naming(name: &str) -> PinnedSet {
        PinnedSet {
            text: is_sql_text_setting(name),
            limit: super::SESSION_LIMIT_SETTINGS
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s)),
        }
    }

    /// Any setting at all (the name is not known).
    fn any() -> PinnedSet {
        PinnedSet {
            text: true,
            limit: true,
        }
    }

    fn or(self, other: PinnedSet) -> PinnedSet {
        PinnedSet {
            text: self.text || other.text,
            limit: self.limit || other.limit,
        }
    }
}

/// Whether `name` (a setting name, compared as PostgreSQL does: ignoring
/// case, quoted or not) is one of the [`super::SQL_TEXT_SETTINGS`].
fn is_sql_text_setting(name: &str) -> bool {
    super::SQL_TEXT_SETTINGS
        .iter()
        .any(|(setting, _)| name.eq_ignore_ascii_case(setting))
}

/// The pinned settings `stmt` sets, in any scope and spelling (`SET NAMES`
/// sets the client encoding).
fn settings_set(stmt: &Statement) -> PinnedSet {
    use sqlparser::ast::Set;
    let named = |name: &ObjectName| {
        name.0
            .last()
            .and_then(|part| part.as_ident())
            .map_or_else(PinnedSet::default, |ident| PinnedSet::naming(&ident.value))
    };
    let all = |names: &mut dyn Iterator<Item = &ObjectName>| {
        names.fold(PinnedSet::default(), |acc, n| acc.or(named(n)))
    };
    match stmt {
        Statement::Set(Set::SingleAssignment { variable, .. }) => named(variable),
        Statement::Set(Set::ParenthesizedAssignments { variables, .. }) => {
            all(&mut variables.iter())
        }
        Statement::Set(Set::MultipleAssignments { assignments }) => {
            all(&mut assignments.iter().map(|a| &a.name))
        }
        Statement::Set(Set::SetNames { .. } | Set::SetNamesDefault {}) => PinnedSet {
            text: true,
            limit: false,
        },
        _ => PinnedSet::default(),
    }
}

/// The pinned settings a function call may set: for a `set_config` whose
/// first argument is a plain string literal, the one it names; for any
/// other `set_config` (a parameter, an expression or an escaped string
/// could name any setting), all of them.
fn may_set(f: &sqlparser::ast::Function) -> PinnedSet {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};
    let is_set_config = super::names::parts(&f.name)
        .and_then(|parts| parts.last().cloned())
        .is_some_and(|last| last == "set_config");
    if !is_set_config {
        return PinnedSet::default();
    }
    let FunctionArguments::List(list) = &f.args else {
        return PinnedSet::any();
    };
    match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(name) => PinnedSet::naming(name),
            _ => PinnedSet::any(),
        },
        _ => PinnedSet::any(),
    }
}

/// How one statement uses the columns it references (see `uses`): the
/// walker with use tracking, and the sweep for the tables it misses.
pub(super) fn statement_uses(stmt: &Statement) -> ColumnUses {
    let (tracker, kind) = Tracker::for_statement(stmt);
    let mut walker = Walker::with_uses(Findings::new(), tracker);
    walker.walk_statement(stmt);
    let Walker {
        mut findings,
        seen,
        uses,
        ..
    } = walker;
    let mut sweep = Sweep {
        seen: &seen,
        findings: &mut findings,
        table_functions: HashSet::new(),
    };
    let _ = stmt.visit(&mut sweep);
    let tracker = uses.unwrap_or_default();
    let info = findings.into_info(describe(stmt).command);
    ColumnUses {
        kind,
        columns: tracker.columns,
        equalities: tracker.equalities,
        tables: info.tables,
        functions: info.functions,
        unknown: info.reason,
    }
}

/// Visits every node of a statement: raises the class for every nested
/// statement, row lock and `SELECT INTO`; judges every function call and
/// custom operator; and reports any relation the walker did not account for
/// as a table (so nothing the walker misses is silently dropped).
struct Sweep<'a> {
    seen: &'a HashSet<usize>,
    findings: &'a mut Findings,
    table_functions: HashSet<usize>,
}

impl Visitor for Sweep<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        let kind = describe(stmt);
        self.findings.raise(kind.class);
        if let Some(reason) = kind.reason {
            self.findings.unknown(reason);
        }
        match stmt {
            Statement::Copy { target, .. } => match target {
                CopyTarget::File { .. } => {
                    self.findings.dangerous.insert("copy file".to_owned());
                }
                CopyTarget::Program { .. } => {
                    self.findings.dangerous.insert("copy program".to_owned());
                }
                CopyTarget::Stdin | CopyTarget::Stdout => {}
            },
            Statement::Call(f) => self.findings.call(&f.name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // FOR UPDATE / FOR SHARE take row locks: a write for policy.
        if !query.locks.is_empty() {
            self.findings.raise(StatementClass::Write);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        // SELECT ... INTO creates a table.
        if select.into.is_some() {
            self.findings.raise(StatementClass::Ddl);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) => {
                self.findings.function(&f.name);
                let set = may_set(f);
                if set.text {
                    self.findings.sql_text_setting_change();
                }
                if set.limit {
                    self.findings.session_limit_change();
                }
            }
            Expr::BinaryOp { op, .. }
            | Expr::AnyOp { compare_op: op, .. }
            | Expr::AllOp { compare_op: op, .. } => self.findings.operator(op),
            Expr::In {
                target:
                    InTarget::Table {
                        name,
                        args: Some(_),
                    },
                ..
            } => self.table_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => self.table_function(name),
            TableFactor::Function { name, .. } => self.findings.function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let a = addr(relation);
        if !self.seen.contains(&a) && !self.table_functions.contains(&a) {
            self.findings.relation(relation);
        }
        ControlFlow::Continue(())
    }
}

impl Sweep<'_> {
    fn table_function(&mut self, name: &ObjectName) {
        self.table_functions.insert(addr(name));
        self.findings.function(name);
    }
}
