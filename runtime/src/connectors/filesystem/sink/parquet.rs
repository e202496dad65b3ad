//! Parquet parts: records become Arrow batches through arrow-json's serde decoder, then row
//! groups in an `ArrowWriter` whose output buffer the sink drains as it grows.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::{infer_json_schema_from_iterator, Decoder, ReaderBuilder};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use super::config::{ColumnConfig, ColumnType, Compression};
use super::format::OnBadRecord;
use crate::error::{Error, Result};
use crate::record::{Fields, Record};

/// Row groups are closed at this estimated size, bounding the memory of an open part.
const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// The schema (declared, or inferred once from the first records) and writer settings shared by
/// every part of a sink.
pub struct ParquetLayout {
    schema: Option<SchemaRef>,
    props: WriterProperties,
}

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        // An offset, not a zone name: arrow parses names only with chrono-tz. Any zone marks the
        // Parquet column as adjusted to UTC.
        ColumnType::TimestampMs => {
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
        }
        ColumnType::TimestampUs => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
    }
}

fn arrow_error(what: &str, e: ArrowError) -> Error {
    Error::Other(format!("{what}: {e}"))
}

impl ParquetLayout {
    pub fn new(declared: Option<&[ColumnConfig]>, compression: Compression) -> Self {
        let schema = declared.map(|cols| {
            let fields: Vec<Field> = cols
                .iter()
                .map(|c| Field::new(&c.name, arrow_type(c.kind), c.nullable))
                .collect();
            Arc::new(Schema::new(fields))
        });
        let codec = match compression {
            Compression::Snappy => Codec::SNAPPY,
            Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
            Compression::None => Codec::UNCOMPRESSED,
        };
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        ParquetLayout { schema, props }
    }

    /// The encoder of a new part; the first part of a sink without a declared schema infers it
    /// from `first`.
    pub fn encoder(&mut self, first: &[Record]) -> Result<ParquetEncoder> {
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => {
                if first.is_empty() {
                    return Err(Error::Other(
                        "cannot infer a Parquet schema without records".into(),
                    ));
                }
                let values = first
                    .iter()
                    .map(|r| Ok::<_, ArrowError>(Value::Object(r.fields().clone())));
                let inferred = infer_json_schema_from_iterator(values).map_err(|e| {
                    arrow_error("inferring the Parquet schema from the first records", e)
                })?;
                let s = Arc::new(without_null_columns(inferred));
                self.schema = Some(s.clone());
                s
            }
        };
        let writer = ArrowWriter::try_new(
            Vec::with_capacity(1024 * 1024),
            schema.clone(),
            Some(self.props.clone()),
        )
        .map_err(|e| Error::Other(format!("starting a Parquet part: {e}")))?;
        Ok(ParquetEncoder {
            decoder: new_decoder(&schema)?,
            writer,
            schema,
        })
    }
}

/// A field that is null in every first record is inferred as the Null type, which no later
/// value could fit; it becomes a nullable string instead.
fn without_null_columns(schema: Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Null => Field::new(f.name(), DataType::Utf8, true),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new(fields)
}

fn new_decoder(schema: &SchemaRef) -> Result<Decoder> {
    // Strict: a field the schema lacks is an error, not silently dropped data.
    ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        .build_decoder()
        .map_err(|e| arrow_error("building the JSON decoder for the Parquet schema", e))
}

pub struct ParquetEncoder {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    decoder: Decoder,
}

impl ParquetEncoder {
    fn decode(&mut self, rows: &[&Fields]) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        let r = self
            .decoder
            .serialize(rows)
            .and_then(|_| self.decoder.flush());
        if r.is_err() {
            // A failed decode leaves its rows behind in the decoder: start afresh.
            if let Ok(d) = new_decoder(&self.schema) {
                self.decoder = d;
            }
        }
        r
    }

    pub fn write(&mut self, records: &[Record], on_bad: OnBadRecord<'_>) -> Result<()> {
        let rows: Vec<&Fields> = records.iter().map(|r| r.fields()).collect();
        let batch = match self.decode(&rows) {
            Ok(batch) => batch,
            Err(_) => {
                // Rare path: find the records that do not fit, one by one, and decode the rest.
                let mut good = Vec::with_capacity(rows.len());
                for r in records {
                    match self.decode(&[r.fields()]) {
                        Ok(_) => good.push(r.fields()),
                        Err(e) => on_bad(r, format!("does not fit the Parquet schema: {e}"))?,
                    }
                }
                self.decode(&good)
                    .map_err(|e| arrow_error("encoding records for Parquet", e))?
            }
        };
        if let Some(batch) = batch {
            self.writer
                .write(&batch)
                .map_err(|e| Error::Other(format!("writing a Parquet row group: {e}")))?;
        }
        Ok(())
    }

    pub fn output(&mut self) -> &mut Vec<u8> {
        // Draining the inner buffer is safe: the writer counts bytes itself (offsets in the
        // footer are positions in the stream), and writes reach the buffer in order.
        self.writer.inner_mut()
    }

    pub fn unshipped(&self) -> u64 {
        (self.writer.inner().len() + self.writer.in_progress_size()) as u64
    }

    pub fn finish(&mut self) -> Result<()> {
        self.writer
            .finish()
            .map_err(|e| Error::Other(format!("finishing a Parquet part: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::new(v.as_object().cloned().unwrap())
    }

    fn col(name: &str, kind: ColumnType, nullable: bool) -> ColumnConfig {
        ColumnConfig {
            name: name.into(),
            kind,
            nullable,
        }
    }

    fn bytes_of(mut e: ParquetEncoder) -> Bytes {
        e.finish().unwrap();
        Bytes::from(std::mem::take(e.output()))
    }

    #[test]
    fn declared_schema_round_trips() {
        let schema = [
            col("id", ColumnType::Int64, false),
            col("name", ColumnType::String, true),
            col("at", ColumnType::TimestampMs, true),
            col("ok", ColumnType::Bool, true),
        ];
        let mut layout = ParquetLayout::new(Some(&schema), Compression::Zstd);
        let records: Vec<Record> = (0..10)
            .map(|i| rec(json!({"id": i, "name": format!("n{i}"), "at": 1_700_000_000_000i64 + i, "ok": i % 2 == 0})))
            .collect();
        let mut e = layout.encoder(&records).unwrap();
        e.write(&records, &mut super::super::tests::fail()).unwrap();
        e.write(
            &[rec(json!({"id": 10, "at": "2024-01-01T00:00:00Z"}))],
            &mut super::super::tests::fail(),
        )
        .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes_of(e)).unwrap();
        assert_eq!(
            reader.schema().field(2).data_type(),
            &arrow_type(ColumnType::TimestampMs)
        );
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 11);
    }

    #[test]
    fn a_record_that_does_not_fit_is_named_or_skipped() {
        let schema = [
            col("id", ColumnType::Int64, false),
            col("name", ColumnType::String, true),
        ];
        let mut layout = ParquetLayout::new(Some(&schema), Compression::Snappy);
        let records = vec![
            rec(json!({"id": 1})),
            rec(json!({"id": "seven"})),
            rec(json!({"id": 3})),
        ];
        let mut e = layout.encoder(&records).unwrap();
        let err = e
            .write(&records, &mut super::super::tests::fail())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"out: record {"id":"seven"}: does not fit the Parquet schema"#),
            "{err}"
        );

        let mut e = layout.encoder(&records).unwrap();
        let mut bad = Vec::new();
        let more = [
            rec(json!({"name": "no id"})),
            rec(json!({"id": 4, "extra": true})),
        ];
        for batch in [&records[..], &more[..]] {
            e.write(batch, &mut |r, m| {
                bad.push((r.describe(), m));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(
            bad[2].1.contains("extra"),
            "strict mode names the unknown field: {bad:?}"
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes_of(e))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
    }

    #[test]
    fn schema_is_inferred_once_from_the_first_records() {
        let mut layout = ParquetLayout::new(None, Compression::None);
        let first = [rec(json!({"a": 1, "b": "x", "c": 1.5, "d": null}))];
        let mut e = layout.encoder(&first).unwrap();
        e.write(&first, &mut super::super::tests::fail()).unwrap();
        // "d" was null in the first records: a string column takes its later values.
        e.write(
            &[rec(json!({"a": 2, "d": "later"}))],
            &mut super::super::tests::fail(),
        )
        .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes_of(e)).unwrap();
        let types: Vec<DataType> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Utf8,
                DataType::Float64,
                DataType::Utf8
            ]
        );
        assert_eq!(
            reader
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum::<usize>(),
            2
        );
        let e2 = layout.encoder(&[rec(json!({"z": true}))]).unwrap();
        assert_eq!(
            e2.schema.fields().len(),
            4,
            "later parts keep the first schema"
        );
    }
}
