//! The vocabulary: token texts, attributes, scores, the text → id index, special ids and the
//! end-of-generation set, with llama.cpp's rules for deriving them (`llama_vocab::impl::load`).

use hashbrown::{DefaultHashBuilder, HashTable};
use std::fmt;
use std::hash::BuildHasher;

/// Token attributes, as llama.cpp keeps them (`llama_token_attr`). A set of flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttr(u16);

impl TokenAttr {
    /// No attribute (an unknown `token_type` value).
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    /// The unknown token (`token_type` 2).
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    /// An unused slot (`token_type` 5, or a control token whose text contains "unused").
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    /// A normal text token (`token_type` 1, or no `token_type` array).
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    /// A control token (`token_type` 3): BOS, EOS, chat markers. Rendered only on request and
    /// parsed from text only when `parse_special` is set.
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    /// A user-defined token (`token_type` 4): always rendered, always parsed from text.
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    /// A byte token `<0xXX>` (`token_type` 6).
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    /// Leading white-space is stripped from the text before this special token.
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    /// Trailing white-space is stripped from the text after this special token.
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    /// The attribute llama.cpp gives a GGUF `tokenizer.ggml.token_type` value.
    pub fn from_token_type(t: i32) -> TokenAttr {
        match t {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }

    /// The bits (llama.cpp's values).
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Whether any flag of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether all flags of `other` are set.
    pub fn contains(self, other: TokenAttr) -> bool {
        self.0 & other.0 == other.0
    }

    fn without(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 & !other.0)
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

impl fmt::Debug for TokenAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TokenAttr, &str); 8] = [
            (TokenAttr::UNKNOWN, "UNKNOWN"),
            (TokenAttr::UNUSED, "UNUSED"),
            (TokenAttr::NORMAL, "NORMAL"),
            (TokenAttr::CONTROL, "CONTROL"),
            (TokenAttr::USER_DEFINED, "USER_DEFINED"),
            (TokenAttr::BYTE, "BYTE"),
            (TokenAttr::LSTRIP, "LSTRIP"),
            (TokenAttr::RSTRIP, "RSTRIP"),
        ];
        let names: Vec<&str> = NAMES.iter().filter(|(a, _)| self.contains(*a)).map(|(_, n)| *n).collect();
        if names.is_empty() { f.write_str("UNDEFINED") } else { f.write_str(&names.join("|")) }
    }
}

/// Token texts in one buffer, with a hash index from text to id (the last id wins for duplicate
/// texts, as in llama.cpp's `token_to_id`).
pub(crate) struct Vocab {
    arena: Vec<u8>,
    /// `starts[i]..starts[i + 1]` is token `i`'s text.
    starts: Vec<usize>,
    attrs: Vec<TokenAttr>,
    scores: Vec<f32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Vocab {
    /// Builds the vocabulary. An empty text becomes `[EMPTY_{id}]` (as in llama.cpp).
    pub(crate) fn new<'a>(texts: impl ExactSizeIterator<Item = &'a [u8]>) -> Vocab {
        let n = texts.len();
        let mut v = Vocab {
            arena: Vec::new(),
            starts: Vec::with_capacity(n + 1),
            attrs: vec![TokenAttr::NORMAL; n],
            scores: vec![0.0; n],
            index: HashTable::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
        };
        for (id, text) in texts.enumerate() {
            v.starts.push(v.arena.len());
            if text.is_empty() {
                v.arena.extend_from_slice(format!("[EMPTY_{id}]").as_bytes());
            } else {
                v.arena.extend_from_slice(text);
            }
        }
        v.starts.push(v.arena.len());
        // The iterator may have been shorter than it claimed.
        v.attrs.truncate(v.starts.len() - 1);
        v.scores.truncate(v.starts.len() - 1);
        for id in 0..v.len() as u32 {
            let (arena, starts, hasher) = (&v.arena, &v.starts, &v.hasher);
            let text_of = |i: u32| &arena[starts[i as usize]..starts[i as usize + 1]];
            let text = text_of(id);
            let hash = hasher.hash_one(text);
            match v.index.find_mut(hash, |&other| text_of(other) == text) {
                Some(slot) => *slot = id,
                None => {
                    v.index.insert_unique(hash, id, |&i| hasher.hash_one(text_of(i)));
                }
            }
        }
        v
    }

    pub(crate) fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Token `id`'s text; `id` must be in range.
    pub(crate) fn text(&self, id: u32) -> &[u8] {
        &self.arena[self.starts[id as usize]..self.starts[id as usize + 1]]
    }

    pub(crate) fn attr(&self, id: u32) -> TokenAttr {
        self.attrs[id as usize]
    }

    pub(crate) fn set_attr(&mut self, id: u32, attr: TokenAttr) {
        self.attrs[id as usize] = attr;
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    pub(crate) fn set_scores(&mut self, scores: impl Iterator<Item = f32>) {
        for (s, v) in self.scores.iter_mut().zip(scores) {
            *s = v;
        }
    }

    /// The id whose text is `text` (the last one, if several share it).
    pub(crate) fn lookup(&self, text: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.index.find(hash, |&id| self.text(id) == text).copied()
    }

    /// Ids in ascending order, one per distinct text (the id [`lookup`](Self::lookup) returns):
    /// llama.cpp's walks over its `token_to_id` map visit exactly these.
    fn distinct_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&id| self.lookup(self.text(id)) == Some(id))
    }
}

/// Special token ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Specials {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts llama.cpp puts in the end-of-generation set whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// Harmony markers llama.cpp always renders (it makes them user-defined).
const ALWAYS_RENDERED_TEXTS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

fn is_one_of(text: &[u8], list: &[&str]) -> bool {
    list.iter().any(|t| t.as_bytes() == text)
}

/// Applies llama.cpp's text-based rules after the metadata has been read: finds unset EOT, EOM
/// and FIM ids by their text, marks control tokens named "unused…" unused, forces the tokens it
/// finds to be control tokens, builds the end-of-generation set and applies the gpt-oss
/// (`<|end|>` is not end-of-generation when `<|return|>` and `<|call|>` exist) and `</s>`
/// exceptions. Returns the end-of-generation ids, ascending.
///
/// Where llama.cpp picks the first of several candidates in hash-map order (e.g. `<|endoftext|>`
/// and `<|im_end|>` both look like EOT), this picks the lowest id, so the result is deterministic.
pub(crate) fn derive_specials(vocab: &mut Vocab, sp: &mut Specials) -> Vec<u32> {
    let ids: Vec<u32> = vocab.distinct_ids().collect();
    let force_control = |vocab: &mut Vocab, id: u32| {
        let a = vocab.attr(id);
        if !a.contains(TokenAttr::CONTROL) {
            vocab.set_attr(id, a | TokenAttr::CONTROL);
        }
    };
    for &id in &ids {
        let text = vocab.text(id).to_vec();
        let slots: [(&mut Option<u32>, &[&str]); 8] = [
            (&mut sp.eot, EOT_TEXTS),
            (&mut sp.eom, EOM_TEXTS),
            (&mut sp.fim_pre, FIM_PRE_TEXTS),
            (&mut sp.fim_suf, FIM_SUF_TEXTS),
            (&mut sp.fim_mid, FIM_MID_TEXTS),
            (&mut sp.fim_pad, FIM_PAD_TEXTS),
            (&mut sp.fim_rep, FIM_REP_TEXTS),
            (&mut sp.fim_sep, FIM_SEP_TEXTS),
        ];
        for (slot, texts) in slots {
            if slot.is_none() && is_one_of(&text, texts) {
                *slot = Some(id);
                force_control(vocab, id);
            }
        }
    }
    for &id in &ids {
        let a = vocab.attr(id);
        if a.contains(TokenAttr::CONTROL)
            && !a.contains(TokenAttr::UNUSED)
            && contains_subslice(vocab.text(id), b"unused")
        {
            vocab.set_attr(id, a | TokenAttr::UNUSED);
        }
    }
    let mut eog = std::collections::BTreeSet::new();
    eog.extend(sp.fim_pad);
    eog.extend(sp.fim_rep);
    eog.extend(sp.fim_sep);
    for &id in &ids {
        if is_one_of(vocab.text(id), EOG_TEXTS) {
            eog.insert(id);
            force_control(vocab, id);
        }
    }
    for &id in &ids {
        if is_one_of(vocab.text(id), ALWAYS_RENDERED_TEXTS) {
            vocab.set_attr(id, TokenAttr::USER_DEFINED);
        }
    }
    eog.extend(sp.eos);
    eog.extend(sp.eot);
    eog.extend(sp.eom);

    // gpt-oss (o200k_harmony) and solar-open: "<|end|>" ends a message, not the generation.
    let in_eog = |vocab: &Vocab, eog: &std::collections::BTreeSet<u32>, texts: &[&str]| {
        eog.iter().copied().find(|&id| is_one_of(vocab.text(id), texts))
    };
    let has_return = in_eog(vocab, &eog, &["<|return|>"]).is_some();
    let has_call = in_eog(vocab, &eog, &["<|call|>", "<|calls|>"]).is_some();
    let has_flush = in_eog(vocab, &eog, &["<|flush|>"]).is_some();
    if let Some(end) = in_eog(vocab, &eog, &["<|end|>"])
        && has_call
        && (has_return || has_flush)
    {
        eog.remove(&end);
        vocab.set_attr(end, TokenAttr::USER_DEFINED);
    }
    // Gemma 4 and PLaMo 2 have a normal "</s>".
    let has_normal_s_marker = in_eog(vocab, &eog, &["<|tool_response>", "<|plamo:eos|>"]).is_some();
    if let Some(s) = in_eog(vocab, &eog, &["</s>"])
        && has_normal_s_marker
    {
        eog.remove(&s);
        vocab.set_attr(s, TokenAttr::NORMAL);
    }
    eog.into_iter().collect()
}

/// Per-model attribute fixes llama.cpp applies by name (b11434, the end of `load`), the first
/// that applies: `<mask>` strips the white-space before it for the `jina-v2-de`, `jina-v2-es`,
/// `jina-v2-code` and `mmbert` pre-tokenizers and the `nomic-bert-moe` and `jina-bert-v3`
/// architectures; special tokens strip the white-space after them for Phi-3 (`general.name`);
/// `[MASK]` strips the white-space before it for `modern-bert` (`general.name`). The names are
/// matched as substrings; `general.name` in lower case.
pub(crate) fn apply_name_rules(vocab: &mut Vocab, special_cache: &[u32], model_name: &str, pre: &str, arch: &str) {
    let name = model_name.to_ascii_lowercase();
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    let set = |vocab: &mut Vocab, text: &str, attr: TokenAttr, on: bool| {
        if let Some(id) = vocab.lookup(text.as_bytes()) {
            let a = vocab.attr(id);
            vocab.set_attr(id, if on { a | attr } else { a.without(attr) });
        }
    };
    if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"])
        || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set(vocab, "<mask>", TokenAttr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for &id in special_cache {
            let a = vocab.attr(id);
            vocab.set_attr(id, a | TokenAttr::RSTRIP);
        }
        set(vocab, "</s>", TokenAttr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, t, TokenAttr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(vocab, "[MASK]", TokenAttr::LSTRIP, true);
    }
}

/// Ids of the tokens matched in text before tokenization (control, user-defined and unknown),
/// longest text first (ties: lower id first).
pub(crate) fn special_cache(vocab: &Vocab) -> Vec<u32> {
    let mask = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
    let mut ids: Vec<u32> = (0..vocab.len() as u32).filter(|&id| vocab.attr(id).intersects(mask)).collect();
    ids.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));
    ids
}

fn contains_subslice(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_last_duplicate_wins_and_empty_is_renamed() {
        let texts: Vec<&[u8]> = vec![b"a", b"", b"b", b"a"];
        let v = Vocab::new(texts.into_iter());
        assert_eq!(v.lookup(b"a"), Some(3));
        assert_eq!(v.lookup(b"b"), Some(2));
        assert_eq!(v.text(1), b"[EMPTY_1]");
        assert_eq!(v.lookup(b"c"), None);
        assert_eq!(v.distinct_ids().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn harmony_end_is_not_end_of_generation() {
        let texts: Vec<&[u8]> = vec![b"x", b"<|endoftext|>", b"<|return|>", b"<|end|>", b"<|call|>", b"<|start|>"];
        let mut v = Vocab::new(texts.into_iter());
        for id in 1..6 {
            v.set_attr(id, TokenAttr::CONTROL);
        }
        let mut sp = Specials { eos: Some(2), ..Default::default() };
        let eog = derive_specials(&mut v, &mut sp);
        assert_eq!(eog, [1, 2, 4]);
        assert_eq!(sp.eot, Some(1), "lowest-id EOT candidate");
        assert_eq!(v.attr(3), TokenAttr::USER_DEFINED);
        assert_eq!(v.attr(5), TokenAttr::USER_DEFINED);
    }
}
