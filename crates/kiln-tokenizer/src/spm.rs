//! SentencePiece as llama.cpp implements it (`llm_tokenizer_spm_session`): a score-driven bigram
//! merge, not BPE by merge rules.
//!
//! The text (spaces already replaced by `▁`) starts as one symbol per UTF-8 character. Every pair
//! of adjacent symbols whose concatenation is a token is a candidate, scored by that token's
//! score; the best candidate (ties: leftmost) is merged, and the new neighbours become candidates.
//! A heap makes it O(n log n). At the end each symbol is its token, or, when a single character is
//! not a token, its bytes as `<0xXX>` byte tokens.

use crate::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged text when the candidate was made.
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; equal scores: lower left index first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    /// Byte length; 0 once merged into its left neighbour.
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Appends the ids of `text` (already escaped: `' '` → `"▁"`). `byte_token` maps a byte to its
/// token (see [`byte_token`]).
pub(crate) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let bytes = text.as_bytes();
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8() as u32;
        let end = start + c.len_utf8();
        syms.push(Sym {
            start: start as u32,
            len,
            prev: if i == 0 { NONE } else { i as u32 - 1 },
            next: if end == text.len() { NONE } else { i as u32 + 1 },
        });
    }
    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: u32, r: u32| {
        if l == NONE || r == NONE {
            return;
        }
        let (ls, rs) = (syms[l as usize], syms[r as usize]);
        let s = ls.start as usize;
        let piece = &bytes[s..s + (ls.len + rs.len) as usize];
        if let Some(id) = vocab.lookup(piece) {
            heap.push(Bigram { score: vocab.score(id), left: l, right: r, size: ls.len + rs.len });
        }
    };
    for i in 1..syms.len() as u32 {
        try_add(&mut heap, &syms, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue; // one side was merged since
        }
        syms[b.left as usize].len += r.len;
        syms[b.right as usize].len = 0;
        syms[b.left as usize].next = r.next;
        if r.next != NONE {
            syms[r.next as usize].prev = b.left;
        }
        try_add(&mut heap, &syms, l.prev, b.left);
        try_add(&mut heap, &syms, b.left, r.next);
    }
    let mut i = 0u32;
    while i != NONE {
        let s = syms[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            // Only single characters can be missing (every merge result is a token).
            None => out.extend(piece.iter().filter_map(|&b| byte_token(vocab, b))),
        }
        i = s.next;
    }
}

/// llama.cpp's `byte_to_token` for SentencePiece: `<0xXX>`, else the byte itself as a token.
/// `None` where llama.cpp would throw (the vocabulary has neither).
pub(crate) fn byte_token(vocab: &Vocab, b: u8) -> Option<u32> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let name = [b'<', b'0', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize], b'>'];
    vocab.lookup(&name).or_else(|| vocab.lookup(&[b]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_score_merges_first() {
        // Hand-worked: "abc" with tokens ab (score -1), bc (score -0.5): bc wins, then "a" + "bc";
        // "a" is a token, so [a, bc]. With abc present (any score) it is reached only through a
        // pair that is itself a token: a + bc.
        let texts: Vec<&[u8]> = vec![b"a", b"b", b"c", b"ab", b"bc"];
        let mut vocab = Vocab::new(texts.into_iter());
        vocab.set_scores([0.0, 0.0, 0.0, -1.0, -0.5].into_iter());
        let mut out = Vec::new();
        encode(&vocab, "abc", &mut out);
        assert_eq!(out, [0, 4]);

        let texts: Vec<&[u8]> = vec![b"a", b"b", b"c", b"ab", b"bc", b"abc"];
        let mut vocab = Vocab::new(texts.into_iter());
        vocab.set_scores([0.0, 0.0, 0.0, -1.0, -0.5, -3.0].into_iter());
        out.clear();
        encode(&vocab, "abc", &mut out);
        assert_eq!(out, [5]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let mut texts: Vec<Vec<u8>> = vec![b"a".to_vec()];
        for b in 0..=255u8 {
            texts.push(format!("<0x{b:02X}>").into_bytes());
        }
        let vocab = Vocab::new(texts.iter().map(|t| t.as_slice()));
        let mut out = Vec::new();
        encode(&vocab, "aé", &mut out);
        assert_eq!(out, [0, 1 + 0xC3, 1 + 0xA9]);
    }
}
