//! Rescale 2 → 3 → 1 workers through savepoints on a four-shard stream being written: each
//! worker keeps the shards it owns at the new parallelism and resumes them at their savepoint
//! positions; nothing is lost or read twice, and each key stays in order.

use std::path::Path;
use std::time::Duration;

use super::super::harness::*;
use super::server::*;

const N: i64 = 6_000;

/// Runs `spec` until more than `beyond` ids are visible, then stops it with a savepoint.
fn run_then_stop_with_savepoint(spec: &Path, args: &[&str], out: &Path, beyond: usize) -> String {
    let job = Running::start(spec, args);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count_json_field(out, "id").len() <= beyond {
        assert!(
            std::time::Instant::now() < deadline,
            "no progress beyond {beyond} ids"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    job.stop_with_savepoint()
}

#[test]
fn rescale_two_to_three_to_one_through_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("rescale");
    create_stream(&stream, 4);
    let src = format!("    streams: [{stream}]");
    let p2 = spec(dir.path(), "p2.yaml", 2, &endpoint(), &src);
    let p3 = spec(dir.path(), "p3.yaml", 3, &endpoint(), &src);
    let p1 = spec(dir.path(), "p1.yaml", 1, &endpoint(), &src);
    let writer = write_slowly(&stream, 0..N, 50, 1_000, Vec::new());
    let out = dir.path().join("out");
    let sp2 = run_then_stop_with_savepoint(&p2, &[], &out, 0);
    let first = count_json_field(&out, "id").len() as i64;
    assert!(
        first > 0 && first < N,
        "the first run stopped part way ({first})"
    );
    let sp3 = run_then_stop_with_savepoint(&p3, &["--from-savepoint", &sp2], &out, first as usize);
    let second = count_json_field(&out, "id").len() as i64;
    assert!(
        second > first,
        "three workers made progress ({first} → {second})"
    );
    writer.join().unwrap();
    run_until_all(&p1, &["--from-savepoint", &sp3], dir.path(), N, 120);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
    assert_per_key_order(&output(&dir.path().join("out")));
}
