//! Splitting text at special-token texts before tokenization (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens longest text first and, for each, splits every remaining
//! text fragment at each of its occurrences, left to right. Control and unknown tokens take part
//! only with `parse_special`; user-defined tokens always do. A token with the LSTRIP / RSTRIP
//! attribute also removes the ASCII white-space before / after it in its fragment.
//!
//! Doing that token by token costs O(tokens × text); Gemma 3 has 6,414 such tokens. Here one
//! Aho–Corasick pass finds every occurrence of every special text, and the occurrences are then
//! taken in llama.cpp's order (token priority, then position), each kept only if none of its
//! bytes was already taken. Fragments are the maximal untaken runs, which is the same partition.

use crate::vocab::{TokenAttr, Vocab};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// A piece of the input: text to tokenize, or a special token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

pub(crate) struct SpecialMatcher {
    /// `None` when there are no special tokens.
    ac: Option<AhoCorasick>,
    /// Per pattern: token id.
    ids: Vec<u32>,
}

impl SpecialMatcher {
    /// `cache`: the special tokens in priority order (see `vocab::special_cache`). Tokens whose
    /// text is not UTF-8 are left out (they cannot occur in a `&str` at a character boundary).
    pub(crate) fn new(vocab: &Vocab, cache: &[u32]) -> SpecialMatcher {
        let ids: Vec<u32> = cache.iter().copied().filter(|&id| std::str::from_utf8(vocab.text(id)).is_ok()).collect();
        let ac = if ids.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new().match_kind(MatchKind::Standard).build(ids.iter().map(|&id| vocab.text(id))).ok()
        };
        SpecialMatcher { ac, ids }
    }

    pub(crate) fn partition<'a>(&self, vocab: &Vocab, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        let Some(ac) = &self.ac else {
            return vec![Fragment::Text(text)];
        };
        let skip = TokenAttr::CONTROL | TokenAttr::UNKNOWN;
        // (priority, start, end)
        let mut found: Vec<(u32, usize, usize)> = ac
            .find_overlapping_iter(text)
            .filter(|m| parse_special || !vocab.attr(self.ids[m.pattern().as_usize()]).intersects(skip))
            .map(|m| (m.pattern().as_u32(), m.start(), m.end()))
            .collect();
        if found.is_empty() {
            return vec![Fragment::Text(text)];
        }
        found.sort_unstable();
        let bytes = text.as_bytes();
        let mut taken = vec![false; text.len()];
        let mut tokens: Vec<(usize, u32)> = Vec::new();
        for (pat, start, end) in found {
            if taken[start..end].iter().any(|&t| t) {
                continue;
            }
            taken[start..end].iter_mut().for_each(|t| *t = true);
            let id = self.ids[pat as usize];
            tokens.push((start, id));
            let attr = vocab.attr(id);
            if attr.contains(TokenAttr::LSTRIP) {
                let mut i = start;
                while i > 0 && !taken[i - 1] && is_c_space(bytes[i - 1]) {
                    taken[i - 1] = true;
                    i -= 1;
                }
            }
            if attr.contains(TokenAttr::RSTRIP) {
                let mut i = end;
                while i < bytes.len() && !taken[i] && is_c_space(bytes[i]) {
                    taken[i] = true;
                    i += 1;
                }
            }
        }
        tokens.sort_unstable();
        let mut out = Vec::with_capacity(tokens.len() * 2 + 1);
        let mut tok = tokens.into_iter().peekable();
        let mut i = 0;
        while i < bytes.len() {
            if let Some(&(start, id)) = tok.peek()
                && start == i
            {
                out.push(Fragment::Token(id));
                tok.next();
                i += vocab.text(id).len();
                continue;
            }
            if taken[i] {
                i += 1; // stripped white-space
                continue;
            }
            let run_end = (i..bytes.len()).find(|&j| taken[j]).unwrap_or(bytes.len());
            // Runs start and end at character boundaries: special texts are UTF-8 and stripping
            // only removes ASCII bytes.
            out.push(Fragment::Text(&text[i..run_end]));
            i = run_end;
        }
        out
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(specs: &[(&str, TokenAttr)]) -> (Vocab, SpecialMatcher) {
        let mut v = Vocab::new(specs.iter().map(|(t, _)| t.as_bytes()));
        for (i, (_, a)) in specs.iter().enumerate() {
            v.set_attr(i as u32, *a);
        }
        let cache = crate::vocab::special_cache(&v);
        let m = SpecialMatcher::new(&v, &cache);
        (v, m)
    }

    #[test]
    fn longest_token_first_then_leftmost() {
        use Fragment::*;
        let (v, m) = vocab(&[
            ("<a>", TokenAttr::CONTROL),
            ("<a><b>", TokenAttr::CONTROL),
            ("<b>", TokenAttr::USER_DEFINED),
            ("x", TokenAttr::NORMAL),
        ]);
        assert_eq!(
            m.partition(&v, "1<a><b>2<a>3<b>", true),
            [Text("1"), Token(1), Text("2"), Token(0), Text("3"), Token(2)]
        );
        // Without parse_special only the user-defined token is split out.
        assert_eq!(m.partition(&v, "1<a><b>2<a>3<b>", false), [Text("1<a>"), Token(2), Text("2<a>3"), Token(2)]);
        assert_eq!(m.partition(&v, "<a><a>", true), [Token(0), Token(0)]);
        assert_eq!(m.partition(&v, "", true), []);
    }

    #[test]
    fn strip_attributes_remove_adjacent_white_space() {
        use Fragment::*;
        let (v, m) =
            vocab(&[("<l>", TokenAttr::CONTROL | TokenAttr::LSTRIP), ("<r>", TokenAttr::CONTROL | TokenAttr::RSTRIP)]);
        assert_eq!(m.partition(&v, "a  <l> b", true), [Text("a"), Token(0), Text(" b")]);
        assert_eq!(m.partition(&v, "a <r> \n b", true), [Text("a "), Token(1), Text("b")]);
    }
}
