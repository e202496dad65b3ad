//! A container's environment as the kubelet builds it (`makeEnvironmentVariables`): the service
//! variables first (`KUBERNETES_SERVICE_HOST`/`PORT`…), then `envFrom`, then `env` in order, each
//! `env[].value` expanded with what is defined before it; and the downward API fields.
//! Everything here is pure: the ConfigMaps and Secrets come in as fetched objects.

use super::expand::expand;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use std::collections::{BTreeMap, BTreeSet};

/// What the kubelet knows about a running Pod beyond its object.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    /// Node allocatable CPU (cores) and memory (bytes): the value of `limits.*` for a container
    /// without limits, as in a kubelet.
    pub node_cpu: f64,
    pub node_memory: f64,
}

/// ConfigMaps and Secrets of the Pod's namespace that the Pod refers to, by name; a name missing
/// here does not exist.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

impl Objects {
    /// Key → value of a ConfigMap (`data` and `binaryData`), None when it does not exist.
    pub fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name)?;
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in cm.data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        Some(out)
    }

    /// Key → value of a Secret, None when it does not exist.
    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(name)?;
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }
}

/// Names of the ConfigMaps and Secrets the Pod's containers and volumes refer to.
pub fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(src) = &e.value_from else { continue };
            if let Some(r) = &src.config_map_key_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &src.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// The value of a downward API `fieldRef.fieldPath`.
pub fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let map_lines = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}\n", serde_json::Value::String(v.clone())))
            .collect::<String>()
    };
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(map_entry(&meta.labels, key));
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(map_entry(&meta.annotations, key));
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(&meta.labels),
        "metadata.annotations" => map_lines(&meta.annotations),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        other => return Err(format!("unsupported fieldPath {other:?}")),
    })
}

/// `metadata.labels['key']` → `key`.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")?;
    Some(inner)
}

/// A Kubernetes quantity (`500m`, `2`, `64Mi`, `1G`, `1e3`) as a number.
pub fn parse_quantity(q: &str) -> Result<f64, String> {
    let q = q.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let number = number
        .strip_suffix('E')
        .map(|n| (n, 1e18))
        .unwrap_or((number, 1.0));
    let value: f64 = number
        .0
        .parse()
        .map_err(|_| format!("not a quantity: {q:?}"))?;
    Ok(value * factor * number.1)
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) with its divisor,
/// rounded up as the kubelet does; limits default to the node's allocatable.
pub fn resource_value(
    container: &Container,
    facts: &PodFacts,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let res = container.resources.as_ref();
    let get = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.and_then(|m| m.get(name))
            .map(|q| parse_quantity(&q.0))
            .transpose()
    };
    let node = match name {
        "cpu" => facts.node_cpu,
        "memory" => facts.node_memory,
        other => return Err(format!("unsupported resource {other:?}")),
    };
    let value = match kind {
        "limits" => get(res.and_then(|r| r.limits.as_ref()))?.unwrap_or(node),
        "requests" => get(res.and_then(|r| r.requests.as_ref()))?
            .or(get(res.and_then(|r| r.limits.as_ref()))?)
            .unwrap_or(0.0),
        other => return Err(format!("unsupported resource kind {other:?}")),
    };
    let divisor = parse_quantity(divisor.unwrap_or("1"))?;
    if divisor <= 0.0 {
        return Err(format!("divisor of {resource} must be positive"));
    }
    Ok(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as u64
    ))
}

fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The container's environment, in the kubelet's order; `service_env` comes first. An error names
/// the variable and what is missing (the kubelet's CreateContainerConfigError).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    objects: &Objects,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for (k, v) in service_env {
        set(&mut env, k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match objects.config_map(&r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(format!("envFrom: configmap {:?} not found", r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secret(&r.name) {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(format!("envFrom: secret {:?} not found", r.name)),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            // The kubelet skips keys that are no valid variable names.
            if k.is_empty() || k.contains('=') {
                continue;
            }
            set(&mut env, format!("{prefix}{k}"), utf8(v));
        }
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let defined = env.clone();
                let lookup = |n: &str| {
                    defined
                        .iter()
                        .rev()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                };
                expand(e.value.as_deref().unwrap_or(""), lookup)
            }
            Some(src) => {
                if let Some(f) = &src.field_ref {
                    field_value(pod, facts, &f.field_path)
                        .map_err(|m| format!("env {}: {m}", e.name))?
                } else if let Some(r) = &src.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(name) if name != container.name => pod
                            .spec
                            .iter()
                            .flat_map(|s| s.containers.iter())
                            .find(|c| c.name == name)
                            .ok_or_else(|| format!("env {}: no container {name:?}", e.name))?,
                        _ => container,
                    };
                    resource_value(
                        target,
                        facts,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )
                    .map_err(|m| format!("env {}: {m}", e.name))?
                } else if let Some(r) = &src.config_map_key_ref {
                    match objects.config_map(&r.name).map(|d| d.get(&r.key).cloned()) {
                        Some(Some(v)) => utf8(v),
                        _ if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!("env {}: configmap {:?} not found", e.name, r.name))
                        }
                        Some(None) => {
                            return Err(format!(
                                "env {}: key {:?} not found in configmap {:?}",
                                e.name, r.key, r.name
                            ))
                        }
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    match objects.secret(&r.name).map(|d| d.get(&r.key).cloned()) {
                        Some(Some(v)) => utf8(v),
                        _ if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!("env {}: secret {:?} not found", e.name, r.name))
                        }
                        Some(None) => {
                            return Err(format!(
                                "env {}: key {:?} not found in secret {:?}",
                                e.name, r.key, r.name
                            ))
                        }
                    }
                } else {
                    return Err(format!("env {}: unsupported valueFrom", e.name));
                }
            }
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// The argv a container runs, with `$(VAR)` expanded from its environment: `command` + `args`;
/// without `command` the image's ENTRYPOINT + (`args` or the image's CMD).
pub fn container_argv(
    container: &Container,
    image_entrypoint: &[String],
    image_cmd: &[String],
    env: &[(String, String)],
) -> Vec<String> {
    let lookup = |n: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone();
    let argv: Vec<String> = if !command.is_empty() {
        command
            .into_iter()
            .chain(args.unwrap_or_default())
            .collect()
    } else {
        let args = args
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| image_cmd.to_vec());
        image_entrypoint.iter().cloned().chain(args).collect()
    };
    argv.iter().map(|a| expand(a, lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "w-0", "namespace": "ns", "uid": "u-1",
                          "labels": {"apps.kubernetes.io/pod-index": "0", "app": "weir"},
                          "annotations": {"note": "a \"quoted\" value"}},
            "spec": {"serviceAccountName": "runner", "nodeName": "node-a", "containers": [{
                "name": "main",
                "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "base"}, "prefix": "CM_"},
                            {"secretRef": {"name": "absent", "optional": true}}],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "ADDR", "value": "$(POD_IP):9000"},
                    {"name": "LATER_REF", "value": "$(DEFINED_AFTER)"},
                    {"name": "DEFINED_AFTER", "value": "x"},
                    {"name": "INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "base", "key": "level"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "CM_level", "value": "overridden"}
                ]
            }]}
        }))
        .unwrap()
    }

    fn objects() -> Objects {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "base"}, "data": {"level": "debug", "bad=key": "x"}}),
        )
        .unwrap();
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        Objects {
            config_maps: [("base".to_string(), cm)].into(),
            secrets: [("creds".to_string(), secret)].into(),
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "127.0.0.7".into(),
            host_ip: "127.0.0.1".into(),
            node_name: "node-a".into(),
            node_cpu: 2.0,
            node_memory: 8.0 * 1024.0 * 1024.0 * 1024.0,
        }
    }

    #[test]
    fn builds_the_environment_in_kubelet_order() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let service = vec![(
            "KUBERNETES_SERVICE_HOST".to_string(),
            "127.0.0.1".to_string(),
        )];
        let env = container_env(&p, c, &facts(), &objects(), &service).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(env[0].0, "KUBERNETES_SERVICE_HOST");
        assert_eq!(get("POD_IP"), Some("127.0.0.7"));
        assert_eq!(get("ADDR"), Some("127.0.0.7:9000"));
        assert_eq!(
            get("LATER_REF"),
            Some("$(DEFINED_AFTER)"),
            "only earlier variables expand"
        );
        assert_eq!(get("INDEX"), Some("0"));
        assert_eq!(get("SA"), Some("runner"));
        assert_eq!(get("PASSWORD"), Some("s3cret"));
        assert_eq!(get("LEVEL"), Some("debug"));
        assert_eq!(get("OPT"), None, "optional and missing: not set");
        assert_eq!(get("MEM_MI"), Some("256"));
        assert_eq!(
            get("CPU_LIMIT"),
            Some("2"),
            "no limit: the node's allocatable"
        );
        assert_eq!(get("CM_level"), Some("overridden"), "env overrides envFrom");
        assert_eq!(get("CM_bad=key"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "CM_level").count(), 1);
    }

    #[test]
    fn a_missing_required_reference_names_the_variable() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut objs = objects();
        objs.secrets.clear();
        assert_eq!(
            container_env(&p, c, &facts(), &objs, &[]).unwrap_err(),
            "env PASSWORD: secret \"creds\" not found"
        );
        let mut objs = objects();
        objs.config_maps.clear();
        assert_eq!(
            container_env(&p, c, &facts(), &objs, &[]).unwrap_err(),
            "envFrom: configmap \"base\" not found"
        );
    }

    #[test]
    fn downward_fields() {
        let p = pod();
        let f = facts();
        assert_eq!(field_value(&p, &f, "metadata.name").unwrap(), "w-0");
        assert_eq!(field_value(&p, &f, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&p, &f, "metadata.uid").unwrap(), "u-1");
        assert_eq!(
            field_value(&p, &f, "metadata.labels['app']").unwrap(),
            "weir"
        );
        assert_eq!(
            field_value(&p, &f, "metadata.labels['missing']").unwrap(),
            ""
        );
        assert_eq!(
            field_value(&p, &f, "metadata.annotations['note']").unwrap(),
            "a \"quoted\" value"
        );
        assert_eq!(
            field_value(&p, &f, "metadata.annotations").unwrap(),
            "note=\"a \\\"quoted\\\" value\"\n"
        );
        assert_eq!(field_value(&p, &f, "spec.nodeName").unwrap(), "node-a");
        assert_eq!(field_value(&p, &f, "status.hostIP").unwrap(), "127.0.0.1");
        assert!(field_value(&p, &f, "spec.bogus")
            .unwrap_err()
            .contains("spec.bogus"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert_eq!(parse_quantity("64Mi").unwrap(), 64.0 * 1024.0 * 1024.0);
        assert_eq!(parse_quantity("1G").unwrap(), 1e9);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000.0);
        assert!(parse_quantity("lots").is_err());
        let c = Container::default();
        assert_eq!(
            resource_value(&c, &facts(), "limits.cpu", Some("1m")).unwrap(),
            "2000"
        );
        assert_eq!(
            resource_value(&c, &facts(), "requests.cpu", None).unwrap(),
            "0"
        );
    }

    #[test]
    fn argv_follows_command_args_and_image_defaults() {
        let env = vec![("POD_IP".to_string(), "127.0.0.7".to_string())];
        let ep = vec!["weir-operator".to_string()];
        let cmd = vec!["run".to_string()];
        let c = |command: Option<Vec<&str>>, args: Option<Vec<&str>>| Container {
            command: command.map(|v| v.into_iter().map(String::from).collect()),
            args: args.map(|v| v.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        assert_eq!(
            container_argv(&c(None, None), &ep, &cmd, &env),
            ["weir-operator", "run"]
        );
        assert_eq!(
            container_argv(
                &c(None, Some(vec!["run", "--addr=$(POD_IP)"])),
                &ep,
                &cmd,
                &env
            ),
            ["weir-operator", "run", "--addr=127.0.0.7"]
        );
        assert_eq!(
            container_argv(
                &c(Some(vec!["sh", "-c", "echo $$(POD_IP) $(POD_IP)"]), None),
                &ep,
                &cmd,
                &env
            ),
            ["sh", "-c", "echo $(POD_IP) 127.0.0.7"]
        );
    }
}
