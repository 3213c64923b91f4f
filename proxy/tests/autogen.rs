//! The AutoGen example (examples/autogen) run offline against a real
//! gateway and PostgreSQL: a real AssistantAgent, driven by autogen-ext's
//! ReplayChatCompletionClient, calls its `run_sql` tool five times through
//! the gateway with its own identity, while the example's approver runs as
//! a separate process. Every tool result is checked, then the ledger's
//! replay shows the five decisions and the ledger verifies.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::Env;

const POLICY: &str = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "mask-emails"
identity = "agent"
classes = ["read"]
action = "mask"

[rule.mask]
"public.customers.email" = "email"

[[rule]]
name = "no-ssn"
identity = "*"
columns = ["public.customers.ssn"]
action = "deny"
message = "SSNs are off limits to agents"

[[rule]]
name = "deletes-need-approval"
identity = "agent"
classes = ["write"]
commands = ["DELETE"]
tables = ["public.orders"]
action = "require_approval"
approval_timeout_seconds = 60
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's Python with the example's pinned packages (`.ci/run` builds
/// it; built here too when missing, from the package registry).
fn venv_python() -> PathBuf {
    let venv = repo().join("target").join("autogen-venv");
    let python = venv.join("bin").join("python");
    let requirements = repo().join("examples/autogen/requirements.txt");
    let ready = venv.join(".installed");
    if !ready.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(
            made.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements)
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install -r {} failed",
            requirements.display()
        );
        std::fs::write(&ready, "").unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autogen_agent_works_through_the_gateway_offline() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let env = Env::start_approvals(POLICY, "").await;
    let token_file = env.dir.path().join("alice.token");
    std::fs::write(&token_file, env.secret("operator:alice")).unwrap();
    let examples = repo().join("examples/autogen");
    let mut approver = Command::new(&python)
        .arg(examples.join("approver.py"))
        .env("GATEHOUSE_ADMIN", format!("http://{}", env.admin))
        .env("GATEHOUSE_TOKEN_FILE", &token_file)
        .env("TIMEOUT", "60")
        .spawn()
        .unwrap();
    let dsn = env.conn_str("agent");
    let agent_python = python.clone();
    let agent_script = examples.join("agent.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(agent_python)
            .arg(agent_script)
            .env("GATEHOUSE_DSN", dsn)
            .env("AGENT_NAME", "report_bot")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "agent.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        approver.wait().unwrap().success(),
        "the approver did not decide twice"
    );

    let results: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}")))
        .collect();
    assert_eq!(results.len(), 5, "{stdout}");
    let result = |i: usize| -> serde_json::Value {
        assert_eq!(results[i]["error"], false, "{}", results[i]);
        serde_json::from_str(results[i]["result"].as_str().unwrap()).unwrap()
    };
    // 1. Orders, read as they are.
    let orders = result(0);
    assert_eq!(orders["rows"].as_array().unwrap().len(), 3, "{orders}");
    assert!(orders.get("masked").is_none());
    // 2. Customers, with emails masked, and the agent told so.
    let customers = result(1);
    assert_eq!(customers["rows"].as_array().unwrap().len(), 3);
    assert!(
        !customers.to_string().contains("c1@example.com"),
        "{customers}"
    );
    assert!(
        customers["masked"]
            .as_str()
            .unwrap()
            .contains("public.customers.email"),
        "{customers}"
    );
    // 3. SSNs: refused by policy, as a final answer the model can read.
    let ssn = result(2);
    assert_eq!(ssn["refused"], "gatehouse_policy_denied", "{ssn}");
    assert!(ssn["message"]
        .as_str()
        .unwrap()
        .contains("SSNs are off limits"));
    // 4. One order deleted after the approver approved it.
    assert_eq!(result(3)["status"], "DELETE 1");
    assert_eq!(
        env.pg
            .psql("shop", "SELECT count(*) FROM orders WHERE id = 3")
            .trim(),
        "0"
    );
    // 5. The bulk delete, denied by the approver: nothing deleted.
    let bulk = result(4);
    assert_eq!(bulk["refused"], "gatehouse_approval_denied", "{bulk}");
    assert!(bulk["message"]
        .as_str()
        .unwrap()
        .contains("bulk deletes need a ticket"));

    // The ledger's replay shows the five decisions, in order.
    env.settle().await;
    let replay = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["replay", "--identity", "agent", "--json", "--ledger"])
        .arg(env.ledger())
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    let decisions: Vec<(String, String)> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "statement")
        .map(|e| {
            (
                e["received"]["sql"].as_str().unwrap_or("").to_owned(),
                e["decision"]["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let actions: Vec<&str> = decisions.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        // Reads are "mask": the mask rule binds every read of this identity.
        [
            "mask",
            "mask",
            "deny",
            "require_approval",
            "require_approval"
        ],
        "{decisions:?}"
    );
    assert!(env.verify().is_intact());
}
