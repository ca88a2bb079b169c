//! `kiln loadtest`: a bounded load against a running `kiln serve` — requests/s, output tokens/s,
//! time to first token and inter-token latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use kiln_server::pb;
use kiln_server::pb::generate_event::Event;
use kiln_server::pb::worker_client::WorkerClient;
use serde::Serialize;

#[derive(Args)]
pub struct LoadtestCmd {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Requests in all.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Clients sending at once (each sends its next request when the last one ends).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Prompt lengths in tokens, chosen at random per request.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    prompt_tokens: Vec<usize>,
    /// Output lengths in tokens (greedy, past end-of-generation), chosen at random per request.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    output_tokens: Vec<u32>,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    requests: usize,
    concurrency: usize,
    ok: usize,
    failed: usize,
    wall_s: f64,
    requests_per_s: f64,
    prompt_tokens: u64,
    output_tokens: u64,
    output_tokens_per_s: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    itl_p50_ms: f64,
    itl_p99_ms: f64,
    prompt_mix: Vec<usize>,
    output_mix: Vec<u32>,
}

struct One {
    ok: bool,
    prompt: u64,
    output: u64,
    ttft: Option<f64>,
    itl: Vec<f64>,
}

/// A small deterministic generator (SplitMix64) for the request mix.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const PASSAGE: &str = "The kiln is a thermally insulated chamber, a type of oven, that produces temperatures \
sufficient to complete some process, such as hardening, drying, or chemical changes. Kilns have been used for \
millennia to turn objects made from clay into pottery, tiles and bricks. Various industries use rotary kilns for \
pyroprocessing: to calcinate ores, to calcinate limestone to lime for cement, and to transform many other \
materials. The earliest known kilns date to around 6000 BC, and were found at the Yarim Tepe site in modern Iraq. ";

pub fn run(cmd: &LoadtestCmd) -> anyhow::Result<()> {
    if cmd.requests == 0 || cmd.concurrency == 0 || cmd.prompt_tokens.is_empty() || cmd.output_tokens.is_empty() {
        bail!("--requests, --concurrency, --prompt-tokens and --output-tokens must not be empty or 0");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: &LoadtestCmd) -> anyhow::Result<()> {
    let mut client =
        WorkerClient::connect(cmd.addr.clone()).await.with_context(|| format!("connecting to {}", cmd.addr))?;
    let longest = *cmd.prompt_tokens.iter().max().unwrap_or(&16);
    // Token ids of a long text, cut to each prompt length.
    let mut text = String::new();
    let mut ids = Vec::new();
    while ids.len() < longest {
        text.push_str(PASSAGE);
        let r = pb::TokenizeRequest {
            input: Some(pb::tokenize_request::Input::Text(text.clone())),
            add_special: Some(true),
            parse_special: Some(false),
        };
        ids = client.tokenize(r).await.context("Tokenize")?.into_inner().ids;
    }
    let ids = Arc::new(ids);
    let mut state = cmd.seed;
    let plan: Arc<Vec<(usize, u32)>> = Arc::new(
        (0..cmd.requests)
            .map(|_| {
                let p = cmd.prompt_tokens[(splitmix(&mut state) % cmd.prompt_tokens.len() as u64) as usize];
                let o = cmd.output_tokens[(splitmix(&mut state) % cmd.output_tokens.len() as u64) as usize];
                (p, o)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cmd.concurrency {
        let (mut client, next, plan, ids) = (client.clone(), next.clone(), plan.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(p, o)) = plan.get(i) else { break };
                results.push(one(&mut client, ids[..p].to_vec(), o).await);
            }
            results
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("a client task failed")?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let ok = all.iter().filter(|r| r.ok).count();
    let mut ttft: Vec<f64> = all.iter().filter_map(|r| r.ttft).collect();
    let mut itl: Vec<f64> = all.iter().flat_map(|r| r.itl.iter().copied()).collect();
    let output: u64 = all.iter().map(|r| r.output).sum();
    let report = Report {
        requests: cmd.requests,
        concurrency: cmd.concurrency,
        ok,
        failed: all.len() - ok,
        wall_s: wall,
        requests_per_s: ok as f64 / wall,
        prompt_tokens: all.iter().map(|r| r.prompt).sum(),
        output_tokens: output,
        output_tokens_per_s: output as f64 / wall,
        ttft_p50_ms: pct(&mut ttft, 0.50) * 1e3,
        ttft_p99_ms: pct(&mut ttft, 0.99) * 1e3,
        itl_p50_ms: pct(&mut itl, 0.50) * 1e3,
        itl_p99_ms: pct(&mut itl, 0.99) * 1e3,
        prompt_mix: cmd.prompt_tokens.clone(),
        output_mix: cmd.output_tokens.clone(),
    };
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "| requests | clients | ok | failed | wall s | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let r = &report;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |",
            r.requests,
            r.concurrency,
            r.ok,
            r.failed,
            r.wall_s,
            r.requests_per_s,
            r.output_tokens_per_s,
            r.ttft_p50_ms,
            r.ttft_p99_ms,
            r.itl_p50_ms,
            r.itl_p99_ms
        );
    }
    Ok(())
}

/// Nearest-rank percentile (0 for no samples).
fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

async fn one(client: &mut WorkerClient<tonic::transport::Channel>, prompt: Vec<u32>, max_tokens: u32) -> One {
    let n = prompt.len() as u64;
    let req = pb::GenerateRequest {
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds { ids: prompt })),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut r = One { ok: false, prompt: n, output: 0, ttft: None, itl: Vec::new() };
    let mut stream = match client.generate(req).await {
        Ok(s) => s.into_inner(),
        Err(_) => return r,
    };
    let mut last: Option<Instant> = None;
    while let Ok(Some(m)) = stream.message().await {
        match m.event {
            Some(Event::Token(t)) if !t.ids.is_empty() => {
                let now = Instant::now();
                match last {
                    None => r.ttft = Some((now - t0).as_secs_f64()),
                    Some(l) => r.itl.push((now - l).as_secs_f64()),
                }
                last = Some(now);
                r.output += t.ids.len() as u64;
            }
            Some(Event::Final(f)) => {
                r.ok = f.finish_reason == pb::FinishReason::Length as i32;
            }
            _ => {}
        }
    }
    r
}
