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
//!     Duration::from_millis(300)..Duration::from_secs(2),
//!     || clear_my_store(),            // before each case: empty output, no checkpoint
//!     |case| exactly_once(&read_my_store(), 3000).unwrap_or_else(|e| panic!("{case}: {e}")),
//! );
//! ```
//!
//! A test that checks more between the kill and the restart (the output is still partial, a
//! restart flag) uses the two halves itself:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use weir_runtime::testkit::{Job, Kill};
//! # let job = Job::new("target/debug/my-weir", "/tmp/my-pipeline.yaml");
//! job.run_until_killed(&Kill::At("after_manifest", 3));
//! // … the output holds no record twice so far …
//! job.restart_to_end();
//! let window = Duration::from_millis(300)..Duration::from_millis(800);
//! let killed = job.run_until_killed(&Kill::AtRandom { runs: 3, window });
//! assert!(killed.kills >= 2, "the runs ended before their kills: {:?}", killed.waits);
//! job.restart_to_end();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
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
    args: Vec<String>,
    env: Vec<(String, String)>,
    limit: Duration,
}

/// How the runs before a restart end: the first half of every crash test.
#[derive(Clone, Debug)]
pub enum Kill<'a> {
    /// One run, crashed by SIGKILL at the `hit`-th pass of `point` (one of [`POINTS`]).
    At(&'a str, u32),
    /// `runs` runs, each killed by SIGKILL at a random moment in `window` after it started
    /// (its admin API answers, so its sources and sinks are open): before, between and during
    /// checkpoints, wherever they fall.
    AtRandom { runs: u32, window: Range<Duration> },
}

impl fmt::Display for Kill<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kill::At(point, hit) => write!(f, "crash at {point}:{hit}"),
            Kill::AtRandom { runs, window } => {
                write!(f, "{runs} kills at random moments in {window:?}")
            }
        }
    }
}

/// What [`Job::run_until_killed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Killed {
    /// Runs that were still going when killed (the others had finished by themselves).
    pub kills: u32,
    /// How long after its start each run was killed ([`Kill::AtRandom`] only).
    pub waits: Vec<Duration>,
}

/// The waits of `runs` random kills in `window`, from `seed`: a fixed sequence per seed, so a
/// failure's waits (printed in its case name) describe the run that failed.
pub fn random_waits(seed: u64, runs: u32, window: &Range<Duration>) -> Vec<Duration> {
    let spread = window.end.saturating_sub(window.start).as_millis().max(1) as u64;
    (0..runs as u64)
        .map(|i| {
            let r = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i.wrapping_mul(1442695040888963407))
                >> 33;
            window.start + Duration::from_millis(r % spread)
        })
        .collect()
}

impl Job {
    /// `bin`: your binary (`env!("CARGO_BIN_EXE_<name>")` in an integration test), whose
    /// `main` is [`crate::cli::main_with`] on your registry; `spec`: the pipeline file.
    pub fn new(bin: impl Into<PathBuf>, spec: impl Into<PathBuf>) -> Job {
        Job {
            bin: bin.into(),
            spec: spec.into(),
            args: Vec::new(),
            env: Vec::new(),
            limit: Duration::from_secs(300),
        }
    }

    /// Arguments of every `weir run` (`--from-savepoint <path>`, `--parallelism 4`).
    pub fn args(mut self, args: &[&str]) -> Job {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
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

    fn spawn(&self, fault: Option<&str>, admin: Option<&str>) -> Child {
        let mut c = Command::new(&self.bin);
        c.arg("run").arg("--quiet");
        if let Some(addr) = admin {
            c.arg("--admin-addr").arg(addr);
        }
        c.args(&self.args)
            .arg(&self.spec)
            .env("WEIR_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
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
    /// does); panics with its log unless it finished (exit 0). Returns its log (stderr), for a
    /// test that checks what the recovery did (set `WEIR_LOG` with [`Job::env`] to see it).
    pub fn restart_to_end(&self) -> String {
        let (out, killed) = self.finish(self.spawn(None, None), self.limit);
        assert!(
            !killed,
            "the job still ran after {:?}: killed\n{}",
            self.limit,
            log(&out)
        );
        assert!(
            out.status.success(),
            "the restarted job failed ({}):\n{}",
            out.status,
            log(&out)
        );
        log(&out)
    }

    /// Ends the job's runs as `kill` says. A crash at a point must kill the run there (a job
    /// that ended first tested nothing: give it more input or a lower `hit`); a run that ends
    /// by itself before a random kill must have succeeded.
    pub fn run_until_killed(&self, kill: &Kill) -> Killed {
        match kill {
            Kill::At(point, hit) => {
                self.crash_at(point, *hit);
                Killed {
                    kills: 1,
                    waits: Vec::new(),
                }
            }
            Kill::AtRandom { runs, window } => {
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as u64)
                    .unwrap_or(7);
                let waits = random_waits(seed, *runs, window);
                let kills = waits.iter().filter(|w| self.kill_after_start(**w)).count();
                Killed {
                    kills: kills as u32,
                    waits,
                }
            }
        }
    }

    fn crash_at(&self, point: &str, hit: u32) {
        assert!(
            POINTS.contains(&point),
            "unknown crash point {point:?}; known: {POINTS:?}"
        );
        let fault = format!("{point}:{hit}");
        let (out, killed) = self.finish(self.spawn(Some(&fault), None), self.limit);
        assert!(
            !killed && out.status.signal() == Some(libc::SIGKILL),
            "{fault} did not crash the job ({}):\n{}",
            out.status,
            log(&out)
        );
    }

    /// Starts a run, waits until it has started (its admin API answers: the sources and sinks
    /// are open, so `after` measures job time, not process start-up), and kills it with
    /// SIGKILL `after` later; false when it had already ended by itself.
    fn kill_after_start(&self, after: Duration) -> bool {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let admin = format!("127.0.0.1:{port}");
        let mut child = self.spawn(None, Some(&admin));
        let deadline = Instant::now() + self.limit;
        while std::net::TcpStream::connect(&admin).is_err() {
            // Ended already (nothing left to do, or failed): `finish` below says which.
            if child.try_wait().expect("polling the job").is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let (out, _) = self.finish(child, Duration::ZERO);
                panic!(
                    "the job did not start within {:?}: killed\n{}",
                    self.limit,
                    log(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
/// and the checkpoint storage), crash there, restart to the end, `check(case)`. Then once more
/// with `random_kills` runs killed at random moments in `window` after their start before the
/// final run. `check` reads the output with your own reader and panics naming `case` when it
/// is wrong ([`exactly_once`] helps).
pub fn prove_recovery(
    job: &Job,
    points: &[(&str, u32)],
    random_kills: u32,
    window: Range<Duration>,
    mut reset: impl FnMut(),
    mut check: impl FnMut(&str),
) {
    let mut kills: Vec<Kill> = points.iter().map(|(p, h)| Kill::At(p, *h)).collect();
    if random_kills > 0 {
        kills.push(Kill::AtRandom {
            runs: random_kills,
            window,
        });
    }
    for kill in &kills {
        reset();
        let killed = job.run_until_killed(kill);
        job.restart_to_end();
        check(&match killed.waits.as_slice() {
            [] => kill.to_string(),
            waits => format!("{kill} (waits {waits:?})"),
        });
    }
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
    fn random_waits_fall_in_the_window_and_repeat_for_a_seed() {
        let window = Duration::from_millis(150)..Duration::from_millis(650);
        let waits = random_waits(12345, 5, &window);
        assert_eq!(waits.len(), 5);
        assert!(waits.iter().all(|w| window.contains(w)), "{waits:?}");
        assert_eq!(waits, random_waits(12345, 5, &window));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 1, "one moment repeated: {waits:?}");
    }

    #[test]
    fn a_kill_names_itself_for_a_case() {
        assert_eq!(
            Kill::At("after_manifest", 3).to_string(),
            "crash at after_manifest:3"
        );
        let random = Kill::AtRandom {
            runs: 3,
            window: Duration::from_millis(300)..Duration::from_millis(800),
        };
        assert_eq!(
            random.to_string(),
            "3 kills at random moments in 300ms..800ms"
        );
    }

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
