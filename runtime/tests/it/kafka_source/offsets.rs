//! Where a job starts: offsets committed to the consumer group after checkpoints (then
//! `starting_offsets: committed` in a new job), a timestamp, and per-partition offsets.

use std::collections::BTreeMap;

use super::super::harness::*;
use super::broker::*;

/// The ids in the output, each with its count.
fn output(dir: &std::path::Path) -> BTreeMap<i64, usize> {
    count_json_field(&dir.join("out"), "id")
}

fn assert_ids(got: &BTreeMap<i64, usize>, want: std::ops::Range<i64>) {
    let expected: BTreeMap<i64, usize> = want.map(|i| (i, 1)).collect();
    assert_eq!(got, &expected);
}

#[test]
fn offsets_are_committed_after_checkpoints_and_a_new_job_resumes_from_them() {
    let topic = unique("committed");
    let group = unique("group");
    create_topic(&topic, 2);
    produce(&topic, ids(0..1000, 2));
    let first = tempfile::tempdir().unwrap();
    let src = format!("    topics: [{topic}]\n    group_id: {group}");
    let job = Running::start(&spec(first.path(), "p.yaml", 2, &src), &[]);
    wait_until(30, "all 1000 ids", || {
        (output(first.path()).len() == 1000).then_some(())
    });
    let ends = end_offsets(&topic, 2);
    wait_until(20, "the committed offsets to reach the end", || {
        let c = committed(&group, &topic, 2);
        (c == ends.iter().map(|e| Some(*e)).collect::<Vec<_>>()).then_some(())
    });
    assert!(job.kill9());

    produce(&topic, ids(1000..1500, 2));
    let second = tempfile::tempdir().unwrap();
    let resumed = format!("{src}\n    starting_offsets: committed\n    stop_at: latest");
    restart_to_end(&spec(second.path(), "p.yaml", 2, &resumed), &[]);
    assert_ids(&output(second.path()), 1000..1500);
}

#[test]
fn a_bounded_job_commits_its_final_offsets_before_it_exits() {
    let topic = unique("final-commit");
    let group = unique("group");
    create_topic(&topic, 3);
    produce(&topic, ids(0..900, 3));
    let dir = tempfile::tempdir().unwrap();
    let src = format!("    topics: [{topic}]\n    group_id: {group}\n    stop_at: latest");
    restart_to_end(&spec(dir.path(), "p.yaml", 2, &src), &[]);
    assert_ids(&output(dir.path()), 0..900);
    let ends: Vec<Option<i64>> = end_offsets(&topic, 3).into_iter().map(Some).collect();
    assert_eq!(committed(&group, &topic, 3), ends);
}

#[test]
fn timestamp_and_specific_starting_offsets() {
    let topic = unique("startat");
    create_topic(&topic, 1);
    let base = 1_600_000_000_000i64;
    produce(
        &topic,
        (0..100).map(|i| Rec {
            timestamp: Some(base + i * 1000),
            ..Rec::json(0, serde_json::json!({ "id": i }))
        }),
    );
    let by_time = tempfile::tempdir().unwrap();
    let src = format!(
        "    topics: [{topic}]\n    stop_at: latest\n    starting_offsets: {{ timestamp: {} }}",
        base + 50_000
    );
    restart_to_end(&spec(by_time.path(), "p.yaml", 1, &src), &[]);
    assert_ids(&output(by_time.path()), 50..100);

    let rfc = tempfile::tempdir().unwrap();
    let src = format!(
        "    topics: [{topic}]\n    stop_at: latest\n    starting_offsets: {{ timestamp: \"2020-09-13T12:27:10Z\" }}"
    );
    // 2020-09-13T12:26:40Z is `base`; 30 s later is record 30.
    restart_to_end(&spec(rfc.path(), "p.yaml", 1, &src), &[]);
    assert_ids(&output(rfc.path()), 30..100);

    let specific = tempfile::tempdir().unwrap();
    let src = format!(
        "    topics: [{topic}]\n    stop_at: latest\n    starting_offsets: {{ specific: {{ \"{topic}/0\": 70 }} }}"
    );
    restart_to_end(&spec(specific.path(), "p.yaml", 1, &src), &[]);
    assert_ids(&output(specific.path()), 70..100);
}
