//! PostgreSQL's own reading of a query string, and the check that the
//! classifier read the same thing.
//!
//! The classifier walks sqlparser's tree, but the database runs what
//! PostgreSQL's scanner and grammar read. Where the two disagree (a dollar
//! quote whose tag holds a non-ASCII character, a `U&"..."` identifier, a
//! no-break space that sqlparser takes for white space), a string for one
//! can be code for the other, and every rule judged the wrong statement.
//! So every classification is checked against PostgreSQL's own reading,
//! made by libpg_query (PostgreSQL's scanner and grammar compiled in, see
//! docs/decisions.md), and any disagreement makes the whole query string
//! Unknown, which policy denies. The checks:
//!
//! * **Tokens.** Every identifier or keyword, string, number and parameter
//!   token starts and ends at the same byte in both readings, with the same
//!   kind, and the bytes of operators and punctuation are the same. What is
//!   left is white space and comments in both, so neither reading can hide
//!   code in a string, a comment or an identifier of the other.
//! * **Statements.** Both readings hold the same number of statements.
//!   Each of PostgreSQL's statements has a least class (a `DELETE` writes,
//!   a `CREATE` is DDL, a `SELECT ... INTO` creates a table, a data-changing
//!   statement anywhere inside writes), and the classifier's class of that
//!   statement must be at least as dangerous.
//! * **Names.** Every table PostgreSQL's grammar reads is one the classifier
//!   reported (names as PostgreSQL folds and truncates them), and every
//!   function call PostgreSQL reads is reported too, unless it is a
//!   known-safe builtin.
//!
//! All three are pure functions of the query string. The token check does
//! not depend on the content of a plain number or a standard string literal
//! (both scanners end such a string at the first lone quote and a number at
//! its last digit), and neither do the statement and name checks (a literal
//! is a constant node in both trees), so a verdict holds for every query
//! string of a [`super::LiteralTemplate`].

use gatehouse_ledger::event::StatementClass;
use pg_query::protobuf::{KeywordKind, ScanToken, Token as PgToken};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::{functions, rank};
use crate::StatementInfo;

/// What a token is, as far as the two readings must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An identifier or a keyword (PostgreSQL treats many keywords as
    /// identifiers where its grammar allows, so the two are one kind).
    Word,
    /// A string constant of any form.
    Text,
    Number,
    /// A positional parameter, `$1`.
    Parameter,
    /// An operator or punctuation.
    Symbol,
}

/// A token of one reading: its kind and its bytes in the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spanned {
    kind: Kind,
    start: usize,
    end: usize,
}

/// How PostgreSQL's reading of a query string compares with the
/// classifier's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reading {
    /// Both read the same statements, tokens and names.
    Agrees,
    /// PostgreSQL cannot read the string at all, so the server would run
    /// none of it: why (PostgreSQL's own complaint).
    Unreadable(String),
    /// PostgreSQL reads it, differently: why, for the operator.
    Differs(String),
}

/// Compares PostgreSQL's reading of `sql` with the classifier's:
/// sqlparser's `tokens` of it (or why it could not tokenize it) and the
/// verdict on it, `statements` (one entry per statement the classifier
/// read).
pub(super) fn compare(
    sql: &str,
    tokens: Result<&[TokenWithSpan], &str>,
    statements: &[StatementInfo],
) -> Reading {
    let scanned = match pg_query::scan(sql) {
        Ok(scanned) => scanned,
        Err(e) => return Reading::Unreadable(unreadable(&e)),
    };
    if let Err(reason) = compare_tokens(sql, &scanned.tokens, tokens) {
        return Reading::Differs(differs(&reason));
    }
    let pieces = match pg_query::split_with_parser(sql) {
        Ok(pieces) => pieces,
        Err(e) => return Reading::Unreadable(unreadable(&e)),
    };
    let ours: Vec<&StatementInfo> = statements.iter().filter(|s| s.command != "EMPTY").collect();
    if pieces.len() != ours.len() {
        return Reading::Differs(differs(&format!(
            "PostgreSQL reads {} statement(s) where the gateway's parser reads {}",
            pieces.len(),
            ours.len()
        )));
    }
    for (i, (piece, info)) in pieces.iter().zip(ours).enumerate() {
        // The summary walks PostgreSQL's parse tree in C and returns flat
        // lists: no recursion limit of a tree decoder, and about 100 bytes
        // of stack per nesting level (the caller sizes the stack).
        let summary = match pg_query::summary(piece, -1) {
            Ok(summary) => summary,
            Err(e) => return Reading::Unreadable(unreadable(&e)),
        };
        let checked =
            compare_statement(&summary, info).and_then(|()| compare_names(&summary, info));
        if let Err(reason) = checked {
            return Reading::Differs(differs(&format!("statement {}: {reason}", i + 1)));
        }
    }
    Reading::Agrees
}

fn unreadable(e: &pg_query::Error) -> String {
    let detail = match e {
        pg_query::Error::Parse(m) | pg_query::Error::Scan(m) => m.clone(),
        other => other.to_string(),
    };
    format!(
        "PostgreSQL's own parser cannot read this query string ({detail}), so the database \
         would run none of it"
    )
}

fn differs(reason: &str) -> String {
    format!(
        "PostgreSQL reads this query string differently from the gateway's SQL parser \
         ({reason}); the gateway cannot judge what the database would run. Write it \
         without that construct (for example with a plain dollar-quote tag, a plain \
         identifier, ASCII white space)"
    )
}

/// The token check (see the module documentation).
fn compare_tokens(
    sql: &str,
    pg_tokens: &[ScanToken],
    tokens: Result<&[TokenWithSpan], &str>,
) -> Result<(), String> {
    let theirs = postgres_tokens(sql, pg_tokens)?;
    let tokens = tokens.map_err(|e| format!("the gateway's tokenizer: {e}"))?;
    let ours = parser_tokens(sql, tokens)?;
    let (their_words, their_symbols) = split_symbols(&theirs);
    let (our_words, our_symbols) = split_symbols(&ours);
    for (i, theirs) in their_words.iter().enumerate() {
        match our_words.get(i) {
            Some(ours) if ours == theirs => {}
            Some(ours) => {
                let at = ours.start.min(theirs.start);
                return Err(format!(
                    "at byte {at}, PostgreSQL reads {} `{}` where the gateway's parser reads {} `{}`",
                    describe(theirs.kind),
                    excerpt(sql, theirs),
                    describe(ours.kind),
                    excerpt(sql, ours),
                ));
            }
            None => {
                return Err(format!(
                    "PostgreSQL reads {} `{}` at byte {} that the gateway's parser does not",
                    describe(theirs.kind),
                    excerpt(sql, theirs),
                    theirs.start
                ))
            }
        }
    }
    if let Some(ours) = our_words.get(their_words.len()) {
        return Err(format!(
            "the gateway's parser reads {} `{}` at byte {} that PostgreSQL does not",
            describe(ours.kind),
            excerpt(sql, ours),
            ours.start
        ));
    }
    if their_symbols != our_symbols {
        let at = first_difference(&their_symbols, &our_symbols);
        return Err(format!(
            "the two read different operators or punctuation near byte {at}"
        ));
    }
    Ok(())
}

/// The tokens of PostgreSQL's scanner, comments left out.
fn postgres_tokens(sql: &str, tokens: &[ScanToken]) -> Result<Vec<Spanned>, String> {
    let mut out = Vec::with_capacity(tokens.len());
    for token in tokens {
        let (Ok(start), Ok(end)) = (usize::try_from(token.start), usize::try_from(token.end))
        else {
            return Err("PostgreSQL's scanner reported a token outside the string".to_owned());
        };
        if start > end || end > sql.len() {
            return Err("PostgreSQL's scanner reported a token outside the string".to_owned());
        }
        let kind = match PgToken::try_from(token.token) {
            Ok(PgToken::SqlComment | PgToken::CComment) => continue,
            Ok(PgToken::Ident | PgToken::Uident) => Kind::Word,
            Ok(PgToken::Sconst | PgToken::Usconst | PgToken::Bconst | PgToken::Xconst) => {
                Kind::Text
            }
            Ok(PgToken::Iconst | PgToken::Fconst) => Kind::Number,
            Ok(PgToken::Param) => Kind::Parameter,
            _ if token.keyword_kind != KeywordKind::NoKeyword as i32 => Kind::Word,
            _ => Kind::Symbol,
        };
        out.push(Spanned { kind, start, end });
    }
    Ok(out)
}

/// The tokens of sqlparser's tokenizer (those the classifier's parser
/// read), white space and comments left out.
fn parser_tokens(sql: &str, tokens: &[TokenWithSpan]) -> Result<Vec<Spanned>, String> {
    let mut cursor = Cursor::new(sql);
    let mut out = Vec::with_capacity(tokens.len());
    for TokenWithSpan { token, span } in tokens {
        let kind = match token {
            Token::Whitespace(_) | Token::EOF => continue,
            Token::Word(_) => Kind::Word,
            Token::Number(..) => Kind::Number,
            Token::Placeholder(p) if is_parameter(p) => Kind::Parameter,
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => Kind::Text,
            _ => Kind::Symbol,
        };
        let (Some(start), Some(end)) = (cursor.byte(span.start), cursor.byte(span.end)) else {
            return Err("the gateway's tokenizer reported a token outside the string".to_owned());
        };
        out.push(Spanned { kind, start, end });
    }
    Ok(out)
}

/// `$` followed by digits only: PostgreSQL's parameter.
fn is_parameter(p: &str) -> bool {
    p.strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Separates the tokens that must match one for one from operators and
/// punctuation, which the two scanners may cut differently (`<=-` is one
/// run either way): those are compared as the byte runs they cover.
fn split_symbols(tokens: &[Spanned]) -> (Vec<Spanned>, Vec<(usize, usize)>) {
    let mut words = Vec::with_capacity(tokens.len());
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for token in tokens {
        if token.kind != Kind::Symbol {
            words.push(*token);
            continue;
        }
        match runs.last_mut() {
            Some(run) if run.1 == token.start => run.1 = token.end,
            _ => runs.push((token.start, token.end)),
        }
    }
    (words, runs)
}

fn first_difference(a: &[(usize, usize)], b: &[(usize, usize)]) -> usize {
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map(|(x, y)| x.0.min(y.0))
        .or_else(|| a.get(b.len()).or(b.get(a.len())).map(|run| run.0))
        .unwrap_or(0)
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Word => "a word",
        Kind::Text => "a string",
        Kind::Number => "a number",
        Kind::Parameter => "a parameter",
        Kind::Symbol => "an operator",
    }
}

/// At most 40 characters of a token, for a reason an operator can read.
fn excerpt<'a>(sql: &'a str, token: &Spanned) -> &'a str {
    let text = sql.get(token.start..token.end).unwrap_or("");
    match text.char_indices().nth(40) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Turns sqlparser's locations (lines count `\n`, columns count
/// characters, both from 1) into byte offsets. Locations are asked for in
/// order, so one pass over the string serves them all.
struct Cursor<'a> {
    rest: std::str::CharIndices<'a>,
    len: usize,
    line: u64,
    column: u64,
    byte: usize,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Cursor<'a> {
        Cursor {
            rest: sql.char_indices(),
            len: sql.len(),
            line: 1,
            column: 1,
            byte: 0,
        }
    }

    /// The byte offset of `at`, or `None` if it lies before the last one
    /// asked for or outside the string.
    fn byte(&mut self, at: Location) -> Option<usize> {
        while (self.line, self.column) < (at.line, at.column) {
            let (_, c) = self.rest.next()?;
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        ((self.line, self.column) == (at.line, at.column) && self.byte <= self.len)
            .then_some(self.byte)
    }
}

/// The statement check for one statement (see the module documentation).
fn compare_statement(
    summary: &pg_query::SummaryResult,
    info: &StatementInfo,
) -> Result<(), String> {
    let least = least_class(summary);
    if rank(info.class) < rank(least) {
        return Err(format!(
            "PostgreSQL reads it as {} (at least {:?}), the gateway's parser as {} ({:?})",
            summary.statement_types.first().map_or("?", String::as_str),
            least,
            info.command,
            info.class
        ));
    }
    Ok(())
}

/// The least class the classifier may give a statement: what the statement
/// PostgreSQL reads does itself (its first statement type, the summary's
/// walk starting at the top) and, unless it is plain transaction or session
/// control, at least Write when a data-changing statement is anywhere in it
/// (a data-changing CTE, the statement under `EXPLAIN` or `DECLARE`).
fn least_class(summary: &pg_query::SummaryResult) -> StatementClass {
    use pg_query::protobuf::summary_result::Context;
    let top = summary.statement_types.first().map_or("", String::as_str);
    let mut least = own_class(top);
    let writes = summary.statement_types.iter().any(|t| {
        matches!(
            t.as_str(),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
        )
    }) || summary.tables.iter().any(|t| t.context == Context::Dml);
    if writes
        && rank(least) < rank(StatementClass::Write)
        && rank(least) > rank(StatementClass::Transaction)
    {
        least = StatementClass::Write;
    }
    // `SELECT ... INTO t` creates t.
    if top == "SelectStmt" && summary.tables.iter().any(|t| t.context == Context::Ddl) {
        least = StatementClass::Ddl;
    }
    least
}

/// What a statement PostgreSQL reads as `node_type` does itself, as the
/// least class the classifier may give it.
fn own_class(node_type: &str) -> StatementClass {
    use StatementClass::{Admin, Ddl, Function, Read, Session, Transaction, Write};
    match node_type {
        "SelectStmt" | "ExplainStmt" | "DeclareCursorStmt" | "VariableShowStmt" | "CopyStmt" => {
            Read
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "TruncateStmt" | "LockStmt" => {
            Write
        }
        "TransactionStmt" | "VariableSetStmt" | "FetchStmt" | "ClosePortalStmt" => Transaction,
        "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt" | "DiscardStmt" | "ListenStmt"
        | "UnlistenStmt" | "NotifyStmt" | "LoadStmt" => Session,
        "CallStmt" => Function,
        "DoStmt"
        | "AlterSystemStmt"
        | "CreateRoleStmt"
        | "AlterRoleStmt"
        | "AlterRoleSetStmt"
        | "DropRoleStmt"
        | "GrantStmt"
        | "GrantRoleStmt"
        | "AlterDefaultPrivilegesStmt"
        | "VacuumStmt"
        | "CheckPointStmt"
        | "ReassignOwnedStmt"
        | "DropOwnedStmt" => Admin,
        _ => Ddl,
    }
}

/// The name check for one statement (see the module documentation).
fn compare_names(summary: &pg_query::SummaryResult, info: &StatementInfo) -> Result<(), String> {
    for table in &summary.tables {
        // New names in DDL (`RENAME TO`, `CREATE ... AS`) need not be
        // reported by a classifier that already calls the statement DDL.
        if table.context == pg_query::protobuf::summary_result::Context::Ddl
            && rank(info.class) >= rank(StatementClass::Ddl)
        {
            continue;
        }
        let known = if table.schema_name.is_empty() {
            info.tables.iter().any(|t| {
                t.rsplit_once('.')
                    .is_some_and(|(_, n)| n == table.table_name)
            })
        } else {
            let name = format!("{}.{}", table.schema_name, table.table_name);
            info.tables.contains(&name)
        };
        if !known {
            return Err(format!(
                "PostgreSQL reads table `{}`, which the gateway's parser did not see",
                table.name
            ));
        }
    }
    for function in &summary.functions {
        // Functions created, dropped or renamed are names in DDL, not calls.
        if function.context != pg_query::protobuf::summary_result::Context::Call {
            continue;
        }
        let parts: Vec<String> = function.name.split('.').map(str::to_owned).collect();
        if functions::judge(&parts) == functions::Verdict::Safe {
            continue;
        }
        if !info.functions.contains(&function.name) {
            return Err(format!(
                "PostgreSQL reads a call of `{}`, which the gateway's parser did not see",
                function.name
            ));
        }
    }
    Ok(())
}
