//! Tokenizers for kiln: built from GGUF metadata exactly as llama.cpp builds them, or from a
//! Hugging Face `tokenizer.json`; a streaming detokenizer that only ever emits whole UTF-8
//! characters; chat templates; and gpt-oss's harmony format.
//!
//! # Tokenizers from GGUF
//!
//! [`Tokenizer::from_gguf`] reads `tokenizer.ggml.*` and reproduces llama.cpp's
//! `llama_tokenize`, `llama_token_to_piece` and `llama_detokenize` (commit 0c1e570) id for id and
//! byte for byte:
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE over `tokenizer.ggml.merges`, after the
//!   pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`. Supported: `default`, `gpt-2` and
//!   its aliases, `llama-bpe`/`llama3` (with `ignore_merges`), `dbrx`, `smaug-bpe`, `qwen2` and
//!   aliases, `qwen35`, `stablelm2`, `smollm`/`starcoder` and aliases, `gpt-4o`/`llama4` and
//!   aliases, `tekken`, `falcon`, `deepseek-llm`, `deepseek-coder`, and the names llama.cpp
//!   b11434 added (`deepseek-v3`, `kimi-k2`, `glm4`, `chatglm-bpe`, `bloom`, `seed-coder`,
//!   `minicpm5`, … as `docs/TOKENIZER.md` lists them); any other name is
//!   [`TokenizerError::UnsupportedPre`]. Tested against llama.cpp: `smollm`, `gpt-4o` (the
//!   gpt-oss vocabulary), and with SmolLM2's vocabulary `default`, `gpt-2`, `llama-bpe`, `qwen2`,
//!   `starcoder`, `tekken` (commit 0c1e570); and with their own vocabularies by llama.cpp b11434's
//!   tokenizer suite (`tests/llama_vocab_suite.rs`): `command-r`, `deepseek-coder`,
//!   `deepseek-llm`, `falcon`, `gpt-2`, `llama-bpe`, `mpt`, `qwen2`, `qwen35`, `refact`,
//!   `starcoder`; the names b11434 added with SmolLM2's vocabulary against b11434
//!   (`tests/pre_b11434.rs`).
//! * `tokenizer.ggml.model = "whitespace"`: a `gpt2` vocabulary in every respect (merges,
//!   defaults, `tokenizer.ggml.pre`, decoding) whose text, as llama.cpp b11434 runs it, is cut at
//!   white-space first (dropped), each word lower-cased if `tokenizer.ggml.normalizer.lowercase`
//!   says so (on by default, off under pre `whitespace`) and tokenized by itself. Tested with
//!   SmolLM2's vocabulary under ten settings against b11434 (`tests/pre_b11434.rs`).
//! * `tokenizer.ggml.model = "llama"`: SentencePiece the way llama.cpp runs it (score-driven
//!   bigram merges with a heap, `<0xXX>` byte fallback, `add_space_prefix`, spaces as `▁`), as
//!   Gemma 3 uses it.
//! * `tokenizer.ggml.model = "bert"`: WordPiece as llama.cpp b11434 runs it: BERT's
//!   normalization (lower-casing and accent stripping one code point at a time, as
//!   `tokenizer.ggml.normalizer.*` ask; both default on), a split at white-space, punctuation,
//!   ASCII symbols and CJK ideographs, then greedy longest-match pieces (`▁` starts a word, bare
//!   pieces continue it; a word that cannot be cut is the unknown token). `add_special` adds BOS
//!   (`[CLS]`) and SEP. Tested by llama.cpp's suite vocabulary `bert-bge`.
//! * `tokenizer.ggml.model = "gemma4"` (and `gpt2` with pre `gemma4`): Gemma 4's BPE by merge
//!   rank over characters, spaces as `▁`, split only between newline runs and other text, a
//!   newline run that is a token kept whole, `<0xXX>` byte fallback, BOS always on. Tested by
//!   llama.cpp's suite vocabulary `gemma-4`.
//! * `tokenizer.ggml.model = "t5"`: SentencePiece's unigram model as llama.cpp b11434's UGM
//!   tokenizer runs it: normalization by `tokenizer.ggml.precompiled_charsmap` (the XOR-compressed
//!   double array of replacements), user-defined text passed through unnormalized, spaces as `▁`
//!   (`add_space_prefix`, `remove_extra_whitespaces`), then the best-scoring segmentation over
//!   the normal, user-defined (score 0) and unused tokens, with the unknown token (lowest score
//!   − 10) for a character no token covers, runs of it merged. BOS off and EOS on by default.
//!   Tested by llama.cpp's suite vocabulary `nomic-bert-moe` and two variants of it
//!   (`tests/unigram_rwkv.rs`).
//! * `tokenizer.ggml.model = "rwkv"`: RWKV's tokenizer: token texts in Python bytes notation
//!   (`\n`, `\xNN`, …) unescaped into a byte trie, text cut greedily into the longest token; a
//!   byte no token starts with is the unknown token; never BOS or EOS. Tested with a synthetic
//!   vocabulary against llama.cpp b11434.
//! * Other models (`plamo2`, `none`, `no_vocab`, …) are [`TokenizerError::Unsupported`], which
//!   names the model.
//!
//! Special tokens follow llama.cpp: `tokenizer.ggml.token_type` gives each token its
//! [`TokenAttr`]; control-token text in a prompt becomes the token only with `parse_special`,
//! user-defined tokens always; BOS/EOS/EOT/… come from metadata with llama.cpp's per-model
//! defaults, and [`Tokenizer::eog_ids`] is llama.cpp's end-of-generation set (EOS, EOT, EOM, FIM
//! pad/repo/separator and tokens such as `<|im_end|>`, `<|return|>`, `<|call|>`,
//! `<end_of_turn>`; not gpt-oss's `<|end|>`).
//!
//! One choice is offered: llama.cpp runs the o200k (`gpt-4o`) split regex on a copy of the text
//! where every non-ASCII letter is both "upper" and "lower" case and combining marks are not
//! letters, so its ids differ from tiktoken's on text with combining marks (including U+FE0F in
//! emoji) and on a non-ASCII capital after a lower-case letter. [`SplitMode::LlamaCpp`] (the
//! default) gives llama.cpp's ids; [`SplitMode::Reference`] gives tiktoken's.
//!
//! ```no_run
//! use kiln_tokenizer::Tokenizer;
//! let tok = Tokenizer::from_gguf_path("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let ids = tok.encode("<|im_start|>user\nHi!<|im_end|>\n", true, true)?;
//! assert_eq!(ids[0], tok.token_id("<|im_start|>").unwrap());
//! let text = tok.decode(&ids, true)?;
//! # Ok::<(), kiln_tokenizer::TokenizerError>(())
//! ```
//!
//! A tokenizer can also be made from metadata written with [`kiln_gguf::GgufWriter`] (here a toy
//! byte-level vocabulary: the 256 byte characters and one merge):
//!
//! ```
//! use kiln_gguf::{GgufFile, GgufWriter};
//! use kiln_tokenizer::{Detokenizer, Tokenizer};
//!
//! // GPT-2's byte-to-character map: printable bytes are themselves, the rest U+0100 and up.
//! let mut tokens: Vec<String> = Vec::new();
//! let mut next = 0x100;
//! for b in 0..=255u32 {
//!     let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
//!     let c = if printable { b } else { next += 1; next - 1 };
//!     tokens.push(char::from_u32(c).unwrap().to_string());
//! }
//! tokens.push("ĠĠ".into()); // two spaces, id 256
//! tokens.push("<|end|>".into()); // id 257
//! let mut types = vec![1i32; 257];
//! types.push(3); // control
//!
//! let mut w = GgufWriter::new();
//! w.add("tokenizer.ggml.model", "gpt2")?;
//! w.add("tokenizer.ggml.pre", "smollm")?;
//! w.add("tokenizer.ggml.tokens", tokens)?;
//! w.add("tokenizer.ggml.token_type", types)?;
//! w.add("tokenizer.ggml.merges", vec!["Ġ Ġ"])?;
//! w.add("tokenizer.ggml.eos_token_id", 257u32)?;
//! let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()?)?)?;
//!
//! let ids = tok.encode("hi   é<|end|>", false, true)?;
//! assert_eq!(ids, [104, 105, 256, 32, 195, 169, 257]);
//! assert_eq!(tok.eog_ids(), [257]);
//! assert_eq!(tok.decode(&ids, false)?, "hi   é");
//! assert_eq!(tok.decode(&ids, true)?, "hi   é<|end|>");
//!
//! // Streaming: "é" is two byte tokens; it comes out whole, once its second byte is in.
//! let mut detok = Detokenizer::new(&tok);
//! let pieces: Vec<String> = ids.iter().map(|&id| detok.push(id)).collect::<Result<_, _>>()?;
//! assert_eq!(pieces, ["h", "i", "  ", " ", "", "é", ""]);
//! assert_eq!(detok.flush(), "");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Streaming detokenization
//!
//! [`Detokenizer`] turns ids into text one at a time and returns only complete characters; the
//! concatenation of its output equals [`Tokenizer::decode`] of the whole sequence.
//!
//! # Chat templates
//!
//! [`ChatTemplate`] / [`render_chat`] render a model's Jinja chat template with minijinja set up
//! like `transformers` (trim/lstrip blocks, `raise_exception`, `strftime_now`, Python-style
//! `tojson`, Python string and dict methods).
//!
//! ```
//! use kiln_tokenizer::{Message, render_chat};
//! let chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}\
//!               {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
//! let prompt = render_chat(chatml, &[Message::new("user", "Hi")], true, "", "")?;
//! assert_eq!(prompt, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
//! # Ok::<(), kiln_tokenizer::TokenizerError>(())
//! ```
//!
//! # Harmony
//!
//! gpt-oss models are trained on OpenAI's harmony format: [`HarmonyPrompt`] renders a conversation
//! (user turns, earlier answers, function tools with their calls and results: [`HarmonyTool`],
//! [`HarmonyTurn`]) as OpenAI's `openai-harmony` does, [`HarmonyParser`] splits generated ids into
//! messages by channel (`analysis`, `commentary`, `final`) as they stream, and
//! [`Tokenizer::is_harmony`] tells whether a vocabulary has the harmony markers.
//!
//! # Tokenizers from `tokenizer.json`
//!
//! [`Tokenizer::from_tokenizer_json`] runs Hugging Face `tokenizers` (pure Rust, `fancy-regex`).
//! Pieces for [`Tokenizer::token_to_piece`] and the [`Detokenizer`] are derived from the
//! decoder: byte-level decoders give exact bytes; otherwise `▁` becomes a space and `<0xXX>`
//! tokens their byte.
//!
//! Nothing here panics on any input: bad metadata is an error, and an id outside the vocabulary
//! is [`TokenizerError::IdOutOfRange`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod bpe;
mod chat;
mod error;
mod gemma4;
mod harmony;
mod hf;
mod merges;
mod pretok;
mod rwkv;
mod special;
mod spm;
mod stream;
mod tokenizer;
mod ugm;
mod unicode;
mod unicode_data;
mod vocab;
mod whitespace;
mod wpm;
mod wpm_data;

pub use chat::{ChatOptions, ChatTemplate, Message, render_chat};
pub use error::TokenizerError;
pub use harmony::{
    DEFAULT_KNOWLEDGE_CUTOFF, DEFAULT_MODEL_IDENTITY, HarmonyDelta, HarmonyMessage, HarmonyParser, HarmonyPrompt,
    HarmonySystem, HarmonyTool, HarmonyTurn, ReasoningEffort,
};
pub use pretok::SplitMode;
pub use stream::Detokenizer;
pub use tokenizer::{Tokenizer, TokenizerKind, TokenizerOptions};
pub use vocab::TokenAttr;

impl Tokenizer {
    /// Renders `messages` with this model's chat template ([`chat_template`](Self::chat_template)),
    /// with `bos_token` / `eos_token` set to the BOS and EOS tokens' texts.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        let template =
            self.chat_template().ok_or_else(|| TokenizerError::Template("the model has no chat template".into()))?;
        let text = |id: Option<u32>| {
            id.and_then(|i| self.token_text(i)).map(|t| String::from_utf8_lossy(t).into_owned()).unwrap_or_default()
        };
        render_chat(template, messages, add_generation_prompt, &text(self.bos_id()), &text(self.eos_id()))
    }
}

/// The crate is usable across threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tokenizer>();
    is::<ChatTemplate>();
}
