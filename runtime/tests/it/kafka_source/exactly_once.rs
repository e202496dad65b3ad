//! Kafka → files, exactly-once, on two workers and a four-partition topic that is being written
//! while the job runs: the job is killed (SIGKILL) at each 2PC step or at random, restarted, and
//! finally run bounded (`stop_at: latest`) to the end; every id must be in the files once.

use std::path::{Path, PathBuf};

use super::super::harness::*;
use super::broker::*;

const N: i64 = 20_000;
const PARTITIONS: i32 = 4;

/// The same job unbounded (runs until killed) and bounded (ends at the offsets found at start).
fn specs(dir: &Path, topic: &str) -> (PathBuf, PathBuf) {
    let src = format!("    topics: [{topic}]\n    batch_size: 500");
    (
        spec(dir, "live.yaml", 2, &src),
        spec(
            dir,
            "bounded.yaml",
            2,
            &format!("{src}\n    stop_at: latest"),
        ),
    )
}

fn crash_then_finish(point: &str, hit: u32) {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique(point);
    create_topic(&topic, PARTITIONS);
    let (live, bounded) = specs(dir.path(), &topic);
    let writer = produce_slowly(&topic, 0..N, PARTITIONS, 10_000);
    run_until_killed(&live, Kill::At(point, hit));
    let partial = count_json_field(&dir.path().join("out"), "id");
    assert!(
        (partial.len() as i64) < N && partial.values().all(|c| *c == 1),
        "{point}:{hit}: the crash came part way, with no duplicates ({} ids)",
        partial.len()
    );
    writer.join().unwrap();
    restart_to_end(&bounded, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn kill_before_pre_commit() {
    crash_then_finish("before_precommit", 6);
}

#[test]
fn kill_after_pre_commit() {
    crash_then_finish("after_precommit", 6);
}

#[test]
fn kill_after_the_manifest_before_commit() {
    crash_then_finish("after_manifest", 5);
}

#[test]
fn kill_after_commit() {
    crash_then_finish("after_commit", 5);
}

#[test]
fn kill_repeatedly_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("random");
    create_topic(&topic, PARTITIONS);
    let (live, bounded) = specs(dir.path(), &topic);
    let writer = produce_slowly(&topic, 0..N, PARTITIONS, 8_000);
    let window = ms(200)..ms(700);
    let kills = run_until_killed(&live, Kill::AtRandom { runs: 4, window }).kills;
    assert_eq!(kills, 4, "an unbounded job never ends by itself");
    let partial = count_json_field(&dir.path().join("out"), "id");
    assert!(
        partial.values().all(|c| *c == 1),
        "duplicates after the kills"
    );
    writer.join().unwrap();
    restart_to_end(&bounded, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}
