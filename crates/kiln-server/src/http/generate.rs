//! `POST /v1/chat/completions` and `POST /v1/completions`: requests into engine requests (one
//! per choice), events into a JSON response or server-sent events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_sched::{Event, Final, Finish, Input, Message, Request, SamplingParams, Submitted, TokenLogprob};
use kiln_tokenizer::{HarmonyPrompt, HarmonyTool, HarmonyTurn};
use serde_json::{Value, json};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{StreamExt, StreamMap};

use super::types::{ChatMessage, ChatRequest, Common, CompletionRequest, Content, Prompt, ToolChoice};
use super::{ApiError, Body, HttpState, Ready};
use crate::convert::{MAX_STOP_BYTES, MAX_STOPS};
use crate::metrics::TokenClock;

/// Most choices (`n`) one request may ask for.
const MAX_N: i64 = 64;
/// `/v1/completions`' default `max_tokens` (OpenAI's).
const COMPLETIONS_MAX_TOKENS: usize = 16;
const FINGERPRINT: &str = concat!("kiln-", env!("CARGO_PKG_VERSION"));

/// What one response is made of, whichever the endpoint.
struct Plan {
    chat: bool,
    /// Engine requests, one per choice, in choice order.
    requests: Vec<Request>,
    /// Choices per prompt (`n`).
    n: usize,
    stream: bool,
    include_usage: bool,
    /// Top log-probabilities to show per token; `None`: no logprobs.
    top_logprobs: Option<usize>,
    /// Harmony output (chat on gpt-oss): channels become reasoning, content and tool calls.
    harmony: bool,
}

pub(crate) async fn chat(State(st): State<Arc<HttpState>>, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let ready = st.ready()?;
    let plan = chat_plan(ready, &body).inspect_err(|_| ready.metrics.rejected("rejected_invalid"))?;
    run(ready, plan, arrived).await
}

pub(crate) async fn completions(State(st): State<Arc<HttpState>>, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let ready = st.ready()?;
    let plan = completion_plan(&body).inspect_err(|_| ready.metrics.rejected("rejected_invalid"))?;
    run(ready, plan, arrived).await
}

/// Sampling, limits and stop strings from the fields both endpoints share, as a template
/// request; `n`; and whether to stream with usage.
fn common(
    c: &Common,
    (max_param, max_tokens): (&str, Option<i64>),
    default_max: Option<usize>,
) -> Result<(Request, usize), ApiError> {
    let d = SamplingParams::default();
    let mut r = Request::new(Input::Tokens(Vec::new()));
    r.max_tokens = match max_tokens {
        Some(m) if m < 0 => return Err(ApiError::bad(max_param, format!("{max_param} = {m}: expected 0 or more"))),
        Some(m) => Some(m as usize),
        None => default_max,
    };
    let n = c.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::bad("n", format!("n = {n}: expected 1 to {MAX_N}")));
    }
    if c.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::bad("logit_bias", "logit_bias is not supported"));
    }
    let stop = c.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad("stop", format!("{} stop strings; at most {MAX_STOPS}", stop.len())));
    }
    if let Some((i, s)) = stop.iter().enumerate().find(|(_, s)| s.len() > MAX_STOP_BYTES || s.is_empty()) {
        return Err(ApiError::bad(
            "stop",
            format!("stop[{i}] is {} bytes long; expected 1 to {MAX_STOP_BYTES}", s.len()),
        ));
    }
    r.stop = stop;
    r.sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(d.temperature),
        // vLLM's -1 and llama.cpp's 0 both mean no top-k.
        top_k: c.top_k.map(|k| k.max(0) as u32).unwrap_or(d.top_k),
        top_p: c.top_p.unwrap_or(d.top_p),
        min_p: c.min_p.unwrap_or(d.min_p),
        repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: d.repeat_last_n,
        presence_penalty: c.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: c.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: 0,
    };
    // OpenAI's range starts at 0 (kiln's own API reads a negative temperature as greedy).
    if r.sampling.temperature < 0.0 {
        return Err(ApiError::bad(
            "temperature",
            format!("temperature = {}: expected 0 or more", r.sampling.temperature),
        ));
    }
    // Checked here as well as by the engine, to name the field before any choice is submitted.
    if let Err(e) = r.sampling.validate() {
        let err = ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
        return Err(match e {
            kiln_sample::SamplingError::InvalidParameter { name, .. } => err.param(name),
            kiln_sample::SamplingError::EmptyStopString { .. } => err.param("stop"),
        });
    }
    r.seed = c.seed.map(|s| s as u64);
    r.ignore_eos = c.ignore_eos;
    Ok((r, n as usize))
}

/// The engine's log-probability count for `top` shown alternatives (the chosen token's own
/// log-probability needs at least one).
fn engine_logprobs(top: Option<usize>) -> usize {
    top.map_or(0, |t| t.max(1))
}

fn check_top(param: &str, top: i64) -> Result<usize, ApiError> {
    if !(0..=20).contains(&top) {
        return Err(ApiError::bad(param, format!("{param} = {top}: expected 0 to 20")));
    }
    Ok(top as usize)
}

/// Copies of `template` for `inputs` × `n` choices, with seeds `seed`, `seed + 1`, … when set.
fn choices(template: &Request, inputs: Vec<Input>, n: usize) -> Vec<Request> {
    let mut out = Vec::with_capacity(inputs.len() * n);
    for input in inputs {
        for _ in 0..n {
            let mut r = template.clone();
            r.input = input.clone();
            r.seed = template.seed.map(|s| s.wrapping_add(out.len() as u64));
            out.push(r);
        }
    }
    out
}

fn chat_plan(ready: &Ready, body: &Body) -> Result<Plan, ApiError> {
    let c: Common = body.parse()?;
    let req: ChatRequest = body.parse()?;
    let max = match req.max_completion_tokens {
        Some(m) => ("max_completion_tokens", Some(m)),
        None => ("max_tokens", c.max_tokens),
    };
    let (mut template, n) = common(&c, max, None)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad("messages", "messages is empty"));
    }
    if let Some(f) = &req.response_format
        && f.kind != "text"
    {
        return Err(ApiError::bad(
            "response_format",
            format!("response_format {:?} is not supported (no constrained decoding); only \"text\"", f.kind),
        ));
    }
    let top_logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (true, t) => Some(check_top("top_logprobs", t.unwrap_or(0))?),
        (false, Some(t)) if t > 0 => {
            return Err(ApiError::bad("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        (false, _) => None,
    };
    template.logprobs = engine_logprobs(top_logprobs);
    let input = if ready.harmony {
        harmony_input(&req)?
    } else {
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad("tools", "tools are supported on gpt-oss (harmony) models only"));
        }
        let mut messages = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::bad(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}].role = {:?}: expected system, developer, user, assistant or tool", m.role),
                ));
            }
            if m.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                return Err(ApiError::bad(
                    &format!("messages[{i}].tool_calls"),
                    "tool calls are supported on gpt-oss (harmony) models only",
                ));
            }
            messages.push(Message::new(m.role.clone(), text(i, m)?));
        }
        Input::Messages(messages)
    };
    Ok(Plan {
        chat: true,
        requests: choices(&template, vec![input], n),
        n,
        stream: c.stream,
        include_usage: c.stream && c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        top_logprobs,
        harmony: ready.harmony,
    })
}

/// A message's text: a string, or the concatenation of its text parts.
fn text(i: usize, m: &ChatMessage) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t.clone()),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push_str(t),
                    ("text", None) => {
                        return Err(ApiError::bad(
                            &format!("messages[{i}].content[{j}].text"),
                            "a text part needs text",
                        ));
                    }
                    (k, _) => {
                        return Err(ApiError::bad(
                            &format!("messages[{i}].content[{j}].type"),
                            format!("content part type {k:?} is not supported; only \"text\""),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// An OpenAI conversation as harmony: `system` and `developer` messages become the developer
/// instructions (as gpt-oss's chat template does), tool calls and results become their harmony
/// messages, `tools` the developer message's function namespace.
fn harmony_input(req: &ChatRequest) -> Result<Input, ApiError> {
    let mut p = HarmonyPrompt::default();
    if let Some(e) = &req.reasoning_effort {
        p.system.reasoning_effort = e.parse().map_err(|_| {
            ApiError::bad("reasoning_effort", format!("reasoning_effort {e:?}: expected low, medium or high"))
        })?;
    }
    let mut instructions = Vec::new();
    let mut calls: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let content = text(i, m)?;
        match m.role.as_str() {
            "system" | "developer" => instructions.push(content),
            "user" => p.messages.push(HarmonyTurn::User(content)),
            "assistant" => match m.tool_calls.as_deref() {
                Some(tc) if !tc.is_empty() => {
                    for (j, c) in tc.iter().enumerate() {
                        if c.kind.as_deref().is_some_and(|k| k != "function") {
                            return Err(ApiError::bad(
                                &format!("messages[{i}].tool_calls[{j}].type"),
                                "only function tool calls are supported",
                            ));
                        }
                        if let Some(id) = &c.id {
                            calls.insert(id, &c.function.name);
                        }
                        p.messages.push(HarmonyTurn::ToolCall {
                            analysis: if j == 0 { m.reasoning_content.clone() } else { None },
                            name: c.function.name.clone(),
                            arguments: c.function.arguments.clone(),
                        });
                    }
                }
                _ => p.messages.push(HarmonyTurn::Assistant { analysis: m.reasoning_content.clone(), content }),
            },
            "tool" => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| calls.get(id).copied())
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        ApiError::bad(
                            &format!("messages[{i}].tool_call_id"),
                            format!(
                                "messages[{i}] (role tool): tool_call_id {:?} names no earlier assistant tool call (and no name is given)",
                                m.tool_call_id.as_deref().unwrap_or("")
                            ),
                        )
                    })?;
                p.messages.push(HarmonyTurn::ToolResult { name: name.to_owned(), content });
            }
            other => {
                return Err(ApiError::bad(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}].role = {other:?}: expected system, developer, user, assistant or tool"),
                ));
            }
        }
    }
    if !instructions.is_empty() {
        p.developer = Some(instructions.join("\n\n"));
    }
    let mut names = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let f = match (t.kind.as_str(), &t.function) {
            ("function", Some(f)) => f,
            ("function", None) => {
                return Err(ApiError::bad(&format!("tools[{i}].function"), "a function tool needs function"));
            }
            (k, _) => {
                return Err(ApiError::bad(
                    &format!("tools[{i}].type"),
                    format!("tool type {k:?} is not supported; only \"function\""),
                ));
            }
        };
        if f.name.is_empty() || f.name.contains(|c: char| c.is_whitespace() || c == '<') {
            return Err(ApiError::bad(
                &format!("tools[{i}].function.name"),
                format!("function name {:?} is not valid", f.name),
            ));
        }
        names.push(f.name.as_str());
        p.tools.push(HarmonyTool {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters: f.parameters.clone(),
        });
    }
    // What the answer must begin with: nothing (auto), any function call, or that function's.
    let prefix = match &req.tool_choice {
        None => String::new(),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => String::new(),
            "none" => {
                p.tools.clear();
                String::new()
            }
            "required" if names.is_empty() => {
                return Err(ApiError::bad("tool_choice", "tool_choice \"required\" needs tools"));
            }
            "required" => "<|channel|>commentary to=functions.".to_owned(),
            other => {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("tool_choice {other:?}: expected none, auto, required or a function"),
                ));
            }
        },
        Some(ToolChoice::Named(t)) => {
            if t.kind != "function" || !names.contains(&t.function.name.as_str()) {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("tool_choice names function {:?}, which is not among the tools", t.function.name),
                ));
            }
            format!("<|channel|>commentary to=functions.{} <|constrain|>json<|message|>", t.function.name)
        }
    };
    // The prompt is rendered now so that a bad schema is a 400 naming tools.
    p.render().map_err(|e| ApiError::bad("tools", e.to_string()))?;
    Ok(Input::Harmony { prompt: Box::new(p), prefix })
}

fn completion_plan(body: &Body) -> Result<Plan, ApiError> {
    let c: Common = body.parse()?;
    let req: CompletionRequest = body.parse()?;
    let (mut template, n) = common(&c, ("max_tokens", c.max_tokens), Some(COMPLETIONS_MAX_TOKENS))?;
    if req.echo {
        return Err(ApiError::bad("echo", "echo is not supported"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix is not supported"));
    }
    if let Some(b) = req.best_of
        && b != n as i64
    {
        return Err(ApiError::bad("best_of", format!("best_of = {b}: only best_of equal to n ({n}) is supported")));
    }
    let top_logprobs = req.logprobs.map(|t| check_top("logprobs", t)).transpose()?;
    template.logprobs = engine_logprobs(top_logprobs);
    let inputs: Vec<Input> = match req.prompt {
        Prompt::Text(t) => vec![Input::Text(t)],
        Prompt::Texts(t) => t.into_iter().map(Input::Text).collect(),
        Prompt::Tokens(t) => vec![Input::Tokens(t)],
        Prompt::TokenLists(t) => t.into_iter().map(Input::Tokens).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::bad("prompt", "prompt is an empty list"));
    }
    if inputs.len() * n > MAX_N as usize {
        return Err(ApiError::bad("prompt", format!("{} prompts × n = {n} choices; at most {MAX_N}", inputs.len())));
    }
    for (i, input) in inputs.iter().enumerate() {
        let empty = match input {
            Input::Text(t) => t.is_empty(),
            Input::Tokens(t) => t.is_empty(),
            _ => false,
        };
        if empty {
            return Err(ApiError::bad("prompt", format!("prompt {i} is empty")));
        }
    }
    Ok(Plan {
        chat: false,
        requests: choices(&template, inputs, n),
        n,
        stream: c.stream,
        include_usage: c.stream && c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        top_logprobs,
        harmony: false,
    })
}

/// Submits every choice (all or none) and answers.
async fn run(ready: &Ready, mut plan: Plan, arrived: Instant) -> Result<Response, ApiError> {
    let engine = ready.engine.clone();
    let requests = std::mem::take(&mut plan.requests);
    // Tokenizing long prompts takes a while: off the async threads.
    let submitted = tokio::task::spawn_blocking(move || {
        let mut out: Vec<Submitted> = Vec::with_capacity(requests.len());
        for r in requests {
            match engine.submit(r) {
                Ok(s) => out.push(s),
                Err(e) => {
                    for s in &out {
                        engine.cancel(&s.id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("submitting the request: {e}")))?;
    let submitted = match submitted {
        Ok(s) => s,
        Err(e) => {
            ready.metrics.rejected(crate::convert::submit_error_label(&e));
            return Err(ApiError::submit(&e));
        }
    };
    let meta = Meta {
        id: format!("{}-{}", if plan.chat { "chatcmpl" } else { "cmpl" }, submitted[0].id.trim_start_matches("req-")),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        model: ready.model.clone(),
        chat: plan.chat,
        include_usage: plan.include_usage,
    };
    let mut events = StreamMap::new();
    let mut accs = Vec::with_capacity(submitted.len());
    for (i, s) in submitted.into_iter().enumerate() {
        events.insert(i, UnboundedReceiverStream::new(s.events));
        accs.push(Choice::new(i, plan.harmony, plan.top_logprobs, TokenClock::new(arrived)));
    }
    let metrics = ready.metrics.clone();
    if !plan.stream {
        while let Some((i, e)) = events.next().await {
            let c: &mut Choice = &mut accs[i];
            c.clock.observe(&metrics, &e);
            c.event(e);
        }
        // A failure inside the engine is the server's, not the request's.
        if let Some(e) = accs.iter().find_map(|c| c.end.as_ref().and_then(|f| f.error.clone())) {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e));
        }
        return Ok(axum::Json(meta.response(&accs, plan.n)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let n = plan.n;
    tokio::spawn(async move {
        let send = |v: Value| {
            let tx = tx.clone();
            async move { tx.send(Ok(SseEvent::default().data(v.to_string()))).await.is_ok() }
        };
        if meta.chat {
            for c in &accs {
                if !send(meta.chunk(c.index, json!({"role": "assistant", "content": ""}), Value::Null, None)).await {
                    return;
                }
            }
        }
        // Ends when every choice has its final event; a client that went away drops `rx`, the
        // sends fail, and dropping `events` cancels what is still running.
        while let Some((i, e)) = events.next().await {
            let c = &mut accs[i];
            c.clock.observe(&metrics, &e);
            for v in c.event(e).into_iter().map(|p| meta.piece(c, p)) {
                if !send(v).await {
                    return;
                }
            }
        }
        if meta.include_usage && !send(meta.usage_chunk(&accs, n)).await {
            return;
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    // A comment line every 15 s keeps proxies from closing a stream that waits on a long prefill.
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response())
}

/// What every response and chunk repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    include_usage: bool,
}

/// A part of a choice's output as it streams.
enum Piece {
    Content {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Reasoning(String),
    /// A tool call begins (with the first arguments text).
    ToolStart {
        id: String,
        name: String,
        arguments: String,
    },
    ToolArguments(String),
    Finish,
    Error(String),
}

/// One choice's output so far.
struct Choice {
    index: usize,
    harmony: bool,
    top: Option<usize>,
    clock: TokenClock,
    content: String,
    reasoning: String,
    tool: Option<(String, String, String)>,
    logprobs: Vec<TokenLogprob>,
    end: Option<Final>,
}

impl Choice {
    fn new(index: usize, harmony: bool, top: Option<usize>, clock: TokenClock) -> Choice {
        Choice {
            index,
            harmony,
            top,
            clock,
            content: String::new(),
            reasoning: String::new(),
            tool: None,
            logprobs: Vec::new(),
            end: None,
        }
    }

    /// Takes in one event; what it adds to the output.
    fn event(&mut self, e: Event) -> Vec<Piece> {
        match e {
            Event::First { .. } => Vec::new(),
            Event::Token { text, logprobs, channel, recipient, .. } => {
                let mut logprobs: Vec<TokenLogprob> = if self.top.is_some() { logprobs } else { Vec::new() };
                for l in &mut logprobs {
                    l.top.truncate(self.top.unwrap_or(0));
                }
                if !self.harmony {
                    return self.content(text, logprobs);
                }
                if let Some(name) = recipient.as_deref().and_then(|r| r.strip_prefix("functions.")) {
                    return self.tool_text(name, text).into_iter().collect();
                }
                match channel.as_deref() {
                    Some("analysis") if !text.is_empty() => {
                        self.reasoning.push_str(&text);
                        vec![Piece::Reasoning(text)]
                    }
                    Some("analysis") => Vec::new(),
                    // The answer; a commentary preamble or text outside the format is shown too.
                    Some("final") => self.content(text, logprobs),
                    _ => self.content(text, Vec::new()),
                }
            }
            Event::Final(f) => {
                let mut out = Vec::new();
                // A tool call whose arguments were empty never produced text.
                if self.harmony
                    && self.tool.is_none()
                    && let Some(name) = f
                        .messages
                        .iter()
                        .rev()
                        .find_map(|m| m.recipient.as_deref().and_then(|r| r.strip_prefix("functions.")))
                {
                    out.extend(self.tool_text(name, String::new()));
                }
                if let Some(e) = &f.error {
                    out.push(Piece::Error(e.clone()));
                }
                self.end = Some(f);
                out.push(Piece::Finish);
                out
            }
        }
    }

    fn content(&mut self, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Piece> {
        if text.is_empty() && logprobs.is_empty() {
            return Vec::new();
        }
        self.content.push_str(&text);
        self.logprobs.extend(logprobs.iter().cloned());
        vec![Piece::Content { text, logprobs }]
    }

    /// Text of a call to function `name`.
    fn tool_text(&mut self, name: &str, text: String) -> Option<Piece> {
        match &mut self.tool {
            Some((_, _, args)) => {
                if text.is_empty() {
                    return None;
                }
                args.push_str(&text);
                Some(Piece::ToolArguments(text))
            }
            None => {
                let name = name.to_owned();
                let id = format!("call_{:016x}", kiln_sched::random_seed());
                self.tool = Some((id.clone(), name.clone(), text.clone()));
                Some(Piece::ToolStart { id, name, arguments: text })
            }
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self.end.as_ref().map(|f| f.finish) {
            Some(Finish::Eos) if self.tool.is_some() => "tool_calls",
            Some(Finish::Eos | Finish::StopString) => "stop",
            Some(Finish::Length | Finish::ContextFull) => "length",
            Some(Finish::Cancelled) => "cancelled",
            Some(Finish::Deadline) => "deadline",
            Some(Finish::Error) | None => "error",
        }
    }

    fn tool_calls(&self) -> Value {
        match &self.tool {
            Some((id, name, args)) => {
                json!([{"id": id, "type": "function", "function": {"name": name, "arguments": args}}])
            }
            None => Value::Null,
        }
    }

    fn prompt_tokens(&self) -> usize {
        self.end.as_ref().map_or(0, |f| f.prompt_tokens)
    }

    fn completion_tokens(&self) -> usize {
        self.end.as_ref().map_or(0, |f| f.completion_tokens)
    }
}

fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chat's `logprobs.content` entries.
fn chat_logprobs(l: &[TokenLogprob]) -> Value {
    let entry = |token: &[u8], logprob: f32| json!({"token": token_text(token), "logprob": logprob, "bytes": token});
    let content: Vec<Value> = l
        .iter()
        .map(|t| {
            let mut e = entry(&t.bytes, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|a| entry(&a.bytes, a.logprob)).collect();
            e
        })
        .collect();
    json!({"content": content})
}

/// Completions' `logprobs` (tokens, their log-probabilities, the alternatives, text offsets from
/// `offset`).
fn completion_logprobs(l: &[TokenLogprob], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for t in l {
        let s = token_text(&t.bytes);
        offsets.push(offset);
        offset += s.chars().count();
        tokens.push(s);
        lps.push(t.logprob);
        let top: serde_json::Map<String, Value> =
            t.top.iter().map(|a| (token_text(&a.bytes), json!(a.logprob))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

impl Meta {
    fn usage(&self, accs: &[Choice], n: usize) -> Value {
        // Each prompt counts once, whatever its number of choices.
        let prompt: usize = accs.iter().filter(|c| c.index % n == 0).map(Choice::prompt_tokens).sum();
        let completion: usize = accs.iter().map(Choice::completion_tokens).sum();
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    fn response(&self, accs: &[Choice], n: usize) -> Value {
        let choices: Vec<Value> = accs
            .iter()
            .map(|c| {
                let logprobs = match (c.top, self.chat) {
                    (None, _) => Value::Null,
                    (Some(_), true) => chat_logprobs(&c.logprobs),
                    (Some(_), false) => completion_logprobs(&c.logprobs, 0),
                };
                if self.chat {
                    let mut message = json!({"role": "assistant", "content": c.content});
                    if c.tool.is_some() {
                        message["tool_calls"] = c.tool_calls();
                        if c.content.is_empty() {
                            message["content"] = Value::Null;
                        }
                    }
                    if c.harmony && !c.reasoning.is_empty() {
                        message["reasoning_content"] = json!(c.reasoning);
                    }
                    json!({"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason()})
                } else {
                    json!({"index": c.index, "text": c.content, "logprobs": logprobs, "finish_reason": c.finish_reason()})
                }
            })
            .collect();
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": self.usage(accs, n),
        })
    }

    /// A chunk of one choice: chat's `delta`, or completions' `text` (`delta.content`).
    fn chunk(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = if self.chat {
            json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        } else {
            let text = delta.get("content").cloned().unwrap_or(json!(""));
            json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish})
        };
        let mut v = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn usage_chunk(&self, accs: &[Choice], n: usize) -> Value {
        let mut v = self.chunk(0, Value::Null, Value::Null, None);
        v["choices"] = json!([]);
        v["usage"] = self.usage(accs, n);
        v
    }

    fn piece(&self, c: &Choice, p: Piece) -> Value {
        match p {
            Piece::Content { text, logprobs } => {
                let lp = match (c.top, self.chat) {
                    (None, _) => Value::Null,
                    (Some(_), true) => chat_logprobs(&logprobs),
                    (Some(_), false) => {
                        completion_logprobs(&logprobs, c.content.chars().count() - text.chars().count())
                    }
                };
                self.chunk(c.index, json!({"content": text}), lp, None)
            }
            Piece::Reasoning(t) => self.chunk(c.index, json!({"reasoning_content": t}), Value::Null, None),
            Piece::ToolStart { id, name, arguments } => self.chunk(
                c.index,
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]}),
                Value::Null,
                None,
            ),
            Piece::ToolArguments(a) => {
                self.chunk(c.index, json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}), Value::Null, None)
            }
            Piece::Finish => self.chunk(c.index, json!({}), Value::Null, Some(c.finish_reason())),
            Piece::Error(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sched::HarmonyMessage;

    fn token(text: &str, channel: Option<&str>, recipient: Option<&str>) -> Event {
        Event::Token {
            ids: vec![1],
            text: text.into(),
            logprobs: Vec::new(),
            channel: channel.map(Into::into),
            recipient: recipient.map(Into::into),
        }
    }

    fn end(finish: Finish, messages: Vec<HarmonyMessage>) -> Event {
        Event::Final(Final {
            finish,
            stop: None,
            prompt_tokens: 10,
            completion_tokens: 9,
            queue_s: 0.0,
            prefill_s: 0.0,
            decode_s: 0.0,
            text: String::new(),
            error: None,
            messages,
        })
    }

    fn meta(include_usage: bool) -> Meta {
        Meta { id: "chatcmpl-1".into(), created: 1, model: "m".into(), chat: true, include_usage }
    }

    fn message(channel: &str, recipient: Option<&str>, content: &str) -> HarmonyMessage {
        HarmonyMessage {
            channel: Some(channel.into()),
            recipient: recipient.map(Into::into),
            content_type: recipient.map(|_| "<|constrain|>json".into()),
            content: content.into(),
        }
    }

    /// What the engine sends for
    /// `<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary
    /// to=functions.get_weather <|constrain|>json<|message|>{"location":"Tokyo"}<|call|>`:
    /// header tokens without text, content tagged with its message's channel and recipient.
    fn tool_call_events() -> Vec<Event> {
        let call = Some("functions.get_weather");
        vec![
            Event::First { request_id: "r".into(), prompt_tokens: 10, seed: 0, queue_s: 0.0 },
            token("", None, None),
            token("Need the ", Some("analysis"), None),
            token("weather.", Some("analysis"), None),
            token("", Some("analysis"), None),
            token("", None, None),
            token("{\"location\":", Some("commentary"), call),
            token("\"Tokyo\"}", Some("commentary"), call),
            token("", Some("commentary"), call),
            end(
                Finish::Eos,
                vec![
                    message("analysis", None, "Need the weather."),
                    message("commentary", call, "{\"location\":\"Tokyo\"}"),
                ],
            ),
        ]
    }

    #[test]
    fn a_harmony_tool_call_is_tool_calls_with_its_reasoning() {
        let mut c = Choice::new(0, true, None, TokenClock::new(Instant::now()));
        let mut pieces = Vec::new();
        for e in tool_call_events() {
            pieces.extend(c.event(e).into_iter().map(|p| meta(false).piece(&c, p)));
        }
        let r = meta(false).response(std::slice::from_ref(&c), 1);
        let m = &r["choices"][0]["message"];
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["reasoning_content"], "Need the weather.");
        assert_eq!(m["tool_calls"][0]["type"], "function");
        assert_eq!(
            m["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"location\":\"Tokyo\"}"})
        );
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(r["usage"], json!({"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}));
        // Streamed: two reasoning deltas, the call (id, type, name, first arguments), more
        // arguments, the finish.
        let deltas: Vec<&Value> = pieces.iter().map(|p| &p["choices"][0]["delta"]).collect();
        assert_eq!(deltas[0], &json!({"reasoning_content": "Need the "}));
        assert_eq!(deltas[1], &json!({"reasoning_content": "weather."}));
        let id = m["tool_calls"][0]["id"].clone();
        assert_eq!(
            deltas[2],
            &json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":"}}]})
        );
        assert_eq!(deltas[3], &json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Tokyo\"}"}}]}));
        assert_eq!(deltas[4], &json!({}));
        assert_eq!(pieces[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(pieces.len(), 5);
    }

    #[test]
    fn harmony_analysis_is_reasoning_and_final_is_content() {
        let mut c = Choice::new(0, true, None, TokenClock::new(Instant::now()));
        for e in [
            token("", None, None),
            token("Think.", Some("analysis"), None),
            token("", None, None),
            token("Let me check.", Some("commentary"), None),
            token("", None, None),
            token("4", Some("final"), None),
            end(Finish::Eos, vec![message("analysis", None, "Think."), message("final", None, "4")]),
        ] {
            c.event(e);
        }
        let r = meta(false).response(std::slice::from_ref(&c), 1);
        // A commentary preamble is shown as content, before the answer.
        assert_eq!(
            r["choices"][0]["message"],
            json!({"role": "assistant", "content": "Let me check.4", "reasoning_content": "Think."})
        );
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn a_call_to_a_function_with_no_arguments_still_comes_back() {
        let mut c = Choice::new(0, true, None, TokenClock::new(Instant::now()));
        // The header's tokens carry no text, so no channel or recipient.
        c.event(token("", None, None));
        let pieces = c.event(end(Finish::Eos, vec![message("commentary", Some("functions.get_time"), "")]));
        assert!(
            matches!(&pieces[0], Piece::ToolStart { name, arguments, .. } if name == "get_time" && arguments.is_empty())
        );
        assert_eq!(c.finish_reason(), "tool_calls");
    }

    #[test]
    fn usage_counts_each_prompt_once_and_every_choice() {
        let mut accs: Vec<Choice> =
            (0..4).map(|i| Choice::new(i, false, None, TokenClock::new(Instant::now()))).collect();
        for c in &mut accs {
            c.event(end(Finish::Length, Vec::new()));
        }
        // Two prompts × two choices.
        assert_eq!(
            meta(true).usage(&accs, 2),
            json!({"prompt_tokens": 20, "completion_tokens": 36, "total_tokens": 56})
        );
        let last = meta(true).usage_chunk(&accs, 2);
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 56);
    }
}
