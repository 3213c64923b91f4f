//! Golden vectors (fixtures/ledger/): a small ledger written with a fixed
//! key and clock, with its expected records, leaf hashes, chain links, roots,
//! proofs and signed checkpoints. The writer must reproduce them byte for
//! byte; `gatehouse-verify` is tested against the same files.
//!
//! Regenerate after an intentional format change with
//! `GATEHOUSE_BLESS=1 cargo test -p gatehouse-ledger --test golden`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_ledger::event::*;
use gatehouse_ledger::merkle::leaf_hash;
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::{cbor::Bytes, chain, EventBody, Ledger, LedgerReader, WriterOptions};
use serde_json::{json, Value};

const SEED: [u8; 32] = [0x5e; 32];
const ORIGIN: &str = "gatehouse.test/golden";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ledger")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The golden events, in the batches they are committed in.
fn batches() -> Vec<Vec<EventBody>> {
    let agent = "agent-7";
    vec![
        vec![OperatorAction {
            operator: "gatehouse-init".into(),
            action: "ledger.init".into(),
            target: Some(ORIGIN.into()),
            outcome: "ok".into(),
            detail: None,
        }
        .into()],
        vec![
            IdentityCreated {
                identity: agent.into(),
                operator: "alice".into(),
                description: Some("reporting agent".into()),
            }
            .into(),
            PolicyChanged {
                operator: "alice".into(),
                source: "[[rule]]\nname = \"read-orders\"\n".into(),
                digest: Bytes(
                    blake3::hash(b"[[rule]]\nname = \"read-orders\"\n")
                        .as_bytes()
                        .to_vec(),
                ),
            }
            .into(),
            SessionOpened {
                session: 1,
                identity: agent.into(),
                target: "shop".into(),
                client_addr: "127.0.0.1:50000".into(),
                application_name: Some("psql".into()),
                credential: Some("c1".into()),
                tls: true,
            }
            .into(),
        ],
        vec![
            QueryReceived {
                session: 1,
                identity: agent.into(),
                query: 1,
                sql: "SELECT * FROM orders WHERE id = $1".into(),
                params: vec![
                    Param {
                        format: 0,
                        value: Some(Bytes(b"42".to_vec())),
                    },
                    Param {
                        format: 1,
                        value: None,
                    },
                ],
                statement: Some("s1".into()),
                portal: Some(String::new()),
                protocol: Protocol::Extended,
            }
            .into(),
            Decision {
                session: 1,
                identity: agent.into(),
                query: 1,
                action: Action::Allow,
                rule: Some("read-orders".into()),
                class: StatementClass::Read,
                tables: vec!["public.orders".into()],
                columns: vec!["public.orders.id".into()],
                message: None,
            }
            .into(),
        ],
        vec![Response {
            session: 1,
            identity: agent.into(),
            query: 1,
            command_tag: Some("SELECT 1".into()),
            rows: 1,
            duration_ns: 1_250_000,
            sqlstate: None,
            error: None,
            bytes: 97,
            columns: vec![
                ResultColumn {
                    name: "id".into(),
                    type_oid: 23,
                    format: 0,
                },
                ResultColumn {
                    name: "total".into(),
                    type_oid: 1700,
                    format: 0,
                },
            ],
            result: vec![ResultRow {
                values: vec![Some(Bytes(b"7".to_vec())), None],
            }],
            truncated: false,
            result_digest: Some(Bytes(blake3::hash(b"D").as_bytes().to_vec())),
        }
        .into()],
        vec![
            ApprovalRequested {
                approval: 1,
                session: 1,
                identity: agent.into(),
                query: 2,
                sql: "DELETE FROM orders WHERE id = $1".into(),
                params: vec![Param {
                    format: 0,
                    value: Some(Bytes(b"7".to_vec())),
                }],
                class: StatementClass::Write,
                rule: "delete-needs-approval".into(),
                binding: Bytes(blake3::hash(b"binding").as_bytes().to_vec()),
                quorum: 1,
                expires_at: 1_767_225_900_000_000_000,
                fingerprint: "delete from orders where id=$1".into(),
            }
            .into(),
            ApprovalGranted {
                approval: 1,
                operator: "carol".into(),
                grant_until: Some(1_767_227_400_000_000_000),
                session: 1,
                identity: agent.into(),
            }
            .into(),
        ],
        vec![
            IdentityBlocked {
                identity: agent.into(),
                operator: "bob".into(),
                reason: "exfiltration attempt".into(),
                trigger: None,
            }
            .into(),
            SessionTerminated {
                session: 1,
                identity: agent.into(),
                operator: Some("bob".into()),
                reason: "identity blocked".into(),
            }
            .into(),
            SessionClosed {
                session: 1,
                identity: agent.into(),
                reason: "terminated".into(),
                statements: 1,
            }
            .into(),
        ],
    ]
}

fn build(path: &Path) {
    let mut options = WriterOptions::new(path, NoteSigner::from_seed(ORIGIN, SEED).unwrap());
    let clock = Arc::new(AtomicU64::new(1_767_225_600_000_000_000));
    options.clock = Arc::new(move || clock.fetch_add(1_000_000, Ordering::Relaxed));
    let ledger = Ledger::open(options).unwrap();
    for batch in batches() {
        ledger.append_blocking(&batch).unwrap();
    }
    ledger.close();
}

fn describe(path: &Path) -> Value {
    let reader = LedgerReader::open(path).unwrap();
    let mut events = Vec::new();
    let mut leaves = Vec::new();
    let mut link = chain::GENESIS;
    for stored in reader.events(0..u64::MAX) {
        let stored = stored.unwrap();
        let leaf = leaf_hash(&stored.bytes);
        leaves.push(leaf);
        link = chain::link(&link, &stored.bytes);
        events.push(json!({
            "seq": stored.event.seq,
            "ts": stored.event.ts,
            "kind": stored.event.body.kind().code(),
            "kind_name": stored.event.body.kind().name(),
            "record_hex": hex(&stored.bytes),
            "leaf_hash_hex": hex(&leaf),
            "link_hex": hex(&link),
        }));
    }
    let mut links = vec![chain::GENESIS];
    let mut l = chain::GENESIS;
    for e in reader.events(0..u64::MAX) {
        l = chain::link(&l, &e.unwrap().bytes);
        links.push(l);
    }
    let checkpoints: Vec<Value> = reader
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| {
            json!({
                "size": c.size,
                "root_hex": hex(&gatehouse_ledger::merkle::root_of(&leaves[..c.size as usize])),
                "chain_hex": hex(&links[c.size as usize]),
                "proof_hex": c.proof.chunks(32).map(hex).collect::<Vec<_>>(),
                "note": c.note,
            })
        })
        .collect();
    let signer = NoteSigner::from_seed(ORIGIN, SEED).unwrap();
    json!({
        "about": "Golden vectors for docs/ledger-format.md. The signing key is public test material: never use it for a real ledger.",
        "origin": ORIGIN,
        "verifier_key": signer.verifier().to_string(),
        "signing_key": signer.to_secret_string(),
        "empty_root_hex": hex(&gatehouse_ledger::merkle::empty_root()),
        "genesis_link_hex": hex(&chain::GENESIS),
        "events": events,
        "checkpoints": checkpoints,
    })
}

#[test]
fn writer_reproduces_the_golden_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.ledger");
    build(&path);
    let got = describe(&path);
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        // The writer checkpointed and truncated its WAL on close; switch the
        // copy to rollback journaling so read-only opens leave no side files.
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::copy(&path, fixtures().join("golden.ledger")).unwrap();
        rusqlite::Connection::open(fixtures().join("golden.ledger"))
            .unwrap()
            .execute_batch("PRAGMA journal_mode = DELETE")
            .unwrap();
        std::fs::write(
            fixtures().join("golden.json"),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(
            fixtures().join("golden.pub"),
            got["verifier_key"].as_str().unwrap().to_owned() + "\n",
        )
        .unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("golden.json"))
            .expect("fixtures/ledger/golden.json exists (GATEHOUSE_BLESS=1 writes it)"),
    )
    .unwrap();
    assert_eq!(
        got, expected,
        "the writer's output differs from the golden vectors"
    );
    // The committed ledger file holds exactly the same records and notes.
    assert_eq!(describe(&fixtures().join("golden.ledger")), expected);
}

#[test]
fn golden_records_decode_to_the_golden_events() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden.json")).unwrap())
            .unwrap();
    let bodies: Vec<EventBody> = batches().into_iter().flatten().collect();
    for (e, body) in expected["events"].as_array().unwrap().iter().zip(&bodies) {
        let hexed = e["record_hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hexed.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hexed[i..i + 2], 16).unwrap())
            .collect();
        let event = Event::from_bytes(&bytes).unwrap();
        assert_eq!(&event.body, body);
    }
}
