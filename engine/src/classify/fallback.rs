//! What to do when sqlparser cannot read a query string.
//!
//! An unreadable statement is Unknown, and Unknown is denied. Two refinements
//! keep that useful without weakening it:
//!
//! * A multi-statement string is split at top-level semicolons by sqlparser's
//!   own tokenizer (which follows PostgreSQL's rules for quotes, dollar
//!   quotes and nested comments) and each piece is classified on its own, so
//!   an operator sees which statement was unreadable. This is only done when
//!   the split is certain to match PostgreSQL's: parentheses balance, no
//!   `BEGIN ATOMIC` body (whose semicolons do not end statements), and at
//!   least one piece really fails to parse on its own (otherwise the split
//!   disagrees with the parser and the whole string stays one Unknown).
//! * A tiny, exact allowlist of statements sqlparser 0.64 does not know is
//!   recognised from their tokens: `CHECKPOINT`, `VACUUM ...` and
//!   `ANALYZE ...` (Admin), `TABLE name` (Read), and `COPY table FROM STDIN`
//!   / `TO STDOUT` with options sqlparser does not know, such as pgbench's
//!   `copy ... from stdin with (freeze on)` (Write / Read). Their grammar is
//!   checked token by token; anything that deviates stays Unknown.

use gatehouse_ledger::event::StatementClass;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer, Word};

use super::names;
use super::statements::classify_statement;
use crate::StatementInfo;

/// The statement for a parse failure: Unknown, with the parser's complaint.
pub(super) fn unreadable(err: &ParserError) -> StatementInfo {
    unknown_info(format!(
        "the SQL parser could not read this statement: {err}"
    ))
}

/// An Unknown statement with the given reason.
pub(super) fn unknown_info(reason: String) -> StatementInfo {
    StatementInfo {
        class: StatementClass::Unknown,
        command: "UNKNOWN".to_owned(),
        tables: Vec::new(),
        columns: Vec::new(),
        functions: Vec::new(),
        dangerous: Vec::new(),
        reason: Some(reason),
        references: Vec::new(),
    }
}

/// Classifies a query string that sqlparser failed to parse as a whole.
pub(super) fn classify_unparsed(sql: &str, err: &ParserError) -> Vec<StatementInfo> {
    let whole = || vec![unreadable(err)];
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return whole();
    };
    let Some(pieces) = split(tokens) else {
        return whole();
    };
    match pieces.as_slice() {
        [] => whole(),
        [only] => vec![unparsed_piece(only, err)],
        _ => {
            let mut statements = Vec::with_capacity(pieces.len());
            let mut any_failed = false;
            for piece in pieces {
                let parsed = Parser::new(&PostgreSqlDialect {})
                    .with_tokens(piece.clone())
                    .parse_statements();
                match parsed {
                    Ok(stmts) => match stmts.as_slice() {
                        [stmt] => statements.push(classify_statement(stmt)),
                        _ => return whole(),
                    },
                    Err(e) => {
                        any_failed = true;
                        statements.push(unparsed_piece(&piece, &e));
                    }
                }
            }
            if any_failed {
                statements
            } else {
                whole()
            }
        }
    }
}

/// One statement sqlparser could not parse: recognised from its tokens if
/// it is on the allowlist, else Unknown.
fn unparsed_piece(piece: &[Token], err: &ParserError) -> StatementInfo {
    if let Some(info) = recognise(piece) {
        return info;
    }
    let first = piece.iter().find(|t| !matches!(t, Token::Whitespace(_)));
    if first.and_then(keyword).as_deref() == Some("DO") {
        let mut info = unknown_info(format!(
            "anonymous code blocks (DO) cannot be judged (the SQL parser could not read this statement: {err})"
        ));
        info.command = "DO".to_owned();
        return info;
    }
    unreadable(err)
}

/// Splits tokens into statements at top-level semicolons; drops pieces that
/// hold only whitespace and comments. `None` when the split could differ
/// from PostgreSQL's (unbalanced parentheses, `BEGIN ATOMIC`).
fn split(tokens: Vec<Token>) -> Option<Vec<Vec<Token>>> {
    let mut pieces = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    let mut depth: usize = 0;
    for token in tokens {
        match &token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.checked_sub(1)?,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("atomic") => {
                return None
            }
            Token::SemiColon if depth == 0 => {
                pieces.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(token);
    }
    if depth != 0 {
        return None;
    }
    pieces.push(current);
    pieces.retain(|p| p.iter().any(|t| !matches!(t, Token::Whitespace(_))));
    Some(pieces)
}

/// Recognises the exact allowlist of statements sqlparser cannot parse.
fn recognise(piece: &[Token]) -> Option<StatementInfo> {
    let tokens: Vec<&Token> = piece
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let (first, rest) = tokens.split_first()?;
    let first = keyword(first)?;
    match first.as_str() {
        "CHECKPOINT" if rest.is_empty() => Some(info(
            StatementClass::Admin,
            "CHECKPOINT",
            Vec::new(),
            Vec::new(),
        )),
        "VACUUM" => maintenance(
            rest,
            "VACUUM",
            &["FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"],
        ),
        "ANALYZE" | "ANALYSE" => maintenance(rest, "ANALYZE", &["VERBOSE"]),
        "TABLE" => table_command(rest),
        "COPY" => copy_command(rest),
        "MOVE" => move_command(rest),
        _ => None,
    }
}

fn info(
    class: StatementClass,
    command: &str,
    mut tables: Vec<String>,
    mut columns: Vec<String>,
) -> StatementInfo {
    tables.sort();
    tables.dedup();
    columns.sort();
    columns.dedup();
    StatementInfo {
        class,
        command: command.to_owned(),
        tables,
        columns,
        functions: Vec::new(),
        dangerous: Vec::new(),
        reason: None,
        references: Vec::new(),
    }
}

/// An unquoted word, upper-cased.
fn keyword(token: &Token) -> Option<String> {
    match token {
        Token::Word(Word {
            value,
            quote_style: None,
            ..
        }) => Some(value.to_ascii_uppercase()),
        _ => None,
    }
}

/// An identifier (quoted or not).
fn identifier(token: Option<&&Token>) -> Option<String> {
    match token {
        Some(Token::Word(Word {
            value, quote_style, ..
        })) => Some(names::word(value, quote_style.is_some())),
        _ => None,
    }
}

/// A dotted name of one to three parts starting at `i`; returns the parts
/// and the index after it.
fn name(tokens: &[&Token], mut i: usize) -> Option<(Vec<String>, usize)> {
    let mut parts = vec![identifier(tokens.get(i))?];
    i += 1;
    while parts.len() < 3 && matches!(tokens.get(i), Some(Token::Period)) {
        parts.push(identifier(tokens.get(i + 1))?);
        i += 2;
    }
    Some((parts, i))
}

/// `VACUUM`/`ANALYZE` options and table list:
/// `[ ( option [, ...] ) | word_option ... ] [ table [ ( column [, ...] ) ] [, ...] ]`.
fn maintenance(tokens: &[&Token], command: &str, word_options: &[&str]) -> Option<StatementInfo> {
    let mut i = 0;
    if matches!(tokens.first(), Some(Token::LParen)) {
        i = 1;
        loop {
            match tokens.get(i)? {
                Token::RParen => {
                    i += 1;
                    break;
                }
                Token::Word(_)
                | Token::Number(..)
                | Token::Comma
                | Token::SingleQuotedString(_) => i += 1,
                _ => return None,
            }
        }
    } else {
        while let Some(word) = tokens.get(i).and_then(|t| keyword(t)) {
            if !word_options.contains(&word.as_str()) {
                break;
            }
            i += 1;
        }
    }
    let mut tables = Vec::new();
    let mut columns = Vec::new();
    while i < tokens.len() {
        let (parts, next) = name(tokens, i)?;
        i = next;
        let candidates = names::relation_candidates(&parts);
        if matches!(tokens.get(i), Some(Token::LParen)) {
            i += 1;
            loop {
                let column = identifier(tokens.get(i))?;
                i += 1;
                columns.extend(candidates.iter().map(|t| format!("{t}.{column}")));
                match tokens.get(i)? {
                    Token::Comma => i += 1,
                    Token::RParen => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        tables.extend(candidates);
        match tokens.get(i) {
            None => break,
            Some(Token::Comma) => i += 1,
            Some(_) => return None,
        }
    }
    Some(info(StatementClass::Admin, command, tables, columns))
}

/// `TABLE [ONLY] name [*]`: every column of one table.
fn table_command(tokens: &[&Token]) -> Option<StatementInfo> {
    let mut i = 0;
    if tokens.first().and_then(|t| keyword(t)).as_deref() == Some("ONLY") {
        i = 1;
    }
    let (parts, mut i) = name(tokens, i)?;
    if matches!(tokens.get(i), Some(Token::Mul)) {
        i += 1;
    }
    if i != tokens.len() {
        return None;
    }
    let tables = names::relation_candidates(&parts);
    let columns = tables.iter().map(|t| format!("{t}.*")).collect();
    Some(info(StatementClass::Read, "TABLE", tables, columns))
}

/// `MOVE [ direction ] [ FROM | IN ] cursor`: repositions a cursor without
/// returning rows. It runs the cursor's query as far as it moves, like
/// `FETCH`, so it is a read like `FETCH` (and the gateway refuses it on
/// protocol-level portals, see `fetched_cursors`).
fn move_command(tokens: &[&Token]) -> Option<StatementInfo> {
    let count = |i: usize| -> Option<usize> {
        match tokens.get(i)? {
            Token::Number(..) => Some(i + 1),
            Token::Minus | Token::Plus => match tokens.get(i + 1)? {
                Token::Number(..) => Some(i + 2),
                _ => None,
            },
            _ => None,
        }
    };
    let mut i = 0;
    match tokens.first().and_then(|t| keyword(t)).as_deref() {
        Some("NEXT" | "PRIOR" | "FIRST" | "LAST" | "ALL") => i = 1,
        Some("ABSOLUTE" | "RELATIVE") => i = count(1)?,
        Some("FORWARD" | "BACKWARD") => {
            i = 1;
            if tokens.get(1).and_then(|t| keyword(t)).as_deref() == Some("ALL") {
                i = 2;
            } else if let Some(next) = count(1) {
                i = next;
            }
        }
        _ => {
            if let Some(next) = count(0) {
                i = next;
            }
        }
    }
    if matches!(
        tokens.get(i).and_then(|t| keyword(t)).as_deref(),
        Some("FROM" | "IN")
    ) {
        i += 1;
    }
    identifier(tokens.get(i))?;
    if i + 1 != tokens.len() {
        return None;
    }
    Some(info(StatementClass::Read, "MOVE", Vec::new(), Vec::new()))
}

/// `COPY table [ ( column [, ...] ) ] FROM STDIN | TO STDOUT [ options ]`
/// where sqlparser rejects only the options. The source must be a plain
/// table and the target the client connection, so the options (words,
/// numbers, strings, parenthesised lists) cannot make it read or write
/// server files or run programs; PostgreSQL rejects any it does not know.
fn copy_command(tokens: &[&Token]) -> Option<StatementInfo> {
    let (parts, mut i) = name(tokens, 0)?;
    let tables = names::relation_candidates(&parts);
    let mut columns = Vec::new();
    if matches!(tokens.get(i), Some(Token::LParen)) {
        i += 1;
        loop {
            let column = identifier(tokens.get(i))?;
            i += 1;
            columns.extend(tables.iter().map(|t| format!("{t}.{column}")));
            match tokens.get(i)? {
                Token::Comma => i += 1,
                Token::RParen => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if columns.is_empty() {
        columns = tables.iter().map(|t| format!("{t}.*")).collect();
    }
    let direction = keyword(tokens.get(i)?)?;
    let target = keyword(tokens.get(i + 1)?)?;
    let class = match (direction.as_str(), target.as_str()) {
        ("FROM", "STDIN") => StatementClass::Write,
        ("TO", "STDOUT") => StatementClass::Read,
        _ => return None,
    };
    let mut depth: usize = 0;
    for token in &tokens[i + 2..] {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.checked_sub(1)?,
            Token::Word(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::Comma
            | Token::Mul => {}
            _ => return None,
        }
    }
    if depth != 0 {
        return None;
    }
    Some(info(class, "COPY", tables, columns))
}
