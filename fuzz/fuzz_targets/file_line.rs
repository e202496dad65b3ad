//! A line of a `file` source, JSON or CSV (with the first byte choosing format, delimiter and
//! type inference): a record or an error, never a panic; a CSV record has one field per column.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_runtime::connectors::filesystem::source::{parse_line, CsvOptions, FileFormat};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, line)) = data.split_first() else {
        return;
    };
    let format = if mode & 1 == 0 { FileFormat::Json } else { FileFormat::Csv };
    let csv = CsvOptions {
        delimiter: [",", ";", "\t", "|"][(mode as usize >> 1) & 3].to_string(),
        infer_types: mode & 8 != 0,
        ..CsvOptions::default()
    };
    let headers: Vec<String> = (0..(mode >> 4) as usize).map(|i| format!("c{i}")).collect();
    if let Ok(record) = parse_line(format, &csv, &headers, line) {
        if format == FileFormat::Csv {
            assert_eq!(record.fields().len(), headers.len());
        }
    }
});
