//! The running sink: records are handed to the client's batching publisher as they come, with
//! at most `max_in_flight` unacknowledged. A checkpoint barrier only marks the sink's place
//! (`mark`, the next sequence number); the barrier is acknowledged once Pub/Sub acknowledged
//! every message before the mark (`flushed`), so a completed checkpoint never covers an
//! unpublished record (at-least-once). Meanwhile later records keep being published: waiting
//! for the whole queue at each barrier (`flush`, as Flink's PubSubSink does) stopped the data
//! path for every checkpoint's drain.
//!
//! The client's handles wait in a queue in publish order and are taken from its front: a batch
//! of the client's is acknowledged as a whole, so once the oldest handle is ready the rest of its
//! batch is too and is collected without waiting. (A boxed future per message in a
//! `FuturesUnordered` cost two allocations and a task wake-up per message: the sink ran at a
//! quarter of the raw publisher's rate.)
//!
//! Retries are weir's: the client is built with `NeverRetry`, and failed messages are published
//! again under the sink's `RetryPolicy` when `retry.rs` calls the failure transient. With
//! ordering keys, the client pauses a key after a failure and fails that key's later messages
//! too; a retry round therefore waits for every message in flight, resumes the keys, and
//! publishes the failed messages again in their original order. A failed message keeps its
//! sequence number, so a mark still waits for it; and since the queue is empty when the failed
//! messages are published again, the queue stays in sequence order.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::publisher::PublishFuture;

use super::client;
use super::config::SinkSettings;
use super::encode::Encoder;
use super::metrics::SinkMetrics;
use super::retry::{classify, Failure};
use crate::api::{Batch, FlushMark, NodeConfig, NodeContext, Result, Sink};
use crate::error::Error;
use crate::retry::Backoff;

/// A barrier asks the client to send its partial batch at once only when the client would
/// otherwise hold it longer than this. (Its flush waits for every batch in flight before it
/// takes new messages, which pauses publishing; a short `max_delay` sends the batch soon
/// enough on its own.)
const SEND_AT_BARRIER_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether a barrier should make the client send its partial batch now (pure).
fn send_at_barrier(max_delay: std::time::Duration) -> bool {
    max_delay > SEND_AT_BARRIER_AFTER
}

/// A message handed to the publisher and not yet acknowledged: its place in the sink's order,
/// what publishing it again needs, and the client's handle to its outcome.
struct Pending {
    seq: u64,
    kept: Kept,
    ack: PublishFuture,
}

/// A published message as kept for publishing it again: only its data when that is all it has
/// (no attributes, no ordering key), since cloning a whole message (two maps, three strings)
/// for every record was work the raw publisher does not do.
enum Kept {
    Data(bytes::Bytes),
    Whole(Message),
}

impl Kept {
    fn of(msg: &Message) -> Self {
        if msg.attributes.is_empty() && msg.ordering_key.is_empty() {
            Kept::Data(msg.data.clone())
        } else {
            Kept::Whole(msg.clone())
        }
    }

    fn into_message(self) -> Message {
        match self {
            Kept::Data(data) => Message::new().set_data(data),
            Kept::Whole(msg) => msg,
        }
    }
}

pub struct PubsubSink {
    settings: Arc<SinkSettings>,
    encoder: Encoder,
    node: String,
    target: String,
    publisher: Option<Publisher>,
    /// In publish order, which is sequence order.
    in_flight: VecDeque<Pending>,
    failed: Vec<(u64, Message, PublishError)>,
    next_seq: u64,
    backoff: Option<Backoff>,
    /// When the failed messages are published again: kept here, not in a local, so that
    /// `flushed` can be dropped during the wait and resumed.
    retry_at: Option<tokio::time::Instant>,
    metrics: SinkMetrics,
    bytes_out: Option<prometheus::IntCounter>,
}

impl PubsubSink {
    pub fn new(settings: SinkSettings) -> Self {
        PubsubSink {
            encoder: Encoder::new(&settings.config),
            settings: Arc::new(settings),
            node: String::new(),
            target: String::new(),
            publisher: None,
            in_flight: VecDeque::new(),
            failed: Vec::new(),
            next_seq: 0,
            backoff: None,
            retry_at: None,
            metrics: SinkMetrics::detached(),
            bytes_out: None,
        }
    }

    fn publisher(&self) -> Result<&Publisher> {
        self.publisher
            .as_ref()
            .ok_or_else(|| Error::node(&self.node, "the sink is not open"))
    }

    fn publish(&mut self, seq: u64, msg: Message) -> Result<()> {
        let kept = Kept::of(&msg);
        let ack = self.publisher()?.publish(msg);
        self.in_flight.push_back(Pending { seq, kept, ack });
        Ok(())
    }

    fn take(&mut self, p: Pending, result: std::result::Result<String, PublishError>) {
        match result {
            Ok(_) => self.metrics.published.inc(),
            Err(e) => self.failed.push((p.seq, p.kept.into_message(), e)),
        }
    }

    /// Waits for the oldest publish to finish, then collects every later one already finished
    /// (the rest of its batch) without waiting.
    async fn settle_oldest(&mut self) {
        let Some(front) = self.in_flight.front_mut() else {
            return;
        };
        let result = (&mut front.ack).await;
        let p = self.in_flight.pop_front().expect("front exists");
        self.take(p, result);
        while let Some(front) = self.in_flight.front_mut() {
            let Some(result) = (&mut front.ack).now_or_never() else {
                break;
            };
            let p = self.in_flight.pop_front().expect("front exists");
            self.take(p, result);
        }
        self.metrics.in_flight.set(self.in_flight.len() as i64);
    }

    /// Waits until every message before sequence number `mark` is acknowledged, retrying
    /// failures by policy. A failure makes it wait for every message in flight, later ones
    /// too (the ordering keys need it), and, until a retry round ends with nothing in flight
    /// and nothing failed (which ends the backoff), for the messages published again.
    /// Cancel-safe: every await leaves the queue, the failed messages and the retry deadline
    /// whole, so a dropped call loses nothing.
    async fn settle_before(&mut self, mark: u64) -> Result<()> {
        loop {
            let failing = !self.failed.is_empty();
            let retrying = self.backoff.is_some();
            match self.in_flight.front() {
                Some(front) if failing || retrying || front.seq < mark => {
                    self.settle_oldest().await
                }
                _ if failing => self.retry_failed().await?,
                _ => {
                    self.backoff = None;
                    return Ok(());
                }
            }
        }
    }

    /// Waits until every message handed over is acknowledged, retrying failures by policy.
    async fn settle_all(&mut self) -> Result<()> {
        self.settle_before(u64::MAX).await
    }

    /// One retry round: fails on a permanent error or when the policy gives up, else waits
    /// the next delay and publishes every failed message again, in order. Cancel-safe (the
    /// deadline is kept in `retry_at`).
    async fn retry_failed(&mut self) -> Result<()> {
        let at = match self.retry_at {
            Some(at) => at,
            None => {
                let delay = self.next_retry_delay()?;
                *self.retry_at.insert(tokio::time::Instant::now() + delay)
            }
        };
        tokio::time::sleep_until(at).await;
        self.retry_at = None;
        let mut failed = std::mem::take(&mut self.failed);
        failed.sort_by_key(|(seq, _, _)| *seq);
        let keys: BTreeSet<&str> = failed
            .iter()
            .map(|(_, m, _)| m.ordering_key.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        for k in keys {
            self.publisher()?.resume_publish(k);
        }
        self.metrics.retries.inc_by(failed.len() as u64);
        for (seq, msg, _) in failed {
            self.publish(seq, msg)?;
        }
        Ok(())
    }

    /// The wait before the failed messages are published again: an error on a permanent
    /// failure or when the policy gives up.
    fn next_retry_delay(&mut self) -> Result<std::time::Duration> {
        let failed = &self.failed;
        if let Some((_, _, e)) = failed
            .iter()
            .find(|(_, _, e)| classify(e) == Failure::Permanent)
        {
            return Err(Error::node(
                &self.node,
                format!("publishing to {} failed: {e} ({e:?})", self.target),
            ));
        }
        let policy = self.settings.config.retry;
        let backoff = self.backoff.get_or_insert_with(|| policy.backoff());
        let Some(delay) = backoff.next() else {
            let (_, _, e) = failed
                .iter()
                .max_by_key(|(seq, _, _)| *seq)
                .expect("not empty");
            return Err(Error::node(
                &self.node,
                format!(
                    "publishing to {} failed after {} retries: {e}",
                    self.target,
                    backoff.retries()
                ),
            ));
        };
        let root = failed
            .iter()
            .map(|(_, _, e)| e)
            .find(|e| classify(e) == Failure::Transient)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ordering key paused".into());
        tracing::warn!(
            node = %self.node,
            messages = failed.len(),
            retry = backoff.retries(),
            delay_ms = delay.as_millis() as u64,
            error = %root,
            "publishing failed; publishing again"
        );
        Ok(delay)
    }
}

#[async_trait]
impl Sink for PubsubSink {
    /// The topic exists.
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        client::preflight(&s.endpoint, &s.topic, false)
            .await
            .map(|l| vec![l])
            .map_err(|(setting, m)| match setting {
                true => cfg.error("topic", m),
                false => Error::node(cfg.name(), m),
            })
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = SinkMetrics::for_node(ctx);
        self.bytes_out = Some(ctx.metrics.bytes_out.clone());
        let s = &self.settings;
        let endpoint = client::effective(&s.endpoint);
        self.target = format!("{} ({})", s.topic, client::describe(&endpoint));
        let b = s.config.batching.clone();
        self.publisher = Some(
            client::publisher(&ctx.node, &endpoint, &s.topic, |p| {
                p.set_message_count_threshold(b.max_messages)
                    .set_byte_threshold(b.max_bytes.0.min(u32::MAX as u64) as u32)
                    .set_delay_threshold(b.max_delay.as_std())
                    .with_retry_policy(NeverRetry)
            })
            .await?,
        );
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let mut bytes = 0u64;
        for r in &batch.records {
            let msg = self.encoder.encode(r);
            bytes += msg.data.len() as u64;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.publish(seq, msg)?;
            if self.in_flight.len() >= self.settings.config.max_in_flight {
                self.settle_oldest().await;
            }
            if !self.failed.is_empty() {
                // Keep the order of an ordering key: nothing new until the failures are
                // published again.
                self.settle_all().await?;
            }
        }
        self.metrics.in_flight.set(self.in_flight.len() as i64);
        if let Some(b) = &self.bytes_out {
            b.inc_by(bytes);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.in_flight.is_empty() && self.failed.is_empty() {
            return Ok(());
        }
        // Sends what the client still batches without waiting for its delay.
        self.publisher()?.flush().await;
        self.settle_all().await
    }

    fn mark(&mut self) -> Option<FlushMark> {
        if send_at_barrier(self.settings.config.batching.max_delay.as_std()) {
            if let Ok(p) = self.publisher() {
                // Polled once, the client's flush has sent its command; its completion (every
                // batch acknowledged) is what `flushed` waits for message by message, so it is
                // not awaited here.
                let _ = p.flush().now_or_never();
            }
        }
        Some(FlushMark(self.next_seq))
    }

    async fn flushed(&mut self, mark: FlushMark) -> Result<()> {
        self.settle_before(mark.0).await
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}
