//! Code point classes as llama.cpp's pre-tokenizers see them.
//!
//! llama.cpp reduces the Unicode general category of a code point to one of eight classes (its
//! `unicode_cpt_flags`) and keeps a separate white-space set. Its tables come from Unicode 15.1;
//! `unicode_data.rs` holds the same facts regenerated from the Unicode Character Database 15.1
//! (see `scripts/gen_unicode_data.py`), so that a code point assigned in a later Unicode version
//! is classified exactly as llama.cpp classifies it (as undefined).

/// The class of a code point (the general category, coarsened the way llama.cpp coarsens it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `Cn`: not assigned in Unicode 15.1.
    Undefined,
    /// `Nd`, `Nl`, `No` (`\p{N}`).
    Number,
    /// `Lu`, `Ll`, `Lt`, `Lm`, `Lo` (`\p{L}`).
    Letter,
    /// `Zs`, `Zl`, `Zp` (`\p{Z}`).
    Separator,
    /// `Mn`, `Mc`, `Me` (`\p{M}`).
    Mark,
    /// `Pc`, `Pd`, `Ps`, `Pe`, `Pi`, `Pf`, `Po` (`\p{P}`).
    Punctuation,
    /// `Sm`, `Sc`, `Sk`, `So` (`\p{S}`).
    Symbol,
    /// `Cc`, `Cf`, `Co`, `Cs` (`\p{C}` less `Cn`).
    Control,
}

/// The class of `c`.
pub(crate) fn class(c: char) -> Class {
    let cp = c as u32;
    let table = &crate::unicode_data::CLASS_RANGES;
    // The last range whose start is <= cp (the table starts at 0, so there always is one).
    let i = table.partition_point(|&(start, _)| start <= cp);
    table[i.saturating_sub(1)].1
}

/// Unicode `White_Space` (PropList.txt), the set llama.cpp treats as `\s`.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// What llama.cpp's custom splitters ask of a code point. `NONE` stands for a position outside
/// the text (all questions answer false, and `defined` is false too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags {
    pub letter: bool,
    pub number: bool,
    pub whitespace: bool,
    /// False only for positions outside the text (llama.cpp's all-zero flags).
    pub defined: bool,
}

impl Flags {
    pub(crate) const NONE: Flags = Flags { letter: false, number: false, whitespace: false, defined: false };

    pub(crate) fn of(c: char) -> Flags {
        if c.is_ascii() {
            return Flags {
                letter: c.is_ascii_alphabetic(),
                number: c.is_ascii_digit(),
                whitespace: matches!(c, '\t'..='\r' | ' '),
                defined: true,
            };
        }
        let cl = class(c);
        Flags { letter: cl == Class::Letter, number: cl == Class::Number, whitespace: is_whitespace(c), defined: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_known_code_points() {
        // Hand-checked against UnicodeData.txt.
        let cases = [
            ('a', Class::Letter),
            ('Z', Class::Letter),
            ('7', Class::Number),
            ('½', Class::Number),
            ('Ⅻ', Class::Number),
            (' ', Class::Separator),
            ('\u{3000}', Class::Separator),
            ('\n', Class::Control),
            ('\u{200D}', Class::Control), // ZWJ is Cf
            ('\u{E000}', Class::Control), // private use
            ('\u{0301}', Class::Mark),
            ('\u{FE0F}', Class::Mark),
            ('\u{0903}', Class::Mark), // Devanagari visarga, Mc
            ('!', Class::Punctuation),
            ('_', Class::Punctuation),
            ('$', Class::Symbol),
            ('😀', Class::Symbol),
            ('\u{1F3FD}', Class::Symbol), // skin tone modifier, Sk
            ('中', Class::Letter),
            ('\u{2EBF0}', Class::Letter),   // CJK extension I, new in 15.1
            ('\u{1C89}', Class::Undefined), // new in Unicode 16.0: undefined for llama.cpp
            ('\u{10FFFF}', Class::Undefined),
        ];
        for (c, want) in cases {
            assert_eq!(class(c), want, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn ascii_fast_path_agrees_with_the_table() {
        for c in (0..128u8).map(char::from) {
            let cl = class(c);
            let want = Flags {
                letter: cl == Class::Letter,
                number: cl == Class::Number,
                whitespace: is_whitespace(c),
                defined: true,
            };
            assert_eq!(Flags::of(c), want, "{c:?}");
        }
    }

    #[test]
    fn whitespace_is_unicode_white_space() {
        // Every char: the set equals Rust's char::is_whitespace (also Unicode White_Space).
        for cp in 0..=0x10FFFFu32 {
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(is_whitespace(c), c.is_whitespace(), "U+{cp:04X}");
            }
        }
    }
}
