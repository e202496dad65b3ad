//! Amazon Kinesis Data Streams: a source whose splits are shards (positions in the checkpoint,
//! resharding-safe, polling or enhanced fan-out readers) and a sink (PutRecords, at-least-once).

pub mod sink;
pub mod source;
pub mod stream;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    source::register(r);
    sink::register(r);
}
