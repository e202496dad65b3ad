//! The operator on the real control plane, driving real `weir` workers: the chart installed with
//! helm v4 into a namespace of its own (the operator runs as a Pod of the test kubelet, with the
//! chart's ServiceAccount token), StreamJobs applied with kubectl's strict field validation, the
//! workers' output counted on S3 (moto) by an independent reader.

mod connectors;
mod faults;
mod lifecycle;
mod rbac;
mod restart;
mod scale;
mod security;
mod validation;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use object_store::{ObjectStore, ObjectStoreExt};
use weir_crds::status::Condition;
use weir_crds::StreamJob;

use crate::harness::{is_ready, kubeconfig, repo_root, tool, KubeletOptions, TestEnv};

/// The directory holding `weir` and `weir-operator` (the image's /usr/local/bin): `WEIR_BIN_DIR`,
/// else this build's own target/<profile>, where `cargo test --workspace` builds both.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary under target/<profile>/deps")
        .to_path_buf();
    for bin in ["weir", "weir-operator"] {
        assert!(
            dir.join(bin).exists(),
            "no {bin} in {}: `cargo build -p weir-runtime -p weir-operator` (cargo test --workspace \
             builds both) or set WEIR_BIN_DIR",
            dir.display()
        );
    }
    dir
}

/// A service's env var (`S3_ENDPOINT`, `KAFKA_BOOTSTRAP`): from the environment (e2e/test.sh),
/// else from `e2e/services/<service>.sh up`.
pub fn service_env(service: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let script = repo_root().join(format!("e2e/services/{service}.sh"));
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{} up failed", script.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{service}.sh up printed no {var}"))
}

/// The S3 bucket of one test on moto, and an independent reader of what the workers committed.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
}

impl S3 {
    pub fn create(bucket: &str) -> S3 {
        let endpoint = service_env("moto", "S3_ENDPOINT");
        let o = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "creating bucket {bucket}");
        S3 {
            endpoint,
            bucket: bucket.to_string(),
        }
    }

    /// `storage_options` for the pipeline (checkpoints and the filesystem sink).
    pub fn options(&self) -> String {
        format!(
            "{{ aws_endpoint: \"{}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing }}",
            self.endpoint
        )
    }

    fn store(&self) -> impl ObjectStore {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap()
    }

    /// Every committed object under `prefix` (none hidden: in-progress data never shows).
    pub async fn objects(&self, prefix: &str) -> Vec<object_store::ObjectMeta> {
        let store = self.store();
        let prefix = object_store::path::Path::from(prefix);
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        for o in &objects {
            let name = o.location.filename().unwrap_or_default();
            assert!(
                !name.starts_with('.'),
                "hidden object on S3: {}",
                o.location
            );
        }
        objects
    }

    /// How often each `field` value occurs in the JSON lines under `prefix`.
    pub async fn count(&self, prefix: &str, field: &str) -> BTreeMap<i64, usize> {
        let store = self.store();
        let mut counts = BTreeMap::new();
        for o in self.objects(prefix).await {
            let body = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            for line in String::from_utf8_lossy(&body).lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: {e}: {line}", o.location));
                let id = v[field]
                    .as_i64()
                    .unwrap_or_else(|| panic!("no {field}: {line}"));
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every JSON line under `prefix` (to read what the records carried).
    pub async fn lines(&self, prefix: &str) -> Vec<serde_json::Value> {
        let store = self.store();
        let mut out = Vec::new();
        for o in self.objects(prefix).await {
            let body = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            for line in String::from_utf8_lossy(&body).lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.store()
            .head(&object_store::path::Path::from(key))
            .await
            .is_ok()
    }
}

/// The pid of the process whose environment has `POD_IP=<ip>` and whose program is `program`
/// (the test kubelet runs each container as a local process).
pub fn pid_of(ip: &str, program: &str) -> Option<i32> {
    let want = format!("POD_IP={ip}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !String::from_utf8_lossy(argv0).ends_with(program) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Every id in 0..n exactly once; names the first missing and duplicated ids.
pub fn assert_exactly_once(counts: &BTreeMap<i64, usize>, n: i64) {
    let dup: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    let missing: Vec<i64> = (0..n).filter(|i| !counts.contains_key(i)).take(5).collect();
    assert!(
        dup.is_empty() && missing.is_empty() && counts.len() as i64 == n,
        "{} distinct ids of {n}; duplicated (first 5) {dup:?}; missing (first 5) {missing:?}",
        counts.len()
    );
}

/// Options of the chart installation.
#[derive(Clone, Debug, Default)]
pub struct Install {
    /// `--set` values besides the namespace's own.
    pub values: Vec<String>,
    /// Install cluster-wide (`watchNamespaces` empty: a ClusterRole, every namespace watched),
    /// managing only the jobs and Connectors labelled with [`Op::label`]: other tests' jobs share
    /// this control plane, and the selector keeps this operator off them.
    pub cluster_wide: bool,
}

/// The label a cluster-wide test operator selects its jobs by.
const SELECTOR_LABEL: &str = "weir.dev/e2e-operator";

/// A namespace with its own kubelet, the operator chart installed into it (watching only it)
/// and an S3 bucket. The namespace enforces the "restricted" Pod Security Standard, so a worker
/// or operator pod that breaks it is refused by the API server and fails the test.
pub struct Op {
    pub env: TestEnv,
    pub s3: S3,
    pub release: String,
    /// The chart's fullname: its ServiceAccount, Roles and Deployment are named so.
    pub fullname: String,
    /// Cluster-wide: the `k: v` label (YAML) its jobs must carry; see [`Op::metadata`].
    selector: Option<(String, String)>,
}

/// A test namespace with its own kubelet that enforces the "restricted" Pod Security Standard.
async fn restricted_env(name: &str) -> TestEnv {
    let env = TestEnv::start(
        name,
        KubeletOptions {
            bin_dir: Some(bin_dir()),
            ..Default::default()
        },
    )
    .await;
    let restricted = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(env.client.clone())
        .patch(&env.ns, &PatchParams::default(), &Patch::Merge(&restricted))
        .await
        .expect("labelling the test namespace restricted");
    env
}

impl Op {
    pub async fn install(name: &str, install: Install) -> Op {
        let env = restricted_env(name).await;
        let s3 = S3::create(&env.ns);
        // Cluster-scoped objects (the ClusterRole and its binding) outlive a namespace: a unique
        // fullname keeps a crashed run's leftovers from blocking the next install.
        let (fullname, selector) = match install.cluster_wide {
            true => (
                format!("weir-operator-{}", env.ns),
                Some((SELECTOR_LABEL.to_string(), env.ns.clone())),
            ),
            false => ("weir-operator".to_string(), None),
        };
        let op = Op {
            env,
            s3,
            release: "weir-operator".into(),
            fullname,
            selector,
        };
        let scope = match &op.selector {
            Some((k, v)) => vec![
                format!("fullnameOverride={}", op.fullname),
                format!("jobSelector={k}={v}"),
            ],
            None => vec![format!("watchNamespaces={{{}}}", op.env.ns)],
        };
        let mut args: Vec<String> = vec![
            "install".into(),
            op.release.clone(),
            repo_root()
                .join("charts/weir-operator")
                .display()
                .to_string(),
            "--namespace".into(),
            op.env.ns.clone(),
            "--set".into(),
            "logFormat=text".into(),
            "--set".into(),
            "logLevel=info\\,weir_operator=debug".into(),
            "--wait".into(),
            "--timeout".into(),
            "120s".into(),
        ];
        for v in scope.iter().chain(&install.values) {
            args.push("--set".into());
            args.push(v.clone());
        }
        let out = op.helm(&args);
        assert!(
            out.status.success(),
            "helm install failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            op.env.diagnostics()
        );
        op
    }

    /// Another namespace (its own kubelet, "restricted" like the first) for a cluster-wide
    /// operator's jobs, writing to the same bucket; no operator is installed into it.
    pub async fn another_namespace(&self, name: &str) -> Op {
        let env = restricted_env(name).await;
        Op {
            env,
            s3: S3 {
                endpoint: self.s3.endpoint.clone(),
                bucket: self.s3.bucket.clone(),
            },
            release: String::new(),
            fullname: self.fullname.clone(),
            selector: self.selector.clone(),
        }
    }

    /// The `metadata:` line of a resource with `name` this operator manages: with the selector's label
    /// when it is cluster-wide (YAML flow style, for the tests' templates).
    pub fn metadata(&self, name: &str) -> String {
        match &self.selector {
            Some((k, v)) => format!("metadata: {{ name: {name}, labels: {{ {k}: {v} }} }}"),
            None => format!("metadata: {{ name: {name} }}"),
        }
    }

    pub fn helm(&self, args: &[String]) -> Output {
        Command::new(tool("helm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .output()
            .unwrap()
    }

    /// kubectl in this namespace; `stdin` for `-f -`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["--namespace", &self.env.ns])
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
        child.wait_with_output().unwrap()
    }

    /// `kubectl apply` with server-side apply and strict field validation (an unknown or pruned
    /// field fails, as it would for a careful user).
    pub fn apply(&self, yaml: &str) {
        let out = self.try_apply(yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn try_apply(&self, yaml: &str) -> Output {
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=e2e",
                "--force-conflicts",
                "--validate=strict",
                "-f",
                "-",
            ],
            Some(yaml),
        )
    }

    pub fn jobs(&self) -> Api<StreamJob> {
        self.env.api()
    }

    pub async fn job(&self, name: &str) -> StreamJob {
        self.jobs().get(name).await.unwrap()
    }

    /// Like [`Op::wait_job`], but sees every version of the StreamJob (a watch, not polling):
    /// for states that last less than a poll, such as an upgrade's savepoint in flight.
    pub async fn watch_job(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&StreamJob) -> bool,
    ) -> StreamJob {
        let jobs = self.jobs();
        let current = jobs.get(name).await.unwrap();
        if check(&current) {
            return current;
        }
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(timeout.as_secs().clamp(1, 290) as u32);
        let mut events = Box::pin(jobs.watch(&params, &version).await.unwrap());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, events.try_next()).await;
            match next {
                Ok(Ok(Some(WatchEvent::Added(j) | WatchEvent::Modified(j)))) if check(&j) => {
                    return j
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    let j = jobs.get(name).await.unwrap();
                    panic!(
                        "StreamJob {name}: {what}: not seen within {timeout:?}\nstatus: {}\n{}",
                        serde_json::to_string_pretty(&j.status).unwrap_or_default(),
                        self.env.diagnostics()
                    );
                }
            }
        }
    }

    /// Waits until the StreamJob satisfies `check`; on timeout shows its status, the operator's
    /// log and every container log.
    pub async fn wait_job(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&StreamJob) -> bool,
    ) -> StreamJob {
        let jobs = self.jobs();
        let start = Instant::now();
        loop {
            if let Ok(Some(j)) = jobs.get_opt(name).await {
                if check(&j) {
                    return j;
                }
                if start.elapsed() > timeout {
                    panic!(
                        "StreamJob {name}: {what}: not reached within {timeout:?}\nstatus: {}\n{}",
                        serde_json::to_string_pretty(&j.status).unwrap_or_default(),
                        self.env.diagnostics()
                    );
                }
            } else if start.elapsed() > timeout {
                panic!("StreamJob {name} not found\n{}", self.env.diagnostics());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for Ready=True on the current generation.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> StreamJob {
        self.wait_job(name, "Ready on its generation", timeout, |j| {
            ready(j)
                && j.status.as_ref().and_then(|s| s.observed_generation) == j.metadata.generation
        })
        .await
    }

    pub async fn operator_pods(&self) -> Vec<Pod> {
        self.env
            .pods()
            .list(&ListParams::default().labels("app.kubernetes.io/name=weir-operator"))
            .await
            .unwrap()
            .items
    }

    /// The operator containers' logs (every start).
    pub async fn operator_log(&self) -> String {
        let mut out = String::new();
        for p in self.operator_pods().await {
            out += &self
                .env
                .log(&p.metadata.name.unwrap_or_default(), "operator");
        }
        out
    }

    /// The worker pods of a job.
    pub async fn workers(&self, job: &str) -> Vec<Pod> {
        self.env
            .pods()
            .list(&ListParams::default().labels(&format!("weir.dev/job={job}")))
            .await
            .unwrap()
            .items
    }

    /// `http://<ip>:<port>/metrics` of the operator pod (its metrics port, on its pod IP).
    pub async fn operator_metrics(&self) -> String {
        let pods = self.operator_pods().await;
        let pod = pods
            .iter()
            .find(|p| is_ready(p))
            .expect("a ready operator pod");
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP");
        reqwest::get(format!("http://{ip}:8080/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn finish(self) {
        // Jobs first (their finalizers need the operator), then the namespace.
        let _ = self.kubectl(
            &[
                "delete",
                "streamjobs",
                "--all",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        );
        // A cluster-wide install's ClusterRole and binding outlive the namespace.
        if self.selector.is_some() && !self.release.is_empty() {
            let args = [
                "uninstall",
                &self.release,
                "--namespace",
                &self.env.ns,
                "--wait",
            ];
            let out = self.helm(&args.map(String::from));
            assert!(
                out.status.success(),
                "helm uninstall: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.env.finish().await;
    }
}

pub fn condition<'a>(job: &'a StreamJob, type_: &str) -> Option<&'a Condition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn ready(job: &StreamJob) -> bool {
    condition(job, "Ready").is_some_and(|c| c.status == "True")
}

/// A StreamJob writing `count` generated records (ids 0..count) at `rate` per second as JSON to
/// `s3://<bucket>/<name>/out`, checkpointing every second to `s3://<bucket>/<name>/state`.
/// `extra` is appended to the spec (indented two spaces: `upgradeMode: …`, `upgrade: …`).
pub fn datagen_job(
    s3: &S3,
    name: &str,
    parallelism: u32,
    count: u64,
    rate: u64,
    tag: &str,
    extra: &str,
) -> String {
    let opts = s3.options();
    let bucket = &s3.bucket;
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: {name}
spec:
  image: ghcr.io/weir/weir:0.1.0
  parallelism: {parallelism}
  startupTimeout: 60s
{extra}
  pipeline:
    checkpoint:
      interval: 1s
      timeout: 10s
      storage: s3://{bucket}/{name}/state
      storage_options: {opts}
    sources:
      - name: gen
        type: datagen
        count: {count}
        rate: {rate}
        splits: 6
        fields:
          id: {{ kind: sequence }}
    transforms:
      - name: tag
        type: map
        fields: {{ tag: "'{tag}'" }}
    sinks:
      - name: out
        type: filesystem
        path: s3://{bucket}/{name}/out
        storage_options: {opts}
        format: json
"#
    )
}
