//! Tokenizers from a Hugging Face `tokenizer.json`, run by the `tokenizers` crate.

use crate::TokenizerError;
use crate::bpe::char_to_byte_table;
use crate::special::SpecialMatcher;
use crate::tokenizer::{Engine, Tokenizer};
use crate::vocab::{Specials, TokenAttr, Vocab, derive_specials};
use serde_json::Value;
use std::sync::OnceLock;

pub(crate) struct HfEngine {
    tok: tokenizers::Tokenizer,
    /// The same tokenizer with special added tokens treated as text (`parse_special = false`),
    /// made on first use.
    literal: OnceLock<Result<tokenizers::Tokenizer, String>>,
    /// The decoder maps GPT-2 byte characters back to bytes.
    byte_level: bool,
}

fn hf_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::TokenizerJson(e.to_string())
}

impl HfEngine {
    pub(crate) fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let tok = if parse_special {
            &self.tok
        } else {
            self.literal
                .get_or_init(|| {
                    let mut t = self.tok.clone();
                    t.set_encode_special_tokens(true);
                    Ok(t)
                })
                .as_ref()
                .map_err(hf_err)?
        };
        let enc = tok.encode_fast(text, add_special).map_err(hf_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The bytes of a normal token.
    pub(crate) fn normal_piece(&self, t: &Tokenizer, id: u32, out: &mut Vec<u8>) {
        let text = t.vocab.text(id);
        if self.byte_level {
            t.decode_byte_level(text, out);
        } else {
            let s = String::from_utf8_lossy(text).replace('\u{2581}', " ");
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Whether a decoder (or a decoder in a `Sequence`) is `ByteLevel`.
fn has_byte_level(decoder: &Value) -> bool {
    match decoder.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => {
            decoder.get("decoders").and_then(Value::as_array).is_some_and(|ds| ds.iter().any(has_byte_level))
        }
        _ => false,
    }
}

/// A token given in `tokenizer_config.json` either as a string or as `{"content": …}`.
fn config_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

pub(crate) fn build(json: &[u8], config: Option<&[u8]>) -> Result<Tokenizer, TokenizerError> {
    let tok = tokenizers::Tokenizer::from_bytes(json).map_err(hf_err)?;
    let raw: Value = serde_json::from_slice(json).map_err(hf_err)?;
    let byte_level = raw.get("decoder").is_some_and(has_byte_level);
    let config: Option<Value> = match config {
        Some(c) => Some(serde_json::from_slice(c).map_err(|e| hf_err(format!("tokenizer_config.json: {e}")))?),
        None => None,
    };

    let vocab_map = tok.get_vocab(true);
    let n = vocab_map.values().map(|&id| id as usize + 1).max().unwrap_or(0);
    if n == 0 {
        return Err(TokenizerError::TokenizerJson("empty vocabulary".into()));
    }
    let mut texts: Vec<Option<&str>> = vec![None; n];
    for (text, &id) in &vocab_map {
        texts[id as usize] = Some(text.as_str());
    }
    let mut vocab = Vocab::new(texts.iter().map(|t| t.unwrap_or("").as_bytes()));
    let added = tok.get_added_tokens_decoder();
    let byte_fallback = raw.pointer("/model/byte_fallback").and_then(Value::as_bool).unwrap_or(false);
    for (id, t) in texts.iter().enumerate() {
        let id = id as u32;
        let attr = match (t, added.get(&id)) {
            (None, _) => TokenAttr::UNUSED,
            (_, Some(a)) if a.special => TokenAttr::CONTROL,
            (_, Some(_)) => TokenAttr::USER_DEFINED,
            (Some(t), None) if byte_fallback && is_byte_token(t) => TokenAttr::BYTE,
            _ => TokenAttr::NORMAL,
        };
        vocab.set_attr(id, attr);
    }

    let mut sp = Specials::default();
    let mut chat_template = None;
    if let Some(cfg) = &config {
        let id_of = |key: &str| config_token(cfg, key).and_then(|t| vocab.lookup(t.as_bytes()));
        sp.bos = id_of("bos_token");
        sp.eos = id_of("eos_token");
        sp.pad = id_of("pad_token");
        sp.unk = id_of("unk_token");
        chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
            _ => None,
        };
    }
    let eog = derive_specials(&mut vocab, &mut sp);
    let matcher = SpecialMatcher::new(&vocab, &[]);
    let engine = HfEngine { tok, literal: OnceLock::new(), byte_level };
    // What the post-processor does with `add_special_tokens`, seen on an empty text.
    let with_special = engine.encode("", true, true)?;
    let add_bos = sp.bos.is_some() && with_special.first().copied() == sp.bos;
    let add_eos = sp.eos.is_some() && with_special.last().copied() == sp.eos && !(with_special.len() == 1 && add_bos);
    Ok(Tokenizer {
        vocab,
        specials: sp,
        eog,
        matcher,
        engine: Engine::Hf(Box::new(engine)),
        add_bos,
        add_eos,
        add_space_prefix: false,
        clean_spaces: false,
        chat_template,
        model: "tokenizer.json".into(),
        pre: None,
        char_byte: char_to_byte_table(),
        whitespace: None,
    })
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && b[3].is_ascii_hexdigit() && b[4].is_ascii_hexdigit()
}
