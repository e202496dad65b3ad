//! `file`: reads JSON-lines or CSV files; each file is a split, its position a byte offset.

mod config;
mod source;

pub use config::{CsvOptions, FileFormat, FileSourceConfig};
pub use source::{parse_line, FileSource};

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.source("file", |cfg| {
        Ok(Box::new(FileSource::new(
            cfg.resolve::<FileSourceConfig>()?,
        )))
    });
}
