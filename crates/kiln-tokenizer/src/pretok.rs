//! Pre-tokenization: splitting text into words before BPE, per `tokenizer.ggml.pre`.
//!
//! llama.cpp runs a list of regexes over the text, each one splitting the pieces the previous one
//! left (matches and the text between matches both become pieces). A few regexes it recognises by
//! their exact text and runs as hand-written code ("gpt2", "llama3", "qwen2", "qwen35" below, and
//! in b11434 Kimi K2's and the AFMoE / Tiny Aya digit groups, kept here as code too); the others go
//! through `std::regex` on a *collapsed* copy of the text in which every non-ASCII code point is
//! replaced by one byte standing for its class (letter, number, punctuation, mark, symbol, other)
//! and every non-ASCII white-space by `\v`; `\p{L}` and friends in the regex become classes of that
//! byte plus the ASCII members of the category. So `[^a-z]` matches every non-ASCII letter, and
//! `\p{Lu}` means any letter. This module reproduces that, with `fancy-regex` on a collapsed
//! string whose class stand-ins are private-use characters (neither `\s`, `\w` nor `\d`); the
//! o200k and tekken regexes (the gpt-oss path) it runs as hand-written code instead, checked in the
//! tests against the regex path on ~110 KB of text and thousands of random strings.
//!
//! [`SplitMode::Reference`] instead runs each pre-tokenizer's original regex (as in its
//! `tokenizer.json`) with real Unicode classes, which is what Hugging Face `tokenizers` and
//! tiktoken do. The two differ only for the pre-tokenizers whose llama.cpp regex is an adaptation
//! (`gpt-4o`, `tekken`): there, text with combining marks (`\p{M}`, e.g. U+FE0F after an emoji,
//! Devanagari vowel signs, decomposed accents) or a non-ASCII capital right after a lower-case
//! letter is split differently.

use crate::TokenizerError;
use crate::unicode::{Class, Flags, class, is_whitespace};
use fancy_regex::Regex;

/// Which semantics the pre-tokenizer regexes follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitMode {
    /// Exactly what llama.cpp (commit 0c1e570) does, including its collapsed-category regexes.
    /// Ids equal `llama_tokenize`'s.
    #[default]
    LlamaCpp,
    /// Each pre-tokenizer's original regex with full Unicode classes (Hugging Face `tokenizers`,
    /// tiktoken). Differs from [`SplitMode::LlamaCpp`] for `gpt-4o`-style and `tekken`
    /// pre-tokenizers, on the inputs described in the module docs. (For the names llama.cpp b11434
    /// added, this mode runs llama.cpp's regex list with real Unicode classes, which differs from
    /// llama.cpp where a regex names `\p{Lu}`, `\p{Ll}`, …: `youtu`, `tiny_aya`.)
    Reference,
}

/// One splitting pass.
enum Step {
    /// llama.cpp's hand-written GPT-2 splitter:
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// llama.cpp's hand-written Llama 3 splitter (`digits` = 3) or Qwen 2 splitter (`digits` = 1):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    /// with `marks`, its Qwen 3.5 splitter, where `[\p{L}\p{M}]` stands for `\p{L}` (and
    /// `[^\s\p{L}\p{M}\p{N}]` for `[^\s\p{L}\p{N}]`).
    Llama3 { digits: usize, marks: bool },
    /// llama.cpp's adaptation of the o200k regex (`contractions`, digits in runs of 3) or of
    /// tekken's (no contractions, single digits), run on the collapsed text: hand-written code
    /// that splits exactly as [`GPT4O_RE_LLAMACPP`] / [`TEKKEN_RE_LLAMACPP`] do on the collapsed
    /// text (the tests check it against those regexes), without the regex engine.
    O200k { contractions: bool, digits: usize },
    /// llama.cpp's hand-written Kimi K2 splitter (`unicode_regex_split_custom_kimi_k2`).
    KimiK2,
    /// llama.cpp's hand-written digit grouping of AFMoE and Tiny Aya
    /// (`unicode_regex_split_custom_afmoe`).
    DigitGroups,
    /// A regex run over the collapsed text (llama.cpp's `std::regex` path for regexes with `\p{..}`).
    Collapsed(Regex),
    /// A regex run over the text with non-ASCII white-space replaced by `\v` (llama.cpp's
    /// `std::wregex` path for regexes without `\p{..}`).
    Wide(Regex),
    /// A regex with real Unicode classes over the original text ([`SplitMode::Reference`]).
    Unicode(Regex),
}

/// The pre-tokenizer of one `tokenizer.ggml.pre` type.
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
}

// The regexes, as llama.cpp lists them per pre-tokenizer type (`llm_tokenizer_bpe`), written in
// `fancy-regex` syntax. `GPT2_RE`, `LLAMA3_RE` and `QWEN2_RE` are the three llama.cpp runs as code
// (the tests check that the code splits as they do).
#[cfg(test)]
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
#[cfg(test)]
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
#[cfg(test)]
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
#[cfg(test)]
const QWEN35_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's adaptation of the o200k regex (`std::regex` has no `(?i:` and no `\p{Lu}`).
#[cfg_attr(not(test), allow(dead_code))]
const GPT4O_RE_LLAMACPP: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The o200k split regex as tiktoken and the gpt-oss / GPT-4o `tokenizer.json` have it.
const GPT4O_RE_ORIGINAL: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
#[cfg_attr(not(test), allow(dead_code))]
const TEKKEN_RE_LLAMACPP: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_RE_ORIGINAL: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEFAULT_PUNCT_RE: &str = r"[\p{P}\$\+<=>\^~\|]+";
const FALCON_PUNCT_RE: &str = r"[\p{P}\$\+<=>\^~\|`]+";
/// DeepSeek LLM's letter runs: an optional white-space and a run of Latin, Greek, Cyrillic,
/// Armenian, Georgian, Cherokee, Glagolitic, Coptic, Deseret, … letters (a fixed list of ranges).
const DEEPSEEK_LLM_LETTERS_RE: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
/// ASCII punctuation and symbols, their full-width forms, quotation marks and CJK punctuation.
const DEEPSEEK_LLM_PUNCT_RE: &str = r"\s?[!-/:-~！-／：-～‘-‟　-。]+";
/// CJK ideographs (U+4E00..U+9FA5), U+0800..U+4E00, Hangul syllables and Jamo (U+AC00..U+D7FF).
const DEEPSEEK_CJK_RE: &str = "[一-龥ࠀ-一가-퟿]+";
/// DeepSeek V3 (and AFMoE, Spark 2.5 with changes): an ASCII punctuation mark glued to ASCII
/// letters, letter-and-mark runs with an optional leading non-letter, punctuation/symbol runs.
const DEEPSEEK_V3_WORDS_RE: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const SPARK25_WORDS_RE: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"##;
/// CJK ideographs (U+4E00..U+9FA5), Hiragana and Katakana.
const CJK_KANA_RE: &str = "[一-龥぀-ゟ゠-ヿ]+";
const YOUTU_CJK_RE: &str = "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+";
const YOUTU_RE: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TINY_AYA_RE: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's regex with white-space runs cut into blocks of 512, 256, …, 4, 1-2, 1.
const JAIS2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const MINICPM5_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's regex without the contractions.
const UFAKZEKA_RE: &str = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const NEWLINE_RUNS_RE: &str = r"[^\n]+|[\n]+";
const AFMOE_CJK_RE: &str = "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+";
const EXAONE_MOE_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
/// SuperBPE's digit triples from the right (`\d` is ASCII in `std::wregex`).
const SUPERBPE_DIGITS_RE: &str = r"(?=([0-9]{3})+(?![0-9]))";
const BAILINGMOE_RE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const SEED_CODER_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's o200k adaptation with combining marks counted in the letter lookaheads.
const GRANITE_EMB_MULTI_RE: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// BLOOM, GPT-3 Finnish, Poro, Viking: an optional space and a run of anything but white-space,
/// `(|)` and a few sentence marks.
const BLOOM_RE: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const CHAMELEON_SENTINEL_RE: &str = r"<sentinel:[0-9]+>";
const CHAMELEON_IMAGE_RE: &str = r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z";
const CHAMELEON_SPACES_RE: &str = r"([\t\n]|    |  )";
const CHAMELEON_PUNCT_RE: &str = r"[\p{P}!-/:-@\[-`{-~]";

/// The regex lists (llama.cpp's, and where it adapted one, the original).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreKind {
    /// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT`.
    Default,
    /// GPT-2 (`gpt-2`, `mpt`, `olmo`, …).
    Gpt2,
    /// Llama 3 (`llama-bpe`, `llama3`, …; also `dbrx`, `smaug-bpe` which use the same regex).
    Llama3,
    /// Qwen 2 (`qwen2`, `stablelm2`, …).
    Qwen2,
    /// Digits split one by one, then GPT-2 (`smollm`, `starcoder`, `refact`, …).
    StarCoder,
    /// o200k (`gpt-4o`, `llama4`, …).
    Gpt4o,
    /// Mistral's tekken.
    Tekken,
    /// Qwen 3.5: Qwen 2 with combining marks (`\p{M}`) counted as letters.
    Qwen35,
    /// Falcon: punctuation runs (with `` ` ``), then GPT-2, then digit triples.
    Falcon,
    /// DeepSeek LLM: newlines, Latin-and-friends letter runs, ASCII/full-width punctuation runs,
    /// trailing spaces, CJK runs, number runs.
    DeepseekLlm,
    /// DeepSeek Coder: newlines, letter runs, punctuation runs, CJK runs, single digits.
    DeepseekCoder,
    /// DeepSeek V3 (`deepseek-v3`, `hunyuan-dense`, `joyai-llm`, `hy_v4`): digit triples, CJK and
    /// kana runs, then [`DEEPSEEK_V3_WORDS_RE`].
    DeepseekV3,
    /// Spark 2.5: DeepSeek V3 with newlines alone, then single digits.
    Spark25,
    /// Youtu: Hangul, CJK punctuation, Bopomofo, CJK and kana runs, then tekken-like words with
    /// contractions and single digits.
    Youtu,
    /// Jais 2: Llama 3 with white-space runs cut into power-of-two blocks.
    Jais2,
    /// MiniCPM 5: digit triples, then Llama 3 with `\p{N}+`.
    Minicpm5,
    /// Ufakzeka: Qwen 2 without contractions.
    Ufakzeka,
    /// Laguna: newline runs apart, then Qwen 2.
    Laguna,
    /// AFMoE: digit groups, CJK and South-East Asian script runs, then DeepSeek V3's words.
    Afmoe,
    /// Tiny Aya (`tiny_aya`, `cohere2moe`): digit groups, then o200k-like words.
    TinyAya,
    /// EXAONE MoE: letter runs may hold single spaces.
    ExaoneMoe,
    /// Kimi K2: llama.cpp's hand-written splitter.
    KimiK2,
    /// SuperBPE: number runs, then digit triples from the right.
    Superbpe,
    /// Ling (`bailingmoe`, `bailingmoe2`, `llada-moe`).
    BailingMoe,
    /// Seed-Coder.
    SeedCoder,
    /// Granite Embedding multilingual 97M: o200k with marks in the letter lookaheads.
    GraniteEmbMulti,
    /// BLOOM, GPT-3 Finnish, Poro.
    Bloom,
    /// Viking: BLOOM, then single digits.
    Viking,
    /// Chameleon: sentinel and image tokens, tabs/newlines/space pairs, digits, punctuation, GPT-2.
    Chameleon,
}

/// Per-`tokenizer.ggml.pre` settings llama.cpp applies (`llama_vocab::impl::load`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreInfo {
    pub kind: PreKind,
    /// The whole word is looked up in the vocabulary before running merges.
    pub ignore_merges: bool,
    /// `clean_up_tokenization_spaces` on detokenize.
    pub clean_spaces: bool,
    /// Default of `add_bos_token` when the file does not say.
    pub add_bos: bool,
    /// No BOS token unless the file names one (llama.cpp clears its default, 11, for ChatGLM).
    pub no_bos: bool,
}

/// The `tokenizer.ggml.pre` names this crate supports, with llama.cpp's settings for each.
pub(crate) fn pre_info(name: &str) -> Option<PreInfo> {
    use PreKind::*;
    let p = |kind, ignore_merges, clean_spaces, add_bos| {
        Some(PreInfo { kind, ignore_merges, clean_spaces, add_bos, no_bos: false })
    };
    let glm =
        |ignore_merges| Some(PreInfo { kind: Llama3, ignore_merges, clean_spaces: true, add_bos: false, no_bos: true });
    match name {
        "default" => p(Default, false, true, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" => p(Llama3, true, true, true),
        "dbrx" | "smaug-bpe" => p(Llama3, false, true, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum"
        | "mpt" | "olmo" | "jais" | "exaone4" | "modern-bert" => p(Gpt2, false, true, false),
        "trillion" | "granite-docling" => p(Gpt2, false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" | "grok-2" => {
            p(Qwen2, false, false, false)
        }
        "qwen35" => p(Qwen35, false, false, false),
        "falcon" => p(Falcon, false, true, false),
        "deepseek-llm" => p(DeepseekLlm, false, false, false),
        "deepseek-coder" => p(DeepseekCoder, false, false, false),
        "stablelm2" | "megrez" => p(Qwen2, false, true, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => p(StarCoder, false, true, false),
        "smollm" | "command-r" => p(StarCoder, false, false, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => p(Gpt4o, false, false, false),
        "tekken" => p(Tekken, true, false, true),
        // llama.cpp b11434
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => p(DeepseekV3, false, false, false),
        "spark2_5" => p(Spark25, false, false, false),
        "youtu" => p(Youtu, true, false, false),
        "jais-2" => p(Jais2, false, true, false),
        "minicpm5" => p(Minicpm5, true, true, false),
        "ufakzeka" => p(Ufakzeka, false, false, false),
        "laguna" => p(Laguna, false, false, false),
        "afmoe" => p(Afmoe, false, false, false),
        "tiny_aya" | "cohere2moe" => p(TinyAya, false, false, false),
        "exaone-moe" => p(ExaoneMoe, false, true, false),
        "kimi-k2" => p(KimiK2, false, false, false),
        "superbpe" => p(Superbpe, false, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => p(BailingMoe, false, false, false),
        "seed-coder" => p(SeedCoder, false, false, false),
        "granite-embed-multi-97m" => p(GraniteEmbMulti, true, false, false),
        "bloom" | "gpt3-finnish" => p(Bloom, false, true, false),
        "poro-chat" => p(Bloom, false, false, false),
        "viking" => p(Viking, false, false, false),
        "chameleon" => p(Chameleon, false, false, true),
        "chatglm-bpe" => glm(false),
        "glm4" | "glm5" => glm(true),
        // `add_sep` in llama.cpp, which its tokenizer does not use (only embedding front-ends read it)
        "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => p(Gpt2, false, true, false),
        _ => None,
    }
}

/// All names [`pre_info`] accepts, then the SentencePiece-style ones `tokenizer.rs` runs with
/// `gemma4.rs` (for error messages and docs).
pub(crate) const SUPPORTED_PRE: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "mpt",
    "olmo",
    "jais",
    "exaone4",
    "modern-bert",
    "trillion",
    "granite-docling",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
    "falcon",
    "deepseek-llm",
    "deepseek-coder",
    "stablelm2",
    "megrez",
    "starcoder",
    "refact",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "smollm",
    "command-r",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
    "tekken",
    "deepseek-v3",
    "hunyuan-dense",
    "joyai-llm",
    "hy_v4",
    "spark2_5",
    "youtu",
    "jais-2",
    "minicpm5",
    "ufakzeka",
    "laguna",
    "afmoe",
    "tiny_aya",
    "cohere2moe",
    "exaone-moe",
    "kimi-k2",
    "superbpe",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "granite-embed-multi-97m",
    "bloom",
    "gpt3-finnish",
    "poro-chat",
    "viking",
    "chameleon",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "mmbert",
    "whitespace",
];

impl PreTokenizer {
    pub(crate) fn new(kind: PreKind, mode: SplitMode) -> Result<PreTokenizer, TokenizerError> {
        let reference = mode == SplitMode::Reference;
        let regex = |re: &str| -> Result<Step, TokenizerError> {
            if reference {
                Ok(Step::Unicode(compile(re)?))
            } else if re.contains(r"\p{") {
                Ok(Step::Collapsed(compile(&collapse_regex(re))?))
            } else {
                Ok(Step::Wide(compile(re)?))
            }
        };
        let steps = match kind {
            PreKind::Default => {
                vec![regex(DEFAULT_PUNCT_RE)?, Step::Gpt2, regex(r"\p{N}+")?, regex(r"[0-9][0-9][0-9]")?]
            }
            PreKind::Gpt2 => vec![Step::Gpt2],
            PreKind::Llama3 => vec![Step::Llama3 { digits: 3, marks: false }],
            PreKind::Qwen2 => vec![Step::Llama3 { digits: 1, marks: false }],
            PreKind::Qwen35 => vec![Step::Llama3 { digits: 1, marks: true }],
            PreKind::Falcon => vec![regex(FALCON_PUNCT_RE)?, Step::Gpt2, regex(r"[0-9][0-9][0-9]")?],
            PreKind::DeepseekLlm => vec![
                regex("[\r\n]")?,
                regex(DEEPSEEK_LLM_LETTERS_RE)?,
                regex(DEEPSEEK_LLM_PUNCT_RE)?,
                regex(r"\s+$")?,
                regex(DEEPSEEK_CJK_RE)?,
                regex(r"\p{N}+")?,
            ],
            PreKind::DeepseekCoder => vec![
                regex("[\r\n]")?,
                regex(r"\s?\p{L}+")?,
                regex(r"\s?\p{P}+")?,
                regex(DEEPSEEK_CJK_RE)?,
                regex(r"\p{N}")?,
            ],
            PreKind::StarCoder => vec![regex(r"\p{N}")?, Step::Gpt2],
            PreKind::Gpt4o if reference => vec![regex(GPT4O_RE_ORIGINAL)?],
            PreKind::Gpt4o => vec![Step::O200k { contractions: true, digits: 3 }],
            PreKind::Tekken if reference => vec![regex(TEKKEN_RE_ORIGINAL)?],
            PreKind::Tekken => vec![Step::O200k { contractions: false, digits: 1 }],
            PreKind::DeepseekV3 => vec![regex(r"\p{N}{1,3}")?, regex(CJK_KANA_RE)?, regex(DEEPSEEK_V3_WORDS_RE)?],
            PreKind::Spark25 => {
                vec![regex(r"\p{N}{1,3}")?, regex(CJK_KANA_RE)?, regex(SPARK25_WORDS_RE)?, regex(r"\p{N}")?]
            }
            PreKind::Youtu => vec![regex(YOUTU_CJK_RE)?, regex(YOUTU_RE)?],
            PreKind::Jais2 => vec![regex(JAIS2_RE)?],
            PreKind::Minicpm5 => vec![regex(r"\p{N}{1,3}")?, regex(MINICPM5_RE)?],
            PreKind::Ufakzeka => vec![regex(UFAKZEKA_RE)?],
            PreKind::Laguna => vec![regex(NEWLINE_RUNS_RE)?, Step::Llama3 { digits: 1, marks: false }],
            PreKind::Afmoe => vec![Step::DigitGroups, regex(AFMOE_CJK_RE)?, regex(DEEPSEEK_V3_WORDS_RE)?],
            PreKind::TinyAya => vec![Step::DigitGroups, regex(TINY_AYA_RE)?],
            PreKind::ExaoneMoe => vec![regex(EXAONE_MOE_RE)?],
            PreKind::KimiK2 => vec![Step::KimiK2],
            PreKind::Superbpe => vec![regex(r"\p{N}+")?, regex(SUPERBPE_DIGITS_RE)?],
            PreKind::BailingMoe => vec![regex(BAILINGMOE_RE)?],
            PreKind::SeedCoder => vec![regex(SEED_CODER_RE)?],
            PreKind::GraniteEmbMulti => vec![regex(GRANITE_EMB_MULTI_RE)?],
            PreKind::Bloom => vec![regex(BLOOM_RE)?],
            PreKind::Viking => vec![regex(BLOOM_RE)?, regex(r"\p{N}")?],
            PreKind::Chameleon => vec![
                regex(CHAMELEON_SENTINEL_RE)?,
                regex(CHAMELEON_IMAGE_RE)?,
                regex(CHAMELEON_SPACES_RE)?,
                regex(r"\p{N}")?,
                regex(CHAMELEON_PUNCT_RE)?,
                Step::Gpt2,
            ],
        };
        Ok(PreTokenizer { steps })
    }

    /// Splits `text` into words (byte ranges of `text`, in order, covering it).
    pub(crate) fn split(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>, TokenizerError> {
        let cps: Vec<char> = text.chars().collect();
        // Piece lengths in code points.
        let mut pieces = vec![cps.len()];
        let mut collapsed: Option<Recoded> = None;
        let mut wide: Option<Recoded> = None;
        let mut plain: Option<Recoded> = None;
        for step in &self.steps {
            let mut out = Vec::with_capacity(pieces.len() * 2);
            let mut start = 0;
            for &len in &pieces {
                let seg = start..start + len;
                match step {
                    Step::Gpt2 => split_gpt2(&cps, seg, &mut out),
                    Step::Llama3 { digits, marks } => split_llama3(&cps, seg, *digits, *marks, &mut out),
                    Step::O200k { contractions, digits } => split_o200k(&cps, seg, *contractions, *digits, &mut out),
                    Step::KimiK2 => split_kimi_k2(&cps, seg, &mut out),
                    Step::DigitGroups => split_digit_groups(&cps, seg, &mut out),
                    Step::Collapsed(re) => {
                        let rc = collapsed.get_or_insert_with(|| Recoded::new(&cps, collapse_char));
                        split_regex(re, rc, seg, &mut out)?
                    }
                    Step::Wide(re) => {
                        let rc = wide.get_or_insert_with(|| Recoded::new(&cps, widen_char));
                        split_regex(re, rc, seg, &mut out)?
                    }
                    Step::Unicode(re) => {
                        let rc = plain.get_or_insert_with(|| Recoded::new(&cps, |c| c));
                        split_regex(re, rc, seg, &mut out)?
                    }
                }
                start += len;
            }
            pieces = out;
        }
        // Code point lengths to byte ranges.
        let mut ranges = Vec::with_capacity(pieces.len());
        let mut byte = 0;
        let mut cp = 0;
        for len in pieces {
            let begin = byte;
            for c in &cps[cp..cp + len] {
                byte += c.len_utf8();
            }
            cp += len;
            if byte > begin {
                ranges.push(begin..byte);
            }
        }
        Ok(ranges)
    }
}

fn compile(re: &str) -> Result<Regex, TokenizerError> {
    fancy_regex::RegexBuilder::new(re)
        .backtrack_limit(100_000_000)
        .build()
        .map_err(|e| TokenizerError::Internal(format!("pre-tokenizer regex {re:?}: {e}")))
}

/// The text recoded one char per code point (the `Wide` and `Collapsed` views), with the byte
/// offset of every code point in it.
struct Recoded {
    text: String,
    /// `offsets[i]` = byte offset of code point `i`; one extra entry for the end.
    offsets: Vec<usize>,
}

impl Recoded {
    fn new(cps: &[char], f: impl Fn(char) -> char) -> Recoded {
        let mut text = String::with_capacity(cps.len());
        let mut offsets = Vec::with_capacity(cps.len() + 1);
        for &c in cps {
            offsets.push(text.len());
            text.push(f(c));
        }
        offsets.push(text.len());
        Recoded { text, offsets }
    }
}

// Stand-ins for non-ASCII code points in the collapsed text (llama.cpp uses the bytes 0xD0..0xD5).
const CAT_OTHER: char = '\u{E0D0}';
const CAT_NUMBER: char = '\u{E0D1}';
const CAT_LETTER: char = '\u{E0D2}';
const CAT_PUNCT: char = '\u{E0D3}';
const CAT_MARK: char = '\u{E0D4}';
const CAT_SYMBOL: char = '\u{E0D5}';

fn collapse_char(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    if is_whitespace(c) {
        return '\u{0B}';
    }
    match class(c) {
        Class::Number => CAT_NUMBER,
        Class::Letter => CAT_LETTER,
        Class::Punctuation => CAT_PUNCT,
        Class::Mark => CAT_MARK,
        Class::Symbol => CAT_SYMBOL,
        Class::Undefined | Class::Separator | Class::Control => CAT_OTHER,
    }
}

fn widen_char(c: char) -> char {
    if !c.is_ascii() && is_whitespace(c) { '\u{0B}' } else { c }
}

/// Rewrites `\p{X}` into a class of the collapsed stand-in plus the ASCII members of category X,
/// as llama.cpp does (`unicode_regex_split`). Every letter category (`Lu`, `Ll`, …) becomes "any
/// letter".
fn collapse_regex(re: &str) -> String {
    fn members(cat: &str) -> Option<String> {
        let (stand_in, ascii) = match cat {
            "N" => (CAT_NUMBER, "0-9"),
            "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => (CAT_LETTER, "A-Za-z"),
            // ASCII punctuation: !"#%&'()*,-./:;?@[\]_{}
            "P" => (CAT_PUNCT, r"\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\x5B-\x5D\x5F\x7B\x7D"),
            "M" => (CAT_MARK, ""),
            // ASCII symbols: $+<=>^`|~
            "S" => (CAT_SYMBOL, r"\x24\x2B\x3C-\x3E\x5E\x60\x7C\x7E"),
            _ => return None,
        };
        Some(format!(r"\x{{{:X}}}{ascii}", stand_in as u32))
    }
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < re.len() {
        let c = b[i];
        let escaped = i > 0 && b[i - 1] == b'\\';
        if c == b'[' && !escaped {
            inside = true;
        } else if c == b']' && inside && !escaped {
            inside = false;
        } else if re[i..].starts_with(r"\p{")
            && let Some(close) = re[i..].find('}')
            && let Some(m) = members(&re[i + 3..i + close])
        {
            if !inside {
                out.push('[');
            }
            out.push_str(&m);
            if !inside {
                out.push(']');
            }
            i += close + 1;
            continue;
        }
        // Copy one UTF-8 character.
        let ch = re[i..].chars().next().expect("i is at a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn split_regex(
    re: &Regex,
    rc: &Recoded,
    seg: std::ops::Range<usize>,
    out: &mut Vec<usize>,
) -> Result<(), TokenizerError> {
    let base = rc.offsets[seg.start];
    let hay = &rc.text[base..rc.offsets[seg.end]];
    // Converts a byte offset in `hay` to a code point index, scanning forward from `cursor`.
    let mut cursor = seg.start;
    let mut to_cp = |byte: usize| -> usize {
        while rc.offsets[cursor] < base + byte {
            cursor += 1;
        }
        cursor
    };
    let mut prev = seg.start;
    for m in re.find_iter(hay) {
        let m = m.map_err(|e| TokenizerError::Internal(format!("pre-tokenizer regex: {e}")))?;
        let (s, e) = (to_cp(m.start()), to_cp(m.end()));
        if s > prev {
            out.push(s - prev);
        }
        out.push(e - s);
        prev = e;
    }
    if seg.end > prev {
        out.push(seg.end - prev);
    }
    Ok(())
}

/// llama.cpp's o200k / tekken split as its collapsed-text regex computes it:
///
/// ```text
/// P? UP* LO+ C? | P? UP+ LO* C? | N{1,D} | ' '? O+ [\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+
/// ```
///
/// where on the collapsed text UP = `(?=\p{L})[^a-z]` is an ASCII capital or *any* non-ASCII
/// letter, LO = `(?=\p{L})[^A-Z]` an ASCII small letter or any non-ASCII letter, P =
/// `[^\r\n\p{L}\p{N}]`, O = `[^\s\p{L}\p{N}]`, C an ASCII-case-insensitive contraction (o200k
/// only). With backtracking, `P? UP* LO+` takes the longest UP run and, if the character after it
/// is not LO, gives back UP characters until one that is also LO (a non-ASCII letter) starts LO+.
fn split_o200k(cps: &[char], seg: std::ops::Range<usize>, contractions: bool, digits: usize, out: &mut Vec<usize>) {
    let end = seg.end;
    let letter = |i: usize| i < end && Flags::of(cps[i]).letter;
    let up = |i: usize| letter(i) && !cps[i].is_ascii_lowercase();
    let lo = |i: usize| letter(i) && !cps[i].is_ascii_uppercase();
    let number = |i: usize| i < end && Flags::of(cps[i]).number;
    let space = |i: usize| i < end && is_whitespace(cps[i]);
    let other = |i: usize| i < end && !space(i) && !letter(i) && !number(i);
    let run = |mut i: usize, f: &dyn Fn(usize) -> bool| {
        while f(i) {
            i += 1;
        }
        i
    };
    // The length of a contraction at `i` (0 if none).
    let contraction = |i: usize| -> usize {
        if !contractions || i >= end || cps[i] != '\'' {
            return 0;
        }
        let lower = |j: usize| {
            if j < end { cps[j].to_ascii_lowercase() } else { '\0' }
        };
        match (lower(i + 1), lower(i + 2)) {
            ('s' | 't' | 'm' | 'd', _) => 2,
            ('r' | 'v', 'e') | ('l', 'l') => 3,
            _ => 0,
        }
    };
    let mut pos = seg.start;
    while pos < end {
        let c = cps[pos];
        // P? : the only start of a letter alternative is after a P character, or at a letter.
        let q = if c != '\r' && c != '\n' && !letter(pos) && !number(pos) { pos + 1 } else { pos };
        // P? UP* LO+ C?
        let up_end = run(q, &up);
        let lo_start = if lo(up_end) {
            Some(up_end)
        } else {
            (q..up_end).rev().find(|&j| !cps[j].is_ascii()) // a non-ASCII letter is also LO
        };
        let next = if let Some(s) = lo_start {
            let e = run(s, &lo);
            e + contraction(e)
        } else if up_end > q {
            // P? UP+ LO* C?
            let e = run(up_end, &lo);
            e + contraction(e)
        } else if number(pos) {
            // N{1,digits}
            let mut e = pos;
            while e < pos + digits && number(e) {
                e += 1;
            }
            e
        } else if other(pos) || (c == ' ' && other(pos + 1)) {
            // ' '? O+ [\r\n/]*
            let e = run(pos + usize::from(c == ' '), &other);
            run(e, &|i| i < end && matches!(cps[i], '\r' | '\n' | '/'))
        } else {
            // White-space (every other character is white-space here).
            let ws_end = run(pos, &space);
            if let Some(nl) = (pos..ws_end).rev().find(|&i| matches!(cps[i], '\r' | '\n')) {
                nl + 1 // \s*[\r\n]+
            } else if ws_end - pos > 1 && ws_end < end {
                ws_end - 1 // \s+(?!\S)
            } else {
                ws_end.max(pos + 1) // \s+
            }
        };
        out.push(next - pos);
        pos = next;
    }
}

/// Flags of the code point at `pos`, or [`Flags::NONE`] outside `seg`.
#[inline]
fn flags_at(cps: &[char], seg: &std::ops::Range<usize>, pos: usize) -> Flags {
    if seg.contains(&pos) { Flags::of(cps[pos]) } else { Flags::NONE }
}

#[inline]
fn cp_at(cps: &[char], seg: &std::ops::Range<usize>, pos: usize) -> Option<char> {
    if seg.contains(&pos) { Some(cps[pos]) } else { None }
}

/// GPT-2's split, as llama.cpp's `unicode_regex_split_custom_gpt2` computes it.
fn split_gpt2(cps: &[char], seg: std::ops::Range<usize>, out: &mut Vec<usize>) {
    let end = seg.end;
    let mut pos = seg.start;
    let mut emit = |from: &mut usize, to: usize| {
        if to > *from {
            out.push(to - *from);
        }
        *from = to;
    };
    let mut last = seg.start;
    while pos < end {
        let c = cps[pos];
        let f = Flags::of(c);
        // 's 't 're 've 'm 'll 'd (case-sensitive)
        if c == '\'' && pos + 1 < end {
            let n = cps[pos + 1];
            if matches!(n, 's' | 't' | 'm' | 'd') {
                pos += 2;
                emit(&mut last, pos);
                continue;
            }
            if pos + 2 < end {
                let nn = cps[pos + 2];
                if matches!((n, nn), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += 3;
                    emit(&mut last, pos);
                    continue;
                }
            }
        }
        let mut f2 = if c == ' ' { flags_at(cps, &seg, pos + 1) } else { f };
        // <space>?\p{L}+
        if f2.letter {
            pos += usize::from(c == ' ');
            while f2.letter {
                pos += 1;
                f2 = flags_at(cps, &seg, pos);
            }
            emit(&mut last, pos);
            continue;
        }
        // <space>?\p{N}+
        if f2.number {
            pos += usize::from(c == ' ');
            while f2.number {
                pos += 1;
                f2 = flags_at(cps, &seg, pos);
            }
            emit(&mut last, pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        let other = |f: Flags| !(f.whitespace || f.letter || f.number) && f.defined;
        if other(f2) {
            pos += usize::from(c == ' ');
            while other(f2) {
                pos += 1;
                f2 = flags_at(cps, &seg, pos);
            }
            emit(&mut last, pos);
            continue;
        }
        let mut n_ws = 0;
        while flags_at(cps, &seg, pos + n_ws).whitespace {
            n_ws += 1;
        }
        // \s+(?!\S)
        if n_ws > 1 && cp_at(cps, &seg, pos + n_ws).is_some() {
            pos += n_ws - 1;
            emit(&mut last, pos);
            continue;
        }
        // \s+
        if n_ws > 0 {
            pos += n_ws;
            emit(&mut last, pos);
            continue;
        }
        // no match: one code point alone
        pos += 1;
        emit(&mut last, pos);
    }
}

/// Llama 3's (`digits` = 3) or Qwen 2's (`digits` = 1) split, as llama.cpp's
/// `unicode_regex_split_custom_llama3` / `_qwen2` compute it; with `marks`, Qwen 3.5's
/// (`unicode_regex_split_custom_qwen35`: combining marks join letter runs and leave punctuation).
fn split_llama3(cps: &[char], seg: std::ops::Range<usize>, digits: usize, marks: bool, out: &mut Vec<usize>) {
    let end = seg.end;
    let mut pos = seg.start;
    let mut last = seg.start;
    let mut emit = |from: &mut usize, to: usize| {
        if to > *from {
            out.push(to - *from);
        }
        *from = to;
    };
    let lower = |c: char| c.to_ascii_lowercase();
    let mark = |p: usize| marks && seg.contains(&p) && !cps[p].is_ascii() && class(cps[p]) == Class::Mark;
    // `\p{L}` (with `marks`: `[\p{L}\p{M}]`).
    let word = |p: usize| flags_at(cps, &seg, p).letter || mark(p);
    // `[^\s\p{L}\p{N}]` (with `marks`: `[^\s\p{L}\p{M}\p{N}]`), not checking that `p` is inside.
    let other = |p: usize| {
        let f = flags_at(cps, &seg, p);
        !(f.whitespace || f.letter || f.number || mark(p))
    };
    while pos < end {
        let c = cps[pos];
        let f = Flags::of(c);
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == '\'' && pos + 1 < end {
            let n = lower(cps[pos + 1]);
            if matches!(n, 's' | 't' | 'm' | 'd') {
                pos += 2;
                emit(&mut last, pos);
                continue;
            }
            if pos + 2 < end {
                let nn = lower(cps[pos + 2]);
                if matches!((n, nn), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += 3;
                    emit(&mut last, pos);
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == '\r' || c == '\n' || f.number) && (word(pos) || word(pos + 1)) {
            pos += 1;
            while word(pos) {
                pos += 1;
            }
            emit(&mut last, pos);
            continue;
        }
        // \p{N}{1,digits}
        if f.number {
            let mut run_start = pos;
            while flags_at(cps, &seg, pos).number {
                pos += 1;
                if pos - run_start >= digits {
                    emit(&mut last, pos);
                    run_start = pos;
                }
            }
            emit(&mut last, pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        if other(if c == ' ' { pos + 1 } else { pos }) && f.defined {
            pos += usize::from(c == ' ');
            while other(pos) && flags_at(cps, &seg, pos).defined {
                pos += 1;
            }
            while matches!(cp_at(cps, &seg, pos), Some('\r' | '\n')) {
                pos += 1;
            }
            emit(&mut last, pos);
            continue;
        }
        pos = whitespace_end(cps, &seg, pos);
        emit(&mut last, pos);
    }
}

/// Where the white-space alternatives that end the Llama 3 family's split (and Kimi K2's) stop
/// when they start at `pos`: `\s*[\r\n]+` (up to the last newline of the run), `\s+(?!\S)` (all
/// but the run's last code point when more text follows), `\s+`; and `pos + 1` when `pos` is not
/// white-space (no alternative matched: one code point alone).
fn whitespace_end(cps: &[char], seg: &std::ops::Range<usize>, pos: usize) -> usize {
    let mut n_ws = 0;
    let mut last_newline_end = None;
    while flags_at(cps, seg, pos + n_ws).whitespace {
        if matches!(cps[pos + n_ws], '\r' | '\n') {
            last_newline_end = Some(pos + n_ws + 1);
        }
        n_ws += 1;
    }
    match last_newline_end {
        Some(e) => e,
        None if n_ws > 1 && cp_at(cps, seg, pos + n_ws).is_some() => pos + n_ws - 1,
        None if n_ws > 0 => pos + n_ws,
        None => pos + 1,
    }
}

/// The Han ranges of llama.cpp's `unicode_cpt_is_han`.
fn is_han(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0x2CEB0..=0x2EBEF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Kimi K2's split, as llama.cpp's `unicode_regex_split_custom_kimi_k2` computes it: Han runs;
/// an optional leading non-letter, non-digit (not CR/LF) with a run of non-Han letters and an
/// ASCII-case-insensitive contraction; digit triples; ` ?[^\s\p{L}\p{N}]+[\r\n]*`;
/// `\s*[\r\n]+`; `\s+(?!\S)`; `\s+`. (Unlike Kimi's regex, combining marks are not letters here.)
fn split_kimi_k2(cps: &[char], seg: std::ops::Range<usize>, out: &mut Vec<usize>) {
    let end = seg.end;
    let mut pos = seg.start;
    let mut last = seg.start;
    let mut emit = |from: &mut usize, to: usize| {
        if to > *from {
            out.push(to - *from);
        }
        *from = to;
    };
    let han = |p: usize| cp_at(cps, &seg, p).is_some_and(is_han);
    let word = |p: usize| flags_at(cps, &seg, p).letter && !han(p);
    let other = |f: Flags| !(f.whitespace || f.letter || f.number) && f.defined;
    while pos < end {
        let c = cps[pos];
        let f = Flags::of(c);
        if is_han(c) {
            while han(pos) {
                pos += 1;
            }
            emit(&mut last, pos);
            continue;
        }
        let lead = !(c == '\r' || c == '\n' || f.letter || f.number);
        if word(pos) || (lead && word(pos + 1)) {
            pos += usize::from(lead);
            while word(pos) {
                pos += 1;
            }
            if cp_at(cps, &seg, pos) == Some('\'') && pos + 1 < end {
                let n = cps[pos + 1].to_ascii_lowercase();
                if matches!(n, 's' | 't' | 'm' | 'd') {
                    pos += 2;
                } else if pos + 2 < end
                    && matches!((n, cps[pos + 2].to_ascii_lowercase()), ('r', 'e') | ('v', 'e') | ('l', 'l'))
                {
                    pos += 3;
                }
            }
            emit(&mut last, pos);
            continue;
        }
        // \p{N}{1,3}
        if f.number {
            let mut ini = pos;
            while flags_at(cps, &seg, pos).number {
                pos += 1;
                if pos - ini >= 3 {
                    emit(&mut last, pos);
                    ini = pos;
                }
            }
            emit(&mut last, pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let mut f2 = if c == ' ' { flags_at(cps, &seg, pos + 1) } else { f };
        if other(f2) {
            pos += usize::from(c == ' ');
            while other(f2) {
                pos += 1;
                f2 = flags_at(cps, &seg, pos);
            }
            while matches!(cp_at(cps, &seg, pos), Some('\r' | '\n')) {
                pos += 1;
            }
            emit(&mut last, pos);
            continue;
        }
        pos = whitespace_end(cps, &seg, pos);
        emit(&mut last, pos);
    }
}

/// AFMoE's and Tiny Aya's digit grouping, as llama.cpp's `unicode_regex_split_custom_afmoe`
/// computes it: each run of `\p{N}` is cut into a leading group of (length mod 3) digits and then
/// triples. Text before a run is not cut off: it joins the run's first group (so "ab1234" gives
/// "ab1", "234"), and text after the last run is one piece.
fn split_digit_groups(cps: &[char], seg: std::ops::Range<usize>, out: &mut Vec<usize>) {
    let end = seg.end;
    let mut pos = seg.start;
    let mut last = seg.start;
    let mut emit = |from: &mut usize, to: usize| {
        if to > *from {
            out.push(to - *from);
        }
        *from = to;
    };
    while pos < end {
        if !Flags::of(cps[pos]).number {
            pos += 1;
            continue;
        }
        let start = pos;
        while pos < end && Flags::of(cps[pos]).number {
            pos += 1;
        }
        let mut cur = start + (pos - start) % 3;
        if cur > start {
            emit(&mut last, cur);
        }
        while cur < pos {
            cur += 3;
            emit(&mut last, cur);
        }
    }
    emit(&mut last, end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, mode: SplitMode, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(kind, mode).unwrap();
        p.split(text).unwrap().into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn kimi_k2_and_digit_groups_hand_checked() {
        let w = |kind, text| words(kind, SplitMode::LlamaCpp, text);
        assert_eq!(
            w(PreKind::KimiK2, "Hello世界 it's 12345\n\n"),
            ["Hello", "世界", " it's", " ", "123", "45", "\n\n"]
        );
        // Text before a digit run joins its first group (llama.cpp's AFMoE digit code).
        assert_eq!(split_groups("ab1234cd5"), ["ab1", "234", "cd5"]);
        assert_eq!(split_groups("x123456 y"), ["x123", "456", " y"]);
    }

    fn split_groups(text: &str) -> Vec<String> {
        let cps: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        split_digit_groups(&cps, 0..cps.len(), &mut out);
        let mut at = 0;
        out.iter()
            .map(|&n| {
                at += n;
                cps[at - n..at].iter().collect()
            })
            .collect()
    }

    #[test]
    fn collapsed_regex_rewrite() {
        assert_eq!(collapse_regex(r"\p{N}"), r"[\x{E0D1}0-9]");
        assert_eq!(collapse_regex(r"[^\s\p{L}]"), r"[^\s\x{E0D2}A-Za-z]");
        assert_eq!(collapse_regex(r"\[\p{Lu}\]"), r"\[[\x{E0D2}A-Za-z]\]");
    }

    #[test]
    fn gpt2_split_hand_checked() {
        let w = words(PreKind::Gpt2, SplitMode::LlamaCpp, "Hello world's  end\n\n 12 x!!");
        assert_eq!(w, ["Hello", " world", "'s", " ", " end", "\n\n", " 12", " x", "!!"]);
    }

    #[test]
    fn llama3_split_hand_checked() {
        let w = words(PreKind::Llama3, SplitMode::LlamaCpp, "I'M 1234567 ok.\r\n  yes");
        assert_eq!(w, ["I", "'M", " ", "123", "456", "7", " ok", ".\r\n", " ", " yes"]);
    }

    #[test]
    fn custom_splitters_agree_with_their_regexes() {
        // On text without rare code points, the hand-written splitters must split exactly as the
        // regexes they stand for (run with real Unicode classes).
        let text = "Hello, World! It's 2024... I'VE   seen 1234567 things\t\n\n  ok?\r\n€5 ümlaut \
                    中文字 ۱۲۳ 'll 're x'd  \n end  cafe\u{301}s \u{301}\u{301}! नमस्ते .\u{300}, 👍\u{FE0F}";
        for (kind, re) in [
            (PreKind::Gpt2, GPT2_RE),
            (PreKind::Llama3, LLAMA3_RE),
            (PreKind::Qwen2, QWEN2_RE),
            (PreKind::Qwen35, QWEN35_RE),
        ] {
            let custom = words(kind, SplitMode::LlamaCpp, text);
            let rx = compile(re).unwrap();
            let mut by_regex = Vec::new();
            let mut prev = 0;
            for m in rx.find_iter(text) {
                let m = m.unwrap();
                if m.start() > prev {
                    by_regex.push(text[prev..m.start()].to_string());
                }
                by_regex.push(m.as_str().to_string());
                prev = m.end();
            }
            if prev < text.len() {
                by_regex.push(text[prev..].to_string());
            }
            assert_eq!(custom, by_regex, "{kind:?}");
        }
    }

    /// Splits with a regex over the collapsed text (llama.cpp's generic path).
    fn collapsed_words(rx: &Regex, text: &str) -> Vec<String> {
        let cps: Vec<char> = text.chars().collect();
        let rc = Recoded::new(&cps, collapse_char);
        let mut lens = Vec::new();
        split_regex(rx, &rc, 0..cps.len(), &mut lens).unwrap();
        let mut start = 0;
        lens.into_iter()
            .filter(|&l| l > 0)
            .map(|l| {
                let w: String = cps[start..start + l].iter().collect();
                start += l;
                w
            })
            .collect()
    }

    #[test]
    fn o200k_code_splits_as_llama_cpp_regexes() {
        // The mixed fixture text, line by line and whole, and pseudo-random strings over an
        // alphabet of every class the split distinguishes.
        let mixed = include_str!("../tests/fixtures/mixed.txt");
        let mut texts: Vec<String> = mixed.split_inclusive('\n').map(str::to_owned).collect();
        texts.push(mixed.to_owned());
        let alphabet: Vec<char> = "aZ'sStTrReEvVlLmMdD0 9\t\n\r/.-_!\u{b}\u{a0}\u{3000}éÉñßǅΩωДд中ـ\u{301}\u{FE0F}\u{200D}😀½١\u{1C89}\u{E000}"
            .chars()
            .collect();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            let mut t = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                t.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            texts.push(t);
        }
        for (kind, re) in [(PreKind::Gpt4o, GPT4O_RE_LLAMACPP), (PreKind::Tekken, TEKKEN_RE_LLAMACPP)] {
            let code = PreTokenizer::new(kind, SplitMode::LlamaCpp).unwrap();
            let rx = compile(&collapse_regex(re)).unwrap();
            for t in &texts {
                let by_code: Vec<String> = code.split(t).unwrap().into_iter().map(|r| t[r].to_string()).collect();
                assert_eq!(by_code, collapsed_words(&rx, t), "{kind:?} {t:?}");
            }
        }
    }

    #[test]
    fn qwen35_keeps_marks_with_letters() {
        let t = "cafe\u{301} .\u{300}x";
        assert_eq!(words(PreKind::Qwen2, SplitMode::LlamaCpp, t), ["cafe", "\u{301}", " .\u{300}", "x"]);
        assert_eq!(words(PreKind::Qwen35, SplitMode::LlamaCpp, t), ["cafe\u{301}", " .", "\u{300}x"]);
    }

    #[test]
    fn falcon_and_deepseek_splits_hand_checked() {
        let t = "Hi `x`, 12345!";
        assert_eq!(words(PreKind::Falcon, SplitMode::LlamaCpp, t), ["Hi", " ", "`", "x", "`,", " ", "123", "45", "!"]);
        let t = "Hello 世界！ 12 ab\n\n  ";
        assert_eq!(
            words(PreKind::DeepseekLlm, SplitMode::LlamaCpp, t),
            ["Hello", " ", "世界", "！", " ", "12", " ab", "\n", "\n", "  "]
        );
        assert_eq!(
            words(PreKind::DeepseekCoder, SplitMode::LlamaCpp, t),
            // " 世界" is a letter run first, then the CJK pass splits it again.
            ["Hello", " ", "世界", "！", " ", "1", "2", " ab", "\n", "\n", "  "]
        );
    }

    #[test]
    fn gpt4o_modes_differ_on_combining_marks_only() {
        // Plain text: the same split in both modes.
        let t = "Hello World, I'm here: 1234 cafés ПРИВЕТ мир 中文";
        assert_eq!(words(PreKind::Gpt4o, SplitMode::LlamaCpp, t), words(PreKind::Gpt4o, SplitMode::Reference, t));
        // A decomposed accent: tiktoken keeps the mark with its letter, llama.cpp does not.
        let t = "cafe\u{301}";
        assert_eq!(words(PreKind::Gpt4o, SplitMode::Reference, t), ["cafe\u{301}"]);
        assert_eq!(words(PreKind::Gpt4o, SplitMode::LlamaCpp, t), ["cafe", "\u{301}"]);
    }
}
