//! The operator: admits records while capacity allows, runs each lookup in its own task, and
//! emits finished records through the mode's queue.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::cache::LookupCache;
use super::clients::{self, LookupClient};
use super::config::{Mode, Settings};
use super::fetch::{fetch, resolve, Outcome, Resolution};
use super::mapping::{cache_key, enrich, key_values};
use super::metrics::LookupMetrics;
use super::queue::{CompletionQueue, Emit, Held, OrderedQueue, UnorderedQueue};
use super::state::{self, HeldRecord};
use crate::api::{
    AsyncTransform, Barrier, Batch, NodeConfig, NodeContext, Output, Record, SplitId,
};
use crate::checkpoint::key_group_range;
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;

/// A finished record with the split it came from (kept so downstream per-split logic still
/// works).
type Finished = (Option<SplitId>, Record);

struct InFlight {
    record: Record,
    split: Option<SplitId>,
    cache_key: Option<String>,
}

struct Completion {
    seq: u64,
    outcome: Outcome,
}

/// Sends the outcome; if the task ends without one (a panic in a client, or the runtime
/// shutting down), sends a failure instead so the operator never waits forever for it.
struct Reply {
    seq: u64,
    tx: UnboundedSender<Completion>,
    sent: bool,
}

impl Reply {
    fn send(mut self, outcome: Outcome) {
        self.sent = true;
        let _ = self.tx.send(Completion {
            seq: self.seq,
            outcome,
        });
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.tx.send(Completion {
                seq: self.seq,
                outcome: Outcome::Failed {
                    attempts: 0,
                    message: "the lookup task ended without an answer".into(),
                    retryable: false,
                },
            });
        }
    }
}

pub struct AsyncLookup {
    settings: Arc<Settings>,
    node: String,
    client: Option<Arc<dyn LookupClient>>,
    queue: Box<dyn CompletionQueue<Finished>>,
    in_flight: HashMap<u64, InFlight>,
    next_seq: u64,
    tx: UnboundedSender<Completion>,
    rx: UnboundedReceiver<Completion>,
    /// Completions taken by `ready`, applied by the next `emit_ready`.
    received: Vec<Completion>,
    cache: Option<LookupCache>,
    metrics: LookupMetrics,
    node_metrics: NodeMetrics,
    /// The key groups this worker owns: the only ones its state may use.
    key_groups: std::ops::Range<u32>,
}

impl AsyncLookup {
    pub fn new(settings: Settings, node: &str) -> Self {
        let queue: Box<dyn CompletionQueue<Finished>> = match settings.mode {
            Mode::Ordered => Box::new(OrderedQueue::default()),
            Mode::Unordered => Box::new(UnorderedQueue::default()),
        };
        let (tx, rx) = unbounded_channel();
        AsyncLookup {
            settings: Arc::new(settings),
            node: node.to_string(),
            client: None,
            queue,
            in_flight: HashMap::new(),
            next_seq: 0,
            tx,
            rx,
            received: Vec::new(),
            cache: None,
            metrics: LookupMetrics::detached(),
            node_metrics: NodeMetrics::detached(),
            key_groups: 0..128,
        }
    }

    /// Uses `client` instead of connecting the configured one at open.
    #[cfg(test)]
    pub fn with_client(mut self, client: Arc<dyn LookupClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// Takes in a record: answered from the cache, settled at once when its key is missing, or
    /// looked up in a new task.
    fn admit(&mut self, record: Record, split: Option<SplitId>) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(seq);
        let key = match key_values(&record, &self.settings.key) {
            Ok(k) => k,
            Err(why) => {
                self.metrics.errors.inc();
                let r = resolve(
                    &Outcome::Failed {
                        attempts: 0,
                        message: why,
                        retryable: false,
                    },
                    &self.settings.mapping,
                    self.settings.on_timeout,
                    self.settings.on_error,
                );
                return self.settle(seq, record, split, r);
            }
        };
        let ck = self.cache.as_ref().map(|_| cache_key(&key));
        if let (Some(cache), Some(k)) = (self.cache.as_mut(), ck.as_ref()) {
            if let Some(hit) = cache.get(k, Instant::now()) {
                let hit = hit.clone();
                self.metrics.cache_hits.inc();
                return self.settle(seq, record, split, Resolution::Enrich(hit));
            }
            self.metrics.cache_misses.inc();
        }
        let client = self
            .client
            .clone()
            .ok_or_else(|| Error::node(&self.node, "lookup before open"))?;
        let settings = self.settings.clone();
        let metrics = self.metrics.clone();
        let reply = Reply {
            seq,
            tx: self.tx.clone(),
            sent: false,
        };
        tokio::spawn(async move {
            let outcome = fetch(
                client.as_ref(),
                &key,
                settings.timeout,
                &settings.retry,
                &metrics,
            )
            .await;
            reply.send(outcome);
        });
        self.in_flight.insert(
            seq,
            InFlight {
                record,
                split,
                cache_key: ck,
            },
        );
        Ok(())
    }

    fn apply(&mut self, c: Completion) -> Result<()> {
        let Some(f) = self.in_flight.remove(&c.seq) else {
            return Ok(());
        };
        match &c.outcome {
            Outcome::TimedOut { .. } => self.metrics.timeouts.inc(),
            Outcome::Failed { .. } => self.metrics.errors.inc(),
            Outcome::Found(_) | Outcome::NotFound => {}
        }
        let r = resolve(
            &c.outcome,
            &self.settings.mapping,
            self.settings.on_timeout,
            self.settings.on_error,
        );
        let found = matches!(c.outcome, Outcome::Found(_) | Outcome::NotFound);
        if let (true, Some(cache), Some(k), Resolution::Enrich(m)) =
            (found, self.cache.as_mut(), f.cache_key, &r)
        {
            cache.insert(k, m.clone(), Instant::now());
        }
        self.settle(c.seq, f.record, f.split, r)
    }

    fn settle(
        &mut self,
        seq: u64,
        record: Record,
        split: Option<SplitId>,
        r: Resolution,
    ) -> Result<()> {
        match r {
            Resolution::Enrich(m) => {
                self.queue.complete(seq, Some((split, enrich(record, &m))));
            }
            Resolution::Drop(why) => {
                self.node_metrics.record_errors.inc();
                tracing::warn!(node = %self.node, record = %record.describe(), "dropped: {why}");
                self.queue.complete(seq, None);
            }
            Resolution::Fail {
                why,
                transient: true,
            } => {
                // The service, not the record: a restart from the last checkpoint asks again.
                return Err(Error::node(
                    &self.node,
                    format!("record {}: {why}", record.describe()),
                ));
            }
            Resolution::Fail {
                why,
                transient: false,
            } => {
                self.node_metrics.record_errors.inc();
                return Err(Error::record(&self.node, &record, why));
            }
        }
        Ok(())
    }

    /// Applies every completion that has arrived, without waiting.
    fn take_arrived(&mut self) -> Result<()> {
        for c in std::mem::take(&mut self.received) {
            self.apply(c)?;
        }
        while let Ok(c) = self.rx.try_recv() {
            self.apply(c)?;
        }
        Ok(())
    }

    /// Waits for one completion.
    async fn wait_one(&mut self) -> Result<()> {
        let c = self
            .rx
            .recv()
            .await
            .ok_or_else(|| Error::node(&self.node, "lookup results channel closed"))?;
        self.apply(c)
    }

    fn pop(&mut self, out: &mut Output) {
        let mut emits = Vec::new();
        self.queue.pop_ready(&mut emits);
        for e in emits {
            match e {
                Emit::Record((split, r)) => match out.batches.last_mut() {
                    Some(b) if b.split == split => b.records.push(r),
                    _ => out.batches.push(Batch::new(split, vec![r])),
                },
                // Records that left with a watermark go out before it (Output sends batches
                // first), which only holds the watermark back: always safe.
                Emit::Watermark(w) => out.watermark = Some(out.watermark.map_or(w, |o| o.max(w))),
            }
        }
        self.metrics.in_flight.set(self.queue.len() as i64);
    }

    /// Waits until every held record has been emitted.
    async fn drain(&mut self, out: &mut Output) -> Result<()> {
        loop {
            self.take_arrived()?;
            self.pop(out);
            if self.queue.is_empty() {
                return Ok(());
            }
            self.wait_one().await?;
        }
    }

    fn held_records(&self) -> Vec<HeldRecord> {
        self.queue
            .held()
            .into_iter()
            .filter_map(|h| match h {
                Held::Pending(seq) => self
                    .in_flight
                    .get(&seq)
                    .map(|f| HeldRecord::new(seq, &f.record, f.split.as_deref(), false)),
                Held::Done(seq, (split, r)) => {
                    Some(HeldRecord::new(seq, r, split.as_deref(), true))
                }
            })
            .collect()
    }
}

#[async_trait]
impl AsyncTransform for AsyncLookup {
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        match clients::preflight(&self.settings).await {
            Ok(line) => Ok(line.into_iter().collect()),
            Err((Some(field), why)) => Err(cfg.error(field, why)),
            Err((None, why)) => Err(Error::node(cfg.name(), why)),
        }
    }

    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<u32, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.node_metrics = ctx.metrics.clone();
        self.metrics = LookupMetrics::for_node(ctx);
        self.key_groups = key_group_range(ctx.worker, ctx.parallelism, ctx.max_parallelism);
        if self.client.is_none() {
            self.client = Some(
                clients::connect(&self.settings)
                    .await
                    .map_err(|e| Error::node(&self.node, e))?,
            );
        }
        if let Some(c) = &self.settings.cache {
            let n = NonZeroUsize::new(c.max_entries).unwrap_or(NonZeroUsize::MIN);
            self.cache = Some(LookupCache::new(n, c.ttl.as_std()));
        }
        let held = state::decode(restored).map_err(|e| Error::node(&self.node, e))?;
        if !held.is_empty() {
            tracing::info!(node = %self.node, records = held.len(), "re-issuing records held at the checkpoint");
        }
        for h in held {
            let split = h.split.as_deref().map(SplitId::from);
            if h.done {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.queue.push(seq);
                self.queue.complete(seq, Some((split, h.record())));
            } else {
                self.admit(h.record(), split)?;
            }
        }
        Ok(())
    }

    async fn process(&mut self, batch: Batch, out: &mut Output) -> Result<()> {
        let split = batch.split;
        for record in batch.records {
            // Backpressure: the runtime stops reading input while this waits.
            while self.queue.len() >= self.settings.capacity {
                self.take_arrived()?;
                self.pop(out);
                if self.queue.len() < self.settings.capacity {
                    break;
                }
                self.wait_one().await?;
                self.pop(out);
            }
            self.admit(record, split.clone())?;
        }
        self.take_arrived()?;
        self.pop(out);
        Ok(())
    }

    async fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        self.take_arrived()?;
        self.queue.push_watermark(watermark);
        self.pop(out);
        Ok(())
    }

    async fn ready(&mut self) {
        if !self.received.is_empty() || self.queue.has_ready() {
            return;
        }
        // Cancel-safe: `recv` loses nothing when dropped, and the push follows it directly.
        if let Some(c) = self.rx.recv().await {
            self.received.push(c);
        }
    }

    fn emit_ready(&mut self, out: &mut Output) -> Result<()> {
        self.take_arrived()?;
        self.pop(out);
        Ok(())
    }

    async fn snapshot(
        &mut self,
        barrier: &Barrier,
        out: &mut Output,
    ) -> Result<BTreeMap<u32, Value>> {
        if barrier.last {
            self.drain(out).await?;
            return Ok(BTreeMap::new());
        }
        self.take_arrived()?;
        self.pop(out);
        Ok(state::encode(self.held_records(), self.key_groups.clone()))
    }

    async fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.drain(out).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::json;
    use tokio::sync::watch;

    use super::super::clients::LookupError;
    use super::*;
    use crate::api::NodeConfig;
    use crate::transforms::async_io::config::AsyncLookupConfig;

    /// Answers `{"name": "<tag>-<id>"}`; ids in `held` wait until `release` is sent.
    struct Fake {
        tag: &'static str,
        held: Vec<i64>,
        release: watch::Receiver<bool>,
        calls: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl LookupClient for Fake {
        async fn lookup(&self, key: &[Value]) -> std::result::Result<Option<Value>, LookupError> {
            let id = key[0].as_i64().unwrap();
            self.calls.lock().unwrap().push(id);
            if self.held.contains(&id) {
                let mut rx = self.release.clone();
                let _ = rx.wait_for(|r| *r).await;
            }
            Ok(Some(json!({ "name": format!("{}-{id}", self.tag) })))
        }
    }

    fn fake(tag: &'static str, held: Vec<i64>) -> (Arc<Fake>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let f = Fake {
            tag,
            held,
            release: rx,
            calls: Mutex::new(Vec::new()),
        };
        (Arc::new(f), tx)
    }

    fn operator(mode: &str, capacity: usize, client: Arc<Fake>) -> AsyncLookup {
        let config = json!({
            "mode": mode, "key": "id", "capacity": capacity,
            "client": {"type": "http", "url": "http://unused/{id}"},
            "fields": {"name": "name"},
        });
        let cfg = NodeConfig::for_test("transforms[0]", "async_lookup", config);
        AsyncLookup::new(cfg.resolve::<AsyncLookupConfig>().unwrap(), "enrich").with_client(client)
    }

    fn ctx() -> NodeContext {
        NodeContext::for_test("t", "enrich")
    }

    fn batch(ids: &[i64]) -> Batch {
        Batch::new(
            Some(SplitId::from("s0")),
            ids.iter()
                .map(|id| Record::new(json!({ "id": id }).as_object().unwrap().clone()))
                .collect(),
        )
    }

    fn names(out: &Output) -> Vec<String> {
        out.batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.fields()["name"].as_str().unwrap().to_string())
            .collect()
    }

    const BARRIER: Barrier = Barrier {
        id: 1,
        savepoint: false,
        last: false,
    };

    #[tokio::test]
    async fn held_records_survive_a_restore_in_order() {
        let (first, _release) = fake("first", vec![0]);
        let mut op = operator("ordered", 10, first);
        op.open(&ctx(), BTreeMap::new()).await.unwrap();
        let mut out = Output::default();
        op.process(batch(&[0, 1, 2]), &mut out).await.unwrap();
        // 1 and 2 finish, but must wait behind 0.
        while op.in_flight.len() > 1 {
            op.ready().await;
            op.emit_ready(&mut out).unwrap();
        }
        assert!(names(&out).is_empty());
        let state = op.snapshot(&BARRIER, &mut out).await.unwrap();
        assert!(names(&out).is_empty());
        let held = state::decode(state.clone()).unwrap();
        assert_eq!(
            held.iter().map(|h| (h.seq, h.done)).collect::<Vec<_>>(),
            vec![(0, false), (1, true), (2, true)]
        );

        // A new operator (after a crash) restores: 0 is asked again, 1 and 2 are not.
        let (second, _r) = fake("second", vec![]);
        let mut op = operator("ordered", 10, second.clone());
        op.open(&ctx(), state).await.unwrap();
        let mut out = Output::default();
        op.finish(&mut out).await.unwrap();
        assert_eq!(names(&out), vec!["second-0", "first-1", "first-2"]);
        assert_eq!(*second.calls.lock().unwrap(), vec![0]);
        assert!(out.batches.iter().all(|b| b.split.as_deref() == Some("s0")));
    }

    #[tokio::test]
    async fn capacity_blocks_process_until_a_slot_frees() {
        let (client, release) = fake("c", vec![0, 1]);
        let mut op = operator("unordered", 2, client);
        op.open(&ctx(), BTreeMap::new()).await.unwrap();
        let mut out = Output::default();
        let start = std::time::Instant::now();
        let (waited, ()) = tokio::join!(
            async {
                op.process(batch(&[0, 1, 2, 3]), &mut out).await.unwrap();
                start.elapsed()
            },
            async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                release.send(true).unwrap();
            }
        );
        assert!(
            waited >= Duration::from_millis(150),
            "returned after {waited:?}"
        );
        op.finish(&mut out).await.unwrap();
        let mut n = names(&out);
        n.sort();
        assert_eq!(n, vec!["c-0", "c-1", "c-2", "c-3"]);
    }

    #[tokio::test]
    async fn the_last_barrier_finishes_everything_and_keeps_no_state() {
        let (client, release) = fake("c", vec![1]);
        let mut op = operator("unordered", 10, client);
        op.open(&ctx(), BTreeMap::new()).await.unwrap();
        let mut out = Output::default();
        op.process(batch(&[0, 1, 2]), &mut out).await.unwrap();
        op.on_watermark(100, &mut out).await.unwrap();
        release.send(true).unwrap();
        let last = Barrier {
            last: true,
            ..BARRIER
        };
        let state = op.snapshot(&last, &mut out).await.unwrap();
        assert!(state.is_empty());
        let mut n = names(&out);
        n.sort();
        assert_eq!(n, vec!["c-0", "c-1", "c-2"]);
        assert_eq!(out.watermark, Some(100));
    }
}
