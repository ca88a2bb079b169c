//! `kiln generate`: one prompt, one sequence, streamed to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use kiln_model::{Backend, Batch, Model, SeqKv};
use kiln_sample::{FinishReason, Sampler, SamplingParams, StopCriteria, StopStrings};
use kiln_tokenizer::{
    Detokenizer, HarmonyDelta, HarmonyMessage, HarmonyParser, HarmonyPrompt, HarmonyTurn, Message, ReasoningEffort,
    Tokenizer,
};
use serde::Serialize;

/// What to generate and how.
pub struct Request {
    pub prompt: String,
    pub chat: bool,
    pub system: Option<String>,
    /// Harmony developer instructions.
    pub developer: Option<String>,
    /// Harmony reasoning effort (default medium).
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Harmony: do not stream the analysis channel.
    pub hide_reasoning: bool,
    pub max_tokens: usize,
    pub ctx: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub dump_logits: Option<PathBuf>,
    /// Print text to stdout as it is produced.
    pub stream: bool,
}

impl Request {
    /// Errors if a flag that only harmony chat takes is given without `--chat`.
    pub fn check_flags(&self) -> anyhow::Result<()> {
        match self.harmony_flag() {
            Some(flag) if !self.chat => bail!("{flag} needs --chat"),
            _ => Ok(()),
        }
    }

    /// The first flag given that only harmony chat takes.
    fn harmony_flag(&self) -> Option<&'static str> {
        [
            (self.developer.is_some(), "--developer"),
            (self.reasoning_effort.is_some(), "--reasoning-effort"),
            (self.hide_reasoning, "--hide-reasoning"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

#[derive(Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub prefill_tokens: usize,
    pub prefill_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens: usize,
    pub decode_s: f64,
    pub decode_tokens_per_s: f64,
}

#[derive(Serialize)]
pub struct Output {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub text: String,
    /// Harmony chat: the messages of the output, by channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<HarmonyMessage>>,
    pub finish_reason: &'static str,
    /// The stop string that ended generation, if one did.
    pub stop: Option<String>,
    pub timings: Timings,
    /// With `--device cuda`: the GPU memory ledger and the upload time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::device::GpuReport>,
}

/// A model file opened for generation: weights (on some backend), tokenizer, hyperparameters.
pub struct Loaded<B: Backend> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub load_s: f64,
    /// On a GPU: seconds and bytes of the weight upload.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub upload: Option<(f64, u64)>,
}

/// Whether this is harmony chat (`--chat` on a model with a harmony vocabulary, i.e. gpt-oss);
/// errors for flags that mean nothing here.
fn harmony_chat(tok: &Tokenizer, req: &Request) -> anyhow::Result<bool> {
    req.check_flags()?;
    let harmony = req.chat && tok.is_harmony();
    if let Some(flag) = req.harmony_flag().filter(|_| !harmony) {
        bail!("{flag}: only harmony (gpt-oss) models take it, and this model's vocabulary has no harmony tokens");
    }
    if harmony && !req.stop.is_empty() {
        bail!(
            "--stop is not supported with --chat on a harmony (gpt-oss) model; generation ends at <|return|> or <|call|>"
        );
    }
    Ok(harmony)
}

/// The harmony conversation of a request: `--system` as the model identity, `--developer` as the
/// instructions, the prompt as the user message.
fn harmony_prompt(req: &Request) -> HarmonyPrompt {
    let mut p = HarmonyPrompt { developer: req.developer.clone(), ..HarmonyPrompt::default() };
    if let Some(identity) = &req.system {
        p.system.model_identity = Some(identity.clone());
    }
    p.system.reasoning_effort = req.reasoning_effort.unwrap_or_default();
    p.messages.push(HarmonyTurn::User(req.prompt.clone()));
    p
}

/// The prompt as token ids: the harmony format or the chat template applied if asked, special-token
/// text parsed, BOS added when the model wants it (and the template did not already write it).
/// Harmony is encoded by `HarmonyPrompt::encode`: its messages' text is plain text (marker text in
/// the prompt, `--system` or `--developer` stays text).
fn prompt_ids(tok: &Tokenizer, req: &Request, harmony: bool) -> anyhow::Result<Vec<u32>> {
    if harmony {
        return Ok(harmony_prompt(req).encode(tok)?);
    }
    let text = if req.chat {
        if tok.chat_template().is_none() {
            bail!("--chat: the model has no chat template (tokenizer.chat_template)")
        }
        let mut messages = Vec::new();
        if let Some(s) = &req.system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", &req.prompt));
        tok.render_chat(&messages, true).context("rendering the chat template")?
    } else {
        req.prompt.clone()
    };
    let mut ids = tok.encode(&text, true, true)?;
    // A template that writes the BOS text itself must not get a second BOS.
    if let (Some(bos), true) = (tok.bos_id(), ids.len() >= 2)
        && ids[0] == bos
        && ids[1] == bos
    {
        ids.remove(0);
    }
    Ok(ids)
}

pub fn run<B: Backend>(loaded: &Loaded<B>, req: &Request) -> anyhow::Result<Output> {
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let harmony = harmony_chat(tok, req)?;
    let prompt = prompt_ids(tok, req, harmony)?;
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens)");
    }
    let n_ctx = req.ctx.unwrap_or(model.config.n_ctx_train.min(4096));
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt is {} tokens, which leaves no room in a context of {n_ctx} (use --ctx to raise it, up to {})",
            prompt.len(),
            model.config.n_ctx_train
        );
    }
    let max_tokens = req.max_tokens.min(n_ctx - prompt.len());
    let mut sampler = Sampler::new(req.sampling.clone())?;
    let mut stop = StopCriteria::new(tok.eog_ids().iter().copied(), max_tokens);
    stop.ignore_eos = req.ignore_eos;
    stop.stop = StopStrings::new(req.stop.iter().cloned())?;
    let mut dump = match &req.dump_logits {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).with_context(|| p.display().to_string())?)),
        None => None,
    };

    let mut kv = model.kv_cache(n_ctx)?;
    let mut seq = SeqKv::default();
    let t0 = Instant::now();
    let mut logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&prompt), n_ctx)?;
    let prefill_s = t0.elapsed().as_secs_f64();

    let mut history = prompt.clone();
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut detok = Detokenizer::new(tok);
    let mut channels = if harmony { Some(Channels::new(tok, req.stream, req.hide_reasoning)?) } else { None };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    // `--max-tokens 0` generates nothing (the prompt is still evaluated).
    let mut finish: Option<FinishReason> = (max_tokens == 0).then_some(FinishReason::Length);
    let mut stop_string = None;
    let t1 = Instant::now();
    // The raw text is streamed unless harmony channels are.
    let stream_text = req.stream && channels.is_none();
    let emit = |s: &str, text: &mut String, out: &mut dyn Write| -> std::io::Result<()> {
        text.push_str(s);
        if stream_text && !s.is_empty() {
            out.write_all(s.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    };
    while finish.is_none() {
        if let Some(d) = dump.as_mut() {
            for v in &logits {
                d.write_all(&v.to_le_bytes())?;
            }
        }
        let id = sampler.sample(&logits, &history);
        generated.push(id);
        history.push(id);
        if let Some(r) = stop.check_token(id, generated.len()) {
            if r == FinishReason::Stop {
                finish = Some(r);
                break;
            }
            finish = Some(r); // length: this token still counts and is shown
        }
        let piece = detok.push(id)?;
        if let Some(c) = channels.as_mut() {
            c.push(id, &mut out, &mut err)?;
        }
        let (chunk, hit) = stop.push_text(&piece);
        emit(&chunk, &mut text, &mut out)?;
        if let Some(r) = hit {
            if let FinishReason::StopString(s) = &r {
                stop_string = Some(s.clone());
            }
            finish = Some(r);
            break;
        }
        if finish.is_none() {
            logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[id]), n_ctx)?;
        }
    }
    // Whatever the detokenizer and the stop matcher still hold, unless a stop string cut it.
    if stop_string.is_none() {
        let rest = detok.flush();
        let (chunk, _) = stop.push_text(&rest);
        emit(&chunk, &mut text, &mut out)?;
        let (tail, hit) = stop.finish_text();
        if let Some(FinishReason::StopString(s)) = &hit {
            stop_string = Some(s.clone());
            finish = hit;
        }
        emit(&tail, &mut text, &mut out)?;
    }
    let messages = channels.map(|c| c.finish(&mut out, &mut err)).transpose()?;
    if req.stream {
        writeln!(out)?;
    }
    if let Some(d) = dump.as_mut() {
        d.flush()?;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    let decode_tokens = generated.len().saturating_sub(1);
    let finish = finish.unwrap_or(FinishReason::Length);
    Ok(Output {
        prompt_ids: prompt.clone(),
        generated_ids: generated,
        text,
        messages,
        finish_reason: finish.as_str(),
        stop: stop_string,
        timings: Timings {
            load_s: loaded.load_s,
            prefill_tokens: prompt.len(),
            prefill_s,
            prefill_tokens_per_s: prompt.len() as f64 / prefill_s,
            decode_tokens,
            decode_s,
            decode_tokens_per_s: if decode_s > 0.0 { decode_tokens as f64 / decode_s } else { 0.0 },
        },
        gpu: None,
    })
}

/// Harmony output as it is generated: the parser, and, when streaming, where each message's text
/// goes: the final channel (and text outside any header) to stdout, the other channels to stderr,
/// each message after a `[channel]` or `[channel to=recipient]` prefix and ending its line, the
/// analysis channel unless hidden.
struct Channels<'t> {
    parser: HarmonyParser<'t>,
    show: bool,
    hide_analysis: bool,
    /// The message whose line on stderr is open.
    open: Option<usize>,
}

impl<'t> Channels<'t> {
    fn new(tok: &'t Tokenizer, show: bool, hide_analysis: bool) -> anyhow::Result<Self> {
        Ok(Channels { parser: HarmonyParser::new(tok)?, show, hide_analysis, open: None })
    }

    fn push(&mut self, id: u32, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
        let delta = self.parser.push(id)?;
        Ok(self.print(delta, out, err)?)
    }

    /// Ends the output; returns the messages.
    fn finish(mut self, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<Vec<HarmonyMessage>> {
        let delta = self.parser.finish()?;
        self.print(delta, out, err)?;
        end_line(&mut self.open, err)?;
        Ok(self.parser.into_messages())
    }

    fn print(&mut self, delta: Option<HarmonyDelta>, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<()> {
        let Some(d) = delta.filter(|_| self.show) else { return Ok(()) };
        let m = &self.parser.messages()[d.index];
        match m.channel.as_deref() {
            None | Some("final") => {
                end_line(&mut self.open, err)?;
                write_flush(out, &d.text)
            }
            Some("analysis") if self.hide_analysis => Ok(()),
            Some(channel) => {
                if self.open != Some(d.index) {
                    end_line(&mut self.open, err)?;
                    match &m.recipient {
                        Some(r) => write!(err, "[{channel} to={r}] ")?,
                        None => write!(err, "[{channel}] ")?,
                    }
                    self.open = Some(d.index);
                }
                write_flush(err, &d.text)
            }
        }
    }
}

fn write_flush(w: &mut dyn Write, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// Ends the open stderr line, if any.
fn end_line(open: &mut Option<usize>, err: &mut dyn Write) -> std::io::Result<()> {
    if open.take().is_some() {
        writeln!(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_gptoss() -> Tokenizer {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-model/tests/fixtures/gptoss/tiny-gptoss-bytes.gguf");
        Tokenizer::from_gguf_path(path).unwrap()
    }

    /// Streams `completion` (text with harmony markers) through [`Channels`]: stdout, stderr,
    /// messages.
    fn channels(completion: &str, show: bool, hide_analysis: bool) -> (String, String, Vec<HarmonyMessage>) {
        let tok = tiny_gptoss();
        let mut c = Channels::new(&tok, show, hide_analysis).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for id in tok.encode(completion, false, true).unwrap() {
            c.push(id, &mut out, &mut err).unwrap();
        }
        let messages = c.finish(&mut out, &mut err).unwrap();
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), messages)
    }

    const COMPLETION: &str = "<|channel|>analysis<|message|>Think: é.\nDone.<|end|>\
        <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|end|>\
        <|start|>assistant<|channel|>commentary<|message|>One moment.<|end|>\
        <|start|>assistant<|channel|>final<|message|>Answer: 🎉 ü";

    #[test]
    fn final_channel_to_stdout_others_to_stderr() {
        let (out, err, messages) = channels(COMPLETION, true, false);
        // Byte-level tokens: é, 🎉 and ü arrive a byte at a time and come out whole.
        assert_eq!(out, "Answer: 🎉 ü");
        assert_eq!(err, "[analysis] Think: é.\nDone.\n[commentary to=functions.f] {}\n[commentary] One moment.\n");
        let summary: Vec<(Option<&str>, Option<&str>, &str)> =
            messages.iter().map(|m| (m.channel.as_deref(), m.recipient.as_deref(), m.content.as_str())).collect();
        assert_eq!(
            summary,
            [
                (Some("analysis"), None, "Think: é.\nDone."),
                (Some("commentary"), Some("functions.f"), "{}"),
                (Some("commentary"), None, "One moment."),
                (Some("final"), None, "Answer: 🎉 ü"),
            ]
        );
        assert_eq!(messages[1].content_type.as_deref(), Some("<|constrain|>json"));
    }

    #[test]
    fn hidden_analysis_and_json_mode() {
        let (out, err, messages) = channels(COMPLETION, true, true);
        assert_eq!(out, "Answer: 🎉 ü");
        assert_eq!(err, "[commentary to=functions.f] {}\n[commentary] One moment.\n");
        // Not streaming (--json): nothing printed, the same messages.
        let (out, err, quiet) = channels(COMPLETION, false, false);
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
        assert_eq!(quiet, messages);
    }

    #[test]
    fn text_outside_the_format_goes_to_stdout() {
        // Text before any header, then an analysis message cut off by the token limit.
        let (out, err, _) = channels("Hello<|start|>assistant<|channel|>analysis<|message|>cut", true, false);
        assert_eq!(out, "Hello");
        assert_eq!(err, "[analysis] cut\n");
    }
}
