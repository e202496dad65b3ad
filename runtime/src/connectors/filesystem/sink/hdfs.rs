//! Parts on HDFS (`hdfs://namenode:port/path`), through `hdfs-native`, a Rust client of the
//! namenode and datanode protocols (no JVM, no libhdfs).
//!
//! The lifecycle is the local one with HDFS's atomic rename: a part is written to
//! `.part-<worker>-<n>.inprogress`, closed (the namenode completes the file once its blocks are
//! on the datanodes: durable, like `hsync` + close) and renamed to `.part-<worker>-<n>.pending`
//! when it rolls, and renamed to its visible name at commit. Unlike a local part, an HDFS part
//! never stays open across a checkpoint: `hdfs-native` cannot truncate, so a part could not be
//! cut back to its checkpointed length on restore. Flink's bulk formats make the same choice
//! (`OnCheckpointRollingPolicy`). Recovery publishes the checkpoint's pending parts and deletes
//! the hidden parts no checkpoint refers to; deleting a file that a killed writer still holds a
//! lease on is allowed, so no lease recovery is needed.

use std::collections::BTreeSet;

use bytes::Bytes;
use hdfs_native::{Client, HdfsError, WriteOptions};

use super::local::{publish_plan, Published};
use super::names::PartName;
use crate::error::{Error, Result};

fn hdfs_error(what: impl std::fmt::Display, e: HdfsError) -> Error {
    Error::Other(format!("HDFS: {what}: {e}"))
}

/// `dir/file` in HDFS path syntax.
pub fn join(dir: &str, file: &str) -> String {
    match (dir.trim_end_matches('/'), file.trim_matches('/')) {
        (d, "") => d.to_string(),
        (d, f) => format!("{d}/{f}"),
    }
}

/// The directory of `path` (`/a/b/c` → `/a/b`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// An open in-progress part.
pub struct HdfsFile {
    client: Client,
    writer: hdfs_native::file::FileWriter,
    path: String,
}

impl HdfsFile {
    /// Creates a new part (and its directories); fails if the name exists.
    pub async fn create(client: &Client, path: &str) -> Result<Self> {
        let writer = client
            .create(path, WriteOptions::default().create_parent(true))
            .await
            .map_err(|e| hdfs_error(format_args!("creating {path}"), e))?;
        Ok(HdfsFile {
            client: client.clone(),
            writer,
            path: path.to_string(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn append(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.writer
            .write_bytes(Bytes::from(bytes))
            .await
            .map_err(|e| hdfs_error(format_args!("writing {}", self.path), e))?;
        Ok(())
    }

    /// Completes the file: the namenode answers once its last block is on the datanodes.
    pub async fn close(mut self) -> Result<()> {
        self.writer
            .close()
            .await
            .map_err(|e| hdfs_error(format_args!("closing {}", self.path), e))
    }
}

pub async fn exists(client: &Client, path: &str) -> Result<bool> {
    match client.get_file_info(path).await {
        Ok(_) => Ok(true),
        Err(HdfsError::FileNotFound(_)) => Ok(false),
        Err(e) => Err(hdfs_error(format_args!("checking {path}"), e)),
    }
}

/// Renames `from` to `to`; never over an existing file.
pub async fn rename(client: &Client, from: &str, to: &str) -> Result<()> {
    client
        .rename(from, to, false)
        .await
        .map_err(|e| hdfs_error(format_args!("renaming {from} to {to}"), e))
}

/// Whether any stage of `name` exists in `dir` (then the number is skipped).
pub async fn name_taken(client: &Client, dir: &str, name: &PartName, suffix: &str) -> Result<bool> {
    for file in [name.in_progress(), name.pending(), name.visible(suffix)] {
        if exists(client, &join(dir, &file)).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Publishes a pending part under its visible name; idempotent (see [`publish_plan`]).
pub async fn publish(client: &Client, pending: &str, visible: &str) -> Result<Published> {
    let plan = publish_plan(
        pending,
        visible,
        exists(client, pending).await?,
        exists(client, visible).await?,
    )?;
    if plan == Published::Now {
        rename(client, pending, visible).await?;
    }
    Ok(plan)
}

/// Every hidden part under `root` written with `prefix` by one of `workers`.
pub async fn hidden_parts(
    client: &Client,
    root: &str,
    prefix: &str,
    workers: &BTreeSet<u32>,
) -> Result<Vec<String>> {
    let listing = match client.list_status(root, true).await {
        Ok(l) => l,
        Err(HdfsError::FileNotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(hdfs_error(format_args!("listing {root}"), e)),
    };
    let mut found: Vec<String> = listing
        .into_iter()
        .filter(|s| !s.isdir)
        .filter(|s| {
            let file = s.path.rsplit('/').next().unwrap_or_default();
            PartName::parse_hidden(file, prefix).is_some_and(|(n, _)| workers.contains(&n.worker))
        })
        .map(|s| s.path)
        .collect();
    found.sort();
    Ok(found)
}

pub async fn remove(client: &Client, path: &str) -> Result<()> {
    client
        .delete(path, false)
        .await
        .map(|_| ())
        .map_err(|e| hdfs_error(format_args!("removing {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_split_like_hdfs() {
        assert_eq!(join("/lake/", "day=01"), "/lake/day=01");
        assert_eq!(join("/lake", ""), "/lake");
        assert_eq!(join("/", "p"), "/p");
        assert_eq!(parent("/lake/day=01/part-0-1.json"), "/lake/day=01");
        assert_eq!(parent("/p"), "/");
    }
}
