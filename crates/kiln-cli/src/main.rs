//! `kiln` — the command line of the kiln inference worker.

mod inspect;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "GGUF language model inference worker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a GGUF file: header, metadata, tensor table, per-type totals, parameter count.
    Inspect {
        /// A GGUF file, or the name of a known model (fetched on first use). Default: the default
        /// model (smollm2-135m-instruct-q4_1). Known models: smollm2-135m-instruct-q4_1,
        /// gemma3-270m-q4_k_m.
        model: Option<String>,
        /// Print one JSON object instead of text (fields documented in the README).
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for input kiln cannot use (a malformed or unreadable model file).
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { model, json } => {
            let path = match resolve_model(model.as_deref()) {
                Ok(p) => p,
                Err(ResolveError::BadInput(msg)) => return fail(EXIT_BAD_INPUT, &msg),
                Err(ResolveError::Fetch(msg)) => return fail(1, &msg),
            };
            match kiln_gguf::GgufFile::open(&path) {
                Ok(file) => {
                    let report = inspect::Report::new(&path.display().to_string(), &file);
                    let out = if json { report.to_json() } else { report.to_text() };
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_BAD_INPUT, &format!("{}: {e}", path.display())),
            }
        }
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("kiln: error: {msg}");
    ExitCode::from(code)
}

/// Why a model could not be resolved: bad input (exit 2) or a failed fetch (exit 1).
enum ResolveError {
    BadInput(String),
    Fetch(String),
}

/// A path if one exists there, else a known model name (fetched on first use), else the default.
fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ResolveError> {
    let spec = match arg {
        Some(a) if std::path::Path::new(a).exists() => return Ok(PathBuf::from(a)),
        Some(a) => kiln_fetch::find(a).map_err(|_| {
            ResolveError::BadInput(format!("{a}: no such file, and not a known model ({})", known_models()))
        })?,
        None => kiln_fetch::find(kiln_fetch::DEFAULT_MODEL).map_err(|e| ResolveError::Fetch(e.to_string()))?,
    };
    kiln_fetch::ensure(spec, true).map_err(|e| ResolveError::Fetch(format!("fetching {}: {e}", spec.name)))
}

fn known_models() -> String {
    kiln_fetch::MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}
