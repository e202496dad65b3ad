//! The `filesystem` sink: routes records to one open part per bucket, rolls parts by policy, and
//! takes them through the two-phase commit.
//!
//! # Part lifecycle (local disk)
//! A worker keeps one open part per bucket, `<path>/<bucket>/.part-<worker>-<n>.inprogress`
//! (hidden, so readers skip it). A part is rolled (closed, synced, renamed to
//! `.part-<worker>-<n>.pending`) by size, age or inactivity, and at a checkpoint when
//! `roll_on_checkpoint` (always for Parquet, and for every barrier that ends the job or takes a
//! savepoint). `pre_commit` returns every part rolled since the previous one as committables;
//! once the checkpoint is durable, `commit` renames each to its visible name
//! `part-<worker>-<n><suffix>`. A JSON or CSV part left open across a checkpoint is synced and
//! its length recorded in the state; recovery cuts it back to that length and writes on.
//! Recovery also removes this worker's hidden parts that no checkpoint refers to.
//!
//! # Part lifecycle (S3)
//! A part is a multipart upload to its final key (see `object.rs`). Parts close at every
//! checkpoint and `commit` completes the uploads.
//!
//! # Part lifecycle (HDFS)
//! As on local disk (hidden `.inprogress`, `.pending`, an atomic rename at commit), but parts
//! close at every checkpoint, as on S3 (see `hdfs.rs` for why).
//!
//! Two sinks (or jobs) must not share a `path` with the same `part_prefix`: each treats the
//! other's hidden parts with its own worker numbers as its own leftovers.

mod bucket;
mod config;
mod format;
#[cfg(feature = "hdfs")]
mod hdfs;
mod local;
mod names;
mod object;
mod parquet;
mod rolling;
mod state;
#[cfg(test)]
mod tests;

pub use self::config::{FileSinkConfig, Format};
pub use self::names::PartName;
pub use self::object::{StagedUpload, UploadedPart};
pub use self::state::{FileCommittable, FileSinkState, InProgressPart};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use prometheus::IntCounter;

use self::bucket::BucketAssigner;
use self::config::{Settings, Target};
use self::format::{Encoder, EncoderFactory};
#[cfg(feature = "hdfs")]
use self::hdfs::HdfsFile;
use self::local::{LocalFile, Published};
use self::object::{Upload, UPLOAD_PART_SIZE};
use self::rolling::{rolls_at_barrier, should_roll, PartStats, RollReason};
use crate::api::{Barrier, Batch, NodeConfig, NodeContext, Record, TwoPhaseSink};
use crate::error::{Context, Error, Result};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;

/// Local parts are written to disk in pieces of this size: one system call per 256 KiB.
const LOCAL_WRITE_SIZE: usize = 256 * 1024;
/// Records encoded between two checks of the buffer and the part size.
const CHUNK_RECORDS: usize = 4096;

/// Milliseconds since the epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

enum Store {
    Local(PathBuf),
    S3 {
        s3: Arc<AmazonS3>,
        prefix: ObjectPath,
    },
    #[cfg(feature = "hdfs")]
    Hdfs {
        client: hdfs_native::Client,
        /// The sink's absolute path on the namenode.
        root: String,
    },
}

enum PartOutput {
    Local(LocalFile),
    S3(Upload),
    /// Boxed: hdfs-native's writer is some 3.5 KB.
    #[cfg(feature = "hdfs")]
    Hdfs(Box<HdfsFile>),
}

/// The open part of one bucket.
struct OpenPart {
    name: PartName,
    encoder: Encoder,
    out: PartOutput,
    /// Bytes already in the file or upload.
    shipped: u64,
    opened_at_ms: i64,
    last_write_ms: i64,
}

impl OpenPart {
    fn stats(&self) -> PartStats {
        PartStats {
            size: self.shipped + self.encoder.unshipped(),
            opened_at_ms: self.opened_at_ms,
            last_write_ms: self.last_write_ms,
        }
    }

    /// Moves encoded bytes to the file or upload once there are enough of them (`all`: every
    /// byte, for files only — an upload part other than the last must be large).
    async fn ship(&mut self, all: bool, bytes_out: &IntCounter) -> Result<()> {
        let out = self.encoder.output();
        let n = out.len();
        match &mut self.out {
            PartOutput::Local(file) if n >= LOCAL_WRITE_SIZE || (all && n > 0) => {
                file.append(out)?;
                out.clear();
            }
            #[cfg(feature = "hdfs")]
            PartOutput::Hdfs(file) if n >= LOCAL_WRITE_SIZE || (all && n > 0) => {
                let bytes = std::mem::replace(out, Vec::with_capacity(LOCAL_WRITE_SIZE * 2));
                file.append(bytes).await?;
            }
            PartOutput::S3(upload) if n >= UPLOAD_PART_SIZE => {
                let bytes = std::mem::replace(
                    out,
                    Vec::with_capacity(UPLOAD_PART_SIZE + UPLOAD_PART_SIZE / 4),
                );
                upload.send(bytes).await?;
            }
            _ => return Ok(()),
        }
        self.shipped += n as u64;
        bytes_out.inc_by(n as u64);
        Ok(())
    }

    /// Completes the part and stages it: a local or HDFS part is synced (completed) and renamed
    /// to `.pending`; an upload gets its last part. Returns what commits it.
    async fn close(mut self, suffix: &str, bytes_out: &IntCounter) -> Result<FileCommittable> {
        self.encoder.finish()?;
        self.ship(true, bytes_out).await?;
        match self.out {
            PartOutput::Local(file) => {
                let in_progress = file.path().to_path_buf();
                file.close()?;
                let dir = in_progress
                    .parent()
                    .map(FsPath::to_path_buf)
                    .unwrap_or_default();
                let pending = dir.join(self.name.pending());
                local::rename(&in_progress, &pending)?;
                Ok(FileCommittable::Local {
                    pending,
                    visible: dir.join(self.name.visible(suffix)),
                })
            }
            PartOutput::S3(upload) => {
                let tail = std::mem::take(self.encoder.output());
                bytes_out.inc_by(tail.len() as u64);
                Ok(FileCommittable::S3(upload.stage(tail).await?))
            }
            #[cfg(feature = "hdfs")]
            PartOutput::Hdfs(file) => {
                let in_progress = file.path().to_string();
                let dir = hdfs::parent(&in_progress).to_string();
                let client = file.client().clone();
                file.close().await?;
                let pending = hdfs::join(&dir, &self.name.pending());
                hdfs::rename(&client, &in_progress, &pending).await?;
                Ok(FileCommittable::Hdfs {
                    pending,
                    visible: hdfs::join(&dir, &self.name.visible(suffix)),
                })
            }
        }
    }
}

/// What to do with a record that cannot be written (a free function, so that it can be called
/// while a part is borrowed).
fn bad_record(
    node: &str,
    policy: OnError,
    errors: &IntCounter,
    record: &Record,
    message: String,
) -> Result<()> {
    errors.inc();
    match policy {
        OnError::Fail | OnError::DeadLetter(_) => Err(Error::record(node, record, message)),
        OnError::Skip => {
            tracing::debug!(node, record = %record.describe(), message, "skipping a record");
            Ok(())
        }
    }
}

fn bucket_dir(root: &FsPath, bucket: &str) -> PathBuf {
    if bucket.is_empty() {
        root.to_path_buf()
    } else {
        root.join(bucket)
    }
}

fn object_key(prefix: &ObjectPath, bucket: &str, file: &str) -> ObjectPath {
    bucket
        .split('/')
        .chain([file])
        .filter(|s| !s.is_empty())
        .fold(prefix.clone(), |p, seg| p.join(seg))
}

pub struct FileSink {
    settings: Settings,
    node: String,
    worker: u32,
    metrics: NodeMetrics,
    store: Option<Store>,
    encoders: EncoderFactory,
    buckets: BucketAssigner,
    parts: HashMap<String, OpenPart>,
    /// Parts closed since the last pre-commit: the next checkpoint's committables.
    rolled: Vec<FileCommittable>,
    /// Directories whose entries changed since they were last synced.
    unsynced_dirs: BTreeSet<PathBuf>,
    next_part: u64,
    clock: Clock,
}

impl FileSink {
    pub fn new(settings: Settings) -> Self {
        FileSink {
            encoders: EncoderFactory::new(&settings),
            buckets: BucketAssigner::new(settings.bucket.clone()),
            settings,
            node: String::new(),
            worker: 0,
            metrics: NodeMetrics::detached(),
            store: None,
            parts: HashMap::new(),
            rolled: Vec::new(),
            unsynced_dirs: BTreeSet::new(),
            next_part: 0,
            clock: Arc::new(|| chrono::Utc::now().timestamp_millis()),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    #[cfg(feature = "hdfs")]
    fn hdfs(&self) -> Result<hdfs_native::Client> {
        match &self.store {
            Some(Store::Hdfs { client, .. }) => Ok(client.clone()),
            _ => Err(Error::node(
                &self.node,
                "an HDFS part is in the checkpoint but this sink does not write to HDFS",
            )),
        }
    }

    fn s3(&self) -> Result<Arc<AmazonS3>> {
        match &self.store {
            Some(Store::S3 { s3, .. }) => Ok(s3.clone()),
            _ => Err(Error::node(
                &self.node,
                "an S3 upload is in the checkpoint but this sink writes to a local path",
            )),
        }
    }

    fn next_name(&mut self) -> PartName {
        let n = self.next_part;
        self.next_part += 1;
        PartName::new(&self.settings.part_prefix, self.worker, n)
    }

    /// Starts a part in `bucket`, numbered past every name that exists there.
    async fn open_part(&mut self, bucket: &str, first: &[Record]) -> Result<OpenPart> {
        let encoder = self.encoders.create(first)?;
        let now = self.now();
        let suffix = self.settings.part_suffix.clone();
        let (name, out) = match &self.store {
            None => return Err(Error::node(&self.node, "write before open")),
            Some(Store::Local(root)) => {
                let dir = bucket_dir(root, bucket);
                self.create_dir(&dir)?;
                let mut name = self.next_name();
                while local::name_taken(&dir, &name, &suffix) {
                    name = self.next_name();
                }
                self.unsynced_dirs.insert(dir.clone());
                (
                    name.clone(),
                    PartOutput::Local(LocalFile::create(&dir.join(name.in_progress()))?),
                )
            }
            Some(Store::S3 { s3, prefix }) => {
                let (s3, prefix) = (s3.clone(), prefix.clone());
                let mut name = self.next_name();
                while object::exists(&s3, &object_key(&prefix, bucket, &name.visible(&suffix)))
                    .await?
                {
                    name = self.next_name();
                }
                let key = object_key(&prefix, bucket, &name.visible(&suffix));
                (name, PartOutput::S3(Upload::start(s3, key).await?))
            }
            #[cfg(feature = "hdfs")]
            Some(Store::Hdfs { client, root }) => {
                let (client, dir) = (client.clone(), hdfs::join(root, bucket));
                let mut name = self.next_name();
                while hdfs::name_taken(&client, &dir, &name, &suffix).await? {
                    name = self.next_name();
                }
                let path = hdfs::join(&dir, &name.in_progress());
                (
                    name,
                    PartOutput::Hdfs(Box::new(HdfsFile::create(&client, &path).await?)),
                )
            }
        };
        tracing::debug!(node = %self.node, bucket, part = ?name, "opened a part");
        Ok(OpenPart {
            name,
            encoder,
            out,
            shipped: 0,
            opened_at_ms: now,
            last_write_ms: now,
        })
    }

    /// Creates `dir` and remembers to sync the parents of the directories it created.
    fn create_dir(&mut self, dir: &FsPath) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d.filter(|p| !p.exists()) {
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        self.unsynced_dirs.extend(
            missing
                .iter()
                .filter_map(|p| p.parent().map(FsPath::to_path_buf)),
        );
        Ok(())
    }

    async fn write_run(&mut self, bucket: &str, records: &[Record], now: i64) -> Result<()> {
        for chunk in records.chunks(CHUNK_RECORDS) {
            if !self.parts.contains_key(bucket) {
                let part = self.open_part(bucket, chunk).await?;
                self.parts.insert(bucket.to_string(), part);
            }
            let Some(part) = self.parts.get_mut(bucket) else {
                continue;
            };
            let (node, policy, errors) = (
                &self.node,
                self.settings.on_error,
                &self.metrics.record_errors,
            );
            part.encoder.write(chunk, &mut |r, message| {
                bad_record(node, policy, errors, r, message)
            })?;
            part.last_write_ms = now;
            part.ship(false, &self.metrics.bytes_out).await?;
            if let Some(reason) = should_roll(&part.stats(), now, &self.settings.rolling) {
                self.roll(bucket, reason).await?;
            }
        }
        Ok(())
    }

    async fn roll(&mut self, bucket: &str, reason: RollReason) -> Result<()> {
        let Some(part) = self.parts.remove(bucket) else {
            return Ok(());
        };
        tracing::debug!(node = %self.node, bucket, part = ?part.name, ?reason, "rolling a part");
        let committable = part
            .close(&self.settings.part_suffix, &self.metrics.bytes_out)
            .await?;
        self.note_staged(&committable);
        self.rolled.push(committable);
        Ok(())
    }

    fn note_staged(&mut self, c: &FileCommittable) {
        if let FileCommittable::Local { pending, .. } = c {
            self.unsynced_dirs
                .extend(pending.parent().map(FsPath::to_path_buf));
        }
    }

    fn sync_dirs(&mut self) -> Result<()> {
        for dir in std::mem::take(&mut self.unsynced_dirs) {
            local::sync_dir(&dir)?;
        }
        Ok(())
    }

    async fn commit_all(&mut self, committables: Vec<FileCommittable>) -> Result<()> {
        let mut uploads = Vec::new();
        for c in committables {
            match c {
                FileCommittable::Local { pending, visible } => {
                    if local::publish(&pending, &visible)? == Published::Now {
                        self.unsynced_dirs
                            .extend(visible.parent().map(FsPath::to_path_buf));
                    }
                }
                FileCommittable::S3(staged) => uploads.push(staged),
                #[cfg(feature = "hdfs")]
                FileCommittable::Hdfs { pending, visible } => {
                    hdfs::publish(&self.hdfs()?, &pending, &visible).await?;
                }
                #[cfg(not(feature = "hdfs"))]
                FileCommittable::Hdfs { pending, .. } => {
                    return Err(Error::node(
                        &self.node,
                        format!(
                        "{pending} is on HDFS but this weir was built without the `hdfs` feature"
                    ),
                    ))
                }
            }
        }
        if !uploads.is_empty() {
            let s3 = self.s3()?;
            futures::future::try_join_all(uploads.iter().map(|u| object::complete(&s3, u))).await?;
        }
        self.sync_dirs()
    }

    /// Reopens (or publishes) one part a restored state left open. Returns its path when it
    /// stays open.
    fn restore_part(
        &mut self,
        root: &FsPath,
        entry: InProgressPart,
        now: i64,
    ) -> Result<Option<PathBuf>> {
        let dir = bucket_dir(root, &entry.bucket);
        let in_progress = dir.join(entry.name.in_progress());
        let pending = dir.join(entry.name.pending());
        let visible = dir.join(entry.name.visible(&entry.suffix));
        if !local::exists(&in_progress) {
            if local::exists(&pending) {
                // Rolled after the checkpoint: that roll is undone, like everything after it.
                local::rename(&pending, &in_progress)?;
                self.unsynced_dirs.insert(dir.clone());
            } else if local::exists(&visible) {
                tracing::info!(node = %self.node, file = %visible.display(), "part already published by an earlier recovery");
                return Ok(None);
            } else {
                tracing::warn!(node = %self.node, file = %in_progress.display(), "in-progress part of the checkpoint is missing; starting a new part");
                return Ok(None);
            }
        }
        let file = LocalFile::resume(&in_progress, entry.valid_length)?;
        // Only this worker's own parts are written on: a part of another worker (after a
        // rescale) must not stay under a name that worker's successor will clean up.
        let own =
            entry.name.worker == self.worker && entry.name.prefix == self.settings.part_prefix;
        let encoder = match own && !self.parts.contains_key(&entry.bucket) {
            true => self.encoders.resume(entry.format, entry.columns.as_deref()),
            false => None,
        };
        let Some(encoder) = encoder else {
            // Its bytes up to `valid_length` belong to the restored checkpoint, so publishing
            // them now is what the next commit would have done.
            file.close()?;
            local::rename(&in_progress, &pending)?;
            local::publish(&pending, &visible)?;
            self.unsynced_dirs.insert(dir);
            tracing::info!(node = %self.node, file = %visible.display(), "published a restored part");
            return Ok(None);
        };
        let part = OpenPart {
            name: entry.name,
            encoder,
            out: PartOutput::Local(file),
            shipped: entry.valid_length,
            opened_at_ms: entry.opened_at_ms,
            last_write_ms: now,
        };
        self.parts.insert(entry.bucket, part);
        Ok(Some(in_progress))
    }

    fn recover_local(&mut self, root: &FsPath, states: Vec<FileSinkState>) -> Result<()> {
        let now = self.now();
        let mut workers = BTreeSet::from([self.worker]);
        let mut prefixes = BTreeSet::from([self.settings.part_prefix.clone()]);
        let mut keep = HashSet::new();
        for state in states {
            workers.insert(state.worker);
            for entry in state.in_progress {
                prefixes.insert(entry.name.prefix.clone());
                keep.extend(self.restore_part(root, entry, now)?);
            }
        }
        // Hidden parts of these workers that no checkpoint refers to are leftovers of the
        // attempt that failed; their records are replayed from the checkpoint.
        let mut removed = 0;
        for prefix in &prefixes {
            for path in local::hidden_parts(root, prefix, &workers)? {
                if keep.contains(&path) {
                    continue;
                }
                std::fs::remove_file(&path)
                    .ctx(|| format!("removing leftover {}", path.display()))?;
                self.unsynced_dirs
                    .extend(path.parent().map(FsPath::to_path_buf));
                removed += 1;
            }
        }
        tracing::info!(node = %self.node, resumed = self.parts.len(), removed, "recovered local parts");
        self.sync_dirs()
    }

    /// Deletes the hidden parts of the restored workers that no checkpoint refers to (HDFS
    /// parts never stay open across a checkpoint, so every hidden part is a leftover).
    #[cfg(feature = "hdfs")]
    async fn recover_hdfs(&mut self, root: &str, states: Vec<FileSinkState>) -> Result<()> {
        let client = self.hdfs()?;
        let mut workers = BTreeSet::from([self.worker]);
        for state in &states {
            workers.insert(state.worker);
            if !state.in_progress.is_empty() {
                tracing::warn!(node = %self.node, "the checkpoint has open local parts but the sink now writes to HDFS; they are left as they are");
            }
        }
        let prefix = &self.settings.part_prefix;
        let mut removed = 0;
        for path in hdfs::hidden_parts(&client, root, prefix, &workers).await? {
            hdfs::remove(&client, &path).await?;
            removed += 1;
        }
        tracing::info!(node = %self.node, removed, "recovered HDFS parts");
        Ok(())
    }

    async fn abort_uploads(&mut self) {
        for (_, part) in self.parts.drain() {
            if let PartOutput::S3(upload) = part.out {
                upload.abort().await;
            }
        }
        let staged: Vec<_> = std::mem::take(&mut self.rolled);
        if let Ok(s3) = self.s3() {
            for c in staged {
                if let FileCommittable::S3(u) = c {
                    object::abort(&s3, &object::stored_key(&u.path), &u.upload_id).await;
                }
            }
        }
    }
}

#[async_trait]
impl TwoPhaseSink for FileSink {
    type Committable = FileCommittable;
    type State = FileSinkState;

    /// The path answers without anything written: the bucket lists under the prefix, HDFS has
    /// the directory (or the nearest one above it), or the local directory (or the nearest one
    /// above it) is writable.
    async fn preflight(&mut self, _cfg: &NodeConfig) -> Result<Vec<String>> {
        let path = match &self.settings.target {
            Target::Local(p) => p.display().to_string(),
            Target::S3(url) | Target::Hdfs(url) => url.to_string(),
        };
        let line = crate::storage::check_reachable(&path, &self.settings.storage_options)
            .await
            .map_err(|e| Error::Other(format!("path: {e}")))?;
        Ok(vec![line])
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.worker = ctx.worker;
        self.metrics = ctx.metrics.clone();
        self.store = Some(match &self.settings.target {
            Target::Local(root) => {
                std::fs::create_dir_all(root)
                    .ctx(|| format!("{}: creating {}", ctx.node, root.display()))?;
                // Committables hold absolute paths: a restart may run in another directory.
                let root = std::path::absolute(root)
                    .ctx(|| format!("{}: resolving {}", ctx.node, root.display()))?;
                Store::Local(root)
            }
            Target::S3(url) => {
                let (s3, prefix) = crate::storage::s3(url, &self.settings.storage_options)?;
                Store::S3 { s3, prefix }
            }
            #[cfg(feature = "hdfs")]
            Target::Hdfs(url) => {
                let (client, root) = crate::storage::hdfs(url, &self.settings.storage_options)?;
                Store::Hdfs { client, root }
            }
            #[cfg(not(feature = "hdfs"))]
            Target::Hdfs(url) => {
                return Err(Error::node(
                    &ctx.node,
                    format!("{url}: this weir was built without the `hdfs` feature"),
                ))
            }
        });
        Ok(())
    }

    async fn recover(
        &mut self,
        states: Vec<FileSinkState>,
        committables: Vec<FileCommittable>,
    ) -> Result<()> {
        self.commit_all(committables).await?;
        self.next_part = states
            .iter()
            .map(|s| s.next_part)
            .fold(self.next_part, u64::max);
        match &self.store {
            Some(Store::Local(root)) => {
                let root = root.clone();
                self.recover_local(&root, states)
            }
            Some(Store::S3 { .. }) => {
                if states.iter().any(|s| !s.in_progress.is_empty()) {
                    tracing::warn!(node = %self.node, "the checkpoint has open local parts but the sink now writes to S3; they are left as they are");
                }
                Ok(())
            }
            #[cfg(feature = "hdfs")]
            Some(Store::Hdfs { root, .. }) => {
                let root = root.clone();
                self.recover_hdfs(&root, states).await
            }
            None => Err(Error::node(&self.node, "recover before open")),
        }
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let now = self.now();
        if self.buckets.is_single() {
            return self.write_run("", &batch.records, now).await;
        }
        // Records are grouped by bucket (in order within each), so that every part gets its
        // records in one call however the buckets interleave.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut groups: Vec<(String, Vec<Record>)> = Vec::new();
        for record in batch.records {
            let i = match self.buckets.assign(&record, now) {
                Ok(b) => match index.get(b) {
                    Some(i) => *i,
                    None => {
                        index.insert(b.to_string(), groups.len());
                        groups.push((b.to_string(), Vec::new()));
                        groups.len() - 1
                    }
                },
                Err(message) => {
                    bad_record(
                        &self.node,
                        self.settings.on_error,
                        &self.metrics.record_errors,
                        &record,
                        message,
                    )?;
                    continue;
                }
            };
            groups[i].1.push(record);
        }
        for (bucket, records) in groups {
            self.write_run(&bucket, &records, now).await?;
        }
        Ok(())
    }

    async fn pre_commit(
        &mut self,
        barrier: Barrier,
    ) -> Result<(Vec<FileCommittable>, FileSinkState)> {
        let mut in_progress = Vec::new();
        if rolls_at_barrier(&self.settings.rolling, &barrier) {
            let parts: Vec<OpenPart> = self.parts.drain().map(|(_, p)| p).collect();
            let (suffix, bytes_out) = (&self.settings.part_suffix, &self.metrics.bytes_out);
            let staged = futures::future::try_join_all(
                parts.into_iter().map(|p| p.close(suffix, bytes_out)),
            )
            .await?;
            for c in staged {
                self.note_staged(&c);
                self.rolled.push(c);
            }
        } else {
            for (bucket, part) in &mut self.parts {
                part.ship(true, &self.metrics.bytes_out).await?;
                let PartOutput::Local(file) = &mut part.out else {
                    return Err(Error::node(
                        &self.node,
                        "only a local part can stay open across a checkpoint",
                    ));
                };
                file.sync()?;
                in_progress.push(InProgressPart {
                    bucket: bucket.clone(),
                    name: part.name.clone(),
                    format: part.encoder.format(),
                    suffix: self.settings.part_suffix.clone(),
                    valid_length: file.len(),
                    opened_at_ms: part.opened_at_ms,
                    columns: part.encoder.columns(),
                });
            }
            in_progress.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        }
        self.sync_dirs()?;
        let state = FileSinkState {
            worker: self.worker,
            next_part: self.next_part,
            in_progress,
        };
        Ok((std::mem::take(&mut self.rolled), state))
    }

    async fn commit(&mut self, committables: Vec<FileCommittable>) -> Result<()> {
        self.commit_all(committables).await
    }

    /// Local parts are left as they are: recovery cuts them back to their checkpoint and
    /// removes what no checkpoint refers to. Uploads not yet in a checkpoint are aborted.
    async fn abort(&mut self) -> Result<()> {
        self.abort_uploads().await;
        self.parts.clear();
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<()> {
        let now = self.now();
        let policy = self.settings.rolling;
        let due: Vec<(String, RollReason)> = self
            .parts
            .iter()
            .filter_map(|(bucket, part)| {
                should_roll(&part.stats(), now, &policy).map(|r| (bucket.clone(), r))
            })
            .collect();
        for (bucket, reason) in due {
            self.roll(&bucket, reason).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if !self.parts.is_empty() || !self.rolled.is_empty() {
            // Only a failing or killed-off worker gets here with open parts (a stop and the end
            // of input close them with their final checkpoint): the next recovery cuts them
            // back to the last checkpoint, and the sources write the rest again.
            tracing::warn!(node = %self.node, open = self.parts.len(), "closing with open parts: what they hold after the last checkpoint is cut at the next recovery and written again from the sources");
        }
        self.abort_uploads().await;
        Ok(())
    }
}
