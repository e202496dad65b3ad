//! Google Cloud Pub/Sub source and sink, on google-cloud-pubsub (Google's official Rust
//! client), which also talks to the Pub/Sub emulator.
//!
//! Source: StreamingPull with flow control; a message is acknowledged only after the checkpoint
//! that covers it is durable, its lease extended meanwhile; redeliveries are dropped by message
//! id; event time and watermarks. Sink: the client's batching publisher, flushed and
//! acknowledged at every checkpoint, retried under weir's `RetryPolicy`. Settings and the
//! guarantees: [`config::PubsubSourceConfig`], [`config::PubsubSinkConfig`], README "Pub/Sub".

pub mod client;
pub mod config;
mod decode;
mod encode;
mod ledger;
mod metrics;
mod retry;
mod sink;
mod source;
mod watermark;

pub use sink::PubsubSink;
pub use source::PubsubSource;

use crate::api::{Registry, SinkBox};

pub fn register(r: &mut Registry) {
    r.source("pubsub", |cfg| {
        let settings = cfg.resolve::<config::PubsubSourceConfig>()?;
        Ok(Box::new(PubsubSource::new(settings)))
    });
    r.sink("pubsub", |cfg| {
        let settings = cfg.resolve::<config::PubsubSinkConfig>()?;
        Ok(SinkBox::plain(PubsubSink::new(settings)))
    });
}
