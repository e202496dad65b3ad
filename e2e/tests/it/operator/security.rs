//! A hardened cluster's review, on the real control plane: the test namespace enforces the
//! "restricted" Pod Security Standard (`Op::install`), so the worker pods exist only because the
//! API server admitted them; a stop without the job's admin token is refused and the job keeps
//! running; the NetworkPolicy lets only the operator in; and the operator's own savepoint upgrade
//! works with the token, also across a token rotation.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use serde_json::json;

use super::{datagen_job, ready, Install, Op};

const MINUTE: Duration = Duration::from_secs(60);

fn restored_from(j: &weir_crds::StreamJob) -> Option<String> {
    j.status.as_ref()?.deployed.as_ref()?.restored_from.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_can_stop_a_job_and_its_pods_pass_the_restricted_standard() {
    let op = Op::install("secure", Install::default()).await;
    let savepoint = "  upgradeMode: savepoint\n  upgrade: { savepoint: { timeout: 60s } }";
    op.apply(&datagen_job(
        &op.s3, "pay", 2, 1_000_000, 100, "v1", savepoint,
    ));
    let j = op.wait_ready("pay", 2 * MINUTE).await;
    let uid = j.metadata.uid.clone().unwrap();

    // The pods as admitted under `enforce: restricted`.
    let workers = op.workers("pay").await;
    assert_eq!(workers.len(), 2);
    let spec = serde_json::to_value(workers[0].spec.clone().unwrap()).unwrap();
    assert_eq!(
        spec["securityContext"],
        json!({"fsGroup": 10001, "runAsGroup": 10001, "runAsNonRoot": true, "runAsUser": 10001,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let c = &spec["containers"][0];
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
               "readOnlyRootFilesystem": true, "runAsNonRoot": true})
    );
    assert!(
        c["volumeMounts"]
            .to_string()
            .contains(r#""mountPath":"/tmp""#),
        "{}",
        c["volumeMounts"]
    );

    // The token Secret, owned by the job; the workers get it by reference.
    let secret = op.env.api::<Secret>().get("pay-admin-token").await.unwrap();
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    let token = String::from_utf8(secret.data.clone().unwrap()["token"].0.clone()).unwrap();
    assert_eq!(token.len(), 64);
    assert!(
        c["env"]
            .to_string()
            .contains(r#"{"name":"WEIR_ADMIN_TOKEN","valueFrom":{"secretKeyRef":{"key":"token","name":"pay-admin-token","optional":false}}}"#),
        "{}",
        c["env"]
    );

    // The NetworkPolicy: ingress to the admin port from the operator's pods only.
    let np = op.env.api::<NetworkPolicy>().get("pay").await.unwrap();
    assert_eq!(np.metadata.owner_references.unwrap()[0].uid, uid);
    assert_eq!(
        serde_json::to_value(np.spec.unwrap()).unwrap(),
        json!({
            "podSelector": {"matchLabels": {"weir.dev/job": "pay"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": op.env.ns}},
                    "podSelector": {"matchLabels": {
                        "app.kubernetes.io/instance": op.release,
                        "app.kubernetes.io/name": "weir-operator"}},
                }],
                "ports": [{"port": 8081, "protocol": "TCP"}],
            }],
        })
    );

    // Anyone else asking a worker to stop is refused, and the job keeps running.
    let ip = workers[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let base = format!("http://{ip}:8081");
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer guessed-token-0000000000000000")] {
        let mut req = http
            .post(format!("{base}/v1/savepoints"))
            .json(&json!({"stop": true}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status: serde_json::Value = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert!(ready(&op.job("pay").await));
    let worker_log = op
        .env
        .log(workers[0].metadata.name.as_deref().unwrap(), "worker");
    assert!(
        worker_log.matches("admin API refused a request").count() >= 2,
        "{worker_log}"
    );
    assert!(!worker_log.contains(&token) && !worker_log.contains("guessed-token"));

    // The operator's savepoint upgrade works with the token: a token rotation rolls the
    // workers, whose upgrade savepoint goes to workers still holding the old token.
    let patch = json!({"metadata": {"annotations": {"weir.dev/rotate-admin-token": "1"}}});
    let out = op.kubectl(
        &[
            "patch",
            "sj",
            "pay",
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = op
        .wait_job(
            "pay",
            "rolled from the rotation's savepoint",
            2 * MINUTE,
            |j| ready(j) && restored_from(j).is_some(),
        )
        .await;
    let sp = j.status.clone().unwrap().last_savepoint.unwrap();
    assert_eq!(sp.reason, "Upgrade");
    let rotated = op
        .env
        .api::<Secret>()
        .get("pay-admin-token")
        .await
        .unwrap()
        .data
        .unwrap();
    let new_token = String::from_utf8(rotated["token"].0.clone()).unwrap();
    assert_ne!(new_token, token);
    assert_eq!(rotated["previous"].0, token.as_bytes());

    // No token in the status, the events or the operator's log.
    let status = serde_json::to_string(&j.status).unwrap();
    let events = op
        .env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = serde_json::to_string(&events.items).unwrap();
    let log = op.operator_log().await;
    for (what, text) in [
        ("status", &status),
        ("events", &events),
        ("operator log", &log),
    ] {
        for t in [&token, &new_token] {
            assert!(!text.contains(t.as_str()), "a token in the {what}");
        }
    }
    op.finish().await;
}
