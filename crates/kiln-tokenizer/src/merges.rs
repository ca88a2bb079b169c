//! The merge table both BPE flavours use (byte-level BPE in [`crate::bpe`], Gemma 4's
//! character-level BPE in [`crate::gemma4`]), and the merge loop llama.cpp runs with it.
//!
//! Symbols are interned strings: a string that is a token is represented by its (last) token id,
//! any other string that a merge rule mentions gets an id past the vocabulary. A rule is then a
//! lookup from a pair of symbol ids to (rank, merged symbol id).

use crate::vocab::Vocab;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

pub(crate) struct MergeTable {
    n_tokens: u32,
    /// Texts of the symbols that are not tokens (symbol id `n_tokens + i`).
    extra: Vec<Box<[u8]>>,
    extra_index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// (left symbol, right symbol) → (rank, merged symbol); the first rule for a pair wins.
    rules: HashMap<u64, (u32, u32)>,
}

/// A string that is neither a token nor mentioned by a rule: it takes part in no merge.
pub(crate) const NO_SYMBOL: u32 = u32::MAX;

/// A merge candidate: (rank, left index) smallest first; then the right index and the symbols
/// the rule was made for (a popped candidate whose symbols have changed is outdated), and the
/// merged symbol.
type Candidate = Reverse<(u32, u32, u32, u32, u32, u32)>;

/// One symbol of a word while merging: a linked list over the initial positions.
struct Sym {
    sym: u32,
    prev: u32,
    next: u32,
    /// Initial positions it covers: `first..end`.
    end: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;

impl MergeTable {
    /// Reads `tokenizer.ggml.merges` strings (`"left right"`, split at the first space after the
    /// first byte, as llama.cpp does; a rule without such a space, or with an empty right side,
    /// never matches).
    pub(crate) fn new<'a>(vocab: &Vocab, merges: impl Iterator<Item = &'a [u8]>) -> MergeTable {
        let mut t = MergeTable {
            n_tokens: vocab.len() as u32,
            extra: Vec::new(),
            extra_index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            rules: HashMap::new(),
        };
        let (lower, _) = merges.size_hint();
        t.rules.reserve(lower);
        let mut buf = Vec::new();
        for (rank, rule) in merges.enumerate() {
            let Some(space) = rule.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue; // llama.cpp records ("", ""), which never matches
            };
            let (left, right) = (&rule[..space], &rule[space + 1..]);
            if right.is_empty() {
                continue; // an empty symbol never occurs
            }
            let l = t.intern(vocab, left);
            let r = t.intern(vocab, right);
            buf.clear();
            buf.extend_from_slice(left);
            buf.extend_from_slice(right);
            let m = t.intern(vocab, &buf);
            t.rules.entry(pair(l, r)).or_insert((rank as u32, m));
        }
        t
    }

    /// The symbol of `text`, made if it has none yet.
    pub(crate) fn intern(&mut self, vocab: &Vocab, text: &[u8]) -> u32 {
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

    /// The symbol of `text` if it is a token or a rule mentions it, else [`NO_SYMBOL`].
    pub(crate) fn symbol(&self, vocab: &Vocab, text: &[u8]) -> u32 {
        if let Some(id) = vocab.lookup(text) {
            return id;
        }
        let hash = self.hasher.hash_one(text);
        match self.extra_index.find(hash, |&i| &*self.extra[i as usize] == text) {
            Some(&i) => self.n_tokens + i,
            None => NO_SYMBOL,
        }
    }

    /// The text of a symbol that is not a token (`None` for a token).
    pub(crate) fn extra_text(&self, sym: u32) -> Option<&[u8]> {
        sym.checked_sub(self.n_tokens).and_then(|i| self.extra.get(i as usize)).map(|t| &**t)
    }

    /// Merges the symbols of one word by rank (lowest first, leftmost on ties) until no rule
    /// applies; calls `f(first, end, symbol)` for each final symbol, in order, with the initial
    /// positions `first..end` it covers.
    pub(crate) fn merge(&self, initial: impl ExactSizeIterator<Item = u32>, mut f: impl FnMut(usize, usize, u32)) {
        let n = initial.len() as u32;
        let mut syms: Vec<Sym> = initial
            .enumerate()
            .map(|(i, sym)| {
                let i = i as u32;
                Sym {
                    sym,
                    prev: if i == 0 { NONE } else { i - 1 },
                    next: if i + 1 == n { NONE } else { i + 1 },
                    end: i + 1,
                    alive: true,
                }
            })
            .collect();
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
            if l == NONE || r == NONE {
                return;
            }
            let (ls, rs) = (syms[l as usize].sym, syms[r as usize].sym);
            if let Some(&(rank, merged)) = self.rules.get(&pair(ls, rs)) {
                heap.push(Reverse((rank, l, r, ls, rs, merged)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, ls, rs, merged))) = heap.pop() {
            let (li, ri) = (l as usize, r as usize);
            if !syms[li].alive || !syms[ri].alive || syms[li].next != r || syms[li].sym != ls || syms[ri].sym != rs {
                continue; // outdated
            }
            syms[li].sym = merged;
            syms[li].end = syms[ri].end;
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
        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            let s = &syms[i as usize];
            f(i as usize, s.end as usize, s.sym);
            i = s.next;
        }
    }
}

fn pair(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}
