//! `weir bench`: runs fixed pipelines as child processes and reports each against a raw limit
//! measured in the same run (sequential write + fsync of the same number of bytes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Rows per case.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Scratch directory (deleted and recreated).
    #[arg(long, default_value = "/tmp/weir-bench")]
    dir: PathBuf,
    /// Cases to run (default: all): blackhole, json, json-nocheckpoint, csv, parquet.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Workers per pipeline.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Rounds over the cases, interleaved (case order within each round), so that drifting
    /// load on the machine hits every case alike; figures are medians over the rounds, and the
    /// checkpoint overhead is a mean of per-round pairs with its 95 % confidence interval.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Also run `json` and `json-nocheckpoint` once each under `valgrind --tool=callgrind`
    /// with this many rows, and report the checkpoint overhead in instructions: a count the
    /// machine's load does not move, where the timed rounds' interval stays wide.
    #[arg(long)]
    instructions: Option<u64>,
}

struct CaseResult {
    name: String,
    rows: u64,
    seconds: f64,
    cpu_seconds: f64,
    bytes: u64,
    peak_rss: u64,
    checkpoints: u64,
}

const FIELDS: &str = r#"
      user_id: { kind: int, min: 0, max: 9999, prefix: "user_" }
      event_count: { kind: int, min: 1, max: 1000 }
      ts: { kind: timestamp, start: "2026-11-23T00:00:00Z", step: 1ms }"#;

fn spec(case: &str, rows: u64, parallelism: u32, dir: &Path) -> String {
    let out = dir.join(format!("out-{case}"));
    let state = dir.join(format!("state-{case}"));
    let enabled = case != "json-nocheckpoint";
    let sink = match case {
        "blackhole" => "{ name: out, type: blackhole }".to_string(),
        "parquet" => format!(
            "{{ name: out, type: filesystem, path: {}, format: parquet }}",
            out.display()
        ),
        "csv" => format!(
            "{{ name: out, type: filesystem, path: {}, format: csv }}",
            out.display()
        ),
        _ => format!(
            "{{ name: out, type: filesystem, path: {}, format: json }}",
            out.display()
        ),
    };
    format!(
        "name: bench-{case}\nparallelism: {parallelism}\ncheckpoint: {{ enabled: {enabled}, interval: 1s, storage: {} }}\n\
         sources:\n  - name: gen\n    type: datagen\n    count: {rows}\n    splits: {parallelism}\n    fields:{FIELDS}\n\
         sinks:\n  - {sink}\n",
        state.display()
    )
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; no other precondition.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Clears `case`'s output and checkpoint directories and writes its spec for `rows` rows: the
/// spec's path and where `weir run --summary-json` is to write the summary. `tag` keeps the
/// files of a timed run and of a callgrind run apart.
fn prepare_case(
    case: &str,
    tag: &str,
    rows: u64,
    args: &BenchArgs,
) -> Result<(PathBuf, PathBuf), String> {
    // Every round starts fresh: a kept checkpoint would resume a finished job (0 rows).
    for d in [format!("out-{case}"), format!("state-{case}")] {
        let _ = std::fs::remove_dir_all(args.dir.join(d));
    }
    let file = args.dir.join(format!("{case}.{tag}.yaml"));
    std::fs::write(&file, spec(case, rows, args.parallelism, &args.dir))
        .map_err(|e| e.to_string())?;
    Ok((file, args.dir.join(format!("{case}.{tag}.json"))))
}

/// The summary a `weir run --summary-json` wrote.
fn read_summary(summary: &Path) -> Result<serde_json::Value, String> {
    serde_json::from_slice(&std::fs::read(summary).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())
}

fn run_case(case: &str, args: &BenchArgs) -> Result<CaseResult, String> {
    let (file, summary) = prepare_case(case, "summary", args.rows, args)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cpu_before = children_cpu_seconds();
    let started = Instant::now();
    let status = Command::new(exe)
        .args(["run", "--quiet", "--summary-json"])
        .arg(&summary)
        .arg(&file)
        .env("WEIR_LOG", "warn")
        .status()
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("case {case} failed: {status}"));
    }
    let s = read_summary(&summary)?;
    Ok(CaseResult {
        name: case.to_string(),
        rows: s["records_written"].as_u64().unwrap_or(0),
        seconds: s["seconds"].as_f64().unwrap_or(wall),
        cpu_seconds: children_cpu_seconds() - cpu_before,
        bytes: dir_bytes(&args.dir.join(format!("out-{case}"))),
        peak_rss: s["peak_rss_bytes"].as_u64().unwrap_or(0),
        checkpoints: s["checkpoints"].as_u64().unwrap_or(0),
    })
}

/// One run of `case` with `rows` rows under callgrind: (user-space instructions, rows,
/// checkpoints).
fn callgrind_case(case: &str, rows: u64, args: &BenchArgs) -> Result<(u64, u64, u64), String> {
    let (file, summary) = prepare_case(case, "callgrind", rows, args)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    callgrind(&exe, &file, &summary, &[])
}

/// `weir run spec` under `valgrind --tool=callgrind`, `exe` being the weir binary: (user-space
/// instructions of every thread, records written, checkpoints completed). Instruction counts
/// do not depend on the machine's load, so two such runs tell a cost apart that timing noise
/// (±20 % here) hides. Also used by the Kafka bench.
pub fn callgrind(
    exe: &Path,
    spec: &Path,
    summary: &Path,
    env: &[(&str, &str)],
) -> Result<(u64, u64, u64), String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["run", "--quiet", "--summary-json"])
        .arg(summary)
        .arg(spec)
        .env("WEIR_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("valgrind (needed to count instructions): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} under callgrind failed: {stderr}",
            spec.display()
        ));
    }
    let ir = collected(&stderr)
        .ok_or_else(|| format!("callgrind printed no \"Collected\" line: {stderr}"))?;
    let s = read_summary(summary)?;
    Ok((
        ir,
        s["records_written"].as_u64().unwrap_or(0),
        s["checkpoints"].as_u64().unwrap_or(0),
    ))
}

/// The instruction count of callgrind's closing summary (`==pid== Collected : N`).
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

/// Checkpoint cost from instruction counts of the same job with checkpoints on and off:
/// (instructions per row without checkpoints, instructions per checkpoint, the overhead of
/// one checkpoint a second at `rows_per_sec`). Under callgrind the job runs ~50× slower, so
/// its wall-clock interval takes many more checkpoints per row than a real run: the cost per
/// checkpoint is what carries over, scaled by the real rate. `on` and `off` are
/// [`callgrind`]'s counts.
pub fn checkpoint_cost(
    on: (u64, u64, u64),
    off: (u64, u64, u64),
    rows_per_sec: f64,
) -> (f64, f64, f64) {
    let per_row = off.0 as f64 / off.1.max(1) as f64;
    let extra = on.0 as f64 - per_row * on.1 as f64;
    // A bounded job takes one final checkpoint even with checkpoints off (its last commit).
    let per_checkpoint = extra / on.2.saturating_sub(off.2).max(1) as f64;
    (
        per_row,
        per_checkpoint,
        per_checkpoint / (per_row * rows_per_sec),
    )
}

/// Sequential buffered write of `bytes` with one fsync at the end: the disk's raw rate.
fn raw_disk_rate(dir: &Path, bytes: u64) -> Result<f64, String> {
    let path = dir.join("raw-disk.bin");
    let block = vec![b'x'; 1 << 20];
    let started = Instant::now();
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(bytes as f64 / secs)
}

pub fn run(args: BenchArgs) -> u8 {
    let all = ["blackhole", "json", "json-nocheckpoint", "csv", "parquet"];
    let cases: Vec<String> = if args.cases.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        args.cases.clone()
    };
    if let Some(bad) = cases.iter().find(|c| !all.contains(&c.as_str())) {
        eprintln!("error: unknown case {bad:?}; known: {}", all.join(", "));
        return 2;
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("error: {}: {e}", args.dir.display());
        return 1;
    }
    let rounds = args.rounds.max(1);
    // runs[round][case]
    let mut runs: Vec<Vec<CaseResult>> = Vec::new();
    for round in 1..=rounds {
        let mut this = Vec::new();
        for c in &cases {
            eprintln!(
                "bench: round {round}/{rounds}: {c} ({} rows, parallelism {})",
                args.rows, args.parallelism
            );
            match run_case(c, &args) {
                Ok(r) => this.push(r),
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
        }
        runs.push(this);
    }
    let results: Vec<CaseResult> = (0..cases.len())
        .map(|i| median_run(runs.iter().map(|r| &r[i]).collect()))
        .collect();
    let json_bytes = results
        .iter()
        .filter(|r| r.name == "json")
        .map(|r| r.bytes)
        .max()
        .unwrap_or(256 << 20)
        .max(64 << 20);
    let raw = match raw_disk_rate(&args.dir, json_bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: raw disk write: {e}");
            return 1;
        }
    };
    println!(
        "raw sequential write + fsync of {:.0} MB: {:.1} MB/s",
        json_bytes as f64 / 1e6,
        raw / 1e6
    );
    println!(
        "{:<18} {:>10} {:>8} {:>12} {:>14} {:>9} {:>12} {:>9} {:>6}",
        "case", "rows", "secs", "rows/s", "rows/cpu-sec", "MB/s", "of raw disk", "RSS MiB", "ckpts"
    );
    for r in &results {
        let mbps = r.bytes as f64 / r.seconds / 1e6;
        println!(
            "{:<18} {:>10} {:>8.2} {:>12.0} {:>14.0} {:>9.1} {:>11.1}% {:>9} {:>6}",
            r.name,
            r.rows,
            r.seconds,
            r.rows as f64 / r.seconds,
            r.rows as f64 / r.cpu_seconds.max(1e-9),
            mbps,
            100.0 * mbps * 1e6 / raw,
            r.peak_rss / (1 << 20),
            r.checkpoints
        );
    }
    let rate = |n: &str| {
        results
            .iter()
            .find(|r| r.name == n)
            .map(|r| r.rows as f64 / r.seconds)
    };
    if let (Some(on), Some(off)) = (rate("json"), rate("json-nocheckpoint")) {
        println!(
            "checkpoint overhead (json, 1 s exactly-once vs off, medians): {:.1}%",
            100.0 * (1.0 - on / off)
        );
    }
    let index = |n: &str| cases.iter().position(|c| c == n);
    if let (Some(on), Some(off)) = (index("json"), index("json-nocheckpoint")) {
        let periodic = runs
            .iter()
            .map(|r| periodic_checkpoints(&r[on], &r[off]))
            .min();
        if periodic == Some(0) {
            println!(
                "note: a timed json run held no periodic checkpoint ({} rows took {:.2} s, inside one 1 s interval): the timed overhead is not a checkpoint's cost; use more --rows or --instructions",
                args.rows,
                results.iter().find(|r| r.name == "json").map_or(0.0, |r| r.seconds)
            );
        }
    }
    if let (Some(on), Some(off), true) = (index("json"), index("json-nocheckpoint"), rounds > 1) {
        for (what, per_row) in [
            (
                "wall",
                (|r: &CaseResult| r.seconds) as fn(&CaseResult) -> f64,
            ),
            ("CPU", |r: &CaseResult| r.cpu_seconds),
        ] {
            let pairs: Vec<f64> = runs
                .iter()
                .map(|r| {
                    overhead(
                        per_row(&r[on]) / r[on].rows as f64,
                        per_row(&r[off]) / r[off].rows as f64,
                    )
                })
                .collect();
            let (mean, half) = mean_ci95(&pairs);
            println!(
                "checkpoint overhead in {what} time per row over {rounds} interleaved rounds: {:.1}% ± {:.1}% (95% CI)",
                100.0 * mean,
                100.0 * half
            );
        }
    }
    if let Some(rows) = args.instructions {
        return report_instructions(rows, rate("json-nocheckpoint"), &args);
    }
    0
}

/// Runs `json` and `json-nocheckpoint` under callgrind and prints the checkpoint overhead in
/// instructions, directly and at `native` rows/s (the timed rounds' rate without checkpoints).
fn report_instructions(rows: u64, native: Option<f64>, args: &BenchArgs) -> u8 {
    eprintln!("bench: json and json-nocheckpoint under callgrind ({rows} rows)");
    let (on, off) = match (
        callgrind_case("json", rows, args),
        callgrind_case("json-nocheckpoint", rows, args),
    ) {
        (Ok(on), Ok(off)) => (on, off),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    println!(
        "instructions (callgrind, user space, {rows} rows): checkpoints on {} ({} checkpoints), off {} ({} final): +{:.2}% with a checkpoint every {:.0} rows",
        on.0,
        on.2,
        off.0,
        off.2,
        100.0 * overhead(on.0 as f64 / on.1.max(1) as f64, off.0 as f64 / off.1.max(1) as f64),
        on.1 as f64 / on.2.max(1) as f64,
    );
    if let Some(native) = native {
        let (per_row, per_checkpoint, at_native) = checkpoint_cost(on, off, native);
        println!(
            "checkpoint cost: {per_checkpoint:.0} instructions a checkpoint = the work of {:.0} rows ({per_row:.0} instructions a row); at {native:.0} rows/s with a 1 s interval: {:.3}% overhead",
            per_checkpoint / per_row,
            100.0 * at_native
        );
    }
    0
}

/// The run whose rows/s is the median of the rounds (the upper one of an even count).
fn median_run(mut runs: Vec<&CaseResult>) -> CaseResult {
    runs.sort_by(|a, b| {
        let r = |x: &CaseResult| x.rows as f64 / x.seconds.max(1e-9);
        r(a).total_cmp(&r(b))
    });
    let m = runs[runs.len() / 2];
    CaseResult {
        name: m.name.clone(),
        rows: m.rows,
        seconds: m.seconds,
        cpu_seconds: m.cpu_seconds,
        bytes: m.bytes,
        peak_rss: m.peak_rss,
        checkpoints: m.checkpoints,
    }
}

/// Checkpoints the run with checkpoints took beyond the one a bounded job always takes at its
/// end (which the run without checkpoints takes too).
fn periodic_checkpoints(on: &CaseResult, off: &CaseResult) -> u64 {
    on.checkpoints.saturating_sub(off.checkpoints)
}

/// The extra cost of `with` over `without` (seconds per row): 0.05 is 5 % more.
fn overhead(with: f64, without: f64) -> f64 {
    with / without - 1.0
}

/// Mean and the half-width of its 95 % confidence interval (Student's t, n − 1 degrees of
/// freedom): paired rounds cancel the load that drifts between rounds.
fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 97.5 % quantiles of t for 1..=30 degrees of freedom, then the normal's.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * (var / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_of_paired_overheads() {
        assert!((overhead(1.05, 1.0) - 0.05).abs() < 1e-12);
        let (m, h) = mean_ci95(&[0.02, 0.04, 0.03, 0.05, 0.01]);
        assert!((m - 0.03).abs() < 1e-12);
        // s = 0.0158, t(4) = 2.776: 2.776 × 0.0158 / √5 = 0.0196
        assert!((h - 0.0196).abs() < 1e-3, "{h}");
        assert!(mean_ci95(&[0.1]).1.is_nan());
    }

    #[test]
    fn callgrind_counts_and_the_cost_of_a_checkpoint() {
        let err = "==12== Events    : Ir\n==12== Collected : 123456789\n==12==\n";
        assert_eq!(collected(err), Some(123_456_789));
        assert_eq!(collected("no summary"), None);
        // 1,000 instructions a row; 10 more checkpoints than the run without (whose one is
        // its final commit) cost 50,000 more: 5,000 each, the work of 5 rows, which at
        // 1,000,000 rows/s is 0.0005 % of a second's work.
        let (per_row, per_cp, at) =
            checkpoint_cost((1_050_000, 1_000, 11), (1_000_000, 1_000, 1), 1e6);
        assert_eq!((per_row, per_cp), (1_000.0, 5_000.0));
        assert!((at - 5e-6).abs() < 1e-12, "{at}");
    }

    #[test]
    fn the_median_run_is_the_middle_rate() {
        let r = |secs: f64| CaseResult {
            name: "json".into(),
            rows: 100,
            seconds: secs,
            cpu_seconds: secs,
            bytes: 0,
            peak_rss: 0,
            checkpoints: 0,
        };
        let (a, b, c) = (r(1.0), r(3.0), r(2.0));
        assert_eq!(median_run(vec![&a, &b, &c]).seconds, 2.0);
        // Both runs took only the final checkpoint: none fell inside the timed run.
        let with = |checkpoints| CaseResult {
            checkpoints,
            ..r(1.0)
        };
        assert_eq!(periodic_checkpoints(&with(1), &with(1)), 0);
        assert_eq!(periodic_checkpoints(&with(4), &with(1)), 3);
    }
}
