//! Hyperparameters read from GGUF metadata, one reading for every architecture.

use kiln_gguf::GgufFile;

use crate::backend::Yarn;
use crate::{ModelError, Result};

/// The architectures kiln runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (Llama 1–3, SmolLM, Mistral-style dense models).
    Llama,
    /// `qwen2`: llama with q/k/v biases and NeoX RoPE.
    Qwen2,
    /// `gemma3`: embedding scaling, QK-norm, pre/post norms, GeGLU, interleaved sliding-window layers.
    Gemma3,
    /// `gpt-oss`: attention with biases and per-head sinks, YaRN RoPE, alternating sliding-window
    /// layers, MXFP4 mixture-of-experts FFN with clamped SwiGLU.
    GptOss,
}

/// How RoPE pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (`x[2i]`, `x[2i+1]`) — ggml's `GGML_ROPE_TYPE_NORMAL`.
    Normal,
    /// Halves (`x[i]`, `x[i + n_rot/2]`) — ggml's `GGML_ROPE_TYPE_NEOX`.
    Neox,
}

/// Model hyperparameters.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of keys and queries.
    pub head_dim: usize,
    /// Per-head width of values.
    pub head_dim_v: usize,
    /// Dimensions RoPE rotates (≤ head_dim).
    pub n_rot: usize,
    pub n_vocab: usize,
    /// Context length the model was trained for (the default context).
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3: 10,000).
    pub rope_base_swa: f32,
    /// Linear RoPE scaling: positions are multiplied by this (1 / `rope.scaling.factor`).
    pub rope_freq_scale: f32,
    /// Sliding window length, if the model has sliding-window layers.
    pub sliding_window: Option<usize>,
    /// Which layers use the sliding window.
    pub swa_layers: Vec<bool>,
    /// Scale applied to q·k.
    pub attn_scale: f32,
    /// Multiplier on the token embeddings (Gemma: √n_embd).
    pub embed_scale: Option<f32>,
    /// Final logit soft-capping (Gemma 2 style), if set.
    pub final_softcap: Option<f32>,
    /// Linear RoPE scaling of sliding-window layers (Gemma 3: none; gpt-oss: as the others).
    pub rope_freq_scale_swa: f32,
    /// YaRN parameters, when `rope.scaling.type` is `yarn`.
    pub yarn: Option<Yarn>,
    /// Experts per MoE layer (0: dense FFN).
    pub n_expert: usize,
    /// Experts each token is routed to.
    pub n_expert_used: usize,
}

fn hp(key: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Hparam { key: key.to_string(), msg: msg.into() }
}

fn req_usize(f: &GgufFile, key: &str) -> Result<usize> {
    let v = f.get_u64(key)?;
    if v == 0 || v > (1 << 31) {
        return Err(hp(key, format!("{v} is out of range")));
    }
    Ok(v as usize)
}

fn opt_usize(f: &GgufFile, key: &str) -> Result<Option<usize>> {
    match f.get_opt_u64(key)? {
        None => Ok(None),
        Some(v) if v == 0 || v > (1 << 31) => Err(hp(key, format!("{v} is out of range"))),
        Some(v) => Ok(Some(v as usize)),
    }
}

impl Config {
    /// Reads the hyperparameters of a supported architecture. `n_vocab` is the number of rows of
    /// the token embedding, which the caller knows from the tensor index.
    pub fn from_gguf(f: &GgufFile, n_vocab: usize) -> Result<Config> {
        let name = f.get_str("general.architecture")?;
        let arch = match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            "gpt-oss" => Arch::GptOss,
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
        let k = |s: &str| format!("{name}.{s}");
        let n_layer = req_usize(f, &k("block_count"))?;
        let n_embd = req_usize(f, &k("embedding_length"))?;
        // gpt-oss: the experts' width (`expert_feed_forward_length`, else `feed_forward_length`).
        let n_ff = match (arch, opt_usize(f, &k("expert_feed_forward_length"))?) {
            (Arch::GptOss, Some(w)) => w,
            _ => req_usize(f, &k("feed_forward_length"))?,
        };
        let n_head = req_usize(f, &k("attention.head_count"))?;
        let n_head_kv = opt_usize(f, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(hp(&k("attention.head_count_kv"), format!("{n_head_kv} does not divide head_count {n_head}")));
        }
        let head_dim = match opt_usize(f, &k("attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(hp(&k("attention.key_length"), "missing, and head_count does not divide embedding_length"));
            }
        };
        let head_dim_v = opt_usize(f, &k("attention.value_length"))?.unwrap_or(head_dim);
        let n_rot = opt_usize(f, &k("rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(hp(&k("rope.dimension_count"), format!("{n_rot} must be even and ≤ head dim {head_dim}")));
        }
        let n_ctx_train = req_usize(f, &k("context_length"))?;
        let rms_eps = f.get_f32(&k("attention.layer_norm_rms_epsilon"))?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(hp(&k("attention.layer_norm_rms_epsilon"), format!("{rms_eps}")));
        }
        let rope_base = f.get_opt_f32(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        // gpt-oss's sliding-window layers share the global RoPE unless the file says otherwise.
        let swa_base_default = if arch == Arch::GptOss { rope_base } else { 10_000.0 };
        let rope_base_swa = f.get_opt_f32(&k("rope.freq_base_swa"))?.unwrap_or(swa_base_default);
        let mut yarn = None;
        let rope_freq_scale = match f.get_opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("yarn") if arch == Arch::GptOss => {
                let factor = f.get_f32(&k("rope.scaling.factor"))?;
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(hp(&k("rope.scaling.factor"), format!("{factor}")));
                }
                let n_ctx_orig = opt_usize(f, &k("rope.scaling.original_context_length"))?.unwrap_or(n_ctx_train);
                // As llama.cpp's context setup: attn_factor = mscale(factor) / (1 + 0.1·ln factor),
                // ggml's rope then multiplies by (1 + 0.1·ln factor) again.
                let mscale = if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 };
                let attn_factor = mscale * (1.0 / (1.0 + 0.1 * factor.ln()));
                yarn = Some(Yarn {
                    ext_factor: 1.0,
                    attn_factor,
                    n_ctx_orig,
                    beta_fast: f.get_opt_f32(&k("rope.scaling.yarn_beta_fast"))?.unwrap_or(32.0),
                    beta_slow: f.get_opt_f32(&k("rope.scaling.yarn_beta_slow"))?.unwrap_or(1.0),
                });
                1.0 / factor
            }
            Some("linear") => {
                let factor = f.get_f32(&k("rope.scaling.factor"))?;
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(hp(&k("rope.scaling.factor"), format!("{factor}")));
                }
                1.0 / factor
            }
            Some(other) => return Err(hp(&k("rope.scaling.type"), format!("{other:?} is not supported"))),
        };
        let final_softcap = f.get_opt_f32(&k("final_logit_softcapping"))?.filter(|c| *c != 0.0);

        let (rope_style, sliding_window, swa_layers, attn_scale, embed_scale) = match arch {
            Arch::Llama => (RopeStyle::Normal, None, vec![false; n_layer], 1.0 / (head_dim as f32).sqrt(), None),
            Arch::Qwen2 => (RopeStyle::Neox, None, vec![false; n_layer], 1.0 / (head_dim as f32).sqrt(), None),
            Arch::Gemma3 => {
                let window = opt_usize(f, &k("attention.sliding_window"))?;
                // Five sliding-window layers, then one global layer (llama.cpp's pattern 6).
                let pattern = 6;
                let swa: Vec<bool> = (0..n_layer).map(|il| window.is_some() && il % pattern < pattern - 1).collect();
                let scale = 1.0 / (head_dim as f32).sqrt();
                (RopeStyle::Neox, window, swa, scale, Some((n_embd as f32).sqrt()))
            }
            Arch::GptOss => {
                let window = Some(req_usize(f, &k("attention.sliding_window"))?);
                // llama.cpp's swa pattern 2: even layers slide, odd layers see everything.
                let swa: Vec<bool> = (0..n_layer).map(|il| il % 2 == 0).collect();
                (RopeStyle::Neox, window, swa, 1.0 / (head_dim as f32).sqrt(), None)
            }
        };
        let (n_expert, n_expert_used) = match arch {
            Arch::GptOss => {
                let ne = req_usize(f, &k("expert_count"))?;
                let nu = req_usize(f, &k("expert_used_count"))?;
                if nu > ne {
                    return Err(hp(&k("expert_used_count"), format!("{nu} > expert_count {ne}")));
                }
                (ne, nu)
            }
            _ => (0, 0),
        };
        let rope_freq_scale_swa = if arch == Arch::GptOss { rope_freq_scale } else { 1.0 };
        Ok(Config {
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_rot,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_style,
            rope_base,
            rope_base_swa,
            rope_freq_scale,
            sliding_window,
            swa_layers,
            attn_scale,
            embed_scale,
            final_softcap,
            rope_freq_scale_swa,
            yarn,
            n_expert,
            n_expert_used,
        })
    }

    /// RoPE base for layer `il`.
    pub fn rope_base_for(&self, il: usize) -> f32 {
        if self.swa_layers[il] { self.rope_base_swa } else { self.rope_base }
    }

    /// Linear RoPE scaling for layer `il` (Gemma 3's sliding-window layers are never scaled).
    pub fn rope_scale_for(&self, il: usize) -> f32 {
        if self.swa_layers[il] { self.rope_freq_scale_swa } else { self.rope_freq_scale }
    }

    /// Sliding window of layer `il`, if it has one.
    pub fn window_for(&self, il: usize) -> Option<usize> {
        if self.swa_layers[il] { self.sliding_window } else { None }
    }
}
