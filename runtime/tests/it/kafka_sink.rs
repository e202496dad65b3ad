//! The `kafka` sink against a real Apache Kafka broker (e2e/services/kafka.sh): kill -9 at every
//! two-phase-commit step and at random moments, a rescale through a savepoint, a broker outage,
//! and misconfigurations. Output is read back with `isolation.level=read_committed` and every
//! input id counted.
#![cfg(feature = "kafka")]

pub(crate) mod kafka;

mod crashes;
mod errors;
mod eventhubs;
mod outage;
mod secured;
