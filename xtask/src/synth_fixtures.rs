//! `cargo xtask synth-fixtures`: llama.cpp's greedy decoding on synthetic models, as kiln-model
//! test fixtures.
//!
//! Reads `crates/kiln-model/tests/fixtures/synth/cases.json` (a list of cases: a model spec for
//! `kiln_synth::from_spec`, prompts, a step count), writes each case's model to a scratch file,
//! and captures every prompt with `greedy_ids` into `<case>/<prompt>.json` in the format of the
//! llama.cpp fixtures (fixtures/llamacpp/README.md). The tests rebuild the models from the same
//! specs and check that the bytes hash to the fixtures' `model_sha256`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::llamacpp::{Capture, Job, ModelRef, check_prompt, greedy_tool, llama_commit, print_summary, temp_dir};

pub fn default_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/kiln-model/tests/fixtures/synth")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[allow(dead_code)]
    about: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    model: Map<String, Value>,
    steps: usize,
    prompts: Vec<Prompt>,
    /// How tightly the test holds kiln to the captured logits (read by kiln-model's test).
    #[serde(default)]
    #[allow(dead_code)]
    exact: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prompt {
    name: String,
    text: String,
}

pub struct Options {
    pub bin_dir: PathBuf,
    pub cases: Vec<String>,
    pub threads: usize,
    pub llama_commit: Option<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    let dir = default_fixture_dir();
    let greedy = greedy_tool(&opts.bin_dir)?;
    let commit = match &opts.llama_commit {
        Some(c) => c.clone(),
        None => llama_commit(&opts.bin_dir)?,
    };
    let list = dir.join("cases.json");
    let file: CasesFile = serde_json::from_slice(&fs::read(&list).with_context(|| list.display().to_string())?)
        .with_context(|| format!("parsing {}", list.display()))?;
    for want in &opts.cases {
        ensure!(file.cases.iter().any(|c| &c.name == want), "no case named {want:?} in {}", list.display());
    }
    let cap = Capture {
        greedy,
        threads: opts.threads,
        commit: &commit,
        out_dir: &dir,
        generator: "cargo xtask synth-fixtures (kiln-synth models; greedy_ids from /work/shared/reference)",
        tmp: temp_dir("synth-fixtures")?,
    };
    let result = (|| {
        let mut summaries = Vec::new();
        for case in file.cases.iter().filter(|c| opts.cases.is_empty() || opts.cases.contains(&c.name)) {
            let model = kiln_synth::from_spec(&case.model).with_context(|| format!("case {}", case.name))?;
            let path = cap.tmp.join(format!("{}.gguf", case.name));
            model.write_file(&path)?;
            let sha256 = format!("{:x}", Sha256::digest(fs::read(&path)?));
            let model = ModelRef { name: case.name.clone(), file_name: format!("{}.gguf", case.name), sha256, path };
            let jobs: Vec<Job> = case
                .prompts
                .iter()
                .map(|p| {
                    check_prompt(&p.name, &p.text)?;
                    Ok(Job {
                        model: model.clone(),
                        prompt_name: p.name.clone(),
                        text: &p.text,
                        ignore_eos: true,
                        max_steps: case.steps,
                    })
                })
                .collect::<Result<_>>()?;
            summaries.extend(cap.run_all(&jobs)?);
            fs::remove_file(&model.path)?;
        }
        Ok::<_, anyhow::Error>(summaries)
    })();
    let _ = fs::remove_dir_all(&cap.tmp);
    print_summary(&result?, &dir, &commit, opts.threads);
    Ok(())
}
