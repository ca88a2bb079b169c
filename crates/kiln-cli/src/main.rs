//! `kiln` — the command line of the kiln inference worker.

mod bench;
mod client;
mod device;
mod generate;
mod inspect;
mod loadtest;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kiln_sample::SamplingParams;
use kiln_tokenizer::ReasoningEffort;

#[derive(Parser)]
#[command(name = "kiln", version, about = "GGUF language model inference worker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which model to use.
#[derive(Args)]
pub(crate) struct ModelArg {
    /// A GGUF file, or the name of a known model (fetched on first use: smollm2-135m-instruct-q4_1,
    /// gemma3-270m-q4_k_m). Default: smollm2-135m-instruct-q4_1.
    #[arg(long, short = 'm')]
    pub(crate) model: Option<String>,
}

/// The prompt, given inline, by flag, or read from a file (for prompts longer than a command line
/// may be: Linux refuses a single argument over 128 KiB).
#[derive(Args)]
pub(crate) struct PromptArg {
    /// The prompt (or use --prompt or --prompt-file).
    prompt_pos: Option<String>,
    /// The prompt.
    #[arg(long, conflicts_with = "prompt_pos")]
    prompt: Option<String>,
    /// Read the prompt from this file ("-": standard input), as it is, final newline included.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["prompt_pos", "prompt"])]
    prompt_file: Option<std::path::PathBuf>,
}

impl PromptArg {
    pub(crate) fn text(&self) -> anyhow::Result<String> {
        use anyhow::Context;
        match &self.prompt_file {
            Some(p) if p.as_os_str() == "-" => std::io::read_to_string(std::io::stdin()).context("--prompt-file -"),
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("--prompt-file {}", p.display())),
            None => Ok(self.prompt.clone().or(self.prompt_pos.clone()).unwrap_or_default()),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a GGUF file: header, metadata, tensor table, per-type totals, parameter count.
    Inspect {
        /// A GGUF file, or the name of a known model (fetched on first use). Default: the default
        /// model (smollm2-135m-instruct-q4_1). Known models: smollm2-135m-instruct-q4_1,
        /// gemma3-270m-q4_k_m.
        model: Option<String>,
        /// Print one JSON object instead of text (fields documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt (on the CPU, or a GPU with --device cuda), streaming it to stdout.
    Generate(GenerateCmd),
    /// Print the token ids of a text.
    Tokenize {
        #[command(flatten)]
        model: ModelArg,
        /// The text.
        #[arg(long)]
        text: String,
        /// Do not add BOS/EOS and do not parse special-token text.
        #[arg(long)]
        no_special: bool,
        /// Print JSON: {"ids": [...], "pieces": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Measure prefill and decode speed the way llama-bench does (pp and tg tests).
    Bench {
        #[command(flatten)]
        model: ModelArg,
        /// Prompt tokens for the prefill test (0 to skip).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Tokens for the decode test (0 to skip).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        /// Repetitions of each test.
        #[arg(short = 'r', long, default_value_t = 5)]
        reps: usize,
        /// Threads (0: one per core).
        #[arg(short = 't', long, default_value_t = 0)]
        threads: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: device::DeviceArgs,
    },
    /// Serve the model over gRPC (kiln.v1.Worker, health, reflection) with Prometheus metrics;
    /// drains on SIGTERM. docs/GRPC.md describes the service.
    Serve(serve::ServeCmd),
    /// Stream a generation from a running `kiln serve` to the terminal.
    Client(client::ClientCmd),
    /// Load a running `kiln serve` with many concurrent requests and report throughput and
    /// latency percentiles (a benchmark, not a test).
    Loadtest(loadtest::LoadtestCmd),
}

#[derive(Args)]
struct GenerateCmd {
    #[command(flatten)]
    prompt: PromptArg,
    #[command(flatten)]
    model: ModelArg,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Context length (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalty on tokens seen in the last --repeat-last-n tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: i32,
    /// Subtract this from the logit of every token already generated or in the prompt.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Subtract this × its count from the logit of every token seen.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Stop when this text appears (not included in the output); repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Apply the model's chat template to the prompt (as one user message).
    ///
    /// On a gpt-oss model (its vocabulary has OpenAI's harmony tokens) the prompt is written in the
    /// harmony format instead, as OpenAI's openai-harmony library renders it: the system message
    /// (model identity, knowledge cutoff 2024-06, reasoning effort, valid channels), a developer
    /// message with --developer, the user message.
    ///
    /// The answer then comes on channels: stdout gets only the final channel; the analysis channel
    /// (the model's reasoning) and the commentary channel (preambles, tool calls) go to stderr,
    /// each message on a line of its own after "[analysis] " or "[commentary to=RECIPIENT] "
    /// (--hide-reasoning leaves out the analysis). Generation stops at <|return|> or <|call|>;
    /// --stop is not supported. With --json the object also has "messages": [{"channel",
    /// "recipient", "content_type", "content"}, …], and "text" is the raw text.
    #[arg(long)]
    chat: bool,
    /// A system message for --chat. On a harmony (gpt-oss) model it replaces the model identity,
    /// the first line of the system message ("You are ChatGPT, a large language model trained by
    /// OpenAI."); instructions belong in --developer.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Developer instructions, for --chat on a harmony (gpt-oss) model (the developer message's
    /// "# Instructions"; where the gpt-oss chat template puts a system message).
    #[arg(long, value_name = "TEXT")]
    developer: Option<String>,
    /// Reasoning effort, for --chat on a harmony (gpt-oss) model: low, medium (default) or high.
    #[arg(long, value_name = "LEVEL")]
    reasoning_effort: Option<ReasoningEffort>,
    /// With --chat on a harmony (gpt-oss) model: do not print the analysis channel (the model's
    /// reasoning) on stderr.
    #[arg(long)]
    hide_reasoning: bool,
    /// Print one JSON object at the end instead of streaming text (fields in the README).
    #[arg(long)]
    json: bool,
    /// Write the logits that chose each generated token: little-endian f32, n_vocab per row.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: device::DeviceArgs,
}

/// Exit code for input kiln cannot use (a malformed model file, a bad argument).
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { model, json } => {
            let path = match resolve_model(model.as_deref()) {
                Ok(p) => p,
                Err(e) => return e.exit(),
            };
            match kiln_gguf::GgufFile::open(&path) {
                Ok(file) => {
                    let report = inspect::Report::new(&path.display().to_string(), &file);
                    let out = if json { report.to_json() } else { report.to_text() };
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_BAD_INPUT, &format!("{}: {e}", path.display())),
            }
        }
        Cmd::Generate(g) => {
            let prompt = match g.prompt.text() {
                Ok(p) => p,
                Err(e) => return fail(EXIT_BAD_INPUT, &format!("{e:#}")),
            };
            let req = generate::Request {
                prompt,
                chat: g.chat,
                system: g.system.clone(),
                developer: g.developer.clone(),
                reasoning_effort: g.reasoning_effort,
                hide_reasoning: g.hide_reasoning,
                max_tokens: g.max_tokens,
                ctx: g.ctx,
                sampling: SamplingParams {
                    temperature: g.temperature,
                    top_k: g.top_k,
                    top_p: g.top_p,
                    min_p: g.min_p,
                    repeat_penalty: g.repeat_penalty,
                    repeat_last_n: g.repeat_last_n,
                    presence_penalty: g.presence_penalty,
                    frequency_penalty: g.frequency_penalty,
                    seed: g.seed,
                },
                stop: g.stop.clone(),
                ignore_eos: g.ignore_eos,
                dump_logits: g.dump_logits.clone(),
                stream: !g.json,
            };
            // Before the model is loaded (or fetched).
            if let Err(e) = req.check_flags() {
                return fail(EXIT_BAD_INPUT, &format!("{e:#}"));
            }
            with_model(g.model.model.as_deref(), g.threads, &g.device, |engine| {
                let mut out = with_engine!(engine, |l| generate::run(l, &req))?;
                out.gpu = engine.gpu_report();
                if g.json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    let t = &out.timings;
                    eprintln!(
                        "kiln: {} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, finish: {}",
                        t.prefill_tokens,
                        t.prefill_tokens_per_s,
                        out.generated_ids.len(),
                        t.decode_tokens_per_s,
                        out.finish_reason
                    );
                }
                Ok(())
            })
        }
        // The tokenizer alone, from the file's metadata: no weights are bound (a vocabulary-only
        // GGUF works, and a large model is only mapped, not read).
        Cmd::Tokenize { model, text, no_special, json } => {
            let path = match resolve_model(model.model.as_deref()) {
                Ok(p) => p,
                Err(e) => return e.exit(),
            };
            let run = || -> anyhow::Result<()> {
                let tok = kiln_tokenizer::Tokenizer::from_gguf_path(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let ids = tok.encode(&text, !no_special, !no_special)?;
                if json {
                    let pieces: Vec<String> = ids
                        .iter()
                        .map(|&id| tok.token_to_piece(id, true).map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect::<Result<_, _>>()?;
                    println!("{}", serde_json::json!({ "ids": ids, "pieces": pieces }));
                } else {
                    println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
                }
                Ok(())
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_BAD_INPUT, &format!("{e:#}")),
            }
        }
        Cmd::Bench { model, n_prompt, n_gen, reps, threads, json, device } => {
            with_model(model.model.as_deref(), threads, &device, |engine| {
                let threads = match engine {
                    device::Engine::Cpu(l) => l.model.backend.threads(),
                    #[cfg(feature = "cuda")]
                    device::Engine::Cuda(_) => 0,
                };
                let results = with_engine!(engine, |l| bench::run(&l.model, n_prompt, n_gen, reps, threads))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&results)?);
                } else {
                    let name = model.model.clone().unwrap_or_else(|| kiln_fetch::DEFAULT_MODEL.to_string());
                    let dev = engine.gpu_report().map(|g| g.device);
                    let where_ = dev.clone().map_or_else(|| "threads".to_string(), |_| "device".to_string());
                    println!("| model | {where_} | test | t/s |");
                    println!("| --- | ---: | ---: | ---: |");
                    for r in &results {
                        let w = dev.clone().unwrap_or_else(|| r.threads.to_string());
                        println!("| {name} | {w} | {} | {:.2} ± {:.2} |", r.test, r.mean_tps, r.sd_tps);
                    }
                }
                Ok(())
            })
        }
        Cmd::Serve(s) => {
            let path = match resolve_model(s.model.model.as_deref()) {
                Ok(p) => p,
                Err(e) => return e.exit(),
            };
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .try_init();
            let name = path.display().to_string();
            match serve::run(&path, name, &s) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_BAD_INPUT, &format!("{e:#}")),
            }
        }
        Cmd::Client(c) => match client::run(&c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &format!("{e:#}")),
        },
        Cmd::Loadtest(l) => match loadtest::run(&l) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &format!("{e:#}")),
        },
    }
}

/// Loads the model named on the command line on the chosen device and runs `f`; errors become one
/// line on stderr.
fn with_model(
    arg: Option<&str>,
    threads: usize,
    dev: &device::DeviceArgs,
    f: impl FnOnce(&device::Engine) -> anyhow::Result<()>,
) -> ExitCode {
    #[cfg(not(feature = "cuda"))]
    if dev.device == device::DeviceKind::Cuda {
        // Before the model is fetched or read.
        return fail(EXIT_BAD_INPUT, device::NO_CUDA);
    }
    let path = match resolve_model(arg) {
        Ok(p) => p,
        Err(e) => return e.exit(),
    };
    let loaded = match device::Engine::load(&path, threads, dev) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_BAD_INPUT, &format!("{e:#}")),
    };
    match f(&loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_BAD_INPUT, &format!("{e:#}")),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("kiln: error: {msg}");
    ExitCode::from(code)
}

/// Why a model could not be resolved: bad input (exit 2) or a failed fetch (exit 1).
enum ResolveError {
    BadInput(String),
    Fetch(String),
}

impl ResolveError {
    fn exit(self) -> ExitCode {
        match self {
            ResolveError::BadInput(msg) => fail(EXIT_BAD_INPUT, &msg),
            ResolveError::Fetch(msg) => fail(1, &msg),
        }
    }
}

/// A path if one exists there, else a known model name (fetched on first use), else the default.
fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ResolveError> {
    let spec = match arg {
        Some(a) if std::path::Path::new(a).exists() => return Ok(PathBuf::from(a)),
        Some(a) => kiln_fetch::find(a).map_err(|_| {
            ResolveError::BadInput(format!("{a}: no such file, and not a known model ({})", known_models()))
        })?,
        None => kiln_fetch::find(kiln_fetch::DEFAULT_MODEL).map_err(|e| ResolveError::Fetch(e.to_string()))?,
    };
    kiln_fetch::ensure(spec, true).map_err(|e| ResolveError::Fetch(format!("fetching {}: {e}", spec.name)))
}

fn known_models() -> String {
    kiln_fetch::MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}
