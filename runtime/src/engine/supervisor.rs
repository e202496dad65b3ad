//! A worker's life: attempts run one after the other, each restored from the worker's latest
//! complete checkpoint (sinks recover its committables, sources seek to its positions). When an
//! attempt fails, the restart strategy (`restart.rs`) decides whether and when the next one
//! starts; meanwhile the status shows the failure and the backoff, and savepoint requests are
//! refused. A worker that has not completed a checkpoint in this process is not restarted: it
//! failed while starting, and a restart would only repeat that. Workers are restarted
//! independently: they share nothing, and each one's checkpoints are consistent on their own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use weir_crds::PipelineSpec;

use super::coordinator::{WorkerCommand, WorkerOutcome};
use super::restart::{Decision, Restarts};
use super::worker::{self, Attempt, WorkerJob};
use crate::checkpoint::restore::{self, Inputs, Plan};
use crate::checkpoint::{CheckpointStore, Restore, WorkerCheckpoint};
use crate::error::{Error, Result};
use weir_crds::contract::{PendingRestart, WorkerState, WorkerStatus};

/// What a job starts from, the same for every attempt.
#[derive(Clone, Default)]
pub struct StartFrom {
    /// `--from-savepoint`: its path and parts.
    pub savepoint: Option<Arc<(String, Vec<WorkerCheckpoint>)>>,
    /// `--start-fresh TOKEN`.
    pub fresh: Option<String>,
}

/// Reads storage, asks the planner, and writes a root checkpoint when the plan needs one.
pub async fn restore_point(
    spec: &PipelineSpec,
    store: &CheckpointStore,
    worker: u32,
    from: &StartFrom,
) -> Result<(Restore, Option<String>)> {
    let latest = store.latest(worker).await?;
    let newest_id = store
        .checkpoint_ids(worker)
        .await?
        .last()
        .copied()
        .unwrap_or(0);
    let plan = restore::plan(&Inputs {
        job: &spec.name,
        worker,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        latest: latest.as_ref(),
        newest_id,
        savepoint: from
            .savepoint
            .as_deref()
            .map(|(path, parts)| (path.as_str(), parts.as_slice())),
        fresh: from.fresh.as_deref(),
    })
    .map_err(Error::Checkpoint)?;
    match &plan {
        Plan::Resume { restore, .. } => {
            tracing::info!(
                worker,
                checkpoint = restore.checkpoint_id,
                "resuming from checkpoint"
            );
        }
        Plan::Root { root, .. } => {
            let mut root = root.as_ref().clone();
            root.timestamp_ms = chrono::Utc::now().timestamp_millis();
            store.write(&root, None).await?;
            tracing::info!(
                worker,
                checkpoint = root.id,
                "starting from {}",
                root.origin.as_deref().unwrap_or_default()
            );
        }
        Plan::Empty { .. } => {}
    }
    Ok(plan.into_start())
}

pub struct Supervisor {
    pub job: WorkerJob,
    pub from: StartFrom,
    pub status: Arc<Mutex<WorkerStatus>>,
    pub commands: Receiver<WorkerCommand>,
    /// Where the first attempt starts (planned before the job started, so that a bad start
    /// fails the start).
    pub first: (Restore, Option<String>),
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Supervisor {
    pub async fn run(self) -> Result<WorkerOutcome> {
        let Supervisor {
            job,
            from,
            status,
            mut commands,
            first,
        } = self;
        let (spec, store, metrics, worker) = (&job.spec, &job.store, &job.metrics, job.worker);
        let w = worker.to_string();
        let labels = [spec.name.as_str(), w.as_str()];
        let mut restarts = Restarts::new(spec.restart());
        let mut causes: Vec<String> = Vec::new();
        let mut next = Some(first);
        loop {
            let start = match next.take() {
                Some(s) => Ok(s),
                None => restore_point(spec, store, worker, &from).await,
            };
            let result = match start {
                Ok((restore, origin)) => {
                    let attempt = Attempt {
                        job: &job,
                        restore,
                        origin,
                        status: status.clone(),
                        commands,
                    };
                    let (result, returned) = worker::run(attempt).await;
                    commands = returned;
                    result
                }
                Err(e) => Err(Error::Other(format!(
                    "restoring worker {worker} from its latest checkpoint: {e}"
                ))),
            };
            let error = match result {
                Ok(outcome) => return Ok(outcome),
                Err(e) => e,
            };
            let cause = error.to_string();
            causes.insert(0, cause.clone());
            causes.truncate(WorkerStatus::FAILURES_KEPT);
            // A worker that never completed a checkpoint in this process failed while starting
            // (settings, credentials, a system that stayed unreachable through the
            // connector's own retries): restarting it would repeat the same start, burning
            // attempts and hiding the error, so it fails at once, like before restarts existed.
            let started = status.lock().map_or(true, |s| s.checkpoints_completed > 0);
            let decision = if !error.restartable() {
                Decision::GiveUp {
                    why: "a restart cannot repair this failure".into(),
                }
            } else if !started {
                Decision::GiveUp {
                    why: "it failed before completing its first checkpoint; restarts are for \
                          failures of a running job"
                        .into(),
                }
            } else {
                restarts.on_failure(Instant::now(), fastrand::f64())
            };
            let (delay, attempt) = match decision {
                Decision::Restart { delay, attempt } => (delay, attempt),
                Decision::GiveUp { why } => {
                    if let Ok(mut s) = status.lock() {
                        s.record_failure(now_text(), cause, false);
                        s.state = WorkerState::Failed;
                        s.last_error = Some(error.to_string());
                    }
                    if !error.restartable() || !started {
                        return Err(error);
                    }
                    return Err(Error::RestartsExhausted {
                        worker,
                        why,
                        causes,
                    });
                }
            };
            let strategy = restarts.strategy().to_string();
            tracing::warn!(
                worker,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %cause,
                "worker failed; restarting from its latest complete checkpoint ({strategy})"
            );
            let at = chrono::Utc::now()
                + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::zero());
            if let Ok(mut s) = status.lock() {
                s.record_failure(now_text(), cause.clone(), true);
                s.state = WorkerState::Restarting;
                s.last_error = Some(cause);
                s.restart = Some(PendingRestart {
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    strategy,
                });
            }
            metrics
                .worker_restart_backoff
                .with_label_values(&labels)
                .set(delay.as_secs_f64());
            let go_on = wait_out(delay, worker, &mut commands).await;
            metrics
                .worker_restart_backoff
                .with_label_values(&labels)
                .set(0.0);
            if let Ok(mut s) = status.lock() {
                s.restart = None;
                if go_on {
                    s.restarts += 1;
                    s.state = WorkerState::Starting;
                } else {
                    s.state = WorkerState::Stopped;
                }
            }
            if !go_on {
                return Ok(WorkerOutcome::Stopped);
            }
            metrics.worker_restarts.with_label_values(&labels).inc();
        }
    }
}

/// Waits out a restart's backoff, refusing savepoints; `false` when a stop came meanwhile (the
/// worker then stays down: its last checkpoint is consistent).
async fn wait_out(delay: Duration, worker: u32, commands: &mut Receiver<WorkerCommand>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            cmd = commands.recv() => match cmd {
                Some(WorkerCommand::Savepoint { reply, .. }) => {
                    let _ = reply.send(Err(Error::Other(format!(
                        "worker {worker} is restarting after a failure; take the savepoint once it runs again"
                    ))));
                }
                Some(WorkerCommand::Stop) | None => return false,
            },
        }
    }
}
