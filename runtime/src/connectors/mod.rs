//! Built-in connectors, one folder each (config, source/sink and tests side by side).

#[cfg(any(feature = "kinesis", feature = "firehose"))]
pub mod aws;
pub mod blackhole;
pub mod datagen;
#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
pub mod filesystem;
#[cfg(feature = "firehose")]
pub mod firehose;
#[cfg(feature = "jdbc")]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
#[cfg(any(feature = "kafka", feature = "kinesis", feature = "pubsub"))]
pub mod message;
#[cfg(feature = "pubsub")]
pub mod pubsub;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    datagen::register(r);
    filesystem::register(r);
    blackhole::register(r);
    #[cfg(feature = "elasticsearch")]
    elasticsearch::register(r);
    #[cfg(feature = "jdbc")]
    jdbc::register(r);
    #[cfg(feature = "kafka")]
    kafka::register(r);
    #[cfg(feature = "kinesis")]
    kinesis::register(r);
    #[cfg(feature = "firehose")]
    firehose::register(r);
    #[cfg(feature = "pubsub")]
    pubsub::register(r);
}
