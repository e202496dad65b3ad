//! Connectors and transforms by type name. Built-ins are registered by `Registry::with_builtins`
//! (`crate::registry`); users add their own with [`Registry::source`], [`Registry::transform`] and
//! [`Registry::sink`]. The type is part of the API, below the engine, the connectors and the
//! transforms, which all use it; only `crate::registry`, which fills it, knows the connectors.

use std::collections::HashMap;
use std::sync::Arc;

use weir_crds::pipeline::{Role, Topology};
use weir_crds::{NodeSpec, PipelineSpec, SpecError};

use crate::api::{AsyncTransform, NodeConfig, SinkBox, Source, SyncTransform, Transform};
use crate::error::{Error, Result};

pub type SourceFactory = Arc<dyn Fn(&NodeConfig) -> Result<Box<dyn Source>> + Send + Sync>;
pub type TransformFactory =
    Arc<dyn Fn(&NodeConfig) -> Result<Box<dyn AsyncTransform>> + Send + Sync>;
pub type SinkFactory = Arc<dyn Fn(&NodeConfig) -> Result<SinkBox> + Send + Sync>;
/// A rule over the whole pipeline (several nodes at once), run by [`Registry::validate`].
pub type SpecCheck = Arc<dyn Fn(&PipelineSpec, &Topology) -> Vec<SpecError> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Registry {
    sources: HashMap<String, SourceFactory>,
    transforms: HashMap<String, TransformFactory>,
    sinks: HashMap<String, SinkFactory>,
    checks: Vec<SpecCheck>,
}

impl Registry {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn source(
        &mut self,
        kind: &str,
        f: impl Fn(&NodeConfig) -> Result<Box<dyn Source>> + Send + Sync + 'static,
    ) {
        self.sources.insert(kind.to_string(), Arc::new(f));
    }

    pub fn transform(
        &mut self,
        kind: &str,
        f: impl Fn(&NodeConfig) -> Result<Box<dyn Transform>> + Send + Sync + 'static,
    ) {
        self.async_transform(kind, move |cfg| {
            Ok(Box::new(SyncTransform(f(cfg)?)) as Box<dyn AsyncTransform>)
        });
    }

    /// Registers a transform that awaits (async I/O, lookups).
    pub fn async_transform(
        &mut self,
        kind: &str,
        f: impl Fn(&NodeConfig) -> Result<Box<dyn AsyncTransform>> + Send + Sync + 'static,
    ) {
        self.transforms.insert(kind.to_string(), Arc::new(f));
    }

    pub fn sink(
        &mut self,
        kind: &str,
        f: impl Fn(&NodeConfig) -> Result<SinkBox> + Send + Sync + 'static,
    ) {
        self.sinks.insert(kind.to_string(), Arc::new(f));
    }

    /// Adds a rule that spans nodes (a node type whose meaning depends on its neighbours
    /// registers it next to its factory), so `weir validate` reports it with the rest.
    pub fn spec_check(
        &mut self,
        f: impl Fn(&PipelineSpec, &Topology) -> Vec<SpecError> + Send + Sync + 'static,
    ) {
        self.checks.push(Arc::new(f));
    }

    fn known(&self, role: Role) -> Vec<String> {
        let mut names: Vec<String> = match role {
            Role::Source => self.sources.keys().cloned().collect(),
            Role::Transform => self.transforms.keys().cloned().collect(),
            Role::Sink => self.sinks.keys().cloned().collect(),
        };
        names.sort();
        names
    }

    fn unknown(&self, role: Role, cfg: &NodeConfig) -> Error {
        cfg.error(
            "type",
            format!(
                "unknown {} type {:?}; known: {}",
                role_word(role),
                cfg.spec.kind,
                self.known(role).join(", ")
            ),
        )
    }

    pub fn build_source(&self, cfg: &NodeConfig) -> Result<Box<dyn Source>> {
        let f = self
            .sources
            .get(&cfg.spec.kind)
            .ok_or_else(|| self.unknown(Role::Source, cfg))?;
        f(cfg)
    }

    pub fn build_transform(&self, cfg: &NodeConfig) -> Result<Box<dyn AsyncTransform>> {
        let f = self
            .transforms
            .get(&cfg.spec.kind)
            .ok_or_else(|| self.unknown(Role::Transform, cfg))?;
        f(cfg)
    }

    pub fn build_sink(&self, cfg: &NodeConfig) -> Result<SinkBox> {
        let f = self
            .sinks
            .get(&cfg.spec.kind)
            .ok_or_else(|| self.unknown(Role::Sink, cfg))?;
        f(cfg)
    }

    /// Checks the structure and every node's settings (no I/O); returns every error found.
    pub fn validate(&self, spec: &PipelineSpec) -> Result<Topology, Vec<SpecError>> {
        let topology = spec.check_structure();
        let mut errors = topology.as_ref().err().cloned().unwrap_or_default();
        for (role, i, node) in spec.nodes() {
            let cfg = node_config(spec, role, i);
            if node.kind.is_empty() {
                continue;
            }
            let built = match role {
                Role::Source => self.build_source(&cfg).map(|_| ()),
                Role::Transform => self.build_transform(&cfg).map(|_| ()),
                Role::Sink => self.check_sink(spec, i, &cfg),
            };
            if let Err(e) = built {
                errors.extend(spec_errors(e, &cfg.path));
            }
        }
        if let Ok(t) = &topology {
            for check in &self.checks {
                errors.extend(check(spec, t));
            }
        }
        match topology {
            Ok(t) if errors.is_empty() => Ok(t),
            _ => Err(errors),
        }
    }
}

impl Registry {
    /// A sink's settings, and for a `critical: false` sink that it can be one (no transactions)
    /// and its dead-letter target's settings.
    fn check_sink(&self, spec: &PipelineSpec, i: usize, cfg: &NodeConfig) -> Result<()> {
        let sink = self.build_sink(cfg)?;
        if cfg.spec.critical == Some(false) && sink.transactional() {
            return Err(cfg.error(
                "critical",
                format!(
                    "a {} sink commits through checkpoints (exactly-once) and cannot be \
                     non-critical: its records cannot be diverted after they were pre-committed",
                    cfg.spec.kind
                ),
            ));
        }
        match dead_letter_config(spec, i) {
            // An empty type is reported by check_structure.
            Some(dl) if !dl.spec.kind.is_empty() => self
                .build_sink(&dl)
                .map(|_| ())
                .map_err(|e| Error::Spec(spec_errors(e, &dl.path))),
            _ => Ok(()),
        }
    }
}

/// The dead-letter sink of sink `i`, when it is `critical: false`: named `<sink>-dead-letter`,
/// its errors under `sinks[i].dead_letter`.
pub fn dead_letter_config(spec: &PipelineSpec, i: usize) -> Option<NodeConfig> {
    let node = &spec.sinks[i];
    if node.critical != Some(false) {
        return None;
    }
    let dl = node.dead_letter.as_ref()?;
    Some(NodeConfig {
        path: format!("sinks[{i}].dead_letter"),
        spec: NodeSpec {
            name: format!("{}-dead-letter", node.name),
            kind: dl.kind.clone(),
            config: dl.config.clone(),
            ..NodeSpec::default()
        },
        parallelism: spec.parallelism,
        checkpoint: spec.checkpoint.clone(),
    })
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Transform => "transform",
        Role::Sink => "sink",
    }
}

/// The config handed to a factory for node `i` of `role`.
pub fn node_config(spec: &PipelineSpec, role: Role, i: usize) -> NodeConfig {
    let node = match role {
        Role::Source => &spec.sources[i],
        Role::Transform => &spec.transforms[i],
        Role::Sink => &spec.sinks[i],
    };
    NodeConfig {
        path: format!("{}[{i}]", role.list()),
        spec: node.clone(),
        parallelism: spec.parallelism,
        checkpoint: spec.checkpoint.clone(),
    }
}

fn spec_errors(e: Error, path: &str) -> Vec<SpecError> {
    match e {
        Error::Spec(list) => list,
        other => vec![SpecError::new(path, other.to_string())],
    }
}
