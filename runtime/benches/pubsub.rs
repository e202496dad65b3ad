//! Pub/Sub throughput against the emulator, weir against a raw google-cloud-pubsub loop with
//! the same settings, measured in the same run on the same emulator, `WEIR_BENCH_PUBSUB_ROUNDS`
//! rounds (default 2) each with fresh topics:
//! - source: N messages (~200 B JSON) published once to a topic with two subscriptions; the raw
//!   loop receives one subscription with the source's flow control and lease settings and
//!   acknowledges what it holds once a second (as checkpoints do); weir reads the other
//!   (`pubsub` → blackhole, 1 s checkpoints, `stop_after_idle`, whose wait is not counted);
//! - sink: the raw publisher builds records of datagen's shape (id, `u<n>`, 120 random
//!   characters) as JSON and publishes them with the sink's batching ([`BATCH_MESSAGES`],
//!   [`BATCH_BYTES`], [`BATCH_DELAY`]) and flow control (at most [`MAX_IN_FLIGHT`]
//!   unacknowledged, the oldest awaited when full), awaiting every acknowledgement; weir runs
//!   datagen → `pubsub` (1 s checkpoints) with the same settings written out in its spec.
//!
//! `cargo bench -p weir-runtime --bench pubsub`. Env: `PUBSUB_EMULATOR_HOST` (else
//! e2e/services/pubsub.sh starts the emulator), `WEIR_BENCH_PUBSUB_RECORDS` (default 50,000),
//! `WEIR_BENCH_PUBSUB_SINK_RECORDS` (default 500,000: the publisher is ~100× faster than the
//! emulator's delivery, and 50,000 would measure mostly the job's start and last checkpoint).

#[path = "common/mod.rs"]
mod common;

use common::{env_num, service_env};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::publisher::PublishFuture;
use weir_runtime::connectors::pubsub::client;
use weir_runtime::connectors::pubsub::config::Endpoint;
use weir_runtime::engine::{self, JobOptions};
use weir_runtime::metrics::Metrics;
use weir_runtime::registry::Registry;

const PROJECT: &str = "weir-bench";
const IDLE: Duration = Duration::from_secs(2);

// The sink's batching and flow control, given to both publishers (the sink's defaults).
const BATCH_MESSAGES: u32 = 1000;
const BATCH_BYTES: u32 = 1024 * 1024;
const BATCH_DELAY: Duration = Duration::from_millis(10);
const MAX_IN_FLIGHT: usize = 10_000;

fn record(i: u64) -> String {
    format!(
        r#"{{"id":{i},"user":"u{}","amount":{}.25,"note":"{}"}}"#,
        i % 1000,
        i % 500,
        "x".repeat(120)
    )
}

async fn prepare(e: &Endpoint, id: &str, n: u64) {
    let topics = client::topic_admin("bench", e).await.unwrap();
    let subs = client::subscription_admin("bench", e).await.unwrap();
    let topic = format!("projects/{PROJECT}/topics/{id}");
    topics.create_topic().set_name(&topic).send().await.unwrap();
    for s in ["raw", "weir"] {
        subs.create_subscription()
            .set_name(format!("projects/{PROJECT}/subscriptions/{id}-{s}"))
            .set_topic(&topic)
            .send()
            .await
            .unwrap();
    }
    // The sinks publish to a topic of their own without subscriptions: the emulator keeps every
    // message of a subscribed topic in its heap, and 2 × 500,000 retained messages made it
    // collect garbage at full CPU instead of accepting publishes.
    topics
        .create_topic()
        .set_name(format!("projects/{PROJECT}/topics/{id}-out"))
        .send()
        .await
        .unwrap();
    if n > 0 {
        raw_publish(e, id, n, |i| record(i).into_bytes()).await;
    }
}

/// A record as datagen builds the sink benchmark's (`sequence`, `int` with prefix, 120
/// random characters), as JSON.
fn datagen_like(i: u64) -> Vec<u8> {
    let note: String = (0..120)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[fastrand::usize(..36)]))
        .collect();
    serde_json::to_vec(
        &serde_json::json!({ "id": i, "user": format!("u{}", fastrand::u32(0..1000)), "note": note }),
    )
    .unwrap()
}

/// The raw publisher to topic `id`: the sink's batching and flow control (the oldest publish
/// awaited while `MAX_IN_FLIGHT` are unacknowledged), every acknowledgement awaited.
async fn raw_publish(e: &Endpoint, id: &str, n: u64, message: fn(u64) -> Vec<u8>) -> f64 {
    let topic = format!("projects/{PROJECT}/topics/{id}");
    let p = client::publisher("bench", e, &topic, |b| {
        b.set_message_count_threshold(BATCH_MESSAGES)
            .set_byte_threshold(BATCH_BYTES)
            .set_delay_threshold(BATCH_DELAY)
    })
    .await
    .unwrap();
    let start = Instant::now();
    let mut in_flight: VecDeque<PublishFuture> = VecDeque::with_capacity(MAX_IN_FLIGHT);
    for i in 0..n {
        if in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.pop_front().unwrap().await.unwrap();
        }
        in_flight.push_back(p.publish(Message::new().set_data(message(i))));
    }
    for f in in_flight {
        f.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The raw subscriber: the source's flow control and lease settings, acknowledging once a
/// second what it holds.
async fn raw_receive(e: &Endpoint, sub: &str, n: u64) -> f64 {
    let s = client::subscriber("bench", e).await.unwrap();
    let mut stream = s
        .subscribe(sub.to_string())
        .set_max_outstanding_messages(100_000)
        .set_max_outstanding_bytes(1 << 30)
        .set_max_lease_extension(Duration::from_secs(60))
        .build();
    let start = Instant::now();
    let mut held = Vec::new();
    let mut last_ack = Instant::now();
    let mut seen = 0;
    while seen < n {
        let (m, h) = stream.next().await.unwrap().unwrap();
        std::hint::black_box(&m.data);
        held.push(h);
        seen += 1;
        if last_ack.elapsed() >= Duration::from_secs(1) {
            held.drain(..).for_each(|h| h.ack());
            last_ack = Instant::now();
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    held.drain(..).for_each(|h| h.ack());
    stream.shutdown_token().shutdown().await;
    rate
}

fn weir(yaml: &str, node: &str, idle: Duration) -> (f64, u64) {
    let spec = weir_crds::PipelineSpec::from_yaml(yaml).unwrap();
    let metrics = Metrics::new();
    // Its own thread name, so that a profile can tell the job from the raw loops
    // (`perf report --comm weir-job`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("weir-job")
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let job = engine::start(
            spec,
            &Registry::with_builtins(),
            JobOptions {
                workers: vec![0],
                from_savepoint: None,
                allow_non_restored_state: false,
                start_fresh: None,
                metrics: metrics.clone(),
            },
        )
        .await
        .unwrap();
        job.wait().await.unwrap();
    });
    let secs = (start.elapsed() - idle).as_secs_f64();
    let out = metrics
        .render()
        .lines()
        .find(|l| {
            l.starts_with("weir_node_records_out_total") && l.contains(&format!("node=\"{node}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    (out as f64 / secs, out)
}

fn pct(a: f64, b: f64) -> f64 {
    100.0 * a / b
}

fn main() {
    let n = env_num("WEIR_BENCH_PUBSUB_RECORDS", 50_000);
    let n_sink = env_num("WEIR_BENCH_PUBSUB_SINK_RECORDS", 500_000);
    let rounds = env_num("WEIR_BENCH_PUBSUB_ROUNDS", 2);
    let host = service_env("pubsub", "PUBSUB_EMULATOR_HOST");
    let e = Endpoint::Emulator(host.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "pubsub (emulator at {host}): {n} messages read, {n_sink} published, ~170 B JSON, one worker"
    );
    let (mut sums, mut k) = ([0.0; 4], 0.0);
    for round in 1..=rounds {
        let id = format!(
            "bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        rt.block_on(prepare(&e, &id, n));
        let raw_source = rt.block_on(raw_receive(
            &e,
            &format!("projects/{PROJECT}/subscriptions/{id}-raw"),
            n,
        ));
        let (weir_source, read) = weir(
            &format!(
                r#"name: bench-pubsub-source
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - {{ name: src, type: pubsub, subscription: projects/{PROJECT}/subscriptions/{id}-weir, emulator_host: "{host}", stop_after_idle: 2s }}
sinks:
  - {{ name: out, type: blackhole }}
"#,
                state = dir.path().join(format!("source-{round}")).display()
            ),
            "src",
            IDLE,
        );
        assert_eq!(read, n, "every message read once");
        let raw_sink = rt.block_on(raw_publish(&e, &format!("{id}-out"), n_sink, datagen_like));
        let (weir_sink, published) = weir(
            &format!(
                r#"name: bench-pubsub-sink
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n_sink}
    splits: 1
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 999, prefix: u }}
      note: {{ kind: string, length: 120 }}
sinks:
  - name: out
    type: pubsub
    topic: projects/{PROJECT}/topics/{id}-out
    emulator_host: "{host}"
    batching: {{ max_messages: {BATCH_MESSAGES}, max_bytes: {BATCH_BYTES}, max_delay: {delay}ms }}
    max_in_flight: {MAX_IN_FLIGHT}
"#,
                state = dir.path().join(format!("sink-{round}")).display(),
                delay = BATCH_DELAY.as_millis(),
            ),
            "gen",
            Duration::ZERO,
        );
        assert_eq!(published, n_sink, "every record generated");
        println!(
            "  round {round}: source raw {raw_source:>8.0} | weir {weir_source:>8.0} msg/s ({:.1} %)   \
             sink raw {raw_sink:>8.0} | weir {weir_sink:>8.0} msg/s ({:.1} %)",
            pct(weir_source, raw_source),
            pct(weir_sink, raw_sink)
        );
        for (s, x) in sums
            .iter_mut()
            .zip([raw_source, weir_source, raw_sink, weir_sink])
        {
            *s += x;
        }
        k += 1.0;
    }
    let [rs, ws, rp, wp] = sums.map(|s| s / k);
    println!("  raw subscriber (ack each second)   {rs:>10.0} msg/s");
    println!(
        "  weir pubsub → blackhole (1 s cps)  {ws:>10.0} msg/s  ({:.1} % of raw)",
        pct(ws, rs)
    );
    println!("  raw publisher (same batching, {MAX_IN_FLIGHT} in flight) {rp:>10.0} msg/s");
    println!(
        "  weir datagen → pubsub (1 s cps)    {wp:>10.0} msg/s  ({:.1} % of raw)",
        pct(wp, rp)
    );
}
