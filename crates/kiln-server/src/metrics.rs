//! Prometheus metrics (`GET /metrics`, OpenMetrics text), shared by the gRPC and HTTP APIs. Names
//! are in docs/OPERATIONS.md.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::time::Instant;

use kiln_sched::{Engine, Event, Finish};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the worker exports.
pub struct Metrics {
    engine: Arc<Engine>,
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    queue_depth: Gauge,
    running: Gauge,
    batch_size: Gauge,
    batch_tokens: Gauge,
    kv_used: Gauge,
    kv_total: Gauge,
    kv_utilization: Gauge<f64, AtomicU64>,
    ttft: Histogram,
    itl: Histogram,
    /// The engine's counts at the last scrape (its counters are copied in as increments).
    last: Mutex<EngineCounts>,
}

#[derive(Default, Clone)]
struct EngineCounts {
    finished: [u64; 7],
    prompt_tokens: u64,
    generation_tokens: u64,
}

const FINISHES: [Finish; 7] = Finish::ALL;

impl Metrics {
    pub fn new(engine: Arc<Engine>) -> Metrics {
        let mut r = Registry::with_prefix("kiln");
        let m = Metrics {
            engine,
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            batch_size: Gauge::default(),
            batch_tokens: Gauge::default(),
            kv_used: Gauge::default(),
            kv_total: Gauge::default(),
            kv_utilization: Gauge::default(),
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            itl: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last: Mutex::new(EngineCounts::default()),
        };
        r.register(
            "requests",
            "Generate requests by outcome: a finish reason (eos, stop_string, length, context_full, cancelled, deadline, error) or a refusal (rejected_invalid, rejected_queue_full, rejected_too_large, rejected_duplicate_id, rejected_unavailable)",
            m.requests.clone(),
        );
        r.register("prompt_tokens", "Prompt tokens of finished requests", m.prompt_tokens.clone());
        r.register("generation_tokens", "Generated tokens of finished requests", m.generation_tokens.clone());
        r.register("queue_depth", "Requests waiting for admission", m.queue_depth.clone());
        r.register("running_sequences", "Sequences in the running batch", m.running.clone());
        r.register("batch_size", "Sequences in the last engine step", m.batch_size.clone());
        r.register("batch_tokens", "Tokens (rows) in the last engine step", m.batch_tokens.clone());
        r.register("kv_blocks_used", "KV cache blocks in use", m.kv_used.clone());
        r.register("kv_blocks_total", "KV cache blocks under the memory budget", m.kv_total.clone());
        r.register(
            "kv_cache_utilization",
            "KV cache blocks in use or reserved by running sequences, as a fraction of the total (0 to 1)",
            m.kv_utilization.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From a Generate request's arrival to its first generated token",
            m.ttft.clone(),
        );
        r.register("inter_token_latency_seconds", "Between consecutive generated tokens of a stream", m.itl.clone());
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }

    /// Counts a request that was refused before its first event.
    pub fn rejected(&self, label: &'static str) {
        self.requests.get_or_create(&vec![("outcome", label)]).inc();
    }

    /// Brings the engine's figures in and encodes everything.
    pub fn render(&self) -> String {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.engine.stats();
        self.queue_depth.set(s.queued as i64);
        self.running.set(s.running as i64);
        self.batch_size.set(s.last_batch_seqs as i64);
        self.batch_tokens.set(s.last_batch_rows as i64);
        self.kv_used.set(s.kv_blocks_used as i64);
        self.kv_total.set(s.kv_blocks_total as i64);
        let busy = s.kv_blocks_used.max(s.kv_blocks_reserved);
        self.kv_utilization.set(if s.kv_blocks_total == 0 { 0.0 } else { busy as f64 / s.kv_blocks_total as f64 });
        {
            for (i, f) in FINISHES.iter().enumerate() {
                let d = s.finished[i] - last.finished[i];
                if d > 0 || s.finished[i] > 0 {
                    self.requests.get_or_create(&vec![("outcome", f.as_str())]).inc_by(d);
                }
            }
            self.prompt_tokens.inc_by(s.prompt_tokens - last.prompt_tokens);
            self.generation_tokens.inc_by(s.generated_tokens - last.generation_tokens);
            *last = EngineCounts {
                finished: s.finished,
                prompt_tokens: s.prompt_tokens,
                generation_tokens: s.generated_tokens,
            };
            drop(last);
        }
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

/// Time to first token and between tokens of one stream, as its events arrive.
pub struct TokenClock {
    arrived: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    /// A stream whose request arrived at `arrived`.
    pub fn new(arrived: Instant) -> TokenClock {
        TokenClock { arrived, last: None }
    }

    /// Observes `e` if it carries generated tokens.
    pub fn observe(&mut self, m: &Metrics, e: &Event) {
        if let Event::Token { ids, .. } = e
            && !ids.is_empty()
        {
            let now = Instant::now();
            match self.last {
                None => m.ttft.observe((now - self.arrived).as_secs_f64()),
                Some(t) => m.itl.observe((now - t).as_secs_f64()),
            }
            self.last = Some(now);
        }
    }
}

pub fn router(m: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(m)
}

async fn scrape(State(m): State<Arc<Metrics>>) -> Response {
    scrape_response(&m)
}

/// `GET /metrics`' answer.
pub fn scrape_response(m: &Metrics) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
        .into_response()
}
