//! The `tokenizer.ggml.pre` names llama.cpp b11434 knows beyond the 0c1e570 set, against
//! llama.cpp b11434: SmolLM2's vocabulary under each name (a metadata-only GGUF built here,
//! `PRE_VARIANTS`), compared with `smollm2-pre-b11434.json` (`fixtures/gen_pre_cases.py` over
//! `tokenize_cases.cpp`; see fixtures/README.md): special ids, add_bos/add_eos, every token's
//! piece, for 102 texts the ids for (add_special, parse_special) = (false, false) and (true, true)
//! and the three detokenizations, and the ids of the ~110 KB mixed text.
//!
//! The same, against `smollm2-whitespace-model-b11434.json`, for the `whitespace` tokenizer model
//! (`tokenizer.ggml.model = "whitespace"`) under several pre-tokenizers (`WHITESPACE_MODEL_VARIANTS`).

mod common;

use common::*;
use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::Tokenizer;
use serde::Deserialize;

const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const BOS: &str = "tokenizer.ggml.bos_token_id";
const MERGES: &str = "tokenizer.ggml.merges";
const PRE: &str = "tokenizer.ggml.pre";
const LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";

/// (label, `tokenizer.ggml.pre`, keys left out). `add_bos_token` is left out everywhere, so each
/// name's default applies; `-no-bos` drops the BOS id (ChatGLM clears the default one) and
/// `-no-merges` the merges (llama.cpp accepts a Kimi K2 vocabulary without them).
const PRE_VARIANTS: &[(&str, &str, &[&str])] = &[
    ("deepseek-v3", "deepseek-v3", &[ADD_BOS]),
    ("hunyuan-dense", "hunyuan-dense", &[ADD_BOS]),
    ("joyai-llm", "joyai-llm", &[ADD_BOS]),
    ("hy_v4", "hy_v4", &[ADD_BOS]),
    ("kimi-k2", "kimi-k2", &[ADD_BOS]),
    ("kimi-k2-no-merges", "kimi-k2", &[ADD_BOS, MERGES]),
    ("glm4", "glm4", &[ADD_BOS]),
    ("glm5", "glm5", &[ADD_BOS]),
    ("chatglm-bpe", "chatglm-bpe", &[ADD_BOS]),
    ("chatglm-bpe-no-bos", "chatglm-bpe", &[ADD_BOS, BOS]),
    ("bloom", "bloom", &[ADD_BOS]),
    ("gpt3-finnish", "gpt3-finnish", &[ADD_BOS]),
    ("poro-chat", "poro-chat", &[ADD_BOS]),
    ("viking", "viking", &[ADD_BOS]),
    ("seed-coder", "seed-coder", &[ADD_BOS]),
    ("minicpm5", "minicpm5", &[ADD_BOS]),
    ("spark2_5", "spark2_5", &[ADD_BOS]),
    ("youtu", "youtu", &[ADD_BOS]),
    ("jais-2", "jais-2", &[ADD_BOS]),
    ("ufakzeka", "ufakzeka", &[ADD_BOS]),
    ("laguna", "laguna", &[ADD_BOS]),
    ("afmoe", "afmoe", &[ADD_BOS]),
    ("tiny_aya", "tiny_aya", &[ADD_BOS]),
    ("cohere2moe", "cohere2moe", &[ADD_BOS]),
    ("exaone-moe", "exaone-moe", &[ADD_BOS]),
    ("superbpe", "superbpe", &[ADD_BOS]),
    ("bailingmoe", "bailingmoe", &[ADD_BOS]),
    ("bailingmoe2", "bailingmoe2", &[ADD_BOS]),
    ("llada-moe", "llada-moe", &[ADD_BOS]),
    ("granite-embed-multi-97m", "granite-embed-multi-97m", &[ADD_BOS]),
    ("chameleon", "chameleon", &[ADD_BOS]),
    ("jina-v1-en", "jina-v1-en", &[ADD_BOS]),
    ("jina-v2-code", "jina-v2-code", &[ADD_BOS]),
    ("roberta-bpe", "roberta-bpe", &[ADD_BOS]),
    ("sarvam-moe", "sarvam-moe", &[ADD_BOS]),
    ("mmbert", "mmbert", &[ADD_BOS]),
    ("whitespace", "whitespace", &[ADD_BOS]),
    ("granite-embed-multi-311m", "granite-embed-multi-311m", &[ADD_BOS]),
];

/// The `whitespace` tokenizer model: (label, `tokenizer.ggml.pre`, keys left out,
/// `tokenizer.ggml.normalizer.lowercase` if set). `ws-whitespace` is what llama.cpp's converter
/// writes (pre `whitespace`, which turns lower-casing off); the others run the white-space split
/// in front of another pre-tokenizer: lower-casing by default, off or forced on by the key, a
/// missing pre (`default`), Llama 3's BOS default and whole-word lookup, Kimi K2 without merges,
/// and the SentencePiece-style `mmbert` and `gemma4` (spaces escaped as `▁` before the split, so
/// only other white-space cuts; `gemma4` forces BOS on).
const WHITESPACE_MODEL_VARIANTS: &[(&str, &str, &[&str], Option<bool>)] = &[
    ("ws-whitespace", "whitespace", &[ADD_BOS], None),
    ("ws-whitespace-lowercase", "whitespace", &[ADD_BOS], Some(true)),
    ("ws-no-pre", "", &[ADD_BOS, PRE], None),
    ("ws-gpt-2", "gpt-2", &[ADD_BOS], None),
    ("ws-gpt-2-cased", "gpt-2", &[ADD_BOS], Some(false)),
    ("ws-smollm", "smollm", &[], None),
    ("ws-llama-bpe", "llama-bpe", &[ADD_BOS], None),
    ("ws-kimi-k2-no-merges", "kimi-k2", &[ADD_BOS, MERGES], None),
    ("ws-mmbert", "mmbert", &[ADD_BOS], None),
    ("ws-gemma4", "gemma4", &[ADD_BOS], None),
];

#[derive(Deserialize)]
struct PreFixture {
    texts: Vec<String>,
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    variants: Vec<String>,
    n_vocab: usize,
    add_bos: bool,
    add_eos: bool,
    bos: i64,
    eos: i64,
    sep: i64,
    pad: i64,
    piece_digest_plain: String,
    piece_digest_special: String,
    /// Null where llama.cpp aborts (an assertion), which kiln does not copy.
    plain: Vec<Option<Vec<u32>>>,
    special: Vec<Option<Vec<u32>>>,
    detok_fnv: String,
    detok_plain_fnv: String,
    detok_special_remove_fnv: String,
    mixed: Option<MixedIds>,
}

#[derive(Deserialize)]
struct MixedIds {
    n_ids: usize,
    ids_fnv: String,
}

/// The SentencePiece-style names (spaces escaped as `▁`, no byte encoding): their test
/// vocabulary has SmolLM2's `Ġ` replaced by `▁` in tokens and merges.
const METASPACE: &[&str] = &["sarvam-moe", "mmbert", "granite-embed-multi-311m", "gemma4"];

/// A metadata-only GGUF with `src`'s `tokenizer.*` keys, `general.name` and
/// `general.architecture` (libllama b11434 wants one), `tokenizer.ggml.model` set to `model`,
/// `tokenizer.ggml.pre` to `pre`, `tokenizer.ggml.normalizer.lowercase` to `lowercase` if given,
/// and the keys in `drop` left out.
fn variant_bytes(src: &GgufFile, model: &str, pre: &str, drop: &[&str], lowercase: Option<bool>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        let wanted = key.starts_with("tokenizer.") || key == "general.name" || key == "general.architecture";
        if !wanted || drop.contains(&key) {
            continue;
        }
        if key == "tokenizer.ggml.model" {
            w.add(key, model).unwrap();
        } else if key == PRE {
            w.add(key, pre).unwrap();
        } else if METASPACE.contains(&pre) && (key == "tokenizer.ggml.tokens" || key == MERGES) {
            // SentencePiece-style: spaces are `▁` in the vocabulary, not GPT-2's `Ġ`.
            let texts: Vec<String> =
                src.get_str_array(key).unwrap().iter().map(|t| String::from_utf8_lossy(t).replace('Ġ', "▁")).collect();
            w.add(key, texts).unwrap();
        } else {
            w.add(key, value.to_value()).unwrap();
        }
    }
    if let Some(v) = lowercase {
        w.add(LOWERCASE, v).unwrap();
    }
    w.to_bytes().unwrap()
}

fn opt(id: i64) -> Option<u32> {
    u32::try_from(id).ok()
}

fn variant(label: &str) -> (&'static str, &'static [&'static str]) {
    let (_, pre, drop) = PRE_VARIANTS.iter().find(|v| v.0 == label).unwrap_or_else(|| panic!("{label}: not listed"));
    (pre, drop)
}

fn ids_fnv(ids: &[u32]) -> String {
    fnv(&ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>())
}

/// Compares one variant with its group; returns the mismatches.
fn check(label: &str, tok: &Tokenizer, g: &Group, texts: &[String], mixed: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut same = |what: &str, ours: String, theirs: String| {
        if ours != theirs {
            bad.push(format!("{label}: {what}: ours {ours}, llama.cpp {theirs}"));
        }
    };
    same("vocab size", tok.vocab_size().to_string(), g.n_vocab.to_string());
    same("add_bos/add_eos", format!("{:?}", (tok.add_bos(), tok.add_eos())), format!("{:?}", (g.add_bos, g.add_eos)));
    same(
        "bos/eos/sep/pad",
        format!("{:?}", (tok.bos_id(), tok.eos_id(), tok.sep_id(), tok.pad_id())),
        format!("{:?}", (opt(g.bos), opt(g.eos), opt(g.sep), opt(g.pad))),
    );
    for (special, want) in [(false, &g.piece_digest_plain), (true, &g.piece_digest_special)] {
        let mut data = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            let p = tok.token_to_piece(id, special).unwrap();
            data.extend_from_slice(&(p.len() as u32).to_le_bytes());
            data.extend_from_slice(&p);
        }
        same(&format!("pieces (special = {special})"), fnv(&data), want.clone());
    }
    let mut detok = [Vec::new(), Vec::new(), Vec::new()];
    for (i, text) in texts.iter().enumerate() {
        let Some(want_plain) = &g.plain[i] else { continue };
        let plain = tok.encode(text, false, false).unwrap();
        let special = tok.encode(text, true, true).unwrap();
        let want_special = g.special[i].as_ref().unwrap_or(want_plain);
        same(&format!("ids of {text:?}"), format!("{plain:?}"), format!("{want_plain:?}"));
        same(
            &format!("add_special+parse_special ids of {text:?}"),
            format!("{special:?}"),
            format!("{want_special:?}"),
        );
        for (k, (ids, remove, unparse)) in
            [(want_plain, false, true), (want_plain, false, false), (want_special, true, false)].into_iter().enumerate()
        {
            let out = tok.detokenize(ids, remove, unparse).unwrap();
            detok[k].extend_from_slice(&(out.len() as u32).to_le_bytes());
            detok[k].extend_from_slice(&out);
        }
    }
    for (k, want) in [&g.detok_fnv, &g.detok_plain_fnv, &g.detok_special_remove_fnv].into_iter().enumerate() {
        same(&format!("detokenizations {k} (digest)"), fnv(&detok[k]), want.clone());
    }
    if let Some(m) = &g.mixed {
        let ids = tok.encode(mixed, false, false).unwrap();
        same("mixed text ids", format!("{} {}", ids.len(), ids_fnv(&ids)), format!("{} {}", m.n_ids, m.ids_fnv));
    }
    bad
}

/// Compares every variant of the fixture `name` (built by `bytes` from SmolLM2's metadata) with
/// llama.cpp; every label of `labels` must be in it.
fn compare_fixture(name: &str, labels: &[&str], bytes: impl Fn(&GgufFile, &str) -> Vec<u8>) {
    let path = fixtures_dir().join(name);
    let fx: PreFixture = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON");
    let src = GgufFile::open(smollm2_path()).unwrap();
    let mixed = mixed();
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for g in &fx.groups {
        assert_eq!((g.plain.len(), g.special.len()), (fx.texts.len(), fx.texts.len()));
        for label in &g.variants {
            let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(bytes(&src, label)).unwrap())
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            failures.extend(check(label, &tok, g, &fx.texts, &mixed));
            seen.push(label.as_str());
        }
    }
    for label in labels {
        assert!(seen.contains(label), "{label}: not in the fixture");
    }
    assert!(failures.is_empty(), "{} mismatches with llama.cpp b11434:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn b11434_pre_tokenizers_match_llama_cpp() {
    let labels: Vec<&str> = PRE_VARIANTS.iter().map(|v| v.0).collect();
    compare_fixture("smollm2-pre-b11434.json", &labels, |src, label| {
        let (pre, drop) = variant(label);
        variant_bytes(src, "gpt2", pre, drop, None)
    });
}

fn whitespace_model_variant(label: &str) -> (&'static str, &'static [&'static str], Option<bool>) {
    let (_, pre, drop, lowercase) =
        WHITESPACE_MODEL_VARIANTS.iter().find(|v| v.0 == label).unwrap_or_else(|| panic!("{label}: not listed"));
    (pre, drop, *lowercase)
}

#[test]
fn whitespace_model_matches_llama_cpp() {
    let labels: Vec<&str> = WHITESPACE_MODEL_VARIANTS.iter().map(|v| v.0).collect();
    compare_fixture("smollm2-whitespace-model-b11434.json", &labels, |src, label| {
        let (pre, drop, lowercase) = whitespace_model_variant(label);
        variant_bytes(src, "whitespace", pre, drop, lowercase)
    });
}

/// What the comparison cannot show: the model name is kept, the kinds are the pre-tokenizer's,
/// and merges are required as for `gpt2` (llama.cpp: "cannot find tokenizer merges").
#[test]
fn whitespace_model_is_gpt2_with_a_white_space_split() {
    let src = GgufFile::open(smollm2_path()).unwrap();
    let build = |pre, drop, lowercase| {
        Tokenizer::from_gguf(&GgufFile::from_bytes(variant_bytes(&src, "whitespace", pre, drop, lowercase)).unwrap())
    };
    let tok = build("whitespace", &[], None).unwrap();
    assert_eq!((tok.model(), tok.pre()), ("whitespace", Some("whitespace")));
    assert_eq!(tok.kind(), kiln_tokenizer::TokenizerKind::Gemma4);
    let gpt2 = build("smollm", &[], None).unwrap();
    assert_eq!(gpt2.kind(), kiln_tokenizer::TokenizerKind::BytePairGpt2);
    // Lower-cased, white-space dropped (no `Ġ` tokens), special-token text still recognised.
    let ids = gpt2.encode("Hello  World<|im_end|>\n", false, true).unwrap();
    let plain = Tokenizer::from_gguf(&src).unwrap();
    let mut want = plain.encode("hello", false, false).unwrap();
    want.extend(plain.encode("world", false, false).unwrap());
    want.push(plain.token_id("<|im_end|>").unwrap());
    assert_eq!(ids, want);
    assert_eq!(gpt2.decode(&ids, true).unwrap(), "helloworld<|im_end|>");
    let e = build("smollm", &[MERGES], None).unwrap_err();
    assert!(e.to_string().contains(MERGES), "{e}");
}

/// Writes the variants for the fixture generator:
/// `KILN_PRE_VARIANT_DIR=/tmp/prevar cargo test -p kiln-tokenizer --test pre_b11434 -- --ignored`
/// (files `LABEL.gguf`).
#[test]
#[ignore = "writes the SmolLM2 pre-tokenizer variants for gen_pre_cases.py"]
fn write_pre_variants() {
    let dir = std::path::PathBuf::from(std::env::var("KILN_PRE_VARIANT_DIR").expect("KILN_PRE_VARIANT_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = GgufFile::open(smollm2_path()).unwrap();
    for (label, pre, drop) in PRE_VARIANTS {
        std::fs::write(dir.join(format!("{label}.gguf")), variant_bytes(&src, "gpt2", pre, drop, None)).unwrap();
    }
}

/// Writes the `whitespace`-model variants for gen_pre_cases.py:
/// `KILN_WS_MODEL_VARIANT_DIR=/tmp/wsvar cargo test -p kiln-tokenizer --test pre_b11434 -- --ignored`
/// (files `LABEL.gguf`).
#[test]
#[ignore = "writes the SmolLM2 whitespace-model variants for gen_pre_cases.py"]
fn write_whitespace_model_variants() {
    let dir = std::path::PathBuf::from(std::env::var("KILN_WS_MODEL_VARIANT_DIR").expect("KILN_WS_MODEL_VARIANT_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = GgufFile::open(smollm2_path()).unwrap();
    for (label, pre, drop, lowercase) in WHITESPACE_MODEL_VARIANTS {
        let bytes = variant_bytes(&src, "whitespace", pre, drop, *lowercase);
        std::fs::write(dir.join(format!("{label}.gguf")), bytes).unwrap();
    }
}
