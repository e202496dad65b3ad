//! `kafka` source throughput (bounded, `stop_at: latest`, one worker, blackhole sink, 1 s
//! checkpoints) against raw rdkafka consume loops over the same ~1 KiB JSON records, measured in
//! the same run on the same broker and topic: one that only consumes (the raw limit) and one
//! that also parses every record into a `serde_json` object (what a source that builds its
//! records must do; weir's checks the JSON and builds fields only when something needs them).
//!
//! `cargo bench -p weir-runtime --bench kafka_source`. Env: `KAFKA_BOOTSTRAP` (else
//! e2e/services/kafka.sh starts a broker), `WEIR_BENCH_KAFKA_SOURCE_RECORDS` (default 300,000).

#[path = "common/mod.rs"]
mod common;

use common::{env_num, service_env};

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir_runtime::metrics::Metrics;

const PARTITIONS: i32 = 4;

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A ~1 KiB JSON object.
fn record(i: u64) -> String {
    let pad = "x".repeat(900);
    format!(
        r#"{{"id":{i},"user":"u{}","amount":{}.25,"note":"{pad}"}}"#,
        i % 1000,
        i % 500
    )
}

fn prepare(bootstrap: &str, topic: &str, n: u64) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
    let t = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in futures::executor::block_on(admin.create_topics(&[t], &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let p: BaseProducer = config(bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    for i in 0..n {
        let v = record(i);
        let part = (i % PARTITIONS as u64) as i32;
        loop {
            match p.send(BaseRecord::<(), _>::to(topic).partition(part).payload(&v)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(20));
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// One consumer, every partition; with `parse`, each payload parsed into a JSON object.
fn raw(bootstrap: &str, topic: &str, n: u64, parse: bool) -> f64 {
    let c: BaseConsumer = config(bootstrap)
        .set("group.id", "weir-bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    let start = Instant::now();
    c.assign(&tpl).unwrap();
    let mut seen = 0;
    while seen < n {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            if parse {
                let v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(m.payload().unwrap()).unwrap();
                std::hint::black_box(v);
            } else {
                std::hint::black_box(m.payload());
            }
            seen += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn weir(bootstrap: &str, topic: &str, n: u64, dir: &std::path::Path) -> f64 {
    let yaml = format!(
        r#"name: bench-kafka-source
parallelism: 1
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - {{ name: src, type: kafka, bootstrap_servers: "{bootstrap}", topics: [{topic}], stop_at: latest }}
sinks:
  - {{ name: out, type: blackhole }}
"#,
        state = dir.join("state").display()
    );
    let spec = weir_crds::PipelineSpec::from_yaml(&yaml).unwrap();
    let metrics = Metrics::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let job = common::start_in_process(spec, &metrics).await;
        job.wait().await.unwrap();
    });
    let secs = start.elapsed().as_secs_f64();
    let out = metrics
        .render()
        .lines()
        .find(|l| l.starts_with("weir_node_records_out_total") && l.contains("node=\"src\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(out as u64, n, "every record read once");
    n as f64 / secs
}

fn main() {
    let n = env_num("WEIR_BENCH_KAFKA_SOURCE_RECORDS", 300_000);
    let bootstrap = service_env("kafka", "KAFKA_BOOTSTRAP");
    let topic = format!(
        "bench-source-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    prepare(&bootstrap, &topic, n);
    let dir = tempfile::tempdir().unwrap();
    let consume = raw(&bootstrap, &topic, n, false);
    let parse = raw(&bootstrap, &topic, n, true);
    let weir = weir(&bootstrap, &topic, n, dir.path());
    println!("kafka source: {n} records of ~1 KiB JSON, {PARTITIONS} partitions, one worker");
    println!("  raw rdkafka consume                {consume:>10.0} rec/s");
    println!("  raw rdkafka consume + JSON parse   {parse:>10.0} rec/s");
    println!(
        "  weir kafka → blackhole (1 s cps)   {weir:>10.0} rec/s  ({:.1} % of raw consume, {:.1} % of consume + parse)",
        100.0 * weir / consume,
        100.0 * weir / parse
    );
    // A run leaves ~300 MiB in the broker otherwise.
    let admin: AdminClient<DefaultClientContext> = config(&bootstrap).create().unwrap();
    if let Err(e) =
        futures::executor::block_on(admin.delete_topics(&[&topic], &AdminOptions::new()))
    {
        eprintln!("bench kafka_source: could not delete {topic}: {e}");
    }
}
