//! Statement fingerprints: SQL with its literals removed and its spelling
//! normalized, so `DELETE FROM orders WHERE id = 5` and
//! `delete  from ORDERS where id=6` share one. A time-limited approval grant
//! covers a fingerprint, never a table or a class.
//!
//! Only literals are generalized: identifiers, operators, keywords,
//! placeholders (`$1`) and the number of values in a list stay as written,
//! so a fingerprint never covers a statement of another shape. Text the
//! tokenizer cannot read is its own fingerprint (whitespace-trimmed), which
//! can only make a grant narrower.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// The stand-in for every literal.
const LITERAL: &str = "?";

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return sql.trim().to_owned();
    };
    let mut out = String::with_capacity(sql.len());
    let mut space = false;
    for token in &tokens {
        let text = match token {
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
            | Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                space = true;
                continue;
            }
            Token::EOF => continue,
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => LITERAL.to_owned(),
            Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
            other => other.to_string(),
        };
        if space && !out.is_empty() && needs_space(&out, &text) {
            out.push(' ');
        }
        space = false;
        out.push_str(&text);
    }
    while out.ends_with(';') {
        out.pop();
    }
    out
}

/// Whether a space between two pieces is needed to keep them apart: only
/// between two word-like pieces, so `id=5` and `id = 5` agree.
fn needs_space(before: &str, next: &str) -> bool {
    let wordish = |c: char| c.is_alphanumeric() || matches!(c, '_' | '"' | '$' | '?');
    before.chars().next_back().is_some_and(wordish) && next.chars().next().is_some_and(wordish)
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn literals_spelling_and_comments_do_not_matter() {
        let a = fingerprint("DELETE FROM orders WHERE id = 5");
        assert_eq!(a, "delete from orders where id=?");
        assert_eq!(
            fingerprint("delete  from ORDERS\n where id=6; -- cleanup"),
            a
        );
        assert_eq!(fingerprint("delete from orders where id = '7'"), a);
        assert_eq!(
            fingerprint("delete /* x */ from orders where id = $$7$$"),
            a
        );
    }

    #[test]
    fn shape_identifiers_and_placeholders_do() {
        let a = fingerprint("DELETE FROM orders WHERE id = 5");
        assert_ne!(fingerprint("DELETE FROM orders WHERE id = 5 OR true"), a);
        assert_ne!(fingerprint("DELETE FROM orders"), a);
        assert_ne!(fingerprint("DELETE FROM \"Orders\" WHERE id = 5"), a);
        assert_ne!(fingerprint("DELETE FROM orders WHERE id = $1"), a);
        assert_ne!(
            fingerprint("SELECT 1 FROM t WHERE id IN (1, 2)"),
            fingerprint("SELECT 1 FROM t WHERE id IN (1, 2, 3)")
        );
        assert_ne!(
            fingerprint("SELECT a FROM t"),
            fingerprint("SELECT at FROM t")
        );
        assert_ne!(
            fingerprint("SELECT a b FROM t"),
            fingerprint("SELECT ab FROM t")
        );
    }

    #[test]
    fn unreadable_text_is_its_own_fingerprint() {
        assert_eq!(
            fingerprint("  SELECT 'unterminated  "),
            "SELECT 'unterminated"
        );
    }
}
