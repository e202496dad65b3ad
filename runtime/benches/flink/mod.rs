//! Apache Flink run beside weir from a bench: PyFlink 2.3.0's local MiniCluster (one JVM), set up
//! once by `setup.sh` under `$WEIR_FLINK_HOME` (default `~/.cache/weir-flink`), a job per run
//! from a script in this folder. Enabled by `WEIR_BENCH_FLINK=1`: off by default, so that
//! `cargo bench` needs neither Python nor a JVM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one Flink job cost, read from its JVM's /proc before the driver stops it.
#[derive(Debug, Clone, Copy)]
pub struct FlinkRun {
    /// Job start → finished as Flink reports it: no JVM start, MiniCluster start or planning.
    pub net_seconds: f64,
    /// The driver process from spawn to exit, everything included.
    pub process_seconds: f64,
    /// utime + stime of the JVM (all its threads) plus the Python driver's own.
    pub cpu: f64,
    /// The JVM's peak resident set (VmHWM).
    pub peak_rss_kib: u64,
}

#[derive(serde::Deserialize)]
struct Result {
    net_runtime_s: f64,
    jvm_cpu_s: f64,
    jvm_peak_rss_kib: u64,
    driver_cpu_s: f64,
}

pub struct Flink {
    python: String,
    jar: PathBuf,
    dir: PathBuf,
}

/// `WEIR_BENCH_FLINK=1`: whether the bench runs Flink's side too.
pub fn enabled() -> bool {
    std::env::var("WEIR_BENCH_FLINK").is_ok_and(|v| v == "1")
}

impl Flink {
    /// Installs Flink (first time only) and returns the way to run its jobs.
    pub fn setup() -> Flink {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flink");
        let o = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("bench flink: cannot run setup.sh");
        assert!(
            o.status.success(),
            "bench flink: setup.sh failed: {}",
            o.status
        );
        let python = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .expect("bench flink: setup.sh printed no python")
            .to_string();
        let home = std::env::var("WEIR_FLINK_HOME").map_or_else(
            |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/weir-flink"),
            PathBuf::from,
        );
        Flink {
            python,
            jar: home.join("jars/flink-sql-connector-kafka-5.0.0-2.2.jar"),
            dir,
        }
    }

    /// Runs `kafka_job.py`: `input` → `output` exactly-once in `format` (`raw` or `json`), with
    /// checkpoints and the driver's log under `work`.
    pub fn kafka(
        &self,
        work: &Path,
        bootstrap: &str,
        input: &str,
        output: &str,
        format: &str,
    ) -> FlinkRun {
        let checkpoints = work.join(format!("flink-ckpt-{output}"));
        let log = work.join(format!("flink-{output}.log"));
        let t0 = Instant::now();
        let o = Command::new(&self.python)
            .arg(self.dir.join("kafka_job.py"))
            .args(["--jar", &self.jar.display().to_string()])
            .args([
                "--bootstrap",
                bootstrap,
                "--in-topic",
                input,
                "--out-topic",
                output,
            ])
            .args(["--format", format])
            .args(["--checkpoints", &checkpoints.display().to_string()])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .output()
            .expect("bench flink: cannot run kafka_job.py");
        let process_seconds = t0.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
        let Some(result) = result.filter(|_| o.status.success()) else {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            panic!(
                "bench flink: the {format} job {input} → {output} failed ({}):\n{stdout}\n{}",
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        };
        let r: Result = serde_json::from_str(result)
            .unwrap_or_else(|e| panic!("bench flink: bad RESULT line {result:?}: {e}"));
        let _ = std::fs::remove_dir_all(&checkpoints);
        let _ = std::fs::remove_file(&log);
        FlinkRun {
            net_seconds: r.net_runtime_s,
            process_seconds,
            cpu: r.jvm_cpu_s + r.driver_cpu_s,
            peak_rss_kib: r.jvm_peak_rss_kib,
        }
    }
}
