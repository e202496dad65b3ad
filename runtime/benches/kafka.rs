//! Kafka → Kafka, exactly-once, 1 s checkpoints, ~1 KiB JSON records, against a raw rdkafka
//! consume+produce loop without transactions measured in the same run, on the same broker and
//! the same input records:
//!   1. throughput: records/s and records per CPU-second of `weir run` (one worker, the real
//!      binary, start-up and the final commit included) and of the raw loop (this process);
//!   2. steady state: the rate between 10 % and 90 % of the records, past start-up and before
//!      the final commit (weir unbounded, its sink's record count read from its metrics; the raw
//!      loop's own count), the figure a long-running job sees;
//!   3. weir's peak RSS in each run of 1 (its own VmHWM, from `weir run --summary-json`).
//!      1 and 2 also run "weir as text": the same job reading each value whole (`format:
//!      string`) and sending it bare (`value_field`), nothing parsed, as the raw loop does.
//!   4. the checkpoint interval curve, for 100 ms, 250 ms, 1 s and 5 s: weir's throughput over
//!      the whole input at each interval (rounds interleaved, every output read back exactly
//!      once) as a share of the 1 s interval's, and latency: weir running unbounded while
//!      records carrying their produce time arrive at 25 % of the throughput measured in 1;
//!      p50/p99 from produce to visible for a read_committed consumer (a record becomes visible
//!      when its checkpoint commits).
//!   6. the checkpoint overhead in instructions: weir under `valgrind --tool=callgrind` over
//!      the same kind of input with 100 ms checkpoints and with a 10 min interval (only the
//!      final checkpoint), the cost of one checkpoint scaled to the records/s of 1.
//!   5. with `WEIR_BENCH_FLINK=1`, Apache Flink beside weir: after weir's run in each round, a
//!      Flink 2.3.0 job (PyFlink's local MiniCluster, `flink-sql-connector-kafka` 5.0.0-2.2)
//!      over the same input topic, exactly-once (transactional id prefix), 1 s checkpoints,
//!      parallelism 1, in `raw` format (bytes passed through) and `json` (every field parsed);
//!      each output, weir's too, read back by a read_committed reader, every id exactly once.
//!      Both also run over an empty topic: the CPU and time a process costs before its first
//!      record. Printed: weir/Flink for records/s, records per CPU-second and peak RSS, median
//!      over the rounds. Flink's CPU and peak RSS are its JVM's from /proc (utime+stime,
//!      VmHWM) plus the Python driver's CPU; weir's from wait4. Flink is installed once under
//!      `~/.cache/weir-flink` by `benches/flink/setup.sh` (venv + Maven).
//!
//! `cargo bench -p weir-runtime --bench kafka`. Env: `KAFKA_BOOTSTRAP` (else
//! e2e/services/kafka.sh starts a broker), `WEIR_BENCH_KAFKA_RECORDS` (default 1,000,000),
//! `WEIR_BENCH_KAFKA_ROUNDS` (default 3),
//! `WEIR_BENCH_KAFKA_LATENCY_SECS` (default 15), `WEIR_BENCH_KAFKA_LATENCY_PERCENT` (the latency
//! runs' load as a share of weir's 1 s-interval records/s, default 25), `WEIR_BENCH_KAFKA_INTERVALS` (default
//! `100ms,250ms,1s,5s`), `WEIR_BENCH_KAFKA_SOURCE_PROPERTIES` / `_SINK_PROPERTIES`
//! (`key=value,…`: librdkafka properties for weir's clients), `WEIR_BENCH_KAFKA_BATCH_SIZE` (the
//! source's `batch_size`), `WEIR_BENCH_FLINK` (`1`: run Flink too),
//! `WEIR_BENCH_FLINK_FORMATS` (default `raw,json`), `WEIR_FLINK_HOME` (default
//! `~/.cache/weir-flink`), `WEIR_BENCH_KAFKA_INSTRUCTIONS` (records of the callgrind runs of 6,
//! default 100,000; 0 skips them).
//!
//! Measured (2 shared cores; every output exactly once), median of 3 rounds, weir's peak RSS
//! its own VmHWM: `WEIR_BENCH_FLINK=1 WEIR_BENCH_KAFKA_RECORDS=500000 WEIR_BENCH_KAFKA_ROUNDS=3`
//! ```text
//!             records/s  rec/s process  rec/s past start  rec/CPU-s  rec/CPU-s past start  start CPU-s  peak RSS MiB
//! weir           221272         221272            375269     231740                239524          0.1           136
//! Flink raw       48833          30151             56657      21540                 43013         13.0          1142
//! Flink json      43384          28776             51329      20026                 35871         13.0           854
//! weir/raw        4.53×          7.34×             6.62×     10.76×                 5.57×                      0.12×
//! weir/json       5.10×          7.69×             7.31×     11.57×                 6.68×                      0.16×
//! ```
//! (Flink's records/s over its net job runtime; "process" includes JVM, MiniCluster start
//! and planning; "past start" subtracts the empty-topic run's time or CPU.)

#[path = "common/mod.rs"]
mod common;
mod flink;

use common::{cpu_seconds, env_num, process_cpu, service_env};
use flink::{Flink, FlinkRun};

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

/// A consumer of every partition of `topic` from its beginning; `eof`: partition ends are reported.
fn consumer(b: &str, topic: &str, isolation: &str, eof: bool) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", unique("bench-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", eof.to_string())
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
    let c = consumer(b, input, "read_uncommitted", false);
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
fn weir_steady(
    dir: &std::path::Path,
    b: &str,
    (input, output): (&str, &str),
    n: u64,
    form: Form,
) -> Measure {
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let spec = spec(dir, b, (input, output), false, ("1s", "30s"), form);
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

/// `WEIR_BENCH_KAFKA_SOURCE_PROPERTIES` / `_SINK_PROPERTIES` (`key=value,key=value`): librdkafka
/// properties for weir's source or sink, to try buffer sizes without rebuilding weir. As a YAML
/// flow mapping, or "" when unset.
fn properties(var: &str) -> String {
    let Ok(v) = std::env::var(var) else {
        return String::new();
    };
    let pairs: Vec<String> = v
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("{var}: {p:?} is not key=value"));
            format!("{:?}: {:?}", k.trim(), v.trim())
        })
        .collect();
    format!("    properties: {{ {} }}\n", pairs.join(", "))
}

/// How weir's job treats the records.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// JSON objects, each checked (and its `id` read for the key) but not rebuilt: the
    /// record's own text is written.
    Json,
    /// Each message read whole as text (`format: string`) and sent bare (`value_field`),
    /// without a key: nothing parsed, what the raw loop does and Flink's `raw` format.
    Text,
}

/// A weir job from `input` to `output`, exactly-once, checkpointing every `interval`.
fn spec(
    dir: &std::path::Path,
    b: &str,
    (input, output): (&str, &str),
    bounded: bool,
    (interval, timeout): (&str, &str),
    form: Form,
) -> String {
    let (source_form, sink_form) = match form {
        Form::Json => ("", "    key_field: id\n"),
        Form::Text => (
            "    format: string\n    value_field: line\n",
            "    value_field: line\n",
        ),
    };
    let text = format!(
        r#"name: {job}
parallelism: 1
checkpoint: {{ interval: {interval}, timeout: {timeout}, storage: {state} }}
sources:
  - name: in
    type: kafka
    bootstrap_servers: {b}
    topics: [{input}]
    starting_offsets: earliest
{source_form}{batch}{stop}{source_props}
sinks:
  - name: out
    type: kafka
    bootstrap_servers: {b}
    topic: {output}
{sink_form}    delivery: exactly-once
{sink_props}"#,
        job = unique("bench-kafka"),
        state = dir.join(unique("state")).display(),
        stop = if bounded { "    stop_at: latest\n" } else { "" },
        batch = std::env::var("WEIR_BENCH_KAFKA_BATCH_SIZE")
            .map(|n| format!("    batch_size: {n}\n"))
            .unwrap_or_default(),
        source_props = properties("WEIR_BENCH_KAFKA_SOURCE_PROPERTIES"),
        sink_props = properties("WEIR_BENCH_KAFKA_SINK_PROPERTIES"),
    );
    let path = dir.join(unique("spec") + ".yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `WEIR_BENCH_KAFKA_LOG`: weir's log filter in the bounded and latency runs (default `warn`;
/// `weir_runtime::connectors::kafka=debug` shows each pre-commit's and commit's duration).
fn log_level() -> String {
    std::env::var("WEIR_BENCH_KAFKA_LOG").unwrap_or_else(|_| "warn".into())
}

/// `weir run spec`, writing its summary (records, checkpoints, peak RSS) to `summary`.
fn weir(spec: &str, summary: Option<&str>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(["run", "--quiet"]);
    if let Some(path) = summary {
        c.args(["--summary-json", path]);
    }
    c.arg(spec)
        .env("WEIR_LOG", log_level())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for `child`: its exit status and CPU seconds, from the kernel's account of that one
/// process. (Not its peak RSS: `ru_maxrss` of a child started by posix_spawn, which shares the
/// parent's memory until its exec, starts at this bench process's own peak, which grows to
/// ~300 MiB as it reads topics back. `weir_bounded` takes weir's own VmHWM instead.)
fn wait_rusage(child: Child) -> (std::process::ExitStatus, f64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the rusage we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut u) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}): {e}"
        );
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    let cpu = t(u.ru_utime) + t(u.ru_stime);
    (std::process::ExitStatus::from_raw(status), cpu)
}

/// `weir run` over the whole input, to its end (`stop_at: latest`): the measure and its peak
/// RSS in KiB.
fn weir_bounded(
    dir: &std::path::Path,
    b: &str,
    input: &str,
    output: &str,
    n: u64,
    interval: &str,
    form: Form,
) -> (Measure, u64) {
    let spec = spec(dir, b, (input, output), true, (interval, "30s"), form);
    let summary = format!("{spec}.summary.json");
    let t0 = Instant::now();
    let (status, cpu) = wait_rusage(weir(&spec, Some(&summary)));
    let seconds = t0.elapsed().as_secs_f64();
    assert!(status.success(), "weir failed: {status}");
    // weir's VmHWM at its end, as `weir run` reports it.
    let text = std::fs::read_to_string(&summary).unwrap();
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rss = s["peak_rss_bytes"]
        .as_u64()
        .expect("peak_rss_bytes in weir's summary")
        / 1024;
    (
        Measure {
            records: n,
            seconds,
            cpu,
        },
        rss,
    )
}

/// Reads `topic` to its end as a read_committed consumer: the records it holds and the distinct
/// `id`s among them. Both equal to the input's count is every record exactly once. Run after the
/// job has ended, so that the end a read_committed reader sees is the topic's end.
fn committed_ids(b: &str, topic: &str) -> (u64, u64) {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    let c = consumer(b, topic, "read_committed", true);
    let (mut records, mut ids, mut ended) = (0, std::collections::HashSet::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(300);
    while ended.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "reading {topic} back took over 300 s"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let id: Id = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or_else(|e| panic!("{topic}: a record without a numeric id: {e}"));
                records += 1;
                ids.insert(id.id);
            }
            Some(Err(KafkaError::PartitionEOF(p))) if !ended.contains(&p) => ended.push(p),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("reading {topic} back: {e}"),
        }
    }
    (records, ids.len() as u64)
}

/// Panics unless `topic` holds each of the `n` input records exactly once.
fn assert_exactly_once(b: &str, topic: &str, n: u64, who: &str) {
    let (records, distinct) = committed_ids(b, topic);
    assert!(
        records == n && distinct == n,
        "{who}: {topic} holds {records} committed records with {distinct} distinct ids, expected {n}"
    );
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Produce at `rate`/s for `secs` into a job checkpointing every `interval`; end-to-end latency
/// per record.
fn latency(
    dir: &std::path::Path,
    b: &str,
    rate: f64,
    secs: u64,
    interval: &str,
) -> (Vec<i64>, u64) {
    let input = unique("bench-lat-in");
    let output = unique("bench-lat-out");
    create_topic(b, &input);
    create_topic(b, &output);
    let mut job = weir(
        &spec(
            dir,
            b,
            (&input, &output),
            false,
            (interval, "30s"),
            Form::Json,
        ),
        None,
    );
    std::thread::sleep(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (b, output, stop, seen) = (b.to_string(), output.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let c = consumer(&b, &output, "read_committed", false);
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

/// `WEIR_BENCH_FLINK_FORMATS`: Flink's variants, `raw` (bytes passed through) and `json` (every
/// field parsed and written back); default both.
fn flink_formats() -> Vec<String> {
    let v = std::env::var("WEIR_BENCH_FLINK_FORMATS").unwrap_or_else(|_| "raw,json".into());
    let formats: Vec<String> = v.split(',').map(|f| f.trim().to_string()).collect();
    for f in &formats {
        assert!(
            f == "raw" || f == "json",
            "WEIR_BENCH_FLINK_FORMATS: expected raw and/or json, comma-separated, got {f:?}"
        );
    }
    formats
}

/// One side's figures in one round of weir against Flink.
#[derive(Clone, Copy)]
struct Side {
    /// Records over the job's time: weir's whole process, Flink's net job runtime.
    rate: f64,
    /// Records over the whole process's wall time, start-up included.
    process_rate: f64,
    /// Records over the job's time beyond the same over an empty topic.
    rate_past_startup: f64,
    /// Records per CPU-second of the whole process.
    per_cpu: f64,
    /// Records per CPU-second beyond the same process's run over an empty topic.
    per_cpu_past_startup: f64,
    startup_cpu: f64,
    rss_mib: f64,
}

/// A column of the weir/Flink table: its heading and its figure.
type Column = (&'static str, fn(&Side) -> f64);

/// Per side (`weir`, `Flink raw`, `Flink json`), its figures round by round.
#[derive(Default)]
struct Versus {
    sides: Vec<(String, Vec<Side>)>,
}

impl Versus {
    fn push(&mut self, name: &str, side: Side) {
        match self.sides.iter_mut().find(|(s, _)| s == name) {
            Some((_, v)) => v.push(side),
            None => self.sides.push((name.to_string(), vec![side])),
        }
    }

    fn add_weir(
        &mut self,
        weir: &Measure,
        rss_kib: u64,
        dir: &std::path::Path,
        b: &str,
        empty: &str,
    ) {
        let out = unique("bench-weir-empty-out");
        create_topic(b, &out);
        let (idle, _) = weir_bounded(dir, b, empty, &out, 0, "1s", Form::Json);
        delete_topics(b, &[&out]);
        self.push(
            "weir",
            Side {
                rate: weir.rate(),
                process_rate: weir.rate(),
                rate_past_startup: weir.records as f64 / (weir.seconds - idle.seconds),
                per_cpu: weir.per_cpu(),
                per_cpu_past_startup: weir.records as f64 / (weir.cpu - idle.cpu),
                startup_cpu: idle.cpu,
                rss_mib: rss_kib as f64 / 1024.0,
            },
        );
    }

    fn print_round(&self, round: u64) {
        for (name, v) in &self.sides {
            let s = v[v.len() - 1];
            println!(
                "  round {round}: {name:<10} {:>7.0} records/s ({:.0} past start-up, {:.0} whole process) {:>7.0} records/CPU-s ({:.0} past start-up, start-up {:.1} CPU-s), peak RSS {:.0} MiB",
                s.rate, s.rate_past_startup, s.process_rate, s.per_cpu, s.per_cpu_past_startup, s.startup_cpu, s.rss_mib
            );
        }
    }

    /// Medians over the rounds, and weir's over each Flink variant's.
    fn print(&self, n: u64, rounds: u64) {
        let med = |v: &[Side], f: fn(&Side) -> f64| median(v.iter().map(f).collect());
        let cols: [Column; 7] = [
            ("records/s", |s| s.rate),
            ("rec/s process", |s| s.process_rate),
            ("rec/s past start", |s| s.rate_past_startup),
            ("rec/CPU-s", |s| s.per_cpu),
            ("rec/CPU-s past start", |s| s.per_cpu_past_startup),
            ("start CPU-s", |s| s.startup_cpu),
            ("peak RSS MiB", |s| s.rss_mib),
        ];
        println!(
            "  weir vs Flink 2.3.0 (PyFlink MiniCluster, flink-sql-connector-kafka 5.0.0-2.2), {n} records, parallelism 1, exactly-once, 1 s checkpoints, median of {rounds} rounds:"
        );
        print!("    {:<16}", "");
        cols.iter().for_each(|(c, _)| print!("{c:>21}"));
        println!();
        for (name, v) in &self.sides {
            print!("    {name:<16}");
            cols.iter()
                .for_each(|(_, f)| print!("{:>21.1}", med(v, *f)));
            println!();
        }
        let Some((_, weir)) = self.sides.iter().find(|(s, _)| s == "weir") else {
            return;
        };
        for (name, v) in self.sides.iter().filter(|(s, _)| s != "weir") {
            print!("    {:<16}", format!("weir/{name}"));
            cols.iter()
                .for_each(|(_, f)| print!("{:>20.2}×", med(weir, *f) / med(v, *f)));
            println!();
        }
        println!(
            "    (Flink's records/s over its net job runtime, JVM and MiniCluster start and planning excluded; \"rec/s process\" includes them; weir's both are its whole process. \"past start\": time or CPU beyond the same run over an empty topic; \"start CPU-s\": that run's CPU. Flink's CPU is its JVM's plus the Python driver's, its RSS the JVM's VmHWM.)"
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// Flink's runs of one round: over the empty topic (its start-up), then each format over the
/// `n` records of `input`, each output checked for every record exactly once.
fn versus_flink(
    versus: &mut Versus,
    flink: &Flink,
    dir: &std::path::Path,
    b: &str,
    (input, n): (&str, u64),
    empty: &str,
    formats: &[String],
) {
    let out = unique("bench-flink-empty-out");
    create_topic(b, &out);
    let idle = flink.kafka(dir, b, empty, &out, "raw");
    delete_topics(b, &[&out]);
    for format in formats {
        let out = unique(&format!("bench-flink-{format}-out"));
        create_topic(b, &out);
        let run: FlinkRun = flink.kafka(dir, b, input, &out, format);
        assert_exactly_once(b, &out, n, &format!("Flink {format}"));
        delete_topics(b, &[&out]);
        versus.push(
            &format!("Flink {format}"),
            Side {
                rate: n as f64 / run.net_seconds,
                process_rate: n as f64 / run.process_seconds,
                rate_past_startup: n as f64 / (run.net_seconds - idle.net_seconds),
                per_cpu: n as f64 / run.cpu,
                per_cpu_past_startup: n as f64 / (run.cpu - idle.cpu),
                startup_cpu: idle.cpu,
                rss_mib: run.peak_rss_kib as f64 / 1024.0,
            },
        );
    }
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
    let (mut texts, mut text_steadies) = (Vec::new(), Vec::new());
    let mut rss = Vec::new();
    // With WEIR_BENCH_FLINK=1 each round runs Flink's job after weir's, on the same input, and
    // both once more over an empty topic: the CPU a run costs before its first record.
    let flink = flink::enabled().then(Flink::setup);
    let formats = flink_formats();
    let empty = unique("bench-empty");
    let mut versus = Versus::default();
    if flink.is_some() {
        create_topic(&b, &empty);
    }
    for round in 1..=rounds {
        let (raw_out, weir_out) = (unique("bench-raw-out"), unique("bench-weir-out"));
        create_topic(&b, &raw_out);
        create_topic(&b, &weir_out);
        let (raw, steady) = raw_loop(&b, &input, &raw_out, n);
        raw_steady.push(steady);
        let steady_out = unique("bench-weir-steady-out");
        create_topic(&b, &steady_out);
        let io = (input.as_str(), steady_out.as_str());
        weir_steadies.push(weir_steady(dir.path(), &b, io, n, Form::Json));
        let (weir, weir_rss) = weir_bounded(dir.path(), &b, &input, &weir_out, n, "1s", Form::Json);
        rss.push(weir_rss);
        assert_exactly_once(&b, &weir_out, n, "weir");
        delete_topics(&b, &[&raw_out, &weir_out, &steady_out]);
        let (text_out, text_steady_out) =
            (unique("bench-text-out"), unique("bench-text-steady-out"));
        create_topic(&b, &text_out);
        create_topic(&b, &text_steady_out);
        let io = (input.as_str(), text_steady_out.as_str());
        text_steadies.push(weir_steady(dir.path(), &b, io, n, Form::Text));
        let (text, _) = weir_bounded(dir.path(), &b, &input, &text_out, n, "1s", Form::Text);
        // Read back as JSON objects: a value re-encoded as a JSON string would fail here.
        assert_exactly_once(&b, &text_out, n, "weir as text");
        delete_topics(&b, &[&text_out, &text_steady_out]);
        if let Some(flink) = &flink {
            versus.add_weir(&weir, weir_rss, dir.path(), &b, &empty);
            versus_flink(
                &mut versus,
                flink,
                dir.path(),
                &b,
                (&input, n),
                &empty,
                &formats,
            );
        }
        println!(
            "  round {round}: raw rdkafka loop (no transactions) {:>7.0} records/s {:>7.0} records/CPU-s ({:.1} s, {:.1} CPU-s)",
            raw.rate(), raw.per_cpu(), raw.seconds, raw.cpu
        );
        println!(
            "  round {round}: weir exactly-once, 1 s checkpoints {:>7.0} records/s {:>7.0} records/CPU-s ({:.1} s, {:.1} CPU-s, start-up included), peak RSS {} MiB",
            weir.rate(), weir.per_cpu(), weir.seconds, weir.cpu, rss[rss.len() - 1] / 1024
        );
        println!(
            "  round {round}: weir as text (no parsing), 1 s     {:>7.0} records/s {:>7.0} records/CPU-s ({:.1} s, {:.1} CPU-s, start-up included)",
            text.rate(), text.per_cpu(), text.seconds, text.cpu
        );
        let (rs, ws, ts) = (
            &raw_steady[raw_steady.len() - 1],
            &weir_steadies[weir_steadies.len() - 1],
            &text_steadies[text_steadies.len() - 1],
        );
        println!(
            "  round {round}: steady state (10 %–90 % of the records): raw {:>7.0} records/s ({:.0}/CPU-s), weir {:>7.0} records/s ({:.0}/CPU-s), weir as text {:>7.0} records/s ({:.0}/CPU-s)",
            rs.rate(), rs.per_cpu(), ws.rate(), ws.per_cpu(), ts.rate(), ts.per_cpu()
        );
        versus.print_round(round);
        raws.push(raw);
        weirs.push(weir);
        texts.push(text);
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
        "  ratio weir/raw, steady state: throughput {:.0} % ({:.0} vs {:.0} records/s), per CPU-second {:.0} %  (targets ≥ 85 % whole-run, ≥ 60 % per CPU-second)",
        100.0 * ws.rate() / rs.rate(),
        ws.rate(),
        rs.rate(),
        100.0 * ws.per_cpu() / rs.per_cpu()
    );
    let (text, ts) = (total(&texts), total(&text_steadies));
    println!(
        "  ratio weir as text/raw (neither parses), whole runs: throughput {:.0} %, per CPU-second {:.0} %; steady state: throughput {:.0} %, per CPU-second {:.0} %",
        100.0 * text.rate() / raw.rate(),
        100.0 * text.per_cpu() / raw.per_cpu(),
        100.0 * ts.rate() / rs.rate(),
        100.0 * ts.per_cpu() / rs.per_cpu()
    );

    if flink.is_some() {
        versus.print(n, rounds);
        delete_topics(&b, &[&empty]);
    }

    rss.sort_unstable();
    println!(
        "  weir peak RSS: median {} MiB, max {} MiB over {rounds} rounds (target ≤ 150 MiB)",
        rss[rss.len() / 2] / 1024,
        rss[rss.len() - 1] / 1024
    );

    // The load of the latency runs: a share of weir's own 1 s-interval throughput. The records'
    // producer and the read_committed reader run on the same two cores as the broker and weir:
    // at half of weir's maximum (~90,000 records/s of 1 KiB once weir's prefetch was sized) the
    // cores were saturated and a 100 ms run measured a growing backlog, not a latency.
    let share = env_num("WEIR_BENCH_KAFKA_LATENCY_PERCENT", 25) as f64 / 100.0;
    let rate = weir.rate() * share;
    curve(&b, dir.path(), &input, n, rounds, rate, latency_secs);
    delete_topics(&b, &[&input]);
    let records = env_num("WEIR_BENCH_KAFKA_INSTRUCTIONS", 100_000);
    if records > 0 {
        checkpoint_instructions(&b, dir.path(), records, weir.rate());
    }
}

/// The checkpoint overhead of Kafka → Kafka in instructions, which the machine's noise does
/// not blur: `weir run` under callgrind over `n` records, once with 100 ms checkpoints (many
/// of them: callgrind runs weir ~50× slower) and once with a 10 min interval (only the final
/// checkpoint of a bounded run), both exactly once.
/// The cost of one checkpoint (its transaction's flush, DescribeTransactions and commit, the
/// offsets and the manifest) in instructions, and as a share of the work of the `native`
/// records/s a real run does between two checkpoints 1 s and 100 ms apart.
fn checkpoint_instructions(b: &str, dir: &std::path::Path, n: u64, native: f64) {
    use weir_runtime::cli::bench::{callgrind, checkpoint_cost};
    let input = unique("bench-ir-in");
    create_topic(b, &input);
    fill(b, &input, n);
    eprintln!("bench kafka: weir under callgrind over {n} records, 100 ms and 10 min intervals");
    let mut counts = Vec::new();
    for interval in ["100ms", "10m"] {
        let out = unique("bench-ir-out");
        create_topic(b, &out);
        // A slow checkpoint under valgrind is not a failure: a generous timeout.
        let spec = spec(dir, b, (&input, &out), true, (interval, "120s"), Form::Json);
        let summary = dir.join(unique("summary") + ".json");
        let level = log_level();
        let c = callgrind(
            std::path::Path::new(env!("CARGO_BIN_EXE_weir")),
            std::path::Path::new(&spec),
            &summary,
            &[("WEIR_LOG", &level)],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.1, n,
            "weir at {interval} under callgrind wrote {} of {n}",
            c.1
        );
        assert_exactly_once(b, &out, n, &format!("weir at {interval} under callgrind"));
        delete_topics(b, &[&out]);
        counts.push(c);
    }
    delete_topics(b, &[&input]);
    let (on, off) = (counts[0], counts[1]);
    let (per_record, per_checkpoint, overhead) = checkpoint_cost(on, off, native);
    println!(
        "  checkpoint overhead in instructions (callgrind, every thread of weir, {n} records): 100 ms interval {} instructions over {} checkpoints, 10 min interval {} over {} (the final one)",
        on.0, on.2, off.0, off.2
    );
    println!(
        "    {per_record:.0} instructions a record; a checkpoint costs {per_checkpoint:.0} instructions = the work of {:.0} records; at {native:.0} records/s: {:.2} % overhead with a 1 s interval (target ≤ 5 %), {:.2} % with 100 ms",
        per_checkpoint / per_record,
        100.0 * overhead,
        1000.0 * overhead
    );
}

/// `WEIR_BENCH_KAFKA_INTERVALS`: the checkpoint intervals of the curve (default
/// `100ms,250ms,1s,5s`).
fn intervals() -> Vec<String> {
    std::env::var("WEIR_BENCH_KAFKA_INTERVALS")
        .unwrap_or_else(|_| "100ms,250ms,1s,5s".into())
        .split(',')
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

/// The checkpoint interval against throughput and latency: for each interval, weir over the
/// whole input (`rounds` times, interleaved with the other intervals, every output checked
/// exactly once), then records arriving at `rate` (half of weir's 1 s-interval throughput) for
/// `secs`, each record's produce-to-visible time measured. Throughput is a share of the 1 s
/// interval's from the same runs.
fn curve(b: &str, dir: &std::path::Path, input: &str, n: u64, rounds: u64, rate: f64, secs: u64) {
    let intervals = intervals();
    let mut runs: Vec<Vec<(Measure, u64)>> = intervals.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, interval) in intervals.iter().enumerate() {
            let out = unique("bench-curve-out");
            create_topic(b, &out);
            runs[i].push(weir_bounded(dir, b, input, &out, n, interval, Form::Json));
            assert_exactly_once(b, &out, n, &format!("weir at {interval}"));
            delete_topics(b, &[&out]);
        }
    }
    let rate_of = |ms: &[(Measure, u64)]| {
        let (r, s): (u64, f64) = ms
            .iter()
            .map(|(m, _)| (m.records, m.seconds))
            .fold((0, 0.0), |(r, s), (mr, ms)| (r + mr, s + ms));
        r as f64 / s
    };
    let one_second = intervals
        .iter()
        .position(|i| i == "1s")
        .map(|i| rate_of(&runs[i]));
    println!(
        "  checkpoint interval curve: records/s over the {n} records ({rounds} interleaved rounds), then latency at {rate:.0} records/s for {secs} s"
    );
    println!(
        "    interval  records/s  of 1 s  peak RSS MiB  p50 ms  p99 ms  max ms  (targets at 100ms: ≥ 80 % of 1 s, p99 ≤ 300 ms)"
    );
    for (interval, ms) in intervals.iter().zip(&runs) {
        let (lat, missing) = latency(dir, b, rate, secs, interval);
        let r = rate_of(ms);
        let peak = ms.iter().map(|(_, rss)| *rss).max().unwrap_or(0) / 1024;
        let share = one_second.map_or("-".to_string(), |o| format!("{:.0} %", 100.0 * r / o));
        println!(
            "    {interval:>8}  {r:>9.0}  {share:>6}  {peak:>12}  {:>6}  {:>6}  {:>6}  ({} measured, {missing} not visible at the end)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(-1),
            lat.len()
        );
    }
}
