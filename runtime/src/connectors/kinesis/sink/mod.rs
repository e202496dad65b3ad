//! `kinesis` sink: records to a Kinesis data stream with PutRecords, through the shared AWS put
//! sink (batches within 500 records / 5 MiB, only refused entries retried, AIMD concurrency,
//! at-least-once). Settings: [`config::KinesisSinkConfig`].

pub mod config;
pub mod service;

use crate::api::{Registry, SinkBox};
use crate::connectors::aws::put::PutSink;

pub use service::KinesisService;

/// The `kinesis` sink.
pub type KinesisSink = PutSink<KinesisService>;

pub fn register(r: &mut Registry) {
    r.sink("kinesis", |cfg| {
        let settings = cfg.resolve::<config::KinesisSinkConfig>()?;
        let put = settings.put.clone();
        Ok(SinkBox::plain(KinesisSink::new(
            KinesisService::new(settings),
            put,
        )))
    });
}
