//! Settings of the `datagen` source.

use serde::Deserialize;
use weir_crds::Duration;

use crate::ordered::OrderedMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    /// Total records over all workers; unbounded when absent.
    pub count: Option<u64>,
    /// Records per second over all workers; unlimited when absent.
    pub rate: Option<f64>,
    /// Number of splits (the most workers that can share this source); fixed so that a savepoint
    /// restores at any parallelism.
    #[serde(default = "default_splits")]
    pub splits: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub fields: OrderedMap<FieldSpec>,
    /// A field whose value becomes the record's event time.
    pub event_time: Option<String>,
}

/// Most splits: each is a task with its own position in every checkpoint.
pub const SPLITS_LIMIT: u32 = 4096;
/// Most records per batch (a batch is allocated whole).
pub const BATCH_SIZE_LIMIT: usize = 100_000;
/// Longest generated string (characters after the prefix); every record holds one.
pub const STRING_LENGTH_LIMIT: usize = 1 << 20;

fn default_splits() -> u32 {
    8
}
fn default_batch() -> usize {
    1024
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    #[default]
    Rfc3339,
    Millis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldSpec {
    /// The record's global index: 0, 1, 2, … (unique over all splits).
    Sequence {
        #[serde(default)]
        start: i64,
    },
    /// Uniform integer in [min, max]; with `prefix`, a string like `user_42`.
    Int {
        min: i64,
        max: i64,
        prefix: Option<String>,
    },
    Float {
        min: f64,
        max: f64,
    },
    /// Random string of `length` characters from [a-z0-9] after an optional prefix.
    String {
        length: usize,
        #[serde(default)]
        prefix: String,
    },
    Choice {
        values: Vec<serde_json::Value>,
    },
    Bool,
    /// `start` + index × `step`, moved by up to ±`jitter` (out-of-order event times).
    Timestamp {
        start: String,
        step: Duration,
        #[serde(default)]
        jitter: Duration,
        #[serde(default)]
        format: TimeFormat,
    },
}
