//! A crash-test kit for connectors written against [`crate::api`]: run a pipeline with your
//! connector in your own `weir` binary, kill it at every step of the two-phase commit and at
//! random moments, restart it from its checkpoints, and check what it wrote with your own reader.
//! It is how weir's own connectors are tested (the crash points are [`crate::fault`]'s).
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use weir_runtime::testkit::{exactly_once, prove_recovery, Job};
//!
//! # fn read_my_store() -> BTreeMap<i64, usize> { BTreeMap::new() }
//! # fn clear_my_store() {}
//! // In an integration test of your crate: `env!("CARGO_BIN_EXE_<your binary>")`.
//! let job = Job::new("target/debug/my-weir", "/tmp/my-pipeline.yaml");
//! prove_recovery(
//!     &job,
//!     &[("after_precommit", 3), ("after_manifest", 3)],
//!     3,
//!     (Duration::from_millis(300), Duration::from_secs(2)),
//!     || clear_my_store(),            // before each case: empty output, no checkpoint
//!     |case| exactly_once(&read_my_store(), 3000).unwrap_or_else(|e| panic!("{case}: {e}")),
//! );
//! ```

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every two-phase-commit step a job can be crashed at (see ARCHITECTURE.md's contract).
pub use crate::fault::POINTS;

/// A pipeline run by the `weir` binary that has the connector under test registered.
#[derive(Clone, Debug)]
pub struct Job {
    bin: PathBuf,
    spec: PathBuf,
    env: Vec<(String, String)>,
    limit: Duration,
}

impl Job {
    /// `bin`: your binary (`env!("CARGO_BIN_EXE_<name>")` in an integration test), whose
    /// `main` is [`crate::cli::main_with`] on your registry; `spec`: the pipeline file.
    pub fn new(bin: impl Into<PathBuf>, spec: impl Into<PathBuf>) -> Job {
        Job {
            bin: bin.into(),
            spec: spec.into(),
            env: Vec::new(),
            limit: Duration::from_secs(300),
        }
    }

    /// An environment variable of every run (a service's URL, credentials).
    pub fn env(mut self, key: &str, value: &str) -> Job {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The longest a run may take before it is killed and the test fails (default 5 min).
    pub fn time_limit(mut self, limit: Duration) -> Job {
        self.limit = limit;
        self
    }

    fn spawn(&self, fault: Option<&str>) -> Child {
        let mut c = Command::new(&self.bin);
        c.arg("run")
            .arg("--quiet")
            .arg(&self.spec)
            .env("WEIR_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match fault {
            Some(f) => c.env("WEIR_FAULT", f),
            None => c.env_remove("WEIR_FAULT"),
        };
        c.spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()))
    }

    /// Waits at most `limit` (then kills); the log is read on a thread so a chatty job never
    /// blocks on a full pipe.
    fn finish(&self, child: Child, limit: Duration) -> (Output, bool) {
        let pid = child.id() as i32;
        let waiter = std::thread::spawn(move || child.wait_with_output());
        let deadline = Instant::now() + limit;
        let mut killed = false;
        while !waiter.is_finished() {
            if Instant::now() >= deadline {
                // SAFETY: the child is ours and not yet reaped (the waiter has not returned).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = waiter
            .join()
            .expect("waiter thread")
            .expect("waiting for the job");
        (out, killed)
    }

    /// Runs until the job ends (resuming from its newest checkpoint, as a restarted worker
    /// does); panics with its log unless it finished.
    pub fn run_to_completion(&self) {
        let (out, killed) = self.finish(self.spawn(None), self.limit);
        assert!(
            !killed,
            "the job still ran after {:?}: killed\n{}",
            self.limit,
            log(&out)
        );
        assert!(
            out.status.success(),
            "the job failed ({}):\n{}",
            out.status,
            log(&out)
        );
    }

    /// Runs with a crash armed at the `hit`-th pass of `point` (one of [`POINTS`]); panics
    /// unless the run died there by SIGKILL (a job that ended first tested nothing: give it
    /// more input or a lower `hit`).
    pub fn crash_at(&self, point: &str, hit: u32) {
        assert!(
            POINTS.contains(&point),
            "unknown crash point {point:?}; known: {POINTS:?}"
        );
        let fault = format!("{point}:{hit}");
        let (out, killed) = self.finish(self.spawn(Some(&fault)), self.limit);
        assert!(
            !killed && out.status.signal() == Some(libc::SIGKILL),
            "{fault} did not crash the job ({}):\n{}",
            out.status,
            log(&out)
        );
    }

    /// Runs and kills it with SIGKILL after `after`; false when it had already ended.
    pub fn kill_after(&self, after: Duration) -> bool {
        let child = self.spawn(None);
        let (out, killed) = self.finish(child, after);
        if !killed {
            assert!(
                out.status.success(),
                "the job failed before the kill ({}):\n{}",
                out.status,
                log(&out)
            );
        }
        killed
    }
}

fn log(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The recovery proof for one connector. For every `(point, hit)`: `reset` (empty the output
/// and the checkpoint storage), crash there, run to completion, `check(case)`. Then once more
/// with `random_kills` runs killed at random moments within `window` (min, max) before the
/// final run. `check` reads the output with your own reader and panics naming `case` when it
/// is wrong ([`exactly_once`] helps).
pub fn prove_recovery(
    job: &Job,
    points: &[(&str, u32)],
    random_kills: u32,
    window: (Duration, Duration),
    mut reset: impl FnMut(),
    mut check: impl FnMut(&str),
) {
    for (point, hit) in points {
        reset();
        job.crash_at(point, *hit);
        job.run_to_completion();
        check(&format!("crash at {point}:{hit}"));
    }
    if random_kills == 0 {
        return;
    }
    reset();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    let spread = window.1.saturating_sub(window.0).as_millis().max(1) as u64;
    let mut waits = Vec::new();
    for i in 0..random_kills as u64 {
        let r = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i.wrapping_mul(1442695040888963407))
            >> 33;
        let wait = window.0 + Duration::from_millis(r % spread);
        waits.push(wait);
        job.kill_after(wait);
    }
    job.run_to_completion();
    check(&format!(
        "{random_kills} kills at random moments ({waits:?})"
    ));
}

/// Every id in `0..n` exactly once, or a message naming the first missing and duplicated ids.
pub fn exactly_once(counts: &BTreeMap<i64, usize>, n: i64) -> Result<(), String> {
    let dup: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    let missing: Vec<i64> = (0..n).filter(|i| !counts.contains_key(i)).take(5).collect();
    let extra: Vec<&i64> = counts
        .keys()
        .filter(|i| !(0..n).contains(*i))
        .take(5)
        .collect();
    if dup.is_empty() && missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} distinct ids of {n}; duplicated (first 5, id → count) {dup:?}; missing (first 5) \
         {missing:?}; outside 0..{n} {extra:?}",
        counts.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_names_what_is_wrong() {
        let mut c: BTreeMap<i64, usize> = (0..5).map(|i| (i, 1)).collect();
        assert!(exactly_once(&c, 5).is_ok());
        c.insert(2, 2);
        c.remove(&4);
        c.insert(9, 1);
        let e = exactly_once(&c, 5).unwrap_err();
        assert!(
            e.contains("(2, 2)") && e.contains("[4]") && e.contains("[9]"),
            "{e}"
        );
    }
}
