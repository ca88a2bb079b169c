//! Opening a file whose metadata holds a gpt-oss-sized vocabulary: 201,088 token strings, 446,189
//! merge strings and a 201,088-entry i32 token-type array, plus a few tensors. Open validates every
//! string's length but decodes nothing, so it should cost a few milliseconds, not the hundreds a
//! String-per-token reader spends.
//!
//! `cargo bench -p kiln-gguf --bench open`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kiln_gguf::{GgmlType, GgufFile, GgufWriter};

const N_TOKENS: usize = 201_088;
const N_MERGES: usize = 446_189;

/// Deterministic pseudo-random token text, 1–12 bytes, mostly ASCII with some multi-byte UTF-8.
fn token(i: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    let len = 1 + (x % 12) as usize;
    let mut s = String::with_capacity(len + 4);
    for _ in 0..len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let c = (x >> 33) % 100;
        s.push(if c < 95 { (b' ' + c as u8) as char } else { ['é', 'Ġ', 'ü', '中', '✓'][(c - 95) as usize] });
    }
    s
}

fn write_file() -> PathBuf {
    let tokens: Vec<String> = (0..N_TOKENS).map(token).collect();
    let merges: Vec<String> =
        (0..N_MERGES).map(|i| format!("{} {}", tokens[i % N_TOKENS], tokens[(i * 7 + 3) % N_TOKENS])).collect();
    let types: Vec<i32> = (0..N_TOKENS as i32).map(|i| 1 + i % 3).collect();

    let mut w = GgufWriter::new();
    w.add("general.architecture", "gpt-oss").unwrap();
    w.add("gpt-oss.block_count", 24u32).unwrap();
    w.add("tokenizer.ggml.model", "gpt2").unwrap();
    w.add("tokenizer.ggml.tokens", tokens).unwrap();
    w.add("tokenizer.ggml.token_type", types).unwrap();
    w.add("tokenizer.ggml.merges", merges).unwrap();
    for i in 0..24 {
        w.add_tensor(format!("blk.{i}.attn_norm.weight"), GgmlType::F32, &[2880], vec![0; 2880 * 4]).unwrap();
    }
    let path = std::env::temp_dir().join(format!("kiln-gguf-bench-open-{}.gguf", std::process::id()));
    w.write_to_path(&path).unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let path = write_file();
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!("bench file: {} ({size} bytes)", path.display());

    c.bench_function("open gpt-oss vocabulary metadata", |b| b.iter(|| black_box(GgufFile::open(&path).unwrap())));
    // The same validation on bytes already in memory (no page faults): the metadata walk alone.
    let bytes = std::fs::read(&path).unwrap();
    c.bench_function("from_bytes gpt-oss vocabulary metadata", |b| {
        b.iter_batched(|| bytes.clone(), |bytes| black_box(GgufFile::from_bytes(bytes).unwrap()), BatchSize::LargeInput)
    });
    // For scale: what a tokenizer pays afterwards to see every token as &str.
    let f = GgufFile::open(&path).unwrap();
    c.bench_function("tokens to Vec<&str>", |b| {
        b.iter(|| black_box(f.get_str_array("tokenizer.ggml.tokens").unwrap().to_vec_str().unwrap()))
    });
    drop(f);
    std::fs::remove_file(&path).ok();
}

criterion_group!(benches, bench);
criterion_main!(benches);
