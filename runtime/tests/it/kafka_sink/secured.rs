//! Exactly-once over the broker's secured listeners: librdkafka's producer and weir's own
//! recovery client (which re-commits a stored transaction after a crash) both log in with SASL,
//! over TLS with the test CA. The output is read back over the plain listener.

use super::kafka::*;
use crate::harness::*;

const N: i64 = 6_000;

/// `properties` for the sink: `protocol`, `mechanism`, the test user, and the test CA for TLS.
fn secured_sink(
    bootstrap: &str,
    topic: &str,
    protocol: &str,
    mechanism: &str,
    password: &str,
) -> String {
    let mut props = format!(
        "      security.protocol: {protocol}\n      sasl.mechanism: {mechanism}\n      sasl.username: {user}\n      sasl.password: {password}\n",
        user = service_env("kafka", "KAFKA_SASL_USERNAME"),
    );
    if protocol == "SASL_SSL" {
        props += &format!(
            "      ssl.ca.location: {}\n",
            service_env("kafka", "KAFKA_CA_FILE")
        );
    }
    format!("{}\n    properties:\n{props}", eo_sink(bootstrap, topic))
}

fn crash_at_the_manifest_then_finish(protocol: &str, listener: &str, mechanism: &str) {
    let plain = bootstrap();
    let secured = service_env("kafka", listener);
    let password = service_env("kafka", "KAFKA_SASL_PASSWORD");
    let out = unique("sec-out");
    create_topic(&plain, &out, 2);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &unique("sec"),
        1,
        "interval: 200ms, timeout: 30s",
        // 6 s of records: the third checkpoint falls mid-stream and holds a transaction even
        // when slow SASL/TLS commits stretch the checkpoints (at 5,000/s, a loaded machine
        // took every record into the second one, and the third, empty, left nothing to
        // re-commit).
        &datagen(N, 1_000),
        &secured_sink(&secured, &out, protocol, mechanism, &password),
    );
    run_until_killed(&spec, Kill::At("after_manifest", 3));
    let log = weir_job(&spec)
        .env(
            "WEIR_LOG",
            "warn,weir_runtime::connectors::kafka::sink=info",
        )
        .restart_to_end();
    assert!(
        log.contains("re-committed a transaction the crash left uncommitted"),
        "recovery re-committed nothing over {protocol}/{mechanism}:\n{log}"
    );
    assert_topic_exactly_once(&plain, &out, N);
}

#[test]
fn sasl_ssl_scram_sha_512_recovers_a_stored_transaction() {
    crash_at_the_manifest_then_finish("SASL_SSL", "KAFKA_SASL_SSL_BOOTSTRAP", "SCRAM-SHA-512");
}

#[test]
fn sasl_plaintext_plain_and_scram_sha_256_recover_a_stored_transaction() {
    crash_at_the_manifest_then_finish("SASL_PLAINTEXT", "KAFKA_SASL_BOOTSTRAP", "PLAIN");
    crash_at_the_manifest_then_finish("SASL_PLAINTEXT", "KAFKA_SASL_BOOTSTRAP", "SCRAM-SHA-256");
}

/// A wrong password fails the job with the reason, and never shows the password.
#[test]
fn a_wrong_password_is_an_authentication_error() {
    let plain = bootstrap();
    let secured = service_env("kafka", "KAFKA_SASL_BOOTSTRAP");
    let out = unique("sec-bad");
    create_topic(&plain, &out, 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &unique("secbad"),
        1,
        "interval: 200ms, timeout: 30s",
        &datagen(100, 1_000),
        &secured_sink(
            &secured,
            &out,
            "SASL_PLAINTEXT",
            "SCRAM-SHA-256",
            "not-the-password",
        ),
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(!o.status.success(), "a wrong password must fail the job");
    assert!(log.to_lowercase().contains("authentication"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password leaked:\n{log}"
    );
}

/// Without the test CA the broker's certificate is not trusted: the job fails at once and says so.
#[test]
fn an_untrusted_broker_certificate_is_named() {
    let plain = bootstrap();
    let secured = service_env("kafka", "KAFKA_SASL_SSL_BOOTSTRAP");
    let password = service_env("kafka", "KAFKA_SASL_PASSWORD");
    let out = unique("sec-tls");
    create_topic(&plain, &out, 1);
    let dir = tempfile::tempdir().unwrap();
    let sink = secured_sink(&secured, &out, "SASL_SSL", "PLAIN", &password)
        .lines()
        .filter(|l| !l.contains("ssl.ca.location"))
        .collect::<Vec<_>>()
        .join("\n");
    let spec = spec(
        dir.path(),
        &unique("sectls"),
        1,
        "interval: 200ms, timeout: 30s",
        &datagen(100, 1_000),
        &sink,
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(
        !o.status.success(),
        "an untrusted certificate must fail the job"
    );
    assert!(
        log.contains("TLS handshake with") && log.contains("certificate"),
        "{log}"
    );
}
