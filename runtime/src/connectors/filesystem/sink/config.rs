//! The sink's settings as written in the spec, and their resolution into [`Settings`]: defaults
//! applied, cross-field rules checked, nothing opened (the factory also runs for `weir validate`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_crds::{ByteSize, Duration};

use super::bucket::{BucketSpec, TimeZone};
use super::rolling::RollingPolicy;
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::on_error::OnError;
use crate::storage::Location;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// A local directory, `s3://bucket/prefix` or `hdfs://namenode:port/path`.
    pub path: String,
    /// S3: object_store options (`aws_endpoint`, `aws_allow_http`, `aws_region`, …); `AWS_*`
    /// environment variables apply too. HDFS: Hadoop configuration keys (HA nameservices,
    /// `dfs.client.use.datanode.hostname`, …) over those of `HADOOP_CONF_DIR`.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    pub format: Format,
    /// CSV: the columns, in order (default: the first record's fields).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub csv: CsvConfig,
    /// Parquet: the schema (default: inferred from the first batch).
    #[serde(default)]
    pub schema: Option<Vec<ColumnConfig>>,
    #[serde(default)]
    pub parquet: ParquetConfig,
    #[serde(default)]
    pub rolling: RollingConfig,
    #[serde(default)]
    pub bucket: Option<BucketConfig>,
    #[serde(default)]
    pub part_prefix: Option<String>,
    #[serde(default)]
    pub part_suffix: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Csv,
    Parquet,
}

impl Format {
    pub fn default_suffix(self) -> &'static str {
        match self {
            Format::Json => ".json",
            Format::Csv => ".csv",
            Format::Parquet => ".parquet",
        }
    }

    /// Row formats can be appended to and truncated, so a part may stay open across checkpoints.
    pub fn is_row_format(self) -> bool {
        !matches!(self, Format::Parquet)
    }
}

/// `csv:` options; an unset one takes its value from [`CsvConfig::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvConfig {
    pub header: bool,
    pub delimiter: String,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            header: true,
            delimiter: ",".into(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    #[serde(default = "yes")]
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float32,
    Float64,
    #[serde(alias = "boolean")]
    Bool,
    /// Days since the epoch, or `YYYY-MM-DD` text.
    Date,
    /// Milliseconds since the epoch, or RFC 3339 text; stored as UTC.
    TimestampMs,
    TimestampUs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    #[serde(default)]
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Snappy,
    Zstd,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollingConfig {
    #[serde(default = "default_max_part_size")]
    pub max_part_size: ByteSize,
    #[serde(default = "default_rollover")]
    pub rollover_interval: Duration,
    #[serde(default = "default_inactivity")]
    pub inactivity_interval: Duration,
    /// Unset: false for local JSON/CSV, true (and required) for Parquet and object stores.
    #[serde(default)]
    pub roll_on_checkpoint: Option<bool>,
}

impl Default for RollingConfig {
    fn default() -> Self {
        RollingConfig {
            max_part_size: default_max_part_size(),
            rollover_interval: default_rollover(),
            inactivity_interval: default_inactivity(),
            roll_on_checkpoint: None,
        }
    }
}

fn default_max_part_size() -> ByteSize {
    ByteSize(128 * 1024 * 1024)
}

fn default_rollover() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_inactivity() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub by: BucketBy,
    /// strftime pattern for `event_time` and `processing_time`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `UTC` or a fixed offset such as `+02:00`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `by: field`: the field whose value names the bucket; `by: event_time`: the field read
    /// (epoch milliseconds or RFC 3339) when a record carries no event time.
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketBy {
    EventTime,
    ProcessingTime,
    Field,
}

pub const DEFAULT_PATTERN: &str = "year=%Y/month=%m/day=%d/hour=%H";

/// Where parts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local(std::path::PathBuf),
    /// `s3://bucket/prefix`.
    S3(url::Url),
    /// `hdfs://namenode:port/path`.
    Hdfs(url::Url),
}

/// Everything the sink needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub storage_options: BTreeMap<String, String>,
    pub format: Format,
    pub columns: Option<Vec<String>>,
    pub csv_header: bool,
    pub csv_delimiter: u8,
    pub schema: Option<Vec<ColumnConfig>>,
    pub compression: Compression,
    pub rolling: RollingPolicy,
    pub bucket: BucketSpec,
    pub part_prefix: String,
    pub part_suffix: String,
    pub on_error: OnError,
}

impl ConnectorConfig for FileSinkConfig {
    type Settings = Settings;

    /// Applies defaults and the rules that involve more than one field.
    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        if self.path.trim().is_empty() {
            return Err(cfg.error("path", "must not be empty"));
        }
        let target = match Location::parse(&self.path)
            .map_err(|e| cfg.error("path", e.to_string()))?
        {
            Location::Local(dir) => Target::Local(dir),
            Location::Url(url) if matches!(url.scheme(), "s3" | "s3a") => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(cfg.error("path", "an S3 URL needs a bucket: s3://bucket/prefix"));
                }
                Target::S3(url)
            }
            Location::Url(url) if crate::storage::is_hdfs(&url) => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(cfg.error(
                        "path",
                        "an HDFS URL needs a namenode: hdfs://namenode:port/path",
                    ));
                }
                if !cfg!(feature = "hdfs") {
                    return Err(cfg.error(
                        "path",
                        "this weir was built without the `hdfs` feature",
                    ));
                }
                Target::Hdfs(url)
            }
            Location::Url(url) => {
                return Err(cfg.error(
                    "path",
                    format!(
                        "unsupported scheme {:?}: use a local directory, s3://bucket/prefix or hdfs://namenode:port/path",
                        url.scheme()
                    ),
                ))
            }
        };
        if !self.storage_options.is_empty() && matches!(target, Target::Local(_)) {
            return Err(cfg.error(
                "storage_options",
                "only applies to an s3:// or hdfs:// path",
            ));
        }
        // Hadoop's configuration keys are open-ended (per nameservice, per namenode), so only
        // S3's are checked by name.
        for key in self
            .storage_options
            .keys()
            .filter(|_| matches!(target, Target::S3(_)))
        {
            if key.parse::<object_store::aws::AmazonS3ConfigKey>().is_err() {
                return Err(cfg.error(
                    format!("storage_options.{key}").as_str(),
                    "unknown S3 option",
                ));
            }
        }

        if self.columns.is_some() && self.format != Format::Csv {
            return Err(cfg.error("columns", "only applies to format: csv"));
        }
        if let Some(columns) = &self.columns {
            check_names(cfg, "columns", columns.iter())?;
        }
        let delimiter = match self.csv.delimiter.as_bytes() {
            [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' && *b != b'"' => *b,
            _ => {
                return Err(cfg.error(
                    "csv.delimiter",
                    "must be a single ASCII character other than a quote or newline",
                ))
            }
        };
        if self.schema.is_some() && self.format != Format::Parquet {
            return Err(cfg.error("schema", "only applies to format: parquet"));
        }
        if let Some(schema) = &self.schema {
            check_names(cfg, "schema", schema.iter().map(|c| &c.name))?;
        }

        let object_store = matches!(target, Target::S3(_));
        let hdfs = matches!(target, Target::Hdfs(_));
        let rolling = &self.rolling;
        if rolling.max_part_size.0 == 0 {
            return Err(cfg.error("rolling.max_part_size", "must be more than 0"));
        }
        for (field, d) in [
            ("rollover_interval", rolling.rollover_interval),
            ("inactivity_interval", rolling.inactivity_interval),
        ] {
            if d.as_millis() == 0 {
                return Err(cfg.error(&format!("rolling.{field}"), "must be more than 0"));
            }
        }
        let must_roll = if self.format == Format::Parquet {
            Some("a Parquet file cannot be appended to, so parts close at every checkpoint")
        } else if object_store {
            Some("an object store upload cannot stay open across checkpoints, so parts close at every checkpoint")
        } else if hdfs {
            Some("an HDFS part cannot be cut back to its checkpoint on restore (the HDFS client has no truncate), so parts close at every checkpoint")
        } else {
            None
        };
        if let (Some(why), Some(false)) = (must_roll, rolling.roll_on_checkpoint) {
            return Err(cfg.error(
                "rolling.roll_on_checkpoint",
                format!("must be true here: {why}"),
            ));
        }
        let policy = RollingPolicy {
            max_part_size: rolling.max_part_size.0,
            rollover_ms: rolling.rollover_interval.as_millis() as i64,
            inactivity_ms: rolling.inactivity_interval.as_millis() as i64,
            on_checkpoint: must_roll.is_some() || rolling.roll_on_checkpoint.unwrap_or(false),
        };

        let bucket = match &self.bucket {
            None => BucketSpec::None,
            Some(b) => resolve_bucket(cfg, b)?,
        };

        let part_prefix = self.part_prefix.unwrap_or_else(|| "part".into());
        if part_prefix.is_empty()
            || !part_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            return Err(cfg.error(
                "part_prefix",
                "must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        let part_suffix = self
            .part_suffix
            .unwrap_or_else(|| self.format.default_suffix().into());
        if part_suffix.contains(['/', '\\'])
            || part_suffix == ".inprogress"
            || part_suffix == ".pending"
        {
            return Err(cfg.error(
                "part_suffix",
                "must not contain '/' nor be .inprogress or .pending",
            ));
        }

        Ok(Settings {
            target,
            storage_options: self.storage_options,
            format: self.format,
            columns: self.columns,
            csv_header: self.csv.header,
            csv_delimiter: delimiter,
            schema: self.schema,
            compression: self.parquet.compression,
            rolling: policy,
            bucket,
            part_prefix,
            part_suffix,
            on_error: self.on_error,
        })
    }
}

fn check_names<'a>(
    cfg: &NodeConfig,
    field: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut any = false;
    for name in names {
        any = true;
        if name.is_empty() {
            return Err(cfg.error(field, "column names must not be empty"));
        }
        if !seen.insert(name) {
            return Err(cfg.error(field, format!("column {name:?} appears twice")));
        }
    }
    if !any {
        return Err(cfg.error(field, "must list at least one column (or be left out)"));
    }
    Ok(())
}

fn resolve_bucket(cfg: &NodeConfig, b: &BucketConfig) -> Result<BucketSpec> {
    match b.by {
        BucketBy::Field => {
            if b.pattern.is_some() || b.timezone.is_some() {
                return Err(cfg.error(
                    "bucket",
                    "pattern and timezone apply to event_time and processing_time only",
                ));
            }
            match &b.field {
                Some(f) if !f.is_empty() => Ok(BucketSpec::Field(f.clone())),
                _ => Err(cfg.error("bucket.field", "is required with by: field")),
            }
        }
        BucketBy::EventTime | BucketBy::ProcessingTime => {
            if b.by == BucketBy::ProcessingTime && b.field.is_some() {
                return Err(cfg.error("bucket.field", "does not apply to by: processing_time"));
            }
            let pattern = b.pattern.clone().unwrap_or_else(|| DEFAULT_PATTERN.into());
            let tz = match &b.timezone {
                None => TimeZone::utc(),
                Some(t) => TimeZone::parse(t).map_err(|e| cfg.error("bucket.timezone", e))?,
            };
            let spec = if b.by == BucketBy::EventTime {
                BucketSpec::event_time(&pattern, tz, b.field.clone())
            } else {
                BucketSpec::processing_time(&pattern, tz)
            };
            spec.map_err(|e| cfg.error("bucket.pattern", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::connectors::filesystem::sink::tests::node_config;

    fn resolve(config: serde_json::Value) -> Result<Settings> {
        let cfg = node_config(config);
        cfg.parse::<FileSinkConfig>()?.resolve(&cfg)
    }

    fn err(config: serde_json::Value) -> String {
        resolve(config).expect_err("should be rejected").to_string()
    }

    #[test]
    fn defaults_follow_the_format_and_target() {
        let s = resolve(serde_json::json!({"path": "/tmp/x", "format": "json"})).unwrap();
        assert_eq!(s.part_suffix, ".json");
        assert_eq!(s.part_prefix, "part");
        assert!(
            !s.rolling.on_checkpoint,
            "local JSON keeps parts open across checkpoints"
        );
        assert_eq!(s.rolling.max_part_size, 128 * 1024 * 1024);
        assert_eq!(s.rolling.rollover_ms, 15 * 60 * 1000);
        assert_eq!(s.rolling.inactivity_ms, 60 * 1000);
        let s = resolve(serde_json::json!({"path": "/tmp/x", "format": "parquet"})).unwrap();
        assert!(s.rolling.on_checkpoint);
        assert_eq!(s.part_suffix, ".parquet");
        let s = resolve(serde_json::json!({"path": "s3://b/p", "format": "csv"})).unwrap();
        assert!(s.rolling.on_checkpoint);
        assert!(matches!(s.target, Target::S3(_)));
        if cfg!(feature = "hdfs") {
            let s = resolve(
                serde_json::json!({"path": "hdfs://nn:8020/lake", "format": "json",
                "storage_options": {"dfs.client.use.datanode.hostname": "true"}}),
            )
            .unwrap();
            assert!(
                s.rolling.on_checkpoint,
                "HDFS parts close at every checkpoint"
            );
            assert!(matches!(s.target, Target::Hdfs(_)));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(
            serde_json::json!({"path": "/x", "format": "json", "rolling": {"max_part_size": "lots"}}),
        );
        assert!(
            e.contains("sinks[0].rolling.max_part_size: expected a size like 256MiB"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"path": "/x", "format": "json", "rolling": {"rollover_interval": 5}}),
        );
        assert!(e.contains("sinks[0].rolling.rollover_interval"), "{e}");
        let e = err(serde_json::json!({"path": "/x", "format": "xml"}));
        assert!(e.contains("sinks[0].format"), "{e}");
        let e = err(serde_json::json!({"path": "/x", "format": "json", "colour": 1}));
        assert!(e.contains("colour: unknown field"), "{e}");
        let e = err(
            serde_json::json!({"path": "/x", "format": "parquet", "rolling": {"roll_on_checkpoint": false}}),
        );
        assert!(
            e.contains("sinks[0].rolling.roll_on_checkpoint: must be true"),
            "{e}"
        );
        let e = err(serde_json::json!({"path": "gs://b/p", "format": "json"}));
        assert!(e.contains("sinks[0].path: unsupported scheme"), "{e}");
        let e = err(serde_json::json!({"path": "/x", "format": "json", "columns": ["a"]}));
        assert!(
            e.contains("sinks[0].columns: only applies to format: csv"),
            "{e}"
        );
        let e = err(serde_json::json!({"path": "/x", "format": "csv", "csv": {"delimiter": ";;"}}));
        assert!(e.contains("sinks[0].csv.delimiter"), "{e}");
        let e = err(serde_json::json!({"path": "/x", "format": "json", "bucket": {"by": "field"}}));
        assert!(e.contains("sinks[0].bucket.field: is required"), "{e}");
        let e = err(
            serde_json::json!({"path": "/x", "format": "json", "bucket": {"by": "event_time", "timezone": "Mars/Olympus"}}),
        );
        assert!(e.contains("sinks[0].bucket.timezone"), "{e}");
        let e = err(
            serde_json::json!({"path": "/x", "format": "json", "bucket": {"by": "event_time", "pattern": "%Q"}}),
        );
        assert!(e.contains("sinks[0].bucket.pattern"), "{e}");
        let e = err(
            serde_json::json!({"path": "/x", "format": "parquet", "schema": [{"name": "a", "type": "decimal"}]}),
        );
        assert!(e.contains("sinks[0].schema[0].type"), "{e}");
        let e = err(
            serde_json::json!({"path": "s3://b/p", "format": "json", "storage_options": {"aws_colour": "red"}}),
        );
        assert!(e.contains("sinks[0].storage_options.aws_colour"), "{e}");
        let e = err(serde_json::json!({"path": "hdfs:///lake", "format": "json"}));
        assert!(
            e.contains("sinks[0].path: an HDFS URL needs a namenode"),
            "{e}"
        );
        if cfg!(feature = "hdfs") {
            let e = err(
                serde_json::json!({"path": "hdfs://nn:8020/lake", "format": "json", "rolling": {"roll_on_checkpoint": false}}),
            );
            assert!(
                e.contains("sinks[0].rolling.roll_on_checkpoint: must be true here: an HDFS part"),
                "{e}"
            );
        }
    }
}
