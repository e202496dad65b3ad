//! The Kubernetes objects a StreamJob owns, built as pure functions of the job and its plan.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use weir_crds::stream_job::UpgradeMode;
use weir_crds::{PipelineSpec, StreamJob};

use crate::error::{Error, Result};
use crate::pods::PodObservation;
use crate::resolve::Resolved;
use crate::upgrade::Restore;

pub const JOB_LABEL: &str = "weir.dev/job";
pub const HASH_ANNOTATION: &str = "weir.dev/config-hash";
pub const RESTORE_ANNOTATION: &str = "weir.dev/restore-from";
pub const PIPELINE_FILE: &str = "pipeline.yaml";
pub const CONFIG_DIR: &str = "/etc/weir";
pub const FIELD_MANAGER: &str = "weir-operator";

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

fn meta(job: &StreamJob, name: String) -> ObjectMeta {
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
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::Serialize {
        what: "the spec hash input".into(),
        message: e.to_string(),
    })?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

pub fn config_map(job: &StreamJob, pipeline: &PipelineSpec, hash: &str) -> Result<ConfigMap> {
    let yaml = serde_norway::to_string(pipeline).map_err(|e| Error::Serialize {
        what: "the pipeline".into(),
        message: e.to_string(),
    })?;
    let mut m = meta(job, config_map_name(&job.name_any(), hash));
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
        metadata: meta(job, name.clone()),
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
        metadata: meta(job, name.clone()),
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
        volume_mounts: Some(vec![VolumeMount {
            name: "pipeline".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(job, name.clone()),
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
                    volumes: Some(vec![Volume {
                        name: "pipeline".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map_name(&name, plan.hash),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
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
