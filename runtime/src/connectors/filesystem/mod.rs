//! The filesystem family: files in, files out.
//!
//! - `file` source ([`source`]): reads JSON-lines or CSV files from a local file or directory;
//!   each file is a split, its position a byte offset.
//! - `filesystem` sink ([`sink`]): an exactly-once sink writing JSON lines, CSV or Parquet part
//!   files to a local directory, to S3 or to HDFS, bucketed into sub-directories by time or by a
//!   field.
//!
//! The sink's in-progress parts are hidden (a leading `.`), which is why the source skips hidden
//! files: pointed at a sink's directory, it reads only committed parts.
//!
//! ```yaml
//! sources:
//!   - name: events
//!     type: file
//!     path: /data/events              # a file, or a directory read recursively
//!     format: json                    # json | csv
//! sinks:
//!   - name: out
//!     type: filesystem
//!     path: s3://lake/events          # or a local directory, or hdfs://namenode:port/path
//!     format: parquet                 # json | csv | parquet
//!     schema: [{name: id, type: int64, nullable: false}, {name: at, type: timestamp_ms}]
//!     bucket: {by: event_time, pattern: "year=%Y/month=%m/day=%d/hour=%H", timezone: UTC}
//!     rolling: {max_part_size: 256MiB, rollover_interval: 15m, inactivity_interval: 1m}
//! ```

// The source needs only the standard library, so it is built without the `filesystem` feature
// (the fuzz targets use it that way).
#[cfg(feature = "filesystem")]
pub mod sink;
pub mod source;

#[cfg(feature = "filesystem")]
pub use sink::{
    Clock, FileCommittable, FileSink, FileSinkConfig, FileSinkState, Format, InProgressPart,
    PartName, StagedUpload, UploadedPart,
};
pub use source::{parse_line, CsvOptions, FileFormat, FileSource, FileSourceConfig};

#[cfg(feature = "filesystem")]
use crate::api::SinkBox;
use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.source("file", |cfg| {
        Ok(Box::new(FileSource::new(
            cfg.resolve::<FileSourceConfig>()?,
        )))
    });
    #[cfg(feature = "filesystem")]
    r.sink("filesystem", |cfg| {
        Ok(SinkBox::two_phase(FileSink::new(
            cfg.resolve::<FileSinkConfig>()?,
        )))
    });
}
