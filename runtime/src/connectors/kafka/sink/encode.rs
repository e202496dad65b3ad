//! A record → a Kafka message: topic, key, JSON value and headers.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::config::{KeySpec, Settings, TopicSpec, ValueSpec};
use crate::record::Record;

/// One message ready to send.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    pub topic: Cow<'a, str>,
    pub key: Option<Vec<u8>>,
    /// The record's own JSON text when it still has it, else the fields serialized.
    pub value: Cow<'a, [u8]>,
    pub headers: Vec<(&'a str, Vec<u8>)>,
    /// Kafka timestamp: the record's event time when it has one.
    pub timestamp: Option<i64>,
}

/// A string as its bytes, anything else as JSON (a key or header of `42` is the text `42`).
fn scalar_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// Why a record cannot be sent; the caller adds the node and the record.
pub type EncodeError = String;

/// Reads fields with [`Record::get`], so a record still in its JSON text is not built just to
/// find its key, topic or headers.
pub fn encode<'a>(settings: &'a Settings, record: &'a Record) -> Result<Message<'a>, EncodeError> {
    let topic = match &settings.topic {
        TopicSpec::Fixed(t) => Cow::Borrowed(t.as_str()),
        TopicSpec::Field(f) => match record.get(f) {
            Some(Cow::Borrowed(Value::String(t))) if !t.is_empty() => Cow::Borrowed(t.as_str()),
            Some(Cow::Owned(Value::String(t))) if !t.is_empty() => Cow::Owned(t),
            Some(v) if v.is_string() => return Err(format!("topic_field {f:?} is empty")),
            None => return Err(format!("topic_field {f:?} is missing")),
            Some(v) if v.is_null() => return Err(format!("topic_field {f:?} is missing")),
            Some(other) => return Err(format!("topic_field {f:?} must be a string, got {other}")),
        },
    };
    let key = match &settings.key {
        KeySpec::None => None,
        KeySpec::Field(f) => match record.get(f) {
            Some(v) if !v.is_null() => Some(scalar_bytes(&v)),
            _ => return Err(format!("key_field {f:?} is missing")),
        },
        KeySpec::Fields(fs) => {
            let mut parts = Vec::with_capacity(fs.len());
            for f in fs {
                match record.get(f) {
                    Some(v) => parts.push(v),
                    None => return Err(format!("key field {f:?} is missing")),
                }
            }
            Some(serde_json::to_vec(&parts).map_err(|e| e.to_string())?)
        }
    };
    let value = match &settings.value {
        ValueSpec::Record => match record.json() {
            Some(json) => Ok(Cow::Borrowed(&json[..])),
            None => serde_json::to_vec(record.fields()).map(Cow::Owned),
        },
        ValueSpec::Fields(names) => {
            let mut m = Map::new();
            for n in names {
                if let Some(v) = record.get(n) {
                    m.insert(n.clone(), v.into_owned());
                }
            }
            serde_json::to_vec(&m).map(Cow::Owned)
        }
        ValueSpec::Field(f) => Ok(record.bare(f).map_err(|e| format!("value_field {e}"))?),
    }
    .map_err(|e| format!("cannot serialize the value: {e}"))?;
    let headers = settings
        .headers
        .iter()
        .filter_map(|(name, field)| match record.get(field) {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => Some((name.as_str(), scalar_bytes(&v))),
        })
        .collect();
    Ok(Message {
        topic,
        key,
        value,
        headers,
        timestamp: record.event_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::kafka::sink::config::Delivery;
    use crate::record::JsonObject;
    use serde_json::json;

    fn settings(topic: TopicSpec, key: KeySpec) -> Settings {
        Settings {
            bootstrap_servers: "k".into(),
            properties: Default::default(),
            topic,
            key,
            value: ValueSpec::Record,
            headers: vec![("trace".into(), "tid".into())],
            delivery: Delivery::AtLeastOnce,
            transactional_id_prefix: "weir".into(),
            transaction_timeout: None,
            pool_size: 3,
            broker_max_timeout: None,
        }
    }

    fn rec(v: Value) -> Record {
        let Value::Object(fields) = v else { panic!() };
        Record::new(fields).with_event_time(Some(7))
    }

    #[test]
    fn whole_record_fixed_topic_single_key() {
        let s = settings(TopicSpec::Fixed("out".into()), KeySpec::Field("id".into()));
        let r = rec(json!({"id": 42, "name": "a", "tid": "x1"}));
        let m = encode(&s, &r).unwrap();
        assert_eq!(m.topic, "out");
        assert_eq!(m.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(
            serde_json::from_slice::<Value>(&m.value).unwrap(),
            json!({"id": 42, "name": "a", "tid": "x1"})
        );
        assert_eq!(m.headers, vec![("trace", b"x1".to_vec())]);
        assert_eq!(m.timestamp, Some(7));
    }

    #[test]
    fn a_records_own_json_text_is_sent_until_its_fields_change() {
        let s = settings(TopicSpec::Fixed("out".into()), KeySpec::Field("id".into()));
        let text = r#"{ "id": 42, "amount": 1.50 }"#;
        let json = JsonObject::parse(bytes::Bytes::from_static(text.as_bytes())).unwrap();
        let mut r = Record::from_json(json);
        let m = encode(&s, &r).unwrap();
        assert!(matches!(m.value, Cow::Borrowed(_)), "no copy of the text");
        assert_eq!(&m.value[..], text.as_bytes());
        assert_eq!(m.key.as_deref(), Some(&b"42"[..]));
        assert!(!r.is_built(), "the key was read from the text");
        r.fields_mut().insert("id".into(), json!(43));
        assert_eq!(
            &encode(&s, &r).unwrap().value[..],
            br#"{"id":43,"amount":1.5}"#
        );
    }

    #[test]
    fn topic_from_field_composite_key_selected_value() {
        let mut s = settings(
            TopicSpec::Field("t".into()),
            KeySpec::Fields(vec!["a".into(), "b".into()]),
        );
        s.value = ValueSpec::Fields(vec!["a".into(), "gone".into()]);
        let r = rec(json!({"t": "events", "a": "x", "b": 2}));
        let m = encode(&s, &r).unwrap();
        assert_eq!(m.topic, "events");
        assert_eq!(m.key.as_deref(), Some(&br#"["x",2]"#[..]));
        assert_eq!(&m.value[..], br#"{"a":"x"}"#);
        assert!(m.headers.is_empty(), "missing header fields are left out");
    }

    #[test]
    fn a_value_field_is_sent_bare_and_a_string_records_text_without_a_copy() {
        let mut s = settings(TopicSpec::Fixed("out".into()), KeySpec::None);
        s.value = ValueSpec::Field("line".into());
        let text = bytes::Bytes::from_static("a \"quoted\" line".as_bytes());
        let r = Record::from_string_field(std::sync::Arc::from("line"), text.clone()).unwrap();
        let m = encode(&s, &r).unwrap();
        assert!(matches!(m.value, Cow::Borrowed(_)), "no copy of the text");
        assert_eq!(&m.value[..], &text[..], "bare, not a JSON string");
        let built = rec(json!({"line": "built", "x": 1}));
        assert_eq!(&encode(&s, &built).unwrap().value[..], b"built");
        let object = rec(json!({"line": {"n": 2}}));
        let m = encode(&s, &object).unwrap();
        assert_eq!(&m.value[..], br#"{"n":2}"#, "not a string: its JSON text");
        assert_eq!(
            encode(&s, &rec(json!({"x": 1}))).unwrap_err(),
            "value_field \"line\" is missing"
        );
        assert_eq!(
            encode(&s, &rec(json!({"line": null}))).unwrap_err(),
            "value_field \"line\" is null"
        );
    }

    #[test]
    fn bad_records_say_why() {
        let s = settings(TopicSpec::Field("t".into()), KeySpec::None);
        assert_eq!(
            encode(&s, &rec(json!({"x": 1}))).unwrap_err(),
            "topic_field \"t\" is missing"
        );
        assert!(encode(&s, &rec(json!({"t": 5})))
            .unwrap_err()
            .contains("must be a string"));
        assert!(encode(&s, &rec(json!({"t": ""})))
            .unwrap_err()
            .contains("empty"));
        let s = settings(TopicSpec::Fixed("o".into()), KeySpec::Field("k".into()));
        assert!(encode(&s, &rec(json!({"x": 1})))
            .unwrap_err()
            .contains("key_field \"k\" is missing"));
    }
}
