//! Llama-family models (`llama` architecture: RMSNorm, RoPE, GQA attention, SwiGLU FFN) of any
//! shape and tensor-type mix, with a byte-level vocabulary.

use anyhow::Result;
use kiln_gguf::{GgmlType, Value};

use crate::vocab::bytes_vocab;
use crate::write::{SynthModel, TensorSpec, check_shape, header};

/// A llama shape and the types of its tensor groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ff: usize,
    /// Byte vocabulary size (`None`: the tokens padded to a multiple of 32).
    pub vocab_size: Option<usize>,
    pub ctx: usize,
    pub rope_base: f32,
    /// attn_q, attn_k, attn_output.
    pub attn_type: GgmlType,
    pub attn_v_type: GgmlType,
    /// ffn_gate, ffn_up.
    pub ffn_type: GgmlType,
    pub ffn_down_type: GgmlType,
    pub embd_type: GgmlType,
    /// `None`: no `output.weight`, the embedding is tied.
    pub output_type: Option<GgmlType>,
    pub seed: u64,
    pub name: String,
}

impl Llama {
    /// 2 layers, hidden 256, 4/2 heads of 64, ff 512, everything Q8_0, tied embedding.
    pub fn tiny() -> Llama {
        Llama {
            layers: 2,
            hidden: 256,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ff: 512,
            vocab_size: None,
            ctx: 4096,
            rope_base: 10_000.0,
            attn_type: GgmlType::Q8_0,
            attn_v_type: GgmlType::Q8_0,
            ffn_type: GgmlType::Q8_0,
            ffn_down_type: GgmlType::Q8_0,
            embd_type: GgmlType::Q8_0,
            output_type: None,
            seed: 7,
            name: "tiny-llama-synth".into(),
        }
    }

    /// The Q4_K_M mix at any shape: Q4_K matrices, Q6_K attn_v, ffn_down and output.
    pub fn with_q4_k_m_types(self) -> Llama {
        Llama {
            attn_type: GgmlType::Q4_K,
            attn_v_type: GgmlType::Q6_K,
            ffn_type: GgmlType::Q4_K,
            ffn_down_type: GgmlType::Q6_K,
            embd_type: GgmlType::Q4_K,
            output_type: Some(GgmlType::Q6_K),
            ..self
        }
    }

    /// The size field named `key` (as in the struct), for specs and command lines.
    pub fn size_mut(&mut self, key: &str) -> Option<&mut usize> {
        Some(match key {
            "layers" => &mut self.layers,
            "hidden" => &mut self.hidden,
            "heads" => &mut self.heads,
            "kv_heads" => &mut self.kv_heads,
            "head_dim" => &mut self.head_dim,
            "ff" => &mut self.ff,
            "ctx" => &mut self.ctx,
            _ => return None,
        })
    }

    /// The tensor-type field named `key` (`output_type` is optional: see [`Llama::output_type`]).
    pub fn type_mut(&mut self, key: &str) -> Option<&mut GgmlType> {
        Some(match key {
            "attn_type" => &mut self.attn_type,
            "attn_v_type" => &mut self.attn_v_type,
            "ffn_type" => &mut self.ffn_type,
            "ffn_down_type" => &mut self.ffn_down_type,
            "embd_type" => &mut self.embd_type,
            _ => return None,
        })
    }

    fn check(&self) -> Result<()> {
        let mut groups = vec![
            ("attn_q/k (hidden)", self.attn_type, self.hidden),
            ("attn_output (heads × head dim)", self.attn_type, self.heads * self.head_dim),
            ("attn_v (hidden)", self.attn_v_type, self.hidden),
            ("ffn_gate/up (hidden)", self.ffn_type, self.hidden),
            ("ffn_down (ff)", self.ffn_down_type, self.ff),
            ("embedding", self.embd_type, self.hidden),
        ];
        if let Some(t) = self.output_type {
            groups.push(("output", t, self.hidden));
        }
        check_shape(self.layers, self.heads, self.kv_heads, self.head_dim, &groups)
    }

    pub fn tensors(&self, n_vocab: usize) -> Vec<TensorSpec> {
        let (h, q, kv, f) = (
            self.hidden as u64,
            (self.heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
            self.ff as u64,
        );
        let sh = |x: u64| (x as f32).powf(-0.5);
        let t = TensorSpec::new;
        let f32t = GgmlType::F32;
        let mut v = vec![t("token_embd.weight".into(), self.embd_type, &[h, n_vocab as u64], 0.0, 1.0)];
        for i in 0..self.layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            v.extend([
                t(p("attn_norm.weight"), f32t, &[h], 1.0, 0.1),
                t(p("attn_q.weight"), self.attn_type, &[h, q], 0.0, sh(h)),
                t(p("attn_k.weight"), self.attn_type, &[h, kv], 0.0, sh(h)),
                t(p("attn_v.weight"), self.attn_v_type, &[h, kv], 0.0, sh(h)),
                t(p("attn_output.weight"), self.attn_type, &[q, h], 0.0, sh(q)),
                t(p("ffn_norm.weight"), f32t, &[h], 1.0, 0.1),
                t(p("ffn_gate.weight"), self.ffn_type, &[h, f], 0.0, sh(h)),
                t(p("ffn_up.weight"), self.ffn_type, &[h, f], 0.0, sh(h)),
                t(p("ffn_down.weight"), self.ffn_down_type, &[f, h], 0.0, sh(f)),
            ]);
        }
        v.push(t("output_norm.weight".into(), f32t, &[h], 1.0, 0.1));
        if let Some(ty) = self.output_type {
            v.push(t("output.weight".into(), ty, &[h, n_vocab as u64], 0.0, 4.0 * sh(h)));
        }
        v
    }

    pub fn model(&self) -> Result<SynthModel> {
        self.check()?;
        let voc = bytes_vocab(false, self.vocab_size)?;
        let a = |k: &str| format!("llama.{k}");
        let u = |x: usize| Value::U32(x as u32);
        let dims = [self.layers, self.ctx, self.hidden, self.ff, self.heads, self.kv_heads, self.head_dim];
        let mut metadata = header("llama", &self.name, dims);
        metadata.extend([
            (a("rope.dimension_count"), u(self.head_dim)),
            (a("rope.freq_base"), Value::F32(self.rope_base)),
            (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            (a("vocab_size"), u(voc.tokens.len())),
            ("general.quantization_version".into(), Value::U32(2)),
        ]);
        metadata.extend(voc.metadata());
        Ok(SynthModel { metadata, tensors: self.tensors(voc.tokens.len()), seed: self.seed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_gguf::GgufFile;

    #[test]
    fn q4_k_m_mix_layout() {
        let c = Llama { layers: 3, ..Llama::tiny() }.with_q4_k_m_types();
        let f = GgufFile::from_bytes(c.model().unwrap().to_bytes().unwrap()).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.tensors().len(), 3 * 9 + 3);
        let ty = |n: &str| f.tensors().iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("blk.2.attn_q.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.2.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        // K-quant rows need 256 elements
        assert!(Llama { hidden: 128, ..Llama::tiny() }.with_q4_k_m_types().model().is_err());
    }
}
