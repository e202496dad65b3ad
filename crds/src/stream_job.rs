//! The `StreamJob` custom resource: a pipeline run by the operator as a StatefulSet of workers.
//!
//! `spec.pipeline` is the same document `weir run` reads from a file (snake_case keys), so a local
//! pipeline can be pasted in as it is. Its nodes may name a `Connector` with `connectorRef` instead
//! of giving connection settings inline. Parallelism lives at `spec.parallelism` (the scale
//! subresource) and overrides `pipeline.parallelism`.

// Several `printcolumn(...)` attributes repeat keys such as `type_`; clippy reads them as
// duplicated attributes, but each is a separate column for the CustomResource derive.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pipeline::PipelineSpec;
use crate::status::{Condition, SavepointRecord};
use crate::units::Duration;

/// Node keys that carry inline connection settings; a node with `connectorRef` must not set them.
pub const INLINE_CONNECTION_KEYS: &[&str] = &["bootstrap_servers", "url"];

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    namespaced,
    shortname = "sj",
    category = "weir",
    status = "StreamJobStatus",
    derive = "PartialEq",
    doc = "A weir streaming pipeline run as a StatefulSet of workers.",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.parallelism",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Parallelism",
        type_ = "integer",
        json_path = ".spec.parallelism"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Last-Checkpoint",
        type_ = "date",
        description = "Age of the newest complete checkpoint",
        json_path = ".status.lastCheckpoint.time"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.parallelism >= 1",
        "message": "parallelism must be at least 1"
    },
    {
        "rule": "!has(self.pipeline.parallelism)",
        "message": "set the parallelism at spec.parallelism (the scale subresource), not in spec.pipeline"
    },
    {
        "rule": "!has(self.pipeline.max_parallelism) || self.pipeline.max_parallelism >= self.parallelism",
        "message": "pipeline.max_parallelism must be at least spec.parallelism"
    },
    {
        "rule": "!(has(self.pipeline.checkpoint) && has(self.pipeline.checkpoint.enabled) && !self.pipeline.checkpoint.enabled && (!has(self.pipeline.checkpoint.mode) || self.pipeline.checkpoint.mode == 'exactly-once'))",
        "message": "exactly-once needs checkpointing: enable pipeline.checkpoint or set pipeline.checkpoint.mode to at-least-once"
    },
    {
        "rule": "!has(self.initialSavepointPath) || size(self.initialSavepointPath) > 0",
        "message": "initialSavepointPath must not be empty"
    }
]))]
pub struct StreamJobSpec {
    /// Container image with the `weir` binary.
    pub image: String,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Number of workers (pods). Each owns a deterministic subset of the source splits.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub parallelism: u32,
    /// Resources of each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Overrides for the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// The pipeline (the document `weir run` reads). `name` defaults to the StreamJob's name.
    #[schemars(schema_with = "crate::schema::pipeline_schema")]
    pub pipeline: PipelineSpec,
    /// How a spec change reaches the running job.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// `suspended` takes a savepoint, stops the job and scales to zero; `running` resumes from it.
    #[serde(default)]
    pub state: DesiredState,
    /// Savepoint (directory or URL) the first deployment starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint_path: Option<String>,
    /// Start even when some state of the savepoint belongs to no node of the new pipeline.
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// Change to restart every worker (through the upgrade mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    /// Change to take a savepoint now (the job keeps running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_trigger_nonce: Option<i64>,
    /// Take a savepoint this often while running (e.g. `6h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic_savepoint_interval: Option<Duration>,
    /// Which savepoints the operator deletes (it never deletes the newest one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_retention: Option<SavepointRetention>,
    /// Take a savepoint before the StreamJob is deleted.
    #[serde(default)]
    pub delete_with_savepoint: bool,
    /// How long new workers may take to start (pods scheduled, images pulled, admin API
    /// answering) before unreachable workers make the job Degraded. Crashing workers count at once.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: Duration,
    /// Port of the worker admin API.
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: u16,
    /// The NetworkPolicy the operator renders for the workers: only the operator's pods (and
    /// Prometheus, where the operator is told its selector) reach the admin port.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render it (the default). Turn it off only where another policy guards the admin port;
    /// the operator's `--network-policies=false` turns it off for every job.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec { enabled: true }
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

pub const DEFAULT_ADMIN_PORT: u16 = 8081;

fn default_startup_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_admin_port() -> u16 {
    DEFAULT_ADMIN_PORT
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables for the worker container (e.g. cloud credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Roll the workers at once; the new spec starts without source and operator state (sinks
    /// still finish the commits of the last checkpoint).
    Stateless,
    /// Stop with a savepoint, then start the new spec from it.
    #[default]
    Savepoint,
    /// Roll the workers; each resumes from its newest complete checkpoint.
    LastState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    #[default]
    Running,
    Suspended,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    #[serde(default)]
    pub savepoint: SavepointUpgrade,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointUpgrade {
    /// How long one savepoint attempt may take.
    #[serde(default = "default_savepoint_timeout")]
    pub timeout: Duration,
    /// Savepoint attempts before `onFailure` applies (`Retry` uses them all).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_savepoint_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_attempts() -> u32 {
    3
}

impl Default for SavepointUpgrade {
    fn default() -> Self {
        SavepointUpgrade {
            timeout: default_savepoint_timeout(),
            max_attempts: default_attempts(),
            on_failure: OnFailure::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnFailure {
    /// Try again until `maxAttempts`, then give up like `Abort`.
    Retry,
    /// Upgrade anyway, each worker resuming from its newest complete checkpoint.
    FallbackToLastCheckpoint,
    /// Keep the old job running and report Degraded.
    #[default]
    Abort,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRetention {
    /// Keep at most this many savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// Delete savepoints older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Deploying,
    Running,
    Upgrading,
    Suspending,
    Suspended,
    Finished,
    Failed,
    Deleting,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// Workers deployed (the scale subresource reads it).
    #[serde(default)]
    pub parallelism: u32,
    /// Label selector of the worker pods (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRecord>,
    /// Completed savepoints, oldest first (retention trims it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoint_history: Vec<SavepointRecord>,
    /// Per-worker state read from each pod's admin API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerSummary>,
    /// What runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployment>,
    /// A savepoint in progress (upgrade, suspend, manual, periodic or delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The last `savepointTriggerNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint_trigger_nonce: Option<i64>,
    /// An upgrade that needs a savepoint and waits for the workers to run first; the wait is
    /// bounded by `upgrade.savepoint.timeout`, then `onFailure` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_upgrade: Option<PendingUpgrade>,
    /// Spec hash of an upgrade that failed and was given up; not retried until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned_hash: Option<String>,
    /// `transaction.timeout.ms` set by the operator per Kafka sink, or why it could not be.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transaction_timeouts: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    pub id: u64,
    /// RFC 3339 time the newest complete checkpoint finished (oldest over the workers).
    pub time: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSummary {
    pub worker: u32,
    pub pod: String,
    /// `starting`, `running`, `finishing`, `finished`, `stopped`, `failed` or `unreachable`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Restarts of the worker's container (from its pod).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: i32,
    /// Restarts inside the worker's process by the job's restart strategy (from its latest
    /// complete checkpoint), since the process started.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub in_process_restarts: u32,
    /// The cause of the worker's latest failure, restarted or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The circuit breakers of the worker's `critical: false` sinks that are not closed, by
    /// sink: `open` (records go to the dead-letter target) or `half_open` (probing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breakers: BTreeMap<String, String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// An upgrade waiting for the workers to run so that its savepoint can be taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpgrade {
    /// The spec hash it deploys (a newer spec starts a new wait).
    pub target_hash: String,
    /// RFC 3339 time the wait began.
    pub since: String,
}

/// The deployed configuration: the StatefulSet runs this.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Hash of everything that needs a restart when it changes.
    pub spec_hash: String,
    pub parallelism: u32,
    /// Scaled to zero by a suspend.
    #[serde(default)]
    pub suspended: bool,
    /// The savepoint the workers were started from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// While suspended: the savepoint to resume from (none: each worker's newest checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    /// RFC 3339.
    pub time: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OperationKind {
    Upgrade,
    Suspend,
    Manual,
    Periodic,
    Delete,
}

/// A savepoint the operator triggered and is polling (one reconcile per poll, never blocking).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    pub savepoint_id: String,
    /// Whether the workers stop after the savepoint.
    pub stop: bool,
    /// 1-based.
    pub attempt: u32,
    /// RFC 3339 time the attempt was triggered.
    pub started_at: String,
    /// For an upgrade: the spec hash it deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hash: Option<String>,
    /// Workers whose part is complete, with the path they reported (a stopped worker exits
    /// after reporting, so it is not asked again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub completed: BTreeMap<String, String>,
}

/// The StreamJob's node-level schema additions: `connectorRef` and the one-of rule.
pub(crate) fn node_schema_additions() -> (Value, Value) {
    let props = json!({
        "connectorRef": {
            "type": "string",
            "description": "Name of a Connector (same namespace) whose endpoint, credentials and default properties this node uses."
        },
        "bootstrap_servers": { "type": "string" },
        "url": { "type": "string" }
    });
    let keys: Vec<String> = INLINE_CONNECTION_KEYS
        .iter()
        .map(|k| format!("!has(self.{k})"))
        .collect();
    let rules = json!([{
        "rule": format!("!has(self.connectorRef) || ({})", keys.join(" && ")),
        "message": format!(
            "give either connectorRef or inline connection settings ({}), not both",
            INLINE_CONNECTION_KEYS.join(", ")
        )
    }]);
    (props, rules)
}
