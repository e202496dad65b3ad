//! Talking to the test OpenSearch from the tests (an independent reader: plain REST calls, not
//! the sink's code), the pipelines the tests run, and private nodes for tests that stop a node
//! or need one configured to overload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// The shared test node (e2e/services/opensearch.sh).
pub fn url() -> String {
    service_env("opensearch", "OPENSEARCH_URL")
}

/// A name no other test (or earlier run) uses; lowercase, as index names must be.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One REST call; returns status and JSON body (Null when the body is not JSON).
pub fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let text = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&text).unwrap_or(Value::Null))
    })
}

fn ok(method: &str, url: &str, body: Option<Value>) -> Value {
    let (status, v) = call(method, url, body);
    assert!((200..300).contains(&status), "{method} {url}: {status} {v}");
    v
}

/// Creates an index: one shard unless `shards` says more, no replica, and translog syncs in the
/// background (the tests check what the sink sends, not the node's fsyncs; this keeps a shared
/// 2-core machine fast enough).
pub fn create_index(base: &str, index: &str, shards: u32, mappings: Value) {
    ok(
        "PUT",
        &format!("{base}/{index}"),
        Some(json!({
            "settings": {
                "number_of_shards": shards,
                "number_of_replicas": 0,
                "translog.durability": "async",
            },
            "mappings": mappings,
        })),
    );
}

pub fn refresh(base: &str, index: &str) {
    ok("POST", &format!("{base}/{index}/_refresh"), None);
}

/// Every document of `index` as (`_id`, `_source`), read with a scroll.
pub fn read_all(base: &str, index: &str) -> Vec<(String, Value)> {
    refresh(base, index);
    let mut out = Vec::new();
    let mut page = ok(
        "POST",
        &format!("{base}/{index}/_search?scroll=1m&size=5000"),
        Some(json!({"query": {"match_all": {}}, "sort": ["_doc"]})),
    );
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        for h in hits {
            out.push((h["_id"].as_str().unwrap().to_string(), h["_source"].clone()));
        }
        let id = page["_scroll_id"].as_str().unwrap().to_string();
        page = ok(
            "POST",
            &format!("{base}/_search/scroll"),
            Some(json!({"scroll": "1m", "scroll_id": id})),
        );
    }
    if let Some(id) = page["_scroll_id"].as_str() {
        let _ = call(
            "DELETE",
            &format!("{base}/_search/scroll"),
            Some(json!({"scroll_id": id})),
        );
    }
    out
}

/// How often each `seq` occurs in `index`.
pub fn seq_counts(base: &str, index: &str) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for (_, doc) in read_all(base, index) {
        *counts
            .entry(doc["seq"].as_i64().expect("seq is an integer"))
            .or_insert(0) += 1;
    }
    counts
}

pub const START_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

/// The pipeline every delivery test runs: `n` records of datagen (4 splits, so the two
/// workers each own two), a map that derives a field from `seq`, into `index`.
pub fn pipeline(
    dir: &Path,
    name: &str,
    n: i64,
    rate: u32,
    es_url: &str,
    index: &str,
    sink_extra: &str,
) -> PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: {name}
parallelism: 2
checkpoint: {{ interval: 200ms, timeout: 2m, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    rate: {rate}
    splits: 4
    batch_size: 250
    fields:
      seq: {{ kind: sequence }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 1ms, format: millis }}
transforms:
  - name: derive
    type: map
    fields:
      word: "'w' + string(seq * 7)"
sinks:
  - name: search
    type: elasticsearch
    url: {es_url}
    index: {index}
{sink_extra}"#,
            state = dir.join("state").display(),
        ),
    )
}

/// The mapping of the pipeline's documents.
pub fn mapping() -> Value {
    json!({"properties": {"seq": {"type": "long"}, "ts": {"type": "long"}, "word": {"type": "keyword"}}})
}

/// Asserts `index` holds exactly documents 0..n, each with its id and its content.
pub fn assert_exact(base: &str, index: &str, n: i64) {
    let docs = read_all(base, index);
    let mut counts = BTreeMap::new();
    let mut wrong = Vec::new();
    for (id, doc) in &docs {
        let seq = doc["seq"].as_i64().expect("seq");
        *counts.entry(seq).or_insert(0) += 1;
        let want = json!({"seq": seq, "ts": START_MS + seq, "word": format!("w{}", seq * 7)});
        if *id != seq.to_string() || *doc != want {
            wrong.push((id.clone(), doc.clone()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} documents differ from their record, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert_exactly_once(&counts, n);
}

/// A node of one test's own (stopped, restarted or configured), removed on drop.
pub struct PrivateNode {
    service: PrivateService,
    pub url: String,
}

impl PrivateNode {
    /// Starts a node with extra node `settings` (`k=v,k=v`).
    pub fn up(name: &str, settings: &str) -> PrivateNode {
        PrivateNode::up_with(name, settings, &[])
    }

    /// Starts a node, with `env` for opensearch.sh (e.g. another runner version and JDK).
    pub fn up_with(name: &str, settings: &str, env: &[(&str, &str)]) -> PrivateNode {
        let mut vars = vec![("OPENSEARCH_SETTINGS", settings)];
        vars.extend_from_slice(env);
        let service = PrivateService::up("opensearch", "OPENSEARCH_URL", name, &vars);
        PrivateNode {
            url: service.value.clone(),
            service,
        }
    }

    pub fn stop(&self) {
        self.service.must("stop");
    }

    pub fn start(&self) {
        self.service.must("start");
    }
}

/// Waits (bounded) until `f` holds.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
