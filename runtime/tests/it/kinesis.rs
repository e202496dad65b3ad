//! The `kinesis` source and sink against kinesis-mock (e2e/services/kinesis.sh) and the
//! `firehose` sink against moto (e2e/services/moto.sh), with a fault proxy for what those
//! servers never do: throttling, partial failures, broken EFO subscriptions. Exactly-once into
//! files through kill -9 while the stream is split and merged, per-key order across parent and
//! child shards, EFO, rescaling through savepoints, starting positions, expired positions, the
//! sinks' retries, dead letters and ordering, throttled reads, and misconfigurations.
#![cfg(all(feature = "kinesis", feature = "firehose"))]

mod proxy;
mod server;

mod efo;
mod errors;
mod exactly_once;
mod positions;
mod rescale;
mod sinks;
mod throttling;
