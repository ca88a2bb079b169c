//! Byte-level BPE by merge rank, as llama.cpp's `llm_tokenizer_bpe_session` applies it.
//!
//! Symbols are interned strings: a string that is a token is represented by its (last) token id,
//! any other string that a merge rule mentions gets an id past the vocabulary. A merge rule is then
//! a lookup from a pair of symbol ids to (rank, merged symbol id).

use crate::vocab::Vocab;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

/// The GPT-2 byte ↔ character mapping: printable Latin-1 bytes map to themselves, the others to
/// U+0100 and up, in byte order.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("Latin-1 is valid")
        } else {
            let c = char::from_u32(next).expect("U+0100.. is valid");
            next += 1;
            c
        };
    }
    table
}

/// The inverse of [`byte_to_char_table`], indexed by code point (all mapped chars are < U+0144).
pub(crate) fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inv = vec![None; 0x144];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

pub(crate) struct Bpe {
    n_tokens: u32,
    /// Texts of the symbols that are not tokens (symbol id `n_tokens + i`).
    extra: Vec<Box<[u8]>>,
    extra_index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// (left symbol, right symbol) → (rank, merged symbol); the first rule for a pair wins.
    merges: HashMap<u64, (u32, u32)>,
    /// The symbol of each byte's GPT-2 character.
    byte_sym: [u32; 256],
    byte_char: [char; 256],
    ignore_merges: bool,
}

impl Bpe {
    /// Builds the merge table from `tokenizer.ggml.merges` strings (`"left right"`, split at the
    /// first space after the first byte, as llama.cpp does).
    pub(crate) fn new<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>, ignore_merges: bool) -> Bpe {
        let mut bpe = Bpe {
            n_tokens: vocab.len() as u32,
            extra: Vec::new(),
            extra_index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            merges: HashMap::new(),
            byte_sym: [0; 256],
            byte_char: byte_to_char_table(),
            ignore_merges,
        };
        let (lower, _) = merges.size_hint();
        bpe.merges.reserve(lower);
        let mut buf = Vec::new();
        for (rank, rule) in merges.enumerate() {
            let Some(space) = rule.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue; // llama.cpp records ("", ""), which never matches
            };
            let (left, right) = (&rule[..space], &rule[space + 1..]);
            if right.is_empty() {
                continue; // an empty symbol never occurs
            }
            let l = bpe.intern(vocab, left);
            let r = bpe.intern(vocab, right);
            buf.clear();
            buf.extend_from_slice(left);
            buf.extend_from_slice(right);
            let m = bpe.intern(vocab, &buf);
            bpe.merges.entry(pair(l, r)).or_insert((rank as u32, m));
        }
        let mut tmp = [0u8; 4];
        for b in 0..256 {
            let s = bpe.byte_char[b].encode_utf8(&mut tmp).as_bytes().to_vec();
            bpe.byte_sym[b] = bpe.intern(vocab, &s);
        }
        bpe
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

    /// Appends the ids of one pre-tokenized word (raw bytes; GPT-2 byte encoding is applied here).
    pub(crate) fn encode_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            let mut enc = String::with_capacity(word.len() * 2);
            enc.extend(word.iter().map(|&b| self.byte_char[b as usize]));
            if let Some(id) = vocab.lookup(enc.as_bytes()) {
                out.push(id);
                return;
            }
        }
        if word.len() == 1 {
            self.emit(vocab, self.byte_sym[word[0] as usize], out);
            return;
        }
        struct Sym {
            sym: u32,
            prev: u32,
            next: u32,
            alive: bool,
        }
        const NONE: u32 = u32::MAX;
        let n = word.len() as u32;
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                sym: self.byte_sym[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i as u32 + 1 == n { NONE } else { i as u32 + 1 },
                alive: true,
            })
            .collect();
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
            if l == NONE || r == NONE {
                return;
            }
            let (ls, rs) = (syms[l as usize].sym, syms[r as usize].sym);
            if let Some(&(rank, merged)) = self.merges.get(&pair(ls, rs)) {
                heap.push(Reverse((rank, l, r, ls, rs, merged)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, ls, rs, merged))) = heap.pop() {
            let (li, ri) = (l as usize, r as usize);
            if !syms[li].alive || !syms[ri].alive || syms[li].sym != ls || syms[ri].sym != rs {
                continue; // outdated
            }
            syms[li].sym = merged;
            syms[ri].alive = false;
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
            self.emit(vocab, syms[i as usize].sym, out);
            i = syms[i as usize].next;
        }
    }

    /// A final symbol: its token, or (not a token) each of its bytes that is a one-byte token.
    fn emit(&self, vocab: &Vocab, sym: u32, out: &mut Vec<u32>) {
        if sym < self.n_tokens {
            out.push(sym);
            return;
        }
        for &b in self.extra[(sym - self.n_tokens) as usize].iter() {
            if let Some(id) = vocab.lookup(&[b]) {
                out.push(id);
            }
        }
    }
}

/// A merge candidate: (rank, left index) smallest first; then the right index, the symbols the
/// rule was made for, and the merged symbol.
type Candidate = Reverse<(u32, u32, u32, u32, u32, u32)>;

fn pair(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_map() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń');
        let inv = char_to_byte_table();
        for b in 0..=255u8 {
            assert_eq!(inv[t[b as usize] as usize], Some(b));
        }
    }

    #[test]
    fn merges_by_rank_with_leftmost_ties() {
        // Hand-worked: "aaab" with rules (a a) rank 0, (aa b) rank 1, (a b) rank 2.
        let texts: Vec<&[u8]> = vec![b"a", b"b", b"aa", b"aab", b"ab"];
        let vocab = Vocab::new(texts.into_iter());
        let rules: Vec<&[u8]> = vec![b"a a", b"aa b", b"a b"];
        let bpe = Bpe::new(&vocab, rules.into_iter(), false);
        let mut out = Vec::new();
        // a a a b -> (aa) a b [leftmost a a first] -> aa (ab)? no: rank order: a a (0) at 0 → [aa][a][b];
        // then candidates: aa a (none), a b (2) → [aa][ab].
        bpe.encode_word(&vocab, b"aaab", &mut out);
        assert_eq!(out, [2, 4]);
        out.clear();
        bpe.encode_word(&vocab, b"aab", &mut out);
        assert_eq!(out, [3]);
    }
}
