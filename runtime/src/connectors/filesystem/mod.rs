//! `filesystem`: an exactly-once sink writing JSON lines, CSV or Parquet part files to a local
//! directory, to S3 or to HDFS, bucketed into sub-directories by time or by a field.
//!
//! ```yaml
//! sinks:
//!   - name: out
//!     type: filesystem
//!     path: s3://lake/events          # or a local directory
//!     format: parquet                 # json | csv | parquet
//!     schema: [{name: id, type: int64, nullable: false}, {name: at, type: timestamp_ms}]
//!     bucket: {by: event_time, pattern: "year=%Y/month=%m/day=%d/hour=%H", timezone: UTC}
//!     rolling: {max_part_size: 256MiB, rollover_interval: 15m, inactivity_interval: 1m}
//! ```
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
mod sink;
mod state;
#[cfg(test)]
mod tests;

pub use config::{FileSinkConfig, Format};
pub use names::PartName;
pub use object::{StagedUpload, UploadedPart};
pub use sink::{Clock, FileSink};
pub use state::{FileCommittable, FileSinkState, InProgressPart};

use crate::api::SinkBox;
use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.sink("filesystem", |cfg| {
        Ok(SinkBox::two_phase(FileSink::new(
            cfg.resolve::<FileSinkConfig>()?,
        )))
    });
}
