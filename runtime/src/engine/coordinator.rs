//! The per-worker checkpoint coordinator: triggers barriers, collects acknowledgements, writes the
//! checkpoint, and only then tells the sinks to commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedReceiver};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use weir_crds::CheckpointSpec;

use super::nodes::{Event, SinkCtl, SourceCtl};
use super::status::{CheckpointInfo, WorkerState, WorkerStatus};
use crate::checkpoint::{CheckpointStore, SinkCheckpoint, WorkerCheckpoint};
use crate::error::{Error, Result};
use crate::fault;
use crate::metrics::Metrics;
use crate::record::Barrier;

pub enum WorkerCommand {
    Savepoint {
        id: String,
        stop: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Graceful stop: finish the checkpoint in flight, then end.
    Stop,
}

/// How a worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// Bounded input fully processed and committed.
    Finished,
    /// Stopped on request (SIGTERM), or by a stop-with-savepoint.
    Stopped,
}

struct InFlight {
    barrier: Barrier,
    started: Instant,
    savepoint: Option<(String, oneshot::Sender<Result<()>>)>,
    waiting: HashSet<String>,
    data: WorkerCheckpoint,
    sink_states: BTreeMap<String, Value>,
}

pub struct Coordinator {
    pub job: String,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub spec: CheckpointSpec,
    pub store: CheckpointStore,
    pub events: UnboundedReceiver<Event>,
    pub commands: Receiver<WorkerCommand>,
    pub sources: Vec<(String, Sender<SourceCtl>)>,
    pub transforms: Vec<String>,
    pub sinks: Vec<(String, Sender<SinkCtl>)>,
    pub status: Arc<Mutex<WorkerStatus>>,
    pub metrics: Metrics,
    pub cancel: CancellationToken,
    /// First id to use: one more than the checkpoint restored from.
    pub next_id: u64,
    pub origin: Option<String>,
}

struct Run {
    in_flight: Option<InFlight>,
    /// Pre-committed, not yet committed, per sink: (checkpoint id, committables).
    pending: BTreeMap<String, Vec<(u64, Vec<Value>)>>,
    finished_sources: HashSet<String>,
    savepoints: Vec<(String, bool, oneshot::Sender<Result<()>>)>,
    last_trigger: Instant,
    last_end: Instant,
    consecutive_failures: u32,
    stopping: bool,
    /// Set once the last barrier's checkpoint is durable: waiting for the sinks' commits.
    closing: Option<(u64, HashSet<String>, WorkerOutcome)>,
    last_sent: bool,
    watermarks: BTreeMap<String, i64>,
    /// Sinks told to commit the last completed checkpoint that have not confirmed yet.
    uncommitted: (u64, HashSet<String>),
}

impl Coordinator {
    fn set_state(&self, state: WorkerState) {
        if let Ok(mut s) = self.status.lock() {
            s.state = state;
        }
    }

    pub async fn run(mut self) -> Result<WorkerOutcome> {
        self.set_state(WorkerState::Running);
        let r = self.run_inner().await;
        self.cancel.cancel();
        match &r {
            Ok(WorkerOutcome::Finished) => self.set_state(WorkerState::Finished),
            Ok(WorkerOutcome::Stopped) => self.set_state(WorkerState::Stopped),
            Err(e) => {
                if let Ok(mut s) = self.status.lock() {
                    s.state = WorkerState::Failed;
                    s.last_error = Some(e.to_string());
                }
            }
        }
        r
    }

    async fn run_inner(&mut self) -> Result<WorkerOutcome> {
        let now = Instant::now();
        let mut run = Run {
            in_flight: None,
            pending: BTreeMap::new(),
            finished_sources: HashSet::new(),
            savepoints: Vec::new(),
            last_trigger: now,
            last_end: now,
            consecutive_failures: 0,
            stopping: false,
            closing: None,
            last_sent: false,
            watermarks: BTreeMap::new(),
            uncommitted: (0, HashSet::new()),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return Err(Error::Other("all nodes stopped unexpectedly".into())) };
                    if let Some(outcome) = self.on_event(&mut run, ev).await? {
                        return Ok(outcome);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(WorkerCommand::Savepoint { id, stop, reply }) => {
                        if run.stopping || run.last_sent {
                            let _ = reply.send(Err(Error::Other("the job is stopping; no savepoint can be taken".into())));
                        } else {
                            run.savepoints.push((id, stop, reply));
                        }
                    }
                    Some(WorkerCommand::Stop) | None => {
                        run.stopping = true;
                        self.set_state(WorkerState::Finishing);
                    }
                },
                _ = tick.tick() => {
                    if let Some(outcome) = self.on_tick(&mut run).await? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    async fn on_tick(&mut self, run: &mut Run) -> Result<Option<WorkerOutcome>> {
        let now = Instant::now();
        if let Some(f) = &run.in_flight {
            if now.duration_since(f.started) > self.spec.timeout.as_std() {
                let id = f.barrier.id;
                self.fail_checkpoint(
                    run,
                    format!("checkpoint {id} timed out after {}", self.spec.timeout),
                )?;
            }
            return Ok(None);
        }
        if run.closing.is_some() || run.last_sent {
            return Ok(None);
        }
        if run.stopping && run.uncommitted.1.is_empty() {
            return Ok(Some(WorkerOutcome::Stopped));
        }
        if !run.savepoints.is_empty() {
            let (id, stop, reply) = run.savepoints.remove(0);
            let barrier = Barrier {
                id: self.next_id,
                savepoint: true,
                last: stop,
            };
            self.trigger(run, barrier, Some((id, reply))).await;
            return Ok(None);
        }
        if !self.sources.is_empty() && run.finished_sources.len() == self.sources.len() {
            let barrier = Barrier {
                id: self.next_id,
                savepoint: false,
                last: true,
            };
            self.trigger(run, barrier, None).await;
            return Ok(None);
        }
        let due = now.duration_since(run.last_trigger) >= self.spec.interval.as_std()
            && now.duration_since(run.last_end) >= self.spec.min_pause.as_std();
        if self.spec.enabled && due {
            let barrier = Barrier {
                id: self.next_id,
                savepoint: false,
                last: false,
            };
            self.trigger(run, barrier, None).await;
        }
        Ok(None)
    }

    async fn trigger(
        &mut self,
        run: &mut Run,
        barrier: Barrier,
        savepoint: Option<(String, oneshot::Sender<Result<()>>)>,
    ) {
        self.next_id += 1;
        tracing::debug!(
            worker = self.worker,
            checkpoint = barrier.id,
            last = barrier.last,
            "triggering checkpoint"
        );
        let mut waiting: HashSet<String> = self.sources.iter().map(|(n, _)| n.clone()).collect();
        waiting.extend(self.transforms.iter().cloned());
        waiting.extend(self.sinks.iter().map(|(n, _)| n.clone()));
        let data = WorkerCheckpoint {
            version: crate::checkpoint::model::FORMAT_VERSION,
            job: self.job.clone(),
            id: barrier.id,
            worker: self.worker,
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            savepoint: barrier.savepoint,
            origin: self.origin.clone(),
            ..Default::default()
        };
        run.in_flight = Some(InFlight {
            barrier,
            started: Instant::now(),
            savepoint,
            waiting,
            data,
            sink_states: BTreeMap::new(),
        });
        run.last_trigger = Instant::now();
        if barrier.last {
            run.last_sent = true;
            self.set_state(WorkerState::Finishing);
        }
        for (_, tx) in &self.sources {
            let _ = tx.send(SourceCtl::Trigger(barrier)).await;
        }
    }

    fn fail_checkpoint(&mut self, run: &mut Run, why: String) -> Result<()> {
        let Some(f) = run.in_flight.take() else {
            return Ok(());
        };
        run.last_end = Instant::now();
        run.consecutive_failures += 1;
        let w = self.worker.to_string();
        self.metrics
            .checkpoints_failed
            .with_label_values(&[self.job.as_str(), w.as_str()])
            .inc();
        if let Ok(mut s) = self.status.lock() {
            s.checkpoints_failed += 1;
            s.last_error = Some(why.clone());
        }
        tracing::warn!(worker = self.worker, "{why}");
        if let Some((_, reply)) = f.savepoint {
            let _ = reply.send(Err(Error::Checkpoint(why.clone())));
        }
        if f.barrier.last {
            return Err(Error::Checkpoint(format!(
                "the final checkpoint failed: {why}"
            )));
        }
        if run.consecutive_failures > self.spec.tolerable_failures {
            return Err(Error::Checkpoint(format!(
                "{why}; {} consecutive checkpoint failures exceed tolerable_failures ({})",
                run.consecutive_failures, self.spec.tolerable_failures
            )));
        }
        Ok(())
    }

    async fn on_event(&mut self, run: &mut Run, ev: Event) -> Result<Option<WorkerOutcome>> {
        match ev {
            Event::Failed { node, error } => {
                tracing::error!(node = %node, worker = self.worker, error = %error, "node failed");
                return Err(error);
            }
            Event::SourceFinished { node } => {
                run.finished_sources.insert(node);
            }
            Event::Watermark { node, watermark } => {
                run.watermarks.insert(node.clone(), watermark);
                let w = self.worker.to_string();
                let labels = [self.job.as_str(), w.as_str(), node.as_str()];
                self.metrics
                    .watermark
                    .with_label_values(&labels)
                    .set(watermark);
                let lag = (chrono::Utc::now().timestamp_millis() - watermark) as f64 / 1000.0;
                self.metrics
                    .watermark_lag
                    .with_label_values(&labels)
                    .set(lag);
                if let Ok(mut s) = self.status.lock() {
                    s.watermark = run.watermarks.values().copied().min();
                }
            }
            Event::Committed { node, checkpoint } => {
                if checkpoint >= run.uncommitted.0 {
                    run.uncommitted.1.remove(&node);
                }
                if let Some(list) = run.pending.get_mut(&node) {
                    list.retain(|(id, _)| *id > checkpoint);
                }
                if let Some((id, waiting, outcome)) = &mut run.closing {
                    if checkpoint >= *id {
                        waiting.remove(&node);
                        if waiting.is_empty() {
                            let outcome = outcome.clone();
                            for (_, tx) in &self.sinks {
                                let _ = tx.send(SinkCtl::Shutdown).await;
                            }
                            return Ok(Some(outcome));
                        }
                    }
                }
            }
            Event::SinkAck {
                node,
                checkpoint,
                committables,
                state,
            } => {
                // Committables of a checkpoint that failed are kept and ride on the next one.
                if !committables.is_empty() {
                    run.pending
                        .entry(node.clone())
                        .or_default()
                        .push((checkpoint, committables));
                }
                if let Some(f) = run
                    .in_flight
                    .as_mut()
                    .filter(|f| f.barrier.id == checkpoint)
                {
                    f.sink_states.insert(node.clone(), state);
                    f.waiting.remove(&node);
                }
            }
            Event::SourceAck {
                node,
                checkpoint,
                splits,
            } => {
                if let Some(f) = run
                    .in_flight
                    .as_mut()
                    .filter(|f| f.barrier.id == checkpoint)
                {
                    f.data.sources.insert(node.clone(), splits);
                    f.waiting.remove(&node);
                }
            }
            Event::OperatorAck {
                node,
                checkpoint,
                state,
            } => {
                if let Some(f) = run
                    .in_flight
                    .as_mut()
                    .filter(|f| f.barrier.id == checkpoint)
                {
                    if !state.is_empty() {
                        f.data.operators.insert(node.clone(), state);
                    }
                    f.waiting.remove(&node);
                }
            }
        }
        if run.in_flight.as_ref().is_some_and(|f| f.waiting.is_empty()) {
            return self.complete(run).await;
        }
        Ok(None)
    }

    async fn complete(&mut self, run: &mut Run) -> Result<Option<WorkerOutcome>> {
        let Some(mut f) = run.in_flight.take() else {
            return Ok(None);
        };
        let id = f.barrier.id;
        let mut to_commit: Vec<(usize, Vec<Value>)> = Vec::new();
        for (i, (sink, _)) in self.sinks.iter().enumerate() {
            let committables: Vec<Value> = run
                .pending
                .get(sink)
                .map(|l| {
                    l.iter()
                        .filter(|(c, _)| *c <= id)
                        .flat_map(|(_, v)| v.iter().cloned())
                        .collect()
                })
                .unwrap_or_default();
            let states = f
                .sink_states
                .remove(sink)
                .into_iter()
                .filter(|s| !s.is_null())
                .collect();
            f.data.sinks.insert(
                sink.clone(),
                SinkCheckpoint {
                    states,
                    committables: committables.clone(),
                },
            );
            to_commit.push((i, committables));
        }
        f.data.timestamp_ms = chrono::Utc::now().timestamp_millis();
        let written = match self.persist(&f).await {
            Ok(bytes) => bytes,
            Err(e) => {
                run.in_flight = Some(f);
                self.fail_checkpoint(run, format!("checkpoint {id} could not be written: {e}"))?;
                return Ok(None);
            }
        };
        fault::point("after_manifest");
        run.consecutive_failures = 0;
        run.last_end = Instant::now();
        let duration = f.started.elapsed();
        let w = self.worker.to_string();
        let labels = [self.job.as_str(), w.as_str()];
        self.metrics
            .checkpoints_completed
            .with_label_values(&labels)
            .inc();
        self.metrics
            .checkpoint_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
        self.metrics
            .checkpoint_size
            .with_label_values(&labels)
            .set(written as i64);
        self.metrics
            .checkpoint_last_completed
            .with_label_values(&labels)
            .set(f.data.timestamp_ms as f64 / 1000.0);
        if let Ok(mut s) = self.status.lock() {
            s.checkpoints_completed += 1;
            s.last_checkpoint = Some(CheckpointInfo {
                id,
                completed_at: chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                duration_ms: duration.as_millis() as u64,
                bytes: written,
                savepoint: f.barrier.savepoint,
            });
            s.splits = f.data.sources.clone();
        }
        tracing::debug!(
            worker = self.worker,
            checkpoint = id,
            bytes = written,
            "checkpoint complete"
        );

        run.uncommitted = (id, self.sinks.iter().map(|(n, _)| n.clone()).collect());
        for (i, committables) in to_commit {
            let _ = self.sinks[i]
                .1
                .send(SinkCtl::Commit {
                    checkpoint: id,
                    committables,
                })
                .await;
        }
        for (_, tx) in &self.sources {
            let _ = tx.send(SourceCtl::Complete(id)).await;
        }
        if let Some((_, reply)) = f.savepoint.take() {
            let _ = reply.send(Ok(()));
        }
        if let Err(e) = self
            .store
            .retain(self.worker, id, self.spec.retained as usize)
            .await
        {
            tracing::warn!(worker = self.worker, error = %e, "could not delete old checkpoints");
        }
        if f.barrier.last {
            let outcome = if f.barrier.savepoint {
                WorkerOutcome::Stopped
            } else {
                WorkerOutcome::Finished
            };
            if self.sinks.is_empty() {
                return Ok(Some(outcome));
            }
            let waiting = self.sinks.iter().map(|(n, _)| n.clone()).collect();
            run.closing = Some((id, waiting, outcome));
        }
        Ok(None)
    }

    /// A savepoint part is written to the savepoint directory and also as a regular checkpoint:
    /// its commits publish data, so recovery must start from it, not from an older checkpoint.
    async fn persist(&self, f: &InFlight) -> Result<u64> {
        if let Some((sp, _)) = &f.savepoint {
            self.store.write(&f.data, Some(sp)).await?;
        }
        self.store.write(&f.data, None).await
    }
}
