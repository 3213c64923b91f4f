//! C2SP signed notes, verifier keys and checkpoint bodies (specification
//! section 5).
//!
//! A checkpoint is only as trustworthy as the check of its signature, so
//! this module is deliberately strict: it follows the C2SP `signed-note`
//! rules (which match Go's `golang.org/x/mod/sumdb/note`) and uses Ed25519
//! `verify_strict`, which rejects the malleable and small-order encodings
//! that plain RFC 8032 verification tolerates.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The algorithm byte of an Ed25519 key in C2SP note key encodings.
pub const ALG_ED25519: u8 = 0x01;

/// What starts every signature line: an em dash (U+2014) and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a verifier key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The string is not `<name>+<key id>+<key>`.
    #[error("a verifier key has the form <name>+<8 hex digit key id>+<base64 key>")]
    Malformed,
    /// The name is empty or contains whitespace or `+`.
    #[error("the key name {0:?} is empty or contains whitespace or '+'")]
    InvalidName(String),
    /// The key id is not 8 hexadecimal digits.
    #[error("the key id {0:?} is not 8 hexadecimal digits")]
    InvalidKeyId(String),
    /// The key is not standard padded base64.
    #[error("the key is not valid base64")]
    InvalidBase64,
    /// The key is not an Ed25519 key.
    #[error("the key has algorithm byte {0:#04x}; only Ed25519 (0x01) is supported")]
    UnsupportedAlgorithm(u8),
    /// The key has the wrong length for Ed25519.
    #[error("the key is {0} bytes long; an Ed25519 key is 1 algorithm byte and 32 key bytes")]
    WrongLength(usize),
    /// The 32 bytes are not a valid Ed25519 public key.
    #[error("the key bytes are not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The stated key id does not match the name and key.
    #[error("the key id {stated} does not match the name and key (expected {computed})")]
    KeyIdMismatch {
        /// The key id in the string.
        stated: String,
        /// The key id computed from the name and key.
        computed: String,
    },
}

/// Why a signed note or the checkpoint in it was rejected. See
/// [`NoteError::is_signature_failure`] for how the verifier classifies these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// There is no empty line separating the text from the signatures.
    #[error("the note has no empty line separating its text from its signatures")]
    NoSignatureBlock,
    /// The signature block is empty or does not end in a newline.
    #[error("the note's signature block is empty or does not end with a newline")]
    UnterminatedSignatures,
    /// The note contains a control character other than newline.
    #[error("the note contains the control character U+{0:04X}")]
    ControlCharacter(u32),
    /// A signature line is not `— <name> <base64>`.
    #[error("signature line {line} is not of the form \"\u{2014} <name> <base64 signature>\"")]
    MalformedSignatureLine {
        /// 1-based number of the line within the signature block.
        line: usize,
    },
    /// No signature line is by the pinned key.
    #[error("the note has no signature by the key {key}")]
    NotSignedByKey {
        /// Name and key id of the pinned key.
        key: String,
    },
    /// A signature line by the pinned key does not verify.
    #[error("signature line {line} by the key {key} does not verify")]
    BadSignature {
        /// 1-based number of the line within the signature block.
        line: usize,
        /// Name and key id of the pinned key.
        key: String,
    },
    /// The text is not exactly four lines.
    #[error(
        "the checkpoint text has {0} lines; it must have 4 (origin, size, root, chain), or 5 with the line \"recovered\""
    )]
    LineCount(usize),
    /// The origin line is empty.
    #[error("the checkpoint origin line is empty")]
    EmptyOrigin,
    /// The size line is not a canonical decimal number.
    #[error("the checkpoint size {0:?} is not a decimal number without leading zeros")]
    InvalidSize(String),
    /// The root line is not base64 of 32 bytes.
    #[error("the checkpoint root {0:?} is not base64 of a 32-byte hash")]
    InvalidRoot(String),
    /// The fourth line is not `chain <base64 of 32 bytes>`.
    #[error("the checkpoint's fourth line {0:?} is not \"chain <base64 of a 32-byte hash>\"")]
    InvalidChain(String),
}

impl NoteError {
    /// Whether this is a failure of the signature itself (a forgery, a
    /// corrupted signature or the wrong key) rather than of the note's
    /// format. The verifier reports the former as `signature_invalid` and
    /// the latter as `checkpoint_invalid`.
    pub fn is_signature_failure(&self) -> bool {
        matches!(
            self,
            NoteError::NotSignedByKey { .. } | NoteError::BadSignature { .. }
        )
    }
}

/// A parsed verifier key: the one key the auditor pins. Only notes signed by
/// it are believed.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

/// The key id of a C2SP Ed25519 key: the first 4 bytes of
/// `SHA-256(name || 0x0A || 0x01 || public key)`. It lets a verifier skip
/// signature lines by other keys of the same name without trying them.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALG_ED25519]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Whether `name` is a valid key name: non-empty, no whitespace, no `+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl VerifierKey {
    /// Parses `<name>+<key id as 8 hex digits>+<base64(0x01 || public key)>`
    /// and checks that the key id matches the name and key, so that a typo
    /// in a key file is caught here rather than as a signature failure.
    pub fn parse(s: &str) -> Result<VerifierKey, KeyError> {
        let (name, rest) = s.split_once('+').ok_or(KeyError::Malformed)?;
        // The base64 part may itself contain '+': split only twice.
        let (id_hex, key_b64) = rest.split_once('+').ok_or(KeyError::Malformed)?;
        if !is_valid_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::InvalidKeyId(id_hex.to_owned()));
        }
        let stated = u32::from_str_radix(id_hex, 16)
            .map_err(|_| KeyError::InvalidKeyId(id_hex.to_owned()))?
            .to_be_bytes();
        let bytes = BASE64
            .decode(key_b64)
            .map_err(|_| KeyError::InvalidBase64)?;
        match bytes.first() {
            None => return Err(KeyError::WrongLength(0)),
            Some(&ALG_ED25519) => {}
            Some(&alg) => return Err(KeyError::UnsupportedAlgorithm(alg)),
        }
        let public: [u8; 32] = bytes[1..]
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| KeyError::InvalidPublicKey)?;
        let id = key_id(name, &public);
        if id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated: id_hex.to_owned(),
                computed: hex(&id),
            });
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Builds the verifier key for `public_key` under `name` (for tools and
    /// tests that hold the key itself rather than its string form).
    pub fn from_public_key(name: &str, public_key: &VerifyingKey) -> Result<VerifierKey, KeyError> {
        if !is_valid_name(name) {
            return Err(KeyError::InvalidName(name.to_owned()));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, public_key.as_bytes()),
            key: *public_key,
        })
    }

    /// The key name; in Gatehouse, the log's origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// `<name>+<key id>`: how the key is named in error messages and in
    /// evidence bundles (the verifier key string without the key itself).
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex(&self.id))
    }
}

impl fmt::Display for VerifierKey {
    /// The key's string form, as accepted by [`VerifierKey::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 33];
        bytes[0] = ALG_ED25519;
        bytes[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{}", self.label(), BASE64.encode(bytes))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// Verifies a signed note with the pinned key (section 5, steps 1-3) and
/// returns its text: everything before the last empty line, including the
/// text's final newline. The text is what was signed.
pub fn open<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    // Step 1: text and signatures. A `&str` is already valid UTF-8.
    if let Some(c) = note.chars().find(|&c| c != '\n' && c.is_control()) {
        return Err(NoteError::ControlCharacter(u32::from(c)));
    }
    let split = note.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
    let text = &note[..split + 1];
    let signatures = &note[split + 2..];
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(NoteError::UnterminatedSignatures);
    };
    let mut verified = 0;
    for (i, line) in signatures.split('\n').enumerate() {
        let line_no = i + 1;
        let malformed = NoteError::MalformedSignatureLine { line: line_no };
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(malformed.clone())?;
        let (name, sig_b64) = rest.split_once(' ').ok_or(malformed.clone())?;
        if !is_valid_name(name) || sig_b64.is_empty() {
            return Err(malformed);
        }
        let blob = BASE64.decode(sig_b64).map_err(|_| malformed.clone())?;
        if blob.len() < 5 {
            return Err(malformed);
        }
        // Step 2: lines by other keys are not ours to judge.
        if name != key.name || blob[..4] != key.id {
            continue;
        }
        // Step 3: every line by the pinned key must verify, strictly.
        let bad = || NoteError::BadSignature {
            line: line_no,
            key: key.label(),
        };
        let signature = Signature::from_slice(&blob[4..]).map_err(|_| bad())?;
        key.key
            .verify_strict(text.as_bytes(), &signature)
            .map_err(|_| bad())?;
        verified += 1;
    }
    if verified == 0 {
        return Err(NoteError::NotSignedByKey { key: key.label() });
    }
    Ok(text)
}

/// The body of a Gatehouse checkpoint note (section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// The number of events the checkpoint commits to.
    pub size: u64,
    /// `MTH(D[0:size])`.
    pub root: [u8; 32],
    /// `link[size-1]`, the chain head of the first `size` events.
    pub chain: [u8; 32],
    /// Signed by a writer after a restart over the unsigned events it found
    /// on disk (format v2, section 5.3), not over its own tree in memory.
    pub recovered: bool,
}

impl Checkpoint {
    /// Parses a checkpoint text: exactly the four lines origin, size, root
    /// and `chain <base64>`, each ending in a newline.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let body = text.strip_suffix('\n').ok_or(NoteError::LineCount(0))?;
        let lines: Vec<&str> = body.split('\n').collect();
        // Format v2 marks a checkpoint that a restarted writer signed over
        // events it found on disk, rather than over its own tree in memory.
        let (origin, size, root, chain, recovered) = match lines[..] {
            [origin, size, root, chain] => (origin, size, root, chain, false),
            [origin, size, root, chain, "recovered"] => (origin, size, root, chain, true),
            _ => return Err(NoteError::LineCount(lines.len())),
        };
        if origin.is_empty() {
            return Err(NoteError::EmptyOrigin);
        }
        let canonical_decimal = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size_value = canonical_decimal
            .then(|| size.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| NoteError::InvalidSize(size.to_owned()))?;
        let root_value =
            decode_hash(root).ok_or_else(|| NoteError::InvalidRoot(root.to_owned()))?;
        let chain_value = chain
            .strip_prefix("chain ")
            .and_then(decode_hash)
            .ok_or_else(|| NoteError::InvalidChain(chain.to_owned()))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size: size_value,
            root: root_value,
            chain: chain_value,
            recovered,
        })
    }

    /// The checkpoint's text, as it is signed.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\nchain {}\n{}",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            BASE64.encode(self.chain),
            if self.recovered { "recovered\n" } else { "" }
        )
    }
}

fn decode_hash(b64: &str) -> Option<[u8; 32]> {
    BASE64.decode(b64).ok()?.try_into().ok()
}

/// Verifies a checkpoint note with the pinned key and parses its body:
/// section 5 steps 1 to 3, and the format part of step 4.
pub fn open_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(open(note, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Go's `golang.org/x/mod/sumdb/note` documentation,
    /// which the C2SP signed-note specification adopts.
    const PETER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_SIG: &str = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

    fn peter_note() -> String {
        format!("{PETER_TEXT}\n\u{2014} PeterNeumann {PETER_SIG}\n")
    }

    #[test]
    fn parses_the_go_example_key_and_opens_its_note() {
        let key = VerifierKey::parse(PETER_KEY).unwrap();
        assert_eq!(key.name(), "PeterNeumann");
        assert_eq!(key.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(key.to_string(), PETER_KEY);
        assert_eq!(open(&peter_note(), &key), Ok(PETER_TEXT));
        let tampered = peter_note().replace("cryptography", "cryptographY");
        assert!(matches!(
            open(&tampered, &key),
            Err(NoteError::BadSignature { line: 1, .. })
        ));
    }

    #[test]
    fn rejects_key_manglings() {
        assert_eq!(VerifierKey::parse("PeterNeumann"), Err(KeyError::Malformed));
        assert!(matches!(
            VerifierKey::parse(
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(KeyError::InvalidName(_))
        ));
        assert!(matches!(
            VerifierKey::parse("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(KeyError::InvalidKeyId(_))
        ));
        assert!(matches!(
            VerifierKey::parse(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        assert!(matches!(
            VerifierKey::parse("PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        assert_eq!(
            VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T"),
            Err(KeyError::InvalidBase64)
        );
        assert_eq!(
            VerifierKey::parse("PeterNeumann+c74f20a3+ApdNuW1BpMMI"),
            Err(KeyError::UnsupportedAlgorithm(2))
        );
        assert_eq!(
            VerifierKey::parse("PeterNeumann+c74f20a3+AQID"),
            Err(KeyError::WrongLength(3))
        );
        // Every proper substring of a valid key is rejected.
        for i in 0..PETER_KEY.len() {
            for j in i + 1..=PETER_KEY.len() {
                if (i, j) != (0, PETER_KEY.len()) {
                    assert!(VerifierKey::parse(&PETER_KEY[i..j]).is_err(), "{i}..{j}");
                }
            }
        }
    }

    #[test]
    fn ignores_other_keys_and_requires_one_of_ours() {
        let key = VerifierKey::parse(PETER_KEY).unwrap();
        // A line by another key (same name, other id) before ours.
        let other = "\u{2014} PeterNeumann AAAAAAAA\n";
        let note = format!("{PETER_TEXT}\n{other}\u{2014} PeterNeumann {PETER_SIG}\n");
        assert_eq!(open(&note, &key), Ok(PETER_TEXT));
        let note = format!("{PETER_TEXT}\n\u{2014} Someone {PETER_SIG}\n");
        assert!(matches!(
            open(&note, &key),
            Err(NoteError::NotSignedByKey { .. })
        ));
        // A second line by our key that fails rejects the note.
        let mut bad = BASE64.decode(PETER_SIG).unwrap();
        bad[10] ^= 1;
        let note = format!(
            "{PETER_TEXT}\n\u{2014} PeterNeumann {PETER_SIG}\n\u{2014} PeterNeumann {}\n",
            BASE64.encode(&bad)
        );
        assert!(matches!(
            open(&note, &key),
            Err(NoteError::BadSignature { line: 2, .. })
        ));
    }

    #[test]
    fn rejects_malformed_notes() {
        let key = VerifierKey::parse(PETER_KEY).unwrap();
        let good = peter_note();
        assert_eq!(
            open(good.trim_end(), &key),
            Err(NoteError::UnterminatedSignatures)
        );
        assert_eq!(
            open(&good.replace("\n\n", "\n"), &key),
            Err(NoteError::NoSignatureBlock)
        );
        assert_eq!(
            open(&good.replace('\u{2014}', "-"), &key),
            Err(NoteError::MalformedSignatureLine { line: 1 })
        );
        assert_eq!(
            open(&good.replace("problem,", "problem,\r"), &key),
            Err(NoteError::ControlCharacter(0x0d))
        );
        // A trailing empty line makes the signature block empty.
        assert_eq!(
            open(&format!("{good}\n"), &key),
            Err(NoteError::UnterminatedSignatures)
        );
        assert_eq!(
            open(&good.replace("\n\u{2014}", "\n\u{2014} \n\u{2014}"), &key),
            Err(NoteError::MalformedSignatureLine { line: 1 })
        );
        assert_eq!(
            open(&good.replace("AM=", "AM"), &key),
            Err(NoteError::MalformedSignatureLine { line: 1 })
        );
    }

    #[test]
    fn parses_checkpoint_bodies() {
        let cp = Checkpoint {
            origin: "gatehouse.example/log".into(),
            size: 10,
            root: [1; 32],
            chain: [2; 32],
            recovered: false,
        };
        let text = cp.to_text();
        let recovered = Checkpoint {
            recovered: true,
            ..cp.clone()
        };
        assert_eq!(Checkpoint::parse(&recovered.to_text()), Ok(recovered));
        assert_eq!(Checkpoint::parse(&text), Ok(cp.clone()));
        assert_eq!(
            Checkpoint::parse(&text.replace("\n10\n", "\n010\n")),
            Err(NoteError::InvalidSize("010".into()))
        );
        assert_eq!(
            Checkpoint::parse(&text.replace("\n10\n", "\n+10\n")),
            Err(NoteError::InvalidSize("+10".into()))
        );
        assert_eq!(
            Checkpoint::parse(&text.replace("\n10\n", "\n18446744073709551616\n")),
            Err(NoteError::InvalidSize("18446744073709551616".into()))
        );
        assert!(matches!(
            Checkpoint::parse(&text.replace("chain ", "chain  ")),
            Err(NoteError::InvalidChain(_))
        ));
        assert!(matches!(
            Checkpoint::parse(&text.replace("AQE=", "AQ==")),
            Err(NoteError::InvalidRoot(_))
        ));
        assert_eq!(
            Checkpoint::parse(&format!("{text}extra\n")),
            Err(NoteError::LineCount(5))
        );
        assert_eq!(
            Checkpoint::parse(&text[text.find('\n').unwrap()..]),
            Err(NoteError::EmptyOrigin)
        );
        assert_eq!(Checkpoint::parse(""), Err(NoteError::LineCount(0)));
    }
}
