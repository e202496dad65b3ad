//! The Helm chart: `helm lint` and `helm template` with helm v4 from e2e/services/helm.sh.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn helm() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("e2e/services/helm.sh"))
        .output()
        .expect("running e2e/services/helm.sh");
    assert!(
        out.status.success(),
        "helm.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn chart() -> PathBuf {
    root().join("charts/weir-operator")
}

/// `helm template` → the rendered objects (or the error text).
fn template(helm: &PathBuf, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm)
        .args(["template", "weir", "--namespace", "weir-system"])
        .arg(chart())
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).unwrap();
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or("-")
            )
        })
        .collect();
    k.sort();
    k
}

#[test]
fn chart_lints_and_renders_least_privilege_rbac() {
    let helm = helm();
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Defaults: cluster-wide RBAC, leader election Role in the release namespace, metrics Service.
    let docs = template(&helm, &["--include-crds"]).unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole/-",
            "ClusterRoleBinding/-",
            "CustomResourceDefinition/-",
            "CustomResourceDefinition/-",
            "Deployment/weir-system",
            "Role/weir-system",
            "RoleBinding/weir-system",
            "Service/weir-system",
            "ServiceAccount/weir-system",
        ]
    );
    let cluster_role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let rules = cluster_role["rules"].as_array().unwrap();
    let secrets = rules
        .iter()
        .find(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .contains(&"secrets".into())
        })
        .unwrap();
    assert_eq!(
        secrets["verbs"],
        serde_json::json!(["get", "list", "watch", "create", "patch"]),
        "Secrets: read, and write the jobs' admin token Secrets (no delete: owner references)"
    );
    assert!(
        !rules
            .iter()
            .any(|r| r["verbs"].as_array().unwrap().contains(&"*".into())
                || r["resources"].as_array().unwrap().contains(&"*".into())),
        "no wildcards: {rules:?}"
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("\"LEADER_ELECTION\",\"value\":\"true\""),
        "{env}"
    );
    // The NetworkPolicies let in this release's operator pods; no scraper unless configured.
    assert!(
        env.contains(r#"{"name":"NETWORK_POLICIES","value":"true"}"#),
        "{env}"
    );
    assert!(
        env.contains(r#"{"name":"OPERATOR_POD_LABELS","value":"app.kubernetes.io/instance=weir,app.kubernetes.io/name=weir-operator"}"#),
        "{env}"
    );
    assert!(
        env.contains(r#"{"name":"METRICS_POD_LABELS","value":""}"#),
        "{env}"
    );
    // The restricted Pod Security Standard with the image's user.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"],
        serde_json::json!({"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                           "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        pod["containers"][0]["securityContext"],
        serde_json::json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                           "capabilities": {"drop": ["ALL"]}})
    );

    // Watched namespaces: a Role per namespace, nothing cluster-wide.
    let docs = template(
        &helm,
        &[
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "jobSelector=weir.dev/operator=team-a",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "logLevel=debug",
            "--set",
            "networkPolicies.metrics.namespaceLabels.team=monitoring",
            "--set",
            "networkPolicies.metrics.podLabels.app=prometheus",
        ],
    )
    .unwrap();
    let k = kinds(&docs);
    assert!(!k.iter().any(|k| k.starts_with("Cluster")), "{k:?}");
    for ns in ["team-a", "team-b"] {
        assert!(k.contains(&format!("Role/{ns}")), "{k:?}");
        assert!(k.contains(&format!("RoleBinding/{ns}")), "{k:?}");
    }
    assert!(
        k.contains(&"ServiceMonitor/weir-system".to_string()),
        "{k:?}"
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("team-a,team-b"), "{env}");
    assert!(
        env.contains(r#"{"name":"JOB_SELECTOR","value":"weir.dev/operator=team-a"}"#),
        "{env}"
    );
    assert!(env.contains("\"LOG_LEVEL\",\"value\":\"debug\""), "{env}");
    assert!(
        env.contains(r#"{"name":"METRICS_NAMESPACE_LABELS","value":"team=monitoring"}"#)
            && env.contains(r#"{"name":"METRICS_POD_LABELS","value":"app=prometheus"}"#),
        "{env}"
    );

    // Two replicas need leader election.
    let err = template(
        &helm,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    )
    .unwrap_err();
    assert!(err.contains("needs leaderElection.enabled=true"), "{err}");
}
