//! `kiln serve`: the gRPC worker.

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
    /// Address of the Prometheus endpoint (GET /metrics). "off" to disable.
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_metrics_addr)]
    pub metrics_listen: MetricsAddr,
    /// Most sequences in the running batch.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Most requests waiting for admission; more get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// KV cache memory budget in bytes (suffixes K, M, G, Ki, Mi, Gi). Default: room for
    /// --max-batch full contexts, at most a quarter of the available memory.
    #[arg(long, value_parser = parse_bytes)]
    pub kv_memory: Option<u64>,
    /// Make a sequence's logits bit-identical whatever else shares its batch (slower batches).
    #[arg(long)]
    pub batch_invariant: bool,
    /// Most positions per sequence (default: the model's trained context, at most 4096).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Most tokens per engine step; prompts longer than what is left of it are prefilled in chunks.
    #[arg(long, default_value_t = 512)]
    pub step_tokens: usize,
    /// On SIGTERM or Ctrl-C, seconds running requests may go on before they are cancelled.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Where to run the model: cpu.
    #[arg(long, default_value = "cpu")]
    pub device: String,
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

/// Bytes with an optional K/M/G (powers of 1000) or Ki/Mi/Gi (powers of 1024) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1000),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((t, 1));
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?}: expected bytes such as 268435456, 256Mi or 2G"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{s:?}: expected a non-negative size"));
    }
    Ok((n * mult as f64) as u64)
}

pub fn run(path: &Path, name: String, cmd: &ServeCmd) -> anyhow::Result<()> {
    if cmd.device != "cpu" {
        bail!("--device {}: this build runs on the cpu only", cmd.device);
    }
    if !(cmd.drain_timeout.is_finite() && cmd.drain_timeout >= 0.0) {
        bail!("--drain-timeout must be a number of seconds >= 0");
    }
    let loaded = crate::generate::load_with(path, cmd.threads, cmd.batch_invariant)?;
    let crate::generate::Loaded { model, tokenizer, .. } = loaded;
    let mut summary = ModelSummary::new(name, &model.file, &tokenizer, model.config.n_ctx_train, "cpu".into());
    summary.batch_invariant = cmd.batch_invariant;
    let config = EngineConfig {
        max_batch: cmd.max_batch,
        max_queue: cmd.max_queue,
        n_ctx: cmd.ctx,
        kv_memory: cmd.kv_memory,
        step_tokens: cmd.step_tokens,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::start(model, Arc::new(tokenizer), config).context("starting the engine")?);
    let info = engine.info().clone();
    let serve = ServeConfig {
        listen: cmd.listen,
        metrics_listen: cmd.metrics_listen.0,
        drain_timeout: Duration::from_secs_f64(cmd.drain_timeout),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kiln-grpc")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(kiln_server::serve(engine, summary, serve, shutdown_signal(), |grpc, metrics| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "kiln serve: grpc listening on {grpc}");
        if let Some(m) = metrics {
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
            if cmd.batch_invariant { ", batch-invariant" } else { "" }
        );
        let _ = out.flush();
    }))?;
    eprintln!("kiln serve: drained, exiting");
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1").is_err());
    }
}
