//! `file`: reads JSON-lines or CSV files; each file is a split, its position a byte offset.

mod config;
mod source;

pub use config::{CsvOptions, FileFormat, FileSourceConfig};
pub use source::{parse_line, FileSource};

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.source("file", |cfg| {
        let c: FileSourceConfig = cfg.parse()?;
        if c.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        if c.csv.delimiter.len() != 1 {
            return Err(cfg.error("csv.delimiter", "must be a single character"));
        }
        Ok(Box::new(FileSource::new(c)))
    });
}
