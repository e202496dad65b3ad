//! Built-in transforms: CEL filter and map/project, and event-time watermarks.

pub mod async_io;
pub mod cel;
mod filter;
mod map;
pub mod split_watermarks;
pub mod watermark;

use serde::Deserialize;

use crate::registry::Registry;

/// What to do with a record an expression cannot evaluate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail the job with an error naming the node, the record and the reason.
    #[default]
    Fail,
    /// Drop the record, count it in `weir_node_record_errors_total` and log it.
    Skip,
}

pub fn register(r: &mut Registry) {
    async_io::register(r);
    filter::register(r);
    map::register(r);
    watermark::register(r);
}
