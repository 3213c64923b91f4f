//! Values as a client received them: text-format bytes shown as text,
//! binary-format bytes as hex (with a decoding for common types, since
//! drivers such as tokio-postgres and asyncpg ask for binary results), and
//! SQL NULL as its own thing.
//!
//! Nothing here trusts the bytes: a "text" value that is not UTF-8 is shown
//! as hex, and a binary value whose length does not fit its type is left
//! undecoded.

use serde::Serialize;

/// Format code 0: the value is text.
pub const TEXT: u16 = 0;
/// Format code 1: the value is the type's binary representation.
pub const BINARY: u16 = 1;

/// One value, ready to be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL NULL (serialized as JSON `null`).
    Null,
    /// A text-format value that is valid UTF-8.
    Text {
        /// The value, exactly.
        text: String,
    },
    /// A binary-format value, or a text-format value that is not UTF-8.
    Bytes {
        /// Lower-case hex of the bytes.
        hex: String,
        /// The value decoded by its type, when the type is known and the
        /// bytes are a valid encoding of it.
        #[serde(skip_serializing_if = "Option::is_none")]
        decoded: Option<String>,
    },
}

impl Value {
    /// A value in `format` (0 text, 1 binary) of type `type_oid` (0 when
    /// unknown, as for bind parameters).
    pub fn new(bytes: Option<&[u8]>, format: u16, type_oid: u32) -> Value {
        let Some(bytes) = bytes else {
            return Value::Null;
        };
        // PostgreSQL's text output never contains a NUL byte, so a "text"
        // value holding one is really binary: a RowDescription answering a
        // statement Describe always says text, whatever Bind asked for.
        if format == TEXT && !bytes.contains(&0) {
            if let Ok(text) = std::str::from_utf8(bytes) {
                return Value::Text {
                    text: text.to_owned(),
                };
            }
            return Value::Bytes {
                hex: hex(bytes),
                decoded: None,
            };
        }
        Value::Bytes {
            hex: hex(bytes),
            decoded: decode_binary(type_oid, bytes),
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The name of a built-in type, for column headings.
pub fn type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The binary encoding of a common type, decoded; `None` for other types
/// or bytes that do not fit.
fn decode_binary(oid: u32, b: &[u8]) -> Option<String> {
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    match oid {
        16 => match b {
            [0] => Some("false".into()),
            [1] => Some("true".into()),
            _ => None,
        },
        18 => (b.len() == 1).then(|| format!("{}", b[0] as char)),
        19 | 25 | 114 | 1042 | 1043 => text(b),
        3802 => match b.split_first() {
            Some((1, rest)) => text(rest),
            _ => None,
        },
        21 => Some(i16::from_be_bytes(b.try_into().ok()?).to_string()),
        23 => Some(i32::from_be_bytes(b.try_into().ok()?).to_string()),
        26 => Some(u32::from_be_bytes(b.try_into().ok()?).to_string()),
        20 => Some(i64::from_be_bytes(b.try_into().ok()?).to_string()),
        700 => Some(f32::from_be_bytes(b.try_into().ok()?).to_string()),
        701 => Some(f64::from_be_bytes(b.try_into().ok()?).to_string()),
        1082 => {
            let days = i32::from_be_bytes(b.try_into().ok()?);
            match days {
                i32::MAX => Some("infinity".into()),
                i32::MIN => Some("-infinity".into()),
                _ => time::OffsetDateTime::UNIX_EPOCH
                    .checked_add(time::Duration::microseconds(PG_EPOCH_MICROS))?
                    .checked_add(time::Duration::days(days.into()))
                    .map(|t| t.date().to_string()),
            }
        }
        1114 | 1184 => {
            let micros = i64::from_be_bytes(b.try_into().ok()?);
            match micros {
                i64::MAX => return Some("infinity".into()),
                i64::MIN => return Some("-infinity".into()),
                _ => {}
            }
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(
                (i128::from(micros) + i128::from(PG_EPOCH_MICROS)) * 1000,
            )
            .ok()?;
            let text = t
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(if oid == 1114 {
                text.trim_end_matches('Z').to_owned()
            } else {
                text
            })
        }
        2950 => {
            let h = hex(b);
            (b.len() == 16).then(|| {
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            })
        }
        1700 => decode_numeric(b),
        _ => None,
    }
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale (each i16),
/// then ndigits base-10000 digits; the first digit's place is
/// 10000^weight.
fn decode_numeric(b: &[u8]) -> Option<String> {
    let word =
        |i: usize| -> Option<i16> { Some(i16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)) };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?).ok()?;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i).filter(|d| (0..10_000).contains(d)))
        .collect::<Option<Vec<i16>>>()?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    };
    // Integer part: groups at places weight, weight-1, ..., 0.
    let mut int = String::new();
    for place in (0..=weight).rev() {
        let idx = weight - place;
        let d = usize::try_from(idx)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut place = -1;
    while frac.len() < dscale {
        let idx = weight - place;
        let d = usize::try_from(idx)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0);
        frac.push_str(&format!("{d:04}"));
        place -= 1;
    }
    frac.truncate(dscale);
    let sign = if negative { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(oid: u32, b: &[u8]) -> Option<String> {
        match Value::new(Some(b), BINARY, oid) {
            Value::Bytes { decoded, .. } => decoded,
            other => panic!("binary values are bytes, got {other:?}"),
        }
    }

    #[test]
    fn text_binary_and_null_are_distinct() {
        assert_eq!(Value::new(None, TEXT, 25), Value::Null);
        assert_eq!(
            Value::new(Some(b"NULL"), TEXT, 25),
            Value::Text {
                text: "NULL".into()
            }
        );
        assert_eq!(
            Value::new(Some(&[0, 0, 0, 7]), BINARY, 23),
            Value::Bytes {
                hex: "00000007".into(),
                decoded: Some("7".into())
            }
        );
        assert_eq!(
            Value::new(Some(&[0xff, 0xfe]), TEXT, 25),
            Value::Bytes {
                hex: "fffe".into(),
                decoded: None
            },
            "text that is not UTF-8 is shown as hex"
        );
        assert_eq!(
            Value::new(Some(&[0, 0, 0, 7]), TEXT, 23),
            Value::Bytes {
                hex: "00000007".into(),
                decoded: Some("7".into())
            },
            "text never holds NUL: such a value is binary, whatever the format code says"
        );
    }

    #[test]
    fn common_binary_types_decode() {
        assert_eq!(decoded(16, &[1]).as_deref(), Some("true"));
        assert_eq!(decoded(21, &(-2i16).to_be_bytes()).as_deref(), Some("-2"));
        assert_eq!(
            decoded(20, &i64::MAX.to_be_bytes()).as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(decoded(701, &1.5f64.to_be_bytes()).as_deref(), Some("1.5"));
        assert_eq!(decoded(25, b"abc").as_deref(), Some("abc"));
        assert_eq!(decoded(3802, b"\x01{}").as_deref(), Some("{}"));
        assert_eq!(
            decoded(1082, &0i32.to_be_bytes()).as_deref(),
            Some("2000-01-01")
        );
        assert_eq!(
            decoded(1184, &86_400_000_001i64.to_be_bytes()).as_deref(),
            Some("2000-01-02T00:00:00.000001Z")
        );
        assert_eq!(
            decoded(2950, &[0x12; 16]).as_deref(),
            Some("12121212-1212-1212-1212-121212121212")
        );
        assert_eq!(decoded(23, &[0, 1]), None, "wrong length stays undecoded");
        assert_eq!(decoded(9999, &[1, 2]), None, "unknown types stay undecoded");
    }

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_as_postgresql_prints_them() {
        // 12345.678 = 1|2345|6780 with weight 1, dscale 3.
        let b = numeric(3, 1, 0, 3, &[1, 2345, 6780]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("12345.678"));
        // -1.50
        let b = numeric(2, 0, 0x4000, 2, &[1, 5000]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("-1.50"));
        // 0.0001
        let b = numeric(1, -1, 0, 4, &[1]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("0.0001"));
        // 20000 = 2 with weight 1 (trailing zero groups dropped)
        let b = numeric(1, 1, 0, 0, &[2]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("20000"));
        // 0
        let b = numeric(0, 0, 0, 0, &[]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("0"));
        let b = numeric(0, 0, 0xC000, 0, &[]);
        assert_eq!(decoded(1700, &b).as_deref(), Some("NaN"));
        let b = numeric(1, 0, 0, 0, &[10_000]);
        assert_eq!(decoded(1700, &b), None, "a digit out of range");
    }
}
