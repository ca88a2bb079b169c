//! `cargo xtask kernels`: compile every `kernels/*.cu` for a GPU architecture (default `sm_90a`)
//! on a machine with no GPU and no CUDA toolkit, through the same `kiln_cuda::nvrtc::compile` the
//! worker runs at start-up, and print each kernel's registers, shared memory, stack and spills.
//!
//! NVRTC comes from the PyPI wheel `nvidia-cuda-nvrtc==13.0.88` (pinned to 13.0: cubins from a
//! newer NVRTC may not load on the CUDA 13.0 driver), downloaded with pip into
//! `target/nvrtc/13.0.88/` once and reused. cudarc opens `libnvrtc.so.13` by name, and glibc reads
//! `LD_LIBRARY_PATH` only at process start, so the command re-executes itself with the wheel's
//! `nvidia/cu13/lib` (where `libnvrtc-builtins.so.13.0` sits beside `libnvrtc.so.13`) on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The pinned wheel.
pub const WHEEL: &str = "nvidia-cuda-nvrtc==13.0.88";
const WHEEL_DIR: &str = "13.0.88";
/// Set in the re-executed child so it does not re-execute again.
const CHILD_ENV: &str = "KILN_XTASK_NVRTC_CHILD";

#[derive(clap::Args)]
pub struct Args {
    /// GPU architecture to compile for (what the worker passes at run time: the device's sm_XY).
    #[arg(long, default_value = "sm_90a")]
    pub arch: String,
    /// Fail when any kernel spills registers to local memory.
    #[arg(long)]
    pub deny_spills: bool,
    /// Use this folder holding libnvrtc.so.13 instead of the wheel.
    #[arg(long, value_name = "DIR")]
    pub nvrtc_lib: Option<PathBuf>,
    /// Print NVRTC's whole program log of every module.
    #[arg(long)]
    pub log: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The wheel's library folder, downloading and unpacking the wheel if needed.
fn ensure_wheel() -> Result<PathBuf> {
    let dir = root().join("target").join("nvrtc").join(WHEEL_DIR);
    let lib = dir.join("nvidia").join("cu13").join("lib");
    if lib.join("libnvrtc.so.13").is_file() && lib.join("libnvrtc-builtins.so.13.0").is_file() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dl = dir.join("download");
    eprintln!("kernels: fetching {WHEEL} with pip into {}", dl.display());
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", WHEEL, "-d"])
        .arg(&dl)
        .status()
        .context("running python3 -m pip (python3 with pip is needed to fetch NVRTC)")?;
    if !status.success() {
        bail!("pip download {WHEEL} failed ({status})");
    }
    let whl = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("no .whl in {}", dl.display()))?;
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&whl)
        .arg(&dir)
        .status()
        .context("unpacking the wheel with python3 -m zipfile")?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", whl.display());
    }
    if !lib.join("libnvrtc.so.13").is_file() {
        bail!("{} holds no nvidia/cu13/lib/libnvrtc.so.13", whl.display());
    }
    Ok(lib)
}

pub fn run(args: &Args) -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_none() {
        let lib = match &args.nvrtc_lib {
            Some(d) => d.clone(),
            None => ensure_wheel()?,
        };
        let mut path = lib.as_os_str().to_owned();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
            path.push(":");
            path.push(old);
        }
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let status = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("LD_LIBRARY_PATH", path)
            .env(CHILD_ENV, "1")
            .status()
            .context("re-running xtask with NVRTC on LD_LIBRARY_PATH")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    compile_all(args)
}

fn compile_all(args: &Args) -> Result<()> {
    use kiln_cuda::nvrtc;
    let (maj, min) = nvrtc::version().map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("== kernels: NVRTC {maj}.{min}, {}, options {}", args.arch, nvrtc::OPTIONS.join(" "));
    if (maj, min) != (13, 0) {
        eprintln!(
            "warning: NVRTC {maj}.{min} is not the 13.0 the GPU hosts' driver speaks; its cubins may not load there"
        );
    }
    let mut failed = Vec::new();
    let mut spills = Vec::new();
    let mut names: Vec<String> = Vec::new();
    println!("{:<16} {:<22} {:>5} {:>8} {:>6} {:>12}", "module", "kernel", "regs", "smem B", "stack", "spill st/ld");
    for m in nvrtc::modules() {
        let t = std::time::Instant::now();
        match nvrtc::compile(m, &args.arch) {
            Err(e) => {
                eprintln!("{e}");
                failed.push(m);
            }
            Ok(c) => {
                if args.log {
                    println!("{}", c.log);
                }
                let res = nvrtc::resources(&c.log);
                if res.is_empty() {
                    eprintln!("{m}: no ptxas resource lines in NVRTC's log:\n{}", c.log);
                    failed.push(m);
                }
                for r in &res {
                    names.push(r.name.clone());
                    let name = if r.entry { r.name.clone() } else { format!("(device fn) {}", r.name) };
                    println!(
                        "{:<16} {:<22} {:>5} {:>8} {:>6} {:>5}/{:<6}",
                        m, name, r.registers, r.shared, r.stack, r.spill_stores, r.spill_loads
                    );
                    if r.spill_stores > 0 || r.spill_loads > 0 {
                        spills.push(format!("{m}:{}", r.name));
                    }
                }
                println!(
                    "{m}: {} kernels, cubin {} bytes, {:.1} s",
                    res.iter().filter(|r| r.entry).count(),
                    c.cubin.len(),
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    // Every matrix kernel the backend asks for by name must exist.
    let missing: Vec<String> = kiln_cuda::layout::TYPES
        .iter()
        .filter_map(|t| kiln_cuda::matmul::kernel_names(*t))
        .flatten()
        .filter(|n| !names.contains(n))
        .collect();
    if failed.is_empty() && !missing.is_empty() {
        bail!("kernels missing from the compiled modules: {}", missing.join(", "));
    }
    if !failed.is_empty() {
        bail!("kernels that did not compile: {}", failed.join(", "));
    }
    if !spills.is_empty() {
        let msg = format!("kernels that spill: {}", spills.join(", "));
        if args.deny_spills {
            bail!(msg);
        }
        eprintln!("warning: {msg}");
    }
    Ok(())
}
