//! The OpenAI-compatible HTTP API (docs/HTTP.md): `POST /v1/chat/completions`,
//! `POST /v1/completions` (JSON or server-sent events), `GET /v1/models`, `GET /health`, and
//! `GET /metrics` when the Prometheus endpoint shares the address.
//!
//! It is bound before the model loads ([`bind`]) so that `/health` can say 503 while loading, and
//! it submits to the same [`Engine`] as the gRPC service: one queue, one KV budget, one set of
//! metrics.

mod generate;
mod types;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_sched::{Engine, SubmitError};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{ServeError, metrics::Metrics};

/// Where and how to serve HTTP.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The model's id (`/v1/models`, `model` of every response).
    pub model: String,
    /// Largest request body in bytes; a larger one gets 413.
    pub max_body: usize,
    /// Serve `GET /metrics` here too (the Prometheus endpoint shares the address).
    pub metrics: bool,
    /// When set, `/v1/*` needs `Authorization: Bearer KEY` (401 otherwise).
    pub api_key: Option<String>,
}

/// A bound HTTP server: it answers from the moment it is bound (503 until [`crate::serve`] gives
/// it the engine) until the drain ends.
pub struct HttpServer {
    addr: SocketAddr,
    state: Arc<HttpState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// The bound address (port 0 picks a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn ready(&self, engine: Arc<Engine>, metrics: Arc<Metrics>) {
        let harmony = engine.tokenizer().is_harmony();
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let model = self.state.model.clone();
        let _ = self.state.ready.set(Ready { engine, metrics, harmony, created, model });
    }

    pub(crate) fn draining(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Closes the listener and waits for open responses to end.
    pub(crate) async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Http(e)),
        }
    }
}

/// Binds `config.listen` and starts answering.
pub async fn bind(config: HttpConfig) -> Result<HttpServer, ServeError> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|e| ServeError::Bind { addr: config.listen, err: e })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Bind { addr: config.listen, err: e })?;
    let state = Arc::new(HttpState {
        ready: OnceLock::new(),
        draining: AtomicBool::new(false),
        max_body: config.max_body,
        model: config.model,
        api_key: config.api_key,
    });
    let app = router(state.clone(), config.metrics);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(HttpServer { addr, state, stop, task })
}

pub(crate) struct HttpState {
    ready: OnceLock<Ready>,
    draining: AtomicBool,
    max_body: usize,
    model: String,
    api_key: Option<String>,
}

/// What the handlers need once the model is loaded.
pub(crate) struct Ready {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// gpt-oss: chat goes through harmony.
    pub harmony: bool,
    /// Unix time the model became ready (`created` of `/v1/models`).
    pub created: u64,
    /// Its id.
    pub model: String,
}

impl HttpState {
    /// The loaded model, or 503 while loading.
    fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading; retry shortly")
                .kind("unavailable_error")
                .code("model_loading")
        })
    }
}

fn router(state: Arc<HttpState>, metrics: bool) -> Router {
    let max_body = state.max_body;
    let api = Router::new()
        .route("/v1/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authorize));
    let mut r = api.route("/health", get(health));
    if metrics {
        r = r.route("/metrics", get(scrape));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            503 => "unavailable_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        };
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// A 400 about one field.
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message).param(param)
    }

    pub fn param(mut self, p: &str) -> ApiError {
        self.param = Some(p.to_owned());
        self
    }

    pub fn kind(mut self, k: &'static str) -> ApiError {
        self.kind = k;
        self
    }

    pub fn code(mut self, c: &'static str) -> ApiError {
        self.code = Some(c);
        self
    }

    /// The body, also sent as an SSE `data:` line when a stream fails.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    /// The status and text of a refused submission.
    pub fn submit(e: &SubmitError) -> ApiError {
        let (status, code) = match e {
            SubmitError::Invalid(_) | SubmitError::TokenOutOfRange { .. } | SubmitError::DuplicateId(_) => {
                (StatusCode::BAD_REQUEST, None)
            }
            SubmitError::PromptTooLong { .. } | SubmitError::NeverFits { .. } => {
                (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
            }
            SubmitError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, Some("queue_full")),
            SubmitError::Draining => (StatusCode::SERVICE_UNAVAILABLE, Some("draining")),
            SubmitError::Stopped(_) => (StatusCode::SERVICE_UNAVAILABLE, Some("engine_stopped")),
        };
        let mut err = ApiError::new(status, e.to_string());
        err.code = code;
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

/// A JSON body read as `T`: 413 past the body limit, 400 naming the field for a wrong type.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server accepts (kiln serve --http-max-body)",
            )
            .code("request_too_large")),
            Err(e) => Err(ApiError::new(e.status(), format!("reading the request body: {}", e.body_text()))),
        }
    }
}

impl Body {
    /// The body as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = if inner.is_syntax() || inner.is_eof() {
                format!("the body is not valid JSON: {inner}")
            } else if path == "." {
                format!("the body: {inner}")
            } else {
                format!("{path}: {inner}")
            };
            let err = ApiError::new(StatusCode::BAD_REQUEST, msg);
            if path == "." || inner.is_syntax() || inner.is_eof() { err } else { err.param(&path) }
        })?;
        de.end().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))?;
        Ok(v)
    }
}

/// With `--api-key`: the API routes need `Authorization: Bearer KEY`.
async fn authorize(State(st): State<Arc<HttpState>>, req: Request, next: axum::middleware::Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) != Some(key.as_str()) {
            let why = if given.is_some() {
                "the API key is not valid"
            } else {
                "an API key is needed (Authorization: Bearer KEY)"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, why).code("invalid_api_key").into_response();
        }
    }
    next.run(req).await
}

async fn health(State(st): State<Arc<HttpState>>) -> Response {
    let status = match st.ready.get() {
        None => "loading",
        Some(_) if st.draining.load(Ordering::SeqCst) => "draining",
        Some(r) if r.engine.is_draining() => "draining",
        Some(r) if r.engine.stopped().is_some() => "stopped",
        Some(_) => "ok",
    };
    let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(json!({"status": status}))).into_response()
}

fn model_object(r: &Ready) -> serde_json::Value {
    json!({
        "id": r.model,
        "object": "model",
        "created": r.created,
        "owned_by": "kiln",
        "max_model_len": r.engine.info().n_ctx,
    })
}

async fn models(State(st): State<Arc<HttpState>>) -> Result<Response, ApiError> {
    let r = st.ready()?;
    Ok(axum::Json(json!({"object": "list", "data": [model_object(r)]})).into_response())
}

async fn model(State(st): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = st.ready()?;
    if id != r.model {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the model {id:?} does not exist; this server has {:?}", r.model),
        )
        .param("model")
        .code("model_not_found"));
    }
    Ok(axum::Json(model_object(r)).into_response())
}

async fn scrape(State(st): State<Arc<HttpState>>) -> Result<Response, ApiError> {
    let r = st.ready()?;
    Ok(crate::metrics::scrape_response(&r.metrics))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Invalid URL ({method} {})", uri.path())).code("not_found")
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
        .code("method_not_allowed")
}
