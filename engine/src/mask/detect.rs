//! Content detectors: sensitive values recognised by their shape, for
//! results whose source column is unknown (expressions, functions) and for
//! error and notice texts.
//!
//! Each detector finds candidates with a regular expression and confirms
//! them with the check the format defines where there is one (Luhn for card
//! numbers, ISO 7064 mod 97 for IBANs, the SSA's rules for SSNs), so that
//! ordinary numbers are left alone. A match is replaced in place by a masked
//! version of the same shape: the surrounding text, and a JSON document
//! around it, stay valid.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// A kind of sensitive value recognised by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detector {
    /// Email addresses: keep the domain.
    Email,
    /// Payment card numbers (13 to 19 digits, Luhn-valid): keep the last four.
    Card,
    /// US social security numbers written `123-45-6789` or `123 45 6789`.
    Ssn,
    /// Phone numbers: North American with separators, or international with `+`.
    Phone,
    /// International bank account numbers (mod-97 valid): keep the country
    /// and the last four.
    Iban,
}

/// Every detector, in the order policy documentation lists them.
pub const ALL: [Detector; 5] = [
    Detector::Email,
    Detector::Card,
    Detector::Ssn,
    Detector::Phone,
    Detector::Iban,
];

impl Detector {
    /// The name used in policy files and events.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Card => "card",
            Detector::Ssn => "ssn",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
        }
    }

    /// The detector a policy file names.
    pub fn from_name(name: &str) -> Option<Detector> {
        ALL.into_iter().find(|d| d.name() == name)
    }

    /// Matching order when candidates overlap: the most specific first.
    fn precedence(self) -> u8 {
        match self {
            Detector::Iban => 0,
            Detector::Card => 1,
            Detector::Ssn => 2,
            Detector::Email => 3,
            Detector::Phone => 4,
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i-u)[a-z0-9._%+-]+@(?:[a-z0-9-]+\.)+[a-z]{2,}").expect("valid regex")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)\b\d(?:[ -]?\d){12,18}\b").expect("valid regex"));
static SSN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b(\d{3})([- ])(\d{2})([- ])(\d{4})\b").expect("valid regex")
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\b\d{3})[ .-]\d{3}[ .-]\d{4}\b|\+\d{1,3}(?:[ .-]?\d){6,14}\b")
        .expect("valid regex")
});
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("valid regex")
});

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn digits_of(s: &[u8]) -> Vec<u8> {
    s.iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect()
}

fn valid_card(m: &[u8]) -> bool {
    let d = digits_of(m);
    (13..=19).contains(&d.len()) && luhn(&d)
}

fn valid_ssn(m: &[u8]) -> bool {
    let d = digits_of(m);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().all(|x| *x == 0);
    area != 0 && area != 666 && area < 900 && group != 0 && !serial
}

fn valid_iban(m: &[u8]) -> bool {
    let compact: Vec<u8> = m.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem = 0u32;
    for b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// How masked characters are written: `*` in plain text; in JSON, digits
/// become `0` so that a number stays a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Plain text.
    Text,
    /// Text inside a JSON document.
    Json,
}

/// The masked form of one match.
fn replacement(detector: Detector, m: &[u8], style: Style) -> Vec<u8> {
    let hide = |b: u8| -> u8 {
        match style {
            Style::Text => b'*',
            Style::Json if b.is_ascii_digit() => b'0',
            Style::Json => b'x',
        }
    };
    let alnum_total = m.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    // Characters kept at the end, counted in letters and digits.
    let keep_last = match detector {
        Detector::Card | Detector::Iban => 4,
        Detector::Phone => 2,
        Detector::Ssn | Detector::Email => 0,
    };
    if detector == Detector::Email {
        let at = m.iter().rposition(|b| *b == b'@').unwrap_or(0);
        let mut out = b"***".to_vec();
        out.extend_from_slice(&m[at..]);
        return out;
    }
    let keep_first = if detector == Detector::Iban { 2 } else { 0 };
    let mut seen = 0;
    m.iter()
        .map(|&b| {
            if !b.is_ascii_alphanumeric() {
                return b;
            }
            seen += 1;
            if seen <= keep_first || seen > alnum_total.saturating_sub(keep_last) {
                b
            } else {
                hide(b)
            }
        })
        .collect()
}

/// A confirmed match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Which detector found it.
    pub detector: Detector,
    /// Byte range in the scanned value.
    pub start: usize,
    /// End of the byte range.
    pub end: usize,
}

/// Every confirmed, non-overlapping match of `detectors` in `value`, in
/// order. Where candidates overlap the most specific detector wins
/// (IBAN, card, SSN, email, phone).
pub fn find(detectors: &[Detector], value: &[u8]) -> Vec<Found> {
    let mut ordered: Vec<Detector> = detectors.to_vec();
    ordered.sort_by_key(|d| d.precedence());
    ordered.dedup();
    let mut found: Vec<Found> = Vec::new();
    for d in ordered {
        let (re, check): (&Regex, fn(&[u8]) -> bool) = match d {
            Detector::Email => (&EMAIL, |_| true),
            Detector::Card => (&CARD, valid_card),
            Detector::Ssn => (&SSN, valid_ssn),
            Detector::Phone => (&PHONE, |_| true),
            Detector::Iban => (&IBAN, valid_iban),
        };
        for m in re.find_iter(value) {
            let (start, end) = (m.start(), m.end());
            if !check(m.as_bytes()) {
                continue;
            }
            if found.iter().any(|f| start < f.end && f.start < end) {
                continue;
            }
            found.push(Found {
                detector: d,
                start,
                end,
            });
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// `value` with every match of `detectors` masked, and the matches; `None`
/// when nothing matched (the value is unchanged).
pub fn scrub(detectors: &[Detector], value: &[u8], style: Style) -> Option<(Vec<u8>, Vec<Found>)> {
    if detectors.is_empty() {
        return None;
    }
    let found = find(detectors, value);
    if found.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(value.len());
    let mut at = 0;
    for f in &found {
        out.extend_from_slice(&value[at..f.start]);
        out.extend_from_slice(&replacement(f.detector, &value[f.start..f.end], style));
        at = f.end;
    }
    out.extend_from_slice(&value[at..]);
    Some((out, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(detectors: &[Detector], v: &str) -> String {
        match scrub(detectors, v.as_bytes(), Style::Text) {
            Some((out, _)) => String::from_utf8(out).unwrap(),
            None => v.to_owned(),
        }
    }

    #[test]
    fn each_detector_masks_its_shape() {
        assert_eq!(
            s(&ALL, "mail ada@example.com now"),
            "mail ***@example.com now"
        );
        assert_eq!(
            s(&ALL, "card 4111 1111 1111 1111."),
            "card **** **** **** 1111."
        );
        assert_eq!(s(&ALL, "card 4111111111111111"), "card ************1111");
        assert_eq!(s(&ALL, "ssn 123-45-6789"), "ssn ***-**-****");
        assert_eq!(s(&ALL, "call (555) 123-4567"), "call (***) ***-**67");
        assert_eq!(s(&ALL, "call +44 20 7946 0958"), "call +** ** **** **58");
        assert_eq!(
            s(&ALL, "iban GB82 WEST 1234 5698 7654 32"),
            "iban GB** **** **** **** **54 32"
        );
    }

    #[test]
    fn checks_reject_lookalikes() {
        // Not Luhn-valid: an order number stays.
        assert_eq!(
            s(&[Detector::Card], "order 4111111111111112"),
            "order 4111111111111112"
        );
        // SSN area 000 and 9xx are never issued.
        assert_eq!(
            s(&[Detector::Ssn], "000-12-3456 987-65-4321"),
            "000-12-3456 987-65-4321"
        );
        // Bad IBAN check digits.
        assert_eq!(
            s(&[Detector::Iban], "GB00 WEST 1234 5698 7654 32"),
            "GB00 WEST 1234 5698 7654 32"
        );
        // Detectors not asked for do nothing.
        assert_eq!(s(&[Detector::Email], "123-45-6789"), "123-45-6789");
        assert!(scrub(&[], b"ada@example.com", Style::Text).is_none());
    }

    #[test]
    fn json_stays_json() {
        let v = br#"{"card": 4111111111111111, "mail": "ada@example.com"}"#;
        let (out, found) = scrub(&ALL, v, Style::Json).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"card": 0000000000001111, "mail": "***@example.com"}"#
        );
    }

    proptest! {
        /// A Luhn-valid card number embedded anywhere is never left whole.
        #[test]
        fn cards_never_survive(prefix in "[a-z ]{0,10}", body in proptest::collection::vec(0u8..10, 15), suffix in "[a-z ]{0,10}") {
            let mut digits = body.clone();
            // Choose the check digit that makes the number Luhn-valid.
            let check = (0u8..10).find(|c| { let mut d = digits.clone(); d.push(*c); luhn(&d) }).unwrap();
            digits.push(check);
            let number: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            let text = format!("{prefix} {number} {suffix}");
            let out = s(&[Detector::Card], &text);
            prop_assert!(!out.contains(&number), "{}", out);
        }

        /// Scrubbing never panics and leaves text without matches alone.
        #[test]
        fn scrub_is_total(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some((out, found)) = scrub(&ALL, &v, Style::Text) {
                prop_assert!(!found.is_empty());
                prop_assert!(out != v);
            }
        }
    }
}
