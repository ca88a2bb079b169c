//! The GGUF tokenizers against llama.cpp (commit 0c1e570): the fixtures hold what libllama and
//! `llama-tokenize` returned for the same vocabularies (see fixtures/README.md). Compared here:
//! special ids, end-of-generation ids, every token's attributes and piece, and for every corpus
//! text the ids of all four (add_special, parse_special) combinations and `llama_detokenize`
//! output; and the ids of ~110 KB of mixed text.

mod common;

use common::*;
use kiln_tokenizer::Tokenizer;

fn opt(id: i64) -> Option<u32> {
    u32::try_from(id).ok()
}

/// Compares one tokenizer with its fixture; returns the number of id lists compared.
fn check(name: &str) -> usize {
    let fx = fixture(name);
    let tok = tokenizer_for(name);
    let corpus = corpus();
    assert_eq!(tok.vocab_size(), fx.n_vocab, "{name}: vocab size");
    assert_eq!((tok.add_bos(), tok.add_eos()), (fx.add_bos, fx.add_eos), "{name}: add_bos/add_eos");
    assert_eq!(tok.bos_id(), opt(fx.bos), "{name}: bos");
    assert_eq!(tok.eos_id(), opt(fx.eos), "{name}: eos");
    assert_eq!(tok.eot_id(), opt(fx.eot), "{name}: eot");
    assert_eq!(tok.sep_id(), opt(fx.sep), "{name}: sep");
    assert_eq!(tok.pad_id(), opt(fx.pad), "{name}: pad");
    assert_eq!(tok.fim_ids(), fx.fim.map(opt), "{name}: fim");
    assert_eq!(tok.eog_ids(), fx.eog.as_slice(), "{name}: end-of-generation ids");
    for &[start, count, attr] in &fx.attr_runs {
        for id in start..start + count {
            let got = tok.token_attr(id as u32).unwrap().bits();
            assert_eq!(u64::from(got), attr, "{name}: attributes of token {id}");
        }
    }
    for (special, digests) in [(false, &fx.piece_digests_plain), (true, &fx.piece_digests_special)] {
        for (block, want) in digests.iter().enumerate() {
            let mut data = Vec::new();
            let end = ((block + 1) * 4096).min(tok.vocab_size());
            for id in block * 4096..end {
                let p = tok.token_to_piece(id as u32, special).unwrap();
                data.extend_from_slice(&(p.len() as u32).to_le_bytes());
                data.extend_from_slice(&p);
            }
            // Only a digest per block of 4096 ids is stored: a mismatch names the block.
            assert_eq!(
                fnv(&data),
                *want,
                "{name}: pieces (special = {special}) of ids {}..{end} differ from llama.cpp",
                block * 4096
            );
        }
    }
    assert_eq!(fx.cases.len(), corpus.len(), "{name}: fixture made from this corpus");
    let mut compared = 0;
    for (case, entry) in fx.cases.iter().zip(&corpus) {
        assert_eq!(case.name, entry.name);
        for (mode, add, parse) in [
            ("plain", false, false),
            ("parse_special", false, true),
            ("add_special", true, false),
            ("add_special_parse_special", true, true),
        ] {
            let got = tok.encode(&entry.text, add, parse).unwrap();
            assert_eq!(got, case.ids[mode], "{name}: case {:?} ({mode}) text {:?}", case.name, entry.text);
            compared += 1;
        }
        let ids = &case.ids["add_special_parse_special"];
        for (key, remove, unparse) in [("keep", false, false), ("keep_unparse", false, true), ("remove", true, false)] {
            let got = tok.detokenize(ids, remove, unparse).unwrap();
            let want = unhex(&case.detokenize[key]);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{name}: detokenize ({key}) of case {:?}",
                case.name
            );
            assert_eq!(got, want, "{name}: detokenize bytes ({key}) of case {:?}", case.name);
        }
    }
    // The long mixed text.
    let mixed = mixed();
    let ids = tok.encode(&mixed, false, false).unwrap();
    if let Some(want) = &fx.mixed.ids
        && ids != *want
    {
        let i = ids.iter().zip(want).position(|(a, b)| a != b).unwrap_or(ids.len().min(want.len()));
        let lo = i.saturating_sub(5);
        panic!(
            "{name}: mixed text ids differ from llama.cpp at index {i}: ours {:?} llama.cpp {:?} (around {:?})",
            &ids[lo..(i + 5).min(ids.len())],
            &want[lo..(i + 5).min(want.len())],
            String::from_utf8_lossy(&tok.decode_bytes(&ids[lo..(i + 5).min(ids.len())], true).unwrap())
        );
    }
    let ids_bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!((ids.len(), fnv(&ids_bytes)), (fx.mixed.n_ids, fx.mixed.ids_fnv.clone()), "{name}: mixed text ids");
    let all = tok.encode(&mixed, true, true).unwrap();
    let detok = tok.detokenize(&all, false, false).unwrap();
    assert_eq!(fnv(&detok), fx.mixed.detokenize_keep_fnv, "{name}: detokenize of the mixed text");
    compared + 1
}

#[test]
fn smollm2_matches_llama_cpp() {
    assert_eq!(check("smollm2"), 4 * corpus().len() + 1);
}

#[test]
fn gemma3_matches_llama_cpp() {
    assert_eq!(check("gemma3"), 4 * corpus().len() + 1);
}

#[test]
fn gptoss_vocabulary_matches_llama_cpp() {
    assert_eq!(check("gptoss"), 4 * corpus().len() + 1);
}

#[test]
fn other_pre_tokenizers_match_llama_cpp() {
    for (name, _, _) in VARIANTS {
        assert_eq!(check(name), 4 * corpus().len() + 1, "{name}");
    }
}

/// The metadata the tests build from tiktoken-rs's o200k data equals what
/// `make_tiny_gptoss.py --vocab harmony` writes from the gpt-oss `tokenizer.json` (the file the
/// gptoss fixture was made from). Needs that file: run with
/// `KILN_TINY_GPTOSS_GGUF=/path/tiny-harmony.gguf cargo test -p kiln-tokenizer -- --ignored`.
#[test]
#[ignore = "needs a make_tiny_gptoss.py --vocab harmony file in KILN_TINY_GPTOSS_GGUF"]
fn gptoss_vocabulary_equals_make_tiny_gptoss() {
    let path = std::env::var("KILN_TINY_GPTOSS_GGUF").expect("KILN_TINY_GPTOSS_GGUF");
    let theirs = kiln_gguf::GgufFile::open(path).unwrap();
    let ours = kiln_gguf::GgufFile::from_bytes(gptoss_gguf_bytes().clone()).unwrap();
    let mut n = 0;
    for (key, value) in ours.metadata() {
        if !key.starts_with("tokenizer.") {
            continue;
        }
        assert_eq!(theirs.get(key).map(|v| v.to_value()), Some(value.to_value()), "{key}");
        n += 1;
    }
    let theirs_keys = theirs.metadata().filter(|(k, _)| k.starts_with("tokenizer.")).count();
    assert_eq!(n, theirs_keys, "same set of tokenizer keys");
    let t1 = Tokenizer::from_gguf(&theirs).unwrap();
    assert_eq!(t1.vocab_size(), 201_088);
}
