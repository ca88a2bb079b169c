//! Building tokenizers from GGUF metadata, and encoding / decoding ~110 KB of mixed text
//! (tests/fixtures/mixed.txt) with each vocabulary; and kiln's encoder beside Hugging Face
//! `tokenizers` on the same vocabulary's `tokenizer.json` over 2.6 MB of it.
//!
//!     cargo bench -p kiln-tokenizer --bench tokenizer

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_gguf::GgufFile;
use kiln_tokenizer::{Detokenizer, Tokenizer};
use std::hint::black_box;

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    let gptoss = GgufFile::from_bytes(common::gptoss_gguf_bytes().clone()).unwrap();
    g.bench_function("gptoss (201,088 tokens, 446,189 merges)", |b| {
        b.iter(|| Tokenizer::from_gguf(black_box(&gptoss)).unwrap())
    });
    let smollm2 = GgufFile::open(common::smollm2_path()).unwrap();
    g.bench_function("smollm2 (49,152 tokens, 48,900 merges)", |b| {
        b.iter(|| Tokenizer::from_gguf(black_box(&smollm2)).unwrap())
    });
    let gemma3 = GgufFile::open(common::gemma3_path()).unwrap();
    g.bench_function("gemma3 (262,144 tokens, SentencePiece)", |b| {
        b.iter(|| Tokenizer::from_gguf(black_box(&gemma3)).unwrap())
    });
    g.finish();
}

fn encode_decode(c: &mut Criterion) {
    let text = common::mixed();
    let mut g = c.benchmark_group("mixed text");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for name in ["gptoss", "smollm2", "gemma3"] {
        let tok = common::tokenizer_for(name);
        g.bench_function(format!("encode {name}"), |b| b.iter(|| tok.encode(black_box(&text), false, true).unwrap()));
        let ids = tok.encode(&text, false, true).unwrap();
        g.bench_function(format!("decode {name}"), |b| b.iter(|| tok.decode(black_box(&ids), false).unwrap()));
        g.bench_function(format!("stream {name}"), |b| {
            b.iter(|| {
                let mut d = Detokenizer::new(&tok);
                let mut n = 0;
                for &id in &ids {
                    n += d.push(id).unwrap().len();
                }
                n + d.flush().len()
            })
        });
    }
    // For scale: tiktoken-rs on the same text (the gpt-oss vocabulary, o200k_harmony).
    let tiktoken = tiktoken_rs::o200k_harmony().unwrap();
    g.bench_function("encode gptoss with tiktoken-rs", |b| b.iter(|| tiktoken.encode_ordinary(black_box(&text))));
    g.finish();
}

/// kiln (built from the GGUF) and Hugging Face `tokenizers` (from the `tokenizer.json` of the same
/// vocabulary: gpt-oss's as published, SmolLM2's as its model card ships it), one thread each, on
/// mixed.txt 24 times over (2.6 MB: both sides' word caches warm alike).
fn versus_hf(c: &mut Criterion) {
    let text = common::mixed().repeat(24);
    let mut g = c.benchmark_group("2.6 MB mixed text, kiln vs HF tokenizers");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for (name, json) in [("gptoss", common::gptoss_tokenizer_json()), ("smollm2", common::smollm2_tokenizer_json())] {
        let kiln = common::tokenizer_for(name);
        let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let (a, b) = (kiln.encode(&text, false, false).unwrap().len(), hf.encode(text.as_str(), false).unwrap().len());
        eprintln!("{name}: kiln {a} tokens, HF tokenizers {b} tokens");
        g.bench_function(format!("encode {name} kiln"), |bch| {
            bch.iter(|| kiln.encode(black_box(&text), false, false).unwrap())
        });
        g.bench_function(format!("encode {name} HF tokenizers"), |bch| {
            bch.iter(|| hf.encode(black_box(text.as_str()), false).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, build, encode_decode, versus_hf);
criterion_main!(benches);
