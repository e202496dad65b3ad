//! Records, batches and the messages that flow between nodes.

mod json;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use json::JsonObject;

pub use serde_json::{Map, Value};

/// `bytes` as text. The SIMD check is 3–5× faster than std's on the 1 KiB values a Kafka → Kafka
/// job checks for every record (~5 % of its instructions); std's runs only on failure, for its
/// error, which says where the bad byte is.
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    simdutf8::basic::from_utf8(bytes).or_else(|_| std::str::from_utf8(bytes))
}

/// Top-level fields of a record, in insertion order.
pub type Fields = Map<String, Value>;

/// Identifies a source split (a file, a generator partition, a Kafka partition).
pub type SplitId = Arc<str>;

/// One record: its fields and, once a watermark assigner or the source set it, its event time.
///
/// A record read from JSON keeps that text and builds its fields only when asked. A record
/// that passes through unchanged is written as its original text, and one field (a Kafka key)
/// is read by scanning it: in a Kafka → Kafka job, building and re-serializing every record's
/// fields was over half of the engine's CPU. A message read whole as text (`format: string`)
/// is kept the same way, as one string field a sink can send on without copying it into a map.
/// [`Record::fields_mut`] drops the text, so a changed record is never written as its old bytes.
#[derive(Clone, Debug)]
pub struct Record {
    /// Built on first use from `text` when the record came from a message's text.
    fields: OnceLock<Fields>,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time: Option<i64>,
    text: Option<Text>,
}

/// The text a record was read from, while its fields are unchanged.
#[derive(Clone, Debug)]
enum Text {
    /// A JSON object: the record's fields.
    Json(JsonObject),
    /// Valid UTF-8: the record's only field, a string named `name`.
    Field { name: Arc<str>, text: Bytes },
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
            text: None,
        }
    }

    /// A record that is the JSON object `json`; its fields are built on first use.
    pub fn from_json(json: JsonObject) -> Self {
        Record {
            fields: OnceLock::new(),
            event_time: None,
            text: Some(Text::Json(json)),
        }
    }

    /// A record whose one field `name` is the string `text`; fails when `text` is not UTF-8.
    pub fn from_string_field(name: Arc<str>, text: Bytes) -> Result<Self, std::str::Utf8Error> {
        utf8(&text)?;
        Ok(Record {
            fields: OnceLock::new(),
            event_time: None,
            text: Some(Text::Field { name, text }),
        })
    }

    /// The same record with event time `ms` (milliseconds since the Unix epoch), or none.
    pub fn with_event_time(mut self, ms: Option<i64>) -> Self {
        self.event_time = ms;
        self
    }

    pub fn fields(&self) -> &Fields {
        self.fields.get_or_init(|| match &self.text {
            Some(Text::Json(json)) => json.fields(),
            Some(Text::Field { name, text }) => {
                let mut fields = Fields::new();
                // Checked by `from_string_field`; the lossy form cannot differ.
                let s = String::from_utf8_lossy(text).into_owned();
                fields.insert(name.to_string(), Value::String(s));
                fields
            }
            None => Fields::new(),
        })
    }

    /// The top-level field `name`, without building the other fields when they are not built
    /// yet: for reading a field or two of a record that is otherwise passed on unchanged.
    pub fn get(&self, name: &str) -> Option<Cow<'_, Value>> {
        match (self.fields.get(), &self.text) {
            (None, Some(Text::Json(json))) => json.get(name).map(Cow::Owned),
            (None, Some(Text::Field { name: n, text })) => (**n == *name)
                .then(|| Cow::Owned(Value::String(String::from_utf8_lossy(text).into_owned()))),
            _ => self.fields().get(name).map(Cow::Borrowed),
        }
    }

    /// The fields, to change them; the record forgets the JSON text it was read from.
    pub fn fields_mut(&mut self) -> &mut Fields {
        self.fields();
        self.text = None;
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
        match &self.text {
            Some(Text::Json(json)) => Some(json.bytes()),
            _ => None,
        }
    }

    /// The UTF-8 bytes of the string field `name` when the record is that one field, read whole
    /// from a message and unchanged.
    fn string_field(&self, name: &str) -> Option<&Bytes> {
        match &self.text {
            Some(Text::Field { name: n, text }) if **n == *name => Some(text),
            _ => None,
        }
    }

    /// Field `name` as the whole of a message (a sink's `value_field`): a string as its UTF-8
    /// bytes (a record read whole as text lends its own, uncopied), anything else as its JSON
    /// text. The error, for a missing or null field, names it.
    pub fn bare(&self, name: &str) -> Result<Cow<'_, [u8]>, String> {
        if let Some(text) = self.string_field(name) {
            return Ok(Cow::Borrowed(&text[..]));
        }
        match self.get(name).as_deref() {
            None => Err(format!("{name:?} is missing")),
            Some(Value::Null) => Err(format!("{name:?} is null")),
            Some(Value::String(s)) => Ok(Cow::Owned(s.clone().into_bytes())),
            Some(other) => Ok(Cow::Owned(other.to_string().into_bytes())),
        }
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
    fn a_string_field_record_is_its_text_until_changed() {
        let name: Arc<str> = Arc::from("line");
        let text = Bytes::from_static("héllo".as_bytes());
        let mut r = Record::from_string_field(name.clone(), text.clone()).unwrap();
        assert_eq!(r.string_field("line"), Some(&text));
        assert_eq!(r.string_field("other"), None);
        assert_eq!(r.get("line").as_deref(), Some(&json!("héllo")));
        assert_eq!(r.get("other"), None);
        assert!(!r.is_built(), "read without building the fields");
        assert_eq!(r.json(), None, "text, not a JSON object");
        assert_eq!(
            Value::Object(r.fields().clone()),
            json!({ "line": "héllo" })
        );
        r.fields_mut().insert("n".into(), json!(1));
        assert_eq!(r.string_field("line"), None, "changed: no longer its text");
        assert!(Record::from_string_field(name, Bytes::from_static(b"\xff")).is_err());
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
