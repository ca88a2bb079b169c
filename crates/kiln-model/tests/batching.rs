//! Batches through `Model::forward` on a synthetic gpt-oss model (`kiln-synth`, tiny preset with
//! a window of 16): several sequences interleaved in one batch give each sequence the logits it
//! gets alone; a batch longer than the 512-row micro-batch gives the logits of the same tokens fed
//! in pieces; the windowed KV store holds no more than a window per sequence; a batch the cache
//! cannot hold fails without changing anything.

use std::sync::Arc;

use kiln_model::{Batch, CpuBackend, Model, ModelError, SeqKv};

fn model() -> Model<CpuBackend> {
    let bytes = kiln_synth::GptOss { layers: 3, ..kiln_synth::GptOss::tiny() }.model().unwrap().to_bytes().unwrap();
    let file = Arc::new(kiln_gguf::GgufFile::from_bytes(bytes).unwrap());
    Model::load(file.clone(), CpuBackend::new(file, 2)).unwrap()
}

/// Token ids from a splitmix64 stream, below the byte vocabulary's 256 byte tokens.
fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut r = kiln_synth::Rng::new(seed);
    (0..n).map(|_| (r.next_u64() % 256) as u32).collect()
}

fn alone(m: &Model<CpuBackend>, toks: &[u32]) -> Vec<f32> {
    let mut kv = m.kv_cache(4096).unwrap();
    let mut seq = SeqKv::default();
    m.forward(&mut kv, &mut [&mut seq], &Batch::single(toks), 4096).unwrap()
}

#[test]
fn interleaved_sequences_get_their_own_logits() {
    let m = model();
    // Both sequences long enough (≥ 64 rows) that alone and together they take the same
    // attention path: every kernel is then row-wise and the logits must be equal to the bit.
    let (a, b) = (tokens(90, 1), tokens(70, 2));
    let mut kv = m.kv_cache_for(4096, 2).unwrap();
    let (mut sa, mut sb) = (SeqKv::default(), SeqKv::default());
    // rows alternate a, b while both last, then the rest of a; logits of both last rows
    let mut batch = Batch { tokens: Vec::new(), seq: Vec::new(), logits: Vec::new() };
    for i in 0..90 {
        batch.tokens.push(a[i]);
        batch.seq.push(0);
        if i < 70 {
            batch.tokens.push(b[i]);
            batch.seq.push(1);
        }
    }
    let last_b = batch.seq.iter().rposition(|&s| s == 1).unwrap();
    batch.logits = vec![batch.tokens.len() - 1, last_b];
    let got = m.forward(&mut kv, &mut [&mut sa, &mut sb], &batch, 4096).unwrap();
    let nv = m.config.n_vocab;
    assert_eq!(got.len(), 2 * nv);
    assert_eq!(&got[..nv], &alone(&m, &a)[..]);
    assert_eq!(&got[nv..], &alone(&m, &b)[..]);
    assert_eq!((sa.len, sb.len), (90, 70));
}

#[test]
fn long_batches_run_in_micro_batches() {
    let m = model();
    let toks = tokens(1100, 3);
    let one = alone(&m, &toks);
    // the same in explicit pieces of 512, 512 and 76
    let mut kv = m.kv_cache(4096).unwrap();
    let mut seq = SeqKv::default();
    let mut last = Vec::new();
    for piece in toks.chunks(512) {
        last = m.forward(&mut kv, &mut [&mut seq], &Batch::single(piece), 4096).unwrap();
    }
    assert_eq!(one, last, "one call of 1100 rows = three calls of ≤ 512");
    // the windowed store kept about a window (16 positions in blocks of 32)
    let bs = kv.windowed.as_ref().unwrap().layout.block_size;
    assert!(seq.window_blocks.len() <= kv.window.div_ceil(bs) + 1, "{} blocks", seq.window_blocks.len());
    assert_eq!(seq.blocks.len(), 1100usize.div_ceil(bs));
}

#[test]
fn a_batch_that_does_not_fit_changes_nothing() {
    let m = model();
    let mut kv = m.kv_cache(600).unwrap();
    let mut seq = SeqKv::default();
    let free = kv.full.free_blocks();
    let err = m.forward(&mut kv, &mut [&mut seq], &Batch::single(&tokens(700, 4)), 4096).unwrap_err();
    assert!(matches!(err, ModelError::KvExhausted { .. }), "{err}");
    assert_eq!((seq.len, seq.blocks.len(), kv.full.free_blocks()), (0, 0, free));
    // and the cache still works
    let logits = m.forward(&mut kv, &mut [&mut seq], &Batch::single(&tokens(100, 5)), 600).unwrap();
    assert_eq!(logits.len(), m.config.n_vocab);
}
