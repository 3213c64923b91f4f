//! Approvals in Slack (issue 18) against a stand-in Slack on 127.0.0.1:
//! a held statement is posted with its context and buttons; a press acts
//! only for the operator its Slack user linked from a signed-in console
//! session; quorum and self-approval hold as everywhere; a denial needs a
//! reason; the message follows every decision, whichever channel took it;
//! the Socket Mode connection comes back when Slack asks.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gatehouse_ledger::event::EventBody;
use serde_json::Value;
use support::console_http::{token, Browser, POLICY};
use support::fake_slack::{press, submit, FakeSlack};
use support::{spawn_query, Env};

const APPROVE: &str = "gatehouse.approve";
const DENY: &str = "gatehouse.deny";

async fn start() -> (Env, FakeSlack) {
    let slack = FakeSlack::start().await;
    let port = slack
        .api_url
        .rsplit(':')
        .next()
        .unwrap()
        .replace("/api", "");
    let (bot, app) = (
        format!("GH_SLACK_BOT_{port}"),
        format!("GH_SLACK_APP_{port}"),
    );
    std::env::set_var(&bot, "xoxb-test-bot");
    std::env::set_var(&app, "xapp-test-app");
    let env = Env::start_approvals_with(
        POLICY,
        "console_url = \"http://console.test/\"",
        &format!(
            "\n[slack]\nchannel = \"C1\"\nbot_token_env = \"{bot}\"\napp_token_env = \"{app}\"\napi_url = \"{}\"\n",
            slack.api_url
        ),
    )
    .await;
    slack.connected(1).await;
    (env, slack)
}

/// Links Slack user `user` to operator `who` the way a person does: the
/// button they pressed while unlinked sent them a link; they open it,
/// sign in to the console, and confirm.
async fn link(env: &Env, slack: &FakeSlack, user: &str, who: &str) {
    let offers = slack
        .calls("chat.postEphemeral")
        .into_iter()
        .filter(|c| c.body["user"] == user)
        .count();
    let ack = slack.interact(press(APPROVE, 999_999, user)).await;
    assert!(ack.get("payload").is_none());
    let offer = slack
        .nth_call_where("chat.postEphemeral", |c| c.body["user"] == user, offers + 1)
        .await;
    let text = offer.body["text"].as_str().unwrap().to_owned();
    assert!(text.contains("not linked"), "{text}");
    let path = text
        .split("http://console.test")
        .nth(1)
        .and_then(|s| s.split('|').next())
        .unwrap_or_else(|| panic!("no console link in {text}"))
        .to_owned();
    assert!(path.starts_with("/console/link/"), "{path}");
    // Not signed in: sign in first, then back to the link.
    let mut browser = Browser::new(env);
    let page = browser.get(&path).await;
    assert_eq!(page.status, 303);
    let signin = page.location.unwrap();
    assert_eq!(signin, format!("/console/signin?next={path}"));
    assert!(browser
        .get(&signin)
        .await
        .body
        .contains(&format!("name=\"next\" value=\"{path}\"")));
    let page = browser
        .post(
            "/console/signin",
            &[("token", &token(env, who)), ("next", &path)],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some(path.as_str()));
    browser.cookie = Some(
        page.set_cookie
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned(),
    );
    let confirm = browser.get(&path).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains(&format!("({user})")),
        "{}",
        confirm.body
    );
    let form_token = browser.form_token(&path).await;
    let page = browser.post(&path, &[("form_token", &form_token)]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let account = browser.get("/console/account?linked=1").await;
    assert!(
        account.body.contains(&format!("({user})")),
        "{}",
        account.body
    );
    // The link works once.
    assert_eq!(
        browser
            .post(&path, &[("form_token", &form_token)])
            .await
            .status,
        404
    );
}

/// What became of a held statement's client, within 10 s.
async fn ran(
    held: tokio::task::JoinHandle<Result<u64, tokio_postgres::Error>>,
) -> Result<u64, tokio_postgres::Error> {
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the client got an answer")
        .unwrap()
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_slack_user_approves_and_every_decision_updates_the_message() {
    let (env, slack) = start().await;
    let client = Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 1");
    let posted = slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(posted.token, "xoxb-test-bot");
    assert_eq!(posted.body["channel"], "C1");
    let shown = text(&posted.body);
    for field in [
        "DELETE FROM orders WHERE id = 1",
        "gh-test",
        "delete-orders",
        "0 of 1 approvals",
        "Approve once",
        "http://console.test/console/inbox#approval-1",
    ] {
        assert!(shown.contains(field), "{field:?} missing in {shown}");
    }
    // Alice's Slack user is not linked: the press does nothing but offer
    // a link, and the refusal is recorded.
    let ack = slack.interact(press(APPROVE, 1, "UALICE")).await;
    assert!(ack.get("payload").is_none());
    let offer = slack.nth_call("chat.postEphemeral", 1).await;
    assert_eq!(offer.body["user"], "UALICE");
    assert!(text(&offer.body).contains("/console/link/"));
    link(&env, &slack, "UALICE", "alice").await;
    let ack = slack.interact(press(APPROVE, 1, "UALICE")).await;
    assert!(ack.get("payload").is_none());
    assert_eq!(ran(held).await.unwrap(), 1, "the client's statement ran");
    let updated = slack
        .call_showing("chat.update", "*Approved* by alice")
        .await;
    assert_eq!(updated.body["ts"], posted_ts(1));
    assert!(
        !text(&updated.body).contains(APPROVE),
        "no buttons once decided"
    );
    slack
        .call_showing(
            "chat.postEphemeral",
            "You approved request 1 as alice: the statement runs",
        )
        .await;
    env.settle().await;
    let events = env.events();
    assert!(events.iter().any(|e| matches!(e,
        EventBody::ChatUserLinked(l) if l.operator == "alice" && l.user == "UALICE" && l.workspace == "T1" && l.service == "slack")));
    assert!(events.iter().any(|e| matches!(e,
        EventBody::ApprovalGranted(g) if g.operator == "alice" && g.approval == 1)));
    assert!(events.iter().any(|e| matches!(e,
        EventBody::OperatorAction(a) if a.operator == "(slack user UALICE in T1)" && a.outcome == "unlinked")));

    // Quorum of two: Alice's press shows 1 of 2; Bob's approval from the
    // API releases it, and the message follows.
    let held = spawn_query(&client, "UPDATE orders SET total = 0 WHERE id = 2");
    slack.nth_call("chat.postMessage", 2).await;
    slack.interact(press(APPROVE, 2, "UALICE")).await;
    slack
        .call_showing("chat.update", "1 of 2 approvals (alice)")
        .await;
    slack
        .call_showing("chat.postEphemeral", "1 of 2 approvals")
        .await;
    env.shared()
        .approvals
        .approve(&env.shared().ledger, 2, "bob", None)
        .await
        .unwrap();
    assert_eq!(ran(held).await.unwrap(), 1);
    slack
        .call_showing("chat.update", "*Approved* by alice, bob")
        .await;
    env.settle().await;
    assert!(env.verify().is_intact());
}

fn posted_ts(n: usize) -> String {
    format!("1700000000.{n:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_is_refused_and_a_denial_from_slack_needs_a_reason() {
    let (env, slack) = start().await;
    link(&env, &slack, "UAGENT", "agent").await;
    link(&env, &slack, "UALICE", "alice").await;
    let client = Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 3");
    slack.nth_call("chat.postMessage", 1).await;
    // The operator named like the asking identity cannot approve it.
    slack.interact(press(APPROVE, 1, "UAGENT")).await;
    let refused = slack
        .call_showing("chat.postEphemeral", "Request 1 was not approved")
        .await;
    assert_eq!(refused.body["user"], "UAGENT");
    assert!(
        text(&refused.body).contains("cannot approve"),
        "{}",
        text(&refused.body)
    );
    assert_eq!(env.shared().approvals.get(1).unwrap().approvers.len(), 0);
    // Deny opens the reason dialog; a blank reason keeps it open.
    slack.interact(press(DENY, 1, "UALICE")).await;
    let opened = slack.nth_call("views.open", 1).await;
    assert_eq!(opened.body["trigger_id"], "trigger-UALICE-1");
    let view = opened.body["view"].clone();
    let ack = slack.interact(submit(&view, "UALICE", "   ")).await;
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    assert!(text(&ack["payload"]["errors"]["reason"]).contains("reason is required"));
    assert!(!held.is_finished());
    let ack = slack
        .interact(submit(&view, "UALICE", "not on a Friday"))
        .await;
    assert!(ack.get("payload").is_none(), "{ack}");
    let error = ran(held).await.unwrap_err();
    assert!(
        error.to_string().contains("not on a Friday")
            || format!("{error:?}").contains("not on a Friday"),
        "{error:?}"
    );
    slack
        .call_showing("chat.update", "*Denied* by alice: not on a Friday")
        .await;
    // A second submission of the same dialog: already decided.
    let ack = slack.interact(submit(&view, "UALICE", "again")).await;
    assert!(
        text(&ack["payload"]["errors"]["reason"]).contains("already"),
        "{ack}"
    );
    env.settle().await;
    assert!(env.events().iter().any(|e| matches!(e,
        EventBody::ApprovalDenied(d) if d.operator.as_deref() == Some("alice") && d.reason == "not on a Friday")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_comes_back_when_slack_asks_and_an_unlinked_user_stays_powerless() {
    let (env, slack) = start().await;
    slack.push(serde_json::json!({"type": "disconnect", "reason": "refresh_requested"}));
    slack.connected(2).await;
    assert_eq!(slack.calls("apps.connections.open").len(), 2);
    assert!(slack
        .calls("apps.connections.open")
        .iter()
        .all(|c| c.token == "xapp-test-app"));
    let client = Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 4");
    slack.nth_call("chat.postMessage", 1).await;
    // An unlinked user's presses approve nothing and open no dialog; a
    // redelivered envelope is acknowledged again but handled once.
    slack.deliver(press(APPROVE, 1, "UMALLORY"), 3).await;
    slack.interact(press(DENY, 1, "UMALLORY")).await;
    slack
        .nth_call_where("chat.postEphemeral", |c| c.body["user"] == "UMALLORY", 2)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slack.calls("chat.postEphemeral").len(),
        2,
        "one link offered per distinct press"
    );
    assert!(slack.calls("views.open").is_empty());
    assert!(!held.is_finished());
    assert_eq!(env.shared().approvals.get(1).unwrap().approvers.len(), 0);
    // A decision from the API lands in Slack too.
    env.shared()
        .approvals
        .deny(&env.shared().ledger, 1, Some("bob"), "wrong table")
        .await
        .unwrap();
    slack
        .call_showing("chat.update", "*Denied* by bob: wrong table")
        .await;
    assert!(held.await.unwrap().is_err());
}
