//! What the StreamJob status says, computed from the workers' answers and the plan. Pure.
//! Ready is only ever True when every worker reports `running` for the deployed spec.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use weir_crds::status::Condition;
use weir_crds::stream_job::{
    CheckpointRef, Deployment, Operation, OperationKind, Phase, WorkerSummary,
};

use crate::admin::JobStatus;
use crate::upgrade::JobState;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CHECKPOINT_HEALTHY: &str = "CheckpointHealthy";

/// One worker's answer to `GET /v1/status`.
pub type WorkerAnswer = Result<JobStatus, String>;

/// Aggregates the workers' answers: failure first, then unreachable, then the earliest phase.
pub fn job_state(
    job: &str,
    answers: &BTreeMap<u32, WorkerAnswer>,
) -> (JobState, Vec<WorkerSummary>) {
    if answers.is_empty() {
        return (JobState::NotDeployed, Vec::new());
    }
    let mut summaries = Vec::new();
    for (w, a) in answers {
        let pod = format!("{job}-{w}");
        summaries.push(match a {
            Ok(s) => {
                let own = s
                    .workers
                    .iter()
                    .find(|x| x.worker == *w)
                    .or(s.workers.first());
                WorkerSummary {
                    worker: *w,
                    pod,
                    state: own
                        .map(|o| o.state.clone())
                        .unwrap_or_else(|| s.state.clone()),
                    last_checkpoint_id: own.and_then(|o| o.last_checkpoint.as_ref().map(|c| c.id)),
                    last_error: own.and_then(|o| o.last_error.clone()),
                }
            }
            Err(e) => WorkerSummary {
                worker: *w,
                pod,
                state: "unreachable".into(),
                last_checkpoint_id: None,
                last_error: Some(e.clone()),
            },
        });
    }
    let has = |s: &str| summaries.iter().any(|w| w.state == s);
    let state = if has("failed") {
        JobState::Failed
    } else if has("unreachable") {
        JobState::Unreachable
    } else if has("starting") {
        JobState::Starting
    } else if summaries.iter().all(|w| w.state == "finished") {
        JobState::Finished
    } else if has("stopped") {
        JobState::Stopped
    } else {
        // running, finishing, or finished next to running ones
        JobState::Running
    };
    (state, summaries)
}

/// The oldest "newest checkpoint" over the workers: the job is as recent as its laggard.
pub fn last_checkpoint(answers: &BTreeMap<u32, WorkerAnswer>) -> Option<CheckpointRef> {
    let mut oldest: Option<CheckpointRef> = None;
    for a in answers.values() {
        let s = a.as_ref().ok()?;
        let c = s.workers.first()?.last_checkpoint.as_ref()?;
        let candidate = CheckpointRef {
            id: c.id,
            time: c.completed_at.clone(),
        };
        if oldest.as_ref().is_none_or(|o| candidate.time < o.time) {
            oldest = Some(candidate);
        }
    }
    oldest
}

pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub deleting: bool,
    pub desired_hash: &'a str,
    pub desired_suspended: bool,
    pub parallelism: u32,
    pub deployed: Option<&'a Deployment>,
    pub operation: Option<&'a Operation>,
    pub job: JobState,
    pub workers: &'a [WorkerSummary],
    /// Reasons the job is degraded besides its workers (spec, tuning, abandoned upgrade).
    pub problems: &'a [String],
    pub abandoned: bool,
    /// `(interval, timeout)` when checkpointing is on.
    pub checkpointing: Option<(Duration, Duration)>,
    pub last_checkpoint: Option<&'a CheckpointRef>,
    pub now: DateTime<Utc>,
}

pub fn phase(i: &Inputs) -> Phase {
    if i.deleting {
        return Phase::Deleting;
    }
    if let Some(op) = i.operation {
        match op.kind {
            OperationKind::Upgrade => return Phase::Upgrading,
            OperationKind::Suspend => return Phase::Suspending,
            OperationKind::Delete => return Phase::Deleting,
            OperationKind::Manual | OperationKind::Periodic => {}
        }
    }
    match i.deployed {
        None if i.desired_suspended => Phase::Suspended,
        None => Phase::Pending,
        Some(d) if d.suspended => Phase::Suspended,
        Some(_) => match i.job {
            JobState::Running => Phase::Running,
            JobState::Failed => Phase::Failed,
            JobState::Finished => Phase::Finished,
            JobState::Starting
            | JobState::Stopped
            | JobState::Unreachable
            | JobState::NotDeployed => Phase::Deploying,
        },
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        ..Default::default()
    }
}

fn unknown(type_: &str, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: "Unknown".into(),
        reason: reason.into(),
        message,
        ..Default::default()
    }
}

/// No complete checkpoint for longer than this means checkpoints are failing.
pub fn checkpoint_threshold(interval: Duration, timeout: Duration) -> Duration {
    interval * 2 + timeout
}

pub fn conditions(i: &Inputs, previous: &[Condition]) -> Vec<Condition> {
    let phase = phase(i);
    let deployed_current = i
        .deployed
        .is_some_and(|d| d.spec_hash == i.desired_hash && !d.suspended);
    let all_running =
        i.workers.len() == i.parallelism as usize && i.workers.iter().all(|w| w.state == "running");
    let bad_workers: Vec<String> = i
        .workers
        .iter()
        .filter(|w| w.state == "failed" || w.state == "unreachable")
        .map(|w| {
            format!(
                "worker {} {}{}",
                w.worker,
                w.state,
                w.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();

    let ready = if phase == Phase::Running && deployed_current && all_running {
        cond(
            READY,
            true,
            "Running",
            format!("{} workers running", i.parallelism),
        )
    } else {
        let reason = format!("{phase:?}");
        let msg = if bad_workers.is_empty() {
            format!(
                "{} of {} workers running",
                i.workers.iter().filter(|w| w.state == "running").count(),
                i.parallelism
            )
        } else {
            bad_workers.join("; ")
        };
        cond(READY, false, &reason, msg)
    };

    let progressing = if let Some(op) = i.operation {
        cond(
            PROGRESSING,
            true,
            &format!("{:?}Savepoint", op.kind),
            format!(
                "savepoint {} attempt {} in progress",
                op.savepoint_id, op.attempt
            ),
        )
    } else if !i.abandoned && !deployed_current && !i.desired_suspended {
        cond(
            PROGRESSING,
            true,
            "Deploying",
            "rolling out the spec".into(),
        )
    } else if i.job == JobState::Starting {
        cond(PROGRESSING, true, "Starting", "workers are starting".into())
    } else {
        cond(PROGRESSING, false, "Stable", String::new())
    };

    let mut problems: Vec<String> = i.problems.to_vec();
    problems.extend(bad_workers);
    let degraded = if problems.is_empty() {
        cond(DEGRADED, false, "Healthy", String::new())
    } else {
        let reason = if i.abandoned {
            "UpgradeAbandoned"
        } else if i.job == JobState::Failed {
            "WorkersFailed"
        } else if i.job == JobState::Unreachable {
            "WorkersUnreachable"
        } else {
            "InvalidSpec"
        };
        cond(DEGRADED, true, reason, problems.join("; "))
    };

    let checkpoint = match (i.checkpointing, phase) {
        (None, _) => unknown(
            CHECKPOINT_HEALTHY,
            "Disabled",
            "checkpointing is off".into(),
        ),
        (Some(_), p) if p != Phase::Running => {
            unknown(CHECKPOINT_HEALTHY, "NotRunning", format!("job is {p:?}"))
        }
        (Some((interval, timeout)), _) => {
            let limit = checkpoint_threshold(interval, timeout);
            let since_deploy = i
                .deployed
                .and_then(|d| DateTime::parse_from_rfc3339(&d.time).ok())
                .map(|t| (i.now - t.with_timezone(&Utc)).to_std().unwrap_or_default())
                .unwrap_or_default();
            match i
                .last_checkpoint
                .and_then(|c| DateTime::parse_from_rfc3339(&c.time).ok())
            {
                Some(t) => {
                    let age = (i.now - t.with_timezone(&Utc)).to_std().unwrap_or_default();
                    let msg = format!(
                        "last checkpoint {}s ago (limit {}s)",
                        age.as_secs(),
                        limit.as_secs()
                    );
                    cond(
                        CHECKPOINT_HEALTHY,
                        age <= limit,
                        if age <= limit { "Recent" } else { "Stale" },
                        msg,
                    )
                }
                None if since_deploy <= limit => unknown(
                    CHECKPOINT_HEALTHY,
                    "NoCheckpointYet",
                    "no checkpoint completed yet".into(),
                ),
                None => cond(
                    CHECKPOINT_HEALTHY,
                    false,
                    "NoCheckpoint",
                    format!("no checkpoint completed in {}s", since_deploy.as_secs()),
                ),
            }
        }
    };

    let now = i.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    [ready, progressing, degraded, checkpoint]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = i.generation;
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            c
        })
        .collect()
}
