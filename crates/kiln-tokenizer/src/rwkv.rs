//! RWKV's "world" tokenizer (`tokenizer.ggml.model = "rwkv"`), as llama.cpp runs it
//! (`llm_tokenizer_rwkv`, b11434): token texts are byte strings written in Python's bytes-repr
//! notation (`\n`, `\t`, `\r`, `\xNN`, `\\`, `\'`); every token (whatever its type) goes into a
//! byte trie under its unescaped bytes, and text is cut greedily into the longest token that
//! starts at each position. A byte no token starts with is the unknown token.

use crate::TokenizerError;
use crate::ugm::ByteTrie;
use crate::vocab::Vocab;

pub(crate) struct Rwkv {
    trie: ByteTrie,
    /// Unescaped text per id (the piece of every token).
    pieces: Vec<Vec<u8>>,
}

/// llama.cpp's `llama_unescape_rwkv_token`, byte for byte (including what it does with malformed
/// escapes: a hex digit outside `0-9a-f` is taken as `c - '0'`, wrapping, and a trailing
/// backslash or half an `\x` escape is dropped).
pub(crate) fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut escaping = false;
    let mut hex_left = 0u8;
    let mut acc = 0u8;
    for &c in escaped {
        if hex_left != 0 {
            // `c >= 'a'` on a signed char: bytes ≥ 0x80 are negative.
            let v = if (c as i8) >= b'a' as i8 { c.wrapping_sub(b'a').wrapping_add(10) } else { c.wrapping_sub(b'0') };
            acc = (acc << 4).wrapping_add(v);
            hex_left -= 1;
            if hex_left == 0 {
                out.push(acc);
                acc = 0;
            }
            continue;
        }
        if escaping {
            match c {
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'x' => hex_left = 2,
                _ => out.push(c),
            }
            escaping = false;
            continue;
        }
        if c == b'\\' {
            escaping = true;
            continue;
        }
        out.push(c);
    }
    out
}

impl Rwkv {
    pub(crate) fn new(vocab: &Vocab) -> Rwkv {
        let mut trie = ByteTrie::new();
        let mut pieces = Vec::with_capacity(vocab.len());
        for id in 0..vocab.len() as u32 {
            let text = unescape(vocab.text(id));
            trie.insert(&text, id);
            pieces.push(text);
        }
        Rwkv { trie, pieces }
    }

    /// Token `id`'s bytes (`id` in range).
    pub(crate) fn piece(&self, id: u32) -> &[u8] {
        &self.pieces[id as usize]
    }

    /// Appends the ids of one text fragment.
    ///
    /// Where a byte starts a token's path in the trie but no prefix of the text along that path
    /// is a token (a vocabulary with a multi-byte token whose first byte is not a token itself),
    /// llama.cpp goes back to the start of the fragment and never ends; here that byte is
    /// unknown, as if no token started with it.
    pub(crate) fn encode(&self, unk: Option<u32>, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let bytes = text.as_bytes();
        let unknown = || {
            unk.ok_or_else(|| {
                TokenizerError::Metadata("the text needs the unknown token but the rwkv vocabulary has none".into())
            })
        };
        let mut pos = 0;
        while pos < bytes.len() {
            let mut node = 0u32;
            let mut best: Option<(u32, usize)> = None;
            let mut end = pos;
            while end < bytes.len() {
                let Some(next) = self.trie.child(node, bytes[end]) else { break };
                node = next;
                end += 1;
                if let Some(id) = self.trie.value(node) {
                    best = Some((id, end));
                }
            }
            match best {
                Some((id, end)) => {
                    out.push(id);
                    pos = end;
                }
                None => {
                    out.push(unknown()?);
                    pos += 1;
                }
            }
        }
        Ok(())
    }
}

/// `llama_token_to_piece` for RWKV: control and unknown tokens are empty unless `special`; every
/// other token is its unescaped bytes, whatever its type; then up to `lstrip` leading spaces go.
pub(crate) fn append_piece(
    tok: &crate::Tokenizer,
    rwkv: &Rwkv,
    id: u32,
    special: bool,
    lstrip: usize,
    out: &mut Vec<u8>,
) {
    use crate::vocab::TokenAttr;
    if !special && tok.vocab.attr(id).intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
        return;
    }
    let piece = rwkv.piece(id);
    let skip = piece.iter().take(lstrip).take_while(|&&b| b == b' ').count();
    out.extend_from_slice(&piece[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_like_llama_cpp() {
        assert_eq!(unescape(br"a\nb\tc\rd"), b"a\nb\tc\rd");
        assert_eq!(unescape(br"\x41\xff\\\'"), b"A\xff\\'");
        assert_eq!(unescape(br"\xA0"), [((b'A'.wrapping_sub(b'0')) << 4)]);
        assert_eq!(unescape(br"x\"), b"x");
        assert_eq!(unescape(br"\x4"), b"");
    }

    #[test]
    fn greedy_longest_match() {
        let texts: Vec<&[u8]> = vec![b"<s>", b"a", b"b", b"ab", b"abc", br"\n", br"\n\n"];
        let v = Vocab::new(texts.into_iter());
        let r = Rwkv::new(&v);
        let mut out = Vec::new();
        r.encode(Some(0), "abab\n\n\nabcz", &mut out).unwrap();
        // abc wins over ab; "z" is unknown.
        assert_eq!(out, [3, 3, 6, 5, 4, 0]);
        assert!(r.encode(None, "z", &mut Vec::new()).is_err());
    }
}
