//! Compiled kernels cached on disk: NVRTC runs once per kernel file, source text and GPU
//! architecture, then the cubin is read back (`$KILN_CACHE/kernels`, by default
//! `~/.cache/kiln/kernels`).

use std::path::PathBuf;

use crate::{Result, nvrtc};

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CACHE") {
        return Some(PathBuf::from(d).join("kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln/kernels"))
}

/// FNV-1a over every kernel source and the compiler options (a header change recompiles every
/// file that may include it).
fn sources_hash() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let texts = nvrtc::SOURCES.iter().flat_map(|(name, text)| [*name, *text]).chain(nvrtc::OPTIONS.iter().copied());
    for t in texts {
        for b in t.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The cubin of `kernels/<file>` for `arch`, from the disk cache or compiled now (and cached; a
/// cache that cannot be written is skipped).
pub fn cached_cubin(file: &str, arch: &str) -> Result<Vec<u8>> {
    let path = cache_dir().map(|d| d.join(format!("{file}-{arch}-{:016x}.cubin", sources_hash())));
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
        && !bytes.is_empty()
    {
        return Ok(bytes);
    }
    let compiled = nvrtc::compile(file, arch)?;
    if let Some(p) = &path
        && p.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok())
    {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &compiled.cubin).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(compiled.cubin)
}
