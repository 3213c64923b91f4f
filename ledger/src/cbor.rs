//! Canonical CBOR for ledger records (docs/ledger-format.md, section 3).
//!
//! Records are fixed structs encoded as maps with small unsigned integer keys
//! in increasing order, every field present, with ciborium's low-level
//! encoder (which always writes the shortest form). Decoding is strict: keys
//! must be exactly the struct's, in order, so a decoded value re-encodes to the
//! same bytes and [`decode_canonical`] can reject anything else by comparing.

use std::collections::{BTreeMap, BTreeSet};

use ciborium_ll::{Decoder, Encoder, Header};
use thiserror::Error;

/// Why bytes could not be decoded as a ledger value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not well-formed CBOR, or end early.
    #[error("malformed CBOR at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset where decoding failed.
        offset: usize,
        /// What was wrong there.
        reason: String,
    },
    /// Well-formed CBOR, but not the shape this type requires.
    #[error("unexpected CBOR at byte {offset}: expected {expected}")]
    Unexpected {
        /// Byte offset of the offending item.
        offset: usize,
        /// What the decoder wanted instead.
        expected: &'static str,
    },
    /// The value decoded, but its canonical encoding differs from the input.
    #[error("bytes are not the canonical encoding of the value they decode to")]
    NotCanonical,
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Appends canonical CBOR to a buffer.
#[derive(Debug, Default)]
pub struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    /// An encoder writing into `buf` (appending to what it holds).
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Enc { buf }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn push(&mut self, header: Header) {
        // Writing to a Vec cannot fail.
        let _ = Encoder::from(&mut self.buf).push(header);
    }

    /// A map head of `len` entries.
    pub fn map(&mut self, len: usize) {
        self.push(Header::Map(Some(len)));
    }

    /// An array head of `len` items.
    pub fn array(&mut self, len: usize) {
        self.push(Header::Array(Some(len)));
    }

    /// An unsigned integer.
    pub fn uint(&mut self, value: u64) {
        self.push(Header::Positive(value));
    }

    /// A signed integer.
    pub fn int(&mut self, value: i64) {
        if value >= 0 {
            self.push(Header::Positive(value as u64));
        } else {
            self.push(Header::Negative(!(value as u64)));
        }
    }

    /// A byte string.
    pub fn bytes(&mut self, value: &[u8]) {
        self.push(Header::Bytes(Some(value.len())));
        self.buf.extend_from_slice(value);
    }

    /// A text string.
    pub fn text(&mut self, value: &str) {
        self.push(Header::Text(Some(value.len())));
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// `true` or `false`.
    pub fn bool(&mut self, value: bool) {
        self.buf.push(if value { 0xf5 } else { 0xf4 });
    }

    /// `null`.
    pub fn null(&mut self) {
        self.buf.push(0xf6);
    }

    /// Already-encoded canonical bytes, appended verbatim.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads CBOR from a byte slice, one item at a time.
pub struct Dec<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    /// A decoder over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Dec { input, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        let left = self.input.len() - self.pos;
        if left == 0 {
            Ok(())
        } else {
            Err(DecodeError::Trailing(left))
        }
    }

    /// Reads the next item head without consuming it; returns it and its size.
    fn peek(&self) -> Result<(Header, usize), DecodeError> {
        let mut inner = Decoder::from(&self.input[self.pos..]);
        let header = inner.pull().map_err(|e| DecodeError::Malformed {
            offset: self.pos,
            reason: match e {
                ciborium_ll::Error::Io(_) => "unexpected end of input".into(),
                ciborium_ll::Error::Syntax(_) => "invalid item head".into(),
            },
        })?;
        Ok((header, inner.offset()))
    }

    fn pull(&mut self) -> Result<Header, DecodeError> {
        let (header, len) = self.peek()?;
        self.pos += len;
        Ok(header)
    }

    fn unexpected<T>(&self, expected: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError::Unexpected {
            offset: self.offset(),
            expected,
        })
    }

    /// Whether the next item is `null`; consumes it if so.
    pub fn null(&mut self) -> Result<bool, DecodeError> {
        let (header, len) = self.peek()?;
        if header == Header::Simple(22) {
            self.pos += len;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// A definite-length map head; returns its entry count.
    pub fn map(&mut self) -> Result<usize, DecodeError> {
        match self.pull()? {
            Header::Map(Some(n)) => Ok(n),
            _ => self.unexpected("a definite-length map"),
        }
    }

    /// A definite-length array head; returns its length.
    pub fn array(&mut self) -> Result<usize, DecodeError> {
        match self.pull()? {
            Header::Array(Some(n)) => Ok(n),
            _ => self.unexpected("a definite-length array"),
        }
    }

    /// The map key `expected`, and nothing else.
    pub fn key(&mut self, expected: u64) -> Result<(), DecodeError> {
        match self.pull()? {
            Header::Positive(k) if k == expected => Ok(()),
            _ => self.unexpected("the next field key of this record"),
        }
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        match self.pull()? {
            Header::Positive(v) => Ok(v),
            _ => self.unexpected("an unsigned integer"),
        }
    }

    /// A signed integer that fits in `i64`.
    pub fn int(&mut self) -> Result<i64, DecodeError> {
        match self.pull()? {
            Header::Positive(v) if v <= i64::MAX as u64 => Ok(v as i64),
            Header::Negative(v) if v <= i64::MAX as u64 => Ok(!(v as i64)),
            _ => self.unexpected("an integer in the range of i64"),
        }
    }

    /// A boolean.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.pull()? {
            Header::Simple(20) => Ok(false),
            Header::Simple(21) => Ok(true),
            _ => self.unexpected("a boolean"),
        }
    }

    fn definite(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or(DecodeError::Malformed {
                offset: start,
                reason: format!("string of {len} bytes runs past the end"),
            })?;
        self.pos = end;
        Ok(&self.input[start..end])
    }

    /// A definite-length byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        match self.pull()? {
            Header::Bytes(Some(len)) => self.definite(len),
            _ => self.unexpected("a definite-length byte string"),
        }
    }

    /// A definite-length UTF-8 text string, borrowed from the input.
    pub fn text(&mut self) -> Result<&'a str, DecodeError> {
        match self.pull()? {
            Header::Text(Some(len)) => {
                let offset = self.offset();
                let raw = self.definite(len)?;
                std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed {
                    offset,
                    reason: "text string is not valid UTF-8".into(),
                })
            }
            _ => self.unexpected("a definite-length text string"),
        }
    }
}

/// A value with one canonical CBOR encoding.
pub trait Cbor: Sized {
    /// Appends the canonical encoding of `self`.
    fn encode(&self, enc: &mut Enc);
    /// Reads one value; strict about shape, so the result re-encodes to the input.
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError>;
}

/// Encodes a value to a fresh buffer.
pub fn to_vec<T: Cbor>(value: &T) -> Vec<u8> {
    let mut enc = Enc::default();
    value.encode(&mut enc);
    enc.into_bytes()
}

/// Decodes exactly one value occupying all of `bytes`, and rejects bytes that
/// are not its canonical encoding.
pub fn decode_canonical<T: Cbor>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut dec = Dec::new(bytes);
    let value = T::decode(&mut dec)?;
    dec.finish()?;
    if to_vec(&value) != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(value)
}

impl Cbor for u64 {
    fn encode(&self, enc: &mut Enc) {
        enc.uint(*self);
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        dec.uint()
    }
}

impl Cbor for u32 {
    fn encode(&self, enc: &mut Enc) {
        enc.uint(u64::from(*self));
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let v = dec.uint()?;
        u32::try_from(v).or_else(|_| dec.unexpected("an unsigned integer below 2^32"))
    }
}

impl Cbor for u16 {
    fn encode(&self, enc: &mut Enc) {
        enc.uint(u64::from(*self));
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let v = dec.uint()?;
        u16::try_from(v).or_else(|_| dec.unexpected("an unsigned integer below 2^16"))
    }
}

impl Cbor for i64 {
    fn encode(&self, enc: &mut Enc) {
        enc.int(*self);
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        dec.int()
    }
}

impl Cbor for bool {
    fn encode(&self, enc: &mut Enc) {
        enc.bool(*self);
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        dec.bool()
    }
}

impl Cbor for String {
    fn encode(&self, enc: &mut Enc) {
        enc.text(self);
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        dec.text().map(str::to_owned)
    }
}

/// Byte strings. A plain `Vec<u8>` would encode as an array of integers, so
/// binary data is wrapped to get CBOR's byte-string type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl Cbor for Bytes {
    fn encode(&self, enc: &mut Enc) {
        enc.bytes(&self.0);
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        dec.bytes().map(|b| Bytes(b.to_vec()))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl<T: Cbor> Cbor for Option<T> {
    fn encode(&self, enc: &mut Enc) {
        match self {
            Some(v) => v.encode(enc),
            None => enc.null(),
        }
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        if dec.null()? {
            Ok(None)
        } else {
            T::decode(dec).map(Some)
        }
    }
}

impl<T: Cbor> Cbor for Vec<T> {
    fn encode(&self, enc: &mut Enc) {
        enc.array(self.len());
        for item in self {
            item.encode(enc);
        }
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let len = dec.array()?;
        // Do not trust the length for the allocation: it comes from the input.
        let mut out = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            out.push(T::decode(dec)?);
        }
        Ok(out)
    }
}

/// Ordered maps, as an array of `[key, value]` pairs in increasing key
/// order. Not a CBOR map: the order of a map's keys would be CBOR's
/// (shortest encoding first), not the key type's, and the ledger keeps maps
/// with arbitrary keys out of hashed data (section 3 of the format).
/// Decoding rejects keys out of order or repeated, so each map has one
/// encoding.
impl<K: Cbor + Ord, V: Cbor> Cbor for BTreeMap<K, V> {
    fn encode(&self, enc: &mut Enc) {
        enc.array(self.len());
        for (k, v) in self {
            enc.array(2);
            k.encode(enc);
            v.encode(enc);
        }
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let len = dec.array()?;
        let mut out = BTreeMap::new();
        for _ in 0..len {
            let offset = dec.offset();
            if dec.array()? != 2 {
                return Err(DecodeError::Unexpected {
                    offset,
                    expected: "a [key, value] pair",
                });
            }
            let offset = dec.offset();
            let k = K::decode(dec)?;
            if out.last_key_value().is_some_and(|(last, _)| *last >= k) {
                return Err(DecodeError::Unexpected {
                    offset,
                    expected: "map keys in strictly increasing order",
                });
            }
            let v = V::decode(dec)?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

/// Ordered sets, as an array in strictly increasing order.
impl<T: Cbor + Ord> Cbor for BTreeSet<T> {
    fn encode(&self, enc: &mut Enc) {
        enc.array(self.len());
        for item in self {
            item.encode(enc);
        }
    }
    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let len = dec.array()?;
        let mut out = BTreeSet::new();
        for _ in 0..len {
            let offset = dec.offset();
            let item = T::decode(dec)?;
            if out.last().is_some_and(|last| *last >= item) {
                return Err(DecodeError::Unexpected {
                    offset,
                    expected: "set items in strictly increasing order",
                });
            }
            out.insert(item);
        }
        Ok(out)
    }
}

/// Implements [`Cbor`] for an existing struct as a map with the given
/// integer keys, strictly increasing, one per field. The struct is rebuilt
/// with a struct literal, so a field missing from the list is a compile
/// error: a type cannot gain state that its encoding silently drops.
#[macro_export]
macro_rules! cbor_record {
    ($name:ident { $( $key:literal => $field:ident, )* }) => {
        impl $crate::cbor::Cbor for $name {
            fn encode(&self, enc: &mut $crate::cbor::Enc) {
                const KEYS: &[u64] = &[$($key),*];
                enc.map(KEYS.len());
                $(
                    enc.uint($key);
                    $crate::cbor::Cbor::encode(&self.$field, enc);
                )*
            }

            fn decode(dec: &mut $crate::cbor::Dec<'_>) -> Result<Self, $crate::cbor::DecodeError> {
                const KEYS: &[u64] = &[$($key),*];
                let offset = dec.offset();
                if dec.map()? != KEYS.len() {
                    return Err($crate::cbor::DecodeError::Unexpected {
                        offset,
                        expected: concat!("the field count of ", stringify!($name)),
                    });
                }
                $(
                    dec.key($key)?;
                    let $field = $crate::cbor::Cbor::decode(dec)?;
                )*
                Ok($name { $($field,)* })
            }
        }
    };
}

/// Defines a struct encoded as a CBOR map with the given integer keys, which
/// must be strictly increasing (checked by a test over every record type).
#[macro_export]
macro_rules! cbor_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $key:literal => $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// The map keys of this record, in encoding order.
            pub const KEYS: &'static [u64] = &[$($key),*];
            /// Each key with its field name and Rust type, for the format documentation.
            pub const FIELDS: &'static [(u64, &'static str, &'static str)] =
                &[$(($key, stringify!($field), stringify!($ty))),*];
        }

        impl $crate::cbor::Cbor for $name {
            fn encode(&self, enc: &mut $crate::cbor::Enc) {
                enc.map(Self::KEYS.len());
                $(
                    enc.uint($key);
                    $crate::cbor::Cbor::encode(&self.$field, enc);
                )*
            }

            fn decode(dec: &mut $crate::cbor::Dec<'_>) -> Result<Self, $crate::cbor::DecodeError> {
                let offset = dec.offset();
                if dec.map()? != Self::KEYS.len() {
                    return Err($crate::cbor::DecodeError::Unexpected {
                        offset,
                        expected: concat!("the field count of ", stringify!($name)),
                    });
                }
                $(
                    dec.key($key)?;
                    let $field = <$ty as $crate::cbor::Cbor>::decode(dec)?;
                )*
                Ok(Self { $($field,)* })
            }
        }
    };
}

/// Defines a fieldless enum encoded as an unsigned integer code.
#[macro_export]
macro_rules! cbor_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The integer stored in the ledger for this variant.
            pub fn code(self) -> u64 {
                match self { $($name::$variant => $code,)* }
            }

            /// The variant stored as `code`, if any.
            pub fn from_code(code: u64) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }
        }

        impl $crate::cbor::Cbor for $name {
            fn encode(&self, enc: &mut $crate::cbor::Enc) {
                enc.uint(self.code());
            }
            fn decode(dec: &mut $crate::cbor::Dec<'_>) -> Result<Self, $crate::cbor::DecodeError> {
                let offset = dec.offset();
                let code = dec.uint()?;
                $name::from_code(code).ok_or($crate::cbor::DecodeError::Unexpected {
                    offset,
                    expected: concat!("a known ", stringify!($name), " code"),
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    cbor_struct! {
        /// A test record.
        pub struct Sample {
            0 => a: u64,
            1 => b: Option<String>,
            2 => c: Vec<Bytes>,
            3 => d: i64,
            4 => e: bool,
        }
    }

    fn sample() -> Sample {
        Sample {
            a: 300,
            b: Some("hé".into()),
            c: vec![Bytes(vec![1, 2, 3])],
            d: -5,
            e: true,
        }
    }

    #[test]
    fn encodes_known_bytes() {
        let bytes = to_vec(&sample());
        let expected = [
            0xa5, 0x00, 0x19, 0x01, 0x2c, 0x01, 0x63, b'h', 0xc3, 0xa9, 0x02, 0x81, 0x43, 1, 2, 3,
            0x03, 0x24, 0x04, 0xf5,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(decode_canonical::<Sample>(&bytes).unwrap(), sample());
        assert_eq!(Sample::FIELDS[1], (1, "b", "Option<String>"));
    }

    #[test]
    fn rejects_non_shortest_integer() {
        // key 0 with value 300 as an 8-byte integer instead of 2 bytes.
        let mut bytes = to_vec(&sample());
        bytes.splice(2..5, [0x1b, 0, 0, 0, 0, 0, 0, 0x01, 0x2c]);
        assert_eq!(
            decode_canonical::<Sample>(&bytes),
            Err(DecodeError::NotCanonical)
        );
    }

    #[test]
    fn rejects_wrong_keys_and_trailing_bytes() {
        let mut bytes = to_vec(&sample());
        bytes[1] = 0x09;
        assert!(matches!(
            decode_canonical::<Sample>(&bytes),
            Err(DecodeError::Unexpected { .. })
        ));
        let mut bytes = to_vec(&sample());
        bytes.push(0);
        assert_eq!(
            decode_canonical::<Sample>(&bytes),
            Err(DecodeError::Trailing(1))
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = to_vec(&sample());
        for len in 0..bytes.len() {
            assert!(decode_canonical::<Sample>(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn ordered_maps_and_sets_have_one_encoding() {
        let map: BTreeMap<String, u64> = [("b".into(), 2), ("a".into(), 1)].into();
        let bytes = to_vec(&map);
        assert_eq!(
            bytes,
            [0x82, 0x82, 0x61, b'a', 0x01, 0x82, 0x61, b'b', 0x02]
        );
        assert_eq!(
            decode_canonical::<BTreeMap<String, u64>>(&bytes).unwrap(),
            map
        );
        // The same pairs out of order, or a key repeated, are refused.
        let swapped = [0x82, 0x82, 0x61, b'b', 0x02, 0x82, 0x61, b'a', 0x01];
        assert!(matches!(
            decode_canonical::<BTreeMap<String, u64>>(&swapped),
            Err(DecodeError::Unexpected { .. })
        ));
        let repeated = [0x82, 0x82, 0x61, b'a', 0x01, 0x82, 0x61, b'a', 0x02];
        assert!(decode_canonical::<BTreeMap<String, u64>>(&repeated).is_err());
        let set: BTreeSet<u64> = [3, 1].into();
        assert_eq!(to_vec(&set), [0x82, 0x01, 0x03]);
        assert!(decode_canonical::<BTreeSet<u64>>(&[0x82, 0x03, 0x01]).is_err());
    }
}
