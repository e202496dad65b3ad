//! Parts on S3: each part is a multipart upload straight to its final key. S3 shows nothing
//! until the upload is completed, so "pending" is an uploaded-but-not-completed upload, and
//! committing is `CompleteMultipartUpload`.
//!
//! Uploads started by an attempt that crashed before its checkpoint stay invisible and cost
//! storage until aborted; object_store cannot list multipart uploads, so give the bucket a
//! lifecycle rule (`AbortIncompleteMultipartUpload` after, say, 7 days, longer than any
//! checkpoint could wait for its commit).

use std::collections::VecDeque;
use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Context, Error, Result};

/// Bytes buffered per part before one is uploaded (S3 wants at least 5 MiB but the last).
pub const UPLOAD_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPart {
    pub idx: usize,
    pub etag: String,
}

/// An upload whose parts are all uploaded: what a checkpoint keeps to complete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpload {
    pub path: String,
    pub upload_id: String,
    pub parts: Vec<UploadedPart>,
}

/// An open multipart upload.
pub struct Upload {
    store: Arc<AmazonS3>,
    key: Path,
    id: MultipartId,
    next_idx: usize,
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    done: Vec<PartId>,
}

impl Upload {
    pub async fn start(store: Arc<AmazonS3>, key: Path) -> Result<Self> {
        let id = store
            .create_multipart(&key)
            .await
            .ctx(|| format!("starting an upload to {key}"))?;
        Ok(Upload {
            store,
            key,
            id,
            next_idx: 0,
            in_flight: VecDeque::new(),
            done: Vec::new(),
        })
    }

    /// Uploads `bytes` as the next part, in the background (at most a few at once).
    pub async fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        let (store, key, id, idx) = (
            self.store.clone(),
            self.key.clone(),
            self.id.clone(),
            self.next_idx,
        );
        self.next_idx += 1;
        self.in_flight.push_back(tokio::spawn(async move {
            store
                .put_part(&key, &id, idx, PutPayload::from(bytes))
                .await
        }));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task
                .await
                .map_err(|e| Error::Other(format!("uploading a part of {}: {e}", self.key)))?
                .ctx(|| format!("uploading part {} of {}", self.done.len(), self.key))?;
            self.done.push(part);
        }
        Ok(())
    }

    /// Uploads `tail` as the last part and waits for every part; the upload stays incomplete
    /// (invisible) until [`complete`].
    pub async fn stage(mut self, tail: Vec<u8>) -> Result<StagedUpload> {
        // S3 cannot complete an upload without parts: an empty part is valid as the only one.
        if !tail.is_empty() || self.next_idx == 0 {
            self.send(tail).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        let parts = self
            .done
            .into_iter()
            .enumerate()
            .map(|(idx, p)| UploadedPart {
                idx,
                etag: p.content_id,
            })
            .collect();
        Ok(StagedUpload {
            path: self.key.to_string(),
            upload_id: self.id,
            parts,
        })
    }

    /// Drops the upload and whatever parts it holds.
    pub async fn abort(self) {
        for task in &self.in_flight {
            task.abort();
        }
        abort(&self.store, &self.key, &self.id).await;
    }
}

/// A key as kept in a committable. `Path::from` would percent-encode it a second time.
pub fn stored_key(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|_| Path::from(key))
}

pub async fn abort(store: &AmazonS3, key: &Path, upload_id: &str) {
    if let Err(e) = store.abort_multipart(key, &upload_id.to_string()).await {
        tracing::warn!(key = %key, upload_id, error = %e, "aborting a multipart upload failed; a bucket lifecycle rule will remove it");
    }
}

/// Whether an object exists at `key`.
pub async fn exists(store: &AmazonS3, key: &Path) -> Result<bool> {
    match store.head(key).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::store(format!("checking {key}"), e)),
    }
}

/// Completes a staged upload; idempotent: an upload that is gone because an earlier attempt
/// completed it is fine when its object exists.
pub async fn complete(store: &AmazonS3, staged: &StagedUpload) -> Result<()> {
    let key = stored_key(&staged.path);
    let mut parts: Vec<&UploadedPart> = staged.parts.iter().collect();
    parts.sort_by_key(|p| p.idx);
    let ids = parts
        .into_iter()
        .map(|p| PartId {
            content_id: p.etag.clone(),
        })
        .collect();
    let Err(e) = store.complete_multipart(&key, &staged.upload_id, ids).await else {
        return Ok(());
    };
    match exists(store, &key).await {
        Ok(true) => {
            tracing::debug!(key = %key, "upload already completed by an earlier attempt");
            Ok(())
        }
        Ok(false) => Err(Error::Other(format!(
            "completing the upload of {key} (upload id {}) failed and the object does not exist: {e}",
            staged.upload_id
        ))),
        Err(_) => Err(Error::store(format!("completing the upload of {key}"), e)),
    }
}
