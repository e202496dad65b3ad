//! Kafka → Kafka, exactly-once, 1 s checkpoints, ~1 KiB JSON records, against a raw rdkafka
//! consume+produce loop without transactions measured in the same run, on the same broker and
//! the same input records:
//!   1. throughput: records/s and records per CPU-second of `weir run` (one worker, the real
//!      binary, start-up and the final commit included) and of the raw loop (this process);
//!   2. steady state: the rate between 10 % and 90 % of the records, past start-up and before
//!      the final commit (weir unbounded, its sink's record count read from its metrics; the raw
//!      loop's own count), the figure a long-running job sees;
//!   3. latency: weir running unbounded while records carrying their produce time arrive at
//!      50 % of the throughput measured in 1; p50/p99 from produce to visible for a
//!      read_committed consumer (a record becomes visible when its checkpoint commits).
//!
//! `cargo bench -p weir-runtime --bench kafka`. Env: `KAFKA_BOOTSTRAP` (else
//! e2e/services/kafka.sh starts a broker), `WEIR_BENCH_KAFKA_RECORDS` (default 1,000,000),
//! `WEIR_BENCH_KAFKA_ROUNDS` (default 3),
//! `WEIR_BENCH_KAFKA_LATENCY_SECS` (default 15).

#[path = "common/mod.rs"]
mod common;

use common::{env_num, service_env};

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const RECORD_SIZE: usize = 1024;

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{prefix}-{}", t.as_millis())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn create_topic(b: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .unwrap();
    let t = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
    for r in futures::executor::block_on(admin.create_topics([&t], &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
}

/// Deletes the bench's topics: a round writes a GiB per output topic.
fn delete_topics(b: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .unwrap();
    let r = futures::executor::block_on(admin.delete_topics(names, &AdminOptions::new()));
    if let Err(e) = r {
        eprintln!("bench kafka: could not delete {names:?}: {e}");
    }
}

/// A ~1 KiB JSON object with a few typed fields and the produce time `ts`.
fn record(i: u64, pad: &str) -> String {
    format!(
        r#"{{"id":{i},"ts":{},"user":"user_{}","amount":{}.{:02},"country":"NL","pad":"{pad}"}}"#,
        now_ms(),
        i % 10_000,
        i % 1000,
        i % 100
    )
}

fn pad() -> String {
    "x".repeat(RECORD_SIZE - record(0, "").len() - 8)
}

fn producer(b: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .unwrap()
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &[u8], value: &[u8]) {
    let mut r = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((_, back)) => {
                r = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn fill(b: &str, topic: &str, n: u64) {
    let p = producer(b);
    let pad = pad();
    for i in 0..n {
        send(
            &p,
            topic,
            i.to_string().as_bytes(),
            record(i, &pad).as_bytes(),
        );
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

fn consumer(b: &str, topic: &str, isolation: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", unique("bench-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

fn cpu_seconds(who: i32) -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

struct Measure {
    records: u64,
    seconds: f64,
    cpu: f64,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn per_cpu(&self) -> f64 {
        self.records as f64 / self.cpu
    }
}

/// Consume every input record and produce its key and value to `output`: the upper limit
/// for any Kafka → Kafka job on this machine and broker.
fn raw_loop(b: &str, input: &str, output: &str, n: u64) -> (Measure, Measure) {
    let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let c = consumer(b, input, "read_uncommitted");
    let p = producer(b);
    let mut seen = 0;
    let (from, to) = window(n);
    let mut marks = Vec::new();
    while seen < n {
        if seen == from || seen == to {
            marks.push((Instant::now(), cpu_seconds(libc::RUSAGE_SELF)));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                send(
                    &p,
                    output,
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                );
                seen += 1;
            }
            Some(Err(e)) => panic!("raw loop: {e}"),
            None => {}
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    let whole = Measure {
        records: n,
        seconds: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds(libc::RUSAGE_SELF) - cpu0,
    };
    let steady = Measure {
        records: to - from,
        seconds: (marks[1].0 - marks[0].0).as_secs_f64(),
        cpu: marks[1].1 - marks[0].1,
    };
    (whole, steady)
}

/// The steady-state window: from 10 % to 90 % of the records, past start-up and before the
/// final flush and commit.
fn window(n: u64) -> (u64, u64) {
    (n / 10, n * 9 / 10)
}

/// CPU seconds a child process has used so far (utime + stime from /proc).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
}

/// Records the sink has handed to Kafka so far, from the worker's Prometheus endpoint.
fn sink_records(admin: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("weir_node_records_in_total{") && l.contains("node=\"out\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(total as u64)
}

/// weir running unbounded over the filled topic: its rate between 10 % and 90 % of `n`
/// records handed to the producer, read from its metrics every 20 ms.
fn weir_steady(dir: &std::path::Path, b: &str, input: &str, output: &str, n: u64) -> Measure {
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let spec = spec(dir, b, input, output, false);
    let mut job = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--quiet", "--admin-addr", &admin, &spec])
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (from, to) = window(n);
    let mut marks: Vec<(Instant, f64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while marks.len() < 2 && Instant::now() < deadline {
        if let Some(c) = sink_records(&admin) {
            let goal = if marks.is_empty() { from } else { to };
            if c >= goal {
                marks.push((Instant::now(), process_cpu(job.id()), c));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    let _ = job.wait();
    assert_eq!(
        marks.len(),
        2,
        "weir did not get through the window in time"
    );
    Measure {
        records: marks[1].2 - marks[0].2,
        seconds: (marks[1].0 - marks[0].0).as_secs_f64(),
        cpu: marks[1].1 - marks[0].1,
    }
}

fn spec(dir: &std::path::Path, b: &str, input: &str, output: &str, bounded: bool) -> String {
    let text = format!(
        r#"name: {job}
parallelism: 1
checkpoint: {{ interval: 1s, timeout: 30s, storage: {state} }}
sources:
  - name: in
    type: kafka
    bootstrap_servers: {b}
    topics: [{input}]
    starting_offsets: earliest
{stop}
sinks:
  - name: out
    type: kafka
    bootstrap_servers: {b}
    topic: {output}
    key_field: id
    delivery: exactly-once
"#,
        job = unique("bench-kafka"),
        state = dir.join(unique("state")).display(),
        stop = if bounded { "    stop_at: latest" } else { "" },
    );
    let path = dir.join(unique("spec") + ".yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn weir(spec: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--quiet", spec])
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn weir_bounded(dir: &std::path::Path, b: &str, input: &str, output: &str, n: u64) -> Measure {
    let spec = spec(dir, b, input, output, true);
    let cpu0 = cpu_seconds(libc::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let status = weir(&spec).wait().unwrap();
    let seconds = t0.elapsed().as_secs_f64();
    assert!(status.success(), "weir failed: {status}");
    Measure {
        records: n,
        seconds,
        cpu: cpu_seconds(libc::RUSAGE_CHILDREN) - cpu0,
    }
}

/// Counts what a read_committed consumer sees in `topic` (the check that the job wrote it all).
fn committed_count(b: &str, topic: &str, expect: u64) -> u64 {
    let c = consumer(b, topic, "read_committed");
    let mut n = 0;
    let mut last = Instant::now();
    while n < expect && last.elapsed() < Duration::from_secs(10) {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            n += 1;
            last = Instant::now();
        }
    }
    n
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Produce at `rate`/s for `secs` into a running job; end-to-end latency per record.
fn latency(dir: &std::path::Path, b: &str, rate: f64, secs: u64) -> (Vec<i64>, u64) {
    let input = unique("bench-lat-in");
    let output = unique("bench-lat-out");
    create_topic(b, &input);
    create_topic(b, &output);
    let mut job = weir(&spec(dir, b, &input, &output, false));
    std::thread::sleep(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (b, output, stop, seen) = (b.to_string(), output.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let c = consumer(&b, &output, "read_committed");
            while !stop.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                        let lat = now_ms() - v["ts"].as_i64().unwrap();
                        seen.lock().unwrap().push((v["id"].as_u64().unwrap(), lat));
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(e)) => panic!("latency reader: {e}"),
                }
            }
        })
    };
    let p = producer(b);
    let pad = pad();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            send(
                &p,
                &input,
                sent.to_string().as_bytes(),
                record(sent, &pad).as_bytes(),
            );
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    p.flush(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    // SAFETY: SIGTERM to our own child: the job stops after its checkpoint in flight.
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    let _ = job.wait();
    delete_topics(b, &[&input, &output]);
    // Skip the first 2 s (connections, first checkpoints).
    let warm = (2.0 * rate) as u64;
    let mut lat: Vec<i64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| *id >= warm)
        .map(|(_, l)| *l)
        .collect();
    let received = seen.lock().unwrap().len() as u64;
    lat.sort_unstable();
    (lat, sent.saturating_sub(received))
}

fn main() {
    let n = env_num("WEIR_BENCH_KAFKA_RECORDS", 1_000_000);
    let rounds = env_num("WEIR_BENCH_KAFKA_ROUNDS", 3).max(1);
    let latency_secs = env_num("WEIR_BENCH_KAFKA_LATENCY_SECS", 15);
    let b = service_env("kafka", "KAFKA_BOOTSTRAP");
    let dir = tempfile::tempdir().unwrap();
    let input = unique("bench-in");
    create_topic(&b, &input);
    eprintln!("bench kafka: filling {input} with {n} records of {RECORD_SIZE} B");
    fill(&b, &input, n);

    println!(
        "kafka → kafka, {n} records of {RECORD_SIZE} B JSON, {PARTITIONS} partitions, one worker, {rounds} rounds"
    );
    // Rounds alternate raw and weir on the same input, so that the broker's JIT warm-up and
    // the machine's noise fall on both alike; the ratio is of the totals.
    let (mut raws, mut weirs) = (Vec::new(), Vec::new());
    let (mut raw_steady, mut weir_steadies) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (raw_out, weir_out) = (unique("bench-raw-out"), unique("bench-weir-out"));
        create_topic(&b, &raw_out);
        create_topic(&b, &weir_out);
        let (raw, steady) = raw_loop(&b, &input, &raw_out, n);
        raw_steady.push(steady);
        let steady_out = unique("bench-weir-steady-out");
        create_topic(&b, &steady_out);
        weir_steadies.push(weir_steady(dir.path(), &b, &input, &steady_out, n));
        let weir = weir_bounded(dir.path(), &b, &input, &weir_out, n);
        let visible = committed_count(&b, &weir_out, n);
        assert_eq!(visible, n, "weir's output is incomplete");
        delete_topics(&b, &[&raw_out, &weir_out, &steady_out]);
        println!(
            "  round {round}: raw rdkafka loop (no transactions) {:>7.0} records/s {:>7.0} records/CPU-s ({:.1} s, {:.1} CPU-s)",
            raw.rate(), raw.per_cpu(), raw.seconds, raw.cpu
        );
        println!(
            "  round {round}: weir exactly-once, 1 s checkpoints {:>7.0} records/s {:>7.0} records/CPU-s ({:.1} s, {:.1} CPU-s, start-up included)",
            weir.rate(), weir.per_cpu(), weir.seconds, weir.cpu
        );
        let (rs, ws) = (
            &raw_steady[raw_steady.len() - 1],
            &weir_steadies[weir_steadies.len() - 1],
        );
        println!(
            "  round {round}: steady state (10 %–90 % of the records): raw {:>7.0} records/s ({:.0}/CPU-s), weir {:>7.0} records/s ({:.0}/CPU-s)",
            rs.rate(), rs.per_cpu(), ws.rate(), ws.per_cpu()
        );
        raws.push(raw);
        weirs.push(weir);
    }
    let total = |ms: &[Measure]| Measure {
        records: ms.iter().map(|m| m.records).sum(),
        seconds: ms.iter().map(|m| m.seconds).sum(),
        cpu: ms.iter().map(|m| m.cpu).sum(),
    };
    let (raw, weir) = (total(&raws), total(&weirs));
    println!(
        "  all rounds: raw {:.0} records/s ({:.0}/CPU-s), weir {:.0} records/s ({:.0}/CPU-s)",
        raw.rate(),
        raw.per_cpu(),
        weir.rate(),
        weir.per_cpu()
    );
    println!(
        "  ratio weir/raw, whole runs (weir's process start-up and final commit included): throughput {:.0} %, per CPU-second {:.0} %",
        100.0 * weir.rate() / raw.rate(),
        100.0 * weir.per_cpu() / raw.per_cpu()
    );
    let (rs, ws) = (total(&raw_steady), total(&weir_steadies));
    println!(
        "  ratio weir/raw, steady state: throughput {:.0} % ({:.0} vs {:.0} records/s), per CPU-second {:.0} %  (target ≥ 70 %)",
        100.0 * ws.rate() / rs.rate(),
        ws.rate(),
        rs.rate(),
        100.0 * ws.per_cpu() / rs.per_cpu()
    );

    delete_topics(&b, &[&input]);
    let rate = weir.rate() / 2.0;
    let (lat, missing) = latency(dir.path(), &b, rate, latency_secs);
    println!(
        "  latency at {rate:.0} records/s (50 % of weir's max) for {latency_secs} s: p50 {} ms, p99 {} ms, max {} ms ({} records measured, {missing} not yet visible at the end)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(-1),
        lat.len()
    );
}
