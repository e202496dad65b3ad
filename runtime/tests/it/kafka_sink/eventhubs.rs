//! The `eventhubs` profile of the kafka source and sink against the test broker's SASL_SSL
//! listener, which knows Event Hubs' login (PLAIN, user `$ConnectionString`, a connection
//! string as password): a sink and a source that set nothing but the profile, the broker's
//! address and the test CA; and a wrong connection string, which fails with a clear message
//! that never shows it.

use super::kafka::*;
use crate::harness::*;

const N: i64 = 2_000;

fn profile(connection_string: &str) -> String {
    format!(
        "    bootstrap_servers: {}\n    eventhubs: {{ connection_string: '{connection_string}', transactions: true }}\n    properties: {{ ssl.ca.location: {} }}",
        service_env("kafka", "KAFKA_SASL_SSL_BOOTSTRAP"),
        service_env("kafka", "KAFKA_CA_FILE"),
    )
}

/// The one e2e/services/kafka.sh gives the user `$ConnectionString`.
fn connection_string() -> String {
    format!(
        "Endpoint=sb://weir-test.servicebus.windows.net/;SharedAccessKeyName=weir;SharedAccessKey={}",
        service_env("kafka", "KAFKA_SASL_PASSWORD")
    )
}

#[test]
fn the_eventhubs_profile_writes_and_reads_over_sasl_ssl() {
    let plain = bootstrap();
    let topic = unique("eh");
    create_topic(&plain, &topic, 2);
    let dir = tempfile::tempdir().unwrap();
    // Exactly-once, which the profile allows with `transactions: true`: the recovery client
    // logs in as $ConnectionString too.
    let publish = spec(
        dir.path(),
        &unique("ehw"),
        1,
        "interval: 300ms, timeout: 30s",
        &datagen(N, 4_000),
        &format!(
            "    topic: {topic}\n    delivery: exactly-once\n{}",
            profile(&connection_string())
        ),
    );
    restart_to_end(&publish, &[]);
    assert_topic_exactly_once(&plain, &topic, N);
    let read = write(
        dir.path(),
        "read.yaml",
        &format!(
            "name: {job}\ncheckpoint: {{ interval: 300ms, storage: {state} }}\nsources:\n  - name: in\n    type: kafka\n    topics: [{topic}]\n    stop_at: latest\n{profile}\nsinks:\n  - {{ name: out, type: filesystem, path: {out}, format: json }}\n",
            job = unique("ehr"),
            state = dir.path().join("read-state").display(),
            out = dir.path().join("out").display(),
            profile = profile(&connection_string()),
        ),
    );
    restart_to_end(&read, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn a_wrong_connection_string_fails_clearly_and_is_never_shown() {
    let plain = bootstrap();
    let topic = unique("ehbad");
    create_topic(&plain, &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("{}WrongKey123", connection_string());
    let sink = spec(
        dir.path(),
        &unique("ehbads"),
        1,
        "interval: 300ms, timeout: 30s",
        &datagen(10, 1_000),
        &format!(
            "    topic: {topic}\n    delivery: exactly-once\n{}",
            profile(&wrong)
        ),
    );
    let source = write(
        dir.path(),
        "source.yaml",
        &format!(
            "name: {job}\ncheckpoint: {{ interval: 300ms, storage: {state} }}\nsources:\n  - name: in\n    type: kafka\n    topics: [{topic}]\n    request_timeout: 10s\n{profile}\nsinks:\n  - {{ name: out, type: blackhole }}\n",
            job = unique("ehbadr"),
            state = dir.path().join("source-state").display(),
            profile = profile(&wrong),
        ),
    );
    for (what, spec) in [("sink", sink), ("source", source)] {
        let o = run(&spec, &[], &[]);
        let log = stderr(&o);
        assert!(
            !o.status.success(),
            "{what}: a wrong connection string must fail the job"
        );
        assert!(
            log.to_lowercase().contains("authentication"),
            "{what}: the failure does not say why:\n{log}"
        );
        assert!(
            !log.contains("WrongKey123"),
            "{what}: the connection string leaked:\n{log}"
        );
    }
}
