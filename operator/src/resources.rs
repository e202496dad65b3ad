//! The Kubernetes objects a StreamJob owns, built as pure functions of the job and its plan.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use weir_crds::stream_job::UpgradeMode;
use weir_crds::{PipelineSpec, StreamJob};

use crate::error::{Error, Result};
use crate::lifecycle::Restore;
use crate::pods::PodObservation;
use crate::resolve::Resolved;

pub const JOB_LABEL: &str = "weir.dev/job";
pub const HASH_ANNOTATION: &str = "weir.dev/config-hash";
pub const RESTORE_ANNOTATION: &str = "weir.dev/restore-from";
pub const PIPELINE_FILE: &str = "pipeline.yaml";
pub const CONFIG_DIR: &str = "/etc/weir";
pub const FIELD_MANAGER: &str = "weir-operator";
/// The worker image's user and group (`USER 10001:10001` in the Dockerfile).
pub const WORKER_UID: i64 = 10001;
/// Writable scratch space of a worker (an `emptyDir`: the root filesystem is read-only).
pub const SCRATCH_DIR: &str = "/tmp";

pub fn labels(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "weir".into()),
        ("app.kubernetes.io/instance".into(), job.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "weir-operator".into(),
        ),
        (JOB_LABEL.into(), job.into()),
    ])
}

pub fn selector(job: &str) -> String {
    format!("{JOB_LABEL}={job}")
}

/// ConfigMaps are named by config hash: pods not yet rolled keep reading their own pipeline.
pub fn config_map_name(job: &str, hash: &str) -> String {
    format!("{job}-{}", &hash[..hash.len().min(10)])
}

/// `http://<pod IP>:<admin port>`: the address the worker binds (`$(POD_IP)`). The pod IP comes
/// from the pod's status, so a new pod is reachable as soon as it runs (pod DNS through the
/// headless Service lags behind new pods), and a stopping pod stays reachable for savepoint polls.
pub fn worker_url(job: &StreamJob, _worker: u32, pod: Option<&PodObservation>) -> Option<String> {
    let ip = pod?.ip.as_deref()?;
    // An IPv6 pod IP needs brackets in a URL.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(format!("http://{host}:{}", job.spec.admin_port))
}

fn owner(job: &StreamJob) -> Vec<OwnerReference> {
    job.controller_owner_ref(&()).into_iter().collect()
}

/// Metadata of an object the job owns: its labels and a controller owner reference, so that
/// the job's deletion garbage-collects it.
pub fn owned_meta(job: &StreamJob, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels(&job.name_any())),
        owner_references: Some(owner(job)),
        ..Default::default()
    }
}

/// The hash of everything whose change needs the workers restarted: the resolved pipeline,
/// the pod's shape, the credentials' contents (as digests) and `restartNonce`.
pub fn spec_hash(
    job: &StreamJob,
    resolved: &Resolved,
    secret_digests: &BTreeMap<String, String>,
) -> Result<String> {
    let s = &job.spec;
    let doc = serde_json::json!({
        "pipeline": resolved.pipeline,
        "env": resolved.env,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "parallelism": s.parallelism,
        "resources": s.resources,
        "podTemplate": s.pod_template,
        "adminPort": s.admin_port,
        "restartNonce": s.restart_nonce,
        "allowNonRestoredState": s.allow_non_restored_state,
        "secrets": secret_digests,
    });
    content_hash(&doc, "the spec hash input")
}

/// The one hash format of [`HASH_ANNOTATION`]: 16 bytes of the SHA-256 of the JSON, in hex.
fn content_hash<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Serialize {
        what: what.into(),
        message: e.to_string(),
    })?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// `obj` with [`HASH_ANNOTATION`] set to the hash of its content, as the StatefulSet carries the
/// spec hash: a reconcile compares the hash it reads with the one it would write
/// ([`up_to_date`]) and writes only when they differ, instead of re-applying every object on
/// every reconcile.
pub fn stamped<K: Resource + serde::Serialize>(mut obj: K) -> Result<K> {
    let meta = obj.meta_mut();
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(HASH_ANNOTATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
    let hash = content_hash(&obj, "an owned object")?;
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_ANNOTATION.into(), hash);
    Ok(obj)
}

/// Whether the object as read (`None`: it does not exist) already is `desired` (from
/// [`stamped`]): it carries the same content hash. An object without the annotation (written by
/// hand, or by an older operator) is rewritten. A hand edit that keeps the annotation is not
/// seen, as with the StatefulSet; the object is rewritten with the next change of its content.
pub fn up_to_date<K: Resource>(desired: &K, observed: Option<&ObjectMeta>) -> bool {
    let hash = |m: &ObjectMeta| m.annotations.as_ref()?.get(HASH_ANNOTATION).cloned();
    match (hash(desired.meta()), observed.and_then(hash)) {
        (Some(want), Some(have)) => want == have,
        _ => false,
    }
}

pub fn config_map(job: &StreamJob, pipeline: &PipelineSpec, hash: &str) -> Result<ConfigMap> {
    let yaml = serde_norway::to_string(pipeline).map_err(|e| Error::Serialize {
        what: "the pipeline".into(),
        message: e.to_string(),
    })?;
    let mut m = owned_meta(job, config_map_name(&job.name_any(), hash));
    m.annotations = Some(BTreeMap::from([(HASH_ANNOTATION.into(), hash.into())]));
    Ok(ConfigMap {
        metadata: m,
        data: Some(BTreeMap::from([(PIPELINE_FILE.into(), yaml)])),
        ..Default::default()
    })
}

pub fn service(job: &StreamJob) -> Service {
    let name = job.name_any();
    Service {
        metadata: owned_meta(job, name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(JOB_LABEL.into(), name)])),
            ports: Some(vec![ServicePort {
                name: Some("admin".into()),
                port: job.spec.admin_port.into(),
                target_port: Some(IntOrString::String("admin".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn pdb(job: &StreamJob) -> PodDisruptionBudget {
    let name = job.name_any();
    PodDisruptionBudget {
        metadata: owned_meta(job, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            // One worker at a time: each restarts from its own checkpoint, independently.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(JOB_LABEL.into(), name)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the StatefulSet runs.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerPlan<'a> {
    pub hash: &'a str,
    pub replicas: u32,
    pub restore: &'a Restore,
    pub env: &'a [EnvVar],
    /// Grace for SIGTERM: the checkpoint in flight finishes first.
    pub termination_grace_secs: i64,
}

pub fn stateful_set(job: &StreamJob, plan: &WorkerPlan) -> StatefulSet {
    let name = job.name_any();
    let spec = &job.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels(&name));
    let mut annotations = overrides.annotations.clone();
    annotations.insert(HASH_ANNOTATION.into(), plan.hash.into());
    // `weir run` is the container's process 1, so SIGTERM reaches it (a `sh -c` wrapper as
    // process 1 would ignore it). `--idle-when-done`: a job that finished or was stopped by a
    // savepoint keeps its pod idle instead of exiting 0, because a restarted container would run
    // the old spec again from an older checkpoint until the operator rolls the pod; failures
    // still exit, so Kubernetes restarts them.
    let mut args = vec![
        "run".to_string(),
        "--quiet".to_string(),
        "--idle-when-done".to_string(),
        format!("{CONFIG_DIR}/{PIPELINE_FILE}"),
    ];
    if let Restore::Savepoint(path) = plan.restore {
        annotations.insert(RESTORE_ANNOTATION.into(), path.clone());
        args.push("--from-savepoint".into());
        args.push(path.clone());
    }
    if plan.restore == &Restore::Fresh && spec.upgrade_mode == UpgradeMode::Stateless {
        // The config hash names this start, so a restarted pod resumes from the checkpoints of
        // the same deployment instead of starting without state again.
        args.push("--start-fresh".into());
        args.push(plan.hash.to_string());
    }
    let mut env = vec![
        EnvVar {
            // The pod-index label (Kubernetes ≥ 1.28) is the pod's ordinal.
            name: "WEIR_WORKER_INDEX".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.labels['apps.kubernetes.io/pod-index']".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        plain("WEIR_PARALLELISM", spec.parallelism.to_string()),
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The pod IP, where the operator calls it; `$(POD_IP)` is expanded by the kubelet (it is
        // defined above). Not 0.0.0.0: pods that share a network (a process kubelet in the tests)
        // would then collide on the port.
        plain("WEIR_ADMIN_ADDR", format!("$(POD_IP):{}", spec.admin_port)),
        // The token `POST /v1/savepoints` needs; the operator holds the same one.
        EnvVar {
            name: "WEIR_ADMIN_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: crate::admin_secret::secret_name(&name),
                    key: crate::admin_secret::TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if spec.allow_non_restored_state {
        env.push(plain("WEIR_ALLOW_NON_RESTORED_STATE", "true".into()));
    }
    env.extend(plan.env.iter().cloned());
    env.extend(overrides.env.iter().cloned());
    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(vec!["weir".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: spec.admin_port.into(),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("admin".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        // No liveness probe: the admin API comes up only after the restore (which can take long
        // for big state), and a worker that stops answering shows as unreachable in the status.
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "pipeline".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "scratch".into(),
                mount_path: SCRATCH_DIR.into(),
                ..Default::default()
            },
        ]),
        security_context: Some(container_security()),
        ..Default::default()
    };
    StatefulSet {
        metadata: owned_meta(job, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(plan.replicas as i32),
            service_name: Some(name.clone()),
            // Workers share nothing: start and replace them all at once, not one by one.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(JOB_LABEL.into(), name.clone())])),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: overrides.service_account_name.clone(),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    termination_grace_period_seconds: Some(plan.termination_grace_secs),
                    security_context: Some(pod_security()),
                    volumes: Some(vec![
                        Volume {
                            name: "pipeline".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map_name(&name, plan.hash),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        // Temporary files (and a local checkpoint path under /tmp, which only a
                        // single pod's lifetime keeps anyway) on a read-only root filesystem.
                        Volume {
                            name: "scratch".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// The worker pod's security context: the Kubernetes "restricted" Pod Security Standard, with
/// the image's own non-root user, so that a namespace enforcing it admits the workers.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKER_UID),
        run_as_group: Some(WORKER_UID),
        // The emptyDir is writable by the worker's group.
        fs_group: Some(WORKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The worker container's security context (the restricted standard's container rules).
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Who may reach the workers' admin port, from the operator's settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkPolicySettings {
    /// Render policies at all (`--network-policies`); a job can also turn its own off.
    pub enabled: bool,
    /// The operator's namespace and pod labels (the chart's selector labels).
    pub operator_namespace: String,
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Prometheus, for `/metrics` on the same port: namespace labels and pod labels (either
    /// may be empty, meaning any); `None`: no scraper is let in.
    pub metrics_from: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
}

/// Labels written `k=v,k=v` (empty: none); `flag` names the setting in the error.
pub fn parse_labels(flag: &str, text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(Error::Other(format!(
                    "{flag}: expected labels like key=value,key=value, got {pair:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// The job's NetworkPolicy, or `None` when it is switched off (for the job or the operator).
/// Ingress only (workers reach their sources and sinks freely); to the admin port, only the
/// operator's pods and the configured Prometheus. Kubelet probes come from the node, which
/// network policies do not apply to.
pub fn network_policy(job: &StreamJob, settings: &NetworkPolicySettings) -> Option<NetworkPolicy> {
    if !settings.enabled || !job.spec.network_policy.enabled {
        return None;
    }
    let name = job.name_any();
    let port = || {
        Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(job.spec.admin_port.into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }])
    };
    let selector = |labels: &BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(selector(&BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            settings.operator_namespace.clone(),
        )]))),
        pod_selector: Some(selector(&settings.operator_pod_labels)),
        ..Default::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![operator]),
        ports: port(),
    }];
    if let Some((namespaces, pods)) = &settings.metrics_from {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(selector(namespaces)),
                pod_selector: Some(selector(pods)),
                ..Default::default()
            }]),
            ports: port(),
        });
    }
    Some(NetworkPolicy {
        metadata: owned_meta(job, name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(JOB_LABEL.into(), name)])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(extra: serde_json::Value) -> StreamJob {
        let mut spec = json!({"image": "weir:1", "parallelism": 2, "pipeline": {
            "sources": [{"name": "gen", "type": "datagen"}],
            "sinks": [{"name": "out", "type": "blackhole"}]}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "orders", "namespace": "prod", "uid": "u-1"},
            "spec": spec
        }))
        .unwrap()
    }

    fn settings() -> NetworkPolicySettings {
        NetworkPolicySettings {
            enabled: true,
            operator_namespace: "weir-system".into(),
            operator_pod_labels: parse_labels(
                "--operator-pod-labels",
                "app.kubernetes.io/name=weir-operator, app.kubernetes.io/instance=weir",
            )
            .unwrap(),
            metrics_from: None,
        }
    }

    #[test]
    fn the_content_hash_follows_the_content_and_ignores_a_stale_hash() {
        let a = stamped(service(&job(json!({})))).unwrap();
        let hash = |s: &Service| s.annotations()[HASH_ANNOTATION].clone();
        assert_eq!(hash(&a).len(), 32);
        // Stamping again (the object read back, with its annotation) gives the same hash.
        assert_eq!(hash(&stamped(a.clone()).unwrap()), hash(&a));
        let b = stamped(service(&job(json!({"adminPort": 9000})))).unwrap();
        assert_ne!(hash(&a), hash(&b));
        assert!(up_to_date(&a, Some(&a.metadata)));
        assert!(!up_to_date(&a, Some(&b.metadata)));
        assert!(!up_to_date(&a, None));
        // Nothing to compare with: an unstamped desired object is always written.
        assert!(!up_to_date(&service(&job(json!({}))), Some(&a.metadata)));
    }

    #[test]
    fn worker_pods_meet_the_restricted_pod_security_standard() {
        let restore = Restore::Fresh;
        let sts = stateful_set(
            &job(json!({})),
            &WorkerPlan {
                hash: "abcdef0123456789",
                replicas: 2,
                restore: &restore,
                env: &[],
                termination_grace_secs: 40,
            },
        );
        let pod = serde_json::to_value(sts.spec.unwrap().template.spec.unwrap()).unwrap();
        assert_eq!(
            pod["securityContext"],
            json!({"fsGroup": 10001, "runAsGroup": 10001, "runAsNonRoot": true,
                   "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let c = &pod["containers"][0];
        assert_eq!(
            c["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                   "readOnlyRootFilesystem": true, "runAsNonRoot": true})
        );
        // The read-only root needs a writable /tmp.
        assert_eq!(
            c["volumeMounts"][1],
            json!({"name": "scratch", "mountPath": "/tmp"})
        );
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "scratch", "emptyDir": {}})
        );
        let env = c["env"].as_array().unwrap();
        let token = env
            .iter()
            .find(|e| e["name"] == "WEIR_ADMIN_TOKEN")
            .unwrap();
        assert_eq!(
            token["valueFrom"],
            json!({"secretKeyRef": {"name": "orders-admin-token", "key": "token", "optional": false}})
        );
    }

    #[test]
    fn the_network_policy_lets_in_the_operator_and_the_configured_scraper_only() {
        let np = network_policy(&job(json!({"adminPort": 9000})), &settings()).unwrap();
        assert_eq!(np.metadata.name.as_deref(), Some("orders"));
        assert_eq!(np.metadata.owner_references.unwrap()[0].uid, "u-1");
        assert_eq!(
            serde_json::to_value(np.spec.unwrap()).unwrap(),
            json!({
                "podSelector": {"matchLabels": {"weir.dev/job": "orders"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "weir-system"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "weir",
                                                        "app.kubernetes.io/name": "weir-operator"}}
                    }],
                    "ports": [{"port": 9000, "protocol": "TCP"}]
                }]
            })
        );
        let mut with_prometheus = settings();
        with_prometheus.metrics_from = Some((
            BTreeMap::new(),
            BTreeMap::from([("app".to_string(), "prometheus".to_string())]),
        ));
        let np = network_policy(&job(json!({})), &with_prometheus).unwrap();
        let ingress = serde_json::to_value(np.spec.unwrap().ingress).unwrap();
        assert_eq!(
            ingress[1],
            json!({"from": [{"namespaceSelector": {"matchLabels": {}},
                             "podSelector": {"matchLabels": {"app": "prometheus"}}}],
                   "ports": [{"port": 8081, "protocol": "TCP"}]})
        );
        // Off for one job, or for all.
        assert!(network_policy(
            &job(json!({"networkPolicy": {"enabled": false}})),
            &settings()
        )
        .is_none());
        let off = NetworkPolicySettings {
            enabled: false,
            ..settings()
        };
        assert!(network_policy(&job(json!({})), &off).is_none());
    }

    #[test]
    fn label_settings_name_the_flag_when_wrong() {
        assert_eq!(parse_labels("--x", " ").unwrap(), BTreeMap::new());
        assert_eq!(
            parse_labels("--x", "a=1,b=").unwrap(),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "".into())])
        );
        let e = parse_labels("--metrics-pod-labels", "app")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metrics-pod-labels") && e.contains("\"app\""),
            "{e}"
        );
        assert!(parse_labels("--x", "=v").is_err());
    }
}
