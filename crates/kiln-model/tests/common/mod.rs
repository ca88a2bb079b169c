//! Teacher-forced comparison of kiln's forward pass with llama.cpp's greedy decoding fixtures
//! (format: fixtures/llamacpp/README.md), shared by the llama.cpp and synthetic-model tests.

use std::path::{Path, PathBuf};

use kiln_model::{Backend, Batch, Model, SeqKv};
use serde_json::Value;

/// kiln vs llama.cpp, as a fraction of the step's logit range.
pub const STRICT: f64 = 0.01;
/// Top-2 gap below which greedy ids may legitimately differ.
pub const NEAR_TIE: f64 = 0.05;

pub fn report() -> bool {
    std::env::var_os("KILN_REPORT").is_some_and(|v| v != "0")
}

/// Whether kiln's kernels follow ggml-cpu's x86 summation orders on this machine.
pub fn follows_llama_cpp() -> bool {
    cfg!(target_arch = "x86_64") && kiln_quant::simd::has_avx2_fma()
}

/// The `*.json` files of a folder, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

pub fn read(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &Value) -> Vec<u32> {
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
#[derive(Default)]
pub struct Outcome {
    pub steps: usize,
    pub strict_ok: usize,
    pub worst: f64,
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn add(&mut self, o: Outcome) {
        self.steps += o.steps;
        self.strict_ok += o.strict_ok;
        self.worst = self.worst.max(o.worst);
        self.failures.extend(o.failures);
    }
}

/// Teacher-forces `model` along the fixture's greedy path — the prompt in one call (which kiln,
/// like llama.cpp, runs in micro-batches of 512), then one token per call, as `greedy_ids` ran —
/// and checks every step:
/// error ≤ `STRICT + 2 × disagreement[i]` always (`disagreement`: llama.cpp vs float64, when
/// known), ≤ `strict` where given; the argmax equal to llama.cpp's id before the first near-tie.
pub fn check<B: Backend>(
    model: &Model<B>,
    name: &str,
    fx: &Value,
    disagreement: Option<&[f64]>,
    strict: Option<f64>,
) -> Outcome {
    let prompt = ids(&fx["prompt_ids"]);
    let generated = ids(&fx["generated_ids"]);
    let probe = ids(&fx["probe_ids"]);
    let steps = fx["steps"].as_array().unwrap();
    assert_eq!(steps.len(), generated.len());
    if let Some(d) = disagreement {
        assert_eq!(d.len(), steps.len(), "{name}: the float64 reference has another step count");
    }

    let n_ctx = prompt.len() + generated.len() + 1;
    let mut kv = model.kv_cache(n_ctx).unwrap();
    let mut seq = SeqKv::default();
    let mut logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), n_ctx).unwrap();
    let mut out = Outcome { steps: steps.len(), ..Outcome::default() };
    let mut tied = false;
    for (i, step) in steps.iter().enumerate() {
        let (err, id) = step_error(&logits, step, &probe);
        let d = disagreement.map_or(0.0, |d| d[i]);
        let loose = STRICT + 2.0 * d;
        out.worst = out.worst.max(err);
        out.strict_ok += (err <= STRICT) as usize;
        if report() {
            eprintln!("  {name} step {i:2}: kiln {:6.3}%  (llama.cpp vs f64 {:6.3}%)", err * 100.0, d * 100.0);
        }
        let what =
            format!("{name} step {i} id {id}: kiln {} is {:.3}% of the range from llama.cpp", logits[id], err * 100.0);
        if err > loose {
            out.failures.push(format!("{what}, above 1% + 2 × {:.3}% (llama.cpp vs f64)", d * 100.0));
        } else if let Some(bound) = strict.filter(|&b| err > b) {
            out.failures.push(format!("{what}, above {}%", bound * 100.0));
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
    // Sliding-window layers kept no more than their window (and the block it starts in).
    if let Some(w) = &kv.windowed {
        let bs = w.layout.block_size;
        assert!(
            seq.window_blocks.len() <= kv.window.div_ceil(bs) + 1,
            "{name}: {} windowed blocks of {bs} held for a window of {}",
            seq.window_blocks.len(),
            kv.window
        );
    }
    eprintln!(
        "{name}: worst error {:.3}% of range, {}/{} steps within 1%",
        out.worst * 100.0,
        out.strict_ok,
        out.steps
    );
    out
}
