//! Misconfigurations: every bad setting is reported by `weir validate` with its path, and a
//! stream or delivery stream that does not exist fails the job with its name.

use super::super::harness::*;
use super::server::*;

fn validate(dir: &std::path::Path, yaml: &str) -> (i32, String) {
    let p = write(dir, "bad.yaml", yaml);
    let o = weir().arg("validate").arg(&p).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
    )
}

#[test]
fn bad_settings_are_reported_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = validate(
        dir.path(),
        r#"name: bad
sources:
  - { name: s0, type: kinesis, streams: [a], starting_position: earliest }
  - { name: s1, type: kinesis, streams: [a], polling: { max_records: 20000 } }
  - { name: s2, type: kinesis, streams: [a], on_expired_position: maybe }
sinks:
  - { name: out, type: kinesis, inputs: [s0, s1, s2], stream: out, ordering: per_key }
  - { name: fh, type: firehose, inputs: [s0], delivery_stream: d, batch: { max_records: 1000 } }
"#,
    );
    assert_eq!(code, 2, "{out}");
    for needle in [
        "sources[0].starting_position:",
        "sources[1].polling.max_records:",
        "sources[2].on_expired_position:",
        "sinks[0].ordering: per_key needs partition_key_field",
        "sinks[1].batch.max_records:",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    let (code, out) = validate(
        dir.path(),
        r#"name: bad2
sources:
  - { name: src, type: kinesis, streams: [ok, "not a stream"] }
  - { name: src2, type: kinesis, streams: [x], reader: efo, efo: { consumer_name: "a b" } }
sinks:
  - { name: fh, type: firehose, inputs: [src, src2], delivery_stream: d, credentials: { access_key_id: AKIA } }
"#,
    );
    assert_eq!(code, 2, "{out}");
    for needle in [
        "sources[0].streams[1]: \"not a stream\" is not a stream name",
        "sources[1].efo.consumer_name:",
        "sinks[0].credentials.secret_access_key:",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
}

#[test]
fn a_missing_stream_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = unique("missing");
    let job = spec(
        dir.path(),
        "job.yaml",
        1,
        &endpoint(),
        &format!("    streams: [{missing}]"),
    );
    let o = run(&job, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("src: streams[0]: stream \"{missing}\"")),
        "{e}"
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    assert!(e.contains(&endpoint()), "says where it looked: {e}");

    let sink = write(
        dir.path(),
        "sink.yaml",
        &format!(
            r#"name: missing-sink
checkpoint: {{ storage: {state} }}
sources:
  - {{ name: gen, type: datagen, count: 10, fields: {{ id: {{ kind: sequence }} }} }}
sinks:
  - name: out
    type: kinesis
    stream: {missing}
    region: us-east-1
    endpoint_url: {url}
    credentials: {{ access_key_id: test, secret_access_key: test }}
    retry: {{ max_attempts: 2, backoff: 10ms }}
"#,
            state = dir.path().join("state2").display(),
            url = endpoint()
        ),
    );
    let o = run(&sink, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(&format!("stream \"{missing}\"")), "{e}");
    assert!(e.contains("ResourceNotFoundException"), "{e}");

    let s3 = service_env("moto", "S3_ENDPOINT");
    let firehose = write(
        dir.path(),
        "firehose.yaml",
        &format!(
            r#"name: missing-firehose
checkpoint: {{ storage: {state} }}
sources:
  - {{ name: gen, type: datagen, count: 10, fields: {{ id: {{ kind: sequence }} }} }}
sinks:
  - name: archive
    type: firehose
    delivery_stream: {missing}
    region: us-east-1
    endpoint_url: {s3}
    credentials: {{ access_key_id: testing, secret_access_key: testing }}
"#,
            state = dir.path().join("state3").display(),
        ),
    );
    let o = run(&firehose, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("archive: delivery stream \"{missing}\"")),
        "{e}"
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
}

#[test]
fn the_examples_validate() {
    for f in ["kinesis-to-files.yaml", "orders-to-kinesis.yaml"] {
        let path = format!("{}/../examples/{f}", env!("CARGO_MANIFEST_DIR"));
        let o = weir().arg("validate").arg(&path).output().unwrap();
        assert!(o.status.success(), "{f}: {}", stderr(&o));
    }
}

/// `weir validate --connect` asks Kinesis and Firehose before anything runs: an existing stream
/// is reported with its shards; a missing stream or delivery stream names its setting, exit 2.
#[test]
fn validate_connect_names_a_missing_stream_before_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let present = unique("present");
    create_stream(&present, 2);
    let missing = unique("missing");
    let s3 = service_env("moto", "S3_ENDPOINT");
    let connect = |sources: &str| {
        let spec = spec(dir.path(), "job.yaml", 1, &endpoint(), sources);
        let text = std::fs::read_to_string(&spec).unwrap().replace(
            "sinks:\n",
            &format!(
                "sinks:\n  - {{ name: k, type: kinesis, stream: {missing}, region: us-east-1, endpoint_url: {url}, credentials: {{ access_key_id: test, secret_access_key: test }} }}\n  - {{ name: fh, type: firehose, delivery_stream: {missing}, region: us-east-1, endpoint_url: {s3}, credentials: {{ access_key_id: testing, secret_access_key: testing }} }}\n",
                url = endpoint()
            ),
        );
        std::fs::write(&spec, text).unwrap();
        validate_connect(&spec)
    };
    let (code, out, err) = connect(&format!("    streams: [{present}]"));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "stream \"{present}\" is ACTIVE with 2 open shards"
        )),
        "{out}\n{err}"
    );
    let (code, out, err) = connect(&format!("    streams: [{present}, {missing}]"));
    assert_eq!(code, 2, "{out}\n{err}");
    for needle in [
        format!("sources[0].streams[1]: stream \"{missing}\" does not exist"),
        format!("sinks[0].stream: stream \"{missing}\" does not exist"),
        format!("sinks[1].delivery_stream: delivery stream \"{missing}\" does not exist"),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in:\n{err}");
    }
    delete_stream(&present);
}
