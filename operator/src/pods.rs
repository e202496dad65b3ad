//! What the worker pods say about themselves (read from the API, summarized purely): where to
//! reach each worker (its pod IP) and whether its container starts, runs or crashes. The admin API
//! says how the job runs; the pod says why a worker does not answer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// The label Kubernetes (≥ 1.28) puts on each StatefulSet pod: its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// One worker pod, as far as the operator cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodObservation {
    pub name: String,
    /// `status.podIP`: how the operator reaches the worker's admin API (no DNS lag for new pods).
    pub ip: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    /// Why the container waits (`CrashLoopBackOff: back-off 10s restarting …`, `ContainerCreating`).
    pub waiting: Option<String>,
    /// How the container last ended, when it did (`exit code 137 (Error)`).
    pub last_exit: Option<String>,
    /// The exit code when the container is terminated now (not restarted yet).
    pub terminated: Option<i32>,
    /// Being deleted.
    pub terminating: bool,
    /// The config hash of the pod template it runs.
    pub config_hash: Option<String>,
}

impl PodObservation {
    /// The container is crash-looping, cannot start, or the pod failed for good: a real failure,
    /// not a slow start. One crash is not a loop: after a single exit (kill -9, OOM once) the
    /// kubelet may already say `CrashLoopBackOff` for its first short back-off, so a back-off
    /// counts only once the container has been restarted `CRASH_LOOP_RESTARTS` times.
    pub fn crashing(&self) -> bool {
        /// States that no restart cures (image or container configuration).
        const BROKEN: [&str; 4] = [
            "CreateContainerError",
            "CreateContainerConfigError",
            "RunContainerError",
            "ImagePullBackOff",
        ];
        const CRASH_LOOP_RESTARTS: i32 = 2;
        let waiting = self.waiting.as_deref().unwrap_or("");
        BROKEN.iter().any(|b| waiting.starts_with(b))
            || (waiting.starts_with("CrashLoopBackOff") && self.restarts >= CRASH_LOOP_RESTARTS)
            || self.phase == "Failed"
    }

    /// The container ended and is restarted, or restarted and runs again but the worker does
    /// not answer yet (it is recovering from its checkpoint).
    pub fn restarting(&self) -> bool {
        (self.restarts > 0
            || self.terminated.is_some_and(|code| code != 0)
            || self
                .waiting
                .as_deref()
                .is_some_and(|w| w.starts_with("CrashLoopBackOff")))
            && !self.ready
            && !self.crashing()
    }

    /// A short account of why the worker may not answer, for status and conditions.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("pod {} is {}", self.name, self.phase)];
        if self.terminating {
            parts.push("terminating".into());
        }
        if let Some(w) = &self.waiting {
            parts.push(format!("waiting: {w}"));
        }
        if self.restarts > 0 {
            parts.push(format!("{} restart(s)", self.restarts));
        }
        if let Some(e) = &self.last_exit {
            parts.push(format!("last exit: {e}"));
        }
        parts.join(", ")
    }
}

/// The worker index of a pod: its pod-index label, else the ordinal suffix of its name.
pub fn ordinal(pod: &Pod, job: &str) -> Option<u32> {
    if let Some(i) = pod.labels().get(POD_INDEX_LABEL) {
        return i.parse().ok();
    }
    pod.name_any()
        .strip_prefix(&format!("{job}-"))
        .and_then(|n| n.parse().ok())
}

/// Summarizes one pod. Pure.
pub fn observe(pod: &Pod, hash_annotation: &str) -> PodObservation {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first().cloned());
    let waiting = container
        .as_ref()
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .map(|w| {
            let reason = w.reason.clone().unwrap_or_else(|| "Waiting".into());
            match &w.message {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason,
            }
        });
    let last_exit = container
        .as_ref()
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            let mut s = format!("exit code {}", t.exit_code);
            if let Some(r) = &t.reason {
                s.push_str(&format!(" ({r})"));
            }
            if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                s.push_str(&format!(": {}", m.trim()));
            }
            s
        });
    let terminated = container
        .as_ref()
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    PodObservation {
        name: pod.name_any(),
        ip: status.pod_ip.clone().filter(|ip| !ip.is_empty()),
        phase: status.phase.clone().unwrap_or_else(|| "Pending".into()),
        ready: container.as_ref().is_some_and(|c| c.ready),
        restarts: container.as_ref().map_or(0, |c| c.restart_count),
        waiting,
        last_exit,
        terminated,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        config_hash: pod.annotations().get(hash_annotation).cloned(),
    }
}

/// The job's pods by worker index (a terminating pod gives way to its replacement).
pub fn by_worker(pods: &[Pod], job: &str, hash_annotation: &str) -> BTreeMap<u32, PodObservation> {
    let mut out: BTreeMap<u32, PodObservation> = BTreeMap::new();
    for pod in pods {
        let Some(i) = ordinal(pod, job) else {
            continue;
        };
        let o = observe(pod, hash_annotation);
        let replace = out
            .get(&i)
            .is_none_or(|old| old.terminating && !o.terminating);
        if replace {
            out.insert(i, o);
        }
    }
    out
}

/// How many of workers `0..parallelism` have a pod that runs another pod template than
/// `hash` (the deployed spec): the StatefulSet has not replaced them yet. A worker without a pod
/// is not counted (it is not running at all, which its status says).
pub fn rolling(pods: &BTreeMap<u32, PodObservation>, parallelism: u32, hash: &str) -> u32 {
    (0..parallelism)
        .filter_map(|w| pods.get(&w))
        .filter(|p| p.config_hash.as_deref() != Some(hash))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_crash_looping_worker_is_told_apart_from_a_slow_start() {
        let crashing = pod(json!({
            "metadata": {"name": "orders-1", "labels": {POD_INDEX_LABEL: "1"},
                         "annotations": {"weir.dev/config-hash": "abc"}},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": [{
                "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error",
                                             "message": "sinks[0].password: unknown field"}}
            }]}
        }));
        let o = observe(&crashing, "weir.dev/config-hash");
        assert_eq!(ordinal(&crashing, "orders"), Some(1));
        assert_eq!(o.ip.as_deref(), Some("10.0.0.7"));
        assert!(o.crashing());
        assert_eq!(o.config_hash.as_deref(), Some("abc"));
        let d = o.describe();
        assert!(d.contains("CrashLoopBackOff: back-off 40s"), "{d}");
        assert!(
            d.contains("exit code 2 (Error): sinks[0].password: unknown field"),
            "{d}"
        );

        let starting = pod(json!({
            "metadata": {"name": "orders-0"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]}
        }));
        let o = observe(&starting, "weir.dev/config-hash");
        assert_eq!(ordinal(&starting, "orders"), Some(0), "from the name");
        assert!(!o.crashing());
        assert!(!o.restarting());
        assert_eq!(o.ip, None);

        // Killed once and restarted by the kubelet: recovering, not failing.
        let restarted = pod(json!({
            "metadata": {"name": "orders-0"},
            "status": {"phase": "Running", "podIP": "10.0.0.8", "containerStatuses": [{
                "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}
            }]}
        }));
        let o = observe(&restarted, "weir.dev/config-hash");
        assert!(o.restarting() && !o.crashing());
        assert!(o.describe().contains("exit code 137"), "{}", o.describe());

        // Killed a moment ago, before the kubelet restarted it: restarting too, not failed.
        let killed = pod(json!({
            "metadata": {"name": "orders-0"},
            "status": {"phase": "Running", "podIP": "10.0.0.8", "containerStatuses": [{
                "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "Error"}}
            }]}
        }));
        let o = observe(&killed, "weir.dev/config-hash");
        assert!(o.restarting() && !o.crashing(), "{o:?}");

        // The kubelet's first short back-off after that one exit: still one crash, not a loop.
        let first_backoff = pod(json!({
            "metadata": {"name": "orders-0"},
            "status": {"phase": "Running", "podIP": "10.0.0.8", "containerStatuses": [{
                "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1s"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}
            }]}
        }));
        let o = observe(&first_backoff, "weir.dev/config-hash");
        assert!(o.restarting() && !o.crashing(), "{o:?}");
    }

    #[test]
    fn a_replacement_pod_wins_over_the_terminating_one() {
        let old = pod(
            json!({"metadata": {"name": "j-0", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                             "status": {"podIP": "127.0.0.2"}}),
        );
        let new = pod(json!({"metadata": {"name": "j-0"}, "status": {"podIP": "127.0.0.3"}}));
        let m = by_worker(&[old.clone(), new.clone()], "j", "h");
        assert_eq!(m[&0].ip.as_deref(), Some("127.0.0.3"));
        let m = by_worker(&[new, old], "j", "h");
        assert_eq!(m[&0].ip.as_deref(), Some("127.0.0.3"));
    }

    #[test]
    fn workers_whose_pods_run_an_earlier_template_are_rolling() {
        let p = |name: &str, hash: &str| {
            pod(json!({"metadata": {"name": name, "annotations": {"weir.dev/config-hash": hash}}}))
        };
        let pods = by_worker(
            &[p("j-0", "old"), p("j-1", "new")],
            "j",
            "weir.dev/config-hash",
        );
        assert_eq!(rolling(&pods, 2, "new"), 1);
        assert_eq!(rolling(&pods, 2, "old"), 1);
        // Worker 2 has no pod yet (a scale-up): not running, but not an old pod either.
        assert_eq!(rolling(&pods, 3, "new"), 1);
        let pods = by_worker(
            &[p("j-0", "new"), p("j-1", "new")],
            "j",
            "weir.dev/config-hash",
        );
        assert_eq!(rolling(&pods, 2, "new"), 0);
    }
}
