//! Vocabularies for synthetic models: a small byte-level GPT-2 BPE, or gpt-oss's real
//! o200k_harmony vocabulary rebuilt from `tiktoken-rs`'s embedded o200k data (nothing downloaded).

use std::collections::HashMap;

use anyhow::{Result, ensure};

/// llama.cpp's `llama_token_type` values.
pub const NORMAL: i32 = 1;
pub const CONTROL: i32 = 3;
pub const UNUSED: i32 = 5;

/// The `tokenizer.ggml.*` metadata of a GPT-2-style (byte-level BPE) vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    /// `tokenizer.ggml.pre`.
    pub pre: &'static str,
    pub bos: u32,
    pub eos: u32,
    pub pad: Option<u32>,
    pub add_bos: bool,
}

/// Which vocabulary a synthetic model gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// 256 byte tokens, a few merges, the family's special tokens, `[PADi]` up to the size asked.
    Bytes,
    /// gpt-oss's o200k_harmony: 199,998 BPE tokens, 446,189 merges, the harmony specials at ids
    /// 199,998..=200,018, padded with `[PADi]` to 201,088 (as the public gpt-oss GGUFs are).
    O200kHarmony,
}

/// GPT-2's byte → printable-character map (HF ByteLevel).
pub fn byte_chars() -> [char; 256] {
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

/// `bytes` in GPT-2's byte-level alphabet.
pub fn byte_encode(bytes: &[u8]) -> String {
    let t = byte_chars();
    bytes.iter().map(|&b| t[b as usize]).collect()
}

/// The o200k_harmony special tokens, ids 199,998..=200,018 (reserved ids get `<|reserved_N|>`).
pub fn harmony_specials() -> Vec<(u32, String)> {
    const NAMED: [(u32, &str); 10] = [
        (199_998, "<|startoftext|>"),
        (199_999, "<|endoftext|>"),
        (200_002, "<|return|>"),
        (200_003, "<|constrain|>"),
        (200_005, "<|channel|>"),
        (200_006, "<|start|>"),
        (200_007, "<|end|>"),
        (200_008, "<|message|>"),
        (200_012, "<|call|>"),
        (200_018, "<|endofprompt|>"),
    ];
    (199_998..=200_018u32)
        .map(|id| match NAMED.iter().find(|n| n.0 == id) {
            Some(&(_, t)) => (id, t.to_owned()),
            None => (id, format!("<|reserved_{id}|>")),
        })
        .collect()
}

/// The size of gpt-oss's padded vocabulary.
pub const GPT_OSS_VOCAB: usize = 201_088;

/// A byte-level vocabulary: 256 byte tokens (id = byte), a few merges of common English pairs,
/// the special tokens of `arch`'s family, `[PADi]` up to `size` (default: the next multiple of
/// 32). For gpt-oss this is `make_tiny_gptoss.py --vocab bytes`; a gpt-oss vocabulary that reaches
/// o200k_harmony's special ids (size > 200,018) holds the specials at their gpt-oss ids.
pub fn bytes_vocab(gpt_oss: bool, size: Option<usize>) -> Result<Vocab> {
    let b2u = byte_chars();
    let mut tokens: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    let mut types = vec![NORMAL; 256];
    let g = b2u[b' ' as usize].to_string();
    let gs = |s: &str| format!("{g}{s}");
    let pairs: Vec<(String, String)> = vec![
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
    ];
    let mut merges = Vec::new();
    for (a, b) in pairs {
        merges.push(format!("{a} {b}"));
        let ab = format!("{a}{b}");
        if !tokens.contains(&ab) {
            tokens.push(ab);
            types.push(NORMAL);
        }
    }
    let mut ids = HashMap::new();
    let pad_to = |tokens: &mut Vec<String>, types: &mut Vec<i32>, n: usize| {
        while tokens.len() < n {
            tokens.push(format!("[PAD{}]", tokens.len()));
            types.push(UNUSED);
        }
    };
    if gpt_oss && size.is_some_and(|n| n > 200_018) {
        pad_to(&mut tokens, &mut types, 199_998);
        for (id, text) in harmony_specials() {
            ids.insert(text.clone(), id);
            tokens.push(text);
            types.push(CONTROL);
        }
    } else {
        let specials: Vec<String> = if gpt_oss {
            harmony_specials().into_iter().map(|(_, t)| t).filter(|t| !t.starts_with("<|reserved")).collect()
        } else {
            ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"].map(String::from).to_vec()
        };
        for s in specials {
            ids.insert(s.clone(), tokens.len() as u32);
            tokens.push(s);
            types.push(CONTROL);
        }
    }
    let n = size.unwrap_or(tokens.len().next_multiple_of(32));
    ensure!(n >= tokens.len(), "vocab {n} is smaller than the {} tokens of the byte vocabulary", tokens.len());
    pad_to(&mut tokens, &mut types, n);
    let id = |s: &str| ids[s];
    Ok(if gpt_oss {
        Vocab {
            tokens,
            types,
            merges,
            pre: "gpt-4o",
            bos: id("<|startoftext|>"),
            eos: id("<|return|>"),
            pad: Some(id("<|endoftext|>")),
            add_bos: false,
        }
    } else {
        Vocab {
            tokens,
            types,
            merges,
            pre: "default",
            bos: id("<|begin_of_text|>"),
            eos: id("<|end_of_text|>"),
            pad: Some(id("<|pad|>")),
            add_bos: true,
        }
    })
}

/// The o200k_base token bytes by rank (0..199,998), from tiktoken-rs.
pub fn o200k_ranks() -> Result<Vec<Vec<u8>>> {
    let bpe = tiktoken_rs::o200k_harmony()?;
    (0..199_998u32).map(|r| Ok(bpe.decode_bytes(&[r])?)).collect()
}

/// BPE merges from tiktoken ranks, as `transformers`' tiktoken converter derives them (and so the
/// gpt-oss `tokenizer.json` and GGUF hold them): for each token by rank, every split into two
/// tokens, sorted by the pieces' ranks; the whole list stably sorted by the merged token's rank.
pub fn merges_from_ranks(ranks: &[Vec<u8>]) -> Vec<String> {
    let index: HashMap<&[u8], u32> = ranks.iter().enumerate().map(|(r, t)| (t.as_slice(), r as u32)).collect();
    let mut merges: Vec<(u32, u32, u32)> = Vec::new(); // (merged rank, left rank, right rank)
    for (rank, token) in ranks.iter().enumerate() {
        let mut local = Vec::new();
        for i in 1..token.len() {
            if let (Some(&l), Some(&r)) = (index.get(&token[..i]), index.get(&token[i..])) {
                local.push((rank as u32, l, r));
            }
        }
        local.sort_by_key(|&(_, l, r)| (l, r));
        merges.extend(local);
    }
    merges.sort_by_key(|m| m.0); // stable
    merges
        .into_iter()
        .map(|(_, l, r)| format!("{} {}", byte_encode(&ranks[l as usize]), byte_encode(&ranks[r as usize])))
        .collect()
}

/// gpt-oss's vocabulary as its GGUF holds it: o200k tokens in GPT-2 byte encoding, the harmony
/// specials (control), `[PADi]` (unused) up to 201,088; gpt2 model, gpt-4o pre-tokenizer, BOS
/// `<|startoftext|>`, EOS `<|return|>`, PAD `<|endoftext|>`, no BOS added.
pub fn o200k_harmony_vocab() -> Result<Vocab> {
    let ranks = o200k_ranks()?;
    let mut tokens: Vec<String> = ranks.iter().map(|t| byte_encode(t)).collect();
    let mut types = vec![NORMAL; tokens.len()];
    for (_, text) in harmony_specials() {
        tokens.push(text);
        types.push(CONTROL);
    }
    while tokens.len() < GPT_OSS_VOCAB {
        tokens.push(format!("[PAD{}]", tokens.len()));
        types.push(UNUSED);
    }
    Ok(Vocab {
        tokens,
        types,
        merges: merges_from_ranks(&ranks),
        pre: "gpt-4o",
        bos: 199_998,
        eos: 200_002,
        pad: Some(199_999),
        add_bos: false,
    })
}

impl Vocab {
    /// `tokenizer.ggml.*` key/value pairs.
    pub fn metadata(&self) -> Vec<(String, kiln_gguf::Value)> {
        use kiln_gguf::{Array, Value};
        let mut kv: Vec<(String, Value)> = vec![
            ("tokenizer.ggml.model".into(), "gpt2".into()),
            ("tokenizer.ggml.pre".into(), self.pre.into()),
            ("tokenizer.ggml.tokens".into(), Value::Array(Array::from(self.tokens.clone()))),
            ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(self.types.clone()))),
            ("tokenizer.ggml.merges".into(), Value::Array(Array::from(self.merges.clone()))),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(self.bos)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(self.eos)),
        ];
        if let Some(p) = self.pad {
            kv.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(p)));
        }
        kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(self.add_bos)));
        kv
    }
}

/// The gpt-oss vocabulary as a Hugging Face `tokenizer.json` (the structure of the published
/// gpt-oss one, which a test can write without fetching it: BPE with `ignore_merges`, the o200k split regex, ByteLevel without its regex).
pub fn o200k_harmony_tokenizer_json() -> Result<String> {
    let ranks = o200k_ranks()?;
    let vocab: serde_json::Map<String, serde_json::Value> =
        ranks.iter().enumerate().map(|(r, t)| (byte_encode(t), serde_json::json!(r))).collect();
    let added: Vec<serde_json::Value> = harmony_specials()
        .into_iter()
        .map(|(id, content)| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let pattern = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Ok(serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
            "vocab": vocab, "merges": merges_from_ranks(&ranks)}
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_vocabularies() {
        let v = bytes_vocab(true, None).unwrap();
        assert_eq!(v.tokens.len() % 32, 0);
        assert_eq!(v.tokens[v.eos as usize], "<|return|>");
        assert_eq!(v.tokens[b'A' as usize], "A");
        assert_eq!(v.tokens[b' ' as usize], "Ġ");
        let big = bytes_vocab(true, Some(GPT_OSS_VOCAB)).unwrap();
        assert_eq!(big.tokens.len(), GPT_OSS_VOCAB);
        assert_eq!((big.bos, big.eos, big.pad), (199_998, 200_002, Some(199_999)));
        assert_eq!(big.tokens[200_005], "<|channel|>");
        let l = bytes_vocab(false, None).unwrap();
        assert_eq!(l.tokens[l.bos as usize], "<|begin_of_text|>");
        assert!(l.add_bos);
        assert!(bytes_vocab(false, Some(100)).is_err());
    }

    #[test]
    fn merges_of_a_hand_made_rank_table() {
        // "ab" = a+b; "abc" = ab+c only ("a"+"bc" has no "bc")
        let ranks: Vec<Vec<u8>> = [&b"a"[..], b"b", b"c", b"ab", b"abc"].iter().map(|t| t.to_vec()).collect();
        assert_eq!(merges_from_ranks(&ranks), ["a b", "ab c"]);
    }
}
