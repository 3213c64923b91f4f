//! Masking one value so that the client still decodes it as the column's
//! type.
//!
//! A driver that asked for an `int4` in binary format fails on anything but
//! four bytes; one that reads `uuid` text fails on anything but 36 hex
//! characters with dashes. So every strategy is defined per type family and
//! wire format, and falls back to SQL NULL (always decodable) where a type
//! has no sensible placeholder. Strings are the types masking is usually
//! about: they get the full range of strategies.

use std::borrow::Cow;
use std::fmt;

/// How the values of one column are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A fixed placeholder of the column's type (`[redacted]` for strings,
    /// zero for numbers, the nil UUID, empty bytea, JSON `null`), or NULL
    /// where the type has none.
    Redact,
    /// Strings keep their last `keep` characters, never more than half of
    /// the value; every other character becomes `*`. Other types: redacted.
    Partial {
        /// Characters kept at the end.
        keep: u16,
    },
    /// Strings that look like an email address keep the domain
    /// (`***@example.com`); other strings and types are redacted.
    Email,
    /// A keyed BLAKE3 pseudonym: equal values give equal pseudonyms, in every
    /// query and every column, so joins and group-bys over masked values
    /// still work, but without the key nobody can tell the value.
    Hash,
    /// SQL NULL.
    Null,
    /// Free text: the value is kept, and the sensitive values the content
    /// detectors find in it (the rule's `detectors`, or all of them when it
    /// lists none) are masked in place. Types that are not text or JSON are
    /// redacted.
    Detect,
}

/// Characters `partial` keeps when the policy does not say.
pub const DEFAULT_KEEP: u16 = 4;

/// The placeholder that replaces a redacted string.
pub const REDACTED: &str = "[redacted]";

impl Strategy {
    /// The name policy files and `MaskApplied` events use.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Partial { .. } => "partial",
            Strategy::Email => "email",
            Strategy::Hash => "hash",
            Strategy::Null => "null",
            Strategy::Detect => "detect",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Partial { keep } => write!(f, "partial({keep})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The secret behind [`Strategy::Hash`]: whoever holds it can test guesses,
/// so it lives in the gateway's configuration and never in the ledger.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey([u8; 32]);

impl HashKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> HashKey {
        HashKey(bytes)
    }

    fn pseudonym(&self, value: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, value).as_bytes()
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Wire format of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Format code 0.
    Text,
    /// Format code 1.
    Binary,
}

impl Format {
    /// The format of a RowDescription format code; `None` for codes the
    /// protocol does not define (then only NULL is safe).
    pub fn from_code(code: i16) -> Option<Format> {
        match code {
            0 => Some(Format::Text),
            1 => Some(Format::Binary),
            _ => None,
        }
    }
}

/// The type families masking distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// String types (catalog category `S`: text, varchar, bpchar, name,
    /// citext, ...): text and binary formats are both the raw characters.
    Text,
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `numeric`.
    Numeric,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `uuid`.
    Uuid,
    /// `bytea`.
    Bytea,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// Anything else: masked values become NULL.
    Other,
}

/// Well-known type OIDs (`pg_type.oid`), fixed across PostgreSQL versions.
pub mod oid {
    /// `bytea`.
    pub const BYTEA: u32 = 17;
    /// `"char"`.
    pub const CHAR: u32 = 18;
    /// `name`.
    pub const NAME: u32 = 19;
    /// `int8`.
    pub const INT8: u32 = 20;
    /// `int2`.
    pub const INT2: u32 = 21;
    /// `int4`.
    pub const INT4: u32 = 23;
    /// `text`.
    pub const TEXT: u32 = 25;
    /// `json`.
    pub const JSON: u32 = 114;
    /// `float4`.
    pub const FLOAT4: u32 = 700;
    /// `float8`.
    pub const FLOAT8: u32 = 701;
    /// `unknown` (untyped literals).
    pub const UNKNOWN: u32 = 705;
    /// `bpchar`.
    pub const BPCHAR: u32 = 1042;
    /// `varchar`.
    pub const VARCHAR: u32 = 1043;
    /// `numeric`.
    pub const NUMERIC: u32 = 1700;
    /// `uuid`.
    pub const UUID: u32 = 2950;
    /// `jsonb`.
    pub const JSONB: u32 = 3802;
}

impl ValueType {
    /// The family of a type OID. `string_category` says the catalog puts the
    /// type in category `S` (extension types such as citext have no fixed
    /// OID); built-in string types are recognised without it.
    pub fn from_oid(type_oid: u32, string_category: bool) -> ValueType {
        match type_oid {
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN => ValueType::Text,
            oid::INT2 => ValueType::Int2,
            oid::INT4 => ValueType::Int4,
            oid::INT8 => ValueType::Int8,
            oid::NUMERIC => ValueType::Numeric,
            oid::FLOAT4 => ValueType::Float4,
            oid::FLOAT8 => ValueType::Float8,
            oid::UUID => ValueType::Uuid,
            oid::BYTEA => ValueType::Bytea,
            oid::JSON => ValueType::Json,
            oid::JSONB => ValueType::Jsonb,
            _ if string_category => ValueType::Text,
            _ => ValueType::Other,
        }
    }

    /// Whether values of this type carry free text that content detectors
    /// can scan (strings and JSON).
    pub fn is_textual(self) -> bool {
        matches!(self, ValueType::Text | ValueType::Json | ValueType::Jsonb)
    }
}

/// A masked value: SQL NULL, or the bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked<'a> {
    /// Send SQL NULL (length -1).
    Null,
    /// Send these bytes.
    Value(Cow<'a, [u8]>),
}

impl Masked<'_> {
    fn owned(v: Vec<u8>) -> Masked<'static> {
        Masked::Value(Cow::Owned(v))
    }

    fn borrowed(v: &'static [u8]) -> Masked<'static> {
        Masked::Value(Cow::Borrowed(v))
    }
}

/// Masks one non-NULL value of type `ty` sent in `format` with `strategy`.
/// The result always decodes as `ty` in `format` (or is NULL); a value the
/// function cannot read (not UTF-8 where text is expected, a binary value
/// of the wrong size) is redacted rather than passed through.
pub fn mask_value(
    strategy: Strategy,
    ty: ValueType,
    format: Format,
    value: &[u8],
    key: &HashKey,
) -> Masked<'static> {
    match strategy {
        Strategy::Null => Masked::Null,
        Strategy::Redact => redact(ty, format),
        Strategy::Partial { keep } => match ty {
            ValueType::Text => match std::str::from_utf8(value) {
                Ok(s) => {
                    let mut out = Vec::with_capacity(s.len());
                    partial(s, keep as usize, &mut out);
                    Masked::owned(out)
                }
                Err(_) => redact(ty, format),
            },
            _ => redact(ty, format),
        },
        Strategy::Email => match ty {
            ValueType::Text => match std::str::from_utf8(value).ok().and_then(email_domain) {
                Some(domain) => Masked::owned([&b"***@"[..], domain.as_bytes()].concat()),
                None => redact(ty, format),
            },
            _ => redact(ty, format),
        },
        Strategy::Hash => hash(ty, format, value, key),
        // Scanned by the detectors where the caller has them (the
        // gateway's masking); here, with none, redacted.
        Strategy::Detect => redact(ty, format),
    }
}

/// [`mask_value`] writing into `out` (cleared first), without allocating
/// for strings, the common case; returns `false` for NULL. The gateway
/// masks every value of a result this way.
pub fn mask_value_into(
    strategy: Strategy,
    ty: ValueType,
    format: Format,
    value: &[u8],
    key: &HashKey,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    if ty == ValueType::Text {
        match strategy {
            Strategy::Null => return false,
            Strategy::Hash => {
                pseudonym_text_into(&key.pseudonym(value), out);
                return true;
            }
            Strategy::Partial { keep } => {
                if let Ok(s) = std::str::from_utf8(value) {
                    partial(s, keep as usize, out);
                    return true;
                }
            }
            Strategy::Email => {
                if let Some(domain) = std::str::from_utf8(value).ok().and_then(email_domain) {
                    out.extend_from_slice(b"***@");
                    out.extend_from_slice(domain.as_bytes());
                    return true;
                }
            }
            Strategy::Redact | Strategy::Detect => {}
        }
    }
    match mask_value(strategy, ty, format, value, key) {
        Masked::Null => false,
        Masked::Value(v) => {
            out.extend_from_slice(&v);
            true
        }
    }
}

/// The type's placeholder.
pub fn redact(ty: ValueType, format: Format) -> Masked<'static> {
    match (ty, format) {
        (ValueType::Text, _) => Masked::borrowed(REDACTED.as_bytes()),
        (ValueType::Int2 | ValueType::Int4 | ValueType::Int8, Format::Text) => {
            Masked::borrowed(b"0")
        }
        (ValueType::Int2, Format::Binary) => Masked::borrowed(&[0; 2]),
        (ValueType::Int4, Format::Binary) => Masked::borrowed(&[0; 4]),
        (ValueType::Int8, Format::Binary) => Masked::borrowed(&[0; 8]),
        (ValueType::Numeric | ValueType::Float4 | ValueType::Float8, Format::Text) => {
            Masked::borrowed(b"0")
        }
        // ndigits 0, weight 0, sign positive, dscale 0.
        (ValueType::Numeric, Format::Binary) => Masked::borrowed(&[0; 8]),
        (ValueType::Float4, Format::Binary) => Masked::borrowed(&[0; 4]),
        (ValueType::Float8, Format::Binary) => Masked::borrowed(&[0; 8]),
        (ValueType::Uuid, Format::Text) => {
            Masked::borrowed(b"00000000-0000-0000-0000-000000000000")
        }
        (ValueType::Uuid, Format::Binary) => Masked::borrowed(&[0; 16]),
        (ValueType::Bytea, Format::Text) => Masked::borrowed(b"\\x"),
        (ValueType::Bytea, Format::Binary) => Masked::borrowed(b""),
        (ValueType::Json, _) | (ValueType::Jsonb, Format::Text) => Masked::borrowed(b"null"),
        (ValueType::Jsonb, Format::Binary) => Masked::borrowed(b"\x01null"),
        (ValueType::Other, _) => Masked::Null,
    }
}

/// `keep` last characters of `s` (at most half of them), the rest `*`.
fn partial(s: &str, keep: usize, out: &mut Vec<u8>) {
    let n = s.chars().count();
    let keep = keep.min(n / 2);
    let cut = s.char_indices().nth(n - keep).map_or(s.len(), |(at, _)| at);
    out.resize(out.len() + (n - keep), b'*');
    out.extend_from_slice(&s.as_bytes()[cut..]);
}

/// The domain of something shaped like an email address (`***@domain`
/// keeps it).
fn email_domain(s: &str) -> Option<&str> {
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(char::is_whitespace) {
        return None;
    }
    Some(domain)
}

/// The canonical bytes a value is hashed from, so that the text and binary
/// forms of one value give one pseudonym. `None` if the value is unreadable.
fn canonical(ty: ValueType, format: Format, value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let int = |n: i64| Some(Cow::Owned(n.to_string().into_bytes()));
    match (ty, format) {
        (ValueType::Text | ValueType::Json, _) | (ValueType::Jsonb, Format::Text) => {
            Some(Cow::Borrowed(value))
        }
        (ValueType::Jsonb, Format::Binary) => match value.split_first() {
            Some((1, rest)) => Some(Cow::Borrowed(rest)),
            _ => None,
        },
        (ValueType::Int2, Format::Binary) => int(i16::from_be_bytes(value.try_into().ok()?) as i64),
        (ValueType::Int4, Format::Binary) => int(i32::from_be_bytes(value.try_into().ok()?) as i64),
        (ValueType::Int8, Format::Binary) => int(i64::from_be_bytes(value.try_into().ok()?)),
        (ValueType::Int2 | ValueType::Int4 | ValueType::Int8, Format::Text) => {
            int(std::str::from_utf8(value).ok()?.trim().parse().ok()?)
        }
        (ValueType::Float4, Format::Binary) => Some(Cow::Owned(
            (f32::from_be_bytes(value.try_into().ok()?) as f64)
                .to_string()
                .into_bytes(),
        )),
        (ValueType::Float8, Format::Binary) => Some(Cow::Owned(
            f64::from_be_bytes(value.try_into().ok()?)
                .to_string()
                .into_bytes(),
        )),
        (ValueType::Float4 | ValueType::Float8, Format::Text) => Some(Cow::Owned(
            std::str::from_utf8(value)
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()?
                .to_string()
                .into_bytes(),
        )),
        (ValueType::Numeric, Format::Text) => Some(Cow::Borrowed(value)),
        (ValueType::Numeric, Format::Binary) => {
            Some(Cow::Owned(numeric_binary_to_text(value)?.into_bytes()))
        }
        (ValueType::Uuid, Format::Binary) => {
            let b: [u8; 16] = value.try_into().ok()?;
            Some(Cow::Owned(uuid_text(&b).into_bytes()))
        }
        (ValueType::Uuid, Format::Text) => Some(Cow::Owned(
            std::str::from_utf8(value)
                .ok()?
                .to_ascii_lowercase()
                .into_bytes(),
        )),
        (ValueType::Bytea, Format::Binary) => Some(Cow::Borrowed(value)),
        (ValueType::Bytea, Format::Text) => Some(Cow::Owned(bytea_text_decode(value)?)),
        (ValueType::Other, _) => None,
    }
}

fn hash(ty: ValueType, format: Format, value: &[u8], key: &HashKey) -> Masked<'static> {
    let Some(canonical) = canonical(ty, format, value) else {
        return redact(ty, format);
    };
    let h = key.pseudonym(&canonical);
    let word = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    match (ty, format) {
        (ValueType::Text, _) => Masked::owned(pseudonym_text(&h)),
        (ValueType::Json | ValueType::Jsonb, Format::Text) | (ValueType::Json, Format::Binary) => {
            Masked::owned([&b"\""[..], &pseudonym_text(&h), b"\""].concat())
        }
        (ValueType::Jsonb, Format::Binary) => {
            Masked::owned([&b"\x01\""[..], &pseudonym_text(&h), b"\""].concat())
        }
        (ValueType::Int2, f) => int_out((word & 0x7fff) as i64, 2, f),
        (ValueType::Int4, f) => int_out((word & 0x7fff_ffff) as i64, 4, f),
        (ValueType::Int8, f) => int_out((word & 0x7fff_ffff_ffff_ffff) as i64, 8, f),
        (ValueType::Numeric, Format::Text) => {
            Masked::owned((word % 1_000_000_000_000_000).to_string().into_bytes())
        }
        (ValueType::Numeric, Format::Binary) => {
            Masked::owned(numeric_binary_from_u64(word % 1_000_000_000_000_000))
        }
        (ValueType::Float4, Format::Text) | (ValueType::Float8, Format::Text) => {
            Masked::owned(((word & 0xff_ffff) as u32).to_string().into_bytes())
        }
        (ValueType::Float4, Format::Binary) => {
            Masked::owned(((word & 0xff_ffff) as f32).to_be_bytes().to_vec())
        }
        (ValueType::Float8, Format::Binary) => {
            Masked::owned(((word & 0xff_ffff) as f64).to_be_bytes().to_vec())
        }
        (ValueType::Uuid, f) => {
            let mut b: [u8; 16] = h[..16].try_into().expect("16 bytes");
            // A version-8 (custom) RFC 9562 UUID.
            b[6] = (b[6] & 0x0f) | 0x80;
            b[8] = (b[8] & 0x3f) | 0x80;
            match f {
                Format::Text => Masked::owned(uuid_text(&b).into_bytes()),
                Format::Binary => Masked::owned(b.to_vec()),
            }
        }
        (ValueType::Bytea, Format::Binary) => Masked::owned(h[..16].to_vec()),
        (ValueType::Bytea, Format::Text) => {
            let mut s = String::from("\\x");
            s.push_str(&hex(&h[..16]));
            Masked::owned(s.into_bytes())
        }
        (ValueType::Other, _) => Masked::Null,
    }
}

/// The text form of a pseudonym: `h_` and 16 hex digits (64 bits).
fn pseudonym_text(h: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    pseudonym_text_into(h, &mut out);
    out
}

fn pseudonym_text_into(h: &[u8; 32], out: &mut Vec<u8>) {
    out.extend_from_slice(b"h_");
    push_hex(out, &h[..8]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

fn int_out(n: i64, size: usize, format: Format) -> Masked<'static> {
    match format {
        Format::Text => Masked::owned(n.to_string().into_bytes()),
        Format::Binary => {
            let bytes = n.to_be_bytes();
            Masked::owned(bytes[8 - size..].to_vec())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decodes bytea's text output (`\x` hex, or the older escape format).
fn bytea_text_decode(v: &[u8]) -> Option<Vec<u8>> {
    if let Some(hexpart) = v.strip_prefix(b"\\x") {
        if !hexpart.len().is_multiple_of(2) {
            return None;
        }
        return hexpart
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
            .collect();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
        } else if v.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let digits = v.get(i + 1..i + 4)?;
            let s = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(s, 8).ok()?);
            i += 4;
        }
    }
    Some(out)
}

/// `numeric`'s binary form of a non-negative integer: base-10000 digits,
/// most significant first, trailing zero digits dropped.
pub(crate) fn numeric_binary_from_u64(mut n: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    while n > 0 {
        digits.push((n % 10_000) as i16);
        n /= 10_000;
    }
    digits.reverse();
    let weight = digits.len() as i16 - 1;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let mut out = Vec::with_capacity(8 + digits.len() * 2);
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&(if digits.is_empty() { 0 } else { weight }).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // positive
    out.extend_from_slice(&0u16.to_be_bytes()); // no decimal digits
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// The text form of a binary `numeric`, for hashing (so that the text and
/// binary forms of one value hash alike). `None` if malformed.
pub(crate) fn numeric_binary_to_text(v: &[u8]) -> Option<String> {
    if v.len() < 8 {
        return None;
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]);
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    let dscale = u16::from_be_bytes([v[6], v[7]]) as usize;
    if ndigits < 0 || v.len() != 8 + ndigits as usize * 2 {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<i32> = v[8..]
        .chunks(2)
        .map(|c| i16::from_be_bytes([c[0], c[1]]) as i32)
        .collect();
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return None;
    }
    let digit = |i: i32| -> i32 {
        if i >= 0 && (i as usize) < digits.len() {
            digits[i as usize]
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                s.push_str(&digit(i).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    fn key() -> HashKey {
        HashKey::new([7; 32])
    }

    fn bytes(m: &Masked<'_>) -> Option<Vec<u8>> {
        match m {
            Masked::Null => None,
            Masked::Value(v) => Some(v.to_vec()),
        }
    }

    fn text(m: &Masked<'_>) -> Option<String> {
        bytes(m).map(|b| String::from_utf8(b).expect("masked text is UTF-8"))
    }

    const STRATEGIES: [Strategy; 6] = [
        Strategy::Redact,
        Strategy::Partial { keep: 4 },
        Strategy::Partial { keep: 0 },
        Strategy::Email,
        Strategy::Hash,
        Strategy::Null,
    ];

    const TYPES: [ValueType; 12] = [
        ValueType::Text,
        ValueType::Int2,
        ValueType::Int4,
        ValueType::Int8,
        ValueType::Numeric,
        ValueType::Float4,
        ValueType::Float8,
        ValueType::Uuid,
        ValueType::Bytea,
        ValueType::Json,
        ValueType::Jsonb,
        ValueType::Other,
    ];

    /// Checks that `v` is a valid value of `ty` in `format`, the way a
    /// driver would decode it.
    fn decodes(ty: ValueType, format: Format, v: &[u8]) -> Result<(), String> {
        use postgres_protocol::types as t;
        let text = || std::str::from_utf8(v).map_err(|e| e.to_string());
        match (ty, format) {
            (ValueType::Text, _) => text().map(drop),
            (ValueType::Int2, Format::Text) => {
                text()?.parse::<i16>().map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Int4, Format::Text) => {
                text()?.parse::<i32>().map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Int8, Format::Text) => {
                text()?.parse::<i64>().map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Int2, Format::Binary) => {
                t::int2_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Int4, Format::Binary) => {
                t::int4_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Int8, Format::Binary) => {
                t::int8_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Float4, Format::Binary) => {
                t::float4_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Float8, Format::Binary) => {
                t::float8_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Float4 | ValueType::Float8, Format::Text) => {
                text()?.parse::<f64>().map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Numeric, Format::Text) => {
                let s = text()?;
                let ok = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
                ok.then_some(()).ok_or(format!("bad numeric {s:?}"))
            }
            (ValueType::Numeric, Format::Binary) => numeric_binary_to_text(v)
                .map(drop)
                .ok_or_else(|| "bad binary numeric".to_owned()),
            (ValueType::Uuid, Format::Binary) => {
                t::uuid_from_sql(v).map(drop).map_err(|e| e.to_string())
            }
            (ValueType::Uuid, Format::Text) => {
                let s = text()?;
                let shape = s.len() == 36
                    && s.char_indices().all(|(i, c)| {
                        if [8, 13, 18, 23].contains(&i) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                shape.then_some(()).ok_or(format!("bad uuid {s:?}"))
            }
            (ValueType::Bytea, Format::Binary) => Ok(()),
            (ValueType::Bytea, Format::Text) => bytea_text_decode(v)
                .map(drop)
                .ok_or_else(|| "bad bytea text".to_owned()),
            (ValueType::Json, _) | (ValueType::Jsonb, Format::Text) => serde_json_like(text()?),
            (ValueType::Jsonb, Format::Binary) => match v.split_first() {
                Some((1, rest)) => {
                    serde_json_like(std::str::from_utf8(rest).map_err(|e| e.to_string())?)
                }
                _ => Err("jsonb binary must start with version 1".into()),
            },
            (ValueType::Other, _) => Err("an unknown type can only be NULL".into()),
        }
    }

    /// The JSON values masking produces: `null` or a string without escapes.
    fn serde_json_like(s: &str) -> Result<(), String> {
        let string = s.len() >= 2
            && s.starts_with('"')
            && s.ends_with('"')
            && !s[1..s.len() - 1].contains(['"', '\\']);
        (s == "null" || string)
            .then_some(())
            .ok_or(format!("bad json {s:?}"))
    }

    #[test]
    fn partial_keeps_at_most_half() {
        let k = key();
        let m = |s: &str, keep| {
            text(&mask_value(
                Strategy::Partial { keep },
                ValueType::Text,
                Format::Text,
                s.as_bytes(),
                &k,
            ))
        };
        assert_eq!(m("123-45-6789", 4).as_deref(), Some("*******6789"));
        assert_eq!(m("1234", 4).as_deref(), Some("**34"));
        assert_eq!(m("é日本語", 2).as_deref(), Some("**本語"));
        assert_eq!(m("", 4).as_deref(), Some(""));
        assert_eq!(m("x", 4).as_deref(), Some("*"));
    }

    #[test]
    fn email_keeps_the_domain() {
        let k = key();
        let m = |s: &str| {
            text(&mask_value(
                Strategy::Email,
                ValueType::Text,
                Format::Text,
                s.as_bytes(),
                &k,
            ))
        };
        assert_eq!(m("ada@example.com").as_deref(), Some("***@example.com"));
        assert_eq!(m("a@b@c.org").as_deref(), Some("***@c.org"));
        assert_eq!(m("no address").as_deref(), Some(REDACTED));
        assert_eq!(m("@example.com").as_deref(), Some(REDACTED));
    }

    #[test]
    fn hash_is_keyed_stable_and_format_independent() {
        let k = key();
        let h = |ty, f, v: &[u8], k: &HashKey| bytes(&mask_value(Strategy::Hash, ty, f, v, k));
        let a = h(ValueType::Text, Format::Text, b"ada@example.com", &k);
        assert_eq!(
            a,
            h(ValueType::Text, Format::Binary, b"ada@example.com", &k)
        );
        assert_ne!(a, h(ValueType::Text, Format::Text, b"bob@example.com", &k));
        assert_ne!(
            a,
            h(
                ValueType::Text,
                Format::Text,
                b"ada@example.com",
                &HashKey::new([8; 32])
            )
        );
        assert!(String::from_utf8(a.unwrap()).unwrap().starts_with("h_"));
        // An int4 hashes alike in text and binary, and stays an int4.
        let text4 = h(ValueType::Int4, Format::Text, b"42", &k).unwrap();
        let bin4 = h(ValueType::Int4, Format::Binary, &42i32.to_be_bytes(), &k).unwrap();
        let from_text: i32 = String::from_utf8(text4).unwrap().parse().unwrap();
        assert_eq!(from_text, i32::from_be_bytes(bin4.try_into().unwrap()));
        // numeric too.
        let nt = h(ValueType::Numeric, Format::Text, b"12.50", &k).unwrap();
        let nb = h(
            ValueType::Numeric,
            Format::Binary,
            &[0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 19, 136],
            &k,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(nt).unwrap(),
            numeric_binary_to_text(&nb).unwrap()
        );
    }

    #[test]
    fn numeric_binary_round_trips_known_values() {
        // 12.50: ndigits 2, weight 0, dscale 2, digits [12, 5000].
        let v = [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 19, 136];
        assert_eq!(numeric_binary_to_text(&v).as_deref(), Some("12.50"));
        for n in [
            0u64,
            1,
            9999,
            10_000,
            123_456_789,
            100_000_000,
            999_999_999_999_999,
        ] {
            assert_eq!(
                numeric_binary_to_text(&numeric_binary_from_u64(n)),
                Some(n.to_string())
            );
        }
    }

    #[test]
    fn unreadable_values_are_redacted_not_passed_through() {
        let k = key();
        let bad_utf8 = [0xff, 0xfe, b'a'];
        for s in [Strategy::Partial { keep: 4 }, Strategy::Email] {
            let m = mask_value(s, ValueType::Text, Format::Text, &bad_utf8, &k);
            assert_eq!(text(&m).as_deref(), Some(REDACTED));
        }
        let m = mask_value(Strategy::Hash, ValueType::Int4, Format::Binary, b"abc", &k);
        assert_eq!(bytes(&m), Some(vec![0; 4]));
    }

    fn arbitrary_value(ty: ValueType, format: Format) -> BoxedStrategy<Vec<u8>> {
        use ValueType as T;
        let text_of = |s: BoxedStrategy<String>| s.prop_map(String::into_bytes).boxed();
        match (ty, format) {
            (T::Int2, Format::Binary) => {
                any::<i16>().prop_map(|n| n.to_be_bytes().to_vec()).boxed()
            }
            (T::Int4, Format::Binary) => {
                any::<i32>().prop_map(|n| n.to_be_bytes().to_vec()).boxed()
            }
            (T::Int8, Format::Binary) => {
                any::<i64>().prop_map(|n| n.to_be_bytes().to_vec()).boxed()
            }
            (T::Int2 | T::Int4 | T::Int8, Format::Text) => {
                text_of(any::<i16>().prop_map(|n| n.to_string()).boxed())
            }
            (T::Float4, Format::Binary) => {
                any::<f32>().prop_map(|n| n.to_be_bytes().to_vec()).boxed()
            }
            (T::Float8, Format::Binary) => {
                any::<f64>().prop_map(|n| n.to_be_bytes().to_vec()).boxed()
            }
            (T::Numeric, Format::Binary) => any::<u64>().prop_map(numeric_binary_from_u64).boxed(),
            (T::Uuid, Format::Binary) => any::<[u8; 16]>().prop_map(|b| b.to_vec()).boxed(),
            (T::Uuid, Format::Text) => any::<[u8; 16]>()
                .prop_map(|b| uuid_text(&b).into_bytes())
                .boxed(),
            (T::Jsonb, Format::Binary) => "\\PC*"
                .prop_map(|s| [&[1u8][..], s.as_bytes()].concat())
                .boxed(),
            // Anything at all, including garbage: the result must still decode.
            _ => prop_oneof![
                "\\PC*".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
            ]
            .boxed(),
        }
    }

    proptest! {
        /// Every strategy, every type family, both formats: the masked value
        /// decodes as the column's type (or is NULL), for well-formed and
        /// malformed inputs alike.
        #[test]
        fn masked_values_always_decode(
            (ty, format, value) in (0..TYPES.len(), any::<bool>()).prop_flat_map(|(t, bin)| {
                let ty = TYPES[t];
                let format = if bin { Format::Binary } else { Format::Text };
                (Just(ty), Just(format), arbitrary_value(ty, format))
            }),
            s in 0..STRATEGIES.len(),
            key_bytes in any::<[u8; 32]>(),
        ) {
            let k = HashKey::new(key_bytes);
            let m = mask_value(STRATEGIES[s], ty, format, &value, &k);
            if let Some(v) = bytes(&m) {
                if let Err(e) = decodes(ty, format, &v) {
                    panic!("{:?} of {ty:?} ({format:?}) gave an undecodable value: {e}", STRATEGIES[s]);
                }
            }
        }

        /// The allocation-free path gives exactly what `mask_value` gives.
        #[test]
        fn mask_value_into_agrees(
            t in 0..TYPES.len(),
            bin in any::<bool>(),
            s in 0..STRATEGIES.len(),
            value in prop_oneof![
                "\\PC{0,30}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..20),
            ],
        ) {
            let k = key();
            let format = if bin { Format::Binary } else { Format::Text };
            let mut out = vec![9, 9];
            let not_null = mask_value_into(STRATEGIES[s], TYPES[t], format, &value, &k, &mut out);
            let expected = bytes(&mask_value(STRATEGIES[s], TYPES[t], format, &value, &k));
            prop_assert_eq!(not_null.then_some(out), expected);
        }

        /// Partial never reveals more than half of a string, and keeps its length.
        #[test]
        fn partial_hides_at_least_half(s in "\\PC{0,40}", keep in 0u16..50) {
            let m = text(&mask_value(Strategy::Partial { keep }, ValueType::Text, Format::Text, s.as_bytes(), &key())).unwrap();
            let n = s.chars().count();
            prop_assert_eq!(m.chars().count(), n);
            let hidden = m.chars().take_while(|c| *c == '*').count();
            prop_assert!(hidden * 2 >= n);
            prop_assert!(hidden >= n.saturating_sub(keep as usize));
        }

        /// Equal values hash alike; the pseudonym never contains the value.
        #[test]
        fn hash_pseudonyms_are_stable(s in "[a-z0-9@.]{6,30}") {
            let k = key();
            let a = text(&mask_value(Strategy::Hash, ValueType::Text, Format::Text, s.as_bytes(), &k)).unwrap();
            let b = text(&mask_value(Strategy::Hash, ValueType::Text, Format::Binary, s.as_bytes(), &k)).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert!(!a.contains(&s));
        }
    }
}
