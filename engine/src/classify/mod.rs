//! The SQL statement classifier: what a query string would do if PostgreSQL
//! ran it.
//!
//! Policy decides on what [`classify`] reports, so the classifier must never
//! call a statement harmless when PostgreSQL would let it change or leak
//! data. It parses with sqlparser's PostgreSQL dialect and then:
//!
//! * walks the whole tree, so a write hidden in a CTE, under
//!   `EXPLAIN ANALYZE`, in a subquery, or a `SELECT ... INTO` that creates a
//!   table raises the class of the statement that contains it (the most
//!   dangerous class found wins: Unknown > Admin > Ddl > Session > Write >
//!   Function > Read; Transaction is only for pure transaction control);
//! * resolves tables (schema-qualified, `public` by default) and columns
//!   through aliases, derived tables and CTEs, conservatively where only the
//!   catalog could tell (see the `walker` module);
//! * reports every function call that is not a known-safe builtin, and
//!   dangerous builtins (server files, remote SQL, settings, signals)
//!   separately (see the `functions` module);
//! * treats anything it cannot read or does not know as Unknown, with a
//!   reason an operator can act on (see the `fallback` module).
//!
//! It is a pure function of its input: no I/O and no global state beyond
//! immutable tables built once. Query strings over 4 KiB are classified on a
//! short-lived helper thread with a stack sized for them (deeply nested
//! expressions must not overflow the caller's stack), and strings over
//! 1 MiB are not parsed at all (Unknown).

mod fallback;
mod functions;
mod names;
mod reading;
mod statements;
mod template;
#[cfg(test)]
mod tests;
mod uses;
mod walker;

pub use template::LiteralTemplate;
pub use uses::{ColumnUses, StatementKind, Uses};

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use gatehouse_ledger::event::StatementClass;
use sqlparser::ast::{BinaryOperator, ObjectName, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{TokenWithSpan, Tokenizer};

use crate::{Classification, ColumnReference, StatementInfo};

/// The settings that decide how PostgreSQL reads SQL text, with the values
/// the classifier reads it with. Every upstream session starts with them.
///
/// With another value the database reads the same bytes as other SQL. In
/// Shift-JIS, `0x81 0x5C` is one character, so a backslash that escapes a
/// quote in the gateway's view is gone in the database's. With
/// `standard_conforming_strings` off, `'a\''` ends after the backslash's
/// quote, where the gateway's string goes on.
pub const SQL_TEXT_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// The search path the classifier resolves unqualified names with:
/// `public` (after `pg_catalog`, which PostgreSQL always searches first),
/// with temporary tables last rather than first. Every upstream session
/// starts with it, over database and role defaults, so a default such as
/// `search_path = app, public` cannot make `orders` mean `app.orders` to
/// the database while policy judged `public.orders`. (`SET search_path`
/// is a `session` statement, for policy to allow or not.)
pub const SEARCH_PATH: &str = "public, pg_temp";

/// The entry in [`StatementInfo::dangerous`] of a statement that would change
/// one of the [`SQL_TEXT_SETTINGS`]: `SET` of one (or `SET NAMES`), or a
/// `set_config` call that may name one. Policy denies such statements
/// whatever its rules say.
pub const SQL_TEXT_SETTING_CHANGE: &str = "set sql text setting";

/// The settings that bound what one statement or one idle transaction can
/// hold on the server. The gateway sets them on every upstream session
/// (per target; 60 s by default) and clients cannot change them.
pub const SESSION_LIMIT_SETTINGS: &[&str] =
    &["statement_timeout", "idle_in_transaction_session_timeout"];

/// The entry in [`StatementInfo::dangerous`] of a statement that would
/// change one of the [`SESSION_LIMIT_SETTINGS`] (`SET`, in any scope, or a
/// `set_config` that may name one). Policy denies it whatever its rules say.
pub const SESSION_LIMIT_CHANGE: &str = "set session limit";

/// The PostgreSQL major version whose parser (libpg_query, through the
/// `pg_query` crate) is the authority on how SQL is read. A server of an
/// older version refuses what its grammar lacks; one of a newer version may
/// accept syntax this parser refuses (then denied, never misread).
pub const PARSER_MAJOR_VERSION: u32 = 17;

/// The entry in [`StatementInfo::dangerous`] of a query string that
/// PostgreSQL reads differently from the classifier, or cannot read at all
/// (see the `reading` module). Policy denies it whatever its rules say:
/// no rule can be judged on SQL the database would read otherwise.
pub const SQL_MISREAD: &str = "sql read differently by postgresql";

/// Query strings up to this size are classified on the caller's stack.
///
/// Binary operator chains (`a + b + c ...`, long `AND` lists, `UNION` chains)
/// parse into trees as deep as they are long. The classifier walks such
/// chains without recursion, but sqlparser's visitor and even dropping the
/// tree recurse once per level (about 100 to 200 bytes of stack each). Up to
/// this size that stays under 512 KiB, well within the 2 MiB stack of the
/// smallest thread the gateway runs on.
const INLINE_LIMIT: usize = 4 * 1024;

/// Larger query strings are classified on a helper thread whose stack grows
/// with the input by this many bytes per byte of SQL (each level of nesting
/// needs at least two bytes of SQL, such as `+1`; measured need: under 96
/// bytes of stack per byte of SQL).
const STACK_PER_BYTE: usize = 256;

/// The smallest helper stack.
const MIN_HELPER_STACK: usize = 8 * 1024 * 1024;

/// Query strings larger than this are not parsed at all: Unknown. (Such a
/// string could need a helper stack of over 256 MiB.)
const MAX_SQL_BYTES: usize = 1024 * 1024;

/// Classifies every statement in a query string.
///
/// Never fails and never panics: a string that cannot be read yields an
/// Unknown statement whose `reason` carries the parser's complaint, an empty
/// (or comment-only) string yields one Read statement with command `EMPTY`.
/// See the module documentation for the rules.
pub fn classify(sql: &str) -> Classification {
    let statements =
        sized(sql, classify_here).unwrap_or_else(|reason| vec![fallback::unknown_info(reason)]);
    Classification { statements }
}

/// Classifies `sql`, whose template is `template`, and says whether the
/// classification holds for every query string of that template (see
/// [`LiteralTemplate`]): when the parser read it and every generalized
/// literal became a literal value.
pub fn classify_templated(sql: &str, template: &LiteralTemplate) -> (Classification, bool) {
    let classified = sized(sql, |sql| {
        let parsed = Parsed::of(sql);
        let shared =
            matches!(&parsed.statements, Ok(p) if !p.is_empty() && template.matches_values(p));
        (classify_parsed(sql, &parsed), shared)
    });
    match classified {
        // The one literal the classifier reads is `set_config`'s setting
        // name, and a dangerous operation is never on a hot path: such
        // classifications are not shared.
        Ok((statements, shared)) => {
            let shared = shared && statements.iter().all(|s| s.dangerous.is_empty());
            (Classification { statements }, shared)
        }
        Err(reason) => (
            Classification {
                statements: vec![fallback::unknown_info(reason)],
            },
            false,
        ),
    }
}

/// `statement` with the function calls made by the views it names folded
/// in, judged as calls in the statement itself are (known-safe builtins
/// are not reported; other calls raise the class to Function, dangerous
/// ones to Admin). A view can hide a call that writes, `CREATE VIEW v AS
/// SELECT bump()`, behind what reads like `SELECT * FROM v`. `calls` are
/// `schema.function` names as the catalog spells them.
pub fn with_view_calls(statement: &StatementInfo, calls: &[String]) -> StatementInfo {
    let mut findings = Findings::of(statement);
    for call in calls {
        let parts: Vec<String> = call.split('.').map(str::to_owned).collect();
        findings.call_by_catalog(call, &parts);
    }
    findings.into_info(statement.command.clone())
}

/// `statement` with its column-notation calls folded in: `t.f` where the
/// catalog says `t` has no column `f` is the call `f(t)` to PostgreSQL,
/// which passes `f` the whole row (so `c.to_json` returns every column of
/// `c`, and `c.leak` runs whatever `leak` does). `calls` are the
/// references as `schema.table.f` (see
/// `CatalogNames::column_notation_calls`): each reads `schema.table.*` and
/// calls `f`, judged as a call in the statement itself is.
pub fn with_column_notation_calls(statement: &StatementInfo, calls: &[String]) -> StatementInfo {
    let mut findings = Findings::of(statement);
    for call in calls {
        let Some((table, function)) = call.rsplit_once('.') else {
            continue;
        };
        findings.columns.insert(format!("{table}.*"));
        findings.call_by_catalog(function, &[function.to_owned()]);
    }
    findings.into_info(statement.command.clone())
}

/// The cursors a query string's `FETCH` and `MOVE` statements run, named
/// as PostgreSQL resolves them (read with its own parser). Both reach
/// protocol-level portals too (they share one namespace), so the gateway
/// must know which names a statement runs. Empty when the string cannot be
/// parsed (then it is Unknown and denied anyway).
pub fn fetched_cursors(sql: &str) -> Vec<String> {
    use pg_query::NodeEnum;
    sized(sql, |sql| match pg_query::parse(sql) {
        Ok(parsed) => parsed
            .protobuf
            .stmts
            .iter()
            .filter_map(|s| match s.stmt.as_ref()?.node.as_ref()? {
                NodeEnum::FetchStmt(f) => Some(f.portalname.clone()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    })
    .unwrap_or_default()
}

/// What a query string does to the session's prepared statements and
/// portals (cursors), which SQL shares with the extended protocol:
/// `PREPARE`, `DEALLOCATE [ALL]`, `DISCARD ALL`, `DECLARE` and `CLOSE
/// [ALL]`, read with PostgreSQL's parser. The relay forgets what it knows
/// under those names: a protocol Bind or Execute of one must not be judged
/// as the statement the name held before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceChanges {
    /// Prepared statements made or dropped, by name.
    pub statements: Vec<String>,
    /// Every prepared statement dropped (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub all_statements: bool,
    /// Portals (cursors) made or closed, by name.
    pub portals: Vec<String>,
    /// Every portal closed (`CLOSE ALL`, `DISCARD ALL`).
    pub all_portals: bool,
}

impl NamespaceChanges {
    /// Whether the string changes nothing of either namespace.
    pub fn is_empty(&self) -> bool {
        *self == NamespaceChanges::default()
    }
}

/// The commands whose statements [`namespace_changes`] looks at.
pub const NAMESPACE_COMMANDS: &[&str] = &["PREPARE", "DEALLOCATE", "DISCARD", "DECLARE", "CLOSE"];

/// See [`NamespaceChanges`]. A string PostgreSQL cannot parse changes
/// nothing (it does not run).
pub fn namespace_changes(sql: &str) -> NamespaceChanges {
    use pg_query::protobuf::DiscardMode;
    use pg_query::NodeEnum;
    let mut out = NamespaceChanges::default();
    let Ok(Ok(parsed)) = sized(sql, pg_query::parse) else {
        return out;
    };
    for stmt in &parsed.protobuf.stmts {
        match stmt.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::PrepareStmt(p)) => out.statements.push(p.name.clone()),
            Some(NodeEnum::DeallocateStmt(d)) if d.isall || d.name.is_empty() => {
                out.all_statements = true
            }
            Some(NodeEnum::DeallocateStmt(d)) => out.statements.push(d.name.clone()),
            Some(NodeEnum::DiscardStmt(d)) if d.target == DiscardMode::DiscardAll as i32 => {
                out.all_statements = true;
                out.all_portals = true;
            }
            Some(NodeEnum::DeclareCursorStmt(d)) => out.portals.push(d.portalname.clone()),
            Some(NodeEnum::ClosePortalStmt(c)) if c.portalname.is_empty() => out.all_portals = true,
            Some(NodeEnum::ClosePortalStmt(c)) => out.portals.push(c.portalname.clone()),
            _ => {}
        }
    }
    out
}

/// How each statement of a query string uses the columns it references,
/// for masking: one entry per statement, in order (see [`Uses`]).
///
/// Fails, with a reason an operator can act on, when the string cannot be
/// parsed: then nothing can be said about the columns it reads. Like
/// [`classify`], it never panics and bounds its stack.
pub fn column_uses(sql: &str) -> Result<Vec<ColumnUses>, String> {
    sized(sql, |sql| {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
            Ok(parsed) => Ok(parsed.iter().map(statements::statement_uses).collect()),
            Err(err) => Err(format!("the query could not be parsed: {err}")),
        }
    })?
}

/// Runs `work` on `sql` with a stack big enough for it (on a helper thread
/// for large strings, so deep expression trees cannot overflow the caller's
/// stack), turning any panic (a bug in the parser or here) into an error.
/// Strings over [`MAX_SQL_BYTES`] are refused.
fn sized<T: Send>(sql: &str, work: impl Fn(&str) -> T + Sync) -> Result<T, String> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!(
            "the query is {} bytes long; the gateway classifies at most {MAX_SQL_BYTES} bytes",
            sql.len()
        ));
    }
    let guarded = |sql: &str| {
        catch_unwind(AssertUnwindSafe(|| work(sql))).map_err(|_| {
            "the classifier failed on this query (an internal error); it is denied".to_owned()
        })
    };
    if sql.len() <= INLINE_LIMIT {
        return guarded(sql);
    }
    let stack = MIN_HELPER_STACK.max(sql.len().saturating_mul(STACK_PER_BYTE));
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("gatehouse-classify".to_owned())
            .stack_size(stack)
            .spawn_scoped(scope, || guarded(sql));
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(
                    "the classifier failed on this query (an internal error); it is denied"
                        .to_owned(),
                )
            }),
            Err(err) => Err(format!("the query is too large to classify here ({err})")),
        }
    })
}

fn classify_here(sql: &str) -> Vec<StatementInfo> {
    classify_parsed(sql, &Parsed::of(sql))
}

/// sqlparser's reading of a query string: its tokens, with their places,
/// and the statements parsed from them. The classifier walks the
/// statements; the reading check compares the same tokens with
/// PostgreSQL's, so the string is tokenized once.
struct Parsed {
    tokens: Result<Vec<TokenWithSpan>, String>,
    statements: Result<Vec<Statement>, ParserError>,
}

impl Parsed {
    fn of(sql: &str) -> Parsed {
        let dialect = PostgreSqlDialect {};
        match Tokenizer::new(&dialect, sql).tokenize_with_location() {
            Ok(tokens) => {
                let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
                let statements = parser.parse_statements();
                Parsed {
                    tokens: Ok(parser.into_tokens()),
                    statements,
                }
            }
            Err(e) => Parsed {
                tokens: Err(e.to_string()),
                statements: Err(e.into()),
            },
        }
    }
}

/// Classifies a query string from sqlparser's reading of it, then checks
/// that PostgreSQL reads the same statements (see the `reading` module): if
/// not, the whole string is one Unknown statement.
fn classify_parsed(sql: &str, parsed: &Parsed) -> Vec<StatementInfo> {
    let mut statements = classify_read(sql, &parsed.statements);
    let has_unknown = statements
        .iter()
        .any(|s| s.class == StatementClass::Unknown);
    let tokens = parsed.tokens.as_deref().map_err(String::as_str);
    match (reading::compare(sql, tokens, &statements), has_unknown) {
        // The classifier found what it cannot read already: its verdicts
        // say which statement that is, and the database runs none of it.
        (reading::Reading::Agrees, _) | (reading::Reading::Unreadable(_), true) => statements,
        // Denied whatever the rules say, with the classifier's reasons for
        // what it could not read.
        (reading::Reading::Differs(_), true) => {
            for s in &mut statements {
                if s.class == StatementClass::Unknown {
                    s.dangerous.push(SQL_MISREAD.to_owned());
                }
            }
            statements
        }
        (reading::Reading::Unreadable(reason) | reading::Reading::Differs(reason), false) => {
            vec![misread(reason)]
        }
    }
}

/// The verdict on a query string PostgreSQL reads differently from the
/// classifier (or cannot read): one Unknown statement that policy denies
/// whatever its rules say (see [`SQL_MISREAD`]).
fn misread(reason: String) -> StatementInfo {
    let mut info = fallback::unknown_info(reason);
    info.dangerous.push(SQL_MISREAD.to_owned());
    info
}

fn classify_read(sql: &str, parsed: &Result<Vec<Statement>, ParserError>) -> Vec<StatementInfo> {
    match parsed {
        Ok(parsed) if parsed.is_empty() => vec![empty()],
        Ok(parsed) => parsed.iter().map(statements::classify_statement).collect(),
        Err(err) => {
            let found = fallback::classify_unparsed(sql, err);
            if found.is_empty() {
                vec![empty()]
            } else {
                found
            }
        }
    }
}

/// An empty or comment-only query string: nothing runs.
fn empty() -> StatementInfo {
    StatementInfo {
        class: StatementClass::Read,
        command: "EMPTY".to_owned(),
        tables: Vec::new(),
        columns: Vec::new(),
        functions: Vec::new(),
        dangerous: Vec::new(),
        reason: None,
        references: Vec::new(),
    }
}

/// How dangerous a class is, for "the most dangerous one wins".
fn rank(class: StatementClass) -> u8 {
    match class {
        StatementClass::Transaction => 0,
        StatementClass::Read => 1,
        StatementClass::Function => 2,
        StatementClass::Write => 3,
        StatementClass::Session => 4,
        StatementClass::Ddl => 5,
        StatementClass::Admin => 6,
        StatementClass::Unknown => 7,
    }
}

/// What has been found in one statement so far.
#[derive(Debug)]
struct Findings {
    class: StatementClass,
    reason: Option<String>,
    tables: BTreeSet<String>,
    columns: BTreeSet<String>,
    functions: BTreeSet<String>,
    dangerous: BTreeSet<String>,
    /// See [`StatementInfo::references`].
    references: BTreeSet<ColumnReference>,
}

impl Findings {
    /// The findings a classified statement was made from.
    fn of(statement: &StatementInfo) -> Self {
        Findings {
            class: statement.class,
            reason: statement.reason.clone(),
            tables: statement.tables.iter().cloned().collect(),
            columns: statement.columns.iter().cloned().collect(),
            functions: statement.functions.iter().cloned().collect(),
            dangerous: statement.dangerous.iter().cloned().collect(),
            references: statement.references.iter().cloned().collect(),
        }
    }

    /// A call the catalog revealed (through a view, or column notation),
    /// reported as `name`: judged as a call written in the statement is
    /// (known-safe builtins are not reported; other calls raise the class
    /// to Function, dangerous ones to Admin).
    fn call_by_catalog(&mut self, name: &str, parts: &[String]) {
        match functions::judge(parts) {
            functions::Verdict::Safe => {}
            functions::Verdict::Unlisted => {
                self.functions.insert(name.to_owned());
                self.raise(StatementClass::Function);
            }
            functions::Verdict::Dangerous => {
                self.functions.insert(name.to_owned());
                if let Some(last) = parts.last() {
                    self.dangerous.insert(last.clone());
                }
                self.raise(StatementClass::Admin);
            }
        }
    }

    fn new() -> Self {
        Findings {
            class: StatementClass::Transaction,
            reason: None,
            tables: BTreeSet::new(),
            columns: BTreeSet::new(),
            functions: BTreeSet::new(),
            dangerous: BTreeSet::new(),
            references: BTreeSet::new(),
        }
    }

    /// Raises the class to `class` if that is more dangerous.
    fn raise(&mut self, class: StatementClass) {
        if rank(class) > rank(self.class) {
            self.class = class;
        }
    }

    /// Makes the statement Unknown; the first reason given is kept.
    fn unknown(&mut self, reason: String) {
        self.raise(StatementClass::Unknown);
        self.reason.get_or_insert(reason);
    }

    /// Records a relation name as a table; returns its candidate names.
    fn relation(&mut self, name: &ObjectName) -> Vec<String> {
        match names::parts(name) {
            Some(parts) => {
                let candidates = names::relation_candidates(&parts);
                self.tables.extend(candidates.iter().cloned());
                candidates
            }
            None => {
                self.unknown(
                    "a table name that is not a plain identifier cannot be judged".to_owned(),
                );
                Vec::new()
            }
        }
    }

    /// Judges a function call.
    fn function(&mut self, name: &ObjectName) {
        self.judge_call(name, false);
    }

    /// Marks the statement as changing how the database reads SQL text
    /// (see [`SQL_TEXT_SETTING_CHANGE`]).
    fn sql_text_setting_change(&mut self) {
        self.dangerous.insert(SQL_TEXT_SETTING_CHANGE.to_owned());
        self.raise(StatementClass::Admin);
    }

    /// Marks the statement as changing a session limit (see
    /// [`SESSION_LIMIT_CHANGE`]).
    fn session_limit_change(&mut self) {
        self.dangerous.insert(SESSION_LIMIT_CHANGE.to_owned());
        self.raise(StatementClass::Admin);
    }

    /// Judges a `CALL`: a procedure is never on the safe list.
    fn call(&mut self, name: &ObjectName) {
        self.judge_call(name, true);
    }

    fn judge_call(&mut self, name: &ObjectName, always_report: bool) {
        let Some(parts) = names::parts(name) else {
            self.unknown(
                "a function name that is not a plain identifier cannot be judged".to_owned(),
            );
            return;
        };
        let verdict = functions::judge(&parts);
        if verdict == functions::Verdict::Safe && !always_report {
            return;
        }
        self.functions.insert(parts.join("."));
        if verdict == functions::Verdict::Dangerous {
            if let Some(last) = parts.last() {
                self.dangerous.insert(last.clone());
            }
            self.raise(StatementClass::Admin);
        } else {
            self.raise(StatementClass::Function);
        }
    }

    /// Judges an operator that sqlparser does not know: any operator may be
    /// backed by any function.
    fn operator(&mut self, op: &BinaryOperator) {
        let name = match op {
            BinaryOperator::Custom(op) if !functions::safe_operator(op) => op.clone(),
            BinaryOperator::PGCustomBinaryOperator(parts) => match parts.as_slice() {
                [schema, _] if schema.eq_ignore_ascii_case("pg_catalog") => return,
                [op] if functions::safe_operator(op) => return,
                _ => parts.join("."),
            },
            _ => return,
        };
        self.functions.insert(format!("operator({name})"));
        self.raise(StatementClass::Function);
    }

    fn into_info(self, command: String) -> StatementInfo {
        let reason = match self.class {
            StatementClass::Unknown => Some(
                self.reason
                    .unwrap_or_else(|| "the statement could not be classified".to_owned()),
            ),
            _ => None,
        };
        StatementInfo {
            class: self.class,
            command,
            tables: self.tables.into_iter().collect(),
            columns: self.columns.into_iter().collect(),
            functions: self.functions.into_iter().collect(),
            dangerous: self.dangerous.into_iter().collect(),
            reason,
            references: self.references.into_iter().collect(),
        }
    }
}
