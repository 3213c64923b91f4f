//! Mask rules: their syntax and errors, the merged plan, and the analysis of
//! what a statement does with masked columns, including the bypass corpus
//! (fixtures/masking/bypass.txt).

use std::sync::Arc;

use gatehouse_engine::classify::{classify, column_uses};
use gatehouse_engine::mask::analysis::{analyse, judge, Finding};
use gatehouse_engine::mask::{Detector, MaskPlan, OnDerived, Strategy};
use gatehouse_engine::policy::{Policy, Subject};
use gatehouse_engine::Action;

const POLICY: &str = include_str!("../../fixtures/masking/policy.toml");
const CORPUS: &str = include_str!("../../fixtures/masking/bypass.txt");
const VIEWS: &[&str] = &["public.customer_contacts"];

/// The corpus must keep covering the bypasses; it only ever grows.
const MIN_CASES: usize = 100;

const AGENT: Subject<'static> = Subject {
    identity: "agent-7",
    target: "shop",
};

fn policy(src: &str) -> Policy {
    Policy::parse(src).unwrap_or_else(|e| panic!("policy does not parse: {e}\n{src}"))
}

fn error(src: &str) -> String {
    match Policy::parse(src) {
        Ok(_) => panic!("policy should not parse:\n{src}"),
        Err(e) => e.to_string(),
    }
}

fn tainted(t: &str) -> bool {
    VIEWS.contains(&t)
}

fn plan(on_derived: OnDerived) -> Arc<MaskPlan> {
    let p = policy(POLICY);
    let plan = p
        .mask_plan(AGENT.identity, AGENT.target)
        .expect("agents are masked");
    let mut plan = MaskPlan::clone(&plan);
    plan.on_derived = on_derived;
    Arc::new(plan)
}

// ---------------------------------------------------------------- syntax

#[test]
fn mask_rules_parse_with_every_strategy() {
    let p = policy(POLICY);
    let rule = p.rules().iter().find(|r| r.action == Action::Mask).unwrap();
    let mask = rule.mask.as_ref().unwrap();
    assert_eq!(
        mask.columns,
        vec![
            ("public.customers.name".to_owned(), Strategy::Hash),
            ("public.customers.email".to_owned(), Strategy::Email),
            ("public.customers.ssn".to_owned(), Strategy::Redact),
            (
                "public.customers.card_number".to_owned(),
                Strategy::Partial { keep: 4 }
            ),
        ]
    );
    assert_eq!(
        mask.detectors,
        vec![Detector::Email, Detector::Card, Detector::Ssn]
    );
    assert_eq!(mask.on_derived, OnDerived::Deny);
    let p = policy(
        "[[rule]]\nname = \"m\"\naction = \"mask\"\non_derived = \"mask\"\n\
         [rule.mask]\n\"s.t.a\" = \"null\"\n\"s.t.b\" = \"partial\"\n\"s.t.c\" = { strategy = \"partial\", keep = 0 }\n",
    );
    let mask = p.rules()[0].mask.as_ref().unwrap();
    assert_eq!(mask.on_derived, OnDerived::Mask);
    assert_eq!(mask.columns[0].1, Strategy::Null);
    assert_eq!(mask.columns[1].1, Strategy::Partial { keep: 4 });
    assert_eq!(mask.columns[2].1, Strategy::Partial { keep: 0 });
    // Other rules have no mask.
    assert!(
        policy("[[rule]]\nname = \"a\"\naction = \"allow\"\n").rules()[0]
            .mask
            .is_none()
    );
}

#[test]
fn broken_mask_rules_point_at_the_line_and_column() {
    let base = "[[rule]]\nname = \"m\"\naction = \"mask\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("", "line 1, column 1", "names no columns to mask"),
        (
            "[rule.mask]\n",
            "line 4, column 1",
            "`mask` names no columns",
        ),
        (
            "[rule.mask]\n\"public.customers\" = \"redact\"\n",
            "line 5, column 1",
            "masked columns are schema.table.column",
        ),
        (
            "[rule.mask]\n\"public.*.ssn\" = \"redact\"\n",
            "line 5, column 1",
            "not globs",
        ),
        (
            "[rule.mask]\n\"public.customers.ssn\" = \"scramble\"\n",
            "line 5, column 26",
            "unknown strategy \"scramble\"",
        ),
        (
            "[rule.mask]\n\"public.customers.ssn\" = { strategy = \"hash\", keep = 2 }\n",
            "line 5, column 26",
            "`keep` only applies to \"partial\"",
        ),
        (
            "[rule.mask]\n\"public.customers.ssn\" = { strategy = \"partial\", keep = 500 }\n",
            "line 5, column 26",
            "between 0 and 64",
        ),
        (
            "[rule.mask]\n\"public.customers.ssn\" = { strategy = \"partial\", kept = 2 }\n",
            "line 5",
            "unknown field `kept`",
        ),
        (
            "detectors = [\"email\", \"passport\"]\n[rule.mask]\n\"a.b.c\" = \"null\"\n",
            "line 4, column 23",
            "unknown detector \"passport\"; detectors are email, card, ssn, phone, iban",
        ),
        (
            "on_derived = \"allow\"\n[rule.mask]\n\"a.b.c\" = \"null\"\n",
            "line 4, column 14",
            "use \"deny\" or \"mask\"",
        ),
        (
            "[rule.mask]\n\"a.b.c\" = \"null\"\n\"a.b.c\" = \"hash\"\n",
            "line 6",
            "duplicate key",
        ),
    ];
    for (extra, at, what) in cases {
        let e = error(&format!("{base}{extra}"));
        assert!(e.starts_with(at), "{extra:?}: {e}");
        assert!(e.contains(what), "{extra:?}: {e}");
    }
    let e = error("[[rule]]\nname = \"a\"\naction = \"allow\"\non_derived = \"mask\"\n");
    assert!(
        e.starts_with("line 4, column 14") && e.contains("belongs to mask rules"),
        "{e}"
    );
    let e = error("[[rule]]\nname = \"a\"\naction = \"deny\"\n[rule.mask]\n\"a.b.c\" = \"null\"\n");
    assert!(e.contains("`mask` belongs to mask rules"), "{e}");
}

// ---------------------------------------------------------------- plans

#[test]
fn masks_bind_every_statement_the_identity_runs_whichever_rule_allows_it() {
    let p = policy(POLICY);
    let c = classify("SELECT id FROM orders");
    let v = p.decide(&AGENT, &c);
    // The allow rule decides (mask beats allow only when it matches), but
    // the masks still ride along.
    assert_eq!(v.action, Action::Mask);
    let m = v.mask.as_ref().expect("masks apply");
    assert_eq!(m.plan.columns.len(), 4);
    assert!(!m.redact_untraced);
    let c = classify("INSERT INTO orders (id, customer, total) VALUES (1, 1, 1)");
    let v = p.decide(&AGENT, &c);
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Allow, Some("agents-write-orders"))
    );
    assert!(v.mask.is_some(), "an allow rule does not lift the masks");
    // Other identities are not masked; denials carry no plan.
    let v = p.decide(
        &Subject {
            identity: "dba",
            target: "shop",
        },
        &c,
    );
    assert_eq!((v.action, v.mask.is_none()), (Action::Deny, true));
    // The empty query needs nothing.
    let v = p.decide(&AGENT, &classify(""));
    assert!(v.mask.is_none());
}

#[test]
fn plans_merge_in_file_order() {
    let p = policy(
        r#"
[[rule]]
name = "first"
identity = "a*"
action = "mask"
on_derived = "mask"
detectors = ["iban"]
[rule.mask]
"s.t.x" = "hash"

[[rule]]
name = "second"
identity = "ab"
action = "mask"
detectors = ["email", "iban"]
[rule.mask]
"s.t.x" = "null"
"s.t.y" = "email"

[[rule]]
name = "elsewhere"
identity = "ab"
target = "other"
action = "mask"
[rule.mask]
"s.t.z" = "null"
"#,
    );
    let plan = p.mask_plan("ab", "db").unwrap();
    assert_eq!(plan.columns["s.t.x"].strategy, Strategy::Hash);
    assert_eq!(plan.columns["s.t.x"].rule, "first");
    assert_eq!(plan.columns["s.t.y"].rule, "second");
    assert!(!plan.columns.contains_key("s.t.z"));
    assert_eq!(plan.detectors, vec![Detector::Email, Detector::Iban]);
    assert_eq!(plan.on_derived, OnDerived::Deny, "the strictest wins");
    assert_eq!(plan.rules, vec!["first", "second"]);
    let only_first = p.mask_plan("ax", "db").unwrap();
    assert_eq!(only_first.on_derived, OnDerived::Mask);
    assert!(p.mask_plan("b", "db").is_none());
}

// ---------------------------------------------------------------- analysis

fn finding(sql: &str, on_derived: OnDerived) -> Finding {
    let uses = column_uses(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(uses.len(), 1, "{sql}");
    analyse(&plan(on_derived), &uses[0], &tainted)
}

#[test]
fn messages_name_the_column_and_say_what_to_do() {
    let Finding::Refused { why, rule } = finding(
        "SELECT id FROM customers WHERE ssn LIKE '123%'",
        OnDerived::Deny,
    ) else {
        panic!("a probe is refused")
    };
    assert!(
        why.contains("public.customers.ssn") && why.contains("condition"),
        "{why}"
    );
    assert_eq!(rule.as_deref(), Some("agents-mask-customers"));
    let Finding::Derived { column, how, .. } =
        finding("SELECT lower(email) FROM customers", OnDerived::Deny)
    else {
        panic!("an expression is derived")
    };
    assert_eq!(column, "public.customers.email");
    assert!(how.contains("expression"));
    let Finding::Derived { message, .. } = finding("SELECT customer_secrets(7)", OnDerived::Deny)
    else {
        panic!("an unknown function is derived")
    };
    assert!(
        message.contains("calls function customer_secrets"),
        "{message}"
    );
    let Finding::Refused { why, .. } = finding("COPY customers TO STDOUT", OnDerived::Mask) else {
        panic!("COPY is refused")
    };
    assert!(why.contains("use SELECT"), "{why}");
}

#[test]
fn judge_turns_findings_into_verdicts() {
    let p = policy(POLICY);
    let decide = |sql: &str, on_derived: &str| {
        let src = POLICY.replace(
            "detectors = [",
            &format!("on_derived = \"{on_derived}\"\ndetectors = ["),
        );
        let p = policy(&src);
        let mut v = p.decide(&AGENT, &classify(sql));
        judge(&mut v, &column_uses(sql), &tainted);
        v
    };
    // Traced: the rule's verdict stands.
    let v = decide("SELECT * FROM customers", "deny");
    assert_eq!(v.action, Action::Mask);
    assert!(!v.mask.unwrap().redact_untraced);
    // Derived: denied by the mask rule, or redacted.
    let v = decide("SELECT lower(email) FROM customers", "deny");
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Deny, Some("agents-mask-customers"))
    );
    assert!(v.message.unwrap().contains("public.customers.email"));
    let v = decide("SELECT lower(email) FROM customers", "mask");
    assert_eq!(v.action, Action::Mask);
    assert!(v.mask.unwrap().redact_untraced);
    // Refused whatever on_derived says; one statement of several suffices.
    for on_derived in ["deny", "mask"] {
        let v = decide(
            "SELECT 1; SELECT id FROM customers WHERE ssn = '1'",
            on_derived,
        );
        assert_eq!((v.action, v.statement), (Action::Deny, 1));
        assert!(v.mask.is_none() || v.statements[1].mask.is_none());
    }
    // A query that cannot be parsed cannot be analysed: denied.
    let mut v = p.decide(&AGENT, &classify("SELECT * FROM customers"));
    judge(&mut v, &Err("broken".into()), &tainted);
    assert_eq!(v.action, Action::Deny);
    assert!(v.message.unwrap().contains("broken"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Clean,
    Traced,
    Derived,
    Refused,
}

fn corpus() -> Vec<(usize, Outcome, &'static str)> {
    let mut cases = Vec::new();
    for (i, line) in CORPUS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (outcome, sql) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("bypass.txt line {}: no `|`", i + 1));
        let outcome = match outcome.trim() {
            "clean" => Outcome::Clean,
            "traced" => Outcome::Traced,
            "derived" => Outcome::Derived,
            "refused" => Outcome::Refused,
            other => panic!("bypass.txt line {}: unknown outcome {other:?}", i + 1),
        };
        cases.push((i + 1, outcome, sql.trim()));
    }
    cases
}

#[test]
fn bypass_corpus_outcomes() {
    let cases = corpus();
    assert!(cases.len() >= MIN_CASES, "{} cases", cases.len());
    let plan_deny = plan(OnDerived::Deny);
    let mut failures = Vec::new();
    for (line, expected, sql) in cases {
        let uses = match column_uses(sql) {
            Ok(u) if u.len() == 1 => u,
            // What cannot be parsed cannot be analysed: `judge` denies it.
            Err(_) if expected == Outcome::Refused => continue,
            other => {
                failures.push(format!(
                    "line {line}: {sql}\n  not one statement: {other:?}"
                ));
                continue;
            }
        };
        let reads_masked = uses[0].columns.keys().any(|c| {
            plan_deny.covered(c).next().is_some()
                || c.rsplit_once('.').is_some_and(|(t, _)| tainted(t))
        }) || uses[0].tables.iter().any(|t| tainted(t));
        let got = match analyse(&plan_deny, &uses[0], &tainted) {
            Finding::Traced if !reads_masked => Outcome::Clean,
            Finding::Traced => Outcome::Traced,
            Finding::Derived { .. } => Outcome::Derived,
            Finding::Refused { .. } => Outcome::Refused,
        };
        // on_derived = "mask" changes derived into redacted, nothing else.
        let with_mask = analyse(&plan(OnDerived::Mask), &uses[0], &tainted);
        let consistent = match got {
            Outcome::Refused => matches!(with_mask, Finding::Refused { .. }),
            Outcome::Derived => matches!(with_mask, Finding::Derived { .. }),
            _ => with_mask == Finding::Traced,
        };
        if got != expected || !consistent {
            failures.push(format!(
                "line {line}: {sql}\n  expected {expected:?}, got {got:?} (with on_derived = mask: {with_mask:?})\n  uses: {:?}",
                uses[0].columns
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bypass corpus mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn classification_is_unchanged_by_use_tracking() {
    // The walker's use tracking adds bookkeeping only: every corpus query
    // classifies exactly as before (same columns, since tracking-only
    // records are kept out of the classification).
    for (_, _, sql) in corpus() {
        let c = classify(sql);
        let Ok(uses) = column_uses(sql) else { continue };
        for (info, u) in c.statements.iter().zip(&uses) {
            assert_eq!(info.tables, u.tables, "{sql}");
        }
    }
}
