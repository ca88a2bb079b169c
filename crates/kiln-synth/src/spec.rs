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

/// A config that JSON fields can be written into.
trait Fields {
    fn size_mut(&mut self, key: &str) -> Option<&mut usize>;
    fn type_mut(&mut self, key: &str) -> Option<&mut GgmlType>;
    /// Every other field; an error for an unknown one.
    fn set_other(&mut self, key: &str, v: &Value) -> Result<()>;
    fn model(&self) -> Result<SynthModel>;
}

fn seed_of(v: &Value) -> Result<u64> {
    v.as_u64().with_context(|| format!("seed: expected a non-negative integer, got {v}"))
}

impl Fields for GptOss {
    fn size_mut(&mut self, key: &str) -> Option<&mut usize> {
        GptOss::size_mut(self, key)
    }
    fn type_mut(&mut self, key: &str) -> Option<&mut GgmlType> {
        GptOss::type_mut(self, key)
    }
    fn set_other(&mut self, k: &str, v: &Value) -> Result<()> {
        match k {
            "vocab_size" => self.vocab_size = Some(usize_of(k, v)?),
            "seed" => self.seed = seed_of(v)?,
            "vocab" => {
                self.vocab_kind = match v.as_str() {
                    Some("bytes") => VocabKind::Bytes,
                    Some("o200k_harmony") => VocabKind::O200kHarmony,
                    _ => bail!("vocab: \"bytes\" or \"o200k_harmony\", got {v}"),
                }
            }
            _ => bail!("gpt-oss: unknown field {k:?}"),
        }
        Ok(())
    }
    fn model(&self) -> Result<SynthModel> {
        GptOss::model(self)
    }
}

impl Fields for Llama {
    fn size_mut(&mut self, key: &str) -> Option<&mut usize> {
        Llama::size_mut(self, key)
    }
    fn type_mut(&mut self, key: &str) -> Option<&mut GgmlType> {
        Llama::type_mut(self, key)
    }
    fn set_other(&mut self, k: &str, v: &Value) -> Result<()> {
        match k {
            "vocab_size" => self.vocab_size = Some(usize_of(k, v)?),
            "seed" => self.seed = seed_of(v)?,
            "rope_base" => self.rope_base = v.as_f64().with_context(|| format!("rope_base: {v}"))? as f32,
            "output_type" => self.output_type = if v.is_null() { None } else { Some(type_of(k, v)?) },
            _ => bail!("llama: unknown field {k:?}"),
        }
        Ok(())
    }
    fn model(&self) -> Result<SynthModel> {
        Llama::model(self)
    }
}

fn build<'a>(mut c: impl Fields, fields: impl Iterator<Item = (&'a String, &'a Value)>) -> Result<SynthModel> {
    for (k, v) in fields {
        if let Some(f) = c.size_mut(k) {
            *f = usize_of(k, v)?;
        } else if let Some(f) = c.type_mut(k) {
            *f = type_of(k, v)?;
        } else {
            c.set_other(k, v)?;
        }
    }
    c.model()
}

/// The model a JSON spec describes.
pub fn from_spec(spec: &Map<String, Value>) -> Result<SynthModel> {
    let arch = spec.get("arch").and_then(Value::as_str).context("spec: missing \"arch\"")?;
    let base = spec.get("base").and_then(Value::as_str).unwrap_or("tiny");
    let fields = spec.iter().filter(|(k, _)| *k != "arch" && *k != "base");
    match (arch, base) {
        ("gpt-oss", "tiny") => build(GptOss::tiny(), fields),
        ("gpt-oss", "20b") => build(GptOss::gpt_oss_20b(), fields),
        ("gpt-oss", _) => bail!("gpt-oss: unknown base {base:?} (tiny, 20b)"),
        ("llama", "tiny") => build(Llama::tiny(), fields),
        ("llama", "tiny-q4_k_m") => build(Llama::tiny().with_q4_k_m_types(), fields),
        ("llama", _) => bail!("llama: unknown base {base:?} (tiny, tiny-q4_k_m)"),
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
