//! What the sources that turn messages into records share (Kafka, Kinesis, Pub/Sub): the
//! `format:` of a message's value, how a value becomes a record, and the names of the
//! `metadata:` fields. The checks of these settings are [`EventTimeForms::check_source`] (in
//! `event_time`, which builds without any connector feature).
//!
//! [`EventTimeForms::check_source`]: crate::event_time::EventTimeForms::check_source

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::record::{JsonObject, Record};

/// `format:` of a message's value.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// A JSON object per message; its fields become the record's fields.
    #[default]
    Json,
    /// UTF-8 text under `value_field` (kept as the message's bytes until a field is changed,
    /// so a sink sending that field on does not copy it).
    String,
    /// Any bytes, base64-encoded under `value_field`.
    Bytes,
}

impl ValueFormat {
    /// `value_field` when the value is kept whole under it (string, bytes); `None` for JSON,
    /// whose fields are the record's.
    pub fn field(self, value_field: &str) -> Option<&str> {
        (self != ValueFormat::Json).then_some(value_field)
    }

    /// The record of a message's `data`; `what` names it in errors (`the data`).
    pub fn decode(
        self,
        data: &Bytes,
        value_field: &Arc<str>,
        what: &str,
    ) -> Result<Record, String> {
        match self {
            ValueFormat::Json => JsonObject::parse(data.clone())
                .map(Record::from_json)
                .map_err(|e| format!("{what}: {e}")),
            ValueFormat::String => Record::from_string_field(value_field.clone(), data.clone())
                .map_err(|e| format!("{what} is not valid UTF-8: {e}")),
            ValueFormat::Bytes => {
                let mut fields = Map::new();
                fields.insert(value_field.to_string(), base64(data));
                Ok(Record::new(fields))
            }
        }
    }
}

/// `value_field:` when unset: where a value kept whole (string, bytes) goes.
pub fn default_value_field() -> String {
    "value".into()
}

/// Bytes as a JSON string, base64-encoded.
pub fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_records_by_format() {
        let data = Bytes::from_static(b"{\"a\": 1}");
        let r = ValueFormat::Json
            .decode(&data, &Arc::from("value"), "the data")
            .unwrap();
        assert_eq!(r.get("a").as_deref(), Some(&Value::from(1)));
        let r = ValueFormat::String
            .decode(&data, &Arc::from("v"), "the data")
            .unwrap();
        assert_eq!(r.get("v").as_deref(), Some(&Value::from("{\"a\": 1}")));
        let r = ValueFormat::Bytes
            .decode(
                &Bytes::from_static(b"\xff\x00"),
                &Arc::from("v"),
                "the data",
            )
            .unwrap();
        assert_eq!(r.get("v").as_deref(), Some(&Value::from("/wA=")));
        let bad = Bytes::from_static(b"\xff");
        let e = ValueFormat::String
            .decode(&bad, &Arc::from("v"), "the data")
            .unwrap_err();
        assert!(e.starts_with("the data is not valid UTF-8"), "{e}");
        let e = ValueFormat::Json
            .decode(&Bytes::from_static(b"[1]"), &Arc::from("v"), "data")
            .unwrap_err();
        assert!(e.starts_with("data: expected a JSON object"), "{e}");
    }

    #[test]
    fn only_values_kept_whole_have_a_field() {
        assert_eq!(ValueFormat::Json.field("value"), None);
        assert_eq!(ValueFormat::Bytes.field("value"), Some("value"));
    }
}
