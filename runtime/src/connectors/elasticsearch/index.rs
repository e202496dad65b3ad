//! The target index of a document: a literal name, or a template with `{field}`,
//! `{field|yyyy.MM.dd}` (a timestamp field, formatted) and `{yyyy.MM.dd}` (the record's event
//! time, formatted). Date patterns use the letters Flink and Logstash users know (`yyyy`, `yy`,
//! `MM`, `dd`, `HH`, `mm`, `ss`); days are cut in UTC. Parsing runs at spec validation, so a bad
//! template is a spec error; a record the template cannot name an index for is a record error.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::record::Record;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A field's value as text.
    Field(String),
    /// A field holding a timestamp (epoch milliseconds or RFC 3339), formatted with `strftime`.
    FieldTime {
        field: String,
        strftime: String,
    },
    /// The record's event time, formatted.
    EventTime {
        strftime: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTemplate {
    parts: Vec<Part>,
}

/// A date pattern (`yyyy.MM.dd`) as a chrono `strftime` string; `None` when `s` is not one.
fn date_pattern(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    let mut letters = 0;
    while let Some(c) = chars.next() {
        match c {
            'y' | 'M' | 'd' | 'H' | 'm' | 's' => {
                let mut run = 1;
                while chars.peek() == Some(&c) {
                    chars.next();
                    run += 1;
                }
                let spec = match (c, run) {
                    ('y', 4) => "%Y",
                    ('y', 2) => "%y",
                    ('M', 2) => "%m",
                    ('d', 2) => "%d",
                    ('H', 2) => "%H",
                    ('m', 2) => "%M",
                    ('s', 2) => "%S",
                    _ => return None,
                };
                out.push_str(spec);
                letters += 1;
            }
            '.' | '-' | '_' => out.push(c),
            _ => return None,
        }
    }
    (letters > 0).then_some(out)
}

/// Characters Elasticsearch and OpenSearch refuse in index names.
const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

/// Why `name` cannot be an index (or data stream) name; `None` when it can.
pub fn invalid_index_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an index name must not be empty".into());
    }
    if name.len() > 255 {
        return Some(format!(
            "index name {name:?} is longer than 255 bytes ({})",
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Some(format!("index name {name:?} must be lowercase"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Some(format!("index name {name:?} contains {c:?}"));
    }
    if name.starts_with(['-', '_', '+']) || name == "." || name == ".." {
        return Some(format!(
            "index name {name:?} must not start with -, _ or + (nor be . or ..)"
        ));
    }
    None
}

impl IndexTemplate {
    /// Parses `events`, `events-{yyyy.MM.dd}`, `{tenant}-logs`, `{ts|yyyy.MM}`.
    pub fn parse(s: &str) -> Result<IndexTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let body = &rest[open + 1..];
            let close = body
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {s:?}"))?;
            let inner = body[..close].trim();
            if inner.is_empty() {
                return Err(format!("empty {{}} in {s:?}"));
            }
            let part = match inner.split_once('|') {
                Some((field, pattern)) => {
                    let (field, pattern) = (field.trim(), pattern.trim());
                    if field.is_empty() {
                        return Err(format!("{{{inner}}}: no field before |"));
                    }
                    let strftime = date_pattern(pattern).ok_or_else(|| {
                        format!("{{{inner}}}: {pattern:?} is not a date pattern like yyyy.MM.dd")
                    })?;
                    Part::FieldTime {
                        field: field.to_string(),
                        strftime,
                    }
                }
                None => match date_pattern(inner) {
                    Some(strftime) => Part::EventTime { strftime },
                    None => Part::Field(inner.to_string()),
                },
            };
            parts.push(part);
            rest = &body[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched }} in {s:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        // The fixed parts must be valid pieces of a name; what fields add is checked per record.
        for p in &parts {
            if let Part::Literal(l) = p {
                if l.chars().any(|c| c.is_uppercase()) {
                    return Err(format!("{s:?}: index names must be lowercase"));
                }
                if let Some(c) = l.chars().find(|c| FORBIDDEN.contains(c)) {
                    return Err(format!("{s:?}: index names cannot contain {c:?}"));
                }
            }
        }
        let t = IndexTemplate { parts };
        if let Some(name) = t.literal() {
            if let Some(why) = invalid_index_name(name) {
                return Err(why);
            }
        } else if let Some(Part::Literal(first)) = t.parts.first() {
            if first.starts_with(['-', '_', '+']) {
                return Err(format!("{s:?}: index names must not start with -, _ or +"));
            }
        }
        Ok(t)
    }

    /// The name when the template has no placeholder.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Literal(l)] => Some(l),
            _ => None,
        }
    }

    /// Whether rendering reads the record's event time.
    pub fn uses_event_time(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::EventTime { .. }))
    }

    /// The index for `record`; the error says which field or value is wrong.
    pub fn render<'a>(&'a self, record: &Record) -> Result<Cow<'a, str>, String> {
        if let Some(l) = self.literal() {
            return Ok(Cow::Borrowed(l));
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f) => match record.get(f).as_deref() {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                    None | Some(Value::Null) => {
                        return Err(format!("index field {f:?} is missing"))
                    }
                    Some(other) => {
                        return Err(format!(
                            "index field {f:?} must be a string or number, got {other}"
                        ))
                    }
                },
                Part::FieldTime { field, strftime } => {
                    let v = record.get(field);
                    let t = v
                        .as_deref()
                        .and_then(timestamp)
                        .ok_or_else(|| match v.as_deref() {
                            None | Some(Value::Null) => format!("index field {field:?} is missing"),
                            Some(other) => format!(
                                "index field {field:?} is not a timestamp (epoch ms or RFC 3339): {other}"
                            ),
                        })?;
                    out.push_str(&t.format(strftime).to_string());
                }
                Part::EventTime { strftime } => {
                    let ms = record.event_time.ok_or_else(|| {
                        "the index template reads the event time, and the record has none (add a watermark transform or set the source's event time)".to_string()
                    })?;
                    let t = DateTime::<Utc>::from_timestamp_millis(ms)
                        .ok_or_else(|| format!("event time {ms} is out of range"))?;
                    out.push_str(&t.format(strftime).to_string());
                }
            }
        }
        if let Some(why) = invalid_index_name(&out) {
            return Err(why);
        }
        Ok(Cow::Owned(out))
    }
}

/// A JSON value as a point in time: epoch milliseconds or an RFC 3339 string.
pub fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value, event_time: Option<i64>) -> Record {
        let Value::Object(f) = v else { panic!() };
        Record::new(f).with_event_time(event_time)
    }

    #[test]
    fn literals_stay_borrowed() {
        let t = IndexTemplate::parse("events").unwrap();
        assert_eq!(t.literal(), Some("events"));
        assert!(matches!(
            t.render(&rec(json!({}), None)).unwrap(),
            Cow::Borrowed("events")
        ));
    }

    #[test]
    fn event_time_and_fields_fill_the_template() {
        let t = IndexTemplate::parse("events-{yyyy.MM.dd}").unwrap();
        assert!(t.uses_event_time());
        // 2024-03-05T23:59:59.999Z
        let r = rec(json!({}), Some(1_709_683_199_999));
        assert_eq!(t.render(&r).unwrap(), "events-2024.03.05");
        let t = IndexTemplate::parse("{tenant}-logs-{ts|yyyy-MM}").unwrap();
        let r = rec(
            json!({"tenant": "acme", "ts": "2024-01-31T10:00:00+02:00"}),
            None,
        );
        assert_eq!(t.render(&r).unwrap(), "acme-logs-2024-01");
        let r = rec(json!({"tenant": 7, "ts": 0}), None);
        assert_eq!(t.render(&r).unwrap(), "7-logs-1970-01");
    }

    #[test]
    fn records_the_template_cannot_name_say_why() {
        let t = IndexTemplate::parse("{tenant}-{yyyy}").unwrap();
        let e = t.render(&rec(json!({}), Some(0))).unwrap_err();
        assert!(e.contains("\"tenant\" is missing"), "{e}");
        let e = t
            .render(&rec(json!({"tenant": "Acme"}), Some(0)))
            .unwrap_err();
        assert!(e.contains("must be lowercase"), "{e}");
        let e = t.render(&rec(json!({"tenant": "a"}), None)).unwrap_err();
        assert!(e.contains("event time"), "{e}");
        let t = IndexTemplate::parse("x-{ts|yyyy}").unwrap();
        let e = t.render(&rec(json!({"ts": "soon"}), None)).unwrap_err();
        assert!(e.contains("not a timestamp"), "{e}");
    }

    #[test]
    fn bad_templates_are_refused() {
        for (t, needle) in [
            ("", "empty"),
            ("Events", "lowercase"),
            ("a b", "' '"),
            ("events-{", "unclosed"),
            ("events-{}", "empty {}"),
            ("x}", "unmatched"),
            ("{ts|yyyy.MMM}", "not a date pattern"),
            ("_hidden", "must not start"),
        ] {
            let e = IndexTemplate::parse(t).unwrap_err();
            assert!(e.contains(needle), "{t:?}: {e}");
        }
        assert_eq!(date_pattern("yyyy.MM.dd").as_deref(), Some("%Y.%m.%d"));
        assert_eq!(date_pattern("tenant"), None);
        assert!(invalid_index_name("ok-1").is_none());
    }
}
