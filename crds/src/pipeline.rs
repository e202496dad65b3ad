//! The pipeline spec: sources → transforms → sinks, checkpoint settings and parallelism.
//!
//! Connector settings are kept as a free-form map here: each connector owns its typed config (in the
//! runtime, next to its code) and checks it with paths like `sinks[0].rolling.max_part_size`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::failure::{CircuitBreakerSpec, DeadLetterSpec, Restart, RestartSpec};
use crate::units::Duration;

/// Default number of key groups: the unit in which keyed state is redistributed on rescale.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// Most workers a job may have: each is a pod (or a task group of `weir run`) with its own
/// checkpoints; 100000 stalls the start long before it runs.
pub const PARALLELISM_LIMIT: u32 = 1024;
/// Most key groups (Flink's limit too): keyed state keeps a map per group.
pub const MAX_PARALLELISM_LIMIT: u32 = 32768;
/// Most complete checkpoints kept per worker.
pub const RETAINED_LIMIT: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PipelineSpec {
    /// Job name; names checkpoint directories and metric labels. In a StreamJob it may be left
    /// out: the operator fills in the StreamJob's name (an empty name fails `check_structure`).
    #[serde(default, deserialize_with = "not_null")]
    pub name: String,
    /// Number of workers; each owns a deterministic subset of the source splits.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Number of key groups keyed state is split into (the upper bound for rescaling).
    #[serde(default = "default_max_parallelism")]
    pub max_parallelism: u32,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// What a failed worker does: restart in place from its latest complete checkpoint. Default:
    /// `exponential-delay` (Flink ≥ 1.19's values) with checkpointing on, `none` without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartSpec>,
    pub sources: Vec<NodeSpec>,
    #[serde(default)]
    pub transforms: Vec<NodeSpec>,
    pub sinks: Vec<NodeSpec>,
}

fn one() -> u32 {
    1
}
fn default_max_parallelism() -> u32 {
    DEFAULT_MAX_PARALLELISM
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct CheckpointSpec {
    /// Turn checkpointing off (sinks then only commit at the end of a bounded job).
    pub enabled: bool,
    pub interval: Duration,
    /// A checkpoint not complete after this long is declared failed.
    pub timeout: Duration,
    /// Minimum time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Consecutive failed checkpoints tolerated before the job fails.
    pub tolerable_failures: u32,
    /// Complete checkpoints kept per worker (savepoints are never deleted by retention).
    pub retained: u32,
    pub mode: CheckpointMode,
    /// Where checkpoints and savepoints go: a local directory or a URL (`s3://bucket/prefix`).
    #[serde(deserialize_with = "not_null")]
    pub storage: String,
    /// object_store options for `storage` (e.g. `aws_endpoint`, `aws_allow_http`, `aws_region`).
    pub storage_options: BTreeMap<String, String>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            enabled: true,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            min_pause: Duration::from_millis(0),
            tolerable_failures: 0,
            retained: 3,
            mode: CheckpointMode::ExactlyOnce,
            storage: "./weir-state".into(),
            storage_options: BTreeMap::new(),
        }
    }
}

/// One source, transform or sink: a name, a type, its inputs, and the connector's own settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSpec {
    #[serde(deserialize_with = "not_null")]
    pub name: String,
    #[serde(rename = "type", deserialize_with = "not_null")]
    pub kind: String,
    /// One upstream node by name (shorthand for `inputs: [x]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Upstream nodes by name. Default: the previous transform, or every source for the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Sinks only. `false`: a failure of this sink does not fail the job; its circuit breaker
    /// opens and its records go to `dead_letter` until it works again. Default `true`: the sink
    /// back-pressures, then fails the worker into its restart strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
    /// Sinks with `critical: false`: when the breaker opens and closes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Sinks with `critical: false` (required there): the sink that takes the records this one
    /// could not, with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// The connector's or transform's own settings.
    #[serde(flatten)]
    #[schemars(skip)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// A string that may not be written as `null` (or `~`): YAML hands those to a string field as the
/// text "null", so `storage: null` would checkpoint into a directory named `./null`.
fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(d)?
        .ok_or_else(|| serde::de::Error::custom("expected a string, got null"))
}

/// An error in a spec, with the path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Which list a node sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Source,
    Transform,
    Sink,
}

impl Role {
    pub fn list(self) -> &'static str {
        match self {
            Role::Source => "sources",
            Role::Transform => "transforms",
            Role::Sink => "sinks",
        }
    }
}

/// The resolved graph: for each transform and sink, the names of its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub inputs: HashMap<String, Vec<String>>,
}

impl PipelineSpec {
    /// Parses YAML (or JSON) text; the error names the field path and, for syntax errors, the line.
    /// Size and nesting are checked before parsing ([`crate::input`]), non-finite numbers after.
    pub fn from_yaml(text: &str) -> Result<PipelineSpec, SpecError> {
        crate::input::check_text(text)?;
        // Parsed untyped first: the typed parse cannot see `.nan` in settings, which become null
        // in their `serde_json::Value`; the document is at most 1 MiB, so twice is cheap.
        let untyped: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
            // The parser leaves the position out of its message at line 1, column 1 (a tab
            // or a stray character first): say it anyway.
            let mut message = e.to_string();
            if let Some(at) = e.location().filter(|_| !message.contains(" line ")) {
                message.push_str(&format!(" at line {} column {}", at.line(), at.column()));
            }
            crate::input::serde_error("", &message)
        })?;
        if !untyped.is_mapping() {
            let got = match untyped {
                serde_norway::Value::Null => "empty",
                serde_norway::Value::Sequence(_) => "a list",
                _ => "a single value",
            };
            return Err(SpecError::new(
                "",
                format!("the document is {got}; expected a mapping with name, sources and sinks"),
            ));
        }
        if let Some(e) = crate::input::non_finite(&untyped).into_iter().next() {
            return Err(e);
        }
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            crate::input::serde_error(&path, &e.into_inner().to_string())
        })
    }

    /// The restart strategy with its defaults (none when checkpointing is off and none is given).
    pub fn restart(&self) -> Restart {
        match &self.restart {
            Some(r) => r.resolve(),
            None if self.checkpoint.enabled => Restart::DEFAULT,
            None => Restart::None,
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = (Role, usize, &NodeSpec)> {
        let s = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, n)| (Role::Source, i, n));
        let t = self
            .transforms
            .iter()
            .enumerate()
            .map(|(i, n)| (Role::Transform, i, n));
        let k = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, n)| (Role::Sink, i, n));
        s.chain(t).chain(k)
    }

    /// Checks what does not depend on any connector: counts, names, inputs, cycles, checkpoints.
    /// Returns every error found, each with its path.
    pub fn check_structure(&self) -> Result<Topology, Vec<SpecError>> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push(SpecError::new("name", "must not be empty"));
        } else if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            errors.push(SpecError::new(
                "name",
                "use only letters, digits, '-', '_' and '.'",
            ));
        }
        if self.parallelism == 0 {
            errors.push(SpecError::new("parallelism", "must be at least 1"));
        } else if self.parallelism > PARALLELISM_LIMIT {
            errors.push(SpecError::new(
                "parallelism",
                format!("must be at most {PARALLELISM_LIMIT}"),
            ));
        }
        if self.max_parallelism == 0 || self.max_parallelism < self.parallelism {
            errors.push(SpecError::new(
                "max_parallelism",
                format!("must be at least parallelism ({})", self.parallelism),
            ));
        } else if self.max_parallelism > MAX_PARALLELISM_LIMIT {
            errors.push(SpecError::new(
                "max_parallelism",
                format!("must be at most {MAX_PARALLELISM_LIMIT}"),
            ));
        }
        let cp = &self.checkpoint;
        if cp.enabled {
            if cp.interval.as_millis() < 10 {
                errors.push(SpecError::new(
                    "checkpoint.interval",
                    "must be at least 10ms",
                ));
            }
            if cp.timeout.as_millis() == 0 {
                errors.push(SpecError::new("checkpoint.timeout", "must be more than 0"));
            }
            if cp.retained == 0 {
                errors.push(SpecError::new("checkpoint.retained", "must be at least 1"));
            } else if cp.retained > RETAINED_LIMIT {
                errors.push(SpecError::new(
                    "checkpoint.retained",
                    format!("must be at most {RETAINED_LIMIT}"),
                ));
            }
        }
        if cp.storage.trim().is_empty() {
            errors.push(SpecError::new("checkpoint.storage", "must not be empty"));
        }
        if let Some(r) = &self.restart {
            errors.extend(r.check("restart"));
        }
        if self.sources.is_empty() {
            errors.push(SpecError::new("sources", "at least one source is needed"));
        }
        if self.sinks.is_empty() {
            errors.push(SpecError::new("sinks", "at least one sink is needed"));
        }

        let mut roles: HashMap<&str, Role> = HashMap::new();
        for (role, i, node) in self.nodes() {
            let path = format!("{}[{i}]", role.list());
            if node.name.is_empty() {
                errors.push(SpecError::new(format!("{path}.name"), "must not be empty"));
            } else if roles.insert(&node.name, role).is_some() {
                errors.push(SpecError::new(
                    format!("{path}.name"),
                    format!("duplicate node name {:?}", node.name),
                ));
            }
            if node.kind.is_empty() {
                errors.push(SpecError::new(format!("{path}.type"), "must not be empty"));
            }
            if role == Role::Source && (node.input.is_some() || node.inputs.is_some()) {
                errors.push(SpecError::new(
                    format!("{path}.input"),
                    "a source takes no input",
                ));
            }
            if node.input.is_some() && node.inputs.is_some() {
                errors.push(SpecError::new(
                    format!("{path}.inputs"),
                    "give either input or inputs, not both",
                ));
            }
            errors.extend(check_failure_settings(role, &path, node));
        }

        let mut inputs: HashMap<String, Vec<String>> = HashMap::new();
        let all_sources: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        let mut previous = all_sources.clone();
        for (role, i, node) in self.nodes().filter(|(r, _, _)| *r != Role::Source) {
            let path = format!("{}[{i}]", role.list());
            let declared = match (&node.input, &node.inputs) {
                (Some(one), _) => Some(vec![one.clone()]),
                (None, Some(many)) => Some(many.clone()),
                (None, None) => None,
            };
            let resolved = declared.unwrap_or_else(|| previous.clone());
            if resolved.is_empty() {
                errors.push(SpecError::new(
                    format!("{path}.inputs"),
                    "must name at least one node",
                ));
            }
            for (k, name) in resolved.iter().enumerate() {
                // Named where the user wrote it: `input`, `inputs[k]`, or (by default) `inputs`.
                let at = match (&node.input, &node.inputs) {
                    (Some(_), _) => format!("{path}.input"),
                    (None, Some(_)) => format!("{path}.inputs[{k}]"),
                    (None, None) => format!("{path}.inputs"),
                };
                match roles.get(name.as_str()) {
                    None => errors.push(SpecError::new(
                        at,
                        format!("no source or transform is named {name:?}"),
                    )),
                    Some(Role::Sink) => errors.push(SpecError::new(
                        at,
                        format!("{name:?} is a sink; sinks have no output"),
                    )),
                    Some(_) if name == &node.name => {
                        errors.push(SpecError::new(at, "a node cannot read its own output"))
                    }
                    Some(_) => {}
                }
            }
            if role == Role::Transform {
                previous = vec![node.name.clone()];
            }
            inputs.insert(node.name.clone(), resolved);
        }
        if errors.is_empty() {
            if let Some(cycle) = find_cycle(&inputs) {
                errors.push(SpecError::new(
                    "transforms",
                    format!("cycle through {cycle}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Topology { inputs })
        } else {
            Err(errors)
        }
    }
}

/// `critical`, `circuit_breaker` and `dead_letter`: sinks only, and the last two only with
/// `critical: false`, which needs a dead-letter target.
fn check_failure_settings(role: Role, path: &str, node: &NodeSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if role != Role::Sink {
        for (field, given) in [
            ("critical", node.critical.is_some()),
            ("circuit_breaker", node.circuit_breaker.is_some()),
            ("dead_letter", node.dead_letter.is_some()),
        ] {
            if given {
                errors.push(SpecError::new(
                    format!("{path}.{field}"),
                    "only sinks have it",
                ));
            }
        }
        return errors;
    }
    if node.critical == Some(false) {
        match &node.dead_letter {
            None => errors.push(SpecError::new(
                format!("{path}.dead_letter"),
                "a sink with critical: false needs a dead-letter target for the records it cannot \
                 take (e.g. {type: filesystem, path: ./dead-letters, format: json})",
            )),
            Some(d) if d.kind.trim().is_empty() => errors.push(SpecError::new(
                format!("{path}.dead_letter.type"),
                "must not be empty",
            )),
            Some(_) => {}
        }
        if let Some(b) = &node.circuit_breaker {
            errors.extend(b.check(&format!("{path}.circuit_breaker")));
        }
    } else {
        for (field, given) in [
            ("circuit_breaker", node.circuit_breaker.is_some()),
            ("dead_letter", node.dead_letter.is_some()),
        ] {
            if given {
                errors.push(SpecError::new(
                    format!("{path}.{field}"),
                    "only for a sink with critical: false (a critical sink fails the job instead)",
                ));
            }
        }
    }
    errors
}

/// Depth-first search for a cycle in the input relation; returns the node names on it.
fn find_cycle(inputs: &HashMap<String, Vec<String>>) -> Option<String> {
    fn visit<'a>(
        n: &'a str,
        inputs: &'a HashMap<String, Vec<String>>,
        done: &mut HashSet<&'a str>,
        stack: &mut Vec<&'a str>,
    ) -> Option<String> {
        if let Some(pos) = stack.iter().position(|s| *s == n) {
            let mut names: Vec<&str> = stack[pos..].to_vec();
            names.push(n);
            return Some(names.join(" -> "));
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for i in inputs.get(n).into_iter().flatten() {
            if let Some(c) = visit(i, inputs, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = HashSet::new();
    let mut names: Vec<&String> = inputs.keys().collect();
    names.sort();
    for n in names {
        if let Some(c) = visit(n, inputs, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name: demo
parallelism: 2
checkpoint: { interval: 1s, storage: /tmp/x }
sources:
  - { name: a, type: datagen, count: 10 }
  - { name: b, type: datagen, count: 10 }
transforms:
  - { name: f, type: filter, expr: "true" }
  - { name: m, type: map, fields: { x: "1" } }
sinks:
  - { name: out, type: blackhole }
  - { name: raw, type: blackhole, input: a }
"#;

    #[test]
    fn a_bad_first_character_is_placed_at_line_1() {
        // Found by the mutated-spec property test: a tab first, the parser's message had no
        // position.
        let e = PipelineSpec::from_yaml("\tnull\n").unwrap_err().to_string();
        assert!(e.contains("line 1 column 1"), "{e}");
        let e = PipelineSpec::from_yaml("name: x\n\tsources: []\n")
            .unwrap_err()
            .to_string();
        // A message that has its position keeps it, once.
        assert_eq!(e.matches(" line ").count(), 2, "{e}");
    }

    #[test]
    fn defaults_chain_the_transforms() {
        let spec = PipelineSpec::from_yaml(OK).unwrap();
        let topo = spec.check_structure().unwrap();
        assert_eq!(topo.inputs["f"], vec!["a", "b"]);
        assert_eq!(topo.inputs["m"], vec!["f"]);
        assert_eq!(topo.inputs["out"], vec!["m"]);
        assert_eq!(topo.inputs["raw"], vec!["a"]);
        assert_eq!(spec.sources[0].config["count"], 10);
        assert_eq!(spec.checkpoint.interval.as_millis(), 1000);
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let e = PipelineSpec::from_yaml("name: x\nparalelism: 2\nsources: []\nsinks: []\n")
            .unwrap_err();
        assert_eq!(e.path, "paralelism");
        assert!(
            e.message
                .starts_with("unknown field, expected one of `name`"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_has_its_path() {
        let e = PipelineSpec::from_yaml(
            "name: x\ncheckpoint: { interval: soon }\nsources: []\nsinks: []\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "checkpoint.interval");
        assert!(e.message.contains("expected a duration"), "{e}");
    }

    #[test]
    fn structure_errors_are_all_reported() {
        let spec = PipelineSpec::from_yaml(
            r#"
name: "bad name"
parallelism: 0
sources: [{ name: a, type: datagen }, { name: a, type: datagen }]
transforms: [{ name: t, type: filter, input: nope }]
sinks: [{ name: s, type: blackhole, inputs: [t, s] }]
"#,
        )
        .unwrap();
        let errs = spec.check_structure().unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let joined = text.join("\n");
        assert!(joined.contains("name: use only letters"), "{joined}");
        assert!(
            joined.contains("parallelism: must be at least 1"),
            "{joined}"
        );
        assert!(
            joined.contains("sources[1].name: duplicate node name"),
            "{joined}"
        );
        assert!(
            joined.contains("transforms[0].input: no source or transform is named \"nope\""),
            "{joined}"
        );
        assert!(joined.contains("sinks[0].inputs[1]"), "{joined}");
    }

    #[test]
    fn cycles_are_rejected() {
        let spec = PipelineSpec::from_yaml(
            r#"
name: c
sources: [{ name: a, type: datagen }]
transforms:
  - { name: t1, type: filter, inputs: [a, t2] }
  - { name: t2, type: filter, input: t1 }
sinks: [{ name: s, type: blackhole }]
"#,
        )
        .unwrap();
        let errs = spec.check_structure().unwrap_err();
        assert!(errs[0].message.contains("cycle through"), "{:?}", errs);
    }

    fn restart_of(yaml: &str) -> Result<Restart, String> {
        let text = format!("name: r\n{yaml}\nsources: [{{ name: a, type: datagen }}]\nsinks: [{{ name: s, type: blackhole }}]\n");
        let spec = PipelineSpec::from_yaml(&text).map_err(|e| e.to_string())?;
        match spec.check_structure() {
            Ok(_) => Ok(spec.restart()),
            Err(errs) => Err(errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    #[test]
    fn restart_defaults_to_flinks_exponential_delay_unless_checkpoints_are_off() {
        assert_eq!(restart_of("").unwrap(), Restart::DEFAULT);
        assert_eq!(
            restart_of("checkpoint: { enabled: false }").unwrap(),
            Restart::None
        );
        let expected = crate::failure::ExponentialDelay {
            max_backoff: std::time::Duration::from_secs(10),
            ..crate::failure::ExponentialDelay::DEFAULT
        };
        assert_eq!(
            restart_of("restart: { max_backoff: 10s }").unwrap(),
            Restart::ExponentialDelay(expected)
        );
        assert_eq!(expected.backoff, std::time::Duration::from_secs(1));
        assert_eq!((expected.multiplier, expected.jitter), (1.5, 0.1));
        assert_eq!(expected.reset_after, std::time::Duration::from_secs(3600));
        assert_eq!(
            restart_of("restart: { strategy: fixed-delay, attempts: 3, delay: 10s }").unwrap(),
            Restart::FixedDelay {
                attempts: 3,
                delay: std::time::Duration::from_secs(10)
            }
        );
        assert_eq!(
            restart_of("restart: { strategy: failure-rate }").unwrap(),
            Restart::FailureRate {
                max_failures: 1,
                interval: std::time::Duration::from_secs(60),
                delay: std::time::Duration::from_secs(1)
            }
        );
        assert_eq!(
            restart_of("restart: { strategy: none }").unwrap(),
            Restart::None
        );
    }

    #[test]
    fn restart_settings_of_another_strategy_or_out_of_range_are_named() {
        for (yaml, needle) in [
            (
                "restart: { strategy: none, delay: 1s }",
                "restart.delay: only for strategy fixed-delay or failure-rate, not none",
            ),
            (
                "restart: { strategy: fixed-delay, backoff: 1s }",
                "restart.backoff: only for strategy exponential-delay",
            ),
            (
                "restart: { multiplier: 0.5 }",
                "restart.multiplier: must be a number ≥ 1",
            ),
            (
                "restart: { jitter: 1.5 }",
                "restart.jitter: must be between 0 and 1",
            ),
            (
                "restart: { backoff: 2m }",
                "restart.max_backoff: 1m is shorter than backoff 2m",
            ),
            (
                "restart: { strategy: failure-rate, max_failures: 0 }",
                "restart.max_failures: must be at least 1",
            ),
            (
                "restart: { strategy: sometimes }",
                "restart.strategy: unknown variant",
            ),
            ("restart: { attempt: 3 }", "restart.attempt: unknown field"),
        ] {
            let e = restart_of(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn non_critical_sinks_need_a_dead_letter_target_and_only_sinks_have_one() {
        let check = |nodes: &str| {
            let spec = PipelineSpec::from_yaml(&format!("name: n\n{nodes}")).unwrap();
            spec.check_structure()
                .err()
                .unwrap_or_default()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let ok = check(
            "sources: [{ name: a, type: datagen }]\n\
             sinks: [{ name: s, type: jdbc, table: t, critical: false, \
                       circuit_breaker: { failures: 3, open_for: 5s }, \
                       dead_letter: { type: filesystem, path: /tmp/dl, format: json } }]\n",
        );
        assert_eq!(ok, "");
        let spec = PipelineSpec::from_yaml(
            "name: n\nsources: [{ name: a, type: datagen }]\n\
             sinks: [{ name: s, type: jdbc, table: t, critical: false, dead_letter: { type: filesystem, path: /tmp/dl } }]\n",
        )
        .unwrap();
        let s = &spec.sinks[0];
        assert_eq!(s.config.get("table"), Some(&serde_json::json!("t")));
        assert!(!s.config.contains_key("critical") && !s.config.contains_key("dead_letter"));
        assert_eq!(s.dead_letter.as_ref().unwrap().config["path"], "/tmp/dl");
        let e = check(
            "sources: [{ name: a, type: datagen, critical: false }]\n\
             sinks: [{ name: s, type: blackhole, critical: false }, \
                     { name: t, type: blackhole, dead_letter: { type: blackhole } }, \
                     { name: u, type: blackhole, critical: false, dead_letter: { type: blackhole }, \
                       circuit_breaker: { error_rate: 0 } }]\n",
        );
        for needle in [
            "sources[0].critical: only sinks have it",
            "sinks[0].dead_letter: a sink with critical: false needs a dead-letter target",
            "sinks[1].dead_letter: only for a sink with critical: false",
            "sinks[2].circuit_breaker.error_rate: must be above 0",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn bad_documents_are_refused_with_their_path() {
        let nodes =
            "sources: [{ name: a, type: datagen }]\nsinks: [{ name: s, type: blackhole }]\n";
        let parse = |head: &str| PipelineSpec::from_yaml(&format!("name: n\n{head}\n{nodes}"));
        let e = parse("checkpoint: { storage: null }").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("checkpoint.storage: expected a string, got null at line 2"),
            "{e}"
        );
        let e = parse("restart: { multiplier: .nan }").unwrap_err();
        assert_eq!(
            e.to_string(),
            "restart.multiplier: expected a finite number, got .nan"
        );
        let e = PipelineSpec::from_yaml(&format!(
            "name: n\n{}",
            nodes.replace("type: datagen", "type: datagen, rate: -.inf")
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "sources[0].rate: expected a finite number, got -.inf"
        );
        let e = parse(&format!("x: {}", "[".repeat(100_000))).unwrap_err();
        assert!(
            e.message
                .contains("nesting deeper than 64 levels at line 2"),
            "{e}"
        );
        let e = parse("checkpoint: { interval: 9999999999999999999999d }").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "checkpoint.interval: \"9999999999999999999999d\" is too long; at most 365d"
            ),
            "{e}"
        );
        for (text, got) in [
            ("", "empty"),
            ("~", "empty"),
            ("[1]", "a list"),
            ("3", "a single value"),
        ] {
            let e = PipelineSpec::from_yaml(text).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("the document is {got}; expected a mapping with name, sources and sinks")
            );
        }
        let e = PipelineSpec::from_yaml("name: n\nsources: []\n").unwrap_err();
        assert!(
            e.to_string().starts_with("sinks: required, but missing"),
            "{e}"
        );
        let e = parse("parallelism: 99999999999").unwrap_err();
        assert!(e.to_string().starts_with("parallelism: invalid value: integer `99999999999`, expected a whole number from 0 to 4294967295"), "{e}");
        for (head, needle) in [
            (
                "parallelism: 100000\nmax_parallelism: 100000",
                "parallelism: must be at most 1024",
            ),
            (
                "max_parallelism: 100000",
                "max_parallelism: must be at most 32768",
            ),
            (
                "checkpoint: { retained: 5000 }",
                "checkpoint.retained: must be at most 1000",
            ),
        ] {
            let errs = parse(head).unwrap().check_structure().unwrap_err();
            assert!(
                errs.iter().any(|e| e.to_string() == needle),
                "{head}: {errs:?}"
            );
        }
    }
}
