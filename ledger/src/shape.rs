//! Compact statement records (docs/ledger-format.md, section 7.2).
//!
//! Most of a statement's record repeats from one statement to the next: a
//! pgbench `SELECT abalance FROM pgbench_accounts WHERE aid = 149312`
//! differs from the previous one in six digits, and its tables, columns,
//! class and verdict not at all. So the writer records what statements of
//! one shape share once per segment, as a [`StatementShape`], and each
//! statement as its literals and a reference to that shape
//! ([`ShapedStatement`]). Readers put the two back together into the
//! [`Statement`] the gateway recorded.
//!
//! The split is lossless by construction: the text is the template
//! interleaved with the literals, cut at byte positions of the text itself.
//! How literals are found ([`split`]) therefore decides only how well
//! records compress, never what they say. The reference carries a digest of
//! the shape's encoding, so a statement's record (hashed into the log)
//! binds its shape's content wherever a reader found the shape.

use std::collections::HashMap;
use std::ops::Range;

use crate::cbor::{Bytes, Cbor, Enc};
use crate::event::{
    Event, EventBody, EventKind, PendingEvent, ShapedStatement, Statement, StatementShape,
};
use crate::LedgerError;

/// Bytes of a shape digest: BLAKE3 truncated to 128 bits, which keeps
/// finding a second shape with the same digest out of reach.
pub const DIGEST_LEN: usize = 16;

/// Shapes a reader keeps decoded; past this it starts over (they are
/// found again by sequence number).
const CACHED_SHAPES: usize = 4096;

/// The digest a [`ShapedStatement`] carries of its shape: the first
/// [`DIGEST_LEN`] bytes of BLAKE3 over the shape's body encoding.
pub fn digest(shape_body: &[u8]) -> [u8; DIGEST_LEN] {
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(&blake3::hash(shape_body).as_bytes()[..DIGEST_LEN]);
    out
}

/// `sql` cut into template pieces and literals, with
/// `pieces.len() == literals.len() + 1` and the text equal to
/// `pieces[0] + literals[0] + pieces[1] + ...`.
pub fn split(sql: &str) -> (Vec<&str>, Vec<&str>) {
    let spans = literal_spans(sql.as_bytes());
    let mut pieces = Vec::with_capacity(spans.len() + 1);
    let mut literals = Vec::with_capacity(spans.len());
    let mut at = 0;
    for span in spans {
        pieces.push(&sql[at..span.start]);
        literals.push(&sql[span.clone()]);
        at = span.end;
    }
    pieces.push(&sql[at..]);
    (pieces, literals)
}

/// The text a template and its literals spell; `None` unless the template
/// has exactly one more piece than there are literals.
pub fn join(template: &[String], literals: &[String]) -> Option<String> {
    if template.len() != literals.len() + 1 {
        return None;
    }
    let len = template.iter().chain(literals).map(String::len).sum();
    let mut sql = String::with_capacity(len);
    for (i, piece) in template.iter().enumerate() {
        sql.push_str(piece);
        if let Some(literal) = literals.get(i) {
            sql.push_str(literal);
        }
    }
    Some(sql)
}

/// Byte ranges of the literals PostgreSQL's lexer would see: numbers,
/// quoted strings (`'...'`, `E'...'`, `B'...'`, `X'...'`, `U&'...'`) and
/// dollar-quoted strings. Comments, quoted identifiers and placeholders
/// (`$1`) are skipped. Every range starts and ends at an ASCII byte, so
/// it cuts the text at character boundaries.
fn literal_spans(b: &[u8]) -> Vec<Range<usize>> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let after_word = i > 0 && word(b[i - 1]);
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = comment_end(b, i),
            b'"' => i = quoted_end(b, i, b'"', false),
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && word(b[i - 2]));
                let end = quoted_end(b, i, b'\'', escapes);
                spans.push(i..end);
                i = end;
            }
            b'$' if !after_word => match dollar_quoted_end(b, i) {
                Some(end) => {
                    spans.push(i..end);
                    i = end;
                }
                None => i += 1,
            },
            b'0'..=b'9' if !after_word => {
                let end = number_end(b, i);
                spans.push(i..end);
                i = end;
            }
            b'.' if !after_word && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = number_end(b, i);
                spans.push(i..end);
                i = end;
            }
            _ => i += 1,
        }
    }
    spans
}

/// One past a `/* ... */` comment starting at `i` (they nest).
fn comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// One past the quoted text starting at `i` (a doubled quote stays inside;
/// with `escapes`, so does a backslash-escaped one); the end of the text if
/// it is not closed.
fn quoted_end(b: &[u8], i: usize, quote: u8, escapes: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if escapes && b[j] == b'\\' {
            j += 2;
        } else if b[j] == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// One past a dollar-quoted string starting at `i` (`$tag$ ... $tag$`),
/// or `None` when `i` starts no dollar quote (a placeholder like `$1`).
fn dollar_quoted_end(b: &[u8], i: usize) -> Option<usize> {
    let tag_len = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))?;
    let tag_end = i + 1 + tag_len;
    if b.get(tag_end) != Some(&b'$') || b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let delimiter = &b[i..=tag_end];
    let body = tag_end + 1;
    Some(
        b[body..]
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map_or(b.len(), |p| body + p + delimiter.len()),
    )
}

/// One past a numeric literal starting at `i`: digits, a fraction, an
/// exponent.
fn number_end(b: &[u8], i: usize) -> usize {
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = digits(i);
    if b.get(j) == Some(&b'.') {
        j = digits(j + 1);
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(j + 1), Some(b'+' | b'-')));
        if b.get(j + 1 + sign).is_some_and(u8::is_ascii_digit) {
            j = digits(j + 1 + sign);
        }
    }
    j
}

/// A shape the writer records before the first statement that refers to it.
#[derive(Debug, Clone)]
pub struct PendingShape {
    /// [`digest`] of `body`.
    pub digest: [u8; DIGEST_LEN],
    /// The [`StatementShape`] body's canonical encoding.
    pub body: Vec<u8>,
}

/// Bytes that the reference adds at the end of a [`ShapedStatement`] body
/// whose shape is event 0: keys 8 and 9, `0`, and a 16-byte string.
const PLACEHOLDER_REFERENCE: usize = 4 + DIGEST_LEN;

impl Statement {
    /// The statement as the writer records it: its shape, and its record
    /// without the reference to the shape (the last two entries of the
    /// body), which the writer appends once it knows where the shape is
    /// ([`reference`]).
    pub fn to_shaped_pending(&self) -> PendingEvent {
        let (pieces, literals) = split(&self.sql);
        let shape = StatementShape {
            template: pieces.into_iter().map(str::to_owned).collect(),
            class: self.class,
            tables: self.tables.clone(),
            columns: self.columns.clone(),
            action: self.action,
            rule: self.rule.clone(),
            message: self.message.clone(),
        };
        let mut enc = Enc::default();
        shape.encode(&mut enc);
        let shape_body = enc.into_bytes();
        let shaped = ShapedStatement {
            session: self.session,
            identity: self.identity.clone(),
            query: self.query,
            literals: literals.into_iter().map(str::to_owned).collect(),
            params: self.params.clone(),
            statement: self.statement.clone(),
            portal: self.portal.clone(),
            protocol: self.protocol,
            shape: 0,
            shape_digest: Bytes(vec![0; DIGEST_LEN]),
        };
        let mut enc = Enc::default();
        shaped.encode(&mut enc);
        let mut body = enc.into_bytes();
        body.truncate(body.len() - PLACEHOLDER_REFERENCE);
        PendingEvent {
            kind: EventKind::ShapedStatement,
            session: Some(self.session),
            identity: Some(self.identity.clone()),
            body,
            shape: Some(PendingShape {
                digest: digest(&shape_body),
                body: shape_body,
            }),
        }
    }

    /// The statement a shaped record and its shape spell; `None` when the
    /// template does not fit the literals.
    pub fn from_shaped(shaped: ShapedStatement, shape: &StatementShape) -> Option<Statement> {
        Some(Statement {
            sql: join(&shape.template, &shaped.literals)?,
            session: shaped.session,
            identity: shaped.identity,
            query: shaped.query,
            params: shaped.params,
            statement: shaped.statement,
            portal: shaped.portal,
            protocol: shaped.protocol,
            action: shape.action,
            rule: shape.rule.clone(),
            class: shape.class,
            tables: shape.tables.clone(),
            columns: shape.columns.clone(),
            message: shape.message.clone(),
        })
    }
}

/// The end of a [`ShapedStatement`] body: its reference to the shape
/// recorded as event `shape`.
pub fn reference(shape: u64, digest: &[u8; DIGEST_LEN]) -> Vec<u8> {
    let mut enc = Enc::with_buffer(Vec::with_capacity(PLACEHOLDER_REFERENCE + 8));
    enc.uint(8);
    enc.uint(shape);
    enc.uint(9);
    enc.bytes(digest);
    enc.into_bytes()
}

/// Turns [`ShapedStatement`] events back into the [`Statement`]s they
/// record, finding each shape by its sequence number and checking it
/// against the digest the statement's record carries.
#[derive(Default)]
pub struct ShapeResolver {
    known: HashMap<u64, ([u8; DIGEST_LEN], StatementShape)>,
}

impl ShapeResolver {
    /// Keeps a shape that passes by (a reader going through the log in
    /// order), so statements that refer to it need no lookup.
    pub fn note(&mut self, event: &Event) {
        if let EventBody::StatementShape(shape) = &event.body {
            self.keep(event.seq, shape.clone());
        }
    }

    fn keep(&mut self, seq: u64, shape: StatementShape) -> &([u8; DIGEST_LEN], StatementShape) {
        if self.known.len() >= CACHED_SHAPES && !self.known.contains_key(&seq) {
            self.known.clear();
        }
        let mut enc = Enc::default();
        shape.encode(&mut enc);
        let entry = (digest(&enc.into_bytes()), shape);
        self.known.entry(seq).or_insert(entry)
    }

    /// `event`, with a [`ShapedStatement`] turned into its [`Statement`];
    /// other events as they are. `fetch` reads the record of an event by
    /// sequence number. A shape that is missing, of another kind, after the
    /// statement, or not the one the statement's digest names, is damage.
    pub fn resolve(
        &mut self,
        event: Event,
        fetch: impl FnOnce(u64) -> Result<Option<Vec<u8>>, LedgerError>,
    ) -> Result<Event, LedgerError> {
        let shaped = match event.body {
            EventBody::ShapedStatement(shaped) => shaped,
            body => return Ok(Event { body, ..event }),
        };
        let (seq, at) = (event.seq, shaped.shape);
        let damaged = |why: &str| {
            LedgerError::Damaged(format!(
                "event {seq} records a statement whose shape (event {at}) {why}: the ledger has been \
                 altered or is incomplete; run gatehouse-verify on it"
            ))
        };
        if at >= seq {
            return Err(damaged("does not come before it"));
        }
        if !self.known.contains_key(&at) {
            let bytes = fetch(at)?.ok_or_else(|| damaged("is not in the ledger"))?;
            let found = Event::from_bytes(&bytes).map_err(|_| damaged("cannot be decoded"))?;
            match found.body {
                EventBody::StatementShape(shape) if found.seq == at => {
                    self.keep(at, shape);
                }
                _ => return Err(damaged("is another kind of event")),
            }
        }
        let (digest, shape) = &self.known[&at];
        if shaped.shape_digest.0 != digest[..] {
            return Err(damaged("differs from the one it was recorded with"));
        }
        let statement = Statement::from_shaped(shaped, shape)
            .ok_or_else(|| damaged("has a template that does not fit its literals"))?;
        Ok(Event {
            seq,
            ts: event.ts,
            body: EventBody::Statement(statement),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Protocol, StatementClass};
    use proptest::prelude::*;

    fn literals(sql: &str) -> Vec<&str> {
        split(sql).1
    }

    #[test]
    fn literals_are_what_postgres_reads_as_constants() {
        assert_eq!(
            literals("SELECT abalance FROM pgbench_accounts WHERE aid = 149312;"),
            ["149312"]
        );
        assert_eq!(
            literals("UPDATE t SET a = a + -2.5e-3 WHERE b = 'it''s' AND c = E'x\\'y'"),
            ["2.5e-3", "'it''s'", "'x\\'y'"]
        );
        assert_eq!(
            literals("SELECT $1, t1.c2, \"col 3\", x'1f', $$a 'b' 4$$, $f$q$f$ FROM t1"),
            ["'1f'", "$$a 'b' 4$$", "$f$q$f$"]
        );
        assert_eq!(
            literals("SELECT 1 -- 2\n, /* 3 /* 4 */ 5 */ 6, .5"),
            ["1", "6", ".5"]
        );
        assert_eq!(literals("SELECT 'unterminated"), ["'unterminated"]);
    }

    #[test]
    fn statements_of_one_shape_share_it() {
        let a = split("SELECT abalance FROM pgbench_accounts WHERE aid = 1;").0;
        let b = split("SELECT abalance FROM pgbench_accounts WHERE aid = 99999;").0;
        assert_eq!(a, b);
    }

    fn statement(sql: &str) -> Statement {
        Statement {
            session: 4,
            identity: "agent".into(),
            query: 9,
            sql: sql.into(),
            params: vec![],
            statement: None,
            portal: Some("p".into()),
            protocol: Protocol::Extended,
            action: Action::Deny,
            rule: Some("no-ssn".into()),
            class: StatementClass::Read,
            tables: vec!["public.t".into()],
            columns: vec!["public.t.ssn".into()],
            message: Some("no".into()),
        }
    }

    /// The record the writer makes of `statement` with its shape at `at`.
    fn record(statement: &Statement, seq: u64, at: u64) -> (Event, Event) {
        let pending = statement.to_shaped_pending();
        let shape = pending.shape.unwrap();
        let mut body = pending.body;
        body.extend(reference(at, &shape.digest));
        let shaped = Event::from_bytes(&crate::event::record_bytes(
            seq,
            5,
            EventKind::ShapedStatement,
            &body,
        ))
        .unwrap();
        let shape = Event::from_bytes(&crate::event::record_bytes(
            at,
            5,
            EventKind::StatementShape,
            &shape.body,
        ))
        .unwrap();
        (shape, shaped)
    }

    #[test]
    fn a_shaped_record_resolves_to_the_statement() {
        let original = statement("SELECT ssn FROM t WHERE id = 42");
        let (shape, shaped) = record(&original, 8, 3);
        let mut resolver = ShapeResolver::default();
        let bytes = shape.to_bytes();
        let got = resolver
            .resolve(shaped.clone(), |seq| {
                assert_eq!(seq, 3);
                Ok(Some(bytes))
            })
            .unwrap();
        assert_eq!(got.body, EventBody::Statement(original));
        assert_eq!((got.seq, got.ts), (8, 5));
    }

    #[test]
    fn a_shape_other_than_the_one_recorded_is_refused() {
        let (_, shaped) = record(&statement("SELECT ssn FROM t WHERE id = 42"), 8, 3);
        let mut other = statement("SELECT ssn FROM t WHERE id = 42");
        other.action = Action::Allow;
        let (forged, _) = record(&other, 8, 3);
        let err = ShapeResolver::default()
            .resolve(shaped.clone(), |_| Ok(Some(forged.to_bytes())))
            .unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
        let err = ShapeResolver::default()
            .resolve(shaped, |_| Ok(None))
            .unwrap_err();
        assert!(err.to_string().contains("not in the ledger"), "{err}");
    }

    proptest! {
        #[test]
        fn split_then_join_is_the_text(sql in "\\PC{0,80}|[-$'\"/*eE0-9. a-z\\\\\n]{0,60}") {
            let (pieces, literals) = split(&sql);
            prop_assert_eq!(pieces.len(), literals.len() + 1);
            let pieces: Vec<String> = pieces.into_iter().map(str::to_owned).collect();
            let literals: Vec<String> = literals.into_iter().map(str::to_owned).collect();
            prop_assert_eq!(join(&pieces, &literals), Some(sql.clone()));
        }

        #[test]
        fn every_statement_round_trips_through_its_record(sql in "\\PC{0,60}|[-$'\"0-9 a-z]{0,40}") {
            let original = statement(&sql);
            let (shape, shaped) = record(&original, 100, 7);
            let mut resolver = ShapeResolver::default();
            resolver.note(&shape);
            let got = resolver.resolve(shaped, |_| unreachable!()).unwrap();
            prop_assert_eq!(got.body, EventBody::Statement(original));
        }
    }
}
