//! `firehose` sink: records to an Amazon Data Firehose delivery stream with PutRecordBatch,
//! through the shared AWS put sink (batches within 500 records / 4 MiB, only refused entries
//! retried, AIMD concurrency, at-least-once). Settings: [`config::FirehoseSinkConfig`].

pub mod config;
pub mod sink;

use crate::api::{Registry, SinkBox};

pub use sink::{FirehoseService, FirehoseSink};

pub fn register(r: &mut Registry) {
    r.sink("firehose", |cfg| {
        let settings = cfg.resolve::<config::FirehoseSinkConfig>()?;
        let put = settings.put.clone();
        Ok(SinkBox::plain(FirehoseSink::new(
            FirehoseService::new(settings),
            put,
        )))
    });
}
