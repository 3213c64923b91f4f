//! The policy engine: parsing, errors and decisions (docs/policy.md).

use gatehouse_engine::policy::{
    Policy, PolicyError, StatementVerdict, Subject, Verdict, DEFAULT_MESSAGE,
};
use gatehouse_engine::{Action, Classification, StatementClass, StatementInfo};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn stmt(class: StatementClass, command: &str, tables: &[&str]) -> StatementInfo {
    StatementInfo {
        class,
        command: command.to_owned(),
        tables: tables.iter().map(|s| s.to_string()).collect(),
        columns: Vec::new(),
        functions: Vec::new(),
        dangerous: Vec::new(),
        reason: None,
        references: Vec::new(),
    }
}

fn select(tables: &[&str]) -> StatementInfo {
    stmt(StatementClass::Read, "SELECT", tables)
}

fn with_columns(mut s: StatementInfo, columns: &[&str]) -> StatementInfo {
    s.columns = columns.iter().map(|c| c.to_string()).collect();
    s
}

fn with_functions(mut s: StatementInfo, functions: &[&str]) -> StatementInfo {
    s.functions = functions.iter().map(|c| c.to_string()).collect();
    s
}

fn with_dangerous(mut s: StatementInfo, dangerous: &[&str]) -> StatementInfo {
    s.dangerous = dangerous.iter().map(|c| c.to_string()).collect();
    s
}

fn empty_query() -> StatementInfo {
    stmt(StatementClass::Read, "EMPTY", &[])
}

fn unknown() -> StatementInfo {
    let mut s = stmt(StatementClass::Unknown, "FROBNICATE", &[]);
    s.reason = Some("syntax error".into());
    s
}

const AGENT: Subject<'static> = Subject {
    identity: "agent-7",
    target: "shop",
};

fn policy(src: &str) -> Policy {
    match Policy::parse(src) {
        Ok(p) => p,
        Err(e) => panic!("policy does not parse: {e}\n{src}"),
    }
}

fn judge(p: &Policy, s: &StatementInfo) -> StatementVerdict {
    p.decide_statement(&AGENT, s)
}

fn judge_as(p: &Policy, identity: &str, target: &str, s: &StatementInfo) -> Action {
    p.decide_statement(&Subject { identity, target }, s).action
}

fn query(p: &Policy, statements: Vec<StatementInfo>) -> Verdict {
    p.decide(&AGENT, &Classification { statements })
}

fn fixture(name: &str) -> String {
    let path = format!("{}/../fixtures/policies/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn error(src: &str) -> PolicyError {
    match Policy::parse(src) {
        Ok(_) => panic!("policy should not parse:\n{src}"),
        Err(e) => e,
    }
}

fn assert_error(src: &str, line: usize, column: usize, needle: &str) {
    let e = error(src);
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "wrong position for {e}\n{src}"
    );
    assert!(
        e.message.contains(needle),
        "{e:?} should mention {needle:?}"
    );
}

const ALLOW_ORDERS: &str = r#"
[[rule]]
name = "read-orders"
classes = ["read"]
tables = ["public.orders", "public.order_*"]
action = "allow"
"#;

// ---------------------------------------------------------------- defaults

#[test]
fn default_deny() {
    for p in [Policy::deny_all(), policy(""), policy("# nothing\n")] {
        assert!(p.rules().is_empty());
        let v = judge(&p, &select(&["public.orders"]));
        assert_eq!(v.action, Action::Deny);
        assert_eq!(v.rule, None);
        assert_eq!(v.message.as_deref(), Some(DEFAULT_MESSAGE));
    }
    assert_eq!(Policy::deny_all().source(), "");
    assert_eq!(DEFAULT_MESSAGE, "not permitted by Gatehouse policy");
}

#[test]
fn default_message_is_configurable() {
    let p = policy("[settings]\ndefault_message = \"ask #data-access\"\n");
    let v = judge(&p, &select(&["public.orders"]));
    assert_eq!((v.action, v.rule), (Action::Deny, None));
    assert_eq!(v.message.as_deref(), Some("ask #data-access"));
    assert_eq!(p.settings().default_message, "ask #data-access");
}

#[test]
fn source_is_kept() {
    let p = policy(ALLOW_ORDERS);
    assert_eq!(p.source(), ALLOW_ORDERS);
    assert_eq!(p.rules().len(), 1);
    let r = &p.rules()[0];
    assert_eq!(r.name, "read-orders");
    assert_eq!(r.line, 2);
    assert_eq!(r.action, Action::Allow);
    assert_eq!(r.identity, vec!["*"]);
    assert_eq!(r.target, vec!["*"]);
    assert_eq!(r.classes, Some(vec![StatementClass::Read]));
    assert_eq!(
        r.tables,
        Some(vec!["public.orders".into(), "public.order_*".into()])
    );
    assert_eq!(r.columns, None);
}

#[test]
fn empty_query_is_always_allowed() {
    let p = policy("[[rule]]\nname = \"no\"\naction = \"deny\"\n");
    let v = judge(&p, &empty_query());
    assert_eq!(
        v,
        StatementVerdict {
            action: Action::Allow,
            rule: None,
            message: None,
            mask: None,
        }
    );
    assert_eq!(
        judge(&Policy::deny_all(), &empty_query()).action,
        Action::Allow
    );
    // Only the classifier's exact shape counts as empty.
    let mut fake = empty_query();
    fake.tables = vec!["public.secrets".into()];
    assert_eq!(judge(&Policy::deny_all(), &fake).action, Action::Deny);
}

#[test]
fn empty_classification_is_denied() {
    let v = query(&policy(ALLOW_ORDERS), Vec::new());
    assert_eq!(v.action, Action::Deny);
    assert_eq!(v.message.as_deref(), Some(DEFAULT_MESSAGE));
    assert!(v.statements.is_empty());
}

// ---------------------------------------------------------------- rule order

#[test]
fn deny_beats_allow_regardless_of_order() {
    let allow = "[[rule]]\nname = \"allow\"\naction = \"allow\"\n";
    let deny = "[[rule]]\nname = \"deny\"\ntables = [\"public.orders\"]\naction = \"deny\"\nmessage = \"no\"\n";
    for src in [format!("{allow}{deny}"), format!("{deny}{allow}")] {
        let p = policy(&src);
        let v = judge(&p, &select(&["public.orders"]));
        assert_eq!(v.action, Action::Deny, "{src}");
        assert_eq!(v.rule.as_deref(), Some("deny"));
        assert_eq!(v.message.as_deref(), Some("no"));
        let v = judge(&p, &select(&["public.users"]));
        assert_eq!(
            (v.action, v.rule.as_deref()),
            (Action::Allow, Some("allow"))
        );
        assert_eq!(v.message, None);
    }
}

#[test]
fn first_matching_rule_is_recorded() {
    let p = policy(
        r#"
[[rule]]
name = "narrow"
tables = ["public.users"]
action = "allow"
[[rule]]
name = "wide-1"
action = "allow"
[[rule]]
name = "wide-2"
action = "allow"
[[rule]]
name = "deny-1"
tables = ["public.secrets"]
action = "deny"
[[rule]]
name = "deny-2"
action = "deny"
classes = ["write"]
"#,
    );
    assert_eq!(
        judge(&p, &select(&["public.users"])).rule.as_deref(),
        Some("narrow")
    );
    assert_eq!(
        judge(&p, &select(&["public.orders"])).rule.as_deref(),
        Some("wide-1")
    );
    let v = judge(&p, &select(&["public.secrets"]));
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Deny, Some("deny-1"))
    );
    // A deny rule without its own message gets the default message.
    assert_eq!(v.message.as_deref(), Some(DEFAULT_MESSAGE));
    let w = stmt(StatementClass::Write, "INSERT", &["public.secrets"]);
    assert_eq!(judge(&p, &w).rule.as_deref(), Some("deny-1"));
    let w = stmt(StatementClass::Write, "INSERT", &["public.users"]);
    assert_eq!(judge(&p, &w).rule.as_deref(), Some("deny-2"));
}

#[test]
fn approval_beats_mask_beats_allow() {
    let rules = [
        "[[rule]]\nname = \"a\"\naction = \"allow\"\n",
        "[[rule]]\nname = \"m\"\naction = \"mask\"\nmessage = \"masked\"\n[rule.mask]\n\"public.customers.ssn\" = \"redact\"\n",
        "[[rule]]\nname = \"r\"\naction = \"require_approval\"\ntables = [\"public.orders\"]\n",
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let src: String = order.iter().map(|&i| rules[i]).collect();
        let p = policy(&src);
        let v = judge(&p, &select(&["public.orders"]));
        assert_eq!(
            (v.action, v.rule.as_deref()),
            (Action::RequireApproval, Some("r"))
        );
        assert_eq!(v.message, None);
        let v = judge(&p, &select(&["public.users"]));
        assert_eq!((v.action, v.rule.as_deref()), (Action::Mask, Some("m")));
        assert_eq!(v.message.as_deref(), Some("masked"));
    }
}

// ---------------------------------------------------------------- tables, columns

#[test]
fn allow_requires_every_table_covered() {
    let p = policy(ALLOW_ORDERS);
    assert_eq!(judge(&p, &select(&["public.orders"])).action, Action::Allow);
    assert_eq!(
        judge(&p, &select(&["public.order_items", "public.orders"])).action,
        Action::Allow
    );
    // A join of an allowed and a forbidden table.
    let v = judge(&p, &select(&["public.orders", "public.users"]));
    assert_eq!((v.action, v.rule), (Action::Deny, None));
    assert_eq!(judge(&p, &select(&["public.orders2"])).action, Action::Deny);
    assert_eq!(judge(&p, &select(&["sales.orders"])).action, Action::Deny);
    // Nothing outside the list: `SELECT 1` is covered.
    assert_eq!(judge(&p, &select(&[])).action, Action::Allow);
    // The class must be listed.
    let w = stmt(StatementClass::Write, "INSERT", &["public.orders"]);
    assert_eq!(judge(&p, &w).action, Action::Deny);
}

#[test]
fn allow_requires_every_column_covered() {
    let p = policy(
        r#"
[[rule]]
name = "names-only"
tables = ["public.customers"]
columns = ["public.customers.id", "public.customers.name"]
action = "allow"
"#,
    );
    let s = |cols: &[&str]| with_columns(select(&["public.customers"]), cols);
    assert_eq!(
        judge(&p, &s(&["public.customers.name"])).action,
        Action::Allow
    );
    assert_eq!(judge(&p, &s(&[])).action, Action::Allow);
    assert_eq!(
        judge(&p, &s(&["public.customers.id", "public.customers.ssn"])).action,
        Action::Deny
    );
    // A star read is not covered by a list of named columns.
    assert_eq!(judge(&p, &s(&["public.customers.*"])).action, Action::Deny);
}

#[test]
fn deny_on_a_column_triggers_on_star() {
    let p = policy(
        r#"
[[rule]]
name = "read-all"
action = "allow"
[[rule]]
name = "no-ssn"
columns = ["public.customers.ssn"]
action = "deny"
message = "SSNs are off limits"
"#,
    );
    let s = |cols: &[&str]| with_columns(select(&["public.customers", "public.orders"]), cols);
    let v = judge(&p, &s(&["public.customers.*"]));
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Deny, Some("no-ssn"))
    );
    assert_eq!(v.message.as_deref(), Some("SSNs are off limits"));
    assert_eq!(
        judge(&p, &s(&["public.customers.ssn"])).action,
        Action::Deny
    );
    assert_eq!(
        judge(&p, &s(&["public.orders.id", "public.customers.ssn"])).action,
        Action::Deny
    );
    assert_eq!(
        judge(&p, &s(&["public.customers.name"])).action,
        Action::Allow
    );
    // A star over another table exposes nothing named.
    assert_eq!(judge(&p, &s(&["public.orders.*"])).action, Action::Allow);
    assert_eq!(judge(&p, &s(&["public.customer.*"])).action, Action::Allow);
}

#[test]
fn deny_column_globs_and_star() {
    let p = policy(
        r#"
[[rule]]
name = "read-all"
action = "allow"
[[rule]]
name = "no-card"
columns = ["*.card_*"]
action = "deny"
"#,
    );
    let s = |cols: &[&str]| with_columns(select(&["x.y"]), cols);
    assert_eq!(judge(&p, &s(&["x.y.card_number"])).action, Action::Deny);
    assert_eq!(judge(&p, &s(&["x.y.cardinal"])).action, Action::Allow);
    // Any table could have a card_ column: every star read is denied.
    assert_eq!(judge(&p, &s(&["x.y.*"])).action, Action::Deny);
}

#[test]
fn deny_lists_match_any_entry_and_combine_with_and() {
    let p = policy(
        r#"
[[rule]]
name = "read-all"
functions = ["*"]
action = "allow"
[[rule]]
name = "no-sleep-on-orders"
tables = ["public.orders"]
functions = ["pg_sleep"]
action = "deny"
"#,
    );
    let both = with_functions(
        select(&["public.orders", "public.users"]),
        &["now", "pg_sleep"],
    );
    assert_eq!(judge(&p, &both).action, Action::Deny);
    let table_only = with_functions(select(&["public.orders"]), &["now"]);
    assert_eq!(judge(&p, &table_only).action, Action::Allow);
    let function_only = with_functions(select(&["public.users"]), &["pg_sleep"]);
    assert_eq!(judge(&p, &function_only).action, Action::Allow);
}

#[test]
fn bare_deny_rule_covers_its_classes() {
    let p = policy(
        r#"
[[rule]]
name = "all"
classes = ["read", "write", "unknown"]
action = "allow"
[[rule]]
name = "no-writes"
classes = ["write"]
action = "deny"
[[rule]]
name = "bob-nothing"
identity = "bob"
action = "deny"
"#,
    );
    assert_eq!(judge(&p, &select(&["a.b"])).action, Action::Allow);
    let w = stmt(StatementClass::Write, "UPDATE", &["a.b"]);
    assert_eq!(judge(&p, &w).rule.as_deref(), Some("no-writes"));
    assert_eq!(judge(&p, &unknown()).action, Action::Allow);
    for s in [select(&[]), w, unknown()] {
        let v = p.decide_statement(
            &Subject {
                identity: "bob",
                target: "x",
            },
            &s,
        );
        assert_eq!(v.action, Action::Deny);
    }
}

#[test]
fn commands_match_ignoring_case() {
    let p = policy(
        r#"
[[rule]]
name = "deletes"
classes = ["write"]
commands = ["delete"]
action = "require_approval"
[[rule]]
name = "creates"
classes = ["ddl"]
commands = ["CREATE *"]
action = "allow"
"#,
    );
    let v = judge(
        &p,
        &stmt(StatementClass::Write, "DELETE", &["public.orders"]),
    );
    assert_eq!(v.action, Action::RequireApproval);
    assert_eq!(
        judge(&p, &stmt(StatementClass::Write, "INSERT", &[])).action,
        Action::Deny
    );
    assert_eq!(
        judge(&p, &stmt(StatementClass::Ddl, "CREATE TABLE", &[])).action,
        Action::Allow
    );
    assert_eq!(
        judge(&p, &stmt(StatementClass::Ddl, "DROP TABLE", &[])).action,
        Action::Deny
    );
}

// ---------------------------------------------------------------- classes, functions

#[test]
fn unknown_needs_an_explicit_class() {
    let p = policy("[[rule]]\nname = \"everything\"\nfunctions = [\"*\"]\naction = \"allow\"\n");
    let v = judge(&p, &unknown());
    assert_eq!((v.action, v.rule), (Action::Deny, None));
    for class in [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Ddl,
        StatementClass::Session,
        StatementClass::Function,
        StatementClass::Admin,
        StatementClass::Transaction,
    ] {
        assert_eq!(
            judge(&p, &stmt(class, "X", &[])).action,
            Action::Allow,
            "{class:?}"
        );
    }
    let p = policy("[[rule]]\nname = \"r\"\nclasses = [\"read\"]\naction = \"allow\"\n");
    assert_eq!(judge(&p, &unknown()).action, Action::Deny);
    for (action, extra) in [
        ("mask", "[rule.mask]\n\"public.t.c\" = \"null\"\n"),
        ("require_approval", ""),
    ] {
        let p = policy(&format!(
            "[[rule]]\nname = \"r\"\naction = \"{action}\"\n{extra}"
        ));
        assert_eq!(judge(&p, &unknown()).action, Action::Deny, "{action}");
    }
    let p = policy("[[rule]]\nname = \"u\"\nclasses = [\"unknown\"]\naction = \"allow\"\n");
    let v = judge(&p, &unknown());
    assert_eq!((v.action, v.rule.as_deref()), (Action::Allow, Some("u")));
}

#[test]
fn dangerous_operations_need_a_naming_rule() {
    let read_file = with_dangerous(
        stmt(StatementClass::Admin, "SELECT", &[]),
        &["pg_read_file"],
    );
    let p = policy("[[rule]]\nname = \"all\"\naction = \"allow\"\n");
    assert_eq!(judge(&p, &read_file).action, Action::Deny);
    let p = policy("[[rule]]\nname = \"all\"\nfunctions = [\"now\"]\naction = \"allow\"\n");
    assert_eq!(judge(&p, &read_file).action, Action::Deny);
    let p = policy("[[rule]]\nname = \"files\"\nfunctions = [\"pg_read_*\"]\naction = \"allow\"\n");
    assert_eq!(judge(&p, &read_file).action, Action::Allow);
    // Every dangerous entry must be named.
    let copy = with_dangerous(read_file.clone(), &["pg_read_file", "copy program"]);
    assert_eq!(judge(&p, &copy).action, Action::Deny);
}

#[test]
fn functions_need_a_naming_rule() {
    let sleepy = with_functions(select(&["public.orders"]), &["pg_sleep"]);
    let p = policy(ALLOW_ORDERS);
    assert_eq!(judge(&p, &sleepy).action, Action::Deny);
    let p = policy(
        "[[rule]]\nname = \"r\"\ntables = [\"public.*\"]\nfunctions = [\"pg_sleep\", \"now\"]\naction = \"allow\"\n",
    );
    assert_eq!(judge(&p, &sleepy).action, Action::Allow);
    let two = with_functions(select(&["public.orders"]), &["now", "lo_import"]);
    assert_eq!(judge(&p, &two).action, Action::Deny);
}

// ---------------------------------------------------------------- whole queries

#[test]
fn multi_statement_takes_the_most_restrictive() {
    let p = policy(
        r#"
[[rule]]
name = "allow-orders"
tables = ["public.orders"]
action = "allow"
[[rule]]
name = "mask-customers"
tables = ["public.customers"]
action = "mask"
[rule.mask]
"public.customers.ssn" = "redact"
[[rule]]
name = "approve-deletes"
classes = ["write"]
commands = ["DELETE"]
action = "require_approval"
message = "needs a human"
[[rule]]
name = "no-secrets"
tables = ["public.secrets"]
action = "deny"
message = "secret"
"#,
    );
    let orders = select(&["public.orders"]);
    let customers = select(&["public.customers"]);
    let delete = stmt(StatementClass::Write, "DELETE", &["public.orders"]);
    let secrets = select(&["public.secrets"]);

    let v = query(&p, vec![orders.clone()]);
    assert_eq!(
        (v.action, v.statement, v.rule.as_deref()),
        (Action::Allow, 0, Some("allow-orders"))
    );

    let v = query(&p, vec![orders.clone(), customers.clone(), orders.clone()]);
    assert_eq!(
        (v.action, v.statement, v.rule.as_deref()),
        (Action::Mask, 1, Some("mask-customers"))
    );

    let v = query(&p, vec![customers.clone(), delete.clone(), orders.clone()]);
    assert_eq!(
        (
            v.action,
            v.statement,
            v.rule.as_deref(),
            v.message.as_deref()
        ),
        (
            Action::RequireApproval,
            1,
            Some("approve-deletes"),
            Some("needs a human")
        )
    );

    let v = query(
        &p,
        vec![
            orders.clone(),
            delete.clone(),
            secrets.clone(),
            customers.clone(),
            secrets,
        ],
    );
    assert_eq!(
        (
            v.action,
            v.statement,
            v.rule.as_deref(),
            v.message.as_deref()
        ),
        (Action::Deny, 2, Some("no-secrets"), Some("secret"))
    );
    let actions: Vec<Action> = v.statements.iter().map(|s| s.action).collect();
    assert_eq!(
        actions,
        [
            Action::Allow,
            Action::RequireApproval,
            Action::Deny,
            Action::Mask,
            Action::Deny
        ]
    );

    // A default deny in the middle of allowed statements.
    let v = query(&p, vec![orders.clone(), select(&["public.users"]), orders]);
    assert_eq!((v.action, v.statement, v.rule), (Action::Deny, 1, None));
    assert_eq!(v.message.as_deref(), Some(DEFAULT_MESSAGE));
}

// ---------------------------------------------------------------- identity, target

#[test]
fn identity_and_target_globs() {
    let p = policy(
        r#"
[[rule]]
name = "agents-on-shop"
identity = ["agent-*", "bot-?"]
target = "shop*"
action = "allow"
"#,
    );
    let s = select(&["public.orders"]);
    assert_eq!(judge_as(&p, "agent-7", "shop", &s), Action::Allow);
    assert_eq!(judge_as(&p, "agent-", "shop-eu", &s), Action::Allow);
    assert_eq!(judge_as(&p, "bot-1", "shop", &s), Action::Allow);
    assert_eq!(judge_as(&p, "bot-12", "shop", &s), Action::Deny);
    assert_eq!(judge_as(&p, "Agent-7", "shop", &s), Action::Deny);
    assert_eq!(judge_as(&p, "agent-7", "billing", &s), Action::Deny);
    assert_eq!(judge_as(&p, "human", "shop", &s), Action::Deny);
}

#[test]
fn read_only() {
    let p = policy(
        r#"
[[rule]]
name = "agents-read"
identity = "agent-*"
classes = ["read", "transaction"]
action = "allow"
[[rule]]
name = "agents-mask"
identity = "agent-*"
target = "crm"
classes = ["read"]
action = "mask"
[rule.mask]
"public.customers.ssn" = "redact"
[[rule]]
name = "agents-no-writes"
identity = "agent-*"
classes = ["write"]
action = "deny"
[[rule]]
name = "agent-9-writes-billing"
identity = "agent-9"
target = "billing"
classes = ["read", "write"]
action = "allow"
[[rule]]
name = "dba"
identity = "dba"
target = "shop"
action = "allow"
[[rule]]
name = "ops-approval"
identity = "ops"
classes = ["ddl"]
action = "require_approval"
[[rule]]
name = "weird"
identity = "weird"
classes = ["unknown"]
action = "allow"
"#,
    );
    assert!(p.read_only("agent-1", "shop"));
    assert!(p.read_only("agent-1", "crm"));
    assert!(p.read_only("agent-9", "shop"));
    assert!(!p.read_only("agent-9", "billing"));
    assert!(!p.read_only("dba", "shop"));
    assert!(p.read_only("dba", "billing")); // nothing allowed at all
    assert!(!p.read_only("ops", "anything"));
    assert!(!p.read_only("weird", "x"));
    assert!(p.read_only("nobody", "shop"));
    assert!(Policy::deny_all().read_only("agent-1", "shop"));
    let all = policy(&fixture("allow-all.toml"));
    assert!(!all.read_only("anyone", "anywhere"));
}

// ---------------------------------------------------------------- fixtures

#[test]
fn fixtures_parse() {
    for name in ["allow-all.toml", "agents.toml", "analysts.toml"] {
        let src = fixture(name);
        let p = policy(&src);
        assert!(!p.rules().is_empty(), "{name}");
        assert_eq!(p.source(), src);
    }
}

#[test]
fn allow_all_allows_everything() {
    let p = policy(&fixture("allow-all.toml"));
    let statements = vec![
        select(&["public.orders", "secret.keys"]),
        with_columns(select(&["public.customers"]), &["public.customers.*"]),
        stmt(StatementClass::Write, "DELETE", &["public.orders"]),
        stmt(StatementClass::Ddl, "DROP TABLE", &["public.orders"]),
        stmt(StatementClass::Session, "SET", &[]),
        with_functions(stmt(StatementClass::Function, "SELECT", &[]), &["pg_sleep"]),
        with_dangerous(
            stmt(StatementClass::Admin, "COPY", &["public.orders"]),
            &["copy program"],
        ),
        unknown(),
        stmt(StatementClass::Transaction, "BEGIN", &[]),
        empty_query(),
    ];
    let v = p.decide(
        &Subject {
            identity: "anyone",
            target: "anywhere",
        },
        &Classification { statements },
    );
    assert_eq!(v.action, Action::Allow);
    assert!(v.statements.iter().all(|s| s.action == Action::Allow));
}

#[test]
fn agents_scenario() {
    let p = policy(&fixture("agents.toml"));
    let customers = |cols: &[&str]| with_columns(select(&["public.customers"]), cols);

    // Customers' names and emails are read masked.
    let v = judge(
        &p,
        &customers(&["public.customers.name", "public.customers.email"]),
    );
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Mask, Some("agents-mask-customer-contacts"))
    );
    let plan = &v.mask.as_ref().expect("masked").plan;
    assert_eq!(plan.columns.len(), 2);
    // A join with orders is allowed by the read rule, and still masked.
    let join = with_columns(
        select(&["public.customers", "public.orders"]),
        &["public.customers.name", "public.orders.total"],
    );
    let v = judge(&p, &join);
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Allow, Some("agents-read-shop"))
    );
    assert!(v.mask.is_some());
    // A statement touching no table is inside the mask rule's tables too.
    assert_eq!(
        judge(&p, &stmt(StatementClass::Transaction, "BEGIN", &[])).action,
        Action::Mask
    );

    // The incident: SELECT * FROM customers exposes the SSN column.
    for cols in [
        &["public.customers.*"][..],
        &["public.customers.ssn"],
        &["public.customers.card_number"],
    ] {
        let v = judge(&p, &customers(cols));
        assert_eq!(
            (v.action, v.rule.as_deref()),
            (Action::Deny, Some("agents-no-pii")),
            "{cols:?}"
        );
        assert_eq!(
            v.message.as_deref(),
            Some("customer SSNs and card numbers are off limits to agents")
        );
    }
    // SELECT * FROM orders is fine.
    let v = judge(
        &p,
        &with_columns(select(&["public.orders"]), &["public.orders.*"]),
    );
    assert_eq!(v.action, Action::Allow);

    // Other tables are denied by default.
    let v = judge(&p, &select(&["public.users"]));
    assert_eq!((v.action, v.rule), (Action::Deny, None));
    assert_eq!(
        v.message.as_deref(),
        Some("not permitted for agents: they may only read orders and customers")
    );

    // Writes are denied, deleting orders needs approval.
    let v = judge(
        &p,
        &stmt(StatementClass::Write, "UPDATE", &["public.orders"]),
    );
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (Action::Deny, Some("agents-no-writes"))
    );
    let v = judge(
        &p,
        &stmt(StatementClass::Write, "DELETE", &["public.orders"]),
    );
    assert_eq!(
        (v.action, v.rule.as_deref()),
        (
            Action::RequireApproval,
            Some("agents-delete-orders-needs-approval")
        )
    );
    let v = judge(
        &p,
        &stmt(StatementClass::Write, "DELETE", &["public.customers"]),
    );
    assert_eq!((v.action, v.rule), (Action::Deny, None));
    assert_eq!(
        judge(
            &p,
            &stmt(StatementClass::Ddl, "DROP TABLE", &["public.orders"])
        )
        .action,
        Action::Deny
    );
    assert_eq!(judge(&p, &unknown()).action, Action::Deny);

    // Only agents, only on shop.
    let s = select(&["public.orders"]);
    assert_eq!(judge_as(&p, "agent-1", "billing", &s), Action::Deny);
    assert_eq!(judge_as(&p, "alice", "shop", &s), Action::Deny);
    assert!(!p.read_only("agent-1", "shop")); // deletes may be approved
    assert!(p.read_only("agent-1", "billing"));
}

// ---------------------------------------------------------------- errors

#[test]
fn error_toml_syntax() {
    assert_error("[[rule]]\nname = \"a\naction = \"allow\"\n", 2, 10, "");
    assert_error("[[rule]]\nname = \"a\"\naction = allow\n", 3, 10, "");
    let e = error("[[rule\n");
    assert_eq!(e.line, 1);
}

#[test]
fn error_unknown_key() {
    let src = "[[rule]]\nname = \"a\"\naction = \"allow\"\ntable = [\"public.orders\"]\n";
    assert_error(src, 4, 1, "unknown field `table`");
    let e = error(src);
    assert!(e.message.contains("tables"), "lists the valid keys: {e}");
    assert_error(
        "[settings]\ndefault = \"x\"\n",
        2,
        1,
        "unknown field `default`",
    );
    assert_error("# top\nrules = []\n", 2, 1, "unknown field `rules`");
    assert_error("[[rules]]\nname = \"a\"\n", 1, 3, "unknown field `rules`");
}

#[test]
fn error_unknown_class() {
    let src = "[[rule]]\nname = \"a\"\nclasses = [\"read\", \"writes\"]\naction = \"allow\"\n";
    assert_error(src, 3, 20, "unknown class \"writes\"");
    assert!(error(src).message.contains("did you mean \"write\""));
    let src = "[[rule]]\nname = \"a\"\nclasses = \"sellect\"\naction = \"allow\"\n";
    assert_error(src, 3, 11, "unknown class \"sellect\"");
}

#[test]
fn error_bad_action() {
    let src = "[[rule]]\nname = \"a\"\n  action = \"permit\"\n";
    assert_error(src, 3, 12, "unknown action \"permit\"");
    assert_error("[[rule]]\nname = \"a\"\naction = 1\n", 3, 10, "");
}

#[test]
fn error_missing_action() {
    let src = "[[rule]]\nname = \"ok\"\naction = \"allow\"\n\n[[rule]]\nname = \"b\"\n";
    assert_error(src, 5, 1, "rule \"b\" has no `action`");
}

#[test]
fn error_duplicate_name() {
    let src =
        "[[rule]]\nname = \"a\"\naction = \"allow\"\n\n[[rule]]\nname = \"a\"\naction = \"deny\"\n";
    assert_error(src, 6, 8, "duplicate rule name \"a\"");
    assert!(error(src).message.contains("line 1"));
}

#[test]
fn error_names() {
    assert_error(
        "[[rule]]\nname = \"\"\naction = \"allow\"\n",
        2,
        8,
        "rule name is empty",
    );
    assert_error("[[rule]]\naction = \"allow\"\n", 1, 1, "has no `name`");
    assert_error(
        "[[rule]]\nname = \"read orders\"\naction = \"allow\"\n",
        2,
        8,
        "may only contain",
    );
}

#[test]
fn error_patterns() {
    let rule = |body: &str| format!("[[rule]]\nname = \"a\"\naction = \"deny\"\n{body}\n");
    assert_error(
        &rule("tables = [\"public.orders\", \"orders\"]"),
        4,
        28,
        "\"public.orders\" or \"*.orders\"",
    );
    assert_error(&rule("columns = [\"ssn\"]"), 4, 12, "\"*.ssn\"");
    assert_error(&rule("tables = [\"public.[ab]\"]"), 4, 11, "reserved");
    assert_error(&rule("identity = \"\""), 4, 12, "empty pattern");
    assert_error(&rule("tables = []"), 4, 10, "empty list");
    assert_error(&rule("classes = []"), 4, 11, "empty list");
    assert_error(
        &rule("identity = 3"),
        4,
        12,
        "a string or a list of strings",
    );
    assert_error(&rule("functions = [\"a\", 3]"), 4, 19, "");
}

#[test]
fn error_shapes() {
    assert_error(
        "[rule]\nname = \"a\"\naction = \"allow\"\n",
        1,
        1,
        "[[rule]]",
    );
    assert_error("[settings]\ndefault_message = \"  \"\n", 2, 19, "empty");
    assert_error(
        "[[rule]]\nname = \"a\"\naction = \"deny\"\nmessage = \"\"\n",
        4,
        11,
        "empty",
    );
}

#[test]
fn error_display_and_columns_count_characters() {
    let e = error("# é\n[[rule]]\nname = \"é\"\naction = \"allow\"\n");
    assert_eq!((e.line, e.column), (3, 8));
    assert_eq!(e.to_string(), format!("line 3, column 8: {}", e.message));
    let e = error("x = \"é\" é\n");
    assert_eq!(e.line, 1);
    assert!(e.column >= 9, "{e}");
}

// ---------------------------------------------------------------- robustness

fn check_error_position(src: &str, e: &PolicyError) {
    let lines = src.split('\n').count();
    assert!(e.line >= 1 && e.line <= lines, "{e} for {src:?}");
    assert!(e.column >= 1, "{e} for {src:?}");
    assert!(!e.message.is_empty());
}

/// Applies char-level edits (insert, delete, replace) to `src`.
fn mutate(src: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for &(pos, op, c) in edits {
        let at = pos % (chars.len() + 1);
        match op % 3 {
            0 => chars.insert(at, c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = c,
            _ => chars.push(c),
        }
    }
    chars.into_iter().collect()
}

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::sample::select(vec![
            '[', ']', '"', '\'', '=', ',', '.', '*', '?', '\n', ' ', '#', '{', '}', '\\', 'a', '0',
            '-', '_', 'é', '\r', '\t', '\u{0}',
        ]),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_never_panics_on_arbitrary_text(src in any::<String>()) {
        if let Err(e) = Policy::parse(&src) {
            check_error_position(&src, &e);
        }
    }

    #[test]
    fn parse_never_panics_on_toml_like_text(src in "[\\[\\]a-z_=\" \n,.*?{}#'0-9-]{0,200}") {
        if let Err(e) = Policy::parse(&src) {
            check_error_position(&src, &e);
        }
    }

    #[test]
    fn parse_never_panics_on_mutated_policies(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), interesting_char()), 1..6),
    ) {
        let name = ["allow-all.toml", "agents.toml", "analysts.toml"][which];
        let src = mutate(&fixture(name), &edits);
        match Policy::parse(&src) {
            Err(e) => check_error_position(&src, &e),
            Ok(p) => {
                // Whatever parsed must also judge without panicking.
                let s = with_columns(select(&["public.customers"]), &["public.customers.*"]);
                let _ = p.decide(&AGENT, &Classification { statements: vec![s, unknown()] });
                let _ = p.read_only("agent-1", "shop");
            }
        }
    }
}

/// A policy that allows every statement of every class, for the settings
/// that are denied whatever the rules say.
const ALLOW_EVERYTHING: &str = r#"
[[rule]]
name = "everything"
identity = "*"
classes = ["read", "write", "ddl", "session", "function", "admin", "unknown", "transaction"]
functions = ["*"]
action = "allow"
"#;

/// A change of client encoding or string syntax is denied whatever the
/// rules allow: the database must read SQL as the gateway judged it.
#[test]
fn sql_text_setting_changes_are_denied_whatever_the_rules_say() {
    use gatehouse_engine::classify::classify;
    use gatehouse_engine::policy::SQL_TEXT_SETTING_MESSAGE;
    let p = policy(ALLOW_EVERYTHING);
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET client_encoding TO DEFAULT",
        "SET SESSION client_encoding = 'LATIN1'",
        "SET LOCAL client_encoding TO 'BIG5'",
        "SET \"CLIENT_ENCODING\" = 'SJIS'",
        "set Client_Encoding = sjis",
        "SET NAMES 'SJIS'",
        "SET NAMES DEFAULT",
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('CLIENT_ENCODING', 'SJIS', false)",
        "SELECT pg_catalog.set_config($1, 'SJIS', false)",
        "SELECT set_config(E'client\\x5fencoding', 'SJIS', false)",
        "SELECT set_config('client' || '_encoding', 'SJIS', false)",
        "SELECT 1 WHERE set_config($$client_encoding$$, 'SJIS', true) IS NOT NULL",
        "SELECT 1; SET client_encoding = 'SJIS'",
        "SET standard_conforming_strings = off",
        "SET LOCAL standard_conforming_strings TO off",
        "SET standard_conforming_strings TO DEFAULT",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    ] {
        let v = p.decide(&AGENT, &classify(sql));
        assert_eq!(v.action, Action::Deny, "{sql}");
        assert_eq!(v.rule, None, "{sql}");
        assert_eq!(
            v.message.as_deref(),
            Some(SQL_TEXT_SETTING_MESSAGE),
            "{sql}"
        );
    }
    // Other settings, and RESET (back to the session's UTF8), follow the rules.
    for sql in [
        "SET search_path = public",
        "SET application_name = 'x'",
        "RESET client_encoding",
        "RESET ALL",
        "SELECT set_config('application_name', 'x', false)",
        "SELECT current_setting('client_encoding')",
    ] {
        let v = p.decide(&AGENT, &classify(sql));
        assert_eq!(v.action, Action::Allow, "{sql}");
        assert_eq!(v.rule.as_deref(), Some("everything"), "{sql}");
    }
}

/// The session limits the gateway sets (statement_timeout,
/// idle_in_transaction_session_timeout) cannot be changed by a client,
/// whatever the rules allow: a read must not hold locks or burn the server
/// indefinitely.
#[test]
fn session_limit_changes_are_denied_whatever_the_rules_say() {
    use gatehouse_engine::classify::classify;
    use gatehouse_engine::policy::SESSION_LIMIT_MESSAGE;
    let p = policy(ALLOW_EVERYTHING);
    for sql in [
        "SET statement_timeout = 0",
        "SET statement_timeout TO DEFAULT",
        "SET SESSION statement_timeout = '1h'",
        "SET LOCAL statement_timeout TO 0",
        "SET \"STATEMENT_TIMEOUT\" = 0",
        "set Idle_In_Transaction_Session_Timeout = 0",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT set_config('IDLE_IN_TRANSACTION_SESSION_TIMEOUT', '0', true)",
        "SELECT 1; SET statement_timeout = 0",
    ] {
        let v = p.decide(&AGENT, &classify(sql));
        assert_eq!(v.action, Action::Deny, "{sql}");
        assert_eq!(v.rule, None, "{sql}");
        assert_eq!(v.message.as_deref(), Some(SESSION_LIMIT_MESSAGE), "{sql}");
    }
    // RESET goes back to the gateway's value; reading them is fine.
    for sql in [
        "RESET statement_timeout",
        "SHOW statement_timeout",
        "SELECT current_setting('statement_timeout')",
        "SET lock_timeout = '5s'",
    ] {
        let v = p.decide(&AGENT, &classify(sql));
        assert_eq!(v.action, Action::Allow, "{sql}");
    }
}

/// Deny rules hold through views: what a view reads counts for deny rules
/// (by column and by table), not for allow rules.
#[test]
fn deny_rules_are_judged_on_what_views_read() {
    use gatehouse_engine::classify::classify;
    let p = policy(
        r#"
[[rule]]
name = "reads"
identity = "*"
classes = ["read"]
action = "allow"

[[rule]]
name = "no-ssn"
identity = "*"
columns = ["public.customers.ssn"]
action = "deny"
message = "no SSNs"

[[rule]]
name = "no-secrets"
identity = "*"
tables = ["secret.*"]
action = "deny"
"#,
    );
    let c = classify("SELECT tax_id FROM people");
    let plain = p.decide(&AGENT, &c);
    assert_eq!(
        plain.action,
        Action::Allow,
        "without the catalog it looks harmless"
    );
    let through = p.decide_with_views(
        &AGENT,
        &c,
        &[vec![
            "public.customers.id".into(),
            "public.customers.ssn".into(),
        ]],
    );
    assert_eq!(through.action, Action::Deny);
    assert_eq!(through.rule.as_deref(), Some("no-ssn"));
    assert!(through
        .message
        .unwrap()
        .contains("read through a view of public.customers"));
    // A whole-row dependency exposes every column.
    let star = p.decide_with_views(&AGENT, &c, &[vec!["public.customers.*".into()]]);
    assert_eq!(star.action, Action::Deny);
    // A table rule holds through a view too.
    let secret = p.decide_with_views(&AGENT, &c, &[vec!["secret.orders.note".into()]]);
    assert_eq!(secret.rule.as_deref(), Some("no-secrets"));
    // A view reading nothing denied is allowed.
    let fine = p.decide_with_views(&AGENT, &c, &[vec!["public.customers.name".into()]]);
    assert_eq!(fine.action, Action::Allow);
    assert!(p.denies_names("agent-1", "shop"));
}
