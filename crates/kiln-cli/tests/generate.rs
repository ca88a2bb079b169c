//! `kiln generate` / `kiln tokenize` end to end: prompt ids and greedy ids against llama.cpp's
//! fixtures (crates/kiln-model/tests/fixtures/llamacpp), EOS handling, harmony chat on the tiny
//! gpt-oss model (prompts against openai-harmony's renderings in kiln-tokenizer's fixtures), and
//! bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_gguf::GgufWriter;
use kiln_quant::GgmlType;
use serde_json::Value;

const NEAR_TIE: f64 = 0.05;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("run kiln")
}

fn json_ok(out: Output) -> Value {
    assert!(out.status.success(), "kiln failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

fn fixture_dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-model/tests/fixtures/llamacpp").join(model)
}

fn fixture(model: &str, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture_dir(model).join(format!("{name}.json"))).unwrap()).unwrap()
}

/// Every fixture's prompt, tokenized by `kiln tokenize`, gives llama.cpp's prompt ids.
fn prompt_ids_match(model: &str) {
    let path = kiln_testkit::model(model);
    let mut n = 0;
    for entry in std::fs::read_dir(fixture_dir(model)).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let fx: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let prompt = fx["prompt"].as_str().unwrap();
        let out = json_ok(kiln(&["tokenize", "-m", path.to_str().unwrap(), "--text", prompt, "--json"]));
        assert_eq!(out["ids"], fx["prompt_ids"], "{}: prompt ids", p.display());
        n += 1;
    }
    assert!(n >= 9, "only {n} fixtures");
}

#[test]
fn smollm2_prompt_ids_match_llama_cpp() {
    prompt_ids_match("smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_prompt_ids_match_llama_cpp() {
    prompt_ids_match("gemma3-270m-q4_k_m");
}

/// Greedy generation through the CLI gives llama.cpp's ids up to the first near-tie.
fn greedy_matches(model: &str, name: &str) {
    let fx = fixture(model, name);
    let path = kiln_testkit::model(model);
    let steps = fx["generated_ids"].as_array().unwrap().len().to_string();
    let mut args = vec!["generate", "-m", path.to_str().unwrap(), "--temperature", "0", "-n", &steps, "--json"];
    if fx["ignore_eos"].as_bool().unwrap() {
        args.push("--ignore-eos");
    }
    args.extend(["--prompt", fx["prompt"].as_str().unwrap()]);
    let out = json_ok(kiln(&args));
    assert_eq!(out["prompt_ids"], fx["prompt_ids"], "{name}: prompt ids");
    let ours = out["generated_ids"].as_array().unwrap();
    let theirs = fx["generated_ids"].as_array().unwrap();
    for (i, step) in fx["steps"].as_array().unwrap().iter().enumerate() {
        let top = step["top"].as_array().unwrap();
        if top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap() < NEAR_TIE {
            return; // a near-tie may flip on any engine; the paths can differ after it
        }
        assert_eq!(ours.get(i), theirs.get(i), "{name}: generated id {i}");
    }
    assert_eq!(ours.len(), theirs.len(), "{name}: number of generated ids");
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    for name in ["capital", "utf8", "long"] {
        greedy_matches("smollm2-135m-instruct-q4_1", name);
    }
}

#[test]
fn gemma3_greedy_matches_llama_cpp() {
    for name in ["chat", "utf8"] {
        greedy_matches("gemma3-270m-q4_k_m", name);
    }
}

#[test]
fn chat_prompt_stops_at_end_of_generation() {
    let model = "smollm2-135m-instruct-q4_1";
    let fx = fixture(model, "chat_eos");
    let path = kiln_testkit::model(model);
    let out = json_ok(kiln(&[
        "generate",
        "-m",
        path.to_str().unwrap(),
        "--temperature",
        "0",
        "-n",
        "64",
        "--json",
        "--prompt",
        fx["prompt"].as_str().unwrap(),
    ]));
    assert_eq!(out["generated_ids"], fx["generated_ids"]);
    assert_eq!(out["finish_reason"], "stop");
    // The end-of-generation token ends the text; it is not part of it.
    assert_eq!(out["text"], "The capital of France is Paris.");
}

#[test]
fn stop_string_and_length_finish() {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let m = path.to_str().unwrap();
    // llama.cpp's greedy continuation is " Paris.\n\nThe United States has a population of …".
    let out = json_ok(kiln(&[
        "generate",
        "-m",
        m,
        "--temperature",
        "0",
        "-n",
        "24",
        "--stop",
        "United",
        "--json",
        "The capital of France is",
    ]));
    assert_eq!(out["text"], " Paris.\n\nThe ");
    assert_eq!(out["finish_reason"], "stop");
    assert_eq!(out["stop"], "United");
    let out =
        json_ok(kiln(&["generate", "-m", m, "--temperature", "0", "-n", "3", "--json", "The capital of France is"]));
    assert_eq!(out["generated_ids"], serde_json::json!([7042, 30, 198]));
    assert_eq!(out["finish_reason"], "length");
    let out = json_ok(kiln(&["generate", "-m", m, "-n", "0", "--json", "The capital of France is"]));
    assert_eq!(out["generated_ids"], serde_json::json!([]));
    assert!(out.get("messages").is_none(), "only harmony chat has messages");
    assert_eq!((out["text"].as_str(), out["finish_reason"].as_str()), (Some(""), Some("length")));
}

#[test]
fn same_seed_same_text() {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let m = path.to_str().unwrap();
    let run = |seed: &str| {
        json_ok(kiln(&["generate", "-m", m, "--seed", seed, "-n", "16", "--json", "Once upon a time"]))["generated_ids"]
            .clone()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"), "different seeds should give different samples at temperature 0.8");
}

fn expect_error(args: &[&str], needle: &str) {
    let out = kiln(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let long = "word ".repeat(40);
    expect_error(&["generate", "-m", path.to_str().unwrap(), "--ctx", "16", &long], "context of 16");
}

#[test]
fn a_context_too_large_for_memory_is_an_error() {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    // 2^60 positions: the KV cache's size does not even fit in 64 bits.
    let huge = (1u64 << 60).to_string();
    expect_error(&["generate", "-m", path.to_str().unwrap(), "--ctx", &huge, "Hi"], "cannot allocate the KV cache");
    // 2^32 positions: a size that fits in 64 bits but not in memory.
    let big = (1u64 << 32).to_string();
    expect_error(&["generate", "-m", path.to_str().unwrap(), "--ctx", &big, "Hi"], "cannot allocate the KV cache");
}

/// A tiny llama-shaped file: 1 layer, width 32, a 4-token SentencePiece vocabulary.
fn tiny_model(arch: &str, tokenizer: &str, skip: Option<&str>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", arch).unwrap();
    for (k, v) in [
        ("block_count", 1u32),
        ("embedding_length", 32),
        ("feed_forward_length", 64),
        ("attention.head_count", 2),
        ("context_length", 64),
    ] {
        w.add(format!("{arch}.{k}"), v).unwrap();
    }
    w.add(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32).unwrap();
    w.add("tokenizer.ggml.model", tokenizer).unwrap();
    w.add("tokenizer.ggml.tokens", vec!["<unk>", "<s>", "</s>", "\u{2581}a"]).unwrap();
    w.add("tokenizer.ggml.scores", vec![0f32, 0.0, 0.0, -1.0]).unwrap();
    w.add("tokenizer.ggml.token_type", vec![2i32, 3, 3, 1]).unwrap();
    let tensors: [(&str, &[u64]); 11] = [
        ("token_embd.weight", &[32, 4]),
        ("output_norm.weight", &[32]),
        ("blk.0.attn_norm.weight", &[32]),
        ("blk.0.attn_q.weight", &[32, 32]),
        ("blk.0.attn_k.weight", &[32, 32]),
        ("blk.0.attn_v.weight", &[32, 32]),
        ("blk.0.attn_output.weight", &[32, 32]),
        ("blk.0.ffn_norm.weight", &[32]),
        ("blk.0.ffn_gate.weight", &[32, 64]),
        ("blk.0.ffn_up.weight", &[32, 64]),
        ("blk.0.ffn_down.weight", &[64, 32]),
    ];
    for (name, shape) in tensors {
        if Some(name) == skip {
            continue;
        }
        let n: u64 = shape.iter().product();
        w.add_tensor(name, GgmlType::F32, shape, vec![0u8; n as usize * 4]).unwrap();
    }
    w.to_bytes().unwrap()
}

#[test]
fn unusable_models_are_errors() {
    let dir = std::env::temp_dir().join(format!("kiln-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // Sanity: the tiny model itself loads and generates.
    let ok = write("ok.gguf", tiny_model("llama", "llama", None));
    let out = kiln(&["generate", "-m", &ok, "--temperature", "0", "-n", "2", "--ignore-eos", "a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let arch = write("arch.gguf", tiny_model("mamba9", "llama", None));
    expect_error(&["generate", "-m", &arch, "a"], "unsupported architecture \"mamba9\"");
    let tok = write("tok.gguf", tiny_model("llama", "plamo2", None));
    expect_error(&["generate", "-m", &tok, "a"], "tokenizer model \"plamo2\"");
    let missing = write("missing.gguf", tiny_model("llama", "llama", Some("blk.0.ffn_up.weight")));
    expect_error(&["generate", "-m", &missing, "a"], "missing tensor blk.0.ffn_up.weight");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dump_logits_rows_are_the_logits_that_chose_each_token() {
    let model = "smollm2-135m-instruct-q4_1";
    let fx = fixture(model, "capital");
    let path = kiln_testkit::model(model);
    let file = std::env::temp_dir().join(format!("kiln-logits-{}.f32", std::process::id()));
    let out = json_ok(kiln(&[
        "generate",
        "-m",
        path.to_str().unwrap(),
        "--temperature",
        "0",
        "-n",
        "4",
        "--ignore-eos",
        "--json",
        "--dump-logits",
        file.to_str().unwrap(),
        fx["prompt"].as_str().unwrap(),
    ]));
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let n_vocab = fx["n_vocab"].as_u64().unwrap() as usize;
    assert_eq!(bytes.len(), 4 * n_vocab * 4, "4 rows of n_vocab little-endian f32");
    let rows: Vec<Vec<f32>> = bytes
        .chunks(4 * n_vocab)
        .map(|r| r.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
        .collect();
    for (i, (row, step)) in rows.iter().zip(fx["steps"].as_array().unwrap()).enumerate() {
        // Row i chose generated_ids[i] (greedy: its argmax) …
        let argmax = (0..n_vocab).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        assert_eq!(serde_json::json!(argmax), out["generated_ids"][i], "row {i}");
        // … and holds llama.cpp's logits for that step (1% of the step's range).
        let range = step["max"].as_f64().unwrap() - step["min"].as_f64().unwrap();
        for p in step["top"].as_array().unwrap() {
            let (id, want) = (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap());
            assert!((row[id] as f64 - want).abs() <= 0.01 * range, "row {i} id {id}: {} vs {want}", row[id]);
        }
    }
}

/// The tiny random gpt-oss model: 2 layers, a byte-level vocabulary with the harmony tokens.
const TINY_GPTOSS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-model/tests/fixtures/gptoss/tiny-gptoss-bytes.gguf");

/// openai-harmony's rendering of a conversation (kiln-tokenizer's fixtures/harmony/render.json).
fn harmony_rendering(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-tokenizer/tests/fixtures/harmony/render.json");
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    cases.into_iter().find(|c| c["name"] == name).unwrap()
}

#[test]
fn harmony_chat_prompt_is_openai_harmonys() {
    let cases: [(&str, &[&str]); 3] = [
        ("defaults", &[]),
        ("low", &["--reasoning-effort", "low"]),
        (
            "identity_developer_high",
            &[
                "--system",
                "You are a terse assistant.",
                "--developer",
                "Use metric units.",
                "--reasoning-effort",
                "high",
            ],
        ),
    ];
    for (name, flags) in cases {
        let fx = harmony_rendering(name);
        let mut args = vec!["generate", "-m", TINY_GPTOSS, "--chat", "--json", "-n", "0"];
        args.extend(flags);
        args.push(fx["messages"][0]["content"].as_str().unwrap());
        let out = json_ok(kiln(&args));
        // The library's text, tokenized by this model's (byte-level) vocabulary.
        let want = json_ok(kiln(&["tokenize", "-m", TINY_GPTOSS, "--text", fx["text"].as_str().unwrap(), "--json"]));
        assert_eq!(out["prompt_ids"], want["ids"], "{name}");
        assert_eq!(out["messages"], serde_json::json!([]), "{name}");
    }
}

#[test]
fn harmony_chat_output_by_channel() {
    // A random model ignores the format; its output still goes through the channel split.
    let args = ["generate", "-m", TINY_GPTOSS, "--chat", "--temperature", "0", "-n", "48", "--ignore-eos", "Hi"];
    let out = json_ok(kiln(&[&args[..], &["--json"]].concat()));
    let ids: Vec<u32> = serde_json::from_value(out["generated_ids"].clone()).unwrap();
    let tok = kiln_tokenizer::Tokenizer::from_gguf_path(TINY_GPTOSS).unwrap();
    assert_eq!(out["text"], tok.decode(&ids, false).unwrap(), "text is the raw text");
    let mut parser = kiln_tokenizer::HarmonyParser::new(&tok).unwrap();
    for &id in &ids {
        parser.push(id).unwrap();
    }
    parser.finish().unwrap();
    let messages = parser.into_messages();
    assert!(!messages.is_empty(), "the test needs output with messages");
    assert_eq!(out["messages"], serde_json::to_value(&messages).unwrap());
    // Streamed: stdout has the final channel (and text outside any header), nothing else.
    let streamed = kiln(&args);
    assert!(streamed.status.success(), "{}", String::from_utf8_lossy(&streamed.stderr));
    let answer: String = messages
        .iter()
        .filter(|m| m.channel.as_deref().is_none_or(|c| c == "final"))
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(String::from_utf8(streamed.stdout).unwrap(), answer + "\n");
}

#[test]
fn harmony_flags_errors() {
    expect_error(&["generate", "-m", TINY_GPTOSS, "--developer", "x", "a"], "--developer needs --chat");
    expect_error(&["generate", "-m", TINY_GPTOSS, "--hide-reasoning", "a"], "--hide-reasoning needs --chat");
    expect_error(&["generate", "-m", TINY_GPTOSS, "--chat", "--stop", "x", "a"], "--stop is not supported with --chat");
    let dir = std::env::temp_dir().join(format!("kiln-harmony-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let llama = dir.join("llama.gguf");
    std::fs::write(&llama, tiny_model("llama", "llama", None)).unwrap();
    expect_error(
        &["generate", "-m", llama.to_str().unwrap(), "--chat", "--reasoning-effort", "low", "a"],
        "--reasoning-effort: only harmony (gpt-oss) models take it",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A value clap rejects: its usage message, exit 2.
    let out = kiln(&["generate", "-m", TINY_GPTOSS, "--chat", "--reasoning-effort", "max", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected low, medium or high"));
}

/// Without the GPU (here: a build without the `cuda` feature, as the tests run; with the feature on
/// a machine without the driver, `.ci/run` checks the "libcuda.so.1 not found" line), `--device
/// cuda` is one line and exit 2, before any model is fetched or read.
#[test]
fn device_cuda_without_cuda_is_one_line() {
    if cfg!(feature = "cuda") {
        return;
    }
    expect_error(&["generate", "-m", "no-such-model.gguf", "--device", "cuda", "Hi"], "built without CUDA support");
    expect_error(&["bench", "-m", "no-such-model.gguf", "--device", "cuda"], "--features cuda");
}

/// `--prompt-file` (and `-`, standard input) passes the file's text as it is: tabs, CRLFs, runs of
/// newlines and non-ASCII give llama.cpp's prompt ids, as `--prompt` does.
#[test]
fn prompt_file_and_stdin_give_llama_cpps_prompt_ids() {
    use std::io::Write;
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let m = path.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-prompt-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["whitespace", "utf8", "code"] {
        let fx = fixture("smollm2-135m-instruct-q4_1", name);
        let file = dir.join(format!("{name}.txt"));
        std::fs::write(&file, fx["prompt"].as_str().unwrap()).unwrap();
        let out = json_ok(kiln(&["generate", "-m", m, "-n", "1", "--json", "--prompt-file", file.to_str().unwrap()]));
        assert_eq!(out["prompt_ids"], fx["prompt_ids"], "{name}: --prompt-file");

        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["generate", "-m", m, "-n", "1", "--json", "--prompt-file", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(fx["prompt"].as_str().unwrap().as_bytes()).unwrap();
        let out = json_ok(child.wait_with_output().unwrap());
        assert_eq!(out["prompt_ids"], fx["prompt_ids"], "{name}: --prompt-file -");
    }
    let missing = dir.join("missing.txt");
    expect_error(&["generate", "-m", m, "--prompt-file", missing.to_str().unwrap()], "--prompt-file");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kiln tokenize` needs the vocabulary only: a GGUF of SmolLM2's metadata and no tensors gives
/// llama.cpp's prompt ids, where loading the model would fail on the missing weights.
#[test]
fn tokenize_reads_a_vocabulary_only_file() {
    let path = kiln_testkit::model("smollm2-135m-instruct-q4_1");
    let full = kiln_gguf::GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in full.metadata() {
        w.add(k, v.to_value()).unwrap();
    }
    let vocab = std::env::temp_dir().join(format!("kiln-vocab-only-{}.gguf", std::process::id()));
    std::fs::write(&vocab, w.to_bytes().unwrap()).unwrap();
    let v = vocab.to_str().unwrap();
    for name in ["utf8", "whitespace", "chat"] {
        let fx = fixture("smollm2-135m-instruct-q4_1", name);
        let out = json_ok(kiln(&["tokenize", "-m", v, "--text", fx["prompt"].as_str().unwrap(), "--json"]));
        assert_eq!(out["ids"], fx["prompt_ids"], "{name}");
    }
    // The same file cannot generate: the weights are not there.
    let out = kiln(&["generate", "-m", v, "-n", "1", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token_embd.weight"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&vocab).unwrap();
}
