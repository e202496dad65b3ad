//! Settings of a `kinesis` sink, resolved without I/O (the factory also runs for `weir validate`).

use serde::Deserialize;
use weir_crds::Duration;

use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::aws::connection::default_request_timeout;
use crate::connectors::aws::connection::{AwsConnection, AwsCredentials};
use crate::connectors::aws::put::config::default_max_concurrency;
use crate::connectors::aws::put::config::{self as put, BatchConfig, Ordering, PutSettings};
use crate::connectors::aws::put::dead_letter::DeadLetterPath;
use crate::connectors::aws::put::Limits;
use crate::connectors::kinesis::stream::StreamRef;
use crate::error::Result;
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// Settings of a `kinesis` sink (at-least-once: every record is acknowledged by Kinesis before
/// a checkpoint completes).
///
/// ```yaml
/// sinks:
///   - name: out
///     type: kinesis
///     stream: orders-enriched          # name or ARN
///     region: eu-west-1
///     partition_key_field: customer    # default: a random key per record
///     batch: { max_records: 500, max_bytes: 5MiB, linger: 100ms }
///     max_concurrency: 8               # requests in flight at most (AIMD below it)
///     retry: { backoff: 100ms, max_backoff: 10s, max_attempts: 20 }
///     on_error: fail                   # | skip | {dead_letter: {path: s3://bucket/dlq/}}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// The stream, by name or ARN.
    pub stream: String,
    pub region: Option<String>,
    /// A local server or VPC endpoint, e.g. `http://127.0.0.1:4568`.
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub credentials: AwsCredentials,
    /// The field whose value is each record's partition key (a string as is, anything else
    /// as JSON). Without it every record gets a random key, which spreads records evenly over
    /// the shards.
    pub partition_key_field: Option<String>,
    /// The field holding an explicit hash key (a decimal number below 2^128) that picks the
    /// shard instead of the partition key's hash.
    pub explicit_hash_key_field: Option<String>,
    /// The field whose value is the record's data; default: the whole record as JSON.
    pub value_field: Option<String>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Retries of refused entries and failed requests. Default: backoff 100ms, max_backoff
    /// 10s, 20 attempts.
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub on_error: OnError<DeadLetterPath>,
    #[serde(default)]
    pub ordering: Ordering,
    /// Limit of one request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
}

/// PutRecords: 500 records and 5 MiB per request, 1 MiB per record (data plus partition key).
pub const LIMITS: Limits = Limits {
    max_records: 500,
    max_request_bytes: 5 * 1024 * 1024,
    max_record_bytes: 1024 * 1024,
};

/// How a record becomes a PutRecords entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub partition_key_field: Option<String>,
    pub explicit_hash_key_field: Option<String>,
    pub value_field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub stream: StreamRef,
    pub connection: AwsConnection,
    pub entry: EntrySpec,
    pub put: PutSettings,
    pub request_timeout: std::time::Duration,
}

impl ConnectorConfig for KinesisSinkConfig {
    type Settings = Settings;

    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let c = self;
        let stream = StreamRef::parse(&c.stream).map_err(|e| cfg.error("stream", e))?;
        let region = stream
            .region(c.region.as_deref())
            .map_err(|e| cfg.error("region", e))?
            .map(str::to_string);
        let connection = AwsConnection {
            region,
            endpoint_url: c.endpoint_url,
            credentials: c.credentials,
        };
        connection.check(cfg)?;
        for (name, v) in [
            ("partition_key_field", &c.partition_key_field),
            ("explicit_hash_key_field", &c.explicit_hash_key_field),
            ("value_field", &c.value_field),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(cfg.error(name, "must not be empty"));
            }
        }
        if c.ordering == Ordering::PerKey && c.partition_key_field.is_none() {
            return Err(cfg.error(
                "ordering",
                "per_key needs partition_key_field (random keys have no order to keep)",
            ));
        }
        if c.request_timeout.as_millis() == 0 {
            return Err(cfg.error("request_timeout", "must be more than 0s"));
        }
        let put = put::resolve(
            cfg,
            LIMITS,
            &c.batch,
            c.max_concurrency,
            c.retry,
            c.on_error,
            c.ordering,
        )?;
        Ok(Settings {
            stream,
            connection,
            entry: EntrySpec {
                partition_key_field: c.partition_key_field,
                explicit_hash_key_field: c.explicit_hash_key_field,
                value_field: c.value_field,
            },
            put,
            request_timeout: c.request_timeout.as_std(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: Value) -> Result<Settings> {
        NodeConfig::for_test("sinks[0]", "kinesis", v).resolve::<KinesisSinkConfig>()
    }
    use serde_json::{json, Value};

    fn err(v: Value) -> String {
        resolve(v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_use_the_service_limits() {
        let s = resolve(json!({"stream": "orders"})).unwrap();
        assert_eq!(s.put.limits, LIMITS);
        assert_eq!(s.put.max_concurrency, 8);
        assert_eq!(s.put.ordering, Ordering::None);
        assert_eq!(s.put.retry.max_attempts, Some(20));
        assert_eq!(s.put.linger, std::time::Duration::from_millis(100));
        let arn =
            resolve(json!({"stream": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"}))
                .unwrap();
        assert_eq!(arn.connection.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (v, path) in [
            (json!({}), "sinks[0].stream: required, but missing"),
            (json!({"stream": "a b"}), "sinks[0].stream:"),
            (
                json!({"stream": "arn:aws:kinesis:eu-west-1:1:stream/x", "region": "us-east-1"}),
                "sinks[0].region:",
            ),
            (
                json!({"stream": "s", "batch": {"max_records": 501}}),
                "sinks[0].batch.max_records:",
            ),
            (
                json!({"stream": "s", "batch": {"max_bytes": "6MiB"}}),
                "sinks[0].batch.max_bytes:",
            ),
            (
                json!({"stream": "s", "batch": {"max_bytes": "10KiB"}}),
                "sinks[0].batch.max_bytes:",
            ),
            (
                json!({"stream": "s", "max_concurrency": 0}),
                "sinks[0].max_concurrency:",
            ),
            (
                json!({"stream": "s", "ordering": "per_key"}),
                "sinks[0].ordering:",
            ),
            (
                json!({"stream": "s", "partition_key_field": ""}),
                "sinks[0].partition_key_field:",
            ),
            (
                json!({"stream": "s", "retry": {"jitter": 3}}),
                "sinks[0].retry:",
            ),
            (
                json!({"stream": "s", "on_error": {"dead_letter": {"path": ""}}}),
                "sinks[0].on_error.dead_letter:",
            ),
            (json!({"stream": "s", "colour": 1}), "colour: unknown field"),
            (
                json!({"stream": "s", "endpoint_url": "nope"}),
                "sinks[0].endpoint_url:",
            ),
        ] {
            let e = err(v.clone());
            assert!(e.contains(path), "{v}: {e}");
        }
    }
}
