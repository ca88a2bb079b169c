//! kiln's CPU forward pass against two independent references (fixtures/llamacpp/README.md):
//! llama.cpp's logits (captured by `cargo xtask llamacpp-fixtures`) and a float64 forward pass over
//! the same dequantized weights (`cargo xtask f64-reference`).
//!
//! Teacher-forced along llama.cpp's greedy path, every step's logits at the fixture's 40 top ids and
//! 256 probe ids are compared with llama.cpp's, relative to the step's logit range (max − min):
//! - always: error ≤ 1% + 2 × (llama.cpp vs f64 disagreement at that step), REFERENCE.md's rule
//!   for an engine that rounds differently from llama.cpp but is still right;
//! - where kiln follows llama.cpp's x86 kernels (x86-64 with AVX2 + FMA: the same activation
//!   quantizers, the same summation orders, the same flash-attention numerics), also error ≤ 1%.
//!   There kiln reproduces llama.cpp's CPU results up to the fixtures' printed digits; a
//!   last-bit deviation anywhere grows through the layers (it flips activation codes and f16
//!   roundings further on) to a few percent of the range, so this bound catches it.
//!
//! The argmax must be llama.cpp's id at every step before the first near-tie (top-2 gap < 0.05).
//!
//! `KILN_REPORT=1` prints every step's error and the references' disagreement instead of failing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_model::{Batch, CpuBackend, Model, SeqKv};
use serde_json::Value;

/// kiln vs llama.cpp, as a fraction of the step's logit range.
const STRICT: f64 = 0.01;
/// Top-2 gap below which greedy ids may legitimately differ.
const NEAR_TIE: f64 = 0.05;

fn report() -> bool {
    std::env::var_os("KILN_REPORT").is_some_and(|v| v != "0")
}

/// Whether kiln's kernels follow ggml-cpu's x86 summation orders on this machine.
fn follows_llama_cpp() -> bool {
    cfg!(target_arch = "x86_64") && kiln_quant::simd::has_avx2_fma()
}

fn fixtures(model: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp").join(model);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

fn read(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (see fixtures/llamacpp/README.md)", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Largest |kiln − llama.cpp| over the step's top and probe ids, as a fraction of its range.
fn step_error(logits: &[f32], step: &Value, probe: &[u32]) -> (f64, usize) {
    let range = step["max"].as_f64().unwrap() - step["min"].as_f64().unwrap();
    let top = step["top"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()));
    let pr =
        probe.iter().map(|&id| id as usize).zip(step["probe"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()));
    top.chain(pr)
        .map(|(id, want)| ((logits[id] as f64 - want).abs() / range, id))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// Per-fixture outcome.
struct Outcome {
    steps: usize,
    strict_ok: usize,
    worst: f64,
    failures: Vec<String>,
}

fn check(model: &Model<CpuBackend>, path: &Path) -> Outcome {
    let fx = read(path);
    let name = path.file_stem().unwrap().to_string_lossy().to_string();
    let f64_path = path.parent().unwrap().join("f64").join(path.file_name().unwrap());
    let f64_ref = read(&f64_path);
    assert_eq!(f64_ref["model_sha256"], fx["model_sha256"], "{}: made for another model file", f64_path.display());
    let disagreement: Vec<f64> =
        f64_ref["steps"].as_array().unwrap().iter().map(|s| s["disagreement"].as_f64().unwrap()).collect();
    let prompt = ids(&fx["prompt_ids"]);
    let generated = ids(&fx["generated_ids"]);
    let probe = ids(&fx["probe_ids"]);
    let steps = fx["steps"].as_array().unwrap();
    assert_eq!(steps.len(), generated.len());
    assert_eq!(disagreement.len(), steps.len(), "{}: step count differs from the fixture", f64_path.display());
    let strict = follows_llama_cpp();

    let n_ctx = prompt.len() + generated.len() + 1;
    let mut kv = model.kv_cache(n_ctx).unwrap();
    let mut seq = SeqKv::default();
    let mut logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), n_ctx).unwrap();
    let mut out = Outcome { steps: steps.len(), strict_ok: 0, worst: 0.0, failures: Vec::new() };
    let mut tied = false;
    for (i, step) in steps.iter().enumerate() {
        let (err, id) = step_error(&logits, step, &probe);
        let loose = STRICT + 2.0 * disagreement[i];
        out.worst = out.worst.max(err);
        out.strict_ok += (err <= STRICT) as usize;
        if report() {
            eprintln!(
                "  {name} step {i:2}: kiln {:6.3}%  (llama.cpp vs f64 {:6.3}%)",
                err * 100.0,
                disagreement[i] * 100.0
            );
        }
        let what =
            format!("{name} step {i} id {id}: kiln {} is {:.3}% of the range from llama.cpp", logits[id], err * 100.0);
        if err > loose {
            out.failures.push(format!("{what}, above 1% + 2 × {:.3}% (llama.cpp vs f64)", disagreement[i] * 100.0));
        } else if strict && err > STRICT {
            out.failures.push(format!("{what}, above 1%"));
        }
        let gap = step["top"][0][1].as_f64().unwrap() - step["top"][1][1].as_f64().unwrap();
        tied |= gap < NEAR_TIE;
        if !tied {
            let argmax = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
            if argmax as u32 != generated[i] {
                out.failures.push(format!(
                    "{name} step {i}: greedy id {argmax}, llama.cpp {} (no near-tie before)",
                    generated[i]
                ));
            }
        }
        if i + 1 < generated.len() {
            logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[generated[i]]), n_ctx).unwrap();
        }
    }
    eprintln!(
        "{name}: worst error {:.3}% of range, {}/{} steps within 1%",
        out.worst * 100.0,
        out.strict_ok,
        out.steps
    );
    out
}

fn run(model_name: &str) {
    let path = kiln_testkit::model(model_name);
    let file = Arc::new(kiln_gguf::GgufFile::open(path).unwrap());
    let model = Model::load(file.clone(), CpuBackend::new(file, 0)).unwrap();
    if !follows_llama_cpp() {
        eprintln!(
            "no AVX2 + FMA: kiln's kernels round differently from llama.cpp's x86 build; checking the f64-based bound only"
        );
    }
    let (mut steps, mut strict_ok, mut failures) = (0, 0, Vec::new());
    for f in fixtures(model_name) {
        let o = check(&model, &f);
        steps += o.steps;
        strict_ok += o.strict_ok;
        failures.extend(o.failures);
    }
    eprintln!("{model_name}: {strict_ok}/{steps} steps within 1% of llama.cpp's range");
    if !report() {
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    run("smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_matches_llama_cpp() {
    run("gemma3-270m-q4_k_m");
}
