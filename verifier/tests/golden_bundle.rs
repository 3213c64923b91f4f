//! The golden evidence bundles in `fixtures/ledger/` (exported from
//! `golden.ledger` by the Gatehouse exporter, specified by
//! docs/ledger-format.md section 8): the verifier must reach exactly the
//! outcome `golden-bundles.json` lists for each, and its own SHA-256 of
//! each file must be the listed digest.

use std::path::{Path, PathBuf};

use gatehouse_verify::bundle::{self, Selection};
use gatehouse_verify::{cbor, verify_bundle, VerifierKey};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

fn key() -> VerifierKey {
    let text = std::fs::read_to_string(fixtures().join("golden.pub")).unwrap();
    VerifierKey::parse(text.trim()).unwrap()
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden-bundles.json"))
        .expect("fixtures/ledger/golden-bundles.json is part of the repository");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn golden_bundles_verify_as_listed() {
    let key = key();
    let vectors = vectors();
    let list = vectors["bundles"].as_array().unwrap();
    assert!(list.len() >= 6);
    for v in list {
        let file = fixtures().join(v["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        assert!(bundle::is_bundle(&bytes), "{}", file.display());
        assert_eq!(
            gatehouse_verify::bundle_verify::digest(&bytes),
            v["digest"].as_str().unwrap()
        );
        let report = verify_bundle(&file, &key, v["trusted_checkpoint"].as_str(), None).unwrap();
        let json = report.to_json();
        let expect = &v["expect"];
        let about = v["about"].as_str().unwrap();
        assert_eq!(
            json["status"],
            expect["status"],
            "{about}: {}",
            report.to_text()
        );
        assert_eq!(json["seqs"], expect["seqs"], "{about}");
        assert_eq!(json["complete"], expect["complete"], "{about}");
        match expect["failure"].as_object() {
            None => assert!(report.is_intact(), "{about}"),
            Some(f) => {
                let got = report.failure.as_ref().unwrap();
                assert_eq!(got.seq, f["seq"].as_u64(), "{about}");
                assert_eq!(got.class.as_str(), f["class"].as_str().unwrap(), "{about}");
            }
        }
        // The digest pins the exact file.
        if report.is_intact() {
            let pinned = verify_bundle(
                &file,
                &key,
                v["trusted_checkpoint"].as_str(),
                Some(v["digest"].as_str().unwrap()),
            )
            .unwrap();
            assert!(pinned.is_intact(), "{about}");
        }
    }
}

#[test]
fn golden_bundle_structure() {
    // Read the session bundle's structure directly, as an independent
    // implementation would, and check its pieces against golden.json.
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(fixtures().join("golden-session.bundle")).unwrap();
    cbor::check_item(&bytes).unwrap();
    let b = bundle::parse(&bytes).unwrap();
    assert_eq!(b.selection, Selection::Session(1));
    assert_eq!(b.key, key().label());
    let checkpoints = golden["checkpoints"].as_array().unwrap();
    assert_eq!(
        b.checkpoint,
        checkpoints.last().unwrap()["note"].as_str().unwrap()
    );
    for e in &b.events {
        let record: String = e.record.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            golden["events"][e.seq as usize]["record_hex"]
                .as_str()
                .unwrap(),
            record
        );
    }
    assert_eq!(b.consistency.len(), 1);
    assert_eq!(
        b.consistency[0].note,
        checkpoints.iter().find(|c| c["size"] == 4).unwrap()["note"]
            .as_str()
            .unwrap()
    );
    assert!(b.before.is_none() && b.after.is_none());
}
