//! Samples token ids from a row of logits with a seed: the first row of a `kiln generate
//! --dump-logits` file (little-endian f32, n_vocab per row), or a built-in 8-token row.
//!
//! ```sh
//! cargo run -p kiln-sample --example sample                         # the built-in row
//! kiln generate -n 1 --dump-logits /tmp/l.f32 "The capital of France is"
//! cargo run -p kiln-sample --example sample -- /tmp/l.f32 49152 7   # FILE N_VOCAB [SEED]
//! ```

use std::process::ExitCode;

use kiln_sample::{Candidates, Sampler, SamplingParams, steps};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (logits, seed) = match args {
        [] => (vec![2.0, 1.5, 0.5, 0.0, -1.0, 3.0, 2.5, -4.0], 0),
        [path, n_vocab, rest @ ..] => {
            let n: usize = n_vocab.parse()?;
            let bytes = std::fs::read(path)?;
            if n == 0 || bytes.len() < 4 * n {
                return Err(format!("{path}: {} bytes, less than one row of {n} f32", bytes.len()).into());
            }
            let row = bytes[..4 * n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (row, rest.first().map(|s| s.parse()).transpose()?.unwrap_or(0))
        }
        _ => return Err("usage: sample [LOGITS.f32 N_VOCAB [SEED]]".into()),
    };

    // Greedy: the highest logit, ties to the lowest id; no random numbers are drawn.
    let mut greedy = Sampler::new(SamplingParams::greedy())?;
    println!("greedy: {}", greedy.sample(&logits, &[]));

    // llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05) with a seed: the
    // same seed, parameters and logits give the same ids on every run and machine.
    let params = SamplingParams { seed, ..SamplingParams::default() };
    let mut sampler = Sampler::new(params.clone())?;
    let mut history = Vec::new();
    for _ in 0..10 {
        let id = sampler.sample(&logits, &history);
        history.push(id);
    }
    println!("10 draws with seed {seed}: {history:?}");

    // The same chain, step by step, to see what is left to draw from.
    let mut c = Candidates::from_logits(&logits);
    steps::top_k(&mut c, params.top_k as usize);
    steps::top_p(&mut c, params.top_p);
    steps::min_p(&mut c, params.min_p);
    steps::temperature(&mut c, params.temperature);
    // Filters keep the list's order (top-k sorts only when it cuts): sort by probability to show.
    let mut probs: Vec<(u32, f64)> = c.ids().zip(steps::softmax(&c)).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (id, p) in probs.iter().take(5) {
        println!("  id {id:>6}  p {p:.4}");
    }
    println!("({} candidates left after top-k, top-p and min-p)", c.len());
    Ok(())
}
