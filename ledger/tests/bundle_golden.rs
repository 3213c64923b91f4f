//! Golden evidence bundles (fixtures/ledger/golden-*.bundle), exported from
//! the golden ledger, with their expected verification outcomes in
//! fixtures/ledger/golden-bundles.json: normative examples of
//! docs/ledger-format.md section 8. The exporter must reproduce the intact
//! ones byte for byte; `gatehouse-verify` is tested against all of them
//! (verifier/tests/golden_bundle.rs).
//!
//! Regenerate after an intentional format change (or after re-blessing the
//! golden ledger) with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test bundle_golden`.

use std::path::{Path, PathBuf};

use gatehouse_ledger::bundle::{self, Bundle, ExportRequest, Selection};
use gatehouse_ledger::LedgerReader;
use gatehouse_verify::{verify_bundle, VerifierKey};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

fn reader() -> LedgerReader {
    LedgerReader::open(fixtures().join("golden.ledger")).unwrap()
}

fn note(size: u64) -> String {
    reader()
        .checkpoints()
        .unwrap()
        .into_iter()
        .find(|c| c.size == size)
        .unwrap()
        .note
}

fn ts(seq: u64) -> u64 {
    reader().get(seq).unwrap().unwrap().event.ts
}

/// One vector: a bundle file, the trusted checkpoint to verify it with, and
/// (for tampered copies) how it was tampered with.
struct Vector {
    name: &'static str,
    about: &'static str,
    bundle: Bundle,
    trusted: Option<String>,
}

fn export(selection: Selection, consistent_with: Vec<String>, prove_complete: bool) -> Bundle {
    bundle::export(
        &reader(),
        &ExportRequest {
            selection,
            consistent_with,
            prove_complete,
        },
    )
    .unwrap()
}

fn vectors() -> Vec<Vector> {
    let session = export(Selection::Session(1), vec![note(4)], false);
    let identity = export(Selection::Identity("agent-7".into()), vec![], false);
    let range = export(
        Selection::TimeRange {
            from: ts(4),
            to: ts(7),
        },
        vec![],
        true,
    );
    let mut altered = session.clone();
    let record = &mut altered.events[1].record.0;
    let at = record.windows(8).position(|w| w == b"SELECT *").unwrap();
    record[at + 7] = b'#';
    let mut gap = range.clone();
    gap.events.remove(1);
    vec![
        Vector {
            name: "golden-session.bundle",
            about: "session 1, with a consistency proof from the checkpoint of size 4, verified against that checkpoint",
            bundle: session.clone(),
            trusted: Some(note(4)),
        },
        Vector {
            name: "golden-identity.bundle",
            about: "identity agent-7",
            bundle: identity,
            trusted: None,
        },
        Vector {
            name: "golden-range.bundle",
            about: "the time range of events 4 to 6, proven complete by events 3 and 7",
            bundle: range.clone(),
            trusted: None,
        },
        Vector {
            name: "golden-range.bundle",
            about: "the same, against a trusted checkpoint it carries no consistency proof from",
            bundle: range,
            trusted: Some(note(4)),
        },
        Vector {
            name: "golden-session-altered.bundle",
            about: "golden-session.bundle with one byte of event 4's SQL changed ('*' to '#')",
            bundle: altered,
            trusted: None,
        },
        Vector {
            name: "golden-range-gap.bundle",
            about: "golden-range.bundle with event 5 removed",
            bundle: gap,
            trusted: None,
        },
    ]
}

fn describe(vectors: &[Vector]) -> Value {
    let key = VerifierKey::parse(
        std::fs::read_to_string(fixtures().join("golden.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Value> = vectors
        .iter()
        .map(|v| {
            let bytes = v.bundle.to_bytes();
            let path = dir.path().join(v.name);
            std::fs::write(&path, &bytes).unwrap();
            let report = verify_bundle(&path, &key, v.trusted.as_deref(), None).unwrap();
            let json = report.to_json();
            json!({
                "file": v.name,
                "about": v.about,
                "trusted_checkpoint": v.trusted,
                "digest": bundle::digest(&bytes),
                "expect": {
                    "status": json["status"],
                    "seqs": json["seqs"],
                    "complete": json["complete"],
                    "failure": report.failure.as_ref().map(|f| json!({
                        "seq": f.seq,
                        "class": f.class.as_str(),
                    })),
                },
            })
        })
        .collect();
    json!({
        "about": "Golden evidence bundles for docs/ledger-format.md section 8, exported from golden.ledger and verified with golden.pub. Tampered copies carry the failure a verifier must report.",
        "bundles": entries,
    })
}

#[test]
fn exporter_reproduces_the_golden_bundles() {
    let vectors = vectors();
    let got = describe(&vectors);
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        for v in &vectors {
            std::fs::write(fixtures().join(v.name), v.bundle.to_bytes()).unwrap();
        }
        std::fs::write(
            fixtures().join("golden-bundles.json"),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("golden-bundles.json"))
            .expect("fixtures/ledger/golden-bundles.json exists (GATEHOUSE_BLESS=1 writes it)"),
    )
    .unwrap();
    assert_eq!(got, expected, "the bundles differ from the golden vectors");
    for v in &vectors {
        let stored = std::fs::read(fixtures().join(v.name)).unwrap();
        assert_eq!(stored, v.bundle.to_bytes(), "{} differs", v.name);
        assert_eq!(Bundle::from_bytes(&stored).unwrap(), v.bundle);
    }
    // The expectations are the ones the format requires, not just whatever
    // the verifier said when they were blessed.
    let outcome = |i: usize| {
        let e = &expected["bundles"][i]["expect"];
        (
            e["status"].as_str().unwrap().to_owned(),
            e["failure"]["seq"].as_u64(),
            e["failure"]["class"].as_str().map(str::to_owned),
        )
    };
    let intact = ("intact".to_owned(), None, None);
    assert_eq!(outcome(0), intact);
    assert_eq!(outcome(1), intact);
    assert_eq!(outcome(2), intact);
    assert_eq!(expected["bundles"][2]["expect"]["complete"], "proven");
    assert_eq!(
        outcome(3),
        ("failed".into(), None, Some("consistency_unproven".into()))
    );
    assert_eq!(
        outcome(4),
        ("failed".into(), Some(4), Some("inclusion_invalid".into()))
    );
    assert_eq!(
        outcome(5),
        ("failed".into(), Some(5), Some("sequence_gap".into()))
    );
}
