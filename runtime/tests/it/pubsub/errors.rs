//! Misconfigurations fail with the name of what is wrong.

use super::emulator::*;
use crate::harness::*;

#[test]
fn a_missing_subscription_fails_the_job_naming_it() {
    let Some(host) = emulator("a_missing_subscription_fails_the_job_naming_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), &host, "no-such-subscription", 1, "1s", "");
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("projects/weir-test/subscriptions/no-such-subscription")
            && log.contains("NOT_FOUND"),
        "{log}"
    );
}

#[test]
fn a_missing_topic_fails_the_sink_naming_it() {
    let Some(host) = emulator("a_missing_topic_fails_the_sink_naming_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "job.yaml",
        &format!(
            "name: e\ncheckpoint: {{ interval: 1s, storage: {} }}\nsources:\n  - {{ name: gen, type: datagen, count: 10, fields: {{ id: {{ kind: sequence }} }} }}\nsinks:\n  - {{ name: out, type: pubsub, topic: projects/weir-test/topics/no-such-topic, emulator_host: \"{host}\" }}\n",
            dir.path().join("state").display()
        ),
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("projects/weir-test/topics/no-such-topic") && log.contains("NOT_FOUND"),
        "{log}"
    );
}

/// `weir validate --connect` asks the emulator before anything runs: the subscription and the
/// topic that exist are reported, a missing one names its setting (exit 2).
#[test]
fn validate_connect_names_a_missing_subscription_or_topic() {
    let Some(host) = emulator("validate_connect_names_a_missing_subscription_or_topic") else {
        return;
    };
    let id = unique("pre");
    create(&host, &id, 10, false);
    let dir = tempfile::tempdir().unwrap();
    let check = |sub: &str, topic: &str| {
        let spec = spec(dir.path(), &host, sub, 1, "1s", "");
        let text = std::fs::read_to_string(&spec).unwrap().replace(
            "sinks:\n",
            &format!(
                "sinks:\n  - {{ name: p, type: pubsub, topic: {}, emulator_host: \"{host}\" }}\n",
                topic_path(topic)
            ),
        );
        std::fs::write(&spec, text).unwrap();
        validate_connect(&spec)
    };
    let (code, out, err) = check(&id, &id);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("sources[0] (in): {} exists", sub_path(&id)))
            && out.contains(&format!("sinks[0] (p): {} exists", topic_path(&id))),
        "{out}"
    );
    let (code, out, err) = check("no-such-sub", "no-such-topic");
    assert_eq!(code, 2, "{out}\n{err}");
    for needle in [
        format!(
            "sources[0].subscription: {} does not exist",
            sub_path("no-such-sub")
        ),
        format!(
            "sinks[0].topic: {} does not exist",
            topic_path("no-such-topic")
        ),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in:\n{err}");
    }
}
