//! Turns one Pub/Sub message into a record: the data by format, metadata under the configured
//! field names, the event time. Pure, so every malformed input is tested without a server.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::config::PubsubSourceConfig;
use crate::event_time::EventTimeSource;
use crate::record::Record;

/// The parts of a message the decoder reads.
#[derive(Debug, Clone)]
pub struct RawMessage<'a> {
    pub id: &'a str,
    pub data: &'a Bytes,
    pub attributes: &'a HashMap<String, String>,
    /// Publish time, ms since the epoch.
    pub publish_ms: Option<i64>,
    pub ordering_key: &'a str,
}

/// Decodes by the source's `format`, `value_field`, `metadata` and `event_time`.
pub struct Decoder(PubsubSourceConfig, Arc<str>);

impl Decoder {
    pub fn new(c: &PubsubSourceConfig) -> Self {
        Decoder(c.clone(), Arc::from(c.value_field.as_str()))
    }

    /// The record for `m`, or why it cannot be one.
    pub fn decode(&self, m: &RawMessage<'_>) -> Result<Record, String> {
        let c = &self.0;
        let mut record = c.format.decode(m.data, &self.1, "data")?;
        let event_time = match &c.event_time {
            Some(e) => {
                let attribute = |name: &str| m.attributes.get(name).map(String::as_str);
                Some(e.of(
                    &PubsubSourceConfig::EVENT_TIME,
                    m.publish_ms,
                    attribute,
                    &record,
                )?)
            }
            None => None,
        };
        // Metadata goes into the fields (which then no longer match the JSON text); without
        // it a JSON record stays unbuilt and is written as its original bytes.
        let md = &c.metadata;
        if let Some(f) = &md.message_id {
            record.fields_mut().insert(f.clone(), Value::from(m.id));
        }
        if let Some(f) = &md.publish_time {
            let v = m.publish_ms.map_or(Value::Null, Value::from);
            record.fields_mut().insert(f.clone(), v);
        }
        if let (Some(f), false) = (&md.ordering_key, m.ordering_key.is_empty()) {
            record
                .fields_mut()
                .insert(f.clone(), Value::from(m.ordering_key));
        }
        if let Some(f) = &md.attributes {
            let mut names: Vec<&String> = m.attributes.keys().collect();
            names.sort();
            let a: Map<String, Value> = names
                .into_iter()
                .map(|k| (k.clone(), Value::from(m.attributes[k].as_str())))
                .collect();
            record.fields_mut().insert(f.clone(), Value::Object(a));
        }
        Ok(record.with_event_time(event_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_time::TimeFormat;

    fn decoder(yaml: &str) -> Decoder {
        let c: PubsubSourceConfig =
            serde_norway::from_str(&format!("subscription: s\n{yaml}")).unwrap();
        Decoder::new(&c)
    }

    fn msg<'a>(data: &'a Bytes, attributes: &'a HashMap<String, String>) -> RawMessage<'a> {
        RawMessage {
            id: "17",
            data,
            attributes,
            publish_ms: Some(1_700_000_000_123),
            ordering_key: "k1",
        }
    }

    #[test]
    fn json_data_with_metadata_and_publish_time() {
        let d = decoder(
            "metadata: {message_id: _id, publish_time: _pt, ordering_key: _k, attributes: _a}\nevent_time: publish_time",
        );
        let data = Bytes::from_static(br#"{"x":1}"#);
        let attrs = HashMap::from([("b".to_string(), "2".to_string())]);
        let r = d.decode(&msg(&data, &attrs)).unwrap();
        assert_eq!(r.event_time, Some(1_700_000_000_123));
        let f = r.fields();
        assert_eq!(f["x"], 1);
        assert_eq!(f["_id"], "17");
        assert_eq!(f["_pt"], 1_700_000_000_123i64);
        assert_eq!(f["_k"], "k1");
        assert_eq!(f["_a"], serde_json::json!({ "b": "2" }));
    }

    #[test]
    fn a_json_record_without_metadata_keeps_its_text() {
        let d = decoder("");
        let data = Bytes::from_static(br#"{ "x" : 1.50 }"#);
        let attrs = HashMap::new();
        let r = d.decode(&msg(&data, &attrs)).unwrap();
        assert_eq!(r.json().map(|b| &b[..]), Some(&data[..]));
        assert_eq!(r.event_time, None);
    }

    #[test]
    fn string_bytes_and_event_time_from_attribute_or_field() {
        let attrs = HashMap::from([("ts".to_string(), "1500".to_string())]);
        let data = Bytes::from_static(b"hi");
        let d = decoder("format: string\nevent_time: {attribute: ts}");
        let r = d.decode(&msg(&data, &attrs)).unwrap();
        assert_eq!(r.fields()["value"], "hi");
        assert_eq!(r.event_time, Some(1500));
        let d = decoder("format: bytes\nvalue_field: raw");
        let r = d.decode(&msg(&data, &attrs)).unwrap();
        assert_eq!(r.fields()["raw"], "aGk=");
        let json = Bytes::from_static(br#"{"ts": 2}"#);
        let d = decoder("event_time: {field: ts, format: seconds}");
        assert_eq!(
            d.decode(&msg(&json, &attrs)).unwrap().event_time,
            Some(2000)
        );
        let _ = TimeFormat::Auto;
    }

    #[test]
    fn what_cannot_be_a_record_says_why() {
        let none = HashMap::new();
        let bad = Bytes::from_static(b"not json");
        assert!(decoder("")
            .decode(&msg(&bad, &none))
            .unwrap_err()
            .starts_with("data:"));
        let latin1 = Bytes::from_static(&[0xff, 0xfe]);
        assert!(decoder("format: string")
            .decode(&msg(&latin1, &none))
            .unwrap_err()
            .contains("UTF-8"));
        let ok = Bytes::from_static(b"{}");
        assert!(decoder("event_time: {attribute: ts}")
            .decode(&msg(&ok, &none))
            .unwrap_err()
            .contains("attribute \"ts\" (event_time) is missing"));
        let attrs = HashMap::from([("ts".to_string(), "later".to_string())]);
        assert!(decoder("event_time: {attribute: ts}")
            .decode(&msg(&ok, &attrs))
            .unwrap_err()
            .contains("attribute \"ts\" (event_time)"));
        let mut m = msg(&ok, &none);
        m.publish_ms = None;
        assert!(decoder("event_time: publish_time")
            .decode(&m)
            .unwrap_err()
            .contains("publish time"));
    }
}
