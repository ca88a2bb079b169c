//! The kiln engine loop: one model, many concurrent requests.
//!
//! [`Engine::start`] moves a [`Model`] onto a thread of its own and runs it step by step. Each step
//! is **one** [`Model::forward`] call over a batch that mixes every running sequence's next token
//! (decode) with chunks of the prompts still being read (prefill), at most
//! [`EngineConfig::step_tokens`] rows. Sequences join and leave that batch at step boundaries
//! (continuous batching).
//!
//! - **Admission.** A request is tokenized and checked on the caller's thread by
//!   [`Engine::submit`], then queued (FIFO, at most [`EngineConfig::max_queue`]). At a step
//!   boundary the head of the queue is admitted when a batch slot is free and the KV blocks it may
//!   need — its prompt plus its token limit, in blocks of the cache's block size — are not
//!   reserved by others; otherwise it waits (nothing behind it overtakes it). A request that could
//!   not fit even in an empty cache is refused at submission.
//! - **Events.** Each request gets a channel of [`Event`]s: [`Event::First`] at admission, one
//!   [`Event::Token`] per generated token (text only as whole UTF-8 characters and never text a
//!   stop string will remove), and [`Event::Final`] with the reason, usage and timings. Every
//!   accepted request gets exactly one `First` and one `Final`, whatever happens.
//! - **Cancellation.** [`Engine::cancel`], a dropped receiver (the client went away) or the
//!   request's deadline end a sequence at the next step boundary and free its KV blocks.
//! - **Drain.** [`Engine::drain`] refuses new work; what is queued and running may finish within a
//!   bound, after which it is cancelled; then the engine thread ends.
//!
//! The engine depends only on `kiln-model`'s public API (`Model`, `KvCache`, `SeqKv`, `Batch`)
//! and is generic over the [`Backend`], so a GPU backend runs it unchanged. It knows nothing of
//! protobuf or gRPC.

mod engine;
mod request;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_model::{Backend, Model, ModelError};
use kiln_tokenizer::Tokenizer;
use tokio::sync::mpsc;

pub use kiln_sample::SamplingParams;
pub use kiln_tokenizer::{HarmonyMessage, Message};
pub use request::{Event, Final, Finish, Input, Request, TokenLogprob, TopLogprob, chat_ids};

/// How the engine is sized.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most sequences in the running batch.
    pub max_batch: usize,
    /// Most requests waiting for admission; more are refused.
    pub max_queue: usize,
    /// Most positions one sequence may hold (prompt and output). `None`: the model's trained
    /// context, at most 4096 (as `kiln generate`).
    pub n_ctx: Option<usize>,
    /// Bytes of KV cache. `None`: room for `max_batch` full contexts, at most a quarter of the
    /// memory available when the engine starts (at least one context).
    pub kv_memory: Option<u64>,
    /// Most rows (tokens) in one step: decodes first, then prompt chunks in the room left.
    pub step_tokens: usize,
    /// Log-probabilities of at most this many top tokens per generated token.
    pub max_logprobs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 32,
            max_queue: 256,
            n_ctx: None,
            kv_memory: None,
            step_tokens: kiln_model::kv::UBATCH,
            max_logprobs: 20,
        }
    }
}

/// What an engine was started with and what it derived: fixed for its life.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub max_batch: usize,
    pub max_queue: usize,
    /// Most positions per sequence.
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub step_tokens: usize,
    pub max_logprobs: usize,
    /// KV positions per block.
    pub block_size: usize,
    /// Blocks of the full-attention store (what admission reserves from).
    pub kv_blocks_total: usize,
    /// Bytes of one position over the full-attention layers (f16 K and V).
    pub kv_bytes_per_token: u64,
    /// Bytes of the whole cache (full and sliding-window stores).
    pub kv_bytes: u64,
}

/// The engine's load at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued: usize,
    pub running: usize,
    /// Sequences and rows in the last step.
    pub last_batch_seqs: usize,
    pub last_batch_rows: usize,
    /// Full-store KV blocks held by running sequences.
    pub kv_blocks_used: usize,
    /// Full-store KV blocks reserved for running sequences (what admission counts).
    pub kv_blocks_reserved: usize,
    pub kv_blocks_total: usize,
    pub steps: u64,
    pub draining: bool,
    /// Requests that ended, by [`Finish::index`].
    pub finished: [u64; 7],
    /// Prompt and generated tokens of the requests that ended.
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// Why a request was not accepted. The server maps each to a status code; the text is for a person.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field is invalid (its name and what is accepted are in the text).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the prompt is {prompt} tokens, which leaves no room in a context of {n_ctx} (shorten it, or start the server with a larger --ctx)"
    )]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("token id {id} at position {index} is outside the vocabulary (size {n_vocab})")]
    TokenOutOfRange { id: u32, index: usize, n_vocab: usize },
    #[error("the queue is full ({max_queue} requests waiting); retry later or send to another worker")]
    QueueFull { max_queue: usize },
    #[error(
        "the request needs {needed} KV positions (prompt {prompt} + max_tokens), but the KV budget holds {capacity}; lower max_tokens or start the server with a larger --kv-memory"
    )]
    NeverFits { needed: usize, prompt: usize, capacity: usize },
    #[error("request id {0:?} is already queued or running")]
    DuplicateId(String),
    #[error("the worker is draining (shutting down) and takes no new requests")]
    Draining,
    #[error("the engine has stopped: {0}")]
    Stopped(String),
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Config(String),
    #[error("loading the model: {0}")]
    Load(String),
    #[error("creating the KV cache ({bytes} bytes): {source}")]
    Kv { bytes: u64, source: ModelError },
    #[error("warm-up forward pass: {0}")]
    WarmUp(ModelError),
    #[error("the engine thread ended before it was ready")]
    Died,
}

/// What [`Engine::cancel`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued or running and is now cancelled (its stream ends with `Cancelled`).
    Running,
    /// It had already finished.
    AlreadyFinished,
    /// No such request (or it finished too long ago to remember).
    Unknown,
}

/// An accepted request.
pub struct Submitted {
    pub id: String,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// How many finished request ids [`Engine::cancel`] remembers.
const FINISHED_MEMORY: usize = 4096;

/// A request waiting for admission, already tokenized and checked.
pub(crate) struct Pending {
    pub req: request::Prepared,
    pub tx: mpsc::UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub submitted: Instant,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub queue: VecDeque<Pending>,
    /// Queued or running requests and their cancel flags.
    pub active: HashMap<String, Arc<AtomicBool>>,
    pub finished: HashSet<String>,
    pub finished_order: VecDeque<String>,
    pub draining: Option<Instant>,
    pub stats: Stats,
    /// Set when the engine thread has ended (with the reason).
    pub stopped: Option<String>,
}

impl Registry {
    pub fn finish(&mut self, id: &str, f: Finish, prompt: usize, generated: usize) {
        self.stats.finished[f.index()] += 1;
        self.stats.prompt_tokens += prompt as u64;
        self.stats.generated_tokens += generated as u64;
        self.active.remove(id);
        if self.finished.insert(id.to_string()) {
            self.finished_order.push_back(id.to_string());
            if self.finished_order.len() > FINISHED_MEMORY
                && let Some(old) = self.finished_order.pop_front()
            {
                self.finished.remove(&old);
            }
        }
    }
}

pub(crate) struct Shared {
    pub reg: Mutex<Registry>,
    pub wake: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic on the engine thread poisons the lock; the registry is still consistent enough
        // to refuse work and answer queries.
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running engine. Cheap to share behind an `Arc`.
pub struct Engine {
    shared: Arc<Shared>,
    tokenizer: Arc<Tokenizer>,
    info: EngineInfo,
    harmony: bool,
    has_template: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Creates the KV cache under the budget, runs a warm-up forward pass, and starts the engine
    /// thread; returns once the engine is ready to take requests.
    pub fn start<B: Backend + 'static>(
        model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        Engine::start_with(move || Ok(model), tokenizer, config)
    }

    /// [`Engine::start`] with the model made by `load` on the engine thread itself: for a backend
    /// whose state belongs to the thread that made it (a GPU context), or a model that is not
    /// `Send`. `load`'s error is reported as [`EngineError::Load`].
    pub fn start_with<B, F>(load: F, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Result<Engine, EngineError>
    where
        B: Backend,
        F: FnOnce() -> Result<Model<B>, String> + Send + 'static,
    {
        let shared = Arc::new(Shared { reg: Mutex::new(Registry::default()), wake: Condvar::new() });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (sh, tok) = (shared.clone(), tokenizer.clone());
        let harmony = tokenizer.is_harmony();
        let has_template = tokenizer.chat_template().is_some();
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || match load() {
                Ok(model) => engine::run(model, tok, sh, config, ready_tx),
                Err(e) => {
                    let _ = ready_tx.send(Err(EngineError::Load(e)));
                }
            })
            .map_err(|e| EngineError::Config(format!("spawning the engine thread: {e}")))?;
        let info = match ready_rx.recv() {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Died);
            }
        };
        Ok(Engine {
            shared,
            tokenizer,
            info,
            harmony,
            has_template,
            thread: Mutex::new(Some(thread)),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Checks and tokenizes `req` and queues it. Errors say why it was not accepted.
    pub fn submit(&self, req: Request) -> Result<Submitted, SubmitError> {
        let mut req = req;
        if req.id.is_empty() {
            req.id = self.fresh_id();
        }
        let prepared = request::prepare(req, &self.tokenizer, &self.info, self.harmony, self.has_template)?;
        let id = prepared.id.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut reg = self.shared.lock();
            if let Some(why) = &reg.stopped {
                return Err(SubmitError::Stopped(why.clone()));
            }
            if reg.draining.is_some() {
                return Err(SubmitError::Draining);
            }
            if reg.active.contains_key(&id) {
                return Err(SubmitError::DuplicateId(id));
            }
            if reg.queue.len() >= self.info.max_queue {
                return Err(SubmitError::QueueFull { max_queue: self.info.max_queue });
            }
            reg.active.insert(id.clone(), cancel.clone());
            reg.finished.remove(&id);
            reg.queue.push_back(Pending { req: prepared, tx, cancel, submitted: Instant::now() });
            reg.stats.queued = reg.queue.len();
        }
        self.shared.wake.notify_all();
        Ok(Submitted { id, events: rx })
    }

    /// Cancels a queued or running request; its stream ends with [`Finish::Cancelled`] at the
    /// next step boundary. Idempotent.
    pub fn cancel(&self, id: &str) -> CancelOutcome {
        let reg = self.shared.lock();
        let outcome = if let Some(flag) = reg.active.get(id) {
            flag.store(true, Ordering::SeqCst);
            CancelOutcome::Running
        } else if reg.finished.contains(id) {
            CancelOutcome::AlreadyFinished
        } else {
            CancelOutcome::Unknown
        };
        drop(reg);
        self.shared.wake.notify_all();
        outcome
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Stops taking requests; queued and running ones may finish until `bound` has passed, then
    /// they are cancelled and the engine thread ends. Returns at once; see [`Engine::join`].
    pub fn drain(&self, bound: Duration) {
        {
            let mut reg = self.shared.lock();
            if reg.draining.is_none() {
                reg.draining = Some(Instant::now() + bound);
                reg.stats.draining = true;
            }
        }
        self.shared.wake.notify_all();
    }

    /// Why the engine thread has ended, once it has (drained, or an internal error).
    pub fn stopped(&self) -> Option<String> {
        self.shared.lock().stopped.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.shared.lock().draining.is_some()
    }

    /// Waits for the engine thread to end (after [`Engine::drain`]).
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn fresh_id(&self) -> String {
        use std::hash::BuildHasher;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let h = std::collections::hash_map::RandomState::new().hash_one((n, Instant::now()));
        format!("req-{h:016x}{n:04x}")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.drain(Duration::ZERO);
        self.join();
    }
}

/// A random 64-bit value (a seed for a request that did not give one; also used for ids).
pub fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

/// `Duration` as seconds, for events.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
