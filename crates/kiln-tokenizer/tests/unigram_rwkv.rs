//! `tokenizer.ggml.model` = `t5` (SentencePiece unigram, llama.cpp's UGM) and `rwkv` against
//! llama.cpp b11434: the fixtures `ugm-*.json` / `rwkv-*.json` hold what libllama returned
//! (`fixtures/tokenize_cases.cpp`, `fixtures/gen_vocab_cases.py`; see fixtures/README.md) for
//! the strings of llama.cpp's tokenizer suite, corpus.json and a few more.
//!
//! * UGM: the suite's `ggml-vocab-nomic-bert-moe.gguf` (250,048 tokens, a precompiled charsmap,
//!   `remove_extra_whitespaces`), fetched by `kiln_testkit::llama_vocab_suite`.
//! * RWKV: a synthetic vocabulary-only GGUF built here (`rwkv_vocab_bytes`), the same bytes the
//!   fixture was made from (the ignored test `write_rwkv_vocab_gguf` writes them for the oracle).

mod common;

use common::{fnv, unhex};
use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::{Tokenizer, TokenizerKind};
use serde_json::Value;

fn opt(v: &Value) -> Option<u32> {
    v.as_i64().and_then(|i| u32::try_from(i).ok())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Compares `tok` with fixture `name`; returns the number of texts.
fn check(name: &str, tok: &Tokenizer) -> usize {
    let path = common::fixtures_dir().join(name);
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON");
    assert_eq!(tok.vocab_size() as u64, fx["n_vocab"].as_u64().unwrap(), "{name}: vocab size");
    assert_eq!(tok.add_bos(), fx["add_bos"].as_bool().unwrap(), "{name}: add_bos");
    assert_eq!(tok.add_eos(), fx["add_eos"].as_bool().unwrap(), "{name}: add_eos");
    assert_eq!(tok.bos_id(), opt(&fx["bos"]), "{name}: bos");
    assert_eq!(tok.eos_id(), opt(&fx["eos"]), "{name}: eos");
    assert_eq!(tok.sep_id(), opt(&fx["sep"]), "{name}: sep");
    assert_eq!(tok.pad_id(), opt(&fx["pad"]), "{name}: pad");
    for (special, key) in [(false, "piece_digest_plain"), (true, "piece_digest_special")] {
        let mut data = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            let p = tok.token_to_piece(id, special).unwrap();
            data.extend_from_slice(&(p.len() as u32).to_le_bytes());
            data.extend_from_slice(&p);
        }
        assert_eq!(fnv(&data), fx[key].as_str().unwrap(), "{name}: pieces (special = {special})");
    }
    let cases = fx["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let plain = tok.encode(text, false, false).unwrap();
        let special = tok.encode(text, true, true).unwrap();
        let mut bad = Vec::new();
        if plain != ids(&case["plain"]) {
            bad.push(format!("plain ids {plain:?}, llama.cpp {:?}", ids(&case["plain"])));
        }
        if special != ids(&case["special"]) {
            bad.push(format!("add_special+parse_special ids {special:?}, llama.cpp {:?}", ids(&case["special"])));
        }
        let want_plain = ids(&case["plain"]);
        for (key, ids, remove, unparse) in [
            ("detok", &want_plain, false, true),
            ("detok_plain", &want_plain, false, false),
            ("detok_special_remove", &ids(&case["special"]), true, false),
        ] {
            let got = tok.detokenize(ids, remove, unparse).unwrap();
            let want = unhex(case[key].as_str().unwrap());
            if got != want {
                bad.push(format!(
                    "{key}: {:?}, llama.cpp {:?}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                ));
            }
        }
        if !bad.is_empty() {
            failures.push(format!("{text:?}:\n    {}", bad.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} texts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

/// nomic-bert-moe's vocabulary with changed options, for the normalizer's other branches:
/// `userdef`: `llo`, `ell`, `33`, `工作`, `<`, `...` and `▁world` user-defined, and
/// `remove_extra_whitespaces` off; `noprefix`: `add_space_prefix` and `remove_extra_whitespaces`
/// off.
const UGM_VARIANTS: &[&str] = &["userdef", "noprefix"];

fn nomic_variant_bytes(variant: &str) -> Vec<u8> {
    let src = GgufFile::open(kiln_testkit::llama_vocab_suite().join("ggml-vocab-nomic-bert-moe.gguf")).unwrap();
    let user_defined: &[&str] = match variant {
        "userdef" => &["llo", "ell", "33", "工作", "<", "...", "\u{2581}world"],
        "noprefix" => &[],
        _ => panic!("unknown variant {variant}"),
    };
    let tokens: Vec<Vec<u8>> = src.get_str_array("tokenizer.ggml.tokens").unwrap().iter().map(<[u8]>::to_vec).collect();
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        match key {
            "tokenizer.ggml.token_type" => {
                let mut types = src.get_array(key).unwrap().to_vec::<i32>().unwrap();
                for t in user_defined {
                    let id = tokens.iter().position(|x| x == t.as_bytes()).unwrap_or_else(|| panic!("no token {t}"));
                    types[id] = 4;
                }
                w.add(key, types).unwrap();
            }
            "tokenizer.ggml.remove_extra_whitespaces" => w.add(key, false).unwrap(),
            "tokenizer.ggml.add_space_prefix" => w.add(key, variant != "noprefix").unwrap(),
            _ => w.add(key, value.to_value()).unwrap(),
        }
    }
    w.to_bytes().unwrap()
}

#[test]
fn ugm_nomic_bert_moe_variants_match_llama_cpp() {
    for variant in UGM_VARIANTS {
        let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(nomic_variant_bytes(variant)).unwrap()).unwrap();
        let n = check(&format!("ugm-nomic-bert-moe-{variant}.json"), &tok);
        eprintln!("nomic-bert-moe ({variant}): {n} texts agree with llama.cpp b11434");
    }
}

/// Writes the variants for the oracle:
/// `KILN_UGM_VARIANT_DIR=/tmp cargo test -p kiln-tokenizer --test unigram_rwkv -- --ignored`
/// (files `nomic-bert-moe-{variant}.gguf`).
#[test]
#[ignore = "writes the nomic-bert-moe variants for the fixture generator"]
fn write_nomic_variants() {
    let dir = std::path::PathBuf::from(std::env::var("KILN_UGM_VARIANT_DIR").expect("KILN_UGM_VARIANT_DIR"));
    for variant in UGM_VARIANTS {
        std::fs::write(dir.join(format!("nomic-bert-moe-{variant}.gguf")), nomic_variant_bytes(variant)).unwrap();
    }
}

#[test]
fn ugm_nomic_bert_moe_matches_llama_cpp() {
    let path = kiln_testkit::llama_vocab_suite().join("ggml-vocab-nomic-bert-moe.gguf");
    let tok = Tokenizer::from_gguf_path(&path).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Unigram);
    assert_eq!(tok.model(), "t5");
    let n = check("ugm-nomic-bert-moe.json", &tok);
    eprintln!("nomic-bert-moe (t5): {n} texts agree with llama.cpp b11434");
}

/// Python's `repr(bytes)[2:-1]`, the notation llama.cpp's converter writes RWKV tokens in
/// (`\t`, `\n`, `\r`, `\\`, `\xNN` for other bytes outside 0x20..0x7E; `'` escaped unless the
/// token has a `'` and no `"`).
fn rwkv_escape(bytes: &[u8]) -> String {
    let escape_quote = !bytes.contains(&b'\'') || bytes.contains(&b'"');
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            b'\'' if escape_quote => s.push_str("\\'"),
            0x20..=0x7E => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// A synthetic RWKV vocabulary (metadata only, as llama.cpp's converter lays one out): `<s>`
/// (control; BOS and EOS), `<unk>` (unknown, `unknown_token_id`), every single byte except `~`
/// and 0xF0 (so `~` and the first byte of a 4-byte character are unknown: no token starts with
/// them), ~150 multi-byte tokens (words with and without a leading space, white-space runs, CJK,
/// Cyrillic, Latin-1 letters, digits, punctuation), a user-defined `<|user|>`, one token written
/// with upper-case hex (`x\xC3y`, which llama.cpp's unescaper reads as `x3y`), and 40 unused
/// `[PAD…]` tokens. `add_bos_token` is set (llama.cpp ignores it for RWKV).
fn rwkv_vocab_bytes() -> Vec<u8> {
    let mut tokens: Vec<String> = vec!["<s>".into(), "<unk>".into()];
    let mut types: Vec<i32> = vec![3, 2];
    for b in 0..=255u8 {
        if b == b'~' || b == 0xF0 {
            continue;
        }
        tokens.push(rwkv_escape(&[b]));
        types.push(1);
    }
    let words = [
        " the",
        " of",
        " and",
        " to",
        " a",
        " in",
        " is",
        " that",
        " for",
        " it",
        " with",
        " as",
        " was",
        " on",
        "the",
        "The",
        " The",
        "he",
        "ll",
        "llo",
        "Hello",
        " Hello",
        " hello",
        "hello",
        " world",
        "world",
        " World",
        "ing",
        "ed",
        "er",
        "es",
        " are",
        " you",
        " How",
        " y",
        "'all",
        "'s",
        "'t",
        "'re",
        "'ve",
        "'m",
        "'ll",
        "'d",
        " (",
        ")",
        "))",
        " =",
        " ==",
        "==",
        "->",
        "::",
        "//",
        "/*",
        "*/",
        " {",
        "}",
        "{}",
        " }",
        "];",
        "();",
        ".cpp",
        " this",
        " cpp",
        "apple",
        " apple",
        " normal",
        " multiple",
        " only",
        " emoji",
        " own",
        " token",
        " has",
        " its",
        " that",
        "concatenated",
        " emojis",
        "3",
        "33",
        "333",
        "3333",
        "1314",
        "151",
        "000",
        "  ",
        "   ",
        "    ",
        "        ",
        "\n",
        "\n\n",
        "\n\n\n",
        "\t",
        "\t\t",
        "\r\n",
        " \n",
        "\n ",
        "\n    ",
        "我",
        "想",
        "在",
        "工作",
        "天",
        "～",
        "你好",
        "世界",
        "нещо",
        " на",
        "Бъ",
        "лг",
        "ар",
        "ски",
        "е",
        "ни",
        "é",
        "è",
        "ü",
        "ö",
        "ä",
        "ß",
        "Ä",
        "pfel",
        "ñ",
        "ç",
        "½",
        "é ",
        " é",
        "caf",
        "café",
        "naïve",
        "Ω",
        "μ",
        "ℏ",
        "∑",
        "→",
        "—",
        "–",
        "“",
        "”",
        "‘",
        "’",
        "…",
        "·",
        "•",
        "™",
        "©",
        "€",
        "£",
        "¥",
        " ¥",
        "ابت",
        "שלום",
        "नमस्ते",
        "क",
        "्",
        "ि",
        "ा",
        "\u{301}",
        "e\u{301}",
        "\u{200d}",
        "\u{fe0f}",
        "\\",
        "\\n",
        "\\\\",
        "'",
        "\"",
        "\"'",
        "'\"",
        "<s>x",
        "<unk",
        "[",
        "]",
        "[PAD",
        "<|",
        "|>",
        "<|user",
    ];
    for w in words {
        // llama.cpp asserts that token texts are distinct (here: " that", and `'`, `"`, `\` as bytes).
        let text = rwkv_escape(w.as_bytes());
        if !tokens.contains(&text) {
            tokens.push(text);
            types.push(1);
        }
    }
    tokens.push("<|user|>".into());
    types.push(4);
    tokens.push("x\\xC3y".into());
    types.push(1);
    let n = tokens.len();
    for i in n..n + 40 {
        tokens.push(format!("[PAD{i}]"));
        types.push(5);
    }
    let mut w = GgufWriter::new();
    w.add("general.architecture", "rwkv6").unwrap();
    w.add("general.name", "kiln synthetic rwkv vocabulary").unwrap();
    w.add("tokenizer.ggml.model", "rwkv").unwrap();
    w.add("tokenizer.ggml.tokens", tokens).unwrap();
    w.add("tokenizer.ggml.token_type", types).unwrap();
    w.add("tokenizer.ggml.bos_token_id", 0u32).unwrap();
    w.add("tokenizer.ggml.eos_token_id", 0u32).unwrap();
    w.add("tokenizer.ggml.unknown_token_id", 1u32).unwrap();
    w.add("tokenizer.ggml.add_bos_token", true).unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn rwkv_synthetic_vocabulary_matches_llama_cpp() {
    let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(rwkv_vocab_bytes()).unwrap()).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Rwkv);
    let n = check("rwkv-synthetic.json", &tok);
    eprintln!("synthetic rwkv vocabulary: {n} texts agree with llama.cpp b11434");
}

/// Writes the synthetic RWKV vocabulary for the oracle:
/// `KILN_RWKV_GGUF_OUT=/tmp/rwkv-synthetic.gguf cargo test -p kiln-tokenizer --test unigram_rwkv -- --ignored`.
#[test]
#[ignore = "writes the synthetic RWKV GGUF for the fixture generator"]
fn write_rwkv_vocab_gguf() {
    let out = std::env::var("KILN_RWKV_GGUF_OUT").expect("KILN_RWKV_GGUF_OUT");
    std::fs::write(&out, rwkv_vocab_bytes()).unwrap();
}
