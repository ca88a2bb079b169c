//! The kiln worker's wire: `kiln.v1.Worker` (proto/kiln/v1/worker.proto) over tonic, the standard
//! health service, server reflection (v1 and v1alpha), the OpenAI-compatible HTTP API
//! ([`http`]), Prometheus metrics over HTTP, and a graceful shutdown.
//!
//! This crate turns requests into [`kiln_sched::Request`]s, the engine's events into stream
//! messages and its errors into status codes. It knows nothing of batching or kernels;
//! [`kiln_sched::Engine`] does that.

mod convert;
pub mod http;
mod metrics;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_sched::Engine;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

pub use metrics::Metrics;
pub use service::WorkerService;

/// Messages and the service generated from `proto/kiln/v1/worker.proto`.
pub mod pb {
    tonic::include_proto!("kiln.v1");

    /// The encoded `FileDescriptorSet` of `kiln/v1/worker.proto` (for reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_v1_descriptor.bin"));
}

/// The service name health reports on (besides "").
pub const SERVICE_NAME: &str = "kiln.v1.Worker";

/// What is loaded, for `ModelInfo`: the parts that do not change while serving.
#[derive(Clone, Debug, Default)]
pub struct ModelSummary {
    pub model: String,
    pub architecture: String,
    pub quantization: Vec<pb::QuantType>,
    pub parameters: u64,
    pub context_trained: usize,
    pub vocab_size: usize,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eog_ids: Vec<u32>,
    pub chat_template: String,
    pub device: String,
    pub batch_invariant: bool,
}

impl ModelSummary {
    /// The weight types, parameters and chat template of `file`, with its tokenizer's ids.
    pub fn new(
        model: String,
        file: &kiln_gguf::GgufFile,
        tok: &kiln_tokenizer::Tokenizer,
        context_trained: usize,
        device: String,
    ) -> ModelSummary {
        let mut quant: Vec<pb::QuantType> = Vec::new();
        let mut parameters = 0;
        for t in file.tensors() {
            let n = t.n_elements();
            parameters += n;
            let name = t.ty.name().to_string();
            match quant.iter_mut().find(|q| q.r#type == name) {
                Some(q) => {
                    q.tensors += 1;
                    q.parameters += n;
                    q.bytes += t.size;
                }
                None => quant.push(pb::QuantType { r#type: name, tensors: 1, parameters: n, bytes: t.size }),
            }
        }
        quant.sort_by_key(|q| std::cmp::Reverse(q.bytes));
        ModelSummary {
            model,
            architecture: file.get_str("general.architecture").unwrap_or("unknown").to_string(),
            quantization: quant,
            parameters,
            context_trained,
            vocab_size: tok.vocab_size(),
            bos_id: tok.bos_id(),
            eos_id: tok.eos_id(),
            eog_ids: tok.eog_ids().to_vec(),
            chat_template: tok.chat_template().unwrap_or_default().to_string(),
            device,
            batch_invariant: false,
        }
    }
}

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The Prometheus endpoint (`GET /metrics`); `None`: no metrics server.
    pub metrics_listen: Option<SocketAddr>,
    /// On shutdown, how long running requests may go on before they are cancelled.
    pub drain_timeout: Duration,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The cause is in the message, not a `source` (printed once by `{:#}` chains).
    #[error("binding {addr}: {err}")]
    Bind { addr: SocketAddr, err: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Serves `engine` over gRPC, and over `http` (bound earlier with [`http::bind`]) if given, until
/// `shutdown` resolves, then drains: health goes NOT_SERVING (HTTP `/health` 503), new requests
/// get UNAVAILABLE (HTTP 503), running ones finish within `drain_timeout` or are cancelled (every
/// stream gets its final event), then the listeners close. `on_listening` gets the bound
/// addresses (gRPC, metrics) once they accept connections.
pub async fn serve(
    engine: Arc<Engine>,
    summary: ModelSummary,
    config: ServeConfig,
    http: Option<http::HttpServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new(engine.clone()));
    if let Some(h) = &http {
        h.ready(engine.clone(), metrics.clone());
    }
    let http_api = http.map(Arc::new);
    let grpc = TcpListener::bind(config.listen).await.map_err(|e| ServeError::Bind { addr: config.listen, err: e })?;
    let grpc_addr = grpc.local_addr().map_err(|e| ServeError::Bind { addr: config.listen, err: e })?;
    let metrics_listener = match config.metrics_listen {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| ServeError::Bind { addr: a, err: e })?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(ServeError::Metrics)?),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let worker = service::WorkerService::new(engine.clone(), summary, metrics.clone());
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // The engine has loaded the model and run a warm-up forward pass before we get here.
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    health_reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;

    // An engine that stops on its own (an internal error) takes the worker out of rotation.
    let watch_engine = engine.clone();
    let watch_health = health_reporter.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Some(why) = watch_engine.stopped() {
                if !watch_engine.is_draining() {
                    tracing::error!("the engine stopped: {why}");
                    watch_health.set_service_status("", ServingStatus::NotServing).await;
                    watch_health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                }
                break;
            }
        }
    });

    let (stop_grpc_tx, stop_grpc_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_engine = engine.clone();
    let drain_timeout = config.drain_timeout;
    let drain_http = http_api.clone();
    let drainer = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining (bound {drain_timeout:?})");
        if let Some(h) = &drain_http {
            h.draining();
        }
        health_reporter.set_service_status("", ServingStatus::NotServing).await;
        health_reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
        drain_engine.drain(drain_timeout);
        let e = drain_engine.clone();
        let _ = tokio::task::spawn_blocking(move || e.join()).await;
        tracing::info!("engine drained");
        let _ = stop_grpc_tx.send(());
        let _ = stop_http_tx.send(());
    });

    let http = metrics_listener.map(|l| {
        let app = metrics::router(metrics.clone());
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_http_rx.await;
                })
                .await
        })
    });

    on_listening(grpc_addr, metrics_addr);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::worker_server::WorkerServer::new(worker))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_grpc_rx.await;
        })
        .await?;
    let _ = drainer.await;
    watcher.abort();
    if let Some(h) = http_api.and_then(Arc::into_inner) {
        h.stop().await?;
    }
    if let Some(h) = http {
        match h.await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => return Err(ServeError::Metrics(e)),
        }
    }
    Ok(())
}
