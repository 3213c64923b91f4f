//! The Merkle tree rebuilt around a few windows of events, from their
//! records and the writer's stored subtree hashes (docs/ledger-format.md,
//! section 1, `subtrees`).
//!
//! Checking some events against a signed root needs the hashes of every
//! other part of the tree. Hashing the whole log costs a second per million
//! events; the writer instead stores the hash of every complete subtree of
//! at least 256 events, so a window costs the records of the 256-event
//! blocks it touches (and of the last, partial block, which no stored
//! subtree covers) plus one stored hash per level. The stored hashes are not
//! authenticated: whatever is built from them is compared with a signed
//! root, and a wrong one makes that comparison fail exactly as an altered
//! record would.

use std::collections::HashMap;
use std::ops::Range;

use crate::merkle::{empty_root, leaf_hash, node_hash, root_of, Hash, SUBTREE_MIN_LEVEL};
use crate::reader::LedgerReader;
use crate::LedgerError;

/// Events per block: the leaves of the smallest stored subtree.
pub const BLOCK: u64 = 1 << SUBTREE_MIN_LEVEL;

/// A tree of `size` leaves, some of whose blocks are hashed from records.
pub struct TreeWindow<'r> {
    reader: &'r LedgerReader,
    size: u64,
    /// Block-aligned ranges (ending at `size` at most) whose records are
    /// hashed rather than taken from stored subtrees.
    open: Vec<Range<u64>>,
    /// Leaf hashes of the blocks read so far, by block number.
    blocks: HashMap<u64, Vec<Hash>>,
    hashed: u64,
}

impl<'r> TreeWindow<'r> {
    /// A window on the tree of the first `size` events, hashing the blocks
    /// `touched` overlaps, and the partial block that ends each tree size in
    /// `tails` (and `size`), which no stored subtree covers.
    pub fn new(
        reader: &'r LedgerReader,
        size: u64,
        touched: impl IntoIterator<Item = Range<u64>>,
        tails: &[u64],
    ) -> Self {
        let blocks = touched
            .into_iter()
            .chain(
                tails
                    .iter()
                    .chain(std::iter::once(&size))
                    .filter(|&&t| !t.is_multiple_of(BLOCK))
                    .map(|&t| t - 1..t),
            )
            .filter_map(|r| {
                let end = r.end.min(size);
                (r.start < end)
                    .then(|| r.start / BLOCK * BLOCK..(end.div_ceil(BLOCK) * BLOCK).min(size))
            });
        TreeWindow {
            reader,
            size,
            open: merge(blocks),
            blocks: HashMap::new(),
            hashed: 0,
        }
    }

    /// Records hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// `MTH(D[lo:hi])`, for a range an RFC 9162 proof or root can ask for
    /// (an aligned complete subtree, or one ending at a tree size given to
    /// [`TreeWindow::new`]). `on_record` sees each record of a block the
    /// first time the block is read, in order; a caller that computes the
    /// root first (left to right) sees every open block's records in
    /// sequence order. `None`: a stored subtree is missing, so the window
    /// cannot be rebuilt and the caller must hash the whole log.
    pub fn mth(
        &mut self,
        lo: u64,
        hi: u64,
        on_record: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<Option<Hash>, LedgerError> {
        let width = hi - lo;
        if width == 0 {
            return Ok(Some(empty_root()));
        }
        // Before the oldest segment kept, the tree is its opening frontier.
        if let Some(hash) = self.reader.frontier_node(lo, hi) {
            return Ok(Some(hash));
        }
        if width >= BLOCK
            && width.is_power_of_two()
            && lo.is_multiple_of(width)
            && !self.is_open(lo, hi)
        {
            let level = width.trailing_zeros();
            return self.reader.subtree(level, lo >> level);
        }
        if width <= BLOCK && lo / BLOCK == (hi - 1) / BLOCK {
            let block = lo / BLOCK;
            let leaves = self.block(block, on_record)?;
            let base = block * BLOCK;
            return Ok(leaves
                .get((lo - base) as usize..(hi - base) as usize)
                .map(root_of));
        }
        let k = 1u64 << (63 - (width - 1).leading_zeros());
        let Some(left) = self.mth(lo, lo + k, on_record)? else {
            return Ok(None);
        };
        let Some(right) = self.mth(lo + k, hi, on_record)? else {
            return Ok(None);
        };
        Ok(Some(node_hash(&left, &right)))
    }

    /// The leaf hash of event `seq`, from its block's records.
    pub fn leaf(&mut self, seq: u64) -> Result<Option<Hash>, LedgerError> {
        let leaves = self.block(seq / BLOCK, &mut |_, _| {})?;
        Ok(leaves.get((seq % BLOCK) as usize).copied())
    }

    fn is_open(&self, lo: u64, hi: u64) -> bool {
        self.open.iter().any(|r| r.start < hi && lo < r.end)
    }

    /// The leaf hashes of one block (up to the tree size), read once.
    fn block(
        &mut self,
        block: u64,
        on_record: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<&[Hash], LedgerError> {
        if !self.blocks.contains_key(&block) {
            let start = block * BLOCK;
            let end = (start + BLOCK).min(self.size);
            let mut leaves = Vec::with_capacity((end - start) as usize);
            self.reader.for_each_record(start..end, |seq, bytes| {
                leaves.push(leaf_hash(bytes));
                on_record(seq, bytes);
            })?;
            self.hashed += end - start;
            self.blocks.insert(block, leaves);
        }
        Ok(&self.blocks[&block])
    }
}

/// `ranges` sorted and merged, empty ones dropped.
pub fn merge(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}
