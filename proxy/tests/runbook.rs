//! The runbook's evidence steps (docs/incident-response.md, "3. Keep
//! evidence") run as written, as a script, on the demo's ledger: each
//! `gatehouse export` and `gatehouse-verify` line of that section, with only
//! the example values (session number, kept checkpoint's name, time range,
//! digest) replaced by the demo's, must succeed (issue 16).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fenced `sh` blocks of the runbook's section `title`, as command
/// lines (continuations joined).
fn commands_of_section(doc: &str, title: &str) -> Vec<String> {
    let start = doc.find(title).expect("the section");
    let end = doc[start + title.len()..]
        .find("\n## ")
        .map_or(doc.len(), |e| start + title.len() + e);
    let mut lines = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for raw in doc[start..end].lines() {
        let line = raw.trim();
        if line.starts_with("```") {
            inside = line == "```sh";
            continue;
        }
        if !inside || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
}

/// The verifier binary, built beside `gatehouse` by `cargo test --workspace`.
fn verifier() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_gatehouse")).with_file_name("gatehouse-verify");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

#[test]
fn the_runbooks_evidence_steps_work_as_written() {
    let verify = verifier();
    let dir = tempfile::tempdir().unwrap();
    let demo = gatehouse::demo::run(Some(dir.path().join("demo"))).expect("the demo runs");
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/incident-response.md"),
    )
    .unwrap();
    let steps = commands_of_section(&doc, "## 3. Keep evidence");
    assert!(
        steps
            .iter()
            .filter(|s| s.starts_with("gatehouse export"))
            .count()
            >= 3
            && steps
                .iter()
                .filter(|s| s.starts_with("gatehouse-verify"))
                .count()
                >= 3,
        "{steps:?}"
    );
    // The runbook's example values, as the demo has them.
    std::fs::copy(
        demo.join("trusted-checkpoint.note"),
        demo.join("kept-2026-11-24.note"),
    )
    .unwrap();
    let session = {
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args([
                "replay",
                "--ledger",
                "ledger.db",
                "--identity",
                "agent-report-bot",
                "--json",
            ])
            .current_dir(&demo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "session_opened")
            .and_then(|e| e["session"].as_u64())
            .expect("a session of the agent")
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gatehouse")).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        verify.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut digest: Option<String> = None;
    for step in steps {
        let mut step = step
            .replace("--session 42", &format!("--session {session}"))
            .replace("2026-11-25T10:00:00Z", "2000-01-01T00:00:00Z")
            .replace("2026-11-25T11:00:00Z", "2100-01-01T00:00:00Z");
        if step.contains("sha256:...") {
            let d = digest
                .clone()
                .expect("a digest printed by an earlier export");
            step = step.replace("sha256:...", &d);
        }
        let out = Command::new("bash")
            .args(["-c", &step])
            .env("PATH", &path)
            .current_dir(&demo)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{step}\nfailed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if step.starts_with("gatehouse export") && step.contains("incident-42.bundle") {
            digest = stdout
                .split_whitespace()
                .chain(String::from_utf8_lossy(&out.stderr).split_whitespace())
                .find(|w| w.starts_with("sha256:"))
                .map(|w| {
                    w.trim_end_matches(|c: char| !c.is_ascii_hexdigit())
                        .to_owned()
                });
        }
    }
    assert!(digest.is_some(), "the session export printed no digest");
    for bundle in ["incident-42.bundle", "agent.bundle", "hour.bundle"] {
        assert!(demo.join(bundle).exists(), "{bundle} was not written");
    }
    let copies = std::fs::read_dir(&demo)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("ledger-") && name.ends_with(".db")
        })
        .count();
    assert_eq!(copies, 1, "the VACUUM INTO copy was not made");
}
