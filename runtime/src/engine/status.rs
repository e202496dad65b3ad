//! What `/v1/status` reports, per worker.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use super::breaker::BreakerState;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[default]
    Starting,
    Running,
    /// A failure stopped the worker; it restarts from its latest complete checkpoint once its
    /// backoff (`restart` below) has passed.
    Restarting,
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

/// A failure that stopped the worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FailureInfo {
    /// RFC 3339 time of the failure.
    pub at: String,
    pub cause: String,
    /// Whether the restart strategy restarted the worker (false: the failure ended the job).
    pub restarted: bool,
}

/// The restart a worker is waiting for.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PendingRestart {
    /// Restarts the strategy has allowed since its last reset, this one included.
    pub attempt: u32,
    /// The backoff being waited out.
    pub delay_ms: u64,
    /// RFC 3339 time at which the worker restarts.
    pub at: String,
    /// The strategy, e.g. `exponential-delay (1s × 1.5 up to 1m, unlimited attempts)`.
    pub strategy: String,
}

/// The circuit breaker of a `critical: false` sink.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// RFC 3339 time of the last transition.
    pub since: String,
    /// Records sent to the dead-letter sink so far.
    pub dead_lettered: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub worker: u32,
    pub state: WorkerState,
    /// The checkpoint the current attempt started from.
    pub restored_from: Option<u64>,
    pub last_checkpoint: Option<CheckpointInfo>,
    pub checkpoints_completed: u64,
    pub checkpoints_failed: u64,
    /// Lowest watermark over the worker's watermark-emitting nodes (ms since epoch).
    pub watermark: Option<i64>,
    /// Position of every split per source, as of the last checkpoint.
    pub splits: BTreeMap<String, BTreeMap<String, Value>>,
    pub last_error: Option<String>,
    /// In-process restarts of this worker since the process started.
    pub restarts: u32,
    /// The failures that stopped the worker, oldest first (the last ten).
    pub failures: Vec<FailureInfo>,
    /// Set while the worker waits to restart.
    pub restart: Option<PendingRestart>,
    /// Circuit breakers of the worker's `critical: false` sinks, by sink.
    pub breakers: BTreeMap<String, BreakerStatus>,
}

impl WorkerStatus {
    /// Failures kept in [`WorkerStatus::failures`].
    pub const FAILURES_KEPT: usize = 10;

    pub fn record_failure(&mut self, at: String, cause: String, restarted: bool) {
        self.failures.push(FailureInfo {
            at,
            cause,
            restarted,
        });
        let excess = self.failures.len().saturating_sub(Self::FAILURES_KEPT);
        self.failures.drain(..excess);
    }
}
