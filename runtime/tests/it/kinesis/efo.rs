//! `reader: efo` (SubscribeToShard) through a proxy that cuts every subscription after a while
//! or stalls it: the reader subscribes again from the last record it passed on (a stalled one
//! once the watchdog gives up on it), across a split, through a kill -9, and nothing is lost or
//! read twice. (kinesis-mock sends its first event a second after subscribing, then one a
//! second, so a subscription here carries about two events before the proxy breaks it.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::harness::*;
use super::proxy::Proxy;
use super::server::*;

const N: i64 = 3_000;
const KEYS: i64 = 20;

fn source(stream: &str) -> String {
    format!(
        "    streams: [{stream}]
    reader: efo
    efo: {{ consumer_name: {consumer}, idle_timeout: 3s, error_backoff: 200ms }}",
        consumer = unique("c")
    )
}

/// The value of a counter summed over its series in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(job: &Running) -> String {
    let o = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", &format!("{}/metrics", job.admin)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cut_subscriptions_are_renewed_and_lose_nothing() {
    let proxy = Proxy::start(&endpoint());
    proxy
        .faults
        .cut_subscriptions_after_ms
        .store(2_500, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("efo-cut");
    create_stream(&stream, 2);
    let writer = write_slowly(&stream, 0..N, KEYS, 600, vec![(N / 2, 4)]);
    let job = spec(dir.path(), "job.yaml", 1, &proxy.url, &source(&stream));
    // First run: at least two subscriptions cut and renewals in the metrics, then a kill -9
    // (the restart may catch up before the proxy cuts anything again).
    let running = Running::start(&job, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut renewed, mut cut) = (0.0, 0);
    while std::time::Instant::now() < deadline {
        renewed = metric_sum(
            &metrics(&running),
            "weir_kinesis_shard_resubscriptions_total",
        );
        cut = proxy.faults.cut.load(Ordering::SeqCst);
        if renewed > 0.0 && cut >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        renewed > 0.0 && cut >= 2,
        "after 30 s: {cut} subscriptions cut, {renewed} renewed"
    );
    assert!(running.kill9(), "the job ended by itself");
    writer.join().unwrap();
    run_until_all(&job, &[], dir.path(), N, 120);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
    assert_per_key_order(&output(&dir.path().join("out")));
}

#[test]
fn the_watchdog_replaces_a_stalled_subscription() {
    let proxy = Proxy::start(&endpoint());
    proxy
        .faults
        .cut_subscriptions_after_ms
        .store(2_500, Ordering::SeqCst);
    proxy
        .faults
        .stall_instead_of_cut
        .store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("efo-stall");
    create_stream(&stream, 1);
    let job = spec(dir.path(), "job.yaml", 1, &proxy.url, &source(&stream));
    // Written while the job runs, so records keep arriving after the first subscription stalls.
    let writer = write_slowly(&stream, 0..N, KEYS, 500, Vec::new());
    run_until_all(&job, &[], dir.path(), N, 120);
    writer.join().unwrap();
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
    assert!(
        proxy.faults.cut.load(Ordering::SeqCst) >= 1,
        "no subscription was stalled"
    );
}
