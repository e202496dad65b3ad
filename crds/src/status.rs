//! Status types shared by StreamJob and Connector.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A condition in the Kubernetes style (`type`, `status`, `reason`, `message`), with the
/// generation it was computed for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339; changes only when `status` changes.
    #[serde(default)]
    pub last_transition_time: String,
}

/// A savepoint the operator knows about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRecord {
    pub id: String,
    /// Directory or URL, as `--from-savepoint` takes it.
    pub path: String,
    /// RFC 3339 completion time.
    pub time: String,
    /// Why it was taken: `Upgrade`, `Suspend`, `Manual`, `Periodic` or `Delete`.
    #[serde(default)]
    pub reason: String,
}
