//! The `kinesis` and `firehose` sinks through a proxy that fails a share of the entries of every
//! request, as a busy service does: only the failed entries are sent again, every record
//! arrives once, retries are counted; per-key ordering holds through retries; records too large
//! for the service follow `on_error` (dead-letter files, or a failure naming the record).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::Value;

use super::super::harness::*;
use super::proxy::Proxy;
use super::server::*;

/// Every record of every shard (closed ones too), by shard, in sequence order.
fn read_stream(stream: &str) -> BTreeMap<String, Vec<Value>> {
    let c = client();
    let shards = rt()
        .block_on(c.list_shards().stream_name(stream).send())
        .unwrap()
        .shards
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for s in shards {
        let mut it = rt()
            .block_on(
                c.get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(&s.shard_id)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send(),
            )
            .unwrap()
            .shard_iterator;
        let mut records = Vec::new();
        while let Some(i) = it {
            let r = rt()
                .block_on(c.get_records().shard_iterator(i).limit(10_000).send())
                .unwrap();
            let empty = r.records.is_empty();
            for rec in r.records {
                records.push(serde_json::from_slice(rec.data.as_ref()).unwrap());
            }
            it = r.next_shard_iterator;
            if empty && r.millis_behind_latest.unwrap_or(0) == 0 {
                break;
            }
        }
        out.insert(s.shard_id, records);
    }
    out
}

fn ids(records: impl IntoIterator<Item = Value>) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r["id"].as_i64().unwrap()).or_insert(0) += 1;
    }
    counts
}

fn metric(job: &Running, name: &str) -> f64 {
    let o = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", &format!("{}/metrics", job.admin)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// datagen (`n` records at `rate`/s, `id` and `key`) → `sink`.
fn datagen_spec(dir: &Path, n: u64, rate: u64, sink: &str) -> PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            r#"name: sink
parallelism: 1
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    rate: {rate}
    splits: 1
    batch_size: 100
    fields:
      id: {{ kind: sequence }}
      key: {{ kind: int, min: 0, max: 9, prefix: k }}
      pad: {{ kind: string, length: 200 }}
sinks:
{sink}
"#,
            state = dir.join("state").display(),
        ),
    )
}

/// Runs a bounded job to its end, returning the largest value `retried` reached meanwhile.
fn run_watching(spec: &Path, retried: &str) -> f64 {
    let mut job = Running::start(spec, &[]);
    let mut seen = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while job.child.try_wait().unwrap().is_none() {
        seen = seen.max(metric(&job, retried));
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = job.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    seen
}

#[test]
fn kinesis_sink_retries_only_refused_entries_and_delivers_each_once() {
    let proxy = Proxy::start(&endpoint());
    proxy.faults.fail_entries.store(300, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("sink");
    create_stream(&stream, 2);
    let n = 5_000;
    let job = datagen_spec(
        dir.path(),
        n,
        2_500,
        &format!(
            r#"  - name: out
    type: kinesis
    stream: {stream}
    region: us-east-1
    endpoint_url: {url}
    credentials: {{ access_key_id: test, secret_access_key: test }}
    partition_key_field: key
    max_concurrency: 4
    retry: {{ backoff: 20ms, max_backoff: 200ms, max_attempts: 30 }}"#,
            url = proxy.url
        ),
    );
    let retried = run_watching(&job, "weir_sink_retried_entries_total");
    let failed = proxy.faults.failed_entries.load(Ordering::SeqCst);
    assert!(failed > 500, "the proxy failed {failed} entries");
    assert!(retried > 0.0, "retries were counted ({retried})");
    let counts = ids(read_stream(&stream).into_values().flatten());
    assert_exactly_once(&counts, n as i64);
}

#[test]
fn per_key_ordering_holds_through_partial_failures() {
    let proxy = Proxy::start(&endpoint());
    proxy.faults.fail_entries.store(300, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("ordered");
    create_stream(&stream, 2);
    let n = 2_000;
    let job = datagen_spec(
        dir.path(),
        n,
        2_000,
        &format!(
            r#"  - name: out
    type: kinesis
    stream: {stream}
    region: us-east-1
    endpoint_url: {url}
    credentials: {{ access_key_id: test, secret_access_key: test }}
    partition_key_field: key
    ordering: per_key
    retry: {{ backoff: 10ms, max_backoff: 100ms, max_attempts: 50 }}"#,
            url = proxy.url
        ),
    );
    run_watching(&job, "weir_sink_retried_entries_total");
    let shards = read_stream(&stream);
    assert_exactly_once(&ids(shards.values().flatten().cloned()), n as i64);
    // datagen's ids rise in the order written, so per key they must rise on the stream.
    for records in shards.values() {
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for r in records {
            let key = r["key"].as_str().unwrap().to_string();
            let id = r["id"].as_i64().unwrap();
            if let Some(prev) = last.insert(key.clone(), id) {
                assert!(prev < id, "key {key}: id {id} landed after {prev}");
            }
        }
    }
}

fn big_input(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for id in 0..300 {
        // Every 100th record is over Kinesis's 1 MiB.
        let pad = if id % 100 == 7 { 1_100_000 } else { 10 };
        text.push_str(&format!(
            "{{\"id\":{id},\"key\":\"k{}\",\"pad\":\"{}\"}}\n",
            id % 5,
            "x".repeat(pad)
        ));
    }
    write(dir, "in.jsonl", &text)
}

fn file_to_kinesis(dir: &Path, stream: &str, on_error: &str) -> PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            r#"name: big
parallelism: 1
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - {{ name: in, type: file, path: {input}, format: json }}
sinks:
  - name: out
    type: kinesis
    stream: {stream}
    region: us-east-1
    endpoint_url: {url}
    credentials: {{ access_key_id: test, secret_access_key: test }}
    on_error: {on_error}
"#,
            state = dir.join("state").display(),
            input = big_input(dir).display(),
            url = endpoint(),
        ),
    )
}

#[test]
fn records_too_large_go_to_dead_letter_files_or_fail_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("big");
    create_stream(&stream, 1);
    let dlq = dir.path().join("dlq");
    let job = file_to_kinesis(
        dir.path(),
        &stream,
        &format!("{{ dead_letter: {{ path: {} }} }}", dlq.display()),
    );
    restart_to_end(&job, &[]);
    let on_stream = ids(read_stream(&stream).into_values().flatten());
    let mut dead = Vec::new();
    for f in visible_files(&dlq) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("over the limit of 1048576 bytes"),
                "{v}"
            );
            let record: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
            dead.push(record["id"].as_i64().unwrap());
        }
    }
    dead.sort();
    assert_eq!(dead, [7, 107, 207]);
    assert_eq!(on_stream.len(), 297);
    assert!(on_stream.values().all(|c| *c == 1));

    let dir = tempfile::tempdir().unwrap();
    let o = run(&file_to_kinesis(dir.path(), &stream, "fail"), &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("sinks") || e.contains("out: record"),
        "names the node: {e}"
    );
    assert!(e.contains("{\"id\":7,"), "names the record: {e}");
    assert!(e.contains("over the limit of 1048576 bytes"), "{e}");
}

/// Creates `bucket` and a DirectPut delivery stream into it on moto.
fn firehose_into_s3(s3: &str, bucket: &str, delivery: &str) {
    let o = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{s3}/{bucket}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "creating bucket {bucket}");
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
        .region(aws_sdk_firehose::config::Region::new("us-east-1"))
        .endpoint_url(s3)
        .credentials_provider(aws_sdk_firehose::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    let fh = aws_sdk_firehose::Client::from_conf(conf);
    let dest = aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
        .role_arn("arn:aws:iam::123456789012:role/firehose")
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .prefix("in/")
        // moto leaves it out of DescribeDeliveryStream otherwise, which the SDK refuses.
        .compression_format(aws_sdk_firehose::types::CompressionFormat::Uncompressed)
        .build()
        .unwrap();
    rt().block_on(
        fh.create_delivery_stream()
            .delivery_stream_name(delivery)
            .extended_s3_destination_configuration(dest)
            .send(),
    )
    .unwrap_or_else(|e| panic!("creating delivery stream {delivery}: {e:?}"));
}

/// Every line of every object under the bucket.
fn read_bucket(s3: &str, bucket: &str) -> Vec<Value> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    rt().block_on(async {
        let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for o in objects {
            let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            for line in std::str::from_utf8(&bytes).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    })
}

#[test]
fn firehose_sink_delivers_each_record_once_into_s3_despite_refused_entries() {
    let s3 = service_env("moto", "S3_ENDPOINT");
    let proxy = Proxy::start(&s3);
    proxy.faults.fail_entries.store(250, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique("fh").to_lowercase();
    let delivery = unique("fh");
    firehose_into_s3(&s3, &bucket, &delivery);
    let n = 3_000;
    let job = datagen_spec(
        dir.path(),
        n,
        1_500,
        &format!(
            r#"  - name: archive
    type: firehose
    delivery_stream: {delivery}
    region: us-east-1
    endpoint_url: {url}
    credentials: {{ access_key_id: testing, secret_access_key: testing }}
    retry: {{ backoff: 20ms, max_backoff: 200ms, max_attempts: 30 }}"#,
            url = proxy.url
        ),
    );
    let retried = run_watching(&job, "weir_sink_retried_entries_total");
    assert!(proxy.faults.failed_entries.load(Ordering::SeqCst) > 300);
    assert!(retried > 0.0, "retries were counted");
    assert_exactly_once(&ids(read_bucket(&s3, &bucket)), n as i64);
}
