//! `kafka` source: partitions are splits owned by workers (manual assignment, never group
//! rebalancing), offsets live in weir's checkpoints and are committed to the consumer group only
//! after a checkpoint completes; per-partition watermarks; periodic discovery of new partitions
//! and of new topics matching `topic_pattern`; poison messages failed, skipped or dead-lettered.
//! Settings and security examples: [`KafkaSourceConfig`].

mod config;
mod dead_letter;
mod decode;
mod lookup;
mod reader;
mod splits;

pub use config::KafkaSourceConfig;
pub use dead_letter::{dead_letter_headers, ERROR_PREFIX};
pub use decode::RawMessage;
pub use reader::KafkaSource;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    r.source("kafka", |cfg| {
        let settings = cfg.resolve::<KafkaSourceConfig>()?;
        Ok(Box::new(KafkaSource::new(settings)))
    });
}
