//! kiln's gpt-oss forward pass (CPU) against llama.cpp on a tiny random-weight gpt-oss model
//! (`fixtures/gptoss/tiny-gptoss-bytes.gguf`: MXFP4 experts, attention sinks, YaRN RoPE,
//! alternating sliding-window layers, 288-token byte vocabulary).
//!
//! The fixtures come from llama.cpp 0c1e570 (CPU build, 2 threads, greedy):
//! - `tiny-gptoss-bytes_greedy.json`: prompt ids, 32 greedy ids and the top-5 logits per step;
//! - `tiny-gptoss-bytes_logits.f32`: every step's full logits row (32 × 288 little-endian f32),
//!   from `greedy_ids -m tiny-gptoss-bytes.gguf -n 32 -t 2 --ignore-eos --dump-logits FILE PROMPT`
//!   with the JSON's prompt (the tool's ids were checked to equal the JSON's).
//!
//! Teacher-forced along llama.cpp's greedy path (prompt in one batch, then one token per call, as
//! llama.cpp generated), each step must satisfy:
//! - every logit within 1% of the step's logit range (max − min) of llama.cpp's;
//! - each of the JSON's top-5 logits within 1% of |top1| + 0.02 (an absolute bound: the printed
//!   top-5 spread is too small to scale by);
//! - the argmax equal to llama.cpp's id at every step before the first near-tie (top-2 gap < 0.05).
//!
//! `KILN_REPORT=1` prints every step's error.

use std::path::Path;
use std::sync::Arc;

use kiln_model::{Batch, CpuBackend, Model, SeqKv};
use serde_json::Value;

const RANGE_TOL: f64 = 0.01;
const NEAR_TIE: f64 = 0.05;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptoss").join(name)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tiny_gptoss_matches_llama_cpp() {
    let report = std::env::var_os("KILN_REPORT").is_some_and(|v| v != "0");
    let fx: Value = serde_json::from_slice(&std::fs::read(fixture("tiny-gptoss-bytes_greedy.json")).unwrap()).unwrap();
    let n_vocab = fx["n_vocab"].as_u64().unwrap() as usize;
    let full: Vec<f32> = std::fs::read(fixture("tiny-gptoss-bytes_logits.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let prompt = ids(&fx["prompt_ids"]);
    let generated = ids(&fx["generated_ids"]);
    let top5 = fx["top5_per_step"].as_array().unwrap();
    assert_eq!(full.len(), generated.len() * n_vocab);
    assert_eq!(top5.len(), generated.len());

    let path = fixture("tiny-gptoss-bytes.gguf");
    let file = Arc::new(kiln_gguf::GgufFile::open(&path).unwrap());
    let model = Model::load(file.clone(), CpuBackend::new(file, 2)).unwrap();
    assert_eq!(model.config.arch, kiln_model::Arch::GptOss);
    assert_eq!(model.config.n_vocab, n_vocab);

    let n_ctx = prompt.len() + generated.len() + 1;
    let mut kv = model.kv_cache(n_ctx).unwrap();
    let mut seq = SeqKv::default();
    let mut logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), n_ctx).unwrap();
    let mut failures = Vec::new();
    let mut worst = 0f64;
    let mut tied = false;
    for (i, &want_id) in generated.iter().enumerate() {
        let want = &full[i * n_vocab..(i + 1) * n_vocab];
        let max = want.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let min = want.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64;
        let range = max - min;
        let (err, at) = logits
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w as f64).abs() / range)
            .enumerate()
            .fold((0.0, 0), |a, (j, e)| if e > a.0 { (e, j) } else { a });
        worst = worst.max(err);
        if report {
            eprintln!("step {i:2}: max |kiln − llama.cpp| = {:.4}% of range {range:.3} (id {at})", err * 100.0);
        }
        if err > RANGE_TOL {
            failures.push(format!("step {i} id {at}: {:.3}% of the range", err * 100.0));
        }
        let top: Vec<(usize, f64)> = top5[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        let tol = 0.01 * top[0].1.abs() + 0.02;
        for &(id, v) in &top {
            if (logits[id] as f64 - v).abs() > tol {
                failures.push(format!("step {i} top-5 id {id}: kiln {} vs llama.cpp {v}", logits[id]));
            }
        }
        tied |= top[0].1 - top[1].1 < NEAR_TIE;
        if !tied {
            let argmax = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
            if argmax as u32 != want_id {
                failures.push(format!("step {i}: greedy id {argmax}, llama.cpp {want_id}"));
            }
        }
        if i + 1 < generated.len() {
            logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[want_id]), n_ctx).unwrap();
        }
    }
    eprintln!("tiny-gptoss-bytes: worst error {:.4}% of the step's logit range", worst * 100.0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The whole path in one batch (prompt and generated tokens, logits for every step's row) must give
/// the same logits as llama.cpp's token-by-token decode: exercises multi-row attention with sinks
/// and windows and the MoE's grouping of rows by expert.
#[test]
fn tiny_gptoss_one_batch_matches_llama_cpp() {
    let fx: Value = serde_json::from_slice(&std::fs::read(fixture("tiny-gptoss-bytes_greedy.json")).unwrap()).unwrap();
    let n_vocab = fx["n_vocab"].as_u64().unwrap() as usize;
    let full: Vec<f32> = std::fs::read(fixture("tiny-gptoss-bytes_logits.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let prompt = ids(&fx["prompt_ids"]);
    let generated = ids(&fx["generated_ids"]);
    let mut tokens = prompt.clone();
    tokens.extend_from_slice(&generated[..generated.len() - 1]);
    let batch = Batch { seq: vec![0; tokens.len()], logits: (prompt.len() - 1..tokens.len()).collect(), tokens };

    let path = fixture("tiny-gptoss-bytes.gguf");
    let file = Arc::new(kiln_gguf::GgufFile::open(&path).unwrap());
    let model = Model::load(file.clone(), CpuBackend::new(file, 2)).unwrap();
    let n_ctx = batch.tokens.len() + 1;
    let mut kv = model.kv_cache(n_ctx).unwrap();
    let mut seq = SeqKv::default();
    let logits = model.forward(&mut kv, &mut [&mut seq], &batch, n_ctx).unwrap();
    assert_eq!(logits.len(), full.len());
    let mut worst = 0f64;
    for (i, (got, want)) in logits.chunks(n_vocab).zip(full.chunks(n_vocab)).enumerate() {
        let max = want.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let min = want.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64;
        let err = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs()).fold(0.0, f64::max) / (max - min);
        worst = worst.max(err);
        assert!(err <= RANGE_TOL, "step {i}: {:.3}% of the range", err * 100.0);
    }
    eprintln!("tiny-gptoss-bytes, one batch: worst error {:.4}% of the step's logit range", worst * 100.0);
}
