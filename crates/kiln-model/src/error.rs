use kiln_gguf::GgufError;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma3, gpt-oss)")]
    UnsupportedArch(String),
    #[error("missing tensor {0}")]
    MissingTensor(String),
    #[error("tensor {name}: shape {actual:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<u64>, actual: Vec<u64> },
    #[error("tensor {name}: type {ty} is not supported for {role}")]
    TensorType { name: String, ty: kiln_quant::GgmlType, role: &'static str },
    #[error("invalid hyperparameter {key}: {msg}")]
    Hparam { key: String, msg: String },
    #[error("token id {id} is outside the vocabulary (size {n_vocab})")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("position {pos} is beyond the context length {n_ctx}")]
    ContextFull { pos: usize, n_ctx: usize },
    #[error("KV cache exhausted: need {needed} more blocks, {free} free")]
    KvExhausted { needed: usize, free: usize },
    /// A buffer the device could not allocate (the KV cache for a context that is too long).
    #[error("cannot allocate {what}: {bytes} bytes do not fit in memory")]
    OutOfMemory { what: &'static str, bytes: u64 },
    #[error("invalid batch: {0}")]
    Batch(String),
    /// The CUDA backend failed: a device allocation that does not fit, a kernel that does not
    /// compile or launch, a missing library.
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] kiln_cuda::CudaError),
}

impl ModelError {
    /// Whether the error is memory running out (on the host or the device): a scheduler can wait
    /// for memory, or fail just the request that asked.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            ModelError::OutOfMemory { .. } | ModelError::KvExhausted { .. } => true,
            #[cfg(feature = "cuda")]
            ModelError::Cuda(kiln_cuda::CudaError::OutOfMemory { .. }) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
