//! Paged KV cache: fixed-size blocks, a free list, and one block table per sequence.
//!
//! The storage itself belongs to the backend ([`Backend::Kv`]); this module does the
//! bookkeeping, which is the same on every device. Allocation fails with
//! [`ModelError::KvExhausted`], which a scheduler can handle (queue the request, preempt another).

use crate::backend::Backend;
use crate::{ModelError, Result};

/// Tokens per KV block.
pub const DEFAULT_BLOCK_SIZE: usize = 32;

/// Shape of the KV storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layer: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub block_size: usize,
    pub n_blocks: usize,
}

/// A sequence's view of the cache: its blocks in position order and how many positions it holds.
#[derive(Clone, Debug, Default)]
pub struct SeqKv {
    pub blocks: Vec<u32>,
    pub len: usize,
}

/// KV storage plus the block allocator.
pub struct KvCache<B: Backend> {
    pub layout: KvLayout,
    pub store: B::Kv,
    free: Vec<u32>,
}

impl<B: Backend> KvCache<B> {
    /// Storage for `n_ctx_total` positions across all sequences, rounded up to whole blocks.
    pub fn new(backend: &B, mut layout: KvLayout) -> Result<Self> {
        layout.block_size = layout.block_size.max(1);
        let store = backend.kv(&layout)?;
        let free = (0..layout.n_blocks as u32).rev().collect();
        Ok(KvCache { layout, store, free })
    }

    /// Blocks not in use.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Makes room in `seq` for positions up to `new_len` (exclusive), taking blocks from the free list.
    pub fn reserve(&mut self, seq: &mut SeqKv, new_len: usize) -> Result<()> {
        let bs = self.layout.block_size;
        let need = new_len.div_ceil(bs).saturating_sub(seq.blocks.len());
        if need > self.free.len() {
            return Err(ModelError::KvExhausted { needed: need, free: self.free.len() });
        }
        for _ in 0..need {
            seq.blocks.push(self.free.pop().expect("checked above"));
        }
        Ok(())
    }

    /// Returns all of `seq`'s blocks to the free list.
    pub fn release(&mut self, seq: &mut SeqKv) {
        self.free.append(&mut seq.blocks);
        seq.len = 0;
    }
}
