//! Throttled GetRecords (ProvisionedThroughputExceededException, injected by the fault proxy,
//! since kinesis-mock enforces no limits): each shard's reader backs off and tries again without
//! limit, the throttles are counted per shard, and through a kill -9 and the restart nothing is
//! lost, read twice or reordered per key. One shard throttled for a long while holds back only
//! itself: the other shards' records keep reaching the files meanwhile.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::harness::*;
use super::proxy::Proxy;
use super::server::*;

const N: i64 = 3_000;
const KEYS: i64 = 20;

#[test]
fn throttled_shards_back_off_and_lose_nothing() {
    let proxy = Proxy::start(&endpoint());
    // Four calls in ten refused: every shard is throttled again and again.
    proxy
        .faults
        .throttle_get_records
        .store(400, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("throttled");
    create_stream(&stream, 3);
    let writer = write_slowly(&stream, 0..N, KEYS, 1_500, Vec::new());
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &proxy.url,
        &format!("    streams: [{stream}]"),
    );
    // First run: throttles show in the job's metrics while records still get through; kill -9.
    let running = Running::start(&job, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut throttles, mut seen) = (0.0, 0);
    while Instant::now() < deadline {
        throttles = running.metric("weir_kinesis_shard_throttles_total");
        seen = count_json_field(&dir.path().join("out"), "id").len();
        if throttles >= 3.0 && seen > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        throttles >= 3.0 && seen > 0,
        "after 30 s: {throttles} throttles counted, {seen} ids written"
    );
    assert!(running.kill9(), "the job ended by itself");
    writer.join().unwrap();
    run_until_all(&job, &[], dir.path(), N, 120);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
    assert_per_key_order(&output(&dir.path().join("out")));
    assert!(
        proxy.faults.throttled.load(Ordering::SeqCst) >= 3,
        "the proxy throttled too little to show anything"
    );
}

/// Output records per shard (the `_shard` metadata field).
fn per_shard(out: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in output(out) {
        *counts
            .entry(r["_shard"].as_str().expect("_shard").to_string())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_throttled_shard_does_not_stall_the_other_shards() {
    const N: i64 = 4_500;
    const KEYS: i64 = 30;
    const WINDOW: Duration = Duration::from_secs(15);
    const THROTTLED: &str = "shardId-000000000001";
    let proxy = Proxy::start(&endpoint());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stream = unique("one-throttled");
    create_stream(&stream, 3);
    // 150 records/s for 30 s: every shard has records throughout the window.
    let writer = write_slowly(&stream, 0..N, KEYS, 150, Vec::new());
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &proxy.url,
        &format!("    streams: [{stream}]\n    metadata: {{ shard_id: _shard }}"),
    );
    let running = Running::start(&job, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while per_shard(&out).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "after 30 s not every shard had records in the files: {:?}",
            per_shard(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    proxy.faults.throttle_shard(THROTTLED, WINDOW);
    let start = Instant::now();
    let throttles = |shard: &str| {
        running.metric_with(
            "weir_kinesis_shard_throttles_total",
            &format!("shard=\"{stream}/{shard}\""),
        )
    };
    // Records read before the window have reached the files by then (checkpoints every 100 ms).
    std::thread::sleep(Duration::from_secs(3));
    let mut samples = vec![per_shard(&out)];
    let throttles_before = throttles(THROTTLED);
    while start.elapsed() + Duration::from_secs(2) < WINDOW {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(per_shard(&out));
    }
    let throttles_during = throttles(THROTTLED) - throttles_before;
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    eprintln!(
        "records per shard in the files during the window: {first:?} → {last:?} over {} s; \
         {throttles_during} throttles of {THROTTLED}",
        samples.len() - 1
    );
    let intervals = samples.len() - 1;
    for shard in first.keys() {
        let grew = samples
            .windows(2)
            .filter(|w| w[1].get(shard) > w[0].get(shard))
            .count();
        if shard.ends_with(THROTTLED) {
            assert_eq!(
                last[shard], first[shard],
                "{shard} was throttled throughout, yet records of it arrived: {samples:?}"
            );
        } else {
            // The other shards' records keep arriving second after second.
            assert!(
                grew + 2 >= intervals && last[shard] >= first[shard] + 100,
                "{shard} stalled while {THROTTLED} was throttled: it grew in {grew} of \
                 {intervals} seconds ({} → {})",
                first[shard],
                last[shard]
            );
            assert_eq!(
                throttles(shard.rsplit('/').next().unwrap()),
                0.0,
                "{shard} was never throttled"
            );
        }
    }
    assert!(
        throttles_during >= 5.0,
        "{THROTTLED}: {throttles_during} throttles counted in {intervals} s of throttling"
    );
    assert!(
        proxy.faults.throttled_in(THROTTLED) as f64 >= throttles_during,
        "the job counted more throttles than the proxy answered"
    );

    // After the window the throttled shard catches up: every record once, in order per key.
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (count_json_field(&out, "id").len() as i64) < N {
        assert!(
            Instant::now() < deadline,
            "60 s after the writer ended only {} of {N} ids: {:?}",
            count_json_field(&out, "id").len(),
            per_shard(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = stop(running);
    assert!(o.status.success(), "stopping the job: {}", stderr(&o));
    assert_exactly_once(&count_json_field(&out, "id"), N);
    assert_per_key_order(&output(&out));
    let totals = per_shard(&out);
    assert!(totals.len() == 3, "records from every shard: {totals:?}");
}
