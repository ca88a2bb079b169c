use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SamplingError;

/// Why a sequence stopped generating.
///
/// [`FinishReason::as_str`] gives the OpenAI `finish_reason` string:
///
/// | variant | `as_str()` |
/// | --- | --- |
/// | `Stop` (an end-of-generation token) | `"stop"` |
/// | `StopString(s)` (stop string `s` appeared in the text) | `"stop"` |
/// | `Length` (`max_tokens` reached) | `"length"` |
/// | `ContextFull` (the model's context window is full) | `"length"` |
/// | `Cancelled` (the client went away or cancelled) | `"cancelled"` (not an OpenAI value) |
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (EOS, EOT, `<|return|>`, ...).
    Stop,
    /// One of the request's stop strings appeared; it is not part of the output.
    StopString(String),
    /// The request's `max_tokens` tokens were generated.
    Length,
    /// The sequence filled the model's context window.
    ContextFull,
    /// The request was cancelled before it finished.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI-style string (see the table on [`FinishReason`]).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopString(_) => "stop",
            FinishReason::Length | FinishReason::ContextFull => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`StopStrings::push`] or [`StopStrings::finish`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopChunk {
    /// Text that is safe to send to the client now (may be empty).
    pub text: String,
    /// The stop string that ended the text, if one did on this call. Nothing may be emitted after it.
    pub stop: Option<String>,
}

impl StopChunk {
    /// `Some(FinishReason::StopString(..))` when a stop string was hit.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.stop.clone().map(FinishReason::StopString)
    }
}

/// Streaming stop-string matcher.
///
/// Fed the decoded text as it comes out of the streaming detokenizer, it lets through everything
/// that cannot be part of a stop string and holds back only a suffix that could still become one.
///
/// Semantics (OpenAI / llama.cpp): the output is the generated text cut right before the earliest
/// position where any stop string occurs — `text[..min over stops s of text.find(s)]` — and the stop
/// string is not part of it. The result does not depend on how the text was split into chunks: if
/// a stop string completes while a *longer* one that started earlier could still complete, the
/// matcher waits for the longer one to be decided (holding at most the longest stop string's
/// length of text). Among stop strings that start at the same position the shortest is reported.
///
/// After a hit, further input is ignored. When generation ends for another reason, call
/// [`StopStrings::finish`] to release the held-back text (it reports a stop string too if the
/// held text contains a complete one that was waiting on a longer candidate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    done: bool,
}

impl StopStrings {
    /// A matcher for `stops`. Duplicates are dropped; an empty string is an error
    /// ([`SamplingError::EmptyStopString`]). No stop strings is fine: everything passes through.
    pub fn new<I, S>(stops: I) -> Result<Self, SamplingError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = Vec::new();
        for (index, s) in stops.into_iter().enumerate() {
            let s = s.into();
            if s.is_empty() {
                return Err(SamplingError::EmptyStopString { index });
            }
            if !list.contains(&s) {
                list.push(s);
            }
        }
        Ok(Self { stops: list, held: String::new(), done: false })
    }

    /// The stop strings, without duplicates, in the order given.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Text received but not yet released.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Whether a stop string was hit or [`StopStrings::finish`] was called.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one chunk of decoded text.
    pub fn push(&mut self, chunk: &str) -> StopChunk {
        if self.done {
            return StopChunk::default();
        }
        if self.stops.is_empty() {
            return StopChunk { text: chunk.to_owned(), stop: None };
        }
        self.held.push_str(chunk);
        let full = self.earliest_full_match();
        let partial = self.earliest_partial_match();
        match (full, partial) {
            (Some((pos, idx)), partial) if partial.is_none_or(|r| r >= pos) => self.cut_at(pos, idx),
            (_, Some(r)) => StopChunk { text: self.held.drain(..r).collect(), stop: None },
            (_, None) => StopChunk { text: std::mem::take(&mut self.held), stop: None },
        }
    }

    /// Ends the stream: releases the held-back text (cut before a complete stop string if it holds
    /// one). Later calls to `push` or `finish` return nothing.
    pub fn finish(&mut self) -> StopChunk {
        if self.done {
            return StopChunk::default();
        }
        let out = match self.earliest_full_match() {
            Some((pos, idx)) => self.cut_at(pos, idx),
            None => StopChunk { text: std::mem::take(&mut self.held), stop: None },
        };
        self.done = true;
        out
    }

    fn cut_at(&mut self, pos: usize, idx: usize) -> StopChunk {
        self.held.truncate(pos);
        self.done = true;
        StopChunk { text: std::mem::take(&mut self.held), stop: Some(self.stops[idx].clone()) }
    }

    /// `(byte position, stop index)` of the earliest complete stop string in `held`; ties go to the
    /// shortest stop string.
    fn earliest_full_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|pos| (pos, s.len(), i)))
            .min()
            .map(|(pos, _, i)| (pos, i))
    }

    /// The earliest char boundary `r` such that `held[r..]` is a proper prefix of some stop string
    /// (text from there on may still turn into a stop string).
    fn earliest_partial_match(&self) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let from = self.held.len().saturating_sub(longest.saturating_sub(1));
        self.held.char_indices().map(|(i, _)| i).filter(|&i| i >= from).find(|&i| {
            let tail = &self.held[i..];
            self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
        })
    }
}

/// Per-sequence stop conditions that the generation loop checks after every token.
///
/// For each sampled token: call [`StopCriteria::check_token`] first (an end-of-generation token's
/// text is not emitted); otherwise detokenize it and pass the text through
/// [`StopCriteria::push_text`]. When the loop ends for a reason other than a stop string, flush with
/// [`StopCriteria::finish_text`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopCriteria {
    /// End-of-generation token ids (the model's EOS, EOT, ...).
    pub eog_ids: HashSet<u32>,
    /// Keep generating through end-of-generation tokens (llama.cpp's `--ignore-eos`). The sampler
    /// does not suppress them; a caller that wants that masks their logits.
    pub ignore_eos: bool,
    /// Most tokens to generate. `0` would end after the first token: a caller asked for zero
    /// tokens should not start generating. Use `usize::MAX` for "until the context is full".
    pub max_tokens: usize,
    /// The request's stop strings.
    pub stop: StopStrings,
}

impl StopCriteria {
    /// Criteria with the given EOG ids and token budget and no stop strings.
    pub fn new(eog_ids: impl IntoIterator<Item = u32>, max_tokens: usize) -> Self {
        Self { eog_ids: eog_ids.into_iter().collect(), ignore_eos: false, max_tokens, stop: StopStrings::default() }
    }

    /// Token-level check for the token `id` just sampled, where `n_generated` counts the generated
    /// tokens including this one. An end-of-generation token (unless `ignore_eos`) gives
    /// [`FinishReason::Stop`], which wins over [`FinishReason::Length`] when both apply.
    pub fn check_token(&self, id: u32, n_generated: usize) -> Option<FinishReason> {
        if !self.ignore_eos && self.eog_ids.contains(&id) {
            Some(FinishReason::Stop)
        } else if n_generated >= self.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    /// Passes decoded text through the stop strings: the text to emit, and
    /// `Some(FinishReason::StopString(..))` when a stop string ended the sequence.
    pub fn push_text(&mut self, chunk: &str) -> (String, Option<FinishReason>) {
        let c = self.stop.push(chunk);
        let reason = c.finish_reason();
        (c.text, reason)
    }

    /// Releases held-back text at the end of generation (see [`StopStrings::finish`]); a
    /// `Some(FinishReason::StopString(..))` here overrides the reason the loop ended with, since the
    /// text was cut at a stop string.
    pub fn finish_text(&mut self) -> (String, Option<FinishReason>) {
        let c = self.stop.finish();
        let reason = c.finish_reason();
        (c.text, reason)
    }
}
