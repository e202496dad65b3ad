//! Test-side Kafka helpers: topics, input data, and reading a topic back to count ids.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::harness::*;

pub fn bootstrap() -> String {
    service_env("kafka", "KAFKA_BOOTSTRAP")
}

/// A name no other test (or earlier run) uses: topics and transactional ids stay apart.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_topic_with(bootstrap, name, partitions, &[]);
}

/// [`create_topic`] with topic configs (`max.message.bytes`, …).
pub fn create_topic_with(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let r =
        futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    for t in r {
        t.unwrap_or_else(|(n, e)| panic!("creating topic {n}: {e}"));
    }
    // The broker's metadata follows the controller a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .unwrap();
        let t = &md.topics()[0];
        if t.error().is_none() && t.partitions().len() == partitions as usize {
            return;
        }
        assert!(Instant::now() < deadline, "topic {name} never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes JSON records `{id, pad}` (about `size` bytes each, keyed by id) for the ids in
/// `ids`, at about `per_sec` records a second, on a thread of its own: a job reading the topic
/// unbounded is still busy when the test kills it, however fast it runs.
pub fn produce_json_slowly(
    bootstrap: &str,
    topic: &str,
    ids: std::ops::Range<i64>,
    size: usize,
    per_sec: i64,
) -> std::thread::JoinHandle<()> {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let pad = "x".repeat(size.saturating_sub(30));
        let chunk = (per_sec / 20).max(1);
        for i in ids {
            let value = format!(r#"{{"id":{i},"pad":"{pad}"}}"#);
            let key = i.to_string();
            let mut rec = BaseRecord::to(&topic).key(&key).payload(&value);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            if (i + 1) % chunk == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        p.flush(Duration::from_secs(60)).unwrap();
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    Committed,
    Uncommitted,
}

/// How often each `id` occurs in `topic`. Reads every partition to its end (for
/// read_committed: the last stable offset), and waits up to `patience` for `expect` distinct
/// ids, since commit markers are written just after a commit returns.
pub fn read_ids(
    bootstrap: &str,
    topic: &str,
    isolation: Isolation,
    expect: usize,
    patience: Duration,
) -> BTreeMap<i64, usize> {
    let level = match isolation {
        Isolation::Committed => "read_committed",
        Isolation::Uncommitted => "read_uncommitted",
    };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", level)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut counts = BTreeMap::new();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut last = Instant::now();
    loop {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                last = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or_else(|e| panic!("{topic}: not JSON ({e})"));
                let id = v["id"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{topic}: no integer id in {v}"));
                *counts.entry(id).or_insert(0) += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
        let idle = last.elapsed();
        let all_read = at_end.len() as i32 == partitions;
        if all_read && counts.len() >= expect && idle > Duration::from_millis(500) {
            break;
        }
        if idle > patience {
            break;
        }
    }
    counts
}

/// Read-committed output must hold ids 0..n exactly once.
pub fn assert_topic_exactly_once(bootstrap: &str, topic: &str, n: i64) {
    let counts = read_ids(
        bootstrap,
        topic,
        Isolation::Committed,
        n as usize,
        Duration::from_secs(20),
    );
    assert_exactly_once(&counts, n);
}

/// Duplicates a read_uncommitted consumer sees (records of aborted transactions).
pub fn uncommitted_duplicates(bootstrap: &str, topic: &str, n: i64) -> usize {
    read_ids(
        bootstrap,
        topic,
        Isolation::Uncommitted,
        n as usize,
        Duration::from_secs(5),
    )
    .values()
    .map(|c| c - 1)
    .sum()
}

/// A pipeline: `source` (YAML list items) → kafka sink with `sink_extra` settings.
pub fn spec(
    dir: &Path,
    job: &str,
    parallelism: u32,
    checkpoint: &str,
    source: &str,
    sink_extra: &str,
) -> std::path::PathBuf {
    write(
        dir,
        &format!("{job}-{parallelism}.yaml"),
        &format!(
            "name: {job}\nparallelism: {parallelism}\ncheckpoint: {{ {checkpoint}, storage: {state} }}\nsources:\n{source}\nsinks:\n  - name: out\n    type: kafka\n{sink_extra}\n",
            state = dir.join("state").display(),
        ),
    )
}

/// `count` records `{id, user}` at `rate` per second over 4 splits.
pub fn datagen(count: i64, rate: u32) -> String {
    format!(
        "  - name: gen\n    type: datagen\n    count: {count}\n    rate: {rate}\n    splits: 4\n    fields:\n      id: {{ kind: sequence }}\n      user: {{ kind: int, min: 0, max: 99, prefix: u }}"
    )
}

/// A bounded Kafka source reading `topic` to the offsets it finds at start.
pub fn kafka_source(bootstrap: &str, topic: &str) -> String {
    format!(
        "  - name: in\n    type: kafka\n    bootstrap_servers: {bootstrap}\n    topics: [{topic}]\n    group_id: {group}\n    starting_offsets: earliest\n    stop_at: latest",
        group = unique("g")
    )
}

/// Sink settings for an exactly-once kafka sink into `topic`.
pub fn eo_sink(bootstrap: &str, topic: &str) -> String {
    format!(
        "    bootstrap_servers: {bootstrap}\n    topic: {topic}\n    key_field: id\n    delivery: exactly-once"
    )
}
