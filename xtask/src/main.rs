//! `cargo xtask` — project automation written in Rust (matklad's xtask pattern).

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
    /// Run the criterion benchmarks (quant formats, GGUF open) with short, documented settings.
    Bench {
        /// Extra arguments passed to criterion (e.g. a filter such as `dot/q4_K`).
        args: Vec<String>,
    },
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
                .args(["bench", "-p", "kiln-quant", "-p", "kiln-gguf", "--"])
                .args(["--warm-up-time", "1", "--measurement-time", "2"])
                .args(&args)
                .status()
                .context("running cargo bench")?;
            if !status.success() {
                bail!("cargo bench failed: {status}");
            }
            Ok(())
        }
    }
}
