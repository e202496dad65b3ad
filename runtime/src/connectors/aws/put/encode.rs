//! A record → the bytes of an entry, and a partition key. Pure, read with [`Record::get`] so a
//! record still in its JSON text is not built just to find a field.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use crate::record::Record;

/// The payload: the record as JSON (its own text while unchanged), or one field's value
/// (a string as its UTF-8 bytes, anything else as JSON).
pub fn payload(record: &Record, value_field: Option<&str>) -> Result<Bytes, String> {
    match value_field {
        None => match record.json() {
            Some(text) => Ok(text.clone()),
            None => serde_json::to_vec(record.fields())
                .map(Bytes::from)
                .map_err(|e| format!("cannot serialize the record: {e}")),
        },
        Some(f) => record
            .bare(f)
            .map(|b| Bytes::from(b.into_owned()))
            .map_err(|e| format!("value_field {e}")),
    }
}

/// A string as itself, anything else as its JSON text (a key of `42` is `42`).
pub fn scalar_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// The string value of `field` (see [`scalar_text`]); `what` names the setting in errors.
pub fn field_text(record: &Record, field: &str, what: &str) -> Result<String, String> {
    match record.get(field) {
        None => Err(format!("{what} {field:?} is missing")),
        Some(v) if v.is_null() => Err(format!("{what} {field:?} is null")),
        Some(v) => Ok(scalar_text(&v).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JsonObject;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_record_read_as_json_is_sent_as_its_own_text() {
        let text = Bytes::from_static(b"{ \"id\": 1.50 }");
        let r = Record::from_json(JsonObject::parse(text.clone()).unwrap());
        assert_eq!(payload(&r, None).unwrap(), text);
        assert_eq!(
            payload(&rec(json!({"id": 1})), None).unwrap(),
            Bytes::from("{\"id\":1}")
        );
    }

    #[test]
    fn a_value_field_is_sent_bare() {
        let r = rec(json!({"line": "hello", "n": {"a": 1}, "z": null}));
        assert_eq!(payload(&r, Some("line")).unwrap(), Bytes::from("hello"));
        assert_eq!(payload(&r, Some("n")).unwrap(), Bytes::from("{\"a\":1}"));
        assert!(payload(&r, Some("z")).unwrap_err().contains("null"));
        assert!(payload(&r, Some("q")).unwrap_err().contains("missing"));
    }

    #[test]
    fn keys_are_text() {
        let r = rec(json!({"user": "u1", "n": 42}));
        assert_eq!(field_text(&r, "user", "k").unwrap(), "u1");
        assert_eq!(field_text(&r, "n", "k").unwrap(), "42");
        assert_eq!(
            field_text(&r, "x", "partition_key_field").unwrap_err(),
            "partition_key_field \"x\" is missing"
        );
    }
}
