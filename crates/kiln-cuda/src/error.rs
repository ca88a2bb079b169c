/// Errors from the CUDA layer. None of them is a panic: a missing driver or library, a kernel that
/// does not compile or launch, and an allocation that does not fit are all values.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library is not installed or not on the loader's path.
    #[error("{lib} not found ({what}): {hint}")]
    MissingLibrary { lib: &'static str, what: &'static str, hint: &'static str },
    /// No CUDA device, or the one asked for does not exist.
    #[error("no CUDA device {ordinal}: {msg}")]
    NoDevice { ordinal: usize, msg: String },
    /// A device allocation that did not fit (in the card, or under `--gpu-memory`).
    #[error("out of GPU memory allocating {what}: {bytes} bytes needed, {free} free{cap}")]
    OutOfMemory { what: String, bytes: u64, free: u64, cap: String },
    /// NVRTC rejected a kernel source.
    #[error("kernel {file}: compile error:\n{log}")]
    Compile { file: String, log: String },
    /// A driver call failed.
    #[error("CUDA {op}: {msg}")]
    Driver { op: String, msg: String },
    /// cuBLAS failed.
    #[error("cuBLAS {op}: {msg}")]
    Cublas { op: String, msg: String },
    /// A kernel launch was refused or a kernel faulted.
    #[error("kernel {kernel}: {msg}")]
    Launch { kernel: String, msg: String },
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

impl CudaError {
    pub(crate) fn driver(op: impl Into<String>, e: impl std::fmt::Display) -> CudaError {
        CudaError::Driver { op: op.into(), msg: e.to_string() }
    }
}
