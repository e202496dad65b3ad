//! `on_error: {dead_letter: {path: …}}` of the AWS sinks: records the service will never take
//! (too large, or still failing when the retries run out) are written as JSON lines to a
//! directory or object-store prefix, one file per flush, before the checkpoint completes, so a
//! dead-lettered record is never lost either.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;
use serde_json::{json, Value};

use super::batch::Entry;
use crate::error::{Context, Result};
use crate::storage::{self, Location};

/// Where dead letters go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterPath {
    /// A local directory or a URL (`s3://bucket/prefix`).
    pub path: String,
    /// object_store options for `path` (`aws_endpoint`, `aws_region`, …).
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

impl DeadLetterPath {
    /// Checks the location without opening it.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.path.trim().is_empty() {
            return Err("path: must name a directory or a URL".into());
        }
        Location::parse(&self.path)
            .map(|_| ())
            .map_err(|e| format!("path: {e}"))
    }
}

/// One line of a dead-letter file. Pure.
pub fn line(node: &str, entry: &Entry, reason: &str, now_ms: i64) -> Value {
    let mut v = json!({
        "node": node,
        "error": reason,
        "attempts": entry.attempts,
        "time_ms": now_ms,
    });
    match std::str::from_utf8(&entry.data) {
        Ok(text) => v["data"] = Value::String(text.to_string()),
        Err(_) => {
            v["data_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&entry.data))
        }
    }
    if let Some(k) = &entry.key {
        v["partition_key"] = Value::String(k.clone());
    }
    if let Some(h) = &entry.hash_key {
        v["explicit_hash_key"] = Value::String(h.clone());
    }
    v
}

pub struct DeadLetterFiles {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    shown: String,
    node: String,
    worker: u32,
    buffer: Vec<u8>,
    files: u64,
}

impl DeadLetterFiles {
    pub fn open(target: &DeadLetterPath, node: &str, worker: u32) -> Result<Self> {
        let location = Location::parse(&target.path)?;
        let (store, prefix) = storage::open(&location, &target.storage_options)?;
        Ok(DeadLetterFiles {
            store,
            prefix,
            shown: target.path.clone(),
            node: node.to_string(),
            worker,
            buffer: Vec::new(),
            files: 0,
        })
    }

    pub fn push(&mut self, entry: &Entry, reason: &str) {
        let v = line(
            &self.node,
            entry,
            reason,
            chrono::Utc::now().timestamp_millis(),
        );
        self.buffer.extend_from_slice(v.to_string().as_bytes());
        self.buffer.push(b'\n');
    }

    /// Writes what was pushed since the last flush as one new file.
    pub async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Unique across restarts and workers without any state: time, worker, a random tag.
        let name = format!(
            "{}-w{}-{}-{:08x}-{}.jsonl",
            self.node,
            self.worker,
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            fastrand::u32(..),
            self.files
        );
        let path = storage::join(&self.prefix, &name);
        let payload = PutPayload::from(std::mem::take(&mut self.buffer));
        self.store
            .put(&path, payload)
            .await
            .ctx(|| format!("writing dead letters to {}/{name}", self.shown))?;
        self.files += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_line_keeps_text_as_text_and_bytes_as_base64() {
        let mut e = Entry::new(Bytes::from("{\"id\":7}"), Some("k".into()), None);
        e.attempts = 3;
        let v = line("out", &e, "too large", 5);
        assert_eq!(v["data"], "{\"id\":7}");
        assert_eq!(v["partition_key"], "k");
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["error"], "too large");
        let b = line(
            "out",
            &Entry::new(Bytes::from_static(&[0xff, 0x00]), None, None),
            "x",
            5,
        );
        assert_eq!(b["data_base64"], "/wA=");
        assert!(b.get("data").is_none() && b.get("partition_key").is_none());
    }

    #[tokio::test]
    async fn each_flush_writes_one_file_of_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let target = DeadLetterPath {
            path: dir.path().display().to_string(),
            storage_options: BTreeMap::new(),
        };
        let mut f = DeadLetterFiles::open(&target, "out", 1).unwrap();
        f.flush().await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        f.push(&Entry::new(Bytes::from("a"), None, None), "r1");
        f.push(&Entry::new(Bytes::from("b"), None, None), "r2");
        f.flush().await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(files[0]
            .file_name()
            .to_string_lossy()
            .starts_with("out-w1-"));
    }
}
