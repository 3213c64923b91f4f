//! C2SP tlog-checkpoint bodies (docs/ledger-format.md, section 5).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::chain::Link;
use crate::merkle::Hash;
use crate::note::NoteError;

/// A tree head and chain head: what one signed note commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (also the signing key's name).
    pub origin: String,
    /// Number of events covered.
    pub size: u64,
    /// RFC 6962 root of those events.
    pub root: Hash,
    /// BLAKE3 chain link of the last covered event.
    pub chain: Link,
    /// Signed by a restarted writer over events it found on disk after the
    /// last checkpoint, not over its own tree in memory (format v2): the
    /// note's fifth line `recovered`.
    pub recovered: bool,
}

impl Checkpoint {
    /// The note text, each line ending in a newline.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\nchain {}\n{}",
            self.origin,
            self.size,
            B64.encode(self.root),
            B64.encode(self.chain),
            if self.recovered { "recovered\n" } else { "" }
        )
    }

    /// Parses note text produced by [`Checkpoint::text`]; strict, so a text
    /// parses only if it is exactly what the writer would have produced.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: &str| NoteError::MalformedNote(format!("checkpoint: {why}"));
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text must end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let (origin, size, root, chain, recovered) =
            match lines[..] {
                [origin, size, root, chain] => (origin, size, root, chain, false),
                [origin, size, root, chain, "recovered"] => (origin, size, root, chain, true),
                _ => return Err(bad(
                    "expected four lines (origin, size, root, chain) and an optional `recovered`",
                )),
            };
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_n: u64 = size
            .parse()
            .map_err(|_| bad("size is not a decimal number"))?;
        if size_n.to_string() != size {
            return Err(bad("size has leading zeros or a sign"));
        }
        let hash32 = |s: &str, what: &str| -> Result<[u8; 32], NoteError> {
            let raw = B64
                .decode(s)
                .map_err(|_| bad(&format!("{what} is not base64")))?;
            let arr: [u8; 32] = raw
                .try_into()
                .map_err(|_| bad(&format!("{what} is not 32 bytes")))?;
            if B64.encode(arr) != s {
                return Err(bad(&format!("{what} is not canonical base64")));
            }
            Ok(arr)
        };
        let root = hash32(root, "root")?;
        let chain = chain
            .strip_prefix("chain ")
            .ok_or_else(|| bad("fourth line must be `chain <base64>`"))?;
        let chain = hash32(chain, "chain head")?;
        Ok(Checkpoint {
            origin: origin.into(),
            size: size_n,
            root,
            chain,
            recovered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_parsing_is_strict() {
        let c = Checkpoint {
            origin: "gatehouse.example/prod".into(),
            size: 42,
            root: [3; 32],
            chain: [9; 32],
            recovered: false,
        };
        assert_eq!(Checkpoint::parse(&c.text()).unwrap(), c);
        let r = Checkpoint {
            recovered: true,
            ..c.clone()
        };
        assert!(r.text().ends_with("\nrecovered\n"));
        assert_eq!(Checkpoint::parse(&r.text()).unwrap(), r);
        assert!(Checkpoint::parse(&format!("{}other\n", c.text())).is_err());
        assert!(Checkpoint::parse(&c.text().replace("\n42\n", "\n042\n")).is_err());
        assert!(Checkpoint::parse(&c.text().replace("chain ", "chainz ")).is_err());
        assert!(Checkpoint::parse(c.text().trim_end()).is_err());
    }
}
