//! The admin API over a running gateway: roles on every route, recorded
//! refusals, the CLI that drives it, and the OpenAPI document.

mod support;

use std::collections::BTreeSet;

use gatehouse::gateway::admin::{PUBLIC_ROUTES, ROUTES};
use gatehouse_ledger::event::EventBody;
use support::{Env, POLICY};

fn status(env: &Env, method: &str, path: &str, token: Option<&str>) -> u16 {
    let url = format!("http://{}{path}", env.admin);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match (method, token) {
        ("get", Some(t)) => agent
            .get(&url)
            .header("Authorization", &format!("Bearer {t}"))
            .call(),
        ("get", None) => agent.get(&url).call(),
        (_, Some(t)) => agent
            .post(&url)
            .header("Authorization", &format!("Bearer {t}"))
            .send_json(serde_json::json!({ "reason": "testing roles" })),
        (_, None) => agent
            .post(&url)
            .send_json(serde_json::json!({ "reason": "x" })),
    };
    response.unwrap().status().as_u16()
}

fn concrete(path: &str) -> String {
    path.replace("{session}", "424242")
        .replace("{identity}", "nobody")
        .replace("{credential}", "cred_none")
        .replace("{approval}", "424242")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_role_and_refusals_are_recorded() {
    let env = Env::start(POLICY).await;
    let admin = env.admin_token();
    let viewer = env.secret("operator:viewer").to_owned();
    let env = std::sync::Arc::new(env);
    let e = env.clone();
    tokio::task::spawn_blocking(move || {
        for (method, path, role) in ROUTES {
            let path = concrete(path);
            assert_eq!(
                status(&e, method, &path, None),
                401,
                "{method} {path} without a token"
            );
            assert_eq!(
                status(&e, method, &path, Some("gho_wrong")),
                401,
                "{method} {path} with a bad token"
            );
            let as_viewer = status(&e, method, &path, Some(&viewer));
            if role.name() == "auditor" && *method == "get" {
                assert_eq!(as_viewer, 200, "{method} {path} as an auditor");
            } else if role.name() == "auditor" {
                // Allowed; this empty body is then refused as malformed.
                assert!(
                    ![401, 403].contains(&as_viewer),
                    "{method} {path} as an auditor got {as_viewer}"
                );
            } else {
                assert_eq!(as_viewer, 403, "{method} {path} as an auditor");
            }
            let as_admin = status(&e, method, &path, Some(&admin));
            assert!(
                ![401, 403].contains(&as_admin),
                "{method} {path} as admin got {as_admin}"
            );
        }
    })
    .await
    .unwrap();
    let refusals: Vec<String> = env
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventBody::OperatorAction(a)
                if a.outcome == "unauthenticated" || a.outcome == "forbidden" =>
            {
                Some(a.outcome)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals.iter().filter(|o| *o == "unauthenticated").count(),
        2 * ROUTES.len()
    );
    let auditor_routes = ROUTES.iter().filter(|r| r.2.name() == "auditor").count();
    assert_eq!(
        refusals.iter().filter(|o| *o == "forbidden").count(),
        ROUTES.len() - auditor_routes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_blocks_an_identity_through_the_api() {
    let env = Env::start(POLICY).await;
    let c = env.connect("agent").await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let url = format!("http://{}", env.admin);
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let admin_args = |cmd: &[&str]| {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--admin".into(),
            url.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
        ]);
        v
    };
    c.simple_query("SELECT 1").await.unwrap();
    // No flags: the address and token come from the config file (a copy
    // naming the port the test gateway got).
    let text = std::fs::read_to_string(&env.config).unwrap();
    let (before, after) = text.split_once("[admin]").unwrap();
    let after = after.replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"{}\"", env.admin),
        1,
    );
    let cli_config = env.config.with_file_name("cli.toml");
    std::fs::write(&cli_config, format!("{before}[admin]{after}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("sessions")
        .env("GATEHOUSE_CONFIG", &cli_config)
        .env_remove("GATEHOUSE_ADMIN")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" agent "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A statement running while the operator looks: shown with its time.
    let sleeper = env.connect("agent").await;
    let sleeping =
        tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(1.5)").await.is_ok() });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (ok, sessions, err) = tokio::task::block_in_place(|| run(admin_args(&["sessions"])));
    assert!(ok, "{err}");
    let row = sessions
        .lines()
        .find(|l| l.contains(" agent ") && !l.contains("pg_sleep"))
        .unwrap_or_else(|| panic!("{sessions}"));
    assert!(
        sessions.starts_with("SESSION") && row.contains("shop") && row.contains("127.0.0.1"),
        "{sessions}"
    );
    let busy = sessions
        .lines()
        .find(|l| l.contains("SELECT pg_sleep(1.5)"))
        .unwrap_or_else(|| panic!("the running statement is not shown:\n{sessions}"));
    assert!(busy.contains(" 1 "), "one statement so far: {busy}");
    let (ok, sessions, err) =
        tokio::task::block_in_place(|| run(admin_args(&["sessions", "--json"])));
    assert!(ok, "{err}");
    assert!(sessions.contains("\"identity\": \"agent\""), "{sessions}");
    assert!(sessions.contains("\"target\": \"shop\""), "{sessions}");
    let list: serde_json::Value = serde_json::from_str(&sessions).unwrap();
    let running = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == "SELECT pg_sleep(1.5)")
        .unwrap_or_else(|| panic!("{sessions}"));
    assert!(running["running_ms"].as_u64().unwrap() >= 500, "{running}");
    assert_eq!(running["statements"], 1);
    assert!(sleeping.await.unwrap());
    let idle = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"].is_null())
        .unwrap_or_else(|| panic!("{sessions}"));
    assert_eq!(idle["statements"], 1, "{idle}");
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(admin_args(&[
            "block",
            "agent",
            "--reason",
            "tried to dump SSNs",
        ]))
    });
    assert!(ok, "{err}");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    if let Some(db) = e.as_db_error() {
        assert!(
            db.message().contains("tried to dump SSNs"),
            "{}",
            db.message()
        );
    }
    assert!(
        tokio_postgres::connect(&env.conn_str("agent"), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    // Clear errors, non-zero exit.
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(admin_args(&["kill", "999999", "--reason", "x"])));
    assert!(!ok);
    assert!(
        err.contains("404") && err.contains("no running session"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(vec![
            "block".into(),
            "agent".into(),
            "--reason".into(),
            "x".into(),
            "--admin".into(),
            "http://127.0.0.1:1".into(),
            "--token-file".into(),
            token_file.display().to_string(),
        ])
    });
    assert!(!ok);
    assert!(err.contains("cannot reach the admin API"), "{err}");
    let (ok, _, _) = tokio::task::block_in_place(|| {
        run(admin_args(&["unblock", "agent", "--reason", "cleared"]))
    });
    assert!(ok);
    let back = env.connect("agent").await;
    assert!(back.simple_query("SELECT 1").await.is_ok());
}

#[test]
fn the_openapi_document_lists_exactly_the_served_routes() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/admin-api.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut documented = BTreeSet::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let role = op["x-gatehouse-role"].as_str().unwrap().to_owned();
            documented.insert((method.clone(), path.clone(), role));
        }
    }
    let served: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|(m, p, r)| (m.to_string(), p.to_string(), r.name().to_owned()))
        .chain(
            PUBLIC_ROUTES
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string(), "none".to_owned())),
        )
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_administers_a_running_gateway_and_changes_take_effect_at_once() {
    let env = Env::start(POLICY).await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let url = format!("http://{}", env.admin);
    let run = |args: Vec<&str>| {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend([
            "--admin".into(),
            url.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
        ]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A new identity and credential log in at once, without a restart.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(vec![
            "identity",
            "create",
            "newbot",
            "--description",
            "nightly",
        ])
    });
    assert!(ok, "{err}");
    let (ok, _, err) = tokio::task::block_in_place(|| run(vec!["identity", "create", "newbot"]));
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, secret, err) =
        tokio::task::block_in_place(|| run(vec!["credential", "issue", "newbot", "--ttl", "1h"]));
    assert!(ok, "{err}");
    let credential = err
        .split_whitespace()
        .find(|w| w.starts_with("cred_"))
        .unwrap()
        .to_owned();
    let conn = format!(
        "host=127.0.0.1 port={} user=newbot password={} dbname=shop",
        env.addr.port(),
        secret.trim()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("a credential issued through the API logs in at once");
    tokio::spawn(connection);
    // No rule covers newbot yet: denied.
    assert!(client.simple_query("SELECT 1 FROM orders").await.is_err());
    // A new policy applies to the very next statement.
    let policy = env.dir.path().join("next.toml");
    std::fs::write(
        &policy,
        format!("{POLICY}\n[[rule]]\nname = \"newbot-reads\"\nidentity = \"newbot\"\nclasses = [\"read\"]\naction = \"allow\"\n"),
    )
    .unwrap();
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(vec!["policy", "apply", policy.to_str().unwrap()]));
    assert!(ok, "{err}");
    assert!(client.simple_query("SELECT 1 FROM orders").await.is_ok());
    let (ok, shown, err) = tokio::task::block_in_place(|| run(vec!["policy", "show"]));
    assert!(ok, "{err}");
    assert!(shown.contains("newbot-reads"), "{shown}");
    // A broken policy is refused with its line; the old one stays.
    std::fs::write(&policy, "[[rule]]\nname = \"x\"\naction = \"permit\"\n").unwrap();
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(vec!["policy", "apply", policy.to_str().unwrap()]));
    assert!(
        !ok && err.contains("line 3") && err.contains("unchanged"),
        "{err}"
    );
    assert!(client.simple_query("SELECT 1 FROM orders").await.is_ok());
    // Revocation ends the session that used the credential.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(vec![
            "credential",
            "revoke",
            &credential,
            "--reason",
            "rotated",
        ])
    });
    assert!(ok, "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(client.simple_query("SELECT 1").await.is_err());
    // A new operator's token works at once, with its roles only.
    let (ok, token, err) =
        tokio::task::block_in_place(|| run(vec!["operator", "add", "dana", "--role", "auditor"]));
    assert!(ok, "{err}");
    let dana = env.dir.path().join("dana.token");
    std::fs::write(&dana, token.trim()).unwrap();
    let as_dana = |args: Vec<&str>| {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend([
            "--admin".into(),
            url.clone(),
            "--token-file".into(),
            dana.display().to_string(),
        ]);
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| as_dana(vec!["sessions"]));
    assert!(out.status.success());
    let out = tokio::task::block_in_place(|| as_dana(vec!["identity", "create", "x"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_serves_https_and_the_cli_trusts_a_given_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let env = Env::start_admin(
        POLICY,
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert_file.display(),
            key_file.display()
        ),
    )
    .await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let run = |url: String, ca: bool| {
        let mut args = vec![
            "sessions".to_owned(),
            "--admin".into(),
            url,
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        if ca {
            args.extend(["--admin-ca".into(), cert_file.display().to_string()]);
        }
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap()
    };
    let https = format!("https://{}", env.admin);
    let out = tokio::task::block_in_place(|| run(https.clone(), true));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the certificate is not trusted; plain HTTP is not served.
    let out = tokio::task::block_in_place(|| run(https.clone(), false));
    assert!(!out.status.success());
    let out = tokio::task::block_in_place(|| run(format!("http://{}", env.admin), true));
    assert!(!out.status.success());
    // The API still answers after the failed handshakes.
    let out = tokio::task::block_in_place(|| run(https, true));
    assert!(out.status.success());
}

/// Issue 13: `gatehouse policy explain` runs the gateway's own decision
/// pipeline. A view created in the database (outside the gateway) that
/// reads SSNs is denied by the gateway; the policy alone cannot know it, so
/// the offline explanation says allow, and the gateway's says deny, as the
/// session then does. A blocked identity is explained as blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_asks_the_gateways_own_pipeline() {
    let env = Env::start_custom(POLICY, "", "", |pg| {
        pg.psql(
            "shop",
            "CREATE VIEW customer_contacts AS SELECT id, name, ssn FROM customers",
        );
    })
    .await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let url = format!("http://{}", env.admin);
    let sql = "SELECT * FROM customer_contacts";
    let explain = |identity: &'static str, sql: &'static str, policy: Option<String>| {
        let client = gatehouse::admin_client::AdminClient::new(&url, &token_file, None).unwrap();
        tokio::task::block_in_place(|| {
            client
                .policy_explain(identity, None, sql, policy.as_deref())
                .unwrap()
        })
    };
    let live = explain("agent", sql, None);
    assert_eq!(live.action, "deny", "{live:?}");
    assert_eq!(live.pipeline, "gateway");
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    let offline = tokio::task::block_in_place(|| {
        gatehouse::commands::policy_explain(&config, "agent", "shop", sql, None).unwrap()
    });
    assert!(offline.starts_with("decision: Allow"), "{offline}");
    assert!(offline.contains("judged offline"), "{offline}");
    // What the session does is what the gateway explained.
    let c = env.connect("agent").await;
    let e = c.simple_query(sql).await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    // A candidate policy is judged by the same pipeline.
    let candidate = format!("{POLICY}\n[[rule]]\nname = \"extra\"\nidentity = \"agent\"\nclasses = [\"write\"]\ntables = [\"public.customers\"]\naction = \"allow\"\n");
    let tried = explain(
        "agent",
        "DELETE FROM customers WHERE id = 1",
        Some(candidate),
    );
    assert_eq!(tried.action, "allow", "{tried:?}");
    assert_eq!(tried.rule.as_deref(), Some("extra"));
    // Blocks are part of the pipeline.
    env.shared()
        .block("agent", "tester", "explain test", None)
        .await
        .unwrap();
    let blocked = explain("agent", "SELECT 1", None);
    assert_eq!(blocked.action, "deny");
    assert!(blocked.message.unwrap().contains("blocked"));
}

/// Liveness and readiness without a token. Ready while the ledger can
/// record and the target answers; not ready (503, with the reason) while
/// the ledger file is moved away (issue 14), and ready again once it is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_token() {
    let env = Env::start(POLICY).await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", env.admin);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        tokio::task::block_in_place(|| {
            let mut r = agent.get(&url).call().unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.body_mut().read_json().unwrap();
            (status, body)
        })
    };
    assert_eq!(get("/health").0, 200);
    let (status, body) = get("/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"]["shop"], "ok");
    let ledger = env.ledger();
    let aside = ledger.with_file_name("ledger.aside");
    std::fs::rename(&ledger, &aside).unwrap();
    let (status, body) = get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["ledger"].as_str().unwrap().contains("moved away"),
        "{body}"
    );
    std::fs::rename(&aside, &ledger).unwrap();
    assert_eq!(get("/ready").0, 200);
}

/// `GET /metrics` (issue 16): scraped and parsed after real traffic, the
/// counters say what happened, labelled by identity, target, verdict,
/// class and rule; it needs an auditor's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_in_the_prometheus_text_format() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"mask-emails\"\nidentity = \"agent\"\nclasses = [\"read\"]\naction = \"mask\"\n\n[rule.mask]\n\"public.customers.email\" = \"email\"\n"
    );
    let env = Env::start(&policy).await;
    let c = env.connect("agent").await;
    c.simple_query("SELECT id FROM orders WHERE id = 1")
        .await
        .unwrap();
    c.simple_query("SELECT ssn FROM customers")
        .await
        .expect_err("ssn");
    c.simple_query("SELECT email FROM customers WHERE id <= 2")
        .await
        .unwrap();
    let wrong = env
        .conn_str("agent")
        .replace(env.secret("agent"), "not-the-password");
    assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .is_err());
    env.settle().await;

    let viewer = env.secret("operator:viewer").to_owned();
    let url = format!("http://{}/metrics", env.admin);
    let (status, text) = tokio::task::block_in_place(|| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        assert_eq!(agent.get(&url).call().unwrap().status().as_u16(), 401);
        let mut r = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {viewer}"))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    assert_eq!(status, 200, "{text}");
    // Every sample line is `name{labels} value` or `name value`.
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(name.to_owned(), value);
    }
    let get = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(
        get("gatehouse_statements_total{identity=\"agent\",target=\"shop\",verdict=\"deny\",class=\"read\",rule=\"no-ssn\"}"),
        1.0
    );
    let judged: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("gatehouse_statements_total{identity=\"agent\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(judged, 3.0, "{text}");
    assert_eq!(
        get("gatehouse_masked_values_total{strategy=\"email\"}"),
        2.0
    );
    assert_eq!(
        get("gatehouse_sessions_open{identity=\"agent\",target=\"shop\"}"),
        1.0
    );
    assert_eq!(
        get("gatehouse_sessions_total{identity=\"agent\",target=\"shop\"}"),
        1.0
    );
    assert_eq!(
        get("gatehouse_login_failures_total{reason=\"authentication\"}"),
        1.0
    );
    assert_eq!(get("gatehouse_approvals_pending"), 0.0);
    assert!(get("gatehouse_ledger_events_total") >= 8.0, "{text}");
    assert!(get("gatehouse_ledger_commit_seconds_count") >= 1.0);
    // Row data would be in label values; sample values are numbers that
    // may contain any digits (a duration of 0.0000000012 s, say).
    let names_and_labels: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !names_and_labels.contains("000000001") && !text.contains("@example.com"),
        "row data in the metrics:\n{text}"
    );
}

/// Listing and retiring (issue 16): identities, credentials and operators
/// are listed; disabling an identity ends its session, refuses its logins
/// and new credentials, and survives a restart; removing an operator stops
/// its token, but nobody removes themselves or the last admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_credentials_and_operators_are_listed_and_retired() {
    let mut env = Env::start(POLICY).await;
    let token_file = env.dir.path().join("gh").join("operator.token");
    let url = format!("http://{}", env.admin);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .args(["--admin", &url, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::block_in_place(|| run(&["identities"]));
    assert!(ok, "{err}");
    let agent = out
        .lines()
        .find(|l| l.starts_with("agent "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(agent.contains("active") && agent.contains(" 1 "), "{agent}");
    let (ok, out, err) = tokio::task::block_in_place(|| run(&["credentials", "agent", "--json"]));
    assert!(ok, "{err}");
    let creds: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(creds[0]["identity"], "agent");
    assert_eq!(creds[0]["status"], "valid");
    assert!(!out.contains("ghs_"), "a secret in the listing");
    let (ok, out, err) = tokio::task::block_in_place(|| run(&["operators"]));
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("viewer ") && l.contains("auditor")),
        "{out}"
    );

    // Disabling ends the session and every later login.
    let c = env.connect("agent").await;
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(&["identity", "disable", "agent", "--reason", "agent retired"])
    });
    assert!(ok, "{err}");
    let mut ended = false;
    for _ in 0..50 {
        if c.simple_query("SELECT 1").await.is_err() {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ended, "the disabled identity's session went on");
    let refused = |env: &Env| {
        let conn = env.conn_str("agent");
        async move {
            let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .err()
                .expect("a disabled identity logged in");
            let db = e.as_db_error().expect("a database error").clone();
            (db.code().code().to_owned(), db.routine().map(str::to_owned))
        }
    };
    assert_eq!(
        refused(&env).await,
        ("28000".into(), Some("gatehouse_identity_disabled".into()))
    );
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(&["credential", "issue", "agent", "--ttl", "1h"]));
    assert!(!ok && err.contains("disabled"), "{err}");
    let (_, out, _) = tokio::task::block_in_place(|| run(&["identities"]));
    assert!(out.contains("disabled: agent retired"), "{out}");

    // Operators: the viewer's token stops working once removed.
    let viewer = env.secret("operator:viewer").to_owned();
    assert_eq!(status(&env, "get", "/v1/sessions", Some(&viewer)), 200);
    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(&["operator", "remove", "viewer", "--reason", "left the team"])
    });
    assert!(ok, "{err}");
    assert_eq!(status(&env, "get", "/v1/sessions", Some(&viewer)), 401);
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(&["operator", "remove", "admin", "--reason", "x"]));
    assert!(!ok && err.contains("cannot remove itself"), "{err}");

    // A restart keeps it all.
    drop(c);
    env.stop().await;
    env.restart().await;
    assert_eq!(
        refused(&env).await,
        ("28000".into(), Some("gatehouse_identity_disabled".into()))
    );
    assert_eq!(status(&env, "get", "/v1/sessions", Some(&viewer)), 401);
    assert!(env.verify().is_intact());
}
