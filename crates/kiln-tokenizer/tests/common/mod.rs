//! Shared by the integration tests: the fixtures (made by fixtures/gen_fixtures.py with llama.cpp),
//! the test models, and the GGUF files the tests build themselves.
#![allow(dead_code)]

use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::Tokenizer;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What llama.cpp said about one vocabulary (see gen_fixtures.py / tokenize_oracle.cpp).
#[derive(Deserialize)]
pub struct Fixture {
    pub source: String,
    pub n_vocab: usize,
    pub add_bos: bool,
    pub add_eos: bool,
    pub bos: i64,
    pub eos: i64,
    pub eot: i64,
    pub sep: i64,
    pub pad: i64,
    pub fim: [i64; 6],
    pub eog: Vec<u32>,
    pub attr_runs: Vec<[u64; 3]>,
    pub piece_digests_plain: Vec<String>,
    pub piece_digests_special: Vec<String>,
    pub cases: Vec<Case>,
    pub mixed: Mixed,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub ids: HashMap<String, Vec<u32>>,
    pub detokenize: HashMap<String, String>,
}

#[derive(Deserialize)]
pub struct Mixed {
    pub ids: Option<Vec<u32>>,
    pub n_ids: usize,
    pub ids_fnv: String,
    pub detokenize_keep_fnv: String,
}

#[derive(Deserialize)]
pub struct CorpusEntry {
    pub name: String,
    pub text: String,
}

pub fn fixture(name: &str) -> Fixture {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn corpus() -> Vec<CorpusEntry> {
    let text = std::fs::read_to_string(fixtures_dir().join("corpus.json")).expect("corpus.json");
    serde_json::from_str(&text).expect("corpus.json parses")
}

/// ~110 KB of deterministic mixed text (see gen_fixtures.py `make_mixed`).
pub fn mixed() -> String {
    std::fs::read_to_string(fixtures_dir().join("mixed.txt")).expect("mixed.txt")
}

/// FNV-1a 64, as hex (the digest tokenize_oracle.cpp uses).
pub fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

pub fn smollm2_path() -> PathBuf {
    kiln_testkit::model("smollm2-135m-instruct-q4_1")
}

pub fn gemma3_path() -> PathBuf {
    kiln_testkit::model("gemma3-270m-q4_k_m")
}

/// SmolLM2's vocabulary under another `tokenizer.ggml.pre` (the same list as gen_fixtures.py).
pub const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("smollm2-pre-default", "default", &[]),
    ("smollm2-pre-gpt-2", "gpt-2", &[]),
    ("smollm2-pre-llama-bpe", "llama-bpe", &["tokenizer.ggml.add_bos_token"]),
    ("smollm2-pre-qwen2", "qwen2", &[]),
    ("smollm2-pre-starcoder", "starcoder", &[]),
    ("smollm2-pre-tekken", "tekken", &[]),
    ("smollm2-pre-gpt-4o", "gpt-4o", &[]),
];

/// A metadata-only GGUF with `src`'s `tokenizer.*` keys and `general.name`, `tokenizer.ggml.pre`
/// set to `pre` and the keys in `drop` left out.
pub fn tokenizer_variant(src: &GgufFile, pre: &str, drop: &[&str]) -> GgufFile {
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        if !(key.starts_with("tokenizer.") || key == "general.name") || drop.contains(&key) {
            continue;
        }
        if key == "tokenizer.ggml.pre" {
            w.add(key, pre).unwrap();
        } else {
            w.add(key, value.to_value()).unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
}

/// The fixture name → the GGUF it was made from.
pub fn gguf_for(name: &str) -> GgufFile {
    match name {
        "smollm2" => GgufFile::open(smollm2_path()).unwrap(),
        "gemma3" => GgufFile::open(gemma3_path()).unwrap(),
        "gptoss" => GgufFile::from_bytes(gptoss_gguf_bytes().clone()).unwrap(),
        _ => {
            let (_, pre, drop) = VARIANTS.iter().find(|v| v.0 == name).expect("known fixture");
            tokenizer_variant(&GgufFile::open(smollm2_path()).unwrap(), pre, drop)
        }
    }
}

pub fn tokenizer_for(name: &str) -> Tokenizer {
    Tokenizer::from_gguf(&gguf_for(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---- the gpt-oss vocabulary, built from tiktoken-rs's o200k data (kiln-synth) -----------------

#[allow(unused_imports)] // each test binary uses a different part
pub use kiln_synth::vocab::{byte_chars, byte_encode, harmony_specials};

/// The o200k_base token bytes by rank (0..199,998), from tiktoken-rs.
pub fn o200k_ranks() -> &'static Vec<Vec<u8>> {
    static R: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    R.get_or_init(|| kiln_synth::vocab::o200k_ranks().unwrap())
}

/// The tokenizer metadata of the gpt-oss GGUF as `kiln_synth` writes it (the test
/// `gptoss_vocabulary_equals_make_tiny_gptoss` checks that it is what `make_tiny_gptoss.py
/// --vocab harmony` writes from the gpt-oss `tokenizer.json`). No tensors.
pub fn gptoss_gguf_bytes() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "gpt-oss").unwrap();
        for (k, v) in kiln_synth::vocab::o200k_harmony_vocab().unwrap().metadata() {
            w.add(k, v).unwrap();
        }
        w.to_bytes().unwrap()
    })
}

/// The gpt-oss vocabulary as a Hugging Face `tokenizer.json` (kiln-synth writes it).
pub fn gptoss_tokenizer_json() -> String {
    kiln_synth::vocab::o200k_harmony_tokenizer_json().unwrap()
}

/// SmolLM2's vocabulary as the `tokenizer.json` SmolLM2 ships describes it (digits split one by
/// one, then GPT-2 byte-level), built from the GGUF's tokens, types and merges.
pub fn smollm2_tokenizer_json() -> String {
    use serde_json::json;
    let file = GgufFile::open(smollm2_path()).unwrap();
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap().to_vec_str().unwrap();
    let types = file.get_array("tokenizer.ggml.token_type").unwrap().to_vec::<i32>().unwrap();
    let merges = file.get_str_array("tokenizer.ggml.merges").unwrap().to_vec_str().unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == 3)
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
    .to_string()
}
