//! A table built from a compacted Kafka topic and kept following it: a thread reads every
//! partition from the beginning and hands the messages over; the operator applies them between
//! batches, so a checkpoint's offsets describe exactly the table its records were joined with.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::config::{Settings, TableSource};
use super::load::LoadError;
use super::table::{key_text, row_key, Limits, Table};
use crate::connectors::kafka::client::client_config;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Messages read ahead of the operator; the reading thread waits beyond it.
const AHEAD: usize = 10_000;

/// Where the catch-up ends per partition (the reader's `reached`), and the offsets it reads to.
type CatchUp = (BTreeMap<i32, i64>, BTreeMap<i32, i64>);

/// One message of the topic.
struct Update {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

pub struct Follower {
    table: Table,
    /// The next offset to apply, per partition: the checkpoint's state.
    offsets: BTreeMap<i32, i64>,
    rx: Receiver<Update>,
    /// Read during the catch-up past the point it reads to: applied with the first batch.
    held: VecDeque<Update>,
    stop: Arc<AtomicBool>,
    value_key: Option<Vec<String>>,
    /// Message key → row key, for tables keyed by value fields (a tombstone has no value).
    row_keys: HashMap<Vec<u8>, String>,
    limits: Limits,
    topic: String,
}

fn settings_of(s: &Settings) -> (&str, &str, &BTreeMap<String, String>, bool) {
    match &s.source {
        TableSource::Kafka {
            bootstrap_servers,
            topic,
            properties,
            value_key,
        } => (bootstrap_servers, topic, properties, *value_key),
        _ => unreachable!("a follower is started for kafka tables only"),
    }
}

fn consumer(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
) -> Result<BaseConsumer, LoadError> {
    let mut c = client_config(bootstrap, properties);
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("group.id", "weir-preloaded-lookup");
    c.create()
        .map_err(|e| LoadError::Invalid(format!("creating the Kafka consumer: {e}")))
}

/// The topic's partitions; an error when it does not exist.
fn partitions(c: &BaseConsumer, topic: &str, bootstrap: &str) -> Result<Vec<i32>, LoadError> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| LoadError::Unavailable(format!("reading metadata from {bootstrap}: {e}")))?;
    let t = md.topics().iter().find(|t| t.name() == topic);
    match t {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => Err(LoadError::Invalid(format!(
            "topic {topic:?} does not exist on {bootstrap}"
        ))),
    }
}

/// `weir validate --connect`: the brokers answer and the topic exists.
pub async fn preflight(s: &Settings) -> Result<String, LoadError> {
    let (bootstrap, topic, properties, _) = settings_of(s);
    let (bootstrap, topic, properties) =
        (bootstrap.to_string(), topic.to_string(), properties.clone());
    tokio::task::spawn_blocking(move || {
        let c = consumer(&bootstrap, &properties)?;
        let n = partitions(&c, &topic, &bootstrap)?.len();
        Ok(format!("topic {topic:?} exists ({n} partitions)"))
    })
    .await
    .map_err(|e| LoadError::Unavailable(e.to_string()))?
}

impl Follower {
    /// Reads the topic up to `restored` offsets (a restart: the checkpoint's table) or, fresh,
    /// up to its current end; then keeps reading in the background.
    pub async fn start(
        s: &Settings,
        node: &str,
        restored: Option<BTreeMap<i32, i64>>,
    ) -> Result<Follower, LoadError> {
        let (bootstrap, topic, properties, value_key) = settings_of(s);
        let (bootstrap, topic, properties) =
            (bootstrap.to_string(), topic.to_string(), properties.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(AHEAD);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread_stop = stop.clone();
        let name = node.to_string();
        std::thread::Builder::new()
            .name(format!("weir-table-{node}"))
            .spawn(move || {
                let started = (|| {
                    let c = consumer(&bootstrap, &properties)?;
                    let parts = partitions(&c, &topic, &bootstrap)?;
                    let targets = match restored {
                        Some(t) => t,
                        None => ends(&c, &topic, &parts)?,
                    };
                    let mut tpl = TopicPartitionList::new();
                    for p in &parts {
                        tpl.add_partition_offset(&topic, *p, Offset::Beginning)
                            .map_err(|e| LoadError::Invalid(e.to_string()))?;
                    }
                    c.assign(&tpl)
                        .map_err(|e| LoadError::Invalid(format!("assigning {topic}: {e}")))?;
                    Ok((c, parts, targets))
                })();
                let (c, parts, targets) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                read(c, &name, parts, targets, tx, ready_tx, thread_stop);
            })
            .map_err(|e| LoadError::Unavailable(format!("starting the table reader: {e}")))?;
        let mut f = Follower {
            table: Table::new(s.mapping.clone()),
            offsets: BTreeMap::new(),
            rx,
            held: VecDeque::new(),
            stop,
            value_key: value_key.then(|| s.row_key.clone()),
            row_keys: HashMap::new(),
            limits: s.limits,
            topic: s_topic(s),
        };
        // The catch-up: everything up to the targets is applied before the first record.
        let (reached, targets) = ready_rx
            .await
            .map_err(|_| LoadError::Unavailable("the table reader stopped".into()))??;
        f.apply_until(&reached, &targets)
            .map_err(LoadError::Invalid)?;
        tracing::info!(node = %node, rows = f.table.len(), partitions = f.offsets.len(), "lookup table read from its topic");
        Ok(f)
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.offsets
    }

    /// Applies what the reader has handed over so far.
    pub fn apply_updates(&mut self) -> Result<(), String> {
        while let Some(u) = self.held.pop_front() {
            self.apply(u)?;
        }
        loop {
            match self.rx.try_recv() {
                Ok(u) => self.apply(u)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(format!("the reader of topic {:?} stopped", self.topic))
                }
            }
        }
    }

    /// The catch-up: applies updates below `targets` (the checkpoint's offsets, or the ends)
    /// until every partition got to `reached` (where the reader found it caught up); holds back
    /// what lies beyond.
    fn apply_until(
        &mut self,
        reached: &BTreeMap<i32, i64>,
        targets: &BTreeMap<i32, i64>,
    ) -> Result<(), String> {
        let behind = |f: &Follower| {
            reached
                .iter()
                .any(|(p, t)| f.offsets.get(p).copied().unwrap_or(0) < *t)
        };
        while behind(self) {
            match self.rx.recv_timeout(TIMEOUT) {
                Ok(u) if u.offset >= targets.get(&u.partition).copied().unwrap_or(0) => {
                    self.held.push_back(u)
                }
                Ok(u) => self.apply(u)?,
                Err(_) => {
                    return Err(format!(
                        "topic {:?}: the table did not reach the offsets {reached:?} (at {:?})",
                        self.topic, self.offsets
                    ))
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, u: Update) -> Result<(), String> {
        let at = || {
            format!(
                "topic {:?} partition {} offset {}",
                self.topic, u.partition, u.offset
            )
        };
        let message_key = u.key.as_deref().map(String::from_utf8_lossy);
        match &u.value {
            None => {
                let key = match &self.value_key {
                    Some(_) => u.key.as_ref().and_then(|k| self.row_keys.remove(k)),
                    None => message_key.map(|k| k.into_owned()),
                };
                if let Some(k) = key {
                    self.table.remove(&k);
                }
            }
            Some(bytes) => {
                let row: Value = serde_json::from_slice(bytes)
                    .map_err(|e| format!("{}: the value is not JSON: {e}", at()))?;
                let key = match &self.value_key {
                    Some(fields) => {
                        let k = row_key(&row, fields).map_err(|e| format!("{}: {e}", at()))?;
                        if let Some(mk) = &u.key {
                            if let Some(old) = self.row_keys.insert(mk.clone(), k.clone()) {
                                if old != k {
                                    self.table.remove(&old);
                                }
                            }
                        }
                        k
                    }
                    None => match message_key {
                        Some(k) => key_text(&[&Value::String(k.into_owned())]),
                        None => return Err(format!("{}: a message without a key", at())),
                    },
                };
                self.table.insert(key, &row, &self.limits)?;
            }
        }
        self.offsets.insert(u.partition, u.offset + 1);
        Ok(())
    }
}

fn s_topic(s: &Settings) -> String {
    settings_of(s).1.to_string()
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Each partition's end now (its high watermark): what a fresh table reads up to.
fn ends(c: &BaseConsumer, topic: &str, parts: &[i32]) -> Result<BTreeMap<i32, i64>, LoadError> {
    parts
        .iter()
        .map(|p| {
            c.fetch_watermarks(topic, *p, TIMEOUT)
                .map(|(_, high)| (*p, high))
                .map_err(|e| LoadError::Unavailable(format!("{topic} partition {p}: {e}")))
        })
        .collect()
}

/// The reading thread: hands every message over in order; reports the catch-up point once
/// every partition reached its target or its end (compaction may have removed the message just
/// below a checkpoint's offset, so the end counts too).
fn read(
    c: BaseConsumer,
    node: &str,
    parts: Vec<i32>,
    targets: BTreeMap<i32, i64>,
    tx: SyncSender<Update>,
    ready: tokio::sync::oneshot::Sender<Result<CatchUp, LoadError>>,
    stop: Arc<AtomicBool>,
) {
    let mut ready = Some(ready);
    // Per partition during the catch-up: the offset handed over up to which it counts.
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending: Vec<i32> = parts
        .iter()
        .copied()
        .filter(|p| targets.get(p).copied().unwrap_or(0) > 0)
        .collect();
    let started = Instant::now();
    type Ready = Option<tokio::sync::oneshot::Sender<Result<CatchUp, LoadError>>>;
    let report = |reached: &BTreeMap<i32, i64>, ready: &mut Ready| {
        if let Some(r) = ready.take() {
            let _ = r.send(Ok((reached.clone(), targets.clone())));
        }
    };
    if pending.is_empty() {
        report(&reached, &mut ready);
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            if ready.is_some() && started.elapsed() > TIMEOUT * 4 {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(LoadError::Unavailable(format!(
                        "the topic was not read to its end within {:?}",
                        TIMEOUT * 4
                    ))));
                }
                return;
            }
            continue;
        };
        match m {
            Ok(m) => {
                let p = m.partition();
                let u = Update {
                    partition: p,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                };
                let target = targets.get(&p).copied().unwrap_or(0);
                if ready.is_some() && u.offset >= target {
                    // Past the checkpoint's point: this partition is caught up before it.
                    pending.retain(|q| *q != p);
                } else if ready.is_some() {
                    reached.insert(p, u.offset + 1);
                    if u.offset + 1 >= target {
                        pending.retain(|q| *q != p);
                    }
                }
                if tx.send(u).is_err() {
                    return;
                }
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                pending.retain(|q| *q != p);
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "reading the lookup table's topic");
            }
        }
        if ready.is_some() && pending.is_empty() {
            report(&reached, &mut ready);
        }
    }
}
