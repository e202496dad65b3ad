//! Settings shared by the Kafka source and sink: the bootstrap servers plus any librdkafka
//! property, passed through as given (security, SASL, TLS, tuning).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Deserializer};

/// The source's consumer: client events go to weir's log at their real weight, and the last
/// client error is kept so that a failure can say why.
pub type KafkaConsumer = BaseConsumer<RecordingContext>;

/// librdkafka reports the end of a partition, which a bounded read waits for, as a "global
/// error"; rdkafka's default context would log it at ERROR once per partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            // Reported as a partition error or, from the fetcher, as a global one.
            KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
                tracing::debug!(%reason, "end of partition")
            }
            // The client retries these itself (a broker down, a connection reset); a
            // call that cannot succeed fails on its own.
            e => tracing::warn!(error = %e, %reason, "Kafka client error"),
        }
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
        DefaultClientContext.log(level, fac, message);
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
        LogContext.error(error.clone(), reason);
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
