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

fn run_case(case: &str, args: &BenchArgs) -> Result<CaseResult, String> {
    let file = args.dir.join(format!("{case}.yaml"));
    std::fs::write(&file, spec(case, args.rows, args.parallelism, &args.dir))
        .map_err(|e| e.to_string())?;
    let summary = args.dir.join(format!("{case}.summary.json"));
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
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
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
    let mut results = Vec::new();
    for c in &cases {
        eprintln!(
            "bench: {c} ({} rows, parallelism {})",
            args.rows, args.parallelism
        );
        match run_case(c, &args) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
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
            "checkpoint overhead (json, 1 s exactly-once vs off): {:.1}%",
            100.0 * (1.0 - on / off)
        );
    }
    0
}
