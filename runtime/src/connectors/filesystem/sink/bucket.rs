//! Which bucket (sub-directory under the sink's path) a record goes to.
//!
//! Bucket names become paths, so every value is sanitized: no `/` inside a field value, no `.`
//! or `..` segment, no leading `.` (hidden files are the sink's own in-progress parts), no
//! control characters.

use std::fmt::Write as _;

use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use chrono::{DateTime, FixedOffset, Offset, Utc};
use serde_json::Value;

use crate::record::Record;

/// A time zone for time buckets. Named zones with daylight saving (`Europe/Berlin`) would need
/// the tz database (chrono-tz); UTC and fixed offsets cover the usual `year=/month=/…` layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(FixedOffset);

impl TimeZone {
    pub fn utc() -> Self {
        TimeZone(Utc.fix())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
            return Ok(Self::utc());
        }
        let offset = t
            .strip_prefix("UTC")
            .filter(|rest| !rest.is_empty())
            .unwrap_or(t);
        offset
            .parse::<FixedOffset>()
            .map(TimeZone)
            .map_err(|_| format!("expected UTC or a fixed offset such as +02:00, got {text:?}"))
    }
}

/// Where a time bucket's time comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeSource {
    /// The record's event time; when it has none, this field (epoch ms or RFC 3339).
    Event {
        field: Option<String>,
    },
    Processing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BucketSpec {
    /// Every part in the sink's root directory.
    None,
    /// The sanitized value of a field.
    Field(String),
    Time(TimeBuckets),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimeBuckets {
    source: TimeSource,
    items: Vec<Item<'static>>,
    tz: TimeZone,
    /// Whether the pattern prints fractions of a second (then a cache per second would be wrong).
    sub_second: bool,
}

impl BucketSpec {
    pub fn event_time(pattern: &str, tz: TimeZone, field: Option<String>) -> Result<Self, String> {
        Ok(BucketSpec::Time(TimeBuckets::new(
            pattern,
            tz,
            TimeSource::Event { field },
        )?))
    }

    pub fn processing_time(pattern: &str, tz: TimeZone) -> Result<Self, String> {
        Ok(BucketSpec::Time(TimeBuckets::new(
            pattern,
            tz,
            TimeSource::Processing,
        )?))
    }
}

impl TimeBuckets {
    fn new(pattern: &str, tz: TimeZone, source: TimeSource) -> Result<Self, String> {
        if pattern.trim_matches('/').is_empty() {
            return Err("must not be empty".into());
        }
        let items = StrftimeItems::new(pattern)
            .parse_to_owned()
            .map_err(|_| format!("invalid strftime pattern {pattern:?}"))?;
        let sub_second = items.iter().any(|item| match item {
            Item::Numeric(Numeric::Nanosecond, _) => true,
            Item::Fixed(
                Fixed::Nanosecond | Fixed::Nanosecond3 | Fixed::Nanosecond6 | Fixed::Nanosecond9,
            ) => true,
            // %3f and friends are chrono-internal items: treat anything unknown as sub-second.
            Item::Fixed(Fixed::Internal(_)) => true,
            _ => false,
        });
        Ok(TimeBuckets {
            source,
            items,
            tz,
            sub_second,
        })
    }

    fn format(&self, ms: i64, out: &mut String) -> Result<(), String> {
        let t = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| format!("time {ms} ms is out of range"))?;
        let local = t.with_timezone(&self.tz.0);
        let mut raw = String::new();
        write!(raw, "{}", local.format_with_items(self.items.iter()))
            .map_err(|_| "the bucket pattern cannot format this time".to_string())?;
        sanitize_path(&raw, out);
        Ok(())
    }
}

/// The time a record is bucketed by, in ms.
fn record_time(source: &TimeSource, record: &Record, now_ms: i64) -> Result<i64, String> {
    match source {
        TimeSource::Processing => Ok(now_ms),
        TimeSource::Event { field } => {
            if let Some(t) = record.event_time {
                return Ok(t);
            }
            let Some(name) = field else {
                return Err(
                    "record has no event time (add a watermark to the source, or set bucket.field)"
                        .into(),
                );
            };
            match record.get(name).as_deref() {
                None | Some(Value::Null) => {
                    Err(format!("record has no event time and no field {name:?}"))
                }
                Some(v) => time_value(v).ok_or_else(|| {
                    format!(
                        "field {name:?} is not a time (epoch milliseconds or RFC 3339 text): {v}"
                    )
                }),
            }
        }
    }
}

fn time_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis())
        }),
        _ => None,
    }
}

/// The bucket of `record` (relative directory, `""` for the root) — uncached.
pub fn bucket_for(spec: &BucketSpec, record: &Record, now_ms: i64) -> Result<String, String> {
    let mut out = String::new();
    match spec {
        BucketSpec::None => {}
        BucketSpec::Field(name) => field_bucket(record.get(name).as_deref(), &mut out),
        BucketSpec::Time(t) => t.format(record_time(&t.source, record, now_ms)?, &mut out)?,
    }
    Ok(out)
}

fn field_bucket(v: Option<&Value>, out: &mut String) {
    match v {
        None | Some(Value::Null) => out.push_str("null"),
        Some(Value::String(s)) if s.is_empty() => out.push_str("empty"),
        Some(Value::String(s)) => sanitize_segment(s, out),
        Some(other) => sanitize_segment(&other.to_string(), out),
    }
}

/// Longest bucket segment kept (file systems limit a name to 255 bytes).
const MAX_SEGMENT: usize = 200;

/// Appends `s` as one path segment.
pub fn sanitize_segment(s: &str, out: &mut String) {
    let start = out.len();
    for c in s.chars() {
        let keep = c.is_alphanumeric() || "-_=+,@~ ".contains(c) || (c == '.' && out.len() > start);
        out.push(if keep { c } else { '_' });
        if out.len() - start >= MAX_SEGMENT {
            break;
        }
    }
    let seg = &out[start..];
    if seg.trim().is_empty() || seg.chars().all(|c| c == '.') {
        out.truncate(start);
        out.push('_');
    }
}

/// Appends `s` as a relative path: `/` separates segments, each sanitized, empty ones dropped.
pub fn sanitize_path(s: &str, out: &mut String) {
    for seg in s.split('/').filter(|seg| !seg.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        sanitize_segment(seg, out);
    }
}

/// [`bucket_for`] with a cache: records come mostly in time order, and formatting a time costs
/// far more than comparing a number, so the last second's bucket is kept.
pub struct BucketAssigner {
    spec: BucketSpec,
    cached_second: Option<i64>,
    current: String,
}

impl BucketAssigner {
    pub fn new(spec: BucketSpec) -> Self {
        BucketAssigner {
            spec,
            cached_second: None,
            current: String::new(),
        }
    }

    /// Whether every record goes to the root (no bucketing).
    pub fn is_single(&self) -> bool {
        self.spec == BucketSpec::None
    }

    pub fn assign(&mut self, record: &Record, now_ms: i64) -> Result<&str, String> {
        match &self.spec {
            BucketSpec::None => Ok(""),
            BucketSpec::Field(name) => {
                self.current.clear();
                field_bucket(record.get(name).as_deref(), &mut self.current);
                Ok(&self.current)
            }
            BucketSpec::Time(t) => {
                let ms = record_time(&t.source, record, now_ms)?;
                let second = ms.div_euclid(1000);
                if t.sub_second || self.cached_second != Some(second) {
                    self.cached_second = None;
                    self.current = bucket_for(&self.spec, record, now_ms)?;
                    self.cached_second = Some(second);
                }
                Ok(&self.current)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(fields: Value, event_time: Option<i64>) -> Record {
        Record::new(fields.as_object().cloned().unwrap()).with_event_time(event_time)
    }

    // 2024-03-05T07:08:09.123Z
    const T: i64 = 1_709_622_489_123;

    #[test]
    fn event_time_uses_the_pattern_and_zone() {
        let spec = BucketSpec::event_time("year=%Y/month=%m/day=%d/hour=%H", TimeZone::utc(), None)
            .unwrap();
        assert_eq!(
            bucket_for(&spec, &rec(json!({}), Some(T)), 0).unwrap(),
            "year=2024/month=03/day=05/hour=07"
        );
        let plus9 = TimeZone::parse("+09:00").unwrap();
        let spec = BucketSpec::event_time("%Y-%m-%d/%H", plus9, None).unwrap();
        assert_eq!(
            bucket_for(&spec, &rec(json!({}), Some(T)), 0).unwrap(),
            "2024-03-05/16"
        );
        assert_eq!(
            TimeZone::parse("UTC+02:00").unwrap(),
            TimeZone::parse("+02:00").unwrap()
        );
        assert!(TimeZone::parse("Europe/Berlin").is_err());
    }

    #[test]
    fn event_time_falls_back_to_a_field_or_says_why_not() {
        let spec = BucketSpec::event_time("%Y/%m", TimeZone::utc(), Some("ts".into())).unwrap();
        assert_eq!(
            bucket_for(&spec, &rec(json!({"ts": T}), None), 0).unwrap(),
            "2024/03"
        );
        assert_eq!(
            bucket_for(
                &spec,
                &rec(json!({"ts": "2023-12-31T23:00:00-02:00"}), None),
                0
            )
            .unwrap(),
            "2024/01"
        );
        let e = bucket_for(&spec, &rec(json!({"x": 1}), None), 0).unwrap_err();
        assert!(e.contains("no event time and no field \"ts\""), "{e}");
        let e = bucket_for(&spec, &rec(json!({"ts": "yesterday"}), None), 0).unwrap_err();
        assert!(e.contains("not a time"), "{e}");
        let no_field = BucketSpec::event_time("%Y", TimeZone::utc(), None).unwrap();
        let e = bucket_for(&no_field, &rec(json!({}), None), 0).unwrap_err();
        assert!(e.contains("record has no event time"), "{e}");
    }

    #[test]
    fn processing_time_uses_now() {
        let spec = BucketSpec::processing_time("dt=%Y-%m-%d", TimeZone::utc()).unwrap();
        assert_eq!(
            bucket_for(&spec, &rec(json!({}), Some(0)), T).unwrap(),
            "dt=2024-03-05"
        );
    }

    #[test]
    fn field_values_are_sanitized_into_one_segment() {
        let spec = BucketSpec::Field("c".into());
        let b = |v: Value| bucket_for(&spec, &rec(json!({ "c": v }), None), 0).unwrap();
        assert_eq!(b(json!("DE")), "DE");
        assert_eq!(b(json!("../../etc/passwd")), "_._.._etc_passwd");
        assert_eq!(b(json!("a/b\\c:d\n")), "a_b_c_d_");
        assert_eq!(b(json!("..")), "_.");
        assert_eq!(b(json!(".")), "_");
        assert_eq!(b(json!(".hidden")), "_hidden");
        assert_eq!(b(json!(42)), "42");
        assert_eq!(b(json!(true)), "true");
        assert_eq!(b(json!(null)), "null");
        assert_eq!(b(json!("")), "empty");
        assert_eq!(b(json!("Zürich")), "Zürich");
        assert_eq!(b(json!("x".repeat(1000))).len(), MAX_SEGMENT);
        assert_eq!(bucket_for(&spec, &rec(json!({}), None), 0).unwrap(), "null");
        assert_eq!(
            bucket_for(&BucketSpec::None, &rec(json!({"c": 1}), None), 0).unwrap(),
            ""
        );
    }

    #[test]
    fn time_patterns_cannot_escape_the_root() {
        let spec = BucketSpec::event_time("../%Y//./x:%H", TimeZone::utc(), None).unwrap();
        assert_eq!(
            bucket_for(&spec, &rec(json!({}), Some(T)), 0).unwrap(),
            "_./2024/_/x_07"
        );
        assert!(BucketSpec::event_time("%Q", TimeZone::utc(), None).is_err());
        assert!(BucketSpec::event_time("/", TimeZone::utc(), None).is_err());
    }

    #[test]
    fn the_cache_agrees_with_the_pure_function() {
        for pattern in ["%Y/%m/%d/%H/%M/%S", "%S.%3f", "%H%.f"] {
            let spec = BucketSpec::event_time(pattern, TimeZone::utc(), None).unwrap();
            let mut a = BucketAssigner::new(spec.clone());
            for t in [T, T + 1, T + 999, T + 877, T - 5000, T + 3_600_000, -1, 0] {
                let r = rec(json!({}), Some(t));
                assert_eq!(
                    a.assign(&r, 0).unwrap(),
                    bucket_for(&spec, &r, 0).unwrap(),
                    "{pattern} {t}"
                );
            }
        }
    }
}
