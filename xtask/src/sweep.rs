//! `cargo xtask sweep`: kiln against llama.cpp on random gpt-oss shapes.
//!
//! Each trial draws a shape (layers, width, heads and KV heads, head dim, experts and experts used,
//! expert width, window, attention/embedding/output type) and a prompt length from a seeded
//! generator, writes the model with `kiln-synth`, runs llama.cpp's `greedy_ids --dump-logits`
//! on it, teacher-forces kiln's CPU forward pass along llama.cpp's greedy path, and prints per
//! trial the largest |kiln − llama.cpp| over every logit of every step, as a fraction of that
//! step's logit range. It is the check the synthetic fixtures make, on shapes nobody chose.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use kiln_gguf::GgmlType;
use kiln_model::{Batch, CpuBackend, Model, SeqKv};
use kiln_synth::{GptOss, Rng};
use serde_json::Value;

use crate::llamacpp::{greedy_tool, temp_dir};

pub struct Options {
    pub bin_dir: PathBuf,
    pub trials: usize,
    pub seed: u64,
    pub steps: usize,
}

/// Words for prompts (the byte vocabulary merges a few of them).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her",
];

fn pick<T: Copy>(r: &mut Rng, from: &[T]) -> T {
    from[(r.next_u64() % from.len() as u64) as usize]
}

/// A random gpt-oss shape whose tensors every type can hold.
fn shape(r: &mut Rng, trial: usize, seed: u64) -> GptOss {
    loop {
        let (kv, group, head_dim) = (pick(r, &[1, 2, 3, 4]), pick(r, &[1, 2, 3, 4, 5]), pick(r, &[8, 16, 32, 64, 80]));
        let experts = pick(r, &[2, 4, 8, 16]);
        let ty = pick(r, &[GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16, GgmlType::F32]);
        let c = GptOss {
            layers: pick(r, &[2, 3, 4, 5, 6, 7, 8]),
            hidden: pick(r, &[64, 96, 128, 160, 192, 256]),
            heads: kv * group,
            kv_heads: kv,
            head_dim,
            experts,
            experts_used: 1 + (r.next_u64() % experts.min(4) as u64) as usize,
            ff: pick(r, &[32, 64, 96, 160]),
            window: pick(r, &[2, 4, 8, 16, 32, 128]),
            attn_type: ty,
            embd_type: ty,
            output_type: ty,
            seed: seed.wrapping_add(trial as u64),
            ..GptOss::tiny()
        };
        if c.model().is_ok() {
            return c;
        }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    ensure!(opts.steps > 0, "--steps must be at least 1");
    let greedy = greedy_tool(&opts.bin_dir)?;
    let tmp = temp_dir("sweep")?;
    let mut r = Rng::new(opts.seed);
    let mut worst_all = 0f64;
    println!("{:>9}  {:>6}  shape", "worst", "prompt");
    for trial in 0..opts.trials {
        let c = shape(&mut r, trial, opts.seed);
        let words = pick(&mut r, &[40usize, 170, 250, 520]);
        let prompt: Vec<&str> = (0..words).map(|_| pick(&mut r, WORDS)).collect();
        let prompt = prompt.join(" ");
        let path = tmp.join("model.gguf");
        let bytes = c.model()?.to_bytes()?;
        fs::write(&path, &bytes)?;
        let dump = tmp.join("logits.f32");
        let out = Command::new(&greedy)
            .arg("-m")
            .arg(&path)
            .args(["-n", &opts.steps.to_string(), "-t", "2", "--ignore-eos", "--dump-logits"])
            .arg(&dump)
            .arg(&prompt)
            .output()
            .context("running greedy_ids")?;
        ensure!(out.status.success(), "greedy_ids failed: {}", String::from_utf8_lossy(&out.stderr));
        let g: Value = serde_json::from_slice(&out.stdout).context("greedy_ids output")?;
        let ids =
            |k: &str| -> Vec<u32> { g[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
        let (prompt_ids, generated) = (ids("prompt_ids"), ids("generated_ids"));
        let reference: Vec<f32> =
            fs::read(&dump)?.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();

        let file = Arc::new(kiln_gguf::GgufFile::from_bytes(bytes)?);
        let tok = kiln_tokenizer::Tokenizer::from_gguf(&file)?;
        ensure!(tok.encode(&prompt, true, true)? == prompt_ids, "trial {trial}: prompt ids differ from llama.cpp's");
        let model = Model::load(file.clone(), CpuBackend::new(file, 2))?;
        let nv = model.config.n_vocab;
        let n_ctx = prompt_ids.len() + generated.len() + 1;
        let mut kv = model.kv_cache(n_ctx)?;
        let mut seq = SeqKv::default();
        let mut logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt_ids), n_ctx)?;
        let mut worst = 0f64;
        for (i, want) in reference.chunks_exact(nv).enumerate() {
            let (lo, hi) = want.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let err = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            worst = worst.max(err as f64 / (hi - lo) as f64);
            if i + 1 < generated.len() {
                logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[generated[i]]), n_ctx)?;
            }
        }
        worst_all = worst_all.max(worst);
        println!(
            "{:>8.4}%  {:>6}  layers {} hidden {} heads {}/{}x{} experts {}/{} ff {} window {} {:?} seed {}",
            worst * 100.0,
            prompt_ids.len(),
            c.layers,
            c.hidden,
            c.heads,
            c.kv_heads,
            c.head_dim,
            c.experts_used,
            c.experts,
            c.ff,
            c.window,
            c.attn_type,
            c.seed
        );
    }
    let _ = fs::remove_dir_all(&tmp);
    println!("{} trials, worst {:.4}% of a step's logit range", opts.trials, worst_all * 100.0);
    Ok(())
}
