//! `preloaded_lookup` (the broadcast-state pattern): the table in memory on every worker, its
//! version in the checkpoint. A restart after the table's file changed still joins against the
//! checkpoint's version; a reload takes the new one; limits and bad rows fail naming the
//! setting or the line; Postgres and compacted Kafka tables.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::harness::*;

fn users(dir: &Path, tag: &str, n: i64) -> std::path::PathBuf {
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"{tag}-{i}\",\"plan\":{{\"tier\":\"t{}\"}}}}\n",
                i % 3
            )
        })
        .collect();
    write(dir, "users.jsonl", &text)
}

fn spec(dir: &Path, table: &str, extra: &str, count: u64, rate: u64) -> std::path::PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            r#"name: preloaded
parallelism: 2
checkpoint: {{ interval: 300ms, storage: {state} }}
sources:
  - {{ name: gen, type: datagen, count: {count}, rate: {rate}, splits: 2, fields: {{ id: {{ kind: sequence }}, user: {{ kind: int, min: 0, max: 119 }} }} }}
transforms:
  - name: enrich
    type: preloaded_lookup
    key: user
    table: {table}
    fields: {{ name: name, tier: plan.tier }}
{extra}sinks:
  - {{ name: out, type: filesystem, path: {out}, format: json, rolling: {{ max_part_size: 16KiB }} }}
"#,
            state = dir.join("state").display(),
            out = dir.join("out").display(),
        ),
    )
}

/// Every output record: id → (user, name).
fn output(dir: &Path) -> BTreeMap<i64, Vec<(i64, serde_json::Value)>> {
    let mut out: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for f in visible_files(&dir.join("out")) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.entry(v["id"].as_i64().unwrap())
                .or_default()
                .push((v["user"].as_i64().unwrap(), v["name"].clone()));
        }
    }
    out
}

#[test]
fn a_restart_joins_against_the_checkpointed_table_even_after_the_file_changed() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = users(dir.path(), "a", 100);
    let table = format!("{{ type: file, path: {}, key: id }}", path.display());
    let p = spec(dir.path(), &table, "", N, 1_000);
    let job = Running::start(&p, &[]);
    // Some output committed: a checkpoint with the table's version is durable.
    let deadline = Instant::now() + Duration::from_secs(60);
    while output(dir.path()).len() < 1_000 {
        assert!(Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    users(dir.path(), "b", 100);
    let mut job = job;
    if job.child_status().is_some() {
        panic!("the job ended before the kill: {}", stderr(&job.wait()));
    }
    job.kill9();
    restart_to_end(&p, &[]);

    let out = output(dir.path());
    assert_eq!(out.len() as u64, N, "every id once");
    for (id, seen) in &out {
        assert_eq!(seen.len(), 1, "id {id} written {} times", seen.len());
        let (user, name) = &seen[0];
        // Users 100..119 are not in the table: null fields (the default left join).
        let want = if *user < 100 {
            serde_json::json!(format!("a-{user}"))
        } else {
            serde_json::Value::Null
        };
        assert_eq!(name, &want, "id {id} (user {user}) after the restart");
    }
    let versions = std::fs::read_dir(dir.path().join("state/preloaded/lookup-tables/enrich"))
        .unwrap()
        .count();
    assert_eq!(versions, 1, "one version of the table, stored once");

    // A fresh start loads the file as it is now.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    restart_to_end(&spec(dir.path(), &table, "", 300, 100_000), &[]);
    let out = output(dir.path());
    assert!(out
        .values()
        .all(|s| s[0].0 >= 100 || s[0].1 == serde_json::json!(format!("b-{}", s[0].0))));
}

#[test]
fn a_reload_takes_the_new_version_between_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = users(dir.path(), "a", 120);
    let table = format!("{{ type: file, path: {}, key: id }}", path.display());
    let p = spec(dir.path(), &table, "    reload: 1s\n", 4_000, 1_000);
    let job = Running::start(&p, &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    users(dir.path(), "b", 120);
    let o = job.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = output(dir.path());
    assert_eq!(out.len(), 4_000);
    let names: Vec<String> = out
        .values()
        .map(|s| s[0].1.as_str().unwrap().to_string())
        .collect();
    let first_b = names.iter().position(|n| n.starts_with("b-"));
    let last_a = names.iter().rposition(|n| n.starts_with("a-"));
    assert!(
        first_b.is_some() && last_a.is_some(),
        "both versions joined: first b at {first_b:?}, last a at {last_a:?}"
    );
    // Two workers swap independently, so ids interleave around the switch, but once both have
    // the new version no record sees the old one.
    assert!(
        last_a.unwrap() < first_b.unwrap() + 2_000,
        "old version still joined long after the reload"
    );
}

#[test]
fn limits_bad_rows_and_misses_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = users(dir.path(), "a", 100);
    let table = format!("{{ type: file, path: {}, key: id }}", path.display());
    let o = run(
        &spec(dir.path(), &table, "    max_rows: 10\n", 10, 1000),
        &[],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("outgrew max_rows (10)"),
        "{}",
        stderr(&o)
    );

    std::fs::write(&path, "{\"id\":1,\"name\":\"x\"}\n{\"name\":\"no id\"}\n").unwrap();
    let o = run(&spec(dir.path(), &table, "", 10, 1000), &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 2: no key field \"id\""),
        "{}",
        stderr(&o)
    );

    users(dir.path(), "a", 100);
    let _ = std::fs::remove_dir_all(dir.path().join("state"));
    let o = run(
        &spec(dir.path(), &table, "    on_miss: fail\n", 2_000, 100_000),
        &[],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("its key is not in the lookup table (on_miss: fail)"),
        "{}",
        stderr(&o)
    );

    // `weir validate --connect` loads the table as the job would.
    let c = {
        let mut c = weir();
        c.args(["validate", "--connect"]).arg(spec(
            dir.path(),
            &table,
            "    max_rows: 10\n",
            10,
            1000,
        ));
        c
    };
    let o = output_within(c, Duration::from_secs(30), "validate --connect");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("transforms[0].table: ")
            && stderr(&o).contains("the lookup table outgrew max_rows (10)"),
        "{}",
        stderr(&o)
    );
}

#[cfg(feature = "jdbc")]
#[test]
fn a_postgres_table_joins_by_its_columns() {
    let pg = service_env("postgres", "DATABASE_URL");
    let t = format!("pre_users_{}", std::process::id());
    super::jdbc::exec(
        &pg,
        &format!(
            "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id bigint PRIMARY KEY, name text, tier text);
             INSERT INTO {t} SELECT i, 'pg-' || i, 't' || (i % 3) FROM generate_series(0, 99) i"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let table = format!(
        "{{ type: jdbc, url: \"{pg}\", query: \"SELECT id, name, json_build_object('tier', tier) AS plan FROM {t}\", key: id }}"
    );
    restart_to_end(&spec(dir.path(), &table, "", 500, 100_000), &[]);
    let out = output(dir.path());
    assert_eq!(out.len(), 500);
    for s in out.values() {
        let (user, name) = &s[0];
        if *user < 100 {
            assert_eq!(name, &serde_json::json!(format!("pg-{user}")));
        } else {
            assert!(name.is_null());
        }
    }
}

#[cfg(feature = "kafka")]
#[test]
fn a_compacted_topic_is_followed_and_a_tombstone_deletes_its_row() {
    use crate::kafka_sink::kafka::{bootstrap, create_topic, unique};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let kafka = bootstrap();
    let topic = unique("pre-users");
    create_topic(&kafka, &topic, 2);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .unwrap();
    for i in 0..100 {
        let v = format!("{{\"id\":{i},\"name\":\"old-{i}\",\"plan\":{{\"tier\":\"x\"}}}}");
        producer
            .send(BaseRecord::to(&topic).key(&i.to_string()).payload(&v))
            .unwrap();
    }
    // A newer value for user 5, and a tombstone for user 7.
    let v = "{\"id\":5,\"name\":\"new-5\"}";
    producer
        .send(BaseRecord::to(&topic).key("5").payload(v))
        .unwrap();
    producer
        .send(BaseRecord::<str, str>::to(&topic).key("7"))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let table = format!("{{ type: kafka, bootstrap_servers: \"{kafka}\", topic: {topic} }}");
    restart_to_end(&spec(dir.path(), &table, "", 2_000, 100_000), &[]);
    let out = output(dir.path());
    assert_eq!(out.len(), 2_000);
    let mut seen = (false, false);
    for s in out.values() {
        let (user, name) = &s[0];
        let want = match user {
            5 => {
                seen.0 = true;
                serde_json::json!("new-5")
            }
            7 => {
                seen.1 = true;
                serde_json::Value::Null
            }
            u if *u < 100 => serde_json::json!(format!("old-{u}")),
            _ => serde_json::Value::Null,
        };
        assert_eq!(name, &want, "user {user}");
    }
    assert!(seen.0 && seen.1, "users 5 and 7 drawn");
}
