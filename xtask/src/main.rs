//! `cargo xtask` — project automation written in Rust (matklad's xtask pattern).

mod f64ref;
mod gpu_test;
mod kernels;
mod llamacpp;
mod regress;
mod sweep;
mod synth;
mod synth_fixtures;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kiln project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch test models into the cache (all known models when none are named), sha256-checked.
    FetchModels {
        /// Model names (see `kiln inspect --help` for the list).
        names: Vec<String>,
    },
    /// Run every criterion benchmark (quant formats, GGUF open, tokenizer, sampling, a CPU decode
    /// step, the scheduler's step) with short settings; docs/PERFORMANCE.md has the results.
    Bench {
        /// Extra arguments passed to criterion (e.g. a filter such as `dot/q4_K`).
        args: Vec<String>,
    },
    /// Capture llama.cpp greedy decoding (ids + reduced logits) as kiln-model test fixtures.
    ///
    /// Runs `greedy_ids --dump-logits` for every (model, prompt) of
    /// crates/kiln-model/tests/fixtures/llamacpp/prompts.json and writes
    /// <model>/<prompt>.json there (README.md in that folder describes the format).
    LlamacppFixtures {
        /// Folder with llama.cpp's `greedy_ids` and `llama-completion` (made by
        /// `bash /work/shared/reference/build_llamacpp.sh DIR`: DIR/build-cpu/bin).
        #[arg(long, value_name = "DIR")]
        bin_dir: PathBuf,
        /// Models to capture (default: the `models` list of prompts.json).
        #[arg(long, num_args = 1.., value_name = "NAME")]
        models: Vec<String>,
        /// Only these prompt names (default: all of prompts.json).
        #[arg(long, num_args = 1.., value_name = "NAME")]
        prompts: Vec<String>,
        /// Greedy steps per --ignore-eos capture (EOS variants use their `eos_max_steps`).
        #[arg(long, default_value_t = 24)]
        steps: usize,
        /// CPU threads for llama.cpp (-t); the committed fixtures use 2.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Prompt list (default: prompts.json in the fixture folder).
        #[arg(long, value_name = "FILE")]
        prompts_file: Option<PathBuf>,
        /// Where fixtures go (default: crates/kiln-model/tests/fixtures/llamacpp).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// llama.cpp commit to record (default: read from `llama-completion --version`).
        #[arg(long, value_name = "SHA")]
        llama_commit: Option<String>,
    },
    /// Compile every kernels/*.cu with NVRTC (the PyPI wheel, no GPU needed) for a GPU
    /// architecture and print each kernel's registers, shared memory, stack and spills.
    Kernels(kernels::Args),
    /// Write a random-weight GGUF with a real model's layout (deterministic from --seed).
    Synth {
        #[command(subcommand)]
        model: SynthCmd,
    },
    /// Capture llama.cpp greedy decoding on synthetic models (kiln-synth) as kiln-model fixtures.
    ///
    /// For every case of crates/kiln-model/tests/fixtures/synth/cases.json, writes the model,
    /// runs `greedy_ids --dump-logits` on each prompt and writes <case>/<prompt>.json there.
    SynthFixtures {
        /// Folder with llama.cpp's `greedy_ids` and `llama-completion`.
        #[arg(long, value_name = "DIR")]
        bin_dir: PathBuf,
        /// Only these cases (default: all).
        #[arg(long, num_args = 1.., value_name = "NAME")]
        cases: Vec<String>,
        /// CPU threads for llama.cpp (-t); the committed fixtures use 2.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// llama.cpp commit to record (default: read from `llama-completion --version`).
        #[arg(long, value_name = "SHA")]
        llama_commit: Option<String>,
    },
    /// kiln against llama.cpp on random gpt-oss shapes (kiln-synth models, teacher-forced along
    /// llama.cpp's greedy path; every logit of every step compared). Prints each trial's worst
    /// |kiln − llama.cpp| as a fraction of the step's logit range.
    Sweep {
        /// Folder with llama.cpp's `greedy_ids`.
        #[arg(long, value_name = "DIR")]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Greedy steps per trial.
        #[arg(long, default_value_t = 12)]
        steps: usize,
    },
    /// Build the GPU tests' bundle: `kiln` and the CUDA test binaries (feature `cuda`) and this
    /// `xtask` (for `synth` there) into DIR/bin, stripped, to carry to the GPU host; there,
    /// `bash xtask/gpu/run.sh DIR` runs every GPU test and prints one table.
    GpuTest {
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
    },
    /// Accuracy and speed baselines: check against tests/regress/*.json (a table; exit 1 on a
    /// regression), or capture them with --update. docs/REGRESS.md describes every case.
    Regress(regress::Args),
    /// Compute the float64 reference of the llama.cpp fixtures (numpy over gguf-py's weights).
    ///
    /// For every fixture <model>/<prompt>.json of crates/kiln-model/tests/fixtures/llamacpp,
    /// teacher-forces its path through a float64 forward pass and writes
    /// <model>/f64/<prompt>.json: per step, how far llama.cpp's logits are from the exact ones
    /// (max |llama.cpp − f64| / range). Needs Python with gguf-py and numpy.
    F64Reference {
        /// Only these model folders (default: all).
        #[arg(long, num_args = 1.., value_name = "NAME")]
        models: Vec<String>,
        /// Only these prompt names (file stems; default: all).
        #[arg(long, num_args = 1.., value_name = "NAME")]
        prompts: Vec<String>,
        /// Python with `gguf` and `numpy` (default: $KILN_ORACLE_PYTHON, else the oracle venv in
        /// target/oracle-venv that the tests use).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SynthCmd {
    /// gpt-oss: MXFP4 experts, Q8_0 attention/embedding/output, F32 norms/biases/router/sinks,
    /// the `gpt-oss.*` metadata; a byte-level or the real o200k_harmony vocabulary.
    GptOss(synth::GptOssArgs),
    /// Llama family: any shape and tensor-type mix (K-quants included), byte-level vocabulary.
    Llama(synth::LlamaArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::FetchModels { names } => {
            let specs: Vec<_> = if names.is_empty() {
                kiln_fetch::MODELS.iter().collect()
            } else {
                names.iter().map(|n| kiln_fetch::find(n)).collect::<Result<_, _>>()?
            };
            for spec in specs {
                let path = kiln_fetch::ensure(spec, true).with_context(|| format!("fetching {}", spec.name))?;
                println!("{}\t{}", spec.name, path.display());
            }
            Ok(())
        }
        Cmd::Bench { args } => {
            let status = Command::new(env!("CARGO"))
                .args(["bench", "-p", "kiln-quant", "-p", "kiln-gguf", "-p", "kiln-tokenizer", "-p", "kiln-sample"])
                .args(["-p", "kiln-model", "-p", "kiln-sched", "--"])
                .args(["--warm-up-time", "1", "--measurement-time", "2"])
                .args(&args)
                .status()
                .context("running cargo bench")?;
            if !status.success() {
                bail!("cargo bench failed: {status}");
            }
            Ok(())
        }
        Cmd::Kernels(args) => kernels::run(&args),
        Cmd::Synth { model: SynthCmd::GptOss(args) } => synth::run_gpt_oss(&args),
        Cmd::Synth { model: SynthCmd::Llama(args) } => synth::run_llama(&args),
        Cmd::Sweep { bin_dir, trials, seed, steps } => sweep::run(&sweep::Options { bin_dir, trials, seed, steps }),
        Cmd::SynthFixtures { bin_dir, cases, threads, llama_commit } => {
            synth_fixtures::run(&synth_fixtures::Options { bin_dir, cases, threads, llama_commit })
        }
        Cmd::GpuTest { bundle } => gpu_test::bundle(&bundle),
        Cmd::Regress(args) => regress::run(&args),
        Cmd::F64Reference { models, prompts, python } => {
            f64ref::run(&f64ref::Options { models, prompts, python, fixture_dir: llamacpp::default_fixture_dir() })
        }
        Cmd::LlamacppFixtures { bin_dir, models, prompts, steps, threads, prompts_file, out_dir, llama_commit } => {
            let dir = llamacpp::default_fixture_dir();
            llamacpp::run(&llamacpp::Options {
                bin_dir,
                models,
                prompts,
                steps,
                threads,
                prompts_file: prompts_file.unwrap_or_else(|| dir.join("prompts.json")),
                out_dir: out_dir.unwrap_or(dir),
                llama_commit,
            })
        }
    }
}
