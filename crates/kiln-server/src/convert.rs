//! Between the wire and the engine: requests in, events and errors out.

use std::time::{Duration, Instant};

use kiln_sched::{Event, Finish, Input, Message, Request, SamplingParams, SubmitError};
use tonic::{Code, Status};

use crate::pb;

/// Most stop strings a request may carry, and their longest length in bytes.
pub(crate) const MAX_STOPS: usize = 16;
pub(crate) const MAX_STOP_BYTES: usize = 256;

/// A `GenerateRequest` as an engine request; INVALID_ARGUMENT for a field the engine would not
/// check itself.
pub fn request(r: pb::GenerateRequest, deadline: Option<Instant>) -> Result<Request, Status> {
    let bad = |m: String| Status::invalid_argument(m);
    let input = match r.input {
        Some(pb::generate_request::Input::Text(t)) => Input::Text(t),
        Some(pb::generate_request::Input::TokenIds(t)) => Input::Tokens(t.ids),
        Some(pb::generate_request::Input::Messages(m)) => Input::Messages(messages(m)),
        None => return Err(bad("input: set one of text, token_ids or messages".into())),
    };
    let d = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: r.temperature.unwrap_or(d.temperature),
        top_k: r.top_k.unwrap_or(d.top_k),
        top_p: r.top_p.unwrap_or(d.top_p),
        min_p: r.min_p.unwrap_or(d.min_p),
        repeat_penalty: r.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: r.repeat_last_n.unwrap_or(d.repeat_last_n),
        presence_penalty: r.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: r.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: r.seed.unwrap_or(0),
    };
    if r.stop.len() > MAX_STOPS {
        return Err(bad(format!("stop: {} stop strings; at most {MAX_STOPS}", r.stop.len())));
    }
    if let Some((i, s)) = r.stop.iter().enumerate().find(|(_, s)| s.len() > MAX_STOP_BYTES) {
        return Err(bad(format!("stop[{i}] is {} bytes long; at most {MAX_STOP_BYTES}", s.len())));
    }
    Ok(Request {
        id: r.request_id,
        input,
        sampling,
        seed: r.seed,
        max_tokens: r.max_tokens.map(|m| m as usize),
        stop: r.stop,
        ignore_eos: r.ignore_eos,
        logprobs: r.logprobs as usize,
        deadline,
    })
}

pub fn messages(m: pb::ChatMessages) -> Vec<Message> {
    m.messages.into_iter().map(|m| Message::new(m.role, m.content)).collect()
}

/// The status code and message of a refused request.
pub fn submit_error(e: &SubmitError) -> Status {
    let code = match e {
        SubmitError::Invalid(_) | SubmitError::PromptTooLong { .. } | SubmitError::TokenOutOfRange { .. } => {
            Code::InvalidArgument
        }
        SubmitError::QueueFull { .. } | SubmitError::NeverFits { .. } => Code::ResourceExhausted,
        SubmitError::DuplicateId(_) => Code::AlreadyExists,
        SubmitError::Draining => Code::Unavailable,
        SubmitError::Stopped(_) => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

/// A label for the requests counter.
pub fn submit_error_label(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::Invalid(_) | SubmitError::PromptTooLong { .. } | SubmitError::TokenOutOfRange { .. } => {
            "rejected_invalid"
        }
        SubmitError::QueueFull { .. } => "rejected_queue_full",
        SubmitError::NeverFits { .. } => "rejected_too_large",
        SubmitError::DuplicateId(_) => "rejected_duplicate_id",
        SubmitError::Draining | SubmitError::Stopped(_) => "rejected_unavailable",
    }
}

pub fn finish(f: Finish) -> pb::FinishReason {
    match f {
        Finish::Eos => pb::FinishReason::Eos,
        Finish::StopString => pb::FinishReason::StopString,
        Finish::Length => pb::FinishReason::Length,
        Finish::ContextFull => pb::FinishReason::ContextFull,
        Finish::Cancelled => pb::FinishReason::Cancelled,
        Finish::Deadline => pb::FinishReason::Deadline,
        Finish::Error => pb::FinishReason::Error,
    }
}

pub fn event(e: Event) -> pb::GenerateEvent {
    use pb::generate_event::Event as E;
    let ev = match e {
        Event::First { request_id, prompt_tokens, seed, queue_s } => {
            E::First(pb::FirstEvent { request_id, prompt_tokens: prompt_tokens as u32, seed, queue_seconds: queue_s })
        }
        Event::Token { ids, text, logprobs, channel, .. } => E::Token(pb::TokenEvent {
            ids,
            text,
            logprobs: logprobs
                .into_iter()
                .map(|l| pb::TokenLogprob {
                    id: l.id,
                    logprob: l.logprob,
                    bytes: l.bytes,
                    top: l
                        .top
                        .into_iter()
                        .map(|t| pb::TopLogprob { id: t.id, logprob: t.logprob, bytes: t.bytes })
                        .collect(),
                })
                .collect(),
            channel,
        }),
        Event::Final(f) => E::Final(pb::FinalEvent {
            finish_reason: finish(f.finish) as i32,
            stop: f.stop.unwrap_or_default(),
            usage: Some(pb::Usage {
                prompt_tokens: f.prompt_tokens as u32,
                completion_tokens: f.completion_tokens as u32,
            }),
            timings: Some(pb::Timings {
                queue_seconds: f.queue_s,
                prefill_seconds: f.prefill_s,
                decode_seconds: f.decode_s,
            }),
            text: f.text,
            error: f.error.unwrap_or_default(),
            messages: f
                .messages
                .into_iter()
                .map(|m| pb::HarmonyMessage {
                    channel: m.channel,
                    recipient: m.recipient,
                    content_type: m.content_type,
                    content: m.content,
                })
                .collect(),
        }),
    };
    pb::GenerateEvent { event: Some(ev) }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: up to 8 digits and a unit, H M S m u n).
pub fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(v) = md.get("grpc-timeout") else { return Ok(None) };
    let bad = || Status::invalid_argument("grpc-timeout header: expected up to 8 digits and one of H M S m u n");
    let s = v.to_str().map_err(|_| bad())?;
    if s.len() < 2 || s.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    };
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout(&md("5S")).unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(&md("250m")).unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&md("2H")).unwrap(), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(&md("99999999n")).unwrap(), Some(Duration::from_nanos(99_999_999)));
        assert!(grpc_timeout(&md("5x")).is_err());
        assert!(grpc_timeout(&md("S")).is_err());
        assert!(grpc_timeout(&md("123456789S")).is_err());
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()).unwrap(), None);
    }

    #[test]
    fn unset_sampling_fields_take_the_defaults_and_zero_is_kept() {
        let r = pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Text("hi".into())),
            temperature: Some(0.0),
            ..Default::default()
        };
        let q = request(r, None).unwrap();
        assert_eq!(q.sampling.temperature, 0.0);
        assert_eq!(q.sampling.top_k, 40);
        assert_eq!(q.sampling.top_p, 0.95);
        assert_eq!(q.seed, None);
        assert_eq!(q.max_tokens, None);
        let none = pb::GenerateRequest::default();
        assert_eq!(request(none, None).unwrap_err().code(), Code::InvalidArgument);
    }
}
