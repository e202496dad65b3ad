//! 429 storms: item-level rejections (injected by the proxy, and real ones from a node whose
//! write pool has one thread and a queue of one) and whole-request 429s. No document is lost,
//! the retries are counted, and the concurrency limit shrinks and grows back.

use super::opensearch::*;
use super::proxy::{Fault, Proxy};
use crate::harness::*;

const LOG: &str = "warn,weir_runtime::connectors::elasticsearch=info";

fn run_logged(spec: &std::path::Path) -> String {
    let o = run(spec, &[], &[("WEIR_LOG", LOG)]);
    let log = stderr(&o);
    assert!(o.status.success(), "{}\n{log}", o.status);
    log
}

#[test]
fn item_level_429s_are_retried_alone_until_every_document_lands() {
    const N: i64 = 8_000;
    let base = url();
    let index = unique("storm-items");
    create_index(&base, &index, 1, mapping());
    let proxy = Proxy::start(
        &base,
        Fault::RejectItems {
            every: 3,
            requests: 24,
        },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        8_000,
        &proxy.url,
        &index,
        "    id_field: seq\n    max_actions: 100\n    retry: { backoff: 20ms, max_backoff: 200ms, max_attempts: 40 }\n",
    );
    // Kept up after the end, so its /metrics can be read (the sink's own counters).
    let job = Running::start_with_env(&spec, &["--idle-when-done"], &[("WEIR_LOG", LOG)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while job.metric("weir_elasticsearch_docs_acked_total") < N as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {N} documents acknowledged after 2 min",
            job.metric("weir_elasticsearch_docs_acked_total")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let m = |name: &str| job.metric(name) as u64;
    let (sent, acked, failed) = (
        m("weir_elasticsearch_docs_sent_total"),
        m("weir_elasticsearch_docs_acked_total"),
        m("weir_elasticsearch_docs_failed_total"),
    );
    let retried_429 = {
        let o = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", &format!("{}/metrics", job.admin)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| {
                l.starts_with("weir_elasticsearch_docs_retried_total{")
                    && l.contains("status=\"429\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let retried_all = m("weir_elasticsearch_docs_retried_total");
    let limit = m("weir_elasticsearch_concurrency_limit");
    let o = stop(job);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert_exact(&base, &index, N);
    assert!(proxy.rejected_items() > 0, "the proxy rejected nothing");
    // Every rejected item was counted as a 429 retry and sent again; every document acked once.
    assert_eq!(acked, N as u64, "acknowledged documents");
    assert_eq!(failed, 0, "failed documents");
    // (A response lost to a client timeout on a loaded machine is retried whole, as
    // `transport`, and its rejected items never reach the sink as 429s.)
    if retried_all == retried_429 {
        assert_eq!(retried_429, proxy.rejected_items(), "429 retries counted");
    } else {
        assert!(retried_429 <= proxy.rejected_items());
    }
    assert_eq!(sent, acked + retried_all, "sent = acked + retried");
    assert!(limit >= 1, "the concurrency limit gauge: {limit}");
    assert!(
        log.contains("concurrency limit lowered"),
        "the limit never shrank:\n{log}"
    );
    assert!(
        log.contains("concurrency limit back at max_in_flight"),
        "the limit never grew back:\n{log}"
    );
    eprintln!(
        "{} bulk requests through the proxy, {} items rejected with 429 and retried",
        proxy.bulks(),
        proxy.rejected_items()
    );
}

#[test]
fn whole_request_429s_are_retried_whole() {
    const N: i64 = 3_000;
    let base = url();
    let index = unique("storm-whole");
    create_index(&base, &index, 1, mapping());
    let proxy = Proxy::start(
        &base,
        Fault::Whole {
            status: 429,
            requests: 6,
        },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        6_000,
        &proxy.url,
        &index,
        "    id_field: seq\n    retry: { backoff: 20ms, max_backoff: 200ms, max_attempts: 20 }\n",
    );
    let log = run_logged(&spec);
    assert_exact(&base, &index, N);
    assert_eq!(proxy.refused_requests(), 6);
    assert!(
        log.contains("bulk request failed, retrying") && log.contains("HTTP 429"),
        "{log}"
    );
}

#[test]
fn a_node_with_a_full_write_queue_answers_429_and_nothing_is_lost() {
    const N: i64 = 10_000;
    let node = PrivateNode::up(
        "tiny-write-pool",
        "thread_pool.write.size=1,thread_pool.write.queue_size=1",
    );
    let index = unique("storm-real");
    // Four shards: one request's items reach the write pool as four shard requests, so some
    // are rejected while others are indexed (a mixed answer).
    create_index(&node.url, &index, 4, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        10_000,
        &node.url,
        &index,
        "    id_field: seq\n    max_actions: 200\n    max_in_flight: 8\n    retry: { backoff: 50ms, max_backoff: 1s, max_attempts: 60 }\n",
    );
    let log = run_logged(&spec);
    assert_exact(&node.url, &index, N);
    assert!(
        log.contains("concurrency limit lowered"),
        "the node never answered 429 (no lowered limit):\n{log}"
    );
}
