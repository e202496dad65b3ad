//! The running source: one StreamingPull stream per worker (all workers share the
//! subscription), read by a task that hands messages over in chunks; each message waits
//! unacknowledged until the checkpoint that covers it is durable, while the client extends its
//! lease (the client's lease loop sends ModifyAckDeadline every few seconds for every message
//! still held, by `ack_deadline`), so a checkpoint interval longer than the subscription's ack
//! deadline causes no redelivery. `ledger.rs` decides what to acknowledge when and which
//! deliveries are duplicates.
//!
//! Guarantees (README, "Pub/Sub"): with a failed checkpoint or a crash, unacknowledged messages
//! come again and are emitted again only if their checkpoint never completed; a message whose
//! checkpoint completed but whose acknowledgement was lost comes again to *some* worker, and is
//! dropped when that worker knows its id (the worker that emitted it, within `dedup_window`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownToken};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client;
use super::config::SourceSettings;
use super::decode::{Decoder, RawMessage};
use super::ledger::{Delivery, Ledger};
use super::metrics::SourceMetrics;
use super::watermark::Watermark;
use crate::api::{Batch, NodeConfig, NodeContext, Record, Result, Source, SourcePoll, SplitId};
use crate::error::Error;
use crate::on_error::OnError;

/// How long a poll waits for the first message.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// Chunks buffered between the reading task and the source.
const CHUNKS: usize = 4;
/// Leases are extended for at most this long; the job fails (checkpoint timeout) long before.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// How long closing waits for acknowledgements to be sent.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The ledger's checkpoint tag for "covered by the last snapshot".
const COVERED: u64 = 1;

type Chunk = std::result::Result<Vec<(Message, Handler)>, String>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub struct PubsubSource {
    settings: Arc<SourceSettings>,
    decoder: Decoder,
    node: String,
    target: String,
    split: SplitId,
    chunks: Option<mpsc::Receiver<Chunk>>,
    reader: Option<JoinHandle<()>>,
    shutdown: Option<ShutdownToken>,
    buffered: VecDeque<(Message, Handler)>,
    ledger: Ledger<Handler>,
    watermark: Option<Watermark>,
    metrics: SourceMetrics,
    record_errors: Option<prometheus::IntCounter>,
    last_message: Instant,
    /// Ids whose acknowledgement an exactly-once subscription refused.
    refused: (
        mpsc::UnboundedSender<String>,
        mpsc::UnboundedReceiver<String>,
    ),
    ack_deadline_ms: i64,
}

impl PubsubSource {
    pub fn new(settings: SourceSettings) -> Self {
        let c = &settings.config;
        let window = c.dedup_window.as_millis() as i64;
        let deadline = c.ack_deadline.as_millis() as i64;
        PubsubSource {
            decoder: Decoder::new(c),
            // Restored ids are held until a crashed run's leases have surely run out: one
            // lease after the crash, and the restart took at least no time.
            ledger: Ledger::new(window, 2 * deadline),
            ack_deadline_ms: deadline,
            settings: Arc::new(settings),
            node: String::new(),
            target: String::new(),
            split: Arc::from(""),
            chunks: None,
            reader: None,
            shutdown: None,
            buffered: VecDeque::new(),
            watermark: None,
            metrics: SourceMetrics::detached(),
            record_errors: None,
            last_message: Instant::now(),
            refused: mpsc::unbounded_channel(),
        }
    }

    /// Takes the next chunks into `buffered`, waiting up to `POLL_WAIT` when there is none.
    async fn fill(&mut self) -> Result<()> {
        let want = self.settings.config.batch_size;
        let Some(rx) = self.chunks.as_mut() else {
            return Err(Error::node(&self.node, "the source is not open"));
        };
        if self.buffered.is_empty() {
            match tokio::time::timeout(POLL_WAIT, rx.recv()).await {
                Err(_) => return Ok(()),
                Ok(None) => {
                    return Err(Error::node(
                        &self.node,
                        format!("the stream from {} ended", self.target),
                    ))
                }
                Ok(Some(chunk)) => self.buffered.extend(self.stream_result(chunk)?),
            }
        }
        while self.buffered.len() < want {
            let Some(rx) = self.chunks.as_mut() else {
                break;
            };
            match rx.try_recv() {
                Ok(chunk) => {
                    let more = self.stream_result(chunk)?;
                    self.buffered.extend(more);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn stream_result(&self, chunk: Chunk) -> Result<Vec<(Message, Handler)>> {
        chunk.map_err(|e| Error::node(&self.node, format!("receiving from {}: {e}", self.target)))
    }

    /// Records for the buffered messages (at most one batch); duplicates are dropped.
    fn take_batch(&mut self) -> Result<Vec<Record>> {
        let max = self.settings.config.batch_size;
        let mut records = Vec::with_capacity(self.buffered.len().min(max));
        let now = now_ms();
        while records.len() < max {
            let Some((m, h)) = self.buffered.pop_front() else {
                break;
            };
            self.last_message = Instant::now();
            let attempt = h.delivery_attempt().unwrap_or(0);
            match self.ledger.receive(&m.message_id, h, now) {
                Delivery::New => {
                    if attempt > 1 {
                        self.metrics.redelivered.inc();
                    }
                }
                Delivery::WaitingDuplicate => {
                    self.metrics.redelivered.inc();
                    self.metrics.deduplicated.inc();
                    continue;
                }
                Delivery::CommittedDuplicate(h) => {
                    self.metrics.redelivered.inc();
                    self.metrics.deduplicated.inc();
                    self.ack(vec![(m.message_id.clone(), h)]);
                    continue;
                }
            }
            if let Some(w) = &mut self.watermark {
                w.touch(now);
            }
            let raw = RawMessage {
                id: &m.message_id,
                data: &m.data,
                attributes: &m.attributes,
                publish_ms: m
                    .publish_time
                    .as_ref()
                    .map(|t| t.seconds() * 1000 + i64::from(t.nanos()) / 1_000_000),
                ordering_key: &m.ordering_key,
            };
            match self.decoder.decode(&raw) {
                Ok(r) => {
                    if let (Some(w), Some(t)) = (&mut self.watermark, r.event_time) {
                        w.observe(t, now);
                    }
                    records.push(r);
                }
                Err(why) => {
                    if let Some(c) = &self.record_errors {
                        c.inc();
                    }
                    match &self.settings.config.on_error {
                        OnError::Skip => tracing::warn!(
                            node = %self.node, message_id = %m.message_id,
                            "skipped a message: {why}"
                        ),
                        // The message stays pending: it is acknowledged with its checkpoint.
                        OnError::Fail | OnError::DeadLetter(_) => {
                            return Err(Error::Record {
                                node: self.node.clone(),
                                record: format!(
                                    "message {} of {}",
                                    m.message_id, self.settings.subscription
                                ),
                                message: why,
                            })
                        }
                    }
                }
            }
        }
        self.metrics.outstanding.set(self.ledger.pending() as i64);
        Ok(records)
    }

    /// Acknowledges; an exactly-once subscription's answer is checked, and a refusal keeps
    /// the id remembered (the message comes again).
    fn ack(&self, handlers: Vec<(String, Handler)>) {
        let mut confirmed = FuturesUnordered::new();
        for (id, h) in handlers {
            self.metrics.acked.inc();
            match h {
                Handler::ExactlyOnce(h) => confirmed.push(async move {
                    let r = h.confirmed_ack().await;
                    (id, r)
                }),
                other => other.ack(),
            }
        }
        if confirmed.is_empty() {
            return;
        }
        let refused = self.refused.0.clone();
        let failures = self.metrics.ack_failures.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Some((id, r)) = confirmed.next().await {
                if let Err(e) = r {
                    failures.inc();
                    tracing::warn!(node = %node, message_id = %id, error = %e, "acknowledgement refused; the message will come again and be dropped by id");
                    let _ = refused.send(id);
                }
            }
        });
    }
}

/// Reads the stream, handing over whatever is ready together (at most `max` messages).
async fn read(mut stream: MessageStream, tx: mpsc::Sender<Chunk>, max: usize) {
    loop {
        let first = match stream.next().await {
            None => return,
            Some(Err(e)) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
            Some(Ok(m)) => m,
        };
        let mut chunk = vec![first];
        let mut error = None;
        // `next` only polls the gRPC stream (cancel-safe) once the stream is open, so taking
        // what is ready without waiting loses nothing.
        while chunk.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => chunk.push(m),
                Some(Some(Err(e))) => {
                    error = Some(e.to_string());
                    break;
                }
                Some(None) | None => break,
            }
        }
        if tx.send(Ok(chunk)).await.is_err() {
            return;
        }
        if let Some(e) = error {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

#[async_trait]
impl Source for PubsubSource {
    /// The subscription exists.
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        client::preflight(&s.endpoint, &s.subscription, true)
            .await
            .map(|l| vec![l])
            .map_err(|(setting, m)| match setting {
                true => cfg.error("subscription", m),
                false => Error::node(cfg.name(), m),
            })
    }

    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = SourceMetrics::for_node(ctx);
        self.record_errors = Some(ctx.metrics.record_errors.clone());
        let s = self.settings.clone();
        let c = &s.config;
        self.split = Arc::from(format!("{}/worker-{}", s.subscription, ctx.worker));
        // Every restored id is in committed output, whichever worker stored it (a savepoint
        // hands each worker all of them): dropping their redeliveries is always right.
        let now = now_ms();
        let prefix = format!("{}/", s.subscription);
        let mut ids = 0;
        for (split, state) in &restored {
            if !split.starts_with(&prefix) {
                continue;
            }
            ids += self
                .ledger
                .restore(state, now)
                .map_err(|e| Error::Checkpoint(format!("{}: split {split}: {e}", ctx.node)))?;
        }
        if ids > 0 {
            tracing::info!(node = %self.node, ids, "restored the message ids of the last checkpoint");
        }
        if let Some(w) = &c.watermark {
            self.watermark = Some(Watermark::new(
                w.max_out_of_orderness.as_millis() as i64,
                w.idle_timeout.map(|d| d.as_millis() as i64),
                now,
            ));
        }
        let endpoint = client::effective(&s.endpoint);
        self.target = format!("{} ({})", s.subscription, client::describe(&endpoint));
        let subscriber = client::subscriber(&ctx.node, &endpoint).await?;
        let stream = subscriber
            .subscribe(s.subscription.clone())
            .set_max_outstanding_messages(c.max_outstanding_messages)
            .set_max_outstanding_bytes(c.max_outstanding_bytes.0.min(i64::MAX as u64) as i64)
            .set_max_lease_extension(c.ack_deadline.as_std())
            .set_max_lease(MAX_LEASE)
            .build();
        self.shutdown = Some(stream.shutdown_token());
        let (tx, rx) = mpsc::channel(CHUNKS);
        self.reader = Some(tokio::spawn(read(stream, tx, c.batch_size)));
        self.chunks = Some(rx);
        self.last_message = Instant::now();
        tracing::info!(node = %self.node, worker = ctx.worker, subscription = %self.target, "receiving");
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        let now = now_ms();
        while let Ok(id) = self.refused.1.try_recv() {
            self.ledger.refresh(&id, now);
        }
        self.ledger.expire(now);
        self.metrics.remembered.set(self.ledger.recent() as i64);
        self.fill().await?;
        let records = self.take_batch()?;
        if !records.is_empty() {
            return Ok(SourcePoll::Batch(Batch::new(
                Some(self.split.clone()),
                records,
            )));
        }
        if let Some(idle) = self.settings.config.stop_after_idle {
            if self.buffered.is_empty() && self.last_message.elapsed() >= idle.as_std() {
                tracing::info!(node = %self.node, "no message for {idle}: finishing");
                return Ok(SourcePoll::Finished);
            }
        }
        Ok(SourcePoll::Idle)
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        // Everything pending is covered by this barrier. The API does not pass its id, and
        // needs not: barriers are one at a time, so a completion is always for the last
        // snapshot, and a failed checkpoint's messages are covered by the next one too.
        let state = self.ledger.snapshot(COVERED);
        Ok(BTreeMap::from([(self.split.to_string(), state)]))
    }

    fn watermark(&mut self) -> Option<i64> {
        self.watermark.as_mut().and_then(|w| w.current(now_ms()))
    }

    async fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        tracing::trace!(node = %self.node, checkpoint = id, "acknowledging");
        let released = self.ledger.complete(COVERED, now_ms());
        let mut handlers = Vec::with_capacity(released.len());
        for r in released {
            if r.held_ms > self.ack_deadline_ms {
                self.metrics.lease_extended.inc();
            }
            handlers.push((r.id, r.handler));
        }
        self.ack(handlers);
        self.metrics.outstanding.set(self.ledger.pending() as i64);
        crate::fault::point("after_source_ack");
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let m = &self.metrics;
        tracing::info!(
            node = %self.node,
            acked = m.acked.get(),
            redelivered = m.redelivered.get(),
            deduplicated = m.deduplicated.get(),
            lease_extended = m.lease_extended.get(),
            ack_failures = m.ack_failures.get(),
            "pubsub source closing"
        );
        // Messages whose checkpoint never completed go back now (a dropped handler nacks).
        drop(self.ledger.take_pending());
        self.buffered.clear();
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        if let Some(t) = self.shutdown.take() {
            if tokio::time::timeout(CLOSE_WAIT, t.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(node = %self.node, "acknowledgements still being sent at close");
            }
        }
        Ok(())
    }
}

impl Drop for PubsubSource {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}
