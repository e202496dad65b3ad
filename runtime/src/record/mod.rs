//! Records, batches and the messages that flow between nodes.

mod json;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use json::JsonObject;

pub use serde_json::{Map, Value};

/// Top-level fields of a record, in insertion order.
pub type Fields = Map<String, Value>;

/// Identifies a source split (a file, a generator partition, a Kafka partition).
pub type SplitId = Arc<str>;

/// One record: its fields and, once a watermark assigner or the source set it, its event time.
///
/// A record read from JSON keeps that text and builds its fields only when asked. A record
/// that passes through unchanged is written as its original text, and one field (a Kafka key)
/// is read by scanning it: in a Kafka → Kafka job, building and re-serializing every record's
/// fields was over half of the engine's CPU. [`Record::fields_mut`] drops the text, so a changed
/// record is never written as its old bytes.
#[derive(Clone, Debug)]
pub struct Record {
    /// Built on first use from `json` when the record came from JSON text.
    fields: OnceLock<Fields>,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time: Option<i64>,
    json: Option<JsonObject>,
}

impl Default for Record {
    fn default() -> Self {
        Record::new(Fields::new())
    }
}

/// Two records are equal when their fields and event times are: the JSON text they came from
/// is a form, not content.
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields() && self.event_time == other.event_time
    }
}

impl Record {
    pub fn new(fields: Fields) -> Self {
        Record {
            fields: OnceLock::from(fields),
            event_time: None,
            json: None,
        }
    }

    /// A record that is the JSON object `json`; its fields are built on first use.
    pub fn from_json(json: JsonObject) -> Self {
        Record {
            fields: OnceLock::new(),
            event_time: None,
            json: Some(json),
        }
    }

    /// The same record with event time `ms` (milliseconds since the Unix epoch), or none.
    pub fn with_event_time(mut self, ms: Option<i64>) -> Self {
        self.event_time = ms;
        self
    }

    pub fn fields(&self) -> &Fields {
        self.fields.get_or_init(|| match &self.json {
            Some(json) => json.fields(),
            None => Fields::new(),
        })
    }

    /// The top-level field `name`, without building the other fields when they are not built
    /// yet: for reading a field or two of a record that is otherwise passed on unchanged.
    pub fn get(&self, name: &str) -> Option<Cow<'_, Value>> {
        match (self.fields.get(), &self.json) {
            (None, Some(json)) => json.get(name).map(Cow::Owned),
            _ => self.fields().get(name).map(Cow::Borrowed),
        }
    }

    /// The fields, to change them; the record forgets the JSON text it was read from.
    pub fn fields_mut(&mut self) -> &mut Fields {
        self.fields();
        self.json = None;
        self.fields.get_mut().expect("built by fields() just above")
    }

    pub fn into_fields(mut self) -> Fields {
        std::mem::take(self.fields_mut())
    }

    /// Whether the fields were built (tests check that a pass-through path leaves them unbuilt).
    #[cfg(test)]
    pub(crate) fn is_built(&self) -> bool {
        self.fields.get().is_some()
    }

    /// The JSON object text the record was read from, while its fields are unchanged: a sink
    /// may write it as the record's JSON encoding.
    pub fn json(&self) -> Option<&Bytes> {
        self.json.as_ref().map(JsonObject::bytes)
    }

    /// A short JSON rendering for error messages (never the whole of a large record).
    pub fn describe(&self) -> String {
        let mut s = serde_json::to_string(self.fields()).unwrap_or_else(|_| "<unprintable>".into());
        if s.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            s.truncate(cut);
            s.push('…');
        }
        s
    }
}

/// Records from one split (or from several, after a merge), moved together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub split: Option<SplitId>,
    pub records: Vec<Record>,
}

impl Batch {
    pub fn new(split: Option<SplitId>, records: Vec<Record>) -> Self {
        Batch { split, records }
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What a checkpoint barrier asks of the nodes it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    /// Savepoints are kept, and sinks roll every open part so the savepoint holds no open files.
    pub savepoint: bool,
    /// The job ends after this barrier (end of bounded input, or stop-with-savepoint).
    pub last: bool,
}

impl Barrier {
    /// Whether sinks must close every open part at this barrier.
    pub fn rolls_all(&self) -> bool {
        self.savepoint || self.last
    }
}

/// The stream between two nodes.
#[derive(Clone, Debug)]
pub enum Message {
    Batch(Batch),
    /// Event time (ms) up to which no earlier record is expected.
    Watermark(i64),
    Barrier(Barrier),
    /// No more input will follow on this channel.
    End,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_text(text: &'static str) -> Record {
        Record::from_json(JsonObject::parse(Bytes::from_static(text.as_bytes())).unwrap())
    }

    #[test]
    fn a_json_record_builds_its_fields_only_when_asked() {
        let r = from_text(r#"{ "a" : 1, "b": "x" }"#);
        assert_eq!(r.get("a").as_deref(), Some(&json!(1)));
        assert!(!r.is_built(), "get scans the text");
        assert_eq!(
            r,
            Record::new(json!({"a": 1, "b": "x"}).as_object().unwrap().clone())
        );
        assert!(r.is_built());
        assert_eq!(r.get("b").as_deref(), Some(&json!("x")));
        assert_eq!(
            r.json().map(|b| &b[..]),
            Some(&br#"{ "a" : 1, "b": "x" }"#[..])
        );
    }

    #[test]
    fn changing_the_fields_drops_the_json_text() {
        let mut r = from_text(r#"{ "a" : 1 }"#);
        assert!(r.clone().json().is_some(), "a clone keeps it");
        r.fields_mut().insert("b".into(), json!(2));
        assert_eq!(r.json(), None);
        assert_eq!(r.get("b").as_deref(), Some(&json!(2)));
        assert_eq!(Value::Object(r.into_fields()), json!({ "a": 1, "b": 2 }));
        assert_eq!(Record::default().fields(), &Fields::new());
    }
}
