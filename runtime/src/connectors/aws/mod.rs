//! What the AWS connectors (`kinesis`, `firehose`) share: the connection settings and the SDK
//! configuration built from them ([`connection`]), what a failed call means ([`errors`]), and
//! the batching sink both sinks are ([`put`]): entries batched within the service's limits, only
//! failed entries retried, AIMD concurrency, everything acknowledged before a checkpoint.

pub mod arn;
pub mod connection;
pub mod errors;
pub mod put;
