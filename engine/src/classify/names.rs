//! Names the way PostgreSQL's lexer sees them: unquoted identifiers are
//! folded to lower case (ASCII only, as PostgreSQL does for UTF-8 input),
//! quoted ones are kept verbatim, and every identifier is truncated to 63
//! bytes. Policy rules match these strings, so a name that PostgreSQL would
//! resolve to `public.orders` must be reported as exactly that.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// PostgreSQL keeps NAMEDATALEN - 1 = 63 bytes of an identifier and silently
/// drops the rest; a longer name therefore refers to the truncated one.
const MAX_IDENT_BYTES: usize = 63;

/// The schema unqualified names resolve to (the gateway denies changing
/// `search_path` unless policy allows it).
pub(super) const DEFAULT_SCHEMA: &str = "public";

/// PostgreSQL searches `pg_catalog` before anything on `search_path`, and
/// every relation in it is named `pg_...`.
const CATALOG_SCHEMA: &str = "pg_catalog";

/// An identifier as PostgreSQL resolves it.
pub(super) fn ident(id: &Ident) -> String {
    let value = if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_ascii_lowercase()
    };
    truncate(value)
}

/// A word from the tokenizer (used by the token-level fallback), folded like
/// [`ident`].
pub(super) fn word(value: &str, quoted: bool) -> String {
    let value = if quoted {
        value.to_owned()
    } else {
        value.to_ascii_lowercase()
    };
    truncate(value)
}

fn truncate(mut value: String) -> String {
    if value.len() > MAX_IDENT_BYTES {
        let mut end = MAX_IDENT_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// The normalised parts of a dotted name, or `None` when a part is not a
/// plain identifier (some dialects allow computed name parts; PostgreSQL does
/// not, and such a name cannot be judged).
pub(super) fn parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => Some(ident(id)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// The schema-qualified names a relation name can refer to.
///
/// Unqualified names resolve to `public`, except that a `pg_...` name may
/// also be a system catalog (PostgreSQL searches `pg_catalog` first): then
/// both candidates are reported, so a rule on either one triggers. A
/// three-part name's catalog must be the current database, so it is dropped.
pub(super) fn relation_candidates(parts: &[String]) -> Vec<String> {
    match parts {
        [] => Vec::new(),
        [table] => {
            let mut names = Vec::with_capacity(2);
            if table.starts_with("pg_") {
                names.push(format!("{CATALOG_SCHEMA}.{table}"));
            }
            names.push(format!("{DEFAULT_SCHEMA}.{table}"));
            names
        }
        [schema, table] | [_, schema, table] => vec![format!("{schema}.{table}")],
        more => vec![more.join(".")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_identifiers_are_truncated_on_a_char_boundary() {
        let long = "a".repeat(70);
        assert_eq!(word(&long, false).len(), 63);
        let wide = format!("{}é", "a".repeat(62));
        assert_eq!(word(&wide, true), "a".repeat(62));
    }

    #[test]
    fn unqualified_catalog_names_have_two_candidates() {
        assert_eq!(
            relation_candidates(&["pg_authid".into()]),
            vec!["pg_catalog.pg_authid", "public.pg_authid"]
        );
        assert_eq!(
            relation_candidates(&["db".into(), "s".into(), "t".into()]),
            vec!["s.t"]
        );
    }
}
