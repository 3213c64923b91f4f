//! Literal templates: one classification for every query string that
//! differs from another only in literal values.
//!
//! The simple protocol sends values inline: `pgbench -S` sends
//! `... WHERE aid = 48213` with a new number each time, so a cache keyed by
//! the exact text never hits and every statement is parsed. A
//! [`LiteralTemplate`] keeps every token the tokenizer read exactly as
//! read (keywords, identifiers, operators, placeholders, whitespace and
//! comments) and replaces only plain decimal numbers (up to 9 digits) and
//! standard string literals by markers.
//!
//! Sharing a classification between query strings of one template is sound
//! because, for a string the parser reads:
//!
//! * the parser sees the same token stream apart from those values, and
//!   nothing it decides depends on a number of at most 9 digits or on the
//!   content of a string literal, except where it turns the literal into
//!   something other than a literal value (a string alias, `'t'.*`, a
//!   `varchar(10)` length, a file name);
//! * [`classify_templated`] shares a classification only when the parsed
//!   tree holds exactly the template's literals as literal value nodes,
//!   which rules out every such case: the literal became a value, and
//!   nothing else;
//! * the classifier never reads the content of a literal value node (only
//!   masking's column-use tracking reads ORDER BY positions, and it does
//!   not use templates), except the setting name of a `set_config` call,
//!   which is dangerous: a classification with a dangerous operation is
//!   never shared.
//!
//! A string the parser cannot read is never shared: the complaint quotes
//! positions and text. The corpus test `templates_share_only_sound_classifications`
//! checks the whole argument on every corpus statement.

use std::ops::ControlFlow;

use sqlparser::ast::{Statement, Value, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Longest number (in digits) a template generalizes: every such number
/// fits a 32-bit integer, which PostgreSQL's scanner reads as an integer
/// constant wherever it stands (a larger one is a numeric constant, which
/// some grammar positions refuse, `FETCH 9999999999 FROM c` for one), and
/// fits sqlparser's `u64` and `i64` conversions, so none can fail.
const MAX_DIGITS: usize = 9;

/// Longest query string given a template; longer ones are classified (and
/// cached) by their exact text.
const MAX_TEMPLATE_SQL: usize = 4 * 1024;

/// A query string with its literal values taken out: see the module
/// documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralTemplate {
    key: String,
    /// The generalized literals, in token order.
    literals: Vec<Literal>,
}

/// A literal value the template generalizes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Literal {
    Number(String),
    String(String),
}

impl LiteralTemplate {
    /// The template of `sql`, or `None` when it has no literal to
    /// generalize, is longer than 4 KiB or cannot be tokenized.
    pub fn of(sql: &str) -> Option<LiteralTemplate> {
        // NUL separates tokens in the key; the protocol cannot carry one in
        // a query string, and a string holding one gets no template.
        if sql.len() > MAX_TEMPLATE_SQL || sql.contains('\0') {
            return None;
        }
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
        let mut key = String::with_capacity(sql.len() + 16);
        // Starts with NUL, which no query string holds (the protocol ends
        // strings with it), so a template key never equals a query string.
        key.push('\0');
        let mut literals = Vec::new();
        for token in tokens {
            match token {
                Token::Number(n, false) if generalized_number(&n) => {
                    key.push_str("\0n");
                    literals.push(Literal::Number(n));
                }
                Token::SingleQuotedString(s) => {
                    key.push_str("\0s");
                    literals.push(Literal::String(s));
                }
                other => push_token(&mut key, &other),
            }
        }
        if literals.is_empty() {
            return None;
        }
        Some(LiteralTemplate { key, literals })
    }

    /// The cache key: equal for two query strings exactly when they differ
    /// only in generalized literal values.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether parsed `statements` hold exactly this template's literals as
    /// literal value nodes (and no other number or string value).
    pub(super) fn matches_values(&self, statements: &[Statement]) -> bool {
        let mut values = ValueCollector(Vec::new());
        for statement in statements {
            let _ = statement.visit(&mut values);
        }
        let mut found = values.0;
        let mut expected = self.literals.clone();
        found.sort();
        expected.sort();
        found == expected
    }
}

/// Appends one token to a template key, so that distinct token streams give
/// distinct keys: each token is NUL and a form no other token has. The
/// common tokens get short forms (a lowercase tag or a punctuation
/// character); every other token is written as its Debug output, which
/// starts with its variant's capitalised name and quotes and escapes every
/// string inside it.
fn push_token(key: &mut String, token: &Token) {
    use sqlparser::tokenizer::Whitespace;
    key.push('\0');
    match token {
        Token::Word(w) => {
            // The keyword follows from the text and the quoting.
            match w.quote_style {
                None => key.push_str("w0"),
                Some(q) => {
                    key.push_str("w1");
                    key.push(q);
                }
            }
            key.push_str(&w.value);
        }
        Token::Placeholder(p) => {
            key.push('p');
            key.push_str(p);
        }
        Token::Whitespace(Whitespace::Space) => key.push(' '),
        Token::Whitespace(Whitespace::Newline) => key.push('\n'),
        Token::Whitespace(Whitespace::Tab) => key.push('\t'),
        Token::Comma => key.push(','),
        Token::Period => key.push('.'),
        Token::LParen => key.push('('),
        Token::RParen => key.push(')'),
        Token::Eq => key.push('='),
        Token::SemiColon => key.push(';'),
        Token::Mul => key.push('*'),
        other => {
            use std::fmt::Write;
            let _ = write!(key, "{other:?}");
        }
    }
}

/// Whether a number token is generalized: plain decimal digits, at most 9.
fn generalized_number(n: &str) -> bool {
    n.len() <= MAX_DIGITS && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
}

/// Collects every value node a template generalizes: plain numbers of at
/// most 9 digits and standard strings. Others are spelled out in the key.
/// It never stops a visit early.
struct ValueCollector(Vec<Literal>);

impl Visitor for ValueCollector {
    type Break = ();

    fn pre_visit_value(&mut self, value: &sqlparser::ast::ValueWithSpan) -> ControlFlow<()> {
        match &value.value {
            Value::Number(n, false) => {
                let n = n.to_string();
                if generalized_number(&n) {
                    self.0.push(Literal::Number(n));
                }
            }
            Value::SingleQuotedString(s) => self.0.push(Literal::String(s.clone())),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::LiteralTemplate;

    fn key(sql: &str) -> Option<String> {
        LiteralTemplate::of(sql).map(|t| t.key().to_owned())
    }

    #[test]
    fn literal_values_do_not_change_the_key() {
        let a = key("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;").unwrap();
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap(),
            a
        );
        assert_eq!(
            key("SELECT * FROM t WHERE name = 'bob'"),
            key("SELECT * FROM t WHERE name = 'it''s'")
        );
    }

    #[test]
    fn everything_else_does() {
        let a = key("SELECT a FROM t WHERE id = 5").unwrap();
        for other in [
            "SELECT a FROM t WHERE id = 5.0",
            "SELECT a FROM t WHERE id = 1e5",
            "SELECT a FROM t WHERE id = '5'",
            "SELECT a FROM t WHERE id = E'5'",
            "SELECT a FROM t WHERE id = $$5$$",
            "SELECT a FROM t WHERE id =  5",
            "SELECT a FROM t WHERE id = 5 -- x",
            "SELECT a FROM t WHERE id = 1234567890123456789",
            "SELECT a FROM \"t\" WHERE id = 5",
            "SELECT a FROM T WHERE id = 5",
            "select a from t where id = 5",
        ] {
            assert_ne!(key(other).as_deref(), Some(a.as_str()), "{other}");
        }
    }

    #[test]
    fn no_template_without_literals_or_tokens() {
        assert_eq!(key("SELECT a FROM t WHERE id = $1"), None);
        assert_eq!(key("SELECT 'unterminated"), None);
        assert_eq!(key(&format!("SELECT {}", "1 + ".repeat(2000) + "1")), None);
    }

    /// The token streams as the tokenizer reads them, literals
    /// generalized: what two strings must share to share a key.
    fn stream(sql: &str) -> Option<Vec<String>> {
        use sqlparser::dialect::PostgreSqlDialect;
        use sqlparser::tokenizer::{Token, Tokenizer};
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
        Some(
            tokens
                .into_iter()
                .map(|t| match t {
                    Token::Number(n, false) if super::generalized_number(&n) => "n".into(),
                    Token::SingleQuotedString(_) => "s".into(),
                    other => format!("{other:?}"),
                })
                .collect(),
        )
    }

    proptest::proptest! {
        /// Keys are equal exactly when the generalized token streams are.
        #[test]
        fn keys_are_equal_exactly_when_token_streams_are(
            a in proptest::collection::vec(0usize..PIECES.len(), 1..8),
            b in proptest::collection::vec(0usize..PIECES.len(), 1..8),
        ) {
            let text = |v: &[usize]| v.iter().map(|&i| PIECES[i]).collect::<String>();
            let (a, b) = (format!("SELECT {} 1", text(&a)), format!("SELECT {} 1", text(&b)));
            if let (Some(ka), Some(kb)) = (key(&a), key(&b)) {
                proptest::prop_assert_eq!(ka == kb, stream(&a) == stream(&b), "{:?} / {:?}", a, b);
            }
        }
    }

    /// Pieces whose concatenations make tokens that look alike: quoted and
    /// bare words, words with separators and tags in them, operators.
    const PIECES: &[&str] = &[
        "a", "w0a", "\"a\"", "\"w0\"", "\"a.b\"", "a.b", " ", "  ", "\n", "\t", ",", ".", "(", ")",
        "=", ";", "*", "$1", "$2", "p", "'x'", "7", "7.5", "-- c\n", "/* c */", "+", "||",
        "\"\"\"\"", "U&\"a\"", "E'x'", "::", "w1", "\u{e9}",
    ];

    #[test]
    fn keys_are_not_query_strings() {
        assert!(key("SELECT 1").unwrap().starts_with('\0'));
    }
}
