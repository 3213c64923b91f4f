//! The console in a real browser (issue 18): headless Chromium driven
//! through chromedriver, against a real PostgreSQL and a real client whose
//! statements are held. A failing test leaves a screenshot in
//! `target/console-screenshots/`. `.ci/run` installs Debian's chromium and
//! chromium-driver when they are missing.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use support::{spawn_query, Env};

const POLICY: &str = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "delete-orders"
identity = "agent"
classes = ["write"]
commands = ["DELETE"]
tables = ["public.orders"]
action = "require_approval"
approval_timeout_seconds = 60

[[rule]]
name = "update-orders-two"
identity = "agent"
classes = ["write"]
commands = ["UPDATE"]
tables = ["public.orders"]
action = "require_approval"
approvers = 2
approval_timeout_seconds = 60
"#;

/// One headless Chromium under its own chromedriver, stopped on drop.
struct Chrome {
    driver: Child,
    port: u16,
    client: Client,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Chrome {
    async fn start() -> Chrome {
        // fantoccini's HTTP client is built with rustls; the process picks
        // its crypto once (chromedriver itself is reached over plain HTTP).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "chromium is installed (.ci/run installs Debian's chromium and chromium-driver)",
            );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            }),
        );
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({ "browser": "ALL" }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let attempt = ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start headless chromium: {e}"),
            }
        };
        Chrome {
            driver,
            port,
            client,
        }
    }

    /// The browser's console log (chromedriver's log endpoint): CSP
    /// violations and script errors show here.
    async fn log(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let url = format!("http://127.0.0.1:{}/session/{session}/se/log", self.port);
        tokio::task::spawn_blocking(move || {
            let r = ureq::post(&url)
                .send_json(serde_json::json!({ "type": "browser" }))
                .unwrap();
            let body: serde_json::Value = r.into_body().read_json().unwrap();
            body["value"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| format!("{} {}", e["level"], e["message"]))
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap()
    }

    async fn sign_in(&self, env: &Env, token: &str) {
        let c = &self.client;
        c.goto(&format!("http://{}/console/signin", env.admin))
            .await
            .unwrap();
        c.find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        c.find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css("nav"))
            .await
            .expect("signed in");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the element `css` exists and its text contains `wanted`.
    async fn wait_text(&self, css: &str, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if t.contains(wanted) {
                        return t;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} did not show {wanted:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a browser test; on failure saves each browser's screenshot.
async fn with_screenshots<F>(name: &str, browsers: &[&Chrome], test: F)
where
    F: std::future::Future<Output = ()>,
{
    let outcome = std::panic::AssertUnwindSafe(test).catch_unwind().await;
    if let Err(panic) = outcome {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        for (i, b) in browsers.iter().enumerate() {
            if let Ok(png) = b.client.screenshot().await {
                let path = dir.join(format!("{name}-{i}.png"));
                let _ = std::fs::write(&path, png);
                eprintln!("screenshot: {}", path.display());
            }
        }
        std::panic::resume_unwind(panic);
    }
}

fn operator_token(env: &Env, who: &str) -> String {
    env.secret(&format!("operator:{who}")).to_owned()
}

/// What the CLI does: the admin API with an operator's token.
async fn api_post(env: &Env, who: &str, path: &str, body: serde_json::Value) -> u16 {
    let url = format!("http://{}{path}", env.admin);
    let auth = format!("Bearer {}", operator_token(env, who));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(body)
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_appears_live_with_its_context_and_a_cli_decision_updates_it() {
    let env = Env::start_approvals(POLICY, "").await;
    let chrome = Chrome::start().await;
    with_screenshots("live-inbox", &[&chrome], async {
        chrome.sign_in(&env, &operator_token(&env, "alice")).await;
        chrome
            .wait_text("#inbox", "No statement is waiting", Duration::from_secs(5))
            .await;
        let client = Arc::new(env.connect("agent").await);
        let held = spawn_query(&client, "DELETE FROM orders WHERE id = 1");
        // Without a reload: the event stream tells the page to refresh.
        let text = chrome
            .wait_text(
                "#inbox",
                "DELETE FROM orders WHERE id = 1",
                Duration::from_secs(2),
            )
            .await;
        for field in [
            "agent",
            "gh-test",
            "delete-orders",
            "public.orders",
            "write",
            "delete from orders where id=?",
            "0 of 1 approvals",
            "expires in",
        ] {
            assert!(text.contains(field), "{field:?} missing in\n{text}");
        }
        let id: u64 = chrome
            .client
            .find(Locator::Css("article.held"))
            .await
            .unwrap()
            .attr("data-approval")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        // A decision taken elsewhere (the CLI's API) shows here too.
        let status = api_post(
            &env,
            "bob",
            &format!("/v1/approvals/{id}/deny"),
            serde_json::json!({ "reason": "from the terminal" }),
        )
        .await;
        assert_eq!(status, 200);
        chrome
            .wait_text("#inbox", "No statement is waiting", Duration::from_secs(2))
            .await;
        let e = held.await.unwrap().unwrap_err();
        let message = e.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("from the terminal"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_two_shows_progress_and_the_second_approval_releases_the_client() {
    let env = Env::start_approvals(POLICY, "").await;
    let a = Chrome::start().await;
    let b = Chrome::start().await;
    let own = Chrome::start().await;
    with_screenshots("quorum", &[&a, &b, &own], async {
        a.sign_in(&env, &operator_token(&env, "alice")).await;
        b.sign_in(&env, &operator_token(&env, "bob")).await;
        own.sign_in(&env, &operator_token(&env, "agent")).await;
        let client = Arc::new(env.connect("agent").await);
        let held = spawn_query(&client, "UPDATE orders SET total = 1 WHERE id = 4");
        a.wait_text("#inbox", "0 of 2 approvals", Duration::from_secs(2))
            .await;
        b.wait_text("#inbox", "0 of 2 approvals", Duration::from_secs(2))
            .await;
        // The operator named like the asking identity sees no button.
        let mine = own
            .wait_text("#inbox", "named like you", Duration::from_secs(2))
            .await;
        assert!(!mine.contains("Approve once"), "{mine}");
        assert!(own
            .client
            .find_all(Locator::Css("form.approve"))
            .await
            .unwrap()
            .is_empty());
        a.click("form.approve button").await;
        let progress = b
            .wait_text("#inbox", "1 of 2 approvals", Duration::from_secs(2))
            .await;
        assert!(progress.contains("by alice"), "{progress}");
        a.wait_text(
            "#inbox",
            "waiting for other approvers",
            Duration::from_secs(2),
        )
        .await;
        b.click("form.approve button").await;
        let ran = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("released")
            .unwrap()
            .unwrap();
        assert_eq!(ran, 1);
        a.wait_text("#inbox", "No statement is waiting", Duration::from_secs(2))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_for_a_duration_lets_the_fingerprint_run_and_a_denial_reaches_the_client() {
    let env = Env::start_approvals(POLICY, "").await;
    let chrome = Chrome::start().await;
    with_screenshots("duration", &[&chrome], async {
        chrome.sign_in(&env, &operator_token(&env, "alice")).await;
        let client = Arc::new(env.connect("agent").await);
        let held = spawn_query(&client, "DELETE FROM orders WHERE id = 5");
        chrome
            .wait_text(
                "#inbox",
                "DELETE FROM orders WHERE id = 5",
                Duration::from_secs(2),
            )
            .await;
        chrome
            .client
            .find(Locator::Css("form.approve-for select"))
            .await
            .unwrap()
            .select_by_value("30m")
            .await
            .unwrap();
        chrome.click("form.approve-for button").await;
        assert_eq!(held.await.unwrap().unwrap(), 1);
        // The same fingerprint now runs without being held.
        let unheld = tokio::time::timeout(
            Duration::from_secs(5),
            client.execute("DELETE FROM orders WHERE id = 6", &[]),
        )
        .await
        .expect("not held")
        .unwrap();
        assert_eq!(unheld, 1);
        // Another shape is held; a denial without a reason is not sent
        // (the field is required), with one the client is told.
        let other = spawn_query(&client, "DELETE FROM orders WHERE id IN (7, 8)");
        chrome
            .wait_text("#inbox", "id IN (7, 8)", Duration::from_secs(2))
            .await;
        chrome.click("form.deny button").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.is_finished(), "a denial without a reason was sent");
        chrome
            .type_into("form.deny input[name=reason]", "bulk deletes need a ticket")
            .await;
        chrome.click("form.deny button").await;
        let e = other.await.unwrap().unwrap_err();
        let message = e.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("bulk deletes need a ticket"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_renders_as_text_and_cross_origin_posts_and_auditors_are_refused() {
    let env = Env::start_approvals(POLICY, "").await;
    let chrome = Chrome::start().await;
    let auditor = Chrome::start().await;
    with_screenshots("hostile", &[&chrome, &auditor], async {
        chrome.sign_in(&env, &operator_token(&env, "alice")).await;
        auditor.sign_in(&env, &operator_token(&env, "viewer")).await;
        let hostile = env.conn_str("agent").replace(
            "application_name=gh-test",
            "application_name='<img src=x onerror=alert(1)>'",
        );
        let (client, connection) = tokio_postgres::connect(&hostile, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let client = Arc::new(client);
        let c = client.clone();
        let held = tokio::spawn(async move {
            c.execute(
                "DELETE FROM orders WHERE id = 9 AND '<script>alert(2)</script>' <> $1",
                &[&"<script>alert(3)</script>"],
            )
            .await
        });
        let text = chrome
            .wait_text(
                "#inbox",
                "<script>alert(2)</script>",
                Duration::from_secs(2),
            )
            .await;
        assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
        // The parameter went in binary format: shown in hex, as sent.
        let hex: String = "<script>alert(3)</script>"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(text.contains(&format!("\\x{hex}")), "{text}");
        assert!(
            chrome.client.get_alert_text().await.is_err(),
            "no dialog opened"
        );
        let log = chrome.log().await;
        assert!(
            !log.iter()
                .any(|l| l.contains("Content Security Policy") || l.contains("SEVERE")),
            "{log:?}"
        );
        // The auditor sees the request and no action button.
        let seen = auditor
            .wait_text(
                "#inbox",
                "<script>alert(2)</script>",
                Duration::from_secs(2),
            )
            .await;
        assert!(!seen.contains("Approve"), "{seen}");
        assert!(auditor
            .client
            .find_all(Locator::Css("form.approve, form.deny"))
            .await
            .unwrap()
            .is_empty());
        // A form on another origin posting to the console is refused.
        let id = chrome
            .client
            .find(Locator::Css("article.held"))
            .await
            .unwrap()
            .attr("data-approval")
            .await
            .unwrap()
            .unwrap();
        let forged = format!(
            "data:text/html,<form method=post action='http://{}/console/approvals/{id}/approve'>\
             <input name=form_token value=x></form>",
            env.admin
        );
        chrome.client.goto(&forged).await.unwrap();
        chrome
            .client
            .execute("document.forms[0].submit()", vec![])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body = chrome.client.source().await.unwrap_or_default();
            if body.contains("did not come from the console") {
                break;
            }
            assert!(Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!held.is_finished(), "the forged approval released nothing");
        drop(held);
    })
    .await;
}

/// On the sessions page, fills in the reason of the agent's `action`
/// (`kill` or `block`) form and submits it.
async fn contain(chrome: &Chrome, env: &Env, action: &str, reason: &str) {
    chrome
        .client
        .goto(&format!("http://{}/console/sessions", env.admin))
        .await
        .unwrap();
    chrome
        .wait_text("#sessions", "agent", Duration::from_secs(5))
        .await;
    chrome
        .type_into(
            &format!("td.contain form[action$='/{action}'] input[name=reason]"),
            reason,
        )
        .await;
    chrome
        .click(&format!("td.contain form[action$='/{action}'] button"))
        .await;
}

/// Waits up to 5 s for `client`'s session to end.
async fn ended(client: &tokio_postgres::Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.simple_query("SELECT 1").await.is_ok() {
        assert!(Instant::now() < deadline, "{what} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_block_from_the_sessions_page() {
    let env = Env::start_approvals(POLICY, "").await;
    let chrome = Chrome::start().await;
    with_screenshots("sessions", &[&chrome], async {
        chrome.sign_in(&env, &env.admin_token()).await;
        let victim = env.connect("agent").await;
        victim.simple_query("SELECT 1").await.unwrap();
        contain(&chrome, &env, "kill", "runaway agent").await;
        ended(&victim, "the killed session").await;
        let other = env.connect("agent").await;
        other.simple_query("SELECT 1").await.unwrap();
        contain(&chrome, &env, "block", "exfiltration").await;
        ended(&other, "the blocked session").await;
        assert!(
            tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
                .await
                .is_err(),
            "a blocked identity cannot log in"
        );
        // Both show in the audit view with the operator and the reason,
        // once their checkpoint is signed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            chrome
                .client
                .goto(&format!("http://{}/console/audit", env.admin))
                .await
                .unwrap();
            let audit = chrome.text("main").await;
            if audit.contains("exfiltration") && audit.contains("runaway agent") {
                assert!(
                    audit.contains("ended session") && audit.contains("blocked"),
                    "{audit}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{audit}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Writes the documentation's screenshots (docs/console-*.png):
/// `cargo test -p gatehouse --test console_browser -- --ignored screenshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/console-*.png"]
async fn screenshots_for_the_docs() {
    let env = Env::start_approvals(POLICY, "").await;
    let chrome = Chrome::start().await;
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    chrome.sign_in(&env, &operator_token(&env, "alice")).await;
    let client = Arc::new(env.connect("agent").await);
    client
        .simple_query("SELECT id, total FROM orders WHERE customer = 42")
        .await
        .unwrap();
    let _update = spawn_query(&client, "UPDATE orders SET total = 0 WHERE id = 3");
    let other = Arc::new(env.connect("agent").await);
    let _delete = spawn_query(&other, "DELETE FROM orders WHERE id = 1");
    chrome
        .wait_text(
            "#inbox",
            "DELETE FROM orders WHERE id = 1",
            Duration::from_secs(5),
        )
        .await;
    chrome
        .wait_text("#inbox", "UPDATE orders", Duration::from_secs(5))
        .await;
    let page = chrome.client.screenshot().await.unwrap();
    std::fs::write(docs.join("console-inbox.png"), page).unwrap();
    let held = chrome
        .client
        .find(Locator::Css("article.held"))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    std::fs::write(docs.join("console-held.png"), held).unwrap();
    chrome
        .client
        .goto(&format!("http://{}/console/sessions", env.admin))
        .await
        .unwrap();
    chrome
        .wait_text("#sessions", "agent", Duration::from_secs(5))
        .await;
    let sessions = chrome.client.screenshot().await.unwrap();
    std::fs::write(docs.join("console-sessions.png"), sessions).unwrap();
}
