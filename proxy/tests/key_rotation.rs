//! Signing-key rotation (issue 16, docs/ledger-format.md section 5.2):
//! `gatehouse key rotate` records a KeyRotated event under the old key's
//! signature, the gateway signs with the new key from then on, and the
//! verifier, pinned to the first key, follows the chain. A checkpoint the
//! retired key signs after the rotation is caught, a key outside the chain
//! is refused, and the retired key cannot write again.

mod support;

use std::process::Command;

use gatehouse_ledger::note::{unverified_parts, NoteSigner};
use support::{Env, POLICY};

fn verifier_key(text: &str) -> gatehouse_verify::VerifierKey {
    gatehouse_verify::VerifierKey::parse(text.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_followed_from_the_first_and_the_retired_key_is_refused() {
    let mut env = Env::start(POLICY).await;
    let gh = env.dir.path().join("gh");
    let c = env.connect("agent").await;
    c.simple_query("SELECT id FROM orders WHERE id = 1")
        .await
        .unwrap();
    drop(c);
    env.stop().await;
    let config = gatehouse::config::Config::load(&env.config).unwrap();
    let old_signer =
        gatehouse_ledger::keyfile::load_signing_key(&config.ledger.signing_key).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["key", "rotate", "--operator", "alice", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = String::from_utf8(out.stdout).unwrap();
    assert_ne!(
        verifier_key(&new_key),
        verifier_key(&old_signer.verifier().to_string())
    );
    assert!(!gatehouse::commands::next_key_path(&config.ledger.signing_key).exists());

    // The gateway starts with the new key and records more.
    env.restart().await;
    let c = env.connect("agent").await;
    c.simple_query("SELECT id FROM orders WHERE id = 2")
        .await
        .unwrap();
    drop(c);
    env.stop().await;

    // Pinned to the first key (verifier.pub), or to the new one: intact.
    let first = verifier_key(&std::fs::read_to_string(gh.join("verifier.pub")).unwrap());
    let ledger = env.ledger();
    let report = gatehouse_verify::verify_ledger(&ledger, &first, None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    let report = gatehouse_verify::verify_ledger(&ledger, &verifier_key(&new_key), None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The tools read it through the first key too.
    let state = gatehouse::state::load_state_verified(
        &ledger,
        &gatehouse_ledger::note::VerifierKey::parse(first_text(&gh).trim()).unwrap(),
    );
    assert!(state.is_ok(), "{:?}", state.err());

    // A key outside the chain is refused.
    let stranger = NoteSigner::generate(old_signer.name()).unwrap();
    let report = gatehouse_verify::verify_ledger(
        &ledger,
        &verifier_key(&stranger.verifier().to_string()),
        None,
    )
    .unwrap();
    assert!(!report.is_intact());

    // The retired key cannot write.
    let mut options = gatehouse_ledger::WriterOptions::new(&ledger, old_signer.clone());
    options.durability = gatehouse_ledger::Durability::Os;
    let refused = gatehouse_ledger::Ledger::open(options)
        .err()
        .expect("the retired key wrote");
    assert!(refused.to_string().contains("retired"), "{refused}");

    // The newest checkpoint re-signed by the retired key: caught.
    let forged = env.dir.path().join("forged.db");
    std::fs::copy(&ledger, &forged).unwrap();
    {
        let db = rusqlite::Connection::open(&forged).unwrap();
        let (size, note): (i64, String) = db
            .query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let (text, _) = unverified_parts(&note).unwrap();
        db.execute(
            "UPDATE checkpoints SET note = ?1 WHERE size = ?2",
            rusqlite::params![old_signer.sign(text), size],
        )
        .unwrap();
    }
    let report = gatehouse_verify::verify_ledger(&forged, &first, None).unwrap();
    assert!(!report.is_intact(), "a retired key's checkpoint passed");
}

fn first_text(gh: &std::path::Path) -> String {
    std::fs::read_to_string(gh.join("verifier.pub")).unwrap()
}
