//! The sink driven through the `TwoPhaseSink` trait, as the engine drives it, on real files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::api::{Barrier, Batch, NodeConfig, NodeContext, Record, Registry, TwoPhaseSink};
use crate::error::Error;
use crate::metrics::NodeMetrics;

/// The bad-record handler of a sink with `on_error: fail`, for the encoders' tests.
pub(super) fn fail() -> impl FnMut(&Record, String) -> crate::error::Result<()> {
    |r: &Record, why: String| crate::on_error::OnError::<()>::Fail.reject("out", r, why)
}

pub(super) fn node_config(config: Value) -> NodeConfig {
    NodeConfig::for_test("sinks[0]", "filesystem", config)
}

fn ctx(worker: u32) -> NodeContext {
    NodeContext {
        worker,
        ..NodeContext::for_test("job", "out")
    }
}

fn sink(config: Value) -> FileSink {
    FileSink::new(
        node_config(config)
            .resolve::<FileSinkConfig>()
            .expect("valid config"),
    )
}

async fn started(config: Value, worker: u32) -> FileSink {
    let mut s = sink(config);
    s.open(&ctx(worker)).await.unwrap();
    s.recover(Vec::new(), Vec::new()).await.unwrap();
    s
}

fn rec(v: Value) -> Record {
    Record::new(v.as_object().cloned().expect("an object"))
}

fn batch(ids: std::ops::Range<u64>) -> Batch {
    Batch::new(
        None,
        ids.map(|i| rec(json!({"id": i, "k": format!("k{}", i % 3), "pad": "x".repeat(20)})))
            .collect(),
    )
}

fn barrier(id: u64) -> Barrier {
    Barrier {
        id,
        savepoint: false,
        last: false,
    }
}

fn last(id: u64) -> Barrier {
    Barrier {
        id,
        savepoint: false,
        last: true,
    }
}

/// Every file under `root`, relative, sorted: (path, hidden).
fn files(root: &Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let hidden = p.file_name().unwrap().to_string_lossy().starts_with('.');
                out.push((rel, hidden));
            }
        }
    }
    out.sort();
    out
}

fn visible(root: &Path) -> Vec<String> {
    files(root)
        .into_iter()
        .filter(|(_, h)| !h)
        .map(|(f, _)| f)
        .collect()
}

fn hidden(root: &Path) -> Vec<String> {
    files(root)
        .into_iter()
        .filter(|(_, h)| *h)
        .map(|(f, _)| f)
        .collect()
}

/// The ids in every visible JSON file, sorted (duplicates kept, so "exactly once" is checked).
fn visible_ids(root: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for f in visible(root) {
        for line in std::fs::read_to_string(root.join(&f)).unwrap().lines() {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{f}: {e}: {line:?}"));
            ids.push(v["id"].as_u64().unwrap());
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn committed_parts_become_visible_with_exact_contents() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let config = json!({"path": root, "format": "json", "rolling": {"roll_on_checkpoint": true}});
    let mut s = started(config, 0).await;
    s.write(Batch::new(
        None,
        vec![
            rec(json!({"b": 1, "a": "x"})),
            rec(json!({"c": [1, {"d": null}]})),
        ],
    ))
    .await
    .unwrap();
    let (committables, state) = s.pre_commit(barrier(1)).await.unwrap();
    assert_eq!(committables.len(), 1);
    assert_eq!(
        state,
        FileSinkState {
            worker: 0,
            next_part: 1,
            in_progress: vec![]
        }
    );
    assert_eq!(
        visible(&root),
        Vec::<String>::new(),
        "nothing visible before the commit"
    );
    assert_eq!(hidden(&root), [".part-0-0.pending"]);
    s.commit(committables.clone()).await.unwrap();
    assert_eq!(visible(&root), ["part-0-0.json"]);
    assert_eq!(
        std::fs::read_to_string(root.join("part-0-0.json")).unwrap(),
        "{\"b\":1,\"a\":\"x\"}\n{\"c\":[1,{\"d\":null}]}\n"
    );
    s.commit(committables).await.expect("commit is idempotent");
    let (none, _) = s.pre_commit(barrier(2)).await.unwrap();
    assert!(none.is_empty(), "an idle sink stages nothing");
}

#[tokio::test]
async fn row_parts_stay_open_across_checkpoints_until_the_last_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = started(json!({"path": dir.path(), "format": "json"}), 0).await;
    s.write(batch(0..10)).await.unwrap();
    let (c1, s1) = s.pre_commit(barrier(1)).await.unwrap();
    assert!(c1.is_empty());
    assert_eq!(s1.in_progress.len(), 1);
    let len = std::fs::metadata(dir.path().join(".part-0-0.inprogress"))
        .unwrap()
        .len();
    assert_eq!(
        s1.in_progress[0].valid_length, len,
        "pre_commit flushed everything"
    );
    s.write(batch(10..20)).await.unwrap();
    let (c2, s2) = s.pre_commit(last(2)).await.unwrap();
    assert_eq!(c2.len(), 1);
    assert!(s2.in_progress.is_empty());
    s.commit(c2).await.unwrap();
    assert_eq!(visible_ids(dir.path()), (0..20).collect::<Vec<_>>());
    assert!(hidden(dir.path()).is_empty());
}

/// The crash of the brief: checkpoint 1 (S1, C1), more writes and rolls, the process dies
/// before committing; a new sink restores S1 and C1, and the files end up with every record
/// exactly once.
#[tokio::test]
async fn recovery_commits_truncates_cleans_and_writes_on_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = json!({
        "path": root, "format": "json",
        "bucket": {"by": "field", "field": "k"},
        "rolling": {"max_part_size": "2KiB"},
    });
    let mut a = started(config.clone(), 0).await;
    // ~500 bytes per bucket and batch: parts roll after 5 batches.
    write_in_batches(&mut a, 0..270).await;
    let (c1, s1) = a.pre_commit(barrier(1)).await.unwrap();
    assert!(
        !c1.is_empty(),
        "size rolls before the checkpoint are its committables"
    );
    assert_eq!(s1.in_progress.len(), 3, "one open part per bucket");
    // After the checkpoint: more data, and rolls that rename checkpointed in-progress parts.
    write_in_batches(&mut a, 270..570).await;
    let pending_after = hidden(root)
        .iter()
        .filter(|f| f.ends_with(".pending"))
        .count();
    assert!(
        pending_after > c1.len(),
        "parts rolled after checkpoint 1 exist"
    );
    let reopened = s1
        .in_progress
        .iter()
        .filter(|p| root.join(&p.bucket).join(p.name.pending()).exists())
        .count();
    assert!(
        reopened > 0,
        "a part open at checkpoint 1 was rolled to .pending after it"
    );
    drop(a); // crash: checkpoint 1 is durable, its commit never ran

    let mut b = sink(config.clone());
    b.open(&ctx(0)).await.unwrap();
    b.recover(vec![s1.clone()], c1.clone()).await.unwrap();
    // C1 is visible, the in-progress parts of S1 are back at their checkpointed length, and
    // nothing else is left hidden.
    for c in &c1 {
        let FileCommittable::Local { visible, .. } = c else {
            panic!("local")
        };
        assert!(visible.exists(), "{visible:?}");
    }
    let mut expected_hidden: Vec<String> = s1
        .in_progress
        .iter()
        .map(|p| {
            Path::new(&p.bucket)
                .join(p.name.in_progress())
                .to_string_lossy()
                .to_string()
        })
        .collect();
    expected_hidden.sort();
    assert_eq!(hidden(root), expected_hidden);
    for p in &s1.in_progress {
        let len = std::fs::metadata(root.join(&p.bucket).join(p.name.in_progress()))
            .unwrap()
            .len();
        assert_eq!(len, p.valid_length);
    }
    assert_eq!(visible_ids(root), visible_ids_of_committables(&c1));

    // The source replays from checkpoint 1's position.
    write_in_batches(&mut b, 270..570).await;
    write_in_batches(&mut b, 570..600).await;
    let (c2, _) = b.pre_commit(last(2)).await.unwrap();
    b.commit(c2).await.unwrap();
    assert_eq!(visible_ids(root), (0..600).collect::<Vec<_>>());
    assert!(hidden(root).is_empty(), "{:?}", hidden(root));
    let names = visible(root);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("k") && n.contains("/part-0-")),
        "{names:?}"
    );
}

async fn write_in_batches(s: &mut FileSink, ids: std::ops::Range<u64>) {
    for start in ids.clone().step_by(30) {
        s.write(batch(start..(start + 30).min(ids.end)))
            .await
            .unwrap();
    }
}

fn visible_ids_of_committables(c: &[FileCommittable]) -> Vec<u64> {
    let mut ids = Vec::new();
    for c in c {
        let FileCommittable::Local { visible, .. } = c else {
            panic!("local")
        };
        for line in std::fs::read_to_string(visible).unwrap().lines() {
            ids.push(
                serde_json::from_str::<Value>(line).unwrap()["id"]
                    .as_u64()
                    .unwrap(),
            );
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn recovering_the_same_checkpoint_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        json!({"path": dir.path(), "format": "json", "rolling": {"max_part_size": "1KiB"}});
    let mut a = started(config.clone(), 0).await;
    a.write(batch(0..50)).await.unwrap();
    let (c1, s1) = a.pre_commit(barrier(1)).await.unwrap();
    a.write(batch(50..80)).await.unwrap();
    drop(a);
    for _ in 0..2 {
        // The second attempt dies during its writes too.
        let mut b = sink(config.clone());
        b.open(&ctx(0)).await.unwrap();
        b.recover(vec![s1.clone()], c1.clone()).await.unwrap();
        b.write(batch(50..70)).await.unwrap();
    }
    let mut c = sink(config);
    c.open(&ctx(0)).await.unwrap();
    c.recover(vec![s1], c1).await.unwrap();
    c.write(batch(50..100)).await.unwrap();
    let (c2, _) = c.pre_commit(last(2)).await.unwrap();
    c.commit(c2).await.unwrap();
    assert_eq!(visible_ids(dir.path()), (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_rescaled_worker_publishes_the_other_workers_open_part_and_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path(), "format": "json"});
    let mut w0 = started(config.clone(), 0).await;
    let mut w2 = started(config.clone(), 2).await;
    w0.write(batch(0..10)).await.unwrap();
    w2.write(batch(10..20)).await.unwrap();
    let (c0, s0) = w0.pre_commit(barrier(1)).await.unwrap();
    let (c2, s2) = w2.pre_commit(barrier(1)).await.unwrap();
    w0.write(batch(20..25)).await.unwrap(); // after the checkpoint: discarded
    w2.write(batch(25..30)).await.unwrap();
    drop((w0, w2));

    // Parallelism 4 → 2: the new worker 0 takes over old workers 0 and 2.
    let mut n0 = sink(config);
    n0.open(&ctx(0)).await.unwrap();
    n0.recover(vec![s0, s2], [c0, c2].concat()).await.unwrap();
    assert_eq!(
        visible(dir.path()),
        ["part-2-0.json"],
        "worker 2's part is published at once"
    );
    assert_eq!(
        hidden(dir.path()),
        [".part-0-0.inprogress"],
        "worker 0's part is written on"
    );
    n0.write(batch(20..30)).await.unwrap();
    let (c, _) = n0.pre_commit(last(2)).await.unwrap();
    n0.commit(c).await.unwrap();
    assert_eq!(visible_ids(dir.path()), (0..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_missing_pending_part_fails_the_commit_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = started(
        json!({"path": dir.path(), "format": "json", "rolling": {"roll_on_checkpoint": true}}),
        0,
    )
    .await;
    s.write(batch(0..3)).await.unwrap();
    let (c, _) = s.pre_commit(barrier(1)).await.unwrap();
    std::fs::remove_file(dir.path().join(".part-0-0.pending")).unwrap();
    let e = s.commit(c).await.unwrap_err().to_string();
    assert!(e.contains(".part-0-0.pending") && e.contains("lost"), "{e}");
}

#[tokio::test]
async fn existing_names_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("part-0-0.json"), "old\n").unwrap();
    std::fs::write(dir.path().join("part-0-1.json"), "old\n").unwrap();
    std::fs::write(dir.path().join("part-1-2.json"), "other worker\n").unwrap();
    let mut s = started(json!({"path": dir.path(), "format": "json"}), 0).await;
    s.write(batch(0..1)).await.unwrap();
    let (c, state) = s.pre_commit(last(1)).await.unwrap();
    assert_eq!(state.next_part, 3);
    s.commit(c).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("part-0-0.json")).unwrap(),
        "old\n"
    );
    assert!(dir.path().join("part-0-2.json").exists());
}

#[tokio::test]
async fn time_rolling_happens_on_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let config = json!({"path": dir.path(), "format": "json", "rolling": {"inactivity_interval": "10s", "rollover_interval": "1m"}});
    let mut s = sink(config).with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    s.open(&ctx(0)).await.unwrap();
    s.recover(vec![], vec![]).await.unwrap();
    s.write(batch(0..2)).await.unwrap();
    now.fetch_add(9_000, Ordering::SeqCst);
    s.on_tick().await.unwrap();
    assert_eq!(hidden(dir.path()), [".part-0-0.inprogress"]);
    now.fetch_add(1_000, Ordering::SeqCst);
    s.on_tick().await.unwrap();
    assert_eq!(
        hidden(dir.path()),
        [".part-0-0.pending"],
        "inactive for 10s"
    );
    // Rollover: written to all the time, but open for a minute.
    for _ in 0..8 {
        s.write(batch(2..3)).await.unwrap();
        now.fetch_add(9_000, Ordering::SeqCst);
        s.on_tick().await.unwrap();
    }
    assert_eq!(
        hidden(dir.path()),
        [
            ".part-0-0.pending",
            ".part-0-1.pending",
            ".part-0-2.inprogress"
        ]
    );
    let (c, _) = s.pre_commit(barrier(1)).await.unwrap();
    assert_eq!(
        c.len(),
        2,
        "both rolled parts are committables of the next checkpoint"
    );
}

#[tokio::test]
async fn event_time_buckets_become_directories() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path(), "format": "json", "bucket": {"by": "event_time", "field": "ts"}});
    let mut s = started(config, 0).await;
    let records = vec![
        rec(json!({"id": 0})).with_event_time(Some(1_709_622_489_123)),
        rec(json!({"id": 1, "ts": "2024-03-05T08:00:00Z"})),
        rec(json!({"id": 2})),
    ];
    let e = s
        .write(Batch::new(None, records.clone()))
        .await
        .unwrap_err();
    let Error::Record {
        record, message, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(record, r#"{"id":2}"#);
    assert!(
        message.contains("no event time and no field \"ts\""),
        "{message}"
    );
    let mut s = started(json!({"path": dir.path(), "format": "json", "on_error": "skip", "bucket": {"by": "event_time", "field": "ts"}}), 1).await;
    let metrics = NodeMetrics::detached();
    let mut c = ctx(1);
    c.metrics = metrics.clone();
    s.open(&c).await.unwrap();
    s.write(Batch::new(None, records)).await.unwrap();
    assert_eq!(metrics.record_errors.get(), 1);
    let (committables, _) = s.pre_commit(last(1)).await.unwrap();
    s.commit(committables).await.unwrap();
    assert_eq!(
        visible(dir.path()),
        [
            "year=2024/month=03/day=05/hour=07/part-1-0.json",
            "year=2024/month=03/day=05/hour=08/part-1-1.json"
        ]
    );
    assert!(metrics.bytes_out.get() > 0);
}

#[tokio::test]
async fn csv_parts_have_one_header_even_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path(), "format": "csv", "csv": {"delimiter": ";"}});
    let mut a = started(config.clone(), 0).await;
    a.write(Batch::new(
        None,
        vec![rec(json!({"id": 1, "name": "a;b"})), rec(json!({"id": 2}))],
    ))
    .await
    .unwrap();
    let (c1, s1) = a.pre_commit(barrier(1)).await.unwrap();
    assert_eq!(
        s1.in_progress[0].columns.as_deref(),
        Some(&["id".to_string(), "name".to_string()][..])
    );
    a.write(Batch::new(None, vec![rec(json!({"id": 99}))]))
        .await
        .unwrap();
    drop(a);
    let mut b = sink(config);
    b.open(&ctx(0)).await.unwrap();
    b.recover(vec![s1], c1).await.unwrap();
    b.write(Batch::new(None, vec![rec(json!({"name": "c", "id": 3}))]))
        .await
        .unwrap();
    let bad = b
        .write(Batch::new(None, vec![rec(json!({"id": 4, "extra": 1}))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains(r#"record {"id":4,"extra":1}: does not fit the CSV columns [id, name]"#),
        "{bad}"
    );
    let (c2, _) = b.pre_commit(last(2)).await.unwrap();
    b.commit(c2).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("part-0-0.csv")).unwrap();
    assert_eq!(text, "id;name\n1;\"a;b\"\n2;\n3;c\n");
}

fn parquet_rows(path: &Path) -> (usize, Vec<String>) {
    let data = Bytes::from(std::fs::read(path).unwrap());
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
    let names = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    (
        builder
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum(),
        names,
    )
}

#[tokio::test]
async fn parquet_parts_close_at_every_checkpoint_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "path": dir.path(), "format": "parquet",
        "schema": [{"name": "id", "type": "int64", "nullable": false}, {"name": "k", "type": "string"}, {"name": "pad", "type": "string"}],
        "parquet": {"compression": "zstd"},
    });
    let mut s = started(config, 0).await;
    s.write(batch(0..5000)).await.unwrap();
    s.write(batch(5000..6000)).await.unwrap();
    let (c1, s1) = s.pre_commit(barrier(1)).await.unwrap();
    assert!(s1.in_progress.is_empty());
    s.write(batch(6000..6010)).await.unwrap();
    let (c2, _) = s.pre_commit(barrier(2)).await.unwrap();
    s.commit([c1, c2].concat()).await.unwrap();
    assert_eq!(
        visible(dir.path()),
        ["part-0-0.parquet", "part-0-1.parquet"]
    );
    let (rows, names) = parquet_rows(&dir.path().join("part-0-0.parquet"));
    assert_eq!(
        (rows, names),
        (6000, vec!["id".to_string(), "k".into(), "pad".into()])
    );
    assert_eq!(parquet_rows(&dir.path().join("part-0-1.parquet")).0, 10);
}

#[tokio::test]
async fn a_record_outside_the_parquet_schema_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"path": dir.path(), "format": "parquet", "schema": [{"name": "id", "type": "int64"}]});
    let mut s = started(config, 0).await;
    let e = s
        .write(Batch::new(
            None,
            vec![rec(json!({"id": 1})), rec(json!({"id": "two"}))],
        ))
        .await
        .unwrap_err();
    let Error::Record {
        node,
        record,
        message,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((node.as_str(), record.as_str()), ("out", r#"{"id":"two"}"#));
    assert!(
        message.contains("does not fit the Parquet schema"),
        "{message}"
    );
}

#[test]
fn the_factory_is_registered_and_reports_config_errors() {
    let mut r = Registry::empty();
    crate::connectors::filesystem::register(&mut r);
    assert!(r
        .build_sink(&node_config(
            json!({"path": "/nonexistent/never/created", "format": "json"})
        ))
        .is_ok());
    assert!(
        !Path::new("/nonexistent/never/created").exists(),
        "the factory does no I/O"
    );
    let e = r
        .build_sink(&node_config(
            json!({"path": "/x", "format": "json", "rolling": {"max_part_size": "big"}}),
        ))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sinks[0].rolling.max_part_size: expected a size like 256MiB"),
        "{e}"
    );
}

/// A running moto server's env: the user's `S3_ENDPOINT`, or one started by e2e/services/moto.sh.
fn moto_env() -> BTreeMap<String, String> {
    if let Ok(endpoint) = std::env::var("S3_ENDPOINT") {
        let mut env = BTreeMap::from([("S3_ENDPOINT".to_string(), endpoint)]);
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            env.insert(
                k.into(),
                std::env::var(k).unwrap_or_else(|_| {
                    if k == "AWS_REGION" {
                        "us-east-1"
                    } else {
                        "testing"
                    }
                    .into()
                }),
            );
        }
        return env;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/services/moto.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .expect("running moto.sh");
    assert!(
        out.status.success(),
        "moto.sh up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn s3_parts_are_multipart_uploads_completed_at_commit() {
    use object_store::{ObjectStore, ObjectStoreExt};
    let env = tokio::task::spawn_blocking(moto_env).await.unwrap();
    let endpoint = env["S3_ENDPOINT"].clone();
    let bucket = format!("weir-fs-{}", std::process::id());
    let status = std::process::Command::new("curl")
        .args(["-fsS", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .status()
        .expect("curl");
    assert!(status.success(), "creating bucket {bucket}");
    let options = json!({
        "aws_endpoint": endpoint, "aws_allow_http": "true", "aws_region": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    });
    let config = json!({
        "path": format!("s3://{bucket}/events"), "storage_options": options, "format": "json",
        "bucket": {"by": "field", "field": "k"},
    });
    let mut s = started(config.clone(), 0).await;
    // Enough for several 8 MiB upload parts in one bucket.
    let big: Vec<Record> = (0..60_000u64)
        .map(|i| rec(json!({"id": i, "k": "big", "pad": "y".repeat(400)})))
        .collect();
    s.write(Batch::new(None, big)).await.unwrap();
    s.write(batch(0..30)).await.unwrap();
    let (c1, state) = s.pre_commit(barrier(1)).await.unwrap();
    assert!(state.in_progress.is_empty());
    assert_eq!(c1.len(), 4);
    let big_parts = c1.iter().map(|c| match c {
        FileCommittable::S3(u) => u.parts.len(),
        other => panic!("{other:?}"),
    });
    assert!(big_parts.max().unwrap() >= 3);

    let url = url::Url::parse(&format!("s3://{bucket}/events")).unwrap();
    let (store, prefix) =
        crate::storage::s3(&url, &serde_json::from_value(options).unwrap()).unwrap();
    let list = |store: Arc<object_store::aws::AmazonS3>, prefix: object_store::path::Path| async move {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    };
    assert!(
        list(store.clone(), prefix.clone()).await.is_empty(),
        "invisible before the commit"
    );
    s.commit(c1.clone()).await.unwrap();
    let keys = list(store.clone(), prefix.clone()).await;
    assert_eq!(
        keys,
        [
            "events/big/part-0-0.json",
            "events/k0/part-0-1.json",
            "events/k1/part-0-2.json",
            "events/k2/part-0-3.json"
        ]
    );
    let body = store
        .get(&"events/k1/part-0-2.json".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let ids: Vec<u64> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..30).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    let big = store
        .head(&"events/big/part-0-0.json".into())
        .await
        .unwrap();
    assert!(big.size > 16 * 1024 * 1024);

    // Recovery commits again (idempotent), and a new part skips the taken names.
    let mut r = sink(config);
    r.open(&ctx(0)).await.unwrap();
    r.recover(
        vec![FileSinkState {
            worker: 0,
            next_part: 1,
            in_progress: vec![],
        }],
        c1,
    )
    .await
    .unwrap();
    r.write(batch(30..31)).await.unwrap();
    let (c2, state) = r.pre_commit(barrier(2)).await.unwrap();
    assert_eq!(
        state.next_part, 3,
        "part-0-1 exists in bucket k0, so the new part there is part-0-2"
    );
    r.write(batch(31..32)).await.unwrap(); // opened after the checkpoint, then cancelled
    r.abort().await.unwrap();
    r.commit(c2).await.unwrap();
    assert!(list(store.clone(), prefix.clone())
        .await
        .contains(&"events/k0/part-0-2.json".to_string()));
    assert_eq!(
        list(store, prefix).await.len(),
        5,
        "the aborted part is not visible"
    );
}
