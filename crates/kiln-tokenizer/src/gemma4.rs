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

use crate::vocab::Vocab;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

pub(crate) struct Gemma4Bpe {
    n_tokens: u32,
    /// Texts of merge symbols that are not tokens (symbol id `n_tokens + i`).
    extra: Vec<Box<[u8]>>,
    extra_index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// (left symbol, right symbol) → (rank, merged symbol); the first rule for a pair wins.
    merges: HashMap<u64, (u32, u32)>,
}

/// A symbol that takes part in no merge.
const NO_SYMBOL: u32 = u32::MAX;

impl Gemma4Bpe {
    /// `merges`: `tokenizer.ggml.merges` (`"left right"`, split at the first space after the first
    /// byte; a rule without such a space never matches).
    pub(crate) fn new<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> Gemma4Bpe {
        let mut g = Gemma4Bpe {
            n_tokens: vocab.len() as u32,
            extra: Vec::new(),
            extra_index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            merges: HashMap::new(),
        };
        let (lower, _) = merges.size_hint();
        g.merges.reserve(lower);
        let mut buf = Vec::new();
        for (rank, rule) in merges.enumerate() {
            let Some(space) = rule.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&rule[..space], &rule[space + 1..]);
            if right.is_empty() {
                continue; // an empty symbol never occurs
            }
            let l = g.intern(vocab, left);
            let r = g.intern(vocab, right);
            buf.clear();
            buf.extend_from_slice(left);
            buf.extend_from_slice(right);
            let m = g.intern(vocab, &buf);
            g.merges.entry(pair(l, r)).or_insert((rank as u32, m));
        }
        g
    }

    fn intern(&mut self, vocab: &Vocab, text: &[u8]) -> u32 {
        if let Some(id) = vocab.lookup(text) {
            return id;
        }
        let hash = self.hasher.hash_one(text);
        let extra = &self.extra;
        if let Some(&i) = self.extra_index.find(hash, |&i| &*extra[i as usize] == text) {
            return self.n_tokens + i;
        }
        let i = self.extra.len() as u32;
        self.extra.push(text.into());
        let (extra, hasher) = (&self.extra, &self.hasher);
        self.extra_index.insert_unique(hash, i, |&j| hasher.hash_one(&*extra[j as usize]));
        self.n_tokens + i
    }

    /// The symbol of `text` if a merge rule mentions it (or it is a token).
    fn symbol(&self, vocab: &Vocab, text: &[u8]) -> u32 {
        if let Some(id) = vocab.lookup(text) {
            return id;
        }
        let hash = self.hasher.hash_one(text);
        match self.extra_index.find(hash, |&i| &*self.extra[i as usize] == text) {
            Some(&i) => self.n_tokens + i,
            None => NO_SYMBOL,
        }
    }

    /// Appends the ids of one text fragment (raw text: spaces are escaped here).
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let escaped = text.replace(' ', "\u{2581}");
        let bytes = escaped.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let newline = bytes[start] == b'\n';
            let len = bytes[start..].iter().position(|&b| (b == b'\n') != newline).unwrap_or(bytes.len() - start);
            self.encode_word(vocab, &escaped[start..start + len], newline, out);
            start += len;
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &str, all_newlines: bool, out: &mut Vec<u32>) {
        if all_newlines && let Some(id) = vocab.lookup(word.as_bytes()) {
            out.push(id);
            return;
        }
        struct Sym {
            start: u32,
            end: u32,
            sym: u32,
            prev: u32,
            next: u32,
        }
        const NONE: u32 = u32::MAX;
        let bytes = word.as_bytes();
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        for (i, (at, c)) in word.char_indices().enumerate() {
            let end = at + c.len_utf8();
            syms.push(Sym {
                start: at as u32,
                end: end as u32,
                sym: self.symbol(vocab, &bytes[at..end]),
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if end == bytes.len() { NONE } else { i as u32 + 1 },
            });
        }
        // (rank, left index) smallest first; then the right index and the symbols the rule was
        // made for (a popped candidate whose symbols have changed is outdated).
        let mut heap: BinaryHeap<Reverse<(u32, u32, u32, u32, u32, u32)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
            if l == NONE || r == NONE {
                return;
            }
            let (ls, rs) = (syms[l as usize].sym, syms[r as usize].sym);
            if ls == NO_SYMBOL || rs == NO_SYMBOL {
                return;
            }
            if let Some(&(rank, merged)) = self.merges.get(&pair(ls, rs)) {
                heap.push(Reverse((rank, l, r, ls, rs, merged)));
            }
        };
        for i in 1..syms.len() as u32 {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, ls, rs, merged))) = heap.pop() {
            let (li, ri) = (l as usize, r as usize);
            let alive = syms[ri].start < syms[ri].end && syms[li].start < syms[li].end;
            if !alive || syms[li].next != r || syms[li].sym != ls || syms[ri].sym != rs {
                continue; // outdated
            }
            syms[li].sym = merged;
            syms[li].end = syms[ri].end;
            syms[ri].end = syms[ri].start; // empty: merged away
            let after = syms[ri].next;
            syms[li].next = after;
            if after != NONE {
                syms[after as usize].prev = l;
            }
            let before = syms[li].prev;
            push(&mut heap, &syms, before, l);
            push(&mut heap, &syms, l, after);
        }
        let mut i = 0u32;
        while i != NONE {
            let s = &syms[i as usize];
            let text = &bytes[s.start as usize..s.end as usize];
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
            i = s.next;
        }
    }
}

fn pair(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
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
