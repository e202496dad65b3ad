//! Turning records into the bytes of a part. Every encoder appends to an in-memory buffer
//! ([`Encoder::output`]) that the sink ships to the file or upload in large pieces, so writing a
//! record costs no system call and no allocation beyond the encoding itself.

use std::sync::Arc;

use serde_json::Value;

use super::config::{Format, Settings};
use super::parquet::{ParquetEncoder, ParquetLayout};
use crate::error::{Error, Result};
use crate::record::Record;

/// Called with each record that does not fit the format; returns an error to fail the write.
pub type OnBadRecord<'a> = &'a mut dyn FnMut(&Record, String) -> Result<()>;

pub enum Encoder {
    /// JSON lines: the record's fields as one JSON object per line.
    Json {
        out: Vec<u8>,
    },
    Csv(CsvEncoder),
    Parquet(Box<ParquetEncoder>),
}

impl Encoder {
    pub fn format(&self) -> Format {
        match self {
            Encoder::Json { .. } => Format::Json,
            Encoder::Csv(_) => Format::Csv,
            Encoder::Parquet(_) => Format::Parquet,
        }
    }

    pub fn write(&mut self, records: &[Record], on_bad: OnBadRecord<'_>) -> Result<()> {
        match self {
            Encoder::Json { out } => {
                for r in records {
                    match r.json() {
                        // The text a record was decoded from is written as is unless it spans
                        // lines (pretty-printed input), which would break the one-per-line file.
                        Some(json) if !json.contains(&b'\n') => out.extend_from_slice(json),
                        _ => serde_json::to_writer(&mut *out, r.fields())
                            .map_err(|e| Error::Other(format!("encoding a record as JSON: {e}")))?,
                    }
                    out.push(b'\n');
                }
                Ok(())
            }
            Encoder::Csv(csv) => csv.write(records, on_bad),
            Encoder::Parquet(p) => p.write(records, on_bad),
        }
    }

    /// Encoded bytes not yet shipped; the caller drains it.
    pub fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Json { out } => out,
            Encoder::Csv(csv) => &mut csv.out,
            Encoder::Parquet(p) => p.output(),
        }
    }

    /// Bytes encoded but not yet shipped: the output buffer, plus for Parquet an estimate of
    /// the open row group.
    pub fn unshipped(&self) -> u64 {
        match self {
            Encoder::Json { out } => out.len() as u64,
            Encoder::Csv(csv) => csv.out.len() as u64,
            Encoder::Parquet(p) => p.unshipped(),
        }
    }

    /// Completes the part (Parquet writes its row group and footer into the output).
    pub fn finish(&mut self) -> Result<()> {
        match self {
            Encoder::Parquet(p) => p.finish(),
            _ => Ok(()),
        }
    }

    /// The CSV columns of this part (kept in the checkpoint so a resumed part keeps its header).
    pub fn columns(&self) -> Option<Vec<String>> {
        match self {
            Encoder::Csv(csv) => Some(csv.columns.to_vec()),
            _ => None,
        }
    }
}

pub struct CsvEncoder {
    out: Vec<u8>,
    columns: Arc<[String]>,
    delimiter: u8,
    /// Reused for numbers and nested values, so cells cost no allocation.
    scratch: Vec<u8>,
}

impl CsvEncoder {
    fn writer<'a>(&self, out: &'a mut Vec<u8>) -> csv::Writer<&'a mut Vec<u8>> {
        csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(false)
            .from_writer(out)
    }

    fn write_header(&mut self) -> Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let r = (|| {
            let mut w = self.writer(&mut out);
            w.write_record(self.columns.iter())?;
            w.flush()
        })();
        self.out = out;
        r.map_err(|e| Error::Other(format!("writing the CSV header: {e}")))
    }

    /// Why a record does not fit the columns: a field the columns do not have.
    fn misfit(&self, r: &Record) -> Option<String> {
        if r.fields().keys().all(|k| self.columns.contains(k)) {
            return None;
        }
        let extra: Vec<&str> = r
            .fields()
            .keys()
            .filter(|k| !self.columns.contains(k))
            .map(String::as_str)
            .collect();
        Some(format!(
            "does not fit the CSV columns [{}]: unexpected field(s) {}",
            self.columns.join(", "),
            extra
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn write(&mut self, records: &[Record], on_bad: OnBadRecord<'_>) -> Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.write_into(&mut out, &mut scratch, records, on_bad);
        self.out = out;
        self.scratch = scratch;
        r
    }

    fn write_into(
        &self,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        records: &[Record],
        on_bad: OnBadRecord<'_>,
    ) -> Result<()> {
        let io = |e: csv::Error| Error::Other(format!("encoding CSV: {e}"));
        let mut w = self.writer(out);
        for r in records {
            // Checked before the first cell, so a skipped record leaves no partial row.
            if let Some(why) = self.misfit(r) {
                on_bad(r, why)?;
                continue;
            }
            for col in self.columns.iter() {
                let cell = match r.fields().get(col) {
                    None | Some(Value::Null) => w.write_field([]),
                    Some(Value::String(s)) => w.write_field(s),
                    Some(Value::Bool(b)) => w.write_field(if *b { "true" } else { "false" }),
                    // Numbers print as JSON does; arrays and objects as JSON text.
                    Some(v) => {
                        scratch.clear();
                        serde_json::to_writer(&mut *scratch, v)
                            .map_err(|e| Error::Other(format!("encoding a CSV cell: {e}")))?;
                        w.write_field(&scratch[..])
                    }
                };
                cell.map_err(io)?;
            }
            w.write_record(None::<&[u8]>).map_err(io)?;
        }
        w.flush()
            .map_err(|e| Error::Other(format!("encoding CSV: {e}")))
    }
}

/// Makes the encoder of each new part; holds what the first records taught it (CSV columns,
/// Parquet schema) so every part of this sink has the same layout.
pub struct EncoderFactory {
    format: Format,
    csv_header: bool,
    csv_delimiter: u8,
    columns: Option<Arc<[String]>>,
    parquet: Option<ParquetLayout>,
}

impl EncoderFactory {
    pub fn new(s: &Settings) -> Self {
        let parquet = match s.format {
            Format::Parquet => Some(ParquetLayout::new(s.schema.as_deref(), s.compression)),
            _ => None,
        };
        EncoderFactory {
            format: s.format,
            csv_header: s.csv_header,
            csv_delimiter: s.csv_delimiter,
            columns: s.columns.as_ref().map(|c| c.clone().into()),
            parquet,
        }
    }

    /// The encoder of a new part whose first records are `first` (not yet written).
    pub fn create(&mut self, first: &[Record]) -> Result<Encoder> {
        const START: usize = 256 * 1024;
        match self.format {
            Format::Json => Ok(Encoder::Json {
                out: Vec::with_capacity(START),
            }),
            Format::Csv => {
                let columns = self
                    .columns
                    .get_or_insert_with(|| {
                        first
                            .first()
                            .map(|r| r.fields().keys().cloned().collect::<Vec<_>>())
                            .unwrap_or_default()
                            .into()
                    })
                    .clone();
                let mut csv = CsvEncoder {
                    out: Vec::with_capacity(START),
                    columns,
                    delimiter: self.csv_delimiter,
                    scratch: Vec::new(),
                };
                if self.csv_header {
                    csv.write_header()?;
                }
                Ok(Encoder::Csv(csv))
            }
            Format::Parquet => {
                let layout = self
                    .parquet
                    .as_mut()
                    .ok_or_else(|| Error::Other("parquet layout missing".into()))?;
                Ok(Encoder::Parquet(Box::new(layout.encoder(first)?)))
            }
        }
    }

    /// The encoder for appending to a part written before a restart, if this configuration can
    /// continue it (same row format, same CSV columns); `None` means the part must be closed.
    pub fn resume(&mut self, format: Format, columns: Option<&[String]>) -> Option<Encoder> {
        if format != self.format {
            return None;
        }
        match format {
            Format::Json => Some(Encoder::Json {
                out: Vec::with_capacity(256 * 1024),
            }),
            Format::Csv => {
                let columns: Arc<[String]> = columns?.to_vec().into();
                if self.columns.as_ref().is_some_and(|mine| *mine != columns) {
                    return None;
                }
                self.columns = Some(columns.clone());
                Some(Encoder::Csv(CsvEncoder {
                    out: Vec::with_capacity(256 * 1024),
                    columns,
                    delimiter: self.csv_delimiter,
                    scratch: Vec::new(),
                }))
            }
            Format::Parquet => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::new(v.as_object().cloned().unwrap())
    }

    fn factory(format: Format, columns: Option<Vec<&str>>, header: bool) -> EncoderFactory {
        EncoderFactory {
            format,
            csv_header: header,
            csv_delimiter: b',',
            columns: columns.map(|c| c.into_iter().map(String::from).collect::<Vec<_>>().into()),
            parquet: None,
        }
    }

    #[test]
    fn json_lines_keep_field_order() {
        let mut e = factory(Format::Json, None, false).create(&[]).unwrap();
        e.write(
            &[rec(json!({"b": 1, "a": "x"})), rec(json!({"n": null}))],
            &mut super::super::tests::fail(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(e.output().clone()).unwrap(),
            "{\"b\":1,\"a\":\"x\"}\n{\"n\":null}\n"
        );
    }

    fn decoded(text: &str) -> Record {
        let json = bytes::Bytes::copy_from_slice(text.as_bytes());
        Record::from_json(crate::record::JsonObject::parse(json).unwrap())
    }

    #[test]
    fn json_lines_reuse_a_records_text_unless_it_spans_lines_or_was_changed() {
        let mut changed = decoded(r#"{"c": 3}"#);
        changed.fields_mut().insert("d".into(), json!(4));
        let mut e = factory(Format::Json, None, false).create(&[]).unwrap();
        e.write(
            &[
                decoded(r#"{"a": 1.50, "b": "x"}"#),
                decoded("{\n  \"p\": 1\n}"),
                changed,
            ],
            &mut super::super::tests::fail(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(e.output().clone()).unwrap(),
            "{\"a\": 1.50, \"b\": \"x\"}\n{\"p\":1}\n{\"c\":3,\"d\":4}\n"
        );
    }

    #[test]
    fn csv_columns_come_from_the_first_record_and_values_are_rendered() {
        let records = [
            rec(json!({"id": 1, "name": "a,b", "tags": ["x"], "ok": true})),
            rec(json!({"name": "q\"uote", "id": 2.5})),
        ];
        let mut f = factory(Format::Csv, None, true);
        let mut e = f.create(&records).unwrap();
        e.write(&records, &mut super::super::tests::fail()).unwrap();
        let text = String::from_utf8(e.output().clone()).unwrap();
        assert_eq!(
            text,
            "id,name,tags,ok\n1,\"a,b\",\"[\"\"x\"\"]\",true\n2.5,\"q\"\"uote\",,\n"
        );
        assert_eq!(e.columns().unwrap(), ["id", "name", "tags", "ok"]);
        // A later part keeps the same columns even if its first record differs.
        let e2 = f.create(&[rec(json!({"z": 1}))]).unwrap();
        assert_eq!(e2.columns().unwrap(), ["id", "name", "tags", "ok"]);
    }

    #[test]
    fn csv_rejects_a_record_with_unknown_fields_or_skips_it() {
        let mut e = factory(Format::Csv, Some(vec!["a"]), false)
            .create(&[])
            .unwrap();
        let bad = rec(json!({"a": 1, "b": 2}));
        let err = e
            .write(
                &[rec(json!({"a": 0})), bad.clone()],
                &mut super::super::tests::fail(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                r#"record {"a":1,"b":2}: does not fit the CSV columns [a]: unexpected field(s) "b""#
            ),
            "{err}"
        );
        let mut skipped = 0;
        let mut e = factory(Format::Csv, Some(vec!["a"]), false)
            .create(&[])
            .unwrap();
        e.write(&[bad, rec(json!({"a": 3}))], &mut |_, _| {
            skipped += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(String::from_utf8(e.output().clone()).unwrap(), "3\n");
    }

    #[test]
    fn resume_requires_the_same_format_and_columns() {
        let mut f = factory(Format::Csv, Some(vec!["a", "b"]), true);
        assert!(f.resume(Format::Json, None).is_none());
        assert!(f
            .resume(Format::Csv, Some(&["b".into(), "a".into()]))
            .is_none());
        let mut e = f
            .resume(Format::Csv, Some(&["a".into(), "b".into()]))
            .unwrap();
        assert!(
            e.output().is_empty(),
            "a resumed part has its header already"
        );
        let mut inferred = factory(Format::Csv, None, true);
        inferred.resume(Format::Csv, Some(&["x".into()])).unwrap();
        assert_eq!(
            inferred
                .create(&[rec(json!({"y": 1}))])
                .unwrap()
                .columns()
                .unwrap(),
            ["x"]
        );
    }
}
