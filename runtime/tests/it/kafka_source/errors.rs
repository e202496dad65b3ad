//! Misconfigurations end with a clear message and the right exit code: 2 for an invalid spec
//! (found by `weir validate` too), 1 for what only the broker can tell.

use std::time::{Duration, Instant};

use super::super::harness::*;
use super::broker::*;

fn validate(path: &std::path::Path) -> (i32, String) {
    let o = weir().arg("validate").arg(path).output().unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

#[test]
fn an_unknown_topic_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = unique("missing");
    let p = spec(dir.path(), "p.yaml", 1, &format!("    topics: [{missing}]"));
    let o = run(&p, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("topic \"{missing}\" does not exist")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_bootstrap_times_out_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: ks\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: src, type: kafka, bootstrap_servers: \"127.0.0.1:1\", topics: [t], request_timeout: 2s }}\nsinks:\n  - {{ name: out, type: blackhole }}\n",
            dir.path().join("state").display()
        ),
    );
    let started = Instant::now();
    let o = run(&p, &[], &[]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("bootstrap_servers \"127.0.0.1:1\"") && err.contains("within 2s"),
        "{err}"
    );
}

/// librdkafka reports a refused login only as "broker transport failure"; the error must say
/// what the broker said, and never show the password.
#[test]
fn a_wrong_password_fails_with_the_brokers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: ks\ncheckpoint: {{ storage: {state} }}\nsources:\n  - name: src\n    type: kafka\n    bootstrap_servers: \"{b}\"\n    topics: [t]\n    request_timeout: 5s\n    properties:\n      security.protocol: SASL_PLAINTEXT\n      sasl.mechanism: SCRAM-SHA-256\n      sasl.username: {user}\n      sasl.password: not-the-password\nsinks:\n  - {{ name: out, type: blackhole }}\n",
            state = dir.path().join("state").display(),
            b = service_env("kafka", "KAFKA_SASL_BOOTSTRAP"),
            user = service_env("kafka", "KAFKA_SASL_USERNAME"),
        ),
    );
    let o = run(&p, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let log = stderr(&o);
    let error = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        error.contains("bootstrap_servers") && error.to_lowercase().contains("authentication"),
        "{error}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password leaked:\n{log}"
    );
}

#[test]
fn committed_offsets_with_reset_none_and_no_commit_fail() {
    let topic = unique("nocommit");
    create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let src =
        format!("    topics: [{topic}]\n    starting_offsets: {{ committed: {{ reset: none }} }}");
    let o = run(&spec(dir.path(), "p.yaml", 1, &src), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("has no committed offset for {topic}/0")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn invalid_patterns_and_offsets_are_spec_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_pattern = spec(dir.path(), "a.yaml", 1, "    topic_pattern: \"orders-(\"");
    let (code, err) = validate(&bad_pattern);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sources[0].topic_pattern: invalid regular expression"),
        "{err}"
    );
    let o = run(&bad_pattern, &[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let bad_offsets = spec(
        dir.path(),
        "b.yaml",
        1,
        "    topics: [t]\n    starting_offsets: { specific: { \"t/x\": 3 } }",
    );
    let (code, err) = validate(&bad_offsets);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sources[0].starting_offsets: specific.t/x"),
        "{err}"
    );
}

#[test]
fn the_event_hubs_example_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/kafka-eventhubs.yaml"
    );
    let (code, err) = validate(std::path::Path::new(example));
    assert_eq!(code, 0, "{err}");
}
