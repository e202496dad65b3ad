//! The lookup key read from a record, and a response mapped into output fields.

use serde_json::{Map, Value};

use crate::record::Record;

/// Reads the lookup key's values; the error names the first missing field.
pub fn key_values(record: &Record, key: &[String]) -> Result<Vec<Value>, String> {
    key.iter()
        .map(|f| {
            record
                .fields()
                .get(f)
                .cloned()
                .ok_or_else(|| format!("no field {f:?} (a field of the lookup `key`)"))
        })
        .collect()
}

/// The cache identity of a key: its values as a JSON array (unambiguous, unlike joining text).
pub fn cache_key(values: &[Value]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

/// Where an output field's value sits in a response: `.` (the whole response), a dotted path
/// `profile.tier` (array indexes as numbers) or a JSON pointer `/profile/tier`.
///
/// Held as its unescaped steps, so reading it allocates nothing: `Value::pointer` unescapes
/// every step into two new strings on each call, and a lookup reads a path per field per record.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsePath(Vec<String>);

impl ResponsePath {
    pub fn parse(path: &str) -> Self {
        let p = path.trim();
        if p.is_empty() || p == "." {
            return ResponsePath(Vec::new());
        }
        match p.strip_prefix('/') {
            // RFC 6901: `~1` is `/`, then `~0` is `~`.
            Some(pointer) => ResponsePath(
                pointer
                    .split('/')
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            ),
            None => ResponsePath(p.split('.').map(str::to_string).collect()),
        }
    }

    /// The unescaped steps, root first (`.` has none).
    pub fn steps(&self) -> &[String] {
        &self.0
    }

    /// The value at the path, read as `Value::pointer` reads a JSON pointer.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(v, |v, step| match v {
            Value::Object(m) => m.get(step),
            Value::Array(a) => array_index(step).and_then(|i| a.get(i)),
            _ => None,
        })
    }
}

/// An array step: digits without a sign or a leading zero (RFC 6901, as `Value::pointer`).
fn array_index(step: &str) -> Option<usize> {
    if step.starts_with('+') || (step.starts_with('0') && step.len() != 1) {
        return None;
    }
    step.parse().ok()
}

/// Output field names and where each comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMapping(pub Vec<(String, ResponsePath)>);

impl FieldMapping {
    /// The enrichment from a response; a path the response lacks gives null.
    pub fn extract(&self, response: &Value) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, path)| {
                (
                    name.clone(),
                    path.get(response).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Every output field null: the enrichment of a key that was not found, or of a failed
    /// lookup under the `null` policy.
    pub fn nulls(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, _)| (name.clone(), Value::Null))
            .collect()
    }
}

/// The record with the enrichment's fields set (replacing fields of the same name).
pub fn enrich(mut record: Record, enrichment: &Map<String, Value>) -> Record {
    let fields = record.fields_mut();
    for (k, v) in enrichment {
        fields.insert(k.clone(), v.clone());
    }
    record
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mapping() -> FieldMapping {
        FieldMapping(vec![
            ("name".into(), ResponsePath::parse("name")),
            ("tier".into(), ResponsePath::parse("plan.tier")),
            ("first_tag".into(), ResponsePath::parse("/tags/0")),
            ("all".into(), ResponsePath::parse(".")),
        ])
    }

    #[test]
    fn paths_pick_nested_values_and_missing_ones_are_null() {
        let r = json!({"name": "ann", "plan": {"tier": "gold"}, "tags": ["x"]});
        let m = mapping().extract(&r);
        assert_eq!(m["name"], "ann");
        assert_eq!(m["tier"], "gold");
        assert_eq!(m["first_tag"], "x");
        assert_eq!(m["all"], r);
        let m = mapping().extract(&json!({"name": "bo"}));
        assert_eq!(m["tier"], Value::Null);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn paths_read_as_json_pointers_do() {
        let r = json!({"a/b": {"~x": [10, 20]}, "": {"": 1}, "plan": {"tier": "gold"}});
        for (path, pointer) in [
            ("/a~1b/~0x/1", "/a~1b/~0x/1"),
            ("/a~1b/~0x/01", "/a~1b/~0x/01"),
            ("/a~1b/~0x/+1", "/a~1b/~0x/+1"),
            ("/a~1b/~0x/2", "/a~1b/~0x/2"),
            ("//", "//"),
            ("/", "/"),
            ("plan.tier", "/plan/tier"),
            ("plan.tier.x", "/plan/tier/x"),
            (".", ""),
        ] {
            assert_eq!(
                ResponsePath::parse(path).get(&r),
                r.pointer(pointer),
                "{path}"
            );
        }
        assert_eq!(ResponsePath::parse("/a~1b/~0x/1").get(&r), Some(&json!(20)));
        assert_eq!(ResponsePath::parse("//").get(&r), Some(&json!(1)));
    }

    #[test]
    fn key_values_name_the_missing_field() {
        let rec = Record::new(json!({"user": "u1"}).as_object().unwrap().clone());
        assert_eq!(
            key_values(&rec, &["user".into()]).unwrap(),
            vec![json!("u1")]
        );
        let e = key_values(&rec, &["user".into(), "usr".into()]).unwrap_err();
        assert!(e.contains("\"usr\""), "{e}");
    }

    #[test]
    fn enrichment_overwrites_and_appends_fields() {
        let rec = Record::new(json!({"id": 1, "name": "old"}).as_object().unwrap().clone());
        let out = enrich(rec, &mapping().extract(&json!({"name": "new"})));
        assert_eq!(out.fields()["id"], 1);
        assert_eq!(out.fields()["name"], "new");
        assert_eq!(out.fields()["tier"], Value::Null);
    }

    #[test]
    fn cache_keys_do_not_collide_on_joined_text() {
        assert_ne!(
            cache_key(&[json!("a,b"), json!("c")]),
            cache_key(&[json!("a"), json!("b,c")])
        );
        assert_ne!(cache_key(&[json!(1)]), cache_key(&[json!("1")]));
    }
}
