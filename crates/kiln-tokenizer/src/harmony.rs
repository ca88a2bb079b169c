//! OpenAI's harmony chat format, the one gpt-oss models are trained on: [`HarmonyPrompt`] renders a
//! conversation into the prompt for completion (token ids, or text to show), and [`HarmonyParser`]
//! splits the generated tokens into messages (channel, recipient, content) as they arrive.
//!
//! A message is `<|start|>{role}<|message|>{text}<|end|>`. The assistant answers on channels:
//! reasoning on `analysis`, tool calls and preambles on `commentary`, the answer on `final`:
//!
//! ```text
//! <|start|>assistant<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>
//! ```
//!
//! A tool call names its recipient and may constrain its content type, and ends with `<|call|>`:
//! `<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{…}<|call|>`.
//! Generation ends at `<|return|>` or `<|call|>`; `<|end|>` ends a message, not the generation.
//!
//! The renderer writes what `openai-harmony` 0.0.8's `render_conversation_for_completion(conversation,
//! Role.ASSISTANT)` writes (the tests compare token ids with the library's), for a [`HarmonyPrompt`]:
//!
//! * the system message ([`HarmonySystem`]); when there are tools it adds the line
//!   `Calls to these tools must go to the commentary channel: 'functions'.`;
//! * a developer message when there are instructions or tools: `# Instructions\n\n{text}`, then
//!   `# Tools\n\n## functions\n\nnamespace functions {\n\n…} // namespace functions`, each
//!   [`HarmonyTool`] declared as `// {description}\ntype {name} = (_: {…}) => any;` with its JSON
//!   Schema written as a TypeScript-like type the way the library writes it (`() => any` without
//!   parameters);
//! * the [`HarmonyTurn`]s: `<|start|>user<|message|>…<|end|>`; an earlier answer
//!   `<|start|>assistant<|channel|>final<|message|>…<|end|>`; an earlier tool call
//!   `<|start|>assistant to=functions.{name}<|channel|>commentary <|constrain|>json<|message|>{arguments}<|call|>`
//!   (the library writes the recipient before the channel, and ends the call with `<|call|>`, not
//!   `<|end|>`); a tool's result
//!   `<|start|>functions.{name} to=assistant<|channel|>commentary<|message|>…<|end|>`; the reasoning
//!   of an answer or a call, when given, as `<|start|>assistant<|channel|>analysis<|message|>…<|end|>`
//!   before it;
//! * `<|start|>assistant`.
//!
//! Reasoning is dropped as the library drops it: when the last assistant message (answer or call)
//! is a final answer, every analysis message before the *first* final answer of the conversation
//! is left out, and analysis after it is kept; when the last one is a tool call (a turn still
//! going), all of it is kept.
//!
//! The model gets the prompt as [`HarmonyPrompt::encode`] tokenizes it, as the library encodes
//! it: the markers the renderer writes as structure are their special tokens, and every piece of
//! text (message text, roles, recipients, channel names, instructions, tool names, descriptions
//! and schemas, the system text) is tokenized as plain text. Marker text inside that text, such as
//! `<|end|><|start|>system<|message|>…` in a user message or a tool result, stays text and cannot
//! start a message of its own. [`HarmonyPrompt::render`] gives the same conversation as text, for
//! display: it writes such marker text as it is, so tokenizing that text with special tokens
//! parsed would turn it into markers (and without marker text in the pieces gives the same ids as
//! `encode`). Tool parameters that are not a JSON object (nor `null`) are an error: the library's
//! Python API refuses them.
//!
//! The parser follows the library's `StreamableParser` (started with the assistant role, as after
//! the rendered prompt) on well-formed output: a header runs to `<|message|>`, the content to
//! `<|end|>`, `<|return|>` or `<|call|>`, and special tokens inside content are kept as their text.
//! Where the library gives up, it keeps going:
//!
//! * output cut off inside a message (the token limit) keeps the message with the content so far,
//!   as the library does;
//! * text where a header should be that meets `<|start|>`, an end token or the end of the output
//!   before `<|message|>` (text before any header, output that ignores the format) becomes a
//!   message without a channel whose content is that text, markers included; except that at the
//!   end of the output a header cut off (one that follows a `<|start|>` or has a `<|channel|>`) is
//!   dropped;
//! * a header's words are read leniently: an empty channel name is no channel, extra words are
//!   ignored, invalid UTF-8 becomes U+FFFD.
//!
//! ```
//! use kiln_tokenizer::{HarmonyPrompt, HarmonyTool, HarmonyTurn, ReasoningEffort};
//! let mut prompt = HarmonyPrompt::default();
//! prompt.system.reasoning_effort = ReasoningEffort::High;
//! prompt.developer = Some("Answer in French.".into());
//! prompt.messages.push(HarmonyTurn::User("Hi!".into()));
//! let text = prompt.render()?;
//! assert!(text.starts_with("<|start|>system<|message|>You are ChatGPT"));
//! assert!(text.ends_with("<|start|>developer<|message|># Instructions\n\nAnswer in French.<|end|>\
//!                         <|start|>user<|message|>Hi!<|end|><|start|>assistant"));
//!
//! // A tool, a call to it and its result: the model continues the turn.
//! prompt.tools.push(HarmonyTool {
//!     name: "get_weather".into(),
//!     description: Some("Gets the weather.".into()),
//!     parameters: Some(serde_json::json!({
//!         "type": "object",
//!         "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
//!         "required": ["city"],
//!     })),
//! });
//! prompt.messages.push(HarmonyTurn::ToolCall {
//!     analysis: Some("Look it up.".into()),
//!     name: "get_weather".into(),
//!     arguments: r#"{"city":"Paris"}"#.into(),
//! });
//! prompt.messages.push(HarmonyTurn::ToolResult { name: "get_weather".into(), content: "18 C".into() });
//! let text = prompt.render()?;
//! assert!(text.contains("Channel must be included for every message.\n\
//!                        Calls to these tools must go to the commentary channel: 'functions'.<|end|>"));
//! assert!(text.contains("Answer in French.\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n\
//!                        // Gets the weather.\ntype get_weather = (_: {\n\
//!                        city: string,\nunit?: \"C\" | \"F\",\n}) => any;\n\n\
//!                        } // namespace functions<|end|>"));
//! assert!(text.ends_with("<|start|>user<|message|>Hi!<|end|>\
//!                         <|start|>assistant<|channel|>analysis<|message|>Look it up.<|end|>\
//!                         <|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json\
//!                         <|message|>{\"city\":\"Paris\"}<|call|>\
//!                         <|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>18 C<|end|>\
//!                         <|start|>assistant"));
//! # Ok::<(), kiln_tokenizer::TokenizerError>(())
//! ```

mod schema;

use crate::{Detokenizer, Tokenizer, TokenizerError};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

const START: &str = "<|start|>";
const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
const CONSTRAIN: &str = "<|constrain|>";
const END: &str = "<|end|>";
const RETURN: &str = "<|return|>";
const CALL: &str = "<|call|>";

/// The model identity of the default system message.
pub const DEFAULT_MODEL_IDENTITY: &str = "You are ChatGPT, a large language model trained by OpenAI.";
/// The knowledge cutoff of the default system message.
pub const DEFAULT_KNOWLEDGE_CUTOFF: &str = "2024-06";

/// How much the model reasons before it answers (the system message's `Reasoning:` line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReasoningEffort {
    /// `low`.
    Low,
    /// `medium`, the default.
    #[default]
    Medium,
    /// `high`.
    High,
}

impl ReasoningEffort {
    /// `"low"`, `"medium"` or `"high"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

impl fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasoningEffort {
    type Err = TokenizerError;

    /// `low`, `medium` or `high`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(ReasoningEffort::Low),
            "medium" => Ok(ReasoningEffort::Medium),
            "high" => Ok(ReasoningEffort::High),
            _ => Err(TokenizerError::Harmony(format!("reasoning effort {s:?}: expected low, medium or high"))),
        }
    }
}

/// The system message. The default is the library's: the ChatGPT identity, knowledge cutoff
/// 2024-06, no date, medium reasoning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarmonySystem {
    /// The first line (`None`: left out).
    pub model_identity: Option<String>,
    /// `Knowledge cutoff: …` (`None`: left out).
    pub knowledge_cutoff: Option<String>,
    /// `Current date: …`, e.g. `2025-06-28` (`None`: left out).
    pub current_date: Option<String>,
    /// `Reasoning: …`.
    pub reasoning_effort: ReasoningEffort,
}

impl Default for HarmonySystem {
    fn default() -> Self {
        HarmonySystem {
            model_identity: Some(DEFAULT_MODEL_IDENTITY.to_owned()),
            knowledge_cutoff: Some(DEFAULT_KNOWLEDGE_CUTOFF.to_owned()),
            current_date: None,
            reasoning_effort: ReasoningEffort::default(),
        }
    }
}

impl HarmonySystem {
    /// The message text: identity, cutoff and date one per line, then the reasoning line, then the
    /// channels, the three parts separated by blank lines.
    fn text(&self) -> String {
        let top: Vec<String> = [
            self.model_identity.clone(),
            self.knowledge_cutoff.as_ref().map(|c| format!("Knowledge cutoff: {c}")),
            self.current_date.as_ref().map(|d| format!("Current date: {d}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut sections = Vec::new();
        if !top.is_empty() {
            sections.push(top.join("\n"));
        }
        sections.push(format!("Reasoning: {}", self.reasoning_effort));
        sections.push(
            "# Valid channels: analysis, commentary, final. Channel must be included for every message.".to_owned(),
        );
        sections.join("\n\n")
    }
}

/// A function the model may call: OpenAI's `tools[i].function`.
#[derive(Clone, Debug, PartialEq)]
pub struct HarmonyTool {
    /// The name: the model calls `functions.{name}`.
    pub name: String,
    /// A `// …` comment line per line (`None`: none, as an empty one).
    pub description: Option<String>,
    /// The JSON Schema of the arguments, a JSON object (`None` or `null`: no parameters).
    pub parameters: Option<Value>,
}

impl HarmonyTool {
    /// The declaration: its description's lines as comments, then its type.
    fn declaration(&self) -> Result<String, TokenizerError> {
        let mut lines: Vec<String> =
            self.description.as_deref().unwrap_or("").lines().map(|line| format!("// {line}")).collect();
        lines.push(match &self.parameters {
            None | Some(Value::Null) => format!("type {} = () => any;\n", self.name),
            Some(p @ Value::Object(_)) => format!("type {} = (_: {}) => any;\n", self.name, schema::typescript(p, "")),
            Some(other) => {
                let kind = match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    _ => "an array",
                };
                return Err(TokenizerError::Harmony(format!(
                    "tool {:?}: parameters is {kind}; expected a JSON Schema object (or null for none)",
                    self.name
                )));
            }
        });
        Ok(lines.join("\n"))
    }
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum HarmonyTurn {
    /// A user message.
    User(String),
    /// An earlier answer: `analysis` is its reasoning (analysis channel) if the caller kept it,
    /// `content` the final-channel text.
    Assistant {
        /// The reasoning before the answer.
        analysis: Option<String>,
        /// The answer.
        content: String,
    },
    /// An earlier tool call by the assistant: commentary channel, recipient `functions.{name}`,
    /// content type `<|constrain|>json`, content `arguments` (a JSON text), preceded by its
    /// reasoning if given.
    ToolCall {
        /// The reasoning before the call.
        analysis: Option<String>,
        /// The tool's name, without `functions.`.
        name: String,
        /// The arguments, a JSON text.
        arguments: String,
    },
    /// A tool's answer: author `functions.{name}`, to the assistant, commentary channel.
    ToolResult {
        /// The tool's name, without `functions.`.
        name: String,
        /// What it returned.
        content: String,
    },
}

/// A conversation to render for the assistant's next answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HarmonyPrompt {
    /// The system message.
    pub system: HarmonySystem,
    /// Developer instructions (rendered as `# Instructions\n\n{text}`); `None`: none. The
    /// developer message exists when there are instructions or tools.
    pub developer: Option<String>,
    /// The functions the model may call (the developer message's `# Tools` section).
    pub tools: Vec<HarmonyTool>,
    /// The turns.
    pub messages: Vec<HarmonyTurn>,
}

impl HarmonyPrompt {
    /// The prompt text, ending with `<|start|>assistant`: for display, and for callers that want
    /// the text. Marker text inside message text (`<|end|>` in a user message, a tool result, a
    /// tool's description, …) is written as it is, so tokenizing this text with special tokens
    /// parsed turns it into markers; [`encode`](Self::encode) is what to give the model. Errors
    /// for a tool whose parameters are not a JSON object.
    pub fn render(&self) -> Result<String, TokenizerError> {
        let mut out = String::new();
        for segment in self.segments()? {
            out.push_str(match &segment {
                Segment::Marker(m) => m,
                Segment::Text(t) => t,
            });
        }
        Ok(out)
    }

    /// The prompt as token ids, as openai-harmony encodes it: the markers [`render`](Self::render)
    /// writes as structure (`<|start|>`, `<|channel|>`, `<|constrain|>`, `<|message|>`, `<|end|>`,
    /// `<|call|>`) are their special tokens, and every piece of text (roles, recipients, channel
    /// names, content, instructions, tool declarations, the system text) is tokenized as plain
    /// text ([`Tokenizer::encode_ordinary`]), so marker text inside it stays text. BOS comes first
    /// when the vocabulary asks for it ([`Tokenizer::add_bos`]; gpt-oss's does not). Without
    /// marker text in the pieces the ids are those of `tok.encode(&self.render()?, true, true)`.
    /// Errors for a tool whose parameters are not a JSON object, and for a vocabulary without one
    /// of the markers used.
    pub fn encode(&self, tok: &Tokenizer) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if tok.add_bos() {
            ids.extend(tok.bos_id());
        }
        for segment in self.segments()? {
            match segment {
                Segment::Marker(m) => ids.push(
                    tok.token_id(m)
                        .ok_or_else(|| TokenizerError::Harmony(format!("the vocabulary has no {m} token")))?,
                ),
                Segment::Text(t) => ids.extend(tok.encode_ordinary(&t)?),
            }
        }
        Ok(ids)
    }

    /// The conversation as markers and pieces of text, for [`render`](Self::render) and
    /// [`encode`](Self::encode): one text segment per piece of text the library tokenizes on its
    /// own.
    fn segments(&self) -> Result<Vec<Segment<'_>>, TokenizerError> {
        let mut out = Vec::new();
        let mut system = self.system.text();
        if !self.tools.is_empty() {
            system.push_str("\nCalls to these tools must go to the commentary channel: 'functions'.");
        }
        push_message(&mut out, &Header::new("system"), system.into());
        if self.developer.is_some() || !self.tools.is_empty() {
            let mut sections = Vec::new();
            if let Some(instructions) = &self.developer {
                sections.push(format!("# Instructions\n\n{instructions}"));
            }
            if !self.tools.is_empty() {
                let declarations: Vec<String> =
                    self.tools.iter().map(HarmonyTool::declaration).collect::<Result<_, _>>()?;
                sections.push(format!(
                    "# Tools\n\n## functions\n\nnamespace functions {{\n\n{}\n}} // namespace functions",
                    declarations.join("\n")
                ));
            }
            push_message(&mut out, &Header::new("developer"), sections.join("\n\n").into());
        }
        let messages: Vec<(Header, &str)> = self.messages.iter().flat_map(HarmonyTurn::messages).collect();
        // The library's auto-drop: analysis before the first final answer goes, if the last
        // assistant message is a final answer.
        let last_is_final =
            messages.iter().rev().find(|(h, _)| h.author == "assistant").is_some_and(|(h, _)| h.is_final());
        let first_final = messages.iter().position(|(h, _)| h.is_final()).unwrap_or(0);
        for (i, (header, text)) in messages.iter().enumerate() {
            if !(last_is_final && i < first_final && header.channel == Some("analysis")) {
                push_message(&mut out, header, Cow::Borrowed(*text));
            }
        }
        out.push(Segment::Marker(START));
        out.push(Segment::Text(Cow::Borrowed("assistant")));
        Ok(out)
    }
}

impl HarmonyTurn {
    /// The turn's messages, each a header and its text.
    fn messages(&self) -> Vec<(Header, &str)> {
        fn analysis(a: &Option<String>) -> Option<(Header, &str)> {
            a.as_deref().map(|a| (Header::assistant("analysis"), a))
        }
        match self {
            HarmonyTurn::User(text) => vec![(Header::new("user"), text.as_str())],
            HarmonyTurn::Assistant { analysis: a, content } => {
                analysis(a).into_iter().chain([(Header::assistant("final"), content.as_str())]).collect()
            }
            HarmonyTurn::ToolCall { analysis: a, name, arguments } => {
                let call = Header {
                    recipient: Some(format!("functions.{name}")),
                    constrain_json: true,
                    ..Header::assistant("commentary")
                };
                analysis(a).into_iter().chain([(call, arguments.as_str())]).collect()
            }
            HarmonyTurn::ToolResult { name, content } => {
                let header = Header {
                    author: format!("functions.{name}"),
                    recipient: Some("assistant".to_owned()),
                    channel: Some("commentary"),
                    constrain_json: false,
                };
                vec![(header, content.as_str())]
            }
        }
    }
}

/// A piece of a rendered conversation: a structural marker (a special token), or text (plain
/// text to the tokenizer, whatever it contains).
enum Segment<'a> {
    Marker(&'static str),
    Text(Cow<'a, str>),
}

/// A message header, written as the library writes it: author, ` to={recipient}`,
/// `<|channel|>{channel}`, ` <|constrain|>json`.
struct Header {
    /// The role, or a tool's name.
    author: String,
    recipient: Option<String>,
    channel: Option<&'static str>,
    /// Content type `<|constrain|>json`.
    constrain_json: bool,
}

impl Header {
    fn new(author: &str) -> Header {
        Header { author: author.to_owned(), recipient: None, channel: None, constrain_json: false }
    }

    fn assistant(channel: &'static str) -> Header {
        Header { channel: Some(channel), ..Header::new("assistant") }
    }

    fn is_final(&self) -> bool {
        self.channel == Some("final")
    }
}

/// Adds a message, its text split where the library splits it (the author, ` to={recipient}`, the
/// channel, the space before `<|constrain|>`, `json`, the content); one from the assistant to a
/// recipient (a tool call) ends with `<|call|>`.
fn push_message<'a>(out: &mut Vec<Segment<'a>>, header: &Header, text: Cow<'a, str>) {
    out.push(Segment::Marker(START));
    out.push(Segment::Text(Cow::Owned(header.author.clone())));
    if let Some(r) = &header.recipient {
        out.push(Segment::Text(Cow::Owned(format!(" to={r}"))));
    }
    if let Some(c) = header.channel {
        out.push(Segment::Marker(CHANNEL));
        out.push(Segment::Text(Cow::Borrowed(c)));
    }
    if header.constrain_json {
        out.push(Segment::Text(Cow::Borrowed(" ")));
        out.push(Segment::Marker(CONSTRAIN));
        out.push(Segment::Text(Cow::Borrowed("json")));
    }
    out.push(Segment::Marker(MESSAGE));
    out.push(Segment::Text(text));
    out.push(Segment::Marker(if header.author == "assistant" && header.recipient.is_some() { CALL } else { END }));
}

/// The ids of the markers the parser acts on.
#[derive(Clone, Copy, Debug)]
struct Markers {
    start: u32,
    message: u32,
    channel: u32,
    /// `<|end|>`, `<|return|>`, `<|call|>`: each ends a message.
    stops: [u32; 3],
}

impl Markers {
    fn find(tok: &Tokenizer) -> Option<Markers> {
        let id = |t: &str| tok.token_id(t);
        Some(Markers {
            start: id(START)?,
            message: id(MESSAGE)?,
            channel: id(CHANNEL)?,
            stops: [id(END)?, id(RETURN)?, id(CALL)?],
        })
    }
}

impl Tokenizer {
    /// Whether the vocabulary has the harmony markers (`<|start|>`, `<|message|>`, `<|channel|>`,
    /// `<|end|>`, `<|return|>`, `<|call|>`): gpt-oss's o200k_harmony does.
    pub fn is_harmony(&self) -> bool {
        Markers::find(self).is_some()
    }
}

/// One message of generated output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HarmonyMessage {
    /// `analysis`, `commentary`, `final`; `None` for text that had no header.
    pub channel: Option<String>,
    /// The recipient of a tool call (`functions.get_weather`).
    pub recipient: Option<String>,
    /// The content type, e.g. `<|constrain|>json` or `json`.
    pub content_type: Option<String>,
    /// The text (special tokens inside it as their text).
    pub content: String,
}

/// Text that [`HarmonyParser::push`] or [`HarmonyParser::finish`] added to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarmonyDelta {
    /// The message's index in [`HarmonyParser::messages`].
    pub index: usize,
    /// The text added (never empty, whole UTF-8 characters).
    pub text: String,
}

#[derive(Debug)]
enum State {
    /// Collecting a header. `after_start`: it follows a `<|start|>` of the output, so its first
    /// word names the author; otherwise it continues the prompt's `<|start|>assistant`.
    Header { ids: Vec<u32>, after_start: bool },
    /// In the content of the last message.
    Content,
}

/// Splits generated token ids into harmony messages as they arrive, for output that follows a
/// prompt ending with `<|start|>assistant` (what [`HarmonyPrompt::encode`] gives).
///
/// Feed every generated id to [`push`](Self::push) (an end-of-generation id may be left out: the
/// end of the output ends the message the same way), then call [`finish`](Self::finish). Content
/// comes out as [`HarmonyDelta`]s of whole UTF-8 characters; [`messages`](Self::messages) has
/// every message so far. See the module docs for malformed output.
#[derive(Debug)]
pub struct HarmonyParser<'t> {
    tok: &'t Tokenizer,
    markers: Markers,
    state: State,
    detok: Detokenizer<'t>,
    messages: Vec<HarmonyMessage>,
}

impl<'t> HarmonyParser<'t> {
    /// A parser for `tok`'s ids; errors if `tok` is not a harmony vocabulary
    /// ([`Tokenizer::is_harmony`]).
    pub fn new(tok: &'t Tokenizer) -> Result<Self, TokenizerError> {
        let markers = Markers::find(tok).ok_or_else(|| {
            TokenizerError::Harmony("the vocabulary has no harmony tokens (<|start|>, <|message|>, …)".into())
        })?;
        Ok(HarmonyParser {
            tok,
            markers,
            state: State::Header { ids: Vec::new(), after_start: false },
            detok: Detokenizer::with_special(tok, true),
            messages: Vec::new(),
        })
    }

    /// Adds one generated id; returns the content text it completes, if any. Errors only for an id
    /// outside the vocabulary (the state is unchanged then).
    pub fn push(&mut self, id: u32) -> Result<Option<HarmonyDelta>, TokenizerError> {
        self.tok.check_id(id)?;
        let is_stop = self.markers.stops.contains(&id);
        match &mut self.state {
            State::Content if is_stop => {
                let text = self.detok.flush();
                self.state = State::Header { ids: Vec::new(), after_start: true };
                Ok(self.append(text))
            }
            State::Content => {
                let text = self.detok.push(id)?;
                Ok(self.append(text))
            }
            State::Header { ids, after_start } => {
                if id == self.markers.message {
                    let header = self.tok.decode(ids, true)?;
                    self.messages.push(parse_header(&header, *after_start));
                    self.state = State::Content;
                    Ok(None)
                } else if id == self.markers.start || is_stop {
                    let delta = self.headerless()?;
                    self.state = State::Header { ids: Vec::new(), after_start: true };
                    Ok(delta)
                } else {
                    ids.push(id);
                    Ok(None)
                }
            }
        }
    }

    /// Ends the output: a message cut off keeps its content so far, a header cut off (one that
    /// follows a `<|start|>` or has a `<|channel|>`) is dropped; returns the text that comes out
    /// now, if any. The parser then expects a new assistant answer.
    pub fn finish(&mut self) -> Result<Option<HarmonyDelta>, TokenizerError> {
        let delta = match &self.state {
            State::Content => {
                let text = self.detok.flush();
                self.append(text)
            }
            State::Header { ids, after_start } if *after_start || ids.contains(&self.markers.channel) => None,
            State::Header { .. } => self.headerless()?,
        };
        self.state = State::Header { ids: Vec::new(), after_start: false };
        Ok(delta)
    }

    /// Every message so far; while a message's content is still arriving, it is the last one.
    pub fn messages(&self) -> &[HarmonyMessage] {
        &self.messages
    }

    /// The messages.
    pub fn into_messages(self) -> Vec<HarmonyMessage> {
        self.messages
    }

    /// Appends `text` to the last message's content.
    fn append(&mut self, text: String) -> Option<HarmonyDelta> {
        let index = self.messages.len().checked_sub(1)?;
        if text.is_empty() {
            return None;
        }
        self.messages[index].content.push_str(&text);
        Some(HarmonyDelta { index, text })
    }

    /// The collected header ids, which turned out not to be a header, as a message without a
    /// channel.
    fn headerless(&mut self) -> Result<Option<HarmonyDelta>, TokenizerError> {
        let State::Header { ids, .. } = &mut self.state else { return Ok(None) };
        if ids.is_empty() {
            return Ok(None);
        }
        let text = self.tok.decode(ids, true)?;
        ids.clear();
        self.messages.push(HarmonyMessage::default());
        Ok(self.append(text))
    }
}

/// Reads a header (its text, markers included) like the library: the channel is the word after
/// `<|channel|>` (up to white-space or `<`); of the other words, the author is dropped, the last is
/// the recipient if it starts with `to=` or is the only one, else the content type, and then the
/// one before it is the recipient.
fn parse_header(text: &str, after_start: bool) -> HarmonyMessage {
    let mut channel = None;
    let mut rest = text.to_owned();
    if let Some(i) = text.find(CHANNEL) {
        let after = &text[i + CHANNEL.len()..];
        let len = after.find(|c: char| c.is_whitespace() || c == '<').unwrap_or(after.len());
        if len > 0 {
            channel = Some(after[..len].to_owned());
        }
        rest = format!("{}{}", &text[..i], &after[len..]);
    }
    // `to=x<|constrain|>json` is two words.
    let rest = rest.trim().replace(CONSTRAIN, &format!(" {CONSTRAIN}"));
    let mut words: Vec<&str> = rest.split_ascii_whitespace().collect();
    if words.first().is_some_and(|&w| after_start || w == "assistant") {
        words.remove(0);
    }
    let (mut recipient, mut content_type) = (None, None);
    let n = words.len();
    if let Some(last) = words.pop() {
        if let Some(r) = last.strip_prefix("to=") {
            recipient = Some(r.to_owned());
        } else if n == 1 {
            recipient = Some(last.to_owned());
        } else {
            content_type = Some(last.to_owned());
            recipient = words.pop().map(|r| r.strip_prefix("to=").unwrap_or(r).to_owned());
        }
    }
    HarmonyMessage { channel, recipient, content_type, content: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str, after_start: bool) -> [Option<String>; 3] {
        let m = parse_header(text, after_start);
        [m.channel, m.recipient, m.content_type]
    }

    fn some(items: [Option<&str>; 3]) -> [Option<String>; 3] {
        items.map(|x| x.map(str::to_owned))
    }

    #[test]
    fn headers_read_like_the_library() {
        assert_eq!(header("<|channel|>analysis", false), some([Some("analysis"), None, None]));
        assert_eq!(header("assistant<|channel|>final", true), some([Some("final"), None, None]));
        assert_eq!(
            header("<|channel|>commentary to=functions.f <|constrain|>json", false),
            some([Some("commentary"), Some("functions.f"), Some("<|constrain|>json")])
        );
        assert_eq!(
            header("assistant to=functions.f<|channel|>commentary json", true),
            some([Some("commentary"), Some("functions.f"), Some("json")])
        );
        assert_eq!(
            header(" to=functions.f<|constrain|>json<|channel|>commentary", false),
            some([Some("commentary"), Some("functions.f"), Some("<|constrain|>json")])
        );
        // After `<|start|>` the first word is the author, whatever it is.
        assert_eq!(
            header("functions.f to=assistant<|channel|>commentary", true),
            some([Some("commentary"), Some("assistant"), None])
        );
        // Lenient where the library errors: an empty channel, extra words.
        assert_eq!(header("<|channel|> final", false), some([None, Some("final"), None]));
        assert_eq!(header("<|channel|>final a b c", false), some([Some("final"), Some("b"), Some("c")]));
        assert_eq!(header("", true), some([None, None, None]));
    }

    #[test]
    fn reasoning_effort_parses() {
        assert_eq!("high".parse::<ReasoningEffort>().unwrap(), ReasoningEffort::High);
        assert_eq!(ReasoningEffort::Low.to_string(), "low");
        let e = "max".parse::<ReasoningEffort>().unwrap_err().to_string();
        assert!(e.contains("expected low, medium or high"), "{e}");
    }

    #[test]
    fn parameters_must_be_an_object() {
        let tool = |parameters| HarmonyTool { name: "f".into(), description: None, parameters };
        for (p, kind) in [
            (serde_json::json!("x"), "a string"),
            (serde_json::json!([]), "an array"),
            (serde_json::json!(1), "a number"),
        ] {
            let prompt = HarmonyPrompt { tools: vec![tool(Some(p))], ..Default::default() };
            let e = prompt.render().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("harmony: tool \"f\": parameters is {kind}; expected a JSON Schema object (or null for none)")
            );
        }
        // `null` is no parameters, as `None` is.
        let render =
            |parameters| HarmonyPrompt { tools: vec![tool(parameters)], ..Default::default() }.render().unwrap();
        assert_eq!(render(Some(Value::Null)), render(None));
        assert!(render(None).contains("\ntype f = () => any;\n"));
    }
}
