use serde::{Deserialize, Serialize};

use crate::SamplingError;

/// Per-request sampling parameters.
///
/// A plain struct: every field is public, it (de)serializes with serde, and fields missing from a
/// serialized form take their [`Default`] values. The defaults are llama.cpp's (`common_params_sampling`):
/// temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition/frequency/presence penalty, a
/// 64-token penalty window, seed 0. Use [`SamplingParams::greedy`] for deterministic argmax decoding
/// and [`SamplingParams::neutral`] for "sample from the model's distribution as it is".
///
/// Each "off" value below makes its step a no-op; [`SamplingParams::validate`] lists the ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature. `<= 0` means greedy decoding: the highest (penalized) logit wins, ties go
    /// to the lowest token id, and the RNG is not used. Must be finite.
    pub temperature: f32,
    /// Keep the `top_k` highest logits. `0` = off.
    pub top_k: u32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probabilities sum to at
    /// least `top_p`. In `[0, 1]`; `1.0` = off; `0.0` keeps only the most likely token.
    pub top_p: f32,
    /// Keep tokens whose probability is at least `min_p` times the most likely token's. In `[0, 1]`;
    /// `0.0` = off.
    pub min_p: f32,
    /// Repetition penalty for every distinct token in the penalty window: a positive logit is divided
    /// by it, a zero or negative one multiplied. `> 0` and finite; `1.0` = off; `< 1` encourages
    /// repetition.
    pub repeat_penalty: f32,
    /// How many of the most recent `history` tokens the three penalties look at: `0` = penalties off,
    /// `-1` = the whole history (llama.cpp's `--repeat-last-n -1`, which there means the context size;
    /// here the history *is* the context). Values below `-1` are refused.
    pub repeat_last_n: i32,
    /// Subtracted once from the logit of every token that occurs in the window. Finite; `0` = off.
    pub presence_penalty: f32,
    /// Subtracted `count` times from the logit of a token that occurs `count` times in the window.
    /// Finite; `0` = off.
    pub frequency_penalty: f32,
    /// Seed of the per-sequence random generator (see [`Sampler`](crate::Sampler)). Any value.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0 and every filter and penalty off.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::neutral() }
    }

    /// Temperature 1 and every filter and penalty off: draws follow the softmax of the logits.
    pub fn neutral() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }

    /// Whether [`Sampler`](crate::Sampler) decodes greedily with these parameters (`temperature <= 0`).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether any of the three penalties changes a logit.
    pub fn penalties_enabled(&self) -> bool {
        self.repeat_last_n != 0
            && (self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }

    /// Checks every field against its range; the first offending field is reported.
    ///
    /// | field | accepted |
    /// | --- | --- |
    /// | `temperature` | finite (`<= 0` = greedy) |
    /// | `top_k` | any (`0` = off) |
    /// | `top_p` | `0 ..= 1` |
    /// | `min_p` | `0 ..= 1` |
    /// | `repeat_penalty` | finite, `> 0` |
    /// | `repeat_last_n` | `>= -1` |
    /// | `presence_penalty`, `frequency_penalty` | finite |
    /// | `seed` | any |
    pub fn validate(&self) -> Result<(), SamplingError> {
        fn bad(name: &'static str, value: impl ToString, expected: &'static str) -> SamplingError {
            SamplingError::InvalidParameter { name, value: value.to_string(), expected }
        }
        if !self.temperature.is_finite() {
            return Err(bad("temperature", self.temperature, "a finite number (<= 0 means greedy)"));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(bad("top_p", self.top_p, "a number in [0, 1] (1 disables it)"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(bad("min_p", self.min_p, "a number in [0, 1] (0 disables it)"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(bad("repeat_penalty", self.repeat_penalty, "a finite number > 0 (1 disables it)"));
        }
        if self.repeat_last_n < -1 {
            return Err(bad(
                "repeat_last_n",
                self.repeat_last_n,
                "-1 (whole history), 0 (penalties off) or a positive window length",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(bad("presence_penalty", self.presence_penalty, "a finite number (0 disables it)"));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(bad("frequency_penalty", self.frequency_penalty, "a finite number (0 disables it)"));
        }
        Ok(())
    }
}
