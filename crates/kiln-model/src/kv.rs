//! Paged KV cache: fixed-size blocks, a free list, and block tables per sequence.
//!
//! Layers that attend to every position keep theirs in the *full* store, one block per
//! `block_size` positions of the sequence. Sliding-window layers (gpt-oss's even layers, most of
//! Gemma 3's) keep only the window in a *windowed* store of their own: once no future row can see
//! a block (all its positions are more than a window behind the sequence's end), it goes back to
//! the free list. [`Model::forward`](crate::Model::forward) runs at most [`UBATCH`] rows at a
//! time, so a sequence never holds more than `window − 1 + UBATCH` windowed positions.
//!
//! The storage itself belongs to the backend ([`Backend::Kv`]); this module does the
//! bookkeeping, which is the same on every device. Allocation fails with
//! [`ModelError::KvExhausted`], which a scheduler can handle (queue the request, preempt another).

use crate::backend::{Backend, RowKv};
use crate::{ModelError, Result};

/// Tokens per KV block.
pub const DEFAULT_BLOCK_SIZE: usize = 32;

/// Most rows one forward pass runs at once (llama.cpp's default micro-batch): longer batches are
/// split, which bounds activations and the windowed cache, and processes a long prompt in the
/// same pieces as llama.cpp.
pub const UBATCH: usize = 512;

/// Shape of one KV store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layer: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub block_size: usize,
    pub n_blocks: usize,
}

impl KvLayout {
    /// Bytes one position takes in this store: K and V of every layer, in f16.
    pub fn bytes_per_position(&self) -> u64 {
        (self.n_layer * self.n_head_kv * (self.head_dim + self.head_dim_v) * 2) as u64
    }
}

/// A sequence's view of the cache: its blocks in position order and how many positions it holds.
#[derive(Clone, Debug, Default)]
pub struct SeqKv {
    /// Full-attention layers: block `i` holds positions `i·block_size ..`.
    pub blocks: Vec<u32>,
    pub len: usize,
    /// Sliding-window layers: the blocks still within reach, the first of which is block number
    /// `window_first` of the sequence.
    pub window_blocks: Vec<u32>,
    pub window_first: usize,
}

/// One store: storage for some layers and its free blocks.
pub struct KvStore<B: Backend> {
    pub layout: KvLayout,
    pub store: B::Kv,
    free: Vec<u32>,
}

impl<B: Backend> KvStore<B> {
    fn new(backend: &B, layout: KvLayout) -> Result<Self> {
        let store = backend.kv(&layout)?;
        let free = (0..layout.n_blocks as u32).rev().collect();
        Ok(KvStore { layout, store, free })
    }

    /// Blocks not in use.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }
}

/// Which store a layer's K/V live in, and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerKv {
    Full(usize),
    Windowed(usize),
}

/// KV storage plus the block allocators.
pub struct KvCache<B: Backend> {
    pub full: KvStore<B>,
    pub windowed: Option<KvStore<B>>,
    /// The sliding window of the windowed layers (0 without them).
    pub window: usize,
    layers: Vec<LayerKv>,
}

/// The rows of a batch as each kind of layer addresses them.
pub struct LayerRows<'a> {
    pub full: Vec<RowKv<'a>>,
    pub windowed: Vec<RowKv<'a>>,
}

impl<B: Backend> KvCache<B> {
    /// Stores for layers whose windows are `windows[il]` (`None`: full attention), shaped as
    /// `shape` (its `n_layer` and `n_blocks` are set here): room for `n_ctx` positions in the
    /// full store and `n_seq` sequences' windows in the windowed one.
    pub fn new(backend: &B, shape: KvLayout, windows: &[Option<usize>], n_ctx: usize, n_seq: usize) -> Result<Self> {
        let bs = shape.block_size.max(1);
        let full_blocks = n_ctx.div_ceil(bs);
        let window = windows.iter().flatten().copied().max().unwrap_or(0);
        let (mut n_full, mut n_win) = (0, 0);
        let layers = windows
            .iter()
            .map(|w| match w {
                Some(_) => (LayerKv::Windowed(n_win), n_win += 1).0,
                None => (LayerKv::Full(n_full), n_full += 1).0,
            })
            .collect();
        let layout = |n_layer, n_blocks| KvLayout { n_layer, n_blocks, block_size: bs, ..shape.clone() };
        // A row sees `window` positions; a forward pass holds up to UBATCH new rows; the oldest
        // needed position may sit anywhere in its block, so one block more.
        let per_seq = ((window + UBATCH).div_ceil(bs) + 1).min(full_blocks);
        let windowed =
            if n_win > 0 { Some(KvStore::new(backend, layout(n_win, per_seq * n_seq.max(1)))?) } else { None };
        let full = KvStore::new(backend, layout(n_full, if n_full > 0 { full_blocks } else { 0 }))?;
        Ok(KvCache { full, windowed, window, layers })
    }

    /// The store of layer `il` and the layer's index in it, and whether it is windowed.
    pub fn layer(&mut self, il: usize) -> (&mut B::Kv, usize, bool) {
        match self.layers[il] {
            LayerKv::Full(i) => (&mut self.full.store, i, false),
            LayerKv::Windowed(i) => (&mut self.windowed.as_mut().expect("windowed layers have a store").store, i, true),
        }
    }

    /// Returns the windowed blocks of `seq` that no row at position `next` or later can see.
    fn trim(&mut self, seq: &mut SeqKv, next: usize) {
        let Some(w) = self.windowed.as_mut() else { return };
        let bs = w.layout.block_size;
        // The lowest position a row at `next` sees is next + 1 − window.
        let keep_from = (next + 1).saturating_sub(self.window) / bs;
        let drop = keep_from.saturating_sub(seq.window_first).min(seq.window_blocks.len());
        w.free.extend(seq.window_blocks.drain(..drop));
        seq.window_first += drop;
    }

    /// Blocks the sequences still need for new lengths `new_len` (their rows start at `s.len`).
    fn needed(&self, seqs: &[&mut SeqKv], new_len: &[usize]) -> (usize, usize) {
        let mut need = (0, 0);
        for (s, &len) in seqs.iter().zip(new_len) {
            if self.full.layout.n_layer > 0 {
                need.0 += len.div_ceil(self.full.layout.block_size).saturating_sub(s.blocks.len());
            }
            if let Some(w) = &self.windowed {
                let bs = w.layout.block_size;
                let first = s.window_first.max((s.len + 1).saturating_sub(self.window) / bs);
                need.1 += len.div_ceil(bs).saturating_sub(first.max(s.window_first + s.window_blocks.len()));
            }
        }
        need
    }

    /// Fails, taking nothing, unless the full store can hold every sequence at `new_len[i]` (the
    /// windowed store needs no more than a window and a micro-batch per sequence, which it was
    /// sized for).
    pub(crate) fn check_full(&self, seqs: &[&mut SeqKv], new_len: &[usize]) -> Result<()> {
        let (need, _) = self.needed(seqs, new_len);
        if need > self.full.free.len() {
            return Err(ModelError::KvExhausted { needed: need, free: self.full.free.len() });
        }
        Ok(())
    }

    /// Makes room for every sequence to grow to `new_len[i]`: frees the windowed blocks its new
    /// rows cannot see, then takes blocks from the free lists. Takes nothing unless all fit.
    pub fn reserve(&mut self, seqs: &mut [&mut SeqKv], new_len: &[usize]) -> Result<()> {
        for s in seqs.iter_mut() {
            let next = s.len;
            self.trim(s, next);
        }
        let (need_full, need_win) = self.needed(seqs, new_len);
        if need_full > self.full.free.len() {
            return Err(ModelError::KvExhausted { needed: need_full, free: self.full.free.len() });
        }
        if let Some(w) = &self.windowed
            && need_win > w.free.len()
        {
            return Err(ModelError::KvExhausted { needed: need_win, free: w.free.len() });
        }
        for (s, &len) in seqs.iter_mut().zip(new_len) {
            if self.full.layout.n_layer > 0 {
                let bs = self.full.layout.block_size;
                while s.blocks.len() < len.div_ceil(bs) {
                    s.blocks.push(self.full.free.pop().expect("checked above"));
                }
            }
            if let Some(w) = self.windowed.as_mut() {
                let bs = w.layout.block_size;
                if s.window_blocks.is_empty() {
                    s.window_first = (s.len + 1).saturating_sub(self.window) / bs;
                }
                while s.window_first + s.window_blocks.len() < len.div_ceil(bs) {
                    s.window_blocks.push(w.free.pop().expect("checked above"));
                }
            }
        }
        Ok(())
    }

    /// Called after a forward pass: frees what the sequences' next rows cannot see.
    pub(crate) fn after_forward(&mut self, seqs: &mut [&mut SeqKv]) {
        for s in seqs.iter_mut() {
            let next = s.len;
            self.trim(s, next);
        }
    }

    /// Returns all of `seq`'s blocks to the free lists.
    pub fn release(&mut self, seq: &mut SeqKv) {
        self.full.free.append(&mut seq.blocks);
        if let Some(w) = self.windowed.as_mut() {
            w.free.append(&mut seq.window_blocks);
        }
        *seq = SeqKv::default();
    }

    /// Row views of a batch for both kinds of layer.
    pub(crate) fn rows<'a>(seqs: &'a [&mut SeqKv], seq_of_row: &[usize], pos: &[usize]) -> LayerRows<'a> {
        let full = seq_of_row
            .iter()
            .zip(pos)
            .map(|(&s, &p)| RowKv { blocks: &seqs[s].blocks, first_block: 0, pos: p })
            .collect();
        let windowed = seq_of_row
            .iter()
            .zip(pos)
            .map(|(&s, &p)| RowKv { blocks: &seqs[s].window_blocks, first_block: seqs[s].window_first, pos: p })
            .collect();
        LayerRows { full, windowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use std::sync::Arc;

    fn cache(windows: &[Option<usize>], n_ctx: usize) -> KvCache<CpuBackend> {
        let mut w = kiln_gguf::GgufWriter::new();
        w.add("general.architecture", "none").unwrap();
        let file = Arc::new(kiln_gguf::GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap());
        let shape = KvLayout { n_layer: 0, n_head_kv: 1, head_dim: 2, head_dim_v: 2, block_size: 4, n_blocks: 0 };
        KvCache::new(&CpuBackend::new(file, 1), shape, windows, n_ctx, 1).unwrap()
    }

    #[test]
    fn windowed_blocks_are_returned_once_out_of_reach() {
        let mut kv = cache(&[Some(6), None], 4096);
        let w_total = kv.windowed.as_ref().unwrap().free_blocks();
        // (6 + 512) / 4 rounded up, + 1
        assert_eq!(w_total, 131);
        assert_eq!(kv.full.free_blocks(), 1024);
        let mut s = SeqKv::default();
        for len in 1..=100usize {
            kv.reserve(&mut [&mut s], &[len]).unwrap();
            s.len = len;
            kv.after_forward(&mut [&mut s]);
            // the next row (at `len`) sees len-5 ..= len: those blocks, and no block before them
            let lo = (len + 1).saturating_sub(6);
            assert_eq!(s.window_first, lo / 4, "len {len}");
            assert!(s.window_first * 4 <= lo);
            assert_eq!(s.blocks.len(), len.div_ceil(4));
            assert_eq!(w_total - kv.windowed.as_ref().unwrap().free_blocks(), s.window_blocks.len());
            assert!(s.window_blocks.len() <= 3, "len {len}: {} windowed blocks", s.window_blocks.len());
        }
        kv.release(&mut s);
        assert_eq!(kv.windowed.as_ref().unwrap().free_blocks(), w_total);
        assert_eq!(kv.full.free_blocks(), 1024);
    }

    #[test]
    fn a_batch_keeps_what_its_first_row_sees() {
        let mut kv = cache(&[Some(8)], 4096);
        assert_eq!(kv.full.free_blocks(), 0, "no full-attention layers");
        let mut s = SeqKv::default();
        kv.reserve(&mut [&mut s], &[20]).unwrap();
        s.len = 20;
        kv.after_forward(&mut [&mut s]);
        assert_eq!(s.window_first, 3); // the next row (20) sees 13..=20
        kv.reserve(&mut [&mut s], &[30]).unwrap();
        assert_eq!(s.window_first, 3); // rows 20..30: the first sees from 13 on (block 3)
        assert_eq!(s.window_first + s.window_blocks.len(), 8);
    }

    #[test]
    fn exhaustion_takes_nothing() {
        let mut kv = cache(&[None], 64);
        let mut s = SeqKv::default();
        let err = kv.reserve(&mut [&mut s], &[65]).unwrap_err();
        assert!(matches!(err, ModelError::KvExhausted { needed: 17, free: 16 }), "{err}");
        assert!(s.blocks.is_empty());
        assert_eq!(kv.full.free_blocks(), 16);
    }
}
