//! Masking in the data path: deciding, per statement, what to mask (with the
//! target's catalog), then rewriting results as they stream.
//!
//! For each RowDescription of a masked statement every result column gets
//! an action, by its source (table OID and attribute number, never its
//! name): a masked column gets its strategy; a whole-row value of a masked
//! table, a column of a view built on masked columns, or a column from a
//! table the catalog does not know is redacted; a column PostgreSQL does not
//! trace (table OID 0) is redacted when the analysis found the statement
//! derives from masked columns, or else scanned by the rule's content
//! detectors. Each DataRow is then rewritten on its own, lengths
//! recomputed, in the column's format: memory stays bounded by one row.
//!
//! ErrorResponse and NoticeResponse of statements that read masked tables
//! lose the fields that can echo values (DETAIL, CONTEXT, internal query),
//! messages of error classes that quote values are replaced, and detectors
//! run over what remains.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use gatehouse_engine::classify::{column_uses, ColumnUses};
use gatehouse_engine::mask::analysis;
use gatehouse_engine::mask::detect::{self, Style};
use gatehouse_engine::mask::strategy::{mask_value_into, Format, ValueType};
use gatehouse_engine::mask::{HashKey, MaskPlan, Strategy};
use gatehouse_engine::policy::Verdict;
use gatehouse_engine::{Action, Classification};
use gatehouse_ledger::event::{MaskApplied, MaskedColumn};

use crate::config::Target;
use crate::gateway::relay::catalog::{CatalogCache, Resolved};
use crate::gateway::wire::frame::{self, FieldDescription};

/// How the statements of one SQL text use their columns, or why that
/// could not be told.
pub type QueryUses = Result<Vec<ColumnUses>, String>;

/// Column-use analyses of recently seen SQL texts (parsing costs 10-50 µs).
#[derive(Default)]
pub struct UsesCache {
    map: Mutex<HashMap<String, Arc<QueryUses>>>,
}

/// Most entries kept; cleared when full.
const CACHE_ENTRIES: usize = 10_000;

impl UsesCache {
    /// How the statements of `sql` use their columns.
    pub fn get(&self, sql: &str) -> Arc<QueryUses> {
        if let Some(u) = self.map.lock().expect("uses cache").get(sql) {
            return u.clone();
        }
        let u = Arc::new(column_uses(sql));
        let mut map = self.map.lock().expect("uses cache");
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(sql.to_owned(), u.clone());
        u
    }
}

/// What every session's masking shares.
#[derive(Default)]
pub struct Masking {
    /// Catalog lookups per target.
    pub catalog: CatalogCache,
    /// Column-use analyses per SQL text.
    pub uses: UsesCache,
    /// The secret behind `hash` pseudonyms (`[masking] key_file`).
    pub key: Option<HashKey>,
}

/// What to mask in one statement's results, decided before it runs.
#[derive(Debug)]
pub struct MaskSpec {
    plan: Arc<MaskPlan>,
    catalog: Arc<Resolved>,
    key: HashKey,
    redact_untraced: bool,
    scrub_errors: bool,
}

/// Decides masking for a judged statement: resolves the plan's columns in
/// the target's catalog and applies the column-use analysis to `verdict`,
/// which may turn it into a denial (a probe of a masked column, a derived
/// use with `on_derived = "deny"`, an unreadable catalog, a missing hash
/// key). Returns what to mask when the statement may run masked.
pub async fn prepare(
    masking: &Masking,
    target: &Target,
    sql: &str,
    classification: &Classification,
    verdict: &mut Verdict,
) -> Option<Arc<MaskSpec>> {
    if verdict.action == Action::Deny {
        return None;
    }
    let plan = verdict.mask.as_ref()?.plan.clone();
    let relations: Vec<String> = classification
        .statements
        .iter()
        .flat_map(|s| s.tables.iter().cloned())
        .collect();
    let catalog = match masking.catalog.resolve(target, &plan, &relations).await {
        Ok(c) => c,
        Err(e) => {
            deny(
                verdict,
                &plan,
                format!(
                    "Gatehouse cannot mask this statement, so it is not run: {e}; \
                     the operator should check the target's connection"
                ),
            );
            return None;
        }
    };
    let key = match (&masking.key, plan.needs_key()) {
        (Some(k), _) => k.clone(),
        (None, false) => HashKey::new([0; 32]),
        (None, true) => {
            deny(
                verdict,
                &plan,
                "Gatehouse cannot mask this statement, so it is not run: a column is masked with \
                 \"hash\" and the gateway has no hash key; the operator must set [masking] \
                 key_file in gatehouse.toml"
                    .to_owned(),
            );
            return None;
        }
    };
    let uses = masking.uses.get(sql);
    analysis::judge(verdict, &uses, &|t| catalog.view_names.contains(t));
    if verdict.action == Action::Deny {
        return None;
    }
    let masked_tables = plan.tables();
    let scrub_errors = relations
        .iter()
        .any(|t| masked_tables.contains(t.as_str()) || catalog.view_names.contains(t));
    let redact_untraced = verdict.mask.as_ref().is_some_and(|m| m.redact_untraced);
    Some(Arc::new(MaskSpec {
        plan,
        catalog,
        key,
        redact_untraced,
        scrub_errors,
    }))
}

fn deny(verdict: &mut Verdict, plan: &MaskPlan, message: String) {
    verdict.action = Action::Deny;
    verdict.rule = plan.first_rule().map(str::to_owned);
    verdict.message = Some(message);
    verdict.mask = None;
}

/// What happens to one result column.
#[derive(Debug, Clone)]
enum ColumnAction {
    Pass,
    Mask {
        strategy: Strategy,
        ty: ValueType,
        format: Option<Format>,
        label: usize,
    },
    Detect {
        ty: ValueType,
        label: usize,
        /// Every detector, not only the plan's: a column masked with the
        /// `detect` strategy by a rule that lists none.
        all: bool,
    },
}

/// The masking of one execution: the spec, the actions for the current
/// result description, and counts for the `MaskApplied` event.
pub struct StatementMask {
    spec: Arc<MaskSpec>,
    actions: Option<Vec<ColumnAction>>,
    /// (column, strategy) → values replaced, in order of first appearance.
    labels: Vec<(String, String)>,
    counts: Vec<u64>,
    /// A result came from a table the catalog did not know.
    pub stale_catalog: bool,
    /// Reused for each masked value.
    scratch: Vec<u8>,
    /// Where rewritten rows are built.
    rows: BytesMut,
}

impl StatementMask {
    /// Starts masking one execution of a statement.
    pub fn new(spec: Arc<MaskSpec>) -> StatementMask {
        StatementMask {
            spec,
            actions: None,
            labels: Vec::new(),
            counts: Vec::new(),
            stale_catalog: false,
            scratch: Vec::with_capacity(64),
            rows: BytesMut::new(),
        }
    }

    fn label(&mut self, column: String, strategy: &str) -> usize {
        if let Some(i) = self
            .labels
            .iter()
            .position(|(c, s)| *c == column && s == strategy)
        {
            return i;
        }
        self.labels.push((column, strategy.to_owned()));
        self.counts.push(0);
        self.labels.len() - 1
    }

    /// Sets the actions for the result columns a RowDescription announces.
    pub fn describe(&mut self, fields: &[FieldDescription]) {
        let spec = self.spec.clone();
        let catalog = &spec.catalog;
        let mut actions = Vec::with_capacity(fields.len());
        for f in fields {
            let ty = ValueType::from_oid(f.type_oid, catalog.string_types.contains(&f.type_oid));
            let format = Format::from_code(f.format);
            let redacted = |this: &mut Self, column: String| ColumnAction::Mask {
                strategy: Strategy::Redact,
                ty,
                format,
                label: this.label(column, "redact"),
            };
            let action = if f.table_oid == 0 {
                if spec.redact_untraced {
                    redacted(self, format!("(untraced) {}", f.name))
                } else if !spec.plan.detectors.is_empty() && ty.is_textual() {
                    ColumnAction::Detect {
                        ty,
                        label: self.label(format!("(untraced) {}", f.name), "detectors"),
                        all: false,
                    }
                } else {
                    ColumnAction::Pass
                }
            } else if let Some(column) = catalog.columns.get(&(f.table_oid, f.column)) {
                let strategy = spec
                    .plan
                    .columns
                    .get(column)
                    .map_or(Strategy::Redact, |m| m.strategy);
                if strategy == Strategy::Detect && ty.is_textual() {
                    ColumnAction::Detect {
                        ty,
                        label: self.label(column.clone(), strategy.name()),
                        all: spec.plan.detectors.is_empty(),
                    }
                } else {
                    // A detect column of another type is redacted.
                    let strategy = if strategy == Strategy::Detect {
                        Strategy::Redact
                    } else {
                        strategy
                    };
                    ColumnAction::Mask {
                        strategy,
                        ty,
                        format,
                        label: self.label(column.clone(), strategy.name()),
                    }
                }
            } else if let Some(table) = catalog.masked_tables.get(&f.table_oid) {
                if f.column > 0 {
                    ColumnAction::Pass
                } else {
                    redacted(self, format!("{table}.* (whole row)"))
                }
            } else if let Some(view) = catalog.views.get(&f.table_oid) {
                redacted(self, format!("{view}.{}", f.name))
            } else if !catalog.relation_oids.contains(&f.table_oid) {
                self.stale_catalog = true;
                redacted(self, format!("(relation {}) {}", f.table_oid, f.name))
            } else {
                ColumnAction::Pass
            };
            actions.push(action);
        }
        self.actions = Some(actions);
    }

    /// Whether this execution masks anything (then it gets a
    /// `MaskApplied` event).
    pub fn applies(&self) -> bool {
        !self.labels.is_empty()
    }

    /// The DataRow `frame` as the client must receive it; `None` when it
    /// passes unchanged. A row that does not match its description (or
    /// arrives without one) comes back all NULL.
    pub fn row(&mut self, frame: &[u8]) -> Option<BytesMut> {
        let StatementMask {
            spec,
            actions,
            counts,
            scratch,
            rows,
            ..
        } = self;
        let Some(actions) = actions else {
            // No description seen: nothing says where values come from.
            return Some(null_row(frame));
        };
        if actions.iter().all(|a| matches!(a, ColumnAction::Pass)) {
            return None;
        }
        let body = frame.get(5..).unwrap_or_default();
        let count = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
        if count != Some(actions.len() as i16) {
            return Some(null_row(frame));
        }
        // Rows are written one after another into one buffer and split off,
        // so its allocation is reused once the client has been sent them.
        rows.clear();
        rows.reserve(frame.len() + 64);
        let out = rows;
        out.put_u8(b'D');
        out.put_i32(0);
        out.put_slice(&body[..2]);
        let mut at = 2;
        let mut changed = false;
        for action in actions.iter() {
            let Some(len) = body.get(at..at + 4) else {
                return Some(null_row(frame));
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            let value = if len < 0 {
                None
            } else {
                let Some(v) = body.get(at..at + len as usize) else {
                    return Some(null_row(frame));
                };
                at += len as usize;
                Some(v)
            };
            let masked = match (value, action) {
                (None, _) | (_, ColumnAction::Pass) => None,
                (
                    Some(v),
                    ColumnAction::Mask {
                        strategy,
                        ty,
                        format,
                        label,
                    },
                ) => {
                    counts[*label] += 1;
                    let not_null = match format {
                        Some(f) => mask_value_into(*strategy, *ty, *f, v, &spec.key, scratch),
                        None => false,
                    };
                    Some(not_null)
                }
                (Some(v), ColumnAction::Detect { ty, label, all }) => {
                    let detectors: &[gatehouse_engine::mask::Detector] = if *all {
                        &gatehouse_engine::mask::detect::ALL
                    } else {
                        &spec.plan.detectors
                    };
                    detect_into(detectors, *ty, v, scratch).then(|| {
                        counts[*label] += 1;
                        true
                    })
                }
            };
            match masked {
                None => put_value(out, value),
                Some(false) => {
                    changed = true;
                    out.put_i32(-1);
                }
                Some(true) => {
                    changed = true;
                    put_value(out, Some(scratch));
                }
            }
        }
        if at != body.len() {
            return Some(null_row(frame));
        }
        if !changed {
            return None;
        }
        let len = (out.len() - 1) as i32;
        out[1..5].copy_from_slice(&len.to_be_bytes());
        Some(out.split())
    }

    /// The ErrorResponse or NoticeResponse `frame` as the client must
    /// receive it, and its message; `None` when it passes unchanged.
    pub fn message(&self, frame: &[u8]) -> Option<(BytesMut, String)> {
        scrub_message(frame, self.spec.scrub_errors, &self.spec.plan.detectors)
    }

    /// What the client is told after a result Gatehouse masked: how many
    /// values of which columns, by which strategy; `None` when nothing was.
    pub fn notice_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .labels
            .iter()
            .zip(&self.counts)
            .filter(|(_, n)| **n > 0)
            .map(|((column, strategy), n)| format!("{column} ({strategy}): {n}"))
            .collect();
        let total: u64 = self.counts.iter().sum();
        (total > 0).then(|| {
            format!(
                "Gatehouse masked {total} value{} in this result: {}",
                if total == 1 { "" } else { "s" },
                parts.join(", ")
            )
        })
    }

    /// What this execution masked, if anything.
    pub fn applied(&self, session: u64, identity: &str, query: u64) -> Option<MaskApplied> {
        if !self.applies() {
            return None;
        }
        let columns = self
            .labels
            .iter()
            .zip(&self.counts)
            .map(|((column, strategy), values)| MaskedColumn {
                column: column.clone(),
                strategy: strategy.clone(),
                values: *values,
            })
            .collect();
        Some(MaskApplied {
            session,
            identity: identity.to_owned(),
            query,
            columns,
        })
    }
}

/// Runs content detectors over an untraced value, writing the scrubbed
/// value into `out`; returns whether anything was found.
fn detect_into(
    detectors: &[gatehouse_engine::mask::Detector],
    ty: ValueType,
    v: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let (style, text, version) = match (ty, v.split_first()) {
        // Binary jsonb: a version byte, then text (text-format JSON never
        // starts with byte 1).
        (ValueType::Jsonb, Some((1, rest))) => (Style::Json, rest, true),
        (ValueType::Json | ValueType::Jsonb, _) => (Style::Json, v, false),
        _ => (Style::Text, v, false),
    };
    let Some((scrubbed, _)) = detect::scrub(detectors, text, style) else {
        return false;
    };
    out.clear();
    if version {
        out.push(1);
    }
    out.extend_from_slice(&scrubbed);
    true
}

fn put_value(body: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        None => body.put_i32(-1),
        Some(v) => {
            body.put_i32(v.len() as i32);
            body.put_slice(v);
        }
    }
}

/// A DataRow with every value NULL (as many as the frame says it has).
fn null_row(frame: &[u8]) -> BytesMut {
    let n = frame
        .get(5..7)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0));
    let mut body = BytesMut::with_capacity(7 + 4 * n as usize);
    body.put_u8(b'D');
    body.put_i32(6 + 4 * i32::from(n));
    body.put_i16(n);
    for _ in 0..n {
        body.put_i32(-1);
    }
    body
}

/// Error classes whose messages name objects, never values, and are kept.
const PLAIN_CLASSES: &[&str] = &[
    "08", "0A", "0B", "21", "23", "25", "26", "28", "2B", "2D", "34", "3B", "3D", "3F", "40", "42",
    "53", "54", "55", "57", "58",
];

/// Fields that can echo values: DETAIL, CONTEXT (WHERE), internal query.
const ECHO_FIELDS: &[u8] = b"DWq";

/// Scrubs an ErrorResponse or NoticeResponse: with `strict` (the statement
/// reads masked tables) the fields that can echo values go and messages of
/// classes that quote values are replaced; detectors run over the text
/// that remains. Returns the new frame and its message when anything
/// changed.
pub fn scrub_message(
    frame: &[u8],
    strict: bool,
    detectors: &[gatehouse_engine::mask::Detector],
) -> Option<(BytesMut, String)> {
    if !strict && detectors.is_empty() {
        return None;
    }
    let fields = frame::error_fields(frame.get(5..)?);
    let code = fields
        .iter()
        .find(|(c, _)| *c == b'C')
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let plain = PLAIN_CLASSES.iter().any(|c| code.starts_with(c));
    let mut changed = false;
    let mut out: Vec<(u8, String)> = Vec::with_capacity(fields.len());
    for (c, v) in fields {
        if strict && ECHO_FIELDS.contains(&c) {
            changed = true;
            continue;
        }
        let v = if strict && c == b'M' && !plain {
            changed = true;
            format!(
                "the database reported an error (SQLSTATE {code}); Gatehouse withholds its text \
                 because the statement reads masked columns"
            )
        } else if matches!(c, b'M' | b'H' | b'D') {
            match detect::scrub(detectors, v.as_bytes(), Style::Text) {
                Some((s, _)) => {
                    changed = true;
                    String::from_utf8_lossy(&s).into_owned()
                }
                None => v,
            }
        } else {
            v
        };
        out.push((c, v));
    }
    if !changed {
        return None;
    }
    let message = out
        .iter()
        .find(|(c, _)| *c == b'M')
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let mut body = BytesMut::new();
    for (c, v) in &out {
        body.put_u8(*c);
        body.put_slice(v.replace('\0', "").as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    Some((frame::message(frame[0], &body), message))
}

/// Values masked per column, by label, for tests and logs.
pub fn summary(event: &MaskApplied) -> BTreeMap<String, u64> {
    event
        .columns
        .iter()
        .map(|c| (format!("{} ({})", c.column, c.strategy), c.values))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_engine::mask::{ColumnMask, Detector, OnDerived};

    fn spec(redact_untraced: bool, detectors: Vec<Detector>) -> Arc<MaskSpec> {
        let mut plan = MaskPlan {
            detectors,
            on_derived: OnDerived::Deny,
            rules: vec!["r".into()],
            ..MaskPlan::default()
        };
        plan.columns.insert(
            "public.customers.ssn".into(),
            ColumnMask {
                strategy: Strategy::Partial { keep: 4 },
                rule: "r".into(),
            },
        );
        let mut catalog = Resolved::default();
        catalog
            .columns
            .insert((100, 4), "public.customers.ssn".into());
        catalog.masked_tables.insert(100, "public.customers".into());
        catalog.views.insert(200, "public.contacts".into());
        catalog.relation_oids.extend([100, 200, 300]);
        Arc::new(MaskSpec {
            plan: Arc::new(plan),
            catalog: Arc::new(catalog),
            key: HashKey::new([1; 32]),
            redact_untraced,
            scrub_errors: true,
        })
    }

    fn field(
        name: &str,
        table_oid: u32,
        column: i16,
        type_oid: u32,
        format: i16,
    ) -> FieldDescription {
        FieldDescription {
            name: name.into(),
            table_oid,
            column,
            type_oid,
            type_len: -1,
            type_mod: -1,
            format,
        }
    }

    fn data_row(values: &[Option<&[u8]>]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i16(values.len() as i16);
        for v in values {
            put_value(&mut body, *v);
        }
        frame::message(b'D', &body)
    }

    fn values(frame: &[u8]) -> Vec<Option<Vec<u8>>> {
        let declared = i32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(declared + 1, frame.len(), "the length is recomputed");
        frame::data_row_values(&frame[5..])
            .unwrap()
            .into_iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn columns_are_masked_by_source_never_by_name() {
        let mut m = StatementMask::new(spec(false, vec![]));
        m.describe(&[
            field("id", 100, 1, 23, 1),
            // Renamed: still the ssn column by (OID, attnum).
            field("x", 100, 4, 25, 0),
            // Named ssn, but from another table: untouched.
            field("ssn", 300, 2, 25, 0),
            field("whole", 100, 0, 2249, 0),
            field("viewcol", 200, 1, 25, 0),
            field("fresh", 999, 1, 25, 0),
        ]);
        let row = data_row(&[
            Some(&7i32.to_be_bytes()),
            Some(b"123-45-6789"),
            Some(b"555-55-5555"),
            Some(b"(7,x,123-45-6789)"),
            Some(b"secret"),
            Some(b"new"),
        ]);
        let out = values(&m.row(&row).unwrap());
        assert_eq!(out[0].as_deref(), Some(&7i32.to_be_bytes()[..]));
        assert_eq!(out[1].as_deref(), Some(&b"*******6789"[..]));
        assert_eq!(out[2].as_deref(), Some(&b"555-55-5555"[..]));
        assert_eq!(out[3], None, "a whole row of a masked table becomes NULL");
        assert_eq!(out[4].as_deref(), Some(&b"[redacted]"[..]));
        assert_eq!(out[5].as_deref(), Some(&b"[redacted]"[..]));
        assert!(m.stale_catalog);
        let ev = m.applied(1, "agent", 3).unwrap();
        let s = summary(&ev);
        assert_eq!(s["public.customers.ssn (partial)"], 1);
        assert_eq!(s["public.contacts.viewcol (redact)"], 1);
    }

    #[test]
    fn untraced_columns_are_redacted_or_scanned() {
        let mut m = StatementMask::new(spec(true, vec![]));
        m.describe(&[field("lower", 0, 0, 25, 0), field("n", 0, 0, 23, 1)]);
        let out = values(
            &m.row(&data_row(&[Some(b"ada@x.org"), Some(&5i32.to_be_bytes())]))
                .unwrap(),
        );
        assert_eq!(out[0].as_deref(), Some(&b"[redacted]"[..]));
        assert_eq!(
            out[1].as_deref(),
            Some(&[0u8; 4][..]),
            "an int4 stays four bytes"
        );

        let mut m = StatementMask::new(spec(false, vec![Detector::Email, Detector::Ssn]));
        m.describe(&[field("note", 0, 0, 25, 0), field("n", 0, 0, 23, 0)]);
        let row = data_row(&[Some(b"mail ada@x.org, ssn 123-45-6789"), Some(b"5")]);
        let out = values(&m.row(&row).unwrap());
        assert_eq!(
            out[0].as_deref(),
            Some(&b"mail ***@x.org, ssn ***-**-****"[..])
        );
        assert_eq!(out[1].as_deref(), Some(&b"5"[..]));
        // Nothing found: the frame passes as it is.
        assert!(m.row(&data_row(&[Some(b"hello"), Some(b"1")])).is_none());
    }

    #[test]
    fn rows_without_a_description_are_nulled() {
        let mut m = StatementMask::new(spec(false, vec![]));
        let out = values(&m.row(&data_row(&[Some(b"a"), None, Some(b"c")])).unwrap());
        assert_eq!(out, vec![None, None, None]);
    }

    #[test]
    fn errors_lose_echoed_values() {
        let e = pgwire_error(&[
            (b'S', "ERROR"),
            (b'C', "23505"),
            (
                b'M',
                "duplicate key value violates unique constraint \"customers_ssn_key\"",
            ),
            (b'D', "Key (ssn)=(123-45-6789) already exists."),
        ]);
        let (out, message) = scrub_message(&e, true, &[]).unwrap();
        let fields = frame::error_fields(&out[5..]);
        assert!(fields.iter().all(|(c, _)| *c != b'D'));
        assert!(message.contains("customers_ssn_key"));
        let e = pgwire_error(&[
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"123-45-6789\"",
            ),
        ]);
        let (_, message) = scrub_message(&e, true, &[]).unwrap();
        assert!(
            !message.contains("123-45-6789") && message.contains("22P02"),
            "{message}"
        );
        // Not strict: only detectors.
        let (_, message) = scrub_message(&e, false, &[Detector::Ssn]).unwrap();
        assert!(message.contains("***-**-****"), "{message}");
        assert!(scrub_message(&e, false, &[]).is_none());
    }

    fn pgwire_error(fields: &[(u8, &str)]) -> BytesMut {
        let mut body = BytesMut::new();
        for (c, v) in fields {
            body.put_u8(*c);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        frame::message(b'E', &body)
    }
}
