//! Rescale 1 → 3 → 2 workers through savepoints while a six-partition topic is being written:
//! each worker keeps the partitions it owns at the new parallelism, seeks to their savepoint
//! offsets, and nothing is lost or read twice.

use std::path::Path;
use std::time::Duration;

use super::super::harness::*;
use super::broker::*;

const N: i64 = 30_000;

fn run_then_stop_with_savepoint(spec: &Path, args: &[&str]) -> String {
    let job = Running::start(spec, args);
    std::thread::sleep(Duration::from_millis(900));
    job.stop_with_savepoint()
}

#[test]
fn rescale_one_to_three_to_two_through_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("rescale");
    create_topic(&topic, 6);
    let src = format!("    topics: [{topic}]\n    batch_size: 500");
    let p1 = spec(dir.path(), "p1.yaml", 1, &src);
    let p3 = spec(dir.path(), "p3.yaml", 3, &src);
    let p2 = spec(
        dir.path(),
        "p2.yaml",
        2,
        &format!("{src}\n    stop_at: latest"),
    );
    let writer = produce_slowly(&topic, 0..N, 6, 10_000);
    let sp1 = run_then_stop_with_savepoint(&p1, &[]);
    let first = count_json_field(&dir.path().join("out"), "id").len() as i64;
    assert!(
        first > 0 && first < N,
        "the first run stopped part way ({first})"
    );
    let sp3 = run_then_stop_with_savepoint(&p3, &["--from-savepoint", &sp1]);
    let second = count_json_field(&dir.path().join("out"), "id").len() as i64;
    assert!(
        second > first,
        "three workers made progress ({first} → {second})"
    );
    writer.join().unwrap();
    restart_to_end(&p2, &["--from-savepoint", &sp3]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}
