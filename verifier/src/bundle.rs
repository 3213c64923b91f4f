//! The evidence bundle encoding (specification section 8.1 to 8.3): one
//! canonical CBOR item holding selected event records, their inclusion
//! proofs, one signed checkpoint and optional consistency proofs.
//!
//! This module only reads the structure; [`crate::bundle_verify`] judges it.
//! Strings and byte strings are borrowed from the file's bytes.

use thiserror::Error;

use crate::cbor::{self, CborError, Cursor};

/// The value of the bundle's `format` field that this verifier reads.
pub const FORMAT: &str = "gatehouse-bundle-v1";

/// The bytes every bundle of this format starts with: a map of eight
/// entries, key 0, and the text string [`FORMAT`].
pub const HEADER: &[u8] = b"\xa8\x00\x73gatehouse-bundle-v1";

/// Whether a file starting with `prefix` is meant to be an evidence bundle
/// (rather than a ledger).
pub fn is_bundle(prefix: &[u8]) -> bool {
    prefix.starts_with(HEADER)
}

/// A parsed bundle, borrowing from the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// `<key name>+<key id>` of the key the exporter says signed the
    /// checkpoint.
    pub key: &'a str,
    /// The signed checkpoint note every inclusion proof leads to.
    pub checkpoint: &'a str,
    /// What the bundle claims to hold.
    pub selection: Selection<'a>,
    /// The disclosed events, in the order they appear.
    pub events: Vec<Entry<'a>>,
    /// For a time range proven complete: the event just before the range.
    pub before: Option<Entry<'a>>,
    /// For a time range proven complete: the event just after the range.
    pub after: Option<Entry<'a>>,
    /// Consistency proofs from earlier checkpoints, in the order they appear.
    pub consistency: Vec<Consistency<'a>>,
}

/// Which events a bundle claims to hold (section 8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Every event of one session.
    Session(u64),
    /// Every event concerning one identity.
    Identity(&'a str),
    /// Every event with `from <= ts < to`, Unix nanoseconds.
    TimeRange {
        /// Start, inclusive.
        from: u64,
        /// End, exclusive.
        to: u64,
    },
}

/// One disclosed event: its sequence number, record and inclusion proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The sequence number the entry claims (the leaf index).
    pub seq: u64,
    /// The record's bytes: the leaf data.
    pub record: &'a [u8],
    /// The inclusion proof, 32-byte hashes concatenated.
    pub proof: &'a [u8],
}

/// A consistency proof from an earlier checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consistency<'a> {
    /// The earlier checkpoint's signed note.
    pub note: &'a str,
    /// The proof from its size to the bundle checkpoint's, 32-byte hashes
    /// concatenated.
    pub proof: &'a [u8],
}

/// Why bytes are not a well-formed bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// Not canonical CBOR, or not the structure of section 8.1.
    #[error("{0}")]
    Cbor(#[from] CborError),
    /// The `format` field names another format.
    #[error("the bundle's format is {0:?}; this verifier reads {FORMAT:?}")]
    Version(String),
    /// The selection is not one of the three allowed shapes.
    #[error("the selection must name exactly one of: a session, an identity, or a time range (from and to)")]
    Selection,
}

/// Parses a bundle file: the whole input must be one canonical CBOR item
/// (section 3) with exactly the structure of section 8.1.
pub fn parse(bytes: &[u8]) -> Result<Bundle<'_>, FormatError> {
    cbor::check_item(bytes)?;
    let mut c = Cursor::new(bytes);
    let top = c.offset();
    if c.map()? != 8 {
        return Err(wrong(top, "a map of 8 entries (format, key, checkpoint, selection, events, before, after, consistency)"));
    }
    c.key(0)?;
    let format = c.text()?;
    if format != FORMAT {
        return Err(FormatError::Version(format.to_owned()));
    }
    c.key(1)?;
    let key = c.text()?;
    c.key(2)?;
    let checkpoint = c.text()?;
    c.key(3)?;
    let selection = selection(&mut c)?;
    c.key(4)?;
    let count = c.array()?;
    let mut events = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        events.push(entry(&mut c)?);
    }
    c.key(5)?;
    let before = optional_entry(&mut c)?;
    c.key(6)?;
    let after = optional_entry(&mut c)?;
    c.key(7)?;
    let count = c.array()?;
    let mut consistency = Vec::with_capacity(count.min(1 << 10) as usize);
    for _ in 0..count {
        let at = c.offset();
        if c.map()? != 2 {
            return Err(wrong(at, "a consistency map of 2 entries (note, proof)"));
        }
        c.key(0)?;
        let note = c.text()?;
        c.key(1)?;
        let proof = c.bytes()?;
        consistency.push(Consistency { note, proof });
    }
    // `check_item` accepted exactly one item, and it has been read whole.
    debug_assert!(c.at_end());
    Ok(Bundle {
        key,
        checkpoint,
        selection,
        events,
        before,
        after,
        consistency,
    })
}

fn wrong(offset: usize, expected: &'static str) -> FormatError {
    FormatError::Cbor(CborError::WrongType { offset, expected })
}

fn entry<'a>(c: &mut Cursor<'a>) -> Result<Entry<'a>, FormatError> {
    let at = c.offset();
    if c.map()? != 3 {
        return Err(wrong(at, "an event map of 3 entries (seq, record, proof)"));
    }
    c.key(0)?;
    let seq = c.uint()?;
    c.key(1)?;
    let record = c.bytes()?;
    c.key(2)?;
    let proof = c.bytes()?;
    Ok(Entry { seq, record, proof })
}

fn optional_entry<'a>(c: &mut Cursor<'a>) -> Result<Option<Entry<'a>>, FormatError> {
    if c.null() {
        Ok(None)
    } else {
        entry(c).map(Some)
    }
}

fn selection<'a>(c: &mut Cursor<'a>) -> Result<Selection<'a>, FormatError> {
    let at = c.offset();
    if c.map()? != 4 {
        return Err(wrong(
            at,
            "a selection map of 4 entries (session, identity, from, to)",
        ));
    }
    c.key(0)?;
    let session = if c.null() { None } else { Some(c.uint()?) };
    c.key(1)?;
    let identity = if c.null() { None } else { Some(c.text()?) };
    c.key(2)?;
    let from = if c.null() { None } else { Some(c.uint()?) };
    c.key(3)?;
    let to = if c.null() { None } else { Some(c.uint()?) };
    match (session, identity, from, to) {
        (Some(s), None, None, None) => Ok(Selection::Session(s)),
        (None, Some(i), None, None) => Ok(Selection::Identity(i)),
        (None, None, Some(from), Some(to)) => Ok(Selection::TimeRange { from, to }),
        _ => Err(FormatError::Selection),
    }
}

/// The body keys of the fields naming the session and the identity an
/// event concerns, for each event kind (section 8.3). Kinds this verifier
/// does not know concern no session and no identity.
pub fn subject_keys(kind: u64) -> (Option<u64>, Option<u64>) {
    match kind {
        1 | 2 | 4 | 5 | 6 | 7 | 18 | 25 | 30 => (Some(0), Some(1)),
        8 | 11 => (Some(1), Some(2)),
        9 | 10 => (Some(3), Some(4)),
        3 | 12..=14 | 23 => (None, Some(0)),
        15 | 16 => (None, Some(1)),
        _ => (None, None),
    }
}

/// The session and identity an event record concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subject<'a> {
    /// The session, if the kind has a session field.
    pub session: Option<u64>,
    /// The identity, if the kind has an identity field.
    pub identity: Option<&'a str>,
}

/// Reads the subject of a record that [`cbor::check_record`] accepted,
/// using [`subject_keys`]. Fails if a subject field has the wrong type.
pub fn subject(record: &[u8]) -> Result<Subject<'_>, CborError> {
    let mut c = Cursor::new(record);
    c.map()?;
    c.key(0)?;
    c.uint()?;
    c.key(1)?;
    c.uint()?;
    c.key(2)?;
    let kind = c.uint()?;
    c.key(3)?;
    let (session_key, identity_key) = subject_keys(kind);
    let mut subject = Subject::default();
    for _ in 0..c.map()? {
        let key = c.uint()?;
        if Some(key) == session_key {
            subject.session = Some(c.uint()?);
        } else if Some(key) == identity_key {
            subject.identity = Some(c.text()?);
        } else {
            c.skip()?;
        }
    }
    Ok(subject)
}

/// Kind of a statement's shape (section 7.2).
pub const STATEMENT_SHAPE: u64 = 29;

/// Kind of a statement recorded as its literals and a reference to its shape.
pub const SHAPED_STATEMENT: u64 = 30;

/// Bytes of the shape digest a [`SHAPED_STATEMENT`] carries.
pub const SHAPE_DIGEST_LEN: usize = 16;

/// A record's kind and its body's bytes, for a record that
/// [`cbor::check_record`] accepted.
pub fn kind_and_body(record: &[u8]) -> Result<(u64, &[u8]), CborError> {
    let mut c = Cursor::new(record);
    c.map()?;
    c.key(0)?;
    c.uint()?;
    c.key(1)?;
    c.uint()?;
    c.key(2)?;
    let kind = c.uint()?;
    c.key(3)?;
    Ok((kind, &record[c.offset()..]))
}

/// The shape a [`SHAPED_STATEMENT`] record refers to: its sequence number
/// (key 8) and digest (key 9). `None` for records of other kinds.
pub fn shape_reference(record: &[u8]) -> Result<Option<(u64, &[u8])>, CborError> {
    let (kind, body) = kind_and_body(record)?;
    if kind != SHAPED_STATEMENT {
        return Ok(None);
    }
    let mut c = Cursor::new(body);
    let (mut seq, mut digest) = (None, None);
    for _ in 0..c.map()? {
        match c.uint()? {
            8 => seq = Some(c.uint()?),
            9 => digest = Some(c.bytes()?),
            _ => c.skip()?,
        }
    }
    Ok(seq.zip(digest))
}

/// The digest a [`SHAPED_STATEMENT`] carries of a shape whose body
/// encoding is `body`: BLAKE3's first 16 bytes.
pub fn shape_digest(body: &[u8]) -> [u8; SHAPE_DIGEST_LEN] {
    let mut out = [0; SHAPE_DIGEST_LEN];
    out.copy_from_slice(&blake3::hash(body).as_bytes()[..SHAPE_DIGEST_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_the_encoding_of_the_first_entry() {
        assert_eq!(HEADER[2], 0x60 + FORMAT.len() as u8);
        assert_eq!(&HEADER[3..], FORMAT.as_bytes());
        assert!(is_bundle(HEADER));
        assert!(!is_bundle(b"SQLite format 3\0"));
    }

    #[test]
    fn subject_reads_the_listed_fields() {
        // Kind 9 (ApprovalGranted): {0: approval, 1: operator, 2: grant_until,
        // 3: session, 4: identity}.
        let mut r = vec![0xa4, 0x00, 0x05, 0x01, 0x01, 0x02, 0x09, 0x03, 0xa5];
        r.extend_from_slice(&[0x00, 0x01, 0x01, 0x61, b'c', 0x02, 0xf6]);
        r.extend_from_slice(&[0x03, 0x18, 0x2a, 0x04, 0x62, b'a', b'7']);
        cbor::check_record(&r).unwrap();
        assert_eq!(
            subject(&r),
            Ok(Subject {
                session: Some(42),
                identity: Some("a7")
            })
        );
    }
}
