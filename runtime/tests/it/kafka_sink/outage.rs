//! The broker stops for 20 s mid-run, under the sink and under the source. Under the sink the
//! job may fail (a checkpoint times out); it is then restarted, as Kubernetes would, and the
//! output must still hold every record exactly once. Under the source the job rides it out in
//! its own process (the client reconnects, or the worker restarts from its latest checkpoint).
//!
//! The test runs its own broker (a separate `WEIR_SERVICES_RUN` directory) so that stopping it
//! does not disturb tests that share the common one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::kafka::*;
use crate::harness::*;

struct PrivateBroker {
    root: tempfile::TempDir,
    bootstrap: String,
}

fn kafka_sh(root: &Path, arg: &str) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/services/kafka.sh");
    Command::new("bash")
        .arg(script)
        .arg(arg)
        .env("WEIR_SERVICES_RUN", root)
        .env_remove("KAFKA_BOOTSTRAP")
        .output()
        .unwrap()
}

impl PrivateBroker {
    fn up() -> PrivateBroker {
        let root = tempfile::Builder::new()
            .prefix("weir-kafka-outage")
            .tempdir_in("/tmp")
            .unwrap();
        let o = kafka_sh(root.path(), "up");
        assert!(o.status.success(), "kafka.sh up: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let bootstrap = out
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .expect("KAFKA_BOOTSTRAP printed")
            .to_string();
        PrivateBroker { root, bootstrap }
    }

    fn control(&self, arg: &str) {
        let o = kafka_sh(self.root.path(), arg);
        assert!(o.status.success(), "kafka.sh {arg}: {}", stderr(&o));
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = kafka_sh(self.root.path(), "down");
    }
}

#[test]
fn broker_down_for_20s_mid_run_still_exactly_once() {
    const N: i64 = 20_000;
    let broker = PrivateBroker::up();
    let b = broker.bootstrap.clone();
    let out = unique("ks-outage");
    create_topic(&b, &out, 4);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &unique("outage"),
        2,
        "interval: 500ms, timeout: 10s",
        &datagen(N, 2_000),
        &eo_sink(&b, &out),
    );
    let job = Running::start(&spec, &[]);
    std::thread::sleep(Duration::from_secs(3));
    broker.control("stop");
    std::thread::sleep(Duration::from_secs(20));
    broker.control("start");
    // Same address after the restart: the job and the reader talk to the broker that stopped.
    let o = kafka_sh(broker.root.path(), "env");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("KAFKA_BOOTSTRAP={b}")));
    let first = job.wait();
    let mut restarts = 0;
    let mut last = first;
    while !last.status.success() {
        assert!(
            restarts < 5,
            "the job did not recover after {restarts} restarts: {}",
            stderr(&last)
        );
        restarts += 1;
        last = run(&spec, &[], &[]);
    }
    eprintln!("outage: job restarted {restarts} time(s)");
    assert_topic_exactly_once(&b, &out, N);
}

#[test]
fn broker_down_for_20s_under_the_source_still_exactly_once() {
    const N: i64 = 20_000;
    let broker = PrivateBroker::up();
    let b = broker.bootstrap.clone();
    let topic = unique("src-outage");
    create_topic(&b, &topic, 4);
    // Half the records before the outage, half after it (each by a producer of its own: the
    // test's producer is not what is under test).
    produce_json_slowly(&b, &topic, 0..N / 2, 100, 20_000)
        .join()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = write(
        dir.path(),
        "src-outage.yaml",
        &format!(
            r#"name: src-outage
parallelism: 2
checkpoint: {{ interval: 500ms, timeout: 10s, storage: {state} }}
restart: {{ strategy: exponential-delay, backoff: 500ms, max_backoff: 4s }}
sources:
  - name: in
    type: kafka
    bootstrap_servers: {b}
    topics: [{topic}]
    group_id: {group}
    starting_offsets: earliest
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
    rolling: {{ inactivity_interval: 300ms }}
"#,
            state = dir.path().join("state").display(),
            out = out.display(),
            group = unique("g"),
        ),
    );
    let mut job = Running::start(&spec, &[]);
    let wait_for = |job: &mut Running, n: i64, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let seen = count_json_field(&out, "id").len() as i64;
            if seen >= n {
                return;
            }
            if let Some(status) = job.child_status() {
                panic!("the job ended ({status}) with {seen} of {n} ids {what}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {seen} of {n} ids 2 min {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&mut job, N / 2, "before the outage");
    // The source is polling an idle topic, committing offsets with each checkpoint.
    broker.control("stop");
    std::thread::sleep(Duration::from_secs(20));
    broker.control("start");
    produce_json_slowly(&b, &topic, N / 2..N, 100, 20_000)
        .join()
        .unwrap();
    wait_for(&mut job, N, "after the broker came back");
    let o = stop(job);
    assert!(o.status.success(), "stopping the job: {}", stderr(&o));
    eprintln!(
        "source outage: {}",
        stderr(&o)
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert_exactly_once(&count_json_field(&out, "id"), N);
}
