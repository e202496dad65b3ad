//! What a node is told about itself: its settings ([`NodeConfig`], at build time, also for
//! `weir validate`) and its place in the running job ([`NodeContext`]).

use serde::de::DeserializeOwned;
use serde_json::Value;
use weir_crds::{CheckpointSpec, NodeSpec};

use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;

/// A node's settings as given in the spec, with the path used in error messages.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `sources[0]`, `transforms[2]`, `sinks[1]`.
    pub path: String,
    pub spec: NodeSpec,
    pub parallelism: u32,
    pub checkpoint: CheckpointSpec,
}

impl NodeConfig {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Deserializes the node's own settings; an error names the field, e.g.
    /// `sinks[0].rolling.max_part_size: expected a size like 256MiB`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let value = Value::Object(self.spec.config.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let path = if inner == "." {
                self.path.clone()
            } else {
                format!("{}.{inner}", self.path)
            };
            let e = weir_crds::input::serde_error(&path, &e.into_inner().to_string());
            Error::spec(e.path, e.message)
        })
    }

    /// Parses and checks a connector's settings: the one entry point every connector's
    /// `register` uses, so `weir validate` checks exactly what a run checks.
    pub fn resolve<C: ConnectorConfig>(&self) -> Result<C::Settings> {
        self.parse::<C>()?.resolve(self)
    }

    /// An error about one field of this node.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Error {
        let path = if field.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{field}", self.path)
        };
        Error::spec(path, message)
    }
}

#[cfg(test)]
impl NodeConfig {
    /// The node at `path` (`sinks[0]`) of type `kind` (also its name) with `config`, a JSON
    /// object: what a connector's config tests resolve. Parallelism 1, default checkpoints.
    pub fn for_test(path: &str, kind: &str, config: Value) -> Self {
        NodeConfig {
            path: path.into(),
            spec: NodeSpec {
                name: kind.into(),
                kind: kind.into(),
                config: config.as_object().cloned().expect("a JSON object"),
                ..Default::default()
            },
            parallelism: 1,
            checkpoint: CheckpointSpec::default(),
        }
    }
}

#[cfg(test)]
impl NodeContext {
    /// Node `node` of job `job` as worker 0 of 1 (max parallelism 128), default checkpoints and
    /// detached metrics: what a node's unit tests open it with.
    pub fn for_test(job: &str, node: &str) -> Self {
        NodeContext {
            job: job.into(),
            node: node.into(),
            worker: 0,
            parallelism: 1,
            max_parallelism: 128,
            checkpoint: CheckpointSpec::default(),
            metrics: NodeMetrics::detached(),
        }
    }
}

/// A connector's settings as written in the spec, in one shape for every connector: a serde
/// struct (`deny_unknown_fields`) in the connector's `config.rs`, and [`ConnectorConfig::resolve`],
/// pure (no I/O), which does every check and returns what the connector runs with. A custom
/// connector follows the same shape: `cfg.resolve::<MyConfig>()?` in its factory.
pub trait ConnectorConfig: DeserializeOwned {
    type Settings;

    /// Checks the settings (errors name the field through `cfg`) and derives what the
    /// connector runs with.
    fn resolve(self, cfg: &NodeConfig) -> Result<Self::Settings>;
}

/// What a running node knows about its place in the job.
#[derive(Clone, Debug)]
pub struct NodeContext {
    pub job: String,
    pub node: String,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub checkpoint: CheckpointSpec,
    pub metrics: NodeMetrics,
}

impl NodeContext {
    /// Whether this worker owns the split at `index` of a source's stable split order.
    pub fn owns_index(&self, index: usize) -> bool {
        index % self.parallelism as usize == self.worker as usize
    }
}
