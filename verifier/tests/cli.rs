//! The command line contract: exit status 0 intact, 1 integrity failure,
//! 2 could not verify (usage, I/O, not a ledger, bad key or trusted note);
//! text and `--json` output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-verify");

struct Setup {
    dir: TempDir,
    ledger: PathBuf,
    key_file: PathBuf,
    notes: Vec<String>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("audit.ledger");
    let key = test_key();
    let notes = build(&ledger, &key, &events(6), &[2, 6]);
    let key_file = dir.path().join("ledger.pub");
    // Surrounding whitespace, as an editor might leave it.
    std::fs::write(&key_file, format!("  {}\n\n", key.verifier())).unwrap();
    Setup {
        dir,
        ledger,
        key_file,
        notes,
    }
}

fn run(args: &[&Path]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn run_str(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn intact_exits_0_and_prints_the_summary() {
    let s = setup();
    let o = run(&[&s.ledger, Path::new("--key"), &s.key_file]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("intact: 6 events, 2 checkpoints\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "time range: 2023-11-14T22:13:20.000000000Z to 2023-11-14T22:13:20.000005000Z"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("final checkpoint:\n{}", s.notes[1])),
        "{out}"
    );
}

#[test]
fn failure_exits_1_and_names_the_event() {
    let s = setup();
    exec(&s.ledger, "UPDATE events SET kind = 42 WHERE seq = 3");
    let o = run(&[&s.ledger, Path::new("--key"), &s.key_file]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.starts_with("FAILED at seq 3: index_mismatch: "),
        "{out}"
    );
}

#[test]
fn truncation_prints_both_notes_as_evidence() {
    let s = setup();
    exec(
        &s.ledger,
        "DELETE FROM events WHERE seq >= 2; DELETE FROM checkpoints WHERE size = 6",
    );
    let trusted = s.dir.path().join("trusted.note");
    // Without its final newline, as copy and paste often leaves it.
    std::fs::write(&trusted, s.notes[1].trim_end()).unwrap();
    let o = run(&[
        &s.ledger,
        Path::new("--key"),
        &s.key_file,
        Path::new("--trusted-checkpoint"),
        &trusted,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("FAILED at seq 2: truncated: "), "{out}");
    assert!(
        out.contains(&format!("evidence 1 of 2:\n{}", s.notes[1])),
        "{out}"
    );
    assert!(
        out.contains(&format!("evidence 2 of 2:\n{}", s.notes[0])),
        "{out}"
    );
}

#[test]
fn json_output_is_one_object() {
    let s = setup();
    let o = run(&[
        &s.ledger,
        Path::new("--key"),
        &s.key_file,
        Path::new("--json"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["status"], "intact");
    assert_eq!(j["events"], 6);
    assert_eq!(j["checkpoints"], 2);
    assert_eq!(j["first_time"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(j["last_time"], "2023-11-14T22:13:20.000005000Z");
    assert_eq!(j["final_checkpoint"], s.notes[1].as_str());
    assert!(j["failure"].is_null());

    exec(&s.ledger, "DELETE FROM checkpoints WHERE size = 6");
    let o = run(&[
        &s.ledger,
        Path::new("--key"),
        &s.key_file,
        Path::new("--json"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    assert_eq!(j["status"], "failed");
    assert_eq!(j["failure"]["seq"], 2);
    assert_eq!(j["failure"]["class"], "unsigned");
    assert!(j["failure"]["evidence"].as_array().unwrap().is_empty());

    let missing = s.dir.path().join("missing.ledger");
    let o = run(&[
        &missing,
        Path::new("--key"),
        &s.key_file,
        Path::new("--json"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let j = json(&o);
    assert_eq!(j["status"], "error");
    assert!(j["error"].as_str().unwrap().contains("cannot open ledger"));
}

#[test]
fn errors_exit_2_with_a_hint() {
    let s = setup();
    // No ledger.
    let missing = s.dir.path().join("missing.ledger");
    let o = run(&[&missing, Path::new("--key"), &s.key_file]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with("error: cannot open ledger"), "{err}");
    assert!(
        err.contains("pass the path of a Gatehouse ledger file"),
        "{err}"
    );
    assert!(!missing.exists());
    // No key file.
    let o = run(&[&s.ledger, Path::new("--key"), &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read key file"));
    // A key file that holds no key.
    let bad_key = s.dir.path().join("bad.pub");
    std::fs::write(&bad_key, "not a key").unwrap();
    let o = run(&[&s.ledger, Path::new("--key"), &bad_key]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("does not hold a verifier key"),
        "{}",
        stderr(&o)
    );
    // A trusted checkpoint that is not signed by the key.
    let forged = s.dir.path().join("forged.note");
    std::fs::write(&forged, Key::new(ORIGIN, 1).sign(&format!("{ORIGIN}\n1\n"))).unwrap();
    let o = run(&[
        &s.ledger,
        Path::new("--key"),
        &s.key_file,
        Path::new("--trusted-checkpoint"),
        &forged,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("trusted checkpoint cannot be used"));
    // Not a ledger.
    let o = run(&[&s.key_file, Path::new("--key"), &s.key_file]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run_str(&[]).status.code(), Some(2));
    assert_eq!(run_str(&["x.ledger"]).status.code(), Some(2));
    assert_eq!(
        run_str(&["x.ledger", "--key", "k", "--bogus"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run_str(&["--help"]).status.code(), Some(0));
    let o = run_str(&["x.ledger", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let j = json(&o);
    assert_eq!(j["status"], "error");
    assert!(j["error"].as_str().unwrap().contains("--key"), "{j}");
}

#[test]
fn a_private_key_file_is_refused_with_advice() {
    let s = setup();
    let private = s.dir.path().join("ledger.key");
    std::fs::write(
        &private,
        "PRIVATE+KEY+gatehouse.test/ledger+01020304+AQID\n",
    )
    .unwrap();
    let o = run(&[&s.ledger, Path::new("--key"), &private]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("private signing key"), "{}", stderr(&o));
}

#[test]
fn save_checkpoint_keeps_the_final_note_of_an_intact_ledger_only() {
    let s = setup();
    let kept = s.dir.path().join("kept.note");
    let save = |ledger: &Path| {
        run(&[
            ledger,
            Path::new("--key"),
            &s.key_file,
            Path::new("--save-checkpoint"),
            &kept,
        ])
    };
    let o = save(&s.ledger);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), s.notes[1]);
    // The saved note is what --trusted-checkpoint takes.
    let o = run(&[
        &s.ledger,
        Path::new("--key"),
        &s.key_file,
        Path::new("--trusted-checkpoint"),
        &kept,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // Never overwritten, whatever the ledger now holds.
    let o = save(&s.ledger);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("never overwrites"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), s.notes[1]);

    // A ledger that fails verification leaves nothing to keep.
    std::fs::remove_file(&kept).unwrap();
    exec(&s.ledger, "UPDATE events SET kind = 42 WHERE seq = 3");
    let o = save(&s.ledger);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not saved"), "{}", stderr(&o));
    assert!(!kept.exists());
}
