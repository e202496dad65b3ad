//! Turns one Kinesis record into a weir record: the data by format, metadata under the
//! configured field names, the event time. Pure, so every malformed input is tested without a
//! server.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::config::KinesisSourceConfig;
use crate::event_time::EventTimeSource;
use crate::record::Record;

/// The parts of a Kinesis record the decoder reads.
#[derive(Debug, Clone, Default)]
pub struct RawRecord<'a> {
    pub stream: &'a str,
    pub shard: &'a str,
    pub sequence_number: &'a str,
    pub partition_key: &'a str,
    /// ApproximateArrivalTimestamp, ms since the epoch.
    pub arrival_ms: Option<i64>,
    pub data: Bytes,
}

/// Decodes by the source's `format`, `value_field`, `metadata` and `event_time`.
#[derive(Debug, Clone)]
pub struct Decoder(KinesisSourceConfig, Arc<str>);

impl Decoder {
    pub fn new(c: &KinesisSourceConfig) -> Self {
        Decoder(c.clone(), Arc::from(c.value_field.as_str()))
    }

    /// The record for `r`, or why it cannot be one.
    pub fn decode(&self, r: &RawRecord<'_>) -> Result<Record, String> {
        let c = &self.0;
        let mut record = c.format.decode(&r.data, &self.1, "the data")?;
        // Metadata go into the record's fields (so a JSON record is built); without them a JSON
        // record stays in its text.
        let md = &c.metadata;
        let mut put = |field: &Option<String>, v: Value| {
            if let Some(f) = field {
                record.fields_mut().insert(f.clone(), v);
            }
        };
        put(&md.partition_key, Value::from(r.partition_key));
        put(&md.sequence_number, Value::from(r.sequence_number));
        put(&md.shard_id, Value::from(r.shard));
        put(&md.stream, Value::from(r.stream));
        put(
            &md.arrival_timestamp,
            r.arrival_ms.map_or(Value::Null, Value::from),
        );
        let event_time = match &c.event_time {
            Some(e) => Some(e.of(
                &KinesisSourceConfig::EVENT_TIME,
                r.arrival_ms,
                |_| None,
                &record,
            )?),
            None => None,
        };
        Ok(record.with_event_time(event_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::kinesis::source::config::{MetadataFields, ValueFormat};
    use crate::event_time::{EventTime, TimeFormat};
    use serde_json::json;

    fn decoder(
        format: ValueFormat,
        metadata: MetadataFields,
        event_time: Option<EventTime>,
    ) -> Decoder {
        let mut c: KinesisSourceConfig =
            serde_json::from_value(json!({"streams": ["orders"]})).unwrap();
        (c.format, c.metadata, c.event_time) = (format, metadata, event_time);
        Decoder::new(&c)
    }

    fn raw(data: &'static [u8]) -> RawRecord<'static> {
        RawRecord {
            stream: "orders",
            shard: "shardId-000000000001",
            sequence_number: "4968",
            partition_key: "k1",
            arrival_ms: Some(1_700_000_000_123),
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn json_records_keep_their_text_until_metadata_is_added() {
        let d = decoder(ValueFormat::Json, MetadataFields::default(), None);
        let r = d.decode(&raw(b"{\"id\": 7}")).unwrap();
        assert_eq!(r.json().map(|b| &b[..]), Some(&b"{\"id\": 7}"[..]));
        let md = MetadataFields {
            partition_key: Some("_k".into()),
            sequence_number: Some("_seq".into()),
            shard_id: Some("_shard".into()),
            stream: Some("_stream".into()),
            arrival_timestamp: Some("_at".into()),
        };
        let r = decoder(ValueFormat::Json, md, None)
            .decode(&raw(b"{\"id\": 7}"))
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(r.fields().clone()),
            json!({"id": 7, "_k": "k1", "_seq": "4968", "_shard": "shardId-000000000001",
                   "_stream": "orders", "_at": 1_700_000_000_123i64})
        );
    }

    #[test]
    fn string_and_bytes_formats_fill_the_value_field() {
        let s = decoder(ValueFormat::String, MetadataFields::default(), None)
            .decode(&raw(b"hello"))
            .unwrap();
        assert_eq!(s.fields()["value"], "hello");
        let b = decoder(ValueFormat::Bytes, MetadataFields::default(), None)
            .decode(&raw(&[0xff, 0]))
            .unwrap();
        assert_eq!(b.fields()["value"], "/wA=");
        assert!(
            decoder(ValueFormat::String, MetadataFields::default(), None)
                .decode(&raw(&[0xff]))
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn event_time_from_arrival_or_a_field() {
        let a = decoder(
            ValueFormat::Json,
            MetadataFields::default(),
            Some(EventTime::System),
        )
        .decode(&raw(b"{}"))
        .unwrap();
        assert_eq!(a.event_time, Some(1_700_000_000_123));
        let f = decoder(
            ValueFormat::Json,
            MetadataFields::default(),
            Some(EventTime::Field {
                name: "ts".into(),
                format: TimeFormat::Millis,
            }),
        );
        assert_eq!(
            f.decode(&raw(b"{\"ts\": 42}")).unwrap().event_time,
            Some(42)
        );
        assert!(f
            .decode(&raw(b"{}"))
            .unwrap_err()
            .contains("field \"ts\" (event_time) is missing"));
    }

    #[test]
    fn malformed_data_says_why() {
        let d = decoder(ValueFormat::Json, MetadataFields::default(), None);
        assert!(d.decode(&raw(b"not json")).is_err());
        assert!(d.decode(&raw(b"[1,2]")).is_err());
    }
}
