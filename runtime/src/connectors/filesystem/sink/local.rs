//! Part files on local disk.
//!
//! This uses `std::fs`, not object_store's local backend: the exactly-once lifecycle needs
//! `fsync` of files and directories, appending to a file written before a restart, and truncating
//! it back to the length recorded in a checkpoint — none of which object_store offers.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::names::PartName;
use crate::error::{Context, Error, Result};

/// An open in-progress part file.
pub struct LocalFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl LocalFile {
    /// Creates a new part file; fails if the name exists (a part is never overwritten).
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .ctx(|| format!("creating {}", path.display()))?;
        Ok(LocalFile {
            file,
            path: path.to_path_buf(),
            len: 0,
        })
    }

    /// Reopens a part written before a restart, cut back to the length its checkpoint recorded
    /// (what follows was written after that checkpoint and will be written again).
    pub fn resume(path: &Path, valid_length: u64) -> Result<Self> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx(|| format!("reopening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(|| format!("reading the size of {}", path.display()))?
            .len();
        if len < valid_length {
            return Err(Error::Other(format!(
                "{} holds {len} bytes but its checkpoint recorded {valid_length}: data written before the checkpoint is lost",
                path.display()
            )));
        }
        if len > valid_length {
            file.set_len(valid_length)
                .ctx(|| format!("truncating {} to {valid_length} bytes", path.display()))?;
        }
        file.seek(SeekFrom::Start(valid_length))
            .ctx(|| format!("seeking in {}", path.display()))?;
        file.sync_data()
            .ctx(|| format!("syncing {}", path.display()))?;
        Ok(LocalFile {
            file,
            path: path.to_path_buf(),
            len: valid_length,
        })
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .ctx(|| format!("writing {}", self.path.display()))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("syncing {}", self.path.display()))
    }

    /// Syncs and closes the file.
    pub fn close(self) -> Result<()> {
        self.file
            .sync_all()
            .ctx(|| format!("syncing {}", self.path.display()))
    }
}

pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).ctx(|| format!("renaming {} to {}", from.display(), to.display()))
}

/// Makes renames and new names in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Whether any stage of `name` exists in `dir` (then the number is skipped).
pub fn name_taken(dir: &Path, name: &PartName, suffix: &str) -> bool {
    [name.in_progress(), name.pending(), name.visible(suffix)]
        .iter()
        .any(|f| exists(&dir.join(f)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Now,
    /// An earlier attempt had already published it.
    Before,
}

/// Publishes a pending part under its visible name; idempotent.
pub fn publish(pending: &Path, visible: &Path) -> Result<Published> {
    let plan = publish_plan(
        &pending.display().to_string(),
        &visible.display().to_string(),
        exists(pending),
        exists(visible),
    )?;
    if plan == Published::Now {
        rename(pending, visible)?;
    }
    Ok(plan)
}

/// Whether publishing a part renames it now (`Now`) or finds it done (`Before`), from which of
/// its two names exist; shared by local disk and HDFS. Both or neither existing is an error: a
/// visible part is never overwritten, and a committed part that vanished is data lost.
pub fn publish_plan(
    pending: &str,
    visible: &str,
    pending_exists: bool,
    visible_exists: bool,
) -> Result<Published> {
    match (pending_exists, visible_exists) {
        (true, false) => Ok(Published::Now),
        (false, true) => Ok(Published::Before),
        (true, true) => Err(Error::Other(format!(
            "cannot publish {pending}: {visible} already exists and is not overwritten"
        ))),
        (false, false) => Err(Error::Other(format!(
            "cannot publish {pending}: neither it nor {visible} exists; the data of a completed checkpoint is lost"
        ))),
    }
}

/// Every hidden part (`.<prefix>-<worker>-<n>.inprogress|.pending`) under `root` written by one
/// of `workers`.
pub fn hidden_parts(root: &Path, prefix: &str, workers: &BTreeSet<u32>) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let kind = entry
                .file_type()
                .ctx(|| format!("reading {}", entry.path().display()))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if let Some((name, _)) = entry
                .file_name()
                .to_str()
                .and_then(|f| PartName::parse_hidden(f, prefix))
            {
                if workers.contains(&name.worker) {
                    found.push(entry.path());
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_truncates_to_the_checkpointed_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".p-0-0.inprogress");
        let mut f = LocalFile::create(&path).unwrap();
        f.append(b"abc\ndef\n").unwrap();
        f.sync().unwrap();
        assert!(LocalFile::create(&path).is_err(), "never overwrites");
        drop(f);
        let mut f = LocalFile::resume(&path, 4).unwrap();
        f.append(b"xy\n").unwrap();
        f.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\nxy\n");
        let e = LocalFile::resume(&path, 100).err().unwrap().to_string();
        assert!(e.contains("recorded 100"), "{e}");
    }

    #[test]
    fn publish_is_idempotent_and_refuses_to_lose_or_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (pending, visible) = (dir.path().join(".p.pending"), dir.path().join("p.json"));
        std::fs::write(&pending, "x").unwrap();
        assert_eq!(publish(&pending, &visible).unwrap(), Published::Now);
        assert_eq!(publish(&pending, &visible).unwrap(), Published::Before);
        std::fs::write(&pending, "y").unwrap();
        assert!(publish(&pending, &visible)
            .unwrap_err()
            .to_string()
            .contains("not overwritten"));
        std::fs::remove_file(&pending).unwrap();
        std::fs::remove_file(&visible).unwrap();
        let e = publish(&pending, &visible).unwrap_err().to_string();
        assert!(e.contains(".p.pending") && e.contains("lost"), "{e}");
    }

    #[test]
    fn hidden_parts_are_found_by_worker_in_every_directory() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a=1/b=2");
        std::fs::create_dir_all(&deep).unwrap();
        for f in [
            ".part-0-1.inprogress",
            ".part-1-2.pending",
            "part-0-3.json",
            ".other-0-4.pending",
        ] {
            std::fs::write(deep.join(f), "").unwrap();
        }
        std::fs::write(dir.path().join(".part-2-5.pending"), "").unwrap();
        let found = hidden_parts(dir.path(), "part", &BTreeSet::from([0, 2])).unwrap();
        assert_eq!(
            found,
            vec![
                dir.path().join(".part-2-5.pending"),
                deep.join(".part-0-1.inprogress")
            ]
        );
        assert!(name_taken(&deep, &PartName::new("part", 0, 3), ".json"));
        assert!(!name_taken(&deep, &PartName::new("part", 0, 3), ".csv"));
    }
}
