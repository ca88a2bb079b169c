//! WordPiece (`tokenizer.ggml.model = "bert"`), as llama.cpp b11434 runs it
//! (`llm_tokenizer_wpm_session`).
//!
//! The GGUF converter stores BERT's vocabulary with the word-initial pieces prefixed by `▁` and
//! the `##` continuation pieces without their `##` (`"hello"` → `"▁hello"`, `"##lo"` → `"lo"`).
//! Tokenizing a text:
//!
//! 1. Normalize and split (llama.cpp's `preprocess`): with `strip_accents`, every code point is
//!    replaced by the first code point of its NFD decomposition (a one-to-one map, so "é" → "e"
//!    and a Hangul syllable → its leading jamo). White-space ends a word; NUL, U+FFFD and control
//!    characters (`\p{C}` less unassigned) are dropped; with `strip_accents` marks (`\p{M}`) are
//!    dropped; with `lowercase` each code point gets its simple lower-case mapping. Punctuation,
//!    ASCII symbols and CJK ideographs are words of their own.
//! 2. Each word, prefixed with `▁`, is cut greedily into the longest vocabulary pieces from the
//!    left (candidate lengths in bytes, up to the longest token + 1). If some position matches no
//!    piece, the whole word becomes the unknown token.

use crate::unicode::{Class, class, is_whitespace};
use crate::vocab::Vocab;

/// Normalizer settings (`tokenizer.ggml.normalizer.lowercase` / `.strip_accents`; both default
/// to true, and `strip_accents` defaults to `lowercase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WpmOptions {
    pub lowercase: bool,
    pub strip_accents: bool,
}

pub(crate) struct Wpm {
    pub(crate) options: WpmOptions,
    /// Longest token text in bytes (llama.cpp's `max_token_len`).
    max_token_len: usize,
    unk: Option<u32>,
}

const SPACE: &str = "\u{2581}";

impl Wpm {
    pub(crate) fn new(vocab: &Vocab, options: WpmOptions, unk: Option<u32>) -> Wpm {
        let max_token_len = (0..vocab.len() as u32).map(|id| vocab.text(id).len()).max().unwrap_or(0);
        Wpm { options, max_token_len, unk }
    }

    /// Appends the ids of one text fragment.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::from(SPACE);
        for w in preprocess(text, self.options) {
            word.truncate(SPACE.len());
            word.push_str(&w);
            self.encode_word(vocab, word.as_bytes(), out);
        }
    }

    /// Greedy longest-match of `word` (already `▁`-prefixed); the unknown token if it fails.
    fn encode_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>) {
        let start_len = out.len();
        let n = word.len();
        let mut i = 0;
        while i < n {
            let longest = n.min(i + self.max_token_len + 1);
            let found = (i + 1..=longest).rev().find_map(|j| vocab.lookup(&word[i..j]).map(|id| (id, j)));
            match found {
                Some((id, j)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(start_len);
                    break;
                }
            }
        }
        if out.len() == start_len {
            // llama.cpp pushes its unknown id even when there is none (-1); here nothing is pushed.
            out.extend(self.unk);
        }
    }
}

/// llama.cpp's `is_chinese_char` (the CJK ranges of BERT's `_is_chinese_char`, with its
/// 0x2B920 lower bound).
fn is_chinese_char(cp: u32) -> bool {
    matches!(cp,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// The first code point of `c`'s canonical decomposition (Unicode 15.1).
pub(crate) fn nfd_first(c: char) -> char {
    let cp = c as u32;
    if cp < 0xC0 {
        return c;
    }
    let table = &crate::wpm_data::NFD_FIRST;
    let i = table.partition_point(|&(first, _, _)| first <= cp);
    match i.checked_sub(1).map(|i| table[i]) {
        Some((first, last, nfd)) if first <= cp && cp <= last => char::from_u32(nfd).unwrap_or(c),
        _ => c,
    }
}

/// The simple lower-case mapping of `c` as llama.cpp's table (UnicodeData.txt 15.1) has it:
/// code points not assigned in Unicode 15.1 map to themselves.
pub(crate) fn to_lower(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if c == '\u{130}' {
        return 'i'; // the one full mapping of more than one code point; the simple one is "i"
    }
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) if l != c && class(c) != Class::Undefined => l,
        _ => c,
    }
}

/// llama.cpp's `preprocess`: normalized words.
pub(crate) fn preprocess(text: &str, opts: WpmOptions) -> Vec<String> {
    let mut words: Vec<String> = vec![String::new()];
    for c in text.chars() {
        let c = if opts.strip_accents { nfd_first(c) } else { c };
        if is_whitespace(c) {
            if !words.last().expect("never empty").is_empty() {
                words.push(String::new());
            }
            continue;
        }
        let cl = class(c);
        if c == '\0' || c == '\u{FFFD}' || cl == Class::Control {
            continue;
        }
        if opts.strip_accents && cl == Class::Mark {
            continue;
        }
        let out = if opts.lowercase { to_lower(c) } else { c };
        let cp = c as u32;
        if cl == Class::Punctuation || (cp < 0x7F && cl == Class::Symbol) || is_chinese_char(cp) {
            let last = words.last_mut().expect("never empty");
            if !last.is_empty() {
                words.push(String::new());
            }
            words.last_mut().expect("never empty").push(out);
            words.push(String::new());
        } else {
            words.last_mut().expect("never empty").push(out);
        }
    }
    if words.last().is_some_and(|w| w.is_empty()) {
        words.pop();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: WpmOptions = WpmOptions { lowercase: true, strip_accents: true };

    #[test]
    fn splits_on_punctuation_and_white_space() {
        assert_eq!(preprocess("Hello, World!", ON), ["hello", ",", "world", "!"]);
        assert_eq!(preprocess("  a\t\nb  ", ON), ["a", "b"]);
        assert_eq!(preprocess("", ON), Vec::<String>::new());
        // ASCII symbols split, non-ASCII symbols do not; CJK ideographs are words of their own.
        assert_eq!(preprocess("a+b€c", ON), ["a", "+", "b€c"]);
        assert_eq!(preprocess("ab中文cd", ON), ["ab", "中", "文", "cd"]);
        // Controls and NUL vanish without ending the word.
        assert_eq!(preprocess("a\u{0}b\u{200D}c", ON), ["abc"]);
    }

    #[test]
    fn lower_cases_and_strips_accents_code_point_by_code_point() {
        assert_eq!(preprocess("Äpfel ÉCOLE", ON), ["apfel", "ecole"]);
        // A decomposed accent (a mark) is dropped too.
        assert_eq!(preprocess("e\u{301}t\u{E9}", ON), ["ete"]);
        // Hangul syllables become their leading jamo (the first code point of the NFD).
        assert_eq!(preprocess("한", ON), ["\u{1112}"]);
        assert_eq!(preprocess("İ", ON), ["i"]);
        let off = WpmOptions { lowercase: false, strip_accents: false };
        assert_eq!(preprocess("Äpfel, e\u{301}", off), ["Äpfel", ",", "e\u{301}"]);
        let lower_only = WpmOptions { lowercase: true, strip_accents: false };
        assert_eq!(preprocess("Ä", lower_only), ["ä"]);
    }

    #[test]
    fn case_and_nfd_tables() {
        assert_eq!(nfd_first('é'), 'e');
        assert_eq!(nfd_first('\u{1E9B}'), '\u{17F}'); // long s with dot above → long s
        assert_eq!(nfd_first('a'), 'a');
        assert_eq!(to_lower('Σ'), 'σ');
        assert_eq!(to_lower('\u{1E9E}'), 'ß');
        assert_eq!(to_lower('\u{1C89}'), '\u{1C89}'); // assigned in Unicode 16: unchanged
    }

    #[test]
    fn longest_match_pieces_and_unknown_words() {
        // ▁hello, ▁world, ▁, (and ▁!) as word starts; "lo" a continuation piece; [UNK] 0.
        let texts: Vec<&[u8]> = vec![
            b"[UNK]",
            "▁hello".as_bytes(),
            "▁,".as_bytes(),
            "▁world".as_bytes(),
            "▁!".as_bytes(),
            "▁hel".as_bytes(),
            b"lo",
            b"l",
            "▁x".as_bytes(),
        ];
        let vocab = Vocab::new(texts.into_iter());
        let wpm = Wpm::new(&vocab, ON, Some(0));
        let enc = |s: &str| {
            let mut out = Vec::new();
            wpm.encode(&vocab, s, &mut out);
            out
        };
        assert_eq!(enc("Hello, World!"), [1, 2, 3, 4]);
        // "hellolo": ▁hello + lo.
        assert_eq!(enc("hellolo"), [1, 6]);
        // "helll": ▁hel + l + l.
        assert_eq!(enc("HELLL"), [5, 7, 7]);
        // "xq": ▁x, then nothing for "q": the whole word is unknown.
        assert_eq!(enc("xq hello"), [0, 1]);
        // No unknown token: an unknown word gives nothing.
        let wpm = Wpm::new(&vocab, ON, None);
        let mut out = Vec::new();
        wpm.encode(&vocab, "zz hello", &mut out);
        assert_eq!(out, [1]);
    }
}
