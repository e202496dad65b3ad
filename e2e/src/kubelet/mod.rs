//! A kubelet for tests: Pods of a real control plane run as local processes (see the crate
//! README and `test-kubelet --help`). Decisions are pure modules (`expand`, `env`, `probe`,
//! `backoff`, `ipam`, `image`, `status`, the file half of `volumes`); `node`, `pod`,
//! `container` and `process` do the I/O.

pub mod backoff;
mod container;
pub mod env;
pub mod expand;
pub mod image;
pub mod ipam;
pub mod node;
mod pod;
pub mod probe;
pub mod process;
pub mod status;
pub mod volumes;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How the kubelet runs (the command line of `test-kubelet`).
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Namespaces whose pending Pods this kubelet binds to its Node; empty: all.
    pub namespaces: Vec<String>,
    /// Stands in for the image's /usr/local/bin: first on every container's PATH.
    pub bin_dir: Option<PathBuf>,
    /// The Dockerfile whose stages give images their ENTRYPOINT/CMD/ENV.
    pub dockerfile: Option<PathBuf>,
    /// Logs (`logs/<namespace>/<pod>/<container>.log`), volumes and scratch dirs.
    pub state_dir: PathBuf,
    pub pod_cidr: String,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often ConfigMap, Secret, projected and downwardAPI volumes are refreshed.
    pub volume_sync: Duration,
    /// This binary, run as `shim` for each container process.
    pub shim_exe: PathBuf,
}

/// What every Pod worker shares.
pub(crate) struct Kubelet {
    pub client: Client,
    pub cfg: Config,
    pub dockerfile: image::Dockerfile,
    pub ips: Mutex<ipam::IpPool>,
    /// KUBERNETES_SERVICE_HOST / PORT: the API server's loopback address.
    pub api_host: String,
    pub api_port: u16,
    pub node_cpu: f64,
    pub node_memory: f64,
}

impl Kubelet {
    pub fn log_path(&self, ns: &str, pod: &str, container: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("logs")
            .join(ns)
            .join(pod)
            .join(format!("{container}.log"))
    }
}

/// Registers the Node and runs Pods until the process ends.
pub async fn run(client: Client, cluster_url: &http::Uri, cfg: Config) -> anyhow::Result<()> {
    let dockerfile = match &cfg.dockerfile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            image::Dockerfile::parse(&text).with_context(|| path.display().to_string())?
        }
        None => image::Dockerfile::default(),
    };
    let ips = ipam::IpPool::new(&cfg.pod_cidr)?;
    std::fs::create_dir_all(&cfg.state_dir)?;
    let api_host = cluster_url
        .host()
        .context("cluster URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let api_port = cluster_url.port_u16().unwrap_or(443);
    let (node_cpu, node_memory) = node::host_capacity();
    node::register(&client, &cfg.node_name)
        .await
        .context("registering the Node")?;
    tracing::info!(node = %cfg.node_name, "node registered");
    tokio::spawn(node::heartbeat(client.clone(), cfg.node_name.clone()));
    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        cfg,
        dockerfile,
        ips: Mutex::new(ips),
        api_host,
        api_port,
        node_cpu,
        node_memory,
    });
    watch_pods(kubelet).await
}

struct Worker {
    tx: watch::Sender<Option<Pod>>,
}

/// One watch over all Pods: pending Pods of the served namespaces are bound to this Node, Pods
/// on this Node get a worker each (keyed by uid), which receives every update of its Pod and
/// `None` once the Pod is gone from the API.
async fn watch_pods(k: Arc<Kubelet>) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(k.client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
            }
            event = events.next() => {
                let Some(event) = event else { anyhow::bail!("pod watch ended") };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error (retrying)");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                match event {
                    watcher::Event::Init => listed.clear(),
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                        listed.insert(pod.uid().unwrap_or_default());
                        on_pod(&k, pod, &mut workers, &done_tx);
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(w) = workers.get(&pod.uid().unwrap_or_default()) {
                            let _ = w.tx.send(None);
                        }
                    }
                    watcher::Event::InitDone => {
                        // Pods deleted while the watch was down.
                        for (uid, w) in &workers {
                            if !listed.contains(uid) {
                                let _ = w.tx.send(None);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn on_pod(
    k: &Arc<Kubelet>,
    pod: Pod,
    workers: &mut HashMap<String, Worker>,
    done: &mpsc::UnboundedSender<String>,
) {
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.as_ref();
    match spec.and_then(|s| s.node_name.as_deref()) {
        None => {
            if should_bind(&k.cfg, &pod) {
                tokio::spawn(bind(k.clone(), pod));
            }
        }
        Some(node) if node == k.cfg.node_name => match workers.get(&uid) {
            Some(w) => {
                let _ = w.tx.send(Some(pod));
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod));
                workers.insert(uid.clone(), Worker { tx });
                let k = k.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    pod::run_pod(k, rx).await;
                    let _ = done.send(uid);
                });
            }
        },
        Some(_) => {}
    }
}

/// A pending Pod this kubelet schedules: in a served namespace, for the default scheduler, not
/// being deleted and not finished.
pub fn should_bind(cfg: &Config, pod: &Pod) -> bool {
    let ns = pod.namespace().unwrap_or_default();
    let spec = match pod.spec.as_ref() {
        Some(s) => s,
        None => return false,
    };
    let served = cfg.namespaces.is_empty() || cfg.namespaces.contains(&ns);
    let default_scheduler = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|s| s == "default-scheduler");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    served
        && default_scheduler
        && spec.node_name.is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && phase == "Pending"
}

/// Binds a Pod to this Node through the Binding subresource, as the scheduler does.
async fn bind(k: Arc<Kubelet>, pod: Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(k.client.clone(), &ns);
    let binding: Binding = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": k.cfg.node_name},
    }))
    .expect("a valid Binding");
    match api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "bound"),
        // Already bound (a repeated event) or gone: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(namespaces: &[&str]) -> Config {
        Config {
            node_name: "n".into(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            bin_dir: None,
            dockerfile: None,
            state_dir: "/tmp".into(),
            pod_cidr: "127.0.0.0/24".into(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            volume_sync: Duration::from_secs(10),
            shim_exe: "/bin/false".into(),
        }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn binds_only_pending_pods_of_served_namespaces() {
        let pending =
            pod(json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": []}}));
        assert!(should_bind(&cfg(&[]), &pending));
        assert!(should_bind(&cfg(&["a"]), &pending));
        assert!(!should_bind(&cfg(&["b"]), &pending));
        let bound = pod(
            json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "x", "containers": []}}),
        );
        assert!(!should_bind(&cfg(&[]), &bound));
        let other = pod(
            json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"schedulerName": "custom", "containers": []}}),
        );
        assert!(!should_bind(&cfg(&[]), &other));
        let deleting = pod(
            json!({"metadata": {"name": "p", "namespace": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": []}}),
        );
        assert!(!should_bind(&cfg(&[]), &deleting));
        let failed = pod(
            json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": []}, "status": {"phase": "Failed"}}),
        );
        assert!(!should_bind(&cfg(&[]), &failed));
    }
}
