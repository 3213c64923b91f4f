//! From TOML text to [`Policy`]: the raw serde shapes, then validation that
//! keeps every span so an error points at the line a human has to fix.

use std::collections::HashMap;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::glob::{Glob, GlobList};
use super::{
    class_bit, Action, ApprovalSettings, Containment, Matcher, Policy, PolicyError, Rule, RuleMask,
    Settings, StatementClass, ALL_CLASSES, CLASS_NAMES, DEFAULT_MESSAGE,
};
use crate::mask::strategy::DEFAULT_KEEP;
use crate::mask::{detect, Detector, OnDerived, Strategy};

type Compiled = (Vec<String>, GlobList);

/// One entry of a list, with its span.
type Item = (String, Range<usize>);

/// `*`, the default identity and target.
fn everyone() -> Compiled {
    let any = Glob::new("*").expect("`*` is a valid glob");
    (vec!["*".to_owned()], GlobList::new(vec![any]))
}

fn split(c: Option<Compiled>) -> (Option<Vec<String>>, Option<GlobList>) {
    match c {
        Some((written, globs)) => (Some(written), Some(globs)),
        None => (None, None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    settings: Option<RawSettings>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    default_message: Option<Spanned<String>>,
    contain_after_denials: Option<Spanned<i64>>,
    contain_window_seconds: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    identity: Option<Spanned<Patterns>>,
    target: Option<Spanned<Patterns>>,
    classes: Option<Spanned<Patterns>>,
    commands: Option<Spanned<Patterns>>,
    tables: Option<Spanned<Patterns>>,
    columns: Option<Spanned<Patterns>>,
    functions: Option<Spanned<Patterns>>,
    action: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    mask: Option<Spanned<MaskTable>>,
    detectors: Option<Spanned<Patterns>>,
    on_derived: Option<Spanned<String>>,
    approvers: Option<Spanned<i64>>,
    approval_timeout_seconds: Option<Spanned<i64>>,
}

/// `[rule.mask]`: column = strategy, in file order, with spans.
struct MaskTable(Vec<(Spanned<String>, Spanned<RawStrategy>)>);

impl<'de> Deserialize<'de> for MaskTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaskTable, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaskTable;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of \"schema.table.column\" = strategy")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaskTable, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<RawStrategy>>()?;
                    entries.push((key, value));
                }
                Ok(MaskTable(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// A strategy as written: `"partial"`, or `{ strategy = "partial", keep = 4 }`.
enum RawStrategy {
    Name(String),
    Table(StrategyTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyTable {
    strategy: String,
    keep: Option<i64>,
}

impl<'de> Deserialize<'de> for RawStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawStrategy, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawStrategy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a strategy name or a table { strategy = ..., keep = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStrategy, E> {
                Ok(RawStrategy::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawStrategy, A::Error> {
                StrategyTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawStrategy::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings; list elements keep their own spans.
enum Patterns {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Patterns, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Patterns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Patterns, E> {
                Ok(Patterns::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Patterns, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(Patterns::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, c) in source.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

struct Ctx<'s> {
    source: &'s str,
}

impl Ctx<'_> {
    fn err(&self, span: &Range<usize>, message: impl Into<String>) -> PolicyError {
        let (line, column) = line_col(self.source, span.start);
        PolicyError {
            line,
            column,
            message: message.into(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.source, span.start).0
    }

    /// The patterns of `key` with their spans; `None` when the key is absent.
    fn items(
        &self,
        key: &str,
        value: Option<Spanned<Patterns>>,
    ) -> Result<Option<Vec<Item>>, PolicyError> {
        let Some(value) = value else { return Ok(None) };
        let span = value.span();
        let items: Vec<Item> = match value.into_inner() {
            Patterns::One(s) => vec![(s, span.clone())],
            Patterns::Many(v) => v
                .into_iter()
                .map(|s| {
                    let span = s.span();
                    (s.into_inner(), span)
                })
                .collect(),
        };
        if items.is_empty() {
            return Err(self.err(
                &span,
                format!(
                    "`{key}` is an empty list; remove the key to leave it \
                     unrestricted, or list at least one entry"
                ),
            ));
        }
        Ok(Some(items))
    }

    /// Compiles the globs of `key`, with `check` for extra shape rules.
    fn globs(
        &self,
        key: &str,
        value: Option<Spanned<Patterns>>,
        fold_case: bool,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Option<Compiled>, PolicyError> {
        let Some(items) = self.items(key, value)? else {
            return Ok(None);
        };
        let mut globs = Vec::with_capacity(items.len());
        let mut written = Vec::with_capacity(items.len());
        for (pattern, span) in items {
            let compiled = if fold_case {
                Glob::new_ascii_case_insensitive(&pattern)
            } else {
                Glob::new(&pattern)
            };
            let glob = compiled
                .map_err(|e| self.err(&span, format!("bad pattern {pattern:?} in `{key}`: {e}")))?;
            check(&pattern)
                .map_err(|e| self.err(&span, format!("bad pattern {pattern:?} in `{key}`: {e}")))?;
            globs.push(glob);
            written.push(pattern);
        }
        Ok(Some((written, GlobList::new(globs))))
    }
}

impl Ctx<'_> {
    /// The masking part of a rule: required for `mask` rules, refused on
    /// the others.
    fn rule_mask(
        &self,
        name: &str,
        action: Action,
        rule_span: &Range<usize>,
        mask: Option<Spanned<MaskTable>>,
        detectors: Option<Spanned<Patterns>>,
        on_derived: Option<Spanned<String>>,
    ) -> Result<Option<RuleMask>, PolicyError> {
        if action != Action::Mask {
            let stray = [
                mask.as_ref().map(|m| ("mask", m.span())),
                detectors.as_ref().map(|d| ("detectors", d.span())),
                on_derived.as_ref().map(|o| ("on_derived", o.span())),
            ];
            if let Some((key, span)) = stray.into_iter().flatten().next() {
                return Err(self.err(
                    &span,
                    format!(
                        "`{key}` belongs to mask rules; rule {name:?} has action \"{}\" \
                         (set action = \"mask\" or remove `{key}`)",
                        super::action_name(action)
                    ),
                ));
            }
            return Ok(None);
        }
        let Some(mask) = mask else {
            return Err(self.err(
                rule_span,
                format!(
                    "rule {name:?} has action \"mask\" but names no columns to mask; add a \
                     `[rule.mask]` table after it, e.g. \"public.customers.ssn\" = \"redact\""
                ),
            ));
        };
        let table_span = mask.span();
        let entries = mask.into_inner().0;
        if entries.is_empty() {
            return Err(self.err(
                &table_span,
                "`mask` names no columns; add \"schema.table.column\" = \"redact\" (or \
                 \"partial\", \"email\", \"hash\", \"null\")",
            ));
        }
        let mut columns = Vec::with_capacity(entries.len());
        for (column, strategy) in entries {
            let column_span = column.span();
            let column = column.into_inner();
            check_masked_column(&column).map_err(|e| {
                self.err(&column_span, format!("bad masked column {column:?}: {e}"))
            })?;
            let strategy_span = strategy.span();
            let strategy = parse_strategy(strategy.into_inner())
                .map_err(|e| self.err(&strategy_span, format!("column {column:?}: {e}")))?;
            columns.push((column, strategy));
        }
        let detectors = match self.items("detectors", detectors)? {
            None => Vec::new(),
            Some(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (text, span) in items {
                    let Some(d) = Detector::from_name(&text) else {
                        let names: Vec<&str> = detect::ALL.iter().map(|d| d.name()).collect();
                        return Err(self.err(
                            &span,
                            format!(
                                "unknown detector {text:?}; detectors are {}",
                                names.join(", ")
                            ),
                        ));
                    };
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
                out
            }
        };
        let on_derived = match on_derived {
            None => OnDerived::Deny,
            Some(o) => {
                let span = o.span();
                match o.into_inner().as_str() {
                    "deny" => OnDerived::Deny,
                    "mask" => OnDerived::Mask,
                    other => {
                        return Err(self.err(
                            &span,
                            format!("unknown on_derived {other:?}; use \"deny\" or \"mask\""),
                        ))
                    }
                }
            }
        };
        Ok(Some(RuleMask {
            columns,
            detectors,
            on_derived,
        }))
    }
}

/// A masked column must be exactly `schema.table.column`: the gateway looks
/// it up in the catalog, so globs cannot be resolved.
fn check_masked_column(c: &str) -> Result<(), String> {
    if c.contains(['*', '?', '[', ']', '{', '}']) {
        return Err("masked columns are exact names, not globs; list each column".into());
    }
    let parts: Vec<&str> = c.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "masked columns are schema.table.column; write \"public.TABLE.{}\"",
            parts.last().copied().unwrap_or_default()
        ));
    }
    Ok(())
}

/// Most characters `partial` may keep.
const MAX_KEEP: i64 = 64;

fn parse_strategy(raw: RawStrategy) -> Result<Strategy, String> {
    let (name, keep) = match raw {
        RawStrategy::Name(n) => (n, None),
        RawStrategy::Table(t) => (t.strategy, t.keep),
    };
    let strategy = match name.as_str() {
        "redact" => Strategy::Redact,
        "partial" => Strategy::Partial {
            keep: match keep {
                None => DEFAULT_KEEP,
                Some(k) if (0..=MAX_KEEP).contains(&k) => k as u16,
                Some(k) => {
                    return Err(format!(
                        "`keep` is {k}; partial keeps between 0 and {MAX_KEEP} characters"
                    ))
                }
            },
        },
        "email" => Strategy::Email,
        "hash" => Strategy::Hash,
        "null" => Strategy::Null,
        "detect" => Strategy::Detect,
        other => {
            return Err(format!(
                "unknown strategy {other:?}; use \"redact\", \"partial\", \"email\", \"hash\", \"null\" or \"detect\""
            ))
        }
    };
    if keep.is_some() && !matches!(strategy, Strategy::Partial { .. }) {
        return Err(format!("`keep` only applies to \"partial\", not {name:?}"));
    }
    Ok(strategy)
}

fn check_table(p: &str) -> Result<(), String> {
    if p == "*" || p.contains('.') {
        Ok(())
    } else {
        Err(format!(
            "tables are schema-qualified; write \"public.{p}\" or \"*.{p}\""
        ))
    }
}

fn check_column(p: &str) -> Result<(), String> {
    if p == "*" || p.contains('.') {
        Ok(())
    } else {
        Err(format!(
            "columns are schema.table.column; write \"public.TABLE.{p}\" or \"*.{p}\""
        ))
    }
}

fn no_check(_: &str) -> Result<(), String> {
    Ok(())
}

fn valid_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn parse_action(s: &str) -> Option<Action> {
    Some(match s {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "require_approval" => Action::RequireApproval,
        "mask" => Action::Mask,
        _ => return None,
    })
}

/// `approvers` and `approval_timeout_seconds`: only on require_approval
/// rules, where they default to one approver and five minutes.
fn approval_settings(
    cx: &Ctx<'_>,
    name: &str,
    action: Action,
    approvers: Option<Spanned<i64>>,
    timeout: Option<Spanned<i64>>,
) -> Result<Option<ApprovalSettings>, PolicyError> {
    if action != Action::RequireApproval {
        if let Some(span) = approvers
            .as_ref()
            .map(Spanned::span)
            .or(timeout.as_ref().map(Spanned::span))
        {
            return Err(cx.err(
                &span,
                format!(
                    "rule {name:?} is not a require_approval rule; `approvers` and \
                     `approval_timeout_seconds` only apply to action = \"require_approval\""
                ),
            ));
        }
        return Ok(None);
    }
    let mut settings = ApprovalSettings::default();
    if let Some(n) = approvers {
        let (span, n) = (n.span(), n.into_inner());
        if !(1..=10).contains(&n) {
            return Err(cx.err(&span, "`approvers` must be between 1 and 10"));
        }
        settings.approvers = n as u64;
    }
    if let Some(t) = timeout {
        let (span, t) = (t.span(), t.into_inner());
        if !(1..=86_400).contains(&t) {
            return Err(cx.err(
                &span,
                "`approval_timeout_seconds` must be between 1 and 86400",
            ));
        }
        settings.timeout_seconds = t as u64;
    }
    Ok(Some(settings))
}

fn parse_class(s: &str) -> Option<StatementClass> {
    CLASS_NAMES.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
}

/// A suggestion for a near miss (`Read`, `reads`, `ddls`, ...).
fn class_hint(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let guess = parse_class(&lower).or_else(|| lower.strip_suffix('s').and_then(parse_class));
    match guess {
        Some(c) => format!(" (did you mean \"{}\"?)", super::class_name(c)),
        None => String::new(),
    }
}

/// A message for toml's own errors, with hints for the usual mistakes.
fn toml_message(source: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end().to_owned();
    let at = err
        .span()
        .and_then(|s| source.get(s.start..))
        .unwrap_or_default();
    if at.starts_with("[rule]") {
        return "`[rule]` must be written `[[rule]]`: each rule is an entry in an array of \
                tables"
            .to_owned();
    }
    if at.starts_with("[[settings]]") {
        return "`[[settings]]` must be written `[settings]`: there is only one".to_owned();
    }
    if message == "invalid basic string" {
        return "invalid string: is a closing `\"` missing, or is there a control character \
                or a bad `\\` escape?"
            .to_owned();
    }
    if !message.is_empty() {
        return message;
    }
    match at.chars().next() {
        Some(c) if c.is_control() => {
            format!("control character {c:?} is not allowed in TOML, not even in comments")
        }
        Some(c) => format!("unexpected character {c:?}"),
        None => "unexpected end of file".to_owned(),
    }
}

pub(super) fn parse(source: &str) -> Result<Policy, PolicyError> {
    let raw: RawFile = toml::from_str(source).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(source, start);
        PolicyError {
            line,
            column,
            message: toml_message(source, &e),
        }
    })?;
    let cx = Ctx { source };

    let mut settings = Settings {
        default_message: DEFAULT_MESSAGE.into(),
        containment: None,
    };
    if let Some(s) = raw.settings {
        match (s.contain_after_denials, s.contain_window_seconds) {
            (None, None) => {}
            (Some(n), Some(w)) => {
                let (n_span, n) = (n.span(), n.into_inner());
                let (w_span, w) = (w.span(), w.into_inner());
                if !(1..=1_000_000).contains(&n) {
                    return Err(cx.err(
                        &n_span,
                        "`contain_after_denials` must be between 1 and 1000000",
                    ));
                }
                if !(1..=86_400).contains(&w) {
                    return Err(cx.err(
                        &w_span,
                        "`contain_window_seconds` must be between 1 and 86400",
                    ));
                }
                settings.containment = Some(Containment {
                    denials: n as u32,
                    window_seconds: w as u64,
                });
            }
            (Some(n), None) => {
                return Err(cx.err(
                    &n.span(),
                    "`contain_after_denials` needs `contain_window_seconds` too",
                ))
            }
            (None, Some(w)) => {
                return Err(cx.err(
                    &w.span(),
                    "`contain_window_seconds` needs `contain_after_denials` too",
                ))
            }
        }
        if let Some(m) = s.default_message {
            let span = m.span();
            let m = m.into_inner();
            if m.trim().is_empty() {
                return Err(cx.err(
                    &span,
                    "`default_message` is empty; say why access was denied",
                ));
            }
            settings.default_message = m;
        }
    }

    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for spanned in raw.rule {
        let rule_span = spanned.span();
        let raw = spanned.into_inner();
        let line = cx.line(&rule_span);

        let Some(name) = raw.name else {
            return Err(cx.err(
                &rule_span,
                "rule has no `name`; every rule needs a unique name (letters, digits, `_`, `.`, `-`)",
            ));
        };
        let name_span = name.span();
        let name = name.into_inner();
        if name.is_empty() {
            return Err(cx.err(
                &name_span,
                "rule name is empty; use letters, digits, `_`, `.` and `-`",
            ));
        }
        if !valid_name(&name) {
            return Err(cx.err(
                &name_span,
                format!("rule name {name:?} may only contain letters, digits, `_`, `.` and `-`"),
            ));
        }
        if let Some(first) = seen.get(&name) {
            return Err(cx.err(
                &name_span,
                format!("duplicate rule name {name:?}: already used by the rule on line {first}"),
            ));
        }
        seen.insert(name.clone(), line);

        let Some(action) = raw.action else {
            return Err(cx.err(
                &rule_span,
                format!(
                    "rule {name:?} has no `action`; add action = \"allow\", \"deny\", \
                     \"require_approval\" or \"mask\""
                ),
            ));
        };
        let action_span = action.span();
        let action_text = action.into_inner();
        let Some(action) = parse_action(&action_text) else {
            return Err(cx.err(
                &action_span,
                format!(
                    "unknown action {action_text:?}; use \"allow\", \"deny\", \
                     \"require_approval\" or \"mask\""
                ),
            ));
        };

        let identity = cx.globs("identity", raw.identity, false, no_check)?;
        let target = cx.globs("target", raw.target, false, no_check)?;
        let commands = cx.globs("commands", raw.commands, true, no_check)?;
        let tables = cx.globs("tables", raw.tables, false, check_table)?;
        let columns = cx.globs("columns", raw.columns, false, check_column)?;
        let functions = cx.globs("functions", raw.functions, false, no_check)?;

        let classes = match cx.items("classes", raw.classes)? {
            None => None,
            Some(items) => {
                let mut classes = Vec::with_capacity(items.len());
                for (text, span) in items {
                    let Some(class) = parse_class(&text) else {
                        let names: Vec<&str> = CLASS_NAMES.iter().map(|(n, _)| *n).collect();
                        return Err(cx.err(
                            &span,
                            format!(
                                "unknown class {text:?}{}; classes are {}",
                                class_hint(&text),
                                names.join(", ")
                            ),
                        ));
                    };
                    if !classes.contains(&class) {
                        classes.push(class);
                    }
                }
                Some(classes)
            }
        };

        let message = match raw.message {
            None => None,
            Some(m) => {
                let span = m.span();
                let m = m.into_inner();
                if m.trim().is_empty() {
                    return Err(cx.err(&span, "`message` is empty; remove it or say why"));
                }
                Some(m)
            }
        };

        let mask = cx.rule_mask(
            &name,
            action,
            &rule_span,
            raw.mask,
            raw.detectors,
            raw.on_derived,
        )?;

        let approval = approval_settings(
            &cx,
            &name,
            action,
            raw.approvers,
            raw.approval_timeout_seconds,
        )?;

        let (identity, identity_globs) = identity.unwrap_or_else(everyone);
        let (target, target_globs) = target.unwrap_or_else(everyone);
        let class_mask = match &classes {
            Some(classes) => classes.iter().fold(0u8, |m, c| m | class_bit(*c)),
            // Only a rule that names `unknown` may let unknown statements
            // through; a deny rule without `classes` covers everything.
            None if action == Action::Deny => ALL_CLASSES,
            None => ALL_CLASSES & !class_bit(StatementClass::Unknown),
        };
        let (commands, commands_globs) = split(commands);
        let (tables, tables_globs) = split(tables);
        let (columns, columns_globs) = split(columns);
        let (functions, functions_globs) = split(functions);
        rules.push(Rule {
            name,
            description: raw.description.map(Spanned::into_inner),
            line,
            action,
            message,
            identity,
            target,
            classes,
            commands,
            tables,
            columns,
            functions,
            mask,
            approval,
            matcher: Matcher {
                identity: identity_globs,
                target: target_globs,
                class_mask,
                commands: commands_globs,
                tables: tables_globs,
                columns: columns_globs,
                functions: functions_globs,
            },
        });
    }

    Ok(Policy {
        source: source.into(),
        settings,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let src = "ab\né = 1\n\nx";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 2), (1, 3));
        assert_eq!(line_col(src, 3), (2, 1));
        assert_eq!(line_col(src, 5), (2, 2)); // after the two bytes of é
        assert_eq!(line_col(src, 4), (2, 2)); // inside é: clamps forward
        assert_eq!(line_col(src, src.len()), (4, 2));
        assert_eq!(line_col(src, usize::MAX), (4, 2));
        assert_eq!(line_col("", 7), (1, 1));
    }

    #[test]
    fn toml_hints() {
        let e = parse("x = \"abc\n").unwrap_err();
        assert!(e.message.contains("closing"), "{e}");
        let e = parse("#\u{1}\n").unwrap_err();
        assert!(e.message.contains("control character"), "{e}");
        let e = parse("[[settings]]\n").unwrap_err();
        assert!(e.message.contains("`[settings]`"), "{e}");
    }
}
