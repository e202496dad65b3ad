//! The running sink: records are handed to the client's batching publisher as they come, with
//! at most `max_in_flight` unacknowledged; `flush` (every checkpoint barrier) sends what is
//! batched and waits until Pub/Sub acknowledged every message, so a completed checkpoint never
//! covers an unpublished record (at-least-once).
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
//! publishes the failed messages again in their original order.

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
use crate::api::{Batch, NodeConfig, NodeContext, Result, Sink};
use crate::error::Error;
use crate::retry::Backoff;

/// A message handed to the publisher and not yet acknowledged: its place in the sink's order,
/// the message (kept to publish it again) and the client's handle to its outcome.
struct Pending {
    seq: u64,
    msg: Message,
    ack: PublishFuture,
}

pub struct PubsubSink {
    settings: Arc<SinkSettings>,
    encoder: Encoder,
    node: String,
    target: String,
    publisher: Option<Publisher>,
    /// In publish order.
    in_flight: VecDeque<Pending>,
    failed: Vec<(u64, Message, PublishError)>,
    next_seq: u64,
    backoff: Option<Backoff>,
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
        // A clone shares the data (`Bytes`); only attributes and an ordering key are copied.
        let ack = self.publisher()?.publish(msg.clone());
        self.in_flight.push_back(Pending { seq, msg, ack });
        Ok(())
    }

    fn take(&mut self, p: Pending, result: std::result::Result<String, PublishError>) {
        match result {
            Ok(_) => self.metrics.published.inc(),
            Err(e) => self.failed.push((p.seq, p.msg, e)),
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

    /// Waits until every message handed over is acknowledged, retrying failures by policy.
    async fn settle_all(&mut self) -> Result<()> {
        loop {
            while let Some(mut p) = self.in_flight.pop_front() {
                let result = (&mut p.ack).await;
                self.take(p, result);
            }
            self.metrics.in_flight.set(0);
            if self.failed.is_empty() {
                self.backoff = None;
                return Ok(());
            }
            self.retry_failed().await?;
        }
    }
    /// One retry round: fails on a permanent error or when the policy gives up, else waits
    /// the next delay and publishes every failed message again, in order.
    async fn retry_failed(&mut self) -> Result<()> {
        let mut failed = std::mem::take(&mut self.failed);
        failed.sort_by_key(|(seq, _, _)| *seq);
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
            let (_, _, e) = failed.last().expect("not empty");
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
        tokio::time::sleep(delay).await;
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

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}
