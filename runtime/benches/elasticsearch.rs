//! Elasticsearch/OpenSearch indexing: `weir run` (datagen → elasticsearch sink, one worker, 1 s
//! checkpoints, ids from `seq`) against a raw loop in this process that posts the same
//! documents as pre-built `_bulk` bodies (the same action lines, 1000 actions per request, 4
//! requests in flight, the same `filter_path`), measured in the same run on the same node, each
//! into a fresh 1-shard, 0-replica index. Rounds alternate raw and weir.
//!
//! Reported: docs/s of each, the ratio weir / raw, docs per CPU-second of weir (the child
//! process: generation, encoding, HTTP) and of the server (`_nodes/stats` process CPU) for
//! both paths, and the raw loop's own CPU.
//!
//! `cargo bench -p weir-runtime --bench elasticsearch`. Env: `OPENSEARCH_URL` (else
//! e2e/services/opensearch.sh starts a node), `WEIR_BENCH_ES_DOCS` (default 1,000,000),
//! `WEIR_BENCH_ES_ROUNDS` (default 2).

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, each_source_record, env_num, service_env};

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BATCH: usize = 1000;
const IN_FLIGHT: usize = 4;
const FILTER_PATH: &str = "errors,items.*.status,items.*.error";

fn pipeline(n: u64, url: &str, index: &str, state: &str) -> String {
    format!(
        r#"name: bench-es
parallelism: 1
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    splits: 1
    seed: 11
    fields:
      seq: {{ kind: sequence }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 3ms }}
      user: {{ kind: int, min: 0, max: 99999, prefix: user_ }}
      name: {{ kind: string, length: 24 }}
      city: {{ kind: choice, values: [Amsterdam, Berlin, Lisbon, Oslo, Prague, Vienna] }}
      amount: {{ kind: float, min: 0, max: 1000 }}
      status: {{ kind: choice, values: [new, paid, shipped, cancelled] }}
      paid: {{ kind: bool }}
      note: {{ kind: string, length: 110 }}
sinks:
  - name: search
    type: elasticsearch
    url: {url}
    index: {index}
    id_field: seq
    max_actions: {BATCH}
    max_in_flight: {IN_FLIGHT}
"#
    )
}

/// The documents weir's datagen produces for this spec, as the sink would send them.
async fn generate(spec_text: &str) -> Vec<(String, Vec<u8>)> {
    let mut docs = Vec::new();
    each_source_record(spec_text, |r| {
        let f = r.fields();
        docs.push((f["seq"].to_string(), serde_json::to_vec(f).unwrap()));
    })
    .await;
    docs
}

/// `_bulk` bodies of `BATCH` index actions each, built before the clock starts.
fn bodies(docs: &[(String, Vec<u8>)], index: &str) -> Vec<bytes::Bytes> {
    docs.chunks(BATCH)
        .map(|chunk| {
            let mut b = Vec::with_capacity(chunk.len() * 400);
            for (id, doc) in chunk {
                b.extend_from_slice(b"{\"index\":{\"_index\":");
                b.extend_from_slice(serde_json::to_string(index).unwrap().as_bytes());
                b.extend_from_slice(b",\"_id\":\"");
                b.extend_from_slice(id.as_bytes());
                b.extend_from_slice(b"\"}}\n");
                b.extend_from_slice(doc);
                b.push(b'\n');
            }
            bytes::Bytes::from(b)
        })
        .collect()
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut r = c.request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    resp.json().await.unwrap_or(Value::Null)
}

async fn fresh_index(c: &reqwest::Client, base: &str, index: &str) {
    call(c, reqwest::Method::DELETE, &format!("{base}/{index}"), None).await;
    let v = call(
        c,
        reqwest::Method::PUT,
        &format!("{base}/{index}"),
        Some(json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0}})),
    )
    .await;
    assert_eq!(v["acknowledged"], true, "{v}");
}

async fn count(c: &reqwest::Client, base: &str, index: &str) -> u64 {
    call(
        c,
        reqwest::Method::POST,
        &format!("{base}/{index}/_refresh"),
        None,
    )
    .await;
    call(
        c,
        reqwest::Method::GET,
        &format!("{base}/{index}/_count"),
        None,
    )
    .await["count"]
        .as_u64()
        .unwrap()
}

/// The server's own CPU time so far, in seconds.
async fn server_cpu(c: &reqwest::Client, base: &str) -> f64 {
    let v = call(
        c,
        reqwest::Method::GET,
        &format!("{base}/_nodes/stats/process"),
        None,
    )
    .await;
    let nodes = v["nodes"].as_object().unwrap();
    nodes
        .values()
        .map(|n| n["process"]["cpu"]["total_in_millis"].as_f64().unwrap())
        .sum::<f64>()
        / 1000.0
}

/// Posts every body, `IN_FLIGHT` at a time; every item must be acknowledged.
async fn raw_loop(c: &reqwest::Client, base: &str, bodies: &[bytes::Bytes]) {
    let url = format!("{base}/_bulk?filter_path={FILTER_PATH}");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (c, url, next, bodies) = (c.clone(), url.clone(), next.clone(), bodies.to_vec());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let r = c
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["errors"], false, "the raw loop needs no retry: {v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

struct Run {
    secs: f64,
    client_cpu: f64,
    server_cpu: f64,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_num("WEIR_BENCH_ES_DOCS", 1_000_000);
    let rounds = env_num("WEIR_BENCH_ES_ROUNDS", 2);
    let base = service_env("opensearch", "OPENSEARCH_URL");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let docs = rt.block_on(generate(&pipeline(n, &base, "x", "STATE")));
    assert_eq!(docs.len() as u64, n);
    let mean = docs.iter().map(|(_, d)| d.len()).sum::<usize>() as f64 / n as f64;
    let raw_bodies = bodies(&docs, "bench-raw");
    drop(docs);
    println!(
        "elasticsearch: {n} documents of {mean:.0} B mean JSON (ids), {BATCH} actions per _bulk, {IN_FLIGHT} in flight, 1-shard 0-replica index, {}",
        rt.block_on(call(&c, reqwest::Method::GET, &base, None))["version"]["distribution"]
            .as_str()
            .unwrap_or("elasticsearch")
    );

    let mut raws = Vec::new();
    let mut weirs = Vec::new();
    for round in 1..=rounds {
        rt.block_on(fresh_index(&c, &base, "bench-raw"));
        let (s0, c0) = (
            rt.block_on(server_cpu(&c, &base)),
            cpu_seconds(libc::RUSAGE_SELF),
        );
        let t = Instant::now();
        rt.block_on(raw_loop(&c, &base, &raw_bodies));
        let secs = t.elapsed().as_secs_f64();
        let raw = Run {
            secs,
            client_cpu: cpu_seconds(libc::RUSAGE_SELF) - c0,
            server_cpu: rt.block_on(server_cpu(&c, &base)) - s0,
        };
        assert_eq!(
            rt.block_on(count(&c, &base, "bench-raw")),
            n,
            "raw loop count"
        );

        rt.block_on(fresh_index(&c, &base, "bench-weir"));
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("p.yaml");
        std::fs::write(
            &spec,
            pipeline(
                n,
                &base,
                "bench-weir",
                &dir.path().join("state").display().to_string(),
            ),
        )
        .unwrap();
        let (s0, c0) = (
            rt.block_on(server_cpu(&c, &base)),
            cpu_seconds(libc::RUSAGE_CHILDREN),
        );
        let t = Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "--quiet"])
            .arg(&spec)
            .env("WEIR_LOG", "warn")
            .output()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(
            o.status.success(),
            "weir failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let weir = Run {
            secs,
            client_cpu: cpu_seconds(libc::RUSAGE_CHILDREN) - c0,
            server_cpu: rt.block_on(server_cpu(&c, &base)) - s0,
        };
        assert_eq!(rt.block_on(count(&c, &base, "bench-weir")), n, "weir count");

        let rate = |r: &Run| n as f64 / r.secs;
        println!("  round {round}:");
        println!(
            "    raw _bulk loop:  {:>8.0} docs/s ({:.1} s); client {:.1} CPU-s, server {:.1} CPU-s ({:.0} docs per server CPU-s)",
            rate(&raw), raw.secs, raw.client_cpu, raw.server_cpu, n as f64 / raw.server_cpu
        );
        println!(
            "    weir run:        {:>8.0} docs/s ({:.1} s, process wall time, 1 s checkpoints); weir {:.1} CPU-s ({:.0} docs per weir CPU-s), server {:.1} CPU-s ({:.0} docs per server CPU-s)",
            rate(&weir), weir.secs, weir.client_cpu, n as f64 / weir.client_cpu, weir.server_cpu, n as f64 / weir.server_cpu
        );
        println!("    ratio weir / raw: {:.3}", raw.secs / weir.secs);
        raws.push(raw);
        weirs.push(weir);
    }
    let total = |v: &[Run]| v.iter().map(|r| r.secs).sum::<f64>();
    println!(
        "  over {rounds} rounds: raw {:.0} docs/s, weir {:.0} docs/s, ratio {:.3}",
        (n * rounds) as f64 / total(&raws),
        (n * rounds) as f64 / total(&weirs),
        total(&raws) / total(&weirs)
    );
    rt.block_on(async {
        call(
            &c,
            reqwest::Method::DELETE,
            &format!("{base}/bench-raw"),
            None,
        )
        .await;
        call(
            &c,
            reqwest::Method::DELETE,
            &format!("{base}/bench-weir"),
            None,
        )
        .await;
    });
}
