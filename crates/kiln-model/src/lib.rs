//! Model code for kiln: architectures written once over a [`Backend`] trait, the CPU backend, and
//! a paged KV cache.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_model::{Batch, CpuBackend, Model, SeqKv};
//!
//! let file = Arc::new(kiln_gguf::GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?);
//! let model = Model::load(file.clone(), CpuBackend::new(file, 0))?;
//! let mut kv = model.kv_cache(512)?;
//! let mut seq = SeqKv::default();
//! let logits = model.forward(&mut kv, &mut [&mut seq], &Batch::single(&[504, 3575, 282, 4649, 314]), 512)?;
//! assert_eq!(logits.len(), model.config.n_vocab);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod arch;
pub mod backend;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
pub mod kv;
mod model;

pub use backend::Backend;
pub use config::{Arch, Config};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use error::{ModelError, Result};
pub use kv::{KvCache, SeqKv};
pub use model::{Batch, Model};
