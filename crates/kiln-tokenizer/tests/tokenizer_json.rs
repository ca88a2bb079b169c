//! `Tokenizer::from_tokenizer_json` (Hugging Face `tokenizers`) on SmolLM2's vocabulary, written
//! as SmolLM2's `tokenizer.json` describes it (digits split one by one, then GPT-2 byte-level),
//! against llama.cpp's ids for the same vocabulary (the smollm2 fixture).

mod common;

use common::*;
use kiln_tokenizer::{Tokenizer, TokenizerKind};
use serde_json::json;

#[test]
fn smollm2_tokenizer_json_matches_llama_cpp() {
    let config = json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": "{{ 'x' }}"});
    let tok = Tokenizer::from_tokenizer_json_with_config(smollm2_tokenizer_json(), config.to_string()).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::HuggingFace);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert_eq!(tok.chat_template(), Some("{{ 'x' }}"));
    let fx = fixture("smollm2");
    assert_eq!(tok.eog_ids(), fx.eog.as_slice());
    let mut compared = 0;
    for (case, entry) in fx.cases.iter().zip(corpus()) {
        for (mode, parse) in [("plain", false), ("parse_special", true)] {
            let ids = tok.encode(&entry.text, false, parse).unwrap();
            assert_eq!(ids, case.ids[mode], "case {:?} ({mode})", case.name);
            compared += 1;
        }
        let ids = &case.ids["parse_special"];
        assert_eq!(
            tok.decode_bytes(ids, true).unwrap(),
            unhex(&case.detokenize["keep_unparse"]),
            "decode of case {:?}",
            case.name
        );
    }
    assert_eq!(compared, 2 * fx.cases.len());
    let mixed = mixed();
    assert_eq!(tok.encode(&mixed, false, false).unwrap(), *fx.mixed.ids.as_ref().unwrap());
}

#[test]
fn tokenizer_json_errors_are_values() {
    assert!(Tokenizer::from_tokenizer_json(b"{not json").is_err());
    assert!(Tokenizer::from_tokenizer_json(b"{}").is_err());
    let missing = fixtures_dir().join("no-such-dir/tokenizer.json");
    let e = Tokenizer::from_tokenizer_json_file(&missing).unwrap_err();
    assert!(e.to_string().contains("no-such-dir"), "{e}");
}
