//! `kiln serve`: the gRPC worker, and the OpenAI-compatible HTTP API with `--http-listen`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kiln_sched::{Engine, EngineConfig};
use kiln_server::{ModelSummary, ServeConfig};

use crate::ModelArg;

#[derive(Args)]
pub struct ServeCmd {
    #[command(flatten)]
    pub model: ModelArg,
    /// Address of the gRPC server (kiln.v1.Worker, health, reflection). Port 0 picks a free port;
    /// the address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the Prometheus endpoint (GET /metrics). "off" to disable. The same address as
    /// --http-listen serves it there.
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_metrics_addr)]
    pub metrics_listen: MetricsAddr,
    /// Address of the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
    /// /v1/models, /health; docs/HTTP.md), e.g. 127.0.0.1:8080. Bound before the model loads
    /// (/health says 503 until it is ready). Default: no HTTP API.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// The model's id in the HTTP API (/v1/models, `model` of responses). Default: the file name
    /// without `.gguf`.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Require `Authorization: Bearer KEY` on the HTTP API's /v1 routes (401 otherwise; /health
    /// and /metrics stay open).
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest HTTP request body (e.g. 16MiB); a larger one gets 413.
    #[arg(long, default_value = "16MiB", value_parser = crate::device::parse_bytes)]
    pub http_max_body: u64,
    /// Most sequences in the running batch.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Most requests waiting for admission; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// KV cache memory budget in bytes (e.g. 268435456, 256MiB, 2GB, 8Gi). Default: room for
    /// --max-batch full contexts, at most a quarter of the available memory (on a GPU: three
    /// quarters of what is free on the card, or under --gpu-memory, after the weights).
    #[arg(long, value_parser = crate::device::parse_bytes)]
    pub kv_memory: Option<u64>,
    /// Most positions per sequence (default: the model's trained context, at most 4096).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Most tokens per engine step; prompts longer than what is left of it are prefilled in chunks.
    #[arg(long, default_value_t = 512)]
    pub step_tokens: usize,
    /// On SIGTERM or Ctrl-C, seconds running requests may go on before they are cancelled.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// Threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr(None));
    }
    s.parse().map(|a| MetricsAddr(Some(a))).map_err(|e| format!("{e} (an address like 127.0.0.1:9090, or off)"))
}

pub fn run(path: &Path, name: String, cmd: &ServeCmd) -> anyhow::Result<()> {
    if !(cmd.drain_timeout.is_finite() && cmd.drain_timeout >= 0.0) {
        bail!("--drain-timeout must be a number of seconds >= 0");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kiln-serve")
        .build()
        .context("starting the async runtime")?;
    // The HTTP API answers (503) while the model loads.
    let http = match cmd.http_listen {
        Some(listen) => {
            let model = cmd.served_model_name.clone().unwrap_or_else(|| {
                let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                file.strip_suffix(".gguf").unwrap_or(&file).to_owned()
            });
            let config = kiln_server::http::HttpConfig {
                listen,
                model,
                max_body: usize::try_from(cmd.http_max_body).unwrap_or(usize::MAX),
                metrics: metrics_on_http(cmd),
                api_key: cmd.api_key.clone(),
            };
            let h = rt.block_on(kiln_server::http::bind(config))?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "kiln serve: http listening on {}", h.local_addr());
            let _ = out.flush();
            Some(h)
        }
        None => None,
    };
    let engine = crate::device::Engine::load(path, cmd.threads, &cmd.device)?;
    let (device, kv_default) = (engine.label(), engine.kv_budget()?);
    crate::with_engine!(engine, |l| serve(l, name, device, kv_default, cmd, &rt, http))
}

fn serve<B: kiln_model::Backend + 'static>(
    loaded: crate::generate::Loaded<B>,
    name: String,
    device: String,
    kv_default: Option<u64>,
    cmd: &ServeCmd,
    rt: &tokio::runtime::Runtime,
    http: Option<kiln_server::http::HttpServer>,
) -> anyhow::Result<()> {
    let batch_invariant = cmd.device.batch_invariant;
    let crate::generate::Loaded { model, tokenizer, .. } = loaded;
    let mut summary = ModelSummary::new(name, &model.file, &tokenizer, model.config.n_ctx_train, device);
    summary.batch_invariant = batch_invariant;
    let config = EngineConfig {
        max_batch: cmd.max_batch,
        max_queue: cmd.max_queue,
        n_ctx: cmd.ctx,
        kv_memory: cmd.kv_memory.or(kv_default),
        step_tokens: cmd.step_tokens,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::start(model, Arc::new(tokenizer), config).context("starting the engine")?);
    let info = engine.info().clone();
    let http_addr = http.as_ref().map(|h| h.local_addr());
    let metrics_on_http = metrics_on_http(cmd);
    let serve = ServeConfig {
        listen: cmd.listen,
        metrics_listen: if metrics_on_http { None } else { cmd.metrics_listen.0 },
        drain_timeout: Duration::from_secs_f64(cmd.drain_timeout),
    };
    rt.block_on(kiln_server::serve(engine, summary, serve, http, shutdown_signal(), |grpc, metrics| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "kiln serve: grpc listening on {grpc}");
        if let Some(m) = metrics.or(if metrics_on_http { http_addr } else { None }) {
            let _ = writeln!(out, "kiln serve: metrics on http://{m}/metrics");
        }
        let _ = writeln!(
            out,
            "kiln serve: context {}, max batch {}, max queue {}, KV {} blocks of {} positions ({} bytes){}",
            info.n_ctx,
            info.max_batch,
            info.max_queue,
            info.kv_blocks_total,
            info.block_size,
            info.kv_bytes,
            if batch_invariant { ", batch-invariant" } else { "" }
        );
        let _ = out.flush();
    }))?;
    eprintln!("kiln serve: drained, exiting");
    Ok(())
}

/// Whether --metrics-listen names --http-listen's address (port 0 is a fresh port each time).
fn metrics_on_http(cmd: &ServeCmd) -> bool {
    cmd.http_listen.is_some_and(|h| h.port() != 0 && cmd.metrics_listen.0 == Some(h))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
