//! `kiln bench`: prefill and decode throughput measured the way `llama-bench` measures them —
//! a warm-up run, then `reps` runs each from an empty KV cache; prefill (`pp N`) processes N
//! random tokens in one batch with logits for the last one, decode (`tg N`) generates N tokens
//! one forward at a time; tokens/s is computed per run and reported as mean ± sd.

use std::time::Instant;

use kiln_model::{Backend, Batch, Model, SeqKv};
use serde::Serialize;

#[derive(Serialize)]
pub struct BenchResult {
    /// `pp512` or `tg128`, as llama-bench names its tests.
    pub test: String,
    pub n_tokens: usize,
    pub reps: usize,
    pub threads: usize,
    /// Tokens per second of each run.
    pub samples_tps: Vec<f64>,
    pub mean_tps: f64,
    pub sd_tps: f64,
}

/// A small deterministic generator for token ids (the ids do not matter for speed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

fn prefill<B: Backend>(model: &Model<B>, n: usize, rng: &mut Lcg) -> anyhow::Result<f64> {
    let mut kv = model.kv_cache(n + 1)?;
    let mut seq = SeqKv::default();
    let ids: Vec<u32> = (0..n).map(|_| rng.next(model.config.n_vocab)).collect();
    let t = Instant::now();
    model.forward(&mut kv, &mut [&mut seq], &Batch::single(&ids), n + 1)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn decode<B: Backend>(model: &Model<B>, n: usize, rng: &mut Lcg) -> anyhow::Result<f64> {
    let mut kv = model.kv_cache(n + 1)?;
    let mut seq = SeqKv::default();
    let mut tok = rng.next(model.config.n_vocab);
    let t = Instant::now();
    for _ in 0..n {
        model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[tok]), n + 1)?;
        tok = rng.next(model.config.n_vocab);
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs `pp{p}` (if p > 0) and `tg{n}` (if n > 0) with `reps` repetitions after one warm-up.
pub fn run<B: Backend>(
    model: &Model<B>,
    p: usize,
    n: usize,
    reps: usize,
    threads: usize,
) -> anyhow::Result<Vec<BenchResult>> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    type Test<B> = fn(&Model<B>, usize, &mut Lcg) -> anyhow::Result<f64>;
    let tests: [(&str, usize, Test<B>); 2] = [("pp", p, prefill::<B>), ("tg", n, decode::<B>)];
    for (name, count, f) in tests {
        if count == 0 {
            continue;
        }
        // Warm-up as llama-bench does it: the whole prompt once, or a single generated token.
        f(model, if name == "pp" { count } else { 1 }, &mut rng)?;
        let samples: Vec<f64> = (0..reps.max(1)).map(|_| f(model, count, &mut rng)).collect::<Result<_, _>>()?;
        let (mean, sd) = mean_sd(&samples);
        out.push(BenchResult {
            test: format!("{name}{count}"),
            n_tokens: count,
            reps: samples.len(),
            threads,
            samples_tps: samples,
            mean_tps: mean,
            sd_tps: sd,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd_by_hand() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample variance 32/7.
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }
}
