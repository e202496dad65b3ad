//! The source's settings as written in the spec, and their resolution into [`Settings`]:
//! defaults applied, cross-field rules checked, nothing opened (the factory also runs for
//! `weir validate`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_crds::Duration;

use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::aws::connection::default_request_timeout;
use crate::connectors::aws::connection::{AwsConnection, AwsCredentials};
use crate::connectors::kinesis::stream::StreamRef;
use crate::connectors::message::default_value_field;
pub use crate::connectors::message::ValueFormat;
use crate::error::Result;
use crate::event_time::WatermarkSettings;
use crate::event_time::{parse_time, EventTime, EventTimeForms, EventTimeSource, TimeFormat};
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// Settings of a `kinesis` source.
///
/// ```yaml
/// sources:
///   - name: orders
///     type: kinesis
///     streams: [orders]                # names or ARNs; or {stream: NAME, starting_position: …}
///     region: eu-west-1
///     starting_position: trim_horizon  # | latest | {at_timestamp: "2024-05-01T00:00:00Z"}
///     reader: polling                  # | efo (enhanced fan-out)
///     polling: { max_records: 10000, interval: 200ms, idle_interval: 1s }
///     efo: { consumer_name: orders-app, registration: job }   # with reader: efo
///     on_expired_position: fail        # | trim_horizon | latest
///     shard_discovery_interval: 10s
///     format: json                     # | string | bytes (base64), under `value_field`
///     metadata: { partition_key: _key, sequence_number: _seq, shard_id: _shard,
///                 stream: _stream, arrival_timestamp: _arrival }
///     event_time: arrival_timestamp    # or {field: ts, format: auto}
///     watermark: { max_out_of_orderness: 5s, idle_timeout: 30s }
///     on_error: fail                   # | skip (records that cannot be decoded)
/// ```
///
/// Positions (sequence numbers) live in weir's checkpoints. Shards are assigned to workers by
/// their hash-key range, so a rescale through a savepoint moves shards without loss. A child
/// shard (after a split or merge) is read only once all its parents are read to their end and,
/// where a parent belongs to another worker, that worker's checkpoint says so: per partition
/// key, records keep their order across resharding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    pub streams: Vec<StreamEntry>,
    pub region: Option<String>,
    /// A local server or VPC endpoint, e.g. `http://127.0.0.1:4568`.
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub credentials: AwsCredentials,
    /// Where the shards of a stream start when the job first reads it; per stream in
    /// `streams`. After a restore, shards that appeared meanwhile are read from their start.
    #[serde(default)]
    pub starting_position: StartingPosition,
    #[serde(default)]
    pub reader: ReaderKind,
    #[serde(default)]
    pub polling: PollingConfig,
    /// Enhanced fan-out, with `reader: efo`.
    pub efo: Option<EfoConfig>,
    /// What to do when a checkpointed position no longer exists (data past the retention
    /// period, a shard that expired, a stream deleted and created again): `fail` (default),
    /// or go on from `trim_horizon` or `latest`. Logged and counted in
    /// `weir_kinesis_expired_positions_total` either way.
    #[serde(default)]
    pub on_expired_position: ExpiredPolicy,
    /// How often the shard list is read (new shards, closed shards, expired ones); shards that
    /// end announce their children at once anyway.
    #[serde(default = "default_discovery")]
    pub shard_discovery_interval: Duration,
    #[serde(default)]
    pub format: ValueFormat,
    /// Field holding the data for `string` and `bytes` formats.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    #[serde(default)]
    pub metadata: MetadataFields,
    #[serde(
        default,
        deserialize_with = "KinesisSourceConfig::deserialize_event_time"
    )]
    pub event_time: Option<EventTime>,
    #[serde(default)]
    pub watermark: Option<WatermarkSettings>,
    /// Records that cannot be decoded: `fail` (naming stream, shard and sequence number) or
    /// `skip`.
    #[serde(default)]
    pub on_error: OnError,
    /// Retries of failed calls (throttled calls are retried without limit, counted in
    /// `weir_kinesis_shard_throttles_total`). Default: 100ms doubling to 30s, 10 attempts.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Limit of one request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
}

fn default_discovery() -> Duration {
    Duration::from_secs(10)
}

/// A stream: `orders`, an ARN, or `{stream: orders, starting_position: latest}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub enum StreamEntry {
    Name(String),
    Detailed(DetailedStream),
}

impl TryFrom<Value> for StreamEntry {
    type Error = String;
    fn try_from(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::String(s) => Ok(StreamEntry::Name(s)),
            Value::Object(_) => serde_json::from_value(v)
                .map(StreamEntry::Detailed)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "expected a stream name or ARN, or {{stream: NAME, starting_position: …}}, got {other}"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedStream {
    pub stream: String,
    pub starting_position: Option<StartingPosition>,
}

/// Where a stream is first read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "Value")]
pub enum StartingPosition {
    /// The oldest record of every shard.
    #[default]
    TrimHorizon,
    /// Records that arrive after the job first starts (fixed as that time in the checkpoint,
    /// so a restart before the first record skips nothing).
    Latest,
    /// Records that arrived at or after this time (ms since the epoch).
    AtTimestamp(i64),
}

const STARTING_FORMS: &str =
    "expected trim_horizon, latest or {at_timestamp: RFC 3339 time or ms since the epoch}";

impl TryFrom<Value> for StartingPosition {
    type Error = String;
    fn try_from(v: Value) -> std::result::Result<Self, String> {
        match &v {
            Value::String(s) if s == "trim_horizon" => Ok(StartingPosition::TrimHorizon),
            Value::String(s) if s == "latest" => Ok(StartingPosition::Latest),
            Value::Object(m) if m.len() == 1 && m.contains_key("at_timestamp") => {
                parse_time(&m["at_timestamp"], TimeFormat::Auto)
                    .map(StartingPosition::AtTimestamp)
                    .map_err(|e| format!("at_timestamp: {e}"))
            }
            other => Err(format!("{STARTING_FORMS}, got {other}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// GetRecords in a loop per shard (shares the shard's 2 MB/s and 5 calls/s with every
    /// other polling consumer).
    #[default]
    Polling,
    /// Enhanced fan-out: SubscribeToShard pushes records over HTTP/2 (a dedicated 2 MB/s per
    /// shard for this consumer).
    Efo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollingConfig {
    /// `Limit` of one GetRecords call (1 to 10000).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// Least time between two GetRecords calls on one shard (Kinesis allows 5 per second per
    /// shard, shared by every consumer of the stream).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Wait after a call that returned nothing.
    #[serde(default = "default_idle_interval")]
    pub idle_interval: Duration,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            max_records: default_max_records(),
            interval: default_interval(),
            idle_interval: default_idle_interval(),
        }
    }
}

fn default_max_records() -> i32 {
    10_000
}
fn default_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_idle_interval() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfoConfig {
    /// The stream consumer's name; default `weir-<job>-<node>`.
    pub consumer_name: Option<String>,
    #[serde(default)]
    pub registration: Registration,
    /// A subscription with no event for this long is replaced (Kinesis sends one at least
    /// every few seconds while a subscription is healthy).
    #[serde(default = "default_efo_idle")]
    pub idle_timeout: Duration,
    /// Least wait before subscribing again after an error (Kinesis refuses a new subscription
    /// to a shard within 5 s of the last one).
    #[serde(default = "default_error_backoff")]
    pub error_backoff: Duration,
}

fn default_efo_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_error_backoff() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// The job registers the consumer when it starts (if missing) and deregisters it when it
    /// finishes or stops.
    #[default]
    Job,
    /// The consumer is registered by someone else; the job only uses it.
    SelfManaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiredPolicy {
    #[default]
    Fail,
    TrimHorizon,
    Latest,
}

/// Names of the fields that receive each record's metadata; unset ones are left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFields {
    pub partition_key: Option<String>,
    pub sequence_number: Option<String>,
    pub shard_id: Option<String>,
    pub stream: Option<String>,
    /// ApproximateArrivalTimestamp, ms since the epoch.
    pub arrival_timestamp: Option<String>,
}

impl EventTimeSource for KinesisSourceConfig {
    const EVENT_TIME: EventTimeForms = EventTimeForms {
        system: "arrival_timestamp",
        system_is: "ApproximateArrivalTimestamp",
        attributes: false,
    };
}

/// A stream to read and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub stream: StreamRef,
    pub starting_position: StartingPosition,
}

/// The EFO settings, resolved.
#[derive(Debug, Clone)]
pub struct Efo {
    /// `None`: `weir-<job>-<node>`, known once the source opens.
    pub consumer_name: Option<String>,
    pub registration: Registration,
    pub idle_timeout: std::time::Duration,
    pub error_backoff: std::time::Duration,
}

/// A checked configuration, ready to open.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: KinesisSourceConfig,
    pub streams: Vec<StreamSettings>,
    pub connection: AwsConnection,
    /// Set with `reader: efo`.
    pub efo: Option<Efo>,
}

fn valid_consumer_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ConnectorConfig for KinesisSourceConfig {
    type Settings = Settings;

    /// Checks the cross-field rules; errors name the field.
    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let c = self;
        if c.streams.is_empty() {
            return Err(cfg.error("streams", "name at least one stream (name or ARN)"));
        }
        let mut streams: Vec<StreamSettings> = Vec::new();
        let mut region = c.region.clone();
        for (i, entry) in c.streams.iter().enumerate() {
            let (text, start) = match entry {
                StreamEntry::Name(n) => (n, None),
                StreamEntry::Detailed(d) => (&d.stream, d.starting_position),
            };
            let field = format!("streams[{i}]");
            let stream = StreamRef::parse(text).map_err(|e| cfg.error(&field, e))?;
            region = stream
                .region(region.as_deref())
                .map_err(|e| cfg.error(&field, e))?
                .map(str::to_string);
            if streams.iter().any(|s| s.stream.name == stream.name) {
                return Err(cfg.error(
                    &field,
                    format!("{stream} is listed twice (split ids use the stream name)"),
                ));
            }
            streams.push(StreamSettings {
                stream,
                starting_position: start.unwrap_or(c.starting_position),
            });
        }
        let connection = AwsConnection {
            region,
            endpoint_url: c.endpoint_url.clone(),
            credentials: c.credentials.clone(),
        };
        connection.check(cfg)?;
        if !(1..=10_000).contains(&c.polling.max_records) {
            return Err(cfg.error(
                "polling.max_records",
                format!("must be between 1 and 10000, got {}", c.polling.max_records),
            ));
        }
        let efo = match (c.reader, &c.efo) {
            (ReaderKind::Polling, Some(_)) => {
                return Err(cfg.error("efo", "is for `reader: efo`; this source polls"))
            }
            (ReaderKind::Polling, None) => None,
            (ReaderKind::Efo, e) => {
                let e = e.clone().unwrap_or(EfoConfig {
                    consumer_name: None,
                    registration: Registration::Job,
                    idle_timeout: default_efo_idle(),
                    error_backoff: default_error_backoff(),
                });
                if let Some(n) = &e.consumer_name {
                    if !valid_consumer_name(n) {
                        return Err(cfg.error(
                            "efo.consumer_name",
                            format!("{n:?}: 1 to 128 of a-z, A-Z, 0-9, _ . -"),
                        ));
                    }
                }
                if e.idle_timeout.as_millis() == 0 {
                    return Err(cfg.error("efo.idle_timeout", "must be more than 0s"));
                }
                Some(Efo {
                    consumer_name: e.consumer_name,
                    registration: e.registration,
                    idle_timeout: e.idle_timeout.as_std(),
                    error_backoff: e.error_backoff.as_std(),
                })
            }
        };
        if c.shard_discovery_interval.as_millis() == 0 {
            return Err(cfg.error(
            "shard_discovery_interval",
            "must be more than 0s (children of ended shards are found at once; this finds the rest)",
        ));
        }
        if c.request_timeout.as_millis() == 0 {
            return Err(cfg.error("request_timeout", "must be more than 0s"));
        }
        let value_field = c.format.field(&c.value_field);
        let (watermark, event_time) = (c.watermark.is_some(), c.event_time.is_some());
        Self::EVENT_TIME.check_source(cfg, watermark, event_time, value_field, &c.metadata)?;
        Ok(Settings {
            config: c,
            streams,
            connection,
            efo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: Value) -> Result<Settings> {
        NodeConfig::for_test("sources[0]", "kinesis", v).resolve::<KinesisSourceConfig>()
    }
    use serde_json::json;

    fn err(v: Value) -> String {
        resolve(v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_poll_every_stream_from_the_trim_horizon() {
        let s = resolve(json!({"streams": ["a", {"stream": "b", "starting_position": "latest"}]}))
            .unwrap();
        assert_eq!(s.streams.len(), 2);
        assert_eq!(
            s.streams[0].starting_position,
            StartingPosition::TrimHorizon
        );
        assert_eq!(s.streams[1].starting_position, StartingPosition::Latest);
        assert!(s.efo.is_none());
        assert_eq!(s.config.on_expired_position, ExpiredPolicy::Fail);
        assert_eq!(s.config.polling.max_records, 10_000);
    }

    #[test]
    fn starting_positions() {
        let p = |v: Value| {
            resolve(json!({"streams": ["a"], "starting_position": v}))
                .map(|s| s.streams[0].starting_position)
        };
        assert_eq!(
            p(json!({"at_timestamp": "1970-01-01T00:00:02Z"})).unwrap(),
            StartingPosition::AtTimestamp(2000)
        );
        assert_eq!(
            p(json!({"at_timestamp": 1500})).unwrap(),
            StartingPosition::AtTimestamp(1500)
        );
        let e = p(json!("earliest")).unwrap_err().to_string();
        assert!(e.starts_with("sources[0].starting_position:"), "{e}");
        assert!(e.contains("trim_horizon"), "{e}");
        let e = p(json!({"at_timestamp": "noon"})).unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn efo_defaults_and_rules() {
        let s = resolve(json!({"streams": ["a"], "reader": "efo"})).unwrap();
        let e = s.efo.unwrap();
        assert_eq!(e.registration, Registration::Job);
        assert_eq!(e.error_backoff, std::time::Duration::from_secs(5));
        assert!(
            err(json!({"streams": ["a"], "efo": {"consumer_name": "c"}}))
                .starts_with("sources[0].efo:")
        );
        assert!(
            err(json!({"streams": ["a"], "reader": "efo", "efo": {"consumer_name": "a b"}}))
                .starts_with("sources[0].efo.consumer_name:")
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (v, needle) in [
            (json!({"streams": []}), "sources[0].streams:"),
            (json!({"streams": ["a", "b/c"]}), "sources[0].streams[1]:"),
            (
                json!({"streams": ["a", "a"]}),
                "sources[0].streams[1]: stream \"a\" is listed twice",
            ),
            (
                json!({"streams": ["arn:aws:kinesis:eu-west-1:1:stream/a"], "region": "us-east-1"}),
                "sources[0].streams[0]:",
            ),
            (
                json!({"streams": ["a"], "polling": {"max_records": 0}}),
                "sources[0].polling.max_records:",
            ),
            (
                json!({"streams": ["a"], "polling": {"interval": 5}}),
                "sources[0].polling.interval:",
            ),
            (
                json!({"streams": ["a"], "watermark": {"max_out_of_orderness": "1s"}}),
                "sources[0].watermark:",
            ),
            (
                json!({"streams": ["a"], "event_time": "now"}),
                "sources[0].event_time:",
            ),
            (
                json!({"streams": ["a"], "metadata": {"shard_id": "x", "stream": "x"}}),
                "sources[0].metadata.stream:",
            ),
            (
                json!({"streams": ["a"], "on_expired_position": "earliest"}),
                "sources[0].on_expired_position:",
            ),
            (
                json!({"streams": ["a"], "on_error": {"dead_letter": {}}}),
                "no dead-letter target",
            ),
            (
                json!({"streams": ["a"], "shard_discovery_interval": "0s"}),
                "sources[0].shard_discovery_interval:",
            ),
            (
                json!({"streams": ["a"], "format": "string", "value_field": ""}),
                "sources[0].value_field:",
            ),
            (
                json!({"streams": ["a"], "colour": 1}),
                "colour: unknown field",
            ),
        ] {
            let e = err(v.clone());
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
