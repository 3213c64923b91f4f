//! The console (`/console` on the admin listener, issue 18), driven over
//! HTTP the way a browser drives it: a real PostgreSQL, a real client whose
//! statement is held, sign-in by token exchanged for a session cookie,
//! forms carrying the session's token from the browser's own origin.

mod support;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_ledger::event::EventBody;
use support::console_http::{signed_in, token, Browser, POLICY};
use support::{spawn_query, Env};

/// The value that follows the first `marker` in `html`, up to its closing
/// quote (an attribute's value).
fn attribute_after(html: &str, marker: &str) -> String {
    html.split(marker)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
        .to_owned()
}

/// Waits until the inbox shows `n` requests.
async fn inbox_with(b: &Browser, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = b.get("/console/inbox").await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.matches("<article class=\"held\"").count() == n {
            return page.body;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} held: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn operator_actions(env: &Env) -> Vec<(String, String, String)> {
    env.events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::OperatorAction(a) => Some((a.operator, a.action, a.outcome)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_exchanges_the_token_for_a_session_cookie() {
    let env = Env::start_approvals(POLICY, "").await;
    let mut b = Browser::new(&env);
    let page = b.get("/console/inbox").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/console/signin"));
    let signin = b.get("/console/signin").await;
    assert_eq!(signin.status, 200);
    let csp = signin.csp.unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    // A wrong token: refused and recorded; no cookie.
    let page = b.sign_in("ghop_not_a_token").await;
    assert_eq!(page.status, 401);
    assert!(page.set_cookie.is_none());
    // A sign-in posted from another site is refused.
    let page = b
        .post_from(
            "http://evil.example",
            "/console/signin",
            &[("token", &token(&env, "alice"))],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(page.set_cookie.is_none());
    // The right one: a session cookie the page script cannot read.
    let page = b.sign_in(&token(&env, "alice")).await;
    assert_eq!(page.status, 303);
    let cookie = page.set_cookie.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains(&token(&env, "alice")),
        "the token is not the cookie"
    );
    let inbox = b.get("/console/inbox").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains("Signed in as <strong>alice</strong>"));
    assert!(inbox.body.contains("No statement is waiting"));
    // Signing out ends the session on the server.
    let form_token = b.form_token("/console/inbox").await;
    let page = b
        .post("/console/signout", &[("form_token", &form_token)])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(b.get("/console/inbox").await.status, 303);
    env.settle().await;
    let actions = operator_actions(&env);
    for (who, outcome) in [("(unauthenticated)", "unauthenticated"), ("alice", "ok")] {
        assert!(
            actions
                .iter()
                .any(|(o, a, r)| o == who && a == "console.signin" && r == outcome),
            "{actions:?}"
        );
    }
    assert!(actions
        .iter()
        .any(|(o, a, _)| o == "alice" && a == "console.signout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_shows_its_context_and_an_approval_from_the_console_releases_it() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = Arc::new(env.connect("agent").await);
    client.simple_query("SELECT 42").await.unwrap();
    let alice = signed_in(&env, "alice").await;
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 1");
    let page = inbox_with(&alice, 1).await;
    for field in [
        "DELETE FROM orders WHERE id = 1",
        "<dd class=\"identity\">agent</dd>",
        "<dd class=\"application\">gh-test</dd>",
        "<dd class=\"rule\">delete-orders</dd>",
        "<dd class=\"message\">deletes need a human</dd>",
        "<dd class=\"class\">write</dd>",
        "<dd class=\"tables\">public.orders</dd>",
        "delete from orders where id=?",
        "0 of 1 approvals",
        "expires in ",
        "SELECT 42",
        "Approve once",
        "Approve for duration",
    ] {
        assert!(page.contains(field), "{field:?} missing in\n{page}");
    }
    let id = attribute_after(&page, "data-approval=\"");
    let form_token = alice.form_token("/console/inbox").await;
    let answer = alice
        .post(
            &format!("/console/approvals/{id}/approve"),
            &[("form_token", &form_token), ("duration", "")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(
        held.await.unwrap().unwrap(),
        1,
        "the client's statement ran"
    );
    assert!(inbox_with(&alice, 0)
        .await
        .contains("No statement is waiting"));
    env.settle().await;
    assert!(env.events().into_iter().any(|e| matches!(
        e,
        EventBody::ApprovalGranted(g) if g.operator == "alice" && g.grant_until.is_none()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cross_origin_and_unentitled_decisions_are_refused() {
    let env = Env::start_approvals(POLICY, "").await;
    let client = Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "UPDATE orders SET total = 0 WHERE id = 3");
    let alice = signed_in(&env, "alice").await;
    let page = inbox_with(&alice, 1).await;
    let id = attribute_after(&page, "data-approval=\"");
    let approve = format!("/console/approvals/{id}/approve");
    let deny = format!("/console/approvals/{id}/deny");
    let alice_token = alice.form_token("/console/inbox").await;
    // Without the form token, with another session's, from another site.
    assert_eq!(alice.post(&approve, &[("duration", "")]).await.status, 403);
    let bob = signed_in(&env, "bob").await;
    let bob_token = bob.form_token("/console/inbox").await;
    assert_ne!(alice_token, bob_token);
    assert_eq!(
        alice
            .post(&approve, &[("form_token", &bob_token)])
            .await
            .status,
        403
    );
    assert_eq!(
        alice
            .post_from(
                "http://evil.example",
                &approve,
                &[("form_token", &alice_token)]
            )
            .await
            .status,
        403
    );
    // No cookie at all: the forger has no session.
    let stranger = Browser::new(&env);
    assert_eq!(
        stranger
            .post(&approve, &[("form_token", &alice_token)])
            .await
            .status,
        303,
        "sent to sign in"
    );
    // The operator named like the asking identity sees no buttons, and its
    // POST is refused by the approval code itself.
    let agent_op = signed_in(&env, "agent").await;
    let own = inbox_with(&agent_op, 1).await;
    assert!(
        own.contains("named like you") && !own.contains("Approve once"),
        "{own}"
    );
    let agent_token = agent_op.form_token("/console/inbox").await;
    assert_eq!(
        agent_op
            .post(&approve, &[("form_token", &agent_token)])
            .await
            .status,
        403
    );
    // An auditor sees the request and no buttons; a POST is forbidden.
    let viewer = signed_in(&env, "viewer").await;
    let seen = inbox_with(&viewer, 1).await;
    assert!(!seen.contains("Approve once") && !seen.contains("action=\"/console/approvals"));
    let viewer_token = viewer.form_token("/console/inbox").await;
    assert_eq!(
        viewer
            .post(&approve, &[("form_token", &viewer_token)])
            .await
            .status,
        403
    );
    // Quorum 2: alice's approval shows as 1 of 2 in bob's console.
    let answer = alice
        .post(&approve, &[("form_token", &alice_token), ("duration", "")])
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let progress = inbox_with(&bob, 1).await;
    assert!(progress.contains("1 of 2 approvals") && progress.contains("by alice"));
    // A denial needs a reason; the client receives it.
    assert_eq!(
        bob.post(&deny, &[("form_token", &bob_token), ("reason", "  ")])
            .await
            .status,
        400
    );
    let answer = bob
        .post(
            &deny,
            &[("form_token", &bob_token), ("reason", "not on a Friday")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let e = held.await.unwrap().unwrap_err();
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("not on a Friday"), "{message}");
    env.settle().await;
    let refused = operator_actions(&env)
        .into_iter()
        .filter(|(_, a, r)| a == "approval.approve" && r == "forbidden")
        .count();
    assert!(refused >= 3, "refusals are recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_hears_of_a_new_request_at_once_and_renders_hostile_text_as_text() {
    let env = Env::start_approvals(POLICY, "").await;
    let alice = signed_in(&env, "alice").await;
    // The event stream, as the page's script opens it.
    let url = format!("{}/console/events", alice.base);
    let cookie = alice.cookie.clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let r = Browser::agent()
            .get(&url)
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        for line in BufReader::new(r.into_body().into_reader()).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let hostile = env.conn_str("agent").replace(
        "application_name=gh-test",
        "application_name='<img/src=x/onerror=alert(1)>'",
    );
    let (client, connection) = tokio_postgres::connect(&hostile, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let client = Arc::new(client);
    let sent = Instant::now();
    let held = spawn_query(
        &client,
        "DELETE FROM orders WHERE id = 2 AND '<script>alert(2)</script>' <> ''",
    );
    let event = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an event within 5 s");
        if let Some(id) = line.strip_prefix("id: ") {
            break id.to_owned();
        }
    };
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert!(event.parse::<u64>().unwrap() > 0);
    let items = alice.get("/console/inbox/items").await;
    assert!(
        items.body.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{}",
        items.body
    );
    assert!(!items.body.contains("<script>alert"));
    assert!(!items.body.contains("<img/src=x"));
    assert!(
        items.body.contains("&lt;img/src=x/onerror=alert(1)&gt;"),
        "the application name is shown, as text: {}",
        items.body
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_block_from_the_sessions_page_end_the_client_and_are_recorded() {
    let env = Env::start_approvals(POLICY, "").await;
    let admin = signed_in(&env, "admin").await;
    let victim = env.connect("agent").await;
    victim.simple_query("SELECT 1").await.unwrap();
    let page = admin.get("/console/sessions").await;
    assert!(
        page.body.contains("<td class=\"identity\">agent</td>"),
        "{}",
        page.body
    );
    let session = attribute_after(&page.body, "id=\"session-");
    let form_token = admin.form_token("/console/sessions").await;
    // A reason is required.
    let page = admin
        .post(
            &format!("/console/sessions/{session}/kill"),
            &[("form_token", &form_token), ("reason", "")],
        )
        .await;
    assert_eq!(page.status, 400);
    let page = admin
        .post(
            &format!("/console/sessions/{session}/kill"),
            &[("form_token", &form_token), ("reason", "runaway agent")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while victim.simple_query("SELECT 1").await.is_ok() {
        assert!(Instant::now() < deadline, "the killed session still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An auditor sees no containment buttons, and cannot block.
    let viewer = signed_in(&env, "viewer").await;
    let other = env.connect("agent").await;
    other.simple_query("SELECT 1").await.unwrap();
    let seen = viewer.get("/console/sessions").await;
    assert!(!seen.body.contains("/kill"), "{}", seen.body);
    let viewer_token = viewer.form_token("/console/sessions").await;
    let page = viewer
        .post(
            "/console/identities/agent/block",
            &[("form_token", &viewer_token), ("reason", "x")],
        )
        .await;
    assert_eq!(page.status, 403);
    let page = admin
        .post(
            "/console/identities/agent/block",
            &[("form_token", &form_token), ("reason", "exfiltration")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let refused = tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "a blocked identity cannot log in");
    env.settle().await;
    let events = env.events();
    assert!(events.iter().any(|e| matches!(
        e,
        EventBody::SessionTerminated(t) if t.operator.is_some() && t.reason == "runaway agent"
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        EventBody::IdentityBlocked(b) if b.identity == "agent" && b.reason == "exfiltration"
    )));
    // The replay viewer is the replay's own page.
    let replay = admin
        .get(&format!("/console/replay?session={session}"))
        .await;
    assert_eq!(replay.status, 200);
    assert!(replay.body.contains("SELECT 1"), "{}", replay.body);
    assert!(!replay.csp.unwrap().contains("script-src"));
    // Byte for byte what `gatehouse replay --html` writes for the session
    // (read again if a checkpoint was signed between the two reads).
    let number: u64 = session.parse().unwrap();
    let written = || {
        let ledger = env.ledger();
        tokio::task::spawn_blocking(move || {
            let loaded = gatehouse::replay::load(
                &ledger,
                gatehouse::replay::Selection::Session(number),
                gatehouse::replay::Window::default(),
                None,
            )
            .unwrap();
            gatehouse::replay::html::render(&loaded)
        })
    };
    for attempt in 0.. {
        let before = written().await.unwrap();
        let shown = admin
            .get(&format!("/console/replay?session={session}"))
            .await
            .body;
        let after = written().await.unwrap();
        if shown == before || shown == after {
            break;
        }
        assert!(
            before != after && attempt < 5,
            "the console's replay differs:\n{shown}\n---\n{after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_page_dry_runs_statements_and_the_audit_view_lists_decisions() {
    let env = Env::start_approvals(POLICY, "").await;
    let alice = signed_in(&env, "alice").await;
    let page = alice.get("/console/policy").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("name = &quot;delete-orders&quot;"),
        "{}",
        page.body
    );
    let form_token = alice.form_token("/console/policy").await;
    let judged = |sql: &'static str| {
        let token = form_token.clone();
        let alice = &alice;
        async move {
            alice
                .post(
                    "/console/policy",
                    &[
                        ("form_token", &token),
                        ("identity", "agent"),
                        ("target", "shop"),
                        ("sql", sql),
                    ],
                )
                .await
        }
    };
    let held = judged("DELETE FROM orders WHERE id = 1").await;
    assert_eq!(held.status, 200, "{}", held.body);
    assert!(
        held.body
            .contains("<strong class=\"verdict\">require_approval</strong>"),
        "{}",
        held.body
    );
    assert!(held.body.contains("delete-orders"));
    let denied = judged("DELETE FROM customers").await;
    assert!(
        denied
            .body
            .contains("<strong class=\"verdict\">deny</strong>"),
        "{}",
        denied.body
    );
    // Nothing ran: a dry run only judges.
    assert_eq!(
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id = 1")
            .trim(),
        "1"
    );
    // Decisions and containment show in the audit view, with reasons,
    // once their checkpoint is signed.
    let client = Arc::new(env.connect("agent").await);
    let held = spawn_query(&client, "DELETE FROM orders WHERE id = 2");
    let page = inbox_with(&alice, 1).await;
    let id = attribute_after(&page, "data-approval=\"");
    let token = alice.form_token("/console/inbox").await;
    let answer = alice
        .post(
            &format!("/console/approvals/{id}/deny"),
            &[("form_token", &token), ("reason", "needs a change ticket")],
        )
        .await;
    assert_eq!(answer.status, 303);
    assert!(held.await.unwrap().is_err());
    let viewer = signed_in(&env, "viewer").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = viewer.get("/console/audit").await;
        assert_eq!(audit.status, 200, "{}", audit.body);
        if audit.body.contains("needs a change ticket") {
            assert!(
                audit.body.contains("<td class=\"operator\">alice</td>"),
                "{}",
                audit.body
            );
            assert!(
                audit.body.contains("<td class=\"action\">denied</td>"),
                "{}",
                audit.body
            );
            break;
        }
        assert!(Instant::now() < deadline, "{}", audit.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser holding the console's event stream open must not keep the
/// gateway from stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_console_does_not_hold_up_the_gateways_shutdown() {
    let mut env = Env::start_approvals(POLICY, "").await;
    let alice = signed_in(&env, "alice").await;
    let url = format!("{}/console/events", alice.base);
    let cookie = alice.cookie.clone().unwrap();
    let (opened, is_open) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let r = Browser::agent()
            .get(&url)
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        let _ = opened.send(());
        let mut body = r.into_body().into_reader();
        let _ = std::io::Read::read_to_end(&mut body, &mut Vec::new());
    });
    is_open
        .recv_timeout(Duration::from_secs(5))
        .expect("the stream opened");
    tokio::time::timeout(Duration::from_secs(15), env.stop())
        .await
        .expect("the gateway stopped with a console open");
}
