//! `cargo xtask f64-reference`: the second reference of the kiln-model llama.cpp tests, a float64
//! forward pass (numpy over gguf-py's dequantized weights, `f64_reference.py`) along each
//! fixture's teacher-forced path.
//!
//! llama.cpp rounds (it quantizes activations inside its matrix products, keeps the KV cache in
//! f16, uses approximate `expf`/GELU), so it is itself a few percent of the logit range away from
//! the exact computation. For every fixture `<model>/<prompt>.json` this writes
//! `<model>/f64/<prompt>.json` with, per step, that disagreement: max |llama.cpp − f64| over the
//! fixture's top and probe ids, divided by the step's range. The test allows kiln up to 1% of the
//! range plus twice that disagreement (REFERENCE.md's rule). The fixtures README describes the
//! format.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The Python program (run with `python -c`).
const SCRIPT: &str = include_str!("f64_reference.py");

/// Options of `cargo xtask f64-reference` (flags are documented in main.rs).
pub struct Options {
    pub models: Vec<String>,
    pub prompts: Vec<String>,
    pub python: Option<PathBuf>,
    pub fixture_dir: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let python = match &opts.python {
        Some(p) => p.clone(),
        None => kiln_testkit::oracle_python(),
    };
    let mut models: Vec<String> = Vec::new();
    for e in fs::read_dir(&opts.fixture_dir).with_context(|| format!("reading {}", opts.fixture_dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            models.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    models.sort();
    if !opts.models.is_empty() {
        for m in &opts.models {
            ensure!(models.contains(m), "no fixture folder {m:?} in {}", opts.fixture_dir.display());
        }
        models.retain(|m| opts.models.contains(m));
    }
    let mut done = 0;
    for model in &models {
        let dir = opts.fixture_dir.join(model);
        let mut fixtures: Vec<PathBuf> = fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        fixtures.retain(|p| {
            p.extension().is_some_and(|x| x == "json")
                && (opts.prompts.is_empty()
                    || opts.prompts.iter().any(|n| p.file_stem().is_some_and(|s| s == n.as_str())))
        });
        fixtures.sort();
        if fixtures.is_empty() {
            continue;
        }
        for f in &fixtures {
            let fx: Value =
                serde_json::from_slice(&fs::read(f)?).with_context(|| format!("parsing {}", f.display()))?;
            ensure!(fx["model"] == model.as_str(), "{}: model field is {} (folder {model})", f.display(), fx["model"]);
        }
        let spec = kiln_fetch::find(model)?;
        let model_path = kiln_fetch::ensure(spec, true).with_context(|| format!("fetching {model}"))?;
        eprintln!("{model}: {} fixtures ...", fixtures.len());
        let status = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&model_path)
            .arg(dir.join("f64"))
            .args(&fixtures)
            .status()
            .with_context(|| format!("running {}", python.display()))?;
        if !status.success() {
            bail!("{model}: the f64 reference failed ({status})");
        }
        done += fixtures.len();
    }
    ensure!(done > 0, "nothing to do (check --models and --prompts)");
    println!("{done} references written");
    Ok(())
}
