//! The savepoint flow of a job with one worker per pod: trigger the same id on every worker,
//! poll them (one round per reconcile, never waiting), and once every part is written, write
//! the job-level `_SAVEPOINT.json` that `weir run --from-savepoint` reads (with one worker per
//! process no worker writes it). Plus retention: which savepoints to delete, and deleting them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_crds::contract::{SavepointManifest, SavepointPhase};
use weir_crds::status::SavepointRecord;
use weir_crds::stream_job::{OperationKind, SavepointRetention};

use crate::admin::{AdminClient, SavepointAnswer};
use crate::admin_secret::AdminTokens;
use crate::error::{Error, Result};
use crate::lifecycle::SavepointOutcome;

pub use weir_crds::contract::SAVEPOINT_MANIFEST;

/// A savepoint id the admin API accepts (letters, digits, `-`, `_`, `.`), unique per attempt.
pub fn savepoint_id(kind: OperationKind, attempt: u32, now: DateTime<Utc>) -> String {
    let kind = format!("{kind:?}").to_lowercase();
    format!("{kind}-{}-a{attempt}", now.format("%Y%m%dt%H%M%S%3f"))
}

/// Triggers savepoint `id` on every worker (`urls[i]` is worker `i`'s admin API, `None` while its
/// pod has no IP), authenticated with the job's admin `tokens`. The first error is returned after
/// every worker was asked, so one slow pod does not hide the others.
pub async fn trigger_all(
    client: &AdminClient,
    urls: &[Option<String>],
    id: &str,
    stop: bool,
    tokens: &AdminTokens,
) -> Result<()> {
    let answers = futures::future::join_all(urls.iter().enumerate().map(|(w, u)| async move {
        match u {
            Some(u) => client.trigger(u, id, stop, tokens).await,
            None => Err(Error::Other(format!(
                "worker {w} has no pod IP; savepoint {id} cannot be triggered"
            ))),
        }
    }))
    .await;
    for answer in answers {
        let accepted = answer?;
        if accepted != id {
            return Err(Error::Other(format!(
                "a worker accepted savepoint {accepted} instead of {id}"
            )));
        }
    }
    Ok(())
}

/// Asks every worker not yet known to be complete about savepoint `id`.
pub async fn poll_all(
    client: &AdminClient,
    urls: &[Option<String>],
    id: &str,
    completed: &BTreeMap<String, String>,
) -> BTreeMap<u32, SavepointAnswer> {
    let pending: Vec<(u32, &Option<String>)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (i as u32, u))
        .filter(|(i, _)| !completed.contains_key(&i.to_string()))
        .collect();
    let answers = futures::future::join_all(pending.iter().map(|(_, u)| async move {
        match u {
            Some(u) => client.savepoint(u, id).await,
            None => SavepointAnswer::Unreachable("the pod has no IP".into()),
        }
    }))
    .await;
    pending.into_iter().map(|(i, _)| i).zip(answers).collect()
}

/// The state of a savepoint over all workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Every worker's complete part, by worker index (as a string, for the status map).
    pub completed: BTreeMap<String, String>,
    /// `Completed` here means every part is written; the job manifest is still to write.
    pub outcome: SavepointOutcome,
}

/// Folds one poll round into what was known. Pure.
pub fn aggregate(
    parallelism: u32,
    mut completed: BTreeMap<String, String>,
    answers: &BTreeMap<u32, SavepointAnswer>,
) -> Progress {
    let mut failure = None;
    for (worker, answer) in answers {
        match answer {
            SavepointAnswer::State(s) if s.state == SavepointPhase::Completed => match &s.path {
                Some(p) => {
                    completed.insert(worker.to_string(), p.clone());
                }
                None => {
                    failure.get_or_insert(format!(
                        "worker {worker} completed savepoint {} without a path",
                        s.id
                    ));
                }
            },
            SavepointAnswer::State(s) if s.state == SavepointPhase::Failed => {
                failure.get_or_insert(format!(
                    "worker {worker}: {}",
                    s.error.clone().unwrap_or_else(|| "failed".into())
                ));
            }
            SavepointAnswer::State(_) => {}
            SavepointAnswer::Unknown => {
                failure.get_or_insert(format!(
                    "worker {worker} does not know the savepoint (restarted since the trigger)"
                ));
            }
            // Maybe restarting: the timeout bounds how long this counts as pending.
            SavepointAnswer::Unreachable(_) => {}
        }
    }
    let outcome = if let Some(error) = failure {
        SavepointOutcome::Failed { error }
    } else if (0..parallelism).all(|w| completed.contains_key(&w.to_string())) {
        let mut paths: Vec<&String> = completed.values().collect();
        paths.sort();
        paths.dedup();
        match paths.as_slice() {
            [one] => SavepointOutcome::Completed {
                path: (*one).clone(),
            },
            _ => SavepointOutcome::Failed {
                error: format!("workers wrote their parts to different places: {paths:?}"),
            },
        }
    } else {
        SavepointOutcome::Pending
    };
    Progress { completed, outcome }
}

/// Opens the object store holding `location` (a local directory, `file://…`, or a URL such as
/// `s3://bucket/prefix`), the way the runtime does; returns the store and the prefix.
pub fn open_location(
    location: &str,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let err = |m: String| Error::Storage {
        location: location.to_string(),
        message: m,
    };
    let text = location.trim();
    let local = text
        .strip_prefix("file://")
        .or((!text.contains("://")).then_some(text));
    if let Some(dir) = local {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| err(e.to_string()))?;
        return Ok((Arc::new(fs), Path::default()));
    }
    let url = url::Url::parse(text).map_err(|e| err(e.to_string()))?;
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
        for (k, v) in options {
            let key = k
                .parse()
                .map_err(|e| err(format!("unknown S3 option {k:?}: {e}")))?;
            b = b.with_config(key, v);
        }
        if options
            .get("aws_endpoint")
            .is_some_and(|e| e.starts_with("http://"))
        {
            b = b.with_allow_http(true);
        }
        let s3 = b.build().map_err(|e| err(e.to_string()))?;
        let prefix = Path::from(url.path().trim_start_matches('/'));
        return Ok((Arc::new(s3), prefix));
    }
    let (store, prefix) =
        object_store::parse_url_opts(&url, options.iter()).map_err(|e| err(e.to_string()))?;
    Ok((Arc::from(store), prefix))
}

/// Writes `<path>/_SAVEPOINT.json` listing `worker-0 … worker-(parallelism-1)`, in the format the
/// runtime's `load_savepoint` reads. `path` is what the workers reported
/// (`<storage>/<job>/savepoints/<id>`).
pub async fn complete_job_savepoint(
    path: &str,
    job: &str,
    id: &str,
    parallelism: u32,
    options: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<()> {
    let (store, prefix) = open_location(path, options)?;
    let manifest = SavepointManifest::new(job, id, parallelism, now.timestamp_millis());
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Serialize {
        what: "the savepoint manifest".into(),
        message: e.to_string(),
    })?;
    store
        .put(
            &prefix.clone().join(SAVEPOINT_MANIFEST),
            PutPayload::from(body),
        )
        .await
        .map_err(|e| Error::Storage {
            location: format!("{path}/{SAVEPOINT_MANIFEST}"),
            message: e.to_string(),
        })?;
    Ok(())
}

/// Deletes everything under a savepoint's directory.
pub async fn delete_savepoint(path: &str, options: &BTreeMap<String, String>) -> Result<()> {
    let (store, prefix) = open_location(path, options)?;
    let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
    let results: Vec<_> = store.delete_stream(locations).collect().await;
    for r in results {
        match r {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::Storage {
                    location: path.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    if !path.contains("://") || path.starts_with("file://") {
        // The local store deletes files, not directories.
        let dir = path.trim_start_matches("file://");
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// Savepoints to delete under `retention`, oldest first. Never the newest one (a resume or
/// rollback may need it) and never `keep` (the one the job runs from or resumes from). Pure.
pub fn expired<'a>(
    history: &'a [SavepointRecord],
    retention: &SavepointRetention,
    keep: &[&str],
    now: DateTime<Utc>,
) -> Vec<&'a SavepointRecord> {
    let n = history.len();
    let mut out = Vec::new();
    for (i, sp) in history.iter().enumerate() {
        if i + 1 == n || keep.contains(&sp.path.as_str()) {
            continue;
        }
        let too_many = retention
            .max_count
            .is_some_and(|max| (n - i) as u64 > u64::from(max.max(1)));
        let too_old = retention.max_age.is_some_and(|age| {
            DateTime::parse_from_rfc3339(&sp.time)
                .map(|t| (now - t.with_timezone(&Utc)).to_std().unwrap_or_default() > age.as_std())
                .unwrap_or(false)
        });
        if too_many || too_old {
            out.push(sp);
        }
    }
    out
}
