//! Token sampling and stop conditions for kiln.
//!
//! - [`SamplingParams`]: the per-request knobs (temperature, top-k, top-p, min-p, repetition /
//!   frequency / presence penalties, seed), serde-friendly, with [`SamplingParams::validate`] for
//!   the server to turn bad input into `INVALID_ARGUMENT`.
//! - [`Sampler`]: one per sequence; holds the seeded ChaCha8 generator and runs llama.cpp's default
//!   chain (penalties → top-k → top-p → min-p → temperature → draw, or greedy when the temperature
//!   is `<= 0`) over a row of logits. Deterministic across runs and machines for a given seed.
//! - [`steps`]: the chain's steps as pure functions over a [`Candidates`] list, for testing and for
//!   paths that start from a partial list (e.g. a GPU top-k).
//! - [`StopStrings`] / [`StopCriteria`] / [`FinishReason`]: streaming stop-string matching over
//!   detokenized text, EOG tokens and the token budget.
//!
//! Nothing here panics on user input: parameters are validated up front, NaN logits count as
//! `-inf`, and odd inputs (all `-inf`, empty rows) have documented answers.
//!
//! ```
//! use kiln_sample::{FinishReason, Sampler, SamplingParams, StopCriteria, StopStrings};
//!
//! // A tiny "vocabulary" of 4 tokens; token 3 is end-of-generation.
//! let pieces = ["Hel", "lo", " END", "<eos>"];
//! let params = SamplingParams { temperature: 0.0, ..SamplingParams::default() };
//! let mut sampler = Sampler::new(params).unwrap();
//!
//! let mut criteria = StopCriteria::new([3], 16);
//! criteria.stop = StopStrings::new([" END"]).unwrap();
//!
//! let mut history: Vec<u32> = vec![];
//! let mut out = String::new();
//! let mut reason = None;
//! for step in 0.. {
//!     // A fake model: prefers token `step` (0, 1, 2, ...).
//!     let logits: Vec<f32> = (0..4).map(|i| if i == step { 5.0 } else { 0.0 }).collect();
//!     let id = sampler.sample(&logits, &history);
//!     history.push(id);
//!     if let Some(r) = criteria.check_token(id, step as usize + 1) {
//!         reason = Some(r);
//!         break;
//!     }
//!     let (text, stop) = criteria.push_text(pieces[id as usize]);
//!     out.push_str(&text);
//!     if stop.is_some() {
//!         reason = stop;
//!         break;
//!     }
//! }
//! assert_eq!(out, "Hello");
//! assert_eq!(reason, Some(FinishReason::StopString(" END".into())));
//! assert_eq!(reason.unwrap().as_str(), "stop");
//!
//! // Bad parameters are errors, not panics.
//! let bad = SamplingParams { top_p: -0.5, ..SamplingParams::default() };
//! assert!(Sampler::new(bad).unwrap_err().to_string().contains("top_p"));
//! ```
//!
//! Sampling with a seed: llama.cpp's default chain (temperature 0.8, top-k 40, top-p 0.95,
//! min-p 0.05) draws the same ids for the same seed, on every run and machine.
//!
//! ```
//! use kiln_sample::{Sampler, SamplingParams};
//!
//! let logits = [2.0f32, 1.5, 0.5, 0.0, -1.0, 3.0, 2.5, -4.0];
//! let draws = |seed: u64| {
//!     let mut s = Sampler::new(SamplingParams { seed, ..SamplingParams::default() }).unwrap();
//!     (0..16).map(|_| s.sample(&logits, &[])).collect::<Vec<u32>>()
//! };
//! assert_eq!(draws(42), draws(42));
//! // min-p 0.05 keeps logits within ln(20) ≈ 3.0 of the best (3.0): ids 3, 4 and 7 never come.
//! assert!(draws(42).iter().all(|&id| logits[id as usize] > 0.0));
//! ```

mod error;
mod fastmath;
mod params;
mod sampler;
pub mod steps;
mod stop;

pub use error::SamplingError;
pub use params::SamplingParams;
pub use sampler::Sampler;
pub use steps::{Candidate, Candidates, TokenCounts};
pub use stop::{FinishReason, StopChunk, StopCriteria, StopStrings};
