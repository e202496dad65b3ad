//! The source's settings as written in the spec, and their resolution into [`Settings`]:
//! defaults applied, cross-field rules checked, nothing opened (the factory also runs for
//! `weir validate`).

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_crds::Duration;

use super::splits::parse_split_id;
use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::kafka::client::deserialize_properties;
use crate::connectors::kafka::eventhubs::{self, EventHubsConfig};
use crate::connectors::message::default_value_field;
pub use crate::connectors::message::ValueFormat;
use crate::error::Result;
use crate::event_time::WatermarkSettings;
use crate::event_time::{parse_time, EventTime, EventTimeForms, EventTimeSource, TimeFormat};
use crate::on_error::OnError;

/// Settings of a `kafka` source.
///
/// ```yaml
/// sources:
///   - name: orders
///     type: kafka
///     bootstrap_servers: broker-1:9092,broker-2:9092
///     topics: [orders]                 # or topic_pattern: "orders-.*" (whole-name regex)
///     group_id: orders-to-s3           # offsets are committed here after each checkpoint
///     starting_offsets: earliest       # latest | committed | {committed: {reset: latest}}
///                                      # | {timestamp: "2024-05-01T00:00:00Z"}
///                                      # | {specific: {"orders/0": 42, "orders/1": 7}}
///     stop_at: latest                  # optional: finish at the offsets found at start
///     partition_discovery_interval: 30s   # 0s turns discovery off
///     format: json                     # | string | bytes (base64), under `value_field`
///     metadata: { key: _key, headers: _headers, topic: _topic, partition: _partition,
///                 offset: _offset, timestamp: _ts }
///     event_time: { field: ts }        # or `event_time: kafka_timestamp`
///     watermark: { max_out_of_orderness: 5s, idle_timeout: 30s }
///     on_error: fail                   # | skip | {dead_letter: {topic: orders-dlq}}
///     properties:                      # any librdkafka property, passed through
///       fetch.max.bytes: 52428800
/// ```
///
/// Security goes through `properties`. Azure Event Hubs has its own profile, which sets the
/// login and the settings Event Hubs needs (`eventhubs.rs`):
///
/// ```yaml
///     eventhubs:
///       namespace: mynamespace            # bootstrap_servers: mynamespace.servicebus.windows.net:9093
///       connection_string: ${env:EVENTHUBS_CONNECTION_STRING}
/// ```
///
/// SCRAM: `security.protocol: SASL_SSL`, `sasl.mechanism: SCRAM-SHA-512`, `sasl.username`,
/// `sasl.password`. TLS with a private CA and client certificates: `security.protocol: SSL`,
/// `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location` (and `ssl.key.password`).
/// See `examples/kafka-eventhubs.yaml`.
///
/// Offsets live in weir's checkpoints: the consumer group only receives them after a checkpoint
/// completes (for lag monitoring and `starting_offsets: committed`), and partitions are assigned
/// to workers by weir, never by group rebalancing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,…]`; with `eventhubs`, taken from its namespace when left out.
    #[serde(default)]
    pub bootstrap_servers: String,
    /// Azure Event Hubs: the login and settings it needs (see `eventhubs.rs`).
    #[serde(default)]
    pub eventhubs: Option<EventHubsConfig>,
    /// librdkafka properties, passed through (security, tuning). Values may be numbers or
    /// booleans. weir sets `enable.auto.commit=false` and `enable.auto.offset.store=false`
    /// whatever is given here, since offsets belong to the checkpoint.
    #[serde(default, deserialize_with = "deserialize_properties")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression that must match a whole topic name; topics created later that match
    /// are picked up by partition discovery. Internal topics (`__…`) are never matched.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Default `weir-<job>-<node>` (or `group.id` from `properties`).
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// Makes the source bounded: each partition ends at the offsets found when it was first
    /// assigned, and the job finishes once every partition reached them.
    #[serde(default)]
    pub stop_at: Option<StopAt>,
    #[serde(default = "default_discovery_interval")]
    pub partition_discovery_interval: Duration,
    #[serde(default)]
    pub format: ValueFormat,
    /// Field holding the value for `string` and `bytes` formats.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    #[serde(default)]
    pub key_format: KeyFormat,
    #[serde(default)]
    pub metadata: MetadataFields,
    #[serde(
        default,
        deserialize_with = "KafkaSourceConfig::deserialize_event_time"
    )]
    pub event_time: Option<EventTime>,
    #[serde(default)]
    pub watermark: Option<WatermarkSettings>,
    #[serde(default)]
    pub on_error: OnError<DeadLetter>,
    /// Most records returned by one poll.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Limit for metadata and offset requests (a wrong `bootstrap_servers` fails after this).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Commit offsets to the consumer group after each completed checkpoint.
    #[serde(default = "yes")]
    pub commit_offsets: bool,
}

fn default_discovery_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_size() -> usize {
    2048
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopAt {
    /// The high watermark of each partition when it is first assigned (Flink's
    /// `setBounded(OffsetsInitializer.latest())`).
    Latest,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    #[default]
    String,
    Bytes,
    Json,
}

/// Names of the fields that receive each message's metadata; unset ones are left out. They are
/// written after the value's fields, so they win over a value field of the same name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFields {
    pub key: Option<String>,
    /// An object of header name → UTF-8 value (null for a null value; the last of repeated
    /// names wins).
    pub headers: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<String>,
    pub offset: Option<String>,
    /// The Kafka record timestamp, ms since the epoch.
    pub timestamp: Option<String>,
}

impl EventTimeSource for KafkaSourceConfig {
    const EVENT_TIME: EventTimeForms = EventTimeForms {
        system: "kafka_timestamp",
        system_is: "Kafka timestamp",
        attributes: false,
    };
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
/// Where `on_error: {dead_letter: …}` writes a message that cannot be decoded (or has no usable
/// event time): the raw message to another topic with `weir.error.*` headers, counted.
pub struct DeadLetter {
    pub topic: String,
    /// Extra librdkafka producer properties (on top of the source's `properties`).
    #[serde(default, deserialize_with = "deserialize_properties")]
    pub properties: BTreeMap<String, String>,
}

/// Where partitions without a checkpointed offset start. It applies when a job starts without
/// a checkpoint; after a restore, partitions that appeared since the checkpoint (and partitions
/// found by discovery while running) start at their earliest offset, so nothing written to them
/// meanwhile is skipped.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(try_from = "Value")]
pub enum StartingOffsets {
    #[default]
    Earliest,
    Latest,
    /// The consumer group's committed offsets; `reset` where the group has none.
    Committed {
        reset: Reset,
    },
    /// The first offset whose record timestamp is at or after this time (ms since the epoch);
    /// the end of the partition where there is none.
    Timestamp(i64),
    /// Per-partition offsets by split id (`topic/partition`); other partitions start earliest.
    Specific(BTreeMap<String, i64>),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    #[default]
    Earliest,
    Latest,
    /// Fail when a partition has no committed offset.
    None,
}

const STARTING_OFFSETS_FORMS: &str =
    "expected earliest, latest, committed, {committed: {reset: earliest|latest|none}}, \
     {timestamp: MILLIS or RFC 3339} or {specific: {\"topic/partition\": offset}}";

impl TryFrom<Value> for StartingOffsets {
    type Error = String;
    fn try_from(v: Value) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CommittedSpec {
            #[serde(default)]
            reset: Reset,
        }
        match &v {
            Value::String(s) => match s.as_str() {
                "earliest" => Ok(StartingOffsets::Earliest),
                "latest" => Ok(StartingOffsets::Latest),
                "committed" => Ok(StartingOffsets::Committed {
                    reset: Reset::Earliest,
                }),
                other => Err(format!(
                    "unknown starting offsets {other:?}; {STARTING_OFFSETS_FORMS}"
                )),
            },
            Value::Object(m) if m.len() == 1 => {
                let (k, inner) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "committed" => nested::<CommittedSpec>("committed", inner)
                        .map(|c| StartingOffsets::Committed { reset: c.reset }),
                    "timestamp" => parse_time(inner, TimeFormat::Auto)
                        .map(StartingOffsets::Timestamp)
                        .map_err(|e| format!("timestamp: {e}")),
                    "specific" => specific_offsets(inner).map(StartingOffsets::Specific),
                    other => Err(format!(
                        "unknown starting offsets {other:?}; {STARTING_OFFSETS_FORMS}"
                    )),
                }
            }
            _ => Err(STARTING_OFFSETS_FORMS.to_string()),
        }
    }
}

/// Deserializes a nested map, the error naming the path inside it (`committed.reset: …`).
fn nested<T: serde::de::DeserializeOwned>(
    prefix: &str,
    v: &Value,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            (p, ".") => p.to_string(),
            ("", i) => i.to_string(),
            (p, i) => format!("{p}.{i}"),
        };
        if path.is_empty() {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

fn specific_offsets(v: &Value) -> std::result::Result<BTreeMap<String, i64>, String> {
    let Value::Object(m) = v else {
        return Err("specific: expected a map of \"topic/partition\" to offset".into());
    };
    if m.is_empty() {
        return Err("specific: no offsets given".into());
    }
    let mut out = BTreeMap::new();
    for (split, offset) in m {
        parse_split_id(split).map_err(|e| format!("specific.{split}: {e}"))?;
        let offset = offset
            .as_i64()
            .filter(|o| *o >= 0)
            .ok_or_else(|| format!("specific.{split}: expected an offset ≥ 0, got {offset}"))?;
        out.insert(split.clone(), offset);
    }
    Ok(out)
}

/// Which topics the source reads.
#[derive(Debug, Clone)]
pub enum TopicSelection {
    List(Vec<String>),
    Pattern(Regex),
}

impl TopicSelection {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicSelection::List(l) => l.iter().any(|t| t == topic),
            TopicSelection::Pattern(r) => !topic.starts_with("__") && r.is_match(topic),
        }
    }
}

/// A checked configuration, ready to open.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: KafkaSourceConfig,
    pub topics: TopicSelection,
}

impl Settings {
    pub fn bounded(&self) -> bool {
        self.config.stop_at.is_some()
    }
}

impl ConnectorConfig for KafkaSourceConfig {
    type Settings = Settings;

    /// Checks the cross-field rules; errors name the field.
    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let mut c = self;
        let (bootstrap, properties) = (&mut c.bootstrap_servers, &mut c.properties);
        let role = eventhubs::Role::Source;
        eventhubs::expand(cfg, c.eventhubs.as_ref(), bootstrap, properties, role)?;
        if c.bootstrap_servers.trim().is_empty() {
            return Err(cfg.error(
                "bootstrap_servers",
                "must name at least one broker (host:port), or use eventhubs",
            ));
        }
        let topics = match (&c.topics[..], &c.topic_pattern) {
            ([], None) => {
                return Err(cfg.error(
                    "topics",
                    "set `topics` (a list) or `topic_pattern` (a regex)",
                ))
            }
            ([_, ..], Some(_)) => {
                return Err(cfg.error(
                    "topic_pattern",
                    "set either `topics` or `topic_pattern`, not both",
                ))
            }
            (list, None) => {
                if let Some(i) = list.iter().position(|t| t.trim().is_empty()) {
                    return Err(cfg.error(&format!("topics[{i}]"), "empty topic name"));
                }
                TopicSelection::List(list.to_vec())
            }
            ([], Some(p)) => {
                let anchored = format!("^(?:{p})$");
                let re = Regex::new(&anchored).map_err(|e| {
                    cfg.error("topic_pattern", format!("invalid regular expression: {e}"))
                })?;
                TopicSelection::Pattern(re)
            }
        };
        if c.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        if c.request_timeout.as_millis() == 0 {
            return Err(cfg.error("request_timeout", "must be more than 0s"));
        }
        let value_field = c.format.field(&c.value_field);
        let (watermark, event_time) = (c.watermark.is_some(), c.event_time.is_some());
        Self::EVENT_TIME.check_source(cfg, watermark, event_time, value_field, &c.metadata)?;
        if let OnError::DeadLetter(d) = &c.on_error {
            if d.topic.trim().is_empty() {
                return Err(cfg.error("on_error.dead_letter.topic", "empty topic name"));
            }
            if topics.matches(&d.topic) {
                return Err(cfg.error(
                    "on_error.dead_letter.topic",
                    format!("{:?} is one of the topics this source reads", d.topic),
                ));
            }
        }
        Ok(Settings { config: c, topics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(cfg: &NodeConfig) -> Result<Settings> {
        cfg.resolve::<KafkaSourceConfig>()
    }

    fn node(extra: Value) -> NodeConfig {
        let mut config = serde_json::json!({ "bootstrap_servers": "localhost:9092" });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        NodeConfig::for_test("sources[0]", "kafka", config)
    }

    fn err(extra: Value) -> String {
        resolve(&node(extra)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_read_a_topic_list_from_earliest() {
        let s = resolve(&node(serde_json::json!({ "topics": ["a", "b"] }))).unwrap();
        assert!(s.topics.matches("a") && !s.topics.matches("c"));
        assert_eq!(s.config.starting_offsets, StartingOffsets::Earliest);
        assert_eq!(s.config.format, ValueFormat::Json);
        assert_eq!(s.config.on_error, OnError::Fail);
        assert!(!s.bounded());
    }

    #[test]
    fn the_pattern_matches_whole_names_and_never_internal_topics() {
        let s = resolve(&node(serde_json::json!({ "topic_pattern": "orders-.*" }))).unwrap();
        assert!(s.topics.matches("orders-eu"));
        assert!(!s.topics.matches("old-orders-eu"));
        let all = resolve(&node(serde_json::json!({ "topic_pattern": ".*" }))).unwrap();
        assert!(!all.topics.matches("__consumer_offsets"));
    }

    #[test]
    fn topic_choice_errors_name_the_field() {
        assert!(err(serde_json::json!({})).starts_with("sources[0].topics:"));
        assert!(
            err(serde_json::json!({ "topics": ["a"], "topic_pattern": "b" }))
                .starts_with("sources[0].topic_pattern:")
        );
        let e = err(serde_json::json!({ "topic_pattern": "orders-(" }));
        assert!(
            e.starts_with("sources[0].topic_pattern: invalid regular expression"),
            "{e}"
        );
        assert!(
            err(serde_json::json!({ "topics": ["a", " "] })).starts_with("sources[0].topics[1]:")
        );
    }

    #[test]
    fn starting_offsets_forms() {
        let parse = |v: Value| {
            resolve(&node(
                serde_json::json!({ "topics": ["t"], "starting_offsets": v }),
            ))
            .map(|s| s.config.starting_offsets)
        };
        assert_eq!(parse("latest".into()).unwrap(), StartingOffsets::Latest);
        assert_eq!(
            parse("committed".into()).unwrap(),
            StartingOffsets::Committed {
                reset: Reset::Earliest
            }
        );
        assert_eq!(
            parse(serde_json::json!({ "committed": { "reset": "none" } })).unwrap(),
            StartingOffsets::Committed { reset: Reset::None }
        );
        assert_eq!(
            parse(serde_json::json!({ "timestamp": "1970-01-01T00:00:01Z" })).unwrap(),
            StartingOffsets::Timestamp(1000)
        );
        assert_eq!(
            parse(serde_json::json!({ "timestamp": 1500 })).unwrap(),
            StartingOffsets::Timestamp(1500)
        );
        let specific =
            parse(serde_json::json!({ "specific": { "t/0": 5, "my/topic/2": 0 } })).unwrap();
        let StartingOffsets::Specific(m) = specific else {
            panic!()
        };
        assert_eq!(m["t/0"], 5);
        assert_eq!(m["my/topic/2"], 0);
    }

    #[test]
    fn bad_offsets_specs_say_what_is_wrong_where() {
        let e = |v: Value| err(serde_json::json!({ "topics": ["t"], "starting_offsets": v }));
        let bad_word = e("newest".into());
        assert!(
            bad_word.starts_with("sources[0].starting_offsets:"),
            "{bad_word}"
        );
        assert!(bad_word.contains("\"newest\""), "{bad_word}");
        assert!(e(serde_json::json!({ "specific": { "t/x": 1 } })).contains("specific.t/x"));
        assert!(e(serde_json::json!({ "specific": { "t/0": -3 } })).contains("offset ≥ 0"));
        assert!(e(serde_json::json!({ "specific": { "t": 1 } })).contains("topic/partition"));
        assert!(e(serde_json::json!({ "timestamp": "noon" })).contains("RFC 3339"));
        assert!(e(serde_json::json!({ "committed": { "reset": "sometimes" } })).contains("reset"));
    }

    #[test]
    fn other_cross_field_rules() {
        let t = |extra: Value| {
            let mut v = serde_json::json!({ "topics": ["t"] });
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            err(v)
        };
        assert!(
            t(serde_json::json!({ "watermark": { "max_out_of_orderness": "1s" } }))
                .starts_with("sources[0].watermark:")
        );
        assert!(t(serde_json::json!({ "batch_size": 0 })).starts_with("sources[0].batch_size:"));
        assert!(
            t(serde_json::json!({ "metadata": { "key": "k", "topic": "k" } }))
                .starts_with("sources[0].metadata.topic:")
        );
        assert!(
            t(serde_json::json!({ "on_error": { "dead_letter": { "topic": "t" } } }))
                .contains("one of the topics this source reads")
        );
        assert!(t(serde_json::json!({ "event_time": "now" })).starts_with("sources[0].event_time:"));
        assert!(
            t(serde_json::json!({ "event_time": { "field": "ts", "format": "hours" } }))
                .starts_with("sources[0].event_time: format: unknown variant `hours`")
        );
        assert!(t(serde_json::json!({ "colour": "red" })).contains("colour: unknown field"));
        let ok = resolve(&node(serde_json::json!({
            "topics": ["t"],
            "event_time": { "field": "ts", "format": "millis" },
            "watermark": { "max_out_of_orderness": "2s", "idle_timeout": "5s" },
            "on_error": { "dead_letter": { "topic": "dlq" } },
            "stop_at": "latest",
        })))
        .unwrap();
        assert!(ok.bounded());
        assert_eq!(
            ok.config.event_time,
            Some(EventTime::Field {
                name: "ts".into(),
                format: TimeFormat::Millis
            })
        );
    }
}
