//! The BLAKE3 hash chain (specification section 4.1).
//!
//! The chain exists alongside the Merkle tree because it makes every event
//! depend on every earlier one in a single value that is cheap to recompute
//! while streaming: editing any event changes every later link, and the
//! chain head is committed in every checkpoint.

/// The domain separator that starts every link's hash input: the 18 ASCII
/// bytes `gatehouse-chain-v1`, with no terminator.
pub const DOMAIN: &[u8; 18] = b"gatehouse-chain-v1";

/// `link[-1]`: the link before the first event, and the chain head of an
/// empty log.
pub const GENESIS: [u8; 32] = [0; 32];

/// `link[i] = BLAKE3("gatehouse-chain-v1" || link[i-1] || data[i])`.
#[inline]
pub fn link(previous: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(previous);
    hasher.update(data);
    *hasher.finalize().as_bytes()
}

/// The chain head of a sequence of records: the link of the last one, or
/// [`GENESIS`] for none. The verifier computes links one at a time while
/// streaming; this is for tests and tools that hold the records in memory.
pub fn head<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    records
        .into_iter()
        .fold(GENESIS, |previous, data| link(&previous, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_is_blake3_of_the_concatenation() {
        let previous = [7u8; 32];
        let data = b"\xa0";
        let mut input = b"gatehouse-chain-v1".to_vec();
        input.extend_from_slice(&previous);
        input.extend_from_slice(data);
        assert_eq!(link(&previous, data), *blake3::hash(&input).as_bytes());
    }

    #[test]
    fn head_of_nothing_is_genesis_and_every_record_matters() {
        assert_eq!(head([]), GENESIS);
        let a = head([&b"a"[..], b"b"]);
        assert_eq!(a, link(&link(&GENESIS, b"a"), b"b"));
        assert_ne!(a, head([&b"b"[..], b"a"]));
        assert_ne!(a, head([&b"ab"[..]]));
    }
}
