//! End to end, the CUDA backend against the CPU backend: every synthetic model of
//! `fixtures/synth/cases.json` (gpt-oss and llama-family shapes, every weight type the CPU runs),
//! teacher-forced along llama.cpp's greedy path; plus, when their paths are given, the 24-layer
//! gpt-oss-20b layout (`KILN_GPU_20B`, made on the GPU host with `xtask synth gpt-oss --preset 20b`)
//! and SmolLM2's real weights (`KILN_GPU_SMOLLM2`). Needs a GPU (`cargo xtask gpu-test`).
//!
//! Tolerance: every step's logits within 5% of the step's logit range of the CPU's. The GPU
//! rounds activations as the CPU does before each product (Q8_0/Q8_1/Q8_K, f16 for attention),
//! but sums in other orders; a last-bit difference then flips an activation code or an f16
//! rounding somewhere, and that grows with depth: the shallow cases end 0–2.5% of the range apart,
//! the deep ones up to ~4.5%. llama.cpp itself is 0.9–4.5% of the range from a float64 forward
//! pass on small gpt-oss shapes (REFERENCE.md), and a wrong kernel is tens of percent off.
//! Greedy ids: equal at every teacher-forced step except near-ties, steps where the CPU's top two
//! logits are less than 1% of the range apart (either id is then a correct greedy choice at this
//! precision). A mismatch at a wider gap fails.
//!
//! The 24-layer gpt-oss-20b layout with random weights is chaotic in the summation order: on the
//! CPU alone, summing only the router in its batch-invariant order instead of tinyBLAS's moves the
//! first logits by ~8% of the range and changes the first greedy token. So that layout is held to
//! 5% truncated after its first one and two blocks (a sliding-window and a full-attention layer,
//! every kernel of the model at its real shapes) and, whole, to 4× the spread between the CPU's
//! two orders, measured in the same test, with no greedy check.
#![cfg(feature = "cuda")]

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use common::{ids, json_files, read};
use kiln_model::{Backend, Batch, CpuBackend, CudaBackend, Model, SeqKv};

const TOLERANCE: f64 = 0.05;

fn device() -> Arc<kiln_cuda::Device> {
    static DEV: OnceLock<Arc<kiln_cuda::Device>> = OnceLock::new();
    DEV.get_or_init(|| kiln_cuda::Device::new(Default::default()).expect("a CUDA device")).clone()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, j| if v[j] > v[b] { j } else { b })
}

/// Top two values.
fn top2(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::NEG_INFINITY, f32::NEG_INFINITY), |(a, b), &x| if x > a { (x, a) } else { (a, b.max(x)) })
}

struct Compare {
    worst: f64,
    steps: usize,
    near_ties: usize,
    /// The first step over the bound, or whose greedy id differs at a gap that is no near-tie.
    failure: Option<String>,
    /// Per step: the CPU's top-two gap and the largest difference between the backends, as
    /// fractions of the step's logit range.
    gaps: Vec<(f64, f64)>,
}

/// Below this fraction of the logit range, the CPU's top two logits are a near-tie.
const NEAR_TIE: f64 = 0.01;

/// Teacher-forces both models along `prompt` then `path` (one token per call) and compares every
/// step's logits (within `bound` of the range) and, with `greedy`, every step's greedy id.
fn compare<A: Backend, B: Backend>(
    what: &str,
    cpu: &Model<A>,
    gpu: &Model<B>,
    prompt: &[u32],
    path: &[u32],
    bound: f64,
    greedy: bool,
) -> Compare {
    let n_ctx = prompt.len() + path.len() + 1;
    let (mut kc, mut kg) = (cpu.kv_cache(n_ctx).unwrap(), gpu.kv_cache(n_ctx).unwrap());
    let (mut sc, mut sg) = (SeqKv::default(), SeqKv::default());
    let mut c = cpu.forward(&mut kc, &mut [&mut sc], &Batch::single(prompt), n_ctx).unwrap();
    let mut g = gpu.forward(&mut kg, &mut [&mut sg], &Batch::single(prompt), n_ctx).unwrap();
    let mut out = Compare { worst: 0.0, steps: path.len(), near_ties: 0, failure: None, gaps: Vec::new() };
    for (i, &next) in path.iter().enumerate() {
        let (hi, lo) = c.iter().fold((f32::NEG_INFINITY, f32::INFINITY), |(a, b), &x| (a.max(x), b.min(x)));
        let range = (hi - lo) as f64;
        let diff = c.iter().zip(&g).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max) / range;
        assert!(g.iter().all(|v| v.is_finite()), "{what} step {i}: non-finite GPU logits");
        out.worst = out.worst.max(diff);
        if diff > bound && out.failure.is_none() {
            out.failure = Some(format!(
                "{what} step {i}: GPU logits {:.3}% of the range from the CPU's (bound {:.1}%)",
                diff * 100.0,
                bound * 100.0
            ));
        }
        let (t1, t2) = top2(&c);
        let gap = (t1 - t2) as f64 / range;
        out.gaps.push((gap, diff));
        if gap < NEAR_TIE {
            out.near_ties += 1;
        } else if greedy && argmax(&g) != argmax(&c) && out.failure.is_none() {
            out.failure = Some(format!(
                "{what} step {i}: greedy ids differ where the CPU's top two are {:.2}% of the range apart",
                gap * 100.0
            ));
        }
        if i + 1 < path.len() {
            c = cpu.forward(&mut kc, &mut [&mut sc], &Batch::single(&[next]), n_ctx).unwrap();
            g = gpu.forward(&mut kg, &mut [&mut sg], &Batch::single(&[next]), n_ctx).unwrap();
        }
    }
    println!(
        "CASE e2e {what:<40} steps {:>3} worst {:.4}% of range (bound {:.1}%), near-ties {} {}",
        out.steps,
        out.worst * 100.0,
        bound * 100.0,
        out.near_ties,
        if out.failure.is_some() { "FAIL" } else { "ok" }
    );
    out
}

fn load_both(file: Arc<kiln_gguf::GgufFile>) -> (Model<CpuBackend>, Model<CudaBackend>) {
    let cpu = Model::load(file.clone(), CpuBackend::new(file.clone(), 0)).unwrap();
    let gpu = Model::load(file, CudaBackend::new(device(), None)).unwrap();
    (cpu, gpu)
}

#[test]
fn every_synthetic_case_cuda_against_cpu() {
    // KILN_FIXTURES: where the bundle's copy of the fixtures is on the GPU host.
    let dir = std::env::var_os("KILN_FIXTURES")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"), Into::into)
        .join("synth");
    let cases = read(&dir.join("cases.json"));
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let bytes = kiln_synth::from_spec(case["model"].as_object().unwrap()).unwrap().to_bytes().unwrap();
        let file = Arc::new(kiln_gguf::GgufFile::from_bytes(bytes).unwrap());
        let (cpu, gpu) = load_both(file);
        for path in json_files(&dir.join(name)) {
            let fx = read(&path);
            let what = format!("{name}/{}", path.file_stem().unwrap().to_string_lossy());
            let (prompt, path) = (ids(&fx["prompt_ids"]), ids(&fx["generated_ids"]));
            failures.extend(compare(&what, &cpu, &gpu, &prompt, &path, TOLERANCE, true).failure);
        }
    }
    assert!(failures.is_empty(), "{} of the cases fail:\n{}", failures.len(), failures.join("\n"));
}

/// Greedy decoding of `n` tokens on one model.
fn greedy<B: Backend>(m: &Model<B>, prompt: &[u32], n: usize) -> Vec<u32> {
    let n_ctx = prompt.len() + n + 1;
    let mut kv = m.kv_cache(n_ctx).unwrap();
    let mut s = SeqKv::default();
    let mut logits = m.forward(&mut kv, &mut [&mut s], &Batch::single(prompt), n_ctx).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let id = argmax(&logits) as u32;
        out.push(id);
        logits = m.forward(&mut kv, &mut [&mut s], &Batch::single(&[id]), n_ctx).unwrap();
    }
    out
}

fn model_from_env(var: &str) -> Option<Arc<kiln_gguf::GgufFile>> {
    let Some(path) = std::env::var_os(var) else {
        println!("SKIP {var} is not set");
        return None;
    };
    Some(Arc::new(kiln_gguf::GgufFile::open(Path::new(&path)).unwrap()))
}

#[test]
fn gpt_oss_20b_layout_cuda_against_cpu() {
    let Some(file) = model_from_env("KILN_GPU_20B") else { return };
    let tok = kiln_tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let prompt =
        tok.encode("The quick brown fox jumps over the lazy dog, and then it keeps running.", true, true).unwrap();
    let mut failures = Vec::new();
    for layers in [1, 2] {
        let cpu = Model::load_truncated(file.clone(), CpuBackend::new(file.clone(), 0), layers).unwrap();
        let gpu = Model::load_truncated(file.clone(), CudaBackend::new(device(), None), layers).unwrap();
        let path = greedy(&cpu, &prompt, 8);
        let what = format!("gpt-oss-20b layout, first {layers} layer(s)");
        failures.extend(compare(&what, &cpu, &gpu, &prompt, &path, TOLERANCE, true).failure);
    }
    let (cpu, gpu) = load_both(file.clone());
    let path = greedy(&cpu, &prompt, 8);
    // The CPU against itself with the batch-invariant orders (tinyBLAS's router order replaced):
    // how far two valid summation orders end up after 24 random layers.
    let other = Model::load(file.clone(), CpuBackend::new(file, 0).with_batch_invariant(true)).unwrap();
    let spread = compare("gpt-oss-20b layout, CPU vs CPU's other order", &cpu, &other, &prompt, &path, 1.0, false);
    let bound = TOLERANCE.max(4.0 * spread.worst);
    failures.extend(compare("gpt-oss-20b layout (24 layers)", &cpu, &gpu, &prompt, &path, bound, false).failure);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_continues_the_readme_prompt_as_the_cpu_does() {
    let Some(file) = model_from_env("KILN_GPU_SMOLLM2") else { return };
    let tok = kiln_tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let (cpu, gpu) = load_both(file);
    let prompt = tok.encode("The capital of France is", true, true).unwrap();
    let want = greedy(&cpu, &prompt, 32);
    let got = greedy(&gpu, &prompt, 32);
    let c = compare("SmolLM2 real weights, README prompt", &cpu, &gpu, &prompt, &want, TOLERANCE, true);
    let same = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
    println!("CASE smollm2-greedy cpu {:?}", tok.decode(&want, false).unwrap_or_default());
    println!("CASE smollm2-greedy gpu {:?} ({same}/32 ids equal)", tok.decode(&got, false).unwrap_or_default());
    assert!(c.failure.is_none(), "{}", c.failure.clone().unwrap_or_default());
    // Up to the first difference both ran the same prefix, so the teacher-forced step `same` is
    // the step where the GPU chose: it may choose otherwise only at a near-tie.
    if same < want.len() {
        let (gap, diff) = c.gaps[same];
        println!(
            "CASE smollm2-parting step {same}: the CPU's top two {:.4}% of the range apart, the backends up to {:.3}%",
            gap * 100.0,
            diff * 100.0
        );
        assert!(gap < NEAR_TIE, "the continuations part at step {same}, where the CPU's top two are no near-tie");
    }
}
