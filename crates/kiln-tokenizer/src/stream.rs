//! Streaming detokenization: token ids in, complete UTF-8 text out.

use crate::TokenizerError;
use crate::tokenizer::{Tokenizer, clean_spaces};

/// Turns a stream of token ids into text, one token at a time, emitting only complete UTF-8.
///
/// A character whose bytes are split across tokens (byte-level BPE splits emoji and CJK into
/// byte tokens; SentencePiece falls back to `<0xXX>` tokens) is held back until its last byte
/// arrives, so no U+FFFD is ever produced for it. Bytes that can never become valid UTF-8 (a stray
/// continuation byte, say) become U+FFFD as soon as that is certain; an incomplete sequence left
/// at the end becomes U+FFFD in [`flush`](Self::flush).
///
/// The concatenation of everything [`push`](Self::push) and [`flush`](Self::flush) return equals
/// [`Tokenizer::decode`] of the whole sequence (with the same `special`), including
/// SentencePiece's removal of the first leading space and, for vocabularies that clean up
/// tokenization spaces, that clean-up (for which up to three bytes after a space or apostrophe are
/// held back until they are known not to change).
///
/// ```
/// use kiln_tokenizer::{Detokenizer, Tokenizer};
/// # fn demo(tok: &Tokenizer, ids: &[u32]) -> Result<(), kiln_tokenizer::TokenizerError> {
/// let mut detok = Detokenizer::new(tok);
/// let mut text = String::new();
/// for &id in ids {
///     text += &detok.push(id)?; // print it, send it, …
/// }
/// text += &detok.flush();
/// assert_eq!(text, tok.decode(ids, false)?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Detokenizer<'t> {
    tok: &'t Tokenizer,
    special: bool,
    /// The next piece loses one leading space (SentencePiece, first token).
    remove_space: bool,
    /// Raw bytes whose space clean-up is not settled yet.
    pending: Vec<u8>,
    /// Final bytes not yet returned (an incomplete UTF-8 sequence).
    utf8: Vec<u8>,
}

impl<'t> Detokenizer<'t> {
    /// A detokenizer that renders control tokens as nothing (like `decode(ids, false)`).
    pub fn new(tok: &'t Tokenizer) -> Self {
        Detokenizer::with_special(tok, false)
    }

    /// A detokenizer that renders control tokens as their text when `special` is true.
    pub fn with_special(tok: &'t Tokenizer, special: bool) -> Self {
        Detokenizer { tok, special, remove_space: tok.add_space_prefix, pending: Vec::new(), utf8: Vec::new() }
    }

    /// Adds one token; returns the text that is now complete (often empty, never a partial
    /// character). Errors only for an id outside the vocabulary (the state is unchanged then).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let mut piece = Vec::new();
        self.tok.append_piece(id, self.special, usize::from(self.remove_space), &mut piece)?;
        self.remove_space = false;
        if self.tok.clean_spaces {
            self.pending.extend_from_slice(&piece);
            let settled = settled_prefix(&self.pending);
            if settled > 0 {
                self.utf8.extend(clean_spaces(&self.pending[..settled]));
                self.pending.drain(..settled);
            }
        } else {
            self.utf8.extend_from_slice(&piece);
        }
        Ok(self.take_complete())
    }

    /// Ends the stream: returns whatever is left, an incomplete UTF-8 sequence as U+FFFD. The
    /// detokenizer can be reused afterwards as if new.
    pub fn flush(&mut self) -> String {
        if !self.pending.is_empty() {
            self.utf8.extend(clean_spaces(&self.pending));
            self.pending.clear();
        }
        let s = String::from_utf8_lossy(&self.utf8).into_owned();
        self.utf8.clear();
        self.remove_space = self.tok.add_space_prefix;
        s
    }

    /// Bytes held back (pending clean-up or an incomplete character).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len() + self.utf8.len()
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.utf8) {
                Ok(s) => {
                    out.push_str(s);
                    self.utf8.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.utf8[..valid]) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        // Invalid whatever follows: replace now, as a lossy decode of the
                        // whole text would.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.utf8.drain(..valid + n);
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.utf8.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }
}

/// The longest prefix of `raw` whose space clean-up cannot depend on bytes that come later: one
/// whose last three bytes hold no space and no apostrophe (every clean-up rule looks at most two
/// bytes past a space and needs a space or an apostrophe in that window).
fn settled_prefix(raw: &[u8]) -> usize {
    let mut end = raw.len();
    while end > 0 {
        let window = &raw[end.saturating_sub(3)..end];
        if !window.iter().any(|&b| b == b' ' || b == b'\'') {
            return end;
        }
        end -= 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_prefix_holds_back_around_spaces() {
        assert_eq!(settled_prefix(b"Hello"), 5);
        assert_eq!(settled_prefix(b"Hello "), 5);
        assert_eq!(settled_prefix(b"Hello 's"), 5);
        assert_eq!(settled_prefix(b"Hello 'sxyz"), 11);
        assert_eq!(settled_prefix(b" "), 0);
    }

    #[test]
    fn chunked_clean_up_equals_whole_clean_up() {
        // Every split of a text full of clean-up patterns, cleaned chunk-wise at settled points,
        // must equal cleaning it whole.
        let text = b" a , b ' c ' d 's e 're  f 've g 'm h 'll i . j ! k ? l ' ' m".to_vec();
        let whole = clean_spaces(&text);
        for step in 1..=5 {
            let mut pending = Vec::new();
            let mut out = Vec::new();
            for chunk in text.chunks(step) {
                pending.extend_from_slice(chunk);
                let s = settled_prefix(&pending);
                out.extend(clean_spaces(&pending[..s]));
                pending.drain(..s);
            }
            out.extend(clean_spaces(&pending));
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "step {step}");
        }
    }
}
