//! Gatehouse's judgement: what a statement is ([`classify`]), what policy
//! says about it ([`policy`]), and the state the gateway derives from ledger
//! events ([`state`], with [`snapshot`]s of it). Everything here is a pure function of its
//! inputs: no sockets, no files, no clocks.

#![warn(missing_docs)]

pub mod approvals;
pub mod classify;
pub mod fingerprint;
pub mod identities;
pub mod mask;
pub mod operators;
pub mod policy;
pub mod snapshot;
pub mod state;

pub use gatehouse_ledger::event::{Action, StatementClass};

/// What the classifier found in one SQL statement.
///
/// Names are lower-cased unless they were quoted; tables are always
/// schema-qualified (unqualified names resolve to `public`, since the gateway
/// denies changing `search_path` unless policy allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// The statement's class; the most dangerous one found anywhere in it.
    pub class: StatementClass,
    /// The leading keyword(s), e.g. `SELECT`, `INSERT`, `SET`, `COPY`.
    pub command: String,
    /// Tables read or written, `schema.table`, sorted and deduplicated.
    pub tables: Vec<String>,
    /// Columns referenced, `schema.table.column`, where they can be resolved;
    /// `schema.table.*` for a star or a whole-row reference.
    pub columns: Vec<String>,
    /// Functions called that are not on the known-safe list.
    pub functions: Vec<String>,
    /// Dangerous operations that are denied unless a rule names them:
    /// functions such as `pg_read_file`, or `COPY ... PROGRAM` / `COPY ... 'file'`
    /// (reported as `copy program` / `copy file`).
    pub dangerous: Vec<String>,
    /// Why the class is `Unknown` (e.g. the parser's complaint), if it is.
    pub reason: Option<String>,
    /// The column references that can only name columns of tables (no
    /// derived table, table function or whole row could supply them). The
    /// gateway checks them against the target's catalog, so a name it
    /// would read differently, or a function called in column notation
    /// (`c.leak` for `leak(c)`), is not taken as touching nothing.
    pub references: Vec<ColumnReference>,
}

/// One column reference of a statement (see [`StatementInfo::references`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ColumnReference {
    /// The `schema.table.column` names it may stand for: PostgreSQL
    /// resolves it to exactly one of them, or reads it otherwise.
    pub candidates: Vec<String>,
    /// Written with a qualifier (`c.name`): where no candidate table has
    /// the column, PostgreSQL reads `c.f` as the call `f(c)`.
    pub qualified: bool,
}

/// The classification of everything in one query string (a simple-protocol
/// Query may hold several statements separated by `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// One entry per statement, in order. Never empty: an empty query string
    /// yields one `Read` statement with command `EMPTY`.
    pub statements: Vec<StatementInfo>,
}
