//! Resolving a StreamJob's pipeline: filling nodes that name a Connector with its endpoint,
//! default properties and credentials. Credentials never enter the pipeline document (and so the
//! ConfigMap): a node gets `${env:NAME}` and the pod gets `NAME` from the Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use serde_json::{Map, Value};
use weir_crds::connector::{
    ConnectorSpec, ConnectorType, ElasticsearchEndpoint, EventHubsEndpoint, SecretKeyRef,
};
use weir_crds::pipeline::Role;
use weir_crds::{PipelineSpec, SpecError, StreamJobSpec};

/// The node key naming a Connector.
pub const CONNECTOR_REF: &str = "connectorRef";

#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub pipeline: PipelineSpec,
    /// Environment variables the workers need (credentials from Secrets).
    pub env: Vec<EnvVar>,
    /// Connectors used, by name (for probing results such as the broker's transaction maximum).
    pub connectors: Vec<String>,
    /// Secrets referenced (for the config hash, and to hold the deployment while one is
    /// missing), with the Connector and setting each fills.
    pub secrets: Vec<SecretUse>,
}

/// A Secret key a Connector's setting reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    pub secret: SecretKeyRef,
    pub connector: String,
    pub setting: String,
}

/// Checks a resolved pipeline exactly as `weir validate` checks a file (the runtime's own
/// registry: structure and every node's settings, no I/O), so the operator never deploys what
/// the workers would refuse. Paths are relative to the pipeline (`sinks[0].table: …`).
pub fn validate(pipeline: &PipelineSpec) -> Vec<SpecError> {
    weir_runtime::registry::Registry::with_builtins()
        .validate(pipeline)
        .err()
        .unwrap_or_default()
}

/// Resolves `spec.pipeline` against the Connectors of the namespace. Returns every problem.
pub fn resolve(
    job_name: &str,
    spec: &StreamJobSpec,
    connectors: &BTreeMap<String, ConnectorSpec>,
) -> Result<Resolved, Vec<SpecError>> {
    let mut pipeline = spec.pipeline.clone();
    if pipeline.name.trim().is_empty() {
        pipeline.name = job_name.to_string();
    }
    pipeline.parallelism = spec.parallelism;
    let mut errors = Vec::new();
    let mut env: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut used = Vec::new();
    let mut secrets = Vec::new();
    let lists: [(Role, &mut Vec<weir_crds::NodeSpec>); 3] = [
        (Role::Source, &mut pipeline.sources),
        (Role::Transform, &mut pipeline.transforms),
        (Role::Sink, &mut pipeline.sinks),
    ];
    for (role, nodes) in lists {
        for (i, node) in nodes.iter_mut().enumerate() {
            let path = format!("pipeline.{}[{i}]", role.list());
            let Some(reference) = node.config.remove(CONNECTOR_REF) else {
                continue;
            };
            let Some(name) = reference.as_str().filter(|s| !s.is_empty()) else {
                errors.push(SpecError::new(
                    format!("{path}.{CONNECTOR_REF}"),
                    "must be the name of a Connector",
                ));
                continue;
            };
            let Some(connector) = connectors.get(name) else {
                errors.push(SpecError::new(
                    format!("{path}.{CONNECTOR_REF}"),
                    format!("no Connector named {name:?} in this namespace"),
                ));
                continue;
            };
            let accepted = connector.type_.node_types();
            if !accepted.contains(&node.kind.as_str()) {
                errors.push(SpecError::new(
                    format!("{path}.{CONNECTOR_REF}"),
                    format!(
                        "Connector {name:?} is of type {}, which nodes of type {} use; this node is of type {}",
                        connector.type_.as_str(),
                        accepted.join(", "),
                        node.kind
                    ),
                ));
                continue;
            }
            let mut base = connector.properties.clone();
            apply_endpoint(connector, &mut base);
            if let Some(e) = &connector.eventhubs {
                apply_hub(e, role, &node.config, &mut base);
            }
            let mut refs = Vec::new();
            if let Some(sasl) = connector.kafka.as_ref().and_then(|k| k.sasl.as_ref()) {
                if let Some(r) = &sasl.username.secret_key_ref {
                    refs.push(("properties.sasl.username".to_string(), r.clone()));
                }
                refs.push((
                    "properties.sasl.password".to_string(),
                    sasl.password.secret_key_ref.clone(),
                ));
            }
            if let Some(e) = &connector.eventhubs {
                refs.push((
                    "eventhubs.connection_string".to_string(),
                    e.connection_string.secret_key_ref.clone(),
                ));
            }
            for c in &connector.credentials {
                refs.push((c.setting.clone(), c.secret_key_ref.clone()));
            }
            for (setting, secret) in refs {
                let var = env_name(name, &setting);
                set_setting(
                    &mut base,
                    &setting,
                    Value::String(format!("${{env:{var}}}")),
                );
                env.insert(var.clone(), secret_env(&var, &secret));
                secrets.push(SecretUse {
                    secret,
                    connector: name.to_string(),
                    setting,
                });
            }
            if let (ConnectorType::Elasticsearch, Some(es)) =
                (connector.type_, &connector.elasticsearch)
            {
                for (path, secret) in elasticsearch_settings(es, &mut base) {
                    let setting = path.join(".");
                    let var = env_name(name, &setting);
                    set_path(&mut base, &path, Value::String(format!("${{env:{var}}}")));
                    env.insert(var.clone(), secret_env(&var, &secret));
                    secrets.push(SecretUse {
                        secret,
                        connector: name.to_string(),
                        setting,
                    });
                }
            }
            let inline = std::mem::take(&mut node.config);
            node.config = merge(base, inline);
            if !used.iter().any(|u| u == name) {
                used.push(name.to_string());
            }
        }
    }
    if errors.is_empty() {
        secrets.sort();
        secrets.dedup();
        Ok(Resolved {
            pipeline,
            env: env.into_values().collect(),
            connectors: used,
            secrets,
        })
    } else {
        Err(errors)
    }
}

/// The connector's endpoint as node settings (keys of the runtime connectors).
fn apply_endpoint(c: &ConnectorSpec, out: &mut Map<String, Value>) {
    if c.type_ == ConnectorType::S3 {
        // The filesystem node reads object_store's options.
        let mut opts = Map::new();
        if let Some(r) = &c.region {
            opts.insert("aws_region".into(), r.clone().into());
        }
        if let Some(e) = &c.endpoint {
            opts.insert("aws_endpoint".into(), e.clone().into());
            if e.starts_with("http://") {
                opts.insert("aws_allow_http".into(), "true".into());
            }
        }
        if !opts.is_empty() {
            let existing = take_map(out, "storage_options");
            out.insert(
                "storage_options".into(),
                Value::Object(merge(opts, existing)),
            );
        }
        return;
    }
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.insert(k.into(), Value::String(v.clone()));
        }
    };
    set("url", &c.url);
    set("region", &c.region);
    // The AWS connectors take the SDK's name for it.
    match c.type_ {
        ConnectorType::Kinesis | ConnectorType::Firehose => set("endpoint_url", &c.endpoint),
        _ => set("endpoint", &c.endpoint),
    }
    set("project", &c.project);
    if let (ConnectorType::Eventhubs, Some(e)) = (c.type_, &c.eventhubs) {
        // The runtime's eventhubs profile does the rest (weir_runtime::connectors::kafka::eventhubs).
        let mut block = Map::new();
        block.insert("namespace".into(), e.namespace.clone().into());
        if e.transactions {
            block.insert("transactions".into(), true.into());
        }
        out.insert("eventhubs".into(), Value::Object(block));
    }
    if let (ConnectorType::Kafka, Some(k)) = (c.type_, &c.kafka) {
        out.insert(
            "bootstrap_servers".into(),
            Value::String(k.bootstrap_servers.clone()),
        );
        let mut props = Map::new();
        if let Some(p) = k.security_protocol {
            props.insert("security.protocol".into(), p.as_str().into());
        }
        if let Some(s) = &k.sasl {
            props.insert("sasl.mechanism".into(), s.mechanism.as_str().into());
            if let Some(u) = &s.username.value {
                props.insert("sasl.username".into(), u.clone().into());
            }
        }
        if !props.is_empty() {
            let existing = take_map(out, "properties");
            out.insert("properties".into(), Value::Object(merge(props, existing)));
        }
    }
}

/// An Elasticsearch Connector as settings of the `elasticsearch` sink: `hosts`, `auth` and `tls`.
/// Plain values are set here; the Secret-backed ones are returned with the path of the setting
/// they fill (`auth.basic.password`, `auth.api_key`, `auth.bearer`, `tls.ca_pem`).
fn elasticsearch_settings(
    es: &ElasticsearchEndpoint,
    out: &mut Map<String, Value>,
) -> Vec<(Vec<&'static str>, SecretKeyRef)> {
    let mut refs = Vec::new();
    if !es.hosts.is_empty() {
        out.insert("hosts".into(), Value::from(es.hosts.clone()));
    }
    if let Some(auth) = &es.auth {
        if let Some(b) = &auth.basic {
            match (&b.username.value, &b.username.secret_key_ref) {
                (Some(u), _) => set_path(out, &["auth", "basic", "username"], u.clone().into()),
                (None, Some(r)) => refs.push((vec!["auth", "basic", "username"], r.clone())),
                (None, None) => {}
            }
            refs.push((
                vec!["auth", "basic", "password"],
                b.password.secret_key_ref.clone(),
            ));
        }
        if let Some(k) = &auth.api_key {
            refs.push((vec!["auth", "api_key"], k.secret_key_ref.clone()));
        }
        if let Some(t) = &auth.bearer {
            refs.push((vec!["auth", "bearer"], t.secret_key_ref.clone()));
        }
    }
    if let Some(tls) = &es.tls {
        if let Some(ca) = &tls.ca {
            refs.push((vec!["tls", "ca_pem"], ca.secret_key_ref.clone()));
        }
        if tls.insecure_skip_verify {
            set_path(out, &["tls", "insecure_skip_verify"], Value::Bool(true));
        }
    }
    refs
}

/// Sets the nested setting `path` (`["auth", "basic", "password"]`), creating the maps on the way.
fn set_path(node: &mut Map<String, Value>, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = node;
    for p in parents {
        let entry = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = entry.as_object_mut().expect("made an object just above");
    }
    map.insert(last.to_string(), value);
}

/// Removes the map setting `key` (empty when absent or not a map).
fn take_map(out: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match out.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The hub as the node's topic, unless the node names its own.
fn apply_hub(
    e: &EventHubsEndpoint,
    role: Role,
    node: &Map<String, Value>,
    out: &mut Map<String, Value>,
) {
    let Some(hub) = &e.hub else { return };
    let own = |keys: &[&str]| keys.iter().any(|k| node.contains_key(*k));
    match role {
        Role::Source if !own(&["topics", "topic_pattern"]) => {
            out.insert("topics".into(), Value::Array(vec![hub.clone().into()]));
        }
        Role::Sink if !own(&["topic", "topic_field"]) => {
            out.insert("topic".into(), hub.clone().into());
        }
        _ => {}
    }
}

/// `setting` is a node key, or `key.sub` for the entry `sub` of the map `key` (the rest after
/// the first dot is taken verbatim, because Kafka property names contain dots).
fn set_setting(node: &mut Map<String, Value>, setting: &str, value: Value) {
    match setting.split_once('.') {
        None => {
            node.insert(setting.into(), value);
        }
        Some((key, sub)) => {
            let entry = node
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(m) = entry {
                m.insert(sub.into(), value);
            }
        }
    }
}

/// Deep merge: maps merge key by key, anything else in `top` replaces `base`.
pub fn merge(mut base: Map<String, Value>, top: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in top {
        match (base.remove(&k), v) {
            (Some(Value::Object(b)), Value::Object(t)) => {
                base.insert(k, Value::Object(merge(b, t)));
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

/// `WEIR_CONN_<CONNECTOR>_<SETTING>`, upper case, other characters as `_`.
pub fn env_name(connector: &str, setting: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("WEIR_CONN_{}_{}", clean(connector), clean(setting))
}

fn secret_env(var: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: var.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}
