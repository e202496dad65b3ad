//! Settings of a `firehose` sink, resolved without I/O (the factory also runs for `weir validate`).

use serde::Deserialize;
use weir_crds::Duration;

use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::aws::arn::{self, ResourceKind};
use crate::connectors::aws::connection::default_request_timeout;
use crate::connectors::aws::connection::{AwsConnection, AwsCredentials};
use crate::connectors::aws::put::config::default_max_concurrency;
use crate::connectors::aws::put::config::{self as put, BatchConfig, Ordering, PutSettings};
use crate::connectors::aws::put::dead_letter::DeadLetterPath;
use crate::connectors::aws::put::Limits;
use crate::error::Result;
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// Settings of a `firehose` sink: records to an Amazon Data Firehose delivery stream with
/// PutRecordBatch, at-least-once (every record acknowledged before a checkpoint completes).
///
/// ```yaml
/// sinks:
///   - name: archive
///     type: firehose
///     delivery_stream: orders-to-s3    # name or ARN
///     region: eu-west-1
///     record_delimiter: "\n"           # so the objects Firehose writes are JSON lines
///     batch: { max_records: 500, max_bytes: 4MiB, linger: 100ms }
///     max_concurrency: 8
///     on_error: fail                   # | skip | {dead_letter: {path: s3://bucket/dlq/}}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseSinkConfig {
    /// The delivery stream, by name or ARN.
    pub delivery_stream: String,
    pub region: Option<String>,
    /// A local server or VPC endpoint, e.g. `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub credentials: AwsCredentials,
    /// The field whose value is the record's data; default: the whole record as JSON.
    pub value_field: Option<String>,
    /// Appended to every record (Firehose concatenates records as they are); `""` for none.
    #[serde(default = "default_delimiter")]
    pub record_delimiter: String,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Retries of refused entries and failed requests. Default: backoff 100ms, max_backoff
    /// 10s, 20 attempts.
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub on_error: OnError<DeadLetterPath>,
    /// Limit of one request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
}

fn default_delimiter() -> String {
    "\n".into()
}

/// PutRecordBatch: 500 records and 4 MiB per request, 1000 KiB per record.
pub const LIMITS: Limits = Limits {
    max_records: 500,
    max_request_bytes: 4 * 1024 * 1024,
    max_record_bytes: 1000 * 1024,
};

#[derive(Debug, Clone)]
pub struct Settings {
    /// The delivery stream's name (the API takes names only).
    pub delivery_stream: String,
    pub connection: AwsConnection,
    pub value_field: Option<String>,
    pub record_delimiter: Vec<u8>,
    pub put: PutSettings,
    pub request_timeout: std::time::Duration,
}

/// How a delivery stream is named: `orders` or
/// `arn:aws:firehose:REGION:ACCOUNT:deliverystream/orders`.
pub const DELIVERY_STREAM: ResourceKind = ResourceKind {
    service: "firehose",
    resource: "deliverystream",
    arn_is: "Firehose ARN",
    name_is: "delivery stream name",
    max_name: 64,
};

impl ConnectorConfig for FirehoseSinkConfig {
    type Settings = Settings;

    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let c = self;
        let stream = DELIVERY_STREAM
            .parse(&c.delivery_stream)
            .map_err(|e| cfg.error("delivery_stream", e))?;
        let region = arn::region(c.region.as_deref(), stream.region.as_deref(), || {
            "the delivery stream's ARN".into()
        })
        .map_err(|e| cfg.error("region", e))?
        .map(str::to_string);
        let connection = AwsConnection {
            region,
            endpoint_url: c.endpoint_url,
            credentials: c.credentials,
        };
        connection.check(cfg)?;
        if c.value_field.as_deref().is_some_and(str::is_empty) {
            return Err(cfg.error("value_field", "must not be empty"));
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
            Ordering::None,
        )?;
        Ok(Settings {
            delivery_stream: stream.name,
            connection,
            value_field: c.value_field,
            record_delimiter: c.record_delimiter.into_bytes(),
            put,
            request_timeout: c.request_timeout.as_std(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: Value) -> Result<Settings> {
        NodeConfig::for_test("sinks[1]", "firehose", v).resolve::<FirehoseSinkConfig>()
    }
    use serde_json::{json, Value};

    #[test]
    fn names_arns_and_defaults() {
        let s = resolve(json!({"delivery_stream": "d1"})).unwrap();
        assert_eq!(s.delivery_stream, "d1");
        assert_eq!(s.record_delimiter, b"\n");
        assert_eq!(s.put.limits, LIMITS);
        let a = resolve(json!({
            "delivery_stream": "arn:aws:firehose:eu-west-1:123456789012:deliverystream/d1",
            "record_delimiter": ""
        }))
        .unwrap();
        assert_eq!(a.delivery_stream, "d1");
        assert_eq!(a.connection.region.as_deref(), Some("eu-west-1"));
        assert!(a.record_delimiter.is_empty());
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (v, needle) in [
            (
                json!({"delivery_stream": "a/b"}),
                "sinks[1].delivery_stream:",
            ),
            (
                json!({"delivery_stream": "arn:aws:kinesis:eu-west-1:1:stream/x"}),
                "sinks[1].delivery_stream:",
            ),
            (
                json!({"delivery_stream": "arn:aws:firehose:eu-west-1:1:deliverystream/x", "region": "us-east-1"}),
                "sinks[1].region:",
            ),
            (
                json!({"delivery_stream": "d", "batch": {"max_bytes": "5MiB"}}),
                "sinks[1].batch.max_bytes:",
            ),
            (
                json!({"delivery_stream": "d", "ordering": "per_key"}),
                "ordering: unknown field",
            ),
            (
                json!({"delivery_stream": "d", "value_field": ""}),
                "sinks[1].value_field:",
            ),
        ] {
            let e = resolve(v.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
