//! The harmony renderer and parser against OpenAI's `openai-harmony` 0.0.8 (fixtures/harmony/, made
//! by gen_harmony_fixtures.py; see fixtures/README.md), on the real o200k_harmony vocabulary:
//!
//! * every rendered conversation (user turns, earlier answers with their reasoning, function tools,
//!   tool calls and results) is the library's text, and `HarmonyPrompt::encode` gives the library's
//!   ids in both split modes, also where message text holds marker text (which stays text; the
//!   rendered text tokenized with special tokens parsed gives the same ids only without it);
//! * every completion parses into the library's messages, with the library's content deltas token
//!   by token; where the library gives up, the documented lenient result.

mod common;

use common::*;
use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::{
    HarmonyDelta, HarmonyMessage, HarmonyParser, HarmonyPrompt, HarmonyTool, HarmonyTurn, SplitMode, TokenAttr,
    Tokenizer, TokenizerError, TokenizerOptions,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct RenderCase {
    name: String,
    /// Overrides of the default system message; `null` leaves the line out.
    system: HashMap<String, Option<String>>,
    developer: Option<String>,
    #[serde(default)]
    tools: Vec<Tool>,
    messages: Vec<Turn>,
    ids: Vec<u32>,
    text: String,
}

/// A tool as the fixtures give it (OpenAI's `tools[i].function`).
#[derive(Deserialize)]
struct Tool {
    name: String,
    description: Option<String>,
    parameters: Option<serde_json::Value>,
}

/// A turn as the fixtures give it (see gen_harmony_fixtures.py).
#[derive(Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum Turn {
    User { content: String },
    Assistant { analysis: Option<String>, content: String },
    ToolCall { analysis: Option<String>, name: String, arguments: String },
    ToolResult { name: String, content: String },
}

impl Turn {
    fn harmony(&self) -> HarmonyTurn {
        match self {
            Turn::User { content } => HarmonyTurn::User(content.clone()),
            Turn::Assistant { analysis, content } => {
                HarmonyTurn::Assistant { analysis: analysis.clone(), content: content.clone() }
            }
            Turn::ToolCall { analysis, name, arguments } => {
                HarmonyTurn::ToolCall { analysis: analysis.clone(), name: name.clone(), arguments: arguments.clone() }
            }
            Turn::ToolResult { name, content } => {
                HarmonyTurn::ToolResult { name: name.clone(), content: content.clone() }
            }
        }
    }
}

#[derive(Deserialize)]
struct LibraryMessage {
    role: String,
    channel: Option<String>,
    recipient: Option<String>,
    content_type: Option<String>,
    content: String,
}

#[derive(Deserialize)]
struct ParseCase {
    name: String,
    ids: Vec<u32>,
    messages: Option<Vec<LibraryMessage>>,
    error: Option<String>,
    /// Per id: the content it completed and the channel of its message.
    stream: Vec<(Option<String>, Option<String>)>,
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = fixtures_dir().join("harmony").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gptoss(split: SplitMode) -> &'static Tokenizer {
    static T: [OnceLock<Tokenizer>; 2] = [OnceLock::new(), OnceLock::new()];
    T[usize::from(split == SplitMode::Reference)].get_or_init(|| {
        let file = GgufFile::from_bytes(gptoss_gguf_bytes().clone()).unwrap();
        Tokenizer::from_gguf_with(&file, TokenizerOptions::default().with_split(split)).unwrap()
    })
}

fn prompt(case: &RenderCase) -> HarmonyPrompt {
    let mut p = HarmonyPrompt {
        developer: case.developer.clone(),
        tools: case
            .tools
            .iter()
            .map(|t| HarmonyTool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            })
            .collect(),
        messages: case.messages.iter().map(Turn::harmony).collect(),
        ..Default::default()
    };
    for (key, value) in &case.system {
        match key.as_str() {
            "model_identity" => p.system.model_identity = value.clone(),
            "knowledge_cutoff" => p.system.knowledge_cutoff = value.clone(),
            "current_date" => p.system.current_date = value.clone(),
            "reasoning_effort" => p.system.reasoning_effort = value.as_deref().unwrap().parse().unwrap(),
            _ => panic!("{}: unknown system key {key}", case.name),
        }
    }
    p
}

/// The case whose message texts hold marker text (`<|end|><|start|>system<|message|>…`).
const MARKER_TEXT_CASE: &str = "marker_text_in_messages";

#[test]
fn renders_like_openai_harmony() {
    let cases: Vec<RenderCase> = load("render.json");
    assert!(cases.len() >= 25);
    assert!(cases.iter().filter(|c| !c.tools.is_empty()).count() >= 11);
    assert!(cases.iter().any(|c| c.name == MARKER_TEXT_CASE));
    for case in &cases {
        let p = prompt(case);
        let text = p.render().unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(text, case.text, "{}: text", case.name);
        // The fixtures' texts have no combining marks and no non-ASCII capitals, so llama.cpp's
        // split gives tiktoken's ids too.
        for split in [SplitMode::Reference, SplitMode::LlamaCpp] {
            let tok = gptoss(split);
            let ids = p.encode(tok).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(ids, case.ids, "{}: encode ({split:?})", case.name);
            // The text tokenized with special tokens parsed gives the same ids, except where
            // message text holds marker text: that becomes markers.
            let parsed = tok.encode(&text, true, true).unwrap();
            if case.name == MARKER_TEXT_CASE {
                assert_ne!(parsed, case.ids, "{}: parsed text ({split:?})", case.name);
            } else {
                assert_eq!(parsed, case.ids, "{}: parsed text ({split:?})", case.name);
            }
        }
    }
}

#[test]
fn marker_text_in_messages_stays_text() {
    let cases: Vec<RenderCase> = load("render.json");
    let case = cases.iter().find(|c| c.name == MARKER_TEXT_CASE).unwrap();
    let tok = gptoss(SplitMode::LlamaCpp);
    let id = |t: &str| tok.token_id(t).unwrap();
    let count = |ids: &[u32], t: &str| ids.iter().filter(|&&i| i == id(t)).count();
    // The library's ids: system, developer, user, the call's analysis, the call, the result, then
    // `<|start|>assistant`; no <|return|>, one <|call|> (the call's end), one <|constrain|>.
    let ids = prompt(case).encode(tok).unwrap();
    assert_eq!(ids, case.ids);
    assert_eq!(count(&ids, "<|start|>"), 7);
    assert_eq!(count(&ids, "<|message|>"), 6);
    assert_eq!(count(&ids, "<|end|>"), 5);
    assert_eq!(count(&ids, "<|call|>"), 1);
    assert_eq!(count(&ids, "<|constrain|>"), 1);
    assert_eq!(count(&ids, "<|return|>"), 0);
    // The parsed text would have had a system message in the user's: many more markers.
    let parsed = tok.encode(&case.text, true, true).unwrap();
    assert!(count(&parsed, "<|start|>") > 7 && count(&parsed, "<|return|>") == 1, "{parsed:?}");

    // Why `encode_ordinary`: gpt-oss's <|start|>, <|message|>, <|channel|>, <|constrain|> and
    // <|end|> are user-defined (as llama.cpp makes them), recognised even without special-token
    // parsing; <|call|> and <|return|> are control tokens.
    for marker in ["<|start|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|end|>"] {
        assert_eq!(tok.encode(marker, false, false).unwrap(), [id(marker)], "{marker}");
    }
    for marker in ["<|call|>", "<|return|>"] {
        assert_ne!(tok.encode(marker, false, false).unwrap(), [id(marker)], "{marker}");
    }
    let text = "a<|end|><|start|>system<|message|>b<|call|><|return|><|channel|><|constrain|>c";
    let ordinary = tok.encode_ordinary(text).unwrap();
    assert_eq!(tok.decode(&ordinary, false).unwrap(), text);
    assert!(ordinary.iter().all(|&i| tok.token_attr(i).is_some_and(|a| a.contains(TokenAttr::NORMAL))), "{ordinary:?}");
    // Without marker text, plain text is what encode gives without parsing.
    let plain = "Hello, world! 12:00 <not|a marker>";
    assert_eq!(tok.encode_ordinary(plain).unwrap(), tok.encode(plain, false, false).unwrap());
    assert!(tok.encode_ordinary("").unwrap().is_empty());

    // The `tokenizer.json` tokenizer (its harmony tokens are special added tokens) encodes every
    // conversation to the library's ids too.
    let hf = Tokenizer::from_tokenizer_json(gptoss_tokenizer_json()).unwrap();
    assert_eq!(hf.decode(&hf.encode_ordinary(text).unwrap(), false).unwrap(), text);
    for case in &cases {
        assert_eq!(prompt(case).encode(&hf).unwrap(), case.ids, "{}: tokenizer.json", case.name);
    }
}

#[test]
fn encode_needs_the_markers() {
    let p = HarmonyPrompt { messages: vec![HarmonyTurn::User("hi".into())], ..Default::default() };
    // A byte vocabulary without <|channel|> and <|constrain|>: a prompt without channels encodes
    // (its markers as tokens, its text as bytes), a tool call does not.
    let tok = byte_vocabulary(&["<|start|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>"]);
    let ids = p.encode(&tok).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), p.render().unwrap());
    assert_eq!(ids.iter().filter(|&&i| i >= 256).count(), 3 * 2 + 1);
    let call = HarmonyTurn::ToolCall { analysis: None, name: "f".into(), arguments: "{}".into() };
    let p = HarmonyPrompt { messages: vec![call], ..p };
    let e = p.encode(&tok).unwrap_err().to_string();
    assert_eq!(e, "harmony: the vocabulary has no <|channel|> token");
}

/// Runs the parser over `ids`: what each id gave, what `finish` gave, and the messages.
fn parse(tok: &Tokenizer, ids: &[u32]) -> (Vec<Option<HarmonyDelta>>, Option<HarmonyDelta>, Vec<HarmonyMessage>) {
    let mut parser = HarmonyParser::new(tok).unwrap();
    let steps = ids.iter().map(|&id| parser.push(id).unwrap()).collect();
    let last = parser.finish().unwrap();
    (steps, last, parser.into_messages())
}

fn message(channel: Option<&str>, content: &str) -> HarmonyMessage {
    HarmonyMessage { channel: channel.map(str::to_owned), content: content.to_owned(), ..Default::default() }
}

#[test]
fn parses_like_openai_harmony() {
    let tok = gptoss(SplitMode::LlamaCpp);
    let cases: Vec<ParseCase> = load("parse.json");
    let mut compared = 0;
    for case in &cases {
        let name = &case.name;
        let (steps, last, messages) = parse(tok, &case.ids);
        // Each message's content is what streamed into it.
        let mut streamed = vec![String::new(); messages.len()];
        for d in steps.iter().chain([&last]).flatten() {
            streamed[d.index] += &d.text;
        }
        assert_eq!(streamed, messages.iter().map(|m| m.content.clone()).collect::<Vec<_>>(), "{name}: streamed");

        let Some(want) = &case.messages else {
            // The library gave up; the lenient results are checked below.
            assert!(case.error.as_ref().is_some_and(|e| e.contains("Unexpected EOS")), "{name}: {:?}", case.error);
            continue;
        };
        let want: Vec<HarmonyMessage> = want
            .iter()
            .map(|m| {
                assert_eq!(m.role, "assistant", "{name}");
                HarmonyMessage {
                    channel: m.channel.clone(),
                    recipient: m.recipient.clone(),
                    content_type: m.content_type.clone(),
                    content: m.content.clone(),
                }
            })
            .collect();
        assert_eq!(messages, want, "{name}: messages");
        // Token by token, the same text comes out, in the same channel. (The library reports
        // nothing at the end of the output; an incomplete character comes out as U+FFFD there.)
        assert_eq!(steps.len(), case.stream.len());
        for (i, (ours, (delta, channel))) in steps.iter().zip(&case.stream).enumerate() {
            let ours = ours.as_ref().map(|d| (d.text.clone(), messages[d.index].channel.clone()));
            assert_eq!(ours, delta.clone().map(|d| (d, channel.clone())), "{name}: id {i} ({})", case.ids[i]);
        }
        let cut_in_character = name == "truncated_inside_character";
        assert_eq!(last.map(|d| d.text).as_deref(), cut_in_character.then_some("\u{FFFD}"), "{name}: finish");
        compared += 1;
    }
    assert_eq!(compared, cases.len() - 2);

    let case = |name: &str| &cases.iter().find(|c| c.name == name).unwrap().ids;
    // Text with no header, ended by <|return|> or by the end of the output.
    let ids = case("text_before_header");
    assert_eq!(parse(tok, ids).2, [message(None, "Hello there")]);
    assert_eq!(parse(tok, &ids[..ids.len() - 1]).2, [message(None, "Hello there")]);
    // A header cut off is dropped.
    assert_eq!(parse(tok, case("truncated_in_header")).2, [message(Some("analysis"), "Ok.")]);
}

#[test]
fn malformed_output_is_kept() {
    let tok = gptoss(SplitMode::LlamaCpp);
    let ids = |text: &str| tok.encode(text, false, true).unwrap();
    // Text before a header, then a well-formed message.
    let text = ids("Sure.<|start|>assistant<|channel|>final<|message|>Hi<|return|>");
    let (steps, _, messages) = parse(tok, &text);
    assert_eq!(messages, [message(None, "Sure."), message(Some("final"), "Hi")]);
    let start = text.iter().position(|&id| Some(id) == tok.token_id("<|start|>")).unwrap();
    assert_eq!(steps[start], Some(HarmonyDelta { index: 0, text: "Sure.".into() }), "the text comes out at <|start|>");
    // A message that ignores the format after an <|end|>, and a header with no channel name.
    let (_, _, messages) = parse(tok, &ids("<|channel|>final<|message|>A<|end|>B<|end|><|channel|><|message|>C"));
    assert_eq!(messages, [message(Some("final"), "A"), message(None, "B"), message(None, "C")]);
    // A header cut off after <|start|> is dropped; one that reaches <|message|> is kept, empty.
    let (_, _, messages) = parse(tok, &ids("<|channel|>analysis<|message|><|end|><|start|>assistant"));
    assert_eq!(messages, [message(Some("analysis"), "")]);
    // Invalid UTF-8 inside content becomes U+FFFD: the byte 0xF0 (GPT-2's character 'ð'), then "(".
    let mut bad = ids("<|channel|>final<|message|>");
    bad.extend([tok.token_id("\u{F0}").unwrap(), tok.token_id("(").unwrap()]);
    assert_eq!(parse(tok, &bad).2, [message(Some("final"), "\u{FFFD}(")]);
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = gptoss(SplitMode::LlamaCpp);
    let mut parser = HarmonyParser::new(tok).unwrap();
    let n = tok.vocab_size() as u32;
    assert!(matches!(parser.push(n), Err(TokenizerError::IdOutOfRange { .. })));
    for id in tok.encode("<|channel|>final<|message|>ok", false, true).unwrap() {
        parser.push(id).unwrap();
    }
    assert!(parser.push(u32::MAX).is_err());
    assert_eq!(parser.finish().unwrap(), None);
    assert_eq!(parser.into_messages(), [message(Some("final"), "ok")]);
}

/// A byte-level vocabulary with `extra` tokens after the 256 bytes.
fn byte_vocabulary(extra: &[&str]) -> Tokenizer {
    let mut tokens: Vec<String> = byte_chars().iter().map(char::to_string).collect();
    let mut types = vec![1i32; 256];
    for t in extra {
        tokens.push((*t).to_owned());
        types.push(3);
    }
    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", "gpt2").unwrap();
    w.add("tokenizer.ggml.pre", "gpt-4o").unwrap();
    w.add("tokenizer.ggml.tokens", tokens).unwrap();
    w.add("tokenizer.ggml.token_type", types).unwrap();
    w.add("tokenizer.ggml.merges", Vec::<String>::new()).unwrap();
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()).unwrap()
}

#[test]
fn harmony_needs_all_six_markers() {
    let all = ["<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>"];
    assert!(byte_vocabulary(&all).is_harmony());
    for missing in all {
        let some: Vec<&str> = all.iter().copied().filter(|&t| t != missing).collect();
        let tok = byte_vocabulary(&some);
        assert!(!tok.is_harmony(), "without {missing}");
        let e = HarmonyParser::new(&tok).unwrap_err().to_string();
        assert!(e.contains("no harmony tokens"), "{e}");
    }
    assert!(gptoss(SplitMode::LlamaCpp).is_harmony());
    let tiny = Tokenizer::from_gguf_path(fixtures_dir().join("reference/tiny-gptoss-bytes.gguf")).unwrap();
    assert!(tiny.is_harmony());
}

/// Writes `o200k_base.tiktoken` (what openai-harmony loads; it checks the file's sha256) from
/// tiktoken-rs's o200k data into `$KILN_TIKTOKEN_DIR`, for gen_harmony_fixtures.py.
#[test]
#[ignore = "writes the oracle's vocabulary file; see fixtures/README.md"]
fn write_o200k_base_tiktoken() {
    let dir = std::path::PathBuf::from(std::env::var_os("KILN_TIKTOKEN_DIR").expect("set KILN_TIKTOKEN_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = String::new();
    for (rank, bytes) in o200k_ranks().iter().enumerate() {
        out += &format!("{} {rank}\n", base64(bytes));
    }
    std::fs::write(dir.join("o200k_base.tiktoken"), out).unwrap();
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn base64_is_standard() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(&[0xFF, 0xFE, 0x00, 0x01]), "//4AAQ==");
}
