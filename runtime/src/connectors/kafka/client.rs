//! Settings shared by the Kafka source and sink: the bootstrap servers plus any librdkafka
//! property, passed through as given (security, SASL, TLS, tuning).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Deserializer};

/// How often one kind of client line is logged at most; the ones in between are counted.
const FOLD_EVERY: Duration = Duration::from_secs(10);

/// The decision of `fold`, pure: `seen` maps a line to when it was last logged and how many
/// times it came since. `Some(n)`: log it now, after `n` that were held back; `None`: count it.
pub fn fold_decision(
    seen: &mut HashMap<String, (Instant, u64)>,
    key: &str,
    now: Instant,
    every: Duration,
) -> Option<u64> {
    match seen.get_mut(key) {
        Some((at, held)) if now.duration_since(*at) < every => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let n = *held;
            (*at, *held) = (now, 0);
            Some(n)
        }
        None => {
            // A bound on distinct lines kept (each broker's address makes its own).
            if seen.len() >= 1024 {
                seen.retain(|_, (at, _)| now.duration_since(*at) < every);
            }
            seen.insert(key.to_string(), (now, 0));
            Some(0)
        }
    }
}

/// Whether to log this client line now, and how many of it were held back before: a broker
/// outage makes librdkafka repeat the same error for every connection attempt (~150 identical
/// lines a minute), which buries what matters. Shared by every Kafka client of the process.
fn fold(key: &str) -> Option<u64> {
    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().ok()?;
    fold_decision(&mut seen, key, Instant::now(), FOLD_EVERY)
}

/// " (and 12 more like it in 10s)" after a folded line.
fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (and {n} more like it since it was last logged)")
    }
}

/// A librdkafka log line at its weight, folded.
pub fn log_line(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let Some(n) = fold(&format!("{fac}|{message}")) else {
        return;
    };
    let more = held_back(n);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}{more}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}{more}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {message}{more}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}{more}"),
    }
}

/// A client error event at its weight, folded.
pub fn error_event(error: &KafkaError, reason: &str) {
    match error {
        // Reported as a partition error or, from the fetcher, as a global one.
        KafkaError::PartitionEOF(_)
        | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
            tracing::debug!(%reason, "end of partition")
        }
        // The client retries these itself (a broker down, a connection reset); a call that
        // cannot succeed fails on its own.
        e => {
            if let Some(n) = fold(&format!("{e}|{reason}")) {
                tracing::warn!(error = %e, %reason, "Kafka client error{}", held_back(n))
            }
        }
    }
}

/// The source's consumer: client events go to weir's log at their real weight, and the last
/// client error is kept so that a failure can say why.
pub type KafkaConsumer = BaseConsumer<RecordingContext>;

/// librdkafka reports the end of a partition, which a bounded read waits for, as a "global
/// error"; rdkafka's default context would log it at ERROR once per partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error_event(&error, reason);
    }
}

impl ConsumerContext for LogContext {}

/// [`LogContext`] that also keeps the client's last error, so that a call failing only with
/// "broker transport failure" can say why (a refused login, a bad certificate).
#[derive(Clone, Debug, Default)]
pub struct RecordingContext {
    last: Arc<Mutex<Option<String>>>,
}

impl RecordingContext {
    pub fn last_error(&self) -> Option<String> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

impl RecordingContext {
    fn record(&self, text: String) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(text);
        }
    }
}

impl ConsumerContext for RecordingContext {}

impl ClientContext for RecordingContext {
    // librdkafka reports a refused login or certificate as a log line at error level, often
    // before any error event.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        ) {
            self.record(message.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error_event(&error, reason);
        self.record(format!("{error}: {reason}"));
    }
}

/// An rdkafka client configuration from `bootstrap_servers` and pass-through `properties`.
/// Properties win over the defaults set here; the caller's own required settings (for example
/// `transactional.id`) are set afterwards.
pub fn client_config(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// librdkafka's prefetch settings for a consumer that reads each partition through its own
/// queue, as weir's source does, taking at most `batch_size` records per poll. Properties the
/// user set win.
///
/// - `queued.min.messages`: four polls' worth of records per partition (1,000–100,000), enough
///   to keep every partition busy between two fetches.
/// - `queued.max.messages.kbytes`: 2 MiB per partition (two of the broker's 1 MiB partition
///   fetches), whichever of the two is reached first. librdkafka applies its default, 64 MiB,
///   to every partition queue, so a Kafka → Kafka job over four partitions held ~590 MiB; with
///   4 MiB ~190 MiB, with 2 MiB (and the sink's smaller producer queue) ~130 MiB, at the same
///   rate.
/// - `fetch.queue.backoff.ms`: 10 ms. Once a partition's queue reaches those thresholds,
///   librdkafka postpones its next fetch by this long, 1 s by default: with small queues that
///   starved the job (24,000 records/s instead of ~190,000 in the Kafka bench).
/// - `fetch.wait.max.ms`: 50 ms, not 500. librdkafka has one fetch in flight per broker, and
///   a partition whose queue is full is left out of it; when every partition it asks for is at
///   its end, the broker holds the fetch this long, and the full partitions, drained in the
///   meantime, wait for it. With half of the partitions at their end that stall recurred until
///   the rest were read: a Kafka → Kafka job over 500,000 × 1 KiB in 4 partitions ran
///   3.3–4.6 s with 500 ms, 1.7–2.7 s with 50 ms, 1.9–2.3 s with 20 ms, 2.4–2.9 s with 100 ms
///   (`perf stat`, interleaved runs; leaving out one 50 ms run of 4.4 s in which the producer
///   spun, see `sink::linger`). An idle consumer sends 20 fetches a second per broker.
pub fn consumer_buffers(
    batch_size: usize,
    properties: &BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    [
        (
            "queued.min.messages",
            (4 * batch_size).clamp(1_000, 100_000).to_string(),
        ),
        ("queued.max.messages.kbytes", "2048".to_string()),
        ("fetch.queue.backoff.ms", "10".to_string()),
        ("fetch.wait.max.ms", "50".to_string()),
    ]
    .into_iter()
    .filter(|(k, _)| !properties.contains_key(*k))
    .collect()
}

/// Deserializes librdkafka properties, accepting YAML numbers and booleans as well as strings
/// (`session.timeout.ms: 6000`, `enable.idempotence: true`), since librdkafka takes every value
/// as text. Use with `#[serde(default, deserialize_with = "deserialize_properties")]`.
pub fn deserialize_properties<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Option<Scalar>>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Some(Scalar::Text(s)) => s,
                Some(Scalar::Int(i)) => i.to_string(),
                Some(Scalar::Float(f)) => f.to_string(),
                Some(Scalar::Bool(b)) => b.to_string(),
                None => {
                    return Err(serde::de::Error::custom(format!(
                        "property {k:?} has no value (librdkafka properties are strings, numbers or booleans)"
                    )))
                }
            };
            Ok((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_follows_the_batch_and_yields_to_the_user() {
        let none = BTreeMap::new();
        let c = consumer_buffers(2048, &none);
        assert!(c.contains(&("queued.min.messages", "8192".into())));
        assert!(c.contains(&("queued.max.messages.kbytes", "2048".into())));
        assert!(c.contains(&("fetch.queue.backoff.ms", "10".into())));
        assert!(c.contains(&("fetch.wait.max.ms", "50".into())));
        assert!(consumer_buffers(1, &none).contains(&("queued.min.messages", "1000".into())));
        assert!(
            consumer_buffers(1_000_000, &none).contains(&("queued.min.messages", "100000".into()))
        );
        let user: BTreeMap<String, String> = [(
            "queued.max.messages.kbytes".to_string(),
            "65536".to_string(),
        )]
        .into();
        let c = consumer_buffers(2048, &user);
        assert!(c.iter().all(|(k, _)| *k != "queued.max.messages.kbytes"));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn repeated_lines_are_logged_once_per_interval_with_the_count_held_back() {
        let (mut seen, t0, every) = (HashMap::new(), Instant::now(), Duration::from_secs(10));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(fold_decision(&mut seen, "down", at(0), every), Some(0));
        for s in 1..=9 {
            assert_eq!(fold_decision(&mut seen, "down", at(s), every), None);
        }
        // Another line is its own kind.
        assert_eq!(fold_decision(&mut seen, "auth", at(5), every), Some(0));
        assert_eq!(fold_decision(&mut seen, "down", at(10), every), Some(9));
        assert_eq!(fold_decision(&mut seen, "down", at(11), every), None);
        assert_eq!(fold_decision(&mut seen, "down", at(30), every), Some(1));
    }

    #[derive(Deserialize)]
    struct P {
        #[serde(deserialize_with = "deserialize_properties")]
        properties: BTreeMap<String, String>,
    }

    #[test]
    fn properties_accept_scalars_as_text() {
        let p: P = serde_json::from_value(serde_json::json!({
            "properties": { "a": "x", "b": 6000, "c": true, "d": 1.5 }
        }))
        .unwrap();
        assert_eq!(p.properties["a"], "x");
        assert_eq!(p.properties["b"], "6000");
        assert_eq!(p.properties["c"], "true");
        assert_eq!(p.properties["d"], "1.5");
        let err = serde_json::from_value::<P>(serde_json::json!({ "properties": { "a": null } }))
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn user_properties_override_the_bootstrap_default_only_where_given() {
        let mut props = BTreeMap::new();
        props.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let c = client_config("b:9092", &props);
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
    }
}
