//! The contract between the runtime and the operator, defined once: the savepoint manifest the
//! operator writes and `weir run --from-savepoint` reads, and the worker admin API (`/v1/…`) the
//! operator polls. Both crates use these types, so a change to either format cannot compile on one
//! side only.
//!
//! Both sides may run different builds during a rolling upgrade, so every type here reads
//! leniently: missing fields take their defaults and unknown fields are ignored, and a worker
//! state this build does not know reads as [`WorkerState::Unknown`] instead of failing the poll.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The checkpoint and savepoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The job-level manifest in a savepoint's directory: a savepoint without it does not exist.
pub const SAVEPOINT_MANIFEST: &str = "_SAVEPOINT.json";

/// The job-level manifest of a savepoint: one part per worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavepointManifest {
    pub version: u32,
    pub job: String,
    pub id: String,
    pub parallelism: u32,
    pub timestamp_ms: i64,
    /// Part directories relative to the savepoint directory (`worker-0`, …).
    pub parts: Vec<String>,
}

impl SavepointManifest {
    /// The manifest of a savepoint with one part per worker, `worker-0 … worker-(parallelism-1)`.
    pub fn new(job: &str, id: &str, parallelism: u32, timestamp_ms: i64) -> Self {
        SavepointManifest {
            version: FORMAT_VERSION,
            job: job.to_string(),
            id: id.to_string(),
            parallelism,
            timestamp_ms,
            parts: (0..parallelism).map(|w| format!("worker-{w}")).collect(),
        }
    }
}

/// `GET` a job's status.
pub const STATUS_PATH: &str = "/v1/status";
/// `POST` a [`SavepointRequest`] to take a savepoint; `GET {SAVEPOINTS_PATH}/{id}` its state.
pub const SAVEPOINTS_PATH: &str = "/v1/savepoints";

/// The body of `POST /v1/savepoints`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    /// End the job once the savepoint is complete.
    #[serde(default)]
    pub stop: bool,
    /// Optional id, so every worker of a job can be given the same one.
    #[serde(default)]
    pub id: Option<String>,
}

/// The answer to `POST /v1/savepoints`: the id the worker took the savepoint under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavepointAccepted {
    pub id: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointPhase {
    #[default]
    Pending,
    Completed,
    Failed,
}

/// `GET /v1/savepoints/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavepointStatus {
    pub id: String,
    pub state: SavepointPhase,
    /// Where the savepoint was written, once completed.
    pub path: Option<String>,
    pub error: Option<String>,
}

/// `GET /v1/status`: one process's workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobStatus {
    pub job: String,
    pub parallelism: u32,
    /// The least advanced state over this process's workers ([`WorkerState::aggregate`]).
    pub state: WorkerState,
    /// In-process restarts over this process's workers (each worker's are in `workers`, with
    /// their causes and the backoff being waited out).
    pub restarts: u32,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A state a newer runtime reports that this build does not know. Never reported.
    #[serde(other)]
    Unknown,
}

impl WorkerState {
    /// The name on the wire, which the StreamJob's status shows too.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Restarting => "restarting",
            WorkerState::Finishing => "finishing",
            WorkerState::Finished => "finished",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
            WorkerState::Unknown => "unknown",
        }
    }

    /// The state shown for a set of workers: failure wins, then a restart, then the earliest
    /// phase.
    pub fn aggregate(states: impl IntoIterator<Item = WorkerState>) -> WorkerState {
        use WorkerState::*;
        let states: Vec<WorkerState> = states.into_iter().collect();
        [
            Failed, Unknown, Restarting, Starting, Running, Finishing, Stopped, Finished,
        ]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(Starting)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointInfo {
    pub id: u64,
    pub completed_at: String,
    pub duration_ms: u64,
    pub bytes: u64,
    pub savepoint: bool,
}

/// A failure that stopped the worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureInfo {
    /// RFC 3339 time of the failure.
    pub at: String,
    pub cause: String,
    /// Whether the restart strategy restarted the worker (false: the failure ended the job).
    pub restarted: bool,
}

/// The restart a worker is waiting for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

/// The state of a `critical: false` sink's circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of `weir_sink_circuit_state`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// The name on the wire, in metrics and in the StreamJob's status.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The circuit breaker of a `critical: false` sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// RFC 3339 time of the last transition.
    pub since: String,
    /// Records sent to the dead-letter sink so far.
    pub dead_lettered: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A savepoint manifest exactly as format version 1 writes it (weir 0.1, the operator's
    /// and `weir run`'s writers alike). Every later build must still read it: a user's oldest
    /// savepoint is the one an upgrade or a rollback needs.
    const MANIFEST_V1: &str = r#"{
  "version": 1,
  "job": "orders",
  "id": "upgrade-20261206t010203004-a1",
  "parallelism": 2,
  "timestamp_ms": 1796518923004,
  "parts": [
    "worker-0",
    "worker-1"
  ]
}"#;

    #[test]
    fn a_version_1_manifest_is_read_and_written_byte_for_byte() {
        let m: SavepointManifest = serde_json::from_str(MANIFEST_V1).unwrap();
        let built = SavepointManifest::new(
            "orders",
            "upgrade-20261206t010203004-a1",
            2,
            1_796_518_923_004,
        );
        assert_eq!(m, built);
        assert_eq!(serde_json::to_string_pretty(&built).unwrap(), MANIFEST_V1);
    }

    /// `GET /v1/status` of a worker that has failed once and has an open breaker, as the
    /// runtime answers it.
    const STATUS_V1: &str = r#"{"job":"orders","parallelism":2,"state":"running","restarts":1,
      "workers":[{"worker":1,"state":"running","restored_from":3,
        "last_checkpoint":{"id":7,"completed_at":"2026-12-06T01:02:03Z","duration_ms":12,"bytes":900,"savepoint":false},
        "checkpoints_completed":4,"checkpoints_failed":0,"watermark":null,
        "splits":{"gen":{"0":5}},"last_error":null,"restarts":1,
        "failures":[{"at":"2026-12-06T01:00:00Z","cause":"broker down","restarted":true}],
        "restart":null,
        "breakers":{"es":{"state":"half_open","since":"2026-12-06T01:01:00Z","dead_lettered":2,"last_error":"503"}}}]}"#;

    #[test]
    fn the_status_reads_back_as_written() {
        let s: JobStatus = serde_json::from_str(STATUS_V1).unwrap();
        assert_eq!(s.state, WorkerState::Running);
        let w = &s.workers[0];
        assert_eq!(w.last_checkpoint.as_ref().map(|c| c.id), Some(7));
        assert_eq!(w.failures[0].cause, "broker down");
        assert_eq!(w.breakers["es"].state, BreakerState::HalfOpen);
        let again: JobStatus = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn a_status_from_another_build_still_reads() {
        // An older runtime leaves fields out; a newer one adds fields and states.
        let s: JobStatus = serde_json::from_str(
            r#"{"job":"j","workers":[{"worker":0,"state":"draining","new_field":1},{"worker":1}]}"#,
        )
        .unwrap();
        assert_eq!(s.workers[0].state, WorkerState::Unknown);
        assert_eq!(s.workers[1].state, WorkerState::Starting);
        assert!(s.workers[1].last_checkpoint.is_none());
        let sp: SavepointStatus =
            serde_json::from_str(r#"{"id":"a","state":"completed"}"#).unwrap();
        assert_eq!(sp.state, SavepointPhase::Completed);
        assert_eq!(sp.path, None);
    }

    #[test]
    fn failure_wins_then_restart_then_the_earliest_phase() {
        use WorkerState::*;
        assert_eq!(WorkerState::aggregate([Running, Failed, Finished]), Failed);
        assert_eq!(WorkerState::aggregate([Running, Restarting]), Restarting);
        assert_eq!(WorkerState::aggregate([Finished, Running]), Running);
        assert_eq!(WorkerState::aggregate([Finished, Finished]), Finished);
        assert_eq!(WorkerState::aggregate([]), Starting);
        for s in [
            Starting, Running, Restarting, Finishing, Finished, Stopped, Failed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn failures_keep_the_last_ten() {
        let mut w = WorkerStatus::default();
        for i in 0..15 {
            w.record_failure(String::new(), format!("f{i}"), true);
        }
        assert_eq!(w.failures.len(), WorkerStatus::FAILURES_KEPT);
        assert_eq!(w.failures[0].cause, "f5");
    }
}
