//! A StreamJob's life under the real operator: first deploy to Ready, upgrades through a
//! savepoint (with a rescale), from the last checkpoints and stateless, suspend and resume,
//! savepoints on demand and on a schedule with retention, deletion with a savepoint. The output
//! is counted on S3 after each: every generated id exactly once (a stateless upgrade: once per
//! spec, as it starts the source over).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;

use super::{assert_exactly_once, condition, datagen_job, ready, Install, Op};

const MINUTE: Duration = Duration::from_secs(60);

/// Waits until at least `n` records are visible under the job's output.
async fn wait_output(op: &Op, job: &str, n: usize) {
    let start = Instant::now();
    loop {
        let got: usize = op
            .s3
            .count(&format!("{job}/out"), "id")
            .await
            .values()
            .sum();
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < 2 * MINUTE,
            "only {got} of {n} records written\n{}",
            op.env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn finished(j: &weir_crds::StreamJob) -> bool {
    j.status
        .as_ref()
        .is_some_and(|s| format!("{:?}", s.phase) == "Finished")
}

/// The longest gap between two consecutive committed output objects in `[from, to]`: how long
/// no output became visible around an upgrade (the commit interval is 1 s).
async fn output_gap(
    op: &Op,
    job: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Duration {
    let mut times: Vec<_> = op
        .s3
        .objects(&format!("{job}/out"))
        .await
        .into_iter()
        .map(|o| o.last_modified)
        .collect();
    times.sort();
    let before = times.iter().rfind(|t| **t <= from).copied().unwrap_or(from);
    let mut gap = chrono::Duration::zero();
    let mut last = before;
    for t in times.iter().filter(|t| **t > from) {
        gap = gap.max(*t - last);
        last = *t;
        if *t > to {
            break;
        }
    }
    gap.to_std().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_job_reaches_ready_and_shows_its_status() {
    let op = Op::install("ready", Install::default()).await;
    let started = Instant::now();
    op.apply(&datagen_job(&op.s3, "orders", 2, 1_000_000, 200, "v1", ""));
    let job = op
        .wait_job("orders", "Ready with a checkpoint", 2 * MINUTE, |j| {
            ready(j) && condition(j, "CheckpointHealthy").is_some_and(|c| c.status == "True")
        })
        .await;
    let to_ready = started.elapsed();
    wait_output(&op, "orders", 1).await;
    eprintln!(
        "measure: kubectl apply → Ready {:.1}s, → first committed output {:.1}s",
        to_ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let status = job.status.clone().unwrap();
    assert_eq!(status.observed_generation, job.metadata.generation);
    assert_eq!(format!("{:?}", status.phase), "Running");
    assert_eq!(status.parallelism, 2);
    let pods: Vec<&str> = status.workers.iter().map(|w| w.pod.as_str()).collect();
    assert_eq!(pods, ["orders-0", "orders-1"], "{status:?}");
    assert!(
        status.workers.iter().all(|w| w.state == "running"),
        "{status:?}"
    );
    assert!(status.last_checkpoint.is_some());
    // kstatus: settled means Progressing False, and nothing is wrong.
    let c = |t: &str| condition(&job, t).cloned().unwrap();
    assert_eq!(
        (
            c("Progressing").status.as_str(),
            c("Progressing").reason.as_str()
        ),
        ("False", "Stable")
    );
    assert_eq!(
        (c("Degraded").status.as_str(), c("Degraded").reason.as_str()),
        ("False", "Healthy")
    );
    for cond in &status.conditions {
        assert_eq!(
            cond.observed_generation, job.metadata.generation,
            "{cond:?}"
        );
    }

    // `kubectl get sj` shows the printer columns.
    let out = op.kubectl(&["get", "sj", "orders"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "PARALLELISM",
            "READY",
            "LAST-CHECKPOINT",
            "AGE"
        ],
        "{text}"
    );
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["orders", "Running", "2", "True"], "{text}");

    // Every transition was an event of its own kind, with its note.
    let out = op.kubectl(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=orders",
            "-o",
            "json",
        ],
        None,
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for expected in [
        "Deploying",
        "ProgressingStarting",
        "ReadyRunning",
        "PhaseRunning",
    ] {
        assert!(reasons.contains(&expected), "{expected} not in {reasons:?}");
    }

    // The operator's own metrics, scraped from its pod.
    let metrics = op.operator_metrics().await;
    let reconciles: f64 = metrics
        .lines()
        .find(|l| l.starts_with("weir_operator_reconciles_total{kind=\"StreamJob\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no reconcile counter:\n{metrics}"));
    assert!(reconciles >= 2.0, "{reconciles}");
    assert!(
        metrics.contains("weir_operator_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    // Every log line of a reconcile names its job (the span is entered per poll).
    let log = op.operator_log().await;
    let decided: Vec<&str> = log.lines().filter(|l| l.contains("decided")).collect();
    assert!(!decided.is_empty(), "{log}");
    assert!(
        decided.iter().all(|l| l.contains("name=orders")),
        "{decided:#?}"
    );
    op.finish().await;
}

/// An upgrade with `upgradeMode: savepoint` that also rescales (2 → 3 workers) stops the job
/// with a savepoint and starts the new spec from it; a `last-state` upgrade rolls the workers,
/// each resuming from its newest checkpoint. Every id exactly once, each tagged by the spec that
/// wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_and_last_state_upgrades_keep_the_output_exactly_once() {
    const N: u64 = 5_000;
    let op = Op::install("upgrade", Install::default()).await;
    let savepoint = "  upgradeMode: savepoint\n  upgrade: { savepoint: { timeout: 60s } }";
    op.apply(&datagen_job(&op.s3, "pay", 2, N, 120, "v1", savepoint));
    op.wait_ready("pay", 2 * MINUTE).await;
    wait_output(&op, "pay", 300).await;

    // 1. Savepoint upgrade with a rescale.
    let t1 = chrono::Utc::now();
    let up = Instant::now();
    op.apply(&datagen_job(&op.s3, "pay", 3, N, 120, "v2", savepoint));
    let j = op
        .wait_job(
            "pay",
            "rolled from the upgrade savepoint",
            2 * MINUTE,
            |j| {
                let s = j.status.as_ref();
                ready(j)
                    && s.and_then(|s| s.deployed.as_ref())
                        .is_some_and(|d| d.parallelism == 3 && d.restored_from.is_some())
            },
        )
        .await;
    let savepoint_upgrade = up.elapsed();
    let status = j.status.unwrap();
    let sp = status.last_savepoint.clone().unwrap();
    assert_eq!(sp.reason, "Upgrade");
    assert_eq!(
        Some(sp.path.clone()),
        status.deployed.unwrap().restored_from
    );
    let key = sp.path.split_once(&format!("{}/", op.s3.bucket)).unwrap().1;
    assert!(
        op.s3.exists(&format!("{key}/_SAVEPOINT.json")).await,
        "{key}"
    );
    let gap1 = output_gap(&op, "pay", t1, chrono::Utc::now()).await;

    // 2. Last-state upgrade.
    wait_output(&op, "pay", 2_000).await;
    let t2 = chrono::Utc::now();
    let up = Instant::now();
    let last_state = "  upgradeMode: last-state";
    // At a third of the rate the job outlives the roll: at full rate the rest of the records
    // could all be written while the pods roll one by one, and the job finish without ever
    // being Ready on the new spec (one CI run did). Record `i` is the same at any rate.
    op.apply(&datagen_job(&op.s3, "pay", 3, N, 40, "v3", last_state));
    let gen = op.job("pay").await.metadata.generation;
    op.wait_job("pay", "rolled from the last checkpoints", 2 * MINUTE, |j| {
        let s = j.status.as_ref();
        ready(j)
            && s.and_then(|s| s.observed_generation) == gen
            && s.and_then(|s| s.deployed.as_ref())
                .is_some_and(|d| d.restored_from.is_none())
    })
    .await;
    let last_state_upgrade = up.elapsed();
    let gap2 = output_gap(&op, "pay", t2, chrono::Utc::now()).await;

    op.wait_job("pay", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("pay/out", "id").await, N as i64);
    let lines = op.s3.lines("pay/out").await;
    for tag in ["v1", "v2", "v3"] {
        assert!(
            lines.iter().any(|l| l["tag"] == tag),
            "no record of spec {tag}"
        );
    }
    eprintln!(
        "measure: savepoint upgrade (rescale 2→3) apply → Ready {:.1}s, longest output gap {:.1}s; \
         last-state upgrade apply → Ready {:.1}s, longest output gap {:.1}s",
        savepoint_upgrade.as_secs_f64(),
        gap1.as_secs_f64(),
        last_state_upgrade.as_secs_f64(),
        gap2.as_secs_f64()
    );
    op.finish().await;
}

/// An upgrade with `upgradeMode: stateless` rolls the workers without a savepoint and starts the
/// new spec from empty state, as a Flink job started without one: no savepoint is taken or
/// recorded, the new workers run the new spec with `--start-fresh`, and the source starts over,
/// so the new spec writes every id once more. Exactly once holds within each spec's run, not
/// across the upgrade: ids the old spec committed are written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_upgrade_restarts_from_empty_state_without_a_savepoint() {
    const N: u64 = 3_000;
    let op = Op::install("stateless", Install::default()).await;
    let stateless = "  upgradeMode: stateless";
    op.apply(&datagen_job(&op.s3, "fresh", 2, N, 120, "v1", stateless));
    let before = op.wait_ready("fresh", 2 * MINUTE).await;
    wait_output(&op, "fresh", 300).await;
    let old_pods: Vec<String> = op
        .workers("fresh")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let old_hash = before.status.unwrap().deployed.unwrap().spec_hash;

    let up = Instant::now();
    op.apply(&datagen_job(&op.s3, "fresh", 2, N, 120, "v2", stateless));
    let gen = op.job("fresh").await.metadata.generation;
    let j = op
        .wait_job("fresh", "rolled to the new spec", 2 * MINUTE, |j| {
            let s = j.status.as_ref();
            ready(j)
                && s.and_then(|s| s.observed_generation) == gen
                && s.and_then(|s| s.deployed.as_ref())
                    .is_some_and(|d| d.spec_hash != old_hash)
        })
        .await;
    let to_ready = up.elapsed();
    let status = j.status.unwrap();
    let deployed = status.deployed.clone().unwrap();
    // No savepoint: none recorded, none in flight, none in the store.
    assert!(deployed.restored_from.is_none(), "{deployed:?}");
    assert!(status.last_savepoint.is_none(), "{status:?}");
    assert!(status.savepoint_history.is_empty(), "{status:?}");
    assert!(status.operation.is_none(), "{status:?}");
    let manifests: Vec<String> = op
        .s3
        .objects("fresh/state")
        .await
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|l| l.ends_with("_SAVEPOINT.json"))
        .collect();
    assert!(manifests.is_empty(), "{manifests:?}");
    // New pods, running the new spec from empty state.
    let pods = op.workers("fresh").await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        assert!(!old_pods.contains(&uid), "worker pod not replaced: {uid}");
        let hash = p.metadata.annotations.as_ref().unwrap()["weir.dev/config-hash"].clone();
        assert_eq!(hash, deployed.spec_hash);
        let args = p.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap_or_default();
        let fresh = args.iter().position(|a| a == "--start-fresh");
        assert_eq!(
            fresh.and_then(|i| args.get(i + 1)),
            Some(&deployed.spec_hash),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a == "--from-savepoint"), "{args:?}");
    }
    let metrics = op.operator_metrics().await;
    assert!(
        metrics.contains(r#"weir_operator_upgrades_total{mode="Stateless",outcome="fresh"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("weir_operator_savepoints_total{"),
        "{metrics}"
    );

    op.wait_job("fresh", "finished", 3 * MINUTE, finished).await;
    let lines = op.s3.lines("fresh/out").await;
    let ids = |tag: &str| {
        let mut counts = std::collections::BTreeMap::new();
        for l in lines.iter().filter(|l| l["tag"] == tag) {
            *counts.entry(l["id"].as_i64().unwrap()).or_insert(0usize) += 1;
        }
        counts
    };
    // The new spec's source started over: all N ids, each once.
    let v2 = ids("v2");
    assert_exactly_once(&v2, N as i64);
    // What the old spec committed stays, once each, and all of it is written again by v2.
    let v1 = ids("v1");
    assert!(v1.len() >= 300, "{} ids of v1", v1.len());
    assert!(v1.values().all(|c| *c == 1), "a v1 id twice");
    let all = op.s3.count("fresh/out", "id").await;
    let twice: Vec<&i64> = all
        .iter()
        .filter(|(_, c)| **c == 2)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        twice,
        v1.keys().collect::<Vec<_>>(),
        "the old spec's ids, again"
    );
    eprintln!(
        "measure: stateless upgrade apply → Ready {:.1}s; {} ids written by the old spec and \
         again by the new one",
        to_ready.as_secs_f64(),
        v1.len()
    );
    op.finish().await;
}

/// Savepoints on demand (`savepointTriggerNonce`) and on a schedule, with retention deleting the
/// old ones from the store; suspend takes a savepoint and scales to zero, resume starts from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_and_savepoints_on_demand_and_on_a_schedule() {
    const N: u64 = 4_000;
    let op = Op::install("suspend", Install::default()).await;
    let extra = "  periodicSavepointInterval: 3s\n  savepointRetention: { maxCount: 2 }";
    op.apply(&datagen_job(&op.s3, "sched", 1, N, 100, "v1", extra));
    op.wait_ready("sched", 2 * MINUTE).await;
    // Periodic savepoints come, and retention deletes all but the two newest, from the store too.
    let deleted = || {
        let out = op.kubectl(
            &[
                "get",
                "events",
                "--field-selector",
                "reason=SavepointDeleted",
                "-o",
                "name",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let start = Instant::now();
    while deleted() == 0 {
        assert!(
            start.elapsed() < 2 * MINUTE,
            "retention never deleted a savepoint\n{}",
            op.env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let j = op.job("sched").await;
    let s = j.status.unwrap();
    assert!(s.savepoint_history.len() <= 2, "{:?}", s.savepoint_history);
    assert!(s.savepoint_history.iter().all(|h| h.reason == "Periodic"));
    let manifests: Vec<String> = op
        .s3
        .objects("sched/state")
        .await
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|l| l.ends_with("_SAVEPOINT.json"))
        .collect();
    // The kept two, plus at most one completed since the status was read.
    assert!(manifests.len() <= 3, "retention left {manifests:?}");
    for h in &s.savepoint_history {
        assert!(
            manifests.iter().any(|m| m.contains(&h.id)),
            "{} not on S3",
            h.id
        );
    }

    // On demand.
    let patch =
        |spec: &str| op.kubectl(&["patch", "sj", "sched", "--type=merge", "-p", spec], None);
    assert!(
        patch(r#"{"spec":{"savepointTriggerNonce":7, "periodicSavepointInterval":null}}"#)
            .status
            .success()
    );
    op.wait_job("sched", "a manual savepoint", MINUTE, |j| {
        let s = j.status.as_ref().unwrap();
        s.last_savepoint_trigger_nonce == Some(7)
            && s.last_savepoint
                .as_ref()
                .is_some_and(|l| l.reason == "Manual")
    })
    .await;

    // Suspend: savepoint, stop, scale to zero.
    assert!(patch(r#"{"spec":{"state":"suspended"}}"#).status.success());
    let j = op
        .wait_job("sched", "suspended", MINUTE, |j| {
            j.status
                .as_ref()
                .is_some_and(|s| format!("{:?}", s.phase) == "Suspended")
        })
        .await;
    let resume_from = j
        .status
        .unwrap()
        .deployed
        .unwrap()
        .resume_from
        .expect("a suspend savepoint");
    let start = Instant::now();
    while !op.workers("sched").await.is_empty() {
        assert!(start.elapsed() < MINUTE, "worker pods still there");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Resume from it.
    assert!(patch(r#"{"spec":{"state":"running"}}"#).status.success());
    op.wait_job(
        "sched",
        "resumed from the suspend savepoint",
        2 * MINUTE,
        |j| {
            ready(j)
                && j.status
                    .as_ref()
                    .and_then(|s| s.deployed.as_ref())
                    .and_then(|d| d.restored_from.clone())
                    == Some(resume_from.clone())
        },
    )
    .await;
    op.wait_job("sched", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("sched/out", "id").await, N as i64);
    op.finish().await;
}

/// `deleteWithSavepoint`: the finalizer holds the StreamJob until a stop-with-savepoint is done;
/// the savepoint stays in the store and every owned object is garbage-collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_a_savepoint_keeps_it_and_removes_every_object() {
    let op = Op::install("delete", Install::default()).await;
    op.apply(&datagen_job(
        &op.s3,
        "gone",
        2,
        1_000_000,
        100,
        "v1",
        "  deleteWithSavepoint: true",
    ));
    op.wait_ready("gone", 2 * MINUTE).await;
    let out = op.kubectl(&["delete", "sj", "gone", "--wait=false"], None);
    assert!(out.status.success());
    let start = Instant::now();
    while op.jobs().get_opt("gone").await.unwrap().is_some() {
        assert!(
            start.elapsed() < 2 * MINUTE,
            "finalizer never released\n{}",
            op.env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let savepoints: Vec<String> = op
        .s3
        .objects("gone/state")
        .await
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|l| l.ends_with("_SAVEPOINT.json") && l.contains("/delete-"))
        .collect();
    assert_eq!(savepoints.len(), 1, "{savepoints:?}");
    let lp = ListParams::default().labels("weir.dev/job=gone");
    let start = Instant::now();
    loop {
        let left = op
            .env
            .api::<StatefulSet>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .len()
            + op.env
                .api::<ConfigMap>()
                .list(&lp)
                .await
                .unwrap()
                .items
                .len()
            + op.env.api::<Service>().list(&lp).await.unwrap().items.len()
            + op.env
                .api::<PodDisruptionBudget>()
                .list(&lp)
                .await
                .unwrap()
                .items
                .len()
            + op.workers("gone").await.len();
        if left == 0 {
            break;
        }
        assert!(start.elapsed() < 2 * MINUTE, "{left} owned objects left");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = op.kubectl(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=gone",
            "-o",
            "json",
        ],
        None,
    );
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Released"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("delete savepoint completed")),
        "{events}"
    );
    op.finish().await;
}
