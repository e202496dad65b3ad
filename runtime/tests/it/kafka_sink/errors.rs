//! Misconfiguration and bad records: clear errors and the documented exit codes (2 for a spec
//! error found before the job starts, 1 for a failure while it runs).

use std::time::Duration;

use super::kafka::*;
use crate::harness::*;

fn run_sink(sink: &str, source: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &unique("err"),
        1,
        "interval: 500ms, timeout: 30s",
        source,
        sink,
    );
    run(&spec, &[], &[])
}

fn assert_fails(o: &std::process::Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn transaction_timeout_below_the_checkpoint_needs_is_a_spec_error() {
    let b = bootstrap();
    let o = run_sink(
        &format!("{}\n    transaction_timeout: 20s", eo_sink(&b, "t")),
        &datagen(10, 100),
    );
    assert_fails(
        &o,
        2,
        &[
            "sinks[0].transaction_timeout",
            "transaction.timeout.ms 20000 is below",
        ],
    );
}

#[test]
fn transaction_timeout_above_the_broker_maximum_is_refused() {
    let b = bootstrap();
    let topic = unique("ks-err");
    create_topic(&b, &topic, 1);
    // Beyond any sane transaction.max.timeout.ms (Kafka's default is 15 min).
    let o = run_sink(
        &format!(
            "{}\n    properties: {{ transaction.timeout.ms: 86400000 }}",
            eo_sink(&b, &topic)
        ),
        &datagen(10, 100),
    );
    assert_fails(
        &o,
        1,
        &[
            "sinks[0].transaction_timeout",
            "exceeds the broker's transaction.max.timeout.ms",
        ],
    );
}

#[test]
fn unreachable_bootstrap_server_is_named() {
    let port = free_port();
    let o = run_sink(
        &format!(
            "    bootstrap_servers: 127.0.0.1:{port}\n    topic: t\n    delivery: exactly-once"
        ),
        &datagen(10, 100),
    );
    assert_fails(&o, 1, &[&format!("cannot reach Kafka at 127.0.0.1:{port}")]);
}

#[test]
fn unknown_topic_is_named() {
    let b = bootstrap();
    let topic = unique("ks-missing");
    for delivery in ["exactly-once", "at-least-once"] {
        let o = run_sink(
            &format!("    bootstrap_servers: {b}\n    topic: {topic}\n    delivery: {delivery}"),
            &datagen(10, 100),
        );
        assert_fails(&o, 1, &[&format!("topic \"{topic}\" does not exist")]);
    }
}

/// A message the broker refuses (larger than the topic's `max.message.bytes`) is a failed
/// delivery, reported by librdkafka only for failures: the job fails naming the topic and
/// the broker's reason, and nothing of the failed run becomes visible.
#[test]
fn a_message_the_broker_refuses_fails_the_job() {
    let b = bootstrap();
    for delivery in ["at-least-once", "exactly-once"] {
        let topic = unique("ks-small");
        create_topic_with(&b, &topic, 1, &[("max.message.bytes", "2000")]);
        let dir = tempfile::tempdir().unwrap();
        let spec = write(
            dir.path(),
            "big.yaml",
            &format!(
                "name: {name}\nrestart: {{ strategy: none }}\ncheckpoint: {{ interval: 500ms, timeout: 30s, storage: {state} }}\nsources:\n  - name: gen\n    type: datagen\n    count: 20\n    splits: 1\n    fields:\n      id: {{ kind: sequence }}\n      pad: {{ kind: string, length: 5000 }}\nsinks:\n  - name: out\n    type: kafka\n    bootstrap_servers: {b}\n    topic: {topic}\n    delivery: {delivery}\n",
                name = unique("big"),
                state = dir.path().join("state").display(),
            ),
        );
        let o = run(&spec, &[], &[]);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{delivery}: exit code; stderr:\n{err}"
        );
        assert!(
            err.contains(&topic) && err.to_lowercase().contains("too large"),
            "{delivery}: the error names neither the topic nor the reason:\n{err}"
        );
        // The plain producer learns of it only from its delivery reports.
        if delivery == "at-least-once" {
            assert!(err.contains("could not be delivered"), "{err}");
        }
        let visible = read_ids(&b, &topic, Isolation::Committed, 0, Duration::from_secs(2));
        assert!(
            visible.is_empty(),
            "{delivery}: {} records visible",
            visible.len()
        );
    }
}

/// A record without the topic field fails the job with the record shown; nothing of the
/// failed run becomes visible.
#[test]
fn record_without_topic_field_names_the_record() {
    let b = bootstrap();
    let topic = unique("ks-tf");
    create_topic(&b, &topic, 1);
    let source = format!(
        "  - name: gen\n    type: datagen\n    count: 100\n    rate: 1000\n    splits: 1\n    fields:\n      id: {{ kind: sequence }}\n      dest: {{ kind: choice, values: [{topic}, null] }}"
    );
    let o = run_sink(
        &format!("    bootstrap_servers: {b}\n    topic_field: dest\n    delivery: exactly-once"),
        &source,
    );
    assert_fails(
        &o,
        1,
        &[
            "out: record {",
            "\"id\":",
            "topic_field \"dest\" is missing",
        ],
    );
    let visible = read_ids(&b, &topic, Isolation::Committed, 0, Duration::from_secs(2));
    assert!(
        visible.is_empty(),
        "the failed run committed records: {}",
        visible.len()
    );
}

/// at-least-once and none (plain producers): every record arrives when nothing fails.
#[test]
fn at_least_once_and_none_deliver_everything() {
    let b = bootstrap();
    for delivery in ["at-least-once", "none"] {
        let topic = unique("ks-alo");
        create_topic(&b, &topic, 2);
        let o = run_sink(
            &format!(
                "    bootstrap_servers: {b}\n    topic: {topic}\n    key_fields: [user, id]\n    headers: {{ u: user }}\n    delivery: {delivery}"
            ),
            &datagen(5_000, 20_000),
        );
        assert!(o.status.success(), "{delivery}: {}", stderr(&o));
        let counts = read_ids(
            &b,
            &topic,
            Isolation::Committed,
            5_000,
            Duration::from_secs(10),
        );
        assert_exactly_once(&counts, 5_000);
    }
}
