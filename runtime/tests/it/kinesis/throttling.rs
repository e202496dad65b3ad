//! Throttled GetRecords (ProvisionedThroughputExceededException, injected by the fault proxy for
//! a share of the calls, since kinesis-mock enforces no limits): each shard's reader backs off and
//! tries again without limit, the throttles are counted per shard, and through a kill -9 and the
//! restart nothing is lost, read twice or reordered per key.

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
