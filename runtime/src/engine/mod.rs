//! Runs a job: restores state, starts the workers this process owns, serves savepoint and stop
//! requests, and reports how the job ended.

pub mod breaker;
pub mod coordinator;
pub mod edge;
pub mod gate;
pub mod nodes;
pub mod noncritical;
pub mod restart;
pub mod supervisor;
#[cfg(test)]
mod test_support;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, mpsc::Sender, oneshot};
use tokio::task::JoinHandle;
use weir_crds::PipelineSpec;

pub use coordinator::{WorkerCommand, WorkerOutcome};
use supervisor::{StartFrom, Supervisor};
pub use weir_crds::contract::{SavepointPhase, SavepointStatus, WorkerState, WorkerStatus};

use crate::api::Registry;
use crate::checkpoint::{self, CheckpointStore, SavepointRef};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub struct JobOptions {
    /// Worker indices this process runs: all of them for `weir run`, one in a Kubernetes pod.
    pub workers: Vec<u32>,
    pub from_savepoint: Option<String>,
    /// Start from a savepoint even when it holds state for nodes the spec no longer has (that
    /// state is dropped), as Flink's `--allowNonRestoredState`.
    pub allow_non_restored_state: bool,
    /// Start without source and operator state (a stateless upgrade). The token marks the run:
    /// a restart with the same token resumes from the run's own checkpoints.
    pub start_fresh: Option<String>,
    pub metrics: Metrics,
}

/// A savepoint this process took or is taking.
#[derive(Clone, Debug)]
struct TrackedSavepoint {
    status: SavepointStatus,
    /// Whether a client has read the final state (a stop-with-savepoint waits for that).
    delivered: bool,
}

/// The handle the admin API and signal handlers use while the job runs.
#[derive(Clone)]
pub struct JobControl {
    pub job: String,
    pub parallelism: u32,
    pub workers: Vec<u32>,
    /// Node names, for totals over sources and sinks and the run summary.
    pub sources: Vec<String>,
    pub transforms: Vec<String>,
    pub sinks: Vec<String>,
    commands: Vec<Sender<WorkerCommand>>,
    pub status: Vec<Arc<Mutex<WorkerStatus>>>,
    store: CheckpointStore,
    savepoints: Arc<Mutex<HashMap<String, TrackedSavepoint>>>,
    pub metrics: Metrics,
}

pub struct RunningJob {
    pub control: JobControl,
    joins: Vec<JoinHandle<Result<WorkerOutcome>>>,
}

/// Validates, restores and starts the job.
pub async fn start(
    spec: PipelineSpec,
    registry: &Registry,
    opts: JobOptions,
) -> Result<RunningJob> {
    let topology = registry.validate(&spec).map_err(Error::Spec)?;
    for w in &opts.workers {
        if *w >= spec.parallelism {
            return Err(Error::Other(format!(
                "worker index {w} is not below parallelism {}",
                spec.parallelism
            )));
        }
    }
    let cp = &spec.checkpoint;
    let store = CheckpointStore::open(&cp.storage, &cp.storage_options, &spec.name)?;
    store.probe().await?;
    let savepoint_parts = match &opts.from_savepoint {
        Some(path) => Some(checkpoint::store::load_savepoint(path, &cp.storage_options).await?),
        None => None,
    };
    if let Some(parts) = &savepoint_parts {
        let unmapped = checkpoint::model::unmapped_nodes(parts, &spec);
        if !unmapped.is_empty() && !opts.allow_non_restored_state {
            return Err(Error::Checkpoint(format!(
                "savepoint {} holds state for nodes the spec does not have: {}; rename them back, \
                 or drop that state with --allow-non-restored-state",
                opts.from_savepoint.as_deref().unwrap_or_default(),
                unmapped.join(", ")
            )));
        }
    }

    let from = StartFrom {
        savepoint: match (&opts.from_savepoint, savepoint_parts) {
            (Some(path), Some(parts)) => Some(Arc::new((path.clone(), parts))),
            _ => None,
        },
        fresh: opts.start_fresh.clone(),
    };
    // Every worker's starting point first, so that a bad one fails the start cleanly.
    let mut firsts = Vec::new();
    for &w in &opts.workers {
        firsts.push(supervisor::restore_point(&spec, &store, w, &from).await?);
    }
    let spec = Arc::new(spec);
    let topology = Arc::new(topology);
    let mut commands = Vec::new();
    let mut statuses = Vec::new();
    let mut joins = Vec::new();
    for (&w, first) in opts.workers.iter().zip(firsts) {
        let (tx, rx) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(WorkerStatus {
            worker: w,
            ..Default::default()
        }));
        let supervisor = Supervisor {
            job: worker::WorkerJob {
                spec: spec.clone(),
                topology: topology.clone(),
                registry: registry.clone(),
                store: store.clone(),
                metrics: opts.metrics.clone(),
                worker: w,
            },
            from: from.clone(),
            status: status.clone(),
            commands: rx,
            first,
        };
        commands.push(tx);
        statuses.push(status);
        joins.push(tokio::spawn(supervisor.run()));
    }
    let control = JobControl {
        job: spec.name.clone(),
        parallelism: spec.parallelism,
        workers: opts.workers.clone(),
        sources: spec.sources.iter().map(|n| n.name.clone()).collect(),
        transforms: spec.transforms.iter().map(|n| n.name.clone()).collect(),
        sinks: spec.sinks.iter().map(|n| n.name.clone()).collect(),
        commands,
        status: statuses,
        store,
        savepoints: Arc::default(),
        metrics: opts.metrics,
    };
    Ok(RunningJob { control, joins })
}

impl JobControl {
    /// Takes a savepoint on every worker of this process; `stop` ends the job after it.
    /// Returns at once with the savepoint id; poll [`JobControl::savepoint_status`].
    pub fn trigger_savepoint(&self, id: Option<String>, stop: bool) -> String {
        let id =
            id.unwrap_or_else(|| format!("sp-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
        let pending = TrackedSavepoint {
            status: SavepointStatus {
                id: id.clone(),
                ..SavepointStatus::default()
            },
            delivered: false,
        };
        if let Ok(mut m) = self.savepoints.lock() {
            m.insert(id.clone(), pending.clone());
        }
        let this = self.clone();
        let sp = id.clone();
        tokio::spawn(async move {
            let result = this.take_savepoint(&sp, stop).await;
            if let Ok(mut m) = this.savepoints.lock() {
                let s = &mut m.entry(sp).or_insert(pending).status;
                match result {
                    Ok(r) => {
                        s.state = SavepointPhase::Completed;
                        s.path = Some(r.path);
                    }
                    Err(e) => {
                        s.state = SavepointPhase::Failed;
                        s.error = Some(e.to_string());
                    }
                }
            }
        });
        id
    }

    async fn take_savepoint(&self, id: &str, stop: bool) -> Result<SavepointRef> {
        let mut replies = Vec::new();
        for tx in &self.commands {
            let (reply, rx) = oneshot::channel();
            tx.send(WorkerCommand::Savepoint {
                id: id.to_string(),
                stop,
                reply,
            })
            .await
            .map_err(|_| Error::Other("the job is no longer running".into()))?;
            replies.push(rx);
        }
        for rx in replies {
            rx.await.map_err(|_| {
                Error::Other("the job ended before the savepoint completed".into())
            })??;
        }
        // One process with every worker writes the job manifest; with one worker per pod the
        // operator writes it once every pod's part is done.
        if self.workers.len() == self.parallelism as usize {
            self.store
                .complete_savepoint(id, self.parallelism, chrono::Utc::now().timestamp_millis())
                .await
        } else {
            Ok(SavepointRef {
                id: id.to_string(),
                path: self.store.savepoint_path(id),
            })
        }
    }

    /// The state of a savepoint; reading a final state marks it delivered.
    pub fn savepoint_status(&self, id: &str) -> Option<SavepointStatus> {
        let mut m = self.savepoints.lock().ok()?;
        let s = m.get_mut(id)?;
        if s.status.state != SavepointPhase::Pending {
            s.delivered = true;
        }
        Some(s.status.clone())
    }

    /// After the job ended: lets savepoints in progress finish (a stop-with-savepoint ends the
    /// workers before the job manifest is written) and gives clients up to `grace` to read them.
    pub async fn settle_savepoints(&self, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let waiting = self
                .savepoints
                .lock()
                .map(|m| {
                    m.values()
                        .any(|s| s.status.state == SavepointPhase::Pending || !s.delivered)
                })
                .unwrap_or(false);
            if !waiting || tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Asks every worker to finish its checkpoint in flight and stop.
    pub async fn stop(&self) {
        for tx in &self.commands {
            let _ = tx.send(WorkerCommand::Stop).await;
        }
    }

    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        self.status
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Finished,
    Stopped,
}

impl RunningJob {
    /// Waits for every worker. The first failure stops the others and is returned.
    pub async fn wait(self) -> Result<JobOutcome> {
        let mut outcome = JobOutcome::Finished;
        let mut failure: Option<Error> = None;
        let mut joins: BTreeMap<usize, JoinHandle<Result<WorkerOutcome>>> =
            self.joins.into_iter().enumerate().collect();
        while !joins.is_empty() {
            let (idx, res) = {
                let futs = joins.iter_mut().map(|(i, j)| {
                    let i = *i;
                    Box::pin(async move { (i, j.await) })
                });
                futures::future::select_all(futs).await.0
            };
            joins.remove(&idx);
            match res {
                Ok(Ok(WorkerOutcome::Finished)) => {}
                Ok(Ok(WorkerOutcome::Stopped)) => outcome = JobOutcome::Stopped,
                Ok(Err(e)) => {
                    if failure.is_none() {
                        self.control.stop().await;
                        failure = Some(e);
                    }
                }
                Err(join) => {
                    if failure.is_none() {
                        self.control.stop().await;
                        failure = Some(Error::Other(format!("worker task failed: {join}")));
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
}
