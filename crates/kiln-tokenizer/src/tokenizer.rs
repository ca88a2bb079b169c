//! [`Tokenizer`]: construction from GGUF metadata or `tokenizer.json`, encoding and decoding.

use crate::TokenizerError;
use crate::bpe::{Bpe, char_to_byte_table};
use crate::hf::HfEngine;
use crate::pretok::{PreKind, PreTokenizer, SplitMode, pre_info};
use crate::special::{Fragment, SpecialMatcher};
use crate::vocab::{Specials, TokenAttr, Vocab, apply_name_rules, derive_specials, special_cache};
use crate::whitespace::WhitespaceSession;
use kiln_gguf::{GgufFile, ValueType};
use std::path::Path;

/// How a [`Tokenizer`] is built from GGUF metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenizerOptions {
    /// Pre-tokenizer regex semantics (byte-level BPE vocabularies only). The default,
    /// [`SplitMode::LlamaCpp`], gives llama.cpp's ids.
    pub split: SplitMode,
}

impl TokenizerOptions {
    /// Options with the given split mode.
    pub fn with_split(mut self, split: SplitMode) -> Self {
        self.split = split;
        self
    }
}

/// Which algorithm a [`Tokenizer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with a regex pre-tokenizer (also
    /// `"whitespace"`, which cuts the text at white-space first).
    BytePairGpt2,
    /// `tokenizer.ggml.model = "llama"`: llama.cpp's SentencePiece (score-driven merges, byte
    /// fallback).
    SentencePiece,
    /// A Hugging Face `tokenizer.json`, run by the `tokenizers` crate.
    HuggingFace,
    /// `tokenizer.ggml.model = "t5"`: SentencePiece's unigram model (precompiled-charsmap
    /// normalization, best segmentation by score), as llama.cpp's UGM tokenizer.
    Unigram,
    /// `tokenizer.ggml.model = "rwkv"`: RWKV's greedy longest match over byte tokens.
    Rwkv,
    /// `tokenizer.ggml.model = "bert"`: WordPiece (greedy longest match after BERT's
    /// normalization and splitting).
    WordPiece,
    /// `tokenizer.ggml.model = "gemma4"`: BPE by merge rank over characters, with `▁` for spaces
    /// and `<0xXX>` byte fallback (also `gpt2` and `whitespace` with the `gemma4`, `sarvam-moe`,
    /// `mmbert` and `whitespace` pre-tokenizers).
    Gemma4,
}

pub(crate) enum Engine {
    Bpe {
        bpe: Box<Bpe>,
        pre: PreTokenizer,
    },
    Spm,
    Hf(Box<HfEngine>),
    /// UGM (`t5`): see `ugm.rs`.
    Ugm(Box<crate::ugm::Ugm>),
    /// RWKV: see `rwkv.rs`.
    Rwkv(Box<crate::rwkv::Rwkv>),
    /// WordPiece (`bert`): see `wpm.rs`.
    Wpm(Box<crate::wpm::Wpm>),
    /// Gemma 4's character BPE: see `gemma4.rs`.
    Gemma4(Box<crate::gemma4::Gemma4Bpe>),
}

/// A tokenizer: text → token ids → bytes.
///
/// Built from GGUF metadata ([`from_gguf`](Self::from_gguf)) it reproduces llama.cpp's
/// `llama_tokenize` / `llama_token_to_piece` / `llama_detokenize` exactly (commit 0c1e570); built
/// from a `tokenizer.json` ([`from_tokenizer_json`](Self::from_tokenizer_json)) it runs Hugging
/// Face `tokenizers`. It is `Send + Sync`; encoding takes `&self`.
pub struct Tokenizer {
    pub(crate) vocab: Vocab,
    pub(crate) specials: Specials,
    pub(crate) eog: Vec<u32>,
    pub(crate) matcher: SpecialMatcher,
    pub(crate) engine: Engine,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) add_space_prefix: bool,
    pub(crate) clean_spaces: bool,
    pub(crate) chat_template: Option<String>,
    pub(crate) model: String,
    pub(crate) pre: Option<String>,
    /// Code point → GPT-2 byte (byte-level vocabularies).
    pub(crate) char_byte: Vec<Option<u8>>,
    /// `tokenizer.ggml.model = "whitespace"`: how text fragments are cut before BPE.
    pub(crate) whitespace: Option<WhitespaceSession>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model)
            .field("pre", &self.pre)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.specials.bos)
            .field("eos", &self.specials.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.*` metadata, with llama.cpp's
    /// semantics. Supports `tokenizer.ggml.model` `"gpt2"` (with the `tokenizer.ggml.pre` types
    /// listed in the crate docs), `"whitespace"`, `"llama"`, `"bert"`, `"gemma4"`, `"t5"` and
    /// `"rwkv"`; anything else is [`TokenizerError::Unsupported`].
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_gguf_with(file, TokenizerOptions::default())
    }

    /// [`from_gguf`](Self::from_gguf) with options.
    pub fn from_gguf_with(file: &GgufFile, options: TokenizerOptions) -> Result<Tokenizer, TokenizerError> {
        let model = file.get_str(KEY_MODEL)?.to_owned();
        let pre_name = file.get_opt_str(KEY_PRE)?.map(str::to_owned);
        // llama.cpp loads a `whitespace` vocabulary as a `gpt2` one; only its tokenizing differs
        // (`whitespace.rs`, applied in `encode_fragments`).
        let base = if model == "whitespace" { "gpt2" } else { model.as_str() };
        // Models with their own module (WordPiece, Gemma 4): see `own_kind`.
        let own = own_kind(base, pre_name.as_deref());
        let spm = match base {
            "llama" => true,
            "t5" | "rwkv" => false, // ugm.rs / rwkv.rs
            "gpt2" => false,
            _ if own.is_some() => false,
            _ => return Err(TokenizerError::Unsupported(model)),
        };

        // Per-type defaults (llama.cpp `load`).
        let (mut add_bos, mut add_space_prefix, clean_spaces, info) = if spm {
            (true, true, false, None)
        } else if crate::ugm::is_own_model(&model) {
            // UGM and RWKV: no BOS, no space prefix, no space clean-up (EOS below).
            (false, false, false, None)
        } else if let Some(own) = own {
            // WPM: BOS ([CLS]) on; BPE (gemma4): BOS forced on below; both clean up spaces
            // (sarvam-moe does not).
            (own == OwnKind::Wpm, false, own != OwnKind::Sarvam, None)
        } else {
            // A missing or empty pre-tokenizer means "default" (llama.cpp warns about it).
            let name = pre_name.as_deref().filter(|n| !n.is_empty()).unwrap_or("default");
            let info = pre_info(name).ok_or_else(|| TokenizerError::UnsupportedPre { name: name.to_owned() })?;
            (info.add_bos, false, info.clean_spaces, Some(info))
        };
        let mut add_eos = false;
        crate::ugm::default_add_eos(&model, &mut add_eos);
        if let Some(v) = file.get_opt_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let tokens = file.get_str_array(KEY_TOKENS)?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::Metadata(format!("{KEY_TOKENS} is empty")));
        }
        if n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Metadata(format!("{KEY_TOKENS} has {n} tokens")));
        }
        let mut vocab = Vocab::new(tokens.iter());
        if vocab.len() != n {
            return Err(TokenizerError::Metadata(format!("{KEY_TOKENS}: could not read all {n} strings")));
        }
        if let Some(scores) = file.get_opt_array(KEY_SCORES)? {
            if scores.len() < n {
                return Err(TokenizerError::Metadata(format!(
                    "{KEY_SCORES} has {} entries for {n} tokens",
                    scores.len()
                )));
            }
            match scores.elem_type() {
                ValueType::F32 => vocab.set_scores(scores.to_vec::<f32>()?.into_iter()),
                ValueType::I32 => vocab.set_scores(scores.to_vec::<i32>()?.into_iter().map(|s| s as f32)),
                t => {
                    return Err(TokenizerError::Metadata(format!(
                        "{KEY_SCORES} must be an array of f32 or i32, found {t}"
                    )));
                }
            }
        }
        if let Some(types) = file.get_opt_array(KEY_TYPES)? {
            if types.len() < n {
                return Err(TokenizerError::Metadata(format!(
                    "{KEY_TYPES} has {} entries for {n} tokens",
                    types.len()
                )));
            }
            if types.elem_type() != ValueType::I32 {
                return Err(TokenizerError::Metadata(format!(
                    "{KEY_TYPES} must be an array of i32, found {}",
                    types.elem_type()
                )));
            }
            for (id, t) in types.to_vec::<i32>()?.into_iter().take(n).enumerate() {
                vocab.set_attr(id as u32, TokenAttr::from_token_type(t));
            }
        }

        // Special ids: type defaults, disabled when out of range, then the metadata.
        let in_range = |id: u32| (id as usize) < n;
        let mut sp = if spm {
            Specials { bos: Some(1), eos: Some(2), unk: Some(0), ..Default::default() }
        } else if crate::ugm::is_own_model(&model) {
            crate::ugm::default_specials(&model)
        } else if let Some(own) = own.filter(|_| base != "gpt2") {
            own_default_specials(own)
        } else {
            Specials { bos: Some(11), eos: Some(11), ..Default::default() }
        };
        if info.is_some_and(|i| i.no_bos) {
            sp.bos = None;
        }
        for slot in [&mut sp.bos, &mut sp.eos, &mut sp.unk, &mut sp.sep, &mut sp.pad, &mut sp.mask] {
            *slot = slot.filter(|&id| in_range(id));
        }
        // The deprecated prefix/suffix/middle keys come after the fim_* keys, as in llama.cpp.
        type Slot = fn(&mut Specials) -> &mut Option<u32>;
        let keys: [(&str, Slot); 17] = [
            ("tokenizer.ggml.bos_token_id", |s| &mut s.bos),
            ("tokenizer.ggml.eos_token_id", |s| &mut s.eos),
            ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
            ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
            ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
            ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
            ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
            ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
            ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
            ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
            ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
            ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
            ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
        ];
        for (key, slot) in keys {
            // An id past the vocabulary keeps the default (llama.cpp warns).
            if let Some(id) = file.get_opt_u32(key)?.filter(|&id| in_range(id)) {
                *slot(&mut sp) = Some(id);
            }
        }
        if let Some(v) = file.get_opt_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = file.get_opt_bool("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if own == Some(OwnKind::Gemma4) {
            add_bos = true; // llama.cpp overrides add_bos_token for Gemma 4 (PR 21500)
        }
        // WPM encoding adds BOS and SEP when they exist, whatever add_bos says.
        if add_bos && sp.bos.is_none() && own != Some(OwnKind::Wpm) {
            return Err(TokenizerError::Metadata("add_bos_token is set but there is no BOS token".into()));
        }
        if add_eos && sp.eos.is_none() {
            return Err(TokenizerError::Metadata("add_eos_token is set but there is no EOS token".into()));
        }

        let eog = derive_specials(&mut vocab, &mut sp);
        let cache = special_cache(&vocab);
        apply_name_rules(
            &mut vocab,
            &cache,
            file.get_opt_str("general.name")?.unwrap_or(""),
            pre_name.as_deref().unwrap_or(""),
            file.get_opt_str("general.architecture")?.unwrap_or(""),
        );
        let matcher = SpecialMatcher::new(&vocab, &cache);

        let engine = match info {
            None if crate::ugm::is_own_model(&model) => crate::ugm::engine(file, &vocab, &model, add_space_prefix)?,
            None if own.is_some() => own_engine(file, &vocab, own, &sp)?,
            None => Engine::Spm,
            Some(info) => {
                let bpe = match file.get_opt_str_array(KEY_MERGES)? {
                    Some(merges) => Bpe::new(&vocab, merges.iter(), info.ignore_merges),
                    // llama.cpp lets a Kimi K2 vocabulary go without merges.
                    None if info.kind == PreKind::KimiK2 => Bpe::new(&vocab, std::iter::empty(), info.ignore_merges),
                    None => {
                        return Err(TokenizerError::Metadata(format!(
                            "{KEY_MERGES} is missing (needed by gpt2 tokenizers)"
                        )));
                    }
                };
                Engine::Bpe { bpe: Box::new(bpe), pre: PreTokenizer::new(info.kind, options.split)? }
            }
        };
        let whitespace = if model == "whitespace" {
            // llama.cpp's normalizer `lowercase`: on by default, off under pre `whitespace`; the key
            // overrides both.
            let lowercase = file
                .get_opt_bool("tokenizer.ggml.normalizer.lowercase")?
                .unwrap_or(pre_name.as_deref() != Some("whitespace"));
            let keep_spaces = matches!(&engine, Engine::Gemma4(g) if g.escapes_spaces());
            Some(WhitespaceSession::new(lowercase, keep_spaces))
        } else {
            None
        };
        let chat_template = file.get_opt_str("tokenizer.chat_template")?.map(str::to_owned);
        Ok(Tokenizer {
            vocab,
            specials: sp,
            eog,
            matcher,
            engine,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template,
            model,
            pre: if spm || own == Some(OwnKind::Wpm) { None } else { pre_name },
            char_byte: char_to_byte_table(),
            whitespace,
        })
    }

    /// Opens a GGUF file and builds its tokenizer.
    pub fn from_gguf_path(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_gguf(&GgufFile::open(path)?)
    }

    /// Builds a tokenizer from the bytes of a Hugging Face `tokenizer.json`, run by the
    /// `tokenizers` crate. Special ids and the chat template are unknown (a `tokenizer.json` does
    /// not hold them); see [`from_tokenizer_json_with_config`](Self::from_tokenizer_json_with_config).
    pub fn from_tokenizer_json(json: impl AsRef<[u8]>) -> Result<Tokenizer, TokenizerError> {
        crate::hf::build(json.as_ref(), None)
    }

    /// Like [`from_tokenizer_json`](Self::from_tokenizer_json), with the `tokenizer_config.json`
    /// that sits beside it: `bos_token`, `eos_token`, `pad_token`, `unk_token` and
    /// `chat_template` are taken from it. ([`add_bos`](Self::add_bos) / [`add_eos`](Self::add_eos)
    /// report what the `tokenizer.json` post-processor does.)
    pub fn from_tokenizer_json_with_config(
        json: impl AsRef<[u8]>,
        config: impl AsRef<[u8]>,
    ) -> Result<Tokenizer, TokenizerError> {
        crate::hf::build(json.as_ref(), Some(config.as_ref()))
    }

    /// Reads `path` (a `tokenizer.json`) and, if present, the `tokenizer_config.json` beside it.
    pub fn from_tokenizer_json_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let read = |p: &Path| std::fs::read(p).map_err(|source| TokenizerError::Io { path: p.to_owned(), source });
        let json = read(path)?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = if config_path.exists() { Some(read(&config_path)?) } else { None };
        crate::hf::build(&json, config.as_deref())
    }

    /// Tokenizes `text` like `llama_tokenize(vocab, text, add_special, parse_special)`.
    ///
    /// * `add_special`: add BOS / EOS where the vocabulary asks for them ([`add_bos`](Self::add_bos),
    ///   [`add_eos`](Self::add_eos)).
    /// * `parse_special`: text equal to a control token (`<|im_start|>`, `<start_of_turn>`, …)
    ///   becomes that token. User-defined tokens are always recognised, as in llama.cpp.
    ///
    /// Errors only for a `tokenizer.json` tokenizer that fails, or if a pre-tokenizer regex hits
    /// its backtracking limit.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        if let Engine::Hf(hf) = &self.engine {
            return hf.encode(text, add_special, parse_special);
        }
        let fragments = self.matcher.partition(&self.vocab, text, parse_special);
        self.encode_fragments(text.len(), fragments, add_special)
    }

    /// Tokenizes `text` as plain text, like tiktoken's `encode_ordinary`: no special token is
    /// recognised, not even a user-defined one (which [`encode`](Self::encode) always recognises:
    /// gpt-oss's `<|start|>`, `<|message|>`, `<|channel|>`, `<|constrain|>` and `<|end|>` are
    /// user-defined, as llama.cpp makes them), and no BOS or EOS is added. Text that contains no
    /// special-token text gives `encode(text, false, false)`'s ids.
    ///
    /// A `tokenizer.json` tokenizer treats its special added tokens as text here but, as the
    /// `tokenizers` crate does, still recognises its non-special added tokens.
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if let Engine::Hf(hf) = &self.engine {
            return hf.encode(text, false, false);
        }
        let fragments = if text.is_empty() { Vec::new() } else { vec![Fragment::Text(text)] };
        self.encode_fragments(text.len(), fragments, false)
    }

    /// Tokenizes the fragments of a text of `len` bytes (GGUF engines).
    fn encode_fragments(
        &self,
        len: usize,
        fragments: Vec<Fragment<'_>>,
        add_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        if let Some(out) = crate::ugm::encode_fragments(self, &fragments, add_special)? {
            return Ok(out); // UGM, RWKV
        }
        let mut out = Vec::with_capacity(len / 3 + 2);
        let wpm = matches!(self.engine, Engine::Wpm(_));
        if add_special && (self.add_bos || wpm) {
            out.extend(self.specials.bos);
        }
        match &self.engine {
            Engine::Spm => {
                let mut prev_special = true; // a space prefix goes on the first text
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in t.chars() {
                                if c == ' ' { buf.push('\u{2581}') } else { buf.push(c) }
                            }
                            crate::spm::encode(&self.vocab, &buf, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Engine::Bpe { .. } | Engine::Gemma4(_) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) => match self.whitespace {
                            Some(session) => {
                                for segment in session.segments(t) {
                                    self.encode_bpe_text(&segment, &mut out)?;
                                }
                            }
                            None => self.encode_bpe_text(t, &mut out)?,
                        },
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Engine::Wpm(wpm) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) => wpm.encode(&self.vocab, t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Engine::Ugm(_) | Engine::Rwkv(_) => unreachable!("handled above"),
            Engine::Hf(_) => unreachable!("handled above"),
        }
        if add_special && wpm {
            out.extend(self.specials.sep); // llama.cpp: WPM ends with SEP, never EOS
        } else if add_special && self.add_eos {
            out.extend(self.specials.eos);
        }
        Ok(out)
    }

    /// One piece of raw text through a BPE engine (llama.cpp's BPE session `tokenize`).
    fn encode_bpe_text(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        match &self.engine {
            Engine::Bpe { bpe, pre } => {
                for word in pre.split(text)? {
                    bpe.encode_word(&self.vocab, &text.as_bytes()[word], out);
                }
            }
            Engine::Gemma4(g) => g.encode(&self.vocab, text, out),
            _ => unreachable!("only the BPE engines"),
        }
        Ok(())
    }

    /// The bytes token `id` stands for, like `llama_token_to_piece(vocab, id, buf, len, 0,
    /// special)`: byte-level BPE tokens decode to their bytes, SentencePiece `▁` becomes a space
    /// and `<0xXX>` its byte; control (and unknown) tokens render as their text only when
    /// `special` is true, user-defined tokens always; unused and undefined tokens render as
    /// nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        self.append_piece(id, special, 0, &mut out)?;
        Ok(out)
    }

    pub(crate) fn append_piece(
        &self,
        id: u32,
        special: bool,
        lstrip: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        self.check_id(id)?;
        if let Engine::Rwkv(r) = &self.engine {
            crate::rwkv::append_piece(self, r, id, special, lstrip, out); // ignores the token type
            return Ok(());
        }
        let start = out.len();
        let attr = self.vocab.attr(id);
        let text = self.vocab.text(id);
        if attr.intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
            if special {
                out.extend_from_slice(text);
            }
        } else if attr.contains(TokenAttr::USER_DEFINED) {
            out.extend_from_slice(text);
        } else if attr.contains(TokenAttr::NORMAL) {
            match &self.engine {
                Engine::Gemma4(g) if g.byte_level_pieces() => self.decode_byte_level(text, out),
                Engine::Spm | Engine::Wpm(_) | Engine::Gemma4(_) => replace_all(text, "\u{2581}".as_bytes(), b" ", out),
                Engine::Ugm(_) | Engine::Rwkv(_) => replace_all(text, "\u{2581}".as_bytes(), b" ", out),
                Engine::Bpe { .. } => self.decode_byte_level(text, out),
                Engine::Hf(hf) => hf.normal_piece(self, id, out),
            }
        } else if attr.contains(TokenAttr::BYTE) {
            out.push(hex_byte(text));
        }
        // Skip up to `lstrip` leading spaces of this piece.
        let mut n = 0;
        while n < lstrip && out.get(start + n) == Some(&b' ') {
            n += 1;
        }
        out.drain(start..start + n);
        Ok(())
    }

    /// llama.cpp's `llama_decode_text`: each character of a byte-level token is one byte; a
    /// character outside the GPT-2 byte map becomes `[UNK_BYTE_0x…<token text>]`.
    pub(crate) fn decode_byte_level(&self, text: &[u8], out: &mut Vec<u8>) {
        for c in String::from_utf8_lossy(text).chars() {
            match self.char_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut tmp = [0u8; 4];
                    for b in c.encode_utf8(&mut tmp).bytes() {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text);
                    out.push(b']');
                }
            }
        }
    }

    /// Decodes `ids` to bytes like `llama_detokenize(vocab, ids, remove_special = false,
    /// unparse_special = special)`: the pieces concatenated, the leading space of a SentencePiece
    /// text removed, and (for vocabularies that ask for it) tokenization spaces cleaned up.
    pub fn decode_bytes(&self, ids: &[u32], special: bool) -> Result<Vec<u8>, TokenizerError> {
        self.detokenize(ids, false, special)
    }

    /// [`decode_bytes`](Self::decode_bytes) as text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids, special)?).into_owned())
    }

    /// `llama_detokenize` with both flags: `remove_special` drops a leading BOS and a trailing
    /// EOS when the vocabulary adds them; `unparse_special` renders control tokens.
    pub fn detokenize(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.specials.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().copied() == self.specials.eos && self.specials.eos.is_some() {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_piece(id, unparse_special, usize::from(remove_space), &mut out)?;
            remove_space = false;
        }
        if self.clean_spaces {
            out = clean_spaces(&out);
        }
        Ok(out)
    }

    pub(crate) fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.vocab.len() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange { id, vocab_size: self.vocab.len() })
        }
    }

    /// Number of tokens (the ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Token `id`'s text as stored in the vocabulary (byte-level BPE tokens in their GPT-2
    /// character form, SentencePiece tokens with `▁`); `None` for an id out of range.
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        ((id as usize) < self.vocab.len()).then(|| self.vocab.text(id))
    }

    /// The id of the token whose text is `text` (the last, if several share it).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.lookup(text.as_bytes())
    }

    /// Token `id`'s attributes (after llama.cpp's adjustments, e.g. `<|end|>` of gpt-oss is
    /// user-defined); `None` out of range.
    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        ((id as usize) < self.vocab.len()).then(|| self.vocab.attr(id))
    }

    /// Token `id`'s score (SentencePiece); 0 without scores or out of range.
    pub fn token_score(&self, id: u32) -> f32 {
        if (id as usize) < self.vocab.len() { self.vocab.score(id) } else { 0.0 }
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.specials.bos
    }
    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.specials.eos
    }
    /// End-of-turn token (from metadata, else found by its text).
    pub fn eot_id(&self) -> Option<u32> {
        self.specials.eot
    }
    /// End-of-message token (`<|eom_id|>`).
    pub fn eom_id(&self) -> Option<u32> {
        self.specials.eom
    }
    /// Padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.specials.pad
    }
    /// Unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.specials.unk
    }
    /// Separator token.
    pub fn sep_id(&self) -> Option<u32> {
        self.specials.sep
    }
    /// Fill-in-the-middle tokens: prefix, suffix, middle, pad, repo, file separator.
    pub fn fim_ids(&self) -> [Option<u32>; 6] {
        let s = &self.specials;
        [s.fim_pre, s.fim_suf, s.fim_mid, s.fim_pad, s.fim_rep, s.fim_sep]
    }

    /// The tokens that end generation, ascending: EOS, EOT, EOM, the FIM pad/repo/separator
    /// tokens and every token whose text llama.cpp treats as such (`<|im_end|>`, `<|return|>`,
    /// `<|call|>`, `<end_of_turn>`, `<|endoftext|>`, …), less gpt-oss's `<|end|>`.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Whether [`encode`](Self::encode) with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`encode`](Self::encode) with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SentencePiece text gets a leading `▁` (and decoding drops it again).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// The chat template (`tokenizer.chat_template`), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The algorithm.
    pub fn kind(&self) -> TokenizerKind {
        match self.engine {
            Engine::Bpe { .. } => TokenizerKind::BytePairGpt2,
            Engine::Spm => TokenizerKind::SentencePiece,
            Engine::Hf(_) => TokenizerKind::HuggingFace,
            Engine::Ugm(_) => TokenizerKind::Unigram,
            Engine::Rwkv(_) => TokenizerKind::Rwkv,
            Engine::Wpm(_) => TokenizerKind::WordPiece,
            Engine::Gemma4(_) => TokenizerKind::Gemma4,
        }
    }

    /// `tokenizer.ggml.model` (`"gpt2"`, `"llama"`, …; `"tokenizer.json"` for Hugging Face).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// `tokenizer.ggml.pre`, for byte-level BPE vocabularies that name one.
    pub fn pre(&self) -> Option<&str> {
        self.pre.as_deref()
    }
}

/// Tokenizer models built by their own module rather than the SPM / byte-level BPE code above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnKind {
    /// `bert`: WordPiece (`wpm.rs`).
    Wpm,
    /// `gemma4`, or `gpt2` with the `gemma4` / `granite-embed-multi-311m` pre-tokenizer, which
    /// llama.cpp runs the same way (`gemma4.rs`).
    Gemma4,
    /// `gpt2` with the `sarvam-moe` pre-tokenizer: Gemma 4's code without its newline-token fix,
    /// without forcing `add_bos` and without the clean-up of tokenization spaces.
    Sarvam,
    /// `gpt2` with the `mmbert` pre-tokenizer: Gemma 4's code with Metaspace words, without
    /// forcing `add_bos`.
    Mmbert,
    /// `gpt2` with the `whitespace` pre-tokenizer: raw-UTF-8 BPE over white-space and
    /// non-white-space runs (`gemma4.rs`), byte-level decoding.
    Whitespace,
}

fn own_kind(model: &str, pre: Option<&str>) -> Option<OwnKind> {
    match (model, pre) {
        ("bert", _) => Some(OwnKind::Wpm),
        ("gemma4", _) | ("gpt2", Some("gemma4" | "granite-embed-multi-311m")) => Some(OwnKind::Gemma4),
        ("gpt2", Some("sarvam-moe")) => Some(OwnKind::Sarvam),
        ("gpt2", Some("mmbert")) => Some(OwnKind::Mmbert),
        ("gpt2", Some("whitespace")) => Some(OwnKind::Whitespace),
        _ => None,
    }
}

/// llama.cpp's default special ids for the model (before the metadata).
fn own_default_specials(own: OwnKind) -> Specials {
    match own {
        OwnKind::Wpm => Specials {
            bos: Some(101),
            unk: Some(100),
            sep: Some(102),
            pad: Some(0),
            mask: Some(103),
            ..Default::default()
        },
        OwnKind::Gemma4 | OwnKind::Sarvam | OwnKind::Mmbert | OwnKind::Whitespace => Specials::default(),
    }
}

fn own_engine(file: &GgufFile, vocab: &Vocab, own: Option<OwnKind>, sp: &Specials) -> Result<Engine, TokenizerError> {
    Ok(match own {
        Some(OwnKind::Wpm) => {
            let lowercase = file.get_opt_bool("tokenizer.ggml.normalizer.lowercase")?.unwrap_or(true);
            let strip_accents = file.get_opt_bool("tokenizer.ggml.normalizer.strip_accents")?.unwrap_or(lowercase);
            let options = crate::wpm::WpmOptions { lowercase, strip_accents };
            Engine::Wpm(Box::new(crate::wpm::Wpm::new(vocab, options, sp.unk)))
        }
        Some(OwnKind::Gemma4) => {
            let merges = file.get_opt_str_array(KEY_MERGES)?.ok_or_else(|| {
                TokenizerError::Metadata(format!("{KEY_MERGES} is missing (needed by gemma4 tokenizers)"))
            })?;
            Engine::Gemma4(Box::new(crate::gemma4::Gemma4Bpe::new(vocab, merges.iter())))
        }
        Some(own @ (OwnKind::Sarvam | OwnKind::Mmbert | OwnKind::Whitespace)) => {
            let merges = file.get_opt_str_array(KEY_MERGES)?.ok_or_else(|| {
                TokenizerError::Metadata(format!("{KEY_MERGES} is missing (needed by gpt2 tokenizers)"))
            })?;
            let bpe = match own {
                OwnKind::Sarvam => crate::gemma4::Gemma4Bpe::without_newline_tokens(vocab, merges.iter()),
                OwnKind::Mmbert => crate::gemma4::Gemma4Bpe::metaspace(vocab, merges.iter()),
                _ => crate::gemma4::Gemma4Bpe::whitespace(vocab, merges.iter()),
            };
            Engine::Gemma4(Box::new(bpe))
        }
        None => Engine::Spm,
    })
}

/// Parses the two hex digits of `<0xXX>` like llama.cpp (`strtol` on the substring at 3..5:
/// leading hex digits only, 0 if none).
fn hex_byte(text: &[u8]) -> u8 {
    let mut v = 0u32;
    for &c in text.iter().skip(3).take(2) {
        match (c as char).to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    v as u8
}

fn replace_all(text: &[u8], from: &[u8], to: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// llama.cpp's `clean_up_tokenization_spaces` (three passes over the bytes): drop a space before
/// `? ! . ,`; drop the spaces around a lone `'` between spaces; drop the space before `'s`, `'m`,
/// `'re`, `'ve`.
pub(crate) fn clean_spaces(text: &[u8]) -> Vec<u8> {
    // Pass 1.
    let mut a = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    // Pass 2: " ' " → "'" (the space after is skipped and cannot start another match).
    let mut b = Vec::with_capacity(a.len());
    let mut i = 0;
    let mut prev_was_skipped_space = false;
    while i < a.len() {
        let x = a[i];
        if i > 0 && x == b'\'' && i + 1 < a.len() && a[i - 1] == b' ' && !prev_was_skipped_space && a[i + 1] == b' ' {
            b.pop();
            b.push(x);
            i += 2;
            prev_was_skipped_space = true;
            continue;
        }
        prev_was_skipped_space = false;
        b.push(x);
        i += 1;
    }
    // Pass 3.
    let mut c = Vec::with_capacity(b.len());
    for (i, &x) in b.iter().enumerate() {
        if i > 0 && b[i - 1] == b' ' && x == b'\'' && i + 1 < b.len() {
            let x1 = b[i + 1];
            let drop = match x1 {
                b's' | b'm' => true,
                b'r' | b'v' => i + 2 < b.len() && b[i + 2] == b'e',
                _ => false,
            };
            if drop {
                c.pop();
            }
        }
        c.push(x);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_hand_checked() {
        let cases: [(&str, &str); 8] = [
            ("Hello , world !", "Hello, world!"),
            ("a  .", "a ."),
            ("rock ' n ' roll", "rock'n'roll"),
            ("it 's he 'll they 're we 've I 'm", "it's he 'll they're we've I'm"),
            ("don 't", "don 't"),
            (" ' ", "'"),
            ("x 'r", "x 'r"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(String::from_utf8(clean_spaces(input.as_bytes())).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn hex_byte_like_strtol() {
        assert_eq!(hex_byte(b"<0x0A>"), 0x0A);
        assert_eq!(hex_byte(b"<0xfF>"), 0xFF);
        assert_eq!(hex_byte(b"<0x1G>"), 1);
        assert_eq!(hex_byte(b"<0x"), 0);
    }
}
