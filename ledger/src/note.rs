//! C2SP signed notes with Ed25519 keys (docs/ledger-format.md, section 5).
//!
//! Key strings and note layout follow <https://c2sp.org/signed-note> and Go's
//! `golang.org/x/mod/sumdb/note`, so checkpoints can be checked by the
//! transparency ecosystem's tools, not only by Gatehouse.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Signature type byte for Ed25519 in C2SP key encodings.
const ED25519: u8 = 0x01;

/// Why a key string or note was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NoteError {
    /// A key string is not in the expected format.
    #[error("malformed key: {0}")]
    MalformedKey(String),
    /// A key name is empty, or has whitespace or `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    BadName(String),
    /// The note is not a well-formed signed note.
    #[error("malformed note: {0}")]
    MalformedNote(String),
    /// A signature by the trusted key does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// No signature by the trusted key is present.
    #[error("note carries no signature by the trusted key {0}")]
    Unsigned(String),
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name.contains('+')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(NoteError::BadName(name.into()));
    }
    Ok(())
}

/// First four bytes of `SHA-256(name || 0x0A || 0x01 || public key)`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn hex4(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_key_material(
    name: &str,
    id_hex: &str,
    b64: &str,
    what: &str,
) -> Result<([u8; 4], [u8; 32]), NoteError> {
    check_name(name)?;
    let raw = B64
        .decode(b64)
        .map_err(|e| NoteError::MalformedKey(format!("{what}: base64: {e}")))?;
    if raw.len() != 33 || raw[0] != ED25519 {
        return Err(NoteError::MalformedKey(format!(
            "{what}: expected an Ed25519 key (0x01 followed by 32 bytes)"
        )));
    }
    let id = u32::from_str_radix(id_hex, 16)
        .ok()
        .filter(|_| id_hex.len() == 8)
        .ok_or_else(|| {
            NoteError::MalformedKey(format!("{what}: key id {id_hex:?} is not 8 hex digits"))
        })?;
    Ok((id.to_be_bytes(), raw[1..].try_into().expect("32 bytes")))
}

/// The public half: a `<name>+<id>+<base64>` verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses a verifier key string.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected <name>+<key id>+<base64 key>".into(),
            ));
        };
        let (id, public) = parse_key_material(name, id, b64, "verifier key")?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| {
            NoteError::MalformedKey("verifier key is not a valid Ed25519 point".into())
        })?;
        if key_id(name, &public) != id {
            return Err(NoteError::MalformedKey(
                "key id does not match the key".into(),
            ));
        }
        Ok(VerifierKey {
            name: name.into(),
            id,
            key,
        })
    }

    /// The key's name (Gatehouse uses the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<key id>`, see [`key_label`].
    pub fn label(&self) -> String {
        key_label(&self.name, &self.id)
    }

    /// Verifies `note` and returns its text. Signatures by other keys are
    /// ignored; a bad signature by this key rejects the note.
    pub fn verify<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let (text, sigs) = split_note(note)?;
        let mut good = 0;
        for line in sigs.split_terminator('\n') {
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
                NoteError::MalformedNote(format!(
                    "signature line {line:?} does not start with an em dash"
                ))
            })?;
            let (name, b64) = rest.split_once(' ').ok_or_else(|| {
                NoteError::MalformedNote(format!("signature line {line:?} has no signature"))
            })?;
            let raw = B64.decode(b64).map_err(|_| {
                NoteError::MalformedNote(format!("signature line {line:?} is not base64"))
            })?;
            if raw.len() < 4 {
                return Err(NoteError::MalformedNote(format!(
                    "signature line {line:?} is too short"
                )));
            }
            if name != self.name || raw[..4] != self.id {
                continue;
            }
            let sig = Signature::from_slice(&raw[4..])
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            self.key
                .verify_strict(text.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            good += 1;
        }
        if good == 0 {
            return Err(NoteError::Unsigned(self.to_string()));
        }
        Ok(text)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex4(&self.id), B64.encode(raw))
    }
}

/// Splits a note into its text (with final newline) and signature block.
fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::MalformedNote(
            "control characters other than newline".into(),
        ));
    }
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::MalformedNote("no blank line before the signatures".into()))?;
    let (text, sigs) = (&note[..at + 1], &note[at + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "signature block must end with a newline".into(),
        ));
    }
    Ok((text, sigs))
}

/// The key name and key id a signature line names.
pub type Signer = (String, [u8; 4]);

/// The text of a signed note and the name and key id of each of its
/// signature lines, *without checking any signature*: for tools that carry a
/// note onwards (evidence bundles) and must name the key that signed it,
/// leaving verification to whoever holds the verifier key.
pub fn unverified_parts(note: &str) -> Result<(&str, Vec<Signer>), NoteError> {
    let (text, sigs) = split_note(note)?;
    let mut signers = Vec::new();
    for line in sigs.split_terminator('\n') {
        let malformed =
            || NoteError::MalformedNote(format!("signature line {line:?} is malformed"));
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(malformed)?;
        let (name, b64) = rest.split_once(' ').ok_or_else(malformed)?;
        let raw = B64.decode(b64).map_err(|_| malformed())?;
        let id: [u8; 4] = raw
            .get(..4)
            .ok_or_else(malformed)?
            .try_into()
            .expect("4 bytes");
        signers.push((name.to_owned(), id));
    }
    Ok((text, signers))
}

/// `<name>+<key id as 8 hex digits>`: how a key is named without its public
/// half (the first two parts of a verifier key string).
pub fn key_label(name: &str, id: &[u8; 4]) -> String {
    format!("{name}+{}", hex4(id))
}

/// The secret half: signs checkpoint notes.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({})", self.verifier())
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.into(),
            id,
            key,
        })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| NoteError::MalformedKey(format!("no randomness for a new key: {e}")))?;
        Self::from_seed(name, seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let rest = s.strip_prefix("PRIVATE+KEY+").ok_or_else(|| {
            NoteError::MalformedKey("signing key must start with PRIVATE+KEY+".into())
        })?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected PRIVATE+KEY+<name>+<key id>+<base64 seed>".into(),
            ));
        };
        let (id, seed) = parse_key_material(name, id, b64, "signing key")?;
        let signer = Self::from_seed(name, seed)?;
        if signer.id != id {
            return Err(NoteError::MalformedKey(
                "key id does not match the key".into(),
            ));
        }
        Ok(signer)
    }

    /// The secret key string (write it only to an owner-only file).
    pub fn to_secret_string(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex4(&self.id),
            B64.encode(raw)
        )
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `text` (which must end in a newline) into a signed note.
    pub fn sign(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&sig.to_bytes());
        format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_round_trip() {
        let s = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
        let again = NoteSigner::parse(&s.to_secret_string()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        assert_eq!(
            VerifierKey::parse(&s.verifier().to_string()).unwrap(),
            s.verifier()
        );
    }

    #[test]
    fn notes_verify_and_reject_edits_and_other_keys() {
        let s = NoteSigner::from_seed("log", [1; 32]).unwrap();
        let note = s.sign("hello\n1\n");
        assert_eq!(s.verifier().verify(&note).unwrap(), "hello\n1\n");
        let edited = note.replacen("hello", "jello", 1);
        assert!(matches!(
            s.verifier().verify(&edited),
            Err(NoteError::BadSignature(_))
        ));
        let other = NoteSigner::from_seed("log", [2; 32]).unwrap();
        assert!(matches!(
            other.verifier().verify(&note),
            Err(NoteError::Unsigned(_))
        ));
        // A foreign signature alongside ours is ignored.
        let cosigned = format!(
            "{}{}",
            note,
            other.sign("hello\n1\n").rsplit_once("\n\n").unwrap().1
        );
        assert!(s.verifier().verify(&cosigned).is_ok());
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a b", "a+b", "tab\t"] {
            assert!(NoteSigner::from_seed(name, [0; 32]).is_err());
        }
    }
}
