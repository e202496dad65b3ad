//! A measurement, not a pass/fail figure (ignored; run by hand, see README "Operator at scale"):
//! the operator with 50 StreamJobs (`WEIR_SCALE_JOBS`). It prints the operator process's memory
//! (VmRSS, VmHWM from /proc/<pid>/status) and CPU (utime + stime from /proc/<pid>/stat) while the
//! jobs come up and over a steady window (`WEIR_SCALE_WINDOW`, default 60 s), and the reconcile
//! latency p50/p99 from the operator's `weir_operator_reconcile_duration_seconds` histogram.
//!
//! By default every job runs one real worker (a datagen source at 1 record/s into a blackhole,
//! checkpoints every 10 s to S3), so each reconcile asks a live worker's admin API, as in a
//! cluster. `WEIR_SCALE_SUSPENDED=1` applies them suspended instead (no workers: the operator's
//! own cost only, for a machine that cannot run 50 workers).

use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::{pid_of, ready, Install, Op};

const MINUTE: Duration = Duration::from_secs(60);
/// The workers' admin port (the StreamJob default).
const ADMIN_PORT: u16 = 8081;
const HISTOGRAM: &str = "weir_operator_reconcile_duration_seconds";

fn scale_job(op: &Op, name: &str, suspended: bool) -> String {
    let opts = op.s3.options();
    let bucket = &op.s3.bucket;
    let state = if suspended { "suspended" } else { "running" };
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: {name}
spec:
  image: ghcr.io/weir/weir:0.1.0
  parallelism: 1
  state: {state}
  upgradeMode: last-state
  startupTimeout: 120s
  pipeline:
    checkpoint:
      interval: 10s
      timeout: 10s
      storage: s3://{bucket}/{name}/state
      storage_options: {opts}
    sources:
      - name: gen
        type: datagen
        rate: 1
        splits: 1
        fields:
          id: {{ kind: sequence }}
    sinks:
      - name: out
        type: blackhole
"#
    )
}

/// What /proc says about one process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    /// utime + stime, seconds.
    cpu: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn sample(pid: i32) -> Sample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start at state, field 3; utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        at: Instant::now(),
        cpu: ticks as f64 / hz,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

/// The StreamJob reconcile histogram's cumulative buckets `(le, count)`, `+Inf` last.
fn buckets(metrics: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{HISTOGRAM}_bucket{{kind=\"StreamJob\",le=\"");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket counts of `after` minus those of `before` (a window of the same histogram).
fn window(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - was)
        })
        .collect()
}

/// Prometheus' `histogram_quantile`: linear within the bucket holding the q-th observation;
/// in the `+Inf` bucket, the highest finite bound.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let share = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    None
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let b = [
        (0.01, 50.0),
        (0.05, 90.0),
        (0.1, 100.0),
        (f64::INFINITY, 100.0),
    ];
    assert_eq!(quantile(0.5, &b), Some(0.01));
    assert!((quantile(0.99, &b).unwrap() - 0.095).abs() < 1e-9);
    assert_eq!(quantile(0.99, &[(f64::INFINITY, 0.0)]), None);
    let w = window(&[(0.01, 10.0), (f64::INFINITY, 10.0)], &b);
    assert_eq!(w[0], (0.01, 40.0));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement with 50 StreamJobs; run by hand (README, Operator at scale)"]
async fn operator_memory_cpu_and_reconcile_latency_with_fifty_stream_jobs() {
    let jobs: usize = env_or("WEIR_SCALE_JOBS", 50);
    let suspended = env_or("WEIR_SCALE_SUSPENDED", 0) == 1;
    let steady = Duration::from_secs(env_or("WEIR_SCALE_WINDOW", 60));
    let op = Op::install("scale", Install::default()).await;
    let pod = op.operator_pods().await.remove(0);
    let ip = pod.status.and_then(|s| s.pod_ip).expect("operator pod IP");
    let pid = pid_of(&ip, "weir-operator").expect("the operator's process");
    let idle = sample(pid);

    // All jobs in one apply, as a user's manifest would bring them.
    let names: Vec<String> = (0..jobs).map(|i| format!("j{i:02}")).collect();
    let manifest: Vec<String> = names.iter().map(|n| scale_job(&op, n, suspended)).collect();
    let started = sample(pid);
    op.apply(&manifest.join("---\n"));
    let settled = |j: &weir_crds::StreamJob| {
        let seen = j.status.as_ref().and_then(|s| s.observed_generation);
        seen.is_some() && seen == j.metadata.generation && (suspended || ready(j))
    };
    loop {
        let list = op.jobs().list(&Default::default()).await.unwrap().items;
        let done = list.iter().filter(|j| settled(j)).count();
        if done == jobs {
            break;
        }
        assert!(
            started.at.elapsed() < 10 * MINUTE,
            "{done} of {jobs} jobs settled\n{}",
            op.env.diagnostics()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let up = sample(pid);
    let before = buckets(&op.operator_metrics().await);
    tokio::time::sleep(steady).await;
    let end = sample(pid);
    let after = buckets(&op.operator_metrics().await);
    let steady_buckets = window(&before, &after);
    // What one reconcile waits for besides the API server: its workers' `/v1/status`, asked
    // here of every worker at once, as concurrent reconciles do.
    let mut asks = Vec::new();
    if !suspended {
        let ips: Vec<String> = op
            .env
            .pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.labels().contains_key("weir.dev/job"))
            .filter_map(|p| p.status?.pod_ip)
            .collect();
        let client = reqwest::Client::new();
        asks = futures::future::join_all(ips.iter().map(|ip| {
            let client = client.clone();
            async move {
                let t = Instant::now();
                let ok = client
                    .get(format!("http://{ip}:{ADMIN_PORT}/v1/status"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (t.elapsed().as_secs_f64(), ok)
            }
        }))
        .await;
        asks.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    let secs = |a: &Sample, b: &Sample| b.at.duration_since(a.at).as_secs_f64();
    let ms = |q: f64, b: &[(f64, f64)]| {
        quantile(q, b).map_or("n/a".to_string(), |s| format!("{:.0} ms", s * 1000.0))
    };
    let count = |b: &[(f64, f64)]| b.last().map_or(0.0, |(_, c)| *c);
    eprintln!(
        "measure: operator with {jobs} StreamJobs ({})",
        if suspended {
            "suspended, no workers"
        } else {
            "one running worker each"
        }
    );
    eprintln!(
        "measure:   idle before the jobs: RSS {} MiB",
        idle.rss_kib / 1024
    );
    eprintln!(
        "measure:   apply → all settled {:.1}s: CPU {:.1}s ({:.0}% of a core), RSS {} MiB",
        secs(&started, &up),
        up.cpu - started.cpu,
        100.0 * (up.cpu - started.cpu) / secs(&started, &up),
        up.rss_kib / 1024
    );
    eprintln!(
        "measure:   steady {:.0}s: CPU {:.2}s ({:.1}% of a core), {} reconciles, RSS {} MiB, \
         peak RSS (VmHWM) {} MiB",
        secs(&up, &end),
        end.cpu - up.cpu,
        100.0 * (end.cpu - up.cpu) / secs(&up, &end),
        count(&steady_buckets),
        end.rss_kib / 1024,
        end.hwm_kib / 1024
    );
    eprintln!(
        "measure:   reconcile latency: whole run p50 {} p99 {} ({} reconciles); steady p50 {} \
         p99 {}",
        ms(0.5, &after),
        ms(0.99, &after),
        count(&after),
        ms(0.5, &steady_buckets),
        ms(0.99, &steady_buckets)
    );
    if !asks.is_empty() {
        let at = |q: f64| asks[((asks.len() - 1) as f64 * q).round() as usize].0 * 1000.0;
        eprintln!(
            "measure:   worker /v1/status asked of all {} workers at once: p50 {:.0} ms, max {:.0} \
             ms, {} failed",
            asks.len(),
            at(0.5),
            at(1.0),
            asks.iter().filter(|(_, ok)| !ok).count()
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "measure:   machine load average (1, 5, 15 min): {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(count(&after) >= jobs as f64, "every job was reconciled");
    op.finish().await;
}
