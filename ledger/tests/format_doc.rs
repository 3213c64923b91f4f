//! docs/ledger-format.md lists every event kind and body field; this test
//! keeps that table identical to the code. Regenerate it with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test format_doc`.

use std::path::Path;

use gatehouse_ledger::event::{
    Action, EventKind, MaskedColumn, Param, Protocol, ResultColumn, ResultRow, StatementClass,
};

const BEGIN: &str = "<!-- kinds table: kept in sync with ledger/src/event.rs by a test -->\n";
const END: &str = "<!-- end of kinds table -->\n";

fn cbor_type(rust: &str) -> String {
    let t = rust.replace(' ', "");
    if let Some(inner) = t.strip_prefix("Option<").and_then(|s| s.strip_suffix('>')) {
        return format!("{} or null", cbor_type(inner));
    }
    if let Some(inner) = t.strip_prefix("Vec<").and_then(|s| s.strip_suffix('>')) {
        return format!("array of {}", cbor_type(inner));
    }
    match t.as_str() {
        "String" => "text".into(),
        "Bytes" => "bytes".into(),
        "bool" => "bool".into(),
        "u16" | "u32" | "u64" | "SessionId" | "Nanos" => "uint".into(),
        "i64" => "int".into(),
        "Param" => nested("Param", Param::FIELDS),
        "MaskedColumn" => nested("MaskedColumn", MaskedColumn::FIELDS),
        "ResultColumn" => nested("ResultColumn", ResultColumn::FIELDS),
        "ResultRow" => nested("ResultRow", ResultRow::FIELDS),
        "Protocol" | "StatementClass" | "Action" => format!("{t} (uint code)"),
        other => panic!("describe the CBOR type of {other} in format_doc.rs"),
    }
}

/// A nested struct, described from its own field list.
fn nested(name: &str, fields: &[(u64, &str, &str)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(k, n, t)| format!("{k}: {n} {}", cbor_type(t)))
        .collect();
    format!("{name} map {{{}}}", inner.join(", "))
}

fn codes<T: Copy + std::fmt::Debug>(all: &[T], code: impl Fn(T) -> u64) -> String {
    all.iter()
        .map(|v| format!("{} = {:?}", code(*v), v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table() -> String {
    let mut out = String::from(BEGIN);
    out.push_str("\n| kind | name | body fields (key: name, CBOR type) |\n|---|---|---|\n");
    for kind in EventKind::ALL {
        let fields: Vec<String> = kind
            .fields()
            .iter()
            .map(|(k, name, ty)| format!("{k}: {name} ({})", cbor_type(ty)))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            kind.code(),
            kind.name(),
            fields.join("; ")
        ));
    }
    out.push_str(&format!(
        "\nCodes: Protocol: {}. StatementClass: {}. Action: {}.\n\n",
        codes(Protocol::ALL, Protocol::code),
        codes(StatementClass::ALL, StatementClass::code),
        codes(Action::ALL, Action::code),
    ));
    out.push_str(END);
    out
}

#[test]
fn format_document_lists_every_kind_and_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ledger-format.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("the kinds table marker");
    let end = doc.find(END).map_or(doc.len(), |e| e + END.len());
    let current = &doc[start..end];
    let wanted = table();
    if std::env::var_os("GATEHOUSE_BLESS").is_some() && current != wanted {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], wanted, &doc[end..])).unwrap();
        return;
    }
    assert_eq!(
        current, wanted,
        "docs/ledger-format.md's kinds table is stale; see this file's header"
    );
}

const SUBJECTS_BEGIN: &str =
    "<!-- subjects table: kept in sync with ledger/src/event.rs by a test -->\n";
const SUBJECTS_END: &str = "<!-- end of subjects table -->\n";

/// Section 8.3: the body keys of the fields named `session` and `identity`.
fn subjects_table() -> String {
    let mut out = String::from(SUBJECTS_BEGIN);
    out.push_str("\n| kind | name | session key | identity key |\n|---|---|---|---|\n");
    for kind in EventKind::ALL {
        let key_of = |name: &str| {
            kind.fields()
                .iter()
                .find(|(_, field, _)| *field == name)
                .map(|(k, _, _)| *k)
        };
        let (session, identity) = (key_of("session"), key_of("identity"));
        if session.is_none() && identity.is_none() {
            continue;
        }
        let show = |k: Option<u64>| k.map_or("—".to_owned(), |k| k.to_string());
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            kind.code(),
            kind.name(),
            show(session),
            show(identity)
        ));
    }
    out.push('\n');
    out.push_str(SUBJECTS_END);
    out
}

#[test]
fn format_document_lists_the_subject_fields_of_every_kind() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ledger-format.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(SUBJECTS_BEGIN).expect("the subjects table marker");
    let end = doc
        .find(SUBJECTS_END)
        .map_or(doc.len(), |e| e + SUBJECTS_END.len());
    let current = &doc[start..end];
    let wanted = subjects_table();
    if std::env::var_os("GATEHOUSE_BLESS").is_some() && current != wanted {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], wanted, &doc[end..])).unwrap();
        return;
    }
    assert_eq!(
        current, wanted,
        "docs/ledger-format.md's subjects table is stale; see this file's header"
    );
}
