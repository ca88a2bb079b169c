//! Byte-level BPE by merge rank, as llama.cpp's `llm_tokenizer_bpe_session` applies it, over
//! [`MergeTable`]: each byte starts as its GPT-2 character's symbol.

use crate::merges::MergeTable;
use crate::vocab::Vocab;

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
    merges: MergeTable,
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
            merges: MergeTable::new(vocab, merges),
            byte_sym: [0; 256],
            byte_char: byte_to_char_table(),
            ignore_merges,
        };
        let mut tmp = [0u8; 4];
        for b in 0..256 {
            let s = bpe.byte_char[b].encode_utf8(&mut tmp).as_bytes().to_vec();
            bpe.byte_sym[b] = bpe.merges.intern(vocab, &s);
        }
        bpe
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
        self.merges.merge(word.iter().map(|&b| self.byte_sym[b as usize]), |_, _, sym| self.emit(vocab, sym, out));
    }

    /// A final symbol: its token, or (not a token) each of its bytes that is a one-byte token.
    fn emit(&self, vocab: &Vocab, sym: u32, out: &mut Vec<u32>) {
        let Some(text) = self.merges.extra_text(sym) else {
            out.push(sym);
            return;
        };
        for &b in text {
            if let Some(id) = vocab.lookup(&[b]) {
                out.push(id);
            }
        }
    }
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
