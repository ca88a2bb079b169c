//! Gemma 3: embeddings scaled by √n_embd, RMSNorm before and after attention and the FFN,
//! per-head RMSNorm of q and k, GeGLU, NeoX RoPE with a separate base on sliding-window layers,
//! five sliding-window layers to one global layer, tied output embedding.

use crate::Result;
use crate::backend::{AttnParams, Backend, Glu, Rope};
use crate::config::Config;
use crate::kv::{KvCache, LayerRows};
use crate::model::{Batch, Binder, Head, Model, trace};

pub(crate) struct Layer<W> {
    attn_norm: W,
    wq: W,
    wk: W,
    wv: W,
    q_norm: W,
    k_norm: W,
    wo: W,
    attn_post_norm: W,
    ffn_norm: W,
    gate: W,
    up: W,
    down: W,
    ffn_post_norm: W,
}

pub(crate) struct Weights<W> {
    head: Head<W>,
    layers: Vec<Layer<W>>,
}

impl<W> Weights<W> {
    pub fn bind<B: Backend<Weight = W>>(b: &Binder<'_, B>, c: &Config) -> Result<Self> {
        let (e, f, hd) = (c.n_embd, c.n_ff, c.head_dim);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: b.get(&n("attn_norm.weight"), &[e])?,
                wq: b.get(&n("attn_q.weight"), &[e, c.n_head * hd])?,
                wk: b.get(&n("attn_k.weight"), &[e, c.n_head_kv * hd])?,
                wv: b.get(&n("attn_v.weight"), &[e, c.n_head_kv * c.head_dim_v])?,
                q_norm: b.get(&n("attn_q_norm.weight"), &[hd])?,
                k_norm: b.get(&n("attn_k_norm.weight"), &[hd])?,
                wo: b.get(&n("attn_output.weight"), &[c.n_head * c.head_dim_v, e])?,
                attn_post_norm: b.get(&n("post_attention_norm.weight"), &[e])?,
                ffn_norm: b.get(&n("ffn_norm.weight"), &[e])?,
                gate: b.get(&n("ffn_gate.weight"), &[e, f])?,
                up: b.get(&n("ffn_up.weight"), &[e, f])?,
                down: b.get(&n("ffn_down.weight"), &[f, e])?,
                ffn_post_norm: b.get(&n("post_ffw_norm.weight"), &[e])?,
            });
        }
        Ok(Weights { head: Head::bind(b, c)?, layers })
    }
}

pub(crate) fn forward<B: Backend>(
    m: &Model<B>,
    w: &Weights<B::Weight>,
    kv: &mut KvCache<B>,
    rows: &LayerRows<'_>,
    pos: &[usize],
    batch: &Batch,
) -> Result<B::Act> {
    let (be, c) = (&m.backend, &m.config);
    let n = batch.tokens.len();
    let hd = c.head_dim;
    let mut x = be.act(n, c.n_embd)?;
    be.embed(&w.head.embd, &batch.tokens, c.embed_scale.unwrap_or(1.0), &mut x)?;
    let mut h = be.act(n, c.n_embd)?;
    let mut q = be.act(n, c.n_head * hd)?;
    let mut qn = be.act(n, c.n_head * hd)?;
    let mut k = be.act(n, c.n_head_kv * hd)?;
    let mut kn = be.act(n, c.n_head_kv * hd)?;
    let mut v = be.act(n, c.n_head_kv * c.head_dim_v)?;
    let mut a = be.act(n, c.n_head * c.head_dim_v)?;
    let mut o = be.act(n, c.n_embd)?;
    let mut g = be.act(n, c.n_ff)?;
    let mut u = be.act(n, c.n_ff)?;
    let mut gu = be.act(n, c.n_ff)?;
    for (il, l) in w.layers.iter().enumerate() {
        let rope = Rope {
            style: c.rope_style,
            n_rot: c.n_rot,
            base: c.rope_base_for(il),
            freq_scale: c.rope_scale_for(il),
            yarn: None,
        };
        let attn = AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            head_dim_v: c.head_dim_v,
            // The queries are scaled beforehand (below).
            scale: 1.0,
            window: c.window_for(il),
        };
        be.rms_norm(&x, &l.attn_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.matmuls(&h, &mut [(&l.wq, None, &mut q), (&l.wk, None, &mut k), (&l.wv, None, &mut v)])?;
        be.rms_norm(&q, &l.q_norm, hd, c.rms_eps, &mut qn)?;
        be.rms_norm(&k, &l.k_norm, hd, c.rms_eps, &mut kn)?;
        be.rope(&mut qn, hd, pos, &rope)?;
        be.rope(&mut kn, hd, pos, &rope)?;
        // As llama.cpp's gemma3 graph: the attention scale multiplies the queries, not the
        // scores (the same in exact arithmetic; not once the queries are rounded to f16).
        be.scale(&mut qn, c.attn_scale)?;
        crate::model::attend(be, kv, rows, il, &kn, &v, &qn, &attn, None, &mut a)?;
        trace(be, "kqv_out", il, &a)?;
        be.matmul(&a, &l.wo, None, &mut o)?;
        trace(be, "attn_out", il, &o)?;
        if il + 1 == c.n_layer && batch.logits.is_empty() {
            return be.act(0, c.n_vocab); // every layer's K/V is written; no row wants logits
        }
        if il + 1 == c.n_layer {
            // As llama.cpp: the rest of the last layer only for the rows whose logits are wanted.
            let k = batch.logits.len();
            (x, o) = (be.gather_rows(&x, &batch.logits)?, be.gather_rows(&o, &batch.logits)?);
            (h, g, u, gu) = (be.act(k, c.n_embd)?, be.act(k, c.n_ff)?, be.act(k, c.n_ff)?, be.act(k, c.n_ff)?);
        }
        be.rms_norm(&o, &l.attn_post_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.add(&mut x, &h)?;

        be.rms_norm(&x, &l.ffn_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.matmuls(&h, &mut [(&l.gate, None, &mut g), (&l.up, None, &mut u)])?;
        be.glu(Glu::Gelu, &g, &u, &mut gu)?;
        be.matmul(&gu, &l.down, None, &mut o)?;
        be.rms_norm(&o, &l.ffn_post_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.add(&mut x, &h)?;
        trace(be, "l_out", il, &x)?;
    }
    w.head.logits(be, c, &x, batch.logits.len())
}
