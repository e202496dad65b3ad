//! Kinesis → files, exactly-once, while the stream is split and merged mid-run (UpdateShardCount
//! 2 → 4 → 2): the job is killed (SIGKILL) at each checkpoint step or at random, restarted, and
//! run until every id is in the files. Every id must be there once, and per partition key in
//! the order it was written, across parent → child shards.

use std::path::Path;
use std::thread::JoinHandle;

use super::super::harness::*;
use super::server::*;

const N: i64 = 6_000;
const KEYS: i64 = 40;

/// A two-shard stream being written at 2,000 records/s, split to four shards a third of the
/// way and merged back to two at two thirds.
fn resharding_stream(prefix: &str) -> (String, JoinHandle<()>) {
    let stream = unique(prefix);
    create_stream(&stream, 2);
    let writer = write_slowly(&stream, 0..N, KEYS, 2_000, vec![(N / 3, 4), (2 * N / 3, 2)]);
    (stream, writer)
}

fn check(dir: &Path) {
    assert_exactly_once(&count_json_field(&dir.join("out"), "id"), N);
    assert_per_key_order(&output(&dir.join("out")));
}

fn crash_then_finish(point: &str, hit: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, writer) = resharding_stream(point);
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &endpoint(),
        &format!("    streams: [{stream}]"),
    );
    run_until_killed(&job, Kill::At(point, hit));
    let partial = count_json_field(&dir.path().join("out"), "id");
    assert!(
        (partial.len() as i64) < N && partial.values().all(|c| *c == 1),
        "{point}:{hit}: the crash came part way, with no duplicates ({} ids)",
        partial.len()
    );
    writer.join().unwrap();
    assert_eq!(open_shards(&stream), 2, "merged back to two shards");
    run_until_all(&job, &[], dir.path(), N, 120);
    check(dir.path());
}

#[test]
fn kill_before_pre_commit_while_resharding() {
    crash_then_finish("before_precommit", 14);
}

#[test]
fn kill_after_pre_commit_while_resharding() {
    crash_then_finish("after_precommit", 18);
}

#[test]
fn kill_after_the_manifest_before_commit_while_resharding() {
    crash_then_finish("after_manifest", 22);
}

#[test]
fn kill_after_commit_while_resharding() {
    crash_then_finish("after_commit", 26);
}

fn random_kills(parallelism: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, writer) = resharding_stream(&format!("random{parallelism}"));
    let job = spec(
        dir.path(),
        "job.yaml",
        parallelism,
        &endpoint(),
        &format!("    streams: [{stream}]"),
    );
    let window = ms(400)..ms(1000);
    let kills = run_until_killed(&job, Kill::AtRandom { runs: 4, window }).kills;
    assert_eq!(kills, 4, "an unbounded job never ends by itself");
    let partial = count_json_field(&dir.path().join("out"), "id");
    assert!(
        partial.values().all(|c| *c == 1),
        "duplicates after the kills"
    );
    writer.join().unwrap();
    run_until_all(&job, &[], dir.path(), N, 120);
    check(dir.path());
}

#[test]
fn kill_repeatedly_at_random_moments_while_resharding() {
    random_kills(1);
}

/// Two workers: a child's parents are often another worker's (merges across the hash range),
/// so the child waits for that worker's checkpoint to mark them finished.
#[test]
fn two_workers_keep_each_key_in_order_across_resharding_and_kills() {
    random_kills(2);
}
