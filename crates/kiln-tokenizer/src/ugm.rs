//! The unigram tokenizer of SentencePiece (`tokenizer.ggml.model = "t5"`), as llama.cpp runs it
//! (`llm_tokenizer_ugm`, b11434).
//!
//! Each text fragment is first normalized:
//!
//! * the longest prefix of the remaining input that is a prefix of some user-defined token's text
//!   is copied unchanged (a prefix of one, not necessarily a whole token: llama.cpp walks its trie
//!   as far as the input follows it);
//! * otherwise the longest input prefix the precompiled charsmap (`tokenizer.ggml.precompiled_charsmap`,
//!   an XOR-compressed compact double array followed by NUL-terminated replacements) knows is
//!   replaced by its replacement;
//! * otherwise one UTF-8 character is copied, or one invalid byte becomes U+FFFD;
//! * spaces (ASCII `' '` in that output) become `▁`: with `remove_extra_whitespaces` runs of them
//!   are dropped and one `▁` goes before every word (also the first); without it each space is a
//!   `▁`, and with `add_space_prefix` one more goes before the first non-space byte.
//!
//! Then a Viterbi pass over the normalized bytes, one UTF-8 character at a time, keeps for every
//! end offset the best sum of scores (in f64) over the tokens of the trie (normal, user-defined at
//! score 0, unused). A character no token of exactly that character covers may also be the
//! unknown token, at the lowest normal score minus 10. Backtracking gives the ids; runs of
//! unknown tokens become one.

use crate::TokenizerError;
use crate::vocab::{TokenAttr, Vocab};
use hashbrown::HashMap;

/// A byte trie: node 0 is the root; an edge is (node, byte) → node.
#[derive(Default)]
pub(crate) struct ByteTrie {
    values: Vec<Option<u32>>,
    edges: HashMap<(u32, u8), u32>,
}

impl ByteTrie {
    pub(crate) fn new() -> ByteTrie {
        ByteTrie { values: vec![None], edges: HashMap::new() }
    }

    /// Inserts `key` with `value`; a later insert of the same key replaces the value (as
    /// llama.cpp's `naive_trie`).
    pub(crate) fn insert(&mut self, key: &[u8], value: u32) {
        let mut node = 0u32;
        for &b in key {
            node = match self.edges.get(&(node, b)) {
                Some(&n) => n,
                None => {
                    let n = self.values.len() as u32;
                    self.values.push(None);
                    self.edges.insert((node, b), n);
                    n
                }
            };
        }
        self.values[node as usize] = Some(value);
    }

    #[inline]
    pub(crate) fn child(&self, node: u32, b: u8) -> Option<u32> {
        self.edges.get(&(node, b)).copied()
    }

    #[inline]
    pub(crate) fn value(&self, node: u32) -> Option<u32> {
        self.values[node as usize]
    }

    /// How many leading bytes of `key` the trie follows (whether or not a key ends there).
    fn follow_len(&self, key: &[u8]) -> usize {
        let mut node = 0u32;
        for (i, &b) in key.iter().enumerate() {
            match self.child(node, b) {
                Some(n) => node = n,
                None => return i,
            }
        }
        key.len()
    }
}

/// SentencePiece's precompiled normalization map.
struct Charsmap {
    xcda: Vec<u32>,
    replacements: Vec<u8>,
}

impl Charsmap {
    /// Parses the blob; llama.cpp's load-time checks (at least the 4-byte header, and the array
    /// ending before the end of the blob) are errors here too.
    fn parse(blob: &[u8]) -> Result<Charsmap, TokenizerError> {
        if blob.len() < 4 {
            return Err(TokenizerError::Metadata("precompiled_charsmap too small for xcda_blob_size header".into()));
        }
        let size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if size.saturating_add(4) >= blob.len() {
            return Err(TokenizerError::Metadata(
                "precompiled_charsmap: the XCDA array runs past the end of the blob".into(),
            ));
        }
        let xcda =
            blob[4..4 + size / 4 * 4].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Charsmap { xcda, replacements: blob[4 + size..].to_vec() })
    }

    fn node(&self, i: u32) -> Result<u32, TokenizerError> {
        self.xcda
            .get(i as usize)
            .copied()
            .ok_or_else(|| TokenizerError::Internal("index out of array bounds in XCDA array".into()))
    }

    fn base(&self, i: u32) -> Result<u32, TokenizerError> {
        let n = self.node(i)?;
        Ok((n >> 10) << ((n & (1 << 9)) >> 6))
    }

    /// The replacement for the longest prefix of `input` the map knows, with that prefix's length.
    fn longest_match(&self, input: &[u8]) -> Result<Option<(&[u8], usize)>, TokenizerError> {
        if self.xcda.is_empty() {
            return Ok(None);
        }
        let mut best: Option<(usize, u32)> = None;
        let mut node = self.base(0)?;
        for (i, &c) in input.iter().enumerate() {
            if c == 0 {
                break;
            }
            node ^= c as u32;
            let packed = self.node(node)?;
            if packed & ((1 << 31) | 0xff) != c as u32 {
                break;
            }
            let leaf = (packed >> 8) & 1 == 1;
            node ^= self.base(node)?;
            if leaf {
                best = Some((i + 1, self.node(node)? & ((1 << 31) - 1)));
            }
        }
        let Some((len, offset)) = best else { return Ok(None) };
        let rest = self
            .replacements
            .get(offset as usize..)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| TokenizerError::Internal("index out of array bounds in precompiled charsmap".into()))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| TokenizerError::Internal("unterminated string in precompiled charsmap".into()))?;
        Ok(Some((&rest[..end], len)))
    }
}

pub(crate) struct Ugm {
    tokens: ByteTrie,
    user_defined: ByteTrie,
    charsmap: Option<Charsmap>,
    unknown_score: f32,
    add_space_prefix: bool,
    remove_extra_whitespaces: bool,
}

const ESCAPED_SPACE: &[u8] = "\u{2581}".as_bytes();

impl Ugm {
    /// Built after the vocabulary's attributes are final (llama.cpp builds it in
    /// `init_tokenizer`, after `load`).
    pub(crate) fn new(
        vocab: &Vocab,
        charsmap: Option<&[u8]>,
        add_space_prefix: bool,
        remove_extra_whitespaces: bool,
    ) -> Result<Ugm, TokenizerError> {
        let charsmap = charsmap.map(Charsmap::parse).transpose()?;
        let mut tokens = ByteTrie::new();
        let mut user_defined = ByteTrie::new();
        let mut min_score = f32::MAX;
        for id in 0..vocab.len() as u32 {
            let attr = vocab.attr(id);
            if attr.contains(TokenAttr::NORMAL) {
                min_score = min_score.min(vocab.score(id));
            }
            if attr.intersects(TokenAttr::NORMAL | TokenAttr::USER_DEFINED | TokenAttr::UNUSED) {
                tokens.insert(vocab.text(id), id);
            }
            if attr.contains(TokenAttr::USER_DEFINED) {
                user_defined.insert(vocab.text(id), id);
            }
        }
        Ok(Ugm {
            tokens,
            user_defined,
            charsmap,
            unknown_score: min_score - 10.0,
            add_space_prefix,
            remove_extra_whitespaces,
        })
    }

    /// The normalized form of `input` (bytes: a user-defined prefix can end inside a character).
    fn normalize(&self, input: &[u8]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(input.len() * 3);
        let prepend = self.add_space_prefix; // treat_whitespace_as_suffix is never set in llama.cpp
        let merge = self.remove_extra_whitespaces;
        let mut space_prepended = false;
        let mut in_word = false;
        let mut i = 0;
        while i < input.len() {
            let (piece, consumed) = self.normalize_prefix(&input[i..])?;
            for &c in piece {
                if c != b' ' {
                    if !in_word {
                        in_word = true;
                        if (prepend && !space_prepended) || merge {
                            out.extend_from_slice(ESCAPED_SPACE);
                            space_prepended = true;
                        }
                    }
                    out.push(c);
                } else {
                    in_word = false;
                    if !merge {
                        out.extend_from_slice(ESCAPED_SPACE);
                    }
                }
            }
            i += consumed;
        }
        Ok(out)
    }

    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> Result<(&'a [u8], usize), TokenizerError> {
        let n = self.user_defined.follow_len(input);
        if n > 0 {
            return Ok((&input[..n], n));
        }
        if let Some(cm) = &self.charsmap
            && let Some((replacement, len)) = cm.longest_match(input)?
        {
            return Ok((replacement, len));
        }
        match utf8_char_len(input) {
            Some(len) => Ok((&input[..len], len)),
            None => Ok(("\u{FFFD}".as_bytes(), 1)),
        }
    }

    /// Appends the ids of one text fragment. `unk`: the unknown token (`None` is an error if one
    /// is needed; llama.cpp would emit -1).
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        unk: Option<u32>,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let norm = self.normalize(text.as_bytes())?;
        let n = norm.len();
        if n == 0 {
            return Ok(());
        }
        const UNK: u32 = u32::MAX; // stands for the unknown token until the end
        // Per end offset: (token, start offset, score).
        let mut best: Vec<(u32, usize, f64)> = vec![(UNK, 0, -f64::MAX); n + 1];
        best[0] = (UNK, 0, 0.0);
        let mut start = 0;
        while start < n {
            let units = utf8_len_from_lead(norm[start]).min(n - start);
            let base = best[start].2;
            let mut single = false;
            let mut node = 0u32;
            let mut end = start;
            while end < n {
                let Some(next) = self.tokens.child(node, norm[end]) else { break };
                node = next;
                end += 1;
                if let Some(id) = self.tokens.value(node) {
                    if end - start == units {
                        single = true;
                    }
                    let score =
                        if vocab.attr(id).contains(TokenAttr::USER_DEFINED) { 0.0 } else { vocab.score(id) as f64 };
                    let challenger = base + score;
                    if challenger > best[end].2 {
                        best[end] = (id, start, challenger);
                    }
                }
            }
            if !single {
                let challenger = base + self.unknown_score as f64;
                let end = start + units;
                if challenger > best[end].2 {
                    best[end] = (UNK, start, challenger);
                }
            }
            start += units;
        }
        // The unknown token's id compares equal to the placeholder, as llama.cpp compares ids.
        let unk_id = unk.unwrap_or(UNK);
        let resolve = |id: u32| if id == UNK { unk_id } else { id };
        let first = out.len();
        let mut at = n;
        let mut prev_unknown = false;
        loop {
            let (id, from, _) = best[at];
            let id = resolve(id);
            let unknown = id == unk_id;
            if !(prev_unknown && unknown) {
                out.push(id);
            }
            if from == 0 {
                break;
            }
            prev_unknown = unknown;
            at = from;
        }
        out[first..].reverse();
        if out[first..].contains(&UNK) {
            out.truncate(first);
            return Err(TokenizerError::Metadata(
                "the text needs the unknown token but the t5 vocabulary has none".into(),
            ));
        }
        Ok(())
    }
}

/// llama.cpp's `unicode_len_utf8`: the sequence length a lead byte announces (1 for a
/// continuation byte).
fn utf8_len_from_lead(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// The length of the UTF-8 character at the start of `s` as llama.cpp's `unicode_cpt_from_utf8`
/// accepts it (lead byte and continuation bytes only; no overlong or surrogate checks), or `None`.
fn utf8_char_len(s: &[u8]) -> Option<usize> {
    let b = *s.first()?;
    let len = if b & 0x80 == 0 {
        1
    } else if b & 0x40 == 0 {
        return None;
    } else if b & 0x20 == 0 {
        2
    } else if b & 0x10 == 0 {
        3
    } else if b & 0x08 == 0 {
        4
    } else {
        return None;
    };
    if s.len() < len || !s[1..len].iter().all(|&c| c & 0xC0 == 0x80) {
        return None;
    }
    Some(len)
}

// ---- Hooks used by `tokenizer.rs` (UGM and RWKV) ----

/// Whether `tokenizer.ggml.model` is built here (`t5`) or in `rwkv.rs` (`rwkv`).
pub(crate) fn is_own_model(model: &str) -> bool {
    matches!(model, "t5" | "rwkv")
}

/// llama.cpp's `add_eos` default: on for UGM.
pub(crate) fn default_add_eos(model: &str, add_eos: &mut bool) {
    if model == "t5" {
        *add_eos = true;
    }
}

/// llama.cpp's default special ids (before the metadata): UGM EOS 1, UNK 2, PAD 0; RWKV none.
pub(crate) fn default_specials(model: &str) -> crate::vocab::Specials {
    if model == "t5" {
        crate::vocab::Specials { eos: Some(1), unk: Some(2), pad: Some(0), ..Default::default() }
    } else {
        crate::vocab::Specials::default()
    }
}

const KEY_CHARSMAP: &str = "tokenizer.ggml.precompiled_charsmap";

/// The engine, once the vocabulary's attributes are final.
pub(crate) fn engine(
    file: &kiln_gguf::GgufFile,
    vocab: &Vocab,
    model: &str,
    add_space_prefix: bool,
) -> Result<crate::tokenizer::Engine, TokenizerError> {
    use crate::tokenizer::Engine;
    if model == "rwkv" {
        return Ok(Engine::Rwkv(Box::new(crate::rwkv::Rwkv::new(vocab))));
    }
    let remove_extra_whitespaces = file.get_opt_bool("tokenizer.ggml.remove_extra_whitespaces")?.unwrap_or(false);
    let charsmap = match file.get_opt_array(KEY_CHARSMAP)? {
        None => None,
        Some(a) => match a.elem_type() {
            kiln_gguf::ValueType::U8 | kiln_gguf::ValueType::I8 => Some(a.raw_bytes()),
            t => {
                return Err(TokenizerError::Metadata(format!(
                    "{KEY_CHARSMAP} must be an array of u8 or i8, found {t}"
                )));
            }
        },
    };
    Ok(Engine::Ugm(Box::new(Ugm::new(vocab, charsmap, add_space_prefix, remove_extra_whitespaces)?)))
}

/// `llama_tokenize` for UGM and RWKV; `None` for other engines. UGM adds BOS / EOS as the
/// vocabulary asks; RWKV never adds either (llama.cpp ignores `add_special` for it).
pub(crate) fn encode_fragments(
    tok: &crate::Tokenizer,
    fragments: &[crate::special::Fragment<'_>],
    add_special: bool,
) -> Result<Option<Vec<u32>>, TokenizerError> {
    use crate::special::Fragment;
    use crate::tokenizer::Engine;
    let mut out = Vec::new();
    match &tok.engine {
        Engine::Ugm(ugm) => {
            if add_special && tok.add_bos {
                out.extend(tok.specials.bos);
            }
            for f in fragments {
                match *f {
                    Fragment::Text(t) => ugm.encode(&tok.vocab, tok.specials.unk, t, &mut out)?,
                    Fragment::Token(id) => out.push(id),
                }
            }
            if add_special && tok.add_eos {
                out.extend(tok.specials.eos);
            }
        }
        Engine::Rwkv(rwkv) => {
            for f in fragments {
                match *f {
                    Fragment::Text(t) => rwkv.encode(tok.specials.unk, t, &mut out)?,
                    Fragment::Token(id) => out.push(id),
                }
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[(&str, f32, TokenAttr)]) -> Vocab {
        let mut v = Vocab::new(tokens.iter().map(|t| t.0.as_bytes()));
        v.set_scores(tokens.iter().map(|t| t.1));
        for (i, t) in tokens.iter().enumerate() {
            v.set_attr(i as u32, t.2);
        }
        v
    }

    #[test]
    fn best_segmentation_and_unknown_runs() {
        let n = TokenAttr::NORMAL;
        let v = vocab(&[
            ("<unk>", 0.0, TokenAttr::UNKNOWN),
            ("▁", -1.0, n),
            ("a", -2.0, n),
            ("b", -2.0, n),
            ("ab", -3.5, n),
            ("▁ab", -5.0, n),
            ("<u>", 0.0, TokenAttr::USER_DEFINED),
        ]);
        let ugm = Ugm::new(&v, None, true, true).unwrap();
        let enc = |t: &str| {
            let mut out = Vec::new();
            ugm.encode(&v, Some(0), t, &mut out).unwrap();
            out
        };
        // "▁ab": one token at -5 beats ▁ + ab (-4.5)? No: -4.5 > -5, so [▁, ab].
        assert_eq!(enc("ab"), [1, 4]);
        // Unknown characters (score -3.5 - 10 each) merge into one <unk>.
        assert_eq!(enc("xy"), [1, 0]);
        assert_eq!(enc("  a   b "), [1, 2, 1, 3]);
        // A user-defined token is copied through the normalizer and scores 0.
        assert_eq!(enc("<u>"), [1, 6]);
        // "<x": "<" follows the user-defined trie, is copied, and is unknown; "x" too.
        assert_eq!(enc("<x"), [1, 0]);
        assert_eq!(enc(""), Vec::<u32>::new());
        assert_eq!(enc("   "), Vec::<u32>::new());
    }

    #[test]
    fn utf8_like_llama_cpp() {
        assert_eq!(utf8_char_len("é".as_bytes()), Some(2));
        assert_eq!(utf8_char_len(&[0x80]), None);
        assert_eq!(utf8_char_len(&[0xE2, 0x96]), None);
        assert_eq!(utf8_char_len(&[0xF8, 0x80]), None);
        assert_eq!(utf8_len_from_lead(0x80), 1);
        assert_eq!(utf8_len_from_lead(0xF0), 4);
    }
}
