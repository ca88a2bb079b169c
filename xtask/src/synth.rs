//! `cargo xtask synth`: the command line of `kiln-synth` (random-weight GGUFs with real layouts).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use kiln_gguf::GgmlType;
use kiln_synth::{GptOss, Llama, SynthModel, VocabKind};

/// gpt-oss shape presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 2 layers, hidden 64, 4/2 heads of 16, 4 experts (2 used), ff 64, window 16, byte vocabulary.
    Tiny,
    /// The public gpt-oss-20b: 24 layers, hidden 2880, 64/8 heads of 64, 32 experts (4 used), ff
    /// 2880, window 128, o200k_harmony vocabulary (201,088), ~12.1 GB.
    #[value(name = "20b")]
    Gpt20b,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VocabArg {
    /// 256 byte tokens, a few merges and the family's special tokens.
    Bytes,
    /// gpt-oss's real o200k_harmony vocabulary, from tiktoken-rs's o200k data (gpt-oss only).
    O200kHarmony,
}

/// A ggml tensor type by its name (`q8_0`, `f16`, `q4_K`, `mxfp4`, …; case-insensitive).
fn ggml_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::ALL.iter().copied().find(|t| t.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type {s:?}; one of: {}", names.join(", "))
    })
}

/// Options shared by every architecture.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
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
    /// Feed-forward width (gpt-oss: of each expert).
    #[arg(long)]
    pub ff: Option<usize>,
    /// Byte-vocabulary size (padded with `[PADi]`; default: the tokens rounded up to 32).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Training context length written to metadata.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Type of token_embd.
    #[arg(long, value_parser = ggml_type)]
    pub embd_type: Option<GgmlType>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `cargo xtask synth gpt-oss`: unset shapes come from the preset.
#[derive(Args, Debug, Clone)]
pub struct GptOssArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    #[arg(long)]
    pub experts: Option<usize>,
    #[arg(long)]
    pub experts_used: Option<usize>,
    /// Sliding window of the even layers.
    #[arg(long)]
    pub window: Option<usize>,
    /// Vocabulary (default: the preset's).
    #[arg(long, value_enum)]
    pub vocab: Option<VocabArg>,
    /// Type of attn_q/k/v/output (q8_0, f16, bf16, f32, …).
    #[arg(long, value_parser = ggml_type)]
    pub attn_type: Option<GgmlType>,
    /// Type of output.
    #[arg(long, value_parser = ggml_type)]
    pub output_type: Option<GgmlType>,
}

/// `cargo xtask synth llama`: unset shapes come from `Llama::tiny` (2 layers, hidden 256, 4/2
/// heads of 64, ff 512, all Q8_0, tied embedding).
#[derive(Args, Debug, Clone)]
pub struct LlamaArgs {
    #[command(flatten)]
    pub common: Common,
    /// Start from the Q4_K_M mix (Q4_K matrices; Q6_K attn_v, ffn_down and output).
    #[arg(long)]
    pub q4_k_m: bool,
    /// Type of attn_q/k/output.
    #[arg(long, value_parser = ggml_type)]
    pub attn_type: Option<GgmlType>,
    #[arg(long, value_parser = ggml_type)]
    pub attn_v_type: Option<GgmlType>,
    /// Type of ffn_gate/up.
    #[arg(long, value_parser = ggml_type)]
    pub ffn_type: Option<GgmlType>,
    #[arg(long, value_parser = ggml_type)]
    pub ffn_down_type: Option<GgmlType>,
    /// Type of output.weight (default: none, the embedding is tied).
    #[arg(long, value_parser = ggml_type)]
    pub output_type: Option<GgmlType>,
    #[arg(long)]
    pub rope_base: Option<f32>,
}

impl Common {
    /// The size flags by the config field names they set.
    fn sizes(&self) -> [(&'static str, Option<usize>); 7] {
        [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("ff", self.ff),
            ("ctx", self.ctx),
        ]
    }
}

/// Sets every given flag through `field` (a config's `size_mut` / `type_mut`).
fn apply<T: Copy, C>(
    c: &mut C,
    flags: &[(&str, Option<T>)],
    field: impl for<'a> Fn(&'a mut C, &str) -> Option<&'a mut T>,
) {
    for &(key, value) in flags {
        if let Some(v) = value {
            *field(c, key).expect("every flag names a field") = v;
        }
    }
}

pub fn gpt_oss_config(a: &GptOssArgs) -> GptOss {
    let mut c = match a.preset {
        Preset::Tiny => GptOss::tiny(),
        Preset::Gpt20b => GptOss::gpt_oss_20b(),
    };
    let m = &a.common;
    apply(&mut c, &m.sizes(), GptOss::size_mut);
    let more = [("experts", a.experts), ("experts_used", a.experts_used), ("window", a.window)];
    apply(&mut c, &more, GptOss::size_mut);
    let types = [("embd_type", m.embd_type), ("attn_type", a.attn_type), ("output_type", a.output_type)];
    apply(&mut c, &types, GptOss::type_mut);
    if let Some(v) = a.vocab {
        c.vocab_kind = match v {
            VocabArg::Bytes => VocabKind::Bytes,
            VocabArg::O200kHarmony => VocabKind::O200kHarmony,
        };
    }
    if m.vocab_size.is_some() {
        c.vocab_size = m.vocab_size;
    }
    c.seed = m.seed;
    c
}

pub fn run_gpt_oss(a: &GptOssArgs) -> Result<()> {
    let c = gpt_oss_config(a);
    write(&a.common, &c.model()?, &format!("{c:?}"))
}

pub fn run_llama(a: &LlamaArgs) -> Result<()> {
    let mut c = if a.q4_k_m { Llama::tiny().with_q4_k_m_types() } else { Llama::tiny() };
    let m = &a.common;
    if m.heads.is_some() || m.hidden.is_some() {
        // keep hidden = heads × head_dim unless the head dim is given
        c.head_dim = m.hidden.unwrap_or(c.hidden) / m.heads.unwrap_or(c.heads);
    }
    apply(&mut c, &m.sizes(), Llama::size_mut);
    let types = [
        ("embd_type", m.embd_type),
        ("attn_type", a.attn_type),
        ("attn_v_type", a.attn_v_type),
        ("ffn_type", a.ffn_type),
        ("ffn_down_type", a.ffn_down_type),
    ];
    apply(&mut c, &types, Llama::type_mut);
    if let Some(b) = a.rope_base {
        c.rope_base = b;
    }
    if a.output_type.is_some() {
        c.output_type = a.output_type;
    }
    if m.vocab_size.is_some() {
        c.vocab_size = m.vocab_size;
    }
    c.seed = m.seed;
    write(m, &c.model()?, &format!("{c:?}"))
}

fn write(m: &Common, model: &SynthModel, what: &str) -> Result<()> {
    if m.out.as_os_str().is_empty() {
        bail!("--out is empty");
    }
    let t = Instant::now();
    let size = model.write_file(&m.out)?;
    println!(
        "wrote {}: {} tensors, {size} bytes in {:.1} s\n{what}",
        m.out.display(),
        model.tensors.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
