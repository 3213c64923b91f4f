//! `gatehouse export` from the command line: it writes a bundle that
//! `gatehouse-verify` accepts, prints what it exported and the digest, and
//! refuses what it cannot prove. No database needed: the events come from
//! offline operator commands.

use std::path::Path;
use std::process::{Command, Output};

use gatehouse::init::{CONFIG, LEDGER, VERIFIER_KEY};
use gatehouse_verify::{verify_bundle, Completeness, VerifierKey};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn gatehouse(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(o: &Output) -> (String, String) {
    let (out, err) = (
        String::from_utf8(o.stdout.clone()).unwrap(),
        String::from_utf8(o.stderr.clone()).unwrap(),
    );
    assert!(o.status.success(), "{out}{err}");
    (out, err)
}

fn fails(o: &Output) -> String {
    assert!(!o.status.success());
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn key(dir: &Path) -> VerifierKey {
    VerifierKey::parse(
        std::fs::read_to_string(dir.join(VERIFIER_KEY))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

#[test]
fn export_writes_bundles_that_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gh");
    ok(&gatehouse(&[
        &"init",
        &"--dir",
        &dir,
        &"--origin",
        &"gatehouse.test/export",
    ]));
    let config = dir.join(CONFIG);
    for name in ["bot", "other"] {
        ok(&gatehouse(&[
            &"identity",
            &"create",
            &name,
            &"--config",
            &config,
        ]));
    }
    let ledger = dir.join(LEDGER);
    // A checkpoint the auditor keeps now, before more events arrive.
    let reader = gatehouse_ledger::LedgerReader::open(&ledger).unwrap();
    let kept = reader.latest_checkpoint().unwrap().unwrap();
    let note = tmp.path().join("kept.note");
    std::fs::write(&note, &kept.note).unwrap();
    ok(&gatehouse(&[
        &"identity",
        &"create",
        &"third",
        &"--config",
        &config,
    ]));
    let size = reader.latest_checkpoint().unwrap().unwrap().size;

    let out = tmp.path().join("bot.bundle");
    let (digest, said) = ok(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--identity",
        &"bot",
        &"--out",
        &out,
        &"--consistent-with",
        &note,
    ]));
    let digest = digest.trim();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let bytes = std::fs::metadata(&out).unwrap().len();
    assert!(
        said.contains(&format!(
            "exported 1 events of identity bot, with inclusion proofs against the signed checkpoint of size {size} and consistency proofs from size {}; {bytes} bytes",
            kept.size
        )),
        "{said}"
    );
    let report = verify_bundle(&out, &key(&dir), Some(&kept.note), Some(digest)).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.events, 1);
    assert_eq!(report.trusted_checkpoint, Some(kept.size));

    // Evidence is never overwritten.
    let err = fails(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--identity",
        &"bot",
        &"--out",
        &out,
    ]));
    assert!(err.contains("already exists"), "{err}");
    // A time range, proven complete.
    let all = tmp.path().join("all.bundle");
    ok(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--from",
        &"2000-01-01T00:00:00Z",
        &"--to",
        &"2200-01-01T00:00:00+01:00",
        &"--out",
        &all,
        &"--prove-complete",
    ]));
    let report = verify_bundle(&all, &key(&dir), None, None).unwrap();
    assert!(report.is_intact(), "{}", report.to_text());
    assert_eq!(report.events, size);
    assert_eq!(report.completeness, Some(Completeness::Proven));

    // What cannot be exported, with what to do instead.
    let nothing = tmp.path().join("nothing.bundle");
    let err = fails(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--session",
        &"7",
        &"--out",
        &nothing,
    ]));
    assert!(err.contains("no event among the"), "{err}");
    assert!(!nothing.exists());
    let err = fails(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--session",
        &"7",
        &"--identity",
        &"bot",
        &"--out",
        &nothing,
    ]));
    assert!(err.contains("exactly one of --session"), "{err}");
    let err = fails(&gatehouse(&[
        &"export",
        &"--ledger",
        &ledger,
        &"--from",
        &"yesterday",
        &"--to",
        &"2200-01-01T00:00:00Z",
        &"--out",
        &nothing,
    ]));
    assert!(err.contains("RFC 3339"), "{err}");
    let err = fails(&gatehouse(&[
        &"export",
        &"--ledger",
        &tmp.path().join("missing.db"),
        &"--identity",
        &"bot",
        &"--out",
        &nothing,
    ]));
    assert!(err.contains("no ledger at"), "{err}");
}
