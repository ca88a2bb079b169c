//! Models described as JSON objects (the test-case lists of kiln-model's llama.cpp comparisons):
//! `{"arch": "gpt-oss" | "llama", "base": PRESET, FIELD: VALUE, …}` — the preset's fields with
//! the given ones replaced. Unknown fields are errors.

use anyhow::{Context, Result, bail};
use kiln_gguf::GgmlType;
use serde_json::{Map, Value};

use crate::{GptOss, Llama, SynthModel, VocabKind};

fn usize_of(k: &str, v: &Value) -> Result<usize> {
    v.as_u64().map(|x| x as usize).with_context(|| format!("{k}: expected a non-negative integer, got {v}"))
}

fn type_of(k: &str, v: &Value) -> Result<GgmlType> {
    let s = v.as_str().with_context(|| format!("{k}: expected a type name, got {v}"))?;
    GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(s))
        .with_context(|| format!("{k}: unknown type {s:?}"))
}

/// The model a JSON spec describes.
pub fn from_spec(spec: &Map<String, Value>) -> Result<SynthModel> {
    let arch = spec.get("arch").and_then(Value::as_str).context("spec: missing \"arch\"")?;
    let base = spec.get("base").and_then(Value::as_str).unwrap_or("tiny");
    let fields = spec.iter().filter(|(k, _)| *k != "arch" && *k != "base");
    match arch {
        "gpt-oss" => {
            let mut c = match base {
                "tiny" => GptOss::tiny(),
                "20b" => GptOss::gpt_oss_20b(),
                _ => bail!("gpt-oss: unknown base {base:?} (tiny, 20b)"),
            };
            for (k, v) in fields {
                match k.as_str() {
                    "layers" => c.layers = usize_of(k, v)?,
                    "hidden" => c.hidden = usize_of(k, v)?,
                    "heads" => c.heads = usize_of(k, v)?,
                    "kv_heads" => c.kv_heads = usize_of(k, v)?,
                    "head_dim" => c.head_dim = usize_of(k, v)?,
                    "experts" => c.experts = usize_of(k, v)?,
                    "experts_used" => c.experts_used = usize_of(k, v)?,
                    "ff" => c.ff = usize_of(k, v)?,
                    "window" => c.window = usize_of(k, v)?,
                    "vocab_size" => c.vocab_size = Some(usize_of(k, v)?),
                    "ctx" => c.ctx = usize_of(k, v)?,
                    "seed" => c.seed = v.as_u64().with_context(|| format!("seed: {v}"))?,
                    "attn_type" => c.attn_type = type_of(k, v)?,
                    "embd_type" => c.embd_type = type_of(k, v)?,
                    "output_type" => c.output_type = type_of(k, v)?,
                    "vocab" => {
                        c.vocab_kind = match v.as_str() {
                            Some("bytes") => VocabKind::Bytes,
                            Some("o200k_harmony") => VocabKind::O200kHarmony,
                            _ => bail!("vocab: \"bytes\" or \"o200k_harmony\", got {v}"),
                        }
                    }
                    _ => bail!("gpt-oss: unknown field {k:?}"),
                }
            }
            c.model()
        }
        "llama" => {
            let mut c = match base {
                "tiny" => Llama::tiny(),
                "tiny-q4_k_m" => Llama::tiny().with_q4_k_m_types(),
                _ => bail!("llama: unknown base {base:?} (tiny, tiny-q4_k_m)"),
            };
            for (k, v) in fields {
                match k.as_str() {
                    "layers" => c.layers = usize_of(k, v)?,
                    "hidden" => c.hidden = usize_of(k, v)?,
                    "heads" => c.heads = usize_of(k, v)?,
                    "kv_heads" => c.kv_heads = usize_of(k, v)?,
                    "head_dim" => c.head_dim = usize_of(k, v)?,
                    "ff" => c.ff = usize_of(k, v)?,
                    "vocab_size" => c.vocab_size = Some(usize_of(k, v)?),
                    "ctx" => c.ctx = usize_of(k, v)?,
                    "seed" => c.seed = v.as_u64().with_context(|| format!("seed: {v}"))?,
                    "rope_base" => c.rope_base = v.as_f64().with_context(|| format!("rope_base: {v}"))? as f32,
                    "attn_type" => c.attn_type = type_of(k, v)?,
                    "attn_v_type" => c.attn_v_type = type_of(k, v)?,
                    "ffn_type" => c.ffn_type = type_of(k, v)?,
                    "ffn_down_type" => c.ffn_down_type = type_of(k, v)?,
                    "embd_type" => c.embd_type = type_of(k, v)?,
                    "output_type" => c.output_type = if v.is_null() { None } else { Some(type_of(k, v)?) },
                    _ => bail!("llama: unknown field {k:?}"),
                }
            }
            c.model()
        }
        _ => bail!("spec: unknown arch {arch:?} (gpt-oss, llama)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn specs_apply_over_presets() {
        let m = from_spec(&spec(r#"{"arch": "gpt-oss", "heads": 6, "kv_heads": 1, "attn_type": "f16"}"#)).unwrap();
        let q = m.tensors.iter().find(|t| t.name == "blk.0.attn_q.weight").unwrap();
        assert_eq!((q.ty, q.shape.as_slice()), (GgmlType::F16, &[64u64, 96][..]));
        let m = from_spec(&spec(r#"{"arch": "llama", "base": "tiny-q4_k_m", "output_type": null}"#)).unwrap();
        assert!(m.tensors.iter().all(|t| t.name != "output.weight"));
        for bad in [
            r#"{"arch": "gpt-oss", "heads": -1}"#,
            r#"{"arch": "gpt-oss", "colour": 1}"#,
            r#"{"arch": "llama", "attn_type": "q9_9"}"#,
            r#"{"arch": "mamba"}"#,
            r#"{"heads": 2}"#,
        ] {
            assert!(from_spec(&spec(bad)).is_err(), "{bad}");
        }
    }
}
