//! Evidence bundles: a selection of events with proof that each is in the
//! signed log, revealing nothing else of it (docs/ledger-format.md,
//! section 8).
//!
//! A bundle carries the selected events' exact record bytes, an RFC 9162
//! inclusion proof for each against one signed checkpoint (the ledger's
//! latest), that checkpoint's note, the name and key id of the key that
//! signed it, and optionally consistency proofs from checkpoints an auditor
//! kept earlier. It is one canonical CBOR item, so it has exactly one
//! encoding and its SHA-256 digest names its content.
//!
//! Building one needs hashes of subtrees all over the log, but never the
//! whole tree: [`export`] first lists the subtree ranges the proofs will
//! use, then hashes every record once in sequence order, keeping only those
//! subtrees and the running frontier (memory proportional to the proofs,
//! not to the log).

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cbor::{self, Bytes, DecodeError};
use crate::cbor_struct;
use crate::checkpoint::Checkpoint;
use crate::event::{Event, EventBody, EventKind, Nanos, RecordHead, SessionId};
use crate::merkle::{self, leaf_hash, node_hash, Hash};
use crate::note;
use crate::reader::{LedgerReader, StoredEvent};
use crate::tree_window::TreeWindow;
use crate::LedgerError;

/// The value of a bundle's `format` field for this version of the format.
pub const FORMAT: &str = "gatehouse-bundle-v1";

cbor_struct! {
    /// Which events a bundle claims to hold (section 8.2): exactly one of
    /// `session`, `identity`, or `from` and `to` together is non-null.
    pub struct SelectionRecord {
        /// Every event of this session.
        0 => session: Option<u64>,
        /// Every event concerning this identity.
        1 => identity: Option<String>,
        /// Events with `from <= ts`, Unix nanoseconds.
        2 => from: Option<u64>,
        /// ... and `ts < to`.
        3 => to: Option<u64>,
    }
}

cbor_struct! {
    /// One disclosed event and its inclusion proof.
    pub struct BundleEvent {
        /// The event's sequence number: its leaf index in the tree.
        0 => seq: u64,
        /// The record exactly as stored (what the leaf hash covers).
        1 => record: Bytes,
        /// The inclusion proof against the bundle's checkpoint, 32-byte
        /// hashes concatenated.
        2 => proof: Bytes,
    }
}

cbor_struct! {
    /// Proof that the bundle's checkpoint extends an earlier one.
    pub struct BundleConsistency {
        /// The earlier checkpoint's signed note.
        0 => note: String,
        /// The consistency proof from its size to the bundle checkpoint's,
        /// 32-byte hashes concatenated.
        1 => proof: Bytes,
    }
}

cbor_struct! {
    /// An evidence bundle (section 8.1).
    pub struct Bundle {
        /// Always [`FORMAT`].
        0 => format: String,
        /// `<key name>+<key id>` of the key that signed `checkpoint`.
        1 => key: String,
        /// The signed checkpoint every proof leads to.
        2 => checkpoint: String,
        /// What the bundle claims to hold.
        3 => selection: SelectionRecord,
        /// The selected events, by increasing sequence number.
        4 => events: Vec<BundleEvent>,
        /// Time ranges proven complete: the event just before the range.
        5 => before: Option<BundleEvent>,
        /// Time ranges proven complete: the event just after the range.
        6 => after: Option<BundleEvent>,
        /// Consistency proofs from earlier checkpoints, by increasing size.
        7 => consistency: Vec<BundleConsistency>,
    }
}

impl Bundle {
    /// The canonical encoding: the bundle file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// Decodes a bundle file, rejecting any bytes that are not the canonical
    /// encoding of what they decode to. Says nothing about the proofs: that
    /// is `gatehouse-verify`'s job.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, DecodeError> {
        cbor::decode_canonical(bytes)
    }

    /// `sha256:<hex>` of the encoding: the name to record alongside a bundle
    /// (in a ticket, say) so that a copy with events removed, which the
    /// proofs alone cannot reveal for a session or identity selection, is
    /// told apart from the original.
    pub fn digest(&self) -> String {
        digest(&self.to_bytes())
    }

    /// The size of the checkpoint the proofs lead to, as its note says (0 if
    /// the note cannot be read). Not verified: that is the verifier's job.
    pub fn checkpoint_size(&self) -> u64 {
        note_size(&self.checkpoint).unwrap_or(0)
    }

    /// The sizes of the earlier checkpoints the bundle carries consistency
    /// proofs from, as their notes say. Not verified.
    pub fn consistency_sizes(&self) -> Vec<u64> {
        self.consistency
            .iter()
            .filter_map(|c| note_size(&c.note))
            .collect()
    }
}

fn note_size(n: &str) -> Option<u64> {
    let (text, _) = note::unverified_parts(n).ok()?;
    Checkpoint::parse(text).ok().map(|c| c.size)
}

/// `sha256:<hex>` of a bundle file's bytes (see [`Bundle::digest`]).
pub fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Which events to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every event of one session.
    Session(SessionId),
    /// Every event concerning one agent identity.
    Identity(String),
    /// Every event with `from <= ts < to` (Unix nanoseconds).
    TimeRange {
        /// Start, inclusive.
        from: Nanos,
        /// End, exclusive.
        to: Nanos,
    },
}

impl Selection {
    /// The wire form.
    pub fn to_record(&self) -> SelectionRecord {
        let mut r = SelectionRecord {
            session: None,
            identity: None,
            from: None,
            to: None,
        };
        match self {
            Selection::Session(s) => r.session = Some(*s),
            Selection::Identity(i) => r.identity = Some(i.clone()),
            Selection::TimeRange { from, to } => {
                r.from = Some(*from);
                r.to = Some(*to);
            }
        }
        r
    }

    /// Parses the wire form; `None` unless exactly one of the three shapes
    /// is present (docs/ledger-format.md, section 8.2).
    pub fn from_record(r: &SelectionRecord) -> Option<Selection> {
        match (r.session, &r.identity, r.from, r.to) {
            (Some(s), None, None, None) => Some(Selection::Session(s)),
            (None, Some(i), None, None) => Some(Selection::Identity(i.clone())),
            (None, None, Some(from), Some(to)) => Some(Selection::TimeRange { from, to }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Session(s) => write!(f, "session {s}"),
            Selection::Identity(i) => write!(f, "identity {i:?}"),
            Selection::TimeRange { from, to } => write!(f, "events with {from} <= ts < {to}"),
        }
    }
}

/// What to put in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The events.
    pub selection: Selection,
    /// Signed checkpoint notes an auditor kept earlier; the bundle carries a
    /// consistency proof from each to its own checkpoint.
    pub consistent_with: Vec<String>,
    /// For a time range: also disclose the event just before and just after
    /// the range, so that the bundle proves it holds *every* event in it.
    pub prove_complete: bool,
}

/// Why a bundle could not be built.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger has no signed checkpoint yet.
    #[error("the ledger has no signed checkpoint, so there is nothing to prove events against; it holds no events yet")]
    NoCheckpoint,
    /// The selection matches no event.
    #[error("{0}")]
    NothingSelected(String),
    /// The request does not make sense.
    #[error("{0}")]
    BadRequest(String),
    /// An earlier checkpoint to prove consistency with cannot be used.
    #[error("earlier checkpoint: {0}")]
    EarlierCheckpoint(String),
    /// The ledger's contents disagree with its own checkpoint.
    #[error("ledger damaged: {0}; run gatehouse-verify on it")]
    Damaged(String),
}

/// Builds the bundle `request` asks for from the ledger behind `reader`,
/// against the ledger's latest checkpoint.
///
/// Reads the latest checkpoint first and nothing beyond its size, so a
/// writer appending meanwhile does not matter. Hashes every record up to
/// that size once; the checkpoint's root is recomputed on the way and must
/// match, so a bundle is never built from a ledger whose events disagree
/// with its own checkpoint.
pub fn export(reader: &LedgerReader, request: &ExportRequest) -> Result<Bundle, BundleError> {
    let stored = reader
        .latest_checkpoint()?
        .ok_or(BundleError::NoCheckpoint)?;
    let damaged = |what: String| BundleError::Damaged(what);
    let (text, signers) = note::unverified_parts(&stored.note)
        .map_err(|e| damaged(format!("the latest checkpoint note is malformed: {e}")))?;
    let checkpoint = Checkpoint::parse(text)
        .map_err(|e| damaged(format!("the latest checkpoint note is malformed: {e}")))?;
    if checkpoint.size != stored.size {
        return Err(damaged(format!(
            "the checkpoint row for size {} holds a note for size {}",
            stored.size, checkpoint.size
        )));
    }
    let size = checkpoint.size;
    let key = signers
        .iter()
        .find(|(name, _)| *name == checkpoint.origin)
        .map(|(name, id)| note::key_label(name, id))
        .ok_or_else(|| {
            damaged(format!(
                "the latest checkpoint carries no signature by a key named {:?}",
                checkpoint.origin
            ))
        })?;
    let earlier = earlier_checkpoints(&request.consistent_with, &checkpoint)?;
    let mut chosen = select(reader, request, size)?;
    chosen.add_shapes(reader)?;

    let seqs: Vec<u64> = chosen.seqs().collect();
    let sizes: Vec<u64> = earlier.iter().map(|(m, _, _)| *m).collect();
    // Around the chosen events from stored subtree hashes when they rebuild
    // the checkpoint's root; otherwise (a ledger without them, or a stored
    // hash that lies) from every record.
    let mut window = TreeWindow::new(reader, size, seqs.iter().map(|&s| s..s + 1), &sizes);
    let mut proven = Proven::build(&mut Tree::Window(&mut window, false), &seqs, &sizes, size)?;
    let leaves_agree = |window: &mut TreeWindow| -> Result<bool, LedgerError> {
        for stored in chosen.all() {
            if window.leaf(stored.event.seq)? != Some(leaf_hash(&stored.bytes)) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if proven.as_ref().map(|p| p.root) != Some(checkpoint.root) || !leaves_agree(&mut window)? {
        let mut hashes = TreeScan::new(size);
        for &seq in &seqs {
            merkle::inclusion_proof_with(seq, size, &mut |a, b| hashes.want(a, b));
        }
        for &m in &sizes {
            hashes.want_root_at(m);
            merkle::consistency_proof_with(m, size, &mut |a, b| hashes.want(a, b));
        }
        hashes.scan(reader)?;
        proven = Proven::build(&mut Tree::Scan(&hashes), &seqs, &sizes, size)?;
    }
    let proven = proven
        .filter(|p| p.root == checkpoint.root)
        .ok_or_else(|| {
            damaged(format!(
                "events 0..{} hash to a root other than the latest checkpoint's",
                size - 1
            ))
        })?;

    let entry = |stored: &StoredEvent| BundleEvent {
        seq: stored.event.seq,
        record: Bytes(stored.bytes.clone()),
        proof: Bytes(proven.inclusion[&stored.event.seq].clone()),
    };
    let mut consistency = Vec::with_capacity(earlier.len());
    for ((m, root, note), (rebuilt, proof)) in earlier.into_iter().zip(&proven.consistency) {
        if *rebuilt != root {
            return Err(BundleError::EarlierCheckpoint(format!(
                "this ledger's first {m} events do not hash to the root of the checkpoint of size {m}: \
                 the ledger has forked from the one that checkpoint saw (gatehouse-verify --trusted-checkpoint \
                 on the ledger shows the evidence)"
            )));
        }
        consistency.push(BundleConsistency {
            note,
            proof: Bytes(proof.clone()),
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        key,
        checkpoint: stored.note,
        selection: request.selection.to_record(),
        events: chosen.events.iter().map(entry).collect(),
        before: chosen.before.as_ref().map(entry),
        after: chosen.after.as_ref().map(entry),
        consistency,
    })
}

/// Where a bundle's proofs take their subtree hashes from.
enum Tree<'a, 'r> {
    /// Rebuilt around the chosen events; `true` once a stored subtree was
    /// missing, which voids everything built.
    Window(&'a mut TreeWindow<'r>, bool),
    /// Gathered by hashing every record.
    Scan(&'a TreeScan),
}

impl Tree<'_, '_> {
    fn mth(&mut self, start: u64, end: u64) -> Result<Hash, LedgerError> {
        match self {
            Tree::Window(window, missing) => match window.mth(start, end, &mut |_, _| {})? {
                Some(hash) => Ok(hash),
                None => {
                    *missing = true;
                    Ok([0; 32])
                }
            },
            Tree::Scan(scan) if start == 0 && end == scan.size => Ok(scan.root()),
            Tree::Scan(scan) if start == 0 && scan.roots.contains_key(&end) => {
                Ok(scan.root_at(end))
            }
            Tree::Scan(scan) => Ok(scan.get(start, end)),
        }
    }
}

/// A bundle's proofs and the roots they lead to.
struct Proven {
    /// The root of the whole tree.
    root: Hash,
    /// Each chosen event's inclusion proof, hashes concatenated.
    inclusion: HashMap<u64, Vec<u8>>,
    /// For each earlier size: the root of that many events, and the
    /// consistency proof from it.
    consistency: Vec<(Hash, Vec<u8>)>,
}

impl Proven {
    /// `None`: the window lacked a stored subtree.
    fn build(
        tree: &mut Tree,
        seqs: &[u64],
        sizes: &[u64],
        size: u64,
    ) -> Result<Option<Proven>, LedgerError> {
        let mut failure = None;
        let mut mth = |tree: &mut Tree, a: u64, b: u64| match tree.mth(a, b) {
            Ok(hash) => hash,
            Err(e) => {
                failure.get_or_insert(e);
                [0; 32]
            }
        };
        let root = mth(tree, 0, size);
        let mut inclusion = HashMap::new();
        for &seq in seqs {
            let proof = merkle::inclusion_proof_with(seq, size, &mut |a, b| mth(tree, a, b));
            inclusion.insert(seq, proof.concat());
        }
        let mut consistency = Vec::new();
        for &m in sizes {
            let rebuilt = mth(tree, 0, m);
            let proof = merkle::consistency_proof_with(m, size, &mut |a, b| mth(tree, a, b));
            consistency.push((rebuilt, proof.concat()));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(match tree {
            Tree::Window(_, true) => None,
            _ => Some(Proven {
                root,
                inclusion,
                consistency,
            }),
        })
    }
}

/// Parses, checks and orders the earlier checkpoints: `(size, root, note)`
/// by increasing size, one per size.
fn earlier_checkpoints(
    notes: &[String],
    latest: &Checkpoint,
) -> Result<Vec<(u64, Hash, String)>, BundleError> {
    let mut by_size: BTreeMap<u64, (Hash, String)> = BTreeMap::new();
    for n in notes {
        let bad = |why: String| BundleError::EarlierCheckpoint(why);
        let (text, _) =
            note::unverified_parts(n).map_err(|e| bad(format!("not a signed note: {e}")))?;
        let c = Checkpoint::parse(text).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
        if c.origin != latest.origin {
            return Err(bad(format!(
                "it is a checkpoint of the log {:?}, not of this ledger ({:?})",
                c.origin, latest.origin
            )));
        }
        if c.size == 0 {
            return Err(bad("it commits to no events".into()));
        }
        if c.size > latest.size {
            return Err(bad(format!(
                "it covers {} events but this ledger's latest checkpoint covers only {}: \
                 the ledger was truncated or rolled back",
                c.size, latest.size
            )));
        }
        if let Some((root, _)) = by_size.get(&c.size) {
            if *root != c.root {
                return Err(bad(format!(
                    "two of the given checkpoints commit to different roots for size {}: \
                     the log's key signed a fork",
                    c.size
                )));
            }
            continue;
        }
        by_size.insert(c.size, (c.root, n.clone()));
    }
    Ok(by_size
        .into_iter()
        .map(|(size, (root, note))| (size, root, note))
        .collect())
}

/// The events a request selects, and the boundary events of a time range
/// proven complete.
struct Chosen {
    events: Vec<StoredEvent>,
    before: Option<StoredEvent>,
    after: Option<StoredEvent>,
}

impl Chosen {
    fn all(&self) -> impl Iterator<Item = &StoredEvent> + '_ {
        self.before.iter().chain(&self.events).chain(&self.after)
    }

    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.all().map(|e| e.event.seq)
    }

    /// Adds the shapes of the statements chosen that were recorded
    /// compactly (section 7.2), so that a bundle's statements can be read
    /// whole: each goes among the events, in sequence order.
    fn add_shapes(&mut self, reader: &LedgerReader) -> Result<(), BundleError> {
        let mut shapes = std::collections::BTreeSet::new();
        for stored in self.all() {
            let damaged = |e: DecodeError| {
                BundleError::Damaged(format!("event {} cannot be decoded: {e}", stored.event.seq))
            };
            let head = RecordHead::parse(&stored.bytes).map_err(damaged)?;
            if head.kind == EventKind::ShapedStatement {
                if let EventBody::ShapedStatement(s) =
                    Event::from_bytes(&stored.bytes).map_err(damaged)?.body
                {
                    shapes.insert(s.shape);
                }
            }
        }
        let held: std::collections::BTreeSet<u64> = self.seqs().collect();
        for seq in shapes.difference(&held) {
            let shape = reader.get(*seq)?.ok_or_else(|| {
                BundleError::Damaged(format!(
                    "event {seq}, a statement's shape, is not in the ledger"
                ))
            })?;
            self.events.push(shape);
        }
        self.events.sort_by_key(|e| e.event.seq);
        Ok(())
    }
}

fn select(
    reader: &LedgerReader,
    request: &ExportRequest,
    size: u64,
) -> Result<Chosen, BundleError> {
    if request.prove_complete && !matches!(request.selection, Selection::TimeRange { .. }) {
        return Err(BundleError::BadRequest(
            "only a time range can be proven complete; a session or identity selection cannot \
             (docs/ledger-format.md, section 8.4)"
                .into(),
        ));
    }
    let read = |range: std::ops::Range<u64>| -> Result<Vec<StoredEvent>, BundleError> {
        Ok(reader.events(range).collect::<Result<Vec<_>, _>>()?)
    };
    // Events are selected on their own records: the index columns, bucket
    // tables and time column are not authenticated, and an index that hid
    // an event would make a bundle that verifies yet leaves out what was
    // done. They only say where to look; what is found there is checked,
    // and every covered event is read when it does not check out.
    let scan = |keep: &dyn Fn(&Event) -> bool| -> Result<Vec<StoredEvent>, BundleError> {
        let mut out = Vec::new();
        for stored in reader.events(0..size) {
            let stored = stored?;
            if keep(&stored.event) {
                out.push(stored);
            }
        }
        Ok(out)
    };
    let chosen = match &request.selection {
        Selection::Session(s) => {
            let of_session = |e: &Event| e.body.session() == Some(*s);
            // A session's events lie between its opening and its close
            // (docs/ledger-format.md, section 1).
            let window = match reader.session_hint(*s)? {
                Some((opened, closed)) if opened < size => {
                    let end = closed.map_or(size, |c| (c + 1).min(size));
                    let events = read(opened..end)?;
                    let opens = events.first().is_some_and(
                        |e| matches!(&e.event.body, EventBody::SessionOpened(o) if o.session == *s),
                    );
                    let closes = match closed {
                        Some(c) if c < size => events.last().is_some_and(|e| {
                            e.event.seq == c
                                && matches!(&e.event.body, EventBody::SessionClosed(o) if o.session == *s)
                        }),
                        _ => true,
                    };
                    (opens && closes).then_some(events)
                }
                _ => None,
            };
            let events = match window {
                Some(mut events) => {
                    events.retain(|e| of_session(&e.event));
                    events
                }
                None => scan(&of_session)?,
            };
            Chosen {
                events,
                before: None,
                after: None,
            }
        }
        Selection::Identity(i) => Chosen {
            events: scan(&|e| e.body.identity() == Some(i.as_str()))?,
            before: None,
            after: None,
        },
        Selection::TimeRange { from, to } => {
            if from >= to {
                return Err(BundleError::BadRequest(format!(
                    "the time range is empty: --from ({from}) must be before --to ({to})"
                )));
            }
            let in_range = |e: &Event| (*from..*to).contains(&e.ts);
            // Where the time column says the range lies, checked on the
            // records: every event in it inside the range, the ones on
            // either side outside it (times never decrease along the log).
            let start = reader.first_at_or_after(*from)?.min(size);
            let end = reader.first_at_or_after(*to)?.min(size).max(start);
            let edges = read(start.saturating_sub(1)..(end + 1).min(size))?;
            let before = edges.first().filter(|e| e.event.seq < start).cloned();
            let after = edges.last().filter(|e| e.event.seq >= end).cloned();
            let events: Vec<StoredEvent> = edges
                .into_iter()
                .filter(|e| (start..end).contains(&e.event.seq))
                .collect();
            let found = before.as_ref().is_none_or(|e| e.event.ts < *from)
                && after.as_ref().is_none_or(|e| e.event.ts >= *to)
                && events.iter().all(|e| in_range(&e.event));
            let (events, before, after) = if found {
                (events, before, after)
            } else {
                let (mut events, mut before, mut after) = (Vec::new(), None, None);
                for stored in reader.events(0..size) {
                    let stored = stored?;
                    if stored.event.ts < *from {
                        before = Some(stored);
                    } else if stored.event.ts < *to {
                        events.push(stored);
                    } else {
                        after = Some(stored);
                        break;
                    }
                }
                (events, before, after)
            };
            if request.prove_complete {
                Chosen {
                    events,
                    before,
                    after,
                }
            } else {
                Chosen {
                    events,
                    before: None,
                    after: None,
                }
            }
        }
    };
    if chosen.events.is_empty() && !request.prove_complete {
        let hint = match request.selection {
            Selection::TimeRange { .. } => {
                "; add --prove-complete to prove that the range holds no event"
            }
            _ => "; check the session number or identity name (gatehouse replay --identity NAME shows an identity's sessions)",
        };
        return Err(BundleError::NothingSelected(format!(
            "no event among the {size} the latest checkpoint covers matches {}{hint}",
            request.selection
        )));
    }
    Ok(chosen)
}

/// The subtree hashes some proofs need, gathered in one pass over the
/// leaves.
///
/// Used in three steps: tell it every range the proofs will use
/// ([`TreeScan::want`], [`TreeScan::want_root_at`]), feed it every leaf in
/// order ([`TreeScan::push`]), then read the hashes ([`TreeScan::get`]).
/// RFC 9162 proofs only use ranges that are aligned complete subtrees or end
/// at the tree size (see [`merkle::inclusion_proof_with`]). The former are
/// caught as the streaming frontier completes them; the latter are folded
/// from the final frontier, whose nodes tile the tree from the left.
struct TreeScan {
    size: u64,
    /// Aligned complete subtrees wanted, `(start, end)`.
    wanted: HashMap<(u64, u64), Option<Hash>>,
    /// Tree sizes whose root is wanted (earlier checkpoints).
    roots: BTreeMap<u64, Option<Hash>>,
    /// The frontier of the leaves pushed so far: `(start, width, hash)`,
    /// left to right.
    frontier: Vec<(u64, u64, Hash)>,
    pushed: u64,
}

fn is_aligned_subtree(start: u64, end: u64) -> bool {
    let width = end - start;
    width.is_power_of_two() && start.is_multiple_of(width)
}

/// The root of the tree whose frontier (or right part of one) is `nodes`.
fn fold(nodes: &[(u64, u64, Hash)]) -> Hash {
    let mut rest = nodes.iter().rev();
    match rest.next() {
        None => merkle::empty_root(),
        Some(&(_, _, last)) => rest.fold(last, |acc, (_, _, left)| node_hash(left, &acc)),
    }
}

impl TreeScan {
    fn new(size: u64) -> TreeScan {
        TreeScan {
            size,
            wanted: HashMap::new(),
            roots: BTreeMap::new(),
            frontier: Vec::with_capacity(64),
            pushed: 0,
        }
    }

    /// Notes that `MTH(D[start:end])` will be needed; returns a placeholder.
    fn want(&mut self, start: u64, end: u64) -> Hash {
        if is_aligned_subtree(start, end) {
            self.wanted.insert((start, end), None);
        } else {
            assert_eq!(
                end, self.size,
                "RFC 9162 proofs use only aligned subtrees and ranges ending at the tree size"
            );
        }
        [0; 32]
    }

    /// Notes that the root of the first `size` leaves will be needed.
    fn want_root_at(&mut self, size: u64) {
        self.roots.insert(size, None);
    }

    fn keep(&mut self, start: u64, width: u64, hash: &Hash) {
        if let Some(slot) = self.wanted.get_mut(&(start, start + width)) {
            *slot = Some(*hash);
        }
    }

    /// Appends the next leaf hash, keeping every wanted subtree it completes.
    fn push(&mut self, leaf: Hash) {
        let mut node = (self.pushed, 1, leaf);
        self.keep(node.0, node.1, &node.2);
        while let Some(&(start, width, left)) = self.frontier.last() {
            if width != node.1 {
                break;
            }
            self.frontier.pop();
            node = (start, width * 2, node_hash(&left, &node.2));
            self.keep(node.0, node.1, &node.2);
        }
        self.frontier.push(node);
        self.pushed += 1;
        if let Some(slot) = self.roots.get_mut(&self.pushed) {
            *slot = Some(fold(&self.frontier));
        }
    }

    /// Hashes records `0..size` of the ledger in order.
    fn scan(&mut self, reader: &LedgerReader) -> Result<(), LedgerError> {
        reader.for_each_record(0..self.size, |_, data| self.push(leaf_hash(data)))
    }

    /// The root of all leaves pushed.
    fn root(&self) -> Hash {
        fold(&self.frontier)
    }

    /// The root of the first `size` leaves, which [`TreeScan::want_root_at`]
    /// was told about.
    fn root_at(&self, size: u64) -> Hash {
        self.roots
            .get(&size)
            .copied()
            .flatten()
            .expect("every root asked for is reached by the scan")
    }

    /// `MTH(D[start:end])`, which [`TreeScan::want`] was told about.
    fn get(&self, start: u64, end: u64) -> Hash {
        if let Some(Some(hash)) = self.wanted.get(&(start, end)) {
            return *hash;
        }
        assert_eq!(end, self.size, "subtree {start}..{end} was not planned");
        let from = self
            .frontier
            .iter()
            .position(|(s, _, _)| *s == start)
            .expect("a range ending at the tree size starts at a frontier node");
        fold(&self.frontier[from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{consistency_proof, inclusion_proof, root_of};
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The streaming scan reproduces the proofs built from all leaves.
    fn plan_matches(n: u64, picks: &[u64], m: u64) {
        let l = leaves(n);
        let mut hashes = TreeScan::new(n);
        for &i in picks {
            merkle::inclusion_proof_with(i, n, &mut |a, b| hashes.want(a, b));
        }
        hashes.want_root_at(m);
        merkle::consistency_proof_with(m, n, &mut |a, b| hashes.want(a, b));
        for leaf in &l {
            hashes.push(*leaf);
        }
        assert_eq!(hashes.root(), root_of(&l));
        assert_eq!(hashes.root_at(m), root_of(&l[..m as usize]));
        for &i in picks {
            let got = merkle::inclusion_proof_with(i, n, &mut |a, b| hashes.get(a, b));
            assert_eq!(got, inclusion_proof(&l, i), "leaf {i} of {n}");
        }
        let got = merkle::consistency_proof_with(m, n, &mut |a, b| hashes.get(a, b));
        assert_eq!(got, consistency_proof(&l, m), "consistency {m} to {n}");
    }

    #[test]
    fn plans_cover_edges_and_powers_of_two() {
        for n in [1u64, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33] {
            let all: Vec<u64> = (0..n).collect();
            for m in 1..=n {
                plan_matches(n, &all, m);
            }
        }
    }

    proptest! {
        #[test]
        fn streaming_proofs_equal_proofs_over_all_leaves(
            n in 1u64..700,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            m_pick in any::<prop::sample::Index>(),
        ) {
            let picks: Vec<u64> = picks.iter().map(|p| p.index(n as usize) as u64).collect();
            let m = 1 + m_pick.index(n as usize) as u64;
            plan_matches(n, &picks, m);
        }

        #[test]
        fn selection_records_round_trip(s in any::<u64>(), i in ".{0,12}", from in any::<u64>(), to in any::<u64>()) {
            for sel in [Selection::Session(s), Selection::Identity(i.clone()), Selection::TimeRange { from, to }] {
                prop_assert_eq!(Selection::from_record(&sel.to_record()), Some(sel));
            }
        }
    }
}
