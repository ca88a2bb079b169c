use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::steps::{self, Candidates, TokenCounts};
use crate::{SamplingError, SamplingParams};

/// A per-sequence sampler: validated [`SamplingParams`] plus the sequence's random generator and
/// scratch buffers. The scheduler keeps one per request.
///
/// # Chain
///
/// llama.cpp's default common-sampler order (penalties, top-k, top-p, min-p, temperature, draw):
///
/// 1. penalties over the last `repeat_last_n` tokens of `history` ([`steps::penalties`]);
/// 2. if `temperature <= 0`: the highest penalized logit, ties to the lowest id ([`steps::greedy`];
///    the filters cannot change the argmax, so they are skipped, and the RNG is not touched);
/// 3. otherwise [`steps::top_k`] → [`steps::top_p`] → [`steps::min_p`] (all on the untempered
///    logits, as in llama.cpp) → [`steps::temperature`] → [`steps::draw`].
///
/// # Determinism
///
/// The generator is ChaCha8 (`rand_chacha::ChaCha8Rng`) seeded with the 32-byte key whose first 8
/// bytes are `seed` in little-endian order and whose other 24 bytes are zero. Every non-greedy call
/// to [`Sampler::sample`] / [`Sampler::sample_candidates`] takes exactly one `u64` from it and turns
/// it into the uniform `u = (x >> 11) · 2⁻⁵³` in `[0, 1)`; greedy calls take none. All arithmetic on
/// the way is fixed-order `f32`/`f64` IEEE arithmetic (a portable `exp`, pure-Rust `libm` for `log`),
/// and every sort uses a total order, so the same seed, parameters, logits and history give the
/// same token on every run and machine.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    cands: Candidates,
    counts: TokenCounts,
    weights: Vec<f64>,
}

/// The ChaCha8 generator for `seed` (see [`Sampler`]'s determinism notes).
fn rng_for_seed(seed: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

impl Sampler {
    /// Validates `params` ([`SamplingParams::validate`]) and seeds the generator.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        Ok(Self {
            rng: rng_for_seed(params.seed),
            params,
            cands: Candidates::new(),
            counts: TokenCounts::new(),
            weights: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Restarts the random stream from `seed` (as a fresh sampler with that seed would have it).
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = rng_for_seed(seed);
    }

    /// The next uniform number in `[0, 1)` from the sequence's generator.
    pub fn next_uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Picks the next token from one row of logits (`logits[i]` is token `i`'s logit). `history` is
    /// every token id of the sequence so far, prompt and generated, oldest first; only the penalty
    /// window of it is read, and ids past the vocabulary are ignored.
    ///
    /// Never panics: NaN logits count as `-inf`, `+inf` as `f32::MAX`; a row whose logits are all
    /// `-inf` (or NaN) gives token 0; an empty row gives 0 as well (there is no valid answer — the
    /// model always returns a vocabulary-sized row).
    ///
    /// Cost on a row of n logits: greedy and top-k up to 4096 are one pass over the row that skips
    /// 64-logit blocks which cannot matter, with no full candidate list; otherwise the row is copied
    /// into a candidate list, top-k selects in O(n), top-p is O(n) plus sorting one histogram
    /// bucket ([`steps::top_p`]), and the draw computes one `exp` per remaining candidate.
    /// `cargo bench -p kiln-sample` times each configuration on a 262,144-entry row.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.penalties_enabled() {
            self.counts.refill(history, p.repeat_last_n);
        } else {
            self.counts.refill(&[], 0);
        }
        let pen = (p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        if p.is_greedy() {
            return steps::greedy_row(logits, &self.counts, pen);
        }
        let k = p.top_k as usize;
        let mut cands = std::mem::take(&mut self.cands);
        if k > 0 && k <= TOP_K_HEAP_MAX && k < logits.len() {
            steps::top_k_row(logits, &self.counts, pen, k, &mut cands);
        } else {
            cands.fill_from_logits(logits);
            steps::penalties(&mut cands, &self.counts, pen.0, pen.1, pen.2);
        }
        let id = self.filter_and_draw(&mut cands).unwrap_or(0);
        self.cands = cands;
        id
    }

    /// Runs the whole chain on a candidate list (for callers that have only part of the vocabulary,
    /// e.g. a GPU top-k; note that penalties then apply only to the tokens present). The list is
    /// left as the filters left it. `None` only if `candidates` is empty; a non-greedy call draws
    /// from the generator either way.
    pub fn sample_candidates(&mut self, candidates: &mut Candidates, history: &[u32]) -> Option<u32> {
        let p = &self.params;
        if p.penalties_enabled() {
            self.counts.refill(history, p.repeat_last_n);
            steps::penalties(candidates, &self.counts, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        }
        if p.is_greedy() {
            return steps::greedy(candidates);
        }
        steps::top_k(candidates, p.top_k as usize);
        self.filter_and_draw(candidates)
    }

    /// The chain after top-k: top-p, min-p, temperature, one uniform, draw.
    fn filter_and_draw(&mut self, candidates: &mut Candidates) -> Option<u32> {
        let p = &self.params;
        steps::top_p(candidates, p.top_p);
        steps::min_p(candidates, p.min_p);
        steps::temperature(candidates, p.temperature);
        let u = self.next_uniform();
        steps::draw_with(candidates, u, &mut self.weights)
    }
}

/// Largest top-k taken with the bounded heap straight from the row; above it the row is copied and
/// the k best selected with `select_nth_unstable` (O(n) instead of O(n log k)).
const TOP_K_HEAP_MAX: usize = 4096;
