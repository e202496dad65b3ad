//! StreamJob reconciles against the fake API server and fake workers: the finalizer, the owned
//! objects with owner references, status patches with observedGeneration, events, and a
//! savepoint upgrade driven one reconcile at a time.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{json, Value};
use weir_crds::StreamJob;
use weir_operator::admin::AdminClient;
use weir_operator::controller::stream_job::{reconcile, Context, FINALIZER};
use weir_operator::metrics::Metrics;
use weir_operator::resources::NetworkPolicySettings;

use crate::fake_api::{FakeApi, FakeWorkers, Recorded};

const JOB_PATH: &str = "/apis/weir.dev/v1alpha1/namespaces/prod/streamjobs/orders";

fn job_json(image: &str, finalizers: &[&str]) -> Value {
    json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": "orders", "namespace": "prod", "uid": "u-1", "generation": 3,
                     "finalizers": finalizers},
        "spec": {
            "image": image,
            "parallelism": 2,
            "pipeline": {
                "checkpoint": {"interval": "1s", "storage": "s3://bucket/state"},
                "sources": [{"name": "in", "type": "datagen", "count": 10,
                             "fields": {"id": {"kind": "sequence"}}}],
                "sinks": [{"name": "out", "type": "blackhole"}]
            }
        }
    })
}

fn context(api: &FakeApi, workers_base: String) -> Arc<Context> {
    let client = api.client();
    Arc::new(Context {
        client: client.clone(),
        admin: AdminClient::new(std::time::Duration::from_secs(2)).unwrap(),
        worker_url: Arc::new(move |_job, w, _pod| Some(format!("{workers_base}/w{w}"))),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "weir-operator".into(),
                instance: None,
            },
        ),
        metrics: Metrics::new().unwrap(),
        now: Arc::new(|| Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()),
        network_policies: NetworkPolicySettings {
            enabled: true,
            operator_namespace: "weir-system".into(),
            operator_pod_labels: [("app.kubernetes.io/name".into(), "weir-operator".into())].into(),
            metrics_from: None,
        },
    })
}

fn find<'a>(reqs: &'a [Recorded], method: &str, suffix: &str) -> Vec<&'a Recorded> {
    reqs.iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .collect()
}

fn events(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.path.contains("/events"))
        .map(|r| {
            format!(
                "{}: {}",
                r.body["reason"].as_str().unwrap_or(""),
                r.body["note"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn stored_job(api: &FakeApi) -> StreamJob {
    let v = api.objects.lock().unwrap()[JOB_PATH].clone();
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn deploy_then_upgrade_through_a_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("orders").to_string_lossy().into_owned();
    let workers = FakeWorkers::default();
    let base = workers.serve(root.clone()).await;
    let api = FakeApi::default();
    let ctx = context(&api, base);

    // 1. No finalizer yet: the reconcile only adds it.
    api.objects
        .lock()
        .unwrap()
        .insert(JOB_PATH.into(), job_json("weir:1", &[]));
    let job: StreamJob = serde_json::from_value(job_json("weir:1", &[])).unwrap();
    reconcile(Arc::new(job), ctx.clone()).await.unwrap();
    let reqs = api.take();
    let patch = find(&reqs, "PATCH", "/streamjobs/orders");
    assert_eq!(patch.len(), 1, "{reqs:?}");
    assert!(
        patch[0].body.to_string().contains(FINALIZER),
        "{:?}",
        patch[0].body
    );
    assert_eq!(
        stored_job(&api).metadata.finalizers.unwrap(),
        vec![FINALIZER]
    );

    // 2. First deployment: owned objects, status, events.
    let job = stored_job(&api);
    reconcile(Arc::new(job), ctx.clone()).await.unwrap();
    let reqs = api.take();
    for kind in [
        "secrets/orders-admin-token",
        "services/orders",
        "poddisruptionbudgets/orders",
        "networkpolicies/orders",
        "statefulsets/orders",
    ] {
        let r = find(&reqs, "PATCH", kind);
        assert_eq!(r.len(), 1, "{kind}: {reqs:?}");
        assert!(
            r[0].query.contains("fieldManager=weir-operator"),
            "{}",
            r[0].query
        );
        let owner = &r[0].body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "StreamJob", "{kind}");
        assert_eq!(owner["uid"], "u-1");
        assert_eq!(owner["controller"], true);
    }
    let cms: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/configmaps/orders-"))
        .collect();
    assert_eq!(cms.len(), 1);
    let pipeline = cms[0].body["data"]["pipeline.yaml"].as_str().unwrap();
    assert!(pipeline.contains("name: orders"), "{pipeline}");
    assert!(pipeline.contains("parallelism: 2"), "{pipeline}");
    let sts = &find(&reqs, "PATCH", "statefulsets/orders")[0].body;
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(sts["spec"]["serviceName"], "orders");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "weir:1");
    let env = container["env"].to_string();
    assert!(env.contains("apps.kubernetes.io/pod-index"), "{env}");
    // The token reaches the workers by reference only.
    let secret = &find(&reqs, "PATCH", "secrets/orders-admin-token")[0].body;
    let token_b64 = secret["data"]["token"].as_str().unwrap().to_string();
    assert!(!env.contains(&token_b64), "{env}");
    assert!(
        env.contains(r#"{"name":"WEIR_ADMIN_TOKEN","valueFrom":{"secretKeyRef":{"key":"token","name":"orders-admin-token","optional":false}}}"#),
        "{env}"
    );
    let all = format!("{reqs:?}");
    assert_eq!(
        all.matches(&token_b64).count(),
        1,
        "only in the Secret itself"
    );
    assert!(!container["args"].to_string().contains("--from-savepoint"));
    let status_patch = find(&reqs, "PATCH", "/streamjobs/orders/status");
    assert_eq!(status_patch.len(), 1);
    let status = &status_patch[0].body["status"];
    assert_eq!(status["phase"], "Deploying", "{status}");
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["deployed"]["parallelism"], 2);
    for c in status["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 3, "{c}");
    }
    // Workers were not yet read when this reconcile started, so Ready must not be claimed.
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False", "{status}");
    let evs = events(&reqs);
    assert!(
        evs.iter()
            .any(|e| e.starts_with("Deploying: first deployment")),
        "{evs:?}"
    );

    // 3. Workers run: the next reconcile reads them and reports Ready.
    let job = stored_job(&api);
    reconcile(Arc::new(job), ctx.clone()).await.unwrap();
    let reqs = api.take();
    let status = &find(&reqs, "PATCH", "/status")[0].body["status"];
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True", "{status}");
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    assert_eq!(status["lastCheckpoint"]["id"], 7);
    assert!(
        find(&reqs, "PATCH", "statefulsets/orders").is_empty(),
        "no roll without a change"
    );
    assert!(
        find(&reqs, "PATCH", "secrets/orders-admin-token").is_empty(),
        "the token is kept"
    );
    for kind in [
        "services/orders",
        "poddisruptionbudgets/orders",
        "networkpolicies/orders",
    ] {
        assert!(
            find(&reqs, "PATCH", kind).is_empty(),
            "{kind} is unchanged, so not written again"
        );
    }

    // 3b. The Service deleted by hand: put back, and only it.
    api.objects
        .lock()
        .unwrap()
        .remove("/api/v1/namespaces/prod/services/orders");
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert_eq!(find(&reqs, "PATCH", "services/orders").len(), 1, "{reqs:?}");
    assert!(find(&reqs, "PATCH", "poddisruptionbudgets/orders").is_empty());
    assert!(find(&reqs, "PATCH", "networkpolicies/orders").is_empty());

    // 4. A new image: savepoint with stop on every worker, nothing rolled yet.
    {
        let mut objects = api.objects.lock().unwrap();
        let j = objects.get_mut(JOB_PATH).unwrap();
        j["spec"]["image"] = json!("weir:2");
        j["metadata"]["generation"] = json!(4);
    }
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert!(find(&reqs, "PATCH", "statefulsets/orders").is_empty());
    let triggers = workers.triggers.lock().unwrap().clone();
    assert_eq!(triggers.len(), 2, "{triggers:?}");
    assert!(triggers.iter().all(|(_, b)| b["stop"] == true));
    let id = triggers[0].1["id"].as_str().unwrap().to_string();
    assert_eq!(triggers[1].1["id"], id.as_str(), "same id on every worker");
    let token: k8s_openapi::ByteString = serde_json::from_value(json!(token_b64)).unwrap();
    let token = String::from_utf8(token.0).unwrap();
    let auths = workers.auths.lock().unwrap().clone();
    assert_eq!(
        auths,
        vec![format!("Bearer {token}"); 2],
        "the Secret's token"
    );
    let status = &find(&reqs, "PATCH", "/status")[0].body["status"];
    assert_eq!(status["phase"], "Upgrading");
    assert_eq!(status["operation"]["kind"], "Upgrade");
    assert!(events(&reqs)
        .iter()
        .any(|e| e.starts_with("SavepointTriggered")));

    // 5. First poll: pending → wait; second poll: complete → job manifest written, rolled.
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert!(find(&reqs, "PATCH", "statefulsets/orders").is_empty());
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    let manifest_path = format!("{root}/savepoints/{id}/_SAVEPOINT.json");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["parts"], json!(["worker-0", "worker-1"]));
    assert_eq!(manifest["parallelism"], 2);
    assert_eq!(manifest["job"], "orders");
    let sts = &find(&reqs, "PATCH", "statefulsets/orders")[0].body;
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "weir:2");
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    let sp_dir = format!("{root}/savepoints/{id}");
    assert_eq!(
        args[args.len() - 2..],
        ["--from-savepoint".to_string(), sp_dir.clone()]
    );
    let status = &find(&reqs, "PATCH", "/status")[0].body["status"];
    assert_eq!(status["lastSavepoint"]["path"], sp_dir.as_str());
    assert_eq!(status["deployed"]["restoredFrom"], sp_dir.as_str());
    assert!(status.get("operation").is_none(), "{status}");
    let evs = events(&reqs);
    assert!(
        evs.iter().any(|e| e.starts_with("SavepointCompleted")),
        "{evs:?}"
    );
}

#[tokio::test]
async fn failing_workers_are_never_ready_and_missing_connectors_block_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let workers = FakeWorkers::default();
    let base = workers
        .serve(dir.path().to_string_lossy().into_owned())
        .await;
    let api = FakeApi::default();
    let ctx = context(&api, base);

    let mut j = job_json("weir:1", &[FINALIZER]);
    j["spec"]["pipeline"]["sinks"][0] =
        json!({"name": "out", "type": "kafka", "connectorRef": "nope", "topic": "t"});
    api.objects.lock().unwrap().insert(JOB_PATH.into(), j);
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    for kind in [
        "statefulsets/orders",
        "services/orders",
        "poddisruptionbudgets/orders",
    ] {
        assert!(
            find(&reqs, "PATCH", kind).is_empty(),
            "nothing deployed: {kind}"
        );
    }
    let status = &find(&reqs, "PATCH", "/status")[0].body["status"];
    let degraded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(degraded["status"], "True");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("no Connector named \"nope\""),
        "{degraded}"
    );

    // A deployed job whose workers fail: Ready False, Degraded True with the worker's error.
    let mut j = job_json("weir:1", &[FINALIZER]);
    api.objects
        .lock()
        .unwrap()
        .insert(JOB_PATH.into(), j.clone());
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    api.take();
    *workers.state.lock().unwrap() = "failed".into();
    j = api.objects.lock().unwrap()[JOB_PATH].clone();
    reconcile(Arc::new(serde_json::from_value(j).unwrap()), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    let status = &find(&reqs, "PATCH", "/status")[0].body["status"];
    assert_eq!(status["phase"], "Failed");
    let cond = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(cond("Ready")["status"], "False");
    assert_eq!(cond("Degraded")["status"], "True");
    assert_eq!(cond("Degraded")["reason"], "WorkersFailed");
    assert!(events(&reqs).iter().any(|e| e.contains("Degraded is True")));
}

/// What the runtime refuses is never deployed: a Connector of type postgres used by a jdbc node
/// with its password from a Secret is fine; a setting the jdbc node does not have, or a Secret
/// that does not exist, holds the deployment with the reason in Degraded.
#[tokio::test]
async fn the_operator_refuses_what_the_runtime_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let workers = FakeWorkers::default();
    let base = workers
        .serve(dir.path().to_string_lossy().into_owned())
        .await;
    let api = FakeApi::default();
    let ctx = context(&api, base);
    api.objects.lock().unwrap().insert(
        "/apis/weir.dev/v1alpha1/namespaces/prod/connectors/warehouse".into(),
        json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Connector",
               "metadata": {"name": "warehouse", "namespace": "prod"},
               "spec": {"type": "postgres", "url": "postgres://weir@db:5432/app",
                        "credentials": [{"setting": "password",
                                         "secretKeyRef": {"name": "db", "key": "password"}}]}}),
    );
    let sink = |extra: Value| {
        let mut j = job_json("weir:1", &[FINALIZER]);
        let mut node = json!({"name": "out", "type": "jdbc", "connectorRef": "warehouse",
                              "table": "t"});
        if let (Some(n), Some(e)) = (node.as_object_mut(), extra.as_object()) {
            n.extend(e.clone());
        }
        j["spec"]["pipeline"]["sinks"][0] = node;
        j
    };
    let degraded = |reqs: &[Recorded]| {
        let status = &find(reqs, "PATCH", "/status")[0].body["status"];
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap()
            .clone()
    };

    // The Secret does not exist yet: held, and the Secret is named.
    api.objects
        .lock()
        .unwrap()
        .insert(JOB_PATH.into(), sink(json!({})));
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert!(find(&reqs, "PATCH", "statefulsets/orders").is_empty());
    let d = degraded(&reqs);
    assert_eq!(d["reason"], "InvalidSpec", "{d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("Secret prod/db does not exist"),
        "{d}"
    );

    // With the Secret, it deploys; the password reaches the pipeline only as ${env:…}.
    api.objects.lock().unwrap().insert(
        "/api/v1/namespaces/prod/secrets/db".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "prod"},
               "data": {"password": "aHVudGVyMg=="}}),
    );
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert_eq!(
        find(&reqs, "PATCH", "statefulsets/orders").len(),
        1,
        "{reqs:?}"
    );
    let cm = reqs
        .iter()
        .find(|r| r.method == "PATCH" && r.path.contains("/configmaps/orders-"))
        .unwrap();
    let pipeline = cm.body["data"]["pipeline.yaml"].as_str().unwrap();
    assert!(
        pipeline.contains("${env:WEIR_CONN_WAREHOUSE_PASSWORD}"),
        "{pipeline}"
    );
    assert!(!pipeline.contains("hunter2"));

    // A setting the jdbc sink does not have: refused with the runtime's own message, nothing
    // rolled, the running job untouched.
    let mut j = sink(json!({"bogus_setting": 1}));
    j["status"] = serde_json::to_value(stored_job(&api).status.unwrap()).unwrap();
    api.objects.lock().unwrap().insert(JOB_PATH.into(), j);
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    assert!(
        find(&reqs, "PATCH", "statefulsets/orders").is_empty(),
        "{reqs:?}"
    );
    let d = degraded(&reqs);
    let m = d["message"].as_str().unwrap();
    assert!(
        m.contains("pipeline.sinks[0]") && m.contains("bogus_setting"),
        "{d}"
    );
}

#[tokio::test]
async fn deletion_releases_the_finalizer() {
    let dir = tempfile::tempdir().unwrap();
    let workers = FakeWorkers::default();
    let base = workers
        .serve(dir.path().to_string_lossy().into_owned())
        .await;
    let api = FakeApi::default();
    let ctx = context(&api, base);
    let mut j = job_json("weir:1", &[FINALIZER]);
    j["metadata"]["deletionTimestamp"] = json!("2026-01-01T12:00:00Z");
    api.objects.lock().unwrap().insert(JOB_PATH.into(), j);
    reconcile(Arc::new(stored_job(&api)), ctx.clone())
        .await
        .unwrap();
    let reqs = api.take();
    let patches = find(&reqs, "PATCH", "/streamjobs/orders");
    assert_eq!(patches.len(), 1, "{reqs:?}");
    assert!(
        patches[0].body.to_string().contains("remove"),
        "{:?}",
        patches[0].body
    );
    assert!(find(&reqs, "PATCH", "statefulsets/orders").is_empty());
}
