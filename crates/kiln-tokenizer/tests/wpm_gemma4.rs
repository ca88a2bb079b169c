//! WordPiece (`bert`) and Gemma 4 (`gemma4`): a hand-worked vocabulary built with `GgufWriter`, and
//! decoding of llama.cpp b11434's `bert-bge` and `gemma-4` suite vocabularies (fetched by
//! `kiln_testkit::llama_vocab_suite`) by llama.cpp's `llama_detokenize` rules. Their ids are
//! checked string by string in `llama_vocab_suite.rs`.

use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::{Detokenizer, Tokenizer, TokenizerKind};

fn open_suite(name: &str) -> Tokenizer {
    let path = kiln_testkit::llama_vocab_suite().join(format!("ggml-vocab-{name}.gguf"));
    Tokenizer::from_gguf_path(path).unwrap()
}

/// A BERT-style vocabulary as the GGUF converter writes it (word starts with `▁`, `##` pieces
/// bare), with no special-id metadata: llama.cpp's defaults (BOS 101, UNK 100, SEP 102, PAD 0,
/// MASK 103) apply, so the vocabulary has 104 entries.
fn tiny_bert() -> Tokenizer {
    let mut tokens: Vec<String> = (0..104).map(|i| format!("[unused{i}]")).collect();
    tokens[0] = "[PAD]".into();
    tokens[100] = "[UNK]".into();
    tokens[101] = "[CLS]".into();
    tokens[102] = "[SEP]".into();
    tokens[103] = "[MASK]".into();
    for t in ["▁hello", "▁,", "▁world", "▁!", "▁token", "ization", "▁'", "▁s"] {
        tokens.push(t.into()); // 104..=111
    }
    let mut types = vec![1i32; tokens.len()];
    for id in [0, 100, 101, 102, 103] {
        types[id] = 3;
    }
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", "bert").unwrap();
    w.add("tokenizer.ggml.tokens", tokens).unwrap();
    w.add("tokenizer.ggml.token_type", types).unwrap();
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()).unwrap()
}

#[test]
fn bert_defaults_special_tokens_and_decoding() {
    let tok = tiny_bert();
    assert_eq!(tok.kind(), TokenizerKind::WordPiece);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id(), tok.sep_id(), tok.pad_id()),
        (Some(101), None, Some(100), Some(102), Some(0))
    );
    assert!(tok.add_bos() && !tok.add_eos());
    // add_special: [CLS] … [SEP].
    let ids = tok.encode("Hello, World!", true, false).unwrap();
    assert_eq!(ids, [101, 104, 105, 106, 107, 102]);
    assert_eq!(tok.encode("Hello, World!", false, false).unwrap(), [104, 105, 106, 107]);
    // Continuation pieces; an unknown word is [UNK].
    assert_eq!(tok.encode("tokenization xyz", false, false).unwrap(), [108, 109, 100]);
    // [SEP] in text is a control token: parsed only with parse_special.
    assert_eq!(tok.encode("hello[SEP]", false, true).unwrap(), [104, 102]);
    // llama_detokenize: "▁" is a space, so the text keeps a leading space (WPM has no space
    // prefix to remove); then BPE-style clean-up of " ," / " !" / " 's".
    assert_eq!(tok.decode(&ids, false).unwrap(), " hello, world!");
    assert_eq!(tok.decode(&ids, true).unwrap(), "[CLS] hello, world![SEP]");
    // remove_special drops the leading [CLS] (add_bos) but not [SEP] (add_eos is false).
    assert_eq!(tok.detokenize(&ids, true, true).unwrap(), b" hello, world![SEP]");
    assert_eq!(tok.decode(&[108, 109, 110, 111], false).unwrap(), " tokenization's");
    let mut d = Detokenizer::with_special(&tok, true);
    let mut s = String::new();
    for &id in &ids {
        s += &d.push(id).unwrap();
    }
    s += &d.flush();
    assert_eq!(s, "[CLS] hello, world![SEP]");
}

#[test]
fn bert_bge_and_gemma_4_decode_like_llama_cpp() {
    {
        let tok = open_suite("bert-bge");
        assert_eq!(tok.kind(), TokenizerKind::WordPiece);
        let ids = tok.encode("Hello, World! Tokenization", true, false).unwrap();
        assert_eq!((ids[0], *ids.last().unwrap()), (101, 102));
        assert_eq!(tok.decode(&ids, false).unwrap(), " hello, world! tokenization");
        assert_eq!(tok.decode(&ids, true).unwrap(), "[CLS] hello, world! tokenization[SEP]");
    }
    {
        let tok = open_suite("gemma-4");
        assert_eq!(tok.kind(), TokenizerKind::Gemma4);
        assert_eq!(tok.bos_id(), Some(2));
        assert!(tok.add_bos());
        let ids = tok.encode("Hello world\n\n  x", true, false).unwrap();
        assert_eq!(ids[0], 2);
        assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world\n\n  x");
        assert_eq!(tok.decode(&ids, true).unwrap(), "<bos>Hello world\n\n  x");
        // <turn|> ends a turn; </s> is a normal token in Gemma 4.
        assert!(tok.is_eog(tok.token_id("<turn|>").unwrap()));
        // llama.cpp cleans up tokenization spaces for this vocabulary too.
        let ids = tok.encode("a , b", false, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), "a, b");
        // Byte fallback round-trips through the streaming detokenizer.
        let text = "🦙 \u{10FFFF} é";
        let ids = tok.encode(text, false, false).unwrap();
        let mut d = Detokenizer::new(&tok);
        let mut s = String::new();
        for &id in &ids {
            s += &d.push(id).unwrap();
        }
        s += &d.flush();
        assert_eq!(s, text);
    }
}
