//! The canonical CBOR subset (specification section 3) and the event record
//! envelope (section 2).
//!
//! Why a hand-written validator rather than a CBOR library: what the ledger
//! hashes is the stored bytes, so the only question that matters is "are
//! these bytes the *unique* encoding the format allows?". A general decoder
//! answers a different question (what value do the bytes mean) and is
//! typically lenient about exactly the things the format forbids
//! (non-shortest heads, indefinite lengths, unsorted keys). A validator that
//! accepts only the canonical subset and never builds a value is both
//! stricter and smaller, and it runs once per event, so it is also on the
//! hot path: it makes a single pass over the bytes and allocates nothing.

use thiserror::Error;

/// Deepest allowed nesting of arrays and maps. The record map is depth 1,
/// its body map depth 2, and so on; an array or map at depth 17 is rejected.
/// Scalars do not add a level.
pub const MAX_DEPTH: usize = 16;

/// The envelope fields of an event record (section 2), extracted while
/// validating so that the verifier never has to decode a record twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Key 0: the record's sequence number.
    pub seq: u64,
    /// Key 1: Unix time in nanoseconds, UTC.
    pub ts: u64,
    /// Key 2: the event kind.
    pub kind: u64,
}

/// Why bytes are not a canonical record. Every variant carries the byte
/// offset of the offending head so that an auditor can find it in a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CborError {
    /// The input ends inside an item.
    #[error("input ends inside the item starting at byte {offset}")]
    Truncated {
        /// Offset of the head of the unfinished item.
        offset: usize,
    },
    /// A head's argument is not in its shortest form.
    #[error("the head at byte {offset} does not use the shortest form of its argument")]
    NonShortest {
        /// Offset of the head.
        offset: usize,
    },
    /// Additional information 28, 29 or 30, which RFC 8949 reserves.
    #[error("the head at byte {offset} uses reserved additional information {info}")]
    Reserved {
        /// Offset of the head.
        offset: usize,
        /// The additional information value.
        info: u8,
    },
    /// An indefinite-length string, array or map.
    #[error("indefinite length at byte {offset}; only definite lengths are allowed")]
    Indefinite {
        /// Offset of the head.
        offset: usize,
    },
    /// A "break" stop code outside any indefinite-length item.
    #[error("unexpected break code at byte {offset}")]
    Break {
        /// Offset of the break byte.
        offset: usize,
    },
    /// A semantic tag (major type 6).
    #[error("tag at byte {offset}; tags are not allowed")]
    Tag {
        /// Offset of the tag head.
        offset: usize,
    },
    /// A floating-point number (major type 7, additional information 25-27).
    #[error("floating-point number at byte {offset}; floats are not allowed")]
    Float {
        /// Offset of the head.
        offset: usize,
    },
    /// A simple value other than `false`, `true` or `null` (this includes
    /// `undefined`, simple value 23).
    #[error("simple value {value} at byte {offset}; only false, true and null are allowed")]
    Simple {
        /// Offset of the head.
        offset: usize,
        /// The simple value.
        value: u8,
    },
    /// A text string that is not valid UTF-8.
    #[error("text string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the text string's head.
        offset: usize,
    },
    /// A map key that is not an unsigned integer.
    #[error("map key at byte {offset} is not an unsigned integer")]
    KeyNotUnsigned {
        /// Offset of the key's head.
        offset: usize,
    },
    /// A map key equal to the previous key.
    #[error("duplicate map key {key} at byte {offset}")]
    DuplicateKey {
        /// Offset of the key's head.
        offset: usize,
        /// The repeated key.
        key: u64,
    },
    /// A map key smaller than the previous key.
    #[error("map key {key} at byte {offset} is smaller than the key before it")]
    UnsortedKey {
        /// Offset of the key's head.
        offset: usize,
        /// The out-of-order key.
        key: u64,
    },
    /// An array or map nested deeper than [`MAX_DEPTH`].
    #[error("the container at byte {offset} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Offset of the container's head.
        offset: usize,
    },
    /// Bytes after the end of the single item.
    #[error("{count} trailing bytes after the item, starting at byte {offset}")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// How many bytes follow the item.
        count: usize,
    },
    /// The record is canonical CBOR but not a map.
    #[error("the record is not a map")]
    NotAMap,
    /// The record map does not have exactly four entries.
    #[error("the record map has {count} entries; it must have exactly 4 (seq, ts, kind, body)")]
    EntryCount {
        /// The number of entries found.
        count: u64,
    },
    /// A record key other than the expected one of 0, 1, 2, 3.
    #[error("record key at byte {offset} is {found}; expected key {expected}")]
    UnexpectedKey {
        /// Offset of the key's head.
        offset: usize,
        /// The key the envelope requires at this position.
        expected: u64,
        /// The key found.
        found: u64,
    },
    /// `seq`, `ts` or `kind` is not an unsigned integer.
    #[error("record field {field} at byte {offset} is not an unsigned integer")]
    FieldNotUnsigned {
        /// Offset of the value's head.
        offset: usize,
        /// Name of the field.
        field: &'static str,
    },
    /// The body (key 3) is not a map.
    #[error("record body at byte {offset} is not a map")]
    BodyNotMap {
        /// Offset of the body's head.
        offset: usize,
    },
    /// A [`Cursor`] found an item of another type than the structure being
    /// read requires.
    #[error("the item at byte {offset} is not {expected}")]
    WrongType {
        /// Offset of the item's head.
        offset: usize,
        /// What the structure requires there.
        expected: &'static str,
    },
}

/// Checks that `data` is exactly one event record in the canonical subset
/// (section 3) shaped as section 2 requires, and returns its envelope.
///
/// Validation and extraction happen in the same single pass, so a record is
/// never decoded twice and no allocation is made.
pub fn check_record(data: &[u8]) -> Result<Envelope, CborError> {
    let mut r = Reader {
        bytes: data,
        pos: 0,
    };
    let head = r.head()?;
    if head.major != MAJOR_MAP {
        // Report a broken head before a wrong type: a tag or float at the
        // top is both, and the more specific reason is more useful.
        r.check_scalar_head(&head)?;
        return Err(CborError::NotAMap);
    }
    let count = r.argument(&head)?;
    if count != 4 {
        return Err(CborError::EntryCount { count });
    }
    let seq = r.envelope_uint(0, None, "seq")?;
    let ts = r.envelope_uint(1, Some(0), "ts")?;
    let kind = r.envelope_uint(2, Some(1), "kind")?;
    r.envelope_key(3, Some(2))?;
    let body = r.head()?;
    if body.major != MAJOR_MAP {
        r.check_scalar_head(&body)?;
        return Err(CborError::BodyNotMap {
            offset: body.offset,
        });
    }
    let entries = r.argument(&body)?;
    r.map_entries(entries, 2, body.offset)?;
    r.finish()?;
    Ok(Envelope { seq, ts, kind })
}

/// A canonical event record's kind, and a cursor at its body (key 3);
/// `None` if it is not one.
pub fn record_body(record: &[u8]) -> Option<(u64, Cursor<'_>)> {
    check_record(record).ok()?;
    let mut c = Cursor::new(record);
    c.map().ok()?;
    c.key(0).ok()?;
    c.uint().ok()?;
    c.key(1).ok()?;
    c.uint().ok()?;
    c.key(2).ok()?;
    let kind = c.uint().ok()?;
    c.key(3).ok()?;
    Some((kind, c))
}

/// Checks that `data` is exactly one data item in the canonical subset, of
/// any type. Useful for verifying canonical CBOR that is not an event record
/// (for example, pieces of a future evidence bundle).
pub fn check_item(data: &[u8]) -> Result<(), CborError> {
    let mut r = Reader {
        bytes: data,
        pos: 0,
    };
    r.item(1)?;
    r.finish()
}

/// Reads a fixed structure out of canonical CBOR, one item at a time,
/// borrowing strings from the input.
///
/// Meant for bytes that [`check_item`] has already accepted, so it needs to
/// judge only the *shape* (which type comes where); it still reports, rather
/// than trusts, anything malformed it meets.
pub struct Cursor<'a> {
    reader: Reader<'a>,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor {
            reader: Reader { bytes, pos: 0 },
        }
    }

    /// Offset of the next item's head.
    pub fn offset(&self) -> usize {
        self.reader.pos
    }

    /// Whether every byte has been read.
    pub fn at_end(&self) -> bool {
        self.reader.pos == self.reader.bytes.len()
    }

    /// Reads a head of `major` type and returns its argument.
    fn expect(&mut self, major: u8, expected: &'static str) -> Result<u64, CborError> {
        let head = self.reader.head()?;
        if head.major != major {
            return Err(CborError::WrongType {
                offset: head.offset,
                expected,
            });
        }
        self.reader.argument(&head)
    }

    /// A map head; returns the number of entries.
    pub fn map(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_MAP, "a map")
    }

    /// An array head; returns the number of items.
    pub fn array(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_ARRAY, "an array")
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_UNSIGNED, "an unsigned integer")
    }

    /// The map key `key`, and nothing else.
    pub fn key(&mut self, key: u64) -> Result<(), CborError> {
        let offset = self.offset();
        match self.uint() {
            Ok(k) if k == key => Ok(()),
            _ => Err(CborError::WrongType {
                offset,
                expected: "the next key of this map",
            }),
        }
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let offset = self.offset();
        let len = self.expect(MAJOR_BYTES, "a byte string")?;
        self.reader.take(len, offset)
    }

    /// A UTF-8 text string.
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let offset = self.offset();
        let len = self.expect(MAJOR_TEXT, "a text string")?;
        let raw = self.reader.take(len, offset)?;
        std::str::from_utf8(raw).map_err(|_| CborError::InvalidUtf8 { offset })
    }

    /// Whether the next item is `null`; consumes it if it is.
    pub fn null(&mut self) -> bool {
        let is_null = self.reader.bytes.get(self.reader.pos) == Some(&0xf6);
        if is_null {
            self.reader.pos += 1;
        }
        is_null
    }

    /// Skips one whole item, validating it as [`check_item`] would (with
    /// nesting depth counted from this item).
    pub fn skip(&mut self) -> Result<(), CborError> {
        self.reader.item(1)
    }
}

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

const SIMPLE_FALSE: u8 = 20;
const SIMPLE_NULL: u8 = 22;

/// One decoded item head: the initial byte split into major type and
/// additional information, and the argument that follows it.
struct Head {
    major: u8,
    info: u8,
    /// The argument for additional information 0-27; 0 for 28-31.
    arg: u64,
    offset: usize,
}

/// A cursor over the input. Positions only move forward: one pass.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads one head, including its argument bytes. Does not judge it:
    /// what is allowed depends on the major type.
    #[inline]
    fn head(&mut self) -> Result<Head, CborError> {
        let offset = self.pos;
        let initial = *self
            .bytes
            .get(offset)
            .ok_or(CborError::Truncated { offset })?;
        self.pos += 1;
        let info = initial & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => self.big_endian(1, offset)?,
            25 => self.big_endian(2, offset)?,
            26 => self.big_endian(4, offset)?,
            27 => self.big_endian(8, offset)?,
            _ => 0,
        };
        Ok(Head {
            major: initial >> 5,
            info,
            arg,
            offset,
        })
    }

    #[inline]
    fn big_endian(&mut self, len: usize, offset: usize) -> Result<u64, CborError> {
        let bytes = self.take(len as u64, offset)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Takes `len` bytes of content belonging to the item at `offset`.
    #[inline]
    fn take(&mut self, len: u64, offset: usize) -> Result<&'a [u8], CborError> {
        let remaining = self.bytes.len() - self.pos;
        if len > remaining as u64 {
            return Err(CborError::Truncated { offset });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// The argument of an integer, length or count head, which must be
    /// definite and in shortest form.
    #[inline]
    fn argument(&self, head: &Head) -> Result<u64, CborError> {
        let offset = head.offset;
        let shortest = match head.info {
            0..=23 => true,
            24 => head.arg >= 24,
            25 => head.arg > 0xff,
            26 => head.arg > 0xffff,
            27 => head.arg > 0xffff_ffff,
            31 => return Err(CborError::Indefinite { offset }),
            info => return Err(CborError::Reserved { offset, info }),
        };
        if shortest {
            Ok(head.arg)
        } else {
            Err(CborError::NonShortest { offset })
        }
    }

    /// Judges a head whose item has no content to read (integers, tags and
    /// simple values), so that a record whose top level or body is one of
    /// these gets the most specific error.
    fn check_scalar_head(&self, head: &Head) -> Result<(), CborError> {
        match head.major {
            MAJOR_TAG => Err(CborError::Tag {
                offset: head.offset,
            }),
            MAJOR_SIMPLE => self.simple(head),
            _ => self.argument(head).map(drop),
        }
    }

    /// Major type 7: only `false`, `true` and `null`.
    fn simple(&self, head: &Head) -> Result<(), CborError> {
        let offset = head.offset;
        match head.info {
            SIMPLE_FALSE..=SIMPLE_NULL => Ok(()),
            0..=19 | 23 => Err(CborError::Simple {
                offset,
                value: head.info,
            }),
            // The one-byte simple value is in the argument.
            24 => Err(CborError::Simple {
                offset,
                value: head.arg as u8,
            }),
            25..=27 => Err(CborError::Float { offset }),
            31 => Err(CborError::Break { offset }),
            info => Err(CborError::Reserved { offset, info }),
        }
    }

    /// Validates one complete item. `depth` is the nesting level the item
    /// has if it is an array or a map.
    fn item(&mut self, depth: usize) -> Result<(), CborError> {
        let head = self.head()?;
        let offset = head.offset;
        match head.major {
            MAJOR_UNSIGNED | MAJOR_NEGATIVE => self.argument(&head).map(drop),
            MAJOR_BYTES => {
                let len = self.argument(&head)?;
                self.take(len, offset).map(drop)
            }
            MAJOR_TEXT => {
                let len = self.argument(&head)?;
                let text = self.take(len, offset)?;
                match std::str::from_utf8(text) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(CborError::InvalidUtf8 { offset }),
                }
            }
            MAJOR_ARRAY => {
                let count = self.argument(&head)?;
                Self::enter(depth, offset)?;
                for _ in 0..count {
                    self.item(depth + 1)?;
                }
                Ok(())
            }
            MAJOR_MAP => {
                let count = self.argument(&head)?;
                self.map_entries(count, depth, offset)
            }
            MAJOR_TAG => Err(CborError::Tag { offset }),
            _ => self.simple(&head),
        }
    }

    fn enter(depth: usize, offset: usize) -> Result<(), CborError> {
        if depth > MAX_DEPTH {
            Err(CborError::TooDeep { offset })
        } else {
            Ok(())
        }
    }

    /// The entries of a map at nesting level `depth` whose head has been
    /// read: unsigned integer keys in strictly increasing order.
    fn map_entries(&mut self, count: u64, depth: usize, offset: usize) -> Result<(), CborError> {
        Self::enter(depth, offset)?;
        let mut previous = None;
        for _ in 0..count {
            previous = Some(self.map_key(previous)?);
            self.item(depth + 1)?;
        }
        Ok(())
    }

    /// Reads one map key and checks that it is greater than `previous`.
    #[inline]
    fn map_key(&mut self, previous: Option<u64>) -> Result<u64, CborError> {
        let head = self.head()?;
        let offset = head.offset;
        if head.major != MAJOR_UNSIGNED {
            return Err(CborError::KeyNotUnsigned { offset });
        }
        let key = self.argument(&head)?;
        match previous {
            Some(p) if key == p => Err(CborError::DuplicateKey { offset, key }),
            Some(p) if key < p => Err(CborError::UnsortedKey { offset, key }),
            _ => Ok(key),
        }
    }

    /// Reads the record key that must be `expected`.
    #[inline]
    fn envelope_key(&mut self, expected: u64, previous: Option<u64>) -> Result<(), CborError> {
        let offset = self.pos;
        let found = self.map_key(previous)?;
        if found == expected {
            Ok(())
        } else {
            Err(CborError::UnexpectedKey {
                offset,
                expected,
                found,
            })
        }
    }

    /// Reads a record entry whose value must be an unsigned integer.
    #[inline]
    fn envelope_uint(
        &mut self,
        key: u64,
        previous: Option<u64>,
        field: &'static str,
    ) -> Result<u64, CborError> {
        self.envelope_key(key, previous)?;
        let head = self.head()?;
        if head.major != MAJOR_UNSIGNED {
            // Prefer "this is a tag / float / truncated" over "wrong type".
            if head.major != MAJOR_BYTES
                && head.major != MAJOR_TEXT
                && head.major != MAJOR_ARRAY
                && head.major != MAJOR_MAP
            {
                self.check_scalar_head(&head)?;
            } else {
                self.argument(&head)?;
            }
            return Err(CborError::FieldNotUnsigned {
                offset: head.offset,
                field,
            });
        }
        self.argument(&head)
    }

    /// Requires that the item just read was the last thing in the input.
    fn finish(&self) -> Result<(), CborError> {
        let count = self.bytes.len() - self.pos;
        if count == 0 {
            Ok(())
        } else {
            Err(CborError::TrailingBytes {
                offset: self.pos,
                count,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canonical record: {0: seq, 1: ts, 2: kind, 3: body}.
    fn record(seq: &[u8], ts: &[u8], kind: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xa4, 0x00];
        v.extend_from_slice(seq);
        v.push(0x01);
        v.extend_from_slice(ts);
        v.push(0x02);
        v.extend_from_slice(kind);
        v.push(0x03);
        v.extend_from_slice(body);
        v
    }

    /// A record whose body is a one-entry map {0: value}.
    fn with_value(value: &[u8]) -> Vec<u8> {
        let mut body = vec![0xa1, 0x00];
        body.extend_from_slice(value);
        record(&[0x05], &[0x1a, 0x00, 0x01, 0x00, 0x00], &[0x02], &body)
    }

    fn err(value: &[u8]) -> CborError {
        check_record(&with_value(value)).unwrap_err()
    }

    #[test]
    fn accepts_a_canonical_record_and_extracts_the_envelope() {
        let data = record(
            &[0x18, 0x2a],
            &[0x1b, 0x17, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
            &[0x03],
            &[0xa0],
        );
        assert_eq!(
            check_record(&data),
            Ok(Envelope {
                seq: 42,
                ts: 0x1700_0000_0000_0001,
                kind: 3
            })
        );
    }

    #[test]
    fn accepts_every_allowed_type_in_the_body() {
        let values: &[&[u8]] = &[
            &[0x00],
            &[0x17],
            &[0x18, 0x18],
            &[0x18, 0xff],
            &[0x19, 0x01, 0x00],
            &[0x1a, 0x00, 0x01, 0x00, 0x00],
            &[0x1b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
            &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x20],
            &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x40],
            &[0x43, 1, 2, 3],
            &[0x60],
            &[0x63, b'a', b'b', b'c'],
            &[0x62, 0xc3, 0xa9],
            &[0x80],
            &[0x82, 0x01, 0x61, b'x'],
            &[0xa0],
            &[
                0xa2, 0x00, 0xf6, 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf5,
            ],
            &[0xf4],
            &[0xf5],
            &[0xf6],
        ];
        for value in values {
            assert_eq!(
                check_record(&with_value(value)).map(|_| ()),
                Ok(()),
                "{value:02x?}"
            );
        }
    }

    #[test]
    fn rejects_non_shortest_integers() {
        for value in [
            &[0x18, 0x17][..],
            &[0x19, 0x00, 0xff],
            &[0x1a, 0x00, 0x00, 0xff, 0xff],
            &[0x1b, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff],
            &[0x38, 0x00],
            &[0x39, 0x00, 0x10],
        ] {
            assert!(
                matches!(err(value), CborError::NonShortest { .. }),
                "{value:02x?}"
            );
        }
    }

    #[test]
    fn rejects_non_shortest_lengths_and_counts() {
        for value in [
            &[0x58, 0x01, 0xaa][..],
            &[0x78, 0x01, b'a'],
            &[0x98, 0x01, 0x00],
            &[0xb8, 0x00],
            &[0x59, 0x00, 0x00],
        ] {
            assert!(
                matches!(err(value), CborError::NonShortest { .. }),
                "{value:02x?}"
            );
        }
    }

    #[test]
    fn rejects_non_shortest_envelope_fields_and_keys() {
        let data = record(&[0x18, 0x05], &[0x00], &[0x00], &[0xa0]);
        assert_eq!(
            check_record(&data),
            Err(CborError::NonShortest { offset: 2 })
        );
        let mut data = record(&[0x05], &[0x00], &[0x00], &[0xa0]);
        data[0] = 0xb8;
        data.insert(1, 0x04);
        assert_eq!(
            check_record(&data),
            Err(CborError::NonShortest { offset: 0 })
        );
        // Body key 1 written in two bytes.
        assert!(matches!(
            check_record(&record(&[0], &[0], &[0], &[0xa1, 0x18, 0x01, 0x00])),
            Err(CborError::NonShortest { .. })
        ));
    }

    #[test]
    fn rejects_indefinite_lengths() {
        for value in [
            &[0x5f, 0x41, 0x00, 0xff][..],
            &[0x7f, 0x61, b'a', 0xff],
            &[0x9f, 0xff],
            &[0xbf, 0xff],
        ] {
            assert!(
                matches!(err(value), CborError::Indefinite { .. }),
                "{value:02x?}"
            );
        }
        assert!(matches!(err(&[0xff]), CborError::Break { .. }));
    }

    #[test]
    fn rejects_reserved_additional_information() {
        for info in 28..=30u8 {
            assert!(matches!(err(&[info]), CborError::Reserved { .. }));
            assert!(matches!(err(&[0x40 | info]), CborError::Reserved { .. }));
            assert!(matches!(err(&[0xe0 | info]), CborError::Reserved { .. }));
        }
    }

    #[test]
    fn rejects_tags() {
        assert!(matches!(err(&[0xc0, 0x60]), CborError::Tag { .. }));
        assert!(matches!(err(&[0xc1, 0x00]), CborError::Tag { .. }));
        assert!(matches!(
            err(&[0xd8, 0x18, 0x41, 0x00]),
            CborError::Tag { .. }
        ));
        // Even a self-described CBOR tag at the top level.
        let mut data = vec![0xd9, 0xd9, 0xf7];
        data.extend(with_value(&[0x00]));
        assert_eq!(check_record(&data), Err(CborError::Tag { offset: 0 }));
    }

    #[test]
    fn rejects_floats() {
        for value in [
            &[0xf9, 0x00, 0x00][..],
            &[0xf9, 0x7e, 0x00],
            &[0xfa, 0x3f, 0x80, 0x00, 0x00],
            &[0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(
                matches!(err(value), CborError::Float { .. }),
                "{value:02x?}"
            );
        }
    }

    #[test]
    fn rejects_undefined_and_other_simple_values() {
        assert!(matches!(err(&[0xf7]), CborError::Simple { value: 23, .. }));
        assert!(matches!(err(&[0xe0]), CborError::Simple { value: 0, .. }));
        assert!(matches!(err(&[0xf3]), CborError::Simple { value: 19, .. }));
        assert!(matches!(
            err(&[0xf8, 0x20]),
            CborError::Simple { value: 32, .. }
        ));
        assert!(matches!(
            err(&[0xf8, 0xff]),
            CborError::Simple { value: 255, .. }
        ));
    }

    #[test]
    fn rejects_unsorted_duplicate_and_non_integer_map_keys() {
        assert!(matches!(
            err(&[0xa2, 0x01, 0x00, 0x00, 0x00]),
            CborError::UnsortedKey { key: 0, .. }
        ));
        assert!(matches!(
            err(&[0xa2, 0x01, 0x00, 0x01, 0x00]),
            CborError::DuplicateKey { key: 1, .. }
        ));
        assert!(matches!(
            err(&[0xa1, 0x61, b'a', 0x00]),
            CborError::KeyNotUnsigned { .. }
        ));
        assert!(matches!(
            err(&[0xa1, 0x20, 0x00]),
            CborError::KeyNotUnsigned { .. }
        ));
        assert!(matches!(
            err(&[0xa1, 0xf6, 0x00]),
            CborError::KeyNotUnsigned { .. }
        ));
        // 24 must sort after 23 although both are "small" in value order.
        assert!(check_record(&with_value(&[0xa2, 0x17, 0x00, 0x18, 0x18, 0x00])).is_ok());
        assert!(matches!(
            err(&[0xa2, 0x18, 0x18, 0x00, 0x17, 0x00]),
            CborError::UnsortedKey { key: 23, .. }
        ));
        // Unsorted keys in the record itself.
        let data = [0xa4, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xa0];
        assert!(matches!(
            check_record(&data),
            Err(CborError::UnsortedKey { key: 0, .. })
        ));
    }

    #[test]
    fn rejects_invalid_utf8() {
        for value in [
            &[0x61, 0xff][..],
            &[0x61, 0x80],
            &[0x62, 0xc3, 0x28],
            &[0x63, 0xed, 0xa0, 0x80],       // UTF-16 surrogate
            &[0x62, 0xc0, 0x80],             // overlong NUL
            &[0x64, 0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
        ] {
            assert!(
                matches!(err(value), CborError::InvalidUtf8 { .. }),
                "{value:02x?}"
            );
        }
        // A byte string may hold anything.
        assert!(check_record(&with_value(&[0x41, 0xff])).is_ok());
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut data = with_value(&[0x00]);
        let len = data.len();
        data.push(0x00);
        assert_eq!(
            check_record(&data),
            Err(CborError::TrailingBytes {
                offset: len,
                count: 1
            })
        );
        assert_eq!(
            check_item(&[0x00, 0x00]),
            Err(CborError::TrailingBytes {
                offset: 1,
                count: 1
            })
        );
    }

    #[test]
    fn rejects_every_truncation() {
        let data = with_value(&[0x82, 0x63, b'a', b'b', b'c', 0x19, 0x01, 0x00]);
        assert!(check_record(&data).is_ok());
        for len in 0..data.len() {
            assert!(
                matches!(check_record(&data[..len]), Err(CborError::Truncated { .. })),
                "prefix of {len} bytes"
            );
        }
        // A length far beyond the input is reported, not allocated or looped.
        assert!(matches!(
            err(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            CborError::Truncated { .. }
        ));
        assert!(matches!(
            err(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            CborError::Truncated { .. }
        ));
    }

    /// `levels` nested one-element arrays around a 0.
    fn nested(levels: usize) -> Vec<u8> {
        let mut v = vec![0x81; levels];
        v.push(0x00);
        v
    }

    #[test]
    fn enforces_the_depth_limit() {
        // Record map is depth 1 and the body map depth 2, so the body can
        // hold 14 further levels of containers and no more.
        assert!(check_record(&with_value(&nested(14))).is_ok());
        assert_eq!(
            check_record(&with_value(&nested(15))).unwrap_err(),
            // 12 bytes of envelope, 2 of body map head and key, then the
            // 15th array is at depth 17.
            CborError::TooDeep {
                offset: 12 + 2 + 14
            }
        );
        assert!(check_item(&nested(16)).is_ok());
        assert!(matches!(
            check_item(&nested(17)),
            Err(CborError::TooDeep { offset: 16 })
        ));
        // Nested maps count the same way.
        let mut maps = Vec::new();
        for _ in 0..17 {
            maps.extend_from_slice(&[0xa1, 0x00]);
        }
        maps.push(0x00);
        assert!(matches!(check_item(&maps), Err(CborError::TooDeep { .. })));
        assert!(check_item(&maps[2..]).is_ok());
    }

    #[test]
    fn checks_the_envelope_shape() {
        assert_eq!(check_record(&[0x80]), Err(CborError::NotAMap));
        assert_eq!(check_record(&[0x00]), Err(CborError::NotAMap));
        assert_eq!(
            check_record(&[0xf9, 0, 0]),
            Err(CborError::Float { offset: 0 })
        );
        assert_eq!(check_record(&[]), Err(CborError::Truncated { offset: 0 }));
        assert_eq!(
            check_record(&[0xa3, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00]),
            Err(CborError::EntryCount { count: 3 })
        );
        assert_eq!(
            check_record(&[0xa5]),
            Err(CborError::EntryCount { count: 5 })
        );
        // Key 3 missing, key 4 in its place.
        let data = [0xa4, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x04, 0xa0];
        assert_eq!(
            check_record(&data),
            Err(CborError::UnexpectedKey {
                offset: 7,
                expected: 3,
                found: 4
            })
        );
        // ts is a negative integer, a text string, null.
        for ts in [&[0x20][..], &[0x61, b'1'], &[0xf6]] {
            let data = record(&[0x00], ts, &[0x00], &[0xa0]);
            assert_eq!(
                check_record(&data),
                Err(CborError::FieldNotUnsigned {
                    offset: 4,
                    field: "ts"
                })
            );
        }
        // Body is an array.
        assert_eq!(
            check_record(&record(&[0x00], &[0x00], &[0x00], &[0x80])),
            Err(CborError::BodyNotMap { offset: 8 })
        );
        // Body is a tagged map.
        assert_eq!(
            check_record(&record(&[0x00], &[0x00], &[0x00], &[0xc0, 0xa0])),
            Err(CborError::Tag { offset: 8 })
        );
    }
}
