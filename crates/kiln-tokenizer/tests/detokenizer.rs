//! The streaming detokenizer: token by token must equal all at once (`decode`, itself checked
//! against llama.cpp's `llama_detokenize` in llama_cpp.rs), for each vocabulary, over the corpus
//! and the mixed text; no U+FFFD where the whole text has none; hand-made split characters.

mod common;

use common::*;
use kiln_tokenizer::{Detokenizer, Tokenizer};

/// Streams `ids`; returns the chunks (the last one from `flush`).
fn stream(tok: &Tokenizer, ids: &[u32], special: bool) -> Vec<String> {
    let mut d = Detokenizer::with_special(tok, special);
    let mut chunks: Vec<String> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    chunks.push(d.flush());
    chunks
}

fn check_vocabulary(name: &str) {
    let tok = tokenizer_for(name);
    let mut texts: Vec<String> = corpus().into_iter().map(|c| c.text).collect();
    texts.push(mixed());
    let mut split_chars = 0; // pieces that are not valid UTF-8 alone
    for text in &texts {
        let ids = tok.encode(text, true, true).unwrap();
        for special in [false, true] {
            let whole = tok.decode(&ids, special).unwrap();
            let chunks = stream(&tok, &ids, special);
            assert_eq!(chunks.concat(), whole, "{name}: streamed != decoded for {:?}", &text[..text.len().min(80)]);
            if !whole.contains('\u{FFFD}') {
                for c in &chunks {
                    assert!(!c.contains('\u{FFFD}'), "{name}: U+FFFD in a chunk of {:?}", &text[..text.len().min(80)]);
                }
            }
        }
        split_chars +=
            ids.iter().filter(|&&id| std::str::from_utf8(&tok.token_to_piece(id, false).unwrap()).is_err()).count();
    }
    // The texts do split characters across tokens, so the test exercises the holding back.
    assert!(split_chars > 50, "{name}: only {split_chars} partial-UTF-8 pieces");
}

#[test]
fn smollm2_stream_equals_decode() {
    check_vocabulary("smollm2");
}

#[test]
fn gemma3_stream_equals_decode() {
    check_vocabulary("gemma3");
}

#[test]
fn gptoss_stream_equals_decode() {
    check_vocabulary("gptoss");
}

#[test]
fn clean_spaces_vocabulary_stream_equals_decode() {
    // pre "default" cleans up tokenization spaces on decode; streaming must do the same.
    let tok = tokenizer_for("smollm2-pre-default");
    let mut texts: Vec<String> = corpus().into_iter().map(|c| c.text).collect();
    texts.push(mixed());
    let mut cleaned = 0;
    for text in &texts {
        let ids = tok.encode(text, false, true).unwrap();
        let whole = tok.decode(&ids, false).unwrap();
        assert_eq!(stream(&tok, &ids, false).concat(), whole, "{:?}", &text[..text.len().min(80)]);
        cleaned += usize::from(whole != *text);
    }
    assert!(cleaned > 3, "clean-up changed only {cleaned} texts");
}

#[test]
fn emoji_split_across_byte_tokens_comes_out_whole() {
    let tok = tokenizer_for("gptoss");
    // 🧬 (U+1F9EC) is not one token in o200k: its four bytes arrive in pieces.
    let ids = tok.encode("🧬🧬", false, false).unwrap();
    let pieces: Vec<Vec<u8>> = ids.iter().map(|&id| tok.token_to_piece(id, false).unwrap()).collect();
    assert!(pieces.iter().any(|p| std::str::from_utf8(p).is_err()), "{pieces:?}");
    let chunks = stream(&tok, &ids, false);
    assert_eq!(chunks.concat(), "🧬🧬");
    assert!(chunks.iter().all(|c| c.is_empty() || c.chars().all(|ch| ch == '🧬')), "{chunks:?}");
    // A naive per-token lossy decode would have produced U+FFFD.
    let naive: String = pieces.iter().map(|p| String::from_utf8_lossy(p)).collect();
    assert!(naive.contains('\u{FFFD}'));
}

#[test]
fn sentencepiece_byte_fallback_is_held_until_complete() {
    let tok = tokenizer_for("gemma3");
    let byte = |b: u8| tok.token_id(&format!("<0x{b:02X}>")).unwrap();
    // 𓀀 = F0 93 80 80, as four byte tokens.
    let ids = [byte(0xF0), byte(0x93), byte(0x80), byte(0x80)];
    let mut d = Detokenizer::new(&tok);
    assert_eq!(d.push(ids[0]).unwrap(), "");
    assert_eq!(d.push(ids[1]).unwrap(), "");
    assert_eq!(d.push(ids[2]).unwrap(), "");
    assert_eq!(d.pending_bytes(), 3);
    assert_eq!(d.push(ids[3]).unwrap(), "𓀀");
    assert_eq!(d.flush(), "");
    // An incomplete character at the end becomes U+FFFD only at flush.
    assert_eq!(d.push(byte(0xE2)).unwrap(), "");
    assert_eq!(d.push(byte(0x82)).unwrap(), "");
    assert_eq!(d.flush(), "\u{FFFD}");
    // A byte that can never start a character is replaced at once, and text goes on.
    assert_eq!(d.push(byte(0xFF)).unwrap(), "\u{FFFD}");
    let a = tok.encode("a", false, false).unwrap();
    assert_eq!(d.push(a[0]).unwrap(), "a");
    // An id outside the vocabulary is an error, and the stream is intact.
    assert!(d.push(u32::MAX).is_err());
    assert_eq!(d.push(byte(0x41)).unwrap(), "A");
}

#[test]
fn first_sentencepiece_space_is_dropped_when_streaming_too() {
    // Gemma's add_space_prefix is false; SmolLM2 is byte-level: check the rule on a vocabulary
    // where it is on, built from Gemma's with add_space_prefix = true.
    let src = kiln_gguf::GgufFile::open(gemma3_path()).unwrap();
    let file = tokenizer_variant(&src, "default", &["tokenizer.ggml.add_space_prefix"]);
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(tok.add_space_prefix());
    let ids = tok.encode("Hello world", false, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world");
    assert_eq!(stream(&tok, &ids, false).concat(), "Hello world");
}
