//! Gemma 4's tokenizer (`tokenizer.ggml.model = "gemma4"`), as llama.cpp b11434 runs it: BPE
//! by merge rank over UTF-8 characters (not GPT-2 bytes), SentencePiece-style.
//!
//! * Each text fragment has its spaces (U+0020 only) replaced by `▁`; there is no space prefix.
//! * The fragment is split into runs of newlines and runs of everything else (llama.cpp's
//!   `[^\n]+|[\n]+`); merges never cross a run.
//! * A run of newlines that is itself a token is that token (llama.cpp's fix for Gemma 4, PR
//!   21343); any other run starts as one symbol per character and merges by rank (lowest first,
//!   leftmost on ties) as in byte-level BPE.
//! * A final symbol that is not a token falls back to its bytes' `<0xXX>` tokens (a byte
//!   without one is dropped).
//!
//! Decoding turns `▁` back into spaces and `<0xXX>` tokens into their byte. llama.cpp forces
//! `add_bos` on for this model, keeps BPE's clean-up of tokenization spaces and, by default, no
//! special ids (they come from the metadata).

use crate::merges::MergeTable;
use crate::vocab::Vocab;

pub(crate) struct Gemma4Bpe {
    merges: MergeTable,
    /// A run of newlines that is a token is that token (Gemma 4's fix; not for `sarvam-moe`).
    newline_tokens: bool,
    /// mmBERT's Metaspace words: each run of non-newlines gets a leading `▁` if it has none and
    /// is cut before every further `▁`.
    metaspace: bool,
    /// llama.cpp's `whitespace` pre-tokenizer on a `gpt2` vocabulary: no `▁` escaping, words are
    /// the runs of white-space and of everything else (its `\S+` regex), and normal tokens decode
    /// as GPT-2 byte-level text.
    whitespace: bool,
}

impl Gemma4Bpe {
    /// `merges`: `tokenizer.ggml.merges` (`"left right"`, split at the first space after the first
    /// byte; a rule without such a space never matches).
    pub(crate) fn new<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> Gemma4Bpe {
        Gemma4Bpe { merges: MergeTable::new(vocab, merges), newline_tokens: true, metaspace: false, whitespace: false }
    }

    /// The same without the newline-run fix, as llama.cpp runs `sarvam-moe` (its fix is for the
    /// Gemma 4 and mmBERT pre-tokenizer types only).
    pub(crate) fn without_newline_tokens<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> Gemma4Bpe {
        Gemma4Bpe { merges: MergeTable::new(vocab, merges), newline_tokens: false, metaspace: false, whitespace: false }
    }

    /// The same with mmBERT's Metaspace words (llama.cpp's `mmbert` pre-tokenizer type).
    pub(crate) fn metaspace<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> Gemma4Bpe {
        Gemma4Bpe { merges: MergeTable::new(vocab, merges), newline_tokens: true, metaspace: true, whitespace: false }
    }

    /// llama.cpp's `whitespace` pre-tokenizer type (see the field).
    pub(crate) fn whitespace<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> Gemma4Bpe {
        Gemma4Bpe { merges: MergeTable::new(vocab, merges), newline_tokens: false, metaspace: false, whitespace: true }
    }

    /// Whether normal tokens decode as GPT-2 byte-level text (else `▁` becomes a space).
    pub(crate) fn byte_level_pieces(&self) -> bool {
        self.whitespace
    }

    /// Whether [`encode`](Self::encode) escapes spaces as `▁` (all but the `whitespace` mode).
    pub(crate) fn escapes_spaces(&self) -> bool {
        !self.whitespace
    }

    /// Appends the ids of one text fragment (raw text: spaces are escaped here).
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        if self.whitespace {
            for (word, _) in crate::whitespace::runs(text, crate::unicode::is_whitespace) {
                self.encode_word(vocab, word, false, out);
            }
            return;
        }
        let escaped = text.replace(' ', "\u{2581}");
        let bytes = escaped.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let newline = bytes[start] == b'\n';
            let len = bytes[start..].iter().position(|&b| (b == b'\n') != newline).unwrap_or(bytes.len() - start);
            let run = &escaped[start..start + len];
            if self.metaspace && !newline {
                let word = if run.starts_with('\u{2581}') { run.to_owned() } else { format!("\u{2581}{run}") };
                let mut from = 0;
                while from < word.len() {
                    let skip = from + '\u{2581}'.len_utf8();
                    let to = word.get(skip..).and_then(|rest| rest.find('\u{2581}')).map_or(word.len(), |i| skip + i);
                    self.encode_word(vocab, &word[from..to], false, out);
                    from = to;
                }
            } else {
                self.encode_word(vocab, run, newline, out);
            }
            start += len;
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &str, all_newlines: bool, out: &mut Vec<u32>) {
        if all_newlines
            && self.newline_tokens
            && let Some(id) = vocab.lookup(word.as_bytes())
        {
            out.push(id);
            return;
        }
        let bytes = word.as_bytes();
        let starts: Vec<usize> = word.char_indices().map(|(at, _)| at).chain([bytes.len()]).collect();
        let initial = starts.windows(2).map(|w| self.merges.symbol(vocab, &bytes[w[0]..w[1]]));
        self.merges.merge(initial, |first, end, _| {
            let text = &bytes[starts[first]..starts[end]];
            match vocab.lookup(text) {
                Some(id) => out.push(id),
                None => {
                    for &b in text {
                        if let Some(id) = vocab.lookup(format!("<0x{b:02X}>").as_bytes()) {
                            out.push(id);
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[&str]) -> Vocab {
        Vocab::new(texts.iter().map(|t| t.as_bytes()))
    }

    #[test]
    fn merges_characters_by_rank_with_spaces_escaped() {
        // Hand-worked: "a b" → "a▁b"; rules (▁ b) rank 0, (a ▁b) rank 1 → one token "a▁b".
        let v = vocab(&["a", "b", "▁", "▁b", "a▁b", "<0x0A>", "\n\n"]);
        let g = Gemma4Bpe::new(&v, ["▁ b", "a ▁b"].iter().map(|s| s.as_bytes()));
        let mut out = Vec::new();
        g.encode(&v, "a b", &mut out);
        assert_eq!(out, [4]);
        // Newline runs: "\n\n" is a token; "\n" falls back to its byte token; merges never cross.
        out.clear();
        g.encode(&v, "a\n\nb\na", &mut out);
        assert_eq!(out, [0, 6, 1, 5, 0]);
    }

    #[test]
    fn rank_order_and_byte_fallback() {
        // "abc": rules (b c) rank 0, (a b) rank 1: b+c first, then a + bc has no rule → [a, bc].
        // "é" is no token: its two bytes' tokens.
        let v = vocab(&["a", "b", "c", "ab", "bc", "<0xC3>", "<0xA9>"]);
        let g = Gemma4Bpe::new(&v, ["b c", "a b"].iter().map(|s| s.as_bytes()));
        let mut out = Vec::new();
        g.encode(&v, "abcé", &mut out);
        assert_eq!(out, [0, 4, 5, 6]);
        // A merged symbol that is not a token falls back to bytes (none here for a/b: dropped).
        let v = vocab(&["x", "<0x78>"]);
        let g = Gemma4Bpe::new(&v, ["x x"].iter().map(|s| s.as_bytes()));
        out.clear();
        g.encode(&v, "xx", &mut out);
        assert_eq!(out, [1, 1]);
    }
}
