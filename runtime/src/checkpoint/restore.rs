//! Where a worker starts, decided from what storage holds: a pure planner, so every case (a
//! first start, a resume, a savepoint, a stateless upgrade, an in-process restart) is tested
//! without I/O. The engine reads the storage, asks [`plan`], and carries the answer out; an
//! in-process restart asks the same question again.

use super::model::{assign, Restore, SinkCheckpoint, WorkerCheckpoint, FORMAT_VERSION};

/// What the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub job: &'a str,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// The worker's newest complete checkpoint.
    pub latest: Option<&'a WorkerCheckpoint>,
    /// The highest checkpoint id in the worker's directory, complete or not: new ids go above
    /// it, so an attempt that died half-written is never taken for a newer one.
    pub newest_id: u64,
    /// `--from-savepoint`: its path and every part.
    pub savepoint: Option<(&'a str, &'a [WorkerCheckpoint])>,
    /// `--start-fresh TOKEN`.
    pub fresh: Option<&'a str>,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Resume from the newest checkpoint (`restore.checkpoint_id`); `origin` carries on.
    Resume {
        restore: Restore,
        origin: Option<String>,
    },
    /// Start from `root`, written first as the worker's newest checkpoint, so that a crash
    /// before the next checkpoint starts from the same point again rather than from an older
    /// run.
    Root {
        restore: Restore,
        root: Box<WorkerCheckpoint>,
    },
    /// Nothing to restore; the first checkpoint is `restore.checkpoint_id + 1`.
    Empty {
        restore: Restore,
        origin: Option<String>,
    },
}

impl Plan {
    /// What the worker starts from, and the origin its checkpoints carry.
    pub fn into_start(self) -> (Restore, Option<String>) {
        match self {
            Plan::Resume { restore, origin } | Plan::Empty { restore, origin } => (restore, origin),
            Plan::Root { restore, root } => (restore, root.origin),
        }
    }
}

/// Decides where worker `i.worker` starts. Errors are for the user (a rescale without a
/// savepoint).
pub fn plan(i: &Inputs<'_>) -> Result<Plan, String> {
    if let Some(l) = i.latest {
        if l.parallelism != i.parallelism && i.savepoint.is_none() && i.fresh.is_none() {
            return Err(format!(
                "the latest checkpoint of worker {} (id {}) was taken at parallelism {}, but the spec asks for {}: \
                 rescale through a savepoint (`weir savepoint --stop`, then `weir run --from-savepoint PATH`)",
                i.worker, l.id, l.parallelism, i.parallelism
            ));
        }
    }
    let own = |l: &WorkerCheckpoint| {
        assign(
            std::slice::from_ref(l),
            i.worker,
            i.parallelism,
            i.max_parallelism,
        )
    };
    if let Some((path, parts)) = i.savepoint {
        // The run started from this savepoint already wrote checkpoints: resume from them.
        if let Some(l) = i.latest.filter(|l| l.origin.as_deref() == Some(path)) {
            return Ok(Plan::Resume {
                restore: own(l),
                origin: l.origin.clone(),
            });
        }
        let restore = assign(parts, i.worker, i.parallelism, i.max_parallelism);
        return Ok(root(i, restore, path));
    }
    match i.latest {
        // A stateless start: source and operator state are dropped, but the sinks still get the
        // newest checkpoint's committables and states, so durable data is committed and leftover
        // transactions are aborted rather than lost or left hanging.
        Some(l) if i.fresh.is_some_and(|t| l.origin.as_deref() != Some(t)) => {
            let mut restore = own(l);
            restore.sources.clear();
            restore.operators.clear();
            Ok(root(i, restore, i.fresh.unwrap_or_default()))
        }
        Some(l) => Ok(Plan::Resume {
            restore: own(l),
            origin: l.origin.clone(),
        }),
        None => Ok(Plan::Empty {
            restore: Restore {
                checkpoint_id: i.newest_id,
                ..Restore::default()
            },
            origin: i.fresh.map(str::to_string),
        }),
    }
}

/// `restore` as a new checkpoint of this worker, above every id in storage, marked `origin`.
fn root(i: &Inputs<'_>, mut restore: Restore, origin: &str) -> Plan {
    restore.checkpoint_id = restore.checkpoint_id.max(i.newest_id) + 1;
    let root = WorkerCheckpoint {
        version: FORMAT_VERSION,
        job: i.job.to_string(),
        id: restore.checkpoint_id,
        worker: i.worker,
        parallelism: i.parallelism,
        max_parallelism: i.max_parallelism,
        savepoint: false,
        timestamp_ms: 0,
        origin: Some(origin.to_string()),
        sources: restore.sources.clone(),
        operators: restore.operators.clone(),
        sinks: restore
            .sinks
            .iter()
            .map(|(k, (states, committables))| {
                (
                    k.clone(),
                    SinkCheckpoint {
                        states: states.clone(),
                        committables: committables.clone(),
                    },
                )
            })
            .collect(),
    };
    Plan::Root {
        restore,
        root: Box::new(root),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn checkpoint(id: u64, parallelism: u32, origin: Option<&str>) -> WorkerCheckpoint {
        WorkerCheckpoint {
            version: FORMAT_VERSION,
            job: "j".into(),
            id,
            worker: 0,
            parallelism,
            max_parallelism: 128,
            origin: origin.map(str::to_string),
            sources: BTreeMap::from([("src".into(), BTreeMap::from([("p0".into(), json!(id))]))]),
            operators: BTreeMap::from([("agg".into(), BTreeMap::from([(3, json!("s"))]))]),
            sinks: BTreeMap::from([(
                "out".into(),
                SinkCheckpoint {
                    states: vec![json!("st")],
                    committables: vec![json!(format!("c{id}"))],
                },
            )]),
            ..WorkerCheckpoint::default()
        }
    }

    fn inputs<'a>(latest: Option<&'a WorkerCheckpoint>, newest_id: u64) -> Inputs<'a> {
        Inputs {
            job: "j",
            worker: 0,
            parallelism: 1,
            max_parallelism: 128,
            latest,
            newest_id,
            savepoint: None,
            fresh: None,
        }
    }

    #[test]
    fn a_first_start_is_empty_with_ids_above_abandoned_attempts() {
        let p = plan(&inputs(None, 0)).unwrap();
        assert_eq!(
            p,
            Plan::Empty {
                restore: Restore::default(),
                origin: None
            }
        );
        // chk-4 was half written (no manifest) before a crash: the first checkpoint is 5.
        let (r, _) = plan(&inputs(None, 4)).unwrap().into_start();
        assert_eq!(r.checkpoint_id, 4);
    }

    #[test]
    fn a_restart_resumes_from_the_newest_complete_checkpoint_with_its_committables() {
        // The same answer whether the process was killed or the worker restarted in place.
        let l = checkpoint(7, 1, None);
        let (r, origin) = plan(&inputs(Some(&l), 9)).unwrap().into_start();
        assert_eq!(r.checkpoint_id, 7);
        assert_eq!(r.sources["src"]["p0"], json!(7));
        assert_eq!(r.sinks["out"], (vec![json!("st")], vec![json!("c7")]));
        assert_eq!(origin, None);
    }

    #[test]
    fn another_parallelism_needs_a_savepoint() {
        let l = checkpoint(7, 2, None);
        let e = plan(&inputs(Some(&l), 7)).unwrap_err();
        assert!(
            e.contains("parallelism 2") && e.contains("savepoint"),
            "{e}"
        );
    }

    #[test]
    fn a_savepoint_is_written_as_the_first_checkpoint_then_resumed_from() {
        let parts = [checkpoint(3, 2, None)];
        let mut i = inputs(None, 0);
        i.savepoint = Some(("s3://b/sp-1", &parts));
        let Plan::Root { restore, root } = plan(&i).unwrap() else {
            panic!("expected a root checkpoint")
        };
        assert_eq!(root.id, 4, "above the savepoint's id");
        assert_eq!(root.origin.as_deref(), Some("s3://b/sp-1"));
        assert_eq!(root.sinks["out"].committables, vec![json!("c3")]);
        assert_eq!(restore.sources["src"]["p0"], json!(3));
        // Later (a restart of the same run): its own newest checkpoint, not the savepoint.
        let own = checkpoint(9, 1, Some("s3://b/sp-1"));
        i.latest = Some(&own);
        i.newest_id = 9;
        let (r, origin) = plan(&i).unwrap().into_start();
        assert_eq!(r.checkpoint_id, 9);
        assert_eq!(origin.as_deref(), Some("s3://b/sp-1"));
        // A checkpoint of an older run does not count: the savepoint is the start.
        let older = checkpoint(12, 1, None);
        i.latest = Some(&older);
        i.newest_id = 12;
        let Plan::Root { root, .. } = plan(&i).unwrap() else {
            panic!("expected a root checkpoint")
        };
        assert_eq!(root.id, 13);
    }

    #[test]
    fn a_fresh_start_keeps_only_the_sinks_and_its_token_resumes() {
        let l = checkpoint(5, 3, None);
        let mut i = inputs(Some(&l), 6);
        i.fresh = Some("deploy-2");
        let Plan::Root { restore, root } = plan(&i).unwrap() else {
            panic!("expected a root checkpoint")
        };
        assert!(restore.sources.is_empty() && restore.operators.is_empty());
        assert_eq!(restore.sinks["out"].1, vec![json!("c5")]);
        assert_eq!((root.id, root.origin.as_deref()), (7, Some("deploy-2")));
        let mine = checkpoint(8, 1, Some("deploy-2"));
        i.latest = Some(&mine);
        assert!(matches!(plan(&i).unwrap(), Plan::Resume { .. }));
        i.latest = None;
        i.newest_id = 0;
        assert_eq!(
            plan(&i).unwrap().into_start().1.as_deref(),
            Some("deploy-2")
        );
    }
}
