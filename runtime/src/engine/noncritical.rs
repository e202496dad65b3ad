//! A `critical: false` sink: its failures do not fail the job. Every call to the sink (open,
//! write, flush at a barrier, tick) runs under `call_timeout`; a failed call opens the way to the
//! dead-letter sink for the records the sink had not durably taken (those since its last
//! flush), and is counted by the circuit breaker (`breaker.rs`). While the breaker is open,
//! records go straight to the dead-letter sink; a half-open probe runs on a fresh instance of
//! the sink (a failed instance is never called again).
//!
//! Guarantees: records the sink took before a failure may also reach the dead-letter sink
//! (at-least-once over the two); the dead-letter sink commits with the job's checkpoints like
//! any sink (exactly-once for a `filesystem` or transactional `kafka` dead-letter sink). A
//! failure of the dead-letter sink itself fails the worker into its restart strategy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{IntCounter, IntGauge};
use serde_json::{json, Value};
use weir_crds::CircuitBreakerSpec;

use super::breaker::{Breaker, BreakerState, Route};
use crate::api::{DynSink, FlushMark, NodeConfig, NodeContext, Registry};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::record::{Barrier, Batch, Record};
use weir_crds::contract::{BreakerStatus, WorkerStatus};

/// Where the breaker's state is shown: `/v1/status`, metrics and logs.
struct Health {
    status: Arc<Mutex<WorkerStatus>>,
    metrics: Metrics,
    job: String,
    worker: String,
    state: IntGauge,
    dead_lettered: IntCounter,
}

pub struct NonCriticalSink {
    node: String,
    registry: Registry,
    cfg: NodeConfig,
    ctx: Option<NodeContext>,
    inner: Option<Box<dyn DynSink>>,
    dead_letter: Box<dyn DynSink>,
    dead_letter_ctx: NodeContext,
    breaker: Breaker,
    timeout: Duration,
    /// Records handed to the sink since its last successful flush: the sink may not have them
    /// durably, so a failure sends them to the dead-letter sink.
    unflushed: Vec<Batch>,
    last_error: Option<String>,
    health: Health,
}

pub struct Parts {
    pub registry: Registry,
    pub cfg: NodeConfig,
    pub sink: Box<dyn DynSink>,
    pub dead_letter: Box<dyn DynSink>,
    pub dead_letter_ctx: NodeContext,
    pub status: Arc<Mutex<WorkerStatus>>,
    pub metrics: Metrics,
    pub job: String,
    pub worker: u32,
}

impl NonCriticalSink {
    pub fn new(p: Parts) -> Self {
        let spec = p.cfg.spec.circuit_breaker.clone().unwrap_or_default();
        let node = p.cfg.spec.name.clone();
        let worker = p.worker.to_string();
        let labels = [p.job.as_str(), worker.as_str(), node.as_str()];
        let health = Health {
            state: p.metrics.sink_circuit_state.with_label_values(&labels),
            dead_lettered: p.metrics.sink_dead_lettered.with_label_values(&labels),
            status: p.status,
            metrics: p.metrics,
            job: p.job,
            worker,
        };
        let mut s = NonCriticalSink {
            node,
            registry: p.registry,
            cfg: p.cfg,
            ctx: None,
            inner: Some(p.sink),
            dead_letter: p.dead_letter,
            dead_letter_ctx: p.dead_letter_ctx,
            breaker: Breaker::new(&spec, Instant::now()),
            timeout: call_timeout(&spec),
            unflushed: Vec::new(),
            last_error: None,
            health,
        };
        s.show(None);
        s
    }

    /// Status, metrics and a log line for the breaker's state (`entered`: a transition).
    fn show(&mut self, entered: Option<BreakerState>) {
        let state = self.breaker.state();
        self.health.state.set(state.gauge());
        if let Some(to) = entered {
            let labels = [
                self.health.job.as_str(),
                self.health.worker.as_str(),
                self.node.as_str(),
                to.name(),
            ];
            self.health
                .metrics
                .sink_circuit_transitions
                .with_label_values(&labels)
                .inc();
            let why = self.last_error.as_deref().unwrap_or("");
            match to {
                BreakerState::Open => tracing::warn!(node = %self.node, error = why,
                    "circuit breaker open: records go to the dead-letter sink"),
                BreakerState::HalfOpen => {
                    tracing::info!(node = %self.node, "circuit breaker half-open: probing the sink")
                }
                BreakerState::Closed => {
                    tracing::info!(node = %self.node, "circuit breaker closed: the sink works again")
                }
            }
        }
        if let Ok(mut s) = self.health.status.lock() {
            let entry = s
                .breakers
                .entry(self.node.clone())
                .or_insert(BreakerStatus {
                    state,
                    since: now_text(),
                    dead_lettered: 0,
                    last_error: None,
                });
            if entry.state != state || entered.is_some() {
                entry.since = now_text();
            }
            entry.state = state;
            entry.dead_lettered = self.health.dead_lettered.get();
            entry.last_error = self.last_error.clone();
        }
    }

    /// A call on the sink (built and opened first if it is gone), bounded by `call_timeout`.
    async fn call<F>(&mut self, what: &str, f: F) -> std::result::Result<(), String>
    where
        F: for<'a> FnOnce(&'a mut Box<dyn DynSink>) -> futures::future::BoxFuture<'a, Result<()>>,
    {
        let timeout = self.timeout;
        if self.inner.is_none() {
            let ctx = self.ctx.clone().ok_or("called before open")?;
            let built = self
                .registry
                .build_sink(&self.cfg)
                .map_err(|e| e.to_string())?;
            let mut sink = built.0;
            match tokio::time::timeout(timeout, sink.open(&ctx)).await {
                Ok(Ok(())) => self.inner = Some(sink),
                Ok(Err(e)) => return Err(format!("open: {e}")),
                Err(_) => {
                    return Err(format!(
                        "open did not finish within {}",
                        humantime::format_duration(timeout)
                    ))
                }
            }
        }
        let Some(sink) = self.inner.as_mut() else {
            return Err("no sink".into());
        };
        match tokio::time::timeout(timeout, f(sink)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "{what} did not finish within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    /// Counts an outcome; a failure drops the sink instance and diverts what it had not flushed.
    async fn outcome(&mut self, r: std::result::Result<(), String>) -> Result<()> {
        let ok = r.is_ok();
        let entered = self.breaker.record(Instant::now(), ok);
        if let Err(why) = r {
            tracing::warn!(node = %self.node, error = %why, "non-critical sink failed; its records go to the dead-letter sink");
            self.last_error = Some(why.clone());
            self.inner = None;
            let batches = std::mem::take(&mut self.unflushed);
            self.divert(batches, &why).await?;
        }
        self.show(entered);
        Ok(())
    }

    /// Sends records with the reason to the dead-letter sink.
    async fn divert(&mut self, batches: Vec<Batch>, reason: &str) -> Result<()> {
        let ctx = self.ctx.as_ref();
        let worker = ctx.map_or(0, |c| c.worker);
        let at = now_text();
        let mut records = Vec::new();
        for b in batches {
            for r in b.records {
                let wrapped = json!({
                    "reason": reason,
                    "sink": self.node,
                    "worker": worker,
                    "failed_at": at,
                    "record": Value::Object(r.into_fields()),
                });
                let Value::Object(fields) = wrapped else {
                    unreachable!("an object literal")
                };
                records.push(Record::new(fields));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len() as u64;
        self.dead_letter
            .write(Batch::new(None, records))
            .await
            .map_err(|e| dead_letter_error(&self.node, e))?;
        self.health.dead_lettered.inc_by(n);
        self.dead_letter_ctx.metrics.records_in.inc_by(n);
        Ok(())
    }

    fn reason_while_open(&self) -> String {
        match &self.last_error {
            Some(e) => format!("circuit breaker open after: {e}"),
            None => "circuit breaker open".into(),
        }
    }
}

fn call_timeout(spec: &CircuitBreakerSpec) -> Duration {
    spec.call_timeout.as_std()
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn dead_letter_error(node: &str, e: Error) -> Error {
    Error::node(node, format!("the dead-letter sink failed: {e}"))
}

#[async_trait]
impl DynSink for NonCriticalSink {
    fn transactional(&self) -> bool {
        self.dead_letter.transactional()
    }

    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        match &mut self.inner {
            Some(sink) => sink.preflight(cfg).await,
            None => Ok(Vec::new()),
        }
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.ctx = Some(ctx.clone());
        self.dead_letter
            .open(&self.dead_letter_ctx)
            .await
            .map_err(|e| dead_letter_error(&self.node, e))?;
        let Some(mut sink) = self.inner.take() else {
            return Ok(());
        };
        let r = match tokio::time::timeout(self.timeout, sink.open(ctx)).await {
            Ok(Ok(())) => {
                self.inner = Some(sink);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("open: {e}")),
            Err(_) => Err("open did not finish in time".to_string()),
        };
        if r.is_err() {
            self.outcome(r).await?;
        }
        Ok(())
    }

    /// The checkpoint holds the dead-letter sink's states and committables (the sink itself
    /// is not transactional).
    async fn recover(&mut self, states: Vec<Value>, committables: Vec<Value>) -> Result<()> {
        self.dead_letter
            .recover(states, committables)
            .await
            .map_err(|e| dead_letter_error(&self.node, e))
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let (route, entered) = self.breaker.route(Instant::now());
        if entered.is_some() {
            self.show(entered);
        }
        match route {
            Route::DeadLetter => {
                let why = self.reason_while_open();
                self.divert(vec![batch], &why).await
            }
            Route::Sink | Route::Probe => {
                self.unflushed.push(batch.clone());
                let mut r = self.call("write", move |s| Box::pin(s.write(batch))).await;
                if route == Route::Probe && r.is_ok() {
                    // A probe is a write the sink made durable.
                    let barrier = Barrier {
                        id: 0,
                        savepoint: false,
                        last: false,
                    };
                    r = self
                        .call("flush", move |s| {
                            Box::pin(async move { s.pre_commit(barrier).await.map(|_| ()) })
                        })
                        .await;
                    if r.is_ok() {
                        self.unflushed.clear();
                    }
                }
                self.outcome(r).await
            }
        }
    }

    /// At a barrier the sink is flushed under the call timeout and the records it took are
    /// then forgotten (`unflushed`), which needs `pre_commit`: no marks.
    fn mark(&mut self) -> Option<FlushMark> {
        None
    }

    async fn flushed(&mut self, _: FlushMark) -> Result<()> {
        Ok(())
    }

    async fn pre_commit(&mut self, barrier: Barrier) -> Result<(Vec<Value>, Value)> {
        // Flush what the sink took since its last flush; a flush with nothing to flush is no
        // call (it would count as a success).
        if self.inner.is_some() && !self.unflushed.is_empty() {
            let r = self
                .call("flush", move |s| {
                    Box::pin(async move { s.pre_commit(barrier).await.map(|_| ()) })
                })
                .await;
            if r.is_ok() {
                self.unflushed.clear();
            }
            self.outcome(r).await?;
        }
        self.dead_letter
            .pre_commit(barrier)
            .await
            .map_err(|e| dead_letter_error(&self.node, e))
    }

    /// The inner sink's flush decides what goes to the dead-letter sink, so it stays in
    /// `pre_commit`.
    async fn begin_pre_commit(
        &mut self,
        _: Barrier,
    ) -> Result<Option<crate::api::Prepare<Value, Value>>> {
        Ok(None)
    }

    async fn commit(&mut self, committables: Vec<Value>) -> Result<()> {
        self.dead_letter
            .commit(committables)
            .await
            .map_err(|e| dead_letter_error(&self.node, e))
    }

    async fn abort(&mut self) -> Result<()> {
        self.dead_letter.abort().await
    }

    async fn on_tick(&mut self) -> Result<()> {
        if self.inner.is_some() {
            let r = self.call("tick", |s| Box::pin(s.on_tick())).await;
            if r.is_err() {
                self.outcome(r).await?;
            }
        }
        self.dead_letter
            .on_tick()
            .await
            .map_err(|e| dead_letter_error(&self.node, e))
    }

    async fn close(&mut self) -> Result<()> {
        if self.inner.is_some() {
            if let Err(e) = self.call("close", |s| Box::pin(s.close())).await {
                tracing::warn!(node = %self.node, error = %e, "non-critical sink failed to close");
            }
        }
        self.dead_letter
            .close()
            .await
            .map_err(|e| dead_letter_error(&self.node, e))
    }
}
