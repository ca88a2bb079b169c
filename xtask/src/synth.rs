//! `cargo xtask synth`: random-weight GGUF files with real model layouts.
//!
//! `gpt-oss` writes the tensor names, shapes and types of the public gpt-oss-20b GGUF (MXFP4
//! experts, Q8_0 attention/embedding/output, F32 norms, biases, router and sinks) and the
//! `gpt-oss.*` metadata that llama.cpp's converter writes (see
//! /work/shared/reference/synth_gptoss20b.py and make_tiny_gptoss.py), with a small byte-level
//! GPT-2 vocabulary padded to the requested size. Weights come from a splitmix64 PRNG seeded per
//! tensor (seed ⊕ hash of the name), so the file is a pure function of the options, and each
//! tensor is generated and written in row chunks: memory stays bounded at any size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};
use kiln_gguf::{Array, GgmlType, GgufWriter, Value};

/// Shape presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 2 layers, hidden 64, 4/2 heads of 16, 4 experts (2 used), ff 64, window 16 (make_tiny_gptoss.py's shapes).
    Tiny,
    /// The public gpt-oss-20b shapes: 24 layers, hidden 2880, 64/8 heads of 64, 32 experts (4 used),
    /// ff 2880, window 128, vocab 201,088, context 131,072 (~12.1 GB).
    #[value(name = "20b")]
    Gpt20b,
}

/// Types the attention / embedding / output matrices may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MatType {
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    Bf16,
    F32,
}

impl From<MatType> for GgmlType {
    fn from(t: MatType) -> GgmlType {
        match t {
            MatType::Q8_0 => GgmlType::Q8_0,
            MatType::F16 => GgmlType::F16,
            MatType::Bf16 => GgmlType::BF16,
            MatType::F32 => GgmlType::F32,
        }
    }
}

/// Command-line options of `cargo xtask synth gpt-oss`; unset shapes come from the preset.
#[derive(Args, Debug, Clone)]
pub struct GptOssArgs {
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long)]
    pub experts: Option<usize>,
    #[arg(long)]
    pub experts_used: Option<usize>,
    /// Expert feed-forward width.
    #[arg(long)]
    pub ff: Option<usize>,
    /// Sliding window of the even layers.
    #[arg(long)]
    pub window: Option<usize>,
    /// Vocabulary size (byte-level tokens, merges and specials, padded with `[PADi]`); default:
    /// the preset's (tiny: the bytes vocabulary padded to a multiple of 32).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Training context length written to metadata.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Type of attn_q/k/v/output.
    #[arg(long, value_enum, default_value = "q8_0")]
    pub attn_type: MatType,
    /// Type of token_embd.
    #[arg(long, value_enum, default_value = "q8_0")]
    pub embd_type: MatType,
    /// Type of output.
    #[arg(long, value_enum, default_value = "q8_0")]
    pub output_type: MatType,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// A gpt-oss shape and its tensor types.
#[derive(Clone, Debug, PartialEq)]
pub struct GptOssConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub experts: usize,
    pub experts_used: usize,
    pub ff: usize,
    pub window: usize,
    /// `None`: the byte vocabulary padded to a multiple of 32.
    pub vocab: Option<usize>,
    pub ctx: usize,
    pub attn_type: GgmlType,
    pub embd_type: GgmlType,
    pub output_type: GgmlType,
    pub seed: u64,
    pub name: String,
}

impl GptOssConfig {
    pub fn preset(p: Preset) -> GptOssConfig {
        let base = GptOssConfig {
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            experts: 4,
            experts_used: 2,
            ff: 64,
            window: 16,
            vocab: None,
            ctx: 131072,
            attn_type: GgmlType::Q8_0,
            embd_type: GgmlType::Q8_0,
            output_type: GgmlType::Q8_0,
            seed: 7,
            name: "tiny-gpt-oss-synth".into(),
        };
        match p {
            Preset::Tiny => base,
            Preset::Gpt20b => GptOssConfig {
                layers: 24,
                hidden: 2880,
                heads: 64,
                kv_heads: 8,
                head_dim: 64,
                experts: 32,
                experts_used: 4,
                ff: 2880,
                window: 128,
                vocab: Some(201_088),
                name: "gpt-oss-20b-shaped-random".into(),
                ..base
            },
        }
    }

    pub fn from_args(a: &GptOssArgs) -> GptOssConfig {
        let mut c = GptOssConfig::preset(a.preset);
        let set = |v: &mut usize, o: Option<usize>| {
            if let Some(x) = o {
                *v = x;
            }
        };
        set(&mut c.layers, a.layers);
        set(&mut c.hidden, a.hidden);
        set(&mut c.heads, a.heads);
        set(&mut c.kv_heads, a.kv_heads);
        set(&mut c.head_dim, a.head_dim);
        set(&mut c.experts, a.experts);
        set(&mut c.experts_used, a.experts_used);
        set(&mut c.ff, a.ff);
        set(&mut c.window, a.window);
        set(&mut c.ctx, a.ctx);
        if a.vocab.is_some() {
            c.vocab = a.vocab;
        }
        c.attn_type = a.attn_type.into();
        c.embd_type = a.embd_type.into();
        c.output_type = a.output_type.into();
        c.seed = a.seed;
        c
    }

    fn check(&self) -> Result<()> {
        ensure!(self.layers >= 1 && self.heads >= 1 && self.kv_heads >= 1 && self.experts >= 1, "empty shape");
        ensure!(
            self.heads.is_multiple_of(self.kv_heads),
            "heads {} not a multiple of kv heads {}",
            self.heads,
            self.kv_heads
        );
        ensure!(
            (1..=self.experts).contains(&self.experts_used),
            "experts-used {} must be in 1..={}",
            self.experts_used,
            self.experts
        );
        ensure!(
            self.hidden.is_multiple_of(32) && self.ff.is_multiple_of(32),
            "hidden and ff must be multiples of 32 (MXFP4/Q8_0 blocks)"
        );
        for (what, ty, n) in [
            ("attn (hidden)", self.attn_type, self.hidden),
            ("attn (heads*head_dim)", self.attn_type, self.heads * self.head_dim),
            ("embd", self.embd_type, self.hidden),
            ("output", self.output_type, self.hidden),
        ] {
            ensure!(
                n.is_multiple_of(ty.block_elems()),
                "{what}: row length {n} is not a multiple of {}'s block",
                ty.name()
            );
        }
        Ok(())
    }
}

/// splitmix64: tiny, fast, and good enough for random weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Fills `out` with N(mean, std²) values (Box–Muller, both outputs used).
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        for pair in out.chunks_mut(2) {
            let r = (-2.0 * self.unit().ln()).sqrt();
            let t = std::f64::consts::TAU * self.unit();
            pair[0] = mean + std * (r * t.cos()) as f32;
            if let Some(x) = pair.get_mut(1) {
                *x = mean + std * (r * t.sin()) as f32;
            }
        }
    }
}

/// FNV-1a of a tensor name, mixed with the seed: each tensor's stream is independent of order.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Rng::new(seed ^ h).next_u64()
}

/// One tensor to write: name, type, ggml shape (`shape[0]` = row length), value distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<u64>,
    pub mean: f32,
    pub std: f32,
}

/// The tensor table, in file order (the order gguf-py's scripts write).
pub fn gpt_oss_tensors(c: &GptOssConfig, n_vocab: usize) -> Vec<TensorSpec> {
    let (h, q, kv, e, f) = (
        c.hidden as u64,
        (c.heads * c.head_dim) as u64,
        (c.kv_heads * c.head_dim) as u64,
        c.experts as u64,
        c.ff as u64,
    );
    let sh = |x: u64| (x as f32).powf(-0.5);
    let t = |name: String, ty: GgmlType, shape: &[u64], mean: f32, std: f32| TensorSpec {
        name,
        ty,
        shape: shape.to_vec(),
        mean,
        std,
    };
    let mut v = vec![t("token_embd.weight".into(), c.embd_type, &[h, n_vocab as u64], 0.0, 1.0)];
    let f32t = GgmlType::F32;
    let mx = GgmlType::MXFP4;
    for i in 0..c.layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        v.extend([
            t(p("attn_norm.weight"), f32t, &[h], 1.0, 0.1),
            t(p("attn_q.weight"), c.attn_type, &[h, q], 0.0, sh(h)),
            t(p("attn_q.bias"), f32t, &[q], 0.0, 0.1),
            t(p("attn_k.weight"), c.attn_type, &[h, kv], 0.0, sh(h)),
            t(p("attn_k.bias"), f32t, &[kv], 0.0, 0.1),
            t(p("attn_v.weight"), c.attn_type, &[h, kv], 0.0, sh(h)),
            t(p("attn_v.bias"), f32t, &[kv], 0.0, 0.1),
            t(p("attn_output.weight"), c.attn_type, &[q, h], 0.0, sh(q)),
            t(p("attn_output.bias"), f32t, &[h], 0.0, 0.1),
            t(p("attn_sinks.weight"), f32t, &[c.heads as u64], 0.0, 1.0),
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
    v.push(t("output.weight".into(), c.output_type, &[h, n_vocab as u64], 0.0, 4.0 * sh(h)));
    v
}

/// GPT-2's byte → printable-char map (HF ByteLevel).
fn byte_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    map
}

/// token type ids (llama.cpp's `llama_token_type`)
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;

pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

/// make_tiny_gptoss.py's `--vocab bytes`: 256 byte tokens (id = byte), a few merges, the
/// harmony specials, then `[PADi]` up to `size` (default: the next multiple of 32). A vocabulary
/// that reaches o200k_harmony's special ids (> 200,018, e.g. the padded 201,088) holds the
/// specials at their gpt-oss ids (bos 199,998, eos `<|return|>` 200,002, pad 199,999).
pub fn bytes_vocab(size: Option<usize>) -> Result<Vocab> {
    let b2u = byte_to_unicode();
    let mut tokens: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    let mut types = vec![NORMAL; 256];
    let g = b2u[b' ' as usize].to_string();
    let gs = |s: &str| format!("{g}{s}");
    let pairs: Vec<(String, String)> = [
        (g.clone(), "t".into()),
        ("h".into(), "e".into()),
        (gs("t"), "he".into()),
        ("i".into(), "n".into()),
        ("e".into(), "r".into()),
        ("a".into(), "n".into()),
        (g.clone(), "a".into()),
        ("o".into(), "n".into()),
        ("r".into(), "e".into()),
        ("a".into(), "t".into()),
        (g.clone(), "s".into()),
        (g.clone(), "w".into()),
        ("o".into(), "r".into()),
        ("e".into(), "n".into()),
        (g.clone(), "i".into()),
        (gs("i"), "s".into()),
        ("l".into(), "l".into()),
        (g.clone(), "c".into()),
        (g.clone(), "o".into()),
        (gs("o"), "f".into()),
        ("an".into(), "d".into()),
        (g.clone(), "an".into()),
    ]
    .into_iter()
    .collect();
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{a} {b}"));
        let ab = format!("{a}{b}");
        if !tokens.contains(&ab) {
            tokens.push(ab);
            types.push(NORMAL);
        }
    }
    let specials: [(&str, usize); 10] = [
        ("<|startoftext|>", 199_998),
        ("<|endoftext|>", 199_999),
        ("<|return|>", 200_002),
        ("<|constrain|>", 200_003),
        ("<|channel|>", 200_005),
        ("<|start|>", 200_006),
        ("<|end|>", 200_007),
        ("<|message|>", 200_008),
        ("<|call|>", 200_012),
        ("<|endofprompt|>", 200_018),
    ];
    let mut ids = std::collections::HashMap::new();
    if size.is_some_and(|n| n > 200_018) {
        // big enough for o200k_harmony's ids: specials where gpt-oss has them
        while tokens.len() < 199_998 {
            tokens.push(format!("[PAD{}]", tokens.len()));
            types.push(UNUSED);
        }
        for id in 199_998..=200_018usize {
            let s =
                specials.iter().find(|(_, i)| *i == id).map_or(format!("<|reserved_{id}|>"), |(s, _)| s.to_string());
            tokens.push(s);
            types.push(CONTROL);
        }
        for (s, id) in specials {
            ids.insert(s, id as u32);
        }
    } else {
        for (s, _) in specials {
            ids.insert(s, tokens.len() as u32);
            tokens.push(s.to_owned());
            types.push(CONTROL);
        }
    }
    let n = size.unwrap_or(tokens.len().next_multiple_of(32));
    ensure!(n >= tokens.len(), "vocab {n} is smaller than the {} tokens of the byte vocabulary", tokens.len());
    while tokens.len() < n {
        tokens.push(format!("[PAD{}]", tokens.len()));
        types.push(UNUSED);
    }
    Ok(Vocab { tokens, types, merges, bos: ids["<|startoftext|>"], eos: ids["<|return|>"], pad: ids["<|endoftext|>"] })
}

/// Metadata and tensor table of a gpt-oss file (no data yet).
pub fn gpt_oss_writer(c: &GptOssConfig) -> Result<(GgufWriter, Vec<TensorSpec>)> {
    c.check()?;
    let voc = bytes_vocab(c.vocab)?;
    let mut w = GgufWriter::new();
    let a = |k: &str| format!("gpt-oss.{k}");
    let u = |x: usize| Value::U32(x as u32);
    let kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), "gpt-oss".into()),
        ("general.type".into(), "model".into()),
        ("general.name".into(), c.name.as_str().into()),
        (a("block_count"), u(c.layers)),
        (a("context_length"), u(c.ctx)),
        (a("embedding_length"), u(c.hidden)),
        (a("feed_forward_length"), u(c.ff)),
        (a("attention.head_count"), u(c.heads)),
        (a("attention.head_count_kv"), u(c.kv_heads)),
        (a("attention.key_length"), u(c.head_dim)),
        (a("attention.value_length"), u(c.head_dim)),
        (a("rope.freq_base"), Value::F32(150_000.0)),
        (a("rope.scaling.type"), "yarn".into()),
        (a("rope.scaling.factor"), Value::F32(32.0)),
        (a("rope.scaling.original_context_length"), u(4096)),
        (a("rope.scaling.yarn_beta_fast"), Value::F32(32.0)),
        (a("rope.scaling.yarn_beta_slow"), Value::F32(1.0)),
        (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (a("expert_count"), u(c.experts)),
        (a("expert_used_count"), u(c.experts_used)),
        (a("attention.sliding_window"), u(c.window)),
        (a("expert_feed_forward_length"), u(c.ff)),
        // LlamaFileType.MOSTLY_MXFP4_MOE
        ("general.file_type".into(), Value::U32(38)),
        ("general.quantization_version".into(), Value::U32(2)),
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        ("tokenizer.ggml.pre".into(), "gpt-4o".into()),
        ("tokenizer.ggml.tokens".into(), Value::Array(Array::from(voc.tokens.clone()))),
        ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(voc.types.clone()))),
        ("tokenizer.ggml.merges".into(), Value::Array(Array::from(voc.merges.clone()))),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(voc.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(voc.eos)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(voc.pad)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    for (k, v) in kvs {
        w.add(k, v)?;
    }
    let specs = gpt_oss_tensors(c, voc.tokens.len());
    for s in &specs {
        w.add_tensor_info(s.name.clone(), s.ty, &s.shape)?;
    }
    Ok((w, specs))
}

/// Writes the whole file to `out`, one tensor (in row chunks) at a time.
pub fn write_gpt_oss<W: Write>(c: &GptOssConfig, out: W) -> Result<W> {
    let (w, specs) = gpt_oss_writer(c)?;
    let mut data = w.begin(out)?;
    const CHUNK_ELEMS: usize = 1 << 20;
    let (mut vals, mut bytes) = (Vec::new(), Vec::new());
    for s in &specs {
        let row = s.shape[0] as usize;
        let rows: usize = s.shape[1..].iter().map(|&d| d as usize).product();
        let per_chunk = (CHUNK_ELEMS / row).max(1);
        let mut rng = Rng::new(tensor_seed(c.seed, &s.name));
        let mut done = 0;
        while done < rows {
            let n = per_chunk.min(rows - done);
            vals.resize(n * row, 0.0);
            rng.fill_normal(&mut vals, s.mean, s.std);
            let nb = s.ty.row_bytes((n * row) as u64)? as usize;
            bytes.resize(nb, 0);
            if s.ty == GgmlType::F32 {
                for (d, v) in bytes.chunks_exact_mut(4).zip(&vals) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            } else {
                kiln_quant::quantize(s.ty, &vals, &mut bytes).with_context(|| format!("quantizing {}", s.name))?;
            }
            data.write_data(&bytes)?;
            done += n;
        }
    }
    Ok(data.finish()?)
}

/// Writes a gpt-oss file to `path`; returns the tensor count and file size.
pub fn write_gpt_oss_file(c: &GptOssConfig, path: &Path) -> Result<(usize, u64)> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = write_gpt_oss(c, BufWriter::with_capacity(1 << 20, file))?;
    out.flush()?;
    let n = gpt_oss_tensors(c, bytes_vocab(c.vocab)?.tokens.len()).len();
    let size = std::fs::metadata(path)?.len();
    Ok((n, size))
}

pub fn run_gpt_oss(a: &GptOssArgs) -> Result<()> {
    let c = GptOssConfig::from_args(a);
    if a.out.as_os_str().is_empty() {
        bail!("--out is empty");
    }
    let (n, size) = write_gpt_oss_file(&c, &a.out)?;
    println!(
        "wrote {}: {n} tensors, {size} bytes; layers={} hidden={} heads={}/{}x{} experts={} used={} ff={} window={} vocab={} seed={}",
        a.out.display(),
        c.layers,
        c.hidden,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.experts,
        c.experts_used,
        c.ff,
        c.window,
        bytes_vocab(c.vocab)?.tokens.len(),
        c.seed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_gguf::GgufFile;

    #[test]
    fn tiny_gpt_oss_layout() {
        let c = GptOssConfig { layers: 2, ..GptOssConfig::preset(Preset::Tiny) };
        let bytes = write_gpt_oss(&c, Vec::new()).unwrap();
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
        // deterministic, and the seed matters
        assert_eq!(write_gpt_oss(&c, Vec::new()).unwrap(), bytes);
        assert_ne!(write_gpt_oss(&GptOssConfig { seed: 8, ..c }, Vec::new()).unwrap(), bytes);
    }

    #[test]
    fn preset_20b_table() {
        let c = GptOssConfig { layers: 1, ..GptOssConfig::preset(Preset::Gpt20b) };
        let specs = gpt_oss_tensors(&c, 201_088);
        let get = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
        assert_eq!(get("blk.0.attn_q.weight").shape, [2880, 4096]);
        assert_eq!(get("blk.0.attn_output.weight").shape, [4096, 2880]);
        assert_eq!(get("blk.0.attn_k.weight").shape, [2880, 512]);
        assert_eq!(get("blk.0.ffn_up_exps.weight").shape, [2880, 2880, 32]);
        assert_eq!(get("token_embd.weight").shape, [2880, 201_088]);
        let v = bytes_vocab(Some(201_088)).unwrap();
        assert_eq!(v.tokens.len(), 201_088);
        assert_eq!((v.bos, v.eos, v.pad), (199_998, 200_002, 199_999));
        assert_eq!(v.tokens[200_005], "<|channel|>");
    }
}
