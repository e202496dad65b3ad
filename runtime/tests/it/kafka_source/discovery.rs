//! Partitions added to a topic while the job runs, and a topic created later that matches
//! `topic_pattern`, are picked up by partition discovery and read from their beginning.

use super::super::harness::*;
use super::broker::*;

#[test]
fn new_partitions_and_new_matching_topics_are_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("disc");
    let a = format!("{prefix}-a");
    let b = format!("{prefix}-b");
    create_topic(&a, 2);
    produce(&a, ids(0..1000, 2));
    let src =
        format!("    topic_pattern: \"{prefix}-.*\"\n    partition_discovery_interval: 300ms");
    let job = Running::start(&spec(dir.path(), "p.yaml", 2, &src), &[]);
    let out = dir.path().join("out");
    wait_until(30, "the first 1000 ids", || {
        (count_json_field(&out, "id").len() == 1000).then_some(())
    });

    add_partitions(&a, 4);
    produce(
        &a,
        (1000..2000i64).map(|i| Rec::json(2 + (i % 2) as i32, serde_json::json!({ "id": i }))),
    );
    create_topic(&b, 3);
    produce(&b, ids(2000..3000, 3));
    wait_until(30, "ids from the new partitions and the new topic", || {
        (count_json_field(&out, "id").len() == 3000).then_some(())
    });
    assert!(job.kill9(), "the unbounded job was still running");
    assert_exactly_once(&count_json_field(&out, "id"), 3000);
}
