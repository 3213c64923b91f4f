//! The BLAKE3 hash chain over records (docs/ledger-format.md, section 4.1).
//!
//! The Merkle tree proves membership; the chain makes every event commit to
//! all before it in one cheap sequential pass, and its head rides in every
//! checkpoint as an extension line.

/// A chain link.
pub type Link = [u8; 32];

/// The link before event 0.
pub const GENESIS: Link = [0; 32];

/// Domain tag separating chain hashes from any other BLAKE3 use.
pub const DOMAIN: &[u8; 18] = b"gatehouse-chain-v1";

/// `BLAKE3(DOMAIN || prev || record)`.
pub fn link(prev: &Link, record: &[u8]) -> Link {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(record);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_depend_on_order_and_content() {
        let a = link(&GENESIS, b"a");
        let b = link(&a, b"b");
        assert_ne!(b, link(&link(&GENESIS, b"b"), b"a"));
        assert_ne!(a, link(&GENESIS, b"A"));
        assert_ne!(a, GENESIS);
    }
}
