//! `kiln generate`: one prompt, one sequence, streamed to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use kiln_model::{Batch, CpuBackend, Model, SeqKv};
use kiln_sample::{FinishReason, Sampler, SamplingParams, StopCriteria, StopStrings};
use kiln_tokenizer::{Detokenizer, Message, Tokenizer};
use serde::Serialize;

/// What to generate and how.
pub struct Request {
    pub prompt: String,
    pub chat: bool,
    pub system: Option<String>,
    pub max_tokens: usize,
    pub ctx: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub dump_logits: Option<PathBuf>,
    /// Print text to stdout as it is produced.
    pub stream: bool,
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
    pub finish_reason: &'static str,
    /// The stop string that ended generation, if one did.
    pub stop: Option<String>,
    pub timings: Timings,
}

/// A model file opened for generation: weights, tokenizer, hyperparameters.
pub struct Loaded {
    pub model: Model<CpuBackend>,
    pub tokenizer: Tokenizer,
    pub load_s: f64,
}

pub fn load(path: &Path, threads: usize) -> anyhow::Result<Loaded> {
    let t = Instant::now();
    let file = Arc::new(kiln_gguf::GgufFile::open(path).with_context(|| path.display().to_string())?);
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("{}: tokenizer", path.display()))?;
    let model =
        Model::load(file.clone(), CpuBackend::new(file, threads)).with_context(|| path.display().to_string())?;
    Ok(Loaded { model, tokenizer, load_s: t.elapsed().as_secs_f64() })
}

/// The prompt as token ids: the chat template applied if asked, special-token text parsed, BOS
/// added when the model wants it (and the template did not already write it).
pub fn prompt_ids(tok: &Tokenizer, req: &Request) -> anyhow::Result<Vec<u32>> {
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

pub fn run(loaded: &Loaded, req: &Request) -> anyhow::Result<Output> {
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let prompt = prompt_ids(tok, req)?;
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
    let mut out = std::io::stdout().lock();
    // `--max-tokens 0` generates nothing (the prompt is still evaluated).
    let mut finish: Option<FinishReason> = (max_tokens == 0).then_some(FinishReason::Length);
    let mut stop_string = None;
    let t1 = Instant::now();
    let mut emit = |s: &str, text: &mut String| -> anyhow::Result<()> {
        text.push_str(s);
        if req.stream && !s.is_empty() {
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
        let (chunk, hit) = stop.push_text(&piece);
        emit(&chunk, &mut text)?;
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
        emit(&chunk, &mut text)?;
        let (tail, hit) = stop.finish_text();
        if let Some(FinishReason::StopString(s)) = &hit {
            stop_string = Some(s.clone());
            finish = hit;
        }
        emit(&tail, &mut text)?;
    }
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
    })
}
