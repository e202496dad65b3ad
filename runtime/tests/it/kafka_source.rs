//! The `kafka` source against a real Apache Kafka broker (e2e/services/kafka.sh): exactly-once
//! into files through kill -9 at every two-phase-commit step and at random moments, rescaling
//! through savepoints, partition and topic discovery, per-partition watermarks, consumer-group
//! offsets and starting positions, poison messages, and misconfigurations.
#![cfg(feature = "kafka")]

mod broker;

mod discovery;
mod errors;
mod event_time;
mod exactly_once;
mod offsets;
mod poison;
mod rescale;
