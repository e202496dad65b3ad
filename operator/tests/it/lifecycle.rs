//! The upgrade state machine over every (upgradeMode, job state, savepoint outcome, onFailure,
//! attempt) combination: explicit expectations for the upgrade and suspend paths, and invariants
//! that must hold for every input.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use weir_crds::stream_job::{
    CheckpointRef, Deployment, DesiredState, OnFailure, Operation, OperationKind, PendingUpgrade,
    SavepointUpgrade, UpgradeMode,
};
use weir_operator::lifecycle::{
    decide, Action, Desired, JobState, Observed, Restore, SavepointOutcome,
};

const MODES: [UpgradeMode; 3] = [
    UpgradeMode::Stateless,
    UpgradeMode::Savepoint,
    UpgradeMode::LastState,
];
const POLICIES: [OnFailure; 3] = [
    OnFailure::Retry,
    OnFailure::FallbackToLastCheckpoint,
    OnFailure::Abort,
];
const KINDS: [OperationKind; 5] = [
    OperationKind::Upgrade,
    OperationKind::Suspend,
    OperationKind::Manual,
    OperationKind::Periodic,
    OperationKind::Delete,
];
const MAX: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Poll {
    Pending,
    TimedOut,
    Completed,
    Failed,
}
const POLLS: [Poll; 4] = [Poll::Pending, Poll::TimedOut, Poll::Completed, Poll::Failed];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn desired(mode: UpgradeMode, policy: OnFailure, parallelism: u32) -> Desired {
    Desired {
        hash: "new".into(),
        parallelism,
        mode,
        savepoint: SavepointUpgrade {
            timeout: weir_crds::Duration::from_secs(60),
            max_attempts: MAX,
            on_failure: policy,
        },
        state: DesiredState::Running,
        initial_savepoint: None,
        trigger_nonce: None,
        periodic_interval: None,
        deleting: false,
        delete_with_savepoint: false,
    }
}

fn deployed(hash: &str) -> Deployment {
    Deployment {
        spec_hash: hash.into(),
        parallelism: 2,
        suspended: false,
        restored_from: None,
        resume_from: None,
        time: "2026-01-01T11:00:00Z".into(),
    }
}

fn operation(kind: OperationKind, attempt: u32, poll: Poll) -> Operation {
    let started = if poll == Poll::TimedOut {
        now() - chrono::Duration::seconds(61)
    } else {
        now() - chrono::Duration::seconds(5)
    };
    Operation {
        kind,
        savepoint_id: "sp".into(),
        stop: matches!(
            kind,
            OperationKind::Upgrade | OperationKind::Suspend | OperationKind::Delete
        ),
        attempt,
        started_at: started.to_rfc3339(),
        target_hash: None,
        completed: Default::default(),
    }
}

fn outcome(poll: Poll) -> SavepointOutcome {
    match poll {
        Poll::Pending | Poll::TimedOut => SavepointOutcome::Pending,
        Poll::Completed => SavepointOutcome::Completed {
            path: "s3://b/job/savepoints/sp".into(),
        },
        Poll::Failed => SavepointOutcome::Failed {
            error: "boom".into(),
        },
    }
}

fn observed(job: JobState, op: Option<Operation>, poll: Poll) -> Observed {
    Observed {
        deployed: Some(deployed("old")),
        outcome: op.as_ref().map(|_| outcome(poll)),
        operation: op,
        job,
        last_trigger_nonce: None,
        last_savepoint_time: None,
        abandoned_hash: None,
        pending_upgrade: None,
        deletion_started: Some(now()),
        last_checkpoint: None,
        workload_missing: false,
        now: now(),
    }
}

fn trigger(kind: OperationKind, attempt: u32) -> Action {
    Action::Trigger {
        kind,
        stop: matches!(
            kind,
            OperationKind::Upgrade | OperationKind::Suspend | OperationKind::Delete
        ),
        attempt,
    }
}

/// The variant name, for comparing actions whose messages do not matter here.
fn shape(a: &Action) -> String {
    match a {
        Action::Deploy { restore, .. } => format!("Deploy({restore:?})"),
        Action::Trigger {
            kind,
            attempt,
            stop,
        } => format!("Trigger({kind:?},{attempt},{stop})"),
        Action::Wait { .. } => "Wait".into(),
        Action::WaitForWorkers { .. } => "WaitForWorkers".into(),
        Action::Suspend { resume_from } => format!("Suspend({resume_from:?})"),
        Action::Finish { kind, failed } => format!("Finish({kind:?},{})", failed.is_some()),
        Action::Abandon { kind, .. } => format!("Abandon({kind:?})"),
        Action::ReleaseFinalizer { .. } => "Release".into(),
        Action::Steady => "Steady".into(),
    }
}

/// A spec change with no savepoint in flight, for every mode and job state.
#[test]
fn spec_change_per_mode_and_job_state() {
    for mode in MODES {
        for job in JobState::ALL {
            for rescale in [false, true] {
                let d = desired(mode, OnFailure::Abort, if rescale { 3 } else { 2 });
                let a = decide(&d, &observed(job, None, Poll::Pending));
                let needs_savepoint = match mode {
                    UpgradeMode::Stateless => false,
                    UpgradeMode::LastState => rescale,
                    UpgradeMode::Savepoint => true,
                };
                let expected = if !needs_savepoint {
                    Action::Deploy {
                        restore: if mode == UpgradeMode::Stateless {
                            Restore::Fresh
                        } else {
                            Restore::LastState
                        },
                        reason: String::new(),
                    }
                } else {
                    match job {
                        JobState::Running => trigger(OperationKind::Upgrade, 1),
                        JobState::Starting | JobState::Unreachable => Action::WaitForWorkers {
                            reason: String::new(),
                        },
                        _ if rescale => Action::Abandon {
                            kind: OperationKind::Upgrade,
                            reason: String::new(),
                        },
                        _ => Action::Deploy {
                            restore: Restore::LastState,
                            reason: String::new(),
                        },
                    }
                };
                assert_eq!(
                    shape(&a),
                    shape(&expected),
                    "mode {mode:?}, job {job:?}, rescale {rescale}: {a:?}"
                );
            }
        }
    }
}

/// What must follow a poll of an upgrade savepoint, per outcome, policy, attempt and job state.
#[test]
fn upgrade_savepoint_outcomes() {
    for mode in MODES {
        for policy in POLICIES {
            for job in JobState::ALL {
                for poll in POLLS {
                    for attempt in [1, MAX] {
                        for rescale in [false, true] {
                            let d = desired(mode, policy, if rescale { 3 } else { 2 });
                            let op = operation(OperationKind::Upgrade, attempt, poll);
                            let a = decide(&d, &observed(job, Some(op), poll));
                            let retry = policy != OnFailure::Abort
                                && attempt < MAX
                                && job == JobState::Running;
                            let expected = match poll {
                                Poll::Pending => "Wait".to_string(),
                                Poll::Completed => {
                                    "Deploy(Savepoint(\"s3://b/job/savepoints/sp\"))".into()
                                }
                                Poll::Failed | Poll::TimedOut if retry => {
                                    format!("Trigger(Upgrade,{},true)", attempt + 1)
                                }
                                Poll::Failed | Poll::TimedOut => {
                                    if policy == OnFailure::FallbackToLastCheckpoint && !rescale {
                                        "Deploy(LastState)".into()
                                    } else {
                                        "Abandon(Upgrade)".into()
                                    }
                                }
                            };
                            assert_eq!(
                                shape(&a),
                                expected,
                                "mode {mode:?} policy {policy:?} job {job:?} poll {poll:?} attempt {attempt} rescale {rescale}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn suspend_and_resume() {
    for policy in POLICIES {
        for job in JobState::ALL {
            for poll in POLLS {
                for attempt in [1, MAX] {
                    let mut d = desired(UpgradeMode::Savepoint, policy, 2);
                    d.state = DesiredState::Suspended;
                    d.hash = "old".into();
                    let op = operation(OperationKind::Suspend, attempt, poll);
                    let a = decide(&d, &observed(job, Some(op), poll));
                    let retry =
                        policy != OnFailure::Abort && attempt < MAX && job == JobState::Running;
                    let expected = match poll {
                        Poll::Pending => "Wait".to_string(),
                        Poll::Completed => "Suspend(Some(\"s3://b/job/savepoints/sp\"))".into(),
                        _ if retry => format!("Trigger(Suspend,{},true)", attempt + 1),
                        _ if policy == OnFailure::FallbackToLastCheckpoint => {
                            "Suspend(None)".into()
                        }
                        _ => "Abandon(Suspend)".into(),
                    };
                    assert_eq!(shape(&a), expected, "{policy:?} {job:?} {poll:?} {attempt}");
                }
            }
        }
        // No savepoint in flight: a running job is savepointed, anything else scaled down.
        for job in JobState::ALL {
            let mut d = desired(UpgradeMode::Savepoint, policy, 2);
            d.state = DesiredState::Suspended;
            let a = decide(&d, &observed(job, None, Poll::Pending));
            let expected = match job {
                JobState::Running => "Trigger(Suspend,1,true)",
                JobState::Starting => "Wait",
                _ => "Suspend(None)",
            };
            assert_eq!(shape(&a), expected, "{job:?}");
        }
    }
    // Resume from the suspend savepoint, or from the checkpoints when there is none.
    let d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    let mut o = observed(JobState::NotDeployed, None, Poll::Pending);
    let mut dep = deployed("new");
    dep.suspended = true;
    dep.resume_from = Some("s3://b/sp1".into());
    o.deployed = Some(dep.clone());
    assert_eq!(shape(&decide(&d, &o)), "Deploy(Savepoint(\"s3://b/sp1\"))");
    dep.resume_from = None;
    o.deployed = Some(dep);
    assert_eq!(shape(&decide(&d, &o)), "Deploy(LastState)");
}

#[test]
fn manual_periodic_and_delete_savepoints() {
    for kind in [OperationKind::Manual, OperationKind::Periodic] {
        for policy in POLICIES {
            for poll in POLLS {
                for job in JobState::ALL {
                    let mut d = desired(UpgradeMode::Savepoint, policy, 2);
                    d.hash = "old".into();
                    let a = decide(&d, &observed(job, Some(operation(kind, 1, poll)), poll));
                    let retry = policy != OnFailure::Abort && job == JobState::Running;
                    let expected = match poll {
                        Poll::Pending => "Wait".to_string(),
                        Poll::Completed => format!("Finish({kind:?},false)"),
                        _ if retry => format!("Trigger({kind:?},2,false)"),
                        _ => format!("Finish({kind:?},true)"),
                    };
                    assert_eq!(shape(&a), expected, "{kind:?} {policy:?} {poll:?} {job:?}");
                }
            }
        }
    }
    // Deletion: savepoint first when asked and possible, never blocked for good.
    for job in JobState::ALL {
        for with_savepoint in [false, true] {
            let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
            d.hash = "old".into();
            d.deleting = true;
            d.delete_with_savepoint = with_savepoint;
            let a = decide(&d, &observed(job, None, Poll::Pending));
            let expected = match job {
                JobState::Running if with_savepoint => "Trigger(Delete,1,true)",
                // Just deleted: the workers get the savepoint timeout to come back.
                JobState::Starting | JobState::Unreachable if with_savepoint => "Wait",
                _ => "Release",
            };
            assert_eq!(shape(&a), expected, "{job:?} {with_savepoint}");
            for poll in POLLS {
                let op = operation(OperationKind::Delete, MAX, poll);
                let a = decide(&d, &observed(job, Some(op), poll));
                let expected = if poll == Poll::Pending {
                    "Wait"
                } else {
                    "Release"
                };
                assert_eq!(shape(&a), expected, "{job:?} {poll:?}");
            }
        }
    }
}

#[test]
fn nonces_periodic_first_deploy_and_abandoned_spec() {
    let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    d.hash = "old".into();
    d.trigger_nonce = Some(7);
    let mut o = observed(JobState::Running, None, Poll::Pending);
    assert_eq!(shape(&decide(&d, &o)), "Trigger(Manual,1,false)");
    o.last_trigger_nonce = Some(7);
    assert_eq!(shape(&decide(&d, &o)), "Steady");
    o.job = JobState::Failed;
    o.last_trigger_nonce = None;
    assert_eq!(
        shape(&decide(&d, &o)),
        "Steady",
        "no savepoint of a failed job"
    );

    let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    d.hash = "old".into();
    d.periodic_interval = Some(Duration::from_secs(3600));
    let mut o = observed(JobState::Running, None, Poll::Pending);
    // deployed at 11:00, now 12:00: due
    assert_eq!(shape(&decide(&d, &o)), "Trigger(Periodic,1,false)");
    o.last_savepoint_time = Some(now() - chrono::Duration::minutes(10));
    assert_eq!(shape(&decide(&d, &o)), "Steady");

    let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    let mut o = observed(JobState::NotDeployed, None, Poll::Pending);
    o.deployed = None;
    assert_eq!(shape(&decide(&d, &o)), "Deploy(Fresh)");
    d.initial_savepoint = Some("s3://b/init".into());
    assert_eq!(shape(&decide(&d, &o)), "Deploy(Savepoint(\"s3://b/init\"))");
    d.state = DesiredState::Suspended;
    assert_eq!(shape(&decide(&d, &o)), "Steady");

    // A given-up upgrade is not retried until the spec changes again.
    let d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    let mut o = observed(JobState::Running, None, Poll::Pending);
    o.abandoned_hash = Some("new".into());
    assert_eq!(shape(&decide(&d, &o)), "Steady");
    o.abandoned_hash = Some("older".into());
    assert_eq!(shape(&decide(&d, &o)), "Trigger(Upgrade,1,true)");
}

/// Invariants over the whole input space.
#[test]
fn invariants_hold_everywhere() {
    let mut cases = 0;
    for mode in MODES {
        for policy in POLICIES {
            for job in JobState::ALL {
                for poll in POLLS {
                    for attempt in 1..=MAX {
                        for kind in KINDS.iter().map(Some).chain([None]) {
                            for deleting in [false, true] {
                                for state in [DesiredState::Running, DesiredState::Suspended] {
                                    cases += 1;
                                    let mut d = desired(mode, policy, 2);
                                    d.deleting = deleting;
                                    d.delete_with_savepoint = true;
                                    d.state = state;
                                    let op = kind.map(|k| operation(*k, attempt, poll));
                                    let o = observed(job, op.clone(), poll);
                                    let a = decide(&d, &o);
                                    let ctx = format!(
                                        "{mode:?} {policy:?} {job:?} {poll:?} {attempt} {kind:?} deleting={deleting} {state:?} -> {a:?}"
                                    );
                                    if let Action::Trigger { attempt: n, .. } = &a {
                                        assert_eq!(job, JobState::Running, "{ctx}");
                                        assert!(*n <= MAX, "{ctx}");
                                        if policy == OnFailure::Abort {
                                            assert_eq!(*n, 1, "{ctx}");
                                        }
                                    }
                                    if deleting {
                                        assert!(!matches!(a, Action::Deploy { .. }), "{ctx}");
                                    }
                                    if op.is_some() && poll == Poll::Pending {
                                        assert_eq!(shape(&a), "Wait", "{ctx}");
                                    }
                                    if let Action::Deploy {
                                        restore: Restore::Savepoint(_),
                                        ..
                                    } = &a
                                    {
                                        assert_eq!(kind, Some(&OperationKind::Upgrade), "{ctx}");
                                        assert_eq!(poll, Poll::Completed, "{ctx}");
                                    }
                                    if matches!(poll, Poll::Failed | Poll::TimedOut)
                                        && kind == Some(&OperationKind::Upgrade)
                                        && !deleting
                                    {
                                        // The old job is never replaced without a savepoint
                                        // unless the policy allows falling back.
                                        if let Action::Deploy { restore, .. } = &a {
                                            assert_eq!(restore, &Restore::LastState, "{ctx}");
                                            assert_eq!(
                                                policy,
                                                OnFailure::FallbackToLastCheckpoint,
                                                "{ctx}"
                                            );
                                        }
                                    }
                                    if mode == UpgradeMode::Stateless && op.is_none() {
                                        assert!(
                                            !matches!(
                                                a,
                                                Action::Trigger {
                                                    kind: OperationKind::Upgrade,
                                                    ..
                                                }
                                            ),
                                            "{ctx}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 3 * 3 * 7 * 4 * 3 * 6 * 2 * 2);
}

fn pending_since(seconds_ago: i64, hash: &str) -> Option<PendingUpgrade> {
    Some(PendingUpgrade {
        target_hash: hash.into(),
        since: (now() - chrono::Duration::seconds(seconds_ago)).to_rfc3339(),
    })
}

/// A savepoint upgrade while workers do not run waits, but only for the savepoint timeout (one
/// per attempt under `Retry`); then `onFailure` decides, so a spec that fixes crash-looping
/// workers can roll out instead of waiting forever.
#[test]
fn waiting_for_workers_before_an_upgrade_savepoint_is_bounded() {
    for policy in POLICIES {
        for job in [JobState::Starting, JobState::Unreachable] {
            for rescale in [false, true] {
                let d = desired(UpgradeMode::Savepoint, policy, if rescale { 3 } else { 2 });
                let mut o = observed(job, None, Poll::Pending);
                assert_eq!(shape(&decide(&d, &o)), "WaitForWorkers", "first wait");
                o.pending_upgrade = pending_since(59, "new");
                assert_eq!(
                    shape(&decide(&d, &o)),
                    "WaitForWorkers",
                    "within the timeout"
                );
                // A wait that began for another spec does not count for this one.
                o.pending_upgrade = pending_since(3600, "older");
                assert_eq!(
                    shape(&decide(&d, &o)),
                    "WaitForWorkers",
                    "new spec, new wait"
                );
                o.pending_upgrade = pending_since(61, "new");
                let expected = match policy {
                    OnFailure::Retry => "WaitForWorkers",
                    OnFailure::FallbackToLastCheckpoint if !rescale => "Deploy(LastState)",
                    _ => "Abandon(Upgrade)",
                };
                assert_eq!(
                    shape(&decide(&d, &o)),
                    expected,
                    "{policy:?} {job:?} {rescale}"
                );
                // Retry: one timeout per attempt.
                o.pending_upgrade = pending_since(60 * i64::from(MAX) + 1, "new");
                if policy == OnFailure::Retry {
                    let a = decide(&d, &o);
                    assert_eq!(shape(&a), "Abandon(Upgrade)");
                    let Action::Abandon { reason, .. } = a else {
                        unreachable!()
                    };
                    assert!(reason.contains("FallbackToLastCheckpoint"), "{reason}");
                }
            }
        }
    }
}

/// `deleteWithSavepoint` with workers that do not run: wait within the savepoint timeout, then
/// let go with a warning that says no savepoint was taken and names the newest checkpoint.
#[test]
fn a_promised_delete_savepoint_is_never_skipped_silently() {
    let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
    d.hash = "old".into();
    d.deleting = true;
    d.delete_with_savepoint = true;
    let mut o = observed(JobState::Unreachable, None, Poll::Pending);
    o.deletion_started = Some(now() - chrono::Duration::seconds(30));
    assert_eq!(shape(&decide(&d, &o)), "Wait");
    o.deletion_started = Some(now() - chrono::Duration::seconds(61));
    o.last_checkpoint = Some(CheckpointRef {
        id: 42,
        time: "2026-01-01T11:59:00Z".into(),
    });
    let Action::ReleaseFinalizer { reason, warning } = decide(&d, &o) else {
        panic!("must release")
    };
    assert!(warning);
    assert!(reason.contains("no delete savepoint was taken"), "{reason}");
    assert!(reason.contains("checkpoint is 42"), "{reason}");
    // A failed job: no wait, the same warning.
    o.job = JobState::Failed;
    o.deletion_started = Some(now());
    let Action::ReleaseFinalizer { warning, .. } = decide(&d, &o) else {
        panic!("must release")
    };
    assert!(warning);
    // A finished job has nothing to save.
    o.job = JobState::Finished;
    let Action::ReleaseFinalizer { warning, .. } = decide(&d, &o) else {
        panic!("must release")
    };
    assert!(!warning);
    // Without deleteWithSavepoint nothing is promised.
    d.delete_with_savepoint = false;
    o.job = JobState::Unreachable;
    let Action::ReleaseFinalizer { warning, .. } = decide(&d, &o) else {
        panic!("must release")
    };
    assert!(!warning);
}

/// A StatefulSet deleted from under a running job is recreated from the workers' checkpoints
/// (whatever the job state the silent workers give); under a suspended job nothing is started.
#[test]
fn a_deleted_statefulset_is_put_back() {
    for job in JobState::ALL {
        let mut d = desired(UpgradeMode::Savepoint, OnFailure::Abort, 2);
        d.hash = "old".into();
        let mut o = observed(job, None, Poll::Pending);
        o.deletion_started = None;
        o.workload_missing = true;
        match decide(&d, &o) {
            Action::Deploy {
                restore: Restore::LastState,
                ..
            } => {}
            a => panic!("job {job:?}: {a:?}"),
        }
        d.state = DesiredState::Suspended;
        assert_eq!(
            decide(&d, &o),
            Action::Suspend { resume_from: None },
            "job {job:?}"
        );
        // Present: nothing to do for an unchanged running spec.
        d.state = DesiredState::Running;
        o.workload_missing = false;
        assert!(
            !matches!(decide(&d, &o), Action::Deploy { .. }),
            "job {job:?}"
        );
    }
}
