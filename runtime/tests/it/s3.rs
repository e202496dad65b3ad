//! The filesystem sink and the checkpoint store on S3 (moto server): kill -9 at 2PC steps, then
//! count every object: each record exactly once, and nothing visible that was not committed.

use std::collections::BTreeMap;
use std::path::Path;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::harness::*;

const N: i64 = 20_000;

/// The endpoint of a running moto server: `S3_ENDPOINT`, or one started by e2e/services/moto.sh.
fn endpoint() -> String {
    service_env("moto", "S3_ENDPOINT")
}

fn make_bucket(endpoint: &str, bucket: &str) {
    let o = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "creating bucket {bucket}");
}

fn spec(dir: &Path, endpoint: &str, bucket: &str) -> std::path::PathBuf {
    spec_at(dir, endpoint, bucket, 20_000)
}

/// `rate` records/s: 20,000 ends in about a second, 2,000 runs long enough for an outage.
fn spec_at(dir: &Path, endpoint: &str, bucket: &str, rate: u32) -> std::path::PathBuf {
    let opts = format!("{{ aws_endpoint: \"{endpoint}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing }}");
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: s3eo
parallelism: 2
checkpoint: {{ interval: 150ms, storage: "s3://{bucket}/state", storage_options: {opts} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: {rate}
    fields:
      id: {{ kind: sequence }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 1s }}
    event_time: ts
sinks:
  - name: out
    type: filesystem
    path: "s3://{bucket}/out"
    storage_options: {opts}
    format: json
    bucket: {{ by: event_time, pattern: "day=%d" }}
"#
        ),
    )
}

async fn count_ids(endpoint: &str, bucket: &str) -> BTreeMap<i64, usize> {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let prefix = object_store::path::Path::from("out");
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut counts = BTreeMap::new();
    for o in objects {
        let name = o.location.filename().unwrap_or_default().to_string();
        assert!(
            !name.starts_with('.'),
            "hidden object visible on S3: {}",
            o.location
        );
        let body = store.get(&o.location).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.ends_with('\n'),
            "{} ends in a partial line",
            o.location
        );
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *counts.entry(v["id"].as_i64().unwrap()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn exactly_once_on_s3_across_kills_at_each_step() {
    let endpoint = endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (i, (point, hit)) in [
        ("after_precommit", 3),
        ("after_manifest", 3),
        ("after_commit", 4),
    ]
    .into_iter()
    .enumerate()
    {
        let bucket = format!("weir-eo-{}-{i}", std::process::id());
        make_bucket(&endpoint, &bucket);
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), &endpoint, &bucket);
        run_until_killed(&spec, Kill::At(point, hit));
        restart_to_end(&spec, &[]);
        assert_exactly_once(&rt.block_on(count_ids(&endpoint, &bucket)), N);
    }
}

/// S3 goes away for 20 s mid-run (a proxy in front of moto refuses and cuts every connection;
/// moto keeps its objects only in memory, so stopping it would be a loss, not an outage), under
/// both the checkpoint storage and the file sink. The job rides it out (the client's retries,
/// failed checkpoints, in-process restarts) and every record is on S3 exactly once.
#[test]
fn an_s3_outage_under_storage_and_sink_keeps_exactly_once() {
    let endpoint = endpoint();
    let host = endpoint.trim_start_matches("http://");
    let proxy = Proxy::to(host);
    let bucket = format!("weir-outage-{}", std::process::id());
    make_bucket(&endpoint, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(
        dir.path(),
        &format!("http://{}", proxy.host_port()),
        &bucket,
        2_000,
    );
    let job = Running::start(&spec, &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    proxy.cut();
    std::thread::sleep(std::time::Duration::from_secs(20));
    proxy.restore();
    let o = job.wait();
    assert!(
        o.status.success(),
        "the job did not survive: {}",
        stderr(&o)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_exactly_once(&rt.block_on(count_ids(&endpoint, &bucket)), N);
}
