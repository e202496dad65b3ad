//! The per-worker checkpoint coordinator: the pure [`machine::Machine`] decides, this thin loop
//! feeds it node events, requests and clock ticks, and carries its commands out (barriers to
//! the sources, the checkpoint to storage, commits to the sinks, status and metrics).

pub mod machine;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{Receiver, Sender, UnboundedReceiver};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use machine::WorkerOutcome;
use machine::{Command, Input, Machine, Report};

use super::nodes::{Event, SinkCtl, SourceCtl};
use crate::checkpoint::{CheckpointStore, WorkerCheckpoint};
use crate::error::{Error, Result};
use crate::fault;
use crate::metrics::Metrics;
use weir_crds::contract::{CheckpointInfo, WorkerState, WorkerStatus};

pub enum WorkerCommand {
    Savepoint {
        id: String,
        stop: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Graceful stop: finish the checkpoint in flight, then end.
    Stop,
}

pub struct Coordinator {
    pub machine: Machine,
    pub store: CheckpointStore,
    pub events: UnboundedReceiver<Event>,
    /// Lent by the worker's supervisor for this attempt and handed back at the end.
    pub commands: Receiver<WorkerCommand>,
    pub sources: Vec<Sender<SourceCtl>>,
    pub sinks: HashMap<String, Sender<SinkCtl>>,
    pub status: Arc<Mutex<WorkerStatus>>,
    pub metrics: Metrics,
    pub cancel: CancellationToken,
}

impl Coordinator {
    fn set_state(&self, state: WorkerState) {
        if let Ok(mut s) = self.status.lock() {
            s.state = state;
        }
    }

    /// Runs until the worker ends; returns how, and the command channel.
    pub async fn run(mut self) -> (Result<WorkerOutcome>, Receiver<WorkerCommand>) {
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
        (r, self.commands)
    }

    async fn run_inner(&mut self) -> Result<WorkerOutcome> {
        let mut replies: HashMap<String, oneshot::Sender<Result<()>>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let input = tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => {
                        if let Event::Failed { node, error } = &ev {
                            tracing::error!(node = %node, worker = self.machine.config().worker, error = %error, "node failed");
                        }
                        Input::Node(ev)
                    }
                    None => return Err(Error::Other("all nodes stopped unexpectedly".into())),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(WorkerCommand::Savepoint { id, stop, reply }) => {
                        replies.insert(id.clone(), reply);
                        Input::Savepoint { id, stop }
                    }
                    Some(WorkerCommand::Stop) | None => Input::Stop,
                },
                _ = tick.tick() => Input::Tick,
            };
            let mut queue: VecDeque<Command> = self.machine.handle(Instant::now(), input).into();
            while let Some(command) = queue.pop_front() {
                match command {
                    Command::Persist { data, savepoint } => {
                        let id = data.id;
                        let result = self.persist(*data, savepoint.as_deref()).await;
                        let input = Input::Persisted {
                            checkpoint: id,
                            result,
                        };
                        queue.extend(self.machine.handle(Instant::now(), input));
                    }
                    Command::End(r) => return r,
                    other => self.carry_out(other, &mut replies).await,
                }
            }
        }
    }

    async fn carry_out(
        &mut self,
        command: Command,
        replies: &mut HashMap<String, oneshot::Sender<Result<()>>>,
    ) {
        let worker = self.machine.config().worker;
        match command {
            Command::Trigger(barrier) => {
                tracing::debug!(
                    worker,
                    checkpoint = barrier.id,
                    last = barrier.last,
                    "triggering checkpoint"
                );
                for tx in &self.sources {
                    let _ = tx.send(SourceCtl::Trigger(barrier)).await;
                }
            }
            Command::Commit {
                sink,
                checkpoint,
                committables,
            } => {
                if let Some(tx) = self.sinks.get(&sink) {
                    let _ = tx
                        .send(SinkCtl::Commit {
                            checkpoint,
                            committables,
                        })
                        .await;
                }
            }
            Command::Complete(id) => {
                for tx in &self.sources {
                    let _ = tx.send(SourceCtl::Complete(id)).await;
                }
            }
            Command::Retain(id) => {
                let keep = self.machine.config().checkpoint.retained as usize;
                if let Err(e) = self.store.retain(worker, id, keep).await {
                    tracing::warn!(worker, error = %e, "could not delete old checkpoints");
                }
            }
            Command::SavepointDone { id, result } => {
                if let Some(reply) = replies.remove(&id) {
                    let _ = reply.send(result.map_err(Error::Checkpoint));
                }
            }
            Command::ShutdownSinks => {
                for tx in self.sinks.values() {
                    let _ = tx.send(SinkCtl::Shutdown).await;
                }
            }
            Command::Report(r) => self.report(r),
            Command::Persist { .. } | Command::End(_) => {
                unreachable!("handled by the loop")
            }
        }
    }

    /// Writes the checkpoint within what is left of the checkpoint timeout, so a storage that
    /// hangs fails the checkpoint instead of the coordinator. A savepoint part goes to the
    /// savepoint directory and also as a regular checkpoint: its commits publish data, so
    /// recovery must start from it, not from an older checkpoint.
    async fn persist(
        &self,
        mut data: WorkerCheckpoint,
        savepoint: Option<&str>,
    ) -> std::result::Result<u64, String> {
        data.timestamp_ms = chrono::Utc::now().timestamp_millis();
        let limit = self.machine.config().checkpoint.timeout.as_std();
        let write = async {
            if fault::fails("checkpoint_write") {
                return Err(Error::Other(
                    "injected storage failure (WEIR_FAULT fail:checkpoint_write)".into(),
                ));
            }
            if let Some(sp) = savepoint {
                self.store.write(&data, Some(sp)).await?;
            }
            let bytes = self.store.write(&data, None).await?;
            fault::point("after_manifest");
            Ok(bytes)
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the storage did not answer within {}",
                self.machine.config().checkpoint.timeout
            )),
        }
    }

    fn report(&self, r: Report) {
        let cfg = self.machine.config();
        let w = cfg.worker.to_string();
        let labels = [cfg.job.as_str(), w.as_str()];
        match r {
            Report::State(state) => self.set_state(state),
            Report::Completed {
                checkpoint,
                duration,
                bytes,
                savepoint,
                splits,
            } => {
                let m = &self.metrics;
                m.checkpoints_completed.with_label_values(&labels).inc();
                m.checkpoint_duration
                    .with_label_values(&labels)
                    .observe(duration.as_secs_f64());
                m.checkpoint_size
                    .with_label_values(&labels)
                    .set(bytes as i64);
                let now = chrono::Utc::now();
                m.checkpoint_last_completed
                    .with_label_values(&labels)
                    .set(now.timestamp_millis() as f64 / 1000.0);
                if let Ok(mut s) = self.status.lock() {
                    s.checkpoints_completed += 1;
                    s.last_checkpoint = Some(CheckpointInfo {
                        id: checkpoint,
                        completed_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        duration_ms: duration.as_millis() as u64,
                        bytes,
                        savepoint,
                    });
                    s.splits = splits;
                }
                tracing::debug!(
                    worker = cfg.worker,
                    checkpoint,
                    bytes,
                    "checkpoint complete"
                );
            }
            Report::Failed { checkpoint, why } => {
                self.metrics
                    .checkpoints_failed
                    .with_label_values(&labels)
                    .inc();
                if let Ok(mut s) = self.status.lock() {
                    s.checkpoints_failed += 1;
                    s.last_error = Some(why.clone());
                }
                tracing::warn!(worker = cfg.worker, checkpoint, "{why}");
            }
            Report::Watermark {
                node,
                watermark,
                lowest,
            } => {
                let labels = [cfg.job.as_str(), w.as_str(), node.as_str()];
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
                    s.watermark = Some(lowest);
                }
            }
        }
    }
}
