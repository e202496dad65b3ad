//! Where reading starts: `at_timestamp` reads exactly the records that arrived after the time
//! (across shards closed before it and children made after it), `latest` is fixed at the first
//! start so a restart before the first record skips nothing, and a checkpointed position that no
//! longer exists follows `on_expired_position`.

use std::time::Duration;

use super::super::harness::*;
use super::server::*;

fn put_ids(stream: &str, ids: std::ops::Range<i64>) {
    let records: Vec<_> = ids.map(|i| record(i, 10)).collect();
    put(&client(), stream, &records);
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[test]
fn at_timestamp_reads_exactly_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("at");
    create_stream(&stream, 1);
    put_ids(&stream, 0..500);
    // Split before the time: the parent is closed, its children are open at the time.
    reshard(&stream, 2);
    put_ids(&stream, 500..1_000);
    std::thread::sleep(Duration::from_millis(1_000));
    let at = now_ms();
    std::thread::sleep(Duration::from_millis(1_000));
    put_ids(&stream, 1_000..1_300);
    // Split again after the time: the grandchildren are read whole.
    reshard(&stream, 4);
    put_ids(&stream, 1_300..1_600);
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &endpoint(),
        &format!("    streams: [{{stream: {stream}, starting_position: {{at_timestamp: {at}}}}}]"),
    );
    run_until_all(&job, &[], dir.path(), 600, 60);
    let counts = count_json_field(&dir.path().join("out"), "id");
    let ids: Vec<i64> = counts.keys().copied().collect();
    assert_eq!(
        ids,
        (1_000..1_600).collect::<Vec<_>>(),
        "exactly the records after the time"
    );
    assert!(counts.values().all(|c| *c == 1));
}

#[test]
fn latest_is_fixed_at_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("latest");
    create_stream(&stream, 2);
    put_ids(&stream, 0..200);
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &endpoint(),
        &format!("    streams: [{stream}]\n    starting_position: latest"),
    );
    // Start, let a few checkpoints pass with nothing to read, crash.
    let running = Running::start(&job, &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(running.kill9(), "the job ended by itself");
    // Written while the job is down: a restart must read it (its position is the first start's
    // time, not "latest" again).
    put_ids(&stream, 200..500);
    run_until_all(&job, &[], dir.path(), 300, 60);
    let counts = count_json_field(&dir.path().join("out"), "id");
    let ids: Vec<i64> = counts.keys().copied().collect();
    assert_eq!(ids, (200..500).collect::<Vec<_>>());
}

#[test]
fn an_expired_position_fails_or_goes_on_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("expired");
    create_stream(&stream, 1);
    put_ids(&stream, 0..100);
    let src = format!("    streams: [{stream}]");
    let job = spec(dir.path(), "job.yaml", 1, &endpoint(), &src);
    run_until_all(&job, &[], dir.path(), 100, 60);
    // The stream is deleted and made again: the checkpointed sequence number is from the old one.
    delete_stream(&stream);
    create_stream(&stream, 1);
    put_ids(&stream, 1_000..1_050);
    let o = run(&job, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("stream \"{stream}\" shard shardId-000000000000"))
            && e.contains("on_expired_position is fail"),
        "{e}"
    );
    let policy = spec(
        dir.path(),
        "trim.yaml",
        1,
        &endpoint(),
        &format!("{src}\n    on_expired_position: trim_horizon"),
    );
    run_until_all(&policy, &[], dir.path(), 150, 60);
    let counts = count_json_field(&dir.path().join("out"), "id");
    let ids: Vec<i64> = counts.keys().copied().collect();
    let want: Vec<i64> = (0..100).chain(1_000..1_050).collect();
    assert_eq!(ids, want);
}
