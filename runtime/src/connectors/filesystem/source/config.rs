use serde::Deserialize;

use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::on_error::OnError;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Json,
    Csv,
}

/// `csv:` options; an unset one takes its value from [`CsvOptions::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    pub header: bool,
    pub delimiter: String,
    /// Column names when the file has no header row.
    pub columns: Vec<String>,
    /// Turn values that parse as integers or floats into numbers.
    pub infer_types: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: ",".into(),
            columns: Vec::new(),
            infer_types: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A file, or a directory whose files (recursively, sorted by path) are read.
    pub path: String,
    pub format: FileFormat,
    /// Only files whose name ends with this (e.g. `.jsonl`).
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub csv: CsvOptions,
    /// A line that does not parse: `fail` (naming the file and line) or `skip` (counted in
    /// `weir_node_record_errors_total`).
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default = "batch")]
    pub batch_size: usize,
}

fn batch() -> usize {
    1024
}

impl ConnectorConfig for FileSourceConfig {
    type Settings = FileSourceConfig;

    fn resolve(self, cfg: &NodeConfig) -> Result<FileSourceConfig> {
        if self.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        if self.csv.delimiter.len() != 1 {
            return Err(cfg.error("csv.delimiter", "must be a single character"));
        }
        Ok(self)
    }
}
