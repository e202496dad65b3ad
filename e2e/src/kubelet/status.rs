//! What the kubelet knows about a Pod's containers, and the Pod status it reports (pure): phase,
//! the `PodScheduled`/`Initialized`/`ContainersReady`/`Ready` conditions with stable transition
//! times, pod IPs and container statuses with restart counts and last termination states.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
    },
    /// Final: the container will not be started again.
    Terminated(Terminated),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRecord {
            name: name.into(),
            image: image.into(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_terminated: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodRecord {
    pub containers: Vec<ContainerRecord>,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: DateTime<Utc>,
    /// A Pod-level problem (a volume that cannot be prepared, no free IP).
    pub message: Option<(String, String)>,
    /// Condition type → (status, last transition time).
    pub conditions: BTreeMap<&'static str, (bool, DateTime<Utc>)>,
}

impl PodRecord {
    pub fn new(containers: Vec<ContainerRecord>, host_ip: &str, now: DateTime<Utc>) -> Self {
        PodRecord {
            containers,
            pod_ip: None,
            host_ip: host_ip.into(),
            start_time: now,
            message: None,
            conditions: BTreeMap::new(),
        }
    }

    /// The Pod phase, as the kubelet's `getPhase` derives it from the containers.
    pub fn phase(&self) -> &'static str {
        let never_ran = |c: &ContainerRecord| {
            matches!(c.state, State::Waiting { .. })
                && c.restart_count == 0
                && c.last_terminated.is_none()
        };
        if self.containers.iter().any(never_ran) {
            return "Pending";
        }
        let finals: Vec<i32> = self
            .containers
            .iter()
            .filter_map(|c| match &c.state {
                State::Terminated(t) => Some(t.exit_code),
                _ => None,
            })
            .collect();
        if !self.containers.is_empty() && finals.len() == self.containers.len() {
            if finals.iter().all(|&code| code == 0) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            "Running"
        }
    }

    /// Records the conditions' current values, keeping each transition time until its value
    /// changes.
    pub fn update_conditions(&mut self, now: DateTime<Utc>) {
        let all_ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let ready = all_ready && self.phase() == "Running";
        let values: [(&'static str, bool); 5] = [
            ("PodScheduled", true),
            ("PodReadyToStartContainers", self.pod_ip.is_some()),
            ("Initialized", true),
            ("ContainersReady", ready),
            ("Ready", ready),
        ];
        for (kind, value) in values {
            match self.conditions.get(kind) {
                Some((old, _)) if *old == value => {}
                _ => {
                    self.conditions.insert(kind, (value, now));
                }
            }
        }
    }

    /// The Pod's `status` as a JSON merge patch (lists are replaced whole; removed scalars are
    /// set to null).
    pub fn status_patch(&self) -> Value {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let terminated = |t: &Terminated| {
            let mut v = json!({
                "exitCode": t.exit_code,
                "reason": t.reason,
                "finishedAt": time(&t.finished_at),
            });
            if let Some(s) = &t.started_at {
                v["startedAt"] = json!(time(s));
            }
            if let Some(m) = &t.message {
                v["message"] = json!(m);
            }
            v
        };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let state = match &c.state {
                    State::Waiting { reason, message } => {
                        json!({"waiting": {"reason": reason, "message": message.clone().unwrap_or_default()}})
                    }
                    State::Running { started_at } => json!({"running": {"startedAt": time(started_at)}}),
                    State::Terminated(t) => json!({"terminated": terminated(t)}),
                };
                let last = c.last_terminated.as_ref().map(|t| json!({"terminated": terminated(t)})).unwrap_or(json!({}));
                json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "containerID": format!("process://{}", c.name),
                    "state": state,
                    "lastState": last,
                    "ready": c.ready,
                    "started": c.started && matches!(c.state, State::Running { .. }),
                    "restartCount": c.restart_count,
                })
            })
            .collect();
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, (value, at))| {
                json!({"type": kind, "status": if *value { "True" } else { "False" }, "lastTransitionTime": time(at), "lastProbeTime": null})
            })
            .collect();
        let (reason, message) = match &self.message {
            Some((r, m)) => (json!(r), json!(m)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "status": {
                "phase": self.phase(),
                "conditions": conditions,
                "hostIP": self.host_ip,
                "hostIPs": [{"ip": self.host_ip}],
                "podIP": self.pod_ip,
                "podIPs": self.pod_ip.as_ref().map(|ip| json!([{"ip": ip}])).unwrap_or(Value::Null),
                "startTime": time(&self.start_time),
                "containerStatuses": statuses,
                "reason": reason,
                "message": message,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(at(0)),
            finished_at: at(1),
        }
    }

    fn record(states: Vec<State>) -> PodRecord {
        let containers = states
            .into_iter()
            .enumerate()
            .map(|(i, state)| ContainerRecord {
                state,
                ..ContainerRecord::new(&format!("c{i}"), "img")
            })
            .collect();
        PodRecord::new(containers, "127.0.0.1", at(0))
    }

    #[test]
    fn phase_follows_the_containers() {
        let running = State::Running { started_at: at(0) };
        let creating = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        assert_eq!(
            record(vec![creating.clone(), running.clone()]).phase(),
            "Pending"
        );
        assert_eq!(
            record(vec![running.clone(), running.clone()]).phase(),
            "Running"
        );
        assert_eq!(
            record(vec![State::Terminated(term(0)), running.clone()]).phase(),
            "Running"
        );
        assert_eq!(
            record(vec![State::Terminated(term(0)), State::Terminated(term(0))]).phase(),
            "Succeeded"
        );
        assert_eq!(
            record(vec![State::Terminated(term(0)), State::Terminated(term(2))]).phase(),
            "Failed"
        );
        let mut backing_off = record(vec![State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        }]);
        backing_off.containers[0].restart_count = 1;
        backing_off.containers[0].last_terminated = Some(term(1));
        assert_eq!(
            backing_off.phase(),
            "Running",
            "a container in back-off has run"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_until_they_change() {
        let mut r = record(vec![State::Running { started_at: at(0) }]);
        r.pod_ip = Some("127.0.0.2".into());
        r.update_conditions(at(1));
        assert_eq!(r.conditions["Ready"], (false, at(1)));
        r.update_conditions(at(2));
        assert_eq!(
            r.conditions["Ready"],
            (false, at(1)),
            "unchanged: same time"
        );
        r.containers[0].ready = true;
        r.update_conditions(at(3));
        assert_eq!(r.conditions["Ready"], (true, at(3)));
        assert_eq!(r.conditions["ContainersReady"], (true, at(3)));
        assert_eq!(r.conditions["PodScheduled"], (true, at(1)));
    }

    #[test]
    fn status_patch_reports_ips_restarts_and_last_state() {
        let mut r = record(vec![State::Running { started_at: at(5) }]);
        r.pod_ip = Some("127.0.0.9".into());
        r.containers[0].restart_count = 2;
        r.containers[0].last_terminated = Some(term(3));
        r.containers[0].started = true;
        r.update_conditions(at(6));
        let s = &r.status_patch()["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "127.0.0.9");
        assert_eq!(s["podIPs"], json!([{"ip": "127.0.0.9"}]));
        assert_eq!(s["message"], Value::Null);
        let c = &s["containerStatuses"][0];
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["started"], true);
        assert_eq!(c["state"]["running"]["startedAt"], "2023-11-14T22:13:25Z");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
    }
}
