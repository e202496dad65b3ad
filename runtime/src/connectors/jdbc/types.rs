//! JSON values ↔ Postgres text representations, per column type. Values travel as text (COPY
//! text format, or text parameters cast to the column type), so checking and normalizing them
//! here gives errors that name the record and the column instead of a driver error per batch.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;

/// What the sink knows about a column's type (from `information_schema.columns.udt_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Int {
        bits: u8,
    },
    Float,
    Numeric,
    Bool,
    Timestamptz,
    Timestamp,
    Date,
    Json,
    /// Anything else (uuid, arrays, enums, …): strings go to Postgres as they are.
    Other,
    /// A boolean stored as 1 or 0 (SQLite has no boolean type).
    Flag,
    /// MySQL DATETIME / TIMESTAMP: a time written as UTC `YYYY-MM-DD HH:MM:SS[.ffffff]` (the
    /// sink's sessions run with `time_zone = '+00:00'`); MySQL refuses RFC 3339's `T…Z`.
    DateTime,
    /// No declared type (SQLite BLOB affinity, or a statement's parameter): any scalar as text,
    /// booleans as 1/0, objects and arrays as JSON.
    Any,
}

impl ColumnKind {
    pub fn from_udt(udt: &str) -> ColumnKind {
        match udt.to_ascii_lowercase().as_str() {
            "text" | "varchar" | "bpchar" | "name" | "citext" | "char" => ColumnKind::Text,
            "int2" => ColumnKind::Int { bits: 16 },
            "int4" => ColumnKind::Int { bits: 32 },
            "int8" => ColumnKind::Int { bits: 64 },
            "float4" | "float8" => ColumnKind::Float,
            "numeric" => ColumnKind::Numeric,
            "bool" => ColumnKind::Bool,
            "timestamptz" => ColumnKind::Timestamptz,
            "timestamp" => ColumnKind::Timestamp,
            "date" => ColumnKind::Date,
            "json" | "jsonb" => ColumnKind::Json,
            _ => ColumnKind::Other,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            ColumnKind::Text => "a string",
            ColumnKind::Int { .. } => "an integer",
            ColumnKind::Float | ColumnKind::Numeric => "a number",
            ColumnKind::Bool | ColumnKind::Flag => "a boolean",
            ColumnKind::Timestamptz | ColumnKind::Timestamp | ColumnKind::DateTime => {
                "an RFC 3339 time or epoch milliseconds"
            }
            ColumnKind::Date => "a date like 2024-01-31",
            ColumnKind::Json => "any JSON value",
            ColumnKind::Other => "a string",
            ColumnKind::Any => "any value",
        }
    }
}

fn mismatch(kind: ColumnKind, v: &Value) -> String {
    let mut shown = v.to_string();
    if shown.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|i| shown.is_char_boundary(*i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    format!("expected {}, got {shown}", kind.expected())
}

fn millis_to_text(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// MySQL's literal form of a DATETIME (no `T`, no zone; fraction only when there is one).
const MYSQL_DATETIME: &str = "%Y-%m-%d %H:%M:%S%.f";

/// The value in Postgres text input format, `None` for SQL NULL, or why it does not fit.
/// Output is canonical (one text per value), so equal keys compare equal as text.
pub fn encode(kind: ColumnKind, v: &Value) -> Result<Option<String>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let text = match (kind, v) {
        (ColumnKind::Json, v) => v.to_string(),
        (ColumnKind::Text | ColumnKind::Other, Value::String(s)) => s.clone(),
        (ColumnKind::Text, Value::Number(n)) => n.to_string(),
        (ColumnKind::Text, Value::Bool(b)) => b.to_string(),
        (ColumnKind::Int { bits }, v) => {
            let n = match v {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                }),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| mismatch(kind, v))?;
            let (min, max) = match bits {
                8 => (i8::MIN as i64, i8::MAX as i64),
                16 => (i16::MIN as i64, i16::MAX as i64),
                32 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if n < min || n > max {
                return Err(format!("{n} is out of range for a {bits}-bit integer"));
            }
            n.to_string()
        }
        (ColumnKind::Float, Value::Number(n)) => n.to_string(),
        (ColumnKind::Float, Value::String(s)) => {
            let f: f64 = s.trim().parse().map_err(|_| mismatch(kind, v))?;
            f.to_string()
        }
        (ColumnKind::Numeric, Value::Number(n)) => n.to_string(),
        (ColumnKind::Numeric, Value::String(s)) => {
            let t = s.trim();
            t.parse::<f64>().map_err(|_| mismatch(kind, v))?;
            t.to_string()
        }
        (ColumnKind::Bool, Value::Bool(b)) => b.to_string(),
        (ColumnKind::Bool, Value::String(s)) if s == "true" || s == "false" => s.clone(),
        (ColumnKind::Flag, Value::Bool(b)) => u8::from(*b).to_string(),
        (ColumnKind::Flag, Value::String(s)) if s == "true" || s == "false" => {
            u8::from(s == "true").to_string()
        }
        (ColumnKind::Any, Value::String(s)) => s.clone(),
        (ColumnKind::Any, Value::Bool(b)) => u8::from(*b).to_string(),
        (ColumnKind::Any, v) => v.to_string(),
        (ColumnKind::Timestamptz | ColumnKind::Timestamp, Value::Number(n)) => n
            .as_i64()
            .and_then(millis_to_text)
            .ok_or_else(|| mismatch(kind, v))?,
        (ColumnKind::Timestamptz, Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            })
            .map_err(|_| mismatch(kind, v))?,
        (ColumnKind::Timestamp, Value::String(s)) => {
            let s = s.trim();
            match DateTime::parse_from_rfc3339(s) {
                Ok(t) => t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
                Err(_) => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
                    .map_err(|_| mismatch(kind, v))?,
            }
        }
        (ColumnKind::DateTime, Value::Number(n)) => n
            .as_i64()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(|t| t.naive_utc().format(MYSQL_DATETIME).to_string())
            .ok_or_else(|| mismatch(kind, v))?,
        (ColumnKind::DateTime, Value::String(s)) => {
            let s = s.trim();
            match DateTime::parse_from_rfc3339(s) {
                Ok(t) => t.naive_utc().format(MYSQL_DATETIME).to_string(),
                Err(_) => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map(|t| t.format(MYSQL_DATETIME).to_string())
                    .map_err(|_| mismatch(kind, v))?,
            }
        }
        (ColumnKind::Date, Value::String(s)) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(|d| d.to_string())
            .map_err(|_| mismatch(kind, v))?,
        (kind, v) => return Err(mismatch(kind, v)),
    };
    Ok(Some(text))
}

/// Appends one value in COPY text format (`\N` for NULL; backslash escapes).
pub fn copy_escape(out: &mut Vec<u8>, v: Option<&str>) {
    let Some(s) = v else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &c in s.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c => out.push(c),
        }
    }
}

/// A value Postgres sent in text format, typed by its type name (`INT8`, `TIMESTAMPTZ`, …).
/// The session runs with `TimeZone=UTC` and ISO dates.
pub fn decode(type_name: &str, text: Option<&str>) -> Value {
    let Some(s) = text else {
        return Value::Null;
    };
    let string = || Value::String(s.to_string());
    match type_name {
        "BOOL" => Value::Bool(s == "t"),
        "INT2" | "INT4" | "INT8" | "OID" => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| string()),
        "FLOAT4" | "FLOAT8" => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(string),
        "NUMERIC" => decode_numeric(s),
        "TIMESTAMPTZ" => DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map(|t| {
                Value::String(
                    t.with_timezone(&Utc)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                )
            })
            .unwrap_or_else(|_| string()),
        "TIMESTAMP" => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
            .unwrap_or_else(|_| string()),
        "JSON" | "JSONB" => serde_json::from_str(s).unwrap_or_else(|_| string()),
        _ => string(),
    }
}

/// A number when JSON can hold it exactly, else the exact decimal text.
fn decode_numeric(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    let exact = |f: f64| {
        let trimmed = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        };
        f.to_string() == trimmed
    };
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && exact(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.to_string())),
        _ => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(kind: ColumnKind, v: Value) -> Option<String> {
        encode(kind, &v).unwrap()
    }

    #[test]
    fn values_are_checked_and_normalized_per_column_type() {
        let int8 = ColumnKind::from_udt("int8");
        assert_eq!(ok(int8, json!(42)), Some("42".into()));
        assert_eq!(ok(int8, json!("042")), Some("42".into()));
        assert_eq!(ok(int8, json!(7.0)), Some("7".into()));
        assert!(encode(int8, &json!(7.5))
            .unwrap_err()
            .contains("expected an integer"));
        assert!(encode(int8, &json!("abc")).unwrap_err().contains("\"abc\""));
        assert!(encode(ColumnKind::from_udt("int2"), &json!(70000))
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(ok(int8, Value::Null), None);
        assert_eq!(ok(ColumnKind::Text, json!(5)), Some("5".into()));
        assert!(encode(ColumnKind::Text, &json!({"a": 1})).is_err());
        assert_eq!(
            ok(ColumnKind::Json, json!({"a": 1})),
            Some("{\"a\":1}".into())
        );
        assert_eq!(ok(ColumnKind::Bool, json!(true)), Some("true".into()));
        assert!(encode(ColumnKind::Bool, &json!(1)).is_err());
        assert_eq!(
            ok(ColumnKind::Numeric, json!("12.50")),
            Some("12.50".into())
        );
        assert!(encode(ColumnKind::Numeric, &json!("12,5")).is_err());
        assert_eq!(ok(ColumnKind::Flag, json!(true)), Some("1".into()));
        assert_eq!(ok(ColumnKind::Flag, json!("false")), Some("0".into()));
        assert!(encode(ColumnKind::Flag, &json!(2)).is_err());
        assert_eq!(ok(ColumnKind::Any, json!(7)), Some("7".into()));
        assert_eq!(ok(ColumnKind::Any, json!("x")), Some("x".into()));
        assert_eq!(ok(ColumnKind::Any, json!([1])), Some("[1]".into()));
        assert_eq!(
            ok(ColumnKind::Date, json!("2024-02-29")),
            Some("2024-02-29".into())
        );
    }

    #[test]
    fn times_accept_rfc3339_and_epoch_millis() {
        let tz = ColumnKind::from_udt("timestamptz");
        assert_eq!(
            ok(tz, json!("2024-01-01T01:00:00.250+01:00")),
            Some("2024-01-01T00:00:00.250Z".into())
        );
        assert_eq!(
            ok(tz, json!(1_704_067_200_000i64)),
            Some("2024-01-01T00:00:00Z".into())
        );
        assert!(encode(tz, &json!("yesterday"))
            .unwrap_err()
            .contains("RFC 3339"));
        assert_eq!(
            ok(ColumnKind::Timestamp, json!("2024-01-01 10:00:00")),
            Some("2024-01-01T10:00:00".into())
        );
        let dt = ColumnKind::DateTime;
        assert_eq!(
            ok(dt, json!("2024-01-01T01:00:00.250+01:00")),
            Some("2024-01-01 00:00:00.250".into())
        );
        assert_eq!(
            ok(dt, json!(1_704_067_200_000i64)),
            Some("2024-01-01 00:00:00".into())
        );
        assert_eq!(
            ok(dt, json!("2024-01-01T10:00:00")),
            Some("2024-01-01 10:00:00".into())
        );
        assert!(encode(dt, &json!(true)).unwrap_err().contains("RFC 3339"));
        assert!(encode(ColumnKind::Int { bits: 8 }, &json!(200))
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn copy_text_escapes_control_characters() {
        let mut out = Vec::new();
        copy_escape(&mut out, Some("a\tb\\c\nd"));
        out.push(b'\t');
        copy_escape(&mut out, None);
        assert_eq!(out, b"a\\tb\\\\c\\nd\t\\N");
    }

    #[test]
    fn text_results_become_typed_json() {
        assert_eq!(decode("INT8", Some("12")), json!(12));
        assert_eq!(decode("BOOL", Some("f")), json!(false));
        assert_eq!(decode("FLOAT8", Some("1.5")), json!(1.5));
        assert_eq!(decode("NUMERIC", Some("10.50")), json!(10.5));
        assert_eq!(
            decode("NUMERIC", Some("12345678901234567890.123")),
            json!("12345678901234567890.123")
        );
        assert_eq!(
            decode("TIMESTAMPTZ", Some("2024-01-01 00:00:01.5+00")),
            json!("2024-01-01T00:00:01.500Z")
        );
        assert_eq!(decode("JSONB", Some("{\"a\": [1]}")), json!({"a": [1]}));
        assert_eq!(decode("TEXT", Some("x")), json!("x"));
        assert_eq!(decode("INT4", None), Value::Null);
    }
}
