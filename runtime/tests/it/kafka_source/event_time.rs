//! Per-partition watermarks: a partition that never receives a record does not stall the
//! watermark (idle timeout), the watermark is the minimum over the active partitions, and a
//! burst on one partition is delivered while two others trickle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::super::harness::*;
use super::broker::*;

const BURST: i64 = 5_000;

/// One record every 50 ms on `partition` until `stop`: ids from `first_id`, event times from
/// `first_ts` in steps of `step_ms`.
fn trickle(
    topic: &str,
    partition: i32,
    first_id: i64,
    first_ts: i64,
    step_ms: i64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let p = producer();
        let mut j = 0;
        while !stop.load(Ordering::SeqCst) {
            let rec = Rec::json(
                partition,
                serde_json::json!({ "id": first_id + j, "ts": first_ts + j * step_ms }),
            );
            send(&p, &topic, [rec]);
            rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
            j += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn an_idle_partition_does_not_stall_and_a_slow_one_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("wm");
    create_topic(&topic, 3);
    let src = format!(
        "    topics: [{topic}]\n    event_time: {{ field: ts }}\n    watermark: {{ max_out_of_orderness: 0s, idle_timeout: 1s }}"
    );
    let job = Running::start(&spec(dir.path(), "p.yaml", 1, &src), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // Partition 0 stays empty. Partition 1 trickles far ahead in event time; partition 2 gets a
    // burst and then trickles just behind it, so it is the slowest active partition.
    let ahead = trickle(&topic, 1, 100_000, 2_000_000, 1000, stop.clone());
    produce(
        &topic,
        (0..BURST).map(|i| Rec::json(2, serde_json::json!({ "id": i, "ts": 1_000_000 + i }))),
    );
    let behind = trickle(&topic, 2, 200_000, 1_000_000 + BURST, 1, stop.clone());

    let out = dir.path().join("out");
    wait_until(20, "the burst in the output", || {
        let c = count_json_field(&out, "id");
        (0..BURST).all(|i| c.contains_key(&i)).then_some(())
    });
    assert!(!ahead.is_finished() && !behind.is_finished());

    // Min over partitions 1 and 2 (partition 0 idle, excluded): partition 2's newest - 1.
    let watermark = wait_until(20, "a watermark", || {
        let status: serde_json::Value = serde_json::from_str(&get(&job, "/v1/status")?).ok()?;
        status["workers"][0]["watermark"].as_i64()
    });
    assert!(
        (1_000_000 + BURST - 2..2_000_000).contains(&watermark),
        "watermark {watermark}: not the slowest active partition's"
    );
    stop.store(true, Ordering::SeqCst);
    ahead.join().unwrap();
    behind.join().unwrap();
    assert!(job.kill9());
    let c = count_json_field(&out, "id");
    assert!(c.values().all(|n| *n == 1), "duplicates");
}
