//! The running source: one librdkafka consumer per worker with a queue per owned partition, read
//! round-robin so a busy partition cannot starve the others, and batches that never mix
//! partitions (each batch's split is its partition).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::config::Settings;
use super::dead_letter::DeadLetterQueue;
use super::decode::{Decoder, RawMessage};
use super::lookup;
use super::splits::{owner_index, split_id, Position};
use crate::api::{Batch, NodeConfig, NodeContext, Record, Result, Source, SourcePoll, SplitId};
use crate::connectors::kafka::client::{
    client_config, consumer_buffers, KafkaConsumer, RecordingContext,
};
use crate::error::Error;
use crate::event_time::split::SplitWatermarks;
use crate::on_error::OnError;

type Queue = PartitionQueue<RecordingContext>;

struct Partition {
    id: SplitId,
    topic: String,
    partition: i32,
    /// `None` once a bounded partition reached its end (nothing more is fetched for it).
    queue: Option<Queue>,
    pos: Position,
    /// A bounded partition got to the end of the log (its last offsets may be transaction
    /// markers, which no record ever reaches).
    at_end: bool,
    last_error: Option<String>,
}

impl Partition {
    fn done(&self) -> bool {
        self.pos.finished() || (self.pos.stop.is_some() && self.at_end)
    }
}

/// A partition to start reading, with its position.
type Start = (String, i32, Position);

struct Discovery {
    every: Duration,
    last: Instant,
    task: Option<JoinHandle<std::result::Result<Vec<Start>, String>>>,
}

pub struct KafkaSource {
    settings: Arc<Settings>,
    decoder: Decoder,
    node: String,
    group: String,
    ctx: Option<NodeContext>,
    consumer: Option<Arc<KafkaConsumer>>,
    parts: Vec<Partition>,
    cursor: usize,
    watermarks: Option<SplitWatermarks>,
    discovery: Option<Discovery>,
    dead_letters: Option<DeadLetterQueue>,
    /// Next offsets as of the last snapshot: committed to the group once that checkpoint is
    /// durable (barriers are one at a time, so a completion is always for the last snapshot).
    snapshot_offsets: Option<Vec<(String, i32, i64)>>,
    /// The offsets last committed (asynchronously) to the group.
    last_commit: Option<TopicPartitionList>,
    last_client_error: Option<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl KafkaSource {
    pub fn new(settings: Settings) -> Self {
        let decoder = Decoder::new(&settings.config);
        KafkaSource {
            settings: Arc::new(settings),
            decoder,
            node: String::new(),
            group: String::new(),
            ctx: None,
            consumer: None,
            parts: Vec::new(),
            cursor: 0,
            watermarks: None,
            discovery: None,
            dead_letters: None,
            snapshot_offsets: None,
            last_commit: None,
            last_client_error: None,
        }
    }

    fn consumer(&self) -> Result<&Arc<KafkaConsumer>> {
        self.consumer
            .as_ref()
            .ok_or_else(|| Error::node(&self.node, "the source is not open"))
    }

    /// Runs blocking librdkafka look-ups off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KafkaConsumer) -> std::result::Result<T, String> + Send + 'static,
    ) -> Result<T> {
        let c = self.consumer()?.clone();
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .map_err(|e| Error::node(&self.node, format!("broker look-up task failed: {e}")))?
            .map_err(|m| Error::node(&self.node, m))
    }

    fn create_consumer(&self, ctx: &NodeContext) -> Result<KafkaConsumer> {
        let c = &self.settings.config;
        let mut cc = client_config(&c.bootstrap_servers, &c.properties);
        for (k, v) in consumer_buffers(c.batch_size, &c.properties) {
            cc.set(k, v);
        }
        cc.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", self.settings.bounded().to_string());
        if !c.properties.contains_key("auto.offset.reset") {
            // Only reached when a checkpointed offset was deleted by retention meanwhile.
            cc.set("auto.offset.reset", "earliest");
        }
        cc.create_with_context(RecordingContext::default())
            .map_err(|e| Error::node(&ctx.node, format!("creating the Kafka consumer: {e}")))
    }

    /// Gives each partition its own queue, then assigns them (in this order, so no message of
    /// theirs lands on the consumer's main queue).
    fn start_partitions(&mut self, starts: Vec<Start>) -> Result<()> {
        let consumer = self.consumer()?.clone();
        let mut tpl = TopicPartitionList::new();
        let now = now_ms();
        for (topic, partition, pos) in starts {
            let id: SplitId = Arc::from(split_id(&topic, partition));
            let mut part = Partition {
                id: id.clone(),
                topic,
                partition,
                queue: None,
                pos,
                at_end: false,
                last_error: None,
            };
            if !part.done() {
                part.queue = Some(
                    consumer
                        .split_partition_queue(&part.topic, part.partition)
                        .ok_or_else(|| {
                            Error::node(&self.node, format!("no queue for partition {id}"))
                        })?,
                );
                tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(pos.next))
                    .map_err(|e| Error::node(&self.node, format!("{id}: {e}")))?;
                if let Some(w) = &mut self.watermarks {
                    w.assigned(&id, now);
                }
            }
            self.parts.push(part);
        }
        if tpl.count() > 0 {
            consumer
                .incremental_assign(&tpl)
                .map_err(|e| Error::node(&self.node, format!("assigning partitions: {e}")))?;
        }
        Ok(())
    }

    /// Serves the consumer's own queue (errors, commit results). Messages never arrive here.
    fn serve_events(&mut self) -> Result<()> {
        let consumer = self.consumer()?.clone();
        while let Some(ev) = consumer.poll(Duration::ZERO) {
            match ev {
                Ok(m) => {
                    return Err(Error::node(
                        &self.node,
                        format!(
                            "message of {} arrived outside its partition queue",
                            split_id(m.topic(), m.partition())
                        ),
                    ))
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.last_client_error.as_deref() != Some(&text) {
                        tracing::warn!(node = %self.node, error = %text, "Kafka client error (retrying)");
                        self.last_client_error = Some(text);
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a discovery when due and takes in the partitions of a finished one.
    fn discover(&mut self) -> Result<()> {
        let Some(d) = &mut self.discovery else {
            return Ok(());
        };
        if let Some(task) = &d.task {
            if !task.is_finished() {
                return Ok(());
            }
            let task = d.task.take().expect("checked above");
            d.last = Instant::now();
            let outcome = futures::FutureExt::now_or_never(task).expect("the task has finished");
            match outcome {
                Ok(Ok(new)) if !new.is_empty() => {
                    let names: Vec<String> = new.iter().map(|(t, p, _)| split_id(t, *p)).collect();
                    tracing::info!(node = %self.node, partitions = ?names, "discovered new partitions");
                    self.start_partitions(new)?;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.node, error = %e, "partition discovery failed")
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "partition discovery failed")
                }
            }
            return Ok(());
        }
        if d.last.elapsed() < d.every {
            return Ok(());
        }
        let consumer = self.consumer()?.clone();
        let settings = self.settings.clone();
        let ctx = self.ctx.clone().expect("opened");
        let known: BTreeSet<String> = self.parts.iter().map(|p| p.id.to_string()).collect();
        let d = self.discovery.as_mut().expect("checked above");
        d.task = Some(tokio::task::spawn_blocking(move || {
            let c = &settings.config;
            let timeout = c.request_timeout.as_std();
            let all = lookup::topics(&consumer, &c.bootstrap_servers, timeout)?;
            let selected = lookup::select(&all, &settings.topics)?;
            let new =
                lookup::new_owned(&selected, &known, |t, p| ctx.owns_index(owner_index(t, p)));
            // Partitions that appear while running are read from their beginning (Flink's rule),
            // so records written before they were noticed are not skipped.
            let starts = lookup::start_offsets(
                &consumer,
                &new,
                &super::config::StartingOffsets::Earliest,
                "",
                timeout,
            )?;
            Ok(new
                .into_iter()
                .zip(starts)
                .map(|((t, p), next)| (t, p, Position { next, stop: None }))
                .collect())
        }));
        Ok(())
    }

    /// Reads up to one batch from the next partition that has records.
    fn read_batch(&mut self) -> Result<Option<Batch>> {
        let max = self.settings.config.batch_size;
        let n = self.parts.len();
        let mut consumed = 0;
        for step in 0..n {
            if consumed >= max {
                break;
            }
            let i = (self.cursor + step) % n;
            let records = self.drain(i, max - consumed, &mut consumed)?;
            if !records.is_empty() {
                self.cursor = (i + 1) % n;
                return Ok(Some(Batch::new(Some(self.parts[i].id.clone()), records)));
            }
        }
        Ok(None)
    }

    /// Takes up to `budget` messages of partition `i`; poison messages are handled by policy.
    fn drain(&mut self, i: usize, budget: usize, consumed: &mut usize) -> Result<Vec<Record>> {
        let KafkaSource {
            parts,
            decoder,
            watermarks,
            dead_letters,
            settings,
            node,
            ctx,
            ..
        } = self;
        let part = &mut parts[i];
        let Some(queue) = &part.queue else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        let now = now_ms();
        let mut taken = 0;
        while taken < budget {
            let m = match queue.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    part.at_end = true;
                    break;
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    if part.last_error.as_deref() != Some(&text) {
                        tracing::warn!(node = %node, split = %part.id, error = %text, "consume error (retrying)");
                        part.last_error = Some(text);
                    }
                    break;
                }
            };
            taken += 1;
            *consumed += 1;
            let offset = m.offset();
            if part.pos.stop.is_some_and(|s| offset >= s) {
                part.pos.next = offset;
                break;
            }
            let raw = raw_message(&m, decoder.wants_headers());
            match decoder.decode(&raw) {
                Ok(r) => {
                    if let (Some(w), Some(t)) = (watermarks.as_mut(), r.event_time) {
                        w.observe(&part.id, t, now);
                    }
                    records.push(r);
                }
                Err(why) => {
                    if let Some(c) = ctx.as_ref() {
                        c.metrics.record_errors.inc();
                    }
                    match &settings.config.on_error {
                        OnError::Fail => {
                            return Err(Error::Record {
                                node: node.clone(),
                                record: format!(
                                    "topic {} partition {} offset {offset}",
                                    part.topic, part.partition
                                ),
                                message: why,
                            })
                        }
                        OnError::Skip => tracing::warn!(
                            node = %node, topic = %part.topic, partition = part.partition, offset,
                            "skipped a message: {why}"
                        ),
                        OnError::DeadLetter(_) => dead_letters
                            .as_mut()
                            .expect("created in open for dead_letter")
                            // A dead letter keeps the message's headers, read or not.
                            .send(&raw_message(&m, true), &why)?,
                    }
                }
            }
            part.pos.next = offset + 1;
        }
        if part.done() {
            // Nothing more is needed from it; stop fetching.
            part.queue = None;
        }
        Ok(records)
    }
}

/// `m` as the decoder and the dead-letter topic take it; its headers only `with_headers`.
fn raw_message<'a>(m: &'a BorrowedMessage<'a>, with_headers: bool) -> RawMessage<'a> {
    RawMessage {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key(),
        value: m.payload(),
        headers: match with_headers.then(|| m.headers()).flatten() {
            Some(h) => h.iter().map(|h| (h.key, h.value)).collect(),
            None => Vec::new(),
        },
    }
}

#[async_trait]
impl Source for KafkaSource {
    /// The brokers answer and the topics (or the pattern) select at least one partition.
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let c = self.settings.config.clone();
        let selection = self.settings.topics.clone();
        let consumer: KafkaConsumer = client_config(&c.bootstrap_servers, &c.properties)
            .create_with_context(RecordingContext::default())
            .map_err(|e| cfg.error("properties", format!("creating the Kafka consumer: {e}")))?;
        let field = match selection {
            super::config::TopicSelection::List(_) => "topics",
            super::config::TopicSelection::Pattern(_) => "topic_pattern",
        };
        // Outer: the cluster did not answer; inner: the selection does not fit it.
        let found = tokio::task::spawn_blocking(move || {
            let all = lookup::topics(&consumer, &c.bootstrap_servers, c.request_timeout.as_std())?;
            Ok::<_, String>(lookup::select(&all, &selection))
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
        .map_err(Error::Other)?;
        let partitions = found.map_err(|m| cfg.error(field, m))?;
        if partitions.is_empty() {
            return Err(cfg.error(field, "selects no partition on the cluster"));
        }
        let topics: BTreeSet<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
        Ok(vec![format!(
            "{} partitions of {}",
            partitions.len(),
            topics.into_iter().collect::<Vec<_>>().join(", ")
        )])
    }

    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.ctx = Some(ctx.clone());
        let c = &self.settings.config;
        self.group = c
            .group_id
            .clone()
            .or_else(|| c.properties.get("group.id").cloned())
            .unwrap_or_else(|| format!("weir-{}-{}", ctx.job, ctx.node));
        if let Some(w) = &c.watermark {
            self.watermarks = Some(SplitWatermarks::new(
                w.max_out_of_orderness.as_millis() as i64,
                w.idle_timeout.map(|d| d.as_millis() as i64),
            ));
        }
        if let OnError::DeadLetter(d) = &c.on_error {
            self.dead_letters = Some(DeadLetterQueue::new(
                &ctx.node,
                &c.bootstrap_servers,
                &c.properties,
                &d.topic,
                &d.properties,
            )?);
        }
        self.consumer = Some(Arc::new(self.create_consumer(ctx)?));

        let mut positions = BTreeMap::new();
        for (split, v) in &restored {
            let pos = Position::from_value(v)
                .map_err(|e| Error::Checkpoint(format!("{}: split {split}: {e}", ctx.node)))?;
            positions.insert(split.clone(), pos);
        }
        let settings = self.settings.clone();
        let group = self.group.clone();
        let owner = ctx.clone();
        let starts = self
            .blocking(move |consumer| {
                let c = &settings.config;
                let timeout = c.request_timeout.as_std();
                let deadline = Instant::now() + timeout;
                let selected = loop {
                    let all = lookup::topics(consumer, &c.bootstrap_servers, timeout)?;
                    let waiting = lookup::unavailable(&all, &settings.topics);
                    if waiting.is_empty() {
                        break lookup::select(&all, &settings.topics)?;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("topics not available: {}", waiting.join(", ")));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                };
                let owned: Vec<(String, i32)> = selected
                    .into_iter()
                    .filter(|(t, p)| owner.owns_index(owner_index(t, *p)))
                    .collect();
                let (known, fresh): (Vec<_>, Vec<_>) = owned
                    .into_iter()
                    .partition(|(t, p)| positions.contains_key(&split_id(t, *p)));
                let rule = lookup::start_rule(!positions.is_empty(), &c.starting_offsets);
                let starts = lookup::start_offsets(consumer, &fresh, rule, &group, timeout)?;
                let mut out: Vec<Start> = known
                    .into_iter()
                    .map(|(t, p)| {
                        let pos = positions[&split_id(&t, p)];
                        (t, p, pos)
                    })
                    .chain(
                        fresh
                            .into_iter()
                            .zip(starts)
                            .map(|((t, p), next)| (t, p, Position { next, stop: None })),
                    )
                    .collect();
                if settings.bounded() {
                    let unbounded: Vec<(String, i32)> = out
                        .iter()
                        .filter(|(_, _, pos)| pos.stop.is_none())
                        .map(|(t, p, _)| (t.clone(), *p))
                        .collect();
                    let ends = lookup::end_offsets(consumer, &unbounded, timeout)?;
                    let mut ends = ends.into_iter();
                    for (_, _, pos) in out.iter_mut().filter(|(_, _, pos)| pos.stop.is_none()) {
                        pos.stop = ends.next();
                    }
                }
                out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                Ok(out)
            })
            .await?;
        tracing::info!(
            node = %self.node,
            worker = ctx.worker,
            partitions = starts.len(),
            "assigned partitions"
        );
        self.start_partitions(starts)?;
        let every = self.settings.config.partition_discovery_interval.as_std();
        if !self.settings.bounded() && !every.is_zero() {
            self.discovery = Some(Discovery {
                every,
                last: Instant::now(),
                task: None,
            });
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        self.serve_events()?;
        self.discover()?;
        if self.settings.bounded() && self.parts.iter().all(Partition::done) {
            return Ok(SourcePoll::Finished);
        }
        let batch = self.read_batch()?;
        if let Some(d) = &mut self.dead_letters {
            d.flush(self.settings.config.request_timeout.as_std())
                .await?;
        }
        Ok(batch.map_or(SourcePoll::Idle, SourcePoll::Batch))
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        self.snapshot_offsets = Some(
            self.parts
                .iter()
                .map(|p| (p.topic.clone(), p.partition, p.pos.next))
                .collect(),
        );
        Ok(self
            .parts
            .iter()
            .map(|p| (p.id.to_string(), p.pos.to_value()))
            .collect())
    }

    fn watermark(&mut self) -> Option<i64> {
        self.watermarks.as_mut().and_then(|w| w.current(now_ms()))
    }

    async fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        if !self.settings.config.commit_offsets {
            return Ok(());
        }
        let Some(offsets) = self.snapshot_offsets.take() else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (t, p, next) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*next))
                .map_err(|e| Error::node(&self.node, format!("{}: {e}", split_id(t, *p))))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        // Only for lag monitoring and `starting_offsets: committed`: a failure is logged, the
        // checkpoint stays the truth.
        if let Err(e) = self.consumer()?.commit(&tpl, CommitMode::Async) {
            tracing::warn!(node = %self.node, checkpoint = id, group = %self.group, error = %e, "committing offsets failed");
        }
        self.last_commit = Some(tpl);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        // An async commit may still be in flight when the consumer is dropped: the last one is
        // repeated synchronously, so a finished job's group shows where it ended.
        if let (Some(tpl), Some(c)) = (self.last_commit.take(), self.consumer.clone()) {
            let node = self.node.clone();
            let r = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(node = %node, group = %self.group, error = %e, "committing the final offsets failed");
            }
        }
        self.parts.clear();
        if let Some(d) = &mut self.discovery {
            if let Some(t) = d.task.take() {
                t.abort();
            }
        }
        Ok(())
    }
}
