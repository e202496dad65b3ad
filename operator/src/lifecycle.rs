//! A job's lifecycle as one state machine: a pure function from what the user asks for, what is
//! deployed and what the workers report to the one next action (deploy, upgrade, suspend, resume,
//! manual and periodic savepoints, delete). Every savepoint the operator takes (upgrade,
//! suspend, manual, periodic, delete) goes through here, so retries, timeouts and fallbacks follow
//! one set of rules:
//!
//! - a failed or timed-out savepoint is retried while attempts remain, the job still runs and
//!   `onFailure` is `Retry` or `FallbackToLastCheckpoint`; `Abort` never retries;
//! - when no attempt is left, `FallbackToLastCheckpoint` goes on without the savepoint (each worker
//!   resumes from its newest complete checkpoint) and the others give up, leaving the old job as it
//!   is (Degraded) until the spec changes again;
//! - the StatefulSet is only rolled once the new plan is safe: after the savepoint completed, or
//!   for a fallback, or when nothing runs that a savepoint could capture.

use std::time::Duration;

use chrono::{DateTime, Utc};
use weir_crds::stream_job::{
    CheckpointRef, Deployment, DesiredState, OnFailure, Operation, OperationKind, PendingUpgrade,
    SavepointUpgrade, UpgradeMode,
};

/// How often a pending savepoint is polled (each poll is one reconcile).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long to wait before looking again at workers that cannot be reached or are starting.
pub const WAIT_INTERVAL: Duration = Duration::from_secs(10);

/// What the user asks for (from the spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Hash of everything whose change needs a restart.
    pub hash: String,
    pub parallelism: u32,
    pub mode: UpgradeMode,
    pub savepoint: SavepointUpgrade,
    pub state: DesiredState,
    pub initial_savepoint: Option<String>,
    pub trigger_nonce: Option<i64>,
    pub periodic_interval: Option<Duration>,
    pub deleting: bool,
    pub delete_with_savepoint: bool,
}

/// The job as the workers report it (aggregated over every worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// No StatefulSet, or scaled to zero.
    NotDeployed,
    Starting,
    Running,
    Failed,
    Finished,
    Stopped,
    /// Some worker's admin API does not answer.
    Unreachable,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::NotDeployed,
        JobState::Starting,
        JobState::Running,
        JobState::Failed,
        JobState::Finished,
        JobState::Stopped,
        JobState::Unreachable,
    ];
}

/// The result of polling every worker for the savepoint in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavepointOutcome {
    Pending,
    /// Every part is written and the job manifest too; `path` is what `--from-savepoint` takes.
    Completed {
        path: String,
    },
    Failed {
        error: String,
    },
}

/// What the operator knows besides the spec: its own status and the workers' answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub deployed: Option<Deployment>,
    pub operation: Option<Operation>,
    /// The poll result for `operation` (ignored without one).
    pub outcome: Option<SavepointOutcome>,
    pub job: JobState,
    pub last_trigger_nonce: Option<i64>,
    /// When the newest savepoint of any kind completed (periodic savepoints count from it).
    pub last_savepoint_time: Option<DateTime<Utc>>,
    pub abandoned_hash: Option<String>,
    /// An upgrade already waiting for the workers to run (its savepoint needs them).
    pub pending_upgrade: Option<PendingUpgrade>,
    /// When the StreamJob's deletion was requested (`metadata.deletionTimestamp`).
    pub deletion_started: Option<DateTime<Utc>>,
    /// The newest complete checkpoint (named when a promised savepoint cannot be taken).
    pub last_checkpoint: Option<CheckpointRef>,
    /// The deployed StatefulSet no longer exists.
    pub workload_missing: bool,
    pub now: DateTime<Utc>,
}

/// Where the workers start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// No savepoint: a new job (the runtime still resumes a checkpoint it finds in storage).
    Fresh,
    Savepoint(String),
    /// Each worker resumes from its newest complete checkpoint.
    LastState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the ConfigMap and roll the StatefulSet to the desired spec.
    Deploy { restore: Restore, reason: String },
    /// Ask every worker for savepoint part `attempt` of an operation of `kind`.
    Trigger {
        kind: OperationKind,
        stop: bool,
        attempt: u32,
    },
    /// Look again after `after` (a savepoint is pending, or workers are starting/unreachable).
    Wait { after: Duration, reason: String },
    /// An upgrade needs a savepoint, but not every worker runs: wait (bounded by the savepoint
    /// timeout, counted from the first wait for this spec) and look again.
    WaitForWorkers { reason: String },
    /// Scale to zero; a later resume starts from `resume_from` (none: newest checkpoints).
    Suspend { resume_from: Option<String> },
    /// The operation is over (a manual/periodic savepoint completed or failed): forget it.
    Finish {
        kind: OperationKind,
        failed: Option<String>,
    },
    /// Give up an upgrade or suspend: the old job stays as it is, Degraded, until the spec changes.
    Abandon { kind: OperationKind, reason: String },
    /// Let the StreamJob go (children are deleted through their owner references); `warning`
    /// when a promised savepoint was not taken.
    ReleaseFinalizer { reason: String, warning: bool },
    /// Nothing to do.
    Steady,
}

fn live(job: JobState) -> bool {
    matches!(job, JobState::Running)
}

/// The next action. Pure: the same inputs always give the same action.
pub fn decide(desired: &Desired, observed: &Observed) -> Action {
    if let Some(op) = &observed.operation {
        return during_operation(desired, observed, op);
    }
    if desired.deleting {
        return on_delete(desired, observed);
    }
    let Some(deployed) = &observed.deployed else {
        return first_deployment(desired);
    };
    if deployed.suspended {
        return from_suspended(desired, deployed);
    }
    if observed.workload_missing {
        return recreate_workload(desired);
    }
    if desired.state == DesiredState::Suspended {
        return suspend(observed);
    }
    if deployed.spec_hash != desired.hash
        && observed.abandoned_hash.as_deref() != Some(desired.hash.as_str())
    {
        return upgrade(desired, observed);
    }
    savepoint_due(desired, observed, deployed).unwrap_or(Steady)
}

/// A savepoint operation is in flight: follow it to its end.
fn during_operation(desired: &Desired, observed: &Observed, op: &Operation) -> Action {
    let outcome = effective_outcome(desired, observed, op);
    if desired.deleting && op.kind != OperationKind::Delete {
        // An upgrade or suspend savepoint in flight when the job is deleted still protects
        // its state: wait for it, then let go.
        return match outcome {
            SavepointOutcome::Pending => wait_poll(op),
            SavepointOutcome::Completed { .. } => ReleaseFinalizer {
                reason: format!("{:?} savepoint completed before deletion", op.kind),
                warning: false,
            },
            SavepointOutcome::Failed { .. } => on_delete(desired, observed),
        };
    }
    after_poll(desired, observed, op, outcome)
}

/// Nothing deployed yet.
fn first_deployment(desired: &Desired) -> Action {
    let restore = desired.initial_savepoint.clone().map(Restore::Savepoint);
    deploy_to_run(
        desired,
        restore.unwrap_or(Restore::Fresh),
        "first deployment",
    )
}

/// Deployed and suspended: resume when the job is to run again.
fn from_suspended(desired: &Desired, deployed: &Deployment) -> Action {
    let restore = deployed.resume_from.clone().map(Restore::Savepoint);
    deploy_to_run(desired, restore.unwrap_or(Restore::LastState), "resuming")
}

/// Nothing runs: deploy when the job is to run, else stay as it is.
fn deploy_to_run(desired: &Desired, restore: Restore, reason: &str) -> Action {
    match desired.state {
        DesiredState::Suspended => Steady,
        DesiredState::Running => Deploy {
            restore,
            reason: reason.into(),
        },
    }
}

/// Someone deleted the StatefulSet: put it back rather than report a job that does not run.
/// Its workers' checkpoints are all the state there is.
fn recreate_workload(desired: &Desired) -> Action {
    match desired.state {
        DesiredState::Running => Deploy {
            restore: Restore::LastState,
            reason: "its StatefulSet was deleted; recreated, each worker resumes from its \
                     newest checkpoint"
                .into(),
        },
        DesiredState::Suspended => Suspend { resume_from: None },
    }
}

/// The job is to be suspended: with a savepoint when it runs.
fn suspend(observed: &Observed) -> Action {
    if live(observed.job) {
        Trigger {
            kind: OperationKind::Suspend,
            stop: true,
            attempt: 1,
        }
    } else if observed.job == JobState::Starting {
        Wait {
            after: WAIT_INTERVAL,
            reason: "waiting for the workers to run before the suspend savepoint".into(),
        }
    } else {
        // Nothing runs that a savepoint could capture: resume from the checkpoints.
        Suspend { resume_from: None }
    }
}

/// A manual savepoint asked for and not yet taken, or a periodic one due; only while the job
/// runs.
fn savepoint_due(desired: &Desired, observed: &Observed, deployed: &Deployment) -> Option<Action> {
    if !live(observed.job) {
        return None;
    }
    let trigger = |kind| Trigger {
        kind,
        stop: false,
        attempt: 1,
    };
    if let Some(nonce) = desired.trigger_nonce {
        if observed.last_trigger_nonce != Some(nonce) {
            return Some(trigger(OperationKind::Manual));
        }
    }
    let every = desired.periodic_interval?;
    let since = observed.last_savepoint_time.or_else(|| {
        DateTime::parse_from_rfc3339(&deployed.time)
            .ok()
            .map(Into::into)
    });
    periodic_due_in(every, since, observed.now)
        .is_zero()
        .then(|| trigger(OperationKind::Periodic))
}

use Action::*;

/// How long until the next periodic savepoint is due (zero: due now). `since` is the newest
/// savepoint, else the deployment; nothing known means due. The reconcile requeues at this time,
/// so a 3 s interval is not stretched to the 30 s resync.
pub fn periodic_due_in(
    every: Duration,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Duration {
    since.map_or(Duration::ZERO, |t| every.saturating_sub(elapsed(t, now)))
}

fn elapsed(from: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - from).to_std().unwrap_or(Duration::ZERO)
}

/// A pending savepoint past its timeout counts as failed.
fn effective_outcome(desired: &Desired, observed: &Observed, op: &Operation) -> SavepointOutcome {
    let outcome = observed
        .outcome
        .clone()
        .unwrap_or(SavepointOutcome::Pending);
    if outcome != SavepointOutcome::Pending {
        return outcome;
    }
    let started = DateTime::parse_from_rfc3339(&op.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(observed.now);
    let limit = desired.savepoint.timeout.as_std();
    if elapsed(started, observed.now) > limit {
        SavepointOutcome::Failed {
            error: format!(
                "savepoint {} timed out after {}",
                op.savepoint_id,
                humantime::format_duration(limit)
            ),
        }
    } else {
        SavepointOutcome::Pending
    }
}

fn wait_poll(op: &Operation) -> Action {
    Wait {
        after: POLL_INTERVAL,
        reason: format!(
            "waiting for {:?} savepoint {} (attempt {})",
            op.kind, op.savepoint_id, op.attempt
        ),
    }
}

fn after_poll(
    desired: &Desired,
    observed: &Observed,
    op: &Operation,
    outcome: SavepointOutcome,
) -> Action {
    match outcome {
        SavepointOutcome::Pending => wait_poll(op),
        SavepointOutcome::Completed { path } => match op.kind {
            OperationKind::Upgrade => Deploy {
                restore: Restore::Savepoint(path),
                reason: "upgrade savepoint completed".into(),
            },
            OperationKind::Suspend => Suspend {
                resume_from: Some(path),
            },
            OperationKind::Manual | OperationKind::Periodic => Finish {
                kind: op.kind,
                failed: None,
            },
            OperationKind::Delete => ReleaseFinalizer {
                reason: "delete savepoint completed".into(),
                warning: false,
            },
        },
        SavepointOutcome::Failed { error } => {
            let policy = desired.savepoint.on_failure;
            let attempts_left = op.attempt < desired.savepoint.max_attempts;
            // A savepoint can only be retried while the workers run; a stop-with-savepoint that
            // failed leaves them running.
            if policy != OnFailure::Abort && attempts_left && live(observed.job) {
                return Trigger {
                    kind: op.kind,
                    stop: op.stop,
                    attempt: op.attempt + 1,
                };
            }
            let reason = format!(
                "{:?} savepoint failed after {} attempt(s): {error}",
                op.kind, op.attempt
            );
            match op.kind {
                OperationKind::Manual | OperationKind::Periodic => Finish {
                    kind: op.kind,
                    failed: Some(reason),
                },
                OperationKind::Delete => ReleaseFinalizer {
                    reason: without_savepoint(&reason, observed),
                    warning: true,
                },
                OperationKind::Upgrade if policy == OnFailure::FallbackToLastCheckpoint => {
                    fallback_upgrade(desired, observed, reason)
                }
                OperationKind::Suspend if policy == OnFailure::FallbackToLastCheckpoint => {
                    Suspend { resume_from: None }
                }
                kind => Abandon { kind, reason },
            }
        }
    }
}

fn rescaling(desired: &Desired, observed: &Observed) -> bool {
    observed
        .deployed
        .as_ref()
        .is_some_and(|d| d.parallelism != desired.parallelism)
}

/// Upgrading from the newest checkpoints; impossible across a parallelism change, because the
/// runtime only rescales through a savepoint.
fn fallback_upgrade(desired: &Desired, observed: &Observed, reason: String) -> Action {
    if rescaling(desired, observed) {
        Abandon {
            kind: OperationKind::Upgrade,
            reason: format!(
                "{reason}; falling back to the last checkpoint is impossible because the parallelism changes (rescaling needs a savepoint)"
            ),
        }
    } else {
        Deploy {
            restore: Restore::LastState,
            reason: format!("{reason}; falling back to the last checkpoint"),
        }
    }
}

fn upgrade(desired: &Desired, observed: &Observed) -> Action {
    let savepoint_needed = match desired.mode {
        UpgradeMode::Stateless => false,
        UpgradeMode::LastState => rescaling(desired, observed),
        UpgradeMode::Savepoint => true,
    };
    if !savepoint_needed {
        let restore = match desired.mode {
            UpgradeMode::Stateless => Restore::Fresh,
            _ => Restore::LastState,
        };
        return Deploy {
            restore,
            reason: format!("spec changed ({:?} upgrade)", desired.mode),
        };
    }
    match observed.job {
        JobState::Running => Trigger {
            kind: OperationKind::Upgrade,
            stop: true,
            attempt: 1,
        },
        JobState::Starting | JobState::Unreachable => await_workers(desired, observed),
        // Nothing runs, so no savepoint can be taken and none is needed: the newest checkpoints
        // hold everything (a failed job must stay fixable by a spec change).
        JobState::Failed | JobState::Finished | JobState::Stopped | JobState::NotDeployed => {
            fallback_upgrade(
                desired,
                observed,
                format!("spec changed while the job is {:?}", observed.job),
            )
        }
    }
}

/// How long an operation may wait for the workers to run: one savepoint timeout, or one per
/// attempt under `Retry`.
fn worker_wait_limit(desired: &Desired) -> Duration {
    let attempts = match desired.savepoint.on_failure {
        OnFailure::Retry => desired.savepoint.max_attempts.max(1),
        _ => 1,
    };
    desired.savepoint.timeout.as_std() * attempts
}

/// An upgrade savepoint needs every worker running. Waiting is bounded: past the limit
/// `onFailure` applies, so a spec that fixes crash-looping or unreachable workers can roll out
/// (with `FallbackToLastCheckpoint`) instead of waiting forever.
fn await_workers(desired: &Desired, observed: &Observed) -> Action {
    let since = observed
        .pending_upgrade
        .as_ref()
        .filter(|p| p.target_hash == desired.hash)
        .and_then(|p| DateTime::parse_from_rfc3339(&p.since).ok())
        .map(|t| t.with_timezone(&Utc));
    let limit = worker_wait_limit(desired);
    let waited = since.map(|t| elapsed(t, observed.now));
    if waited.is_none_or(|w| w <= limit) {
        return WaitForWorkers {
            reason: format!(
                "waiting up to {} for every worker to run before the upgrade savepoint (workers {:?})",
                humantime::format_duration(limit),
                observed.job
            ),
        };
    }
    let reason = format!(
        "no upgrade savepoint possible: the workers were {:?} for more than {}",
        observed.job,
        humantime::format_duration(limit)
    );
    match desired.savepoint.on_failure {
        OnFailure::FallbackToLastCheckpoint => fallback_upgrade(desired, observed, reason),
        OnFailure::Retry | OnFailure::Abort => Abandon {
            kind: OperationKind::Upgrade,
            reason: format!(
                "{reason}; the old spec stays deployed. Fix the workers, or set upgrade.savepoint.onFailure: FallbackToLastCheckpoint to upgrade from the newest checkpoints"
            ),
        },
    }
}

/// `reason`, plus what the user keeps instead of the savepoint.
fn without_savepoint(reason: &str, observed: &Observed) -> String {
    let newest = match &observed.last_checkpoint {
        Some(c) => format!("the newest complete checkpoint is {} ({})", c.id, c.time),
        None => "no complete checkpoint is known".into(),
    };
    format!("no delete savepoint was taken ({reason}); {newest}")
}

fn on_delete(desired: &Desired, observed: &Observed) -> Action {
    let deployed_running = observed.deployed.as_ref().is_some_and(|d| !d.suspended);
    if !(desired.delete_with_savepoint && deployed_running) {
        return ReleaseFinalizer {
            reason: "deleted".into(),
            warning: false,
        };
    }
    match observed.job {
        JobState::Running => {
            let already_failed = observed
                .operation
                .as_ref()
                .is_some_and(|o| o.kind == OperationKind::Delete);
            if already_failed {
                ReleaseFinalizer {
                    reason: without_savepoint("the delete savepoint failed", observed),
                    warning: true,
                }
            } else {
                Trigger {
                    kind: OperationKind::Delete,
                    stop: true,
                    attempt: 1,
                }
            }
        }
        JobState::Finished => ReleaseFinalizer {
            reason: "deleted; the job had finished, so there was nothing to save".into(),
            warning: false,
        },
        JobState::Starting | JobState::Unreachable => {
            let limit = worker_wait_limit(desired);
            let waited = observed
                .deletion_started
                .map_or(Duration::ZERO, |t| elapsed(t, observed.now));
            if waited <= limit {
                Wait {
                    after: WAIT_INTERVAL,
                    reason: format!(
                        "waiting up to {} for the workers to run and take the delete savepoint (workers {:?})",
                        humantime::format_duration(limit),
                        observed.job
                    ),
                }
            } else {
                ReleaseFinalizer {
                    reason: without_savepoint(
                        &format!(
                            "the workers were {:?} for more than {}",
                            observed.job,
                            humantime::format_duration(limit)
                        ),
                        observed,
                    ),
                    warning: true,
                }
            }
        }
        JobState::Failed | JobState::Stopped | JobState::NotDeployed => ReleaseFinalizer {
            reason: without_savepoint(&format!("the job is {:?}", observed.job), observed),
            warning: true,
        },
    }
}
