//! Smoke test: the operator chart, installed with helm v4, runs the operator (the image's exact
//! entrypoint, from the Dockerfile) under the test kubelet with its ServiceAccount's token.

use crate::harness::{is_ready, kubeconfig, repo_root, tool, wait_for, KubeletOptions, TestEnv};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The directory holding the `weir-operator` binary: `WEIR_BIN_DIR`, else this build's own
/// target/<profile> (where `cargo test --workspace` builds it, for the operator's own tests).
fn operator_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary under target/<profile>/deps")
        .to_path_buf();
    assert!(
        dir.join("weir-operator").exists(),
        "no weir-operator in {}: run `cargo build -p weir-operator` first (cargo test --workspace \
         builds it) or set WEIR_BIN_DIR",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn helm_installs_the_operator_chart_and_the_operator_runs_with_its_service_account() {
    let bin_dir = operator_bin_dir();
    let env = TestEnv::start(
        "helm",
        KubeletOptions {
            bin_dir: Some(bin_dir),
            ..Default::default()
        },
    )
    .await;
    let helm = tool("helm");
    let out = Command::new(&helm)
        .arg("install")
        .arg("weir-operator")
        .arg(repo_root().join("charts/weir-operator"))
        .args(["--namespace", &env.ns, "--kubeconfig"])
        .arg(kubeconfig())
        .args(["--set", &format!("watchNamespaces={{{}}}", env.ns)])
        .args(["--wait", "--timeout", "120s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.diagnostics()
    );
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for name in ["streamjobs.weir.dev", "connectors.weir.dev"] {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let established = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            established
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} not established"
        );
    }
    let pods = env.pods();
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=weir-operator"))
        .await
        .unwrap();
    let pod = list
        .items
        .first()
        .unwrap_or_else(|| panic!("no operator pod\n{}", env.diagnostics()))
        .clone();
    let name = pod.metadata.name.clone().unwrap();
    assert!(
        is_ready(&pod),
        "operator pod not Ready\n{}",
        env.diagnostics()
    );
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_default();
    assert_eq!(sa, "weir-operator", "runs as the chart's ServiceAccount");
    let log = env.log(&name, "operator");
    assert!(
        log.contains("[\"weir-operator\", \"run\"]"),
        "the image's ENTRYPOINT and the chart's args:\n{log}"
    );
    // The operator took the leader Lease with its own token: proof it talks to the API server
    // with the chart's RBAC.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for(
        &env,
        "operator holds the leader lease",
        Duration::from_secs(60),
        || {
            let leases = leases.clone();
            let name = name.clone();
            async move {
                let lease = leases.get_opt("weir-operator").await.ok()??;
                (lease.spec?.holder_identity? == name).then_some(())
            }
        },
    )
    .await;
    let out = Command::new(&helm)
        .args([
            "uninstall",
            "weir-operator",
            "--namespace",
            &env.ns,
            "--kubeconfig",
        ])
        .arg(kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.finish().await;
}
