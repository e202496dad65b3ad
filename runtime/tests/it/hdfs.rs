//! The filesystem sink and the checkpoint store on HDFS (a MiniDFSCluster started by
//! e2e/services/hdfs.sh, or the cluster `HDFS_URL` names): kill -9 at every two-phase-commit
//! step and at random moments, then an independent reader (hdfs-native, not weir) counts every
//! visible record: each exactly once, and no hidden part left behind.
#![cfg(feature = "hdfs")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdfs_native::{Client, ClientBuilder, WriteOptions};

use super::harness::*;

const N: i64 = 30_000;

/// `hdfs://127.0.0.1:<port>` of a running namenode: `HDFS_URL`, or one started by
/// e2e/services/hdfs.sh.
fn namenode() -> String {
    service_env("hdfs", "HDFS_URL")
}

/// A directory of this test's own on the cluster.
fn test_dir(name: &str) -> String {
    format!("/weir-it/{}-{name}", std::process::id())
}

fn client() -> Client {
    client_of(&namenode())
}

fn client_of(namenode: &str) -> Client {
    ClientBuilder::new().with_url(namenode).build().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two workers, checkpoints every 100 ms stored on HDFS (one kept, so older ones are deleted
/// during the run), parts that roll by size between checkpoints (several pending parts per
/// checkpoint) in hourly buckets.
fn spec(local: &Path, hdfs_dir: &str, format: &str) -> PathBuf {
    spec_on(local, &namenode(), hdfs_dir, format, 20_000)
}

/// `rate` records/s: 20,000 ends in about 1.5 s, 2,000 runs long enough for an outage.
fn spec_on(local: &Path, nn: &str, hdfs_dir: &str, format: &str, rate: u32) -> PathBuf {
    write(
        local,
        "p.yaml",
        &format!(
            r#"name: hdfs-eo
parallelism: 2
checkpoint: {{ interval: 100ms, retained: 1, storage: "{nn}{hdfs_dir}/state" }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: {rate}
    splits: 4
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 99, prefix: u }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 100ms }}
    event_time: ts
sinks:
  - name: out
    type: filesystem
    path: "{nn}{hdfs_dir}/out"
    format: {format}
    rolling: {{ max_part_size: 32KiB }}
    bucket: {{ by: event_time, pattern: "hour=%H" }}
"#
        ),
    )
}

/// Every file under `dir` on HDFS, with its bytes: (visible, hidden).
async fn files(client: &Client, dir: &str) -> (Vec<(String, bytes::Bytes)>, Vec<String>) {
    let (mut visible, mut hidden) = (Vec::new(), Vec::new());
    for status in client.list_status(dir, true).await.unwrap() {
        if status.isdir {
            continue;
        }
        if status.path.rsplit('/').next().unwrap().starts_with('.') {
            hidden.push(status.path);
            continue;
        }
        let mut reader = client.read(&status.path).await.unwrap();
        let len = reader.file_length();
        visible.push((status.path, reader.read_bytes(len).await.unwrap()));
    }
    (visible, hidden)
}

/// How often each id occurs in the visible output under `<dir>/out`; no hidden part may be
/// left once the job has finished.
fn count_ids(hdfs_dir: &str, format: &str) -> BTreeMap<i64, usize> {
    count_ids_on(&client(), hdfs_dir, format)
}

fn count_ids_on(client: &Client, hdfs_dir: &str, format: &str) -> BTreeMap<i64, usize> {
    let out = format!("{hdfs_dir}/out");
    let (visible, hidden) = rt().block_on(files(client, &out));
    assert!(
        hidden.is_empty(),
        "hidden parts left after the job finished: {hidden:?}"
    );
    assert!(!visible.is_empty(), "nothing visible under {out}");
    let mut counts = BTreeMap::new();
    for (path, body) in visible {
        let ids = match format {
            "json" => json_ids(&path, &body),
            _ => parquet_ids(&path, body),
        };
        for id in ids {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

fn json_ids(path: &str, body: &[u8]) -> Vec<i64> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with('\n'), "{path} ends in a partial line");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {line}"));
            v["id"].as_i64().expect("integer id")
        })
        .collect()
}

fn parquet_ids(path: &str, body: bytes::Bytes) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(body, 8192)
        .unwrap_or_else(|e| panic!("{path} is not a complete Parquet file: {e}"));
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("id").expect("an id column");
        ids.extend(col.as_primitive::<Int64Type>().iter().map(|v| v.unwrap()));
    }
    ids
}

#[test]
fn the_service_writes_renames_and_reads_back() {
    let dir = test_dir("smoke");
    rt().block_on(async {
        let client = client();
        let (tmp, done) = (format!("{dir}/.a.tmp"), format!("{dir}/a.txt"));
        let mut w = client.create(&tmp, WriteOptions::default()).await.unwrap();
        w.write_bytes(bytes::Bytes::from_static(b"hello hdfs\n"))
            .await
            .unwrap();
        w.close().await.unwrap();
        client.rename(&tmp, &done, false).await.unwrap();
        assert!(client.get_file_info(&tmp).await.is_err(), "renamed away");
        let mut r = client.read(&done).await.unwrap();
        assert_eq!(&r.read_bytes(11).await.unwrap()[..], b"hello hdfs\n");
        client.delete(&dir, true).await.unwrap();
    });
}

/// Killed right after the first pre-commit: parts were rolled (by size, many of them) and
/// staged, but no checkpoint completed, so nothing may be visible; the rerun publishes every
/// record once and removes the staged leftovers.
#[test]
fn parts_become_visible_only_when_their_checkpoint_commits() {
    let local = tempfile::tempdir().unwrap();
    let dir = test_dir("visible");
    let spec = spec(local.path(), &dir, "json");
    run_until_killed(&spec, Kill::At("after_precommit", 1));
    let (visible, hidden) = rt().block_on(files(&client(), &format!("{dir}/out")));
    assert!(
        visible.is_empty(),
        "visible before any checkpoint completed: {:?}",
        visible.iter().map(|v| &v.0).collect::<Vec<_>>()
    );
    assert!(
        hidden.iter().any(|h| h.ends_with(".pending")),
        "the first checkpoint staged no part: {hidden:?}"
    );
    restart_to_end(&spec, &[]);
    assert_exactly_once(&count_ids(&dir, "json"), N);
    // The checkpoints were on HDFS too, and those past the retained ones are gone, directories
    // included.
    let state = rt()
        .block_on(client().list_status(&format!("{dir}/state"), true))
        .unwrap();
    for worker in ["worker-0", "worker-1"] {
        let chk_dirs: Vec<&str> = state
            .iter()
            .filter(|s| s.isdir && s.path.contains(&format!("/{worker}/chk-")))
            .map(|s| s.path.as_str())
            .collect();
        assert!(
            !chk_dirs.is_empty(),
            "no checkpoint of {worker} under {dir}/state"
        );
        for chk in &chk_dirs {
            let manifest = format!("{chk}/_MANIFEST.json");
            assert!(
                state.iter().any(|s| s.path == manifest),
                "{chk} has no manifest: a deleted checkpoint left its directory ({chk_dirs:?})"
            );
        }
    }
}

#[test]
fn kill_at_each_commit_step_delivers_every_record_once() {
    for (point, hit) in [
        ("before_precommit", 4),
        ("after_precommit", 4),
        ("before_manifest", 3),
        ("after_manifest", 3),
        ("after_commit", 3),
    ] {
        let local = tempfile::tempdir().unwrap();
        let dir = test_dir(point);
        let spec = spec(local.path(), &dir, "json");
        run_until_killed(&spec, Kill::At(point, hit));
        restart_to_end(&spec, &[]);
        assert_exactly_once(&count_ids(&dir, "json"), N);
    }
}

#[test]
fn parquet_parts_survive_kills_around_the_manifest() {
    for point in ["before_manifest", "after_manifest"] {
        let local = tempfile::tempdir().unwrap();
        let dir = test_dir(&format!("parquet-{point}"));
        let spec = spec(local.path(), &dir, "parquet");
        run_until_killed(&spec, Kill::At(point, 3));
        restart_to_end(&spec, &[]);
        assert_exactly_once(&count_ids(&dir, "parquet"), N);
    }
}

#[test]
fn kill_repeatedly_at_random_moments() {
    let local = tempfile::tempdir().unwrap();
    let dir = test_dir("random");
    let spec = spec(local.path(), &dir, "json");
    // 150..650 ms into runs of about 1.5 s: before, between and during checkpoints.
    let kills = run_until_killed(
        &spec,
        Kill::AtRandom {
            runs: 5,
            window: ms(150)..ms(650),
        },
    )
    .kills;
    assert!(
        kills >= 3,
        "only {kills} of 5 runs were still going when killed"
    );
    restart_to_end(&spec, &[]);
    assert_exactly_once(&count_ids(&dir, "json"), N);
}

/// `weir validate --connect` reaches the namenode for the sink's path and the checkpoint
/// storage (a path that does not exist yet is fine: the job creates it), and names the path
/// of a namenode that does not answer.
#[test]
fn validate_connect_checks_hdfs_paths() {
    let local = tempfile::tempdir().unwrap();
    let dir = test_dir("validate");
    let spec = spec(local.path(), &dir, "json");
    let o = output_within(
        {
            let mut c = weir();
            c.args(["validate", "--connect"]).arg(&spec);
            c
        },
        std::time::Duration::from_secs(60),
        "weir validate --connect",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains(&format!("{dir}/out: HDFS answers")), "{out}");
    let dead = format!("hdfs://127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace(&namenode(), &dead);
    let bad = write(local.path(), "bad.yaml", &text);
    let o = output_within(
        {
            let mut c = weir();
            c.args(["validate", "--connect", "--connect-timeout", "10s"])
                .arg(&bad);
            c
        },
        std::time::Duration::from_secs(60),
        "weir validate --connect",
    );
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "a dead namenode passed: {all}");
    for path in ["out", "state"] {
        assert!(
            all.contains(&format!("{dead}{dir}/{path}: HDFS does not answer")),
            "{all}"
        );
    }
}

/// The namenode goes away for 10 s mid-run (stopped, then started again on its port with its
/// data), under both the checkpoint storage and the sink: the job rides it out (the client's
/// retries, failed checkpoints, in-process restarts) and every record is on HDFS exactly once.
#[test]
fn a_namenode_outage_under_storage_and_sink_keeps_exactly_once() {
    let hdfs = PrivateService::up("hdfs", "HDFS_URL", "outage", &[]);
    let local = tempfile::tempdir().unwrap();
    let dir = test_dir("outage");
    let spec = spec_on(local.path(), &hdfs.value, &dir, "json", 2_000);
    let mut job = Running::start(&spec, &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        job.child_status().is_none(),
        "the job ended before the outage"
    );
    hdfs.must("stop");
    std::thread::sleep(std::time::Duration::from_secs(10));
    hdfs.must("start");
    let o = job.wait();
    assert!(
        o.status.success(),
        "the job did not survive: {}",
        stderr(&o)
    );
    assert_exactly_once(&count_ids_on(&client_of(&hdfs.value), &dir, "json"), N);
}

/// `weir savepoint --stop` writes the savepoint on HDFS and names it by its URL; the job
/// resumes from that URL at another parallelism and ends with every record once.
#[test]
fn a_savepoint_on_hdfs_resumes_at_another_parallelism() {
    let local = tempfile::tempdir().unwrap();
    let dir = test_dir("savepoint");
    // 5,000 records/s: the job is still running (6 s in all) when its sink has seen its first
    // records, which is when the savepoint is taken.
    let p2 = spec_on(local.path(), &namenode(), &dir, "json", 5_000);
    let job = Running::start(&p2, &[]);
    job.wait_for_metric("weir_node_records_in_total", "node=\"out\"", 1.0);
    let path = job.stop_with_savepoint();
    let prefix = format!("{}{dir}/state/", namenode());
    let on_hdfs = path.strip_prefix(&namenode()).unwrap_or_else(|| {
        panic!("the savepoint is not named by its HDFS URL ({prefix}…): {path}")
    });
    rt().block_on(async {
        let marker = format!("{on_hdfs}/_SAVEPOINT.json");
        client()
            .get_file_info(&marker)
            .await
            .unwrap_or_else(|e| panic!("{marker}: {e}"));
    });
    let partial = rt()
        .block_on(files(&client(), &format!("{dir}/out")))
        .0
        .iter()
        .map(|(p, body)| json_ids(p, body).len())
        .sum::<usize>() as i64;
    assert!(partial > 0 && partial < N, "stopped part way: {partial}");
    let text = std::fs::read_to_string(&p2).unwrap();
    let p1 = write(
        local.path(),
        "p1.yaml",
        &text.replace("parallelism: 2", "parallelism: 1"),
    );
    restart_to_end(&p1, &["--from-savepoint", &path]);
    assert_exactly_once(&count_ids(&dir, "json"), N);
}
