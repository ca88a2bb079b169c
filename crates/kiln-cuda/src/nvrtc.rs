//! Kernel compilation with NVRTC: the sources in `kernels/` are embedded in the binary and
//! compiled at run time straight to a cubin for the device's own architecture (`sm_90a` on an
//! H200). `cargo xtask kernels` goes through the same [`compile`] on a machine with no GPU, with
//! NVRTC from the PyPI wheel, and prints [`resources`] of every kernel.
//!
//! Kernels include no system headers; `#include "x.cuh"` names one of the `.cuh` files of
//! [`SOURCES`], which are handed to NVRTC as program headers.

use std::ffi::{CStr, CString, c_char, c_int};

use cudarc::nvrtc::sys;

use crate::{CudaError, Result};

/// Every kernel source and header: `(file name, text)`.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("quant.cuh", include_str!("../../../kernels/quant.cuh")),
    ("matmul.cu", include_str!("../../../kernels/matmul.cu")),
    ("ops.cu", include_str!("../../../kernels/ops.cu")),
    ("attention.cu", include_str!("../../../kernels/attention.cu")),
];

/// The options every kernel is compiled with (the architecture comes on top).
pub const OPTIONS: &[&str] = &["--std=c++17", "-default-device", "-lineinfo", "-Xptxas=-v", "--fmad=true"];

/// A compiled kernel module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The cubin for the requested architecture.
    pub cubin: Vec<u8>,
    /// NVRTC's program log, ptxas's resource lines included (see [`resources`]).
    pub log: String,
}

/// One kernel's resource use as ptxas reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelResources {
    /// The (mangled, for non-`extern "C"` functions) name.
    pub name: String,
    pub registers: u32,
    /// Static shared memory (bytes).
    pub shared: u32,
    /// Stack frame (bytes).
    pub stack: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// A `__global__` entry point (false: a device function that was not inlined).
    pub entry: bool,
}

/// The `.cu` files of [`SOURCES`]: the modules there are.
pub fn modules() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|(n, _)| *n).filter(|n| n.ends_with(".cu"))
}

fn missing() -> CudaError {
    CudaError::MissingLibrary {
        lib: "libnvrtc",
        what: "the CUDA runtime compiler, needed to build the kernels",
        hint: "install the CUDA toolkit's NVRTC (or the PyPI wheel nvidia-cuda-nvrtc==13.0.*) and put its lib folder on LD_LIBRARY_PATH",
    }
}

fn nvrtc_err(file: &str, op: &str, r: sys::nvrtcResult) -> CudaError {
    // SAFETY: the library is loaded (checked before any call); the string is static in it.
    let msg = unsafe {
        let p = sys::nvrtcGetErrorString(r);
        if p.is_null() { format!("{r:?}") } else { CStr::from_ptr(p).to_string_lossy().into_owned() }
    };
    CudaError::Compile { file: file.to_string(), log: format!("{op}: {msg}") }
}

/// Whether libnvrtc can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(missing());
    }
    let (mut a, mut b) = (0 as c_int, 0 as c_int);
    // SAFETY: the library is present; both pointers are valid.
    let r = unsafe { sys::nvrtcVersion(&mut a, &mut b) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("-", "nvrtcVersion", r));
    }
    Ok((a, b))
}

/// Compiles `file` (a `.cu` of [`SOURCES`]) to a cubin for `arch` (e.g. `"sm_90a"`).
pub fn compile(file: &str, arch: &str) -> Result<Compiled> {
    let src = SOURCES
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(_, s)| *s)
        .ok_or_else(|| CudaError::Compile { file: file.to_string(), log: "no such kernel source".into() })?;
    if !arch.starts_with("sm_") || !arch[3..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CudaError::Compile { file: file.to_string(), log: format!("bad architecture {arch:?}") });
    }
    if !available() {
        return Err(missing());
    }
    let cstr = |s: &str| {
        CString::new(s)
            .map_err(|_| CudaError::Compile { file: file.to_string(), log: "source holds a NUL byte".into() })
    };
    let c_src = cstr(src)?;
    let c_name = cstr(file)?;
    let headers: Vec<(CString, CString)> = SOURCES
        .iter()
        .filter(|(n, _)| n.ends_with(".cuh"))
        .map(|(n, s)| Ok((cstr(s)?, cstr(n)?)))
        .collect::<Result<_>>()?;
    let h_src: Vec<*const c_char> = headers.iter().map(|(s, _)| s.as_ptr()).collect();
    let h_name: Vec<*const c_char> = headers.iter().map(|(_, n)| n.as_ptr()).collect();
    let mut opts: Vec<CString> = Vec::new();
    opts.push(cstr(&format!("--gpu-architecture={arch}"))?);
    for o in OPTIONS {
        opts.push(cstr(o)?);
    }
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the program's lifetime (the CStrings outlive it); the
    // program is destroyed on every path below.
    unsafe {
        let r = sys::nvrtcCreateProgram(
            &mut prog,
            c_src.as_ptr(),
            c_name.as_ptr(),
            h_src.len() as c_int,
            h_src.as_ptr(),
            h_name.as_ptr(),
        );
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err(file, "nvrtcCreateProgram", r));
        }
        let out = compile_created(prog, file, &opt_ptrs);
        sys::nvrtcDestroyProgram(&mut prog);
        out
    }
}

/// # Safety
/// `prog` is a live program; `opts` point to live C strings.
unsafe fn compile_created(prog: sys::nvrtcProgram, file: &str, opts: &[*const c_char]) -> Result<Compiled> {
    // SAFETY: the caller's contract.
    unsafe {
        let r = sys::nvrtcCompileProgram(prog, opts.len() as c_int, opts.as_ptr());
        let mut size = 0usize;
        let mut log = String::new();
        if sys::nvrtcGetProgramLogSize(prog, &mut size) == sys::nvrtcResult::NVRTC_SUCCESS && size > 0 {
            let mut buf = vec![0u8; size];
            if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) == sys::nvrtcResult::NVRTC_SUCCESS {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                log = String::from_utf8_lossy(&buf[..end]).into_owned();
            }
        }
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            let e = nvrtc_err(file, "nvrtcCompileProgram", r);
            let head = if let CudaError::Compile { log: l, .. } = e { l } else { String::new() };
            return Err(CudaError::Compile { file: file.to_string(), log: format!("{head}\n{log}") });
        }
        let mut n = 0usize;
        let r = sys::nvrtcGetCUBINSize(prog, &mut n);
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err(file, "nvrtcGetCUBINSize", r));
        }
        if n == 0 {
            return Err(CudaError::Compile {
                file: file.to_string(),
                log: format!("NVRTC produced no cubin (is the architecture a real sm_XY?)\n{log}"),
            });
        }
        let mut cubin = vec![0u8; n];
        let r = sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char);
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err(file, "nvrtcGetCUBIN", r));
        }
        Ok(Compiled { cubin, log })
    }
}

/// Parses ptxas's `-v` lines from a program log: for each function, a
/// `Compiling entry function 'NAME' for 'sm_XY'` (or `Function properties for NAME`) line, then
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads` and
/// `Used N registers, … N bytes smem …`. Functions appear in log order, once each.
pub fn resources(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let mut cur: Option<usize> = None;
    let num_before = |s: &str, unit: &str| -> Option<u32> {
        let i = s.find(unit)?;
        s[..i].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    for line in log.lines() {
        let name = if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            rest.find('\'').map(|j| (rest[..j].to_string(), true))
        } else {
            line.find("Function properties for ")
                .map(|i| (line[i + "Function properties for ".len()..].trim().trim_end_matches(':').to_string(), false))
        };
        if let Some((name, entry)) = name {
            cur = Some(match out.iter().position(|k| k.name == name) {
                Some(p) => {
                    out[p].entry |= entry;
                    p
                }
                None => {
                    out.push(KernelResources { name, entry, ..Default::default() });
                    out.len() - 1
                }
            });
            continue;
        }
        let Some(c) = cur else { continue };
        let k = &mut out[c];
        if line.contains("stack frame") {
            k.stack = num_before(line, "bytes stack frame").unwrap_or(0);
            k.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
            k.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            k.registers = num_before(line, "registers").unwrap_or(0);
            k.shared = num_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'mv_q8_0' for 'sm_90a'\n\
ptxas info    : Function properties for mv_q8_0\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 40 registers, used 0 barriers, 1024 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'mm_f32' for 'sm_90a'\n\
ptxas info    : Function properties for mm_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 128 registers, used 1 barriers, 16896 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Function properties for _Z4tileIiEvv\n\
    16 bytes stack frame, 8 bytes spill stores, 0 bytes spill loads\n";

    #[test]
    fn parses_ptxas_lines() {
        let r = resources(SAMPLE);
        assert_eq!(
            r,
            vec![
                KernelResources {
                    name: "mv_q8_0".into(),
                    registers: 40,
                    shared: 1024,
                    stack: 8,
                    spill_stores: 4,
                    spill_loads: 12,
                    entry: true,
                },
                KernelResources {
                    name: "mm_f32".into(),
                    registers: 128,
                    shared: 16896,
                    entry: true,
                    ..Default::default()
                },
                KernelResources { name: "_Z4tileIiEvv".into(), stack: 16, spill_stores: 8, ..Default::default() },
            ]
        );
    }

    #[test]
    fn unknown_file_and_bad_arch_are_errors() {
        assert!(matches!(compile("nope.cu", "sm_90a"), Err(CudaError::Compile { .. })));
        assert!(matches!(compile("matmul.cu", "compute_90; rm"), Err(CudaError::Compile { .. })));
    }

    /// Compiles every module when libnvrtc is on the loader's path (`cargo xtask kernels` is the
    /// check CI runs; this one runs where NVRTC happens to be installed).
    #[test]
    fn compiles_every_module_when_nvrtc_is_present() {
        if !available() {
            // Without the library: a typed error, never a panic inside cudarc.
            assert!(matches!(compile("matmul.cu", "sm_90a"), Err(CudaError::MissingLibrary { .. })));
            assert!(matches!(version(), Err(CudaError::MissingLibrary { .. })));
            eprintln!("skipped: libnvrtc not found (cargo xtask kernels fetches it and runs the same compile)");
            return;
        }
        let mut names = Vec::new();
        for m in modules() {
            let c = compile(m, "sm_90a").unwrap_or_else(|e| panic!("{e}"));
            assert!(c.cubin.len() > 100, "{m}");
            let r = resources(&c.log);
            assert!(!r.is_empty(), "{m}: no ptxas lines in the log:\n{}", c.log);
            names.extend(r.into_iter().filter(|k| k.entry).map(|k| k.name));
        }
        for ty in crate::layout::TYPES {
            for n in crate::matmul::kernel_names(ty).unwrap() {
                assert!(names.contains(&n), "{n} missing");
            }
        }
    }
}
