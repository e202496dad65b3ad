//! What `/v1/status` reports, per worker.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[default]
    Starting,
    Running,
    /// Input ended or a stop was asked; the last checkpoint is being taken.
    Finishing,
    Finished,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CheckpointInfo {
    pub id: u64,
    pub completed_at: String,
    pub duration_ms: u64,
    pub bytes: u64,
    pub savepoint: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub worker: u32,
    pub state: WorkerState,
    pub restored_from: Option<u64>,
    pub last_checkpoint: Option<CheckpointInfo>,
    pub checkpoints_completed: u64,
    pub checkpoints_failed: u64,
    /// Lowest watermark over the worker's watermark-emitting nodes (ms since epoch).
    pub watermark: Option<i64>,
    /// Position of every split per source, as of the last checkpoint.
    pub splits: BTreeMap<String, BTreeMap<String, Value>>,
    pub last_error: Option<String>,
}
