//! Records → `_bulk` NDJSON (pure). Each record becomes an action line
//! (`{"index":{"_index":…,"_id":…}}`) and, except for `delete`, a source line. The lines are
//! appended to a [`BulkBuffer`] whose [`Span`]s remember where each action lies, so a retry
//! resends exactly the items the server asked for, and a rejected item's document can be
//! quoted in the error or the dead-letter entry without keeping a copy of every record.

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::config::{Action, Settings, TimestampSource};
use super::index::timestamp;
use crate::record::Record;

/// Ids longer than this are refused by Elasticsearch and OpenSearch.
const MAX_ID_BYTES: usize = 512;
/// `retry_on_conflict` of updates: concurrent updates of one document by other writers.
const UPDATE_RETRY_ON_CONFLICT: u32 = 3;

/// One action's place in a body: `start..source` is the action line, `source..end` the source
/// line (empty for `delete`); both include their newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub source: usize,
    pub end: usize,
}

impl Span {
    /// Bytes of the action, both lines.
    pub fn bytes(&self) -> usize {
        self.end - self.start
    }
}

/// Actions waiting to be sent.
#[derive(Debug, Default)]
pub struct BulkBuffer {
    pub body: Vec<u8>,
    pub spans: Vec<Span>,
    /// When the oldest waiting action arrived.
    pub since: Option<Instant>,
}

impl BulkBuffer {
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    /// Whether the buffer holds a request's worth.
    pub fn is_full(&self, max_actions: usize, max_bytes: usize) -> bool {
        self.spans.len() >= max_actions || self.body.len() >= max_bytes
    }
    /// The body and spans, leaving the buffer empty.
    pub fn take(&mut self) -> (Bytes, Vec<Span>) {
        self.since = None;
        let body = std::mem::take(&mut self.body);
        (Bytes::from(body), std::mem::take(&mut self.spans))
    }
}

/// The body made of some actions of `body`, in their order (the items to retry).
pub fn subset(body: &[u8], spans: &[Span]) -> (Bytes, Vec<Span>) {
    let mut out = Vec::with_capacity(spans.iter().map(Span::bytes).sum());
    let mut out_spans = Vec::with_capacity(spans.len());
    for s in spans {
        let start = out.len();
        out.extend_from_slice(&body[s.start..s.end]);
        out_spans.push(Span {
            start,
            source: start + (s.source - s.start),
            end: out.len(),
        });
    }
    (Bytes::from(out), out_spans)
}

/// `_index` and `_id` of an action line we built, for messages.
pub fn describe(action_line: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(action_line) else {
        return (None, None);
    };
    let Some(Value::Object(meta)) = m.into_iter().next().map(|(_, v)| v) else {
        return (None, None);
    };
    let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    (text("_index"), text("_id"))
}

/// A field value as id, routing or template text: strings as they are, numbers and booleans as
/// JSON; anything else is refused.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
}

/// Builds the `_bulk` lines of the sink's records.
pub struct ElasticsearchRequestBuilder {
    settings: std::sync::Arc<Settings>,
}

impl ElasticsearchRequestBuilder {
    pub fn new(settings: std::sync::Arc<Settings>) -> Self {
        ElasticsearchRequestBuilder { settings }
    }

    /// The document id (`id_field` values joined by `id_delimiter`), `None` without `id_field`.
    pub fn id(&self, record: &Record) -> Result<Option<String>, String> {
        let s = &self.settings;
        if s.id_fields.is_empty() {
            return Ok(None);
        }
        let mut id = String::new();
        for (i, f) in s.id_fields.iter().enumerate() {
            if i > 0 {
                id.push_str(&s.id_delimiter);
            }
            match record.get(f).as_deref() {
                Some(v) => match scalar_text(v) {
                    Some(t) => id.push_str(&t),
                    None if v.is_null() => return Err(format!("id field {f:?} is null")),
                    None => {
                        return Err(format!(
                            "id field {f:?} must be a string or number, got {v}"
                        ))
                    }
                },
                None => return Err(format!("id field {f:?} is missing")),
            }
        }
        if id.is_empty() {
            return Err("the document id is empty".into());
        }
        if id.len() > MAX_ID_BYTES {
            return Err(format!(
                "the document id is {} bytes; the server accepts at most {MAX_ID_BYTES}",
                id.len()
            ));
        }
        Ok(Some(id))
    }

    /// Appends `record`'s action; on error the buffer is left as it was.
    pub fn append(
        &self,
        record: &Record,
        id: Option<&str>,
        buf: &mut BulkBuffer,
    ) -> Result<(), String> {
        let start = buf.body.len();
        match self.write_action(record, id, &mut buf.body) {
            Ok(source) => {
                buf.spans.push(Span {
                    start,
                    source,
                    end: buf.body.len(),
                });
                if buf.since.is_none() {
                    buf.since = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) => {
                buf.body.truncate(start);
                Err(e)
            }
        }
    }

    /// Writes the lines; returns where the source line starts.
    fn write_action(
        &self,
        record: &Record,
        id: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<usize, String> {
        let s = &self.settings;
        let index = s.index.render(record)?;
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(s.action.as_str().as_bytes());
        out.extend_from_slice(b"\":{\"_index\":");
        write_json_str(out, &index);
        if let Some(id) = id {
            out.extend_from_slice(b",\"_id\":");
            write_json_str(out, id);
        }
        if let Some(f) = &s.routing_field {
            let routing = match record.get(f).as_deref() {
                Some(v) => scalar_text(v).filter(|t| !t.is_empty()).ok_or_else(|| {
                    format!("routing field {f:?} must be a non-empty string or number, got {v}")
                })?,
                None => return Err(format!("routing field {f:?} is missing")),
            };
            out.extend_from_slice(b",\"routing\":");
            write_json_str(out, &routing);
        }
        if let Some((f, t)) = &s.version {
            let v = record
                .get(f)
                .ok_or_else(|| format!("version field {f:?} is missing"))?;
            let version = match v.as_ref() {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            }
            .filter(|v| *v < i64::MAX as u64)
            .ok_or_else(|| {
                format!("version field {f:?} must be a non-negative integer, got {v}")
            })?;
            out.extend_from_slice(
                format!(",\"version\":{version},\"version_type\":\"{}\"", t.as_str()).as_bytes(),
            );
        }
        if s.action == Action::Update {
            out.extend_from_slice(
                format!(",\"retry_on_conflict\":{UPDATE_RETRY_ON_CONFLICT}").as_bytes(),
            );
        }
        out.extend_from_slice(b"}}\n");
        let source = out.len();
        match s.action {
            Action::Delete => {}
            Action::Update => {
                out.extend_from_slice(b"{\"doc\":");
                self.write_document(record, out)?;
                out.extend_from_slice(b",\"doc_as_upsert\":true}\n");
            }
            Action::Index | Action::Create => {
                self.write_document(record, out)?;
                out.push(b'\n');
            }
        }
        Ok(source)
    }

    /// The record as one line of JSON: its own text when it still has it (no newline inside),
    /// else its fields; data streams get `@timestamp`.
    fn write_document(&self, record: &Record, out: &mut Vec<u8>) -> Result<(), String> {
        let raw = record.json().filter(|t| !t.contains(&b'\n'));
        let stamp = match &self.settings.data_stream {
            None => None,
            Some(TimestampSource::Field(f)) if f == "@timestamp" => {
                match record.get(f).as_deref() {
                    None | Some(Value::Null) => {
                        return Err(
                            "data stream documents need @timestamp, and the record has none".into(),
                        )
                    }
                    Some(_) => None,
                }
            }
            Some(TimestampSource::Field(f)) => match record.get(f) {
                None => {
                    return Err(format!(
                        "timestamp field {f:?} is missing (data streams need @timestamp)"
                    ))
                }
                Some(v) if timestamp(&v).is_none() => {
                    return Err(format!(
                        "timestamp field {f:?} is not a timestamp (epoch ms or RFC 3339): {v}"
                    ))
                }
                Some(v) => Some(v.into_owned()),
            },
            Some(TimestampSource::EventTime) => {
                let ms = record.event_time.ok_or_else(|| {
                    "data stream documents need @timestamp, and the record has no event time"
                        .to_string()
                })?;
                let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
                    .ok_or_else(|| format!("event time {ms} is out of range"))?;
                Some(Value::String(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ))
            }
        };
        match (stamp, raw) {
            (None, Some(text)) => out.extend_from_slice(text),
            (None, None) => serde_json::to_writer(&mut *out, record.fields())
                .map_err(|e| format!("cannot serialize the record: {e}"))?,
            // The record's text gains a leading @timestamp unless it has one to replace.
            (Some(stamp), Some(text)) if record.get("@timestamp").is_none() => {
                let at = text.iter().position(|b| *b == b'{').unwrap_or(0);
                let rest = &text[at + 1..];
                out.extend_from_slice(b"{\"@timestamp\":");
                serde_json::to_writer(&mut *out, &stamp).expect("a JSON value serializes");
                if rest.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
                    out.push(b',');
                }
                out.extend_from_slice(rest);
            }
            (Some(stamp), _) => {
                let mut fields = record.fields().clone();
                fields.insert("@timestamp".into(), stamp);
                serde_json::to_writer(&mut *out, &fields)
                    .map_err(|e| format!("cannot serialize the record: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JsonObject;
    use serde_json::json;
    use std::sync::Arc;

    fn builder(yaml: &str) -> ElasticsearchRequestBuilder {
        let settings = super::super::config::parse_yaml(&format!("url: http://es:9200\n{yaml}"));
        ElasticsearchRequestBuilder::new(Arc::new(settings.unwrap()))
    }

    fn rec(v: Value) -> Record {
        let Value::Object(f) = v else { panic!() };
        Record::new(f)
    }

    fn text(text: &'static str) -> Record {
        Record::from_json(JsonObject::parse(Bytes::from_static(text.as_bytes())).unwrap())
    }

    fn lines(b: &ElasticsearchRequestBuilder, r: &Record) -> Result<String, String> {
        let mut buf = BulkBuffer::default();
        let id = b.id(r)?;
        b.append(r, id.as_deref(), &mut buf)?;
        Ok(String::from_utf8(buf.body).unwrap())
    }

    #[test]
    fn index_with_id_routing_and_external_version() {
        let b = builder(
            "index: events-{tenant}\nid_field: [tenant, n]\nid_delimiter: \":\"\nrouting_field: tenant\nversion_field: v",
        );
        let r = rec(json!({"tenant": "acme", "n": 7, "v": 3, "msg": "a\"b"}));
        assert_eq!(
            lines(&b, &r).unwrap(),
            "{\"index\":{\"_index\":\"events-acme\",\"_id\":\"acme:7\",\"routing\":\"acme\",\"version\":3,\"version_type\":\"external_gte\"}}\n\
             {\"tenant\":\"acme\",\"n\":7,\"v\":3,\"msg\":\"a\\\"b\"}\n"
        );
    }

    #[test]
    fn update_wraps_the_document_and_delete_sends_no_source() {
        let b = builder("index: e\nid_field: id\naction: update");
        assert_eq!(
            lines(&b, &rec(json!({"id": 1, "x": true}))).unwrap(),
            "{\"update\":{\"_index\":\"e\",\"_id\":\"1\",\"retry_on_conflict\":3}}\n{\"doc\":{\"id\":1,\"x\":true},\"doc_as_upsert\":true}\n"
        );
        let b = builder("index: e\nid_field: id\naction: delete");
        let mut buf = BulkBuffer::default();
        b.append(&rec(json!({"id": "k"})), Some("k"), &mut buf)
            .unwrap();
        assert_eq!(buf.body, b"{\"delete\":{\"_index\":\"e\",\"_id\":\"k\"}}\n");
        assert_eq!(buf.spans[0].source, buf.spans[0].end, "no source line");
    }

    #[test]
    fn a_records_own_text_is_sent_unless_it_spans_lines() {
        let b = builder("index: e");
        let r = text(r#"{ "a" : 1.50 }"#);
        assert_eq!(
            lines(&b, &r).unwrap(),
            "{\"index\":{\"_index\":\"e\"}}\n{ \"a\" : 1.50 }\n"
        );
        let r = text("{\"a\":\n1}");
        assert_eq!(
            lines(&b, &r).unwrap(),
            "{\"index\":{\"_index\":\"e\"}}\n{\"a\":1}\n"
        );
    }

    #[test]
    fn data_streams_get_a_timestamp() {
        let b = builder("index: logs-app\ndata_stream: {timestamp_field: ts}");
        let r = text(r#"{"ts": 0, "m": "x"}"#);
        assert_eq!(
            lines(&b, &r).unwrap(),
            "{\"create\":{\"_index\":\"logs-app\"}}\n{\"@timestamp\":0,\"ts\": 0, \"m\": \"x\"}\n"
        );
        let e = lines(&b, &rec(json!({"m": 1}))).unwrap_err();
        assert!(e.contains("timestamp field \"ts\" is missing"), "{e}");
        let b = builder("index: logs-app\ndata_stream: {event_time: true}");
        let r = rec(json!({})).with_event_time(Some(1_000));
        assert_eq!(
            lines(&b, &r).unwrap(),
            "{\"create\":{\"_index\":\"logs-app\"}}\n{\"@timestamp\":\"1970-01-01T00:00:01.000Z\"}\n"
        );
        assert!(lines(&b, &rec(json!({})))
            .unwrap_err()
            .contains("no event time"));
        let b = builder("index: logs-app\ndata_stream: {timestamp_field: \"@timestamp\"}");
        assert!(lines(&b, &rec(json!({"m": 1})))
            .unwrap_err()
            .contains("need @timestamp"));
    }

    #[test]
    fn bad_records_leave_the_buffer_untouched() {
        let b = builder("index: e-{t}\nid_field: id\nversion_field: v");
        let mut buf = BulkBuffer::default();
        b.append(
            &rec(json!({"id": 1, "t": "a", "v": 1})),
            Some("1"),
            &mut buf,
        )
        .unwrap();
        let before = buf.body.clone();
        for (r, needle) in [
            (json!({"t": "a", "v": 1}), "id field \"id\" is missing"),
            (
                json!({"id": {"x": 1}, "t": "a", "v": 1}),
                "must be a string or number",
            ),
            (json!({"id": 2, "v": 1}), "index field \"t\" is missing"),
            (json!({"id": 2, "t": "a", "v": -1}), "non-negative integer"),
            (json!({"id": 2, "t": "a"}), "version field \"v\" is missing"),
        ] {
            let r = rec(r);
            let e = b
                .id(&r)
                .and_then(|id| b.append(&r, id.as_deref(), &mut buf))
                .unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(buf.body, before);
        assert_eq!(buf.len(), 1);
        let long = "x".repeat(600);
        assert!(b
            .id(&rec(json!({"id": long})))
            .unwrap_err()
            .contains("at most 512"));
    }

    #[test]
    fn a_subset_keeps_order_and_describe_reads_the_action_back() {
        let b = builder("index: e\nid_field: id");
        let mut buf = BulkBuffer::default();
        for i in 0..4 {
            let id = i.to_string();
            b.append(&rec(json!({"id": i})), Some(&id), &mut buf)
                .unwrap();
        }
        let (body, spans) = buf.take();
        assert!(buf.is_empty() && buf.since.is_none());
        let (sub, sub_spans) = subset(&body, &[spans[1], spans[3]]);
        assert_eq!(
            std::str::from_utf8(&sub).unwrap(),
            "{\"index\":{\"_index\":\"e\",\"_id\":\"1\"}}\n{\"id\":1}\n{\"index\":{\"_index\":\"e\",\"_id\":\"3\"}}\n{\"id\":3}\n"
        );
        let s = sub_spans[1];
        assert_eq!(&sub[s.source..s.end], b"{\"id\":3}\n");
        assert_eq!(
            describe(&sub[s.start..s.source]),
            (Some("e".into()), Some("3".into()))
        );
    }
}
