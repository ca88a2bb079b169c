//! One CPU decode step of the default model (SmolLM2-135M-Instruct Q4_1), and a 64-token prefill.
//!
//! Run: `cargo bench -p kiln-model --bench decode` (fetches the model on first use, like the tests).
//!
//! `decode/smollm2/pos64`: one token through the whole model at position 64 (a 64-token prompt is
//! in the KV cache), logits included; the sequence is set back one position after each step, so
//! every iteration computes the same position. `prefill/smollm2/64`: the 64-token prompt in one
//! forward call. Threads: `KILN_BENCH_THREADS` (default 2, the CI machine's cores).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_model::{Batch, CpuBackend, Model, SeqKv};

fn bench(c: &mut Criterion) {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let file = Arc::new(kiln_gguf::GgufFile::open(&path).unwrap());
    let threads = std::env::var("KILN_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let m = Model::load(file.clone(), CpuBackend::new(file, threads)).unwrap();
    let prompt: Vec<u32> = (0..64).map(|i| (i * 37 + 11) % 49152).collect();
    let mut g = c.benchmark_group("smollm2");
    g.throughput(Throughput::Elements(64));
    g.bench_function("prefill/64", |b| {
        let mut kv = m.kv_cache(128).unwrap();
        b.iter(|| {
            let mut seq = SeqKv::default();
            let l = m.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), 128).unwrap();
            kv.release(&mut seq);
            l
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode/pos64", |b| {
        let mut kv = m.kv_cache(128).unwrap();
        let mut seq = SeqKv::default();
        m.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), 128).unwrap();
        b.iter(|| {
            let l = m.forward(&mut kv, &mut [&mut seq], &Batch::single(&[42]), 128).unwrap();
            seq.len -= 1; // the next step writes the same position again
            l
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
