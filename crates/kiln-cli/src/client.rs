//! `kiln client`: one Generate stream from a running `kiln serve`, printed as it arrives.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kiln_server::pb;
use kiln_server::pb::generate_event::Event;
use kiln_server::pb::worker_client::WorkerClient;
use serde_json::json;

#[derive(Args)]
pub struct ClientCmd {
    #[command(flatten)]
    prompt: crate::PromptArg,
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Send the prompt as one user message (the server applies the model's chat template).
    #[arg(long)]
    chat: bool,
    /// A system message, with --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate (default: until the context is full).
    #[arg(long, short = 'n')]
    max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy (default: the server's, 0.8).
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repeat_penalty: Option<f32>,
    #[arg(long)]
    presence_penalty: Option<f32>,
    #[arg(long)]
    frequency_penalty: Option<f32>,
    /// Random seed (default: one the server draws and reports).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this text appears; repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Return this many top log-probabilities per token (shown with --json).
    #[arg(long, default_value_t = 0)]
    logprobs: u32,
    /// The request id (default: the server makes one).
    #[arg(long, default_value = "")]
    request_id: String,
    /// Deadline in seconds (the gRPC deadline).
    #[arg(long)]
    timeout: Option<f64>,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: &ClientCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: &ClientCmd) -> anyhow::Result<()> {
    let prompt = cmd.prompt.text()?;
    let input = if cmd.chat {
        let mut messages = Vec::new();
        if let Some(s) = &cmd.system {
            messages.push(pb::ChatMessage { role: "system".into(), content: s.clone() });
        }
        messages.push(pb::ChatMessage { role: "user".into(), content: prompt });
        pb::generate_request::Input::Messages(pb::ChatMessages { messages })
    } else {
        pb::generate_request::Input::Text(prompt)
    };
    let req = pb::GenerateRequest {
        request_id: cmd.request_id.clone(),
        input: Some(input),
        temperature: cmd.temperature,
        top_k: cmd.top_k,
        top_p: cmd.top_p,
        min_p: cmd.min_p,
        repeat_penalty: cmd.repeat_penalty,
        presence_penalty: cmd.presence_penalty,
        frequency_penalty: cmd.frequency_penalty,
        seed: cmd.seed,
        max_tokens: cmd.max_tokens,
        stop: cmd.stop.clone(),
        ignore_eos: cmd.ignore_eos,
        logprobs: cmd.logprobs,
        repeat_last_n: None,
    };
    let mut client =
        WorkerClient::connect(cmd.addr.clone()).await.with_context(|| format!("connecting to {}", cmd.addr))?;
    let mut request = tonic::Request::new(req);
    if let Some(t) = cmd.timeout {
        request.set_timeout(Duration::from_secs_f64(t));
    }
    let mut stream = match client.generate(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => bail!("{:?}: {}", s.code(), s.message()),
    };
    let mut out = std::io::stdout().lock();
    let (mut first, mut ids, mut logprobs) = (serde_json::Value::Null, Vec::new(), Vec::new());
    let mut finished = None;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(s) => bail!("stream ended with {:?}: {}", s.code(), s.message()),
        };
        match msg.event {
            Some(Event::First(f)) => {
                first = json!({"request_id": f.request_id, "prompt_tokens": f.prompt_tokens, "seed": f.seed, "queue_seconds": f.queue_seconds});
            }
            Some(Event::Token(t)) => {
                ids.extend_from_slice(&t.ids);
                for l in &t.logprobs {
                    logprobs.push(json!({
                        "id": l.id, "logprob": l.logprob, "bytes": l.bytes,
                        "top": l.top.iter().map(|t| json!({"id": t.id, "logprob": t.logprob, "bytes": t.bytes})).collect::<Vec<_>>(),
                    }));
                }
                if !cmd.json && !t.text.is_empty() {
                    out.write_all(t.text.as_bytes())?;
                    out.flush()?;
                }
            }
            Some(Event::Final(f)) => finished = Some(f),
            None => {}
        }
    }
    let Some(f) = finished else { bail!("the stream ended without a final event") };
    let reason =
        pb::FinishReason::try_from(f.finish_reason).map(|r| r.as_str_name()).unwrap_or("FINISH_REASON_UNSPECIFIED");
    let usage = f.usage.unwrap_or_default();
    let timings = f.timings.unwrap_or_default();
    if cmd.json {
        let v = json!({
            "request_id": first["request_id"],
            "prompt_tokens": usage.prompt_tokens,
            "seed": first["seed"],
            "generated_ids": ids,
            "text": f.text,
            "finish_reason": reason,
            "stop": f.stop,
            "completion_tokens": usage.completion_tokens,
            "error": f.error,
            "logprobs": logprobs,
            "timings": {"queue_seconds": timings.queue_seconds, "prefill_seconds": timings.prefill_seconds, "decode_seconds": timings.decode_seconds},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        writeln!(out)?;
        eprintln!(
            "kiln client: {} prompt tokens, {} generated, finish: {reason}{}; queue {:.3}s, prefill {:.3}s, decode {:.3}s",
            usage.prompt_tokens,
            usage.completion_tokens,
            if f.error.is_empty() { String::new() } else { format!(" ({})", f.error) },
            timings.queue_seconds,
            timings.prefill_seconds,
            timings.decode_seconds
        );
    }
    Ok(())
}
