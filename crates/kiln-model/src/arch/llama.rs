//! The llama family (`llama`, `qwen2`): RMSNorm, RoPE, grouped-query attention with optional
//! q/k/v biases, SwiGLU, optionally tied output embedding.

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
    bq: Option<W>,
    bk: Option<W>,
    bv: Option<W>,
    wo: W,
    bo: Option<W>,
    ffn_norm: W,
    gate: W,
    up: W,
    down: W,
}

pub(crate) struct Weights<W> {
    head: Head<W>,
    layers: Vec<Layer<W>>,
}

impl<W> Weights<W> {
    pub fn bind<B: Backend<Weight = W>>(b: &Binder<'_, B>, c: &Config) -> Result<Self> {
        let (e, f) = (c.n_embd, c.n_ff);
        let (q_w, kv_w) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let v_w = c.n_head_kv * c.head_dim_v;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: b.get(&n("attn_norm.weight"), &[e])?,
                wq: b.get(&n("attn_q.weight"), &[e, q_w])?,
                wk: b.get(&n("attn_k.weight"), &[e, kv_w])?,
                wv: b.get(&n("attn_v.weight"), &[e, v_w])?,
                bq: b.opt(&n("attn_q.bias"), &[q_w])?,
                bk: b.opt(&n("attn_k.bias"), &[kv_w])?,
                bv: b.opt(&n("attn_v.bias"), &[v_w])?,
                wo: b.get(&n("attn_output.weight"), &[c.n_head * c.head_dim_v, e])?,
                bo: b.opt(&n("attn_output.bias"), &[e])?,
                ffn_norm: b.get(&n("ffn_norm.weight"), &[e])?,
                gate: b.get(&n("ffn_gate.weight"), &[e, f])?,
                up: b.get(&n("ffn_up.weight"), &[e, f])?,
                down: b.get(&n("ffn_down.weight"), &[f, e])?,
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
    let attn = AttnParams {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        head_dim_v: c.head_dim_v,
        scale: c.attn_scale,
        window: None,
    };
    let mut x = be.act(n, c.n_embd)?;
    be.embed(&w.head.embd, &batch.tokens, 1.0, &mut x)?;
    let mut h = be.act(n, c.n_embd)?;
    let mut q = be.act(n, c.n_head * c.head_dim)?;
    let mut k = be.act(n, c.n_head_kv * c.head_dim)?;
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
        be.rms_norm(&x, &l.attn_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.matmuls(
            &h,
            &mut [(&l.wq, l.bq.as_ref(), &mut q), (&l.wk, l.bk.as_ref(), &mut k), (&l.wv, l.bv.as_ref(), &mut v)],
        )?;
        be.rope(&mut q, c.head_dim, pos, &rope)?;
        be.rope(&mut k, c.head_dim, pos, &rope)?;
        crate::model::attend(be, kv, rows, il, &k, &v, &q, &attn, None, &mut a)?;
        trace(be, "kqv_out", il, &a)?;
        be.matmul(&a, &l.wo, l.bo.as_ref(), &mut o)?;
        trace(be, "attn_out", il, &o)?;
        if il + 1 == c.n_layer && batch.logits.is_empty() {
            return be.act(0, c.n_vocab); // every layer's K/V is written; no row wants logits
        }
        if il + 1 == c.n_layer {
            // As llama.cpp: the last layer's FFN only for the rows whose logits are wanted.
            let k = batch.logits.len();
            (x, o) = (be.gather_rows(&x, &batch.logits)?, be.gather_rows(&o, &batch.logits)?);
            (h, g, u, gu) = (be.act(k, c.n_embd)?, be.act(k, c.n_ff)?, be.act(k, c.n_ff)?, be.act(k, c.n_ff)?);
        }
        be.add(&mut x, &o)?;

        be.rms_norm(&x, &l.ffn_norm, c.n_embd, c.rms_eps, &mut h)?;
        be.matmuls(&h, &mut [(&l.gate, None, &mut g), (&l.up, None, &mut u)])?;
        be.glu(Glu::Silu, &g, &u, &mut gu)?;
        be.matmul(&gu, &l.down, None, &mut o)?;
        be.add(&mut x, &o)?;
        trace(be, "l_out", il, &x)?;
    }
    w.head.logits(be, c, &x, batch.logits.len())
}
