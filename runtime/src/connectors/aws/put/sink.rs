//! The stream loop of a put sink. Entries flow: `write` → (per-key order) → batcher → a request
//! in flight → acknowledged, or back for a retry after a delay, or given up to `on_error`.
//! Settling a request is synchronous (no await), so its follow-up work (the next entry of a
//! key, retries that are due) goes through the `ready` queue and is sent by [`PutSink::pump`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::aimd::Aimd;
use super::batch::{self, Batcher, Entry};
use super::config::{Ordering, PutSettings};
use super::dead_letter::DeadLetterFiles;
use super::metrics::PutMetrics;
use super::{Outcome, PutService, RequestError};
use crate::api::{Batch, NodeConfig, NodeContext, Sink};
use crate::connectors::aws::errors::{failure_of, Failure};
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;

/// A request that came back.
struct Done {
    entries: Vec<Entry>,
    result: std::result::Result<Vec<Outcome>, RequestError>,
    epoch: u64,
}

/// Per-key order: at most one entry of a key is past this point (batched, in flight or waiting
/// for a retry); the others wait here in arrival order.
#[derive(Default)]
struct KeyOrder {
    busy: HashSet<String>,
    waiting: HashMap<String, VecDeque<Entry>>,
}

impl KeyOrder {
    /// The entry, if it may go now; else it waits behind its key.
    fn admit(&mut self, e: Entry) -> Option<Entry> {
        let Some(key) = &e.key else { return Some(e) };
        if self.busy.contains(key) {
            self.waiting.entry(key.clone()).or_default().push_back(e);
            None
        } else {
            self.busy.insert(key.clone());
            Some(e)
        }
    }

    /// The entry of `key` is done (acknowledged or given up): the next one, if any.
    fn release(&mut self, key: Option<&str>) -> Option<Entry> {
        let key = key?;
        match self.waiting.get_mut(key).and_then(VecDeque::pop_front) {
            Some(next) => {
                if self.waiting.get(key).is_some_and(VecDeque::is_empty) {
                    self.waiting.remove(key);
                }
                Some(next)
            }
            None => {
                self.busy.remove(key);
                None
            }
        }
    }
}

pub struct PutSink<S: PutService> {
    service: S,
    settings: PutSettings,
    node: String,
    target: String,
    metrics: NodeMetrics,
    put_metrics: Option<PutMetrics>,
    batcher: Batcher,
    in_flight: FuturesUnordered<JoinHandle<Done>>,
    /// Entries waiting to be retried, by due time (and a sequence number, for equal times).
    retries: BTreeMap<(Instant, u64), Entry>,
    retry_seq: u64,
    /// Entries that may be batched now (released by their key, or due for a retry).
    ready: VecDeque<Entry>,
    keys: Option<KeyOrder>,
    aimd: Aimd,
    dead_letters: Option<DeadLetterFiles>,
}

impl<S: PutService> PutSink<S> {
    pub fn new(service: S, settings: PutSettings) -> Self {
        PutSink {
            batcher: Batcher::new(settings.limits),
            aimd: Aimd::new(settings.max_concurrency),
            keys: (settings.ordering == Ordering::PerKey).then(KeyOrder::default),
            target: service.target(),
            service,
            settings,
            node: String::new(),
            metrics: NodeMetrics::detached(),
            put_metrics: None,
            in_flight: FuturesUnordered::new(),
            retries: BTreeMap::new(),
            retry_seq: 0,
            ready: VecDeque::new(),
            dead_letters: None,
        }
    }

    /// A new entry: through the key order, into a batch.
    async fn admit(&mut self, entry: Entry) -> Result<()> {
        let entry = match &mut self.keys {
            Some(k) => match k.admit(entry) {
                Some(e) => e,
                None => return Ok(()),
            },
            None => entry,
        };
        self.enqueue(entry).await
    }

    async fn enqueue(&mut self, entry: Entry) -> Result<()> {
        if let Some(full) = self.batcher.push(entry, Instant::now()) {
            self.send(full).await?;
        }
        Ok(())
    }

    /// Sends a batch once a request slot is free.
    async fn send(&mut self, mut entries: Vec<Entry>) -> Result<()> {
        while self.in_flight.len() >= self.aimd.limit() {
            self.complete_one().await?;
        }
        let now = Instant::now();
        for e in &mut entries {
            e.attempts += 1;
            e.first_sent.get_or_insert(now);
        }
        let service = self.service.clone();
        let epoch = self.aimd.epoch();
        self.in_flight.push(tokio::spawn(async move {
            let result = service.put(&entries).await;
            Done {
                entries,
                result,
                epoch,
            }
        }));
        Ok(())
    }

    async fn complete_one(&mut self) -> Result<()> {
        match self.in_flight.next().await {
            Some(Ok(done)) => self.settle(done),
            Some(Err(e)) => Err(Error::node(&self.node, format!("request task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Settles the requests that have already come back, without waiting.
    fn settle_finished(&mut self) -> Result<()> {
        while let Some(Some(joined)) = futures::FutureExt::now_or_never(self.in_flight.next()) {
            let done =
                joined.map_err(|e| Error::node(&self.node, format!("request task failed: {e}")))?;
            self.settle(done)?;
        }
        Ok(())
    }

    /// Takes in a response: acknowledged entries release their key, refused ones are retried
    /// or given up, by their code.
    fn settle(&mut self, done: Done) -> Result<()> {
        let Done {
            entries,
            result,
            epoch,
        } = done;
        let mut throttled = false;
        match result {
            Ok(outcomes) => {
                if outcomes.len() != entries.len() {
                    return Err(Error::node(
                        &self.node,
                        format!(
                            "{}: the service answered {} results for {} records",
                            self.target,
                            outcomes.len(),
                            entries.len()
                        ),
                    ));
                }
                for (e, outcome) in entries.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Ok => {
                            self.metrics.bytes_out.inc_by(e.data.len() as u64);
                            self.release(&e);
                        }
                        Outcome::Failed { code, message } => {
                            let failure = failure_of(Some(&code), None);
                            throttled |= failure == Failure::Throttled;
                            self.refused(e, failure, &format!("{code}: {message}"))?;
                        }
                    }
                }
            }
            Err(RequestError { failure, message }) => {
                if !failure.retryable() {
                    return Err(Error::node(
                        &self.node,
                        format!("{}: {message}", self.target),
                    ));
                }
                throttled = failure == Failure::Throttled;
                for e in entries {
                    self.refused(e, failure, &message)?;
                }
            }
        }
        if throttled {
            if let Some(m) = &self.put_metrics {
                m.throttled.inc();
            }
        }
        self.aimd.completed(epoch, throttled);
        if let Some(m) = &self.put_metrics {
            m.concurrency.set(self.aimd.limit() as i64);
        }
        Ok(())
    }

    /// An entry the service did not take: retried while the policy allows, else given up.
    fn refused(&mut self, e: Entry, failure: Failure, reason: &str) -> Result<()> {
        let elapsed = e.first_sent.map(|t| t.elapsed()).unwrap_or_default();
        let policy = &self.settings.retry;
        if failure.retryable() && policy.allows(e.attempts, elapsed) {
            let delay = policy.delay(e.attempts.saturating_sub(1), fastrand::f64());
            self.retry_seq += 1;
            self.retries
                .insert((Instant::now() + delay, self.retry_seq), e);
            if let Some(m) = &self.put_metrics {
                m.retried.inc();
            }
            return Ok(());
        }
        let why = if failure.retryable() {
            format!("still refused after {} attempts: {reason}", e.attempts)
        } else {
            reason.to_string()
        };
        self.give_up(e, &why)
    }

    /// `on_error` for an entry that will not be sent.
    fn give_up(&mut self, e: Entry, reason: &str) -> Result<()> {
        self.release(&e);
        match &self.settings.on_error {
            OnError::Fail => {
                self.metrics.record_errors.inc();
                Err(Error::Record {
                    node: self.node.clone(),
                    record: e.describe(),
                    message: format!("{}: {reason}", self.target),
                })
            }
            OnError::Skip => {
                self.metrics.record_errors.inc();
                tracing::warn!(node = %self.node, record = %e.describe(), "skipped a record: {reason}");
                Ok(())
            }
            OnError::DeadLetter(_) => {
                self.metrics.record_errors.inc();
                if let Some(m) = &self.put_metrics {
                    m.dead_letters.inc();
                }
                self.dead_letters
                    .as_mut()
                    .expect("opened for dead_letter")
                    .push(&e, &format!("{}: {reason}", self.target));
                Ok(())
            }
        }
    }

    /// The entry is done: the next one of its key may go.
    fn release(&mut self, e: &Entry) {
        if let Some(k) = &mut self.keys {
            if let Some(next) = k.release(e.key.as_deref()) {
                self.ready.push_back(next);
            }
        }
    }

    /// Batches what is ready now: retries that are due, entries their key released.
    async fn pump(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            while let Some(entry) = self.retries.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                self.ready.push_back(entry.remove());
            }
            let Some(e) = self.ready.pop_front() else {
                return Ok(());
            };
            self.enqueue(e).await?;
        }
    }

    /// Until every entry written so far is acknowledged or given up.
    async fn drain(&mut self) -> Result<()> {
        loop {
            self.pump().await?;
            if !self.batcher.is_empty() {
                let b = self.batcher.take();
                self.send(b).await?;
                continue;
            }
            let next_retry = self.retries.first_key_value().map(|((t, _), _)| *t);
            match (self.in_flight.is_empty(), next_retry) {
                (true, None) => return Ok(()),
                (true, Some(due)) => tokio::time::sleep_until(due.into()).await,
                (false, due) => {
                    let wake = async {
                        match due {
                            Some(t) => tokio::time::sleep_until(t.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        joined = self.in_flight.next() => match joined {
                            Some(Ok(done)) => self.settle(done)?,
                            Some(Err(e)) => return Err(Error::node(&self.node, format!("request task failed: {e}"))),
                            None => {}
                        },
                        _ = wake => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl<S: PutService> Sink for PutSink<S> {
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        self.service.preflight(cfg).await
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        let m = PutMetrics::new(ctx);
        m.concurrency.set(self.aimd.limit() as i64);
        self.put_metrics = Some(m);
        if let Some(d) = self.settings.on_error.dead_letter() {
            self.dead_letters = Some(DeadLetterFiles::open(d, &ctx.node, ctx.worker)?);
        }
        self.service.open(ctx).await
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        for record in batch.records {
            let entry = match self.service.encode(&record) {
                Ok(e) => e,
                Err(why) => {
                    // No entry can be made: the record's JSON goes to on_error instead.
                    let json = super::encode::payload(&record, None).unwrap_or_default();
                    self.give_up(Entry::new(json, None, None), &why)?;
                    continue;
                }
            };
            if let Err(why) = batch::check(&entry, &self.settings.limits) {
                self.give_up(entry, &why)?;
                continue;
            }
            self.admit(entry).await?;
        }
        self.settle_finished()?;
        self.pump().await
    }

    async fn flush(&mut self) -> Result<()> {
        self.drain().await?;
        if let Some(d) = &mut self.dead_letters {
            d.flush().await?;
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<()> {
        self.settle_finished()?;
        self.pump().await?;
        if self.batcher.due(Instant::now(), self.settings.linger) {
            let b = self.batcher.take();
            self.send(b).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        for t in self.in_flight.iter() {
            t.abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::aws::put::batch::Limits;
    use crate::connectors::aws::put::dead_letter::DeadLetterPath;
    use crate::record::Record;
    use crate::retry::RetryPolicy;
    use bytes::Bytes;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// `refuse(data, attempt)`: the error code to fail an entry with, if any.
    type Refuse = Arc<dyn Fn(&str, u32) -> Option<&'static str> + Send + Sync>;
    /// Each request's entries as (data, attempt).
    type Requests = Arc<Mutex<Vec<Vec<(String, u32)>>>>;

    /// A service that refuses entries by a script: `refuse(data, attempt)` gives the code to
    /// fail with. It records every request it was sent.
    #[derive(Clone)]
    struct Scripted {
        refuse: Refuse,
        requests: Requests,
        accepted: Arc<Mutex<Vec<String>>>,
    }

    impl Scripted {
        fn new(refuse: impl Fn(&str, u32) -> Option<&'static str> + Send + Sync + 'static) -> Self {
            Scripted {
                refuse: Arc::new(refuse),
                requests: Arc::default(),
                accepted: Arc::default(),
            }
        }
    }

    #[async_trait]
    impl PutService for Scripted {
        async fn open(&mut self, _: &NodeContext) -> Result<()> {
            Ok(())
        }
        async fn preflight(&self, _: &NodeConfig) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn encode(&self, r: &Record) -> std::result::Result<Entry, String> {
            let k = r
                .get("k")
                .map(|v| v.as_str().unwrap_or_default().to_string());
            let d = r
                .get("d")
                .ok_or("no d")?
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(Entry::new(Bytes::from(d), k, None))
        }
        async fn put(&self, entries: &[Entry]) -> std::result::Result<Vec<Outcome>, RequestError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut log = Vec::new();
            let mut out = Vec::new();
            for e in entries {
                let d = String::from_utf8(e.data.to_vec()).unwrap();
                log.push((d.clone(), e.attempts));
                match (self.refuse)(&d, e.attempts) {
                    Some(code) => out.push(Outcome::Failed {
                        code: code.into(),
                        message: "scripted".into(),
                    }),
                    None => {
                        self.accepted.lock().unwrap().push(d);
                        out.push(Outcome::Ok);
                    }
                }
            }
            self.requests.lock().unwrap().push(log);
            Ok(out)
        }
        fn target(&self) -> String {
            "stream \"t\"".into()
        }
    }

    fn settings(on_error: OnError<DeadLetterPath>, ordering: Ordering) -> PutSettings {
        PutSettings {
            limits: Limits {
                max_records: 4,
                max_request_bytes: 1000,
                max_record_bytes: 10,
            },
            linger: Duration::from_millis(50),
            max_concurrency: 4,
            retry: RetryPolicy {
                backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
                max_attempts: Some(3),
                ..RetryPolicy::default()
            },
            on_error,
            ordering,
        }
    }

    fn ctx() -> NodeContext {
        NodeContext::for_test("j", "out")
    }

    fn records(items: &[(&str, &str)]) -> Batch {
        Batch::new(
            None,
            items
                .iter()
                .map(|(k, d)| {
                    Record::new(
                        serde_json::json!({"k": k, "d": d})
                            .as_object()
                            .unwrap()
                            .clone(),
                    )
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn only_refused_entries_are_retried_until_acknowledged() {
        // "b" and "d" are throttled on their first attempt.
        let svc = Scripted::new(|d, attempt| {
            (attempt == 1 && (d == "b" || d == "d"))
                .then_some("ProvisionedThroughputExceededException")
        });
        let mut sink = PutSink::new(svc.clone(), settings(OnError::Fail, Ordering::None));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[("1", "a"), ("2", "b"), ("3", "c"), ("4", "d")]))
            .await
            .unwrap();
        sink.flush().await.unwrap();
        let mut acc = svc.accepted.lock().unwrap().clone();
        acc.sort();
        assert_eq!(acc, ["a", "b", "c", "d"]);
        let reqs = svc.requests.lock().unwrap().clone();
        assert_eq!(reqs[0].len(), 4, "{reqs:?}");
        let mut retried: Vec<(String, u32)> = reqs[1..].iter().flatten().cloned().collect();
        retried.sort();
        assert_eq!(retried, [("b".to_string(), 2), ("d".to_string(), 2)]);
    }

    #[tokio::test]
    async fn retries_run_out_into_on_error() {
        let svc = Scripted::new(|d, _| (d == "bad").then_some("InternalFailure"));
        let mut sink = PutSink::new(svc.clone(), settings(OnError::Fail, Ordering::None));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[("1", "ok"), ("2", "bad")]))
            .await
            .unwrap();
        let e = sink.flush().await.unwrap_err().to_string();
        assert!(
            e.contains("still refused after 3 attempts: InternalFailure"),
            "{e}"
        );
        assert!(e.contains("record (partition key \"2\") bad"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let dl = OnError::DeadLetter(DeadLetterPath {
            path: dir.path().display().to_string(),
            storage_options: Default::default(),
        });
        let mut sink = PutSink::new(svc.clone(), settings(dl, Ordering::None));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[("1", "ok"), ("2", "bad"), ("3", "0123456789x")]))
            .await
            .unwrap();
        sink.flush().await.unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("over the limit of 10 bytes"), "{text}");
        assert!(text.contains("still refused after 3 attempts"), "{text}");
    }

    #[tokio::test]
    async fn a_fatal_code_is_not_retried() {
        let svc = Scripted::new(|d, _| (d == "x").then_some("KMSAccessDeniedException"));
        let mut sink = PutSink::new(svc.clone(), settings(OnError::Skip, Ordering::None));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[("1", "x"), ("2", "y")]))
            .await
            .unwrap();
        sink.flush().await.unwrap();
        let attempts: Vec<u32> = svc
            .requests
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|(d, _)| d == "x")
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(attempts, [1]);
    }

    #[tokio::test]
    async fn per_key_order_holds_through_retries() {
        // Every first attempt of key "a" entries is throttled; "a" entries must still be
        // acknowledged in the order they were written.
        let svc = Scripted::new(|d, attempt| {
            (d.starts_with('a') && attempt == 1).then_some("ProvisionedThroughputExceededException")
        });
        let mut sink = PutSink::new(svc.clone(), settings(OnError::Fail, Ordering::PerKey));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("a", "a3"),
            ("b", "b2"),
        ]))
        .await
        .unwrap();
        sink.flush().await.unwrap();
        let acc = svc.accepted.lock().unwrap().clone();
        let a: Vec<&String> = acc.iter().filter(|d| d.starts_with('a')).collect();
        let b: Vec<&String> = acc.iter().filter(|d| d.starts_with('b')).collect();
        assert_eq!(a, ["a1", "a2", "a3"]);
        assert_eq!(b, ["b1", "b2"]);
        for req in svc.requests.lock().unwrap().iter() {
            let keys: HashSet<char> = req.iter().map(|(d, _)| d.chars().next().unwrap()).collect();
            assert_eq!(
                keys.len(),
                req.len(),
                "one entry per key per request: {req:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_partial_batch_goes_after_linger_or_at_flush() {
        let svc = Scripted::new(|_, _| None);
        let mut sink = PutSink::new(svc.clone(), settings(OnError::Fail, Ordering::None));
        sink.open(&ctx()).await.unwrap();
        sink.write(records(&[("1", "a")])).await.unwrap();
        sink.on_tick().await.unwrap();
        assert!(svc.requests.lock().unwrap().is_empty(), "waits for linger");
        tokio::time::sleep(Duration::from_millis(60)).await;
        sink.on_tick().await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(svc.accepted.lock().unwrap().len(), 1);
    }

    #[test]
    fn key_order_releases_in_arrival_order() {
        let mut k = KeyOrder::default();
        let e = |d: &'static str| Entry::new(Bytes::from(d), Some("k".into()), None);
        assert!(k.admit(e("1")).is_some());
        assert!(k.admit(e("2")).is_none());
        assert!(k.admit(e("3")).is_none());
        assert_eq!(k.release(Some("k")).unwrap().data, "2");
        assert_eq!(k.release(Some("k")).unwrap().data, "3");
        assert!(k.release(Some("k")).is_none());
        assert!(k.busy.is_empty() && k.waiting.is_empty());
        assert!(k.admit(Entry::new(Bytes::from("x"), None, None)).is_some());
    }
}
