//! `cargo xtask gpu-test --bundle DIR`: builds, here, everything the GPU host needs to run every
//! GPU test — the `kiln` binary and the CUDA test binaries with the `cuda` feature, and the
//! `xtask` binary (it makes the models there with `synth`) — into DIR/bin, small enough to carry.
//! On the GPU host, `bash xtask/gpu/run.sh DIR` runs them all and prints one table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The CUDA test targets of kiln-model.
const TESTS: [&str; 3] = ["cuda_ops", "cuda_oom", "cuda_e2e"];

fn cargo(args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("cargo {} failed: {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy_stripped(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst).with_context(|| format!("{} -> {}", src.display(), dst.display()))?;
    // Debug sections are most of a binary's size; line tables are not needed there.
    let _ = Command::new("strip").arg("--strip-debug").arg(dst).status();
    Ok(())
}

pub fn bundle(dir: &Path) -> Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    cargo(&["build", "--release", "-p", "kiln-cli", "--features", "cuda"])?;
    cargo(&["build", "--release", "-p", "xtask", "--features", "cuda"])?;
    let target = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    copy_stripped(&target.join("release/kiln"), &bin.join("kiln"))?;
    copy_stripped(&target.join("release/xtask"), &bin.join("xtask"))?;
    let json =
        cargo(&["test", "--release", "-p", "kiln-model", "--features", "cuda", "--no-run", "--message-format=json"])?;
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let name = v["target"]["name"].as_str().unwrap_or("");
        if let (true, Some(exe)) = (TESTS.contains(&name), v["executable"].as_str()) {
            copy_stripped(Path::new(exe), &bin.join(name))?;
        }
    }
    for t in TESTS {
        if !bin.join(t).exists() {
            bail!("test binary {t} was not built");
        }
    }
    let mut total = 0;
    for e in std::fs::read_dir(&bin)? {
        let e = e?;
        total += e.metadata()?.len();
        println!("{:>12}  {}", e.metadata()?.len(), e.path().display());
    }
    println!("{total:>12}  in all; on the GPU host: bash xtask/gpu/run.sh {}", dir.display());
    Ok(())
}
