//! The scheduler's cost per engine step, beside the model's.
//!
//! Run: `cargo bench -p kiln-sched --bench step` (about a minute on 2 cores).
//!
//! On the tiny random llama of kiln-synth (2 layers, width 64: a forward pass of 32 decode rows
//! takes tens of microseconds), two measurements of the same work, 32 sequences × 16 greedy tokens
//! after a 4-token prompt each:
//!
//! - `engine/32x16`: through [`Engine`]: submit 32 requests, drain their event streams (admission,
//!   batching, KV bookkeeping, sampling, detokenizing, the channel per token);
//! - `forward/32x16`: the same forward passes called directly (one batch of the 32 prompts, then
//!   15 batches of one row per sequence), with greedy picks.
//!
//! The difference divided by the 16 steps is the engine's own cost per step
//! (docs/PERFORMANCE.md has the measured numbers).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_model::{Batch, CpuBackend, Model, SeqKv};
use kiln_sched::{Engine, EngineConfig, Event, Input, Request, SamplingParams};

const SEQS: usize = 32;
const TOKENS: usize = 16;

fn file() -> Arc<kiln_gguf::GgufFile> {
    let bytes = kiln_synth::Llama::tiny().model().unwrap().to_bytes().unwrap();
    Arc::new(kiln_gguf::GgufFile::from_bytes(bytes).unwrap())
}

fn model(f: &Arc<kiln_gguf::GgufFile>) -> Model<CpuBackend> {
    Model::load(f.clone(), CpuBackend::new(f.clone(), 1)).unwrap()
}

fn prompt(i: usize, n_vocab: usize) -> Vec<u32> {
    (0..4).map(|j| ((i * 131 + j * 17 + 5) % n_vocab) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let f = file();
    let tokenizer = Arc::new(kiln_tokenizer::Tokenizer::from_gguf(&f).unwrap());
    let cfg = EngineConfig { max_batch: SEQS, n_ctx: Some(64), ..EngineConfig::default() };
    let engine = Engine::start(model(&f), tokenizer, cfg).unwrap();
    let nv = engine.info().n_vocab;
    let mut g = c.benchmark_group("step");
    g.bench_function(format!("engine/{SEQS}x{TOKENS}"), |b| {
        b.iter(|| {
            let subs: Vec<_> = (0..SEQS)
                .map(|i| {
                    let mut r = Request::new(Input::Tokens(prompt(i, nv)));
                    r.sampling = SamplingParams::greedy();
                    r.max_tokens = Some(TOKENS);
                    r.ignore_eos = true;
                    engine.submit(r).unwrap()
                })
                .collect();
            for mut s in subs {
                while let Some(e) = s.events.blocking_recv() {
                    if matches!(e, Event::Final(_)) {
                        break;
                    }
                }
            }
        })
    });
    let m = model(&f);
    g.bench_function(format!("forward/{SEQS}x{TOKENS}"), |b| {
        b.iter(|| {
            let mut kv = m.kv_cache_for(64 * SEQS, SEQS).unwrap();
            let mut seqs: Vec<SeqKv> = (0..SEQS).map(|_| SeqKv::default()).collect();
            // Step 1: every prompt in one batch; then one row per sequence per step.
            let mut batch = Batch::default();
            for i in 0..SEQS {
                let p = prompt(i, nv);
                batch.tokens.extend(&p);
                batch.seq.extend(std::iter::repeat_n(i, p.len()));
                batch.logits.push(batch.tokens.len() - 1);
            }
            for _ in 0..TOKENS {
                let mut refs: Vec<&mut SeqKv> = seqs.iter_mut().collect();
                let logits = m.forward(&mut kv, &mut refs, &batch, 64).unwrap();
                let next: Vec<u32> = logits.chunks(nv).map(argmax).collect();
                batch = Batch { tokens: next, seq: (0..SEQS).collect(), logits: (0..SEQS).collect() };
            }
            for s in &mut seqs {
                kv.release(s);
            }
        })
    });
    g.finish();
    engine.drain(std::time::Duration::from_secs(1));
    engine.join();
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b }) as u32
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
