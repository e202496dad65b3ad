//! Talking to kinesis-mock directly (aws-sdk-kinesis): streams, resharding, input records, and
//! the job specs and output checks the Kinesis tests share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ScalingType, StreamStatus};
use aws_sdk_kinesis::Client;
use serde_json::{json, Value};

use super::super::harness::*;

pub fn endpoint() -> String {
    service_env("kinesis", "KINESIS_ENDPOINT")
}

/// One runtime for the tests' own AWS calls.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn client_at(endpoint: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(conf)
}

pub fn client() -> Client {
    client_at(&endpoint())
}

/// A stream or consumer name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "kin-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn wait_active(c: &Client, stream: &str) {
    for _ in 0..300 {
        let d = rt()
            .block_on(c.describe_stream_summary().stream_name(stream).send())
            .unwrap();
        if d.stream_description_summary.unwrap().stream_status == StreamStatus::Active {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("stream {stream} never became ACTIVE");
}

pub fn create_stream(stream: &str, shards: i32) {
    let c = client();
    rt().block_on(
        c.create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send(),
    )
    .unwrap_or_else(|e| panic!("creating {stream}: {e:?}"));
    wait_active(&c, stream);
}

pub fn delete_stream(stream: &str) {
    let c = client();
    rt().block_on(c.delete_stream().stream_name(stream).send())
        .unwrap_or_else(|e| panic!("deleting {stream}: {e:?}"));
    for _ in 0..300 {
        if rt()
            .block_on(c.describe_stream_summary().stream_name(stream).send())
            .is_err()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("stream {stream} was never deleted");
}

/// UpdateShardCount (uniform scaling) and waits until the stream is ACTIVE again.
pub fn reshard(stream: &str, shards: i32) {
    let c = client();
    rt().block_on(
        c.update_shard_count()
            .stream_name(stream)
            .target_shard_count(shards)
            .scaling_type(ScalingType::UniformScaling)
            .send(),
    )
    .unwrap_or_else(|e| panic!("resharding {stream} to {shards}: {e:?}"));
    wait_active(&c, stream);
}

pub fn open_shards(stream: &str) -> usize {
    let c = client();
    let out = rt()
        .block_on(c.list_shards().stream_name(stream).send())
        .unwrap();
    out.shards
        .unwrap_or_default()
        .iter()
        .filter(|s| {
            s.sequence_number_range
                .as_ref()
                .is_some_and(|r| r.ending_sequence_number.is_none())
        })
        .count()
}

/// Puts `(partition key, data)` records in order (PutRecords, failed entries sent again).
pub fn put(c: &Client, stream: &str, records: &[(String, Vec<u8>)]) {
    for chunk in records.chunks(250) {
        let mut todo: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
        for _ in 0..20 {
            let entries = todo
                .iter()
                .map(|(k, d)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(k)
                        .data(Blob::new(d.clone()))
                        .build()
                        .unwrap()
                })
                .collect();
            let out = rt()
                .block_on(
                    c.put_records()
                        .stream_name(stream)
                        .set_records(Some(entries))
                        .send(),
                )
                .unwrap_or_else(|e| panic!("PutRecords to {stream}: {e:?}"));
            todo = todo
                .into_iter()
                .zip(out.records)
                .filter(|(_, r)| r.error_code.is_some())
                .map(|(t, _)| t)
                .collect();
            if todo.is_empty() {
                break;
            }
        }
        assert!(todo.is_empty(), "PutRecords kept failing");
    }
}

/// Input record `id`: `key` one of `keys`, `seq` its number among its key's records.
pub fn record(id: i64, keys: i64) -> (String, Vec<u8>) {
    let key = format!("k{}", id % keys);
    let v = json!({ "id": id, "key": key, "seq": id / keys });
    (key, v.to_string().into_bytes())
}

/// Writes ids `ids` at about `per_sec` records a second in batches of 100; at each
/// `(id, shards)` of `reshards` (in order) it first resharding the stream to that many shards.
pub fn write_slowly(
    stream: &str,
    ids: std::ops::Range<i64>,
    keys: i64,
    per_sec: u64,
    reshards: Vec<(i64, i32)>,
) -> JoinHandle<()> {
    let stream = stream.to_string();
    let endpoint = endpoint();
    std::thread::spawn(move || {
        let c = client_at(&endpoint);
        let start = std::time::Instant::now();
        let mut reshards = reshards.into_iter().peekable();
        let mut id = ids.start;
        while id < ids.end {
            while let Some((at, shards)) = reshards.peek() {
                if *at > id {
                    break;
                }
                reshard(&stream, *shards);
                reshards.next();
            }
            let end = (id + 100).min(ids.end);
            let next_reshard = reshards.peek().map_or(end, |(at, _)| (*at).max(id + 1));
            let end = end.min(next_reshard);
            let batch: Vec<_> = (id..end).map(|i| record(i, keys)).collect();
            put(&c, &stream, &batch);
            id = end;
            let due = Duration::from_secs_f64((id - ids.start) as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for (_, shards) in reshards {
            reshard(&stream, shards);
        }
    })
}

/// A pipeline `kinesis` source → exactly-once JSON files, `source` lines added to the source.
pub fn spec(dir: &Path, file: &str, parallelism: u32, endpoint: &str, source: &str) -> PathBuf {
    write(
        dir,
        file,
        &format!(
            r#"name: kin
parallelism: {parallelism}
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: src
    type: kinesis
    region: us-east-1
    endpoint_url: {endpoint}
    credentials: {{ access_key_id: test, secret_access_key: test }}
    polling: {{ interval: 20ms, idle_interval: 100ms }}
    shard_discovery_interval: 1s
    request_timeout: 10s
    retry: {{ backoff: 50ms, max_backoff: 1s, max_attempts: 20 }}
{source}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
    rolling: {{ max_part_size: 16KiB, inactivity_interval: 300ms, roll_on_checkpoint: true }}
"#,
            state = dir.join("state").display(),
            out = dir.join("out").display(),
        ),
    )
}

/// Every visible output record, files in the order they were last written, lines in file order.
/// Parts roll at every checkpoint, so a worker's part holding a parent shard's last records is
/// written before any other worker may start the child: this order is the emit order per key.
pub fn output(dir: &Path) -> Vec<Value> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = visible_files(dir)
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for (_, f) in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

/// Per key, `seq` must rise by one from 0 in output order: no record of a key passes an
/// earlier one (a child shard's records after its parent's).
pub fn assert_per_key_order(records: &[Value]) {
    let mut next: std::collections::HashMap<String, i64> = Default::default();
    for r in records {
        let key = r["key"].as_str().unwrap().to_string();
        let seq = r["seq"].as_i64().unwrap();
        let want = next.entry(key.clone()).or_insert(0);
        assert_eq!(
            seq, *want,
            "key {key}: seq {seq} came where {want} was due (a record overtook another)"
        );
        *want += 1;
    }
}
