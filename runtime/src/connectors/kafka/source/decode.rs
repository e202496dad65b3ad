//! Turns one Kafka message into a record: the value by format, metadata under the configured
//! field names, the event time. Pure, so every malformed input is tested without a broker.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::config::{KafkaSourceConfig, KeyFormat, MetadataFields, ValueFormat};
use crate::connectors::message::base64 as b64;
use crate::event_time::EventTime;
use crate::event_time::EventTimeSource;
use crate::record::{JsonObject, Record};

/// The parts of a message the decoder reads (borrowed from librdkafka's buffer).
#[derive(Debug, Clone, Default)]
pub struct RawMessage<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp (create or log-append time), ms since the epoch.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

pub struct Decoder {
    format: ValueFormat,
    value_field: Arc<str>,
    key_format: KeyFormat,
    metadata: MetadataFields,
    event_time: Option<EventTime>,
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("{what} is not valid UTF-8: {e}"))
}

impl Decoder {
    pub fn new(c: &KafkaSourceConfig) -> Self {
        Decoder {
            format: c.format,
            value_field: Arc::from(c.value_field.as_str()),
            key_format: c.key_format,
            metadata: c.metadata.clone(),
            event_time: c.event_time.clone(),
        }
    }

    /// Whether `decode` reads the message's headers. Reading them costs librdkafka a parse of
    /// every message's header section (~7 % of a Kafka → Kafka job's instructions), so a
    /// source that does not put them in its records does not read them.
    pub fn wants_headers(&self) -> bool {
        self.metadata.headers.is_some()
    }

    /// The record for `m`, or why it cannot be one (a poison message).
    pub fn decode(&self, m: &RawMessage<'_>) -> Result<Record, String> {
        let mut record = self.value(m.value)?;
        let md = &self.metadata;
        // Metadata fields go into the record's fields (which then no longer match a JSON
        // value's text); without them a JSON record stays unbuilt.
        if let Some(f) = &md.key {
            let key = self.key(m.key)?;
            record.fields_mut().insert(f.clone(), key);
        }
        if let Some(f) = &md.headers {
            let mut h = Map::new();
            for (name, value) in &m.headers {
                let v = match value {
                    Some(b) => Value::String(utf8(b, &format!("header {name:?}"))?.to_string()),
                    None => Value::Null,
                };
                h.insert(name.to_string(), v);
            }
            record.fields_mut().insert(f.clone(), Value::Object(h));
        }
        if let Some(f) = &md.topic {
            record.fields_mut().insert(f.clone(), Value::from(m.topic));
        }
        if let Some(f) = &md.partition {
            record
                .fields_mut()
                .insert(f.clone(), Value::from(m.partition));
        }
        if let Some(f) = &md.offset {
            record.fields_mut().insert(f.clone(), Value::from(m.offset));
        }
        if let Some(f) = &md.timestamp {
            let ts = m.timestamp.map_or(Value::Null, Value::from);
            record.fields_mut().insert(f.clone(), ts);
        }
        let event_time = match &self.event_time {
            Some(e) => Some(e.of(
                &KafkaSourceConfig::EVENT_TIME,
                m.timestamp,
                |_| None,
                &record,
            )?),
            None => None,
        };
        Ok(record.with_event_time(event_time))
    }

    fn value(&self, value: Option<&[u8]>) -> Result<Record, String> {
        match (self.format, value) {
            (ValueFormat::Json, None) => {
                Err("null value (a tombstone) where a JSON object was expected".into())
            }
            (ValueFormat::Json, Some(b)) => {
                JsonObject::parse(Bytes::copy_from_slice(b)).map(Record::from_json)
            }
            (_, None) => {
                let mut fields = Map::new();
                fields.insert(self.value_field.to_string(), Value::Null);
                Ok(Record::new(fields))
            }
            (format, Some(b)) => {
                format.decode(&Bytes::copy_from_slice(b), &self.value_field, "the value")
            }
        }
    }

    fn key(&self, key: Option<&[u8]>) -> Result<Value, String> {
        let Some(k) = key else { return Ok(Value::Null) };
        match self.key_format {
            KeyFormat::String => Ok(Value::from(utf8(k, "the key")?)),
            KeyFormat::Bytes => Ok(b64(k)),
            KeyFormat::Json => {
                serde_json::from_slice(k).map_err(|e| format!("the key is not valid JSON: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> KafkaSourceConfig {
        let mut v = json!({ "bootstrap_servers": "b:9092", "topics": ["t"] });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn msg<'a>(value: Option<&'a [u8]>) -> RawMessage<'a> {
        RawMessage {
            topic: "t",
            partition: 2,
            offset: 41,
            timestamp: Some(1_700_000_000_000),
            key: Some(b"k1"),
            value,
            headers: vec![("trace", Some(b"abc")), ("empty", None)],
        }
    }

    #[test]
    fn json_values_with_every_metadata_field() {
        let d = Decoder::new(&config(json!({
            "metadata": { "key": "_k", "headers": "_h", "topic": "_t", "partition": "_p",
                          "offset": "_o", "timestamp": "_ts" },
            "event_time": "kafka_timestamp",
        })));
        let r = d.decode(&msg(Some(br#"{"id": 7}"#))).unwrap();
        assert_eq!(
            Value::Object(r.fields().clone()),
            json!({ "id": 7, "_k": "k1", "_h": { "trace": "abc", "empty": null }, "_t": "t",
                    "_p": 2, "_o": 41, "_ts": 1_700_000_000_000i64 })
        );
        assert_eq!(r.event_time, Some(1_700_000_000_000));
    }

    #[test]
    fn a_json_value_keeps_its_text_unless_metadata_fields_are_added() {
        let text = br#"{"id": 7, "x": 1.50}"#;
        let plain = Decoder::new(&config(json!({})));
        let r = plain.decode(&msg(Some(text))).unwrap();
        assert_eq!(r.json().map(|b| &b[..]), Some(&text[..]));
        let with_topic = Decoder::new(&config(json!({ "metadata": { "topic": "_t" } })));
        let r = with_topic.decode(&msg(Some(text))).unwrap();
        assert_eq!(r.json(), None, "the text lacks the added field");
        assert_eq!(r.fields()["_t"], "t");
    }

    #[test]
    fn string_and_bytes_values_land_in_the_value_field() {
        let s = Decoder::new(&config(
            json!({ "format": "string", "value_field": "line" }),
        ));
        assert_eq!(
            s.decode(&msg(Some(b"hello"))).unwrap().fields()["line"],
            "hello"
        );
        assert!(s
            .decode(&msg(Some(b"\xff\xfe")))
            .unwrap_err()
            .contains("UTF-8"));
        assert_eq!(s.decode(&msg(None)).unwrap().fields()["line"], Value::Null);
        let b = Decoder::new(&config(json!({ "format": "bytes" })));
        assert_eq!(
            b.decode(&msg(Some(b"\xff\x00"))).unwrap().fields()["value"],
            "/wA="
        );
    }

    #[test]
    fn poison_messages_say_why() {
        let d = Decoder::new(&config(json!({})));
        assert!(d
            .decode(&msg(Some(b"{not json")))
            .unwrap_err()
            .starts_with("invalid JSON"));
        assert!(d
            .decode(&msg(Some(b"[1,2]")))
            .unwrap_err()
            .contains("expected a JSON object"));
        assert!(d.decode(&msg(None)).unwrap_err().contains("tombstone"));
        let keyed = Decoder::new(&config(
            json!({ "metadata": { "key": "k" }, "key_format": "json" }),
        ));
        assert!(keyed
            .decode(&msg(Some(b"{}")))
            .unwrap_err()
            .contains("key is not valid JSON"));
        let timed = Decoder::new(&config(json!({ "event_time": { "field": "ts" } })));
        assert!(timed
            .decode(&msg(Some(b"{}")))
            .unwrap_err()
            .contains("field \"ts\" (event_time) is missing"));
        assert!(timed
            .decode(&msg(Some(br#"{"ts": "noon"}"#)))
            .unwrap_err()
            .contains("RFC 3339"));
        let headers = Decoder::new(&config(json!({ "metadata": { "headers": "h" } })));
        let mut m = msg(Some(b"{}"));
        m.headers = vec![("bin", Some(b"\xff"))];
        assert!(headers.decode(&m).unwrap_err().contains("header \"bin\""));
    }

    #[test]
    fn event_time_from_a_field() {
        let d = Decoder::new(&config(
            json!({ "event_time": { "field": "ts", "format": "seconds" } }),
        ));
        assert_eq!(
            d.decode(&msg(Some(br#"{"ts": 2.5}"#))).unwrap().event_time,
            Some(2500)
        );
    }
}
