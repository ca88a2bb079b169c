//! One `Sampler::sample` call on a gpt-oss-sized row (262,144 logits) per configuration.
//! `cargo bench -p kiln-sample`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln_sample::{Sampler, SamplingParams};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let n = 262_144u32;
    let logits: Vec<f32> =
        (0..n).map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) % 10_000) as f32 / 700.0 - 7.0).collect();
    // A flat row (logits uniform in [-7, 7.3]: the 0.95 nucleus holds most of the vocabulary, the
    // worst case for top-p) and a peaked one (a few hundred tokens carry most of the mass, closer
    // to a language model's rows).
    let peaked: Vec<f32> = logits.iter().map(|&l| (l + 7.0) * (l + 7.0) / 6.0).collect();
    let history: Vec<u32> = (0..512).map(|i| (i * 977) % n).collect();
    let configs = [
        ("greedy", SamplingParams::greedy()),
        ("default_topk40", SamplingParams::default()),
        ("default_penalized", SamplingParams { repeat_penalty: 1.1, ..SamplingParams::default() }),
        ("top_p_0.95_only", SamplingParams { top_p: 0.95, ..SamplingParams::neutral() }),
        ("min_p_0.05_only", SamplingParams { min_p: 0.05, ..SamplingParams::neutral() }),
        ("neutral", SamplingParams::neutral()),
    ];
    let mut g = c.benchmark_group("sample_262144");
    for (row_name, row) in [("flat", &logits), ("peaked", &peaked)] {
        for (name, params) in &configs {
            let mut s = Sampler::new(params.clone()).unwrap();
            g.bench_function(BenchmarkId::new(*name, row_name), |b| {
                b.iter(|| s.sample(black_box(row), black_box(&history)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
