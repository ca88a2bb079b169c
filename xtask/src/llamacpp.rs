//! `cargo xtask llamacpp-fixtures`: capture llama.cpp's greedy decoding as compact test fixtures.
//!
//! For every (model, prompt) pair in `crates/kiln-model/tests/fixtures/llamacpp/prompts.json`,
//! runs the reference tool `greedy_ids` (built by `/work/shared/reference/build_llamacpp.sh`)
//! with `--dump-logits`, and reduces each step's full logits row to its max, min, the 40 highest
//! (id, logit) pairs and the logits at a fixed pseudo-random set of probe ids. The fixture format
//! is described in that folder's README.md.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Version of the fixture format (bump when a field changes meaning).
const SCHEMA: u32 = 1;
/// How many of the highest logits each step keeps.
const TOP_K: usize = 40;
/// How many probe ids each file keeps.
const PROBE_COUNT: usize = 256;
/// Seed of the probe-id generator (splitmix64; see `probe_ids`). ASCII "kilnprob".
const PROBE_SEED: u64 = 0x6b69_6c6e_7072_6f62;
/// Significant digits of `max`, `min` and `top` logits.
const TOP_DIGITS: usize = 6;
/// Significant digits of `probe` logits.
const PROBE_DIGITS: usize = 5;

/// Options of `cargo xtask llamacpp-fixtures` (flags are documented in main.rs).
pub struct Options {
    pub bin_dir: PathBuf,
    pub models: Vec<String>,
    pub prompts: Vec<String>,
    pub steps: usize,
    pub threads: usize,
    pub prompts_file: PathBuf,
    pub out_dir: PathBuf,
    pub llama_commit: Option<String>,
}

/// The folder that holds `prompts.json` and the fixtures.
pub fn default_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/kiln-model/tests/fixtures/llamacpp")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptsFile {
    #[allow(dead_code)]
    about: Option<String>,
    models: Vec<String>,
    prompts: Vec<PromptSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptSpec {
    name: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    text_by_model: Option<Map<String, Value>>,
    #[serde(default)]
    eos_variant: Vec<String>,
    #[serde(default)]
    eos_max_steps: Option<usize>,
}

impl PromptSpec {
    /// The prompt text for `model`, or None when the prompt does not apply to it.
    fn text_for(&self, model: &str) -> Result<Option<&str>> {
        match (&self.text, &self.text_by_model) {
            (Some(t), None) => Ok(Some(t)),
            (None, Some(by)) => match by.get(model) {
                None => Ok(None),
                Some(Value::String(t)) => Ok(Some(t)),
                Some(other) => bail!("prompt {:?}: text_by_model.{model} is not a string: {other}", self.name),
            },
            _ => bail!("prompt {:?}: give exactly one of `text` and `text_by_model`", self.name),
        }
    }
}

/// What `greedy_ids` prints (fields kiln does not need are ignored).
#[derive(Deserialize)]
struct GreedyOutput {
    prompt: String,
    n_vocab: usize,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    generated_text_hex: String,
    top5_per_step: Vec<Vec<(u32, f32)>>,
}

/// The model file a capture runs on.
#[derive(Clone)]
pub struct ModelRef {
    /// Fixture folder name.
    pub name: String,
    pub file_name: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// One capture: a prompt for one model, with or without --ignore-eos.
pub struct Job<'a> {
    pub model: ModelRef,
    pub prompt_name: String,
    pub text: &'a str,
    pub ignore_eos: bool,
    pub max_steps: usize,
}

/// Where and how captures run.
pub struct Capture<'a> {
    pub greedy: PathBuf,
    pub threads: usize,
    pub commit: &'a str,
    pub out_dir: &'a Path,
    /// The `generator` field of the fixtures.
    pub generator: &'a str,
    pub tmp: PathBuf,
}

/// Summary of one written fixture, for the report printed at the end.
pub struct Summary {
    file: PathBuf,
    n_prompt: usize,
    n_steps: usize,
    bytes: usize,
    /// Steps (0-based) whose top-2 gap is below 0.05, with the gap.
    near_ties: Vec<(usize, f32)>,
    stopped_at_eog: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    ensure!(opts.steps > 0, "--steps must be at least 1");
    ensure!(opts.threads > 0, "--threads must be at least 1");
    let greedy = greedy_tool(&opts.bin_dir)?;
    let commit = match &opts.llama_commit {
        Some(c) => c.clone(),
        None => llama_commit(&opts.bin_dir)?,
    };

    let text =
        fs::read_to_string(&opts.prompts_file).with_context(|| format!("reading {}", opts.prompts_file.display()))?;
    let file: PromptsFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", opts.prompts_file.display()))?;
    let mut seen = BTreeSet::new();
    for p in &file.prompts {
        ensure!(
            !p.name.is_empty() && p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "prompt name {:?} must be non-empty [A-Za-z0-9_-]",
            p.name
        );
        ensure!(seen.insert(p.name.clone()), "prompt name {:?} appears twice", p.name);
    }
    for want in &opts.prompts {
        ensure!(seen.contains(want), "no prompt named {want:?} in {}", opts.prompts_file.display());
    }

    let models = if opts.models.is_empty() { file.models.clone() } else { opts.models.clone() };
    let mut jobs = Vec::new();
    for name in &models {
        let spec = kiln_fetch::find(name)?;
        let model_path = kiln_fetch::ensure(spec, true).with_context(|| format!("fetching {}", spec.name))?;
        let model = ModelRef {
            name: spec.name.into(),
            file_name: spec.file_name.into(),
            sha256: spec.sha256.into(),
            path: model_path,
        };
        for p in &file.prompts {
            if !opts.prompts.is_empty() && !opts.prompts.contains(&p.name) {
                continue;
            }
            let Some(text) = p.text_for(name)? else {
                continue;
            };
            check_prompt(&p.name, text)?;
            jobs.push(Job {
                model: model.clone(),
                prompt_name: p.name.clone(),
                text,
                ignore_eos: true,
                max_steps: opts.steps,
            });
            if p.eos_variant.iter().any(|m| m == name) {
                jobs.push(Job {
                    model: model.clone(),
                    prompt_name: format!("{}_eos", p.name),
                    text,
                    ignore_eos: false,
                    max_steps: p.eos_max_steps.unwrap_or(opts.steps),
                });
            }
        }
    }
    ensure!(!jobs.is_empty(), "nothing to capture (check --models and --prompts)");

    let cap = Capture {
        greedy,
        threads: opts.threads,
        commit: &commit,
        out_dir: &opts.out_dir,
        generator: "cargo xtask llamacpp-fixtures (greedy_ids from /work/shared/reference)",
        tmp: temp_dir("llamacpp-fixtures")?,
    };
    let summaries = cap.run_all(&jobs);
    let _ = fs::remove_dir_all(&cap.tmp);
    print_summary(&summaries?, &opts.out_dir, &commit, opts.threads);
    Ok(())
}

/// `greedy_ids` in `bin_dir`, or an error that says how to build it.
pub fn greedy_tool(bin_dir: &Path) -> Result<PathBuf> {
    let greedy = bin_dir.join("greedy_ids");
    ensure!(
        greedy.is_file(),
        "{} not found; build llama.cpp with `bash /work/shared/reference/build_llamacpp.sh DIR` and pass --bin-dir DIR/build-cpu/bin",
        greedy.display()
    );
    Ok(greedy)
}

/// A fresh scratch folder under the system's temp dir.
pub fn temp_dir(what: &str) -> Result<PathBuf> {
    let tmp = std::env::temp_dir().join(format!("kiln-{what}-{}", std::process::id()));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// The table printed after a capture run.
pub fn print_summary(summaries: &[Summary], out_dir: &Path, commit: &str, threads: usize) {
    println!("{:<55} {:>7} {:>6} {:>8}  near-ties (step: top-2 gap < 0.05)", "fixture", "prompt", "steps", "bytes");
    let mut total = 0;
    for s in summaries {
        total += s.bytes;
        let ties: Vec<String> = s.near_ties.iter().map(|(i, g)| format!("{i}: {g:.4}")).collect();
        let rel = s.file.strip_prefix(out_dir).unwrap_or(&s.file);
        println!(
            "{:<55} {:>7} {:>6} {:>8}  {}{}",
            rel.display(),
            s.n_prompt,
            s.n_steps,
            s.bytes,
            if ties.is_empty() { "-".to_string() } else { ties.join(", ") },
            if s.stopped_at_eog { "  (stopped at EOG)" } else { "" }
        );
    }
    println!("{} fixtures, {} bytes in all, llama.cpp {commit}, {threads} threads", summaries.len(), total);
}

/// Reads the llama.cpp commit from `llama-completion --version` ("… (build 1, commit 0c1e570)").
pub fn llama_commit(bin_dir: &Path) -> Result<String> {
    let exe = bin_dir.join("llama-completion");
    let out = Command::new(&exe)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version (or pass --llama-commit)", exe.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let commit = text
        .split("commit ")
        .nth(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect::<String>())
        .filter(|c| !c.is_empty());
    commit.with_context(|| format!("no commit in `{} --version` output: {text:?} (pass --llama-commit)", exe.display()))
}

/// Rejects prompts that `greedy_ids`' argument parser would misread or that argv cannot carry.
pub fn check_prompt(name: &str, text: &str) -> Result<()> {
    ensure!(!text.is_empty(), "prompt {name:?} is empty (greedy_ids would use its default prompt)");
    ensure!(!text.contains('\0'), "prompt {name:?} contains a NUL byte");
    ensure!(!text.starts_with('-'), "prompt {name:?} starts with '-' (greedy_ids would read it as a flag)");
    Ok(())
}

impl Capture<'_> {
    pub fn run_all(&self, jobs: &[Job]) -> Result<Vec<Summary>> {
        jobs.iter()
            .map(|job| {
                eprintln!("capturing {}/{} ...", job.model.name, job.prompt_name);
                self.capture(job)
            })
            .collect()
    }

    fn capture(&self, job: &Job) -> Result<Summary> {
        let what = format!("{}/{}", job.model.name, job.prompt_name);
        let dump = self.tmp.join(format!("{}-{}.f32", job.model.name, job.prompt_name));
        let mut cmd = Command::new(&self.greedy);
        cmd.arg("-m").arg(&job.model.path);
        cmd.args(["-n", &job.max_steps.to_string(), "-t", &self.threads.to_string()]);
        if job.ignore_eos {
            cmd.arg("--ignore-eos");
        }
        cmd.arg("--dump-logits").arg(&dump).arg(job.text);
        let out = cmd.output().with_context(|| format!("{what}: running {}", self.greedy.display()))?;
        if !out.status.success() {
            bail!("{what}: greedy_ids failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        let stdout =
            String::from_utf8(out.stdout).with_context(|| format!("{what}: greedy_ids printed invalid UTF-8"))?;
        let g: GreedyOutput =
            serde_json::from_str(&stdout).with_context(|| format!("{what}: parsing greedy_ids output:\n{stdout}"))?;
        ensure!(g.prompt == job.text, "{what}: greedy_ids echoed a different prompt: {:?}", g.prompt);
        ensure!(g.n_vocab > TOP_K.max(PROBE_COUNT), "{what}: n_vocab {} too small", g.n_vocab);
        let n_steps = g.generated_ids.len();
        ensure!(n_steps > 0 && n_steps <= job.max_steps, "{what}: {n_steps} generated ids for -n {}", job.max_steps);
        ensure!(
            g.top5_per_step.len() == n_steps,
            "{what}: {} top-5 rows for {n_steps} generated ids",
            g.top5_per_step.len()
        );
        if job.ignore_eos {
            ensure!(
                n_steps == job.max_steps,
                "{what}: --ignore-eos run stopped after {n_steps} of {} steps",
                job.max_steps
            );
        }
        let text_bytes = from_hex(&g.generated_text_hex).with_context(|| format!("{what}: generated_text_hex"))?;

        let raw = fs::read(&dump).with_context(|| format!("{what}: reading logits dump {}", dump.display()))?;
        let row_bytes = g.n_vocab * 4;
        ensure!(
            raw.len() == row_bytes * n_steps,
            "{what}: logits dump has {} bytes, expected {n_steps} rows of {} floats",
            raw.len(),
            g.n_vocab
        );
        fs::remove_file(&dump).with_context(|| format!("removing {}", dump.display()))?;

        let probe = probe_ids(g.n_vocab, PROBE_COUNT, PROBE_SEED);
        let mut steps = Vec::with_capacity(n_steps);
        let mut near_ties = Vec::new();
        for (i, chunk) in raw.chunks_exact(row_bytes).enumerate() {
            let row: Vec<f32> = chunk.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            if let Some(bad) = row.iter().position(|x| !x.is_finite()) {
                bail!("{what}: step {i}: logit of id {bad} is {}", row[bad]);
            }
            let top = top_k(&row, TOP_K);
            // The dump and the printed ids must tell the same story.
            ensure!(
                top[0].0 == g.generated_ids[i],
                "{what}: step {i}: argmax of dumped logits is {} but greedy_ids chose {}",
                top[0].0,
                g.generated_ids[i]
            );
            for (k, &(id, logit)) in g.top5_per_step[i].iter().enumerate() {
                ensure!(
                    top[k].0 == id && (top[k].1 - logit).abs() <= 1e-4 * logit.abs().max(1.0),
                    "{what}: step {i}: printed top-5 #{k} ({id}, {logit}) differs from the dump ({}, {})",
                    top[k].0,
                    top[k].1
                );
            }
            let gap = top[0].1 - top[1].1;
            if gap < 0.05 {
                near_ties.push((i, gap));
            }
            let max = top[0].1;
            let min = row.iter().copied().fold(f32::INFINITY, f32::min);
            let mut step = Map::new();
            step.insert("max".into(), num(max, TOP_DIGITS)?);
            step.insert("min".into(), num(min, TOP_DIGITS)?);
            step.insert(
                "top".into(),
                Value::Array(
                    top.iter().map(|&(id, l)| Ok(json!([id, num(l, TOP_DIGITS)?]))).collect::<Result<Vec<_>>>()?,
                ),
            );
            step.insert(
                "probe".into(),
                Value::Array(probe.iter().map(|&id| num(row[id as usize], PROBE_DIGITS)).collect::<Result<Vec<_>>>()?),
            );
            steps.push(Value::Object(step));
        }
        let stopped_at_eog = !job.ignore_eos && n_steps < job.max_steps;
        if !job.ignore_eos && !stopped_at_eog {
            bail!(
                "{what}: run without --ignore-eos did not stop at an end-of-generation token within {} steps",
                job.max_steps
            );
        }

        let mut f = Map::new();
        f.insert("schema".into(), json!(SCHEMA));
        f.insert("generator".into(), json!(self.generator));
        f.insert("llama_cpp_commit".into(), json!(self.commit));
        f.insert("threads".into(), json!(self.threads));
        f.insert("model".into(), json!(job.model.name));
        f.insert("model_file".into(), json!(job.model.file_name));
        f.insert("model_sha256".into(), json!(job.model.sha256));
        f.insert("n_vocab".into(), json!(g.n_vocab));
        f.insert("prompt_name".into(), json!(job.prompt_name));
        f.insert("prompt".into(), json!(job.text));
        f.insert("add_special".into(), json!(true));
        f.insert("parse_special".into(), json!(true));
        f.insert("ignore_eos".into(), json!(job.ignore_eos));
        f.insert("max_steps".into(), json!(job.max_steps));
        f.insert("stopped_at_eog".into(), json!(stopped_at_eog));
        f.insert("prompt_ids".into(), json!(g.prompt_ids));
        f.insert("generated_ids".into(), json!(g.generated_ids));
        f.insert("generated_text".into(), String::from_utf8(text_bytes).map_or(Value::Null, Value::String));
        f.insert("generated_text_hex".into(), json!(g.generated_text_hex));
        f.insert("top_k".into(), json!(TOP_K));
        f.insert("top_digits".into(), json!(TOP_DIGITS));
        f.insert("probe_digits".into(), json!(PROBE_DIGITS));
        f.insert("probe_seed".into(), json!(format!("{PROBE_SEED:#018x}")));
        f.insert("probe_ids".into(), json!(probe));
        f.insert("steps".into(), Value::Array(steps));

        let text = layout(&f)?;
        let dir = self.out_dir.join(&job.model.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("{}.json", job.prompt_name));
        fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
        Ok(Summary { file, n_prompt: g.prompt_ids.len(), n_steps, bytes: text.len(), near_ties, stopped_at_eog })
    }
}

/// The `k` highest (id, logit) pairs, by logit descending, ties by id ascending (greedy_ids' order).
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k, cmp);
    idx.truncate(k);
    idx.sort_unstable_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

/// `count` distinct ids below `n_vocab`, ascending: splitmix64 from `seed`, each draw taken
/// modulo `n_vocab`, repeats skipped.
fn probe_ids(n_vocab: usize, count: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut ids = BTreeSet::new();
    while ids.len() < count {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ids.insert((z % n_vocab as u64) as u32);
    }
    ids.into_iter().collect()
}

/// `x` rounded to `digits` significant digits, as a JSON number (shortest decimal form).
fn num(x: f32, digits: usize) -> Result<Value> {
    let s = format!("{:.*e}", digits - 1, x as f64);
    let v: f64 = s.parse().with_context(|| format!("rounding {x}"))?;
    serde_json::Number::from_f64(v).map(Value::Number).with_context(|| format!("logit {x} is not finite"))
}

/// Pretty-prints the top-level object one key per line, arrays of objects one element per line,
/// everything else on one line: small files that still diff per step.
fn layout(obj: &Map<String, Value>) -> Result<String> {
    let mut s = String::from("{\n");
    for (i, (k, v)) in obj.iter().enumerate() {
        let sep = if i + 1 < obj.len() { "," } else { "" };
        let key = serde_json::to_string(k)?;
        match v {
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                writeln!(s, "  {key}: [")?;
                for (j, item) in items.iter().enumerate() {
                    let isep = if j + 1 < items.len() { "," } else { "" };
                    writeln!(s, "    {}{isep}", serde_json::to_string(item)?)?;
                }
                writeln!(s, "  ]{sep}")?;
            }
            _ => writeln!(s, "  {key}: {}{sep}", serde_json::to_string(v)?)?,
        }
    }
    s.push_str("}\n");
    Ok(s)
}

fn from_hex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len().is_multiple_of(2), "odd length {}", s.len());
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let pair = s.get(i..i + 2).context("non-ASCII hex")?;
            u8::from_str_radix(pair, 16).with_context(|| format!("bad hex byte {pair:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_logit_then_id() {
        let row = [1.0, 3.0, 3.0, -1.0, 2.0];
        assert_eq!(top_k(&row, 3), vec![(1, 3.0), (2, 3.0), (4, 2.0)]);
    }

    #[test]
    fn probe_ids_are_distinct_sorted_and_in_range() {
        let ids = probe_ids(1000, 256, PROBE_SEED);
        assert_eq!(ids.len(), 256);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|&i| i < 1000));
        assert_eq!(ids, probe_ids(1000, 256, PROBE_SEED));
    }

    #[test]
    fn num_rounds_to_significant_digits() {
        assert_eq!(num(17.569_214, 6).unwrap().to_string(), "17.5692");
        assert_eq!(num(-0.000_123_456_7, 5).unwrap().to_string(), "-0.00012346");
    }
}
