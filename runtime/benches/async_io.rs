//! `async_lookup` throughput against a local HTTP server with 10 ms latency, capacity 100, next
//! to two limits measured in the same run: the theoretical capacity / latency, and a raw client
//! keeping exactly `capacity` requests in flight with no engine around it. Then 1 % of requests
//! at 500 ms, ordered against unordered.
//!
//! Last, `preloaded_lookup` (the table in memory on every worker) on 100,000 users, against the
//! engine's own throughput on the same records without the join, in interleaved rounds:
//! (a) datagen → blackhole, the engine moving records and doing nothing else, and (b) datagen →
//! `map` → blackhole, a transform that does the record work of the join without the lookup (a
//! node of its own, the record's fields taken and two fields added). The preloaded path should
//! reach (b), where `async_lookup` is bound by its server.
//!
//! `cargo bench -p weir-runtime --bench async_io` (env `ROWS` to change the record count of the
//! lookups, `PRELOADED_ROWS` that of the preloaded comparison, default 2,000,000, and
//! `PRELOADED_ROUNDS` its rounds, default 5; `ROWS=2000`
//! makes the lookup part take a second or two when only the preloaded figures are wanted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use weir_runtime::metrics::Metrics;

mod common;

// The allocator of the `weir` binary (runtime/src/main.rs): the engine runs in this process, and
// under glibc's malloc the records allocated on one thread and freed on another measured the
// allocator's lock contention more than the engine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CAPACITY: usize = 100;
const LATENCY_MS: u64 = 10;
const SLOW_MS: u64 = 500;

#[derive(Clone, Copy)]
struct Profile {
    /// Every `slow_every`-th id answers after SLOW_MS (0: none).
    slow_every: i64,
}

async fn user(State(p): State<Profile>, Path(id): Path<i64>) -> Json<Value> {
    let ms = if p.slow_every > 0 && id % p.slow_every == 0 {
        SLOW_MS
    } else {
        LATENCY_MS
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "name": format!("user-{id}"), "tier": id % 3 }))
}

/// Starts the server on its own thread and runtime; returns its base URL.
fn server(profile: Profile) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/user/{id}", get(user))
        .with_state(profile);
    std::thread::spawn(move || {
        // Two workers, so that answering never waits behind a busy thread: the limit measured
        // is the 10 ms, not the server.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            })
    });
    url
}

/// Raw limit: `CAPACITY` client tasks, each issuing its share of ids back to back.
async fn raw(url: &str, rows: i64) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CAPACITY)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CAPACITY {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= rows {
                    return;
                }
                let v: Value = client
                    .get(format!("{url}/user/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(v["name"].is_string());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// datagen → async_lookup → blackhole on the real engine, in this process.
async fn weir(url: &str, mode: &str, rows: i64, dir: &std::path::Path) -> f64 {
    let transforms = format!(
        r#"transforms:
  - name: enrich
    type: async_lookup
    mode: {mode}
    key: id
    client: {{ type: http, url: "{url}/user/{{id}}" }}
    fields: {{ name: name, tier: tier }}
    capacity: {CAPACITY}
    timeout: 5s
"#
    );
    run_job(&format!("bench-{mode}"), "", &transforms, rows, dir).await
}

/// datagen (with a `user` field) → `transforms` → blackhole; records/s, every record counted out
/// of the last node.
async fn run_job(
    name: &str,
    fields: &str,
    transforms: &str,
    rows: i64,
    dir: &std::path::Path,
) -> f64 {
    let yaml = format!(
        r#"name: {name}
parallelism: 1
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {rows}
    splits: 1
    fields:
      id: {{ kind: sequence }}
{fields}{transforms}sinks:
  - {{ name: out, type: blackhole }}
"#,
        state = dir
            .join(format!("state-{name}-{}", rand_suffix()))
            .display(),
    );
    let spec = weir_crds::PipelineSpec::from_yaml(&yaml).unwrap();
    let metrics = Metrics::new();
    let start = Instant::now();
    let job = common::start_in_process(spec, &metrics).await;
    job.wait().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let text = metrics.render();
    let out = text
        .lines()
        .find(|l| l.starts_with("weir_node_records_in_total") && l.contains("node=\"out\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(out as i64, rows, "every record reached the sink");
    rows as f64 / secs
}

/// `preloaded_lookup` on `USERS` users against the same job without the join: (a) no
/// transform, (b) a `map` adding two constant fields, the join's record work without the lookup.
fn preloaded(rt: &tokio::runtime::Runtime, rows: i64, dir: &std::path::Path, async_rate: f64) {
    const USERS: i64 = 100_000;
    let table = dir.join("users.jsonl");
    let text: String = (0..USERS)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user-{i}\",\"tier\":{}}}\n", i % 3))
        .collect();
    std::fs::write(&table, text).unwrap();
    let fields = format!("      user: {{ kind: int, min: 0, max: {} }}\n", USERS - 1);
    let pass = r#"transforms:
  - name: enrich
    type: map
    fields: { name: "'user-1'", tier: "1" }
"#;
    let join = format!(
        r#"transforms:
  - name: enrich
    type: preloaded_lookup
    key: user
    table: {{ type: file, path: {}, key: id }}
    fields: {{ name: name, tier: tier }}
"#,
        table.display()
    );
    println!("preloaded_lookup: {USERS} users in memory, {rows} records");
    let (mut alone, mut map, mut pre) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved rounds: the machine's load drifts alike for all three.
    let rounds = common::env_num("PRELOADED_ROUNDS", 5);
    for _ in 0..rounds {
        alone.push(rt.block_on(run_job("bench-engine", &fields, "", rows, dir)));
        map.push(rt.block_on(run_job("bench-map", &fields, pass, rows, dir)));
        pre.push(rt.block_on(run_job("bench-preloaded", &fields, &join, rows, dir)));
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (a, b, p) = (best(&alone), best(&map), best(&pre));
    // Each round's preloaded/map ratio: the two ran back to back, so the machine's drift
    // (±15 % between rounds here) falls on both alike; their median is the figure to quote.
    let mut paired: Vec<f64> = pre.iter().zip(&map).map(|(p, b)| 100.0 * p / b).collect();
    paired.sort_by(f64::total_cmp);
    println!("  (a) datagen → blackhole            {a:>9.0} rec/s  (best of {rounds})");
    println!(
        "  (b) datagen → map → blackhole      {b:>9.0} rec/s  ({:.1} % of (a))",
        100.0 * b / a
    );
    println!(
        "  datagen → preloaded_lookup → blackhole {p:>9.0} rec/s  ({:.1} % of (b), {:.1} % of (a); {:.0}x async_lookup unordered)",
        100.0 * p / b,
        100.0 * p / a,
        p / async_rate
    );
    println!(
        "  preloaded_lookup / map, paired rounds: median {:.1} % (from {:.1} % to {:.1} %, {rounds} rounds)",
        paired[paired.len() / 2],
        paired[0],
        paired[paired.len() - 1]
    );
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn main() {
    let rows: i64 = common::env_num("ROWS", 30_000) as i64;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limit = CAPACITY as f64 * 1000.0 / LATENCY_MS as f64;
    println!("async_io: capacity {CAPACITY}, latency {LATENCY_MS} ms, {rows} records");
    println!("  limit capacity/latency            {limit:>9.0} rec/s");

    let fixed = server(Profile { slow_every: 0 });
    let raw_fixed = rt.block_on(raw(&fixed, rows));
    println!(
        "  raw client, {CAPACITY} in flight          {raw_fixed:>9.0} rec/s  ({:.1} % of limit; mean round trip {:.2} ms for the 10 ms sleep)",
        100.0 * raw_fixed / limit,
        CAPACITY as f64 * 1000.0 / raw_fixed
    );
    let mut unordered = 0.0;
    for mode in ["unordered", "ordered"] {
        let r = rt.block_on(weir(&fixed, mode, rows, dir.path()));
        if mode == "unordered" {
            unordered = r;
        }
        println!(
            "  weir {mode:<9}                     {r:>9.0} rec/s  ({:.1} % of limit, {:.1} % of raw)",
            100.0 * r / limit,
            100.0 * r / raw_fixed
        );
    }

    // 1 % of requests at 500 ms: mean latency 0.99 × 10 + 0.01 × 500 = 14.9 ms.
    let slow = server(Profile { slow_every: 100 });
    let mean_ms = 0.99 * LATENCY_MS as f64 + 0.01 * SLOW_MS as f64;
    let slow_limit = CAPACITY as f64 * 1000.0 / mean_ms;
    println!("with 1 % of requests at {SLOW_MS} ms (mean latency {mean_ms:.1} ms):");
    println!("  limit capacity/mean latency       {slow_limit:>9.0} rec/s");
    let raw_slow = rt.block_on(raw(&slow, rows));
    println!(
        "  raw client, {CAPACITY} in flight          {raw_slow:>9.0} rec/s  ({:.1} % of limit)",
        100.0 * raw_slow / slow_limit
    );
    let mut rates = Vec::new();
    for mode in ["unordered", "ordered"] {
        let r = rt.block_on(weir(&slow, mode, rows, dir.path()));
        println!(
            "  weir {mode:<9}                     {r:>9.0} rec/s  ({:.1} % of limit, {:.1} % of raw)",
            100.0 * r / slow_limit,
            100.0 * r / raw_slow
        );
        rates.push(r);
    }
    // Ordered mode holds up to `capacity` records behind the slow one at the head: with one slow
    // request per `capacity` records, that is `capacity` records per SLOW_MS.
    let ordered_limit = CAPACITY as f64 * 1000.0 / SLOW_MS as f64;
    println!(
        "  ordered limit capacity/slow latency {ordered_limit:>7.0} rec/s  (weir ordered at {:.1} %)",
        100.0 * rates[1] / ordered_limit
    );
    println!(
        "  unordered / ordered               {:>9.2}x",
        rates[0] / rates[1]
    );
    let preloaded_rows: i64 = common::env_num("PRELOADED_ROWS", 2_000_000) as i64;
    preloaded(&rt, preloaded_rows, dir.path(), unordered);
}
