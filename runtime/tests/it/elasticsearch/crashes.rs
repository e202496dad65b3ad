//! kill -9 at each checkpoint step and at random moments of a datagen → OpenSearch job with two
//! workers. With ids the index ends with exactly the expected documents (count and content);
//! without ids every record is there at least once and the duplicates are counted.

use super::opensearch::*;
use crate::harness::*;

const N: i64 = 12_000;
const RATE: u32 = 6_000;

fn crash_then_finish(point: &str, hit: u32) {
    let base = url();
    let index = unique(&format!("crash-{}", point.replace('_', "-")));
    create_index(&base, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        RATE,
        &base,
        &index,
        "    id_field: seq\n",
    );
    run_until_killed(&spec, Kill::At(point, hit));
    let partial = seq_counts(&base, &index).len() as i64;
    assert!(partial < N, "{point}:{hit}: the job had already finished");
    restart_to_end(&spec, &[]);
    assert_exact(&base, &index, N);
}

#[test]
fn with_ids_a_kill_before_pre_commit_leaves_exactly_the_documents() {
    crash_then_finish("before_precommit", 4);
}

#[test]
fn with_ids_a_kill_after_pre_commit_leaves_exactly_the_documents() {
    crash_then_finish("after_precommit", 4);
}

#[test]
fn with_ids_a_kill_before_the_manifest_leaves_exactly_the_documents() {
    crash_then_finish("before_manifest", 3);
}

#[test]
fn with_ids_a_kill_after_the_manifest_leaves_exactly_the_documents() {
    crash_then_finish("after_manifest", 3);
}

#[test]
fn with_ids_a_kill_after_commit_leaves_exactly_the_documents() {
    crash_then_finish("after_commit", 3);
}

#[test]
fn with_ids_kills_at_random_moments_leave_exactly_the_documents() {
    let base = url();
    let index = unique("crash-random");
    create_index(&base, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        RATE / 2,
        &base,
        &index,
        "    id_field: seq\n",
    );
    let kills = run_until_killed(
        &spec,
        Kill::AtRandom {
            runs: 3,
            window: ms(700)..ms(1600),
        },
    )
    .kills;
    assert!(
        kills >= 2,
        "only {kills} of 3 runs were still going when killed"
    );
    restart_to_end(&spec, &[]);
    assert_exact(&base, &index, N);
}

#[test]
fn without_ids_every_record_arrives_at_least_once_and_duplicates_are_counted() {
    let base = url();
    let index = unique("crash-noid");
    create_index(&base, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(dir.path(), &index, N, RATE, &base, &index, "");
    // After the sink flushed for checkpoint 4 and before that checkpoint is durable: the
    // restart replays those records, so duplicates are certain.
    run_until_killed(&spec, Kill::At("after_precommit", 4));
    restart_to_end(&spec, &[]);
    let counts = seq_counts(&base, &index);
    let missing: Vec<i64> = (0..N).filter(|i| !counts.contains_key(i)).take(5).collect();
    assert!(missing.is_empty(), "records lost (first 5): {missing:?}");
    assert_eq!(counts.len() as i64, N, "unexpected records beyond 0..{N}");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let total: usize = counts.values().sum();
    eprintln!("at-least-once without ids: {N} records, {total} documents, {duplicates} duplicates from the replay");
    assert!(
        duplicates > 0,
        "a replay after a crash between pre-commit and the checkpoint must index records again"
    );
}
