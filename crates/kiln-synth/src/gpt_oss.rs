//! gpt-oss: the tensor names, shapes and types of the public gpt-oss-20b GGUF (MXFP4 experts;
//! Q8_0 attention, embedding and output; F32 norms, biases, router and sinks) and the
//! `gpt-oss.*` metadata llama.cpp's converter writes, at any shape.

use anyhow::{Result, ensure};
use kiln_gguf::{GgmlType, Value};

use crate::vocab::{GPT_OSS_VOCAB, Vocab, VocabKind, bytes_vocab, o200k_harmony_vocab};
use crate::write::{SynthModel, TensorSpec, check_shape, header};

/// A gpt-oss shape, its tensor types and its vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct GptOss {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub experts: usize,
    pub experts_used: usize,
    /// Expert feed-forward width.
    pub ff: usize,
    /// Sliding window of the even layers.
    pub window: usize,
    pub vocab_kind: VocabKind,
    /// Byte vocabulary size (`None`: the tokens padded to a multiple of 32); ignored for o200k.
    pub vocab_size: Option<usize>,
    /// Training context length written to metadata.
    pub ctx: usize,
    /// Type of attn_q/k/v/output.
    pub attn_type: GgmlType,
    pub embd_type: GgmlType,
    pub output_type: GgmlType,
    pub seed: u64,
    pub name: String,
}

impl GptOss {
    /// 2 layers, hidden 64, 4/2 heads of 16, 4 experts (2 used), ff 64, window 16, byte
    /// vocabulary (make_tiny_gptoss.py's shapes).
    pub fn tiny() -> GptOss {
        GptOss {
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            experts: 4,
            experts_used: 2,
            ff: 64,
            window: 16,
            vocab_kind: VocabKind::Bytes,
            vocab_size: None,
            ctx: 131_072,
            attn_type: GgmlType::Q8_0,
            embd_type: GgmlType::Q8_0,
            output_type: GgmlType::Q8_0,
            seed: 7,
            name: "tiny-gpt-oss-synth".into(),
        }
    }

    /// The public gpt-oss-20b shapes: 24 layers, hidden 2880, 64/8 heads of 64, 32 experts (4
    /// used), ff 2880, window 128, the o200k_harmony vocabulary (201,088), context 131,072
    /// (~12.1 GB).
    pub fn gpt_oss_20b() -> GptOss {
        GptOss {
            layers: 24,
            hidden: 2880,
            heads: 64,
            kv_heads: 8,
            head_dim: 64,
            experts: 32,
            experts_used: 4,
            ff: 2880,
            window: 128,
            vocab_kind: VocabKind::O200kHarmony,
            name: "gpt-oss-20b-shaped-random".into(),
            ..GptOss::tiny()
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
            "experts" => &mut self.experts,
            "experts_used" => &mut self.experts_used,
            "ff" => &mut self.ff,
            "window" => &mut self.window,
            "ctx" => &mut self.ctx,
            _ => return None,
        })
    }

    /// The tensor-type field named `key`.
    pub fn type_mut(&mut self, key: &str) -> Option<&mut GgmlType> {
        Some(match key {
            "attn_type" => &mut self.attn_type,
            "embd_type" => &mut self.embd_type,
            "output_type" => &mut self.output_type,
            _ => return None,
        })
    }

    fn check(&self) -> Result<()> {
        ensure!(self.experts >= 1, "no experts");
        ensure!(self.window >= 1, "window must be at least 1");
        ensure!(
            (1..=self.experts).contains(&self.experts_used),
            "experts-used {} must be in 1..={}",
            self.experts_used,
            self.experts
        );
        ensure!(
            self.hidden.is_multiple_of(32) && self.ff.is_multiple_of(32),
            "hidden and ff must be multiples of 32 (MXFP4 blocks)"
        );
        check_shape(
            self.layers,
            self.heads,
            self.kv_heads,
            self.head_dim,
            &[
                ("attention (hidden)", self.attn_type, self.hidden),
                ("attention (heads × head dim)", self.attn_type, self.heads * self.head_dim),
                ("embedding", self.embd_type, self.hidden),
                ("output", self.output_type, self.hidden),
            ],
        )
    }

    pub fn vocab(&self) -> Result<Vocab> {
        match self.vocab_kind {
            VocabKind::Bytes => bytes_vocab(true, self.vocab_size),
            VocabKind::O200kHarmony => o200k_harmony_vocab(),
        }
    }

    /// The tensor table, in the order llama.cpp's converter writes it.
    pub fn tensors(&self, n_vocab: usize) -> Vec<TensorSpec> {
        let (h, q, kv, e, f) = (
            self.hidden as u64,
            (self.heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
            self.experts as u64,
            self.ff as u64,
        );
        let sh = |x: u64| (x as f32).powf(-0.5);
        let t = TensorSpec::new;
        let mut v = vec![t("token_embd.weight".into(), self.embd_type, &[h, n_vocab as u64], 0.0, 1.0)];
        let (f32t, mx) = (GgmlType::F32, GgmlType::MXFP4);
        for i in 0..self.layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            v.extend([
                t(p("attn_norm.weight"), f32t, &[h], 1.0, 0.1),
                t(p("attn_q.weight"), self.attn_type, &[h, q], 0.0, sh(h)),
                t(p("attn_q.bias"), f32t, &[q], 0.0, 0.1),
                t(p("attn_k.weight"), self.attn_type, &[h, kv], 0.0, sh(h)),
                t(p("attn_k.bias"), f32t, &[kv], 0.0, 0.1),
                t(p("attn_v.weight"), self.attn_type, &[h, kv], 0.0, sh(h)),
                t(p("attn_v.bias"), f32t, &[kv], 0.0, 0.1),
                t(p("attn_output.weight"), self.attn_type, &[q, h], 0.0, sh(q)),
                t(p("attn_output.bias"), f32t, &[h], 0.0, 0.1),
                t(p("attn_sinks.weight"), f32t, &[self.heads as u64], 0.0, 1.0),
                t(p("post_attention_norm.weight"), f32t, &[h], 1.0, 0.1),
                t(p("ffn_gate_inp.weight"), f32t, &[h, e], 0.0, 1.0),
                t(p("ffn_gate_inp.bias"), f32t, &[e], 0.0, 0.1),
                t(p("ffn_gate_exps.weight"), mx, &[h, f, e], 0.0, sh(h)),
                t(p("ffn_gate_exps.bias"), f32t, &[f, e], 0.0, 0.1),
                t(p("ffn_up_exps.weight"), mx, &[h, f, e], 0.0, sh(h)),
                t(p("ffn_up_exps.bias"), f32t, &[f, e], 0.0, 0.1),
                t(p("ffn_down_exps.weight"), mx, &[f, h, e], 0.0, sh(f)),
                t(p("ffn_down_exps.bias"), f32t, &[h, e], 0.0, 0.1),
            ]);
        }
        v.push(t("output_norm.weight".into(), f32t, &[h], 1.0, 0.1));
        v.push(t("output.weight".into(), self.output_type, &[h, n_vocab as u64], 0.0, 4.0 * sh(h)));
        v
    }

    /// Metadata and tensor table.
    pub fn model(&self) -> Result<SynthModel> {
        self.check()?;
        let voc = self.vocab()?;
        if self.vocab_kind == VocabKind::O200kHarmony {
            debug_assert_eq!(voc.tokens.len(), GPT_OSS_VOCAB);
        }
        let a = |k: &str| format!("gpt-oss.{k}");
        let u = |x: usize| Value::U32(x as u32);
        let dims = [self.layers, self.ctx, self.hidden, self.ff, self.heads, self.kv_heads, self.head_dim];
        let mut metadata = header("gpt-oss", &self.name, dims);
        metadata.extend([
            (a("rope.freq_base"), Value::F32(150_000.0)),
            (a("rope.scaling.type"), "yarn".into()),
            (a("rope.scaling.factor"), Value::F32(32.0)),
            (a("rope.scaling.original_context_length"), u(4096)),
            (a("rope.scaling.yarn_beta_fast"), Value::F32(32.0)),
            (a("rope.scaling.yarn_beta_slow"), Value::F32(1.0)),
            (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            (a("expert_count"), u(self.experts)),
            (a("expert_used_count"), u(self.experts_used)),
            (a("attention.sliding_window"), u(self.window)),
            (a("expert_feed_forward_length"), u(self.ff)),
            // LlamaFileType.MOSTLY_MXFP4_MOE
            ("general.file_type".into(), Value::U32(38)),
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
    fn tiny_layout() {
        let c = GptOss::tiny();
        let bytes = c.model().unwrap().to_bytes().unwrap();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "gpt-oss");
        assert_eq!(f.get_u32("gpt-oss.block_count").unwrap(), 2);
        assert_eq!(f.get_u32("gpt-oss.attention.sliding_window").unwrap(), 16);
        assert_eq!(f.get_str("gpt-oss.rope.scaling.type").unwrap(), "yarn");
        let n_vocab = f.get_str_array("tokenizer.ggml.tokens").unwrap().len();
        assert_eq!(n_vocab % 32, 0);
        assert_eq!(f.tensors().len(), 2 * 19 + 3);
        let find = |n: &str| f.tensors().iter().find(|t| t.name == n).unwrap_or_else(|| panic!("{n}"));
        let check = |n: &str, ty: GgmlType, shape: &[u64]| {
            let t = find(n);
            assert_eq!((t.ty, t.shape.as_slice()), (ty, shape), "{n}");
        };
        check("token_embd.weight", GgmlType::Q8_0, &[64, n_vocab as u64]);
        check("blk.1.attn_q.weight", GgmlType::Q8_0, &[64, 64]);
        check("blk.1.attn_k.weight", GgmlType::Q8_0, &[64, 32]);
        check("blk.1.attn_output.weight", GgmlType::Q8_0, &[64, 64]);
        check("blk.0.attn_sinks.weight", GgmlType::F32, &[4]);
        check("blk.0.ffn_gate_inp.weight", GgmlType::F32, &[64, 4]);
        check("blk.0.ffn_gate_exps.weight", GgmlType::MXFP4, &[64, 64, 4]);
        check("blk.0.ffn_down_exps.weight", GgmlType::MXFP4, &[64, 64, 4]);
        check("blk.0.ffn_down_exps.bias", GgmlType::F32, &[64, 4]);
        check("output.weight", GgmlType::Q8_0, &[64, n_vocab as u64]);
        // deterministic, whatever the thread count, and the seed matters
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| c.model().unwrap().to_bytes().unwrap()), bytes);
        assert_ne!(GptOss { seed: 8, ..c }.model().unwrap().to_bytes().unwrap(), bytes);
    }

    #[test]
    fn preset_20b_table() {
        let c = GptOss { layers: 1, ..GptOss::gpt_oss_20b() };
        let specs = c.tensors(GPT_OSS_VOCAB);
        let get = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
        assert_eq!(get("blk.0.attn_q.weight").shape, [2880, 4096]);
        assert_eq!(get("blk.0.attn_output.weight").shape, [4096, 2880]);
        assert_eq!(get("blk.0.attn_k.weight").shape, [2880, 512]);
        assert_eq!(get("blk.0.ffn_up_exps.weight").shape, [2880, 2880, 32]);
        assert_eq!(get("token_embd.weight").shape, [2880, 201_088]);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let t = GptOss::tiny();
        for bad in [
            GptOss { heads: 3, ..t.clone() },
            GptOss { experts_used: 5, ..t.clone() },
            GptOss { hidden: 48, ..t.clone() },
            GptOss { head_dim: 12, heads: 2, kv_heads: 2, ..t.clone() }, // q width 24: no Q8_0 rows
            GptOss { window: 0, ..t.clone() },
        ] {
            assert!(bad.model().is_err(), "{bad:?}");
        }
    }
}
