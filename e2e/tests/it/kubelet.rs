//! The test kubelet against the real control plane: what a Pod sees, probes, restarts,
//! deletion, controllers (StatefulSet, garbage collection) and ServiceAccount tokens.

use crate::harness::{container_status, is_ready, phase, tool, KubeletOptions, TestEnv};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

async fn http_get(url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

#[tokio::test]
async fn pod_runs_its_command_with_env_downward_api_and_volumes_at_their_paths() {
    let env = TestEnv::start("pod", KubeletOptions::default()).await;
    let _: ConfigMap = env
        .create(json!({"metadata": {"name": "settings"}, "data": {"greeting": "hello", "level": "debug"}}))
        .await;
    let _: Secret = env
        .create(json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}))
        .await;
    let script = r#"
echo "POD_IP=$POD_IP"
echo "ADDR=$ADDR"
echo "NAME=$MY_NAME NS=$MY_NS SA=$MY_SA APP=$MY_APP"
echo "LEVEL=$LEVEL PASSWORD=$PASSWORD CFG_greeting=$CFG_greeting"
echo "API=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
echo "SECRET_FILE=$(cat /etc/e2e/secret/password)"
echo "LABELS_FILE=$(cat /etc/e2e/podinfo/labels)"
echo "SA_NS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
echo "SA_FILES=$(ls /var/run/secrets/kubernetes.io/serviceaccount | tr '\n' ' ')"
echo "ARGS=$*"
exec python3 -m http.server --bind "$POD_IP" 8080 --directory /etc/e2e/config
"#;
    let _: Pod = env
        .create(json!({
            "metadata": {"name": "web", "labels": {"app": "e2e-web"}},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "main",
                    "image": "python:3",
                    "command": ["sh", "-c", script, "script"],
                    "args": ["--listen=$(POD_IP):8080", "$$(NOT_EXPANDED)"],
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "ADDR", "value": "$(POD_IP):8080"},
                        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "MY_SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "MY_APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/greeting", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/e2e/config", "readOnly": true},
                        {"name": "secret", "mountPath": "/etc/e2e/secret"},
                        {"name": "podinfo", "mountPath": "/etc/e2e/podinfo"}
                    ]
                }],
                "volumes": [
                    {"name": "config", "configMap": {"name": "settings"}},
                    {"name": "secret", "secret": {"secretName": "creds"}},
                    {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
                ]
            }
        }))
        .await;
    let pod = env.wait_pod("web", "Ready", T, is_ready).await;
    let ip = pod_ip(&pod);
    assert!(
        ip.starts_with("127.") && ip != "127.0.0.1",
        "own loopback pod IP, got {ip:?}"
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(env.node.as_str()),
        "bound to the kubelet's node"
    );
    let log = env.log("web", "main");
    let expect = [
        format!("POD_IP={ip}"),
        format!("ADDR={ip}:8080"),
        format!("NAME=web NS={} SA=default APP=e2e-web", env.ns),
        "LEVEL=debug PASSWORD=s3cret CFG_greeting=hello".into(),
        "SECRET_FILE=s3cret".into(),
        "LABELS_FILE=app=\"e2e-web\"".into(),
        format!("SA_NS={}", env.ns),
        "SA_FILES=ca.crt namespace token ".into(),
        format!("ARGS=--listen={ip}:8080 $(NOT_EXPANDED)"),
    ];
    for line in &expect {
        assert!(log.lines().any(|l| l == line), "log lacks {line:?}:\n{log}");
    }
    assert!(
        log.lines().any(|l| l.starts_with("API=127.0.0.1:")),
        "{log}"
    );
    // The host's view is untouched: the volume paths exist only inside the pod.
    assert!(!std::path::Path::new("/etc/e2e/config/greeting").exists());
    assert_eq!(
        http_get(&format!("http://{ip}:8080/greeting"))
            .await
            .as_deref(),
        Some("hello")
    );
    // A ConfigMap change reaches the mounted volume (refreshed as a kubelet does).
    env.api::<ConfigMap>()
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"greeting": "hello again"}})),
        )
        .await
        .unwrap();
    let url = format!("http://{ip}:8080/greeting");
    crate::harness::wait_for(
        &env,
        "configmap volume refreshed",
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move { (http_get(&url).await.as_deref() == Some("hello again")).then_some(()) }
        },
    )
    .await;
    // The tcpSocket liveness probe on the pod IP kept passing: not restarted within 4 s of the
    // start (a failing one restarts it after 1 s delay + 2 failures 1 s apart).
    let started = container_status(&pod, "main")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .running
        .unwrap();
    let since = chrono::Utc::now().timestamp() - started.started_at.unwrap().0.as_second();
    tokio::time::sleep(Duration::from_secs(
        4u64.saturating_sub(since.max(0) as u64),
    ))
    .await;
    let pod = env.pods().get("web").await.unwrap();
    assert_eq!(
        container_status(&pod, "main").unwrap().restart_count,
        0,
        "{}",
        env.diagnostics()
    );
    env.finish().await;
}

#[tokio::test]
async fn readiness_and_liveness_probes_drive_ready_and_restarts() {
    let env = TestEnv::start("probes", KubeletOptions::default()).await;
    // First run: ready, then not ready, then "dead" (liveness fails → killed and restarted).
    // Second run: ready for good.
    let script = r#"
if [ -f /work/restarted ]; then rm -f /work/dead; touch /work/ready; echo second run; exec sleep 3600; fi
touch /work/ready; sleep 3; rm /work/ready; sleep 3; touch /work/restarted /work/dead; exec sleep 3600
"#;
    let _: Pod = env
        .create(json!({
            "metadata": {"name": "probed"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": "busybox", "command": ["sh", "-c", script],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/work/ready"]}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -f /work/dead"]}, "periodSeconds": 1, "failureThreshold": 2},
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]
                }],
                "volumes": [{"name": "work", "emptyDir": {}}]
            }
        }))
        .await;
    env.wait_pod("probed", "Ready", T, |p| {
        is_ready(p) && container_status(p, "main").unwrap().restart_count == 0
    })
    .await;
    env.wait_pod(
        "probed",
        "not Ready once the readiness file is gone",
        T,
        |p| !is_ready(p),
    )
    .await;
    let pod = env
        .wait_pod("probed", "restarted by liveness and Ready again", T, |p| {
            is_ready(p) && container_status(p, "main").is_some_and(|c| c.restart_count == 1)
        })
        .await;
    let last = container_status(&pod, "main")
        .unwrap()
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .clone();
    assert_eq!(
        last.exit_code, 143,
        "killed by SIGTERM on the liveness failure"
    );
    assert!(last
        .message
        .unwrap_or_default()
        .contains("failed liveness probe"));
    assert!(env.log("probed", "main").contains("second run"));
    env.finish().await;
}

#[tokio::test]
async fn a_startup_probe_holds_readiness_until_it_passes() {
    let env = TestEnv::start("startup", KubeletOptions::default()).await;
    // No readiness probe: without the startup probe the pod would be Ready at once.
    let script = "sleep 2; echo creating; touch /work/started; exec sleep 3600";
    let _: Pod = env
        .create(json!({
            "metadata": {"name": "slow"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": "busybox", "command": ["sh", "-c", script],
                    "startupProbe": {"exec": {"command": ["test", "-f", "/work/started"]}, "periodSeconds": 1, "failureThreshold": 20},
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]
                }],
                "volumes": [{"name": "work", "emptyDir": {}}]
            }
        }))
        .await;
    let pod = env.wait_pod("slow", "Ready", T, is_ready).await;
    assert!(
        env.log("slow", "main").contains("creating"),
        "Ready before the startup probe passed"
    );
    let status = container_status(&pod, "main").unwrap();
    assert_eq!((status.started, status.restart_count), (Some(true), 0));
    env.finish().await;
}

/// The start times of a container from its log headers.
fn start_times(log: &str) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    log.lines()
        .filter(|l| l.starts_with("--- test-kubelet: start #"))
        .filter_map(|l| {
            l.split(" at ")
                .nth(1)?
                .split(": ")
                .next()
                .map(str::to_string)
        })
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .collect()
}

#[tokio::test]
async fn crashing_containers_restart_with_backoff_per_policy_and_report_exit_codes() {
    let env = TestEnv::start(
        "crash",
        KubeletOptions {
            backoff_base: "1s",
            ..Default::default()
        },
    )
    .await;
    let pod = |name: &str, policy: &str, code: i32| {
        json!({"metadata": {"name": name}, "spec": {"restartPolicy": policy, "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", format!("echo run; exit {code}")]}]}})
    };
    let _: Pod = env.create(pod("always", "Always", 3)).await;
    let _: Pod = env.create(pod("onfailure-ok", "OnFailure", 0)).await;
    let _: Pod = env.create(pod("never-fails", "Never", 7)).await;
    let p = env
        .wait_pod("always", "three restarts", T, |p| {
            container_status(p, "main").is_some_and(|c| c.restart_count >= 3)
        })
        .await;
    let c = container_status(&p, "main").unwrap();
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        phase(&p),
        "Running",
        "a crash-looping pod with restartPolicy Always is Running"
    );
    if let Some(waiting) = c.state.as_ref().unwrap().waiting.as_ref() {
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    }
    // Back-off doubles from 1 s: 1, 2, 4 s between the starts.
    let starts = start_times(&env.log("always", "main"));
    assert!(starts.len() >= 4, "{starts:?}");
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0)
        .collect();
    for (gap, expected) in gaps.iter().zip([1.0, 2.0, 4.0]) {
        assert!(
            *gap >= expected - 0.1 && *gap < expected + 1.5,
            "gaps {gaps:?}: expected ~{expected}s"
        );
    }
    let p = env
        .wait_pod("onfailure-ok", "Succeeded", T, |p| phase(p) == "Succeeded")
        .await;
    let c = container_status(&p, "main").unwrap();
    assert_eq!(c.restart_count, 0);
    assert_eq!(
        c.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    let p = env
        .wait_pod("never-fails", "Failed", T, |p| phase(p) == "Failed")
        .await;
    let c = container_status(&p, "main").unwrap();
    assert_eq!(
        (
            c.restart_count,
            c.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code
        ),
        (0, 7)
    );
    env.finish().await;
}

/// A process's state letter (None: gone; "Z": killed, waiting for init to reap it) and its
/// command line (to tell a reused pid apart).
fn process_state(pid: i32) -> (Option<String>, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let state =
        stat.and_then(|s| Some(s.rsplit(')').next()?.split_whitespace().next()?.to_string()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    (state, String::from_utf8_lossy(&cmdline).replace('\0', " "))
}

#[tokio::test]
async fn deletion_sends_sigterm_to_the_process_group_and_kills_after_the_grace_period() {
    let env = TestEnv::start("delete", KubeletOptions::default()).await;
    let graceful =
        r#"trap 'echo got TERM; exit 0' TERM; echo "PID=$$$$"; while true; do sleep 0.1; done"#;
    let stubborn =
        r#"trap 'echo ignoring TERM' TERM; echo "PID=$$$$"; while true; do sleep 0.1; done"#;
    for (name, script) in [("graceful", graceful), ("stubborn", stubborn)] {
        let _: Pod = env
            .create(json!({"metadata": {"name": name}, "spec": {"terminationGracePeriodSeconds": 4, "containers": [{
                "name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}))
            .await;
    }
    for name in ["graceful", "stubborn"] {
        env.wait_pod(name, "Running", T, |p| phase(p) == "Running")
            .await;
    }
    let pid_of = |name: &str| -> i32 {
        let log = env.log(name, "main");
        log.lines()
            .find_map(|l| l.strip_prefix("PID="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{log}"))
    };
    let (p1, p2) = (pid_of("graceful"), pid_of("stubborn"));
    let pods = env.pods();
    pods.delete("graceful", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    let (g, s) = tokio::join!(env.wait_gone("graceful", T), env.wait_gone("stubborn", T));
    assert!(
        env.log("graceful", "main").contains("got TERM"),
        "{}",
        env.log("graceful", "main")
    );
    assert!(
        g < Duration::from_secs(3),
        "the graceful pod ended on SIGTERM: {g:?}"
    );
    assert!(env.log("stubborn", "main").contains("ignoring TERM"));
    assert!(
        s >= Duration::from_secs(4) && s < Duration::from_secs(10),
        "SIGKILL after the 4 s grace: {s:?}"
    );
    for pid in [p1, p2] {
        let (state, cmdline) = process_state(pid);
        assert!(
            matches!(state.as_deref(), None | Some("Z" | "X")) || !cmdline.contains("TERM"),
            "process {pid} still alive: state {state:?}, {cmdline}"
        );
    }
    env.finish().await;
}

#[tokio::test]
async fn statefulset_pods_run_and_deleting_the_owner_garbage_collects_them() {
    let env = TestEnv::start("sts", KubeletOptions::default()).await;
    let sts: StatefulSet = env
        .create(json!({
            "metadata": {"name": "workers"},
            "spec": {
                "replicas": 2, "serviceName": "workers", "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "workers"}},
                "template": {
                    "metadata": {"labels": {"app": "workers"}},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                        "name": "worker", "image": "busybox",
                        "command": ["sh", "-c", "echo index=$INDEX; exec sleep 3600"],
                        "env": [{"name": "INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}}]
                    }]}
                }
            }
        }))
        .await;
    // A child of the StatefulSet that is not a Pod: the garbage collector removes it too.
    let _: ConfigMap = env
        .create(json!({"metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "workers",
            "uid": sts.metadata.uid.clone().unwrap()}]}, "data": {"k": "v"}}))
        .await;
    let sets = env.api::<StatefulSet>();
    crate::harness::wait_for(&env, "statefulset readyReplicas 2", T, || {
        let sets = sets.clone();
        async move {
            let s = sets.get("workers").await.ok()?;
            (s.status?.ready_replicas? == 2).then_some(())
        }
    })
    .await;
    let a = env.wait_pod("workers-0", "Ready", T, is_ready).await;
    let b = env.wait_pod("workers-1", "Ready", T, is_ready).await;
    assert_ne!(pod_ip(&a), pod_ip(&b), "each pod has its own IP");
    assert!(env.log("workers-0", "worker").contains("index=0"));
    assert!(env.log("workers-1", "worker").contains("index=1"));
    sets.delete("workers", &DeleteParams::background())
        .await
        .unwrap();
    let (ga, gb) = tokio::join!(env.wait_gone("workers-0", T), env.wait_gone("workers-1", T));
    assert!(ga < T && gb < T);
    let cms = env.api::<ConfigMap>();
    crate::harness::wait_for(&env, "owned configmap garbage-collected", T, || {
        let cms = cms.clone();
        async move { matches!(cms.get_opt("child").await, Ok(None)).then_some(()) }
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn a_projected_service_account_token_calls_the_api_with_that_accounts_rights() {
    let env = TestEnv::start("token", KubeletOptions::default()).await;
    let kubectl = tool("kubectl");
    let _: k8s_openapi::api::core::v1::ServiceAccount =
        env.create(json!({"metadata": {"name": "reader"}})).await;
    let _: Role = env
        .create(json!({"metadata": {"name": "read-configmaps"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
        .await;
    let _: RoleBinding = env
        .create(json!({"metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": env.ns}]}))
        .await;
    let _: ConfigMap = env
        .create(json!({"metadata": {"name": "allowed"}, "data": {"k": "visible"}}))
        .await;
    let script = format!(
        "echo \"CM=$({k} get configmap allowed -o jsonpath='{{.data.k}}')\"; {k} get secrets 2>&1 | sed 's/^/SECRETS: /'; {k} auth whoami -o jsonpath='{{.status.userInfo.username}}' | sed 's/^/WHO: /'",
        k = kubectl.display()
    );
    let _: Pod = env
        .create(json!({"metadata": {"name": "client"}, "spec": {
            "serviceAccountName": "reader", "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "bitnami/kubectl", "command": ["sh", "-c", script]}]}}))
        .await;
    env.wait_pod("client", "Succeeded", T, |p| phase(p) == "Succeeded")
        .await;
    let log = env.log("client", "main");
    assert!(
        log.contains("CM=visible"),
        "the token reads what the Role allows:\n{log}"
    );
    let who = format!("system:serviceaccount:{}:reader", env.ns);
    assert!(
        log.lines()
            .any(|l| l.starts_with("SECRETS: ") && l.contains("forbidden") && l.contains(&who)),
        "and nothing else:\n{log}"
    );
    assert!(log.contains(&format!("WHO: {who}")), "{log}");
    env.finish().await;
}

#[tokio::test]
async fn a_killed_kubelet_leaves_no_container_process_behind() {
    let mut env = TestEnv::start("orphans", KubeletOptions::default()).await;
    // A shell with a background child: both must die with the kubelet (`$$$$` and `$$!` are
    // `$$` and `$!` after Kubernetes' expansion).
    let script = r#"sleep 1000 & echo "CHILD=$$!"; echo "PID=$$$$"; trap 'echo TERM' TERM; wait"#;
    let _: Pod = env
        .create(
            json!({"metadata": {"name": "parent"}, "spec": {"containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}),
        )
        .await;
    env.wait_pod("parent", "Running", T, |p| phase(p) == "Running")
        .await;
    let log = crate::harness::wait_for(&env, "pids logged", T, || {
        let log = env.log("parent", "main");
        // Lines that start with them: the kubelet's header line quotes the command, which
        // holds "PID=" too.
        let printed = |key: &str| log.lines().any(|l| l.starts_with(key));
        let both = printed("PID=") && printed("CHILD=");
        async move { both.then_some(log) }
    })
    .await;
    let pid = |key: &str| -> i32 {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {log}"))
    };
    let (shell, child) = (pid("PID="), pid("CHILD="));
    let alive = |pid: i32, marker: &str| {
        let (state, cmdline) = process_state(pid);
        !matches!(state.as_deref(), None | Some("Z" | "X")) && cmdline.contains(marker)
    };
    assert!(
        alive(shell, "TERM") && alive(child, "sleep 1000"),
        "both run before the kill"
    );
    env.kill_kubelet();
    crate::harness::wait_for(
        &env,
        "container processes gone",
        Duration::from_secs(10),
        || {
            let gone = !alive(shell, "TERM") && !alive(child, "sleep 1000");
            async move { gone.then_some(()) }
        },
    )
    .await;
    env.finish().await;
}
