//! `kiln serve --http-listen`: the OpenAI-compatible API as a real server process on loopback,
//! driven by a raw HTTP/1.1 client (tests/common), `curl`, and OpenAI's own Python client
//! (`openai` from PyPI). Expectations come from solo `kiln generate` runs and the tokenizer,
//! never from the server itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{HttpResponse, Server, http, http_with, kiln, post};
use serde_json::{Value, json};

const SMOLLM2: &str = "smollm2-135m-instruct-q4_1";
/// A tiny random gpt-oss with a byte vocabulary and the harmony tokens: its greedy output has
/// harmony messages of every channel.
const TINY_GPTOSS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-model/tests/fixtures/gptoss/tiny-gptoss-bytes.gguf");
/// The `openai` client the tests drive the server with.
const OPENAI_PACKAGES: &[&str] = &["openai==3.60.0"];

fn smollm2() -> PathBuf {
    kiln_testkit::model(SMOLLM2)
}

fn http_server(model: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--http-listen", "127.0.0.1:0"];
    args.extend(extra);
    Server::start(model, &args)
}

/// `kiln generate --json` greedy, solo, with `args` before the prompt.
fn generate(model: &Path, args: &[&str], prompt: &str) -> Value {
    let out = kiln()
        .args(["generate", "-m"])
        .arg(model)
        .args(["--json", "-t", "2"])
        .args(if args.contains(&"--temperature") { &[][..] } else { &["--temperature", "0"][..] })
        .args(args)
        .args(["--prompt", prompt])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn len(v: &Value) -> u64 {
    v.as_array().unwrap().len() as u64
}

/// The chunks of a streamed response (every `data:` line but the last is JSON; the last is
/// `[DONE]`).
fn chunks(r: &HttpResponse) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

/// Per choice index: the concatenated `field` of its chunks (`delta.content`, `text`, …), and
/// its finish reason.
fn gather(chunks: &[Value], pointer: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for c in chunks {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            if out.len() <= i {
                out.resize(i + 1, (String::new(), None));
            }
            if let Some(t) = ch.pointer(pointer).and_then(Value::as_str) {
                out[i].0.push_str(t);
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                assert!(out[i].1.is_none(), "one finish reason per choice");
                out[i].1 = Some(f.to_string());
            }
        }
    }
    out
}

#[test]
fn completions_and_chat_equal_kiln_generate_streamed_or_not() {
    let m = smollm2();
    let prompt = "The three primary colours are";
    let want = generate(&m, &["-n", "24"], prompt);
    let want_chat = generate(&m, &["-n", "24", "--chat", "--system", "Answer briefly."], "Name a fruit.");
    let server = http_server(&m, &["--max-batch", "4", "--ctx", "512"]);
    let h = server.http.as_str();
    let n = len(&want["generated_ids"]);

    // /v1/completions
    let body = json!({"model": "x", "prompt": prompt, "max_tokens": 24, "temperature": 0});
    let r = post(h, "/v1/completions", &body).json();
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(r["choices"][0]["text"], want["text"]);
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["prompt_tokens"], len(&want["prompt_ids"]));
    assert_eq!(r["usage"]["completion_tokens"], n);
    assert_eq!(r["usage"]["total_tokens"], len(&want["prompt_ids"]) + n);
    // Streamed: the pieces add up to the same text, with usage last.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let c = chunks(&post(h, "/v1/completions", &sb));
    assert_eq!(gather(&c, "/text"), vec![(want["text"].as_str().unwrap().to_string(), Some("length".into()))]);
    let last = c.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], r["usage"]);
    assert!(c[..c.len() - 1].iter().all(|x| x["usage"].is_null() && x["object"] == "text_completion"));
    // A token-id prompt is the same prompt.
    let ids = json!({"prompt": want["prompt_ids"], "max_tokens": 24, "temperature": 0});
    assert_eq!(post(h, "/v1/completions", &ids).json()["choices"][0]["text"], want["text"]);

    // /v1/chat/completions: system + user through the chat template, as `generate --chat`.
    let messages =
        json!([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a fruit."}]);
    let body = json!({"model": "x", "messages": messages, "max_tokens": 24, "temperature": 0});
    let r = post(h, "/v1/chat/completions", &body).json();
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert_eq!(r["choices"][0]["message"]["content"], want_chat["text"]);
    let reason = if want_chat["finish_reason"] == "length" { "length" } else { "stop" };
    assert_eq!(r["choices"][0]["finish_reason"], reason);
    assert!(r["choices"][0]["message"].get("reasoning_content").is_none());
    assert_eq!(r["usage"]["prompt_tokens"], len(&want_chat["prompt_ids"]));
    assert_eq!(r["usage"]["completion_tokens"], len(&want_chat["generated_ids"]));
    // max_completion_tokens is max_tokens' new name; content parts are text.
    let mut b2 = body.clone();
    b2.as_object_mut().unwrap().remove("max_tokens");
    b2["max_completion_tokens"] = json!(24);
    b2["messages"][1]["content"] = json!([{"type": "text", "text": "Name a "}, {"type": "text", "text": "fruit."}]);
    assert_eq!(post(h, "/v1/chat/completions", &b2).json()["choices"][0]["message"], r["choices"][0]["message"]);
    // Streamed: role first, then content deltas adding up to the same text.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let c = chunks(&post(h, "/v1/chat/completions", &sb));
    assert_eq!(c[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert!(
        c.iter().all(|x| x["object"] == "chat.completion.chunk" && x["id"] == c[0]["id"] && x.get("usage").is_none())
    );
    assert_eq!(
        gather(&c, "/delta/content"),
        vec![(want_chat["text"].as_str().unwrap().to_string(), Some(reason.into()))]
    );

    // curl, as docs/HTTP.md shows it.
    let out = Command::new("curl")
        .args(["-sSN", &format!("http://{h}/v1/chat/completions"), "-H", "Content-Type: application/json", "-d"])
        .arg(sb.to_string())
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().map(String::from)
        })
        .collect();
    assert_eq!(streamed, want_chat["text"].as_str().unwrap());
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[test]
fn several_choices_seeds_and_logprobs() {
    let m = smollm2();
    let server = http_server(&m, &["--max-batch", "8", "--ctx", "512"]);
    let h = server.http.as_str();
    let prompt = "Once upon a time";
    let want = generate(&m, &["-n", "12"], prompt);
    // n greedy choices are the same text; usage counts the prompt once and every choice's tokens.
    let r = post(h, "/v1/completions", &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "n": 3})).json();
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], want["text"]);
    }
    assert_eq!(r["usage"]["prompt_tokens"], len(&want["prompt_ids"]));
    assert_eq!(r["usage"]["completion_tokens"], 36);
    // Two prompts × two choices: indexes prompt-major, each prompt counted once.
    let r =
        post(h, "/v1/completions", &json!({"prompt": [prompt, "Hello"], "max_tokens": 5, "temperature": 0, "n": 2}))
            .json();
    let texts: Vec<&str> = r["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 4);
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[2], texts[3]);
    let hello = generate(&m, &["-n", "5"], "Hello");
    assert_eq!(texts[2], hello["text"].as_str().unwrap());
    assert_eq!(r["usage"]["prompt_tokens"], len(&want["prompt_ids"]) + len(&hello["prompt_ids"]));

    // Seeded sampling: the same seed gives the same choices, choice i uses seed + i.
    let sampled = |seed: i64, n: u32| {
        post(
            h,
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 16, "temperature": 1.0, "seed": seed, "n": n}),
        )
        .json()["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let a = sampled(7, 2);
    assert_eq!(a, sampled(7, 2));
    assert_eq!(a[1], sampled(8, 1)[0]);
    let solo = generate(&m, &["-n", "16", "--temperature", "1.0", "--seed", "7"], prompt);
    assert_eq!(a[0], solo["text"].as_str().unwrap());

    // Chat logprobs: one entry per content token, the chosen token's bytes, 3 alternatives in
    // descending order, and the chosen one is the most likely at temperature 0.
    let body = json!({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0,
                      "logprobs": true, "top_logprobs": 3});
    let r = post(h, "/v1/chat/completions", &body).json();
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    let lp = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lp.len() as u64, r["usage"]["completion_tokens"].as_u64().unwrap());
    let mut bytes = Vec::new();
    for e in lp {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(top[0]["token"], e["token"]);
        assert!((top[0]["logprob"].as_f64().unwrap() - e["logprob"].as_f64().unwrap()).abs() < 1e-6);
        assert!(top.windows(2).all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
        bytes.extend(e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8));
    }
    // The last token may be the end-of-turn token, which adds no text.
    assert!(String::from_utf8(bytes).unwrap().starts_with(content));
    // Streamed, the same entries arrive with their deltas.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let c = chunks(&post(h, "/v1/chat/completions", &sb));
    let streamed: Vec<Value> =
        c.iter().filter_map(|x| x["choices"][0]["logprobs"]["content"].as_array()).flatten().cloned().collect();
    assert_eq!(&streamed, lp);
    // Completions logprobs: the legacy shape.
    let r =
        post(h, "/v1/completions", &json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 2})).json();
    let l = &r["choices"][0]["logprobs"];
    assert_eq!(len(&l["tokens"]), 6);
    assert_eq!(
        l["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<String>(),
        r["choices"][0]["text"].as_str().unwrap()
    );
    assert!(l["top_logprobs"].as_array().unwrap().iter().all(|t| t.as_object().unwrap().len() <= 2));
    assert_eq!(l["text_offset"][0], 0);
}

/// Asserts an OpenAI-style error: the status, and `error` with a message, a type, and `param`
/// and `code` present (null or a string).
fn expect_error(r: &HttpResponse, status: u16, param: Option<&str>) -> Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{r:?}");
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some(), "{v}");
    assert!(e["code"].is_null() || e["code"].is_string(), "{v}");
    match param {
        Some(p) => assert_eq!(e["param"], p, "{v}"),
        None => assert!(e.as_object().unwrap().contains_key("param"), "{v}"),
    }
    e.clone()
}

#[test]
fn every_bad_input_gets_its_status_and_a_json_error() {
    let m = smollm2();
    let server = http_server(&m, &["--max-batch", "2", "--ctx", "128", "--http-max-body", "64KiB"]);
    let h = server.http.as_str();
    let chat = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        post(h, "/v1/chat/completions", &b)
    };
    expect_error(&chat(json!({"temperature": "hot"})), 400, Some("temperature"));
    let e = expect_error(&chat(json!({"max_tokens": -5})), 400, Some("max_tokens"));
    assert!(e["message"].as_str().unwrap().contains("-5"), "{e}");
    expect_error(&chat(json!({"messages": "hi"})), 400, Some("messages"));
    expect_error(&chat(json!({"messages": []})), 400, Some("messages"));
    expect_error(&chat(json!({"messages": [{"role": "wizard", "content": "x"}]})), 400, Some("messages[0].role"));
    expect_error(
        &chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})),
        400,
        Some("messages[0].content[0].type"),
    );
    expect_error(&chat(json!({"n": 0})), 400, Some("n"));
    expect_error(&chat(json!({"logprobs": true, "top_logprobs": 21})), 400, Some("top_logprobs"));
    expect_error(&chat(json!({"top_logprobs": 2})), 400, Some("top_logprobs"));
    expect_error(&chat(json!({"stop": vec!["a"; 17]})), 400, Some("stop"));
    expect_error(&chat(json!({"logit_bias": {"42": 5}})), 400, Some("logit_bias"));
    expect_error(&chat(json!({"response_format": {"type": "json_object"}})), 400, Some("response_format"));
    expect_error(&chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})), 400, Some("tools"));
    expect_error(&chat(json!({"reasoning_effort": 3})), 400, Some("reasoning_effort"));
    expect_error(&chat(json!({"top_p": 2.0})), 400, Some("top_p"));
    expect_error(&chat(json!({"temperature": -1})), 400, Some("temperature"));
    // A prompt longer than the context (128).
    let long = "word ".repeat(400);
    let e = expect_error(&chat(json!({"messages": [{"role": "user", "content": long}]})), 400, None);
    assert_eq!(e["code"], "context_length_exceeded");
    let e = expect_error(&post(h, "/v1/completions", &json!({"prompt": long})), 400, None);
    assert_eq!(e["code"], "context_length_exceeded");
    expect_error(&post(h, "/v1/completions", &json!({"prompt": [1, 2, 99999999]})), 400, None);
    expect_error(&post(h, "/v1/completions", &json!({"prompt": []})), 400, Some("prompt"));
    expect_error(&post(h, "/v1/completions", &json!({"prompt": "x", "echo": true})), 400, Some("echo"));
    expect_error(&post(h, "/v1/completions", &json!({"max_tokens": 3})), 400, None);
    // Not JSON, the wrong shape, a route or method that does not exist, a body too large.
    expect_error(&http(h, "POST", "/v1/completions", Some(b"{\"prompt\": ")), 400, None);
    expect_error(&http(h, "POST", "/v1/completions", Some(b"[1, 2]")), 400, None);
    let e = expect_error(&http(h, "GET", "/v1/nope", None), 404, None);
    assert_eq!(e["message"], "Invalid URL (GET /v1/nope)");
    expect_error(&http(h, "GET", "/v1/models/other-model", None), 404, None);
    expect_error(&http(h, "GET", "/v1/completions", None), 405, None);
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(100 * 1024));
    let e = expect_error(&http(h, "POST", "/v1/completions", Some(big.as_bytes())), 413, None);
    assert_eq!(e["code"], "request_too_large");
    // The server is still serving.
    let r = chat(json!({"temperature": 0}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http(h, "GET", "/health", None).status, 200);
}

#[test]
fn queue_full_is_429_and_draining_is_503_while_running_streams_finish() {
    let m = smollm2();
    let server = http_server(&m, &["--max-batch", "1", "--max-queue", "1", "--ctx", "512", "--drain-timeout", "60"]);
    let h = server.http.clone();
    let long = json!({"prompt": "Count to a thousand:", "max_tokens": 200, "temperature": 0, "ignore_eos": true, "stream": true});
    // One running, one queued; the third is refused.
    let a = {
        let (h, b) = (h.clone(), long.clone());
        std::thread::spawn(move || post(&h, "/v1/completions", &b))
    };
    wait_for(&server, "kiln_running_sequences", 1.0);
    let b = {
        let (h, b) = (h.clone(), long.clone());
        std::thread::spawn(move || post(&h, "/v1/completions", &b))
    };
    wait_for(&server, "kiln_queue_depth", 1.0);
    let e = expect_error(&post(&h, "/v1/completions", &long), 429, None);
    assert_eq!(e["code"], "queue_full");
    // SIGTERM: health and new requests say 503 while the two streams run to their end.
    server.sigterm();
    let until = Instant::now() + Duration::from_secs(30);
    while http(&h, "GET", "/health", None).status != 503 {
        assert!(Instant::now() < until, "/health never said 503 during the drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http(&h, "GET", "/health", None).json()["status"], "draining");
    let e = expect_error(&post(&h, "/v1/completions", &long), 503, None);
    assert_eq!(e["code"], "draining");
    for t in [a, b] {
        let c = chunks(&t.join().unwrap());
        assert_eq!(gather(&c, "/text")[0].1.as_deref(), Some("length"));
    }
}

/// Polls /metrics until `name` reaches `value`.
fn wait_for(server: &Server, name: &str, value: f64) {
    let until = Instant::now() + Duration::from_secs(60);
    while common::metric(&server.metrics(), name).unwrap_or(0.0) != value {
        assert!(Instant::now() < until, "{name} never reached {value}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn health_says_503_while_loading_and_metrics_share_the_address() {
    let m = smollm2();
    // Gemma 3 270M: its load and warm-up pass take ~0.2 s even in this warm page cache, long
    // enough to ask during it.
    let gemma = kiln_testkit::model("gemma3-270m-q4_k_m");
    let mut server = Server::spawn(&gemma, &["--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
    let h = server.http.clone();
    // Bound before the model loads: 503 and "loading".
    let r = http(&h, "GET", "/health", None);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "loading");
    let e = expect_error(&post(&h, "/v1/completions", &json!({"prompt": "x"})), 503, None);
    assert_eq!(e["code"], "model_loading");
    server.wait_ready();
    assert_eq!(http(&h, "GET", "/health", None).json(), json!({"status": "ok"}));
    let models = http(&h, "GET", "/v1/models", None).json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "gemma-3-270m-q4_k_m");
    assert_eq!(models["data"][0]["object"], "model");
    let one = http(&h, "GET", "/v1/models/gemma-3-270m-q4_k_m", None).json();
    assert_eq!(one, models["data"][0]);
    assert_eq!(http(&h, "GET", "/metrics", None).status, 404, "metrics are on their own address here");
    drop(server);

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let server = Server::start(
        &m,
        &["--http-listen", &port, "--metrics-listen", &port, "--served-model-name", "smol", "--api-key", "sekrit"],
    );
    assert_eq!(server.metrics, port);
    // With --api-key the /v1 routes need it; /health and /metrics do not.
    let body = json!({"prompt": "Hi", "max_tokens": 3, "temperature": 0}).to_string();
    let e = expect_error(&post(&port, "/v1/completions", &serde_json::from_str(&body).unwrap()), 401, None);
    assert_eq!(e["code"], "invalid_api_key");
    let wrong = [("Authorization", "Bearer nope")];
    expect_error(&http_with(&port, "GET", "/v1/models", &wrong, None), 401, None);
    assert_eq!(http(&port, "GET", "/health", None).status, 200);
    let key = [("Authorization", "Bearer sekrit")];
    let r = http_with(&port, "POST", "/v1/completions", &key, Some(body.as_bytes()));
    assert_eq!(r.json()["model"], "smol");
    // An HTTP request counts in the same metrics as gRPC ones.
    assert_eq!(server.metric("kiln_requests_total{outcome=\"length\"}"), 1.0);
    assert_eq!(server.metric("kiln_generation_tokens_total"), 3.0);
    assert_eq!(http_with(&port, "GET", "/v1/models", &key, None).json()["data"][0]["id"], "smol");
}

/// A virtual environment with the `openai` client.
fn openai_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| kiln_testkit::python_venv("openai-venv", OPENAI_PACKAGES)).clone()
}

/// Runs tests/http/openai_client.py against `addr` with `config`; its JSON report.
fn openai_client(addr: &str, config: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/openai_client.py");
    let out = Command::new(openai_python()).arg(script).arg(addr).arg(config.to_string()).output().unwrap();
    assert!(out.status.success(), "openai_client.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_openai_python_client_gets_what_kiln_generate_gets() {
    let m = smollm2();
    let prompts = ["The capital of France is", "def fibonacci(n):", "Water boils at", "¿Cuál es la capital de España?"];
    let want: Vec<Value> = prompts.iter().map(|p| generate(&m, &["-n", "16", "--batch-invariant"], p)).collect();
    let want_chat = generate(&m, &["-n", "16", "--chat", "--batch-invariant"], "What is 2+2?");
    // Batch-invariant: 32 concurrent streams equal their solo runs byte for byte.
    let server = http_server(&m, &["--max-batch", "32", "--ctx", "512", "--batch-invariant"]);
    let r = openai_client(
        &server.http,
        json!({"prompts": prompts, "max_tokens": 16, "chat": "What is 2+2?", "concurrent": 32}),
    );
    assert_eq!(r["models"], json!(["SmolLM2-135M-Instruct.Q4_1"]));
    assert_eq!(r["chat"]["content"], want_chat["text"]);
    assert_eq!(r["chat"]["usage"]["prompt_tokens"], len(&want_chat["prompt_ids"]));
    assert_eq!(r["chat"]["usage"]["completion_tokens"], len(&want_chat["generated_ids"]));
    assert_eq!(r["chat_stream"]["content"], want_chat["text"]);
    assert_eq!(r["chat_stream"]["finish_reason"], r["chat"]["finish_reason"]);
    assert_eq!(r["chat_stream"]["usage"], r["chat"]["usage"]);
    assert_eq!(r["completion"]["text"], want[0]["text"]);
    assert_eq!(r["completion_stream"]["text"], want[0]["text"]);
    // The client's own error classes see our statuses.
    assert_eq!(r["errors"]["negative_max_tokens"]["status"], 400);
    assert_eq!(r["errors"]["negative_max_tokens"]["param"], "max_tokens");
    assert_eq!(r["errors"]["unknown_route"]["status"], 404);
    // 32 concurrent streams (the four prompts in turn): every one finished, equal to its solo run.
    let streams = r["concurrent"].as_array().unwrap();
    assert_eq!(streams.len(), 32);
    for (i, s) in streams.iter().enumerate() {
        let w = &want[i % prompts.len()];
        assert_eq!(s["text"], w["text"], "stream {i}");
        assert_eq!(s["finish_reason"], "length", "stream {i}");
        assert_eq!(s["usage"]["completion_tokens"], 16, "stream {i}");
        assert_eq!(s["usage"]["prompt_tokens"], len(&w["prompt_ids"]), "stream {i}");
    }
}

#[test]
fn a_client_that_goes_away_mid_stream_cancels_its_request() {
    let m = smollm2();
    let server = http_server(&m, &["--max-batch", "2", "--ctx", "2048"]);
    let body = json!({"prompt": "Tell a very long story.", "max_tokens": 2000, "temperature": 0, "ignore_eos": true, "stream": true})
        .to_string();
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(&server.http).unwrap();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // Read until a few chunks have arrived, then hang up.
        let mut r = BufReader::new(s);
        let mut datas = 0;
        let mut line = String::new();
        while datas < 3 {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended early");
            if line.starts_with("data: ") {
                datas += 1;
            }
        }
    }
    // Cancelled within moments, long before 2000 tokens.
    wait_for(&server, "kiln_requests_total{outcome=\"cancelled\"}", 1.0);
    assert_eq!(server.metric("kiln_running_sequences"), 0.0);
    assert!(server.metric("kiln_generation_tokens_total") < 1000.0);
}

/// A tiny random gpt-oss with the real o200k_harmony vocabulary (made once per test run).
fn o200k_gptoss() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = kiln_testkit::target_dir().join("http-test");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny-gptoss-o200k.gguf");
        let tmp = dir.join(format!("tiny-gptoss-o200k.{}.tmp", std::process::id()));
        let spec = kiln_synth::GptOss { vocab_kind: kiln_synth::VocabKind::O200kHarmony, ..kiln_synth::GptOss::tiny() };
        spec.model().unwrap().write_file(&tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
    .clone()
}

/// openai-harmony's renderings (crates/kiln-tokenizer/tests/fixtures/harmony/render.json).
fn harmony_cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-tokenizer/tests/fixtures/harmony/render.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A harmony fixture case as an OpenAI chat request: tools as `tools`, the developer text as a
/// developer message, earlier answers with `reasoning_content`, tool calls with `tool_calls`,
/// tool results as `tool` messages answering their call's id.
fn openai_request(case: &Value) -> Value {
    let sys = case["system"].as_object().unwrap();
    assert!(sys.keys().all(|k| k == "reasoning_effort"), "{}: the API sets only the reasoning effort", case["name"]);
    let mut messages = Vec::new();
    if let Some(d) = case.get("developer") {
        messages.push(json!({"role": "developer", "content": d}));
    }
    let mut calls: Vec<String> = Vec::new(); // call_{i + 1} called calls[i]
    for m in case["messages"].as_array().unwrap() {
        messages.push(match m["role"].as_str().unwrap() {
            "user" => json!({"role": "user", "content": m["content"]}),
            "assistant" => json!({"role": "assistant", "content": m["content"], "reasoning_content": m["analysis"]}),
            "tool_call" => {
                calls.push(m["name"].as_str().unwrap().to_string());
                json!({"role": "assistant", "content": null, "reasoning_content": m["analysis"], "tool_calls": [
                    {"id": format!("call_{}", calls.len()), "type": "function",
                     "function": {"name": m["name"], "arguments": m["arguments"]}}]})
            }
            "tool_result" => {
                let i = calls.iter().rposition(|c| c == m["name"].as_str().unwrap()).expect("a result answers a call");
                json!({"role": "tool", "tool_call_id": format!("call_{}", i + 1), "content": m["content"]})
            }
            r => panic!("role {r}"),
        });
    }
    let mut req = json!({"messages": messages, "temperature": 0, "max_tokens": 8, "ignore_eos": true});
    if let Some(e) = sys.get("reasoning_effort") {
        req["reasoning_effort"] = e.clone();
    }
    if let Some(tools) = case.get("tools") {
        req["tools"] = tools.as_array().unwrap().iter().map(|t| json!({"type": "function", "function": t})).collect();
    }
    req
}

#[test]
fn gpt_oss_tools_render_as_openai_harmony_and_a_tool_call_comes_back_as_tool_calls() {
    let server = http_server(&o200k_gptoss(), &["--max-batch", "4", "--ctx", "2048"]);
    let h = server.http.as_str();
    let cases: Vec<Value> = harmony_cases()
        .into_iter()
        .filter(|c| {
            c.get("tools").is_some() && c["system"].as_object().unwrap().keys().all(|k| k == "reasoning_effort")
        })
        .collect();
    assert!(cases.len() >= 6, "{} tool cases", cases.len());
    let raw = |prompt: Value| {
        let r = post(
            h,
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let req = openai_request(case);
        let r = post(h, "/v1/chat/completions", &req);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let r = r.json();
        // The prompt is the library's token for token: as long, and the same greedy output as the
        // library's ids sent as a raw prompt.
        assert_eq!(r["usage"]["prompt_tokens"], len(&case["ids"]), "{name}");
        let m = &r["choices"][0]["message"];
        assert!(m.get("tool_calls").is_none() && m.get("reasoning_content").is_none(), "{name}: {m}");
        assert_eq!(m["content"].as_str().unwrap(), raw(case["ids"].clone()), "{name}");
    }

    // A forced call: the answer starts with the call's header; the model writes the arguments.
    let case = cases.iter().find(|c| c["name"] == "tool_call_result_final_user").unwrap();
    let mut req = openai_request(case);
    req["tool_choice"] = json!({"type": "function", "function": {"name": "get_current_weather"}});
    let r = post(h, "/v1/chat/completions", &req).json();
    let header = "<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>";
    let args = raw(json!(format!("{}{header}", case["text"].as_str().unwrap())));
    let choice = &r["choices"][0];
    assert_eq!(choice["message"]["content"], Value::Null, "{r}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_current_weather");
    assert_eq!(call["function"]["arguments"].as_str().unwrap(), args);
    // Cut at max_tokens, not ended by <|call|>.
    assert_eq!(choice["finish_reason"], "length");
    // Streamed: one tool call whose id, type and name come first, then arguments that add up.
    req["stream"] = json!(true);
    let c = chunks(&post(h, "/v1/chat/completions", &req));
    let deltas: Vec<&Value> = c.iter().filter_map(|x| x["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas[0][0]["function"]["name"], "get_current_weather");
    assert!(deltas[0][0]["id"].is_string() && deltas[0][0]["type"] == "function");
    assert!(deltas.iter().all(|d| d[0]["index"] == 0));
    assert!(deltas[1..].iter().all(|d| d[0].get("id").is_none()));
    let streamed: String = deltas.iter().map(|d| d[0]["function"]["arguments"].as_str().unwrap()).collect();
    assert_eq!(streamed, args);

    // tool_choice none: no tools in the prompt (the library's rendering without them).
    let plain = harmony_cases().into_iter().find(|c| c["name"] == "defaults").unwrap();
    let mut req = openai_request(case);
    req["messages"] = json!([{"role": "user", "content": "What is 2+2?"}]);
    req["tool_choice"] = json!("none");
    let r = post(h, "/v1/chat/completions", &req).json();
    assert_eq!(r["usage"]["prompt_tokens"], len(&plain["ids"]));
    // auto or none without tools is no tools (clients send it by default); required is refused.
    let mut req =
        json!({"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 2, "tool_choice": "auto"});
    assert_eq!(post(h, "/v1/chat/completions", &req).json()["usage"]["prompt_tokens"], len(&plain["ids"]));
    req["tool_choice"] = json!("required");
    expect_error(&post(h, "/v1/chat/completions", &req), 400, Some("tool_choice"));
    // Refused: a tool choice naming no tool, a tool result answering no call, a non-function tool.
    let mut bad = openai_request(case);
    bad["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    expect_error(&post(h, "/v1/chat/completions", &bad), 400, Some("tool_choice"));
    let mut bad = openai_request(case);
    bad["messages"][2]["tool_call_id"] = json!("call_unknown");
    expect_error(&post(h, "/v1/chat/completions", &bad), 400, Some("messages[2].tool_call_id"));
    let mut bad = openai_request(case);
    bad["tools"][0]["type"] = json!("retrieval");
    expect_error(&post(h, "/v1/chat/completions", &bad), 400, Some("tools[0].type"));
    // Stop strings cannot apply to harmony output.
    let mut bad = openai_request(case);
    bad["stop"] = json!(["x"]);
    expect_error(&post(h, "/v1/chat/completions", &bad), 400, None);
}

#[test]
fn gpt_oss_chat_splits_its_messages_as_generate_chat_parses_them() {
    // A random model ignores the format: its messages have no channel, or header words that name
    // no function; all of it is content. (The split into reasoning_content, content and
    // tool_calls is worked by hand in kiln-server's unit tests.)
    let model = Path::new(TINY_GPTOSS);
    let server = http_server(model, &["--max-batch", "4", "--ctx", "512"]);
    let h = server.http.as_str();
    for (prompt, effort) in [("Hi", "medium"), ("Tell me a joke", "medium"), ("x", "high")] {
        let want = generate(model, &["--chat", "-n", "48", "--ignore-eos", "--reasoning-effort", effort], prompt);
        let msgs = want["messages"].as_array().unwrap();
        assert!(!msgs.is_empty());
        let content: String = msgs.iter().map(|m| m["content"].as_str().unwrap()).collect();
        let body = json!({"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 48,
                          "ignore_eos": true, "reasoning_effort": effort});
        let r = post(h, "/v1/chat/completions", &body).json();
        let m = &r["choices"][0]["message"];
        assert_eq!(m["content"], content.as_str(), "{prompt} {effort}");
        assert!(m.get("reasoning_content").is_none() && m.get("tool_calls").is_none(), "{m}");
        assert_eq!(r["usage"]["prompt_tokens"], len(&want["prompt_ids"]));
        assert_eq!(r["usage"]["completion_tokens"], 48);
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let c = chunks(&post(h, "/v1/chat/completions", &sb));
        assert_eq!(gather(&c, "/delta/content")[0].0, content);
    }
}
