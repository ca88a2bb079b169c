//! Requests as callers give them, their checked and tokenized form, and the events they produce.

use std::time::Instant;

use kiln_sample::{SamplingParams, StopStrings};
use kiln_tokenizer::{HarmonyMessage, HarmonyPrompt, HarmonyTurn, Message, Tokenizer};

use crate::{EngineInfo, SubmitError};

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Raw text: special-token text parsed, BOS added when the model wants it.
    Text(String),
    /// Token ids, as they are.
    Tokens(Vec<u32>),
    /// Chat messages: the model's chat template (harmony on gpt-oss), assistant turn opened.
    Messages(Vec<Message>),
    /// A harmony conversation (gpt-oss only), tokenized by [`HarmonyPrompt::encode`] (message
    /// text as plain text: marker text in it stays text), then `prefix`, tokenized with special
    /// tokens parsed: text the answer is made to begin with after `<|start|>assistant` (e.g.
    /// `<|channel|>commentary to=functions.` to force a tool call). The output is parsed as if the
    /// model had written the prefix; its text is not sent.
    Harmony { prompt: Box<HarmonyPrompt>, prefix: String },
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Unique among queued and running requests; one is made up when empty.
    pub id: String,
    pub input: Input,
    /// Sampling; `seed` is ignored when [`Request::seed`] is `None`.
    pub sampling: SamplingParams,
    /// `None`: a random seed (reported in [`Event::First`]).
    pub seed: Option<u64>,
    /// `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Top log-probabilities per token (0: none).
    pub logprobs: usize,
    /// When the request must be over; it ends with [`Finish::Deadline`] at the next step after.
    pub deadline: Option<Instant>,
}

impl Request {
    /// A request with `kiln generate`'s defaults (llama.cpp's sampling, random seed, no limit).
    pub fn new(input: Input) -> Request {
        Request {
            id: String::new(),
            input,
            sampling: SamplingParams::default(),
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: 0,
            deadline: None,
        }
    }
}

/// A request checked against the model and the engine's limits.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub id: String,
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub logprobs: usize,
    pub deadline: Option<Instant>,
    /// Tokens it may generate (its max_tokens, or the context room).
    pub limit: usize,
    /// Whether that limit is the request's max_tokens (LENGTH) or the context (CONTEXT_FULL).
    pub limit_is_max_tokens: bool,
    /// Harmony output (chat messages on a gpt-oss model): channels are parsed.
    pub harmony: bool,
    /// Harmony: the ids the answer was made to begin with (the last of the prompt), which the
    /// output parser reads first.
    pub harmony_prefix: Vec<u32>,
    /// Full-store KV blocks it may need.
    pub blocks: usize,
}

pub(crate) fn prepare(
    req: Request,
    tok: &Tokenizer,
    info: &EngineInfo,
    is_harmony: bool,
    has_template: bool,
) -> Result<Prepared, SubmitError> {
    let invalid = |m: String| SubmitError::Invalid(m);
    let mut sampling = req.sampling.clone();
    sampling.seed = req.seed.unwrap_or_else(crate::random_seed);
    sampling.validate().map_err(|e| invalid(e.to_string()))?;
    StopStrings::new(req.stop.iter().cloned()).map_err(|e| invalid(e.to_string()))?;
    if req.logprobs > info.max_logprobs {
        return Err(invalid(format!("logprobs = {}: at most {} are returned", req.logprobs, info.max_logprobs)));
    }
    if req.id.len() > 256 {
        return Err(invalid(format!("request_id is {} bytes long; at most 256", req.id.len())));
    }
    let mut harmony = false;
    let mut harmony_prefix = Vec::new();
    let no_stop_with_harmony = |stop: &[String]| {
        if stop.is_empty() {
            Ok(())
        } else {
            Err(invalid(
                "stop is not supported with messages on a harmony (gpt-oss) model; generation ends at <|return|> or <|call|>".into(),
            ))
        }
    };
    let prompt = match &req.input {
        Input::Text(text) => {
            if text.is_empty() {
                return Err(invalid("text is empty".into()));
            }
            tok.encode(text, true, true).map_err(|e| invalid(format!("text: {e}")))?
        }
        Input::Tokens(ids) => {
            if ids.is_empty() {
                return Err(invalid("token_ids is empty".into()));
            }
            if let Some((index, &id)) = ids.iter().enumerate().find(|(_, id)| **id as usize >= info.n_vocab) {
                return Err(SubmitError::TokenOutOfRange { id, index, n_vocab: info.n_vocab });
            }
            ids.clone()
        }
        Input::Messages(messages) => {
            if messages.is_empty() {
                return Err(invalid("messages is empty".into()));
            }
            if is_harmony {
                harmony = true;
                no_stop_with_harmony(&req.stop)?;
            } else if !has_template {
                return Err(invalid("messages: the model has no chat template (send text or token_ids)".into()));
            }
            chat_ids(tok, messages, is_harmony)?
        }
        Input::Harmony { prompt, prefix } => {
            if !is_harmony {
                return Err(invalid("a harmony conversation needs a gpt-oss model (harmony tokens)".into()));
            }
            harmony = true;
            no_stop_with_harmony(&req.stop)?;
            // Message text is plain text to the model (marker text in it stays text); the prefix
            // is kiln's own structure, parsed.
            let mut ids = prompt.encode(tok).map_err(|e| invalid(format!("messages: {e}")))?;
            harmony_prefix = tok.encode(prefix, false, true).map_err(|e| invalid(format!("prefix: {e}")))?;
            ids.extend_from_slice(&harmony_prefix);
            ids
        }
    };
    if prompt.is_empty() {
        return Err(invalid("the prompt is empty (no tokens)".into()));
    }
    if prompt.len() >= info.n_ctx {
        return Err(SubmitError::PromptTooLong { prompt: prompt.len(), n_ctx: info.n_ctx });
    }
    let capacity = info.kv_blocks_total.saturating_mul(info.block_size);
    let ctx_room = info.n_ctx - prompt.len();
    let (limit, limit_is_max_tokens) = match req.max_tokens {
        Some(m) if m <= ctx_room => (m, true),
        Some(_) => (ctx_room, false),
        // Unlimited: the context, or what the KV budget holds if that is less.
        None => (ctx_room.min(capacity.saturating_sub(prompt.len())), false),
    };
    let needed = prompt.len() + limit;
    if needed > capacity || (limit == 0 && req.max_tokens != Some(0)) {
        return Err(SubmitError::NeverFits { needed: needed.max(prompt.len() + 1), prompt: prompt.len(), capacity });
    }
    Ok(Prepared {
        id: req.id,
        blocks: needed.div_ceil(info.block_size.max(1)),
        prompt,
        sampling,
        stop: req.stop,
        ignore_eos: req.ignore_eos,
        logprobs: req.logprobs,
        deadline: req.deadline,
        limit,
        limit_is_max_tokens,
        harmony,
        harmony_prefix,
    })
}

/// Chat messages as prompt ids, as `kiln generate --chat` makes them: harmony on gpt-oss (a
/// "system" message as the model identity, "developer" as the instructions; encoded by
/// `HarmonyPrompt::encode`, so marker text in a message stays text), the chat template otherwise
/// (no second BOS when the template writes one).
pub fn chat_ids(tok: &Tokenizer, messages: &[Message], harmony: bool) -> Result<Vec<u32>, SubmitError> {
    let invalid = |m: String| SubmitError::Invalid(m);
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer" | "tool") {
            return Err(invalid(format!(
                "messages[{i}].role = {:?}: expected system, user, assistant, developer or tool",
                m.role
            )));
        }
    }
    if harmony {
        let mut p = HarmonyPrompt::default();
        for m in messages {
            match m.role.as_str() {
                "system" => p.system.model_identity = Some(m.content.clone()),
                "developer" => p.developer = Some(m.content.clone()),
                "user" => p.messages.push(HarmonyTurn::User(m.content.clone())),
                "assistant" => p.messages.push(HarmonyTurn::Assistant { analysis: None, content: m.content.clone() }),
                other => {
                    return Err(invalid(format!(
                        "messages[{i}].role = {other:?}: tool results need the HTTP API's tool calls (docs/HTTP.md); here: system, user, assistant or developer",
                        i = messages.iter().position(|x| std::ptr::eq(x, m)).unwrap_or(0)
                    )));
                }
            }
        }
        // Message text is plain text to the model: marker text in it stays text.
        return p.encode(tok).map_err(|e| invalid(format!("messages: {e}")));
    }
    let text = tok.render_chat(messages, true).map_err(|e| invalid(format!("messages: the chat template: {e}")))?;
    let mut ids = tok.encode(&text, true, true).map_err(|e| invalid(format!("messages: {e}")))?;
    if let (Some(bos), true) = (tok.bos_id(), ids.len() >= 2)
        && ids[0] == bos
        && ids[1] == bos
    {
        ids.remove(0);
    }
    Ok(ids)
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finish {
    /// An end-of-generation token.
    Eos,
    /// A stop string ([`Final::stop`]).
    StopString,
    /// `max_tokens` generated.
    Length,
    /// The sequence filled the context.
    ContextFull,
    /// [`Engine::cancel`](crate::Engine::cancel), or a drain past its bound.
    Cancelled,
    /// The request's deadline passed.
    Deadline,
    /// A failure after the first event ([`Final::error`]).
    Error,
}

impl Finish {
    /// Every reason, in [`Finish::index`] order.
    pub const ALL: [Finish; 7] = [
        Finish::Eos,
        Finish::StopString,
        Finish::Length,
        Finish::ContextFull,
        Finish::Cancelled,
        Finish::Deadline,
        Finish::Error,
    ];

    /// Position in [`Finish::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::StopString => "stop_string",
            Finish::Length => "length",
            Finish::ContextFull => "context_full",
            Finish::Cancelled => "cancelled",
            Finish::Deadline => "deadline",
            Finish::Error => "error",
        }
    }
}

/// A log-probability of one of the top tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprob {
    pub id: u32,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// The chosen token's log-probability (softmax of the raw logits) and the top alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top: Vec<TopLogprob>,
}

/// The end of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Final {
    pub finish: Finish,
    pub stop: Option<String>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub queue_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// The concatenation of every token event's text.
    pub text: String,
    pub error: Option<String>,
    /// Harmony output: its messages.
    pub messages: Vec<HarmonyMessage>,
}

/// What a request's channel carries: one `First`, `Token`s, one `Final`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    First {
        request_id: String,
        prompt_tokens: usize,
        seed: u64,
        queue_s: f64,
    },
    /// `ids` is empty only for text released at the end (held-back text, an incomplete character
    /// as U+FFFD) of a stream that was cut off.
    Token {
        ids: Vec<u32>,
        text: String,
        logprobs: Vec<TokenLogprob>,
        /// Harmony output: the channel of the message the text belongs to.
        channel: Option<String>,
        /// Harmony output: that message's recipient (`functions.get_weather` in a tool call).
        recipient: Option<String>,
    },
    Final(Final),
}
