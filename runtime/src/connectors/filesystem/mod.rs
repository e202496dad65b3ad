//! The filesystem family: files in, files out.
//!
//! - `file` source ([`source`]): reads JSON-lines or CSV files from a local file or directory;
//!   each file is a split, its position a byte offset.
//! - `filesystem` sink ([`sink`]): an exactly-once sink writing JSON lines, CSV or Parquet part
//!   files to a local directory, to S3 or to HDFS, bucketed into sub-directories by time or by a
//!   field.
//!
//! The two sides share one convention, [`is_hidden`]: the sink writes uncommitted parts under
//! hidden names and the source skips them, so a job reading a sink's directory reads only
//! committed parts.
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

/// The first character of a hidden file name. The sink names a part so until it is committed;
/// the source, like Spark, Hive and Trino, skips such files, so uncommitted data is never read.
pub const HIDDEN: char = '.';

/// Whether a file name is hidden (see [`HIDDEN`]).
pub fn is_hidden(file_name: &str) -> bool {
    file_name.starts_with(HIDDEN)
}

use crate::api::Registry;
#[cfg(feature = "filesystem")]
use crate::api::SinkBox;

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

#[cfg(all(test, feature = "filesystem"))]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{NodeContext, Source, SourcePoll};

    #[tokio::test]
    async fn the_source_reads_only_the_parts_the_sink_committed() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartName::new("part", 0, 1);
        for (name, id) in [
            (part.in_progress(), 1),
            (part.pending(), 2),
            (part.visible(".json"), 3),
        ] {
            std::fs::write(dir.path().join(name), format!("{{\"id\": {id}}}\n")).unwrap();
        }
        let config: FileSourceConfig =
            serde_json::from_value(serde_json::json!({"path": dir.path(), "format": "json"}))
                .unwrap();
        let mut source = FileSource::new(config);
        source
            .open(&NodeContext::for_test("job", "in"), BTreeMap::new())
            .await
            .unwrap();
        let mut ids = Vec::new();
        loop {
            match source.poll().await.unwrap() {
                SourcePoll::Batch(batch) => ids.extend(
                    batch
                        .records
                        .iter()
                        .map(|r| r.get("id").unwrap().as_i64().unwrap()),
                ),
                SourcePoll::Finished => break,
                SourcePoll::Idle => {}
            }
        }
        assert_eq!(ids, [3], "only the committed part is read");
    }
}
