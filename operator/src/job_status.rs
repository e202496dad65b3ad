//! What the StreamJob status says, computed from the workers' answers and the plan. Pure.
//! Ready is only ever True when every worker reports `running` for the deployed spec.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use weir_crds::contract::BreakerState;
use weir_crds::status::Condition;
use weir_crds::stream_job::{
    CheckpointRef, Deployment, Operation, OperationKind, PendingUpgrade, Phase, StreamJobStatus,
    WorkerSummary,
};

use crate::admin::JobStatus;
use crate::lifecycle::JobState;
use crate::pods::PodObservation;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CHECKPOINT_HEALTHY: &str = "CheckpointHealthy";

/// One worker's answer to `GET /v1/status`.
pub type WorkerAnswer = Result<JobStatus, String>;

/// How much a problem of the job (besides its workers) matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing new is deployed until it is fixed (what runs keeps running).
    Blocking,
    /// Reported (Degraded), but deploying goes on.
    Warning,
}

/// A problem of the spec or its resolution, with the field or object it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

impl Problem {
    pub fn blocking(message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Blocking,
            message: message.into(),
        }
    }
    pub fn warning(message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            message: message.into(),
        }
    }
}

/// Whether any problem holds deployments back.
pub fn blocking(problems: &[Problem]) -> bool {
    problems.iter().any(|p| p.severity == Severity::Blocking)
}

/// A worker that did not answer: what its pod says decides whether it is starting, restarting
/// after a crash, failing, or unreachable. `starting` is true within the job's startup timeout.
fn silent_worker(
    error: &str,
    pod: Option<&PodObservation>,
    starting: bool,
) -> (&'static str, String) {
    let Some(pod) = pod else {
        let state = if starting { "starting" } else { "unreachable" };
        return (state, format!("no pod yet ({error})"));
    };
    if pod.crashing() {
        return ("failed", pod.describe());
    }
    if pod.restarting() {
        return ("restarting", pod.describe());
    }
    let up = pod.phase == "Running" && pod.ip.is_some();
    if starting && !(up && pod.ready) {
        return ("starting", pod.describe());
    }
    (
        "unreachable",
        format!("{}; admin API: {error}", pod.describe()),
    )
}

/// Aggregates the workers' answers: failure first, then unreachable, then the earliest phase.
pub fn job_state(
    job: &str,
    answers: &BTreeMap<u32, WorkerAnswer>,
    pods: &BTreeMap<u32, PodObservation>,
    starting: bool,
) -> (JobState, Vec<WorkerSummary>) {
    if answers.is_empty() {
        return (JobState::NotDeployed, Vec::new());
    }
    let mut summaries = Vec::new();
    for (w, a) in answers {
        let pod_obs = pods.get(w);
        let pod = pod_obs
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("{job}-{w}"));
        let restarts = pod_obs.map_or(0, |p| p.restarts);
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
                    state: own.map_or(s.state, |o| o.state).as_str().into(),
                    last_checkpoint_id: own.and_then(|o| o.last_checkpoint.as_ref().map(|c| c.id)),
                    last_error: own.and_then(|o| o.last_error.clone()),
                    restarts,
                    in_process_restarts: own.map_or(0, |o| o.restarts),
                    last_failure: own.and_then(|o| o.failures.last().map(|f| f.cause.clone())),
                    breakers: own
                        .map(|o| {
                            o.breakers
                                .iter()
                                .filter(|(_, b)| b.state != BreakerState::Closed)
                                .map(|(sink, b)| (sink.clone(), b.state.name().into()))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            Err(e) => {
                let (state, why) = silent_worker(e, pod_obs, starting);
                WorkerSummary {
                    worker: *w,
                    pod,
                    state: state.into(),
                    last_checkpoint_id: None,
                    last_error: Some(why),
                    restarts,
                    ..WorkerSummary::default()
                }
            }
        });
    }
    let has = |s: &str| summaries.iter().any(|w| w.state == s);
    let state = if has("failed") {
        JobState::Failed
    } else if has("unreachable") || has("restarting") {
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
    /// An upgrade waiting for the workers to run (its savepoint needs them).
    pub pending_upgrade: Option<&'a PendingUpgrade>,
    pub job: JobState,
    pub workers: &'a [WorkerSummary],
    /// Workers whose pod still runs an earlier pod template: a roll in progress (in a last-state
    /// or stateless upgrade the old workers answer `running` until they are replaced).
    pub rolling: u32,
    /// Problems of the job besides its workers (spec, resolution, tuning).
    pub problems: &'a [Problem],
    pub abandoned: bool,
    /// Within the startup timeout of the deployment: silent workers are starting, not degraded.
    pub starting: bool,
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
    if i.pending_upgrade.is_some() {
        return Phase::Upgrading;
    }
    match i.deployed {
        None if i.desired_suspended => Phase::Suspended,
        None => Phase::Pending,
        Some(d) if d.suspended => Phase::Suspended,
        Some(_) if i.rolling > 0 && i.job == JobState::Running => Phase::Deploying,
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

/// The conditions, following kstatus: `Progressing` is True while the spec rolls out or the
/// workers start, `Degraded` only for real failures (crashing or failed workers, spec problems,
/// workers silent past the startup timeout), never for a rollout in progress.
pub fn conditions(i: &Inputs, previous: &[Condition]) -> Vec<Condition> {
    let f = Facts::of(i);
    let conditions = [
        ready(i, &f),
        progressing(i, &f),
        degraded(i, &f),
        checkpoint_healthy(i, f.phase),
    ];
    let now = i.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    conditions
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

/// What the conditions are decided from, derived once from the [`Inputs`].
struct Facts {
    phase: Phase,
    /// The desired spec is deployed and not suspended.
    deployed_current: bool,
    running: usize,
    all_running: bool,
    /// `worker N failed: why` for each failed, unreachable or restarting worker.
    bad_workers: Vec<String>,
    /// A problem blocks deploying.
    blocked: bool,
}

impl Facts {
    fn of(i: &Inputs) -> Facts {
        let running = i.workers.iter().filter(|w| w.state == "running").count();
        let bad = |state: &str| matches!(state, "failed" | "unreachable" | "restarting");
        let bad_workers = i
            .workers
            .iter()
            .filter(|w| bad(&w.state))
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
        Facts {
            phase: phase(i),
            deployed_current: i
                .deployed
                .is_some_and(|d| d.spec_hash == i.desired_hash && !d.suspended),
            running,
            all_running: i.workers.len() == i.parallelism as usize && running == i.workers.len(),
            bad_workers,
            blocked: blocking(i.problems),
        }
    }
}

fn ready(i: &Inputs, f: &Facts) -> Condition {
    if f.phase == Phase::Running && f.deployed_current && f.all_running && i.rolling == 0 {
        return cond(
            READY,
            true,
            "Running",
            format!("{} workers running", i.parallelism),
        );
    }
    let msg = if f.bad_workers.is_empty() {
        format!("{} of {} workers running", f.running, i.parallelism)
    } else {
        f.bad_workers.join("; ")
    };
    cond(READY, false, &format!("{:?}", f.phase), msg)
}

fn progressing(i: &Inputs, f: &Facts) -> Condition {
    let (current, healthy) = (f.deployed_current, f.bad_workers.is_empty());
    if let Some(op) = i.operation {
        cond(
            PROGRESSING,
            true,
            &format!("{:?}Savepoint", op.kind),
            format!(
                "savepoint {} attempt {} in progress",
                op.savepoint_id, op.attempt
            ),
        )
    } else if let Some(p) = i.pending_upgrade {
        cond(
            PROGRESSING,
            true,
            "WaitingForWorkers",
            format!(
                "the upgrade savepoint waits for every worker to run (since {})",
                p.since
            ),
        )
    } else if i.abandoned {
        cond(
            PROGRESSING,
            false,
            "UpgradeAbandoned",
            "the upgrade was given up; change the spec to try again".into(),
        )
    } else if f.blocked && !current {
        cond(
            PROGRESSING,
            false,
            "Blocked",
            "nothing is deployed until the spec problems (Degraded) are fixed".into(),
        )
    } else if !current && !i.desired_suspended {
        cond(
            PROGRESSING,
            true,
            "Deploying",
            "rolling out the spec".into(),
        )
    } else if current && i.rolling > 0 && healthy {
        cond(
            PROGRESSING,
            true,
            "Rolling",
            format!(
                "{} of {} workers still run the previous spec",
                i.rolling, i.parallelism
            ),
        )
    } else if current && !f.all_running && i.starting && healthy {
        cond(
            PROGRESSING,
            true,
            "Starting",
            format!("{} of {} workers running", f.running, i.parallelism),
        )
    } else {
        cond(PROGRESSING, false, "Stable", String::new())
    }
}

fn degraded(i: &Inputs, f: &Facts) -> Condition {
    // A breaker that is not closed diverts a non-critical sink's records to its dead-letter
    // target: the job runs on, degraded.
    let breakers: Vec<String> = i
        .workers
        .iter()
        .flat_map(|w| {
            w.breakers.iter().map(move |(sink, state)| {
                format!("worker {} sink {sink}: circuit breaker {state}", w.worker)
            })
        })
        .collect();
    let mut problems: Vec<String> = i.problems.iter().map(|p| p.message.clone()).collect();
    problems.extend(f.bad_workers.iter().cloned());
    problems.extend(breakers.iter().cloned());
    if problems.is_empty() {
        return cond(DEGRADED, false, "Healthy", String::new());
    }
    let has = |state: &str| i.workers.iter().any(|w| w.state == state);
    let reason = if i.abandoned {
        "UpgradeAbandoned"
    } else if f.blocked {
        "InvalidSpec"
    } else if has("failed") {
        "WorkersFailed"
    } else if has("restarting") {
        "WorkersRestarting"
    } else if has("unreachable") {
        "WorkersUnreachable"
    } else if !breakers.is_empty() {
        "SinkBreakerOpen"
    } else {
        "SpecWarning"
    };
    cond(DEGRADED, true, reason, problems.join("; "))
}

fn checkpoint_healthy(i: &Inputs, phase: Phase) -> Condition {
    let Some((interval, timeout)) = i.checkpointing else {
        return unknown(
            CHECKPOINT_HEALTHY,
            "Disabled",
            "checkpointing is off".into(),
        );
    };
    if phase != Phase::Running {
        return unknown(
            CHECKPOINT_HEALTHY,
            "NotRunning",
            format!("job is {phase:?}"),
        );
    }
    let limit = checkpoint_threshold(interval, timeout);
    let age = |time: &str| {
        DateTime::parse_from_rfc3339(time)
            .ok()
            .map(|t| (i.now - t.with_timezone(&Utc)).to_std().unwrap_or_default())
    };
    let since_deploy = i.deployed.and_then(|d| age(&d.time)).unwrap_or_default();
    match i.last_checkpoint.and_then(|c| age(&c.time)) {
        Some(age) => {
            let msg = format!(
                "last checkpoint {}s ago (limit {}s)",
                age.as_secs(),
                limit.as_secs()
            );
            let recent = age <= limit;
            cond(
                CHECKPOINT_HEALTHY,
                recent,
                if recent { "Recent" } else { "Stale" },
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

/// An event to publish about the StreamJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    /// Distinct per kind of transition: kube's recorder folds events with the same type, reason
    /// and action into a series count, which would drop every later note.
    pub reason: String,
    pub note: String,
}

/// Events for what changed between two statuses: one per condition whose status changed
/// (reason `<Type><Reason>`, e.g. `DegradedWorkersFailed`, `ReadyRunning`) and one for a phase
/// change (reason `Phase<New>`). Pure.
pub fn transition_events(
    previous: Option<&StreamJobStatus>,
    status: &StreamJobStatus,
) -> Vec<EventNote> {
    let before_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut out = Vec::new();
    for c in &status.conditions {
        let before = before_conditions.iter().find(|p| p.type_ == c.type_);
        if before.map(|b| &b.status) == Some(&c.status) {
            continue;
        }
        let warning = (c.type_ == DEGRADED && c.status == "True")
            || (c.type_ != DEGRADED && c.status == "False" && before.is_some());
        let mut note = format!("{} is {} ({})", c.type_, c.status, c.reason);
        if !c.message.is_empty() {
            note.push_str(&format!(": {}", c.message));
        }
        out.push(EventNote {
            warning,
            reason: format!("{}{}", c.type_, c.reason),
            note,
        });
    }
    out.extend(worker_events(
        previous.map(|p| p.workers.as_slice()).unwrap_or(&[]),
        &status.workers,
    ));
    let phase_before = previous.map(|p| p.phase);
    if phase_before != Some(status.phase) {
        out.push(EventNote {
            warning: status.phase == Phase::Failed,
            reason: format!("Phase{:?}", status.phase),
            note: match phase_before {
                Some(p) => format!("phase {p:?} -> {:?}", status.phase),
                None => format!("phase {:?}", status.phase),
            },
        });
    }
    out
}

/// Events for what the workers' own reports changed: an in-process restart (its count grew;
/// a new process starts again from 0 and its pod's restart count tells that story) and each
/// circuit breaker transition. Pure.
pub fn worker_events(before: &[WorkerSummary], now: &[WorkerSummary]) -> Vec<EventNote> {
    let mut out = Vec::new();
    for w in now {
        let prev = before.iter().find(|p| p.worker == w.worker);
        if w.in_process_restarts > prev.map_or(0, |p| p.in_process_restarts) {
            out.push(EventNote {
                warning: true,
                reason: "WorkerRestartedInProcess".into(),
                note: format!(
                    "worker {} restarted from its latest checkpoint ({} restart(s) in this process){}",
                    w.worker,
                    w.in_process_restarts,
                    w.last_failure
                        .as_deref()
                        .map(|c| format!(" after: {c}"))
                        .unwrap_or_default()
                ),
            });
        }
        let empty = BTreeMap::new();
        let old = prev.map_or(&empty, |p| &p.breakers);
        let sinks: std::collections::BTreeSet<&String> =
            old.keys().chain(w.breakers.keys()).collect();
        for sink in sinks {
            let (was, is) = (old.get(sink), w.breakers.get(sink));
            if was == is {
                continue;
            }
            let state = is.map_or("closed", String::as_str);
            out.push(EventNote {
                warning: state == "open",
                reason: match state {
                    "open" => "SinkBreakerOpened",
                    "half_open" => "SinkBreakerHalfOpen",
                    _ => "SinkBreakerClosed",
                }
                .into(),
                note: format!(
                    "worker {} sink {sink}: circuit breaker {} -> {state}",
                    w.worker,
                    was.map_or("closed", String::as_str)
                ),
            });
        }
    }
    out
}
