//! The classifier corpus and robustness properties.
//!
//! `fixtures/classifier/corpus.txt` holds statements with what the gateway
//! must conclude about them; one test runs them all and reports every
//! mismatch at once. The format, one case after another:
//!
//! ```text
//! === a title
//! SQL, one or more lines
//! ---
//! Write DELETE                      one line per statement: class, command
//!   tables: public.t                optional exact checks, comma-separated;
//!   columns: -                      `-` means "none"
//!   functions: pg_sleep
//!   dangerous: copy program
//!   reason~: could not read         the reason must contain this text
//! ```
//!
//! Lines starting with `#` between cases are comments. Property tests check
//! that `classify` never panics, on arbitrary strings and on random
//! mutations of the corpus statements, and that its output is well formed.

use gatehouse_engine::classify::classify;
use gatehouse_engine::{Classification, StatementClass, StatementInfo};
use proptest::prelude::*;
use std::sync::LazyLock;

const CORPUS: &str = include_str!("../../fixtures/classifier/corpus.txt");

/// The parsed corpus, shared by the tests.
static CASES: LazyLock<Vec<Case>> = LazyLock::new(corpus);

/// The corpus must keep covering the rules; it only ever grows.
const MIN_CASES: usize = 170;

#[derive(Debug)]
struct Case {
    line: usize,
    title: String,
    sql: String,
    expected: Vec<Expected>,
}

#[derive(Debug)]
struct Expected {
    class: StatementClass,
    command: String,
    tables: Option<Vec<String>>,
    columns: Option<Vec<String>>,
    functions: Option<Vec<String>>,
    dangerous: Option<Vec<String>>,
    reason: Option<String>,
}

fn class_named(name: &str) -> Option<StatementClass> {
    Some(match name {
        "Read" => StatementClass::Read,
        "Write" => StatementClass::Write,
        "Ddl" => StatementClass::Ddl,
        "Session" => StatementClass::Session,
        "Function" => StatementClass::Function,
        "Admin" => StatementClass::Admin,
        "Unknown" => StatementClass::Unknown,
        "Transaction" => StatementClass::Transaction,
        _ => return None,
    })
}

fn list(value: &str) -> Vec<String> {
    if value.trim() == "-" {
        return Vec::new();
    }
    value.split(',').map(|v| v.trim().to_owned()).collect()
}

/// Parses the corpus; panics with the line number on a malformed case (a
/// broken fixture must not silently test less).
fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut lines = CORPUS.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let title = line
            .strip_prefix("=== ")
            .unwrap_or_else(|| panic!("corpus line {}: expected `=== title`, got {line:?}", n + 1))
            .to_owned();
        let mut sql = Vec::new();
        loop {
            let (m, l) = lines
                .next()
                .unwrap_or_else(|| panic!("corpus line {}: case without `---`", n + 1));
            if l == "---" {
                break;
            }
            let _ = m;
            sql.push(l);
        }
        let mut expected: Vec<Expected> = Vec::new();
        while let Some((m, l)) = lines.peek().copied() {
            if l.starts_with("===") {
                break;
            }
            lines.next();
            if l.trim().is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(field) = l.strip_prefix("  ") {
                let current = expected
                    .last_mut()
                    .unwrap_or_else(|| panic!("corpus line {}: field before a statement", m + 1));
                let (key, value) = field
                    .split_once(':')
                    .unwrap_or_else(|| panic!("corpus line {}: expected `key: value`", m + 1));
                match key.trim() {
                    "tables" => current.tables = Some(list(value)),
                    "columns" => current.columns = Some(list(value)),
                    "functions" => current.functions = Some(list(value)),
                    "dangerous" => current.dangerous = Some(list(value)),
                    "reason~" => current.reason = Some(value.trim().to_owned()),
                    other => panic!("corpus line {}: unknown field {other:?}", m + 1),
                }
            } else {
                let (class, command) = l.split_once(' ').unwrap_or((l, ""));
                let class = class_named(class)
                    .unwrap_or_else(|| panic!("corpus line {}: unknown class {class:?}", m + 1));
                expected.push(Expected {
                    class,
                    command: command.trim().to_owned(),
                    tables: None,
                    columns: None,
                    functions: None,
                    dangerous: None,
                    reason: None,
                });
            }
        }
        assert!(
            !expected.is_empty(),
            "corpus line {}: case {title:?} expects nothing",
            n + 1
        );
        cases.push(Case {
            line: n + 1,
            title,
            sql: sql.join("\n"),
            expected,
        });
    }
    cases
}

/// What must hold for any classification of any input.
fn well_formed(c: &Classification) -> Result<(), String> {
    if c.statements.is_empty() {
        return Err("no statements".to_owned());
    }
    for s in &c.statements {
        if (s.class == StatementClass::Unknown) != s.reason.is_some() {
            return Err(format!("reason must be given exactly for Unknown: {s:?}"));
        }
        if s.command.is_empty() {
            return Err(format!("empty command: {s:?}"));
        }
        for (name, l) in [
            ("tables", &s.tables),
            ("columns", &s.columns),
            ("functions", &s.functions),
            ("dangerous", &s.dangerous),
        ] {
            if l.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{name} not sorted and deduplicated: {l:?}"));
            }
        }
        if !s.dangerous.is_empty()
            && s.class != StatementClass::Admin
            && s.class != StatementClass::Unknown
        {
            return Err(format!("dangerous operations need class Admin: {s:?}"));
        }
    }
    Ok(())
}

fn compare(case: &Case, got: &[StatementInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    if got.len() != case.expected.len() {
        problems.push(format!(
            "expected {} statement(s), got {}",
            case.expected.len(),
            got.len()
        ));
    }
    for (i, (want, got)) in case.expected.iter().zip(got).enumerate() {
        let at = |what: &str| format!("statement {}: {what}", i + 1);
        if want.class != got.class {
            problems.push(at(&format!(
                "class {:?}, expected {:?}",
                got.class, want.class
            )));
        }
        if want.command != got.command {
            problems.push(at(&format!(
                "command {:?}, expected {:?}",
                got.command, want.command
            )));
        }
        for (name, want, got) in [
            ("tables", &want.tables, &got.tables),
            ("columns", &want.columns, &got.columns),
            ("functions", &want.functions, &got.functions),
            ("dangerous", &want.dangerous, &got.dangerous),
        ] {
            if let Some(want) = want {
                if want != got {
                    problems.push(at(&format!("{name} {got:?}, expected {want:?}")));
                }
            }
        }
        if let Some(fragment) = &want.reason {
            match &got.reason {
                Some(reason) if reason.contains(fragment.as_str()) => {}
                other => problems.push(at(&format!(
                    "reason {other:?}, expected one containing {fragment:?}"
                ))),
            }
        }
    }
    problems
}

/// Everything but the reason (whose line and column numbers shift when text
/// is prepended).
fn shape(s: &StatementInfo) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        s.class,
        &s.command,
        &s.tables,
        &s.columns,
        &s.functions,
        &s.dangerous,
    )
}

#[test]
fn corpus_classifies_as_expected() {
    let cases = &*CASES;
    assert!(
        cases.len() >= MIN_CASES,
        "the corpus has {} cases; it must keep at least {MIN_CASES}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let got = classify(&case.sql);
        let mut problems = compare(case, &got.statements);
        if let Err(e) = well_formed(&got) {
            problems.push(e);
        }
        // Comments and surrounding whitespace never change anything.
        for wrapped in [
            format!("-- DELETE FROM t;\n{}", case.sql),
            format!("/* DROP TABLE t; */ {}\n\n", case.sql),
        ] {
            let again = classify(&wrapped);
            let same = again.statements.len() == got.statements.len()
                && again
                    .statements
                    .iter()
                    .zip(&got.statements)
                    .all(|(a, b)| shape(a) == shape(b));
            if !same {
                problems.push(format!(
                    "a leading comment changed the result: {:?}",
                    again.statements
                ));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "line {} ({}):\n  {}\n  got: {:#?}\n  - {}",
                case.line,
                case.title,
                case.sql.replace('\n', "\n  "),
                got.statements,
                problems.join("\n  - ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Fragments that stress the lexer and the parser when spliced into SQL.
const SNIPPETS: &[&str] = &[
    ";",
    "'",
    "\"",
    "$$",
    "$a$",
    "/*",
    "*/",
    "--",
    "(",
    ")",
    "\\",
    "E'",
    "U&'",
    "::",
    ",",
    ".",
    "*",
    "[",
    "]",
    " ",
    "\n",
    "\0",
    "é",
    "𝕊",
    "DELETE FROM t",
    "SELECT",
    "WITH d AS (",
    "INTO x",
    "FOR UPDATE",
    "UNION SELECT 1",
    "pg_read_file('x')",
    "RETURNING *",
    "EXPLAIN ANALYZE ",
    "COPY t TO PROGRAM 'x'",
    "$1",
    "ONLY",
];

fn mutate(sql: &str, edits: &[(prop::sample::Index, u8, prop::sample::Index)]) -> String {
    let mut s = sql.to_owned();
    for (at, op, what) in edits {
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let pos = bounds[at.index(bounds.len())];
        match op % 4 {
            0 => s.insert_str(pos, SNIPPETS[what.index(SNIPPETS.len())]),
            1 => {
                let end = bounds[what.index(bounds.len())];
                let (a, b) = if pos <= end { (pos, end) } else { (end, pos) };
                s.replace_range(a..b, "");
            }
            2 => s.truncate(pos),
            _ => {
                let end = bounds[what.index(bounds.len())];
                let (a, b) = if pos <= end { (pos, end) } else { (end, pos) };
                let copy = s[a..b].to_owned();
                s.insert_str(b, &copy);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_strings(sql in any::<String>()) {
        let c = classify(&sql);
        prop_assert!(well_formed(&c).is_ok(), "{:?}: {:?}", sql, well_formed(&c));
    }

    #[test]
    fn never_panics_on_sql_like_strings(
        sql in "([A-Za-z_ ]{1,8}|[0-9]{1,3}|[-+*/<>=~!@#%^&|`?:;,.()\\[\\]{}$'\"\\\\ \\n\\t])*"
    ) {
        let c = classify(&sql);
        prop_assert!(well_formed(&c).is_ok(), "{:?}: {:?}", sql, well_formed(&c));
    }

    #[test]
    fn never_panics_on_mutated_corpus(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), any::<prop::sample::Index>()),
            1..6,
        ),
    ) {
        let case = &CASES[which.index(CASES.len())];
        let sql = mutate(&case.sql, &edits);
        let c = classify(&sql);
        prop_assert!(well_formed(&c).is_ok(), "{:?}: {:?}", sql, well_formed(&c));
    }
}

/// Query strings from the masking bypass corpus (one per line after `|`):
/// many compare columns with literals.
fn bypass_queries() -> Vec<String> {
    include_str!("../../fixtures/masking/bypass.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('|').map(|(_, sql)| sql.trim().to_owned()))
        .collect()
}

/// Byte ranges of the literals a template generalizes, in `sql`.
fn literal_spans(sql: &str) -> Vec<(std::ops::Range<usize>, bool)> {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::{Location, Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return Vec::new();
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |l: Location| {
        let start = line_starts[l.line as usize - 1];
        start
            + sql[start..]
                .char_indices()
                .nth(l.column as usize - 1)
                .map_or(sql.len() - start, |(i, _)| i)
    };
    tokens
        .iter()
        .filter_map(|t| {
            let number = match &t.token {
                Token::Number(n, false)
                    if n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    true
                }
                Token::SingleQuotedString(_) => false,
                _ => return None,
            };
            Some((offset(t.span.start)..offset(t.span.end), number))
        })
        .collect()
}

/// A template shares a classification only when every query string of the
/// template classifies the same: each corpus statement with literals is
/// re-classified with other values in place of each literal (one at a
/// time, then all at once), and must give the same classification as the
/// one the template would share. Statements where a literal is not a plain
/// value (a type length, a file name, a string used as a name) must not be
/// shared at all.
#[test]
fn templates_share_only_sound_classifications() {
    use gatehouse_engine::classify::{classify_templated, LiteralTemplate};
    const NUMBERS: [&str; 5] = ["0", "7", "42", "123456", "999999999"];
    const STRINGS: [&str; 6] = ["''", "'x'", "'it''s'", "'public.secret'", "'1'", "'$$'"];
    let queries: Vec<String> = CASES
        .iter()
        .map(|c| c.sql.clone())
        .chain(bypass_queries())
        .collect();
    let mut shared = 0;
    let mut failures = Vec::new();
    for sql in &queries {
        let Some(template) = LiteralTemplate::of(sql) else {
            continue;
        };
        let (classification, shareable) = classify_templated(sql, &template);
        assert_eq!(classification, classify(sql), "{sql}");
        if !shareable {
            continue;
        }
        shared += 1;
        let spans = literal_spans(sql);
        assert!(!spans.is_empty(), "{sql}");
        let pick = |number: bool, k: usize| {
            let alternates: &[&str] = if number { &NUMBERS } else { &STRINGS };
            alternates[k % alternates.len()]
        };
        let mut variants = Vec::new();
        for (span, number) in &spans {
            for k in 0..STRINGS.len() {
                let mut v = sql.clone();
                v.replace_range(span.clone(), pick(*number, k));
                variants.push(v);
            }
        }
        for k in 0..STRINGS.len() {
            let mut all = sql.clone();
            for (span, number) in spans.iter().rev() {
                all.replace_range(span.clone(), pick(*number, k));
            }
            variants.push(all);
        }
        for v in variants {
            let same_key = LiteralTemplate::of(&v).map(|t| t.key().to_owned());
            if same_key.as_deref() != Some(template.key()) {
                failures.push(format!(
                    "{v:?}: the variant's template differs from {sql:?}'s"
                ));
            } else if classify(&v) != classification {
                failures.push(format!(
                    "{v:?} classifies differently from {sql:?}, which shares its template"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        shared >= 60,
        "only {shared} corpus statements share a template; the test checks too little"
    );
    for unshareable in [
        "SELECT CAST(a AS varchar(10)) FROM t",
        "SELECT 'secret'.* FROM secret",
        "COPY t FROM '/tmp/data.csv'",
        "SELECT a FROM t LIMIT 5 OFFSET 'x' 'y'",
        "SELECT a FROM t WHERE id = 5 AND (",
        // set_config's first literal decides whether the client encoding
        // changes (policy denies that whatever the rules say).
        "SELECT set_config('application_name', 'x', false)",
    ] {
        let template = LiteralTemplate::of(unshareable).expect(unshareable);
        assert!(
            !classify_templated(unshareable, &template).1,
            "{unshareable} must not share its classification"
        );
    }
}
