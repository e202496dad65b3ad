//! Layout, under `<storage>/<job>/`:
//! - `worker-<i>/chk-<id>/state.json` then `worker-<i>/chk-<id>/_MANIFEST.json` (last, atomic)
//! - `savepoints/<sp>/worker-<i>/…` (same two files) and `savepoints/<sp>/_SAVEPOINT.json`
//!
//! A checkpoint without a manifest never happened (the worker died while writing it) and is
//! skipped; a manifest that does not parse or does not match its state is an error, because
//! falling back to an older checkpoint could publish data twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::model::{Manifest, SavepointManifest, WorkerCheckpoint, FORMAT_VERSION};
use crate::error::{Context, Error, Result};
use crate::storage::{self, Location};
use weir_crds::contract::SAVEPOINT_MANIFEST;

const MANIFEST: &str = "_MANIFEST.json";
const STATE: &str = "state.json";

#[derive(Clone, Debug)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<job>`
    root: Path,
    /// How users see `root` (a directory or URL), for messages and savepoint paths.
    display: String,
    /// HDFS has real directories, which its object store leaves behind when their last file is
    /// deleted: a deleted checkpoint's directory is removed too, or one would stay per checkpoint.
    remove_empty_dirs: bool,
}

/// Where a savepoint was written, as the user passes it back to `--from-savepoint`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavepointRef {
    pub id: String,
    pub path: String,
}

fn chk_name(id: u64) -> String {
    format!("chk-{id:020}")
}

fn parse_chk(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

impl CheckpointStore {
    pub fn open(storage: &str, options: &BTreeMap<String, String>, job: &str) -> Result<Self> {
        let location = Location::parse(storage)?;
        let (store, prefix) = storage::open(&location, options).map_err(|e| match e {
            Error::Io { context, source } => {
                Error::Checkpoint(format!("checkpoint.storage: {context}: {source}"))
            }
            other => other,
        })?;
        let display = format!("{}/{job}", storage.trim_end_matches('/'));
        Ok(CheckpointStore {
            store,
            root: prefix.clone().join(job),
            display,
            remove_empty_dirs: matches!(&location, Location::Url(url) if storage::is_hdfs(url)),
        })
    }

    fn worker_dir(&self, worker: u32) -> Path {
        self.root.clone().join(format!("worker-{worker}"))
    }

    fn savepoint_dir(&self, id: &str) -> Path {
        self.root.clone().join("savepoints").clone().join(id)
    }

    pub fn savepoint_path(&self, id: &str) -> String {
        format!("{}/savepoints/{id}", self.display)
    }

    /// Checks the storage is reachable and writable before the job starts.
    pub async fn probe(&self) -> Result<()> {
        let p = self.root.clone().join(".probe");
        self.store
            .put(&p, PutPayload::from_static(b"ok"))
            .await
            .map_err(|e| {
                Error::Checkpoint(format!(
                    "checkpoint.storage {} is not writable: {e}",
                    self.display
                ))
            })?;
        let _ = self.store.delete(&p).await;
        Ok(())
    }

    /// Writes a worker's checkpoint (or savepoint part); returns the bytes written.
    pub async fn write(&self, data: &WorkerCheckpoint, savepoint_id: Option<&str>) -> Result<u64> {
        let dir = match savepoint_id {
            Some(sp) => self
                .savepoint_dir(sp)
                .clone()
                .join(format!("worker-{}", data.worker)),
            None => self.worker_dir(data.worker).clone().join(chk_name(data.id)),
        };
        write_part(self.store.as_ref(), &dir, data).await
    }

    /// The newest complete checkpoint of `worker`, if any.
    pub async fn latest(&self, worker: u32) -> Result<Option<WorkerCheckpoint>> {
        for id in self.checkpoint_ids(worker).await?.into_iter().rev() {
            let dir = self.worker_dir(worker).clone().join(chk_name(id));
            match read_part(self.store.as_ref(), &dir, &self.describe(&dir)).await? {
                Some(c) => return Ok(Some(c)),
                None => tracing::warn!(
                    checkpoint = id,
                    worker,
                    "skipping incomplete checkpoint (no manifest)"
                ),
            }
        }
        Ok(None)
    }

    fn describe(&self, p: &Path) -> String {
        let rel = p
            .as_ref()
            .strip_prefix(self.root.as_ref())
            .unwrap_or(p.as_ref());
        format!("{}/{}", self.display, rel.trim_start_matches('/'))
    }

    pub async fn checkpoint_ids(&self, worker: u32) -> Result<Vec<u64>> {
        let dir = self.worker_dir(worker);
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .ctx(|| format!("listing checkpoints in {}", self.describe(&dir)))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(parse_chk))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Keeps the newest `keep` complete checkpoints of `worker` and deletes everything older
    /// (including incomplete attempts older than the newest complete one).
    pub async fn retain(&self, worker: u32, newest_complete: u64, keep: usize) -> Result<()> {
        let ids = self.checkpoint_ids(worker).await?;
        let complete_kept: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|i| *i <= newest_complete)
            .rev()
            .take(keep)
            .collect();
        let oldest_kept = complete_kept.last().copied().unwrap_or(newest_complete);
        for id in ids.into_iter().filter(|i| *i < oldest_kept) {
            self.delete_dir(&self.worker_dir(worker).clone().join(chk_name(id)))
                .await?;
        }
        Ok(())
    }

    async fn delete_dir(&self, dir: &Path) -> Result<()> {
        let locations = self.store.list(Some(dir)).map_ok(|m| m.location).boxed();
        let deleted: Vec<_> = self.store.delete_stream(locations).collect().await;
        let emptied = match self.remove_empty_dirs {
            // hdfs-native-object-store deletes a path non-recursively: an empty directory goes.
            true => vec![self.store.delete(dir).await],
            false => Vec::new(),
        };
        for d in deleted.into_iter().map(|d| d.map(|_| ())).chain(emptied) {
            if let Err(e) = d {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    return Err(Error::store(format!("deleting {}", self.describe(dir)), e));
                }
            }
        }
        Ok(())
    }

    /// Writes the job-level manifest of a savepoint whose parts are all written.
    pub async fn complete_savepoint(
        &self,
        id: &str,
        parallelism: u32,
        timestamp_ms: i64,
    ) -> Result<SavepointRef> {
        let job = self.root.filename().unwrap_or_default();
        let manifest = SavepointManifest::new(job, id, parallelism, timestamp_ms);
        let body =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let p = self.savepoint_dir(id).clone().join(SAVEPOINT_MANIFEST);
        self.store
            .put(&p, PutPayload::from(body))
            .await
            .ctx(|| format!("writing {}", self.describe(&p)))?;
        Ok(SavepointRef {
            id: id.to_string(),
            path: self.savepoint_path(id),
        })
    }
}

async fn write_part(store: &dyn ObjectStore, dir: &Path, data: &WorkerCheckpoint) -> Result<u64> {
    let body = serde_json::to_vec(data)
        .map_err(|e| Error::Checkpoint(format!("cannot serialize state: {e}")))?;
    let manifest = Manifest {
        version: FORMAT_VERSION,
        job: data.job.clone(),
        id: data.id,
        worker: data.worker,
        parallelism: data.parallelism,
        savepoint: data.savepoint,
        timestamp_ms: data.timestamp_ms,
        state_file: STATE.into(),
        state_bytes: body.len() as u64,
        state_crc32: crc32fast::hash(&body),
    };
    let len = body.len() as u64;
    let state_path = dir.clone().join(STATE);
    store
        .put(&state_path, PutPayload::from(body))
        .await
        .ctx(|| format!("writing {state_path}"))?;
    let m = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Checkpoint(e.to_string()))?;
    let manifest_path = dir.clone().join(MANIFEST);
    crate::fault::point("before_manifest");
    store
        .put(&manifest_path, PutPayload::from(m))
        .await
        .ctx(|| format!("writing {manifest_path}"))?;
    Ok(len)
}

async fn get_opt(store: &dyn ObjectStore, p: &Path, shown: &str) -> Result<Option<Bytes>> {
    match store.get(p).await {
        Ok(r) => Ok(Some(r.bytes().await.ctx(|| format!("reading {shown}"))?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store(format!("reading {shown}"), e)),
    }
}

/// Reads one part: `None` when it has no manifest (never completed).
async fn read_part(
    store: &dyn ObjectStore,
    dir: &Path,
    shown: &str,
) -> Result<Option<WorkerCheckpoint>> {
    let Some(raw) = get_opt(
        store,
        &dir.clone().join(MANIFEST),
        &format!("{shown}/{MANIFEST}"),
    )
    .await?
    else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| Error::Checkpoint(format!("corrupt manifest {shown}/{MANIFEST}: {e}")))?;
    if manifest.version != FORMAT_VERSION {
        return Err(Error::Checkpoint(format!(
            "{shown}/{MANIFEST} has format version {}, this weir reads {FORMAT_VERSION}",
            manifest.version
        )));
    }
    let state_shown = format!("{shown}/{}", manifest.state_file);
    let body = get_opt(
        store,
        &dir.clone().join(manifest.state_file.as_str()),
        &state_shown,
    )
    .await?
    .ok_or_else(|| {
        Error::Checkpoint(format!(
            "{state_shown} is missing although its manifest exists"
        ))
    })?;
    if body.len() as u64 != manifest.state_bytes || crc32fast::hash(&body) != manifest.state_crc32 {
        return Err(Error::Checkpoint(format!(
            "{state_shown} does not match its manifest (size {} vs {}, or checksum): the checkpoint is corrupt",
            body.len(),
            manifest.state_bytes
        )));
    }
    let data: WorkerCheckpoint = serde_json::from_slice(&body)
        .map_err(|e| Error::Checkpoint(format!("corrupt state {state_shown}: {e}")))?;
    Ok(Some(data))
}

/// Loads every part of a savepoint given by its directory or URL.
pub async fn load_savepoint(
    path: &str,
    options: &BTreeMap<String, String>,
) -> Result<Vec<WorkerCheckpoint>> {
    let location = Location::parse(path)?;
    if let Location::Local(dir) = &location {
        if !dir.is_dir() {
            return Err(Error::Checkpoint(format!(
                "savepoint {path} does not exist"
            )));
        }
    }
    let (store, prefix) = storage::open(&location, options)?;
    let shown = path.trim_end_matches('/');
    let raw = get_opt(store.as_ref(), &prefix.clone().join(SAVEPOINT_MANIFEST), shown).await?.ok_or_else(|| {
        Error::Checkpoint(format!(
            "{shown} has no {SAVEPOINT_MANIFEST}: not a savepoint directory, or the savepoint never completed"
        ))
    })?;
    let manifest: SavepointManifest = serde_json::from_slice(&raw).map_err(|e| {
        Error::Checkpoint(format!(
            "corrupt savepoint manifest {shown}/{SAVEPOINT_MANIFEST}: {e}"
        ))
    })?;
    let mut parts = Vec::new();
    for part in &manifest.parts {
        let dir = storage::join(&prefix, part);
        let part_shown = format!("{shown}/{part}");
        let data = read_part(store.as_ref(), &dir, &part_shown)
            .await?
            .ok_or_else(|| {
                Error::Checkpoint(format!("savepoint part {part_shown} has no manifest"))
            })?;
        parts.push(data);
    }
    if parts.len() != manifest.parallelism as usize {
        return Err(Error::Checkpoint(format!(
            "savepoint {shown} lists {} parts for parallelism {}",
            parts.len(),
            manifest.parallelism
        )));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> WorkerCheckpoint {
        WorkerCheckpoint {
            version: FORMAT_VERSION,
            job: "j".into(),
            id,
            parallelism: 1,
            max_parallelism: 1,
            ..Default::default()
        }
    }

    /// Old checkpoints go with their directories: a long-running job at a 1 s interval would
    /// otherwise leave 86,400 empty directories a day, all listed at every restart.
    #[tokio::test]
    async fn retain_keeps_the_newest_and_removes_the_rest_with_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            CheckpointStore::open(dir.path().to_str().unwrap(), &BTreeMap::new(), "j").unwrap();
        for id in 1..=5 {
            store.write(&checkpoint(id), None).await.unwrap();
        }
        store.retain(0, 5, 2).await.unwrap();
        assert_eq!(store.checkpoint_ids(0).await.unwrap(), vec![4, 5]);
        let left: Vec<String> = std::fs::read_dir(dir.path().join("j/worker-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "directories left: {left:?}");
        assert_eq!(store.latest(0).await.unwrap().map(|c| c.id), Some(5));
    }

    /// A savepoint whose job manifest a format-1 writer wrote (the operator's or `weir run`'s,
    /// byte for byte as `weir_crds::contract`'s test pins it) restores: the format a user's
    /// oldest savepoint has is the one an upgrade or a rollback needs.
    #[tokio::test]
    async fn a_format_1_savepoint_manifest_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            CheckpointStore::open(dir.path().to_str().unwrap(), &BTreeMap::new(), "j").unwrap();
        for worker in 0..2 {
            let part = WorkerCheckpoint {
                worker,
                parallelism: 2,
                savepoint: true,
                ..checkpoint(3)
            };
            store.write(&part, Some("sp-1")).await.unwrap();
        }
        let sp = dir.path().join("j/savepoints/sp-1");
        std::fs::write(
            sp.join(SAVEPOINT_MANIFEST),
            r#"{
  "version": 1,
  "job": "j",
  "id": "sp-1",
  "parallelism": 2,
  "timestamp_ms": 1796518923004,
  "parts": [
    "worker-0",
    "worker-1"
  ]
}"#,
        )
        .unwrap();
        let parts = load_savepoint(sp.to_str().unwrap(), &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(parts.iter().map(|p| p.worker).collect::<Vec<_>>(), [0, 1]);
        assert!(parts.iter().all(|p| p.id == 3 && p.savepoint));
    }
}
