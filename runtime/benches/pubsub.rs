//! Pub/Sub throughput against the emulator, weir against a raw google-cloud-pubsub loop with
//! the same settings, measured in the same run on the same emulator, `WEIR_BENCH_PUBSUB_ROUNDS`
//! rounds of the source (default 2) and `WEIR_BENCH_PUBSUB_SINK_ROUNDS` of the sink (default 12),
//! each with fresh topics:
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
//! The sink's two sides take turns publishing first (odd rounds raw, even rounds weir).
//!
//! `cargo bench -p weir-runtime --bench pubsub`. Env: `PUBSUB_EMULATOR_HOST` (else
//! e2e/services/pubsub.sh starts the emulator), `WEIR_BENCH_PUBSUB_RECORDS` (default 50,000),
//! `WEIR_BENCH_PUBSUB_SINK_RECORDS` (default 2,000,000: the publisher is ~100× faster than the
//! emulator's delivery; at 500,000 a side ran about a second and one emulator pause moved a
//! round's ratio by 20 points), `WEIR_BENCH_PUBSUB_SINK_ROUNDS` (default 12; the sink's figure
//! is the median and the mean of the rounds' paired ratios: one round's ratio still ranges
//! 77–115 % with the emulator's and the machine's drift, a standard deviation of ~10 points, so
//! 6 rounds left the run's figure ±5 points from the next run's).

#[path = "common/mod.rs"]
mod common;

// The allocator of the `weir` binary (runtime/src/main.rs), since the engine runs in this
// process: under glibc's malloc, malloc and free were 15 % of the job's samples here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{cpu_seconds, env_num, listener_pid, process_cpu, service_env};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::publisher::PublishFuture;
use weir_runtime::connectors::pubsub::client;
use weir_runtime::connectors::pubsub::config::Endpoint;
use weir_runtime::metrics::Metrics;

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

/// Deletes the round's two subscriptions. The emulator never ends a streaming pull whose
/// client has gone: a thread per stream keeps pulling from its subscription every 50 ms
/// (tests/it/pubsub/emulator.rs, `release_leases`). Deleting the subscription ends them, so
/// the streams of earlier rounds take no emulator CPU from later ones.
async fn retire(e: &Endpoint, id: &str) {
    let subs = client::subscription_admin("bench", e).await.unwrap();
    for s in ["raw", "weir"] {
        let name = format!("projects/{PROJECT}/subscriptions/{id}-{s}");
        if let Err(err) = subs
            .delete_subscription()
            .set_subscription(&name)
            .send()
            .await
        {
            eprintln!("bench pubsub: could not delete {name}: {err}");
        }
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
/// awaited while `MAX_IN_FLIGHT` are unacknowledged), every acknowledgement awaited. Returns the
/// time to build the publisher, and the time from the first publish to the last acknowledgement.
async fn raw_publish(
    e: &Endpoint,
    id: &str,
    n: u64,
    message: fn(u64) -> Vec<u8>,
) -> (Duration, Duration) {
    let topic = format!("projects/{PROJECT}/topics/{id}");
    let connect = Instant::now();
    let p = client::publisher("bench", e, &topic, |b| {
        b.set_message_count_threshold(BATCH_MESSAGES)
            .set_byte_threshold(BATCH_BYTES)
            .set_delay_threshold(BATCH_DELAY)
    })
    .await
    .unwrap();
    let connect = connect.elapsed();
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
    (connect, start.elapsed())
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

/// What one weir run took: its rate over the whole run and, for a sink run, its phases.
struct Run {
    /// Records out of `node` per second of the whole run (job start to its end, minus `idle`).
    rate: f64,
    out: u64,
    phases: Option<Phases>,
}

/// A sink run's timeline, sampled every [`SAMPLE`] from the sink's counters: records handed to
/// it (`weir_node_records_in_total`) and acknowledged by Pub/Sub (`weir_pubsub_published_total`).
#[derive(Clone, Copy, Default)]
struct Phases {
    /// Job start to the first record handed to the sink: building the job, connecting,
    /// preflight, the first datagen batch.
    start: Duration,
    /// The first record handed to the sink to the last acknowledgement: what the raw loop's
    /// figure covers.
    steady: Duration,
    /// Within `steady`, the time no record was handed to the sink for at least [`STALL`]
    /// (a checkpoint draining, or any other pause of the data path).
    stalled: Duration,
    /// The last acknowledgement to the job's end: the final checkpoint and shutdown.
    end: Duration,
    /// Checkpoints completed, and their summed duration (barrier injection to commit).
    checkpoints: u64,
    checkpoint_time: Duration,
}

const SAMPLE: Duration = Duration::from_millis(2);
const STALL: Duration = Duration::from_millis(10);

/// The sum of `weir_pubsub_published_total` for job `job` (a counter of the process's default
/// registry, which lives across rounds).
fn published(job: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == "weir_pubsub_published_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "job" && l.value() == job)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// `metric`'s value for the line of `text` (Prometheus exposition) that starts with it.
fn exposed(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Samples a sink run until `done`: the timeline's instants relative to `start`.
fn sample_sink(
    job: &str,
    records_in: prometheus::IntCounter,
    expected: u64,
    start: Instant,
    done: &std::sync::atomic::AtomicBool,
) -> (Duration, Duration, Duration) {
    let base = published(job);
    let (mut first_in, mut last_ack, mut stalled) = (None, None, Duration::ZERO);
    let (mut last_count, mut last_change) = (0, start);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(SAMPLE);
        let now = Instant::now();
        let n = records_in.get();
        if n > 0 && first_in.is_none() {
            first_in = Some(now);
        }
        if n != last_count {
            // Only pauses while records were still to come count as stalls.
            let gap = now - last_change;
            if last_count > 0 && gap >= STALL {
                stalled += gap;
            }
            last_count = n;
            last_change = now;
        }
        // Gathering the registry costs far more than reading one counter: only once every
        // record was handed over can the last one be acknowledged.
        if last_ack.is_none() && n >= expected && published(job) - base >= expected {
            last_ack = Some(now);
        }
    }
    let first_in = first_in.unwrap_or(start);
    let last_ack = last_ack.unwrap_or_else(Instant::now);
    (first_in - start, last_ack - first_in, stalled)
}

fn weir(yaml: &str, node: &str, idle: Duration, sink: Option<u64>) -> Run {
    let spec = weir_crds::PipelineSpec::from_yaml(yaml).unwrap();
    let job_name = spec.name.clone();
    let metrics = Metrics::new();
    // Its own thread name, so that a profile can tell the job from the raw loops
    // (`perf report --comm weir-job`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("weir-job")
        .enable_all()
        .build()
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let (elapsed, timeline) = std::thread::scope(|s| {
        let sampler = sink.map(|expected| {
            let records_in = metrics.node(&job_name, 0, "out").records_in;
            let (job, done) = (&job_name, &done);
            s.spawn(move || sample_sink(job, records_in, expected, start, done))
        });
        rt.block_on(async {
            let job = common::start_in_process(spec, &metrics).await;
            job.wait().await.unwrap();
        });
        let elapsed = start.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (elapsed, sampler.map(|h| h.join().unwrap()))
    });
    let secs = (elapsed - idle).as_secs_f64();
    let text = metrics.render();
    let out = exposed(
        &text
            .lines()
            .filter(|l| l.contains(&format!("node=\"{node}\"")))
            .collect::<Vec<_>>()
            .join("\n"),
        "weir_node_records_out_total",
    ) as u64;
    let phases = timeline.map(|(start, steady, stalled)| Phases {
        start,
        steady,
        stalled,
        end: elapsed.saturating_sub(start + steady),
        checkpoints: exposed(&text, "weir_checkpoint_duration_seconds_count") as u64,
        checkpoint_time: Duration::from_secs_f64(exposed(
            &text,
            "weir_checkpoint_duration_seconds_sum",
        )),
    });
    Run {
        rate: out as f64 / secs,
        out,
        phases,
    }
}

fn pct(a: f64, b: f64) -> f64 {
    100.0 * a / b
}

fn main() {
    let n = env_num("WEIR_BENCH_PUBSUB_RECORDS", 50_000);
    let n_sink = env_num("WEIR_BENCH_PUBSUB_SINK_RECORDS", 2_000_000);
    let rounds = env_num("WEIR_BENCH_PUBSUB_ROUNDS", 2);
    let sink_rounds = env_num("WEIR_BENCH_PUBSUB_SINK_ROUNDS", 12);
    let host = service_env("pubsub", "PUBSUB_EMULATOR_HOST");
    let e = Endpoint::Emulator(host.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "pubsub (emulator at {host}): {n} messages read, {n_sink} published, ~170 B JSON, one worker"
    );
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    // Means over rounds: source raw, weir; sink raw and weir whole-run, raw and weir steady.
    let (mut source_sums, mut source_k) = ([0.0; 2], 0.0);
    let (mut sink_sums, mut sink_k) = ([0.0; 4], 0.0);
    // Each sink round's weir/raw ratios (steady, whole run): the two sides of a round run back
    // to back on the same emulator, whose own speed drifts by ±30 % from round to round, so
    // the median of the paired ratios is the figure that noise moves least.
    let (mut steady_ratios, mut whole_ratios) = (Vec::new(), Vec::new());
    // CPU per published message, µs: this process (raw loop, or weir's job) and the emulator
    // while each side publishes. Both share the machine's cores, so a side that spends more
    // CPU per message leaves less to the emulator, which is what sets the pace.
    let emulator = host
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .and_then(listener_pid);
    let cpu = || {
        (
            cpu_seconds(libc::RUSAGE_SELF),
            emulator.map_or(f64::NAN, process_cpu),
        )
    };
    let per_msg = |a: (f64, f64), b: (f64, f64)| {
        let us = |x: f64| x * 1e6 / n_sink as f64;
        (us(b.0 - a.0), us(b.1 - a.1))
    };
    let mut cpu_rows: Vec<[f64; 4]> = Vec::new();
    for round in 1..=rounds.max(sink_rounds) {
        let id = format!(
            "bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        rt.block_on(prepare(&e, &id, if round <= rounds { n } else { 0 }));
        if round <= rounds {
            let raw_source = rt.block_on(raw_receive(
                &e,
                &format!("projects/{PROJECT}/subscriptions/{id}-raw"),
                n,
            ));
            let source = weir(
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
                None,
            );
            assert_eq!(source.out, n, "every message read once");
            println!(
                "  round {round}: source raw {raw_source:>8.0} | weir {:>8.0} msg/s ({:.1} %)",
                source.rate,
                pct(source.rate, raw_source),
            );
            source_sums[0] += raw_source;
            source_sums[1] += source.rate;
            source_k += 1.0;
            rt.block_on(retire(&e, &id));
        }
        if round > sink_rounds {
            continue;
        }
        // Which side publishes first alternates by round: the emulator keeps warming up (its
        // JIT) over the first rounds, which favoured whichever side always ran second.
        let raw_run = || {
            let c0 = cpu();
            let r = rt.block_on(raw_publish(&e, &format!("{id}-out"), n_sink, datagen_like));
            (r, per_msg(c0, cpu()))
        };
        let raw_first = round % 2 == 1;
        let raw_early = raw_first.then(raw_run);
        let weir_c0 = cpu();
        let sink = weir(
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
            Some(n_sink),
        );
        let weir_cpu = per_msg(weir_c0, cpu());
        let ((raw_connect, raw_steady), raw_cpu) = raw_early.unwrap_or_else(raw_run);
        assert_eq!(sink.out, n_sink, "every record generated");
        let p = sink.phases.expect("a sink run is sampled");
        let raw_whole = rate(n_sink, raw_connect + raw_steady);
        let (raw_steady, weir_steady) = (rate(n_sink, raw_steady), rate(n_sink, p.steady));
        println!(
            "  round {round}: sink whole run: raw {raw_whole:>8.0} | weir {:>8.0} msg/s ({:.1} %)   \
             first publish to last ack: raw {raw_steady:>8.0} | weir {weir_steady:>8.0} msg/s ({:.1} %)",
            sink.rate,
            pct(sink.rate, raw_whole),
            pct(weir_steady, raw_steady),
        );
        println!(
            "           weir sink phases: start {:.0} ms, steady {:.0} ms (of it stalled ≥ {} ms: \
             {:.0} ms), end {:.0} ms; {} checkpoints, {:.0} ms in all; raw connect {:.0} ms",
            p.start.as_secs_f64() * 1e3,
            p.steady.as_secs_f64() * 1e3,
            STALL.as_millis(),
            p.stalled.as_secs_f64() * 1e3,
            p.end.as_secs_f64() * 1e3,
            p.checkpoints,
            p.checkpoint_time.as_secs_f64() * 1e3,
            raw_connect.as_secs_f64() * 1e3,
        );
        println!(
            "           CPU µs per message: raw loop {:.2} | weir job {:.2} ({:.1} %); \
             emulator while raw {:.2} | while weir {:.2}",
            raw_cpu.0,
            weir_cpu.0,
            pct(weir_cpu.0, raw_cpu.0),
            raw_cpu.1,
            weir_cpu.1,
        );
        cpu_rows.push([raw_cpu.0, weir_cpu.0, raw_cpu.1, weir_cpu.1]);
        for (s, x) in sink_sums
            .iter_mut()
            .zip([raw_whole, sink.rate, raw_steady, weir_steady])
        {
            *s += x;
        }
        sink_k += 1.0;
        steady_ratios.push(pct(weir_steady, raw_steady));
        whole_ratios.push(pct(sink.rate, raw_whole));
    }
    let [rs, ws] = source_sums.map(|s| s / source_k);
    let [rw, ww, rp, wp] = sink_sums.map(|s| s / sink_k);
    println!("  raw subscriber (ack each second)   {rs:>10.0} msg/s");
    println!(
        "  weir pubsub → blackhole (1 s cps)  {ws:>10.0} msg/s  ({:.1} % of raw)",
        pct(ws, rs)
    );
    println!(
        "  raw publisher (same batching, {MAX_IN_FLIGHT} in flight), first publish to last ack {rp:>10.0} msg/s; \
         with its connect {rw:>10.0} msg/s"
    );
    println!(
        "  weir datagen → pubsub (1 s cps), first record to last ack {wp:>10.0} msg/s ({:.1} % of raw); \
         whole run (job start to end) {ww:>10.0} msg/s ({:.1} % of raw with connect)",
        pct(wp, rp),
        pct(ww, rw)
    );
    println!(
        "  weir/raw sink, {} paired rounds: first record to last ack median {:.1} %, mean {:.1} % (rounds {}); whole run median {:.1} %",
        steady_ratios.len(),
        median(&steady_ratios),
        steady_ratios.iter().sum::<f64>() / steady_ratios.len() as f64,
        steady_ratios
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&whole_ratios),
    );
    let col = |k: usize| median(&cpu_rows.iter().map(|r| r[k]).collect::<Vec<_>>());
    println!(
        "  CPU µs per published message, medians: raw loop {:.2} | weir job {:.2} ({:.1} % of raw); \
         emulator while raw {:.2} | while weir {:.2}",
        col(0),
        col(1),
        pct(col(1), col(0)),
        col(2),
        col(3),
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
