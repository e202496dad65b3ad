//! datagen → Pub/Sub with the emulator restarted while the job publishes. The emulator keeps
//! nothing across a restart, so the test pauses the job (SIGSTOP), pulls everything published
//! so far (unary pulls that return at once, until one comes back empty: what the emulator
//! acknowledged to the sink is then counted), stops the emulator and lets the job run against
//! it: its publishes fail and are retried. It pauses the job again, starts the emulator, makes
//! topic and subscription again and lets the job finish. Every record must arrive; duplicates
//! are counted and reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::emulator::*;
use crate::harness::*;

const N: i64 = 6_000;

/// An emulator of this test's own (others keep using the shared one while this one restarts).
struct OwnEmulator {
    run_dir: tempfile::TempDir,
    host: String,
}

impl OwnEmulator {
    fn script(run_dir: &Path, cmd: &str) -> String {
        let script = format!("{}/../e2e/services/pubsub.sh", env!("CARGO_MANIFEST_DIR"));
        let o = Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("WEIR_SERVICES_RUN", run_dir)
            .env_remove("PUBSUB_EMULATOR_HOST")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pubsub.sh {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn up() -> OwnEmulator {
        let run_dir = tempfile::Builder::new()
            .prefix("weir-pubsub-own")
            .tempdir_in("/tmp")
            .unwrap();
        let env = Self::script(run_dir.path(), "up");
        let host = env
            .lines()
            .find_map(|l| l.strip_prefix("PUBSUB_EMULATOR_HOST="))
            .expect("pubsub.sh up printed PUBSUB_EMULATOR_HOST")
            .to_string();
        OwnEmulator { run_dir, host }
    }

    fn stop(&self) {
        Self::script(self.run_dir.path(), "stop");
    }

    fn start(&self) {
        Self::script(self.run_dir.path(), "start");
    }
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!(
                "{}/../e2e/services/pubsub.sh",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg("down")
            .env("WEIR_SERVICES_RUN", self.run_dir.path())
            .env_remove("PUBSUB_EMULATOR_HOST")
            .output();
    }
}

/// Pulls (and acknowledges) everything subscription `id` holds now, adding each id to `seen`.
/// Only call it when nothing publishes: under a steady publisher every pull finds messages, so
/// it would return only once the job has published everything.
fn drain(host: &str, id: &str, seen: &mut Vec<i64>) {
    pull(host, id, seen, true);
}

/// One pull (or, with `until_empty`, pulls until two in a row come back empty), acknowledging
/// what arrives and adding each id to `seen`.
fn pull(host: &str, id: &str, seen: &mut Vec<i64>, until_empty: bool) {
    let mut empty = 0;
    while empty < 2 {
        let msgs = rest_pull(host, id);
        if msgs.is_empty() {
            empty += 1;
            if !until_empty {
                break;
            }
            continue;
        }
        empty = 0;
        seen.extend(msgs.iter().map(|(i, _)| *i));
        let acks: Vec<String> = msgs.into_iter().map(|(_, a)| a).collect();
        rest_acknowledge(host, id, &acks);
        if !until_empty {
            break;
        }
    }
}

fn signal(job: &Running, sig: i32) {
    // SAFETY: kill(2) on a child we spawned has no memory-safety preconditions.
    let r = unsafe { libc::kill(job.child.id() as i32, sig) };
    assert_eq!(r, 0, "signal {sig} to the job");
}

fn job(dir: &Path, host: &str, id: &str) -> PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            r#"name: ps-sink
checkpoint: {{ interval: 300ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 500
    fields:
      id: {{ kind: sequence }}
sinks:
  - name: out
    type: pubsub
    topic: {topic}
    emulator_host: "{host}"
    retry: {{ backoff: 100ms, max_backoff: 1s, max_elapsed: 2m }}
"#,
            state = dir.join("state").display(),
            topic = topic_path(id),
        ),
    )
}

#[test]
fn every_record_arrives_through_an_emulator_restart() {
    if emulator("every_record_arrives_through_an_emulator_restart").is_none() {
        return;
    }
    let own = OwnEmulator::up();
    let dir = tempfile::tempdir().unwrap();
    let id = unique("restart");
    create(&own.host, &id, 10, false);
    let spec = job(dir.path(), &own.host, &id);
    let running = Running::start(&spec, &[]);
    let mut seen = Vec::new();
    // Single pulls while the job publishes, so the outage starts a second or two into its 12 s.
    wait_for(Duration::from_secs(60), "the first records", || {
        pull(&own.host, &id, &mut seen, false);
        seen.len() > 500
    });
    // Pause the job and take everything the emulator acknowledged so far, then stop it.
    signal(&running, libc::SIGSTOP);
    drain(&own.host, &id, &mut seen);
    let before = seen.len();
    own.stop();
    // The job runs against the stopped emulator: its publishes fail and are retried.
    signal(&running, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    signal(&running, libc::SIGSTOP);
    own.start();
    create(&own.host, &id, 10, false);
    signal(&running, libc::SIGCONT);
    let o = running.wait();
    let log = stderr(&o);
    assert!(o.status.success(), "the job failed: {log}");
    assert!(
        log.contains("publishing failed; publishing again"),
        "the outage was never seen by the sink ({before} of {N} read before it):\n{log}"
    );
    drain(&own.host, &id, &mut seen);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for i in &seen {
        *counts.entry(*i).or_insert(0) += 1;
    }
    let missing: Vec<i64> = (0..N)
        .filter(|i| !counts.contains_key(i))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "records lost (first 10): {missing:?}; {before} read before the restart"
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "pubsub sink through an emulator restart: {N} records, {duplicates} duplicates, {before} read before the stop\n"
        )
        .as_bytes(),
    );
    assert_eq!(counts.len() as i64, N, "ids beyond 0..{N}");
}
