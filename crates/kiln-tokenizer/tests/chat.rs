//! Chat templates against Jinja2 as `transformers` runs it (fixtures/chat/expected.json, made by
//! fixtures/chat/gen_chat_fixtures.py), and against the prompt of the reference ChatML run.

mod common;

use common::fixtures_dir;
use kiln_tokenizer::{ChatOptions, ChatTemplate, Message, Tokenizer, render_chat};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = fixtures_dir().join("chat").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn templates_render_like_jinja2() {
    let cases = load("cases.json");
    let expected = load("expected.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), expected.as_array().unwrap().len());
    let mut errors_checked = 0;
    for (case, want) in cases.iter().zip(expected.as_array().unwrap()) {
        let name = case["name"].as_str().unwrap();
        assert_eq!(want["name"], case["name"]);
        let template = match case.get("template_file") {
            Some(f) => std::fs::read_to_string(fixtures_dir().join("chat").join(f.as_str().unwrap())).unwrap(),
            None => case["template"].as_str().unwrap().to_owned(),
        };
        let options = ChatOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            bos_token: case.get("bos_token").and_then(Value::as_str).unwrap_or("").to_owned(),
            eos_token: case.get("eos_token").and_then(Value::as_str).unwrap_or("").to_owned(),
            extra: case.get("extra").and_then(Value::as_object).cloned().unwrap_or_default(),
            now: Some(case.get("now").and_then(Value::as_i64).unwrap_or(0)),
        };
        let got = ChatTemplate::new(&template)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .render_json(&case["messages"], &options);
        match (want.get("ok"), want.get("error")) {
            (Some(text), _) => {
                assert_eq!(got.unwrap_or_else(|e| panic!("{name}: {e}")), text.as_str().unwrap(), "{name}")
            }
            (_, Some(msg)) => {
                let e = got.expect_err(name).to_string();
                assert!(e.contains(msg.as_str().unwrap()), "{name}: {e}");
                errors_checked += 1;
            }
            _ => panic!("{name}: bad fixture"),
        }
    }
    assert_eq!(errors_checked, 2);
}

#[test]
fn smollm2_template_comes_from_the_gguf() {
    let tok = Tokenizer::from_gguf_path(common::smollm2_path()).unwrap();
    let cases = load("cases.json");
    let case = &cases[0];
    assert_eq!(case["template_from_gguf"], "smollm2");
    assert_eq!(tok.chat_template(), case["template"].as_str());
    // Tokenizer::render_chat fills bos_token / eos_token from the vocabulary.
    let text = tok.render_chat(&[Message::new("user", "What is the capital of France?")], true).unwrap();
    assert_eq!(text, load("expected.json")[0]["ok"].as_str().unwrap());
    // Gemma 3 270M's GGUF has no template.
    let gemma = Tokenizer::from_gguf_path(common::gemma3_path()).unwrap();
    assert!(gemma.chat_template().is_none());
    assert!(gemma.render_chat(&[], true).is_err());
}

#[test]
fn chatml_renders_the_reference_prompt() {
    // The prompt llama.cpp's reference run used (reference/smollm2_chatml_greedy.json) is plain
    // ChatML for one user message. (SmolLM2's own template would add a default system message.)
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("reference/smollm2_chatml_greedy.json")).unwrap(),
    )
    .unwrap();
    let chatml = load("cases.json")[2]["template"].as_str().unwrap().to_owned();
    let text = render_chat(&chatml, &[Message::new("user", "What is the capital of France?")], true, "", "").unwrap();
    assert_eq!(text, reference["prompt"].as_str().unwrap());
}

#[test]
fn template_errors_are_values() {
    assert!(ChatTemplate::new("{% for x in %}").is_err());
    assert!(render_chat("{{ messages[0].content.strip( }}", &[], false, "", "").is_err());
    // Undefined data renders as nothing (Jinja2's default), a missing message index is an error
    // only where Jinja2's is.
    assert_eq!(render_chat("[{{ nothing }}]", &[], false, "", "").unwrap(), "[]");
}
