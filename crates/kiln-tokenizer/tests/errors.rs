//! Bad or unsupported metadata is an error naming the problem; nothing panics, whatever the
//! metadata or the ids.

mod common;

use kiln_gguf::{GgufFile, GgufWriter, Value};
use kiln_tokenizer::{Detokenizer, Tokenizer, TokenizerError};

fn build(entries: &[(&str, Value)]) -> Result<Tokenizer, TokenizerError> {
    let mut w = GgufWriter::new();
    for (k, v) in entries {
        w.add(*k, v.clone()).unwrap();
    }
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap())
}

fn byte_tokens() -> Vec<String> {
    common::byte_chars().iter().map(|c| c.to_string()).collect()
}

#[test]
fn unsupported_models_are_named() {
    for model in ["none", "no_vocab", "plamo2", "whatever"] {
        let e =
            build(&[("tokenizer.ggml.model", model.into()), ("tokenizer.ggml.tokens", vec!["a"].into())]).unwrap_err();
        assert!(matches!(&e, TokenizerError::Unsupported(m) if m == model), "{e}");
        assert!(e.to_string().contains(model), "{e}");
    }
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let e = build(&[
        ("tokenizer.ggml.model", "gpt2".into()),
        ("tokenizer.ggml.pre", "my-new-pre".into()),
        ("tokenizer.ggml.tokens", byte_tokens().into()),
        ("tokenizer.ggml.merges", Vec::<String>::new().into()),
    ])
    .unwrap_err();
    assert!(matches!(&e, TokenizerError::UnsupportedPre { name } if name == "my-new-pre"), "{e}");
    assert!(e.to_string().contains("\"my-new-pre\"") && e.to_string().contains("gpt-4o"), "{e}");
}

#[test]
fn inconsistent_metadata_is_an_error() {
    let gpt2 = |extra: Vec<(&'static str, Value)>| {
        let mut v: Vec<(&str, Value)> =
            vec![("tokenizer.ggml.model", "gpt2".into()), ("tokenizer.ggml.tokens", byte_tokens().into())];
        v.extend(extra);
        build(&v)
    };
    // No merges.
    let e = gpt2(vec![]).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.merges"), "{e}");
    // Too few token types.
    let e = gpt2(vec![
        ("tokenizer.ggml.merges", Vec::<String>::new().into()),
        ("tokenizer.ggml.token_type", vec![1i32; 3].into()),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("token_type has 3 entries for 256 tokens"), "{e}");
    // Scores of the wrong type.
    let e = gpt2(vec![
        ("tokenizer.ggml.merges", Vec::<String>::new().into()),
        ("tokenizer.ggml.scores", vec!["x"; 256].into()),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("scores"), "{e}");
    // Tokens of the wrong type.
    let e = build(&[("tokenizer.ggml.model", "llama".into()), ("tokenizer.ggml.tokens", 5u32.into())]).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
    // No tokens at all.
    let e = build(&[("tokenizer.ggml.model", "llama".into())]).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
    // BOS asked for but absent (one token: the SentencePiece default BOS 1 is out of range).
    let e =
        build(&[("tokenizer.ggml.model", "llama".into()), ("tokenizer.ggml.tokens", vec!["a"].into())]).unwrap_err();
    assert!(e.to_string().contains("BOS"), "{e}");
}

#[test]
fn odd_but_valid_metadata_does_not_panic() {
    // Unknown token types, out-of-range special ids, malformed merges, empty and duplicate
    // tokens, a vocabulary without byte tokens: built without panicking, and every input encodes.
    let mut tokens = byte_tokens();
    tokens.extend(["", "ab", "ab", "<0xZZ>", "<|x|>"].map(String::from));
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 1] = 3;
    types[n - 2] = 6;
    types[n - 3] = 42;
    let tok = build(&[
        ("tokenizer.ggml.model", "gpt2".into()),
        ("tokenizer.ggml.pre", "".into()),
        ("tokenizer.ggml.tokens", tokens.into()),
        ("tokenizer.ggml.token_type", types.into()),
        ("tokenizer.ggml.merges", vec!["a b", "nospace", " x", "a ", "zz yy", "ab ab"].into()),
        ("tokenizer.ggml.bos_token_id", 1_000_000u32.into()),
        ("tokenizer.ggml.eos_token_id", (n as u32 - 1).into()),
    ])
    .unwrap();
    assert_eq!(tok.pre(), Some(""));
    assert_eq!(tok.eos_id(), Some(n as u32 - 1));
    assert_eq!(tok.bos_id(), Some(11), "an out-of-range BOS keeps the BPE default");
    assert_eq!(tok.token_text(256), Some(&b"[EMPTY_256]"[..]));
    for text in ["", "abab ab", "<|x|>é😀\u{0}\u{10FFFF}", "\r\n\t  "] {
        let ids = tok.encode(text, true, true).unwrap();
        let _ = tok.decode(&ids, true).unwrap();
    }
    assert_eq!(tok.token_to_piece(n as u32 - 2, true).unwrap(), [0]);
    // Ids out of range are errors everywhere.
    for bad in [n as u32, u32::MAX] {
        assert!(matches!(tok.token_to_piece(bad, true), Err(TokenizerError::IdOutOfRange { .. })));
        assert!(tok.decode(&[0, bad], false).is_err());
        assert!(Detokenizer::new(&tok).push(bad).is_err());
        assert_eq!(tok.token_text(bad), None);
        assert_eq!(tok.token_attr(bad), None);
    }

    // A SentencePiece vocabulary without byte tokens: unknown characters are dropped.
    let spm = build(&[
        ("tokenizer.ggml.model", "llama".into()),
        ("tokenizer.ggml.tokens", vec!["<unk>", "<s>", "</s>", "\u{2581}a", "b"].into()),
        ("tokenizer.ggml.scores", vec![0.0f32, 0.0, 0.0, -1.0, f32::NAN].into()),
    ])
    .unwrap();
    assert_eq!(spm.encode("a b é", true, false).unwrap(), [1, 3, 4]);
}

#[test]
fn random_metadata_never_panics() {
    // Deterministic pseudo-random vocabularies and texts.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = ["a", "b", "Ġ", "▁", " ", "<", "|", ">", "\n", "é", "😀", "<0x41>", "'s", "1"];
    for round in 0..200 {
        let n = 1 + (next() % 40) as usize;
        let tokens: Vec<String> = (0..n)
            .map(|_| (0..(next() % 4)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect())
            .collect();
        let types: Vec<i32> = (0..n).map(|_| (next() % 8) as i32 - 1).collect();
        let merges: Vec<String> = (0..(next() % 20))
            .map(|_| format!("{} {}", tokens[(next() % n as u64) as usize], tokens[(next() % n as u64) as usize]))
            .collect();
        let scores: Vec<f32> = (0..n).map(|_| (next() % 100) as f32 / -10.0).collect();
        let model = if round % 2 == 0 { "gpt2" } else { "llama" };
        let pre = ["gpt-4o", "smollm", "llama-bpe", "qwen2", "default", "tekken"][(next() % 6) as usize];
        let built = build(&[
            ("tokenizer.ggml.model", model.into()),
            ("tokenizer.ggml.pre", pre.into()),
            ("tokenizer.ggml.tokens", tokens.clone().into()),
            ("tokenizer.ggml.token_type", types.into()),
            ("tokenizer.ggml.scores", scores.into()),
            ("tokenizer.ggml.merges", merges.into()),
            ("tokenizer.ggml.bos_token_id", ((next() % 50) as u32).into()),
            ("tokenizer.ggml.add_bos_token", (next() % 2 == 0).into()),
        ]);
        let Ok(tok) = built else { continue };
        let text: String = (0..(next() % 30)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        for (add, parse) in [(false, false), (true, true)] {
            let ids = tok.encode(&text, add, parse).unwrap();
            let _ = tok.decode(&ids, parse).unwrap();
            let mut d = Detokenizer::new(&tok);
            for &id in &ids {
                d.push(id).unwrap();
            }
            d.flush();
        }
    }
}
