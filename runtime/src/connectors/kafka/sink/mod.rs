//! `kafka` sink: records as JSON messages, with `delivery` none, at-least-once, or exactly-once
//! (Kafka transactions committed through the checkpoint's two-phase commit).
//!
//! ```yaml
//! sinks:
//!   - name: out
//!     type: kafka
//!     bootstrap_servers: broker-1:9092,broker-2:9092
//!     topic: orders-enriched          # or topic_field: target_topic
//!     key_field: order_id             # or key_fields: [tenant, order_id] (a JSON array)
//!     value_fields: [order_id, total] # default: the whole record as JSON
//!     # value_field: line             # or one field bare (Flink's `raw`): a string as is
//!     headers: { trace-id: trace }    # header name: field (left out when missing)
//!     delivery: exactly-once          # none | at-least-once (default) | exactly-once
//!     transactional_id_prefix: weir   # ids: <prefix>-<job>-<sink>-<worker>-<n>
//!     transaction_timeout: 15m        # default: from the checkpoint settings and the broker
//!     properties: { linger.ms: 5, compression.type: lz4 }   # any librdkafka property
//! ```
//!
//! Exactly-once: each worker has a small pool of transactional producers (`pool.rs`); a
//! transaction holds the records between two barriers and is committed once the checkpoint
//! that pre-committed it is durable. The committable stores transactional id, producer id and
//! epoch, so that a crash between "checkpoint durable" and "commit" is repaired on restart by
//! re-committing over the Kafka protocol (`recovery.rs`, `protocol.rs`). Consumers must read
//! with `isolation.level=read_committed`. The sink refuses to start when the transaction
//! timeout cannot outlive a checkpoint or exceeds the broker's `transaction.max.timeout.ms`
//! (`timeout.rs`). A job that stays down longer than the transaction timeout loses the
//! transaction it had pre-committed (the broker aborts it); recovery reports that loudly.
//!
//! The recovery client logs in the way the producer does, from the same properties
//! (`security.rs`): `security.protocol` PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL PLAIN,
//! SCRAM-SHA-256 or SCRAM-SHA-512 (`scram.rs`); TLS with `ssl.ca.location`/`ssl.ca.pem` (else the
//! system's CAs), PEM client certificates, `enable.ssl.certificate.verification` and
//! `ssl.endpoint.identification.algorithm`. Other mechanisms (GSSAPI, OAUTHBEARER) and PKCS#12
//! keystores are refused for exactly-once with an error naming the property.

pub(crate) mod broker;
mod config;
mod encode;
mod plain;
mod pool;
mod producer;
mod protocol;
mod recovery;
mod scram;
mod security;
mod timeout;
mod transactional;

pub use config::{Delivery, KafkaSinkConfig, Settings};
pub use recovery::{KafkaCommittable, KafkaSinkState};

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;

use crate::api::{NodeConfig, Registry, SinkBox};
use crate::error::Result;

/// The producer settings every delivery mode shares.
fn producer_config(s: &Settings) -> ClientConfig {
    let mut c = super::client::client_config(&s.bootstrap_servers, &s.properties);
    // Java clients hash keys with murmur2; matching them keeps keyed data co-partitioned with
    // topics other applications write.
    if !s.properties.contains_key("partitioner") {
        c.set("partitioner", "murmur2_random");
    }
    // librdkafka queues up to 1 GiB (100,000 messages) per producer by default, and weir's
    // writes outrun a busy broker, so the queue grew to ~100 MiB of copies in the Kafka bench.
    // See [`PRODUCER_QUEUE_KBYTES`] for the size; a full queue is the sink's backpressure, and
    // a pre-commit's flush drains at most this much.
    if !s.properties.contains_key(PRODUCER_QUEUE_KBYTES.0) {
        c.set(PRODUCER_QUEUE_KBYTES.0, PRODUCER_QUEUE_KBYTES.1);
    }
    // The sink only counts failed deliveries (`producer.rs`), and a flush waits for every
    // message either way. Without a report per delivered message, librdkafka frees each one
    // where the broker's acknowledgement arrives instead of handing it to the polling thread:
    // 1–2 % fewer instructions in a Kafka → Kafka job (callgrind).
    if !s.properties.contains_key(DELIVERY_REPORT_ONLY_ERROR) {
        c.set(DELIVERY_REPORT_ONLY_ERROR, "true");
    }
    c
}

const DELIVERY_REPORT_ONLY_ERROR: &str = "delivery.report.only.error";

/// What the exactly-once producer adds to the sink's `properties`: `linger.ms` from [`linger`],
/// unless the user set it under either of librdkafka's names.
pub(crate) fn exactly_once_linger(
    properties: &BTreeMap<String, String>,
    interval: std::time::Duration,
) -> Option<(&'static str, String)> {
    let set = ["linger.ms", "queue.buffering.max.ms"]
        .iter()
        .any(|k| properties.contains_key(*k));
    (!set).then(|| ("linger.ms", linger(interval).as_millis().to_string()))
}

/// How long an exactly-once producer lets a batch fill: half the checkpoint interval, at least
/// librdkafka's 5 ms and at most 20 ms.
///
/// An idempotent (so every transactional) librdkafka producer sends one ProduceRequest per
/// partition at a time: 2.12 compares the partition's in-flight *messages* with the limit of
/// five in-flight *requests* (confluentinc/librdkafka#4989). While that request is out, a
/// batch that is ready (full, or older than `linger.ms`) made the stock broker thread poll with
/// a zero timeout until the response came: at the default 5 ms, 0.2–2 million `poll` calls per
/// 500,000 records and up to half of a Kafka → Kafka job's CPU. The workspace's librdkafka is
/// patched against that spin (third_party/rdkafka-sys); the linger stays, so that the one
/// request a partition may have out carries a fuller batch. Nothing waits on the linger:
/// records become visible at the commit, and the pre-commit's flush sends what is queued at
/// once.
///
/// At most 20 ms because a batch that never fills waits the whole linger, and the producer
/// queue holds at most [`PRODUCER_QUEUE_KBYTES`]: with more partitions than the queue has room
/// for full batches (`batch.size`, 1 MB), the sink writes at most a queue per linger. At 100 ms
/// and a 2 MiB queue a Kafka → Kafka job over 500,000 × 1 KiB records took 24 s instead of 2–4;
/// 4 MiB per 20 ms is 200 MB/s whatever the partitions. The patched library made the longer
/// linger no cheaper: 20 ms and 100 ms used the same CPU (`perf stat`, interleaved runs).
///
/// One request in flight per broker connection (a waiting request stops the thread from
/// looking for ready batches) cut the `poll` calls further in `perf stat` pairs, but the
/// Kafka bench showed no gain per CPU-second and lower throughput, so it is not a default.
fn linger(interval: std::time::Duration) -> std::time::Duration {
    (interval / 2).clamp(
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(20),
    )
}

/// The producer queue's size in KiB unless the sink's `properties` set it: 4 MiB.
///
/// Messages count against the queue until the broker acknowledges them, so a producer writes
/// at most a queue per produce round trip: 4 MiB per 10–20 ms is 200–400 MB/s, above what one
/// worker writes (~200 MB/s of 1 KiB records in the Kafka bench). 2 MiB capped that job at
/// ~125 MB/s (4.0 s instead of 2.7 s). A smaller queue is less to copy, to keep resident and
/// to flush at a pre-commit: with 4 MiB instead of 16 MiB the job's peak RSS fell from
/// 118–148 MiB to 94–106 MiB at the same CPU (interleaved `perf stat` runs), and an exactly-once
/// sink keeps three or more producers (`config::pool_size`), each with its own queue.
const PRODUCER_QUEUE_KBYTES: (&str, &str) = ("queue.buffering.max.kbytes", "4096");

pub fn register(r: &mut Registry) {
    r.sink("kafka", |cfg| {
        let settings = cfg.resolve::<KafkaSinkConfig>()?;
        Ok(match settings.delivery {
            Delivery::ExactlyOnce => SinkBox::two_phase(transactional::TxnKafkaSink::new(
                settings,
                &cfg.path,
                cfg.name(),
            )),
            Delivery::None | Delivery::AtLeastOnce => {
                SinkBox::plain(plain::PlainKafkaSink::new(settings, cfg.name()))
            }
        })
    });
}

/// `weir validate --connect` for both kinds of Kafka sink: the cluster answers, the topic exists
/// and, exactly-once, the transaction timeout the sink would choose fits the broker's
/// `transaction.max.timeout.ms` (the check `open` makes, before any producer exists: opening a
/// transactional producer would fence a running job's).
async fn preflight(s: &Settings, cfg: &NodeConfig, exactly_once: bool) -> Result<Vec<String>> {
    let cluster = broker::Cluster::connect(&producer_config(s), cfg.name(), &s.bootstrap_servers)?;
    let mut out = Vec::new();
    match &s.topic {
        config::TopicSpec::Fixed(t) => match cluster.partitions(t).await? {
            Some(n) => out.push(format!("topic {t:?} exists ({n} partitions)")),
            None => return Err(cfg.error("topic", cluster.missing_topic(t))),
        },
        _ => out.push(format!(
            "{} answers (the topic comes from each record)",
            s.bootstrap_servers
        )),
    }
    if exactly_once {
        let broker_max = match s.broker_max_timeout {
            Some(known) => Some(known),
            None => cluster.max_transaction_timeout().await?,
        };
        let chosen = transaction_timeout(s, &cfg.path, &cfg.checkpoint, broker_max)?;
        out.push(format!(
            "transaction timeout {} ms fits the broker's {} ({})",
            chosen.as_millis(),
            timeout::BROKER_MAX_CONFIG,
            broker_max.map_or(
                "not readable: the broker checks it at start".to_string(),
                |m| { format!("{} ms", m.as_millis()) }
            )
        ));
    }
    Ok(out)
}

/// The exactly-once sink's transaction timeout for these checkpoint settings and broker maximum.
/// The field an error names is the one to change: the user's timeout when there is one, else the
/// checkpoint settings that need a longer transaction than the broker allows.
fn transaction_timeout(
    s: &Settings,
    path: &str,
    cp: &weir_crds::CheckpointSpec,
    broker_max: Option<std::time::Duration>,
) -> Result<std::time::Duration> {
    let field = match s.transaction_timeout {
        Some(_) => format!("{path}.transaction_timeout"),
        None => "checkpoint".to_string(),
    };
    timeout::choose(s.transaction_timeout, cp, broker_max)
        .map_err(|m| crate::error::Error::spec(field, m))
}
