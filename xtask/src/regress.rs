//! `cargo xtask regress`: accuracy and speed baselines.
//!
//! Every case measures something and compares it with its baseline in `tests/regress/GROUP.json`
//! (committed; `--update` rewrites them). Groups and their rules:
//!
//! - `dequant`: seeded random blocks of every type kiln computes with, dequantized; MXFP4's edge
//!   cases (every E8M0 scale, all 16 codes in both nibbles). Exact (a digest of the f32 bits).
//! - `quantize`: ggml's reference quantizers and the activation quantizers on seeded rows. Exact.
//! - `tokenizer`: the ids of every text of the committed corpus
//!   (crates/kiln-tokenizer/tests/fixtures/corpus.json: CJK, emoji, code, RTL, whitespace runs,
//!   special-token text) for each tokenizer kind kiln reads. Exact.
//! - `logits`: teacher-forced top-5 logits along the baseline's token path, for SmolLM2 and
//!   synthetic gpt-oss and llama models. On the CPU every logit of the baseline's top 5 within
//!   0.1% of the step's logit range and the same top id (unless the baseline's top two are
//!   closer than that 0.1%: another CPU's SIMD order may break such a tie either way); with
//!   `--device cuda`, the GPU against
//!   the CPU baseline within 5% and the same top id except at near-ties (the baseline's top two
//!   closer than 1% of the range), as `cuda_e2e` judges it.
//! - `memory`: the weights' bytes after load by kind (mapped per type, dequantized copies) and the
//!   KV cache's bytes per position. Exact.
//! - `speed`: `kiln bench` (release build, 2 threads) and criterion's dot-product kernels. The
//!   baseline holds the mean and relative spread of several runs (`--update` runs each case
//!   `SPEED_RUNS` times); a run outside the band `max(3 × spread, 10%)` is reported (`slower` /
//!   `faster`), and only one below half the baseline's throughput fails: this machine is shared
//!   and noisy.
//!
//! Prints one table (case, baseline, now, delta, verdict) and exits non-zero when a case fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_gguf::{GgufFile, GgufWriter};
use kiln_model::{Backend, Batch, CpuBackend, Model, SeqKv};
use kiln_quant::GgmlType;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(clap::Args)]
pub struct Args {
    /// Capture the baselines (rewrite tests/regress/*.json) instead of checking against them.
    #[arg(long)]
    update: bool,
    /// Where the logits are computed: cpu, or cuda (xtask built with `--features cuda`, on a GPU
    /// host; checked against the CPU baselines with the GPU's tolerance).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Only cases whose name contains this text (e.g. `dequant/`, `mxfp4`, `speed`).
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
}

const GROUPS: [&str; 8] = ["dequant", "quantize", "dot", "sample", "tokenizer", "logits", "memory", "speed"];
const CPU_TOLERANCE: f64 = 1e-3;
const CUDA_TOLERANCE: f64 = 0.05;
const CUDA_NEAR_TIE: f64 = 0.01;
const TOP_K: usize = 5;
const STEPS: usize = 16;
const SPEED_RUNS: usize = 3;
/// A speed case fails only below this fraction of its baseline's throughput.
const SPEED_FAIL: f64 = 0.5;

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Ok,
    New,
    Reported,
    /// `--update`: the new baseline differs from the old.
    Changed,
    Fail,
}

struct Row {
    case: String,
    baseline: String,
    now: String,
    delta: String,
    verdict: Verdict,
    note: String,
}

/// One case's outcome: its measurement (what `--update` stores) and how it compares.
struct Outcome {
    value: Value,
    row: Row,
}

/// The workspace: the current folder when it has the baselines (a bundled xtask on the GPU host
/// runs from a copy of the tree), else the one xtask was built in.
fn repo() -> PathBuf {
    match std::env::current_dir() {
        Ok(d) if d.join("tests/regress").is_dir() => d,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf(),
    }
}

fn baseline_path(group: &str) -> PathBuf {
    repo().join("tests/regress").join(format!("{group}.json"))
}

pub fn run(args: &Args) -> Result<()> {
    if args.update && args.device != "cpu" {
        bail!("baselines are captured on the CPU (--update --device cpu); --device cuda checks the GPU against them");
    }
    let wanted = |case: &str| args.only.as_deref().is_none_or(|p| case.contains(p));
    let mut rows = Vec::new();
    for group in GROUPS {
        if args.device == "cuda" && group != "logits" {
            continue; // the GPU run checks the GPU's logits; everything else is the CPU's
        }
        let path = baseline_path(group);
        let mut base: BTreeMap<String, Value> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).context(path.display().to_string()),
        };
        let names: Vec<String> = case_names(group)?.into_iter().filter(|c| wanted(c)).collect();
        if names.is_empty() {
            continue;
        }
        let ctx = Ctx { update: args.update, device: &args.device };
        let mut changed = false;
        for name in names {
            eprintln!("regress: {name}");
            let out = match measure(group, &name, base.get(&name), &ctx) {
                Ok(o) => o,
                Err(e) => Outcome {
                    value: Value::Null,
                    row: Row {
                        case: name.clone(),
                        baseline: "-".into(),
                        now: "error".into(),
                        delta: "-".into(),
                        verdict: Verdict::Fail,
                        note: format!("{e:#}"),
                    },
                },
            };
            // Capturing, every measured case is stored, changed or not (the table and the diff
            // of the file say what moved); a case that could not be measured keeps its baseline.
            let mut row = out.row;
            if args.update && !out.value.is_null() {
                changed |= base.get(&name) != Some(&out.value);
                if row.verdict == Verdict::Fail {
                    row.verdict = Verdict::Changed;
                }
                base.insert(name, out.value);
            }
            rows.push(row);
        }
        if args.update && changed {
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(&path, format_baseline(&base)).with_context(|| path.display().to_string())?;
            eprintln!("regress: wrote {}", path.display());
        }
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Fail).count();
    if failed > 0 {
        eprintln!("regress: {failed} of {} cases regressed", rows.len());
        std::process::exit(1);
    }
    Ok(())
}

struct Ctx<'a> {
    update: bool,
    device: &'a str,
}

fn case_names(group: &str) -> Result<Vec<String>> {
    Ok(match group {
        "dequant" => {
            let mut v: Vec<String> = kiln_quant::supported_types().map(|t| format!("dequant/{}", t.name())).collect();
            v.extend(["dequant/mxfp4/e8m0-scales".to_string(), "dequant/mxfp4/codes".to_string()]);
            v
        }
        "quantize" => {
            let mut v: Vec<String> = kiln_quant::supported_types()
                .filter(|&t| kiln_quant::traits(t).is_some_and(|tr| tr.quantize.is_some()))
                .map(|t| format!("quantize/{}", t.name()))
                .collect();
            v.extend(
                kiln_quant::supported_types()
                    .filter(|&t| kiln_quant::traits(t).is_some_and(|tr| tr.vec_dot.is_some()))
                    .map(|t| format!("quantize/activations-for-{}", t.name())),
            );
            v
        }
        "dot" => kiln_quant::supported_types()
            .filter(|&t| kiln_quant::traits(t).is_some_and(|tr| tr.vec_dot.is_some() && tr.quantize.is_some()))
            .map(|t| format!("dot/{}", t.name()))
            .collect(),
        "sample" => SAMPLERS.iter().map(|(n, _)| format!("sample/{n}")).collect(),
        "tokenizer" => TOKENIZERS.iter().map(|t| format!("tokenizer/{t}")).collect(),
        "logits" => LOGIT_CASES.iter().map(|c| format!("logits/{}", c.name)).collect(),
        "memory" => MEMORY_MODELS.iter().map(|m| format!("memory/{m}")).collect(),
        "speed" => {
            let mut v: Vec<String> =
                ["pp128", "tg32"].iter().map(|t| format!("speed/kiln-bench/smollm2/{t}")).collect();
            v.extend(SPEED_KERNELS.iter().map(|k| format!("speed/criterion/{k}")));
            v
        }
        _ => unreachable!("a group of GROUPS"),
    })
}

fn measure(group: &str, name: &str, base: Option<&Value>, ctx: &Ctx) -> Result<Outcome> {
    let key = name.split_once('/').map_or(name, |(_, k)| k);
    match group {
        "dequant" | "quantize" | "sample" | "tokenizer" | "memory" => {
            let now = match group {
                "dequant" => dequant_case(key)?,
                "quantize" => quantize_case(key)?,
                "sample" => sample_case(key)?,
                "tokenizer" => tokenizer_case(key)?,
                _ => memory_case(key)?,
            };
            Ok(exact(name, base, now))
        }
        "dot" => dot_case(name, key, base),
        "logits" => logits_case(name, key, base, ctx),
        "speed" => speed_case(name, key, base, ctx),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// exact cases

fn exact(name: &str, base: Option<&Value>, now: Value) -> Outcome {
    let summary = |v: &Value| short(v);
    let (verdict, note) = match base {
        None => (Verdict::New, "no baseline yet (--update)".to_string()),
        Some(b) if *b == now => (Verdict::Ok, String::new()),
        Some(b) => (Verdict::Fail, first_difference(b, &now)),
    };
    let row = Row {
        case: name.into(),
        baseline: base.map_or("-".into(), summary),
        now: summary(&now),
        delta: match verdict {
            Verdict::Fail => "differs".into(),
            Verdict::New => "-".into(),
            _ => "=".into(),
        },
        verdict,
        note,
    };
    Outcome { value: now, row }
}

/// A short form of a value for the table: a digest's head, or the first characters.
fn short(v: &Value) -> String {
    if let Some(d) = v.get("sha256").and_then(Value::as_str) {
        return d[..12].to_string();
    }
    if let (Some(w), Some(kv)) = (v.get("weights").and_then(Value::as_object), v.get("kv_bytes_per_position")) {
        return format!("{} B weights, KV {kv} B/pos", w.values().filter_map(Value::as_u64).sum::<u64>());
    }
    if let Some(m) = v.as_object() {
        let n: usize = m.values().filter_map(Value::as_array).map(Vec::len).sum();
        return format!("{} lists, {n} values", m.len());
    }
    let s = v.to_string();
    if s.chars().count() > 24 { format!("{}…", s.chars().take(23).collect::<String>()) } else { s }
}

/// Where two JSON values first differ, as a path and both sides.
fn first_difference(a: &Value, b: &Value) -> String {
    fn walk(a: &Value, b: &Value, path: &mut String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                    if va != vb {
                        path.push_str(&format!(".{k}"));
                        return walk(va, vb, path);
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) => {
                for i in 0..x.len().max(y.len()) {
                    let (va, vb) = (x.get(i).unwrap_or(&Value::Null), y.get(i).unwrap_or(&Value::Null));
                    if va != vb {
                        path.push_str(&format!("[{i}]"));
                        return walk(va, vb, path);
                    }
                }
                None
            }
            _ => Some(format!("{path}: baseline {a}, now {b}")),
        }
    }
    walk(a, b, &mut String::new()).unwrap_or_default()
}

/// Seeded inputs: kiln-synth's splitmix64 stream.
fn normals(rng: &mut kiln_synth::Rng, n: usize, std: f32) -> Vec<f32> {
    let mut v = vec![0f32; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn ty_of(name: &str) -> Result<GgmlType> {
    kiln_quant::supported_types().find(|t| t.name() == name).with_context(|| format!("no type {name}"))
}

fn digest_f32(v: &[f32]) -> Value {
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_bits().to_le_bytes());
    }
    let finite: Vec<f64> = v.iter().filter(|x| x.is_finite()).map(|&x| x as f64).collect();
    json!({
        "sha256": hex(&h.finalize()),
        "values": v.len(),
        "non_finite": v.len() - finite.len(),
        "sum_abs": format!("{:.9e}", finite.iter().map(|x| x.abs()).sum::<f64>()),
    })
}

fn digest_bytes(b: &[u8]) -> Value {
    json!({"sha256": hex(&Sha256::digest(b)), "bytes": b.len()})
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Random blocks of `ty`: every byte random (so f16/E8M0 scales take every value, NaN and
/// infinities included) — 64 blocks.
fn dequant_case(key: &str) -> Result<Value> {
    if let Some(which) = key.strip_prefix("mxfp4/") {
        return mxfp4_edges(which);
    }
    let ty = ty_of(key)?;
    let l = ty.layout();
    let mut src = vec![0u8; 64 * l.block_bytes];
    kiln_synth::Rng::new(seed_of(key)).fill_bytes(&mut src);
    let mut dst = vec![0f32; 64 * l.block_elems];
    kiln_quant::dequantize(ty, &src, &mut dst)?;
    Ok(digest_f32(&dst))
}

/// MXFP4's edges, spelled out so a diff says what moved: the value of code 1 (E2M1 0.5) and of
/// code 15 (−6) under each of the 256 E8M0 scales (as f32 bit patterns, so NaN and infinities
/// show), and all 16 codes in the low and the high nibble under scales 2^0 and 2^-3.
fn mxfp4_edges(which: &str) -> Result<Value> {
    let block = |e: u8| -> Result<Vec<f32>> {
        let mut b = [0u8; 17];
        b[0] = e;
        for j in 0..16 {
            b[1 + j] = (j as u8) | ((15 - j as u8) << 4); // low nibble code j, high nibble 15 − j
        }
        let mut out = [0f32; 32];
        kiln_quant::dequantize(GgmlType::MXFP4, &b, &mut out)?;
        Ok(out.to_vec())
    };
    match which {
        "e8m0-scales" => {
            let (mut c1, mut c15) = (Vec::new(), Vec::new());
            for e in 0..=255u8 {
                let v = block(e)?;
                c1.push(format!("{:08x}", v[1].to_bits()));
                c15.push(format!("{:08x}", v[15].to_bits()));
            }
            Ok(json!({"code1_bits_by_e": c1, "code15_bits_by_e": c15}))
        }
        "codes" => {
            let (a, b) = (block(127)?, block(124)?);
            Ok(json!({"e127": a, "e124": b}))
        }
        _ => bail!("no MXFP4 case {which}"),
    }
}

/// Rows of 4096 values (16 K-blocks): normal values, with a zero block, a block of one huge
/// outlier, tiny values and an all-equal block, through the reference quantizer, or through the
/// activation quantizer a weight type's dot product uses.
fn quantize_case(key: &str) -> Result<Value> {
    let mut x = normals(&mut kiln_synth::Rng::new(seed_of(key)), 4096, 1.0);
    x[256..512].fill(0.0);
    x[700] = 1e4;
    for v in &mut x[1024..1280] {
        *v *= 1e-6;
    }
    x[1536..1792].fill(0.75);
    if let Some(w) = key.strip_prefix("activations-for-") {
        return Ok(digest_bytes(&kiln_quant::quantize_activations(ty_of(w)?, &x)?));
    }
    let ty = ty_of(key)?;
    let l = ty.layout();
    let mut out = vec![0u8; x.len() / l.block_elems * l.block_bytes];
    kiln_quant::quantize(ty, &x, &mut out)?;
    Ok(digest_bytes(&out))
}

/// Dot products of every type with its activation type (the dispatching entry the model uses):
/// 64 rows of 4096 quantized normal values against one quantized row. The sums are compared with
/// a relative tolerance of 1e-6 of Σ|w·x| rather than bit for bit, because another CPU may take
/// another SIMD kernel (VNNI, AVX2, scalar) that adds in another order; a wrong constant or a
/// dropped block moves them by far more.
fn dot_case(name: &str, key: &str, base: Option<&Value>) -> Result<Outcome> {
    let ty = ty_of(key)?;
    let tr = kiln_quant::traits(ty).context("traits")?;
    let l = ty.layout();
    const N: usize = 4096;
    let mut rng = kiln_synth::Rng::new(seed_of(name));
    let x = normals(&mut rng, N, 1.0);
    let act = kiln_quant::quantize_activations(ty, &x)?;
    let mut sums = Vec::new();
    let mut scale = 0f64;
    for _ in 0..64 {
        let w = normals(&mut rng, N, 1.0);
        let mut wq = vec![0u8; N / l.block_elems * l.block_bytes];
        (tr.quantize.context("a type with a quantizer")?)(&w, &mut wq);
        let mut deq = vec![0f32; N];
        kiln_quant::dequantize(ty, &wq, &mut deq)?;
        scale = scale.max(deq.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum());
        sums.push(kiln_quant::vec_dot(ty, &wq, &act)?);
    }
    let value = json!({"sums": sums});
    let Some(b) = base else {
        let row = Row {
            case: name.into(),
            baseline: "-".into(),
            now: "64 sums".into(),
            delta: "-".into(),
            verdict: Verdict::New,
            note: "no baseline yet (--update)".into(),
        };
        return Ok(Outcome { value, row });
    };
    let want: Vec<f64> = b["sums"].as_array().context("baseline sums")?.iter().filter_map(Value::as_f64).collect();
    let worst = if want.len() != sums.len() {
        f64::INFINITY
    } else {
        want.iter().zip(&sums).map(|(w, &g)| (g as f64 - w).abs() / scale.max(1e-30)).fold(0.0, f64::max)
    };
    let ok = worst <= 1e-6;
    let row = Row {
        case: name.into(),
        baseline: "64 sums".into(),
        now: format!("max {worst:.1e} of Σ|w·x|"),
        delta: "tol 1e-6".into(),
        verdict: if ok { Verdict::Ok } else { Verdict::Fail },
        note: if ok { String::new() } else { format!("worst {worst:.3e}") },
    };
    Ok(Outcome { value, row })
}

/// Sampler settings: each draws 64 tokens from fixed logits (a 32,000-token vocabulary, logits
/// from a seeded normal, a growing history for the penalties), seed 7. The ids are exact: the
/// sampler is deterministic across machines for a seed.
/// A named sampler setting.
type SamplerCase = (&'static str, fn() -> kiln_sample::SamplingParams);

const SAMPLERS: [SamplerCase; 6] = [
    ("greedy", kiln_sample::SamplingParams::greedy),
    ("default", kiln_sample::SamplingParams::default),
    ("top-k-5-temp-1.5", || kiln_sample::SamplingParams {
        top_k: 5,
        temperature: 1.5,
        ..kiln_sample::SamplingParams::neutral()
    }),
    ("top-p-0.5", || kiln_sample::SamplingParams { top_p: 0.5, ..kiln_sample::SamplingParams::neutral() }),
    ("min-p-0.2", || kiln_sample::SamplingParams { min_p: 0.2, ..kiln_sample::SamplingParams::neutral() }),
    ("penalties", || kiln_sample::SamplingParams {
        repeat_penalty: 1.3,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        ..kiln_sample::SamplingParams::default()
    }),
];

fn sample_case(key: &str) -> Result<Value> {
    let (_, params) = SAMPLERS.iter().find(|(n, _)| *n == key).context("no such sampler")?;
    let mut p = params();
    p.seed = 7;
    let mut sampler = kiln_sample::Sampler::new(p)?;
    let logits = normals(&mut kiln_synth::Rng::new(seed_of(key)), 32_000, 3.0);
    let mut history: Vec<u32> = Vec::new();
    for _ in 0..64 {
        let id = sampler.sample(&logits, &history);
        history.push(id);
    }
    Ok(json!(history))
}

/// SmolLM2: byte-level BPE with the smollm pre-tokenizer; Gemma 3: SentencePiece; gpt-oss:
/// byte-level BPE with o200k's pre-tokenizer and the harmony special tokens; and gpt-oss's
/// vocabulary as a Hugging Face `tokenizer.json` (the `tokenizers` crate's path).
const TOKENIZERS: [&str; 4] = ["smollm2-bpe", "gemma3-spm", "gptoss-o200k", "gptoss-tokenizer.json"];

fn tokenizer_case(key: &str) -> Result<Value> {
    let tok = match key.split('-').next() {
        Some("gptoss") if key.ends_with("tokenizer.json") => {
            kiln_tokenizer::Tokenizer::from_tokenizer_json(kiln_synth::vocab::o200k_harmony_tokenizer_json()?)?
        }
        Some("smollm2") => kiln_tokenizer::Tokenizer::from_gguf_path(fetch("smollm2-135m-instruct-q4_1")?)?,
        Some("gemma3") => kiln_tokenizer::Tokenizer::from_gguf_path(fetch("gemma3-270m-q4_k_m")?)?,
        Some("gptoss") => {
            let mut w = GgufWriter::new();
            w.add("general.architecture", "gpt-oss")?;
            for (k, v) in kiln_synth::vocab::o200k_harmony_vocab()?.metadata() {
                w.add(k, v)?;
            }
            kiln_tokenizer::Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()?)?)?
        }
        _ => bail!("no tokenizer {key}"),
    };
    let corpus_path = repo().join("crates/kiln-tokenizer/tests/fixtures/corpus.json");
    let corpus: Vec<Value> = serde_json::from_slice(&std::fs::read(&corpus_path)?)?;
    let mut out = serde_json::Map::new();
    let mut decoded = Vec::new();
    for c in corpus {
        let (name, text) = (c["name"].as_str().unwrap_or_default(), c["text"].as_str().unwrap_or_default());
        // No BOS/EOS; special-token text parsed (it is the text a chat template writes).
        let ids = tok.encode(text, false, true)?;
        decoded.extend(tok.decode(&ids, true)?.into_bytes());
        decoded.push(0);
        out.insert(name.to_string(), json!(ids));
    }
    // The texts the ids decode to (special tokens as text), all together.
    out.insert("(decoded, sha256)".into(), json!(hex(&Sha256::digest(&decoded))));
    Ok(Value::Object(out))
}

fn fetch(name: &str) -> Result<PathBuf> {
    let spec = kiln_fetch::find(name)?;
    Ok(kiln_fetch::ensure(spec, true)?)
}

// ---------------------------------------------------------------------------------------------
// models: logits and memory

/// A model to load: a fetched file or a synthetic one made in memory.
fn model_file(model: &str) -> Result<Arc<GgufFile>> {
    Ok(Arc::new(match model {
        "smollm2" => GgufFile::open(fetch("smollm2-135m-instruct-q4_1")?)?,
        "gemma3" => GgufFile::open(fetch("gemma3-270m-q4_k_m")?)?,
        synth => {
            let spec = match synth {
                "synth-gptoss" => json!({"arch": "gpt-oss", "layers": 3}),
                "synth-gptoss-window4" => json!({"arch": "gpt-oss", "layers": 3, "window": 4}),
                "synth-gptoss-o200k" => json!({"arch": "gpt-oss", "layers": 2, "vocab": "o200k_harmony"}),
                "synth-llama" => json!({"arch": "llama", "layers": 3}),
                _ => bail!("no model {model}"),
            };
            let m = kiln_synth::from_spec(spec.as_object().unwrap())?;
            GgufFile::from_bytes(m.to_bytes()?)?
        }
    }))
}

struct LogitCase {
    name: &'static str,
    model: &'static str,
    prompt: Prompt,
}

enum Prompt {
    Text(&'static str),
    /// A text repeated: long prompts (batched attention and products, the split decode attention).
    Repeated(&'static str, usize),
    Ids(&'static [u32]),
}

const LOGIT_CASES: [LogitCase; 8] = [
    LogitCase { name: "smollm2/capital", model: "smollm2", prompt: Prompt::Text("The capital of France is") },
    LogitCase {
        name: "smollm2/code",
        model: "smollm2",
        prompt: Prompt::Text("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    },
    // ~300 tokens: the prompt takes the tiled attention and the batched products, and decoding
    // past 256 positions the split attention of a one-row batch.
    LogitCase {
        name: "smollm2/long",
        model: "smollm2",
        prompt: Prompt::Repeated("The miller counted the sacks of grain while the river turned the wheel. ", 20),
    },
    LogitCase { name: "gemma3/story", model: "gemma3", prompt: Prompt::Text("Once upon a time, in a small village") },
    LogitCase { name: "synth-gptoss", model: "synth-gptoss", prompt: Prompt::Ids(&[1, 7, 42, 9, 100, 3, 64, 17]) },
    LogitCase {
        name: "synth-gptoss-o200k",
        model: "synth-gptoss-o200k",
        prompt: Prompt::Text("<|start|>user<|message|>Name three rivers.<|end|><|start|>assistant"),
    },
    // A window of 4 positions: 24 positions overrun it many times over.
    LogitCase {
        name: "synth-gptoss-window4",
        model: "synth-gptoss-window4",
        prompt: Prompt::Ids(&[1, 7, 42, 9, 100, 3, 64, 17]),
    },
    LogitCase { name: "synth-llama", model: "synth-llama", prompt: Prompt::Ids(&[1, 7, 42, 9, 100, 3, 64, 17]) },
];

/// Logits along `path` after `prompt`: one forward of the prompt, then one token at a time (the
/// path's own tokens: teacher forcing). Without a path, the greedy one of `STEPS` tokens.
fn teacher_forced<B: Backend>(model: &Model<B>, prompt: &[u32], path: Option<&[u32]>) -> Result<Vec<Vec<f32>>> {
    let n = path.map_or(STEPS, |p| p.len());
    let mut kv = model.kv_cache(prompt.len() + n + 1)?;
    let mut seq = SeqKv::default();
    let ctx = prompt.len() + n + 1;
    let mut logits = vec![model.forward(&mut kv, &mut [&mut seq], &Batch::single(prompt), ctx)?];
    for i in 0..n.saturating_sub(1) {
        let next = match path {
            Some(p) => p[i],
            None => argmax(logits.last().unwrap()) as u32,
        };
        logits.push(model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[next]), ctx)?);
    }
    Ok(logits)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}

fn top_k(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, v[i])).collect()
}

fn range(v: &[f32]) -> f64 {
    let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    (hi - lo) as f64
}

fn logits_case(name: &str, key: &str, base: Option<&Value>, ctx: &Ctx) -> Result<Outcome> {
    let case = LOGIT_CASES.iter().find(|c| c.name == key).context("no such case")?;
    let file = model_file(case.model)?;
    let prompt: Vec<u32> = match case.prompt {
        Prompt::Ids(ids) => ids.to_vec(),
        Prompt::Text(t) => kiln_tokenizer::Tokenizer::from_gguf(&file)?.encode(t, true, true)?,
        Prompt::Repeated(t, n) => kiln_tokenizer::Tokenizer::from_gguf(&file)?.encode(&t.repeat(n), true, true)?,
    };
    let path: Option<Vec<u32>> = if ctx.update {
        None
    } else {
        base.and_then(|b| b["path"].as_array()).map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect())
    };
    let logits = match ctx.device {
        "cpu" => {
            teacher_forced(&Model::load(file.clone(), CpuBackend::new(file.clone(), 2))?, &prompt, path.as_deref())?
        }
        _ => cuda_logits(file, &prompt, path.as_deref())?,
    };
    // The path: the baseline's, or (capturing) the greedy one just computed.
    let path: Vec<u32> = path.unwrap_or_else(|| logits.iter().map(|l| argmax(l) as u32).collect());
    let steps: Vec<Value> = logits
        .iter()
        .map(|l| {
            let t = top_k(l, TOP_K);
            json!({"range": range(l) as f32, "top": t.iter().map(|&(i, x)| json!([i, x])).collect::<Vec<_>>()})
        })
        .collect();
    let value = json!({"prompt_ids": prompt, "path": path, "steps": steps});
    let Some(base) = base else {
        let row = Row {
            case: name.into(),
            baseline: "-".into(),
            now: format!("{} steps", logits.len()),
            delta: "-".into(),
            verdict: Verdict::New,
            note: "no baseline yet (--update)".into(),
        };
        return Ok(Outcome { value, row });
    };
    // A top id may change only where the baseline's top two are closer than the logits may move.
    let (tol, near_tie) =
        if ctx.device == "cpu" { (CPU_TOLERANCE, CPU_TOLERANCE) } else { (CUDA_TOLERANCE, CUDA_NEAR_TIE) };
    let mut worst = 0f64;
    let mut notes = Vec::new();
    if base["prompt_ids"] != value["prompt_ids"] {
        notes.push("prompt ids differ".to_string());
    }
    let bsteps = base["steps"].as_array().context("baseline without steps")?;
    for (s, (bs, l)) in bsteps.iter().zip(&logits).enumerate() {
        let r = bs["range"].as_f64().unwrap_or(0.0).max(1e-9);
        let top = bs["top"].as_array().context("baseline step without top")?;
        for t in top {
            let (id, want) = (t[0].as_u64().unwrap_or(0) as usize, t[1].as_f64().unwrap_or(f64::NAN));
            let d = (l.get(id).copied().unwrap_or(f32::NAN) as f64 - want).abs() / r;
            worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
        }
        let gap = (top[0][1].as_f64().unwrap_or(0.0) - top[1][1].as_f64().unwrap_or(0.0)) / r;
        if argmax(l) as u64 != top[0][0].as_u64().unwrap_or(u64::MAX) && gap >= near_tie {
            notes.push(format!(
                "step {s}: top id {} (baseline {}), gap {:.4}% of range",
                argmax(l),
                top[0][0],
                gap * 100.0
            ));
        }
    }
    if bsteps.len() != logits.len() {
        notes.push(format!("{} steps, baseline {}", logits.len(), bsteps.len()));
    }
    let within = worst <= tol;
    if !within {
        notes.push(format!("worst logit {:.4}% of the range, tolerance {}%", worst * 100.0, tol * 100.0));
    }
    let row = Row {
        case: name.into(),
        baseline: format!("{} steps", bsteps.len()),
        now: format!("max {:.2e} of range", worst),
        delta: format!("tol {tol:.0e}"),
        verdict: if within && notes.is_empty() { Verdict::Ok } else { Verdict::Fail },
        note: notes.join("; "),
    };
    Ok(Outcome { value, row })
}

#[cfg(feature = "cuda")]
fn cuda_logits(file: Arc<GgufFile>, prompt: &[u32], path: Option<&[u32]>) -> Result<Vec<Vec<f32>>> {
    let device = kiln_cuda::Device::new(kiln_cuda::DeviceOptions { ordinal: 0, cap: None, fail_alloc: None })?;
    let model = Model::load(file, kiln_model::CudaBackend::new(device, None))?;
    teacher_forced(&model, prompt, path)
}

#[cfg(not(feature = "cuda"))]
fn cuda_logits(_: Arc<GgufFile>, _: &[u32], _: Option<&[u32]>) -> Result<Vec<Vec<f32>>> {
    bail!(
        "--device cuda needs xtask built with the cargo feature cuda (cargo run -p xtask --features cuda -- regress --device cuda)"
    )
}

const MEMORY_MODELS: [&str; 4] = ["smollm2", "gemma3", "synth-gptoss", "synth-llama"];

/// What the CPU backend holds after loading, by kind, and the KV cache's bytes per position of
/// its full-attention layers and per sequence of its windowed ones.
fn memory_case(model: &str) -> Result<Value> {
    let file = model_file(model)?;
    let m = Model::load(file.clone(), CpuBackend::new(file, 1))?;
    let weights: serde_json::Map<String, Value> =
        m.backend.resident().into_iter().map(|(k, v)| (k, json!(v))).collect();
    let probe = m.kv_cache_for(1024, 1)?;
    let windowed = probe
        .windowed
        .as_ref()
        .map_or(0, |w| w.layout.bytes_per_position() * (w.layout.n_blocks * w.layout.block_size) as u64);
    Ok(json!({
        "weights": weights,
        "kv_bytes_per_position": probe.full.layout.bytes_per_position(),
        "kv_windowed_bytes_per_sequence_ctx1024": windowed,
    }))
}

// ---------------------------------------------------------------------------------------------
// speed

const SPEED_KERNELS: [&str; 4] = ["dot/q4_1/dispatch", "dot/q8_0/dispatch", "dot/mxfp4/dispatch", "dot/q4_K/dispatch"];

/// Throughput of one run: tokens/s of `kiln bench` or elements/s of a criterion benchmark.
fn speed_once(key: &str) -> Result<f64> {
    if let Some(test) = key.strip_prefix("kiln-bench/smollm2/") {
        let kiln = release_kiln()?;
        let model = fetch("smollm2-135m-instruct-q4_1")?;
        let out = Command::new(&kiln)
            .args(["bench", "-m"])
            .arg(&model)
            .args(["-p", "128", "-n", "32", "-r", "3", "-t", "2", "--json"])
            .output()?;
        if !out.status.success() {
            bail!("kiln bench: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Vec<Value> = serde_json::from_slice(&out.stdout).context("kiln bench --json")?;
        let t = v.iter().find(|t| t["test"] == test).with_context(|| format!("kiln bench: no {test}"))?;
        return t["mean_tps"].as_f64().context("kiln bench: no mean_tps");
    }
    let bench = key.strip_prefix("criterion/").context("speed case")?;
    let status = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args(["bench", "--quiet", "-p", "kiln-quant", "--bench", "quant", "--"])
        .args([&format!("^{bench}$"), "--warm-up-time", "0.5", "--measurement-time", "1.5"])
        .args(["--noplot"])
        .output()?;
    if !status.status.success() {
        bail!("cargo bench failed: {}", String::from_utf8_lossy(&status.stderr));
    }
    // criterion writes target/criterion/<group>/<function>/new/estimates.json (slashes of the
    // id become folders) and benchmark.json with the throughput.
    let dir = repo().join("target/criterion").join(bench).join("new");
    let est: Value =
        serde_json::from_slice(&std::fs::read(dir.join("estimates.json")).context("criterion estimates")?)?;
    let bm: Value = serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).context("criterion benchmark")?)?;
    let ns = est["mean"]["point_estimate"].as_f64().context("criterion mean")?;
    let elems =
        bm["throughput"]["Elements"].as_f64().or(bm["throughput"]["Bytes"].as_f64()).context("criterion throughput")?;
    Ok(elems / (ns * 1e-9))
}

fn release_kiln() -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args(["build", "--quiet", "--release", "-p", "kiln-cli"])
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p kiln-cli failed");
    }
    Ok(repo().join("target/release/kiln"))
}

fn speed_case(name: &str, key: &str, base: Option<&Value>, ctx: &Ctx) -> Result<Outcome> {
    let runs: Vec<f64> =
        (0..if ctx.update { SPEED_RUNS } else { 1 }).map(|_| speed_once(key)).collect::<Result<_>>()?;
    let mean = runs.iter().sum::<f64>() / runs.len() as f64;
    let sd = (runs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (runs.len().max(2) - 1) as f64).sqrt();
    let value = json!({"mean": mean as f32, "rel_spread": (sd / mean) as f32, "runs": runs.iter().map(|&x| x as f32).collect::<Vec<_>>()});
    let unit = if key.starts_with("kiln-bench") { "tok/s" } else { "elem/s" };
    let fmt = |x: f64| if x >= 1e6 { format!("{x:.3e} {unit}") } else { format!("{x:.2} {unit}") };
    let Some(b) = base else {
        let row = Row {
            case: name.into(),
            baseline: "-".into(),
            now: fmt(mean),
            delta: "-".into(),
            verdict: Verdict::New,
            note: "no baseline yet (--update)".into(),
        };
        return Ok(Outcome { value, row });
    };
    let (bm, spread) = (b["mean"].as_f64().unwrap_or(0.0), b["rel_spread"].as_f64().unwrap_or(0.0));
    let band = (3.0 * spread).max(0.10);
    let delta = mean / bm - 1.0;
    let (verdict, note) = if mean < SPEED_FAIL * bm {
        (Verdict::Fail, format!("below {:.0}% of the baseline", SPEED_FAIL * 100.0))
    } else if delta.abs() > band {
        (
            Verdict::Reported,
            format!("{} than the band ±{:.0}%", if delta < 0.0 { "slower" } else { "faster" }, band * 100.0),
        )
    } else {
        (Verdict::Ok, format!("within ±{:.0}%", band * 100.0))
    };
    let row = Row {
        case: name.into(),
        baseline: fmt(bm),
        now: fmt(mean),
        delta: format!("{:+.1}%", delta * 100.0),
        verdict,
        note,
    };
    Ok(Outcome { value, row })
}

// ---------------------------------------------------------------------------------------------
// output

fn print_table(rows: &[Row]) {
    println!("| case | baseline | now | delta | verdict | note |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let v = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::New => "new",
            Verdict::Reported => "REPORTED",
            Verdict::Changed => "changed",
            Verdict::Fail => "FAIL",
        };
        println!("| {} | {} | {} | {} | {} | {} |", r.case, r.baseline, r.now, r.delta, v, r.note);
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    println!(
        "\n{} cases: {} ok, {} new, {} reported, {} changed, {} failed",
        rows.len(),
        count(Verdict::Ok),
        count(Verdict::New),
        count(Verdict::Reported),
        count(Verdict::Changed),
        count(Verdict::Fail)
    );
}

/// A baseline file: one key per case; inside, objects one key per line and arrays of numbers or
/// strings on one line, so a diff shows which case and which step or text moved.
fn format_baseline(cases: &BTreeMap<String, Value>) -> String {
    fn fmt(v: &Value, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push_str("{\n");
                for (i, (k, x)) in m.iter().enumerate() {
                    out.push_str(&format!("{pad}{}: ", Value::String(k.clone())));
                    fmt(x, indent + 1, out);
                    out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
                }
                out.push_str(&format!("{}}}", "  ".repeat(indent)));
            }
            Value::Array(a) if a.iter().any(|x| x.is_object() || x.is_array() && x.as_array().unwrap().len() > 2) => {
                out.push_str("[\n");
                for (i, x) in a.iter().enumerate() {
                    out.push_str(&pad);
                    fmt(x, indent + 1, out);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&format!("{}]", "  ".repeat(indent)));
            }
            _ => out.push_str(&v.to_string()),
        }
    }
    let mut out = String::new();
    fmt(&Value::Object(cases.clone().into_iter().collect()), 0, &mut out);
    out.push('\n');
    out
}
