//! gpt-oss: RMSNorm before attention and before the FFN; q/k/v/o projections with biases, GQA,
//! a learned sink logit per head in the attention softmax; NeoX RoPE with YaRN scaling; even layers
//! attend through a sliding window, odd layers to everything; the FFN is a mixture of experts
//! (router with bias, softmax over the top-k logits, experts with biases and clamped SwiGLU).

use crate::Result;
use crate::backend::{AttnParams, Backend, Moe, Rope};
use crate::config::Config;
use crate::kv::{KvCache, LayerRows};
use crate::model::{Batch, Binder, Head, Model, trace};

/// gpt-oss's SwiGLU: σ(1.702·gate), gate ≤ 7, up ∈ [−7, 7].
const SWIGLU_ALPHA: f32 = 1.702;
const SWIGLU_LIMIT: f32 = 7.0;

pub(crate) struct Layer<W> {
    attn_norm: W,
    wq: W,
    bq: W,
    wk: W,
    bk: W,
    wv: W,
    bv: W,
    wo: W,
    bo: W,
    sinks: W,
    post_norm: W,
    router: W,
    router_b: W,
    gate: W,
    gate_b: W,
    up: W,
    up_b: W,
    down: W,
    down_b: W,
}

pub(crate) struct Weights<W> {
    head: Head<W>,
    layers: Vec<Layer<W>>,
}

impl<W> Weights<W> {
    pub fn bind<B: Backend<Weight = W>>(b: &Binder<'_, B>, c: &Config) -> Result<Self> {
        let (e, f, hd, ne) = (c.n_embd, c.n_ff, c.head_dim, c.n_expert);
        let (qw, kw, vw) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * c.head_dim_v);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: b.get(&n("attn_norm.weight"), &[e])?,
                wq: b.get(&n("attn_q.weight"), &[e, qw])?,
                bq: b.get(&n("attn_q.bias"), &[qw])?,
                wk: b.get(&n("attn_k.weight"), &[e, kw])?,
                bk: b.get(&n("attn_k.bias"), &[kw])?,
                wv: b.get(&n("attn_v.weight"), &[e, vw])?,
                bv: b.get(&n("attn_v.bias"), &[vw])?,
                wo: b.get(&n("attn_output.weight"), &[c.n_head * c.head_dim_v, e])?,
                bo: b.get(&n("attn_output.bias"), &[e])?,
                sinks: b.get(&n("attn_sinks.weight"), &[c.n_head])?,
                post_norm: b.get(&n("post_attention_norm.weight"), &[e])?,
                router: b.get(&n("ffn_gate_inp.weight"), &[e, ne])?,
                router_b: b.get(&n("ffn_gate_inp.bias"), &[ne])?,
                gate: b.get(&n("ffn_gate_exps.weight"), &[e, f, ne])?,
                gate_b: b.get(&n("ffn_gate_exps.bias"), &[f, ne])?,
                up: b.get(&n("ffn_up_exps.weight"), &[e, f, ne])?,
                up_b: b.get(&n("ffn_up_exps.bias"), &[f, ne])?,
                down: b.get(&n("ffn_down_exps.weight"), &[f, e, ne])?,
                down_b: b.get(&n("ffn_down_exps.bias"), &[e, ne])?,
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
    be.embed(&w.head.embd, &batch.tokens, 1.0, &mut x)?;
    let mut h = be.act(n, c.n_embd)?;
    let mut q = be.act(n, c.n_head * hd)?;
    let mut k = be.act(n, c.n_head_kv * hd)?;
    let mut v = be.act(n, c.n_head_kv * c.head_dim_v)?;
    let mut a = be.act(n, c.n_head * c.head_dim_v)?;
    let mut o = be.act(n, c.n_embd)?;
    for (il, l) in w.layers.iter().enumerate() {
        let rope = Rope {
            style: c.rope_style,
            n_rot: c.n_rot,
            base: c.rope_base_for(il),
            freq_scale: c.rope_scale_for(il),
            yarn: c.yarn,
        };
        let attn = AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            head_dim_v: c.head_dim_v,
            scale: c.attn_scale,
            window: c.window_for(il),
        };
        be.rms_norm(&x, &l.attn_norm, c.n_embd, c.rms_eps, &mut h)?;
        trace(be, "attn_norm", il, &h)?;
        be.matmuls(
            &h,
            &mut [(&l.wq, Some(&l.bq), &mut q), (&l.wk, Some(&l.bk), &mut k), (&l.wv, Some(&l.bv), &mut v)],
        )?;
        be.rope(&mut q, hd, pos, &rope)?;
        be.rope(&mut k, hd, pos, &rope)?;
        trace(be, "Qcur", il, &q)?;
        trace(be, "Kcur", il, &k)?;
        trace(be, "Vcur", il, &v)?;
        crate::model::attend(be, kv, rows, il, &k, &v, &q, &attn, Some(&l.sinks), &mut a)?;
        trace(be, "kqv_out", il, &a)?;
        be.matmul(&a, &l.wo, Some(&l.bo), &mut o)?;
        trace(be, "attn_out", il, &o)?;
        if il + 1 == c.n_layer && batch.logits.is_empty() {
            return be.act(0, c.n_vocab); // every layer's K/V is written; no row wants logits
        }
        if il + 1 == c.n_layer {
            // The last layer's FFN only for the rows whose logits are wanted.
            let k = batch.logits.len();
            (x, o) = (be.gather_rows(&x, &batch.logits)?, be.gather_rows(&o, &batch.logits)?);
            h = be.act(k, c.n_embd)?;
        }
        be.add(&mut x, &o)?;

        trace(be, "ffn_inp", il, &x)?;
        be.rms_norm(&x, &l.post_norm, c.n_embd, c.rms_eps, &mut h)?;
        trace(be, "attn_post_norm", il, &h)?;
        let moe = Moe {
            router: &l.router,
            router_b: Some(&l.router_b),
            gate: &l.gate,
            gate_b: &l.gate_b,
            up: &l.up,
            up_b: &l.up_b,
            down: &l.down,
            down_b: &l.down_b,
            n_expert: c.n_expert,
            n_used: c.n_expert_used,
            n_ff: c.n_ff,
            alpha: SWIGLU_ALPHA,
            limit: SWIGLU_LIMIT,
        };
        be.moe(&h, &moe, &mut o)?;
        trace(be, "ffn_moe_out", il, &o)?;
        be.add(&mut x, &o)?;
        trace(be, "l_out", il, &x)?;
    }
    w.head.logits(be, c, &x, batch.logits.len())
}
