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
