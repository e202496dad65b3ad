//! `weir validate --connect` against the real services: a pipeline whose settings fit the live
//! systems passes and says what it checked; each setting that does not fit (a missing topic,
//! table column or bucket, checkpoint settings beyond the broker's transaction maximum) exits 2
//! naming the field; an unreachable broker exits 1. Nothing is written anywhere.
#![cfg(all(feature = "kafka", feature = "jdbc"))]

use super::harness::*;
use super::jdbc::exec;
use crate::kafka_sink::kafka::{bootstrap, create_topic, unique};

struct Live {
    kafka: String,
    input: String,
    output: String,
    pg: String,
    table: String,
    s3: String,
    bucket: String,
}

impl Live {
    fn spec(&self) -> String {
        let Live {
            kafka,
            input,
            output,
            pg,
            table,
            s3,
            bucket,
        } = self;
        format!(
            r#"name: preflight
checkpoint: {{ interval: 1s, storage: "s3://{bucket}/state", storage_options: {{ aws_endpoint: "{s3}", aws_allow_http: "true", aws_region: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing }} }}
sources:
  - {{ name: in, type: kafka, bootstrap_servers: "{kafka}", topics: [{input}], format: json }}
sinks:
  - {{ name: out, type: kafka, bootstrap_servers: "{kafka}", topic: {output}, delivery: exactly-once }}
  - {{ name: db, type: jdbc, url: "{pg}", table: {table}, mode: upsert, key: [id] }}
  - {{ name: lake, type: filesystem, path: "s3://{bucket}/out", format: json, storage_options: {{ aws_endpoint: "{s3}", aws_allow_http: "true", aws_region: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing }} }}
"#
        )
    }
}

fn validate_yaml(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    validate_connect(&write(dir.path(), "p.yaml", yaml))
}

#[test]
fn validate_connect_checks_what_only_the_live_systems_know() {
    let kafka = bootstrap();
    let live = Live {
        input: unique("pre-in"),
        output: unique("pre-out"),
        table: unique("pre_t").replace('-', "_"),
        bucket: unique("pre-bucket"),
        pg: service_env("postgres", "DATABASE_URL"),
        s3: service_env("moto", "S3_ENDPOINT"),
        kafka,
    };
    create_topic(&live.kafka, &live.input, 3);
    create_topic(&live.kafka, &live.output, 1);
    exec(
        &live.pg,
        &format!(
            "CREATE TABLE {} (id bigint PRIMARY KEY, name text)",
            live.table
        ),
    );
    let made = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{}/{}", live.s3, live.bucket)])
        .status()
        .unwrap();
    assert!(made.success());

    // Everything fits: exit 0, and each check says what it found.
    let (code, out, err) = validate_yaml(&live.spec());
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "checkpoint.storage: s3://",
        &format!("sources[0] (in): 3 partitions of {}", live.input),
        &format!(
            "sinks[0] (out): topic {:?} exists (1 partitions)",
            live.output
        ),
        "sinks[0] (out): transaction timeout",
        "sinks[1] (db):",
        "upsert",
        "sinks[2] (lake): s3://",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }

    // Each misfit names its field, exit 2.
    let cases = [
        (
            live.spec().replace(
                &format!("topics: [{}]", live.input),
                "topics: [no-such-topic-in]",
            ),
            "sources[0].topics: topic \"no-such-topic-in\" does not exist",
        ),
        (
            live.spec().replace(
                &format!("topic: {}", live.output),
                "topic: no-such-topic-out",
            ),
            "sinks[0].topic: topic \"no-such-topic-out\" does not exist",
        ),
        (
            // 10 min + 10 min + margin exceeds the broker's 15-minute transaction maximum.
            live.spec()
                .replace("interval: 1s,", "interval: 10min, timeout: 10min,"),
            "checkpoint: checkpoint interval",
        ),
        (
            live.spec()
                .replace("key: [id]", "key: [id], columns: [id, colour]"),
            "colour",
        ),
    ];
    for (spec, want) in cases {
        let (code, out, err) = validate_yaml(&spec);
        assert_eq!(code, 2, "{want}: {out}\n{err}");
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }

    // A bucket that does not exist: the listing fails (the sink's path is named).
    let (code, _, err) = validate_yaml(&live.spec().replace(
        &format!("path: \"s3://{}/out\"", live.bucket),
        "path: \"s3://no-such-bucket-preflight/out\"",
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("sinks[2] (lake): path:") && err.contains("no-such-bucket-preflight"),
        "{err}"
    );

    // A broker that does not answer: exit 1, the address named; nothing hangs.
    let port = free_port();
    let (code, _, err) = validate_yaml(
        &live
            .spec()
            .replace(&live.kafka, &format!("127.0.0.1:{port}")),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    // Nothing was written: the table has no rows, no object appeared in the bucket.
    assert!(super::jdbc::ids(&live.pg, &live.table).is_empty());
    let listing = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/{}", live.s3, live.bucket)])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("ListBucketResult") && !listing.contains("<Key>"),
        "{listing}"
    );
}

/// The query-driven checks and the search cluster: the `jdbc` source's query and a Postgres
/// lookup's query prepare (a missing column names `query` / `client.query`), OpenSearch answers
/// and reports whether the index exists, and one that does not answer exits 1.
#[test]
fn validate_connect_prepares_queries_and_asks_the_search_cluster() {
    let pg = service_env("postgres", "DATABASE_URL");
    let search = service_env("opensearch", "OPENSEARCH_URL");
    let table = unique("pre_q").replace('-', "_");
    exec(
        &pg,
        &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"),
    );
    let spec = format!(
        r#"name: preflight-q
checkpoint: {{ storage: /tmp/weir-preflight-never-written }}
sources:
  - {{ name: rows, type: jdbc, url: "{pg}", query: "SELECT id, name FROM {table} ORDER BY id" }}
transforms:
  - name: enrich
    type: async_lookup
    key: id
    client: {{ type: postgres, url: "{pg}", query: "SELECT name FROM {table} WHERE id = $1" }}
    fields: {{ name2: name }}
sinks:
  - {{ name: search, type: elasticsearch, url: "{search}", index: pre-missing-index, id_field: id }}
"#
    );
    let (code, out, err) = validate_yaml(&spec);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "sources[0] (rows): ",
        "the query prepares (2 columns)",
        "transforms[0] (enrich): Postgres answers; the query prepares with parameters (INT8)",
        "sinks[0] (search): opensearch 2.",
        "index \"pre-missing-index\" does not exist yet",
        "checkpoint.storage: /tmp/weir-preflight-never-written: local directory, writable",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!std::path::Path::new("/tmp/weir-preflight-never-written").exists());

    let cases = [
        (
            spec.replace("SELECT id, name FROM", "SELECT id, colour FROM"),
            "sources[0].query: ",
        ),
        (
            spec.replace("SELECT name FROM", "SELECT colour FROM"),
            "transforms[0].client.query: ",
        ),
    ];
    for (bad, want) in cases {
        let (code, out, err) = validate_yaml(&bad);
        assert_eq!(code, 2, "{want}: {out}\n{err}");
        assert!(
            err.contains(want) && err.contains("colour"),
            "{want:?} not in:\n{err}"
        );
    }
    let port = free_port();
    let (code, _, err) = validate_yaml(&spec.replace(&search, &format!("http://127.0.0.1:{port}")));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sinks[0] (search)") && err.contains(&port.to_string()),
        "{err}"
    );
}
