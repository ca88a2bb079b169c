//! The `whitespace` tokenizer model (`tokenizer.ggml.model = "whitespace"`), as llama.cpp b11434
//! runs it. Its converter writes it, with pre-tokenizer `whitespace`, for Jina's BERT models
//! whose `tokenizer.json` has a `Whitespace` pre-tokenizer (`jinaai/jina-embeddings-v2-base-zh`).
//!
//! llama.cpp loads such a vocabulary exactly as a `gpt2` one: BPE type, merges required (but for
//! pre `kimi-k2`), default BOS = EOS = 11, and the pre-tokenizer, `add_bos`, clean-up of
//! tokenization spaces and decoding that `tokenizer.ggml.pre` selects. Only tokenizing differs (its
//! whitespace session over the BPE session): each text fragment, after the `▁` escaping of spaces
//! that some pre-tokenizers ask for, is cut at white-space, which is dropped; each run left is
//! lower-cased one code point at a time when the normalizer's `lowercase` is on and goes through
//! the `tokenizer.ggml.pre` BPE by itself. `lowercase` is `tokenizer.ggml.normalizer.lowercase`,
//! on by default except under pre `whitespace`, which turns it off (so a file as the converter
//! writes it keeps its case).

use crate::unicode::is_whitespace;
use std::borrow::Cow;

/// The text-side half of the `whitespace` model: what each text fragment becomes before BPE.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WhitespaceSession {
    lowercase: bool,
    /// U+0020 does not cut: the pre-tokenizer escapes it as `▁` (here Gemma 4's code does that
    /// itself, per segment), so llama.cpp's session never sees it as white-space.
    keep_spaces: bool,
}

impl WhitespaceSession {
    pub(crate) fn new(lowercase: bool, keep_spaces: bool) -> WhitespaceSession {
        WhitespaceSession { lowercase, keep_spaces }
    }

    /// The segments of one text fragment, in order, each to be tokenized on its own.
    pub(crate) fn segments<'a>(self, text: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        let white = move |c: char| is_whitespace(c) && !(self.keep_spaces && c == ' ');
        runs(text, white).filter(|&(_, white)| !white).map(move |(run, _)| {
            if self.lowercase {
                Cow::Owned(run.chars().map(crate::wpm::to_lower).collect())
            } else {
                Cow::Borrowed(run)
            }
        })
    }
}

/// `text` cut into the longest runs of code points that `white` answers alike, each with the
/// answer (the `whitespace` pre-tokenizer's words, and the segments above).
pub(crate) fn runs<'a>(text: &'a str, white: impl Fn(char) -> bool + 'a) -> impl Iterator<Item = (&'a str, bool)> + 'a {
    let mut rest = text;
    std::iter::from_fn(move || {
        let w = white(rest.chars().next()?);
        let (run, tail) = rest.split_at(rest.find(|c: char| white(c) != w).unwrap_or(rest.len()));
        rest = tail;
        Some((run, w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(s: WhitespaceSession, text: &str) -> Vec<String> {
        s.segments(text).map(Cow::into_owned).collect()
    }

    #[test]
    fn runs_alternate() {
        let r: Vec<_> = runs(" ab\t\u{3000}c ", is_whitespace).collect();
        assert_eq!(r, [(" ", true), ("ab", false), ("\t\u{3000}", true), ("c", false), (" ", true)]);
        assert_eq!(runs("", is_whitespace).count(), 0);
    }

    #[test]
    fn segments_drop_white_space_and_lower_case() {
        let text = "  Hello\u{a0}WÖRLD\n\n İx\u{2003}a b ";
        assert_eq!(segments(WhitespaceSession::new(false, false), text), ["Hello", "WÖRLD", "İx", "a", "b"]);
        assert_eq!(segments(WhitespaceSession::new(true, false), text), ["hello", "wörld", "ix", "a", "b"]);
        // Spaces escaped by the pre-tokenizer stay inside the segments.
        assert_eq!(segments(WhitespaceSession::new(true, true), text), ["  hello", "wörld", " ix", "a b "]);
        assert!(segments(WhitespaceSession::new(true, false), " \t\r\n").is_empty());
    }
}
