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
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsePath(String);

impl ResponsePath {
    pub fn parse(path: &str) -> Self {
        let p = path.trim();
        if p.is_empty() || p == "." {
            return ResponsePath(String::new());
        }
        if p.starts_with('/') {
            return ResponsePath(p.to_string());
        }
        let escaped: Vec<String> = p
            .split('.')
            .map(|s| s.replace('~', "~0").replace('/', "~1"))
            .collect();
        ResponsePath(format!("/{}", escaped.join("/")))
    }

    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        v.pointer(&self.0)
    }
}

/// Output field names and where each comes from.
#[derive(Debug, Clone)]
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
