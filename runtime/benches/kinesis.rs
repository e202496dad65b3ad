//! Kinesis and Firehose connectors against raw aws-sdk loops measured in the same run, on the
//! same servers, with ~1 KiB JSON records:
//!   1. source: weir `kinesis` → blackhole (one worker, polling, 1 s checkpoints) against a raw
//!      GetRecords loop (one task per shard, as weir reads) over the same four-shard stream,
//!      until every record is read; and the same job with checkpoints every 100 ms and with
//!      checkpointing off, for the checkpoints' overhead;
//!   2. sink: weir datagen → `kinesis` (batches of 500, 8 requests in flight) against a raw
//!      PutRecords loop with the same batch size and concurrency that builds the same records;
//!   3. firehose: the same against moto's PutRecordBatch.
//!
//! `cargo bench -p weir-runtime --bench kinesis`. Env: `KINESIS_ENDPOINT` (else
//! e2e/services/kinesis.sh starts kinesis-mock), `S3_ENDPOINT` (else e2e/services/moto.sh),
//! `WEIR_BENCH_KINESIS_RECORDS` (default 100,000), `WEIR_BENCH_FIREHOSE_RECORDS` (default
//! 20,000), `WEIR_BENCH_KINESIS_ROUNDS` (default 2), `WEIR_BENCH_KINESIS_PARTS` (default
//! `source,sink,firehose`: which of the three to run).

#[path = "common/mod.rs"]
mod common;

use common::{env_num, service_env};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use serde_json::json;
use weir_runtime::metrics::Metrics;

const SHARDS: i32 = 4;
const BATCH: usize = 500;
const CONCURRENCY: usize = 8;

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{prefix}-{}", t.as_millis())
}

fn kinesis(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .build(),
    )
}

fn firehose(endpoint: &str) -> aws_sdk_firehose::Client {
    aws_sdk_firehose::Client::from_conf(
        aws_sdk_firehose::Config::builder()
            .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
            .region(aws_sdk_firehose::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_firehose::config::Credentials::new(
                "testing", "testing", None, None, "bench",
            ))
            .build(),
    )
}

/// A ~1 KiB JSON object, built as datagen builds the sink benchmark's records.
fn record(i: u64) -> Vec<u8> {
    let note: String = (0..900)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[fastrand::usize(..36)]))
        .collect();
    serde_json::to_vec(
        &json!({ "id": i, "user": format!("u{}", fastrand::u32(0..1000)), "note": note }),
    )
    .unwrap()
}

async fn create_stream(c: &aws_sdk_kinesis::Client, name: &str) {
    c.create_stream()
        .stream_name(name)
        .shard_count(SHARDS)
        .send()
        .await
        .unwrap();
    loop {
        let d = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary.unwrap().stream_status == StreamStatus::Active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PutRecords of `n` new records in batches of `BATCH`, `CONCURRENCY` in flight, failed
/// entries sent again. Returns records/s.
async fn raw_put(c: &aws_sdk_kinesis::Client, stream: &str, n: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < CONCURRENCY {
            let end = (next + BATCH as u64).min(n);
            let (c, stream) = (c.clone(), stream.to_string());
            tasks.spawn(async move {
                let mut todo: Vec<PutRecordsRequestEntry> = (next..end)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(record(i)))
                            .partition_key(format!("{:032x}", fastrand::u128(..)))
                            .build()
                            .unwrap()
                    })
                    .collect();
                while !todo.is_empty() {
                    let out = c
                        .put_records()
                        .stream_name(&stream)
                        .set_records(Some(todo.clone()))
                        .send()
                        .await
                        .unwrap();
                    todo = todo
                        .into_iter()
                        .zip(out.records)
                        .filter(|(_, r)| r.error_code.is_some())
                        .map(|(e, _)| e)
                        .collect();
                }
            });
            next = end;
        }
        if let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// GetRecords from the trim horizon, one task per shard, until `n` records are read.
async fn raw_get(c: &aws_sdk_kinesis::Client, stream: &str, n: u64) -> f64 {
    let start = Instant::now();
    let shards = c
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap_or_default();
    let seen = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for s in shards {
        let (c, stream, seen) = (c.clone(), stream.to_string(), seen.clone());
        tasks.spawn(async move {
            let mut it = c
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&s.shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            while let Some(i) = it {
                if seen.load(Ordering::Relaxed) >= n {
                    return;
                }
                let out = c
                    .get_records()
                    .shard_iterator(i)
                    .limit(10_000)
                    .send()
                    .await
                    .unwrap();
                for r in &out.records {
                    std::hint::black_box(r.data.as_ref());
                }
                let got = out.records.len() as u64;
                seen.fetch_add(got, Ordering::Relaxed);
                it = out.next_shard_iterator;
                if got == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    assert!(seen.load(Ordering::Relaxed) >= n);
    n as f64 / start.elapsed().as_secs_f64()
}

fn node_total(metrics: &Metrics, family: &str, node: &str) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(&format!("node=\"{node}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Runs a pipeline in this process; an unbounded one is stopped once its source has emitted
/// `stop_at` records. Returns records/s from start until then (or until the job ended).
async fn weir(yaml: &str, n: u64, stop_at: Option<(&str, u64)>) -> f64 {
    let spec = weir_crds::PipelineSpec::from_yaml(yaml).unwrap();
    let metrics = Metrics::new();
    let start = Instant::now();
    let job = common::start_in_process(spec, &metrics).await;
    let secs = match stop_at {
        Some((node, count)) => {
            while node_total(&metrics, "weir_node_records_out_total", node) < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let secs = start.elapsed().as_secs_f64();
            job.control.stop().await;
            job.wait().await.unwrap();
            secs
        }
        None => {
            job.wait().await.unwrap();
            start.elapsed().as_secs_f64()
        }
    };
    n as f64 / secs
}

fn source_yaml(dir: &std::path::Path, endpoint: &str, stream: &str, checkpoint: &str) -> String {
    format!(
        r#"name: bench-kinesis-source-{ts}
parallelism: 1
checkpoint: {{ {checkpoint}, storage: {state} }}
sources:
  - name: src
    type: kinesis
    streams: [{stream}]
    region: us-east-1
    endpoint_url: {endpoint}
    credentials: {{ access_key_id: bench, secret_access_key: bench }}
    polling: {{ interval: 0s, idle_interval: 10ms }}
sinks:
  - {{ name: out, type: blackhole }}
"#,
        ts = unique("r"),
        state = dir.join("state").display(),
    )
}

fn datagen_yaml(dir: &std::path::Path, n: u64, sink: &str) -> String {
    format!(
        r#"name: bench-sink-{ts}
parallelism: 1
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    splits: 1
    batch_size: 500
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 999, prefix: u }}
      note: {{ kind: string, length: 900 }}
sinks:
{sink}
"#,
        ts = unique("r"),
        state = dir.join("state").display(),
    )
}

fn pct(a: f64, b: f64) -> f64 {
    100.0 * a / b
}

async fn bench_source(endpoint: &str, n: u64, rounds: u64, dir: &std::path::Path) {
    let c = kinesis(endpoint);
    let stream = unique("bench-src");
    create_stream(&c, &stream).await;
    eprintln!("bench kinesis: filling {stream} with {n} records");
    raw_put(&c, &stream, n).await;
    let (mut raw, mut w1s, mut w100, mut woff) = (0.0, 0.0, 0.0, 0.0);
    for round in 1..=rounds {
        let r = raw_get(&c, &stream, n).await;
        let a = weir(
            &source_yaml(dir, endpoint, &stream, "interval: 1s"),
            n,
            Some(("src", n)),
        )
        .await;
        let b = weir(
            &source_yaml(dir, endpoint, &stream, "interval: 100ms"),
            n,
            Some(("src", n)),
        )
        .await;
        let o = weir(
            &source_yaml(dir, endpoint, &stream, "enabled: false"),
            n,
            Some(("src", n)),
        )
        .await;
        println!(
            "  round {round}: raw GetRecords {r:>8.0} rec/s | weir 1 s checkpoints {a:>8.0} ({:.1} %) | 100 ms {b:>8.0} | off {o:>8.0}",
            pct(a, r)
        );
        raw += r;
        w1s += a;
        w100 += b;
        woff += o;
    }
    let k = rounds as f64;
    println!(
        "  source: weir {:.0} rec/s = {:.1} % of raw GetRecords ({:.0} rec/s); checkpoint overhead vs off: {:.1} % at 1 s, {:.1} % at 100 ms",
        w1s / k,
        pct(w1s, raw),
        raw / k,
        100.0 - pct(w1s, woff),
        100.0 - pct(w100, woff)
    );
    let _ = c.delete_stream().stream_name(&stream).send().await;
}

async fn bench_sink(endpoint: &str, n: u64, rounds: u64, dir: &std::path::Path) {
    let c = kinesis(endpoint);
    let (mut raw, mut w) = (0.0, 0.0);
    for round in 1..=rounds {
        let (rs, ws) = (unique("bench-raw-put"), unique("bench-weir-put"));
        create_stream(&c, &rs).await;
        create_stream(&c, &ws).await;
        let r = raw_put(&c, &rs, n).await;
        let sink = format!(
            r#"  - name: out
    type: kinesis
    stream: {ws}
    region: us-east-1
    endpoint_url: {endpoint}
    credentials: {{ access_key_id: bench, secret_access_key: bench }}
    batch: {{ max_records: {BATCH} }}
    max_concurrency: {CONCURRENCY}"#
        );
        let x = weir(&datagen_yaml(dir, n, &sink), n, None).await;
        println!(
            "  round {round}: raw PutRecords {r:>8.0} rec/s | weir datagen → kinesis {x:>8.0} rec/s ({:.1} %)",
            pct(x, r)
        );
        raw += r;
        w += x;
        let _ = c.delete_stream().stream_name(&rs).send().await;
        let _ = c.delete_stream().stream_name(&ws).send().await;
    }
    println!(
        "  kinesis sink: weir {:.0} rec/s = {:.1} % of raw PutRecords ({:.0} rec/s), {BATCH} per request, {CONCURRENCY} in flight",
        w / rounds as f64,
        pct(w, raw),
        raw / rounds as f64
    );
}

async fn raw_put_batch(c: &aws_sdk_firehose::Client, delivery: &str, n: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < CONCURRENCY {
            let end = (next + BATCH as u64).min(n);
            let (c, d) = (c.clone(), delivery.to_string());
            tasks.spawn(async move {
                let records: Vec<_> = (next..end)
                    .map(|i| {
                        let mut data = record(i);
                        data.push(b'\n');
                        aws_sdk_firehose::types::Record::builder()
                            .data(aws_sdk_firehose::primitives::Blob::new(data))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let out = c
                    .put_record_batch()
                    .delivery_stream_name(d)
                    .set_records(Some(records))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.failed_put_count, 0);
            });
            next = end;
        }
        if let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn bench_firehose(s3: &str, n: u64, rounds: u64, dir: &std::path::Path) {
    let fh = firehose(s3);
    let bucket = unique("bench-fh").to_lowercase();
    let o = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{s3}/{bucket}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "creating the bucket");
    let delivery = unique("bench-fh");
    fh.create_delivery_stream()
        .delivery_stream_name(&delivery)
        .extended_s3_destination_configuration(
            aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .compression_format(aws_sdk_firehose::types::CompressionFormat::Uncompressed)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (mut raw, mut w) = (0.0, 0.0);
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // The two take turns going first, so neither is always measured on a server that has
        // just taken the other's load (moto keeps every delivered object in memory).
        let raw_first = round % 2 == 1;
        let mut r = 0.0;
        if raw_first {
            r = raw_put_batch(&fh, &delivery, n).await;
        }
        let sink = format!(
            r#"  - name: out
    type: firehose
    delivery_stream: {delivery}
    region: us-east-1
    endpoint_url: {s3}
    credentials: {{ access_key_id: testing, secret_access_key: testing }}
    batch: {{ max_records: {BATCH} }}
    max_concurrency: {CONCURRENCY}"#
        );
        let x = weir(&datagen_yaml(dir, n, &sink), n, None).await;
        if !raw_first {
            r = raw_put_batch(&fh, &delivery, n).await;
        }
        println!(
            "  round {round}: raw PutRecordBatch {r:>8.0} rec/s | weir datagen → firehose {x:>8.0} rec/s ({:.1} %){}",
            pct(x, r),
            if raw_first { "" } else { ", weir first" }
        );
        raw += r;
        w += x;
        ratios.push(pct(x, r));
    }
    // A round of 5,000 records lasts a fifth of a second: single rounds scatter by ±20 % on a
    // busy machine, so the median of the rounds' ratios is given beside the ratio of the means.
    ratios.sort_by(f64::total_cmp);
    println!(
        "  firehose sink: weir {:.0} rec/s = {:.1} % of raw PutRecordBatch ({:.0} rec/s); median of the rounds' ratios {:.1} %",
        w / rounds as f64,
        pct(w, raw),
        raw / rounds as f64,
        ratios[ratios.len() / 2]
    );
}

fn main() {
    let n = env_num("WEIR_BENCH_KINESIS_RECORDS", 100_000);
    let n_fh = env_num("WEIR_BENCH_FIREHOSE_RECORDS", 20_000);
    let rounds = env_num("WEIR_BENCH_KINESIS_ROUNDS", 2).max(1);
    let endpoint = service_env("kinesis", "KINESIS_ENDPOINT");
    let s3 = service_env("moto", "S3_ENDPOINT");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let parts =
        std::env::var("WEIR_BENCH_KINESIS_PARTS").unwrap_or_else(|_| "source,sink,firehose".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    if part("source") || part("sink") {
        println!("kinesis: {n} records of ~1 KiB JSON, {SHARDS} shards, one worker, {rounds} rounds (kinesis-mock)");
    }
    if part("source") {
        rt.block_on(bench_source(&endpoint, n, rounds, dir.path()));
    }
    if part("sink") {
        rt.block_on(bench_sink(&endpoint, n, rounds, dir.path()));
    }
    if part("firehose") {
        println!("firehose: {n_fh} records, moto");
        rt.block_on(bench_firehose(&s3, n_fh, rounds, dir.path()));
    }
}
