//! A namespace on the real control plane with its own test kubelet, and bounded waits that
//! show the kubelet's and the containers' logs when they fail.

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The admin kubeconfig: `$KUBECONFIG` when set (e2e/test.sh, or your own control plane),
/// otherwise `e2e/services/kube.sh up`, which starts a throwaway one (kept for later runs, as
/// the other services).
pub fn kubeconfig() -> PathBuf {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                return PathBuf::from(path);
            }
            let script = repo_root().join("e2e/services/kube.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg("up")
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{} up failed", script.display());
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("KUBECONFIG="))
                .map(PathBuf::from)
                .expect("kube.sh up prints KUBECONFIG")
        })
        .clone()
}

pub async fn client() -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig()).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

/// kubectl v1.35 and helm v4 (e2e/services/helm.sh).
pub fn tool(which: &str) -> PathBuf {
    let script = repo_root().join("e2e/services/helm.sh");
    let arg = if which == "helm" { "path" } else { "kubectl" };
    let out = Command::new("bash")
        .arg(script)
        .arg(arg)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm.sh {arg} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Polls `check` every 200 ms until it returns Some, for at most `timeout`; panics naming
/// `what` and showing `env`'s logs.
pub async fn wait_for<T, F, Fut>(env: &TestEnv, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "{what}: not reached within {timeout:?}\n{}",
                env.diagnostics()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Options of a test's kubelet.
pub struct KubeletOptions {
    pub backoff_base: &'static str,
    pub bin_dir: Option<PathBuf>,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            backoff_base: "1s",
            bin_dir: None,
        }
    }
}

/// A fresh namespace served by its own test kubelet (its own Node and pod IP range). `finish`
/// deletes the namespace and waits until the kubelet has stopped its Pods; a failing test leaves
/// its logs under `state_dir`.
pub struct TestEnv {
    pub client: Client,
    pub ns: String,
    pub node: String,
    pub state_dir: PathBuf,
    kubelet: Child,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    pub async fn start(name: &str, opts: KubeletOptions) -> TestEnv {
        let client = client().await;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let ns = format!("e2e-{name}-{pid}-{n}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        let state_dir = std::env::temp_dir().join("weir-e2e").join(&ns);
        std::fs::create_dir_all(&state_dir).unwrap();
        // Each kubelet its own /24 of loopback addresses, so tests running at the same time (in
        // this process or another) never hand out the same pod IP.
        let cidr = format!("127.{}.{}.0/24", 100 + pid % 150, 1 + n % 250);
        let log = std::fs::File::create(state_dir.join("kubelet.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_test-kubelet"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["--node-name", &ns, "--namespaces", &ns, "--pod-cidr", &cidr])
            .args([
                "--backoff-base",
                opts.backoff_base,
                "--backoff-max",
                "8s",
                "--volume-sync",
                "1s",
            ])
            .arg("--dockerfile")
            .arg(repo_root().join("Dockerfile"))
            .arg("--state-dir")
            .arg(&state_dir)
            // Probe failures are logged at debug: WEIR_E2E_KUBELET_LOG=debug shows them.
            .env(
                "RUST_LOG",
                std::env::var("WEIR_E2E_KUBELET_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(bin) = &opts.bin_dir {
            cmd.arg("--bin-dir").arg(bin);
        }
        let kubelet = cmd.spawn().expect("start test-kubelet");
        let env = TestEnv {
            client,
            ns: ns.clone(),
            node: ns,
            state_dir,
            kubelet,
        };
        // The controller-manager creates the namespace's `default` ServiceAccount; Pods need it.
        let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
        wait_for(
            &env,
            "default ServiceAccount",
            Duration::from_secs(30),
            || {
                let sas = sas.clone();
                async move { sas.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        env
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates an object of this namespace from JSON.
    pub async fn create<K>(&self, value: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(value).expect("valid object");
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"))
    }

    /// A container's log (everything its starts printed).
    pub fn log(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(
            self.state_dir
                .join("logs")
                .join(&self.ns)
                .join(pod)
                .join(format!("{container}.log")),
        )
        .unwrap_or_default()
    }

    /// Waits for a Pod to satisfy `check`; returns it.
    pub async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let pods = self.pods();
        wait_for(self, &format!("pod {name}: {what}"), timeout, || {
            let pods = pods.clone();
            let check = &check;
            async move { pods.get_opt(name).await.ok().flatten().filter(|p| check(p)) }
        })
        .await
    }

    /// Waits until a Pod no longer exists; returns how long that took.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let pods = self.pods();
        wait_for(self, &format!("pod {name} removed"), timeout, || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await;
        start.elapsed()
    }

    /// The kubelet's log and every container log of this namespace.
    pub fn diagnostics(&self) -> String {
        let mut out = format!("--- state dir {}\n", self.state_dir.display());
        let kubelet =
            std::fs::read_to_string(self.state_dir.join("kubelet.log")).unwrap_or_default();
        let lines: Vec<&str> = kubelet.lines().collect();
        out += "--- kubelet.log (last 60 lines)\n";
        out += &lines[lines.len().saturating_sub(60)..].join("\n");
        let logs = self.state_dir.join("logs").join(&self.ns);
        for pod in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            for c in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out += &format!("\n--- {}\n", c.path().display());
                out += &std::fs::read_to_string(c.path()).unwrap_or_default();
            }
        }
        out
    }

    /// Deletes the namespace, waits (bounded) until its Pods are gone, stops the kubelet and
    /// removes the state directory.
    pub async fn finish(mut self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await;
        let pods = self.pods();
        if !matches!(self.kubelet.try_wait(), Ok(None)) {
            // No kubelet to stop them: force-delete (grace 0), as one would for a lost node.
            let force = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = pods.delete_collection(&force, &Default::default()).await;
            // …and remove its Node, as its SIGTERM path would have.
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
            let _ = nodes.delete(&self.node, &DeleteParams::default()).await;
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match pods.list(&Default::default()).await {
                Ok(list) if list.items.is_empty() => break,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        self.stop_kubelet();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }

    /// `kill -9` of the kubelet (no chance to clean up).
    pub fn kill_kubelet(&mut self) {
        let _ = self.kubelet.kill();
        let _ = self.kubelet.wait();
    }

    fn stop_kubelet(&mut self) {
        if let Ok(None) = self.kubelet.try_wait() {
            // SIGTERM: the kubelet deletes its Node; its container processes die with it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.kubelet.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.kubelet.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.kubelet.kill();
            let _ = self.kubelet.wait();
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop_kubelet();
    }
}

/// The container status of `container` in a Pod.
pub fn container_status<'a>(
    pod: &'a Pod,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}
