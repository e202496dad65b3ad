//! Faults under the real operator: a worker killed with SIGKILL, the operator killed in the
//! middle of an upgrade, two operators electing one leader, a savepoint that never completes.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;

use super::{assert_exactly_once, condition, datagen_job, pid_of, ready, Install, Op};
use crate::harness::is_ready;

const MINUTE: Duration = Duration::from_secs(60);

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

async fn pod_ip(op: &Op, pod: &str) -> String {
    op.env
        .pods()
        .get(pod)
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .expect("pod IP")
}

fn finished(j: &weir_crds::StreamJob) -> bool {
    j.status
        .as_ref()
        .is_some_and(|s| format!("{:?}", s.phase) == "Finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_restarts_and_the_job_recovers_exactly_once() {
    const N: u64 = 4_000;
    let op = Op::install("kill", Install::default()).await;
    op.apply(&datagen_job(&op.s3, "k", 2, N, 150, "v1", ""));
    op.wait_ready("k", 2 * MINUTE).await;
    let ip = pod_ip(&op, "k-0").await;
    let pid = pid_of(&ip, "weir").expect("worker 0's process");
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    // The kubelet restarts it; meanwhile the job is Degraded, then Ready again.
    let degraded = op
        .wait_job("k", "Degraded while worker 0 restarts", MINUTE, |j| {
            condition(j, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
    let reason = condition(&degraded, "Degraded").unwrap().reason.clone();
    assert!(
        ["WorkersRestarting", "WorkersUnreachable"].contains(&reason.as_str()),
        "{reason}: {:#?}",
        degraded.status.as_ref().map(|s| &s.workers)
    );
    let back = op
        .wait_job("k", "Ready again", 2 * MINUTE, |j| {
            ready(j) && condition(j, "Degraded").is_some_and(|c| c.status == "False")
        })
        .await;
    let w0 = &back.status.unwrap().workers[0];
    assert!(w0.restarts >= 1, "{w0:?}");
    op.wait_job("k", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("k/out", "id").await, N as i64);
    op.finish().await;
}

/// The operator keeps everything it needs in the StreamJob's status: killed right after it
/// triggered an upgrade savepoint, its restarted process polls the savepoint and finishes the
/// upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_upgrade_is_finished_by_its_next_process() {
    const N: u64 = 4_000;
    let op = Op::install("opkill", Install::default()).await;
    op.apply(&datagen_job(&op.s3, "u", 2, N, 120, "v1", ""));
    op.wait_ready("u", 2 * MINUTE).await;
    op.apply(&datagen_job(&op.s3, "u", 2, N, 120, "v2", ""));
    // Watched, not polled: the savepoint can be done within a poll interval.
    op.watch_job("u", "upgrade savepoint triggered", MINUTE, |j| {
        j.status.as_ref().is_some_and(|s| s.operation.is_some())
    })
    .await;
    let pods = op.operator_pods().await;
    let name = pods[0].metadata.name.clone().unwrap();
    let ip = pods[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap();
    signal(
        pid_of(&ip, "weir-operator").expect("the operator's process"),
        nix::sys::signal::Signal::SIGKILL,
    );
    op.env
        .wait_pod(&name, "operator restarted and Ready", 2 * MINUTE, |p| {
            is_ready(p)
                && crate::harness::container_status(p, "operator")
                    .is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    op.wait_job("u", "upgraded from the savepoint", 2 * MINUTE, |j| {
        ready(j)
            && j.status
                .as_ref()
                .and_then(|s| s.deployed.as_ref())
                .is_some_and(|d| d.restored_from.is_some())
    })
    .await;
    op.wait_job("u", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("u/out", "id").await, N as i64);
    assert!(op.s3.lines("u/out").await.iter().any(|l| l["tag"] == "v2"));
    op.finish().await;
}

/// Two replicas: one holds the Lease and reconciles, the other waits and reconciles nothing.
/// The leader, deleted, gives the Lease up on its way out, so the other takes over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_hand_over_on_shutdown() {
    let op = Op::install(
        "leader",
        Install {
            values: vec!["replicaCount=2".into()],
            ..Default::default()
        },
    )
    .await;
    let leases = op.env.api::<Lease>();
    let holder = || async {
        leases
            .get_opt("weir-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let start = Instant::now();
    let leader = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(start.elapsed() < MINUTE, "nobody took the Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    op.apply(&datagen_job(&op.s3, "l", 1, 1_000_000, 50, "v1", ""));
    op.wait_ready("l", 2 * MINUTE).await;
    let pods = op.operator_pods().await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let name = p.metadata.name.clone().unwrap();
        let log = op.env.log(&name, "operator");
        let reconciled = log.lines().any(|l| l.contains("decided"));
        assert_eq!(
            reconciled,
            name == leader,
            "{name} (leader {leader}):\n{log}"
        );
    }
    // Hand-over: the leader's Pod is deleted (SIGTERM), it releases the Lease on the way out.
    let t = Instant::now();
    op.env
        .pods()
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let next = loop {
        if let Some(h) = holder().await.filter(|h| *h != leader && !h.is_empty()) {
            break h;
        }
        assert!(
            t.elapsed() < MINUTE,
            "no new leader\n{}",
            op.env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let handover = t.elapsed();
    eprintln!(
        "measure: leader hand-over on shutdown {:.1}s",
        handover.as_secs_f64()
    );
    // The other one waited for an empty holder, not for the 15 s lease to expire.
    assert!(handover < Duration::from_secs(12), "{handover:?}");
    let log = op.env.log(&leader, "operator");
    assert!(log.contains("released the leader Lease"), "{log}");
    // The new leader reconciles: a change reaches the job.
    op.apply(&datagen_job(
        &op.s3,
        "l",
        1,
        1_000_000,
        50,
        "v2",
        "  upgradeMode: last-state",
    ));
    let gen = op.job("l").await.metadata.generation;
    op.wait_job("l", "reconciled by the new leader", 2 * MINUTE, |j| {
        ready(j) && j.status.as_ref().and_then(|s| s.observed_generation) == gen
    })
    .await;
    let log = op.env.log(&next, "operator");
    assert!(log.lines().any(|l| l.contains("decided")), "{log}");
    op.finish().await;
}

/// A savepoint that never completes (a sink whose pre-commit hangs at savepoints, injected with
/// `WEIR_STALL`) follows `onFailure` within `timeout` × attempts: with
/// `FallbackToLastCheckpoint` the upgrade goes on from the newest checkpoints; with `Abort` the
/// old spec keeps running and the job reports UpgradeAbandoned. Either way nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_that_never_completes_follows_on_failure() {
    const N: u64 = 3_000;
    let op = Op::install("hang", Install::default()).await;
    let spec = |name: &str, tag: &str, policy: &str| {
        datagen_job(
            &op.s3,
            name,
            2,
            N,
            80,
            tag,
            &format!(
                "  upgrade: {{ savepoint: {{ timeout: 8s, maxAttempts: 1, onFailure: {policy} }} }}\n  podTemplate: {{ env: [{{ name: WEIR_STALL, value: savepoint_precommit }}] }}"
            ),
        )
    };
    op.apply(&spec("fb", "v1", "FallbackToLastCheckpoint"));
    op.apply(&spec("ab", "v1", "Abort"));
    let v1_hash = op
        .wait_ready("fb", 2 * MINUTE)
        .await
        .status
        .and_then(|s| s.deployed)
        .map(|d| d.spec_hash)
        .unwrap();
    op.wait_ready("ab", 2 * MINUTE).await;
    op.apply(&spec("fb", "v2", "FallbackToLastCheckpoint"));
    op.apply(&spec("ab", "v2", "Abort"));
    let t = Instant::now();
    // Ready once both pods run the new spec: the stalled old workers ignore SIGTERM and are
    // killed after their grace period (checkpoint timeout + 30 s), by which time the job may
    // already have written everything (Finished).
    op.wait_job("fb", "fell back to the last checkpoints", 2 * MINUTE, |j| {
        let s = j.status.as_ref();
        (ready(j) || finished(j))
            && s.and_then(|s| s.deployed.as_ref())
                .is_some_and(|d| d.spec_hash != v1_hash && d.restored_from.is_none())
    })
    .await;
    eprintln!(
        "measure: hanging savepoint → fallback deployed and rolled after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let ab = op
        .wait_job("ab", "upgrade abandoned", 2 * MINUTE, |j| {
            condition(j, "Degraded").is_some_and(|c| c.reason == "UpgradeAbandoned")
        })
        .await;
    assert!(ab.status.as_ref().unwrap().abandoned_hash.is_some());
    let out = op.kubectl(
        &[
            "get",
            "events",
            "--field-selector",
            "reason=UpgradeAbandoned",
            "-o",
            "json",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("timed out"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    op.wait_job("fb", "finished", 3 * MINUTE, finished).await;
    op.wait_job("ab", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("fb/out", "id").await, N as i64);
    assert_exactly_once(&op.s3.count("ab/out", "id").await, N as i64);
    // The abandoned upgrade never ran: the old spec wrote everything.
    assert!(op.s3.lines("ab/out").await.iter().all(|l| l["tag"] == "v1"));
    op.finish().await;
}

/// A `critical: false` sink whose database is down: the worker's circuit breaker opens, the
/// StreamJob stays Ready but is Degraded (`SinkBreakerOpen`), the worker's status names the open
/// breaker, the transition is an Event, and the critical output is still exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_breaker_shows_in_the_status_and_as_an_event() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::ListParams;

    const N: u64 = 3_000;
    let op = Op::install("breaker", Install::default()).await;
    // Nobody listens there: every call of the side sink fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let side = format!(
        r#"      - name: side
        type: jdbc
        url: postgres://weir:weir@127.0.0.1:{port}/weir
        table: events
        critical: false
        circuit_breaker: {{ failures: 2, open_for: 1h, call_timeout: 2s }}
        dead_letter: {{ type: filesystem, path: "s3://{bucket}/b/dead", storage_options: {opts}, format: json }}
"#,
        bucket = op.s3.bucket,
        opts = op.s3.options()
    );
    op.apply(&(datagen_job(&op.s3, "b", 1, N, 100, "v1", "") + &side));
    let j = op
        .wait_job("b", "Degraded by the open breaker", 2 * MINUTE, |j| {
            condition(j, "Degraded").is_some_and(|c| c.reason == "SinkBreakerOpen")
        })
        .await;
    assert!(
        ready(&j),
        "an open breaker of a non-critical sink keeps the job Ready"
    );
    let w0 = &j.status.as_ref().unwrap().workers[0];
    assert_eq!(
        w0.breakers.get("side").map(String::as_str),
        Some("open"),
        "{w0:?}"
    );
    assert!(
        condition(&j, "Degraded")
            .unwrap()
            .message
            .contains("worker 0 sink side: circuit breaker open"),
        "{:?}",
        condition(&j, "Degraded")
    );
    let deadline = Instant::now() + MINUTE;
    loop {
        let events = op
            .env
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap();
        if events.items.iter().any(|e| {
            e.reason.as_deref() == Some("SinkBreakerOpened")
                && e.involved_object.name.as_deref() == Some("b")
                && e.type_.as_deref() == Some("Warning")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SinkBreakerOpened event: {:?}",
            events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    op.wait_job("b", "finished", 3 * MINUTE, finished).await;
    assert_exactly_once(&op.s3.count("b/out", "id").await, N as i64);
    op.finish().await;
}
