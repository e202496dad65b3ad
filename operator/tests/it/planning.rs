//! The pure planning pieces: connector resolution, transaction timeout tuning, savepoint
//! aggregation and retention, worker-state aggregation and conditions, Lease decisions, probes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use weir_crds::connector::ConnectorSpec;
use weir_crds::contract::WorkerStatus;
use weir_crds::status::SavepointRecord;
use weir_crds::stream_job::{Deployment, SavepointRetention};
use weir_crds::{PipelineSpec, StreamJobSpec};
use weir_operator::admin::{JobStatus, SavepointAnswer, SavepointStatus};
use weir_operator::job_status::{self, Inputs};
use weir_operator::leader::{decide, LeaseDecision};
use weir_operator::lifecycle::{JobState, SavepointOutcome};
use weir_operator::savepoint::{aggregate, expired};
use weir_operator::tuning::{required_ms, tune, Tuning};
use weir_operator::{probes, resolve};

fn job_spec(pipeline: serde_json::Value) -> StreamJobSpec {
    serde_json::from_value(json!({"image": "weir", "parallelism": 2, "pipeline": pipeline}))
        .unwrap()
}

fn connector(v: serde_json::Value) -> ConnectorSpec {
    serde_json::from_value(v).unwrap()
}

#[test]
fn connector_settings_merge_under_the_node_and_secrets_become_env() {
    let spec = job_spec(json!({
        "sources": [{"name": "in", "type": "kafka", "connectorRef": "k", "topics": ["t"],
                     "properties": {"fetch.min.bytes": "1", "client.id": "mine"}}],
        "sinks": [{"name": "db", "type": "jdbc", "connectorRef": "pg", "table": "x"}]
    }));
    let connectors = BTreeMap::from([
        (
            "k".to_string(),
            connector(json!({
                "type": "kafka",
                "kafka": {"bootstrapServers": "b:9092", "securityProtocol": "SASL_SSL",
                          "sasl": {"mechanism": "SCRAM-SHA-512",
                                   "username": {"secretKeyRef": {"name": "s", "key": "user"}},
                                   "password": {"secretKeyRef": {"name": "s", "key": "pass"}}}},
                "properties": {"properties": {"client.id": "default", "acks": "all"}}
            })),
        ),
        (
            "pg".to_string(),
            connector(json!({
                "type": "postgres", "url": "postgres://u@db/x",
                "credentials": [{"setting": "password", "secretKeyRef": {"name": "pgs", "key": "pw"}}]
            })),
        ),
    ]);
    let r = resolve::resolve("job", &spec, &connectors).unwrap();
    assert_eq!(r.pipeline.name, "job");
    assert_eq!(r.pipeline.parallelism, 2);
    let src = &r.pipeline.sources[0].config;
    assert!(!src.contains_key("connectorRef"));
    assert_eq!(src["bootstrap_servers"], "b:9092");
    assert_eq!(src["topics"], json!(["t"]));
    let props = &src["properties"];
    assert_eq!(props["client.id"], "mine", "the node wins");
    assert_eq!(props["acks"], "all", "connector defaults fill the rest");
    assert_eq!(props["fetch.min.bytes"], "1");
    assert_eq!(props["security.protocol"], "SASL_SSL");
    assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(
        props["sasl.username"],
        "${env:WEIR_CONN_K_PROPERTIES_SASL_USERNAME}"
    );
    assert_eq!(
        props["sasl.password"],
        "${env:WEIR_CONN_K_PROPERTIES_SASL_PASSWORD}"
    );
    let sink = &r.pipeline.sinks[0].config;
    assert_eq!(sink["url"], "postgres://u@db/x");
    assert_eq!(sink["password"], "${env:WEIR_CONN_PG_PASSWORD}");
    let names: Vec<&str> = r.env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "WEIR_CONN_K_PROPERTIES_SASL_PASSWORD",
            "WEIR_CONN_K_PROPERTIES_SASL_USERNAME",
            "WEIR_CONN_PG_PASSWORD"
        ]
    );
    let pw = r
        .env
        .iter()
        .find(|e| e.name == "WEIR_CONN_PG_PASSWORD")
        .unwrap();
    let sel = pw
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("pgs", "pw"));
    assert_eq!(r.secrets.len(), 3);
    // The resolved pipeline passes the runtime's own validation.
    let errors = resolve::validate(&r.pipeline);
    assert!(errors.is_empty(), "{errors:?}");

    // Wrong type and unknown names are reported with their paths.
    let bad = job_spec(json!({
        "sources": [{"name": "in", "type": "http", "connectorRef": "k"}],
        "sinks": [{"name": "o", "type": "kafka", "connectorRef": "missing"}]
    }));
    let errs = resolve::resolve("job", &bad, &connectors).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text[0].starts_with("pipeline.sources[0].connectorRef: Connector \"k\" is of type kafka"),
        "{text:?}"
    );
    assert!(
        text[1].contains("no Connector named \"missing\""),
        "{text:?}"
    );
}

#[test]
fn an_elasticsearch_connector_becomes_hosts_auth_and_tls_settings() {
    let spec = job_spec(json!({
        "sources": [{"name": "g", "type": "datagen", "fields": {"id": {"kind": "sequence"}}}],
        "sinks": [
            {"name": "a", "type": "elasticsearch", "connectorRef": "basic", "index": "e"},
            {"name": "b", "type": "elasticsearch", "connectorRef": "key", "index": "e",
             "tls": {"insecure_skip_verify": false}}
        ]
    }));
    let secret = |name: &str| json!({"secretKeyRef": {"name": name, "key": "k"}});
    let connectors = BTreeMap::from([
        (
            "basic".to_string(),
            connector(json!({
                "type": "elasticsearch", "url": "https://es-0:9200",
                "elasticsearch": {"hosts": ["https://es-1:9200"],
                                  "auth": {"basic": {"username": secret("user"), "password": secret("pw")}}}
            })),
        ),
        (
            "key".to_string(),
            connector(json!({
                "type": "elasticsearch", "url": "https://es:9200",
                "elasticsearch": {"auth": {"apiKey": secret("api")},
                                  "tls": {"ca": secret("ca"), "insecureSkipVerify": true}}
            })),
        ),
    ]);
    let r = resolve::resolve("job", &spec, &connectors).unwrap();
    let a = &r.pipeline.sinks[0].config;
    assert_eq!(a["url"], "https://es-0:9200");
    assert_eq!(a["hosts"], json!(["https://es-1:9200"]));
    assert_eq!(
        a["auth"],
        json!({"basic": {"username": "${env:WEIR_CONN_BASIC_AUTH_BASIC_USERNAME}",
                         "password": "${env:WEIR_CONN_BASIC_AUTH_BASIC_PASSWORD}"}})
    );
    let b = &r.pipeline.sinks[1].config;
    assert_eq!(
        b["auth"],
        json!({"api_key": "${env:WEIR_CONN_KEY_AUTH_API_KEY}"})
    );
    assert_eq!(b["tls"]["ca_pem"], "${env:WEIR_CONN_KEY_TLS_CA_PEM}");
    assert_eq!(
        b["tls"]["insecure_skip_verify"], false,
        "the node's own setting wins"
    );
    let vars: Vec<&str> = r.env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        vars,
        [
            "WEIR_CONN_BASIC_AUTH_BASIC_PASSWORD",
            "WEIR_CONN_BASIC_AUTH_BASIC_USERNAME",
            "WEIR_CONN_KEY_AUTH_API_KEY",
            "WEIR_CONN_KEY_TLS_CA_PEM"
        ]
    );
    assert_eq!(r.secrets.len(), 4);
}

/// An `eventhubs` Connector fills `kafka` nodes with the runtime's eventhubs profile: the
/// namespace, the connection string as an env reference, and the hub as the default topic.
#[test]
fn an_eventhubs_connector_fills_kafka_nodes_with_the_profile() {
    let spec = job_spec(json!({
        "sources": [{"name": "in", "type": "kafka", "connectorRef": "eh"}],
        "sinks": [{"name": "out", "type": "kafka", "connectorRef": "eh", "topic": "other"}]
    }));
    let connectors = BTreeMap::from([(
        "eh".to_string(),
        connector(json!({
            "type": "eventhubs",
            "eventhubs": {"namespace": "my-ns", "hub": "orders", "transactions": true,
                          "connectionString": {"secretKeyRef": {"name": "eh", "key": "cs"}}}
        })),
    )]);
    let r = resolve::resolve("job", &spec, &connectors).unwrap();
    let src = &r.pipeline.sources[0].config;
    assert_eq!(src["topics"], json!(["orders"]));
    assert_eq!(
        src["eventhubs"],
        json!({"namespace": "my-ns", "transactions": true,
               "connection_string": "${env:WEIR_CONN_EH_EVENTHUBS_CONNECTION_STRING}"})
    );
    assert_eq!(
        r.pipeline.sinks[0].config["topic"], "other",
        "the node's own topic wins"
    );
    assert_eq!(r.env[0].name, "WEIR_CONN_EH_EVENTHUBS_CONNECTION_STRING");
    assert_eq!(
        probes::target(&connectors["eh"]),
        probes::Probe::Tcp(vec!["my-ns.servicebus.windows.net:9093".into()])
    );
    let bad = job_spec(json!({
        "sources": [{"name": "in", "type": "pubsub", "connectorRef": "eh"}],
        "sinks": []
    }));
    let e = resolve::resolve("job", &bad, &connectors).unwrap_err()[0].to_string();
    assert!(
        e.contains("is of type eventhubs, which nodes of type kafka use"),
        "{e}"
    );
}

fn kafka_pipeline(props: serde_json::Value, mode: &str) -> PipelineSpec {
    serde_json::from_value(json!({
        "name": "p",
        "checkpoint": {"interval": "30s", "timeout": "10m", "mode": mode},
        "sources": [{"name": "s", "type": "datagen"}],
        "sinks": [{"name": "k", "type": "kafka", "delivery": "exactly-once", "properties": props},
                  {"name": "plain", "type": "kafka"},
                  {"name": "f", "type": "filesystem"}]
    }))
    .unwrap()
}

#[test]
fn transaction_timeouts_are_set_checked_and_bounded_by_the_broker() {
    // 30s + 10m = 630s, margin 63s → 693s.
    assert_eq!(
        required_ms(Duration::from_secs(30), Duration::from_secs(600)),
        693_000
    );
    // 1s + 10s = 11s, margin the 20 s floor → 31s: a broker allowing 60 s takes it.
    assert_eq!(
        required_ms(Duration::from_secs(1), Duration::from_secs(10)),
        31_000
    );

    let mut p = kafka_pipeline(json!({}), "exactly-once");
    let t = tune(&mut p, &BTreeMap::new());
    assert_eq!(
        t,
        [Tuning::Set {
            sink: "k".into(),
            ms: 693_000
        }]
    );
    assert_eq!(
        p.sinks[0].config["properties"]["transaction.timeout.ms"],
        "693000"
    );
    assert!(
        !p.sinks[1].config.contains_key("properties"),
        "only exactly-once sinks"
    );
    assert!(
        !p.sinks[2].config.contains_key("properties"),
        "only Kafka sinks"
    );

    let mut p = kafka_pipeline(json!({"transaction.timeout.ms": "60000"}), "exactly-once");
    let t = tune(&mut p, &BTreeMap::new());
    assert!(
        matches!(
            &t[0],
            Tuning::TooLow {
                ms: 60_000,
                needed: 693_000,
                ..
            }
        ),
        "{t:?}"
    );
    assert!(
        t[0].message().contains("raise it to at least 693000"),
        "{}",
        t[0].message()
    );
    assert_eq!(
        p.sinks[0].config["properties"]["transaction.timeout.ms"], "60000",
        "kept"
    );

    let mut p = kafka_pipeline(json!({"transaction.timeout.ms": 800000}), "exactly-once");
    assert_eq!(
        tune(&mut p, &BTreeMap::new()),
        [Tuning::Kept {
            sink: "k".into(),
            ms: 800_000
        }]
    );
    // The sink's own `transaction_timeout` counts too (and is not overridden).
    let mut p = kafka_pipeline(json!({}), "exactly-once");
    p.sinks[0]
        .config
        .insert("transaction_timeout".into(), json!("2m"));
    let t = tune(&mut p, &BTreeMap::new());
    assert!(matches!(&t[0], Tuning::TooLow { ms: 120_000, .. }), "{t:?}");
    assert!(p.sinks[0].config["properties"]
        .get("transaction.timeout.ms")
        .is_none());

    let mut p = kafka_pipeline(json!({}), "exactly-once");
    let t = tune(&mut p, &BTreeMap::from([("k".to_string(), 600_000)]));
    assert_eq!(
        t,
        [Tuning::AboveBrokerMax {
            sink: "k".into(),
            ms: 693_000,
            max: 600_000,
            needed: 693_000,
        }]
    );
    assert!(t[0].is_problem());
    // The fix named fits: 545,454 ms of interval + timeout need 599,999 ms.
    assert!(
        t[0].message().contains(
            "lower checkpoint.interval + checkpoint.timeout to at most 545454 ms together"
        ),
        "{}",
        t[0].message()
    );
    // A value of the user's own above the maximum: lower it, the checkpoints fit.
    let mut p = kafka_pipeline(json!({"transaction.timeout.ms": 800000}), "exactly-once");
    let t = tune(&mut p, &BTreeMap::from([("k".to_string(), 750_000)]));
    assert!(
        t[0].message()
            .contains("lower it to between 693000 and 750000"),
        "{}",
        t[0].message()
    );

    let mut p = kafka_pipeline(json!({}), "at-least-once");
    assert!(tune(&mut p, &BTreeMap::new()).is_empty());
}

fn answer(state: &str, path: Option<&str>) -> SavepointAnswer {
    SavepointAnswer::State(SavepointStatus {
        id: "sp".into(),
        state: serde_json::from_value(json!(state)).unwrap(),
        path: path.map(Into::into),
        error: (state == "failed").then(|| "disk full".into()),
    })
}

#[test]
fn savepoint_progress_over_poll_rounds() {
    // Round 1: worker 0 done, worker 1 pending.
    let round1 = BTreeMap::from([
        (0, answer("completed", Some("/s/sp"))),
        (1, answer("pending", None)),
    ]);
    let p = aggregate(2, BTreeMap::new(), &round1);
    assert_eq!(p.outcome, SavepointOutcome::Pending);
    assert_eq!(p.completed.len(), 1);
    // Round 2: worker 0 (stopped) is not asked again; worker 1 completes.
    let round2 = BTreeMap::from([(1, answer("completed", Some("/s/sp")))]);
    let p = aggregate(2, p.completed, &round2);
    assert_eq!(
        p.outcome,
        SavepointOutcome::Completed {
            path: "/s/sp".into()
        }
    );
    // Unreachable is pending (bounded by the timeout); unknown and failed fail.
    let p = aggregate(
        2,
        BTreeMap::new(),
        &BTreeMap::from([(0, SavepointAnswer::Unreachable("refused".into()))]),
    );
    assert_eq!(p.outcome, SavepointOutcome::Pending);
    let p = aggregate(
        1,
        BTreeMap::new(),
        &BTreeMap::from([(0, SavepointAnswer::Unknown)]),
    );
    assert!(matches!(p.outcome, SavepointOutcome::Failed { error } if error.contains("restarted")));
    let p = aggregate(
        1,
        BTreeMap::new(),
        &BTreeMap::from([(0, answer("failed", None))]),
    );
    assert!(matches!(p.outcome, SavepointOutcome::Failed { error } if error.contains("disk full")));
    let both = BTreeMap::from([
        (0, answer("completed", Some("/a"))),
        (1, answer("completed", Some("/b"))),
    ]);
    assert!(matches!(
        aggregate(2, BTreeMap::new(), &both).outcome,
        SavepointOutcome::Failed { .. }
    ));
}

#[test]
fn retention_keeps_the_newest_and_the_one_in_use() {
    let now = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
    let sp = |i: u32, day: u32| SavepointRecord {
        id: format!("sp{i}"),
        path: format!("/s/sp{i}"),
        time: Utc
            .with_ymd_and_hms(2026, 1, day, 0, 0, 0)
            .unwrap()
            .to_rfc3339(),
        reason: "Periodic".into(),
    };
    let history = vec![sp(1, 1), sp(2, 2), sp(3, 8), sp(4, 9)];
    let ids = |v: Vec<&SavepointRecord>| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    let by_count = SavepointRetention {
        max_count: Some(2),
        max_age: None,
    };
    assert_eq!(ids(expired(&history, &by_count, &[], now)), ["sp1", "sp2"]);
    assert_eq!(ids(expired(&history, &by_count, &["/s/sp1"], now)), ["sp2"]);
    let by_age = SavepointRetention {
        max_count: None,
        max_age: Some(weir_crds::Duration::from_secs(5 * 86400)),
    };
    assert_eq!(ids(expired(&history, &by_age, &[], now)), ["sp1", "sp2"]);
    let all_old = SavepointRetention {
        max_count: Some(1),
        max_age: Some(weir_crds::Duration::from_secs(1)),
    };
    assert_eq!(
        ids(expired(&history, &all_old, &[], now)),
        ["sp1", "sp2", "sp3"],
        "never the newest"
    );
}

fn status(state: &str, err: Option<&str>) -> Result<JobStatus, String> {
    let state = serde_json::from_value(json!(state)).unwrap();
    Ok(JobStatus {
        job: "j".into(),
        parallelism: 2,
        state,
        restarts: 0,
        workers: vec![WorkerStatus {
            worker: 0,
            state,
            last_checkpoint: None,
            last_error: err.map(Into::into),
            ..Default::default()
        }],
    })
}

/// A worker that restarted in process and whose non-critical sink's breaker opened shows both
/// in its summary, the job is Degraded (still Ready: it runs), and the changes are events.
#[test]
fn in_process_restarts_and_open_breakers_reach_the_status_and_events() {
    // The shape `weir` serves at GET /v1/status (`weir_crds::contract::JobStatus`).
    let answer: JobStatus = serde_json::from_value(json!({
        "job": "j", "parallelism": 1, "state": "running",
        "workers": [{
            "worker": 0, "state": "running", "restored_from": 7,
            "last_checkpoint": { "id": 9, "completed_at": "2026-01-01T11:59:59Z", "duration_ms": 3,
                                 "bytes": 10, "savepoint": false },
            "checkpoints_completed": 9, "checkpoints_failed": 2, "watermark": null, "splits": {},
            "last_error": null, "restarts": 2,
            "failures": [
                { "at": "2026-01-01T11:58:00Z", "cause": "sink out: connection refused", "restarted": true },
                { "at": "2026-01-01T11:59:00Z", "cause": "checkpoint 8 timed out", "restarted": true }
            ],
            "restart": null,
            "breakers": {
                "audit": { "state": "open", "since": "2026-01-01T11:59:30Z", "dead_lettered": 40, "last_error": "refused" },
                "metrics": { "state": "closed", "since": "2026-01-01T11:00:00Z", "dead_lettered": 0, "last_error": null }
            }
        }]
    }))
    .unwrap();
    let (job, workers) = job_status::job_state(
        "j",
        &BTreeMap::from([(0, Ok(answer))]),
        &BTreeMap::new(),
        false,
    );
    assert_eq!(job, JobState::Running);
    let w = &workers[0];
    assert_eq!(w.in_process_restarts, 2);
    assert_eq!(w.last_failure.as_deref(), Some("checkpoint 8 timed out"));
    assert_eq!(
        w.breakers,
        BTreeMap::from([("audit".to_string(), "open".to_string())]),
        "closed breakers are left out"
    );

    let deployed = Deployment {
        spec_hash: "h".into(),
        parallelism: 1,
        time: "2026-01-01T11:00:00Z".into(),
        ..Default::default()
    };
    let inputs = Inputs {
        generation: Some(1),
        deleting: false,
        desired_hash: "h",
        desired_suspended: false,
        parallelism: 1,
        deployed: Some(&deployed),
        operation: None,
        pending_upgrade: None,
        job,
        workers: &workers,
        problems: &[],
        abandoned: false,
        starting: false,
        rolling: 0,
        checkpointing: None,
        last_checkpoint: None,
        now: Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
    };
    let c = job_status::conditions(&inputs, &[]);
    let get = |t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
    assert_eq!(
        get("Ready").status,
        "True",
        "a non-critical sink's breaker does not stop the job"
    );
    assert_eq!(get("Degraded").status, "True");
    assert_eq!(get("Degraded").reason, "SinkBreakerOpen");
    assert!(get("Degraded")
        .message
        .contains("worker 0 sink audit: circuit breaker open"));

    // Against a status from before: one restart and no open breaker.
    let mut before = w.clone();
    before.in_process_restarts = 1;
    before.breakers.clear();
    let ev = job_status::worker_events(&[before.clone()], &workers);
    let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["WorkerRestartedInProcess", "SinkBreakerOpened"]);
    assert!(
        ev[0].warning && ev[0].note.contains("after: checkpoint 8 timed out"),
        "{:?}",
        ev[0]
    );
    assert!(ev[1].note.contains("closed -> open"), "{:?}", ev[1]);
    // Nothing changed: no events; the breaker closing again is one (not a warning).
    assert!(job_status::worker_events(&workers, &workers).is_empty());
    let mut closed = w.clone();
    closed.breakers.clear();
    let ev = job_status::worker_events(&workers, &[closed]);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].reason, "SinkBreakerClosed");
    assert!(!ev[0].warning);
    // A new process counts from 0 again: no restart event for that.
    let mut fresh = w.clone();
    fresh.in_process_restarts = 0;
    assert!(job_status::worker_events(&[before], &[fresh])
        .iter()
        .all(|e| e.reason != "WorkerRestartedInProcess"));
}

#[test]
fn worker_states_aggregate_and_ready_needs_every_worker_running() {
    let all = |a: Vec<Result<JobStatus, String>>| {
        job_status::job_state(
            "j",
            &a.into_iter()
                .enumerate()
                .map(|(i, x)| (i as u32, x))
                .collect(),
            &BTreeMap::new(),
            false,
        )
    };
    assert_eq!(
        all(vec![status("running", None), status("running", None)]).0,
        JobState::Running
    );
    assert_eq!(
        all(vec![
            status("running", None),
            status("failed", Some("boom"))
        ])
        .0,
        JobState::Failed
    );
    assert_eq!(
        all(vec![status("running", None), Err("refused".into())]).0,
        JobState::Unreachable
    );
    assert_eq!(
        all(vec![status("starting", None), status("running", None)]).0,
        JobState::Starting
    );
    assert_eq!(
        all(vec![status("finished", None), status("finished", None)]).0,
        JobState::Finished
    );
    assert_eq!(all(vec![]).0, JobState::NotDeployed);

    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let deployed = Deployment {
        spec_hash: "h".into(),
        parallelism: 2,
        time: "2026-01-01T11:00:00Z".into(),
        ..Default::default()
    };
    let (job, workers) = all(vec![
        status("running", None),
        status("failed", Some("boom")),
    ]);
    let inputs = Inputs {
        generation: Some(5),
        deleting: false,
        desired_hash: "h",
        desired_suspended: false,
        parallelism: 2,
        deployed: Some(&deployed),
        operation: None,
        pending_upgrade: None,
        job,
        workers: &workers,
        rolling: 0,
        problems: &[],
        abandoned: false,
        starting: false,
        checkpointing: Some((Duration::from_secs(10), Duration::from_secs(60))),
        last_checkpoint: None,
        now,
    };
    let c = job_status::conditions(&inputs, &[]);
    let get = |t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
    assert_eq!(get("Ready").status, "False");
    assert!(get("Ready").message.contains("worker 1 failed: boom"));
    assert_eq!(get("Degraded").status, "True");
    assert!(c.iter().all(|x| x.observed_generation == Some(5)));

    let (job, workers) = all(vec![status("running", None), status("running", None)]);
    let old = weir_crds::stream_job::CheckpointRef {
        id: 3,
        time: "2026-01-01T11:57:00Z".into(),
    };
    let inputs = Inputs {
        job,
        workers: &workers,
        last_checkpoint: Some(&old),
        ..inputs
    };
    let c = job_status::conditions(&inputs, &[]);
    let get = |t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
    assert_eq!(get("Ready").status, "True");
    assert_eq!(get("Degraded").status, "False");
    // 180s old, limit 2×10s + 60s = 80s.
    assert_eq!(get("CheckpointHealthy").status, "False");
    assert_eq!(get("CheckpointHealthy").reason, "Stale");
    // lastTransitionTime only moves when the status changes.
    let mut prev = c.clone();
    prev.iter_mut()
        .for_each(|x| x.last_transition_time = "earlier".into());
    let again = job_status::conditions(&inputs, &prev);
    assert!(again.iter().all(|x| x.last_transition_time == "earlier"));

    // A last-state or stateless roll: every worker answers `running`, but one still is an old
    // pod. Not Ready until the StatefulSet has replaced it; Progressing says so.
    let inputs = Inputs {
        rolling: 1,
        ..inputs
    };
    assert_eq!(format!("{:?}", job_status::phase(&inputs)), "Deploying");
    let c = job_status::conditions(&inputs, &[]);
    let get = |t: &str| c.iter().find(|x| x.type_ == t).unwrap().clone();
    assert_eq!(get("Ready").status, "False");
    assert_eq!(
        (
            get("Progressing").status.as_str(),
            get("Progressing").reason.as_str()
        ),
        ("True", "Rolling")
    );
    assert_eq!(
        get("Progressing").message,
        "1 of 2 workers still run the previous spec"
    );
    assert_eq!(get("Degraded").status, "False", "a roll is no failure");
}

#[test]
fn lease_decisions() {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let at = |secs_ago: i64| {
        MicroTime(
            k8s_openapi::jiff::Timestamp::from_millisecond((now.timestamp() - secs_ago) * 1000)
                .unwrap(),
        )
    };
    let lease = |holder: &str, renewed: i64| LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(15),
        renew_time: Some(at(renewed)),
        ..Default::default()
    };
    assert_eq!(decide(None, "me", now), LeaseDecision::Acquire);
    assert_eq!(
        decide(Some(&lease("me", 5)), "me", now),
        LeaseDecision::Renew
    );
    assert_eq!(
        decide(Some(&lease("other", 5)), "me", now),
        LeaseDecision::Wait {
            holder: "other".into()
        }
    );
    assert_eq!(
        decide(Some(&lease("other", 20)), "me", now),
        LeaseDecision::Acquire,
        "expired"
    );
    assert_eq!(
        decide(Some(&lease("", 1)), "me", now),
        LeaseDecision::Acquire
    );
}

#[test]
fn probe_targets_and_validation() {
    let k = connector(json!({"type": "kafka",
        "kafka": {"bootstrapServers": "a:9092,b:9093", "securityProtocol": "SASL_SSL",
                  "sasl": {"mechanism": "PLAIN", "username": {"value": "$ConnectionString"},
                           "password": {"secretKeyRef": {"name": "s", "key": "k"}}}},
        "properties": {"properties": {"ssl.ca.location": "/etc/ca.pem", "fetch.min.bytes": 1}}}));
    // The brokers themselves are asked (their transaction maximum), with the Connector's
    // security settings; the password joins from its Secret when the probe runs.
    assert_eq!(
        probes::target(&k),
        probes::Probe::Kafka {
            bootstrap: "a:9092,b:9093".into(),
            properties: BTreeMap::from([
                ("fetch.min.bytes".to_string(), "1".to_string()),
                ("sasl.mechanism".into(), "PLAIN".into()),
                ("sasl.username".into(), "$ConnectionString".into()),
                ("security.protocol".into(), "SASL_SSL".into()),
                ("ssl.ca.location".into(), "/etc/ca.pem".into()),
            ]),
        }
    );
    let pg = connector(json!({"type": "postgres", "url": "postgres://u:secret@h/db"}));
    assert!(probes::validate(&pg)[0].contains("contains a password"));
    let sqlite = connector(json!({"type": "jdbc", "url": "sqlite:///data/out.db"}));
    assert!(matches!(probes::target(&sqlite), probes::Probe::None(_)));
    let jdbc = connector(json!({"type": "jdbc", "url": "postgres://h/db"}));
    assert!(matches!(
        probes::target(&jdbc),
        probes::Probe::Postgres { .. }
    ));
    let es = connector(json!({
        "type": "elasticsearch", "url": "https://es-0:9200",
        "elasticsearch": {"hosts": ["https://es-1:9200"],
                          "auth": {"basic": {"username": {"value": "weir"},
                                             "password": {"secretKeyRef": {"name": "es", "key": "pw"}}}},
                          "tls": {"ca": {"secretKeyRef": {"name": "es-ca", "key": "ca.crt"}}}}
    }));
    let refs: Vec<String> = probes::secret_refs(&es)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        refs,
        ["elasticsearch.auth.basic.password", "elasticsearch.tls.ca"]
    );
    assert_eq!(
        probes::target(&es),
        probes::Probe::Elasticsearch {
            urls: vec!["https://es-0:9200".into(), "https://es-1:9200".into()],
            auth: probes::EsAuth::Basic {
                username: Some("weir".into()),
            },
            ca: true,
            insecure: false,
        }
    );
    let plain = connector(json!({"type": "elasticsearch", "url": "http://es:9200",
                                 "elasticsearch": {"tls": {"insecureSkipVerify": true}}}));
    assert!(probes::validate(&plain)[0].contains("TLS settings need https://"));
    let bad = connector(json!({"type": "kafka", "kafka": {"bootstrapServers": "nohost"}}));
    assert!(probes::validate(&bad)[0].contains("is not host:port"));
    let fh = connector(
        json!({"type": "firehose", "region": "eu-west-1", "endpoint": "http://moto:5000"}),
    );
    assert_eq!(
        probes::target(&fh),
        probes::Probe::Tcp(vec!["moto:5000".into()])
    );
}

#[test]
fn aws_connectors_hand_their_endpoint_over_as_endpoint_url() {
    let spec = job_spec(json!({
        "sources": [{"name": "in", "type": "kinesis", "connectorRef": "k", "streams": ["s"]}],
        "sinks": [{"name": "out", "type": "firehose", "connectorRef": "f", "delivery_stream": "d"}]
    }));
    let mut connectors = BTreeMap::new();
    for (name, kind) in [("k", "kinesis"), ("f", "firehose")] {
        connectors.insert(
            name.to_string(),
            connector(
                json!({"type": kind, "region": "eu-west-1", "endpoint": "http://local:4566"}),
            ),
        );
    }
    let r = resolve::resolve("job", &spec, &connectors).unwrap();
    for node in [&r.pipeline.sources[0], &r.pipeline.sinks[0]] {
        assert_eq!(node.config["endpoint_url"], "http://local:4566");
        assert_eq!(node.config["region"], "eu-west-1");
        assert!(!node.config.contains_key("endpoint"));
    }
}

#[tokio::test]
async fn probes_reach_real_servers_on_loopback() {
    // A TCP listener and a tiny HTTP server; a closed port fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let no_secrets = BTreeMap::new();
    let ok = probes::run(
        &probes::Probe::Tcp(vec![addr.clone()]),
        &no_secrets,
        Duration::from_secs(2),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    let http = probes::run(
        &probes::Probe::Http {
            url: format!("http://{addr}/"),
        },
        &no_secrets,
        Duration::from_secs(2),
    )
    .await;
    assert!(http.unwrap().message.contains("200"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let err = probes::run(
        &probes::Probe::Tcp(vec![closed]),
        &no_secrets,
        Duration::from_secs(2),
    )
    .await;
    assert!(err.unwrap_err().contains("failed"));
}

#[tokio::test]
async fn the_elasticsearch_probe_logs_in_and_reports_the_version() {
    // A node that wants `Authorization: ApiKey k3y` on GET /.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("authorization").map(|v| v.as_bytes()) == Some(b"ApiKey k3y") {
                (
                    axum::http::StatusCode::OK,
                    r#"{"cluster_name":"logs","version":{"distribution":"opensearch","number":"2.19.1"}}"#,
                )
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "{}")
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let probe = probes::Probe::Elasticsearch {
        // The first node is down: the probe moves on to the next.
        urls: vec![format!("http://{closed}/"), format!("http://{addr}/")],
        auth: probes::EsAuth::ApiKey,
        ca: false,
        insecure: false,
    };
    let key = |k: &str| BTreeMap::from([(probes::ES_API_KEY.to_string(), k.to_string())]);
    let ok = probes::run(&probe, &key("k3y"), Duration::from_secs(2)).await;
    assert_eq!(
        ok.unwrap().message,
        format!("GET http://{addr}/: opensearch 2.19.1, cluster logs")
    );
    let refused = probes::run(&probe, &key("wrong"), Duration::from_secs(2)).await;
    assert!(refused
        .unwrap_err()
        .contains("401 Unauthorized: the credentials were refused"),);
}

fn pod(name: &str, v: serde_json::Value) -> weir_operator::pods::PodObservation {
    let mut p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(v).unwrap();
    p.metadata.name = Some(name.into());
    weir_operator::pods::observe(&p, "weir.dev/config-hash")
}

/// kstatus: right after a deploy the job is Progressing (not Stable) and not Degraded while its
/// workers start; silent workers become Degraded only after the startup timeout, crashing ones
/// at once.
#[test]
fn conditions_follow_kstatus_through_a_first_deploy() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let deployed = Deployment {
        spec_hash: "h".into(),
        parallelism: 2,
        time: "2026-01-01T11:59:50Z".into(),
        ..Default::default()
    };
    let answers: BTreeMap<u32, Result<JobStatus, String>> = [
        (0, Err("connection refused".to_string())),
        (1, Err("worker 1 has no pod IP yet".to_string())),
    ]
    .into();
    let pending = json!({"status": {"phase": "Pending"}});
    let pods = BTreeMap::from([
        (
            0,
            pod(
                "j-0",
                json!({"status": {"phase": "Running", "podIP": "127.0.0.2"}}),
            ),
        ),
        (1, pod("j-1", pending)),
    ]);
    let conditions_for =
        |starting: bool, pods: &BTreeMap<u32, weir_operator::pods::PodObservation>| {
            let (job, workers) = job_status::job_state("j", &answers, pods, starting);
            let inputs = Inputs {
                generation: Some(1),
                deleting: false,
                desired_hash: "h",
                desired_suspended: false,
                parallelism: 2,
                deployed: Some(&deployed),
                operation: None,
                pending_upgrade: None,
                job,
                workers: &workers,
                rolling: 0,
                problems: &[],
                abandoned: false,
                starting,
                checkpointing: Some((Duration::from_secs(1), Duration::from_secs(60))),
                last_checkpoint: None,
                now,
            };
            (
                job_status::phase(&inputs),
                job_status::conditions(&inputs, &[]),
            )
        };
    let get = |c: &[weir_crds::status::Condition], t: &str| {
        c.iter().find(|x| x.type_ == t).unwrap().clone()
    };

    let (phase, c) = conditions_for(true, &pods);
    assert_eq!(format!("{phase:?}"), "Deploying");
    assert_eq!(get(&c, "Progressing").status, "True", "{c:?}");
    assert_eq!(get(&c, "Progressing").reason, "Starting");
    assert_eq!(get(&c, "Degraded").status, "False", "no failure yet: {c:?}");
    assert_eq!(get(&c, "Ready").status, "False");

    let (_, c) = conditions_for(false, &pods);
    assert_eq!(
        get(&c, "Degraded").status,
        "True",
        "past the startup timeout"
    );
    assert_eq!(get(&c, "Degraded").reason, "WorkersUnreachable");
    assert!(
        get(&c, "Degraded").message.contains("pod j-1 is Pending"),
        "{c:?}"
    );

    // A crash-looping worker is a real failure even during startup.
    let mut crashing = pods.clone();
    crashing.insert(
        1,
        pod(
            "j-1",
            json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "worker", "image": "weir", "imageID": "", "ready": false, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 2}}}]}}),
        ),
    );
    let (phase, c) = conditions_for(true, &crashing);
    assert_eq!(format!("{phase:?}"), "Failed");
    assert_eq!(get(&c, "Degraded").reason, "WorkersFailed");
    assert_eq!(get(&c, "Progressing").status, "False");
}

/// Every kind of transition has its own event reason: kube's recorder folds events with equal
/// type/reason/action into one series and drops the later notes.
#[test]
fn transition_events_have_distinct_reasons() {
    use weir_crds::status::Condition;
    use weir_crds::stream_job::{Phase, StreamJobStatus};
    let cond = |t: &str, s: &str, r: &str| Condition {
        type_: t.into(),
        status: s.into(),
        reason: r.into(),
        message: format!("{t} {r}"),
        ..Default::default()
    };
    let before = StreamJobStatus {
        phase: Phase::Deploying,
        conditions: vec![
            cond("Ready", "False", "Deploying"),
            cond("Progressing", "True", "Starting"),
            cond("Degraded", "False", "Healthy"),
            cond("CheckpointHealthy", "Unknown", "NotRunning"),
        ],
        ..Default::default()
    };
    let after = StreamJobStatus {
        phase: Phase::Running,
        conditions: vec![
            cond("Ready", "True", "Running"),
            cond("Progressing", "False", "Stable"),
            cond("Degraded", "False", "Healthy"),
            cond("CheckpointHealthy", "True", "Recent"),
        ],
        ..Default::default()
    };
    let events = job_status::transition_events(Some(&before), &after);
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "ReadyRunning",
            "ProgressingStable",
            "CheckpointHealthyRecent",
            "PhaseRunning"
        ]
    );
    assert!(events.iter().all(|e| !e.note.is_empty()));
    let first = job_status::transition_events(None, &before);
    let mut unique: Vec<&str> = first.iter().map(|e| e.reason.as_str()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "{first:?}");
}

#[test]
fn operators_outside_a_cluster_get_distinct_identities() {
    let a = weir_operator::leader::default_identity();
    let b = weir_operator::leader::default_identity();
    assert_ne!(a, b);
    assert!(!a.is_empty() && !a.contains(' '));
}
