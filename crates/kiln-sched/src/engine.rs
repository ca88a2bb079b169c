//! The engine thread: admission, batch building, one forward call per step, sampling, events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kiln_model::{Backend, Batch, KvCache, Model, SeqKv};
use kiln_sample::{FinishReason, Sampler, StopCriteria, StopStrings};
use kiln_tokenizer::{Detokenizer, HarmonyParser, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::request::{Event, Final, Finish, Prepared, TokenLogprob, TopLogprob};
use crate::{EngineConfig, EngineError, EngineInfo, Pending, Shared, secs};

/// A sequence in the running batch.
struct Seq<'t> {
    req: Prepared,
    tx: UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    kv: SeqKv,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The token sampled last, not yet in the cache.
    pending: Option<u32>,
    history: Vec<u32>,
    generated: Vec<u32>,
    sampler: Sampler,
    stop: StopCriteria,
    detok: Detokenizer<'t>,
    harmony: Option<HarmonyParser<'t>>,
    text: String,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

impl Seq<'_> {
    fn send(&self, e: Event) {
        // A closed channel is noticed at the next step (the client went away).
        let _ = self.tx.send(e);
    }

    /// Ends the stream: releases held-back text (unless a stop string cut it), sends the final
    /// event.
    fn finish(mut self, finish: Finish, stop: Option<String>, error: Option<String>) -> SeqKv {
        if finish != Finish::StopString {
            let tail = self.tail();
            if !tail.is_empty() {
                self.text.push_str(&tail);
                let (channel, recipient) = self.harmony_message();
                self.send(Event::Token { ids: Vec::new(), text: tail, logprobs: Vec::new(), channel, recipient });
            }
        }
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let messages = self.harmony.take().map(|h| h.into_messages()).unwrap_or_default();
        let text = std::mem::take(&mut self.text);
        self.send(Event::Final(Final {
            finish,
            stop,
            prompt_tokens: self.req.prompt.len(),
            completion_tokens: self.generated.len(),
            queue_s: secs(self.admitted - self.submitted),
            prefill_s: secs(first - self.admitted),
            decode_s: secs(now - first),
            text,
            error,
            messages,
        }));
        self.kv
    }

    /// Harmony: the channel and recipient of the last message.
    fn harmony_message(&self) -> (Option<String>, Option<String>) {
        match self.harmony.as_ref().and_then(|h| h.messages().last()) {
            Some(m) => (m.channel.clone(), m.recipient.clone()),
            None => (None, None),
        }
    }

    /// What the detokenizer (or harmony parser) and the stop matcher still hold.
    fn tail(&mut self) -> String {
        let mut out = String::new();
        if let Some(h) = self.harmony.as_mut() {
            if let Ok(Some(d)) = h.finish() {
                out.push_str(&d.text);
            }
            return out;
        }
        let rest = self.detok.flush();
        out.push_str(&self.stop.push_text(&rest).0);
        out.push_str(&self.stop.finish_text().0);
        out
    }
}

/// Sizes the cache, warms up, reports readiness, then runs steps until drained.
pub(crate) fn run<B: Backend>(
    model: Model<B>,
    tok: Arc<Tokenizer>,
    shared: Arc<Shared>,
    config: EngineConfig,
    ready: std::sync::mpsc::Sender<Result<EngineInfo, EngineError>>,
) {
    let (mut kv, info) = match setup(&model, &config) {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    shared.lock().stats.kv_blocks_total = info.kv_blocks_total;
    let _ = ready.send(Ok(info.clone()));
    let mut engine = Loop { model: &model, tok: &tok, shared: &shared, info, running: Vec::new(), reserved: 0 };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(&mut kv)));
    if run.is_err() {
        // A bug, not input: refuse new work and end what is queued with an error (running streams
        // lost their state with the panic and end without a final event).
        let mut reg = shared.lock();
        reg.stopped = Some("the engine stopped after an internal error".into());
        while let Some(p) = reg.queue.pop_front() {
            end_queued(&p, Finish::Error);
            reg.finish(&p.req.id, Finish::Error, p.req.prompt.len(), 0);
        }
        reg.active.clear();
    }
}

/// The KV cache under the budget, and one forward pass through every layer.
fn setup<B: Backend>(model: &Model<B>, config: &EngineConfig) -> Result<(KvCache<B>, EngineInfo), EngineError> {
    let c = &model.config;
    if config.max_batch == 0 || config.step_tokens < config.max_batch {
        return Err(EngineError::Config(format!(
            "max batch must be at least 1 and step tokens ({}) at least max batch ({}): every running sequence decodes one token per step",
            config.step_tokens, config.max_batch
        )));
    }
    let n_ctx = config.n_ctx.unwrap_or(c.n_ctx_train.min(4096));
    if n_ctx < 2 {
        return Err(EngineError::Config(format!("a context of {n_ctx} positions is too small")));
    }
    // A probe cache tells the layout: full-attention layers, block size, windowed store size.
    let probe = model.kv_cache_for(0, config.max_batch).map_err(|e| EngineError::Kv { bytes: 0, source: e })?;
    let full = probe.full.layout.clone();
    let bs = full.block_size;
    let per_token = full.bytes_per_position();
    let windowed_bytes = probe
        .windowed
        .as_ref()
        .map(|w| w.layout.bytes_per_position() * (w.layout.n_blocks * w.layout.block_size) as u64)
        .unwrap_or(0);
    drop(probe);
    let positions = match config.kv_memory {
        Some(bytes) => {
            let left = bytes.checked_sub(windowed_bytes).ok_or_else(|| {
                EngineError::Config(format!(
                    "--kv-memory {bytes} is less than the {windowed_bytes} bytes the sliding-window layers need for {} sequences",
                    config.max_batch
                ))
            })?;
            left.checked_div(per_token).map_or(n_ctx * config.max_batch, |p| p as usize)
        }
        None => {
            let want = (n_ctx * config.max_batch) as u64 * per_token;
            let cap = kiln_model::cpu::available_memory().map_or(1 << 30, |m| m / 4);
            let bytes = want.min(cap.max(n_ctx as u64 * per_token));
            bytes.checked_div(per_token).map_or(n_ctx * config.max_batch, |p| p as usize)
        }
    };
    let positions = positions / bs * bs;
    if positions < bs {
        return Err(EngineError::Config(format!(
            "the KV budget holds {positions} positions, less than one block of {bs} ({per_token} bytes per position): raise --kv-memory"
        )));
    }
    let kv = model
        .kv_cache_for(positions, config.max_batch)
        .map_err(|e| EngineError::Kv { bytes: positions as u64 * per_token + windowed_bytes, source: e })?;
    let kv_blocks_total = if full.n_layer == 0 { usize::MAX / bs } else { kv.full.free_blocks() };
    let info = EngineInfo {
        max_batch: config.max_batch,
        max_queue: config.max_queue,
        n_ctx,
        n_vocab: c.n_vocab,
        step_tokens: config.step_tokens,
        max_logprobs: config.max_logprobs,
        block_size: bs,
        kv_blocks_total,
        kv_bytes_per_token: per_token,
        kv_bytes: positions as u64 * per_token + windowed_bytes,
    };
    // Warm-up: one token through every layer (touches the weights, builds the thread pool).
    let mut kv = kv;
    let mut seq = SeqKv::default();
    let warm = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[0]), n_ctx);
    kv.release(&mut seq);
    warm.map_err(EngineError::WarmUp)?;
    Ok((kv, info))
}

struct Loop<'a, 't, B: Backend> {
    model: &'a Model<B>,
    tok: &'t Tokenizer,
    shared: &'a Shared,
    info: EngineInfo,
    running: Vec<Seq<'t>>,
    /// Full-store blocks reserved by running sequences.
    reserved: usize,
}

impl<'a, 't, B: Backend> Loop<'a, 't, B> {
    fn run(&mut self, kv: &mut KvCache<B>) {
        loop {
            let admitted = match self.admit(kv) {
                Some(a) => a,
                None => break,
            };
            for p in admitted {
                self.start(p, kv);
            }
            self.reap(kv);
            if self.running.is_empty() {
                continue;
            }
            self.step(kv);
            self.publish(kv);
        }
        // Drained: nothing is left.
        let mut reg = self.shared.lock();
        reg.stopped = Some("the worker has shut down".into());
        reg.stats.running = 0;
    }

    /// Waits for work; takes the requests that fit now from the head of the queue (FIFO), ends
    /// queued requests that were cancelled or timed out, and applies the drain bound. `None`
    /// when drained.
    fn admit(&mut self, kv: &KvCache<B>) -> Option<Vec<Pending>> {
        let mut reg = self.shared.lock();
        loop {
            let now = Instant::now();
            let past_drain = reg.draining.is_some_and(|d| now >= d);
            // Queued requests that are over before they started: cancelled, timed out, gone, or
            // cut by the drain bound. They still get their first and final events.
            let mut i = 0;
            while i < reg.queue.len() {
                let p = &reg.queue[i];
                let over = if p.cancel.load(Ordering::SeqCst) || past_drain {
                    Some(Finish::Cancelled)
                } else if p.req.deadline.is_some_and(|d| now >= d) {
                    Some(Finish::Deadline)
                } else if p.tx.is_closed() {
                    Some(Finish::Cancelled)
                } else {
                    None
                };
                match over {
                    Some(f) => {
                        let p = reg.queue.remove(i).expect("index in range");
                        end_queued(&p, f);
                        reg.finish(&p.req.id, f, p.req.prompt.len(), 0);
                    }
                    None => i += 1,
                }
            }
            if past_drain {
                for s in &self.running {
                    s.cancel.store(true, Ordering::SeqCst);
                }
            }
            let mut out = Vec::new();
            while let Some(p) = reg.queue.front() {
                let fits = self.running.len() + out.len() < self.info.max_batch
                    && self.reserved + p.req.blocks <= self.info.kv_blocks_total;
                if !fits {
                    break;
                }
                let p = reg.queue.pop_front().expect("front exists");
                self.reserved += p.req.blocks;
                out.push(p);
            }
            reg.stats.queued = reg.queue.len();
            reg.stats.running = self.running.len() + out.len();
            reg.stats.kv_blocks_reserved = self.reserved;
            reg.stats.kv_blocks_used = self.info.kv_blocks_total.min(kv_used(kv, &self.info));
            if !out.is_empty() || !self.running.is_empty() {
                return Some(out);
            }
            if reg.draining.is_some() && reg.queue.is_empty() {
                return None;
            }
            // Idle: sleep until a request, a cancel or a drain arrives (or a queued deadline).
            let timeout = reg
                .queue
                .iter()
                .filter_map(|p| p.req.deadline)
                .chain(reg.draining)
                .min()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(std::time::Duration::from_secs(1));
            reg = self.shared.wake.wait_timeout(reg, timeout).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Turns an admitted request into a running sequence and sends its first event.
    fn start(&mut self, p: Pending, kv: &mut KvCache<B>) {
        let admitted = Instant::now();
        let Pending { req, tx, cancel, submitted } = p;
        let sampler = match Sampler::new(req.sampling.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Checked at submission; kept as an error rather than a panic.
                let _ = tx.send(Event::First {
                    request_id: req.id.clone(),
                    prompt_tokens: req.prompt.len(),
                    seed: req.sampling.seed,
                    queue_s: secs(admitted - submitted),
                });
                let _ = tx.send(Event::Final(error_final(&req, e.to_string())));
                self.reserved -= req.blocks;
                self.shared.lock().finish(&req.id, Finish::Error, req.prompt.len(), 0);
                return;
            }
        };
        let mut stop = StopCriteria::new(self.tok.eog_ids().iter().copied(), req.limit.max(1));
        stop.ignore_eos = req.ignore_eos;
        stop.stop = StopStrings::new(req.stop.iter().cloned()).unwrap_or_default();
        let mut harmony = if req.harmony { HarmonyParser::new(self.tok).ok() } else { None };
        if let Some(h) = harmony.as_mut() {
            // The prefix the answer was made to begin with: a header, no content to send.
            for &id in &req.harmony_prefix {
                let _ = h.push(id);
            }
        }
        let _ = tx.send(Event::First {
            request_id: req.id.clone(),
            prompt_tokens: req.prompt.len(),
            seed: req.sampling.seed,
            queue_s: secs(admitted - submitted),
        });
        let seq = Seq {
            history: req.prompt.clone(),
            req,
            tx,
            cancel,
            kv: SeqKv::default(),
            prefilled: 0,
            pending: None,
            generated: Vec::new(),
            sampler,
            stop,
            detok: Detokenizer::new(self.tok),
            harmony,
            text: String::new(),
            submitted,
            admitted,
            first_token: None,
        };
        if seq.req.limit == 0 {
            // max_tokens = 0: nothing to generate.
            self.end(seq, Finish::Length, None, None, kv);
            return;
        }
        self.running.push(seq);
    }

    /// Ends sequences that were cancelled, timed out or whose client went away.
    fn reap(&mut self, kv: &mut KvCache<B>) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.running.len() {
            let s = &self.running[i];
            // A client that gave up at its deadline is a deadline, not a cancel.
            let over = if s.req.deadline.is_some_and(|d| now >= d) {
                Some(Finish::Deadline)
            } else if s.cancel.load(Ordering::SeqCst) || s.tx.is_closed() {
                Some(Finish::Cancelled)
            } else {
                None
            };
            match over {
                Some(f) => {
                    let s = self.running.remove(i);
                    self.end(s, f, None, None, kv);
                }
                None => i += 1,
            }
        }
    }

    /// Sends the final event, frees the blocks and the reservation, forgets the id.
    fn end(&mut self, s: Seq<'t>, f: Finish, stop: Option<String>, error: Option<String>, kv: &mut KvCache<B>) {
        let blocks = s.req.blocks;
        let id = s.req.id.clone();
        let (prompt, generated) = (s.req.prompt.len(), s.generated.len());
        // Counted before the final event goes out: a client that has its answer sees it in the
        // metrics.
        self.shared.lock().finish(&id, f, prompt, generated);
        let mut seq_kv = s.finish(f, stop, error);
        kv.release(&mut seq_kv);
        self.reserved -= blocks;
    }

    /// One forward call: every decoding sequence's pending token, then prompt chunks in the
    /// rows left; samples where logits came back; ends what finished.
    fn step(&mut self, kv: &mut KvCache<B>) {
        let mut batch = Batch::default();
        // (running index, logits wanted)
        let mut members: Vec<usize> = Vec::new();
        let mut sample_from: Vec<usize> = Vec::new(); // running index per logits row
        let budget = self.info.step_tokens;
        for (i, s) in self.running.iter().enumerate() {
            if let Some(t) = s.pending {
                if batch.tokens.len() >= budget {
                    break;
                }
                let slot = members.len();
                members.push(i);
                batch.logits.push(batch.tokens.len());
                batch.tokens.push(t);
                batch.seq.push(slot);
                sample_from.push(i);
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            if s.pending.is_some() || s.prefilled >= s.req.prompt.len() {
                continue;
            }
            let room = budget.saturating_sub(batch.tokens.len());
            if room == 0 {
                break;
            }
            let n = room.min(s.req.prompt.len() - s.prefilled);
            let slot = members.len();
            members.push(i);
            batch.tokens.extend_from_slice(&s.req.prompt[s.prefilled..s.prefilled + n]);
            batch.seq.extend(std::iter::repeat_n(slot, n));
            if s.prefilled + n == s.req.prompt.len() {
                batch.logits.push(batch.tokens.len() - 1);
                sample_from.push(i);
            }
        }
        if batch.tokens.is_empty() {
            return;
        }
        let mut kvs: Vec<SeqKv> = members.iter().map(|&i| std::mem::take(&mut self.running[i].kv)).collect();
        let result = {
            let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
            self.model.forward(kv, &mut refs, &batch, self.info.n_ctx)
        };
        for (&i, k) in members.iter().zip(kvs) {
            self.running[i].kv = k;
        }
        {
            let mut reg = self.shared.lock();
            reg.stats.last_batch_seqs = members.len();
            reg.stats.last_batch_rows = batch.tokens.len();
            reg.stats.steps += 1;
        }
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // Every sequence of the failed step ends with its usage so far.
                let msg = format!("forward pass failed: {e}");
                let mut idx = members.clone();
                idx.sort_unstable();
                for &i in idx.iter().rev() {
                    let s = self.running.remove(i);
                    self.end(s, Finish::Error, None, Some(msg.clone()), kv);
                }
                return;
            }
        };
        // Bookkeeping of what went into the cache.
        for &i in &members {
            let s = &mut self.running[i];
            if s.pending.take().is_none() {
                let n = batch.seq.iter().filter(|&&slot| members[slot] == i).count();
                s.prefilled += n;
            }
        }
        let nv = self.info.n_vocab;
        let mut done: Vec<(usize, Finish, Option<String>)> = Vec::new();
        for (k, &i) in sample_from.iter().enumerate() {
            let row = &logits[k * nv..(k + 1) * nv];
            if let Some((f, stop)) = self.sample(i, row) {
                done.push((i, f, stop));
            }
        }
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, f, stop) in done {
            let s = self.running.remove(i);
            self.end(s, f, stop, None, kv);
        }
    }

    /// Samples sequence `i`'s next token from `logits` and sends its event; the finish reason if
    /// this token ends it.
    fn sample(&mut self, i: usize, logits: &[f32]) -> Option<(Finish, Option<String>)> {
        let tok = self.tok;
        let s = &mut self.running[i];
        let now = Instant::now();
        s.first_token.get_or_insert(now);
        let id = s.sampler.sample(logits, &s.history);
        s.generated.push(id);
        s.history.push(id);
        let logprobs = if s.req.logprobs > 0 { vec![logprob(tok, logits, id, s.req.logprobs)] } else { Vec::new() };
        let mut finish = None;
        match s.stop.check_token(id, s.generated.len()) {
            Some(FinishReason::Stop) => {
                let tail = s.tail();
                s.text.push_str(&tail);
                let (channel, recipient) = s.harmony_message();
                s.send(Event::Token { ids: vec![id], text: tail, logprobs, channel, recipient });
                // The tail is out; nothing more to release.
                s.stop.stop = StopStrings::default();
                return Some((Finish::Eos, None));
            }
            Some(_) => {
                finish =
                    Some(if s.req.limit_is_max_tokens { (Finish::Length, None) } else { (Finish::ContextFull, None) })
            }
            None => {}
        }
        let (mut text, mut channel, mut recipient) = (String::new(), None, None);
        if let Some(h) = s.harmony.as_mut() {
            if let Ok(Some(d)) = h.push(id) {
                if let Some(m) = h.messages().get(d.index) {
                    (channel, recipient) = (m.channel.clone(), m.recipient.clone());
                }
                text = d.text;
            }
        } else {
            let piece = s.detok.push(id).unwrap_or_default();
            let (chunk, hit) = s.stop.push_text(&piece);
            text = chunk;
            if let Some(FinishReason::StopString(stop)) = hit {
                finish = Some((Finish::StopString, Some(stop)));
            }
        }
        if let Some((f, _)) = &finish
            && *f != Finish::StopString
        {
            // The last token: what is held back comes out with it.
            let tail = s.tail();
            text.push_str(&tail);
            if channel.is_none() && !tail.is_empty() {
                (channel, recipient) = s.harmony_message();
            }
            s.stop.stop = StopStrings::default();
        }
        s.text.push_str(&text);
        s.send(Event::Token { ids: vec![id], text, logprobs, channel, recipient });
        if finish.is_none() {
            s.pending = Some(id);
        }
        finish
    }

    /// Updates the load figures the server publishes.
    fn publish(&self, kv: &KvCache<B>) {
        let mut reg = self.shared.lock();
        reg.stats.running = self.running.len();
        reg.stats.queued = reg.queue.len();
        reg.stats.kv_blocks_reserved = self.reserved;
        reg.stats.kv_blocks_used = self.info.kv_blocks_total.min(kv_used(kv, &self.info));
    }
}

fn kv_used<B: Backend>(kv: &KvCache<B>, info: &EngineInfo) -> usize {
    if kv.full.layout.n_layer == 0 { 0 } else { info.kv_blocks_total - kv.full.free_blocks().min(info.kv_blocks_total) }
}

/// The first and final events of a request that ended while queued.
fn end_queued(p: &Pending, f: Finish) {
    let waited = secs(p.submitted.elapsed());
    let _ = p.tx.send(Event::First {
        request_id: p.req.id.clone(),
        prompt_tokens: p.req.prompt.len(),
        seed: p.req.sampling.seed,
        queue_s: waited,
    });
    let _ = p.tx.send(Event::Final(Final {
        finish: f,
        stop: None,
        prompt_tokens: p.req.prompt.len(),
        completion_tokens: 0,
        queue_s: waited,
        prefill_s: 0.0,
        decode_s: 0.0,
        text: String::new(),
        error: None,
        messages: Vec::new(),
    }));
}

fn error_final(req: &Prepared, error: String) -> Final {
    Final {
        finish: Finish::Error,
        stop: None,
        prompt_tokens: req.prompt.len(),
        completion_tokens: 0,
        queue_s: 0.0,
        prefill_s: 0.0,
        decode_s: 0.0,
        text: String::new(),
        error: Some(error),
        messages: Vec::new(),
    }
}

/// Log-softmax of the raw logits at `id`, and the `n` most likely tokens.
fn logprob(tok: &Tokenizer, logits: &[f32], id: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().filter(|v| v.is_finite()).map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |i: u32| (logits[i as usize] as f64 - lse) as f32;
    let bytes = |i: u32| tok.token_to_piece(i, true).unwrap_or_default();
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(idx.len());
    if n > 0 && n < idx.len() {
        idx.select_nth_unstable_by(n - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    }
    idx.truncate(n);
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    TokenLogprob {
        id,
        logprob: lp(id),
        bytes: bytes(id),
        top: idx.into_iter().map(|i| TopLogprob { id: i, logprob: lp(i), bytes: bytes(i) }).collect(),
    }
}
