//! One Pod on this Node: its IP, its volumes, a task per container, its status, and its end
//! (graceful stop on deletion, then the object is removed so controllers proceed).

use super::container::{self, Stop};
use super::env::{referenced_objects, Objects, PodFacts};
use super::status::{ContainerRecord, PodRecord};
use super::volumes::{self, Source};
use super::Kubelet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// What the container tasks of a Pod share.
pub(crate) struct PodCtx {
    pub kubelet: Arc<Kubelet>,
    pub pod: Pod,
    pub ns: String,
    pub name: String,
    pub facts: PodFacts,
    pub record: Mutex<PodRecord>,
    pub changed: Notify,
    /// Volume name → directory on the host.
    pub volume_dirs: BTreeMap<String, PathBuf>,
    /// The working directory of containers that set none.
    pub scratch: PathBuf,
}

impl PodCtx {
    /// Changes the record and has the status written.
    pub fn update(&self, f: impl FnOnce(&mut PodRecord)) {
        let mut r = self.record.lock().expect("record lock");
        f(&mut r);
        r.update_conditions(chrono::Utc::now());
        drop(r);
        self.changed.notify_one();
    }
}

/// Fetches the ConfigMaps and Secrets the Pod refers to; those that do not exist are absent.
pub(crate) async fn fetch_objects(k: &Kubelet, pod: &Pod) -> kube::Result<Objects> {
    let ns = pod.namespace().unwrap_or_default();
    let (cm_names, secret_names) = referenced_objects(pod);
    let cms: Api<ConfigMap> = Api::namespaced(k.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(k.client.clone(), &ns);
    let mut objects = Objects::default();
    for name in cm_names {
        if let Some(cm) = cms.get_opt(&name).await? {
            objects.config_maps.insert(name, cm);
        }
    }
    for name in secret_names {
        if let Some(s) = secrets.get_opt(&name).await? {
            objects.secrets.insert(name, s);
        }
    }
    Ok(objects)
}

/// Tokens already requested for a volume: (path, audience) → (token, refresh after).
type Tokens = BTreeMap<(String, Option<String>), (String, Instant)>;

/// Writes every volume of the Pod (first time and on each refresh).
async fn sync_volumes(ctx: &PodCtx, tokens: &mut Tokens) -> Result<(), String> {
    let k = &ctx.kubelet;
    let objects = fetch_objects(k, &ctx.pod)
        .await
        .map_err(|e| format!("reading configmaps/secrets: {e}"))?;
    let claims = k.cfg.state_dir.join("claims");
    for v in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = &ctx.volume_dirs[&v.name];
        let (source, needs) = volumes::volume_source(&ctx.pod, v, &ctx.facts, &objects, &claims)?;
        match source {
            Source::EmptyDir => {
                std::fs::create_dir_all(dir).map_err(|e| format!("volume {:?}: {e}", v.name))?
            }
            Source::HostDir(path) => std::fs::create_dir_all(&path)
                .map_err(|e| format!("volume {:?}: {}: {e}", v.name, path.display()))?,
            Source::Files(mut files) => {
                for need in needs {
                    let token = service_account_token(ctx, &need, tokens).await?;
                    files.insert(need.path.clone(), (token.into_bytes(), need.mode));
                }
                volumes::write_atomic(dir, &files)
                    .map_err(|e| format!("volume {:?}: writing files: {e}", v.name))?;
            }
        }
    }
    Ok(())
}

/// A token of the Pod's ServiceAccount bound to the Pod (TokenRequest API), reused until 80 %
/// of its lifetime has passed, as the kubelet does.
async fn service_account_token(
    ctx: &PodCtx,
    need: &volumes::TokenNeed,
    tokens: &mut Tokens,
) -> Result<String, String> {
    let key = (need.path.clone(), need.audience.clone());
    if let Some((token, refresh_at)) = tokens.get(&key) {
        if Instant::now() < *refresh_at {
            return Ok(token.clone());
        }
    }
    let sa = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.kubelet.client.clone(), &ctx.ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: need.audience.iter().cloned().collect(),
            expiration_seconds: Some(need.expiration_seconds),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(ctx.name.clone()),
                uid: ctx.pod.uid(),
            }),
        },
        ..Default::default()
    };
    let issued = Instant::now();
    let answer = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token request for serviceaccount {sa:?}: {e}"))?;
    let status = answer
        .status
        .ok_or("token request answered without a token")?;
    let seconds_left = status.expiration_timestamp.0.as_second() - chrono::Utc::now().timestamp();
    let lifetime = Duration::from_secs(seconds_left.max(60) as u64);
    tokens.insert(key, (status.token.clone(), issued + lifetime.mul_f64(0.8)));
    Ok(status.token)
}

/// Writes the Pod status whenever it changed, until `stop` is set.
async fn status_writer(ctx: Arc<PodCtx>, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::namespaced(ctx.kubelet.client.clone(), &ctx.ns);
    let mut last_written = None;
    loop {
        let patch = ctx.record.lock().expect("record lock").status_patch();
        if last_written.as_ref() != Some(&patch) {
            match api
                .patch_status(&ctx.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => last_written = Some(patch),
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    if *stop.borrow() {
                        return;
                    }
                    tracing::warn!(pod = %ctx.name, error = %e, "writing pod status (retrying)");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = ctx.changed.notified() => {}
            _ = stop.changed() => {
                if *stop.borrow() { return; }
            }
        }
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Runs one Pod from its binding to its removal.
pub(crate) async fn run_pod(k: Arc<super::Kubelet>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let ip = if host_network {
        None
    } else {
        k.ips.lock().expect("ip lock").allocate()
    };
    let pod_ip = match (host_network, ip) {
        (true, _) => Some("127.0.0.1".to_string()),
        (false, Some(ip)) => Some(ip.to_string()),
        (false, None) => None,
    };
    let pod_dir = k
        .cfg
        .state_dir
        .join("pods")
        .join(format!("{ns}_{name}_{uid}"));
    let volume_dirs: BTreeMap<String, PathBuf> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), pod_dir.join("volumes").join(&v.name)))
        .collect();
    let scratch = pod_dir.join("scratch");
    let _ = std::fs::create_dir_all(&scratch);
    let containers: Vec<ContainerRecord> = spec
        .containers
        .iter()
        .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or("")))
        .collect();
    let now = chrono::Utc::now();
    let mut record = PodRecord::new(containers, "127.0.0.1", now);
    record.pod_ip = pod_ip.clone();
    if pod_ip.is_none() {
        record.message = Some((
            "NoPodIP".into(),
            format!("no free address in --pod-cidr {}", k.cfg.pod_cidr),
        ));
    }
    record.update_conditions(now);
    let ctx = Arc::new(PodCtx {
        facts: PodFacts {
            pod_ip: pod_ip.clone().unwrap_or_default(),
            host_ip: "127.0.0.1".into(),
            node_name: k.cfg.node_name.clone(),
            node_cpu: k.node_cpu,
            node_memory: k.node_memory,
        },
        kubelet: k.clone(),
        pod: pod.clone(),
        ns: ns.clone(),
        name: name.clone(),
        record: Mutex::new(record),
        changed: Notify::new(),
        volume_dirs,
        scratch,
    });
    tracing::info!(pod = %format!("{ns}/{name}"), ip = ?pod_ip, "starting pod");
    let (writer_stop_tx, writer_stop_rx) = watch::channel(false);
    let writer = tokio::spawn(status_writer(ctx.clone(), writer_stop_rx));

    // Volumes first (retried until they can be written, as ContainerCreating), then containers.
    let mut tokens = Tokens::new();
    let finished_already = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let mut end: Option<Option<Pod>> = None;
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let mut tasks = Vec::new();
    if pod_ip.is_some()
        && !finished_already
        && spec.init_containers.as_ref().is_none_or(|i| i.is_empty())
    {
        loop {
            match sync_volumes(&ctx, &mut tokens).await {
                Ok(()) => {
                    ctx.update(|r| r.message = None);
                    break;
                }
                Err(message) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), %message, "volumes not ready");
                    ctx.update(|r| {
                        r.message = Some(("ContainerCreating".into(), message.clone()));
                        for c in &mut r.containers {
                            c.state = super::status::State::Waiting {
                                reason: "ContainerCreating".into(),
                                message: Some(message.clone()),
                            };
                        }
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                changed = rx.changed() => {
                    let current = if changed.is_ok() { rx.borrow().clone() } else { None };
                    if current.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
                        end = Some(current);
                        break;
                    }
                }
            }
        }
        if end.is_none() {
            for index in 0..spec.containers.len() {
                tasks.push(tokio::spawn(container::run_container(
                    ctx.clone(),
                    index,
                    stop_rx.clone(),
                )));
            }
        }
    } else if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
        let message = "init containers are not supported by the test kubelet".to_string();
        ctx.update(|r| r.message = Some(("Unsupported".into(), message)));
    }

    // Refresh volumes until the Pod is deleted.
    let mut refresh = tokio::time::interval(k.cfg.volume_sync);
    refresh.reset();
    while end.is_none() {
        tokio::select! {
            _ = refresh.tick(), if !tasks.is_empty() => {
                if let Err(message) = sync_volumes(&ctx, &mut tokens).await {
                    tracing::warn!(pod = %format!("{ns}/{name}"), %message, "refreshing volumes");
                }
            }
            changed = rx.changed() => {
                let current = if changed.is_ok() { rx.borrow().clone() } else { None };
                if current.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
                    end = Some(current);
                }
            }
        }
    }
    let still_there = end.flatten();
    let stop = match &still_there {
        Some(p) => Stop::Graceful(grace_of(p)),
        None => Stop::Now,
    };
    tracing::info!(pod = %format!("{ns}/{name}"), ?stop, "stopping pod");
    let _ = stop_tx.send(stop);
    for t in tasks {
        let _ = t.await;
    }
    // Let the last status (terminated containers) reach the API, then remove the object: the
    // kubelet's final delete with grace 0, bound to this uid.
    ctx.changed.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = writer_stop_tx.send(true);
    let _ = writer.await;
    if still_there.is_some() {
        let api: Api<Pod> = Api::namespaced(k.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for attempt in 0..5 {
            match api.delete(&name, &dp).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => break,
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, attempt, "final delete failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    if let Some(ip) = ip {
        k.ips.lock().expect("ip lock").release(ip);
    }
    let _ = std::fs::remove_dir_all(&pod_dir);
    tracing::info!(pod = %format!("{ns}/{name}"), "pod removed");
}
