//! The node stopped for 20 s in the middle of a run: the sink backs off and retries, and the job
//! finishes with exactly the expected documents.

use std::time::{Duration, Instant};

use super::opensearch::*;
use crate::harness::*;

#[test]
fn a_node_stopped_for_20_s_mid_run_loses_nothing() {
    const N: i64 = 15_000;
    let node = PrivateNode::up("outage", "");
    let index = unique("outage");
    create_index(&node.url, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    // 1,000 records/s: the job is still producing when the node goes away. The retry budget
    // (200 attempts, at most 2 s apart) outlasts the outage and the node's restart.
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        1_000,
        &node.url,
        &index,
        "    id_field: seq\n    retry: { backoff: 200ms, max_backoff: 2s, max_attempts: 200 }\n",
    );
    let job = Running::start(&spec, &[]);
    wait_until("the first documents", Duration::from_secs(30), || {
        call("GET", &format!("{}/{index}/_count", node.url), None).1["count"]
            .as_u64()
            .is_some_and(|c| c > 0)
    });
    node.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    node.start();
    eprintln!(
        "node down for {:.1}s (20 s stopped, then its restart)",
        stopped.elapsed().as_secs_f64()
    );
    let out = job.wait();
    let log = stderr(&out);
    assert!(
        out.status.success(),
        "the job did not survive the outage: {}\n{log}",
        out.status
    );
    assert!(
        log.contains("bulk request failed, retrying"),
        "the outage never reached the sink (no retry logged):\n{log}"
    );
    assert_exact(&node.url, &index, N);
}
