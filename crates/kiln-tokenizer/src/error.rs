use std::path::PathBuf;

/// Everything that can go wrong building or using a [`Tokenizer`](crate::Tokenizer) or rendering a
/// chat template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// Reading GGUF metadata failed (missing key, wrong type, …).
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),

    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error(
        "tokenizer model {0:?} (tokenizer.ggml.model) is not supported; supported: \"gpt2\" (byte-level BPE), \"whitespace\" (BPE word by word), \"llama\" (SentencePiece), \"t5\" (unigram), \"bert\" (WordPiece), \"gemma4\" and \"rwkv\""
    )]
    Unsupported(String),

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error(
        "pre-tokenizer {name:?} (tokenizer.ggml.pre) is not supported; supported: {}",
        crate::pretok::SUPPORTED_PRE.join(", ")
    )]
    UnsupportedPre {
        /// The value of `tokenizer.ggml.pre`.
        name: String,
    },

    /// The tokenizer metadata is inconsistent (e.g. fewer scores than tokens).
    #[error("invalid tokenizer metadata: {0}")]
    Metadata(String),

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary of {vocab_size} tokens)")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The number of tokens.
        vocab_size: usize,
    },

    /// Hugging Face `tokenizers` rejected a `tokenizer.json` or failed on an input.
    #[error("tokenizer.json: {0}")]
    TokenizerJson(String),

    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A chat template failed to compile or to render (the message includes minijinja's
    /// description, with the template line where it knows it).
    #[error("chat template: {0}")]
    Template(String),

    /// A harmony conversation could not be rendered or parsed (an unsupported role, a vocabulary
    /// without the harmony tokens, an unknown reasoning effort).
    #[error("harmony: {0}")]
    Harmony(String),

    /// A limit inside the tokenizer was hit (e.g. the pre-tokenizer regex backtracking limit on a
    /// pathological input).
    #[error("tokenizer: {0}")]
    Internal(String),
}

impl From<minijinja::Error> for TokenizerError {
    fn from(e: minijinja::Error) -> Self {
        // minijinja's message names the template line; add the chain of causes.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        TokenizerError::Template(msg)
    }
}
