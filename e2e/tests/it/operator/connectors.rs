//! Connectors and Secrets under the real operator: a Connector change and a Secret rotation
//! restart the jobs that use them through a savepoint; a missing Secret holds a job back and is
//! named; an exactly-once Kafka sink is tuned against the brokers' own maximum, read from them.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use weir_crds::Connector;

use super::{assert_exactly_once, condition, ready, service_env, Install, Op, S3};

const MINUTE: Duration = Duration::from_secs(60);

pub(super) fn connector(s3: &S3, part_prefix: &str) -> String {
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Connector
metadata: {{ name: lake }}
spec:
  type: s3
  endpoint: {endpoint}
  region: us-east-1
  credentials:
    - setting: storage_options.aws_secret_access_key
      secretKeyRef: {{ name: lake-login, key: secret }}
  properties:
    part_prefix: {part_prefix}
    storage_options: {{ aws_access_key_id: testing }}
"#,
        endpoint = s3.endpoint
    )
}

pub(super) fn secret(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: lake-login }}\nstringData: {{ secret: {value} }}\n"
    )
}

pub(super) fn job(s3: &S3, n: u64) -> String {
    let opts = s3.options();
    let bucket = &s3.bucket;
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{ name: c }}
spec:
  image: ghcr.io/weir/weir:0.1.0
  parallelism: 2
  pipeline:
    checkpoint: {{ interval: 1s, timeout: 10s, storage: "s3://{bucket}/c/state", storage_options: {opts} }}
    sources:
      - {{ name: gen, type: datagen, count: {n}, rate: 100, splits: 4, fields: {{ id: {{ kind: sequence }} }} }}
    sinks:
      - {{ name: out, type: filesystem, connectorRef: lake, path: "s3://{bucket}/c/out", format: json }}
"#
    )
}

pub(super) fn deployed_hash(j: &weir_crds::StreamJob) -> Option<String> {
    j.status
        .as_ref()?
        .deployed
        .as_ref()
        .map(|d| d.spec_hash.clone())
}

/// Waits for an upgrade away from `from` that started from a savepoint.
pub(super) async fn wait_upgraded(op: &Op, from: &str, what: &str) -> String {
    let j = op
        .wait_job("c", what, 2 * MINUTE, |j| {
            ready(j)
                && deployed_hash(j).is_some_and(|h| h != from)
                && j.status
                    .as_ref()
                    .and_then(|s| s.deployed.as_ref())
                    .is_some_and(|d| d.restored_from.is_some())
        })
        .await;
    deployed_hash(&j).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_and_secret_changes_restart_the_job_through_a_savepoint() {
    const N: u64 = 5_000;
    let op = Op::install("conn", Install::default()).await;
    op.apply(&secret("testing"));
    op.apply(&connector(&op.s3, "a"));
    op.apply(&job(&op.s3, N));
    let j = op.wait_ready("c", 2 * MINUTE).await;
    let h1 = deployed_hash(&j).unwrap();
    // The credential reaches the pods from the Secret; the ConfigMap only names it.
    for cm in op
        .env
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("weir.dev/job=c"))
        .await
        .unwrap()
        .items
    {
        let pipeline = cm
            .data
            .unwrap_or_default()
            .remove("pipeline.yaml")
            .unwrap_or_default();
        assert!(
            pipeline.contains("${env:WEIR_CONN_LAKE_STORAGE_OPTIONS_AWS_SECRET_ACCESS_KEY}"),
            "{pipeline}"
        );
    }

    op.apply(&connector(&op.s3, "b"));
    let h2 = wait_upgraded(&op, &h1, "restarted for the Connector change").await;
    op.apply(&secret("rotated"));
    wait_upgraded(&op, &h2, "restarted for the Secret rotation").await;
    let j = op.job("c").await;
    let s = j.status.unwrap();
    assert!(
        s.savepoint_history
            .iter()
            .filter(|h| h.reason == "Upgrade")
            .count()
            >= 2,
        "{:?}",
        s.savepoint_history
    );
    op.wait_job("c", "finished", 3 * MINUTE, |j| {
        j.status
            .as_ref()
            .is_some_and(|s| format!("{:?}", s.phase) == "Finished")
    })
    .await;
    assert_exactly_once(&op.s3.count("c/out", "id").await, N as i64);
    // Parts written before the Connector change carry its old part prefix, later ones the new.
    let names: Vec<String> = op
        .s3
        .objects("c/out")
        .await
        .into_iter()
        .map(|o| o.location.filename().unwrap_or_default().to_string())
        .collect();
    for prefix in ["a-", "b-"] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "no {prefix}* part: {names:?}"
        );
    }
    for cm in op
        .env
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let text = serde_json::to_string(&cm.data).unwrap();
        assert!(
            !text.contains("rotated"),
            "a secret value in ConfigMap {:?}",
            cm.metadata.name
        );
    }
    op.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_holds_the_job_back_and_is_named() {
    let op = Op::install("nosecret", Install::default()).await;
    op.apply(&connector(&op.s3, "a"));
    op.apply(&job(&op.s3, 100));
    let j = op
        .wait_job("c", "held for the missing Secret", MINUTE, |j| {
            condition(j, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
    let d = condition(&j, "Degraded").unwrap();
    assert_eq!(d.reason, "InvalidSpec");
    assert!(
        d.message
            .contains(&format!("Secret {}/lake-login does not exist", op.env.ns)),
        "{d:?}"
    );
    assert!(op
        .env
        .api::<StatefulSet>()
        .get_opt("c")
        .await
        .unwrap()
        .is_none());
    op.apply(&secret("testing"));
    // Deployed once the Secret exists (100 records: it may already have finished).
    op.wait_job("c", "deployed after the Secret appeared", 2 * MINUTE, |j| {
        let s = j.status.as_ref();
        s.is_some_and(|s| s.deployed.is_some())
            && condition(j, "Degraded").is_some_and(|c| c.status == "False")
    })
    .await;
    op.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_kafka_sinks_are_tuned_against_the_brokers_own_maximum() {
    let bootstrap = service_env("kafka", "KAFKA_BOOTSTRAP");
    let op = Op::install("tuning", Install::default()).await;
    op.apply(&format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Connector\nmetadata: {{ name: kafka }}\nspec:\n  type: kafka\n  kafka: {{ bootstrapServers: \"{bootstrap}\" }}\n"
    ));
    // Read from the brokers (e2e/services/kafka.sh sets 900000), not from a field of the spec.
    let start = Instant::now();
    let connectors = op.env.api::<Connector>();
    loop {
        let c = connectors.get("kafka").await.unwrap();
        if c.status.as_ref().and_then(|s| s.transaction_max_timeout_ms) == Some(900_000) {
            let ready = c
                .status
                .unwrap()
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            assert!(
                ready
                    .message
                    .contains("transaction.max.timeout.ms is 900000"),
                "{ready:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < MINUTE,
            "no broker maximum in {:?}",
            c.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let job = |interval: &str, timeout: &str| {
        let opts = op.s3.options();
        format!(
            r#"apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{ name: eo }}
spec:
  image: ghcr.io/weir/weir:0.1.0
  pipeline:
    checkpoint: {{ interval: {interval}, timeout: {timeout}, storage: "s3://{b}/eo/state", storage_options: {opts} }}
    sources: [{{ name: gen, type: datagen, rate: 10, fields: {{ id: {{ kind: sequence }} }} }}]
    sinks: [{{ name: out, type: kafka, connectorRef: kafka, topic: eo-out, delivery: exactly-once }}]
"#,
            b = op.s3.bucket
        )
    };
    op.apply(&job("10m", "10m"));
    let j = op
        .wait_job(
            "eo",
            "Degraded: the broker cannot hold such transactions",
            MINUTE,
            |j| {
                condition(j, "Degraded")
                    .is_some_and(|c| c.message.contains("transaction.max.timeout.ms (900000)"))
            },
        )
        .await;
    let d = condition(&j, "Degraded").unwrap();
    assert!(d.message.contains("lower checkpoint.interval"), "{d:?}");
    assert!(op
        .env
        .api::<StatefulSet>()
        .get_opt("eo")
        .await
        .unwrap()
        .is_none());
    // The fix the message names: shorter checkpoints. Now the operator sets the timeout.
    op.apply(&job("1s", "10s"));
    let j = op
        .wait_job(
            "eo",
            "deployed with a tuned transaction timeout",
            MINUTE,
            |j| j.status.as_ref().is_some_and(|s| s.deployed.is_some()),
        )
        .await;
    let tuned = &j.status.unwrap().transaction_timeouts["out"];
    assert!(tuned.contains("set to"), "{tuned}");
    op.finish().await;
}
