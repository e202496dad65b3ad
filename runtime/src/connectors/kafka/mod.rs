//! Apache Kafka source and sink (exactly-once through transactions), on rdkafka.

pub mod client;
pub mod eventhubs;
pub mod sink;
pub mod source;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    source::register(r);
    sink::register(r);
}
