//! `kinesis` source: shards are splits owned by workers (by hash-key range), positions
//! (sequence numbers) live in weir's checkpoints; a child shard is read only after all its
//! parents; polling (GetRecords) or enhanced fan-out (SubscribeToShard) readers, one task per
//! shard; per-shard watermarks; throttling backs off per shard; expired positions follow
//! `on_expired_position`. Settings: [`KinesisSourceConfig`].

mod config;
mod decode;
mod efo;
mod listing;
mod metrics;
mod peers;
mod polling;
mod position;
mod reader;
mod running;
mod shards;

pub use config::KinesisSourceConfig;
pub use running::KinesisSource;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    r.source("kinesis", |cfg| {
        let settings = cfg.resolve::<config::KinesisSourceConfig>()?;
        Ok(Box::new(KinesisSource::new(settings)))
    });
}
