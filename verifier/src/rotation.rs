//! Signing-key rotation (docs/ledger-format.md, section 5.2).
//!
//! A `KeyRotated` event (kind 20) names the key it retires (`old_key`) and
//! the one that signs from then on (`new_key`). It is committed under a
//! checkpoint signed by the old key, so the old key vouches for its
//! successor; every later checkpoint is signed by the new key, and the old
//! key signs nothing after that. The keys form a chain K0 -> K1 -> ...;
//! an auditor pins any key of it (normally K0, the key the log started
//! with) and the verifier follows the chain.

use crate::cbor;
use crate::note::VerifierKey;

/// The kind code of `KeyRotated`.
pub const KEY_ROTATED: u64 = 20;

/// One rotation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The event's sequence number.
    pub seq: u64,
    /// The retired key, as a verifier key string.
    pub old_key: String,
    /// The key signing from then on.
    pub new_key: String,
}

impl Rotation {
    /// Reads a `KeyRotated` record (body `{0: operator, 1: old_key, 2:
    /// new_key}`); `None` if it is not one.
    pub fn from_record(seq: u64, record: &[u8]) -> Option<Rotation> {
        let (kind, mut c) = cbor::record_body(record)?;
        if kind != KEY_ROTATED {
            return None;
        }
        if c.map().ok()? != 3 {
            return None;
        }
        c.key(0).ok()?;
        c.text().ok()?;
        c.key(1).ok()?;
        let old_key = c.text().ok()?.to_owned();
        c.key(2).ok()?;
        let new_key = c.text().ok()?.to_owned();
        Some(Rotation {
            seq,
            old_key,
            new_key,
        })
    }
}

/// Which key signs which checkpoint: the chain of keys and where each
/// rotation was recorded.
#[derive(Clone)]
pub struct KeySchedule {
    keys: Vec<VerifierKey>,
    rotated_at: Vec<u64>,
}

impl KeySchedule {
    /// The schedule of a log whose rotations are `rotations` (in sequence
    /// order), trusted through `pinned`, which must be one of its keys. Each
    /// rotation must retire the key the previous one brought in.
    pub fn build(pinned: &VerifierKey, rotations: &[Rotation]) -> Result<KeySchedule, String> {
        let Some(first) = rotations.first() else {
            return Ok(KeySchedule {
                keys: vec![pinned.clone()],
                rotated_at: Vec::new(),
            });
        };
        let parse = |s: &str, seq: u64| {
            VerifierKey::parse(s)
                .map_err(|e| format!("the key rotation at event {seq} names a malformed key: {e}"))
        };
        let mut keys = vec![parse(&first.old_key, first.seq)?];
        let mut rotated_at = Vec::new();
        for r in rotations {
            let old = parse(&r.old_key, r.seq)?;
            if keys.last() != Some(&old) {
                return Err(format!(
                    "the key rotation at event {} retires {}, which is not the key in force",
                    r.seq,
                    old.label()
                ));
            }
            keys.push(parse(&r.new_key, r.seq)?);
            rotated_at.push(r.seq);
        }
        if !keys.contains(pinned) {
            return Err(format!(
                "the pinned key {} is none of this log's signing keys ({}); pin the log's first key, or one its rotations name",
                pinned.label(),
                keys.iter().map(VerifierKey::label).collect::<Vec<_>>().join(" -> ")
            ));
        }
        Ok(KeySchedule { keys, rotated_at })
    }

    /// The key that must sign the checkpoint following one of size
    /// `previous_size` (0 for the first): the key brought in by the last
    /// rotation that an earlier checkpoint covers.
    pub fn key_after(&self, previous_size: u64) -> &VerifierKey {
        let rotated = self
            .rotated_at
            .iter()
            .filter(|seq| **seq < previous_size)
            .count();
        &self.keys[rotated]
    }

    /// Every key of the chain, first to last.
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    /// Whether the log rotated its key.
    pub fn rotated(&self) -> bool {
        !self.rotated_at.is_empty()
    }
}
