//! Event time as the sources that read it themselves (Kafka, Kinesis, Pub/Sub) and the
//! `watermark` transform share it: the `event_time:` and `watermark:` settings, parsing a time,
//! and the watermark rule over splits. Below both connectors and transforms, so neither imports
//! the other for it.

pub mod split;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use weir_crds::Duration;

use crate::api::{NodeConfig, Result};
use crate::record::Record;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default, Debug)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Numbers are milliseconds since the epoch, strings RFC 3339.
    #[default]
    Auto,
    Millis,
    Seconds,
    Rfc3339,
}

/// `watermark:` of a source that reads event time itself (Kafka, Kinesis, Pub/Sub): one
/// definition for all of them, so the setting means the same wherever it is written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSettings {
    /// How late (in event time) a record may arrive behind the newest one seen.
    pub max_out_of_orderness: Duration,
    /// A split without records for this long stops holding the watermark back: a Kafka
    /// partition or Kinesis shard that never receives a record would otherwise hold it forever
    /// (a Kinesis shard that ended never holds it), and a Pub/Sub worker without messages follows
    /// the wall clock (minus `max_out_of_orderness`) so a drained subscription does not hold
    /// event time back.
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
}

/// `event_time:` of a source that reads event time itself (Kafka, Kinesis, Pub/Sub): the time the
/// system stamped on the message, a message attribute, or a field of the record. One definition
/// for all of them; each source says how it spells the first ([`EventTimeForms`]).
#[derive(Debug, Clone, PartialEq)]
pub enum EventTime {
    /// The system's own time of the message: Kafka's record timestamp, Kinesis's
    /// ApproximateArrivalTimestamp, Pub/Sub's publish time.
    System,
    /// A message attribute (text: numbers per `format`, else RFC 3339).
    Attribute { name: String, format: TimeFormat },
    /// A field of the record.
    Field { name: String, format: TimeFormat },
}

/// A source config that reads `event_time:` in its own spelling (Kafka, Kinesis, Pub/Sub): the
/// spelling is declared once per source, the parsing written once here.
pub trait EventTimeSource {
    /// How this source spells `event_time:`.
    const EVENT_TIME: EventTimeForms;

    /// For `#[serde(deserialize_with = "Config::deserialize_event_time")]` on the config's
    /// `event_time` field.
    fn deserialize_event_time<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<EventTime>, D::Error> {
        Self::EVENT_TIME.deserialize(d)
    }
}

/// How one source spells `event_time:`.
#[derive(Debug, Clone, Copy)]
pub struct EventTimeForms {
    /// The keyword for [`EventTime::System`], e.g. `kafka_timestamp`.
    pub system: &'static str,
    /// What a message without that time lacks, for the error, e.g. `Kafka timestamp`.
    pub system_is: &'static str,
    /// Whether `{attribute: NAME}` exists: the source's messages have attributes.
    pub attributes: bool,
}

impl EventTimeForms {
    /// The forms this source accepts, for errors.
    pub fn describe(&self) -> String {
        let attribute = if self.attributes {
            ", {attribute: NAME, format: …}"
        } else {
            ""
        };
        format!(
            "{}{attribute} or {{field: NAME, format: auto|millis|seconds|rfc3339}}",
            self.system
        )
    }

    pub fn parse(&self, v: Value) -> std::result::Result<EventTime, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            field: Option<String>,
            attribute: Option<String>,
            #[serde(default)]
            format: TimeFormat,
        }
        let expected = || format!("expected {}, got {v}", self.describe());
        match &v {
            Value::String(s) if s == self.system => Ok(EventTime::System),
            Value::Object(_) => {
                let spec: Spec =
                    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
                        match e.path().to_string().as_str() {
                            "." => e.into_inner().to_string(),
                            path => format!("{path}: {}", e.into_inner()),
                        }
                    })?;
                match (spec.field, spec.attribute) {
                    (Some(name), None) if !name.is_empty() => Ok(EventTime::Field {
                        name,
                        format: spec.format,
                    }),
                    (None, Some(name)) if self.attributes && !name.is_empty() => {
                        Ok(EventTime::Attribute {
                            name,
                            format: spec.format,
                        })
                    }
                    _ => Err(expected()),
                }
            }
            _ => Err(expected()),
        }
    }

    /// For `#[serde(deserialize_with)]` on a source's `event_time` field.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        &self,
        d: D,
    ) -> std::result::Result<Option<EventTime>, D::Error> {
        use serde::de::Error as _;
        Option::<Value>::deserialize(d)?
            .map(|v| self.parse(v))
            .transpose()
            .map_err(D::Error::custom)
    }

    /// `watermark:` without `event_time:` has nothing to measure.
    pub fn watermark_needs_event_time(&self) -> String {
        format!("needs `event_time` ({})", self.describe())
    }

    /// The rules every source that turns messages into records shares (Kafka, Kinesis,
    /// Pub/Sub); errors name the field. `value_field` is the field a value kept whole (string or
    /// bytes) goes in, `None` when the value is a JSON object; `metadata` the set `metadata:`
    /// entries as (key, field name), each of which must name a field of its own.
    pub fn check_source(
        &self,
        cfg: &NodeConfig,
        has_watermark: bool,
        has_event_time: bool,
        value_field: Option<&str>,
        metadata: &impl serde::Serialize,
    ) -> Result<()> {
        let metadata = set_names(metadata);
        if has_watermark && !has_event_time {
            return Err(cfg.error("watermark", self.watermark_needs_event_time()));
        }
        if value_field.is_some_and(str::is_empty) {
            return Err(cfg.error("value_field", "must not be empty"));
        }
        for (i, (kind, name)) in metadata.iter().enumerate() {
            if name.is_empty() {
                return Err(cfg.error(&format!("metadata.{kind}"), "field name must not be empty"));
            }
            if metadata[..i].iter().any(|(_, n)| n == name) {
                return Err(cfg.error(
                    &format!("metadata.{kind}"),
                    format!("field {name:?} is used twice"),
                ));
            }
        }
        Ok(())
    }
}

impl EventTime {
    /// One message's event time: `system` is the time the system stamped on it (`None`: it has
    /// none), `attribute` looks up one of its attributes.
    pub fn of<'a>(
        &self,
        forms: &EventTimeForms,
        system: Option<i64>,
        attribute: impl FnOnce(&str) -> Option<&'a str>,
        record: &Record,
    ) -> std::result::Result<i64, String> {
        match self {
            EventTime::System => system.ok_or_else(|| {
                format!(
                    "the message has no {} (event_time: {})",
                    forms.system_is, forms.system
                )
            }),
            EventTime::Attribute { name, format } => {
                let text = attribute(name)
                    .ok_or_else(|| format!("attribute {name:?} (event_time) is missing"))?;
                Self::parse_attribute(text, *format)
                    .map_err(|e| format!("attribute {name:?} (event_time): {e}"))
            }
            EventTime::Field { name, format } => {
                let v = record
                    .get(name)
                    .ok_or_else(|| format!("field {name:?} (event_time) is missing"))?;
                parse_time(&v, *format).map_err(|e| format!("field {name:?} (event_time): {e}"))
            }
        }
    }

    /// Reads a time written as an attribute (text): numbers per `format`, else RFC 3339.
    pub fn parse_attribute(text: &str, format: TimeFormat) -> std::result::Result<i64, String> {
        let v = match text.trim().parse::<f64>() {
            Ok(n) if text.trim().parse::<i64>().is_ok() => Value::from(n as i64),
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_string()),
        };
        parse_time(&v, format)
    }
}

/// Parses an event time; an error says why.
pub fn parse_time(v: &Value, format: TimeFormat) -> std::result::Result<i64, String> {
    match (v, format) {
        (Value::Number(n), TimeFormat::Auto | TimeFormat::Millis) => {
            n.as_i64().ok_or_else(|| format!("{n} is not an integer"))
        }
        (Value::Number(n), TimeFormat::Seconds) => n
            .as_f64()
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("{n} is not a number")),
        (Value::String(s), TimeFormat::Auto | TimeFormat::Rfc3339) => {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
        }
        (other, f) => Err(format!("{other} is not a {f:?} time")),
    }
}

/// A source's watermark as emitted: the highest value offered so far, so it never goes back
/// (a split or clock that wakes up behind does not move it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Monotonic(Option<i64>);

impl Monotonic {
    /// Offers `candidate` (nothing when `None`) and returns the watermark now: `None` until a
    /// first value was offered.
    pub fn advance(&mut self, candidate: Option<i64>) -> Option<i64> {
        if let Some(w) = candidate {
            self.0 = Some(self.0.map_or(w, |c| c.max(w)));
        }
        self.0
    }
}

/// Per-split progress, and the watermark rule as a pure function of it.
#[derive(Debug, Default, Clone)]
pub struct SplitClock {
    pub max_event: i64,
    pub last_seen_ms: i64,
}

/// The worker watermark: minimum over splits that are not idle, each `max - bound - 1`.
/// `None` while no active split has seen a record.
pub fn combined(
    splits: &HashMap<String, SplitClock>,
    bound_ms: i64,
    idle_ms: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    splits
        .values()
        .filter(|c| idle_ms.is_none_or(|i| now_ms - c.last_seen_ms < i))
        .map(|c| c.max_event.saturating_sub(bound_ms).saturating_sub(1))
        .min()
}

/// The `metadata:` entries that are set, as (key, field name) in the order of the source's
/// `MetadataFields` (a struct of `Option<String>`), for the checks. Read through serde, so each
/// source writes its keys once, in the struct.
fn set_names(metadata: &impl serde::Serialize) -> Vec<(String, String)> {
    match serde_json::to_value(metadata) {
        Ok(Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(key, name)| match name {
                Value::String(name) => Some((key, name)),
                _ => None,
            })
            .collect(),
        // Not a struct: it names no fields.
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One definition, each source's own spelling: an attribute only where messages have them,
    /// and every refusal lists what the source accepts.
    #[test]
    fn event_time_forms_follow_the_source() {
        const KAFKA: EventTimeForms = EventTimeForms {
            system: "kafka_timestamp",
            system_is: "Kafka timestamp",
            attributes: false,
        };
        const PUBSUB: EventTimeForms = EventTimeForms {
            system: "publish_time",
            system_is: "publish time",
            attributes: true,
        };
        let attr = serde_json::json!({"attribute": "ts", "format": "seconds"});
        assert_eq!(
            PUBSUB.parse(attr.clone()),
            Ok(EventTime::Attribute {
                name: "ts".into(),
                format: TimeFormat::Seconds
            })
        );
        let e = KAFKA.parse(attr).unwrap_err();
        assert!(
            e.starts_with("expected kafka_timestamp or {field: NAME"),
            "{e}"
        );
        assert_eq!(KAFKA.parse("kafka_timestamp".into()), Ok(EventTime::System));
        assert!(KAFKA.parse("publish_time".into()).is_err());
        let e = PUBSUB
            .parse(serde_json::json!({"field": "ts", "format": "hours"}))
            .unwrap_err();
        assert!(e.starts_with("format: unknown variant `hours`"), "{e}");

        let record =
            Record::new(serde_json::from_str(r#"{"ts": "1970-01-01T00:00:01Z"}"#).unwrap());
        let field = KAFKA.parse(serde_json::json!({"field": "ts"})).unwrap();
        assert_eq!(field.of(&KAFKA, None, |_| None, &record), Ok(1000));
        assert_eq!(
            EventTime::System.of(&KAFKA, None, |_| None, &record),
            Err("the message has no Kafka timestamp (event_time: kafka_timestamp)".into())
        );
        let at = EventTime::Attribute {
            name: "at".into(),
            format: TimeFormat::Auto,
        };
        assert_eq!(at.of(&PUBSUB, None, |_| Some("1500"), &record), Ok(1500));
        assert_eq!(
            at.of(&PUBSUB, None, |_| None, &record),
            Err("attribute \"at\" (event_time) is missing".into())
        );
    }

    fn clock(max: i64, seen: i64) -> SplitClock {
        SplitClock {
            max_event: max,
            last_seen_ms: seen,
        }
    }

    #[test]
    fn slowest_active_split_sets_the_watermark() {
        let mut s = HashMap::new();
        s.insert("a".into(), clock(10_000, 1000));
        s.insert("b".into(), clock(4_000, 1000));
        assert_eq!(combined(&s, 1000, None, 1500), Some(2_999));
        // b idle for 30 s: only a counts.
        assert_eq!(combined(&s, 1000, Some(30_000), 31_001), None);
        s.insert("a".into(), clock(10_000, 31_000));
        assert_eq!(combined(&s, 1000, Some(30_000), 31_001), Some(8_999));
    }

    #[test]
    fn parses_time_formats() {
        assert_eq!(parse_time(&Value::from(1500), TimeFormat::Auto), Ok(1500));
        assert_eq!(parse_time(&Value::from(1.5), TimeFormat::Seconds), Ok(1500));
        assert_eq!(
            parse_time(&Value::from("1970-01-01T00:00:01.5Z"), TimeFormat::Auto),
            Ok(1500)
        );
        assert!(parse_time(&Value::from("noon"), TimeFormat::Auto)
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn only_set_metadata_entries_are_named() {
        #[derive(serde::Serialize)]
        struct Metadata {
            b: Option<String>,
            a: Option<String>,
            c: Option<String>,
        }
        let m = Metadata {
            b: Some("y".into()),
            a: None,
            c: Some("x".into()),
        };
        let names = [("b".to_string(), "y".to_string()), ("c".into(), "x".into())];
        assert_eq!(set_names(&m), names, "set ones only, in declaration order");
    }
}
