//! Turns a record into a Pub/Sub message: JSON data (the record's own text when it passes
//! through unchanged), attributes from fields, the ordering key from a field. Pure.

use std::collections::HashMap;

use bytes::Bytes;
use google_cloud_pubsub::model::Message;
use serde_json::{Map, Value};

use super::config::PubsubSinkConfig;
use crate::record::Record;

pub struct Encoder {
    value_fields: Option<Vec<String>>,
    ordering_key_field: Option<String>,
    attributes: Vec<(String, String)>,
    /// The length of the last message serialized from fields.
    last_len: std::cell::Cell<usize>,
}

/// A field as message text: a string as it is, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Encoder {
    pub fn new(c: &PubsubSinkConfig) -> Self {
        Encoder {
            value_fields: c.value_fields.clone(),
            ordering_key_field: c.ordering_key_field.clone(),
            attributes: c
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            last_len: std::cell::Cell::new(0),
        }
    }

    pub fn encode(&self, r: &Record) -> Message {
        let data: Bytes = match (&self.value_fields, r.json()) {
            (None, Some(original)) => original.clone(),
            (None, None) => {
                // Sized like the last message: `to_vec` starts at 128 bytes and copies the
                // text to grow it, which was a copy of most messages.
                let mut buf = Vec::with_capacity(self.last_len.get() + 16);
                if serde_json::to_writer(&mut buf, r.fields()).is_err() {
                    buf.clear();
                }
                self.last_len.set(buf.len());
                Bytes::from(buf)
            }
            (Some(names), _) => {
                let mut m = Map::new();
                for n in names {
                    if let Some(v) = r.get(n) {
                        m.insert(n.clone(), v.into_owned());
                    }
                }
                Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
            }
        };
        let mut msg = Message::new().set_data(data);
        if !self.attributes.is_empty() {
            let mut attrs = HashMap::with_capacity(self.attributes.len());
            for (name, field) in &self.attributes {
                match r.get(field) {
                    Some(v) if !v.is_null() => {
                        attrs.insert(name.clone(), text(&v));
                    }
                    _ => {}
                }
            }
            msg = msg.set_attributes(attrs);
        }
        if let Some(f) = &self.ordering_key_field {
            if let Some(v) = r.get(f).filter(|v| !v.is_null()) {
                msg = msg.set_ordering_key(text(&v));
            }
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JsonObject;

    fn encoder(yaml: &str) -> Encoder {
        let c: PubsubSinkConfig = serde_norway::from_str(&format!("topic: t\n{yaml}")).unwrap();
        Encoder::new(&c)
    }

    fn record(json: &'static str) -> Record {
        Record::from_json(JsonObject::parse(Bytes::from_static(json.as_bytes())).unwrap())
    }

    #[test]
    fn an_unchanged_record_is_sent_as_its_own_text() {
        let m = encoder("").encode(&record(r#"{ "id" : 1.50 }"#));
        assert_eq!(&m.data[..], br#"{ "id" : 1.50 }"#);
        assert!(m.attributes.is_empty() && m.ordering_key.is_empty());
    }

    #[test]
    fn value_fields_attributes_and_ordering_key() {
        let e = encoder(
            "value_fields: [id]\nattributes: {src: origin, n: count, gone: missing}\nordering_key_field: customer",
        );
        let m = e.encode(&record(
            r#"{"id": 7, "origin": "web", "count": 3, "customer": "c-1", "x": 0}"#,
        ));
        assert_eq!(&m.data[..], br#"{"id":7}"#);
        assert_eq!(m.attributes["src"], "web");
        assert_eq!(m.attributes["n"], "3");
        assert!(!m.attributes.contains_key("gone"));
        assert_eq!(m.ordering_key, "c-1");
        let numeric_key = encoder("ordering_key_field: k").encode(&record(r#"{"k": 12}"#));
        assert_eq!(numeric_key.ordering_key, "12");
        let no_key = encoder("ordering_key_field: k").encode(&record(r#"{"k": null}"#));
        assert_eq!(no_key.ordering_key, "");
    }
}
