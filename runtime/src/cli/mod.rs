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
    tune_memory();
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

/// Memory settings of the process, set before any thread starts.
///
/// - **No transparent huge pages.** mimalloc (`main.rs`) asks the kernel for huge pages on its
///   arenas, so every fresh 2 MiB stretch it touched was zeroed and kept resident whole, however
///   little of it was in use, and zeroing them was 8 % of a Kafka → Kafka job's CPU (`perf`). A
///   job over 500,000 × 1 KiB records held 101–119 MiB at peak with them and 86–90 MiB without,
///   at the same CPU (`perf stat`, four interleaved runs each). `PR_SET_THP_DISABLE` holds for
///   the whole process whatever the host's THP mode; `MIMALLOC_ALLOW_THP=1` keeps them.
/// - **glibc keeps what C libraries free.** librdkafka's message copies, socket buffers and
///   request buffers come from glibc's malloc, which gives memory back as soon as more than a
///   threshold is free at the top of a heap (128 KiB, adjusted as it goes) and maps each buffer
///   beyond another threshold on its own: the same job took 51,000–70,000 page faults, each a
///   zeroed page, for memory it had just freed. With 64 MiB and 32 MiB (glibc's largest mapping
///   threshold) it took 12,000–14,000 and 9 % less CPU, at 4 MiB more peak RSS (five interleaved
///   runs each). A `GLIBC_TUNABLES` setting of either wins.
fn tune_memory() {
    #[cfg(target_os = "linux")]
    if std::env::var("MIMALLOC_ALLOW_THP").as_deref() != Ok("1") {
        // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process's memory map.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        for (param, name, bytes) in [
            (libc::M_TRIM_THRESHOLD, "trim_threshold", 64 << 20),
            (libc::M_MMAP_THRESHOLD, "mmap_threshold", 32 << 20),
        ] {
            if !tuned.contains(&format!("glibc.malloc.{name}=")) {
                // SAFETY: mallopt only sets a parameter of glibc's allocator; no other thread
                // exists yet.
                unsafe { libc::mallopt(param, bytes) };
            }
        }
    }
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
