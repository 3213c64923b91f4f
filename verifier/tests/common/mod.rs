//! Test-only helpers, written from the specification without using the
//! library under test: a naive RFC 9162 reference (tree hash, inclusion
//! paths, consistency proofs), a minimal canonical CBOR encoder, note
//! signing, and a builder that writes a ledger file as section 1 describes.
//! Keeping these independent is what makes the end-to-end tests meaningful.

#![allow(dead_code)]

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

// ---------------------------------------------------------------------------
// RFC 9162 reference, straight from the recursive definitions.

pub fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn ref_leaf(data: &[u8]) -> Hash {
    sha256(&[&[0], data])
}

pub fn ref_node(l: &Hash, r: &Hash) -> Hash {
    sha256(&[&[1], l, r])
}

/// Largest power of two strictly less than n (n >= 2).
pub fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH over leaf hashes.
pub fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => sha256(&[]),
        1 => d[0],
        n => {
            let k = split(n);
            ref_node(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// PATH(m, D[n]) of RFC 9162 section 2.1.3.1.
pub fn ref_inclusion(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = split(n);
    if m < k {
        let mut p = ref_inclusion(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = ref_inclusion(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b) of RFC 9162 section 2.1.4.1.
pub fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// PROOF(m, D[n]) for 0 < m < n.
pub fn ref_consistency(m: usize, d: &[Hash]) -> Vec<Hash> {
    ref_subproof(m, d, true)
}

// ---------------------------------------------------------------------------
// Minimal canonical CBOR encoder (section 3).

#[derive(Clone, Debug)]
pub enum Value {
    Uint(u64),
    /// The negative integer -1 - n.
    Neg(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    /// Keys must be given in increasing order.
    Map(Vec<(u64, Value)>),
    Bool(bool),
    Null,
}

pub fn head(major: u8, arg: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.push(m | 24);
        out.push(arg as u8);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Uint(n) => head(0, *n, out),
        Value::Neg(n) => head(1, *n, out),
        Value::Bytes(b) => {
            head(2, b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(3, t.len() as u64, out);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            head(4, items.len() as u64, out);
            for i in items {
                encode(i, out);
            }
        }
        Value::Map(entries) => {
            head(5, entries.len() as u64, out);
            for (k, v) in entries {
                head(0, *k, out);
                encode(v, out);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
    }
}

pub fn record(seq: u64, ts: u64, kind: u64, body: Vec<(u64, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(
        &Value::Map(vec![
            (0, Value::Uint(seq)),
            (1, Value::Uint(ts)),
            (2, Value::Uint(kind)),
            (3, Value::Map(body)),
        ]),
        &mut out,
    );
    out
}

// ---------------------------------------------------------------------------
// Keys and notes (section 5).

pub struct Key {
    pub name: String,
    pub signing: SigningKey,
}

impl Key {
    pub fn new(name: &str, seed: u8) -> Key {
        Key {
            name: name.to_owned(),
            signing: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    pub fn id(&self) -> [u8; 4] {
        let h = sha256(&[
            self.name.as_bytes(),
            b"\n\x01",
            self.signing.verifying_key().as_bytes(),
        ]);
        [h[0], h[1], h[2], h[3]]
    }

    /// `<name>+<hex id>+<base64(0x01 || pub)>`.
    pub fn verifier(&self) -> String {
        let mut k = vec![1u8];
        k.extend_from_slice(self.signing.verifying_key().as_bytes());
        let id: String = self.id().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}+{}+{}", self.name, id, BASE64.encode(k))
    }

    /// One signature line for `text`.
    pub fn signature_line(&self, text: &str) -> String {
        let mut blob = self.id().to_vec();
        blob.extend_from_slice(&self.signing.sign(text.as_bytes()).to_bytes());
        format!("\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }

    /// A signed note: text, empty line, one signature line.
    pub fn sign(&self, text: &str) -> String {
        format!("{text}\n{}", self.signature_line(text))
    }
}

pub fn checkpoint_text(origin: &str, size: u64, root: &Hash, chain: &Hash) -> String {
    format!(
        "{origin}\n{size}\n{}\nchain {}\n",
        BASE64.encode(root),
        BASE64.encode(chain)
    )
}

// ---------------------------------------------------------------------------
// Ledgers (sections 1, 2, 4.1).

pub const ORIGIN: &str = "gatehouse.test/ledger";
pub const T0: u64 = 1_700_000_000_000_000_000;

#[derive(Clone, Debug)]
pub struct Event {
    pub seq: i64,
    pub ts: i64,
    pub kind: i64,
    pub data: Vec<u8>,
}

pub fn event(seq: u64, ts: u64, kind: u64) -> Event {
    let body = vec![
        (0, Value::Text(format!("user{seq}"))),
        (1, Value::Uint(seq * 7)),
        (
            2,
            if seq.is_multiple_of(2) {
                Value::Null
            } else {
                Value::Bytes(vec![seq as u8; 3])
            },
        ),
        (3, Value::Array(vec![Value::Bool(true), Value::Neg(seq)])),
    ];
    Event {
        seq: seq as i64,
        ts: ts as i64,
        kind: kind as i64,
        data: record(seq, ts, kind, body),
    }
}

/// `n` well-formed events, 1 µs apart, kinds cycling 0..3.
pub fn events(n: u64) -> Vec<Event> {
    (0..n).map(|i| event(i, T0 + i * 1000, i % 3)).collect()
}

pub fn chain_link(prev: &Hash, data: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"gatehouse-chain-v1");
    h.update(prev);
    h.update(data);
    *h.finalize().as_bytes()
}

#[derive(Clone, Debug)]
pub struct CheckpointRow {
    pub size: i64,
    pub note: String,
    pub proof: Vec<u8>,
}

/// The checkpoint rows a correct writer produces for `events` written in
/// batches ending at `sizes`, signed by `key`.
pub fn checkpoints(key: &Key, events: &[Event], sizes: &[u64]) -> Vec<CheckpointRow> {
    let leaves: Vec<Hash> = events.iter().map(|e| ref_leaf(&e.data)).collect();
    let mut links = Vec::new();
    let mut link = [0u8; 32];
    for e in events {
        link = chain_link(&link, &e.data);
        links.push(link);
    }
    let mut rows = Vec::new();
    let mut previous = 0usize;
    for &size in sizes {
        let s = size as usize;
        let text = checkpoint_text(&key.name, size, &mth(&leaves[..s]), &links[s - 1]);
        let proof = if previous == 0 {
            vec![]
        } else {
            ref_consistency(previous, &leaves[..s]).concat()
        };
        rows.push(CheckpointRow {
            size: size as i64,
            note: key.sign(&text),
            proof,
        });
        previous = s;
    }
    rows
}

pub const SCHEMA: &str = "
CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY,
    ts       INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    session  INTEGER,
    identity TEXT,
    data     BLOB NOT NULL
);
CREATE TABLE checkpoints (
    size     INTEGER PRIMARY KEY,
    note     TEXT NOT NULL,
    proof    BLOB NOT NULL
);
CREATE TABLE writer_state (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    size     INTEGER NOT NULL,
    frontier BLOB NOT NULL
);
";

pub fn write_ledger(path: &Path, events: &[Event], checkpoints: &[CheckpointRow]) {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO ledger_meta VALUES ('format', 'gatehouse-ledger-v1'), ('origin', ?1)",
        [ORIGIN],
    )
    .unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO events (seq, ts, kind, session, identity, data) VALUES (?1, ?2, ?3, NULL, NULL, ?4)")
            .unwrap();
        for e in events {
            ins.execute(params![e.seq, e.ts, e.kind, e.data]).unwrap();
        }
        let mut ins = tx
            .prepare("INSERT INTO checkpoints (size, note, proof) VALUES (?1, ?2, ?3)")
            .unwrap();
        for c in checkpoints {
            ins.execute(params![c.size, c.note, c.proof]).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Writes a correct ledger of `events` in batches ending at `sizes` and
/// returns its checkpoint notes.
pub fn build(path: &Path, key: &Key, events: &[Event], sizes: &[u64]) -> Vec<String> {
    let rows = checkpoints(key, events, sizes);
    write_ledger(path, events, &rows);
    rows.into_iter().map(|r| r.note).collect()
}

pub fn exec(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

pub fn test_key() -> Key {
    Key::new(ORIGIN, 7)
}

// ---------------------------------------------------------------------------
// Evidence bundles (section 8), built from the specification.

/// An event whose body has the subject fields of its kind at the keys of
/// the section 8.3 table: kind 4 (session 0, identity 1), kind 9 (session
/// 3, identity 4), kind 12 (identity 0), kind 19 (neither).
pub fn subject_event(seq: u64, ts: u64, kind: u64, session: u64, identity: &str) -> Event {
    let body = match kind {
        4 => vec![
            (0, Value::Uint(session)),
            (1, Value::Text(identity.into())),
            (2, Value::Uint(seq)),
            (3, Value::Text(format!("SELECT {seq}"))),
        ],
        9 => vec![
            (0, Value::Uint(seq)),
            (1, Value::Text("carol".into())),
            (2, Value::Null),
            (3, Value::Uint(session)),
            (4, Value::Text(identity.into())),
        ],
        12 => vec![
            (0, Value::Text(identity.into())),
            (1, Value::Text("alice".into())),
            (2, Value::Null),
        ],
        _ => vec![(0, Value::Text("ops".into())), (1, Value::Uint(seq))],
    };
    Event {
        seq: seq as i64,
        ts: ts as i64,
        kind: kind as i64,
        data: record(seq, ts, kind, body),
    }
}

/// `n` events 1 µs apart: kinds 4, 4, 9, 12, 19 in turn, sessions 1 to 3,
/// identity `agent-<session>`.
pub fn subject_events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let kind = [4, 4, 9, 12, 19][(i % 5) as usize];
            let session = 1 + i % 3;
            subject_event(i, T0 + i * 1000, kind, session, &format!("agent-{session}"))
        })
        .collect()
}

/// A bundle's parts, to be encoded by [`BundleParts::encode`].
#[derive(Clone, Debug)]
pub struct BundleParts {
    pub format: String,
    pub key: String,
    pub checkpoint: String,
    /// `(session, identity, from, to)`.
    pub selection: (Option<u64>, Option<String>, Option<u64>, Option<u64>),
    /// `(seq, record, proof)`.
    pub events: Vec<(u64, Vec<u8>, Vec<u8>)>,
    pub before: Option<(u64, Vec<u8>, Vec<u8>)>,
    pub after: Option<(u64, Vec<u8>, Vec<u8>)>,
    /// `(note, proof)`.
    pub consistency: Vec<(String, Vec<u8>)>,
}

fn entry_value((seq, record, proof): &(u64, Vec<u8>, Vec<u8>)) -> Value {
    Value::Map(vec![
        (0, Value::Uint(*seq)),
        (1, Value::Bytes(record.clone())),
        (2, Value::Bytes(proof.clone())),
    ])
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> Value) -> Value {
    v.as_ref().map_or(Value::Null, f)
}

impl BundleParts {
    pub fn encode(&self) -> Vec<u8> {
        let (session, identity, from, to) = &self.selection;
        let value = Value::Map(vec![
            (0, Value::Text(self.format.clone())),
            (1, Value::Text(self.key.clone())),
            (2, Value::Text(self.checkpoint.clone())),
            (
                3,
                Value::Map(vec![
                    (0, opt(session, |s| Value::Uint(*s))),
                    (1, opt(identity, |i| Value::Text(i.clone()))),
                    (2, opt(from, |t| Value::Uint(*t))),
                    (3, opt(to, |t| Value::Uint(*t))),
                ]),
            ),
            (
                4,
                Value::Array(self.events.iter().map(entry_value).collect()),
            ),
            (5, opt(&self.before, entry_value)),
            (6, opt(&self.after, entry_value)),
            (
                7,
                Value::Array(
                    self.consistency
                        .iter()
                        .map(|(note, proof)| {
                            Value::Map(vec![
                                (0, Value::Text(note.clone())),
                                (1, Value::Bytes(proof.clone())),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]);
        let mut out = Vec::new();
        encode(&value, &mut out);
        out
    }
}

/// A signed log of `events` that bundles can be cut from: its leaves, chain
/// links and the note of its checkpoint at any size.
pub struct Log<'k> {
    pub key: &'k Key,
    pub events: Vec<Event>,
    pub leaves: Vec<Hash>,
    pub links: Vec<Hash>,
}

impl<'k> Log<'k> {
    pub fn new(key: &'k Key, events: Vec<Event>) -> Log<'k> {
        let leaves = events.iter().map(|e| ref_leaf(&e.data)).collect();
        let mut links = Vec::new();
        let mut link = [0u8; 32];
        for e in &events {
            link = chain_link(&link, &e.data);
            links.push(link);
        }
        Log {
            key,
            events,
            leaves,
            links,
        }
    }

    pub fn size(&self) -> u64 {
        self.events.len() as u64
    }

    /// The signed checkpoint note of the first `size` events.
    pub fn note(&self, size: u64) -> String {
        let s = size as usize;
        self.key.sign(&checkpoint_text(
            &self.key.name,
            size,
            &mth(&self.leaves[..s]),
            &self.links[s - 1],
        ))
    }

    /// `(seq, record, inclusion proof against the whole log)`.
    pub fn entry(&self, seq: u64) -> (u64, Vec<u8>, Vec<u8>) {
        (
            seq,
            self.events[seq as usize].data.clone(),
            ref_inclusion(seq as usize, &self.leaves).concat(),
        )
    }

    pub fn consistency(&self, m: u64) -> (String, Vec<u8>) {
        let proof = if m == self.size() {
            vec![]
        } else {
            ref_consistency(m as usize, &self.leaves).concat()
        };
        (self.note(m), proof)
    }

    /// A bundle of the given events under the latest checkpoint.
    pub fn bundle(
        &self,
        selection: (Option<u64>, Option<String>, Option<u64>, Option<u64>),
        seqs: &[u64],
    ) -> BundleParts {
        let id: String = self.key.id().iter().map(|b| format!("{b:02x}")).collect();
        BundleParts {
            format: "gatehouse-bundle-v1".into(),
            key: format!("{}+{id}", self.key.name),
            checkpoint: self.note(self.size()),
            selection,
            events: seqs.iter().map(|s| self.entry(*s)).collect(),
            before: None,
            after: None,
            consistency: vec![],
        }
    }
}
