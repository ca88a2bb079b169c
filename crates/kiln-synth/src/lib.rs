//! Random-weight GGUF models with real layouts, deterministic from a seed.
//!
//! [`GptOss`] writes gpt-oss of any shape (presets [`GptOss::tiny`] and [`GptOss::gpt_oss_20b`],
//! the latter with the public gpt-oss-20b GGUF's names, shapes and types); [`Llama`] writes
//! llama-family models of any shape and type mix. Vocabularies are a small byte-level BPE or
//! gpt-oss's real o200k_harmony ([`VocabKind`]). Files stream through `kiln-gguf`'s writer in
//! chunks made in parallel, so memory stays bounded at any size and the bytes depend only on the
//! options. llama.cpp loads them; `cargo xtask synth` is the command line, and kiln-model's tests
//! rebuild their comparison models from here.

mod gpt_oss;
mod llama;
mod rng;
mod spec;
pub mod vocab;
mod write;

pub use gpt_oss::GptOss;
pub use llama::Llama;
pub use rng::Rng;
pub use spec::from_spec;
pub use vocab::{Vocab, VocabKind};
pub use write::{SynthModel, TensorSpec};
