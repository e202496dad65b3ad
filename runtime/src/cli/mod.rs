//! The `weir` command: run, validate, savepoint, bench.

pub mod bench;
mod progress;
mod run;
mod savepoint;
mod validate;

use clap::{Parser, Subcommand};

use crate::registry::Registry;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Run checkpointed streaming pipelines with exactly-once sinks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline (resumes from its latest checkpoint when there is one).
    Run(run::RunArgs),
    /// Check a pipeline file and report every error with its path.
    Validate(validate::ValidateArgs),
    /// Take a savepoint of a running job through its admin API.
    Savepoint(savepoint::SavepointArgs),
    /// Measure throughput against the raw limits of this machine.
    Bench(bench::BenchArgs),
}

/// Runs the command line with the built-in connectors.
pub fn main() -> std::process::ExitCode {
    main_with(Registry::with_builtins())
}

/// Runs the command line with a registry that may hold custom connectors.
pub fn main_with(registry: Registry) -> std::process::ExitCode {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir_runtime=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal (a worker pod's log is read with kubectl and log search),
        // and not there either when NO_COLOR is set to anything (no-color.org).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let code = match cli.command {
        Command::Validate(a) => validate::run(&registry, a),
        Command::Run(a) => runtime().block_on(run::run(registry, a)),
        Command::Savepoint(a) => runtime().block_on(savepoint::run(a)),
        Command::Bench(a) => bench::run(a),
    };
    std::process::ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Room for CEL evaluation, which recurses per level of an expression (bounded to 32 at
        // compile time, ~25 KiB a level in a debug build) on top of the pipeline's own frames.
        .thread_stack_size(8 << 20)
        .build()
        .expect("tokio runtime")
}

/// Reads and parses a spec file, printing every error; `None` after printing.
pub(crate) fn load_spec(path: &str) -> Result<weir_crds::PipelineSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    weir_crds::PipelineSpec::from_yaml(&text).map_err(|e| format!("{path}: {e}"))
}

/// Peak resident memory of this process in bytes (Linux), for summaries and benchmarks.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
