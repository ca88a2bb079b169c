//! The seam between model code and devices.
//!
//! Model code (the files in `arch/`) is written once against [`Backend`]. A backend owns every
//! buffer: weights ([`Backend::Weight`], kept in their GGUF type), activations ([`Backend::Act`],
//! row-major f32 matrices) and the KV cache ([`Backend::Kv`], paged). The forward pass never
//! copies activations to the host between layers; only the logits rows asked for come back
//! ([`Backend::to_host`] of the gathered rows).

use kiln_quant::GgmlType;

use crate::Result;
use crate::config::RopeStyle;
use crate::kv::KvLayout;

/// A weight tensor as it is stored in the file: type, ggml shape (`shape[0]` = row length) and bytes.
#[derive(Clone, Copy, Debug)]
pub struct WeightData<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub shape: &'a [u64],
    pub bytes: &'a [u8],
}

/// Gated linear unit flavours: `out = act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// SiLU (SwiGLU): llama, qwen2.
    Silu,
    /// GELU, tanh approximation (GeGLU): gemma.
    Gelu,
}

/// RoPE parameters for one layer.
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    pub style: RopeStyle,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    pub base: f32,
    /// Linear position scaling (1.0 = none).
    pub freq_scale: f32,
    /// YaRN extrapolation/interpolation mix and magnitude correction, if the model uses it.
    pub yarn: Option<Yarn>,
}

impl Rope {
    /// `base^(−2/n_rot)`: the ratio between the angles of consecutive dimension pairs.
    pub fn theta_scale(&self) -> f32 {
        self.base.powf(-2.0 / self.n_rot as f32)
    }

    /// YaRN's correction range and magnitude, as ggml's `rope_yarn` computes them once per call:
    /// `(low, high, ext_factor, mscale)`, or `None` without YaRN (or with `ext_factor` 0).
    pub fn yarn_terms(&self) -> Option<(f32, f32, f32, f32)> {
        self.yarn.filter(|y| y.ext_factor != 0.0).map(|y| {
            let corr = |beta: f32| {
                self.n_rot as f32 * (y.n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                    / (2.0 * self.base.ln())
            };
            let low = corr(y.beta_fast).floor().max(0.0);
            let high = corr(y.beta_slow).ceil().min(self.n_rot as f32 - 1.0);
            let mscale = y.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln());
            (low, high, y.ext_factor, mscale)
        })
    }
}

/// YaRN RoPE scaling parameters, as ggml's `rope_yarn` takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// Weight of the extrapolation ramp (1.0 for YaRN models).
    pub ext_factor: f32,
    /// Magnitude factor (ggml multiplies it by `1 + 0.1·ln(1/freq_scale)` when `ext_factor ≠ 0`).
    pub attn_factor: f32,
    /// Context length the model was trained on before scaling.
    pub n_ctx_orig: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

/// A mixture-of-experts FFN with a softmax-over-top-k router and per-expert biases (gpt-oss).
/// The expert tensors are 3-D: `[n_embd, n_ff, n_expert]` for gate/up, `[n_ff, n_embd, n_expert]`
/// for down; their biases `[n_ff, n_expert]` / `[n_embd, n_expert]`.
pub struct Moe<'a, W> {
    pub router: &'a W,
    pub router_b: Option<&'a W>,
    pub gate: &'a W,
    pub gate_b: &'a W,
    pub up: &'a W,
    pub up_b: &'a W,
    pub down: &'a W,
    pub down_b: &'a W,
    pub n_expert: usize,
    pub n_used: usize,
    pub n_ff: usize,
    /// Clamped SwiGLU: `min(gate, limit) · σ(alpha · min(gate, limit)) · (clamp(up, ±limit) + 1)`.
    pub alpha: f32,
    pub limit: f32,
}

/// Where each row of a batch lives: its sequence's KV block table and its position.
#[derive(Clone, Copy, Debug)]
pub struct RowKv<'a> {
    /// The sequence's block table (block ids in position order), from its block number
    /// `first_block` on (sliding-window layers let go of the blocks before).
    pub blocks: &'a [u32],
    pub first_block: usize,
    /// Position of this row in its sequence.
    pub pos: usize,
}

/// Attention parameters of one layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Multiplier on q·k.
    pub scale: f32,
    /// Sliding window: a row at position p sees positions p-window+1 ..= p.
    pub window: Option<usize>,
}

/// One product of [`Backend::matmuls`]: the weight, its bias if any, and the output.
pub type Product<'a, W, A> = (&'a W, Option<&'a W>, &'a mut A);

/// What a device must provide for the model code to run on it. Every operation is fallible: a GPU
/// backend reports a failed launch or allocation as an error, which fails the forward pass (and
/// only that request) instead of the process.
pub trait Backend: Send + Sync {
    /// A weight tensor, kept in its GGUF type.
    type Weight: Send + Sync;
    /// A row-major f32 activation matrix.
    type Act: Send;
    /// KV cache storage for every layer, addressed in blocks.
    type Kv: Send;

    /// Binds a weight tensor (the CPU backend borrows the memory map; a GPU backend uploads it).
    fn weight(&self, w: WeightData<'_>) -> Result<Self::Weight>;
    /// An activation matrix of `rows × cols`, contents unspecified. Fails with a typed error when
    /// the device has no room (a GPU backend draws it from a workspace reused across steps).
    fn act(&self, rows: usize, cols: usize) -> Result<Self::Act>;
    /// An activation matrix of `rows × cols` holding `data` (row-major, `rows · cols` values).
    fn act_from_host(&self, rows: usize, cols: usize, data: &[f32]) -> Result<Self::Act>;
    /// KV storage for `layout`; fails with a typed error if it does not fit.
    fn kv(&self, layout: &KvLayout) -> Result<Self::Kv>;

    /// `out[i] = table[ids[i]] * scale` (rows of the embedding, dequantized).
    fn embed(&self, table: &Self::Weight, ids: &[u32], scale: f32, out: &mut Self::Act) -> Result<()>;
    /// RMS norm of each `group`-wide slice of every row, times `w` (of length `group`).
    fn rms_norm(&self, x: &Self::Act, w: &Self::Weight, group: usize, eps: f32, out: &mut Self::Act) -> Result<()>;
    /// `out = x · wᵀ` (+ bias): `x` is `n × k`, `w` holds `m` rows of `k`, `out` is `n × m`.
    fn matmul(&self, x: &Self::Act, w: &Self::Weight, bias: Option<&Self::Weight>, out: &mut Self::Act) -> Result<()>;
    /// Several products of one input, `out = x · wᵀ (+ bias)` for each `(w, bias, out)`, each
    /// with [`Self::matmul`]'s result; a backend may share work between them (the CPU backend
    /// quantizes `x` once per activation type).
    fn matmuls(&self, x: &Self::Act, products: &mut [Product<'_, Self::Weight, Self::Act>]) -> Result<()> {
        for (w, bias, out) in products.iter_mut() {
            self.matmul(x, w, *bias, out)?;
        }
        Ok(())
    }
    /// `x += y`.
    fn add(&self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    /// `out = act(gate) * up`.
    fn glu(&self, kind: Glu, gate: &Self::Act, up: &Self::Act, out: &mut Self::Act) -> Result<()>;
    /// Rotates every `head_dim`-wide head of every row of `x` in place; row `i` is at `pos[i]`.
    fn rope(&self, x: &mut Self::Act, head_dim: usize, pos: &[usize], rope: &Rope) -> Result<()>;
    /// Writes the K and V rows of this batch into layer `layer` of the cache.
    fn kv_write(&self, kv: &mut Self::Kv, layer: usize, rows: &[RowKv<'_>], k: &Self::Act, v: &Self::Act)
    -> Result<()>;
    /// Causal attention of each row's query heads over its sequence's cached K/V (which already
    /// holds this batch's rows). `sinks`, if given, holds one logit per query head that joins the
    /// softmax denominator with no value (gpt-oss attention sinks).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        kv: &Self::Kv,
        layer: usize,
        rows: &[RowKv<'_>],
        q: &Self::Act,
        p: &AttnParams,
        sinks: Option<&Self::Weight>,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// Mixture-of-experts FFN of every row of `x`: route (top-k of the router logits, softmax over
    /// those k), run only the chosen experts, and sum their outputs weighted.
    fn moe(&self, x: &Self::Act, m: &Moe<'_, Self::Weight>, out: &mut Self::Act) -> Result<()>;
    /// Copies the chosen rows of `x` into a new activation.
    fn gather_rows(&self, x: &Self::Act, rows: &[usize]) -> Result<Self::Act>;
    /// `x = cap * tanh(x / cap)`.
    fn softcap(&self, x: &mut Self::Act, cap: f32) -> Result<()>;
    /// `x *= s`.
    fn scale(&self, x: &mut Self::Act, s: f32) -> Result<()>;
    /// Copies `x` to host memory (row-major).
    fn to_host(&self, x: &Self::Act) -> Result<Vec<f32>>;
}
