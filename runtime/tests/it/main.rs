//! Integration tests: the real `weir` binary, real files, real kills.

mod admin_auth;
mod async_io;
mod elasticsearch;
mod exactly_once;
mod failures;
mod harness;
mod hdfs;
mod idle;
mod jdbc;
mod jdbc_mysql;
mod jdbc_sqlite;
mod kafka_sink;
mod kafka_source;
mod kinesis;
mod mutated_specs;
mod preloaded;
mod pubsub;
mod s3;
mod savepoints;
mod spec_errors;
mod validate_connect;
