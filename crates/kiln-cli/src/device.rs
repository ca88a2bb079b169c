//! `--device cpu|cuda` and `--gpu-memory`: which backend a command runs on, loading a model onto
//! it (with a progress bar for the upload to the GPU), and the GPU memory report.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_model::{CpuBackend, Model};
use kiln_tokenizer::Tokenizer;
use serde::Serialize;

use crate::generate::Loaded;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the model runs: cpu, or cuda (an NVIDIA GPU; needs a kiln built with the cargo
    /// feature `cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// The most GPU memory kiln may take, e.g. 24GiB, 80GB, 12000000000 (default: what the card has
    /// free). Weights, KV cache and workspace all count; a load or a context that does not fit under
    /// it fails with the numbers.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub gpu_memory: Option<u64>,
    /// Which GPU (CUDA device ordinal).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Batch-invariant kernels: every row computed as a one-row batch computes it, so a sequence's
    /// logits do not depend on what else shares its batch (slower batches; see docs/GRPC.md).
    #[arg(long)]
    pub batch_invariant: bool,
    /// CPU: read MXFP4 weights in place from the file's memory map instead of packing them into
    /// eight-row groups at load (as llama.cpp's --no-repack): less anonymous memory, the weights
    /// stay in the page cache, slower MXFP4 products; the same results (docs/PERFORMANCE.md).
    #[arg(long)]
    pub no_repack: bool,
}

/// What `--device cuda` says in a build without the `cuda` feature.
#[cfg_attr(feature = "cuda", allow(dead_code))]
pub const NO_CUDA: &str =
    "--device cuda: this kiln was built without CUDA support (rebuild with `cargo build --release --features cuda`)";

/// `24GiB`, `24 GB`, `512MiB`, `8Gi` or a plain byte count. Binary (KiB/Ki, MiB/Mi, GiB/Gi,
/// TiB/Ti) and decimal (KB/K, MB/M, GB/G, TB/T) units.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 24GiB)"))?;
    if !(v.is_finite() && v > 0.0) || v * mult >= u64::MAX as f64 {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok((v * mult).round() as u64)
}

/// A model loaded on the CPU or on a GPU.
pub enum Engine {
    Cpu(Loaded<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Loaded<kiln_model::CudaBackend>),
}

/// Runs `$body` with `$l` bound to the engine's `Loaded<B>`, whichever backend it is on.
#[macro_export]
macro_rules! with_engine {
    ($e:expr, |$l:ident| $body:expr) => {
        match $e {
            $crate::device::Engine::Cpu($l) => $body,
            #[cfg(feature = "cuda")]
            $crate::device::Engine::Cuda($l) => $body,
        }
    };
}

/// One line of the GPU memory ledger.
#[derive(Serialize)]
pub struct LedgerLine {
    pub name: String,
    pub buffers: u64,
    pub bytes: u64,
}

/// What the GPU holds for kiln, for `--json` outputs.
#[derive(Serialize)]
pub struct GpuReport {
    pub device: String,
    pub total_bytes: u64,
    /// `--gpu-memory`, if given.
    pub cap_bytes: Option<u64>,
    /// Every live allocation, by name (weights by type, KV cache, activations, step inputs,
    /// kernel modules).
    pub ledger: Vec<LedgerLine>,
    pub ledger_bytes: u64,
    /// `cuMemGetInfo`: free on the card.
    pub free_bytes: u64,
    /// In use on the card when kiln opened it (the CUDA context, other processes), and now: the
    /// difference is what kiln holds, to compare with `ledger_bytes`.
    pub used_at_open_bytes: u64,
    pub used_bytes: u64,
    /// Seconds the weights took to reach the GPU, and their bytes.
    pub upload_s: f64,
    pub upload_bytes: u64,
}

impl Engine {
    pub fn load(path: &Path, threads: usize, dev: &DeviceArgs) -> anyhow::Result<Engine> {
        match dev.device {
            DeviceKind::Cpu => {
                if dev.gpu_memory.is_some() {
                    anyhow::bail!("--gpu-memory needs --device cuda");
                }
                load_cpu(path, threads, dev).map(Engine::Cpu)
            }
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => cuda::load(path, dev).map(Engine::Cuda),
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda => anyhow::bail!(NO_CUDA),
        }
    }

    /// The GPU memory report, on a GPU.
    pub fn gpu_report(&self) -> Option<GpuReport> {
        match self {
            Engine::Cpu(_) => None,
            #[cfg(feature = "cuda")]
            Engine::Cuda(l) => Some(cuda::report(l)),
        }
    }

    /// Where the model runs, for reports: "cpu", or "cuda:0 (NVIDIA H200)".
    pub fn label(&self) -> String {
        match self {
            Engine::Cpu(_) => "cpu".into(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(l) => {
                let d = l.model.backend.device();
                format!("cuda:{} ({})", d.ordinal(), d.name())
            }
        }
    }

    /// The default KV budget of a server on this device: `None` on the CPU (the scheduler sizes it
    /// from host memory); on a GPU, three quarters of what kiln may still take after the weights.
    pub fn kv_budget(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Engine::Cpu(_) => Ok(None),
            #[cfg(feature = "cuda")]
            Engine::Cuda(l) => Ok(Some(l.model.backend.device().available()? / 4 * 3)),
        }
    }
}

fn open(path: &Path) -> anyhow::Result<(Arc<kiln_gguf::GgufFile>, Tokenizer)> {
    let file = Arc::new(kiln_gguf::GgufFile::open(path).with_context(|| path.display().to_string())?);
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("{}: tokenizer", path.display()))?;
    Ok((file, tokenizer))
}

fn load_cpu(path: &Path, threads: usize, dev: &DeviceArgs) -> anyhow::Result<Loaded<CpuBackend>> {
    let t = Instant::now();
    let (file, tokenizer) = open(path)?;
    let backend =
        CpuBackend::new(file.clone(), threads).with_batch_invariant(dev.batch_invariant).with_packing(!dev.no_repack);
    let model = Model::load(file, backend).with_context(|| path.display().to_string())?;
    Ok(Loaded { model, tokenizer, load_s: t.elapsed().as_secs_f64(), upload: None })
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use kiln_model::CudaBackend;

    pub fn load(path: &Path, dev: &DeviceArgs) -> anyhow::Result<Loaded<CudaBackend>> {
        let t = Instant::now();
        let device = kiln_cuda::Device::new(kiln_cuda::DeviceOptions {
            ordinal: dev.gpu,
            cap: dev.gpu_memory,
            fail_alloc: None,
        })
        .context("--device cuda")?;
        let (file, tokenizer) = open(path)?;
        let total: u64 = file.tensors().iter().map(|t| file.tensor_data(t).len() as u64).sum();
        let bar = indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message("to GPU");
        let pb = bar.clone();
        device
            .check_fits(&format!("the weights of {} ({} tensors)", path.display(), file.tensors().len()), total)
            .context("--device cuda")?;
        let backend = CudaBackend::new(device.clone(), Some(Box::new(move |done, _| pb.set_position(done))))
            .with_batch_invariant(dev.batch_invariant);
        let up = Instant::now();
        let model = Model::load(file, backend).with_context(|| {
            format!("{}: loading onto {} ({} bytes of tensors)", path.display(), device.name(), total)
        })?;
        model.backend.warm_up().context("compiling kernels")?;
        model.backend.device().synchronize().context("upload")?;
        let upload_s = up.elapsed().as_secs_f64();
        bar.finish_and_clear();
        eprintln!(
            "kiln: {:.2} GB of weights on {} in {:.2} s ({:.1} GB/s)",
            total as f64 / 1e9,
            device.name(),
            upload_s,
            total as f64 / 1e9 / upload_s.max(1e-9)
        );
        Ok(Loaded { model, tokenizer, load_s: t.elapsed().as_secs_f64(), upload: Some((upload_s, total)) })
    }

    pub fn report(l: &Loaded<CudaBackend>) -> GpuReport {
        let dev = l.model.backend.device();
        let ledger: Vec<LedgerLine> =
            dev.ledger().into_iter().map(|e| LedgerLine { name: e.name, buffers: e.buffers, bytes: e.bytes }).collect();
        let (upload_s, upload_bytes) = l.upload.unwrap_or((0.0, 0));
        let (free, total) = dev.mem_info().unwrap_or((0, dev.total_memory()));
        GpuReport {
            device: dev.name().to_string(),
            total_bytes: dev.total_memory(),
            cap_bytes: dev.cap(),
            ledger_bytes: ledger.iter().map(|e| e.bytes).sum(),
            ledger,
            free_bytes: free,
            used_at_open_bytes: dev.baseline_used(),
            used_bytes: total - free,
            upload_s,
            upload_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_bytes("24GiB"), Ok(24 * (1 << 30)));
        assert_eq!(parse_bytes("24 GB"), Ok(24_000_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("1.5k"), Ok(1500));
        assert_eq!(parse_bytes("12000000000"), Ok(12_000_000_000));
        assert!(parse_bytes("0GB").is_err());
        assert!(parse_bytes("-1GB").is_err());
        assert!(parse_bytes("24 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
    }
}
