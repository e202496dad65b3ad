//! The `file` source: reads JSON-lines or CSV files; each file is a split, its position a byte
//! offset. Files are listed once at open (sorted, so every worker sees the same order) and split
//! among workers by index; a file's position is the byte offset after its last record emitted.

mod config;

pub use self::config::{CsvOptions, FileFormat, FileSourceConfig};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use crate::api::{Batch, NodeContext, Record, Result, Source, SourcePoll, SplitId};
use crate::error::{Context, Error};
use crate::on_error::OnError;
use crate::record::JsonObject;

struct OpenFile {
    id: SplitId,
    path: PathBuf,
    offset: u64,
    line: u64,
    reader: Option<BufReader<File>>,
    headers: Vec<String>,
    done: bool,
}

pub struct FileSource {
    config: FileSourceConfig,
    files: Vec<OpenFile>,
    current: usize,
    node: String,
    errors: Option<prometheus::IntCounter>,
}

impl FileSource {
    pub fn new(config: FileSourceConfig) -> Self {
        FileSource {
            config,
            files: Vec::new(),
            current: 0,
            node: String::new(),
            errors: None,
        }
    }
}

fn list_files(root: &Path, suffix: Option<&str>, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if root.is_file() {
        out.push(root.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(root)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if super::is_hidden(name) {
            continue;
        }
        if p.is_dir() {
            list_files(&p, suffix, out)?;
        } else if suffix.is_none_or(|s| name.ends_with(s)) {
            out.push(p);
        }
    }
    Ok(())
}

/// A CSV value as JSON: numbers when asked and possible, else strings.
fn csv_value(s: &str, infer: bool) -> Value {
    if infer {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            if f.is_finite() {
                return Value::from(f);
            }
        }
    }
    Value::String(s.to_string())
}

impl FileSource {
    fn open_reader(&self, f: &mut OpenFile) -> Result<()> {
        let file =
            File::open(&f.path).ctx(|| format!("{}: opening {}", self.node, f.path.display()))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        if self.config.format == FileFormat::Csv {
            f.headers = self.config.csv.columns.clone();
            if self.config.csv.header {
                let mut first = String::new();
                let n = reader
                    .read_line(&mut first)
                    .ctx(|| format!("reading {}", f.path.display()))?;
                if f.headers.is_empty() {
                    f.headers = self
                        .parse_csv_line(first.trim_end_matches(['\r', '\n']))?
                        .into_iter()
                        .collect();
                }
                if f.offset < n as u64 {
                    f.offset = n as u64;
                    // Errors name file lines: the header is line 1.
                    f.line = 1;
                }
            }
        }
        reader
            .seek(SeekFrom::Start(f.offset))
            .ctx(|| format!("seeking in {}", f.path.display()))?;
        f.reader = Some(reader);
        Ok(())
    }

    fn parse_csv_line(&self, line: &str) -> Result<Vec<String>> {
        csv_fields(&self.config.csv, line).map_err(Error::Other)
    }
}

/// The fields of one CSV line.
fn csv_fields(csv: &CsvOptions, line: &str) -> std::result::Result<Vec<String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(csv.delimiter.as_bytes()[0])
        .from_reader(line.as_bytes());
    match r.records().next() {
        Some(Ok(rec)) => Ok(rec.iter().map(str::to_string).collect()),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(Vec::new()),
    }
}

/// One line of a file (without its line break) as a record; the error says why it is not one.
/// `headers` are the CSV column names. Pure, so that it can be fuzzed.
pub fn parse_line(
    format: FileFormat,
    csv: &CsvOptions,
    headers: &[String],
    line: &[u8],
) -> std::result::Result<Record, String> {
    match format {
        // Checked now, built when a transform or sink needs the fields.
        FileFormat::Json => JsonObject::parse(Bytes::copy_from_slice(line)).map(Record::from_json),
        FileFormat::Csv => {
            let line = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8: {e}"))?;
            let values = csv_fields(csv, line).map_err(|e| format!("invalid CSV: {e}"))?;
            if values.len() != headers.len() {
                return Err(format!(
                    "expected {} columns, found {}",
                    headers.len(),
                    values.len()
                ));
            }
            Ok(Record::new(
                headers
                    .iter()
                    .zip(values)
                    .map(|(h, v)| (h.clone(), csv_value(&v, csv.infer_types)))
                    .collect(),
            ))
        }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.errors = Some(ctx.metrics.record_errors.clone());
        let root = PathBuf::from(&self.config.path);
        if !root.exists() {
            return Err(Error::node(
                &ctx.node,
                format!("path {} does not exist", root.display()),
            ));
        }
        let mut all = Vec::new();
        list_files(&root, self.config.suffix.as_deref(), &mut all)
            .ctx(|| format!("listing {}", root.display()))?;
        all.sort();
        for (i, path) in all.into_iter().enumerate() {
            if !ctx.owns_index(i) {
                continue;
            }
            let id = path.display().to_string();
            let pos = restored.get(&id).cloned().unwrap_or(Value::Null);
            let (offset, line) = (
                pos["offset"].as_u64().unwrap_or(0),
                pos["line"].as_u64().unwrap_or(0),
            );
            self.files.push(OpenFile {
                id: Arc::from(id),
                path,
                offset,
                line,
                reader: None,
                headers: Vec::new(),
                done: false,
            });
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        while self.current < self.files.len() && self.files[self.current].done {
            self.current += 1;
        }
        if self.current >= self.files.len() {
            return Ok(SourcePoll::Finished);
        }
        let mut f = std::mem::replace(
            &mut self.files[self.current],
            OpenFile {
                id: Arc::from(""),
                path: PathBuf::new(),
                offset: 0,
                line: 0,
                reader: None,
                headers: vec![],
                done: true,
            },
        );
        let result = self.read_batch(&mut f);
        self.files[self.current] = f;
        result
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        Ok(self
            .files
            .iter()
            .map(|f| {
                (
                    f.id.to_string(),
                    serde_json::json!({ "offset": f.offset, "line": f.line }),
                )
            })
            .collect())
    }
}

impl FileSource {
    fn read_batch(&mut self, f: &mut OpenFile) -> Result<SourcePoll> {
        if f.reader.is_none() {
            self.open_reader(f)?;
        }
        let mut records = Vec::with_capacity(self.config.batch_size);
        // Bytes, not a String: a line that is not UTF-8 is a bad record for `on_error`, not a
        // read error that fails the job again at every restart.
        let mut line = Vec::new();
        while records.len() < self.config.batch_size {
            line.clear();
            let reader = f.reader.as_mut().expect("opened above");
            let n = reader
                .read_until(b'\n', &mut line)
                .ctx(|| format!("reading {}", f.path.display()))?;
            if n == 0 {
                f.done = true;
                f.reader = None;
                break;
            }
            f.offset += line.len() as u64;
            f.line += 1;
            let text = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(&line);
            if text.trim_ascii().is_empty() {
                continue;
            }
            match parse_line(self.config.format, &self.config.csv, &f.headers, text) {
                Ok(record) => records.push(record),
                Err(msg) => match self.config.on_error {
                    OnError::Fail | OnError::DeadLetter(_) => {
                        return Err(Error::Record {
                            node: self.node.clone(),
                            record: format!("{}:{}", f.path.display(), f.line),
                            message: msg,
                        })
                    }
                    OnError::Skip => {
                        if let Some(c) = &self.errors {
                            c.inc();
                        }
                        tracing::warn!(node = %self.node, file = %f.path.display(), line = f.line, "skipping record: {msg}");
                    }
                },
            }
        }
        if records.is_empty() {
            return Ok(SourcePoll::Idle);
        }
        Ok(SourcePoll::Batch(Batch::new(Some(f.id.clone()), records)))
    }
}
