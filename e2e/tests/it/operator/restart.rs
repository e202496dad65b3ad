//! The API server restarted under a running operator: its watches recover and it acts on what
//! changed while and after the server was away. On a control plane of its own (restarting the
//! shared one would cut every other test off), with the operator as a plain process and no
//! kubelet: what is checked is the operator's reaction in the API (StatefulSets, status).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::bin_dir;
use crate::harness::{repo_root, tool};

const NS: &str = "jobs";

/// A control plane started with `e2e/services/kube.sh` in a directory of its own.
struct ControlPlane {
    run: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn kube_sh(run: &Path, cmd: &str) -> String {
        let out = Command::new("bash")
            .arg(repo_root().join("e2e/services/kube.sh"))
            .arg(cmd)
            .env("WEIR_SERVICES_RUN", run)
            // Otherwise kube.sh takes the shared control plane for an external one to use.
            .env_remove("KUBECONFIG")
            .env_remove("KUBE_API_URL")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "kube.sh {cmd} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn up() -> ControlPlane {
        let run = std::env::temp_dir().join(format!("weir-e2e-apiserver-{}", std::process::id()));
        let env = Self::kube_sh(&run, "up");
        let kubeconfig = env
            .lines()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .map(PathBuf::from)
            .expect("kube.sh up prints KUBECONFIG");
        ControlPlane { run, kubeconfig }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) {
        use std::io::Write;
        let mut child = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("e2e/services/kube.sh"))
            .arg("down")
            .env("WEIR_SERVICES_RUN", &self.run)
            .env_remove("KUBECONFIG")
            .env_remove("KUBE_API_URL")
            .output();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn job(name: &str, parallelism: u32) -> String {
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{ name: {name}, namespace: {NS} }}
spec:
  image: ghcr.io/weir/weir:0.1.0
  parallelism: {parallelism}
  upgradeMode: stateless
  pipeline:
    checkpoint: {{ interval: 1s, storage: /tmp/weir-state/{name} }}
    sources:
      - {{ name: gen, type: datagen, count: 10, fields: {{ id: {{ kind: sequence }} }} }}
    sinks:
      - {{ name: out, type: filesystem, path: /tmp/weir-out/{name}, format: json }}
"#
    )
}

async fn wait_replicas(api: &Api<StatefulSet>, name: &str, replicas: i32, log: &Path) -> Duration {
    let start = Instant::now();
    loop {
        // Errors are expected while the server restarts: keep asking.
        if let Ok(Some(s)) = api.get_opt(name).await {
            if s.spec.and_then(|s| s.replicas) == Some(replicas) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "StatefulSet {name} never got {replicas} replicas\noperator log:\n{}{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            std::fs::read_to_string(log.with_file_name("operator.stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_api_server_restarts_the_watches_recover() {
    let cp = ControlPlane::up();
    cp.kubectl(
        &[
            "apply",
            "--server-side",
            "-f",
            &repo_root()
                .join("charts/weir-operator/crds")
                .display()
                .to_string(),
        ],
        None,
    );
    cp.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/streamjobs.weir.dev",
        ],
        None,
    );
    cp.kubectl(&["create", "namespace", NS], None);
    let log = cp.run.join("operator.log");
    let operator = Operator(
        Command::new(bin_dir().join("weir-operator"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("WATCH_NAMESPACES", NS)
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(cp.run.join("operator.stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let sts: Api<StatefulSet> = Api::namespaced(cp.client().await, NS);
    cp.kubectl(&["apply", "-f", "-"], Some(&job("before", 1)));
    wait_replicas(&sts, "before", 1, &log).await;

    ControlPlane::kube_sh(&cp.run, "restart");

    // A new job and a change to the old one, both after the restart: the StreamJob watch is back.
    cp.kubectl(&["apply", "-f", "-"], Some(&job("after", 1)));
    let new_job = wait_replicas(&sts, "after", 1, &log).await;
    cp.kubectl(&["apply", "-f", "-"], Some(&job("before", 2)));
    let rescaled = wait_replicas(&sts, "before", 2, &log).await;
    // The StatefulSet watch too: a deleted StatefulSet is put back.
    cp.kubectl(&["-n", NS, "delete", "statefulset", "after"], None);
    let recreated = wait_replicas(&sts, "after", 1, &log).await;
    println!(
        "measure: after an API server restart: new job deployed {new_job:.1?}, rescale {rescaled:.1?}, \
         deleted StatefulSet restored {recreated:.1?}"
    );
    drop(operator);
}
