//! The Node this kubelet is: registered Ready with capacity, kept alive by its Lease in
//! `kube-node-lease` (renewed every 10 s, as the node lifecycle controller expects) and a status
//! heartbeat.

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use std::time::Duration;

const FIELD_MANAGER: &str = "test-kubelet";
pub const KUBELET_VERSION: &str = "v1.34.4";

/// The node's capacity: the host's cores and memory.
pub fn host_capacity() -> (f64, f64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(4.0 * 1024.0 * 1024.0);
    (cpus, mem_kib * 1024.0)
}

fn node_status(cpus: f64, memory: f64) -> serde_json::Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let capacity = json!({
        "cpu": format!("{cpus}"),
        "memory": format!("{}Ki", (memory / 1024.0) as u64),
        "pods": "110",
        "ephemeral-storage": "100Gi",
    });
    json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "test-kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "weir test-kubelet",
                "containerRuntimeVersion": "process://test-kubelet",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            }
        }
    })
}

/// Creates or updates the Node and reports it Ready.
pub async fn register(client: &Client, name: &str) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "weir.dev/test-kubelet": "true",
            }
        }
    });
    nodes
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await?;
    let (cpus, memory) = host_capacity();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&node_status(cpus, memory)),
        )
        .await?;
    Ok(())
}

async fn renew_lease(client: &Client, name: &str) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}
    });
    leases
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

/// Renews the Lease every 10 s and re-posts the Ready status every 40 s, forever; errors are
/// logged and retried on the next tick.
pub async fn heartbeat(client: Client, name: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&client, &name).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        if n % 4 == 3 {
            if let Err(e) = register(&client, &name).await {
                tracing::warn!(error = %e, "posting node status");
            }
        }
        n += 1;
    }
}
