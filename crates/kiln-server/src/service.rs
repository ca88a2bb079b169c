//! `kiln.v1.Worker`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use kiln_sched::{CancelOutcome, Engine};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::metrics::{Metrics, TokenClock};
use crate::pb::worker_server::Worker;
use crate::{ModelSummary, convert, pb};

pub struct WorkerService {
    engine: Arc<Engine>,
    summary: ModelSummary,
    metrics: Arc<Metrics>,
}

impl WorkerService {
    pub fn new(engine: Arc<Engine>, summary: ModelSummary, metrics: Arc<Metrics>) -> WorkerService {
        WorkerService { engine, summary, metrics }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerService {
    type GenerateStream = EventStream;

    async fn generate(&self, request: Request<pb::GenerateRequest>) -> Result<Response<EventStream>, Status> {
        let arrived = Instant::now();
        let timeout =
            convert::grpc_timeout(request.metadata()).inspect_err(|_| self.metrics.rejected("rejected_invalid"))?;
        let deadline = timeout.map(|t| arrived + t);
        let req = match convert::request(request.into_inner(), deadline) {
            Ok(r) => r,
            Err(s) => {
                self.metrics.rejected("rejected_invalid");
                return Err(s);
            }
        };
        let engine = self.engine.clone();
        // Tokenizing a long prompt takes a while: off the async threads.
        let submitted = tokio::task::spawn_blocking(move || engine.submit(req))
            .await
            .map_err(|e| Status::internal(format!("submitting the request: {e}")))?;
        let submitted = match submitted {
            Ok(s) => s,
            Err(e) => {
                self.metrics.rejected(convert::submit_error_label(&e));
                return Err(convert::submit_error(&e));
            }
        };
        let metrics = self.metrics.clone();
        let mut clock = TokenClock::new(arrived);
        let stream = UnboundedReceiverStream::new(submitted.events).map(move |e| {
            clock.observe(&metrics, &e);
            Ok(convert::event(e))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn tokenize(&self, request: Request<pb::TokenizeRequest>) -> Result<Response<pb::TokenizeResponse>, Status> {
        let r = request.into_inner();
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let tok = engine.tokenizer();
            let ids = match r.input {
                Some(pb::tokenize_request::Input::Text(t)) => tok
                    .encode(&t, r.add_special.unwrap_or(true), r.parse_special.unwrap_or(true))
                    .map_err(|e| Status::invalid_argument(format!("text: {e}")))?,
                Some(pb::tokenize_request::Input::Messages(m)) => {
                    let msgs = convert::messages(m);
                    if msgs.is_empty() {
                        return Err(Status::invalid_argument("messages is empty"));
                    }
                    if !tok.is_harmony() && tok.chat_template().is_none() {
                        return Err(Status::invalid_argument("messages: the model has no chat template"));
                    }
                    kiln_sched::chat_ids(tok, &msgs, tok.is_harmony())
                        .map_err(|e| Status::invalid_argument(e.to_string()))?
                }
                None => return Err(Status::invalid_argument("input: set text or messages")),
            };
            let pieces = ids.iter().map(|&id| tok.token_to_piece(id, true).unwrap_or_default()).collect();
            Ok(Response::new(pb::TokenizeResponse { ids, pieces }))
        })
        .await
        .map_err(|e| Status::internal(format!("tokenizing: {e}")))?
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let r = request.into_inner();
        let tok = self.engine.tokenizer();
        let n_vocab = tok.vocab_size();
        if let Some((i, id)) = r.ids.iter().enumerate().find(|(_, id)| **id as usize >= n_vocab) {
            return Err(Status::invalid_argument(format!(
                "ids[{i}] = {id} is outside the vocabulary (size {n_vocab})"
            )));
        }
        let text = tok.decode(&r.ids, r.special).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::DetokenizeResponse { text }))
    }

    async fn model_info(
        &self,
        _request: Request<pb::ModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfoResponse>, Status> {
        let s = &self.summary;
        let info = self.engine.info();
        let stats = self.engine.stats();
        Ok(Response::new(pb::ModelInfoResponse {
            model: s.model.clone(),
            architecture: s.architecture.clone(),
            quantization: s.quantization.clone(),
            parameters: s.parameters,
            context_trained: s.context_trained as u32,
            context_configured: info.n_ctx as u32,
            vocab_size: s.vocab_size as u32,
            bos_id: s.bos_id,
            eos_id: s.eos_id,
            eog_ids: s.eog_ids.clone(),
            chat_template: s.chat_template.clone(),
            kv_bytes_per_token: info.kv_bytes_per_token,
            device: s.device.clone(),
            memory_used_bytes: resident_bytes().unwrap_or(0),
            memory_free_bytes: kiln_model::cpu::available_memory().unwrap_or(0),
            kv_budget_bytes: info.kv_bytes,
            kv_block_size: info.block_size as u32,
            kv_blocks_total: stats.kv_blocks_total.min(u32::MAX as usize) as u32,
            kv_blocks_used: stats.kv_blocks_used as u32,
            max_batch: info.max_batch as u32,
            max_queue: info.max_queue as u32,
            running: stats.running as u32,
            queued: stats.queued as u32,
            batch_invariant: s.batch_invariant,
            prefill_chunk: info.step_tokens as u32,
        }))
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let id = request.into_inner().request_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("request_id is empty"));
        }
        let outcome = match self.engine.cancel(&id) {
            CancelOutcome::Running => pb::cancel_response::Outcome::Running,
            CancelOutcome::AlreadyFinished => pb::cancel_response::Outcome::AlreadyFinished,
            CancelOutcome::Unknown => pb::cancel_response::Outcome::Unknown,
        };
        Ok(Response::new(pb::CancelResponse { outcome: outcome as i32 }))
    }
}

/// This process's resident memory (Linux `/proc/self/statm`).
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
