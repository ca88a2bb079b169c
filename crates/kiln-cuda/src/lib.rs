//! CUDA for kiln: device and stream setup, a VRAM ledger that names every allocation, kernel
//! modules compiled at run time from the sources in `kernels/` (NVRTC), cuBLAS, and launch
//! wrappers that check every launch. Knows nothing of GGUF files or models.
//!
//! Libraries are loaded at run time (cudarc's dynamic loading): a build needs no CUDA, and a
//! machine without the driver or a library gets a [`CudaError::MissingLibrary`], never a panic.

mod cache;
mod device;
mod error;
pub mod layout;
pub mod matmul;
pub mod nvrtc;

pub use device::{Arg, DevBuf, Device, DeviceOptions, Func, LedgerEntry, driver_present};
pub use error::{CudaError, Result};
pub use matmul::Launch;
