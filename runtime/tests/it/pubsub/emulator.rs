//! Talking to the emulator directly (google-cloud-pubsub): topics, subscriptions, input
//! messages, reading a subscription back, and the job specs the tests run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use weir_runtime::connectors::pubsub::client;
use weir_runtime::connectors::pubsub::config::Endpoint;

use crate::harness::*;

pub const PROJECT: &str = "weir-test";

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// The emulator's `host:port`: `$PUBSUB_EMULATOR_HOST`, or one started by
/// `e2e/services/pubsub.sh`. `None` where this machine has no emulator: the test then says so
/// on the terminal (not in captured output) and returns.
pub fn emulator(test: &str) -> Option<String> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        if let Ok(h) = std::env::var("PUBSUB_EMULATOR_HOST") {
            return Some(h);
        }
        let script = format!("{}/../e2e/services/pubsub.sh", env!("CARGO_MANIFEST_DIR"));
        let o = std::process::Command::new("bash")
            .arg(&script)
            .arg("up")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() && err.contains("emulator not found") {
            return None;
        }
        assert!(o.status.success(), "{script} up failed: {err}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("PUBSUB_EMULATOR_HOST="))
            .map(str::to_string)
    });
    if host.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** pubsub::{test}: skipped: no emulator (install google-cloud-cli-pubsub-emulator or set PUBSUB_EMULATOR_HOST) ***"
        );
    }
    host.clone()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "ps-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn topic_path(id: &str) -> String {
    format!("projects/{PROJECT}/topics/{id}")
}

pub fn sub_path(id: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{id}")
}

fn endpoint(host: &str) -> Endpoint {
    Endpoint::Emulator(host.to_string())
}

/// How long topics keep their messages: longer than any test, so that [`release_leases`] can
/// recreate a subscription with every message of its topic.
const TOPIC_RETENTION: &str = "3600s";

/// Creates topic `id` (keeping its messages, acknowledged or not, for [`TOPIC_RETENTION`]) and
/// subscription `id` on it.
pub fn create(host: &str, id: &str, ack_deadline_secs: i32, ordering: bool) {
    rt().block_on(async {
        let e = endpoint(host);
        let topics: TopicAdmin = client::topic_admin("test", &e).await.unwrap();
        let retention = google_cloud_wkt::Duration::try_from(TOPIC_RETENTION).unwrap();
        topics
            .create_topic()
            .set_name(topic_path(id))
            .set_message_retention_duration(retention)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating topic {id}: {e}"));
        create_subscription(host, id, ack_deadline_secs, ordering).await;
    });
}

async fn create_subscription(host: &str, id: &str, ack_deadline_secs: i32, ordering: bool) {
    let subs: SubscriptionAdmin = client::subscription_admin("test", &endpoint(host))
        .await
        .unwrap();
    subs.create_subscription()
        .set_name(sub_path(id))
        .set_topic(topic_path(id))
        .set_ack_deadline_seconds(ack_deadline_secs)
        .set_enable_message_ordering(ordering)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating subscription {id}: {e}"));
}

/// Publishes `{"id": i}` for each i (with ordering key `k<i % keys>` and a `seq` per key when
/// `keys` > 0).
pub fn publish_ids(host: &str, id: &str, ids: std::ops::Range<i64>, keys: i64) {
    rt().block_on(async {
        let p: Publisher = client::publisher("test", &endpoint(host), &topic_path(id), |b| b)
            .await
            .unwrap();
        let mut futs = Vec::new();
        for i in ids {
            let mut m = Message::new();
            if keys > 0 {
                m = m
                    .set_data(serde_json::json!({ "id": i, "key": format!("k{}", i % keys), "seq": i / keys }).to_string())
                    .set_ordering_key(format!("k{}", i % keys));
            } else {
                m = m.set_data(serde_json::json!({ "id": i }).to_string());
            }
            futs.push(p.publish(m));
        }
        for f in futs {
            f.await.unwrap();
        }
    });
}

/// One unary pull over REST that returns at once (at most 100 messages: the emulator's limit),
/// acknowledging nothing: each message's `id` field and its ack id.
pub fn rest_pull(host: &str, id: &str) -> Vec<(i64, String)> {
    use base64::Engine;
    let url = format!("http://{host}/v1/{}:pull", sub_path(id));
    rt().block_on(async {
        let r: serde_json::Value = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "maxMessages": 1000, "returnImmediately": true }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let msgs = r["receivedMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        msgs.iter()
            .map(|m| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(m["message"]["data"].as_str().unwrap())
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                (
                    v["id"].as_i64().unwrap(),
                    m["ackId"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    })
}

/// Acknowledges `ack_ids` over REST.
pub fn rest_acknowledge(host: &str, id: &str, ack_ids: &[String]) {
    let url = format!("http://{host}/v1/{}:acknowledge", sub_path(id));
    rt().block_on(async {
        reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "ackIds": ack_ids }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    });
}

/// Opens a StreamingPull stream on subscription `id`, takes one message and goes away (the
/// stream closed, nothing acknowledged), the way a job's stream goes when it stops.
pub fn abandon_a_stream(host: &str, id: &str) {
    rt().block_on(async {
        let subscriber = client::subscriber("test", &endpoint(host)).await.unwrap();
        let mut stream = subscriber.subscribe(sub_path(id)).build();
        let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message on the stream");
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
    });
}

/// `sources:` → JSON files, checkpoints every `interval`; `source` lines are added to a
/// `pubsub` source reading subscription `sub` with a 10 s ack deadline. The message id goes to
/// `_mid` unless `source` has its own `metadata:` (a key may appear once).
pub fn spec(
    dir: &Path,
    host: &str,
    sub: &str,
    parallelism: u32,
    interval: &str,
    source: &str,
) -> PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            r#"name: ps
parallelism: {parallelism}
checkpoint: {{ interval: {interval}, timeout: 60s, storage: {state} }}
sources:
  - name: in
    type: pubsub
    subscription: {sub}
    emulator_host: "{host}"
    ack_deadline: 10s
    batch_size: 100
{metadata}{source}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
    rolling: {{ max_part_size: 16KiB, inactivity_interval: 300ms }}
"#,
            sub = sub_path(sub),
            metadata = if source.contains("metadata:") {
                ""
            } else {
                "    metadata: { message_id: _mid }\n"
            },
            state = dir.join("state").display(),
            out = dir.join("out").display(),
        ),
    )
}

/// How often each message id occurs in the output (each distinct publish has its own).
pub fn message_ids(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in visible_files(dir) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *counts
                .entry(v["_mid"].as_str().expect("_mid").to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Asserts ids 0..n once each and every message id once.
pub fn assert_once(out: &Path, n: i64) {
    assert_exactly_once(&count_json_field(out, "id"), n);
    let mids = message_ids(out);
    let dup: Vec<_> = mids.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dup.is_empty(), "message ids emitted twice: {dup:?}");
}

/// The counters of the source's closing summaries (`acked=… deduplicated=…`) in a log, summed
/// over the runs it holds.
pub fn summary(log: &str) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pubsub source closing"))
        .collect();
    assert!(!lines.is_empty(), "no source summary in the log:\n{log}");
    for line in lines {
        // The log may be coloured: drop the escape sequences.
        let mut plain = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => plain.push(c),
            }
        }
        for (k, v) in plain
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)))
        {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

/// Runs the job until its source has been idle long enough, with the source's summary logged.
pub fn run_to_end(spec: &Path) -> String {
    let o = run(
        spec,
        &[],
        &[("WEIR_LOG", "warn,weir_runtime::connectors::pubsub=info")],
    );
    let log = stderr(&o);
    assert!(o.status.success(), "the job failed: {}\n{log}", o.status);
    log
}

/// Runs the job (resuming from its checkpoints) until the output holds ids `0..n`, at most
/// `MAX_RUNS` times, each after [`release_leases`]; returns the logs of every run.
///
/// Without the release, the streams of the runs killed before would keep taking messages from
/// the subscription (see [`release_leases`]), and a run could end by its `stop_after_idle` with
/// messages still out. The release hands out again only what is unacknowledged: a message whose
/// acknowledgement was wrongly sent stays acknowledged and never comes back, so no number of runs
/// hides a loss; a duplicate from any run stays in the output and fails `assert_once`.
pub fn run_until_drained(host: &str, id: &str, spec: &Path, out: &Path, n: i64) -> String {
    const MAX_RUNS: usize = 3;
    let mut logs = String::new();
    for run in 1..=MAX_RUNS {
        release_leases(host, id);
        logs.push_str(&run_to_end(spec));
        let have = count_json_field(out, "id").len() as i64;
        if have >= n {
            break;
        }
        eprintln!("{id}: {have} of {n} ids after drain run {run}");
    }
    logs
}

/// Ends every stream the emulator still serves on subscription `id` and hands out again every
/// unacknowledged message, leased or not; the subscription keeps its acknowledgements.
///
/// The emulator (0.8.20) serves every StreamingPull stream ever opened until its subscription
/// is deleted: a stream's server-side pusher never ends when its client goes, killed or closed
/// cleanly (one `StreamingPullPusher` thread per stream ever opened, in `jstack` of an emulator
/// with no client left). Each pusher takes up to 100 messages every 50 ms and sends them
/// nowhere; they come back after the ack deadline only to be raced for again, so a job that
/// restarts on a subscription competes with every stream of its earlier runs (a whole pull
/// response stayed out through three 30 s runs). Pub/Sub itself ends a stream with its client.
///
/// So: a snapshot of the subscription (it keeps the subscription's acknowledgements), the
/// subscription deleted (its pushers end at their next pull) and created again with the same
/// settings (it gets the topic's retained messages), then sought to the snapshot. The test
/// `release_hands_out_again_exactly_the_unacknowledged_messages` checks it against the emulator:
/// of 100 acknowledged, 100 leased and 100 held by a stream whose client is gone, it brings back
/// exactly the 200 unacknowledged.
pub fn release_leases(host: &str, id: &str) {
    let snapshot = format!("projects/{PROJECT}/snapshots/{id}-release");
    rt().block_on(async {
        let subs: SubscriptionAdmin = client::subscription_admin("test", &endpoint(host))
            .await
            .unwrap();
        let config = subs
            .get_subscription()
            .set_subscription(sub_path(id))
            .send()
            .await
            .unwrap_or_else(|e| panic!("reading subscription {id}: {e}"));
        subs.create_snapshot()
            .set_name(&snapshot)
            .set_subscription(sub_path(id))
            .send()
            .await
            .unwrap_or_else(|e| panic!("snapshot of {id}: {e}"));
        subs.delete_subscription()
            .set_subscription(sub_path(id))
            .send()
            .await
            .unwrap_or_else(|e| panic!("deleting subscription {id}: {e}"));
        // A pusher looks for its subscription every 50 ms; on a loaded machine its thread may
        // wait a while for a core.
        tokio::time::sleep(Duration::from_secs(1)).await;
        create_subscription(
            host,
            id,
            config.ack_deadline_seconds,
            config.enable_message_ordering,
        )
        .await;
        subs.seek()
            .set_subscription(sub_path(id))
            .set_snapshot(&snapshot)
            .send()
            .await
            .unwrap_or_else(|e| panic!("seeking {id} to its snapshot: {e}"));
        subs.delete_snapshot()
            .set_snapshot(&snapshot)
            .send()
            .await
            .unwrap_or_else(|e| panic!("deleting the snapshot of {id}: {e}"));
    });
}

/// Waits at most `limit` for `f` to hold.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
