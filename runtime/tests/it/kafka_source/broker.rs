//! Talking to the test broker directly (rdkafka): topics, input records, committed offsets, and
//! the job specs the source tests run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::super::harness::*;

pub fn bootstrap() -> String {
    service_env("kafka", "KAFKA_BOOTSTRAP")
}

/// A topic or group name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "ks-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap());
    c
}

fn admin() -> AdminClient<DefaultClientContext> {
    config().create().unwrap()
}

pub fn create_topic(name: &str, partitions: i32) {
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let r = futures::executor::block_on(admin().create_topics(&[t], &AdminOptions::new())).unwrap();
    for x in r {
        x.unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
    }
    wait_for_partitions(name, partitions);
}

pub fn add_partitions(name: &str, total: usize) {
    let p = NewPartitions::new(name, total);
    let r =
        futures::executor::block_on(admin().create_partitions(&[p], &AdminOptions::new())).unwrap();
    for x in r {
        x.unwrap_or_else(|e| panic!("adding partitions to {name}: {e:?}"));
    }
    wait_for_partitions(name, total as i32);
}

/// Waits until the metadata shows every partition with a leader.
fn wait_for_partitions(name: &str, partitions: i32) {
    let c: BaseConsumer = config().create().unwrap();
    for _ in 0..100 {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(5)) {
            let ready = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() as i32 == partitions
                    && t.partitions()
                        .iter()
                        .all(|p| p.error().is_none() && p.leader() >= 0)
            });
            if ready {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {name} never showed {partitions} partitions");
}

/// One record to produce.
pub struct Rec {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, String)>,
}

impl Rec {
    pub fn json(partition: i32, value: serde_json::Value) -> Rec {
        Rec {
            partition,
            key: None,
            value: value.to_string().into_bytes(),
            timestamp: None,
            headers: Vec::new(),
        }
    }
}

pub fn producer() -> BaseProducer {
    config().set("linger.ms", "5").create().unwrap()
}

pub fn produce(topic: &str, records: impl IntoIterator<Item = Rec>) {
    let p = producer();
    send(&p, topic, records);
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Queues records on `p` (the caller flushes).
pub fn send(p: &BaseProducer, topic: &str, records: impl IntoIterator<Item = Rec>) {
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        loop {
            let mut rec: BaseRecord<'_, Vec<u8>, Vec<u8>> = BaseRecord::to(topic)
                .partition(r.partition)
                .payload(&r.value)
                .headers(headers.clone());
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
}

/// `{"id": i}` for i in `ids`, spread round-robin over `partitions`.
pub fn ids(ids: std::ops::Range<i64>, partitions: i32) -> impl Iterator<Item = Rec> {
    ids.map(move |i| {
        Rec::json(
            (i % partitions as i64) as i32,
            serde_json::json!({ "id": i }),
        )
    })
}

/// Produces ids `range` over `partitions` at about `per_sec`, from a background thread.
pub fn produce_slowly(
    topic: &str,
    range: std::ops::Range<i64>,
    partitions: i32,
    per_sec: u64,
) -> std::thread::JoinHandle<()> {
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let p = producer();
        let chunk = (per_sec / 20).max(1) as i64;
        let mut next = range.start;
        while next < range.end {
            let end = (next + chunk).min(range.end);
            send(&p, &topic, ids(next..end, partitions));
            p.flush(Duration::from_secs(30)).unwrap();
            next = end;
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The group's committed offset per partition (`None` where it has none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        })
        .collect()
}

pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = config().create().unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// Every message of a topic's partition 0 as it is now.
pub fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let end = end_offsets(topic, 1)[0];
    let c: BaseConsumer = config().set("group.id", unique("reader")).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out
        .last()
        .map_or(end > 0, |m: &OwnedMessage| m.offset() + 1 < end)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "could not read {topic}"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
        }
    }
    out
}

/// A pipeline `kafka` source → exactly-once JSON files, with `source` lines added to the source.
pub fn spec(dir: &Path, file: &str, parallelism: u32, source: &str) -> PathBuf {
    write(
        dir,
        file,
        &format!(
            r#"name: ks
parallelism: {parallelism}
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: src
    type: kafka
    bootstrap_servers: "{bootstrap}"
    request_timeout: 10s
{source}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
    rolling: {{ max_part_size: 16KiB, inactivity_interval: 300ms }}
"#,
            state = dir.join("state").display(),
            out = dir.join("out").display(),
            bootstrap = bootstrap(),
        ),
    )
}

/// Polls until `f` returns Some, or panics after `secs`.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET on a running job's admin API.
pub fn get(job: &Running, path: &str) -> Option<String> {
    let o = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", &format!("{}{path}", job.admin)])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}
